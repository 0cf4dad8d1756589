/*  infer_engine.c - the inference worker's engine side: device choice,
    model cache (infer_cache.c), one generation through sdxl.h, output.upscale
    (post_upscale.h) and the encoding of its images with their A1111
    metadata (sdx_imgcodec.h: PNG, JPEG, WebP).
    Includes the engine's headers and never common/ (see infer_engine.h).
    Not for: requests and replies (handler_inference.c). */
#include "infer_engine.h"

#include "infer_cache.h"
#include "post_upscale.h"
#include "sdx_canny.h"
#include "sdx_imgcodec.h"
#include "sdx_taesd.h"
#include "sdx_upscale.h"
#include "sdxl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct infer_engine {
    char models_root[4096];
    char config_dir[4096];
    sdx_device_t device;
    post_upscaler_t *upscaler;
    const char *device_name;
    int threads;
    bool text_only;
    infer_cache_t *cache;
    sdx_taesd_t *preview; /* live previews' decoder, NULL: none */
};

infer_engine_t *infer_engine_new(const infer_engine_config_t *cfg, char *note, size_t note_len,
                                 char *err, size_t err_len)
{
    note[0] = '\0';
    infer_engine_t *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    snprintf(e->models_root, sizeof e->models_root, "%s", cfg->models_root);
    snprintf(e->config_dir, sizeof e->config_dir, "%s", cfg->config_dir ? cfg->config_dir : "");
    e->threads = cfg->threads;
    e->text_only = cfg->text_only;
    e->device = (sdx_device_t){SDX_CPU, 0};
    e->device_name = "cpu";
    if (cfg->gpu >= 0) {
        /* the runtime restricted CUDA_VISIBLE_DEVICES to that GPU */
        if (sdx_cuda_device_count() > 0) {
            e->device = (sdx_device_t){SDX_CUDA, 0};
            e->device_name = "cuda:0";
        } else {
            snprintf(note, note_len,
                     "--gpu %d given, but this libtorch has no CUDA (or sees no device): "
                     "running on the CPU",
                     cfg->gpu);
        }
    }
    if (e->threads > 0 && sdx_set_num_threads(e->threads) != 0)
        infer_log(1, "cannot set %d CPU threads: %s", e->threads, sdx_last_error());
    e->cache = infer_cache_new(cfg->max_models);
    if (e->cache)
        infer_cache_set_budget(e->cache, cfg->max_model_bytes);
    e->upscaler = post_upscaler_new(cfg->upscalers_root, e->device, 512, 10);
    if (!e->cache || !e->upscaler) {
        infer_cache_destroy(&e->cache);
        post_upscaler_free(&e->upscaler);
        free(e);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (cfg->preview_decoder && cfg->preview_decoder[0] &&
        !(e->preview = sdx_taesd_load(cfg->preview_decoder,
                                      e->device.type == SDX_CUDA ? SDX_F16 : SDX_F32, e->device))) {
        snprintf(err, err_len, "preview-decoder: %s", sdx_last_error());
        infer_engine_destroy(&e);
        return NULL;
    }
    return e;
}

bool infer_engine_has_previews(const infer_engine_t *e)
{
    return e && e->preview;
}

void infer_engine_destroy(infer_engine_t **e_p)
{
    infer_engine_t *e = *e_p;
    if (!e)
        return;
    infer_cache_destroy(&e->cache);
    post_upscaler_free(&e->upscaler);
    sdx_taesd_free(&e->preview);
    free(e);
    *e_p = NULL;
}

const char *infer_engine_device(const infer_engine_t *e)
{
    return e->device_name;
}

bool infer_engine_is_cuda(const infer_engine_t *e)
{
    return e->device.type == SDX_CUDA;
}

int infer_engine_threads(const infer_engine_t *e)
{
    return e->threads > 0 ? e->threads : sdx_get_num_threads();
}

char **infer_engine_models(infer_engine_t *e, size_t *n)
{
    return infer_cache_names(e->cache, n);
}

int infer_engine_describe(infer_engine_t *e, infer_model_info_t *out, int max)
{
    return infer_cache_describe(e->cache, out, max);
}

void infer_output_clear(infer_output_t *out)
{
    for (int i = 0; out->images && i < out->count; i++)
        free(out->images[i].data);
    free(out->images);
    free(out->parameters);
    memset(out, 0, sizeof *out);
}

static double s_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

bool infer_engine_format_available(const char *format)
{
    sdx_img_format_t f = sdx_img_format_parse(format);
    return f != SDX_FMT_UNKNOWN && sdx_img_format_available(f);
}

/* Tiles done during output.upscale: reported as progress, so a CANCEL or a
   passed deadline (which the request's progress callback turns into *cancel)
   stops the upscale too. */
static bool s_upscale_progress(void *ctx, int done, int total)
{
    const infer_request_t *req = ctx;
    if (req->progress)
        req->progress(done, total, 0, "upscaling", req->progress_ud);
    return !(req->cancel && *req->cancel);
}

/* Upscale (output.upscale) in place, then encode with the metadata. */
static infer_status_t s_encode(infer_engine_t *e, const infer_request_t *req, const char *text,
                               sdx_image_t *img, infer_image_t *out, char *method,
                               size_t method_len, char *err, size_t err_len)
{
    if (req->upscale_factor > 0) {
        post_status_t st =
            post_upscale(e->upscaler, img, req->upscale_factor, req->upscale_model,
                         s_upscale_progress, (void *)req, method, method_len, err, err_len);
        if (st == POST_CANCELLED)
            return INFER_CANCELLED;
        if (st != POST_OK)
            return st == POST_NOT_FOUND || st == POST_BAD_REQUEST ? INFER_BAD_UPSCALE
                                                                    : INFER_FAILED;
    }
    out->width = img->width;
    out->height = img->height;
    sdx_encode_opts_t o;
    sdx_encode_opts_init(&o);
    o.format = sdx_img_format_parse(req->format);
    int side = sdx_img_format_max_side(o.format);
    if (img->width > side || img->height > side) {
        snprintf(err, err_len, "%s holds at most %d pixels a side; the image is %dx%d",
                 req->format, side, img->width, img->height);
        return INFER_BAD_UPSCALE;
    }
    o.quality = req->quality;
    o.text = text;
    o.png_extra = req->png_text;
    if (sdx_image_encode(img, &o, &out->data, &out->len) != 0) {
        snprintf(err, err_len, "%s encoding failed: %s", req->format, sdx_last_error());
        return INFER_FAILED;
    }
    return INFER_OK;
}

/* Adapts the engine's per-step callback to the request's. With a refiner
   the two stages count as one: the base's steps of all of them, then the
   refiner's after them. */
typedef struct {
    const infer_request_t *req;
    int offset; /* steps of an earlier stage */
    int total;  /* > 0: the total to report instead of the engine's */
} s_step_t;

static void s_on_step(int step, int total, double elapsed_s, void *ud)
{
    const s_step_t *s = ud;
    const infer_request_t *req = s->req;
    if (req->progress)
        req->progress(s->offset + step, s->total > 0 ? s->total : total,
                      elapsed_s > 0 ? step / elapsed_s : 0,
                      s->offset ? "refining" : "denoising", req->progress_ud);
}

/* The engine's live preview -> encoded bytes -> the request's callback,
   numbered as s_on_step numbers the steps. */
static void s_on_preview(int step, int total, const sdx_image_t *img, void *ud)
{
    const s_step_t *s = ud;
    const infer_request_t *req = s->req;
    sdx_encode_opts_t o;
    sdx_encode_opts_init(&o);
    o.format = sdx_img_format_parse(req->preview_format ? req->preview_format : "jpeg");
    o.quality = req->preview_quality > 0 ? req->preview_quality : 75;
    uint8_t *data = NULL;
    size_t len = 0;
    if (req->preview && sdx_image_encode(img, &o, &data, &len) == 0)
        req->preview(s->offset + step, s->total > 0 ? s->total : total, data, len, img->width,
                     img->height, req->preview_ud);
    free(data);
}

/* gp's live previews for req (none without a decoder or a callback). */
static void s_set_previews(const infer_engine_t *e, const infer_request_t *req,
                           sdxl_gen_params_t *gp, s_step_t *step)
{
    if (!e->preview || !req->preview || req->preview_every <= 0)
        return;
    gp->preview_decoder = e->preview;
    gp->preview_every = req->preview_every;
    gp->preview = s_on_preview;
    gp->preview_ud = step;
}

static infer_status_t s_engine_status(const char *why, bool input_error);

/* The refiner stage: resolve and acquire refiner_model (components from
   the base at base_path where it lacks them), run the rest of the schedule
   from the base's latents in *r, and replace *r with the refined result
   (its steps count both stages). The base's entry is released by then. */
static infer_status_t s_refine(infer_engine_t *e, const infer_request_t *req,
                               const char *base_path, const sdxl_engine_params_t *bep,
                               const sdxl_gen_params_t *bgp, sdxl_result_t *r,
                               infer_output_t *out, char *err, size_t err_len)
{
    infer_model_ref_t ref;
    bool not_found;
    if (infer_model_resolve(e->models_root, req->refiner_model,
                            e->config_dir[0] ? e->config_dir : NULL, &ref, &not_found, err,
                            err_len) != 0)
        return INFER_BAD_REFINER;
    sdxl_engine_params_t ep = *bep;
    ep.components_path = base_path; /* only what the refiner lacks */
    int done = r->steps_done;
    if (req->progress && !infer_cache_has(e->cache, &ref, ep.dtype))
        req->progress(done, req->steps, 0, "loading refiner", req->progress_ud);
    bool loaded;
    double load_ms;
    infer_entry_t *entry =
        infer_cache_acquire(e->cache, req->refiner_model, &ref, &ep, &loaded, &load_ms, err,
                            err_len);
    out->load_ms += loaded ? load_ms : 0;
    out->models_changed = out->models_changed || loaded || !entry;
    if (!entry)
        return strstr(err, "out of memory") ? INFER_OOM : INFER_BAD_REFINER;
    sdxl_engine_t *eng = infer_entry_engine(entry);
    /* no LoRA or embeddings of a base request stay fused in a refiner */
    if (sdxl_engine_set_vae(eng, req->vae_path) != 0 || sdxl_engine_set_loras(eng, NULL, 0) != 0 ||
        sdxl_engine_set_embeddings(eng, NULL, 0) != 0) {
        snprintf(err, err_len, "refiner_model: %s", sdx_last_error());
        infer_cache_release(e->cache, &entry);
        return strstr(err, "out of memory") ? INFER_OOM : INFER_BAD_REFINER;
    }
    sdxl_gen_params_t gp = *bgp;
    s_step_t step = {.req = req, .offset = done, .total = req->steps};
    gp.progress = s_on_step;
    gp.progress_ud = &step;
    if (gp.preview)
        gp.preview_ud = &step;
    sdxl_result_t r2;
    int rc = sdxl_refine(eng, &gp, r, req->aesthetic_score, req->negative_aesthetic_score, &r2);
    infer_cache_release(e->cache, &entry);
    if (rc != 0) {
        snprintf(err, err_len, "refiner_model: %s", sdx_last_error());
        return req->cancel && *req->cancel ? INFER_CANCELLED
                                            : r2.input_error ? INFER_BAD_REFINER
                                                             : s_engine_status(err, false);
    }
    r2.previews += r->previews;
    r2.preview_ms += r->preview_ms;
    if (!r2.preview_error[0])
        snprintf(r2.preview_error, sizeof r2.preview_error, "%s", r->preview_error);
    sdxl_result_clear(r);
    *r = r2;
    return INFER_OK;
}

/* What a failed sdxl_generate means for the client: the engine says whether
   the parameters were at fault (r.input_error); cancellation and memory
   exhaustion are told by their messages. */
static infer_status_t s_engine_status(const char *why, bool input_error)
{
    if (strstr(why, "cancelled"))
        return INFER_CANCELLED;
    if (input_error)
        return INFER_BAD_INPUT;
    if (strstr(why, "out of memory"))
        return INFER_OOM;
    return INFER_FAILED;
}

/* Fuse req's LoRA set into the entry's engine (a text-only engine takes the
   text encoders' part). */
static infer_status_t s_apply_loras(infer_entry_t *entry, const infer_request_t *req, double *ms,
                                    char *err, size_t err_len)
{
    sdxl_lora_t specs[16];
    int n = req->n_loras < 16 ? req->n_loras : 16;
    for (int i = 0; i < n; i++)
        specs[i] = (sdxl_lora_t){req->loras[i].path, req->loras[i].weight};
    double t0 = s_ms();
    if (sdxl_engine_set_loras(infer_entry_engine(entry), specs, n) != 0) {
        snprintf(err, err_len, "lora.models: %s", sdx_last_error());
        return strstr(err, "out of memory") ? INFER_OOM : INFER_BAD_LORA;
    }
    *ms = s_ms() - t0;
    return INFER_OK;
}

static void s_borrowed(void *ctx) { (void)ctx; }

/* req->embeds as engine tensors that borrow the request's bytes (no copy;
   the bytes outlive the generation), owned by *S. */
static infer_status_t s_embeds_in(const infer_request_t *req, sdx_scope_t **S,
                                  sdx_prompt_embeds_t *pe, char *err, size_t err_len)
{
    *S = sdx_scope_new();
    if (!*S) {
        snprintf(err, err_len, "out of memory");
        return INFER_OOM;
    }
    for (int i = 0; i < req->n_embeds; i++) {
        const infer_tensor_t *t = &req->embeds[i];
        sdx_tensor_t **slot = !strcmp(t->name, "prompt_embeds")          ? &pe->prompt_embeds
                              : !strcmp(t->name, "pooled_prompt_embeds") ? &pe->pooled_prompt_embeds
                              : !strcmp(t->name, "negative_prompt_embeds")
                                  ? &pe->negative_prompt_embeds
                              : !strcmp(t->name, "negative_pooled_prompt_embeds")
                                  ? &pe->negative_pooled_prompt_embeds
                                  : NULL;
        sdx_dtype_t dt = !strcmp(t->dtype, "float16")    ? SDX_F16
                         : !strcmp(t->dtype, "bfloat16") ? SDX_BF16
                                                         : SDX_F32;
        if (!slot) {
            snprintf(err, err_len, "embeddings.%s: not an SDXL conditioning tensor", t->name);
            return INFER_BAD_INPUT;
        }
        if (sdx_from_blob(*S, slot, t->data, dt, t->shape, t->ndim, s_borrowed, NULL) != 0) {
            snprintf(err, err_len, "embeddings.%s: %s", t->name, sdx_last_error());
            return INFER_BAD_INPUT;
        }
    }
    return INFER_OK;
}

infer_status_t infer_engine_generate(infer_engine_t *e, const infer_request_t *req,
                                     infer_output_t *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    infer_model_ref_t ref;
    bool not_found;
    if (infer_model_resolve(e->models_root, req->model_name,
                            e->config_dir[0] ? e->config_dir : NULL, &ref, &not_found, err,
                            err_len) != 0)
        return not_found ? INFER_NOT_FOUND : INFER_BAD_NAME;

    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    if (strcmp(req->dtype, "fp16") == 0)
        ep.dtype = SDX_F16;
    else if (strcmp(req->dtype, "bf16") == 0)
        ep.dtype = SDX_BF16;
    else
        ep.dtype = SDX_F32;
    ep.device = e->device;
    ep.threads = e->threads;

    if (req->progress && !infer_cache_has(e->cache, &ref, ep.dtype))
        req->progress(0, req->steps, 0, "loading model", req->progress_ud);
    bool loaded;
    double load_ms;
    infer_entry_t *entry =
        infer_cache_acquire(e->cache, req->model_name, &ref, &ep, &loaded, &load_ms, err, err_len);
    out->loaded = loaded;
    out->load_ms = loaded ? load_ms : 0;
    out->models_changed = loaded || !entry;
    if (!entry)
        return strstr(err, "out of memory") ? INFER_OOM : INFER_LOAD_FAILED;
    if (req->cancel && *req->cancel) {
        infer_cache_release(e->cache, &entry);
        snprintf(err, err_len, "cancelled");
        return INFER_CANCELLED;
    }

    sdxl_gen_params_t gp;
    sdxl_gen_params_init(&gp);
    gp.prompt = req->prompt;
    gp.negative_prompt = req->negative_prompt;
    gp.scheduler = req->scheduler;
    gp.prediction_type = req->prediction_type;
    gp.karras = req->karras;
    gp.width = req->width;
    gp.height = req->height;
    gp.steps = req->steps;
    gp.clip_skip = req->clip_skip;
    gp.prompt_attention = req->prompt_attention;
    gp.batch = req->batch;
    gp.guidance_scale = req->guidance_scale;
    gp.guidance_rescale = req->guidance_rescale;
    gp.seed = req->seed;
    s_step_t step = {.req = req, .total = req->refiner_model ? req->steps : 0};
    gp.progress = s_on_step;
    gp.progress_ud = &step;
    s_set_previews(e, req, &gp, &step);
    gp.cancel = req->cancel;
    if (req->refiner_model) { /* the base's part: latents, no decode */
        gp.denoising_end = req->refiner_switch;
        gp.decode = false;
    }
    /* the request's VAE (the same as last time costs nothing) */
    if (sdxl_engine_set_vae(infer_entry_engine(entry), req->vae_path) != 0) {
        snprintf(err, err_len, "vae_model: %s", sdx_last_error());
        infer_cache_release(e->cache, &entry);
        return strstr(err, "out of memory") ? INFER_OOM : INFER_BAD_VAE;
    }
    /* the request's LoRA set (the same set as last time costs nothing) */
    infer_status_t lst = s_apply_loras(entry, req, &out->lora_ms, err, err_len);
    if (lst != INFER_OK) {
        infer_cache_release(e->cache, &entry);
        return lst;
    }
    /* the request's embeddings (the same set as last time costs nothing) */
    {
        sdxl_embedding_t specs[16];
        int n = req->n_tis < 16 ? req->n_tis : 16;
        for (int i = 0; i < n; i++)
            specs[i] = (sdxl_embedding_t){req->tis[i].path, req->tis[i].token};
        if (sdxl_engine_set_embeddings(infer_entry_engine(entry), specs, n) != 0) {
            snprintf(err, err_len, "textual_inversions: %s", sdx_last_error());
            infer_cache_release(e->cache, &entry);
            return strstr(err, "out of memory") ? INFER_OOM : INFER_BAD_TI;
        }
    }
    sdx_image_t init = {0}; /* init_image decoded (and resized), owned */
    if (req->init_image) {
        if (sdx_image_decode_fit(req->init_image, req->init_image_len, req->width, req->height,
                                 &init) != 0) {
            snprintf(err, err_len, "init_image: %s", sdx_last_error());
            infer_cache_release(e->cache, &entry);
            return INFER_BAD_IMAGE;
        }
        gp.init_image = &init;
        gp.strength = req->strength;
    }
    /* ControlNets: kept by the model's engine; images decoded here, owned */
    sdx_image_t cimg[SDXL_MAX_CONTROLS] = {0};
    sdxl_control_t ctl[SDXL_MAX_CONTROLS];
    int nc = req->n_controls < SDXL_MAX_CONTROLS ? req->n_controls : SDXL_MAX_CONTROLS;
    for (int i = 0; i < nc; i++) {
        const infer_control_t *c = &req->controls[i];
        const sdxl_controlnet_t *net = sdxl_engine_controlnet(infer_entry_engine(entry), c->path);
        int bad = !net ? 1
                  : sdx_image_decode_fit(c->image, c->image_len, req->width, req->height,
                                         &cimg[i]) != 0
                      ? 2
                      : 0;
        if (!bad && c->canny) { /* the annotator's order: resize, then edges */
            sdx_canny_params_t cp = {c->canny_low, c->canny_high, c->canny_sigma, false};
            sdx_image_t edges;
            if (sdx_canny(&cimg[i], &cp, &edges) != 0) {
                bad = 3;
            } else {
                sdx_image_clear(&cimg[i]);
                cimg[i] = edges;
            }
        }
        if (bad) {
            snprintf(err, err_len, "controlnet[%d]%s: %s", i,
                     bad == 1 ? ".model" : bad == 2 ? ".image" : ".canny", sdx_last_error());
            for (int k = 0; k <= i; k++)
                sdx_image_clear(&cimg[k]);
            sdx_image_clear(&init);
            infer_cache_release(e->cache, &entry);
            return strstr(err, "out of memory") ? INFER_OOM : INFER_BAD_CONTROLNET;
        }
        ctl[i] = (sdxl_control_t){net, &cimg[i], c->scale, c->start, c->end};
    }
    gp.controls = nc ? ctl : NULL;
    gp.n_controls = nc;
    sdx_scope_t *ES = NULL; /* the given embeddings, as tensors over their bytes */
    sdx_prompt_embeds_t given = {0};
    if (req->embeds) {
        infer_status_t est = s_embeds_in(req, &ES, &given, err, err_len);
        if (est != INFER_OK) {
            for (int k = 0; k < nc; k++)
                sdx_image_clear(&cimg[k]);
            sdx_image_clear(&init);
            sdx_scope_free(&ES);
            infer_cache_release(e->cache, &entry);
            return est;
        }
        gp.embeds = &given;
    }
    sdxl_result_t r;
    int rc = sdxl_generate(infer_entry_engine(entry), &gp, &r);
    if (rc != 0)
        snprintf(err, err_len, "%s", sdx_last_error());
    for (int k = 0; k < nc; k++)
        sdx_image_clear(&cimg[k]);
    sdx_image_clear(&init);
    sdx_scope_free(&ES);
    infer_cache_release(e->cache, &entry);
    if (rc != 0)
        return req->cancel && *req->cancel ? INFER_CANCELLED
                                            : s_engine_status(err, r.input_error);
    if (req->refiner_model) {
        infer_status_t rst = s_refine(e, req, ref.path, &ep, &gp, &r, out, err, err_len);
        if (rst != INFER_OK) {
            sdxl_result_clear(&r);
            return rst;
        }
    }

    double t0 = s_ms();
    out->images = calloc((size_t)(r.count > 0 ? r.count : 1), sizeof *out->images);
    if (!out->images) {
        sdxl_result_clear(&r);
        snprintf(err, err_len, "out of host memory");
        return INFER_OOM;
    }
    /* Model hash: AutoV2 of a single file (a folder has none; hashed on the
       model's first generation, then kept), as sdxl-gen writes it */
    char autov2[11] = "";
    if (!ref.single_file || sdxl_model_autov2(ref.path, autov2) != 0)
        autov2[0] = '\0';
    /* A1111's refiner fields */
    char extra[400] = "";
    if (req->refiner_model)
        sdxl_infotext_refiner(req->refiner_model, req->refiner_switch, extra, sizeof extra);
    char *text = sdxl_infotext(&gp, &r, req->model_name, autov2, extra);
    for (int i = 0; i < r.count; i++) {
        infer_status_t st = s_encode(e, req, text, &r.images[i], &out->images[i],
                                     out->upscale_method, sizeof out->upscale_method, err, err_len);
        if (st != INFER_OK) {
            out->count = i;
            free(text);
            sdxl_result_clear(&r);
            infer_output_clear(out);
            return st;
        }
        out->count = i + 1;
    }
    out->parameters = text; /* the reply says what the images carry */
    snprintf(out->model_hash, sizeof out->model_hash, "%s", autov2);
    out->steps_done = r.steps_done;
    out->previews = r.previews;
    out->preview_ms = r.preview_ms;
    snprintf(out->preview_error, sizeof out->preview_error, "%s", r.preview_error);
    out->encode_ms = r.encode_ms;
    out->denoise_ms = r.denoise_ms;
    out->decode_ms = r.decode_ms;
    out->image_ms = s_ms() - t0;
    sdxl_result_clear(&r);
    return INFER_OK;
}

/* ------------------------------------------------------ the text side */

/* The engine for req's model in req's dtype, from the cache (loaded when
   absent). NULL with a status in *st and the reason in err. */
static infer_entry_t *s_acquire(infer_engine_t *e, const char *model_name, const char *dtype,
                                bool *loaded, double *load_ms, infer_status_t *st, char *err,
                                size_t err_len)
{
    infer_model_ref_t ref;
    bool not_found;
    if (infer_model_resolve(e->models_root, model_name, e->config_dir[0] ? e->config_dir : NULL,
                            &ref, &not_found, err, err_len) != 0) {
        *st = not_found ? INFER_NOT_FOUND : INFER_BAD_NAME;
        return NULL;
    }
    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.dtype = dtype && strcmp(dtype, "fp16") == 0   ? SDX_F16
               : dtype && strcmp(dtype, "bf16") == 0 ? SDX_BF16
                                                     : SDX_F32;
    ep.device = e->device;
    ep.threads = e->threads;
    ep.text_only = e->text_only;
    infer_entry_t *entry =
        infer_cache_acquire(e->cache, model_name, &ref, &ep, loaded, load_ms, err, err_len);
    if (!entry)
        *st = strstr(err, "out of memory") ? INFER_OOM : INFER_LOAD_FAILED;
    return entry;
}

static sdx_dtype_t s_dtype_of(const char *dtype)
{
    return dtype && strcmp(dtype, "fp16") == 0   ? SDX_F16
           : dtype && strcmp(dtype, "bf16") == 0 ? SDX_BF16
                                                 : SDX_F32;
}

infer_status_t infer_engine_load(infer_engine_t *e, const char *model_name, const char *dtype,
                                 infer_load_t *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    sdx_dtype_t dt = s_dtype_of(dtype);
    out->dtype = dt == SDX_F16 ? "fp16" : dt == SDX_BF16 ? "bf16" : "fp32";
    infer_model_ref_t ref;
    bool not_found;
    if (infer_model_resolve(e->models_root, model_name, e->config_dir[0] ? e->config_dir : NULL,
                            &ref, &not_found, err, err_len) != 0)
        return not_found ? INFER_NOT_FOUND : INFER_BAD_NAME;
    snprintf(out->path, sizeof out->path, "%s", ref.path);
    /* loaded already: no wait for a generation running on it */
    if (infer_cache_lookup(e->cache, &ref, dt, &out->bytes)) {
        out->already_loaded = true;
        return INFER_OK;
    }
    infer_status_t st = INFER_OK;
    bool loaded = false;
    double load_ms = 0;
    infer_entry_t *entry =
        s_acquire(e, model_name, out->dtype, &loaded, &load_ms, &st, err, err_len);
    out->models_changed = loaded || !entry;
    if (!entry)
        return st;
    out->loaded = loaded;
    out->already_loaded = !loaded; /* another job loaded it meanwhile */
    out->load_ms = loaded ? load_ms : 0;
    out->bytes = sdxl_engine_weight_bytes(infer_entry_engine(entry));
    infer_cache_release(e->cache, &entry);
    return INFER_OK;
}

infer_status_t infer_engine_unload(infer_engine_t *e, const char *model_name, const char *dtype,
                                   int *unloaded, int *deferred, char *err, size_t err_len)
{
    *unloaded = *deferred = 0;
    infer_model_ref_t ref;
    bool not_found;
    int rc =
        infer_model_resolve(e->models_root, model_name, e->config_dir[0] ? e->config_dir : NULL,
                            &ref, &not_found, err, err_len);
    if (rc != 0 && !not_found)
        return INFER_BAD_NAME;
    int dt = dtype ? (int)s_dtype_of(dtype) : -1;
    /* gone from disk: what was loaded under that name */
    *unloaded = infer_cache_evict(e->cache, rc == 0 ? &ref : NULL, model_name, dt, deferred);
    if (rc != 0 && *unloaded == 0 && *deferred == 0)
        return INFER_NOT_FOUND;
    return INFER_OK;
}

static const char *s_dtype_wire(sdx_dtype_t dt)
{
    return dt == SDX_F16 ? "float16" : dt == SDX_BF16 ? "bfloat16" : "float32";
}

/* One device tensor -> host bytes in its own dtype (the one copy out of the
   engine). */
static int s_tensor_out(const char *name, const sdx_tensor_t *t, infer_tensor_t *out)
{
    memset(out, 0, sizeof *out);
    out->name = name;
    sdx_dtype_t dt = sdx_tensor_dtype(t);
    if (dt != SDX_F32 && dt != SDX_F16 && dt != SDX_BF16)
        dt = SDX_F32;
    out->dtype = s_dtype_wire(dt);
    int64_t shape[SDX_MAX_DIMS];
    int nd = sdx_tensor_shape(t, shape);
    if (nd < 1 || nd > 4)
        return sdx_set_error("%s: unexpected rank %d", name, nd);
    out->ndim = nd;
    memcpy(out->shape, shape, (size_t)nd * sizeof *shape);
    out->nbytes = (size_t)sdx_tensor_numel(t) * sdx_dtype_size(dt);
    out->data = malloc(out->nbytes ? out->nbytes : 1);
    if (!out->data)
        return sdx_set_error("out of host memory");
    return sdx_to_host(t, dt, out->data, out->nbytes);
}

void infer_embeds_clear(infer_embeds_t *out)
{
    for (int i = 0; i < 4; i++)
        free(out->t[i].data);
    memset(out, 0, sizeof *out);
}

infer_status_t infer_engine_encode(infer_engine_t *e, const infer_request_t *req,
                                   infer_embeds_t *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    infer_status_t st = INFER_OK;
    bool loaded = false;
    double load_ms = 0;
    infer_entry_t *entry =
        s_acquire(e, req->model_name, req->dtype, &loaded, &load_ms, &st, err, err_len);
    out->loaded = loaded;
    out->load_ms = loaded ? load_ms : 0;
    out->models_changed = loaded || !entry;
    if (!entry)
        return st;
    double lora_ms = 0;
    infer_status_t lst = s_apply_loras(entry, req, &lora_ms, err, err_len);
    if (lst != INFER_OK) {
        infer_cache_release(e->cache, &entry);
        return lst;
    }
    sdxl_gen_params_t gp;
    sdxl_gen_params_init(&gp);
    gp.prompt = req->prompt;
    gp.negative_prompt = req->negative_prompt;
    gp.clip_skip = req->clip_skip;
    gp.prompt_attention = req->prompt_attention;
    gp.batch = req->batch;
    gp.guidance_scale = req->guidance_scale;
    double t0 = s_ms();
    sdx_prompt_embeds_t pe;
    bool input_error = false;
    int rc = sdxl_encode_prompt(infer_entry_engine(entry), &gp, &pe, &input_error);
    if (rc != 0)
        snprintf(err, err_len, "%s", sdx_last_error());
    infer_cache_release(e->cache, &entry);
    if (rc != 0)
        return s_engine_status(err, input_error);
    const struct {
        const char *name;
        sdx_tensor_t *t;
    } parts[4] = {
        {"prompt_embeds", pe.prompt_embeds},
        {"pooled_prompt_embeds", pe.pooled_prompt_embeds},
        {"negative_prompt_embeds", pe.negative_prompt_embeds},
        {"negative_pooled_prompt_embeds", pe.negative_pooled_prompt_embeds},
    };
    for (int i = 0; i < 4 && parts[i].t; i++) {
        if (s_tensor_out(parts[i].name, parts[i].t, &out->t[i]) != 0) {
            snprintf(err, err_len, "%s", sdx_last_error());
            sdx_prompt_embeds_free(&pe);
            infer_embeds_clear(out);
            return strstr(err, "memory") ? INFER_OOM : INFER_FAILED;
        }
        out->count = i + 1;
    }
    out->truncated = pe.truncated;
    out->encode_ms = s_ms() - t0;
    sdx_prompt_embeds_free(&pe);
    return INFER_OK;
}

static void s_tokenize_one(const sdx_tokenizer_t *t, const char *text, infer_tokens_t *out, int i,
                           const char *name)
{
    out->names[i] = name;
    out->pad_id[i] = sdx_tokenizer_pad_id(t);
    if (sdx_tokenizer_encode(t, text, out->ids[i], SDX_CLIP_MAX_LENGTH, &out->n_real[i],
                             &out->n_untruncated[i]) == 0)
        out->count = i + 1;
}

infer_status_t infer_engine_tokenize(infer_engine_t *e, const char *model_name, const char *text,
                                     infer_tokens_t *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    if (!model_name || !*model_name) {
        sdx_tokenizer_t *t1 = sdx_tokenizer_builtin(1), *t2 = sdx_tokenizer_builtin(2);
        if (t1 && t2) {
            s_tokenize_one(t1, text, out, 0, "tokenizer");
            if (out->count == 1)
                s_tokenize_one(t2, text, out, 1, "tokenizer_2");
        }
        if (out->count != 2)
            snprintf(err, err_len, "%s", sdx_last_error());
        sdx_tokenizer_destroy(&t1);
        sdx_tokenizer_destroy(&t2);
        return out->count == 2 ? INFER_OK : strstr(err, "UTF-8") ? INFER_BAD_INPUT : INFER_FAILED;
    }
    infer_status_t st = INFER_OK;
    bool loaded = false;
    double load_ms = 0;
    infer_entry_t *entry = s_acquire(e, model_name, "fp32", &loaded, &load_ms, &st, err, err_len);
    out->loaded = loaded;
    out->load_ms = loaded ? load_ms : 0;
    out->models_changed = loaded || !entry;
    if (!entry)
        return st;
    const sdxl_engine_t *eng = infer_entry_engine(entry);
    const sdx_tokenizer_t *t1 = sdxl_engine_tokenizer(eng, 1), *t2 = sdxl_engine_tokenizer(eng, 2);
    int want = t1 ? 2 : 1;
    if (t1)
        s_tokenize_one(t1, text, out, 0, "tokenizer");
    if (out->count == want - 1)
        s_tokenize_one(t2, text, out, want - 1, "tokenizer_2");
    if (out->count != want)
        snprintf(err, err_len, "%s", sdx_last_error());
    infer_cache_release(e->cache, &entry);
    return out->count == want ? INFER_OK : strstr(err, "UTF-8") ? INFER_BAD_INPUT : INFER_FAILED;
}
