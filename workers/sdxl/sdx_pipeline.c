/*  sdx_pipeline.c - the SDXL text-to-image pipeline behind sdxl.h.

    Follows diffusers 0.27.2 StableDiffusionXLPipeline.__call__ step for
    step, so that a seed gives the diffusers image: one CPU generator for the
    initial latents and every scheduler draw, CFG batch order [negative,
    positive], micro-conditioning time ids [H, W, 0, 0, H, W], guidance
    rescale as rescale_noise_cfg, VAE decode of latents / scaling_factor.
    The denoising loop runs entirely here: one UNet call per model step, no
    round trips to anyone; temporaries of a step die in that step's scope.
    LoRA sets are fused by sdx_lora.c (sdxl_engine_set_loras only holds the state).
    img2img (init_image, strength) as StableDiffusionXLImg2ImgPipeline: its
    start is in sdx_img2img.c, the loop below runs from the cut index.
    Base + refiner (denoising_end / denoising_start, init_latents): the
    checks and the handoff start are in sdx_refiner.c; the loop below runs
    from the begin index to the end count.
    ControlNet (controls) as StableDiffusionXLControlNetPipeline: the
    networks are in sdx_controlnet.c; here only the control images (made
    once, CFG-doubled) and the per-step keep mask and residual sum.
*/
#include "sdxl.h"

#include "sdx_clip.h"
#include "sdx_img2img.h"
#include "sdx_imgcodec.h"
#include "sdx_prompt.h"
#include "sdx_refiner.h"
#include "sdx_scheduler.h"
#include "sdx_taesd.h"
#include "sdx_tokenizer.h"
#include "sdx_unet.h"
#include "sdx_vae.h"
#include "sdx_weighting.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sdxl_engine {
    sdxl_engine_params_t params;
    sdx_model_t *model;
    sdx_model_t *ext_vae; /* --vae, NULL when the checkpoint's VAE is used */
    sdx_vae_t *vae_ckpt;  /* the checkpoint's VAE while an external one runs (set_vae) */
    char ext_vae_path[SDX_PATH_MAX]; /* what ext_vae was loaded from */
    sdx_unet_t *unet;
    sdx_vae_t *vae;
    sdx_clip_t *te1, *te2;
    sdx_tokenizer_t *tok1, *tok2;
    char scheduler_class[128]; /* the model's scheduler (_class_name) */
    sdx_lora_state_t *loras;   /* fused LoRAs; NULL until the first set */
    sdx_ti_state_t *tis;       /* textual inversions; NULL until the first set */
    sdx_controlnet_t *cnets[SDXL_MAX_CONTROLS]; /* sdxl_engine_controlnet's, owned */
};

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* One live preview: latents[0] through the preview decoder to an image for
   p->preview. Its own scope: nothing of it outlives the call. */
static int s_preview(const sdxl_gen_params_t *p, const sdx_tensor_t *latents, int step, int total)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *one = NULL, *rgb = NULL;
    sdx_image_t img = {0};
    int rc = -1;
    if (S && sdx_narrow(S, &one, latents, 0, 0, 1) == 0 &&
        sdx_taesd_decode(p->preview_decoder, S, &rgb, one) == 0 &&
        sdx_image_from_tensor(rgb, &img, 1) == 0) {
        p->preview(step, total, &img, p->preview_ud);
        rc = 0;
    }
    sdx_image_clear(&img);
    sdx_scope_free(&S);
    return rc;
}

static void s_log(const sdxl_engine_t *e, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_log(const sdxl_engine_t *e, int level, const char *fmt, ...)
{
    if (!e->params.log)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    e->params.log(level, buf, e->params.log_ud);
}

void sdxl_engine_params_init(sdxl_engine_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->dtype = SDX_F32;
    p->device = (sdx_device_t){SDX_CPU, 0};
    p->channels_last = -1;
}

void sdxl_gen_params_init(sdxl_gen_params_t *p)
{
    memset(p, 0, sizeof *p);
    /* the defaults of schemas/prompt_submission_schema.json (see sdxl.h) */
    p->steps = 30;
    p->guidance_scale = 7.5;
    p->karras = -1;
    p->batch = 1;
    p->decode = true;
    p->strength = 0.8; /* the schema's hyperparameters.strength default */
    p->aesthetic_score = 6.0; /* diffusers' StableDiffusionXLImg2ImgPipeline */
    p->negative_aesthetic_score = 2.5;
}

/* The scheduler class named by a scheduler_config.json, "" if unreadable. */
static void s_read_scheduler_class(const char *path, char *out, size_t out_len)
{
    out[0] = 0;
    if (!path || !*path)
        return;
    cJSON *j = sdx_config_read_json(path);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "_class_name");
    if (cJSON_IsString(c))
        snprintf(out, out_len, "%s", c->valuestring);
    cJSON_Delete(j);
}

sdxl_engine_t *sdxl_engine_new(const sdxl_engine_params_t *p)
{
    if (!p || !p->model_path || !*p->model_path) {
        sdx_set_error("engine: no model path");
        return NULL;
    }
    if (p->channels_last < -1 || p->channels_last > 1) {
        sdx_set_error("channels_last: must be -1 (auto), 0 or 1, got %d", p->channels_last);
        return NULL;
    }
    sdxl_engine_t *e = calloc(1, sizeof *e);
    if (!e) {
        sdx_set_error("engine: out of memory");
        return NULL;
    }
    e->params = *p;
    if (p->threads > 0)
        sdx_set_num_threads(p->threads);
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    double t0 = s_now_ms();

    sdx_load_opts_t lo;
    sdx_load_opts_init(&lo);
    lo.path = p->model_path;
    lo.config_dir = p->config_dir;
    lo.dtype = p->dtype;
    lo.device = p->device;
    if (p->text_only)
        lo.components = SDX_COMP_TE1 | SDX_COMP_TE2;
    e->model = sdx_model_load(&lo);
    if (!e->model || sdx_refiner_complete(e->model, p->components_path) != 0)
        goto fail;
    const sdx_model_t *m = e->model;
    if (m->arch != SDX_ARCH_SDXL_BASE && m->arch != SDX_ARCH_SDXL_REFINER) {
        sdx_set_error("%s: a %s, not an SDXL checkpoint", p->model_path, sdx_arch_name(m->arch));
        goto fail;
    }
    if ((!p->text_only && (!m->unet || !m->vae)) || !m->te2) {
        sdx_set_error("%s: the checkpoint lacks a %s", p->model_path,
                      !m->te2 ? "text_encoder_2" : !m->unet ? "UNet" : "VAE");
        goto fail;
    }
    bool cl = false;
    if (p->text_only)
        goto text;
    e->unet = sdx_unet_new(&m->unet_cfg, m->unet);
    if (!e->unet)
        goto fail;
    /* an external VAE replaces the checkpoint's, with its own config */
    if (p->vae_path && *p->vae_path) {
        sdx_load_opts_t vo;
        sdx_load_opts_init(&vo);
        vo.path = p->vae_path;
        vo.dtype = p->dtype;
        vo.device = p->device;
        vo.components = SDX_COMP_VAE;
        e->ext_vae = sdx_model_load(&vo);
        if (!e->ext_vae)
            goto fail;
        snprintf(e->ext_vae_path, sizeof e->ext_vae_path, "%s", p->vae_path);
        if (!e->ext_vae->vae) {
            sdx_set_error("%s: --vae holds no VAE (%s)", p->vae_path,
                          sdx_arch_name(e->ext_vae->arch));
            goto fail;
        }
    }
    {
        const sdx_model_t *vm = e->ext_vae ? e->ext_vae : m;
        sdx_vae_config_t vc = vm->vae_cfg;
        if (p->vae_upcast)
            vc.force_upcast = p->vae_upcast > 0;
        e->vae = sdx_vae_new_f32(&vc, vm->vae, p->vae_f32);
        if (!e->vae)
            goto fail;
    }
    /* channels-last helps cuDNN's convolutions; on the CPU it mostly costs
       layout conversions, so auto turns it on for CUDA only */
    cl = p->channels_last < 0 ? p->device.type == SDX_CUDA : p->channels_last == 1;
    sdx_unet_options(e->unet)->channels_last = cl;
    sdx_vae_options(e->vae)->channels_last = cl;
text:
    e->te2 = sdx_clip_new(&m->te2_cfg, m->te2, "text_encoder_2");
    if (!e->te2)
        goto fail;
    if (m->te1) {
        e->te1 = sdx_clip_new(&m->te1_cfg, m->te1, "text_encoder");
        if (!e->te1)
            goto fail;
    }

    /* tokenizers: the flags, else the model's folders, else the CLIP files
       compiled into the engine (single files ship none) */
    const char *tk1 = p->tokenizer_dir ? p->tokenizer_dir : m->tokenizer_dir;
    const char *tk2 = p->tokenizer2_dir ? p->tokenizer2_dir : m->tokenizer2_dir;
    bool builtin_tok = false;
    if (e->te1) {
        e->tok1 = *tk1 ? sdx_tokenizer_load(tk1) : sdx_tokenizer_builtin(1);
        if (!e->tok1)
            goto fail;
        builtin_tok |= !*tk1;
    }
    e->tok2 = *tk2 ? sdx_tokenizer_load(tk2) : sdx_tokenizer_builtin(2);
    if (!e->tok2)
        goto fail;
    builtin_tok |= !*tk2;
    if (builtin_tok)
        s_log(e, 2, "%s: no tokenizer folder, using the built-in CLIP tokenizer", p->model_path);
    if (m->skipped_keys)
        s_log(e, 1, "%s: skipped %zu unknown key(s) inside known components (e.g. '%s')",
              p->model_path, m->skipped_keys, m->skipped_example);
    if (m->prediction_type[0] && strcmp(m->prediction_type, "epsilon") != 0)
        s_log(e, 2, "%s: the checkpoint marks %s%s", p->model_path, m->prediction_type,
              m->zero_terminal_snr ? " with zero terminal SNR" : "");

    s_read_scheduler_class(m->scheduler_config, e->scheduler_class, sizeof e->scheduler_class);
    if (!e->scheduler_class[0])
        snprintf(e->scheduler_class, sizeof e->scheduler_class, "EulerDiscreteScheduler");
    if (p->text_only)
        s_log(e, 2, "loaded the text encoders of %s (%s, %s) in %.0f ms", p->model_path,
              sdx_arch_name(m->arch), sdx_dtype_name(p->dtype), s_now_ms() - t0);
    else
        s_log(e, 2, "loaded %s (%s, %s, VAE %s, channels-last %s) in %.0f ms", p->model_path,
              sdx_arch_name(m->arch), sdx_dtype_name(p->dtype),
              sdx_dtype_name(sdx_vae_dtype(e->vae)), cl ? "on" : "off", s_now_ms() - t0);
    sdx_inference_guard_free(&guard);
    return e;
fail:
    sdx_inference_guard_free(&guard);
    {
        /* keep the first error across the frees below */
        char why[1024];
        snprintf(why, sizeof why, "%s", sdx_last_error());
        sdxl_engine_free(&e);
        sdx_set_error("%s", why);
    }
    return NULL;
}

void sdxl_engine_free(sdxl_engine_t **ep)
{
    if (!ep || !*ep)
        return;
    sdxl_engine_t *e = *ep;
    sdx_lora_state_free(&e->loras); /* the model goes too: nothing to restore */
    sdx_ti_state_free(&e->tis);
    for (int i = 0; i < SDXL_MAX_CONTROLS; i++)
        sdx_controlnet_free(&e->cnets[i]);
    sdx_unet_free(&e->unet);
    sdx_vae_free(&e->vae);
    sdx_vae_free(&e->vae_ckpt);
    sdx_clip_destroy(&e->te1);
    sdx_clip_destroy(&e->te2);
    sdx_tokenizer_destroy(&e->tok1);
    sdx_tokenizer_destroy(&e->tok2);
    sdx_model_free(&e->model);
    sdx_model_free(&e->ext_vae);
    free(e);
    *ep = NULL;
}

const sdx_model_t *sdxl_engine_model(const sdxl_engine_t *e)
{
    return e ? e->model : NULL;
}

const sdx_tokenizer_t *sdxl_engine_tokenizer(const sdxl_engine_t *e, int which)
{
    return !e ? NULL : which == 1 ? e->tok1 : which == 2 ? e->tok2 : NULL;
}

int sdxl_engine_set_loras(sdxl_engine_t *e, const sdxl_lora_t *loras, int n)
{
    if (!e)
        return sdx_set_error("engine: NULL");
    if (!e->loras && !(e->loras = sdx_lora_state_new(e->model)))
        return -1;
    double t0 = s_now_ms();
    size_t before = sdx_lora_state_touched(e->loras);
    if (sdx_lora_state_set(e->loras, loras, n) != 0)
        return -1;
    s_log(e, 3, "LoRA set: %d file(s), %zu weight(s) fused (%zu before), %.1f ms", n,
          sdx_lora_state_touched(e->loras), before, s_now_ms() - t0);
    return 0;
}

const sdxl_lora_t *sdxl_engine_loras(const sdxl_engine_t *e, int *n)
{
    return sdx_lora_state_current(e ? e->loras : NULL, n);
}

int sdxl_engine_set_embeddings(sdxl_engine_t *e, const sdxl_embedding_t *list, int n)
{
    if (!e || n < 0 || (n > 0 && !list))
        return sdx_set_error("sdxl_engine_set_embeddings: bad arguments");
    if (!e->tis && n == 0)
        return 0;
    if (!e->tis && !(e->tis = sdx_ti_state_new()))
        return sdx_set_error("textual inversion: out of memory");
    if (!e->tok1 || !e->tok2)
        return sdx_set_error("textual inversion: needs both SDXL text encoders");
    return sdx_ti_state_set(e->tis, e->model, &e->te1, &e->te2, e->tok1, e->tok2, list, n);
}

sdxl_controlnet_t *sdxl_controlnet_load(const sdxl_engine_t *e, const char *path)
{
    if (!e || !e->unet) {
        sdx_set_error("controlnet: the engine has no UNet (text_only)");
        return NULL;
    }
    return sdx_controlnet_load(path, &e->model->unet_cfg, sdx_unet_dtype(e->unet),
                               sdx_unet_device(e->unet));
}

void sdxl_controlnet_free(sdxl_controlnet_t **c)
{
    sdx_controlnet_free(c);
}

const sdxl_controlnet_t *sdxl_engine_controlnet(sdxl_engine_t *e, const char *path)
{
    int slot = -1;
    for (int i = 0; e && path && i < SDXL_MAX_CONTROLS; i++) {
        if (e->cnets[i] && strcmp(sdx_controlnet_path(e->cnets[i]), path) == 0)
            return e->cnets[i];
        if (!e->cnets[i] && slot < 0)
            slot = i;
    }
    if (slot < 0) {
        sdx_set_error("controlnet: %s: this engine keeps at most %d ControlNets", path,
                      SDXL_MAX_CONTROLS);
        return NULL;
    }
    double t0 = s_now_ms();
    if (!(e->cnets[slot] = sdxl_controlnet_load(e, path)))
        return NULL;
    s_log(e, 2, "loaded ControlNet %s in %.0f ms", path, s_now_ms() - t0);
    return e->cnets[slot];
}

/* The controls' own fields (refused as input errors). */
static int s_check_controls(const sdxl_gen_params_t *p)
{
    if (p->n_controls < 0 || p->n_controls > SDXL_MAX_CONTROLS || (p->n_controls && !p->controls))
        return sdx_set_error("controlnet: 0..%d controls, got %d", SDXL_MAX_CONTROLS,
                             p->n_controls);
    if (p->n_controls && p->init_image)
        return sdx_set_error("controlnet: not supported together with init_image (img2img)");
    for (int i = 0; i < p->n_controls; i++) {
        const sdxl_control_t *c = &p->controls[i];
        if (!c->net || !c->image || !c->image->pixels)
            return sdx_set_error("controlnet[%d]: a network and an image are required", i);
        if (!(c->scale >= 0))
            return sdx_set_error("controlnet[%d].scale: must be >= 0, got %g", i, c->scale);
        if (!(c->start >= 0 && c->start < c->end && c->end <= 1))
            return sdx_set_error("controlnet[%d]: need 0 <= start < end <= 1, got %g..%g", i,
                                 c->start, c->end);
    }
    return 0;
}

void sdxl_result_clear(sdxl_result_t *r)
{
    if (!r)
        return;
    for (int i = 0; r->images && i < r->count; i++)
        sdx_image_clear(&r->images[i]);
    free(r->images);
    sdx_tensor_free(&r->latents);
    sdx_tensor_free(&r->decoded);
    memset(r, 0, sizeof *r);
}

/* add_time_ids for one CFG half as a [1, n] tensor in dtype dt: the base's
   [H, W, crop_top, crop_left, H, W], or the refiner's
   [H, W, crop_top, crop_left, aesthetic_score]. */
static int s_time_ids(sdx_scope_t *S, sdx_tensor_t **out, int n, int h, int w, double aesthetic,
                      sdx_dtype_t dt, sdx_device_t dev)
{
    float v[6] = {(float)h, (float)w, 0, 0, (float)h, (float)w};
    if (n == 5)
        v[4] = (float)aesthetic;
    else if (n != 6)
        return sdx_set_error("unet: expects %d time ids; only 6 (base) or 5 (refiner) are known", n);
    int64_t shape[2] = {1, n};
    sdx_tensor_t *t = NULL;
    SDX_TRY(sdx_from_host(S, &t, v, SDX_F32, shape, 2));
    return sdx_to(S, out, t, dt, dev);
fail:
    return -1;
}

/* diffusers' rescale_noise_cfg: match the std of the guided prediction to
   the text-conditioned one, blended by phi. */
static int s_rescale_cfg(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *cfg,
                         const sdx_tensor_t *text, double phi)
{
    int nd = sdx_tensor_ndim(cfg);
    int64_t dims[SDX_MAX_DIMS];
    for (int d = 1; d < nd; d++)
        dims[d - 1] = d;
    sdx_tensor_t *std_text, *std_cfg, *ratio, *rescaled;
    SDX_TRY(sdx_std(S, &std_text, text, dims, nd - 1, true, true));
    SDX_TRY(sdx_std(S, &std_cfg, cfg, dims, nd - 1, true, true));
    SDX_TRY(sdx_div(S, &ratio, std_text, std_cfg));
    SDX_TRY(sdx_mul(S, &rescaled, cfg, ratio));
    return sdx_lincomb(S, out, phi, rescaled, 1.0 - phi, cfg);
fail:
    return -1;
}

/* What the text side refuses: no prompt, batch, clip_skip beyond the model. */
static int s_check_text(const sdxl_engine_t *e, const sdxl_gen_params_t *p)
{
    if (!p->prompt)
        return sdx_set_error("prompt: required");
    if (p->batch < 1 || p->batch > SDXL_MAX_BATCH)
        return sdx_set_error("batch: must be in 1..%d, got %d", SDXL_MAX_BATCH, p->batch);
    if (p->clip_skip < 0)
        return sdx_set_error("clip_skip: must be >= 0, got %d", p->clip_skip);
    if (p->prompt_attention && strcmp(p->prompt_attention, "none") != 0 &&
        strcmp(p->prompt_attention, "a1111") != 0)
        return sdx_set_error("prompt_attention: '%s' is not supported (none, a1111)",
                             p->prompt_attention);
    /* diffusers takes hidden_states[-(clip_skip + 2)]: at most layers - 1 */
    const sdx_model_t *m = e->model;
    int layers = m->te2_cfg.num_hidden_layers;
    if (m->te1 && m->te1_cfg.num_hidden_layers < layers)
        layers = m->te1_cfg.num_hidden_layers;
    if (p->clip_skip > layers - 1)
        return sdx_set_error("clip_skip: must be at most %d for this model's %d-layer text "
                             "encoder(s), got %d",
                             layers - 1, layers, p->clip_skip);
    return 0;
}

static int s_check_params(const sdxl_engine_t *e, const sdxl_gen_params_t *p, int *w, int *h)
{
    if (!e->unet)
        return sdx_set_error("engine: loaded for text encoding only (text_only), cannot generate");
    if (s_check_text(e, p) != 0)
        return -1;
    int dflt = e->model->unet_cfg.sample_size > 0 ? e->model->unet_cfg.sample_size * 8 : 1024;
    *w = p->width > 0 ? p->width : dflt;
    *h = p->height > 0 ? p->height : dflt;
    if (*w % 8 || *h % 8)
        return sdx_set_error("width/height: must be multiples of 8, got %dx%d", *w, *h);
    if (*w > SDXL_MAX_SIDE || *h > SDXL_MAX_SIDE)
        return sdx_set_error("width/height: at most %d, got %dx%d", SDXL_MAX_SIDE, *w, *h);
    if (p->steps < 1 || p->steps > SDXL_MAX_STEPS)
        return sdx_set_error("steps: must be in 1..%d, got %d", SDXL_MAX_STEPS, p->steps);
    if (p->guidance_rescale < 0 || p->guidance_rescale > 1)
        return sdx_set_error("guidance_rescale: must be in [0, 1], got %g", p->guidance_rescale);
    return 0;
}

/* Step 1 of a generation: p's prompts through both encoders (checked). */
static int s_encode(sdxl_engine_t *e, const sdxl_gen_params_t *p, sdx_prompt_embeds_t *pe)
{
    sdx_text_encoders_t te = {e->te1, e->tok1, e->te2, e->tok2};
    sdx_prompt_params_t pp;
    sdx_prompt_params_init(&pp);
    /* maybe_convert_prompt for multi-vector embeddings (a copy, or none) */
    char *cp = e->tis ? sdx_ti_convert_prompt(e->tis, p->prompt) : NULL;
    char *cn = e->tis ? sdx_ti_convert_prompt(e->tis, p->negative_prompt) : NULL;
    const char *prompts[1] = {cp ? cp : p->prompt};
    const char *negs[1] = {cn ? cn : p->negative_prompt};
    pp.prompt = prompts;
    pp.negative = p->negative_prompt ? negs : NULL;
    pp.num_images_per_prompt = p->batch;
    pp.clip_skip = p->clip_skip;
    pp.do_cfg = p->guidance_scale > 1.0;
    pp.force_zeros_for_empty_prompt = e->model->force_zeros_for_empty_prompt;
    bool a1111 = p->prompt_attention && strcmp(p->prompt_attention, "a1111") == 0;
    int rc = a1111 ? sdx_weighting_encode(&te, &pp, pe) : sdx_prompt_encode(&te, &pp, pe);
    free(cp);
    free(cn);
    if (rc != 0)
        return -1;
    if (pe->truncated)
        s_log(e, 1, "prompt longer than 75 tokens was truncated");
    return 0;
}

/* Given embeddings fit the UNet: prompt [B, L, cross_attention_dim] and
   pooled [B, P] with P the UNet's pooled width, and the same shapes for the
   negative pair, which CFG needs. */
static int s_check_embeds(const sdxl_engine_t *e, const sdxl_gen_params_t *p,
                          const sdx_prompt_embeds_t *E)
{
    const sdx_unet_config_t *uc = &e->model->unet_cfg;
    bool cfg = p->guidance_scale > 1.0;
    if (!E->prompt_embeds || !E->pooled_prompt_embeds)
        return sdx_set_error("embeds: prompt_embeds and pooled_prompt_embeds are required");
    if (cfg && (!E->negative_prompt_embeds || !E->negative_pooled_prompt_embeds))
        return sdx_set_error("embeds: guidance_scale %g > 1 needs negative_prompt_embeds and "
                             "negative_pooled_prompt_embeds",
                             p->guidance_scale);
    const sdx_tensor_t *t[4] = {E->prompt_embeds, E->pooled_prompt_embeds,
                                cfg ? E->negative_prompt_embeds : NULL,
                                cfg ? E->negative_pooled_prompt_embeds : NULL};
    static const char *const names[4] = {"prompt_embeds", "pooled_prompt_embeds",
                                         "negative_prompt_embeds",
                                         "negative_pooled_prompt_embeds"};
    int64_t seq = sdx_tensor_ndim(t[0]) == 3 ? sdx_tensor_size(t[0], 1) : -1;
    /* the pooled width is text_encoder_2's projection (what the UNet was
       trained with); without it, what the given tensor says */
    int64_t pooled = e->model->te2 && e->model->te2_cfg.projection_dim > 0
                         ? e->model->te2_cfg.projection_dim
                     : sdx_tensor_ndim(t[1]) == 2 ? sdx_tensor_size(t[1], 1)
                                                  : -1;
    for (int i = 0; i < 4; i++) {
        if (!t[i])
            continue;
        bool emb = i % 2 == 0;
        int nd = sdx_tensor_ndim(t[i]);
        bool ok = nd == (emb ? 3 : 2) && sdx_tensor_size(t[i], 0) == p->batch &&
                  (emb ? sdx_tensor_size(t[i], 1) == seq &&
                             sdx_tensor_size(t[i], 2) == uc->cross_attention_dim
                       : sdx_tensor_size(t[i], 1) == pooled);
        if (!ok)
            return emb ? sdx_set_error("embeds: %s must be [%d, %lld, %d] (batch, tokens, the "
                                       "UNet's cross_attention_dim)",
                                       names[i], p->batch, (long long)seq,
                                       uc->cross_attention_dim)
                       : sdx_set_error("embeds: %s must be [%d, %lld] (batch, pooled width)",
                                       names[i], p->batch, (long long)pooled);
    }
    int time_dim = uc->addition_time_embed_dim;
    if (time_dim > 0 && (uc->projection_class_embeddings_input_dim - pooled) % time_dim != 0)
        return sdx_set_error("embeds: pooled width %lld does not fit this UNet (%d inputs, "
                             "time ids of %d)",
                             (long long)pooled, uc->projection_class_embeddings_input_dim,
                             time_dim);
    return 0;
}

int sdxl_encode_prompt(sdxl_engine_t *e, const sdxl_gen_params_t *p, sdx_prompt_embeds_t *out,
                       bool *input_error)
{
    memset(out, 0, sizeof *out);
    if (input_error)
        *input_error = false;
    if (s_check_text(e, p) != 0) {
        if (input_error)
            *input_error = true;
        return -1;
    }
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    int rc = s_encode(e, p, out);
    sdx_inference_guard_free(&guard);
    return rc;
}

int sdxl_generate(sdxl_engine_t *e, const sdxl_gen_params_t *p, sdxl_result_t *r)
{
    memset(r, 0, sizeof *r);
    int width = 0, height = 0;
    if (s_check_params(e, p, &width, &height) != 0 || s_check_controls(p) != 0 ||
        (p->init_image && sdx_img2img_check(e->vae, p->init_image, p->strength, p->width, p->height,
                                            &width, &height)) ||
        sdx_refiner_check(p, e->model->unet_cfg.in_channels, width, height) != 0) {
        r->input_error = true;
        return -1;
    }
    const sdx_model_t *m = e->model;
    const sdx_unet_config_t *uc = &m->unet_cfg;
    sdx_dtype_t dt = sdx_unet_dtype(e->unet);
    sdx_device_t dev = sdx_unet_device(e->unet);
    bool cfg = p->guidance_scale > 1.0;
    int B = p->batch;
    double t_start = s_now_ms();

    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    sdx_scope_t *S = sdx_scope_new(); /* lives for the whole call */
    sdx_scheduler_t *sch = NULL;
    sdx_generator_t *gen = NULL;
    sdx_prompt_embeds_t pe = {0};
    sdx_tensor_t *latents = NULL; /* caller-owned while looping */
    int rc = -1, n_end = 0;
    bool input_error = false;

    /* 0. the scheduler first: a name or option it refuses is the caller's
       mistake, reported before any encoding work */
    sdx_scheduler_opts_t so;
    sdx_scheduler_opts_init(&so);
    so.config_path = m->scheduler_config[0] ? m->scheduler_config : NULL;
    so.karras = p->karras;
    /* the checkpoint's markers (v_pred, ztsnr) or the request's override */
    char sjson[160];
    const char *pred = p->prediction_type && *p->prediction_type ? p->prediction_type
                                                                   : m->prediction_type;
    if (pred && *pred && strcmp(pred, "epsilon") != 0 && strcmp(pred, "v_prediction") != 0) {
        sdx_set_error("prediction_type: must be epsilon or v_prediction, got '%s'", pred);
        input_error = true;
        goto fail;
    }
    if (sdx_scheduler_model_json(sjson, sizeof sjson, pred, m->zero_terminal_snr) != 0) {
        sdx_set_error("prediction_type: too long");
        input_error = true;
        goto fail;
    }
    so.config_json = sjson[0] ? sjson : NULL;
    sch = sdx_scheduler_new(p->scheduler ? p->scheduler : e->scheduler_class, &so);
    if (!sch || sdx_scheduler_set_timesteps(sch, p->steps) != 0 ||
        (p->init_image && sdx_img2img_begin(sch, p->strength) < 0) ||
        sdx_refiner_schedule(sch, p, &n_end) != 0) {
        input_error = true;
        goto fail;
    }
    snprintf(r->scheduler, sizeof r->scheduler, "%s", sdx_scheduler_class_name(sch));
    char *sched_json = sdx_scheduler_config_json(sch);
    r->karras = sched_json && strstr(sched_json, "\"use_karras_sigmas\":true");
    free(sched_json);

    /* 1. prompt embeddings: encoded here, or given (conditioning worker) */
    const sdx_prompt_embeds_t *E = &pe;
    if (p->embeds) {
        if (s_check_embeds(e, p, p->embeds) != 0) {
            input_error = true;
            goto fail;
        }
        E = p->embeds;
    } else {
        SDX_TRY(s_encode(e, p, &pe));
    }

    /* conditioning batches, CFG order [negative, positive] */
    sdx_tensor_t *ehs = E->prompt_embeds, *pooled = E->pooled_prompt_embeds, *tids, *tid1,
                 *tid_neg = NULL;
    int pooled_dim = (int)sdx_tensor_size(pooled, -1);
    int n_ids = uc->addition_time_embed_dim > 0
                    ? (uc->projection_class_embeddings_input_dim - pooled_dim) /
                          uc->addition_time_embed_dim
                    : 6;
    SDX_TRY(s_time_ids(S, &tid1, n_ids, height, width, p->aesthetic_score, dt, dev));
    if (cfg) {
        SDX_TRY(s_time_ids(S, &tid_neg, n_ids, height, width, p->negative_aesthetic_score, dt, dev));
        sdx_tensor_t *pair[2] = {E->negative_prompt_embeds, E->prompt_embeds};
        SDX_TRY(sdx_cat(S, &ehs, pair, 2, 0));
        sdx_tensor_t *pp2[2] = {E->negative_pooled_prompt_embeds, E->pooled_prompt_embeds};
        SDX_TRY(sdx_cat(S, &pooled, pp2, 2, 0));
        sdx_tensor_t *tp[2] = {tid_neg, tid1};
        SDX_TRY(sdx_cat(S, &tids, tp, 2, 0));
    } else {
        tids = tid1;
    }
    int64_t reps[2] = {B, 1};
    SDX_TRY(sdx_repeat(S, &tids, tids, reps, 2));
    SDX_TRY(sdx_to(S, &ehs, ehs, dt, dev));
    SDX_TRY(sdx_to(S, &pooled, pooled, dt, dev));
    /* ControlNet images: [B] (x2 with CFG, same order as the latents) */
    sdx_tensor_t *cn_img[SDXL_MAX_CONTROLS];
    sdx_controlnet_t *cn_net[SDXL_MAX_CONTROLS];
    for (int k = 0; k < p->n_controls; k++) {
        int64_t rb[4] = {cfg ? 2 * B : B, 1, 1, 1};
        cn_net[k] = (sdx_controlnet_t *)p->controls[k].net;
        if (sdx_controlnet_image(S, &cn_img[k], p->controls[k].image, width, height, dt, dev) ||
            sdx_repeat(S, &cn_img[k], cn_img[k], rb, 4)) {
            input_error = strstr(sdx_last_error(), "control image") != NULL;
            goto fail;
        }
    }
    r->encode_ms = s_now_ms() - t_start;

    /* 2. initial latents */
    gen = sdx_generator_new(p->seed);
    if (!gen) {
        sdx_set_error("engine: cannot create a generator");
        goto fail;
    }
    int64_t lshape[4] = {B, uc->in_channels, height / 8, width / 8};
    if (p->init_latents) {
        /* the refiner's handoff: the base's latents as they are */
        SDX_TRY(sdx_refiner_latents(p->init_latents, dt, dev, &latents));
    } else if (p->init_image) {
        /* img2img: the encoded image noised to the first kept timestep */
        const sdx_weights_t *vw = e->ext_vae ? e->ext_vae->vae : m->vae;
        SDX_TRY(sdx_img2img_latents(e->vae, vw, sch, gen, p->init_image, B, dt, dev, &latents));
    } else {
        sdx_tensor_t *noise;
        SDX_TRY(sdx_randn(S, &noise, gen, lshape, 4, dt, dev));
        SDX_TRY(sdx_mul_scalar(NULL, &latents, noise, sdx_scheduler_init_noise_sigma(sch)));
    }

    /* 3. denoising loop */
    double t_loop = s_now_ms();
    bool previews = p->preview && p->preview_decoder && p->preview_every > 0;
    int n = n_end, first = sdx_scheduler_begin_index(sch);
    for (int i = first; i < n; i++) {
        if (p->cancel && *p->cancel) {
            sdx_set_error("cancelled");
            goto fail;
        }
        sdx_scope_t *T = sdx_scope_new();
        sdx_tensor_t *x = latents, *xin, *t, *eps, *next, *cn_down[64] = {0}, *cn_mid = NULL;
        double cn_scale[SDXL_MAX_CONTROLS];
        int n_cn = 0;
        bool cn_any = false;
        if (cfg) {
            sdx_tensor_t *two[2] = {latents, latents};
            if (sdx_cat(T, &x, two, 2, 0) != 0)
                goto step_fail;
        }
        if (sdx_scheduler_scale_model_input(sch, T, &xin, x, i) != 0 ||
            sdx_scheduler_timestep_tensor(sch, T, &t, i, dev) != 0)
            goto step_fail;
        for (int k = 0; k < p->n_controls; k++)
            cn_scale[k] = p->controls[k].scale *
                          sdx_controlnet_keep(i, n, p->controls[k].start, p->controls[k].end);
        if (p->n_controls &&
            sdx_controlnet_apply(cn_net, cn_img, cn_scale, p->n_controls, T, cn_down, 64, &n_cn,
                                 &cn_mid, &cn_any, xin, t, ehs, pooled, tids) != 0)
            goto step_fail;
        if (sdx_unet_forward(e->unet, T, &eps, xin, t, ehs, pooled, tids, cn_any ? cn_down : NULL,
                             n_cn, cn_any ? cn_mid : NULL) != 0)
            goto step_fail;
        if (cfg) {
            sdx_tensor_t *halves[2], *diff, *scaled;
            if (sdx_chunk(T, halves, eps, 2, 0) != 0 || sdx_sub(T, &diff, halves[1], halves[0]) ||
                sdx_mul_scalar(T, &scaled, diff, p->guidance_scale) ||
                sdx_add(T, &eps, halves[0], scaled))
                goto step_fail;
            if (p->guidance_rescale > 0 &&
                s_rescale_cfg(T, &eps, eps, halves[1], p->guidance_rescale) != 0)
                goto step_fail;
        }
        if (sdx_scheduler_step(sch, T, &next, eps, i, latents, gen) != 0 ||
            sdx_scope_keep(T, next) != 0)
            goto step_fail;
        sdx_scope_free(&T);
        sdx_tensor_free(&latents);
        latents = next;
        r->steps_done++;
        if (p->progress)
            p->progress(i - first + 1, n - first, (s_now_ms() - t_loop) / 1e3, p->progress_ud);
        if (previews && (i - first + 1) % p->preview_every == 0 && i + 1 < n) {
            double t_pv = s_now_ms();
            if (s_preview(p, latents, i - first + 1, n - first) != 0) {
                snprintf(r->preview_error, sizeof r->preview_error, "after step %d: %s",
                         i - first + 1, sdx_last_error());
                previews = false; /* the generation goes on without them */
            } else {
                r->previews++;
            }
            r->preview_ms += s_now_ms() - t_pv;
        }
        continue;
    step_fail:
        sdx_scope_free(&T);
        goto fail;
    }
    r->denoise_ms = s_now_ms() - t_loop;

    /* 4. decode */
    if (p->decode) {
        double t_dec = s_now_ms();
        SDX_TRY(sdx_vae_decode_latents(e->vae, NULL, &r->decoded, latents));
        r->images = calloc((size_t)B, sizeof *r->images);
        if (!r->images) {
            sdx_set_error("engine: out of memory");
            goto fail;
        }
        SDX_TRY(sdx_image_from_tensor(r->decoded, r->images, B));
        r->decode_ms = s_now_ms() - t_dec;
    }
    r->count = B;
    r->latents = latents;
    latents = NULL;
    rc = 0;
fail:
    if (rc != 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", sdx_last_error());
        sdxl_result_clear(r);
        r->input_error = input_error;
        sdx_set_error("%s", why);
    }
    sdx_tensor_free(&latents);
    sdx_prompt_embeds_free(&pe);
    sdx_generator_free(&gen);
    sdx_scheduler_destroy(&sch);
    sdx_scope_free(&S);
    sdx_inference_guard_free(&guard);
    r->total_ms = s_now_ms() - t_start;
    return rc;
}

void sdxl_infotext_refiner(const char *refiner_name, double switch_at, char *out, size_t len)
{
    /* a name with ',' ':' or a newline is quoted, as the text's values are */
    bool quote = strpbrk(refiner_name, ",:\n") != NULL;
    snprintf(out, len, "Refiner: %s%s%s, Refiner switch at: %g", quote ? "\"" : "", refiner_name,
             quote ? "\"" : "", switch_at);
}

char *sdxl_infotext(const sdxl_gen_params_t *p, const sdxl_result_t *r, const char *model_name,
                    const char *model_hash, const char *extra)
{
    sdx_infotext_t it;
    sdx_infotext_init(&it);
    char sampler[96];
    it.prompt = p->prompt;
    it.negative_prompt = p->negative_prompt;
    it.steps = p->steps > 0 ? p->steps : r->steps_done;
    if (r->scheduler[0])
        it.sampler = sdx_a1111_sampler(r->scheduler, r->karras, sampler, sizeof sampler);
    it.cfg_scale = p->guidance_scale;
    it.seed = (int64_t)p->seed;
    it.width = r->count > 0 ? r->images[0].width : p->width;
    it.height = r->count > 0 ? r->images[0].height : p->height;
    it.model_name = model_name;
    it.model_hash = model_hash && *model_hash ? model_hash : NULL;
    it.extra = extra && *extra ? extra : NULL;
    it.clip_skip = p->clip_skip;
    if (p->init_image)
        it.denoising_strength = p->strength;
    return sdx_infotext_format(&it);
}

/* A VAE network over vm's VAE weights with the engine's settings. */
static sdx_vae_t *s_vae_for(const sdxl_engine_t *e, const sdx_model_t *vm)
{
    sdx_vae_config_t vc = vm->vae_cfg;
    if (e->params.vae_upcast)
        vc.force_upcast = e->params.vae_upcast > 0;
    sdx_vae_t *v = sdx_vae_new_f32(&vc, vm->vae, e->params.vae_f32);
    if (v) {
        bool cl = e->params.channels_last < 0 ? e->params.device.type == SDX_CUDA
                                               : e->params.channels_last == 1;
        sdx_vae_options(v)->channels_last = cl;
    }
    return v;
}

int sdxl_engine_set_vae(sdxl_engine_t *e, const char *vae_path)
{
    bool ext = vae_path && *vae_path;
    if (!e->unet)
        return sdx_set_error("engine: loaded for text encoding only, it has no VAE");
    if (ext && e->ext_vae && strcmp(e->ext_vae_path, vae_path) == 0)
        return 0; /* already running it */
    if (!ext && !e->ext_vae)
        return 0; /* the checkpoint's, already */
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    sdx_model_t *nm = NULL;
    sdx_vae_t *nv = NULL;
    if (ext) {
        sdx_load_opts_t vo;
        sdx_load_opts_init(&vo);
        vo.path = vae_path;
        vo.dtype = e->params.dtype;
        vo.device = e->params.device;
        vo.components = SDX_COMP_VAE;
        nm = sdx_model_load(&vo);
        if (nm && !nm->vae) {
            sdx_set_error("%s: holds no VAE (%s)", vae_path, sdx_arch_name(nm->arch));
            sdx_model_free(&nm);
        }
        if (nm && !(nv = s_vae_for(e, nm)))
            sdx_model_free(&nm);
    } else {
        nv = e->vae_ckpt ? e->vae_ckpt : s_vae_for(e, e->model);
        e->vae_ckpt = NULL;
    }
    sdx_inference_guard_free(&guard);
    if (!nv)
        return -1; /* the running VAE is untouched */
    if (!e->ext_vae) {
        e->vae_ckpt = e->vae; /* kept: going back costs nothing */
    } else {
        sdx_vae_free(&e->vae);
        sdx_model_free(&e->ext_vae);
    }
    e->vae = nv;
    e->ext_vae = nm;
    snprintf(e->ext_vae_path, sizeof e->ext_vae_path, "%s", ext ? vae_path : "");
    s_log(e, 2, "VAE: %s", ext ? vae_path : "the checkpoint's");
    return 0;
}

static int64_t s_weights_bytes(const sdx_weights_t *w)
{
    int64_t n = 0;
    for (size_t i = 0; w && i < sdx_weights_count(w); i++) {
        const sdx_tensor_t *t = sdx_weights_tensor_at((sdx_weights_t *)w, i);
        n += sdx_tensor_numel(t) * (int64_t)sdx_dtype_size(sdx_tensor_dtype(t));
    }
    return n;
}

int64_t sdxl_engine_weight_bytes(const sdxl_engine_t *e)
{
    if (!e || !e->model)
        return 0;
    const sdx_model_t *m = e->model;
    int64_t n = s_weights_bytes(m->unet) + s_weights_bytes(m->vae) + s_weights_bytes(m->te1) +
                s_weights_bytes(m->te2);
    if (e->ext_vae)
        n += s_weights_bytes(e->ext_vae->vae);
    return n;
}
