/*  sdx_model.c - find what a path holds (layout, architecture, configs) and
    load its weights under diffusers names.

    Everything starts with a "source": the open safetensors file(s) of a
    path, the architecture detected from tensor names/shapes (and config.json
    files), the component configs, and a plan: one item per diffusers tensor
    saying which file tensor it comes from and how it is reshaped. The plan
    is built from headers alone, so detection, shape checks and `inspect`
    never touch weight bytes. Loading walks the plan one tensor at a time:
    borrow the mapped bytes, apply the op (a view where possible), convert to
    the requested dtype/device; the only full copy of the model in host memory
    is the result (or none at all: an f32 CPU load keeps views of the mapping).

    Not for: what the networks do with the weights, adapters (LoRA, ControlNet,
    textual inversion are detected here but loaded by their own code).
*/
#include "sdx_model.h"
#include "sdx_namemap.h"
#include "sdx_safetensors.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define S_MAX_FILES 64 /* a sharded pipeline: a few shards per component */
#define S_SKIP_LIST 8
#define S_WHY_MAX 512

/* ---------------------------------------------------------------- names */

static const struct {
    sdx_arch_t arch;
    const char *name;
} s_arch_names[] = {
    {SDX_ARCH_UNKNOWN, "unknown"},
    {SDX_ARCH_SDXL_BASE, "sdxl_base"},
    {SDX_ARCH_SDXL_REFINER, "sdxl_refiner"},
    {SDX_ARCH_VAE, "vae"},
    {SDX_ARCH_LORA, "lora"},
    {SDX_ARCH_CONTROLNET, "controlnet"},
    {SDX_ARCH_TEXTUAL_INVERSION, "textual_inversion"},
};

const char *sdx_arch_name(sdx_arch_t a)
{
    for (size_t i = 0; i < sizeof s_arch_names / sizeof s_arch_names[0]; i++)
        if (s_arch_names[i].arch == a)
            return s_arch_names[i].name;
    return "unknown";
}

void sdx_load_opts_init(sdx_load_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->dtype = SDX_F32;
    o->device.type = SDX_CPU;
    o->device.index = 0;
    o->components = SDX_COMP_ALL;
}

/* Component subfolders of a diffusers pipeline, in sdx_nm_comp_t order. */
static const char *s_comp_dirs[SDX_NM_NCOMP] = {"unet", "vae", "text_encoder", "text_encoder_2"};
static const unsigned s_comp_bits[SDX_NM_NCOMP] = {SDX_COMP_UNET, SDX_COMP_VAE, SDX_COMP_TE1,
                                                   SDX_COMP_TE2};
/* Weight file stems a diffusers component folder may use; each may come as
   STEM.safetensors, STEM.fp16.safetensors (the fp16 variant) or sharded
   through STEM.safetensors.index.json / STEM.safetensors.index.fp16.json. */
static const char *s_weight_stems[] = {"diffusion_pytorch_model", "model"};
/* Names of file tensors that are buffers, not weights. */
static const char *s_skip_names[] = {"text_model.embeddings.position_ids"};

/* ---------------------------------------------------------------- source */

typedef struct {
    sdx_nm_comp_t comp;
    char name[SDX_NM_NAME_MAX];
    int file;
    const sdx_st_tensor_t *src;
    sdx_nm_op_t op;
    int part, parts;
    int ndim;
    int64_t shape[SDX_MAX_DIMS]; /* after the op */
} s_item_t;

typedef enum {
    S_KIND_NONE = 0,
    S_KIND_PIPELINE,     /* diffusers folder with model_index.json */
    S_KIND_COMPONENT,    /* diffusers component folder (config.json + weights) */
    S_KIND_SINGLE,       /* SGM / A1111 single file */
    S_KIND_UNET_FILE,    /* diffusers-named UNet weights, one file */
    S_KIND_VAE_FILE,     /* diffusers-named VAE weights, one file */
    S_KIND_VAE_LDM_FILE, /* ldm-named VAE weights without prefix */
    S_KIND_ADAPTER,      /* LoRA, ControlNet, TI: detected, not loaded here */
} s_kind_t;

/* How a file's tensor names are read (prefixes other tools write). */
typedef enum {
    S_NAMES_AS_IS = 0,
    S_NAMES_STRIP,    /* drop the first `strip` bytes ("unet.", "vae.") */
    S_NAMES_SGM_UNET, /* bare SGM UNet names ("diffusion_model.input_blocks...",
                         "unet.input_blocks..."): read as model.diffusion_model.* */
} s_names_t;

typedef struct {
    const char *path;
    s_kind_t kind;
    sdx_arch_t arch;
    char why[S_WHY_MAX];
    sdx_safetensors_t *files[S_MAX_FILES];
    int nfiles;
    s_item_t *items;
    size_t nitems, capitems;
    size_t ignored; /* file tensors outside every component */
    bool has_comp[SDX_NM_NCOMP];
    bool config_from_file[SDX_NM_NCOMP]; /* a config.json was read */
    sdx_unet_config_t unet_cfg;
    sdx_vae_config_t vae_cfg;
    sdx_clip_config_t te1_cfg, te2_cfg;
    char tokenizer_dir[SDX_PATH_MAX], tokenizer2_dir[SDX_PATH_MAX];
    char scheduler_config[SDX_PATH_MAX];
    bool force_zeros_for_empty_prompt;
    sdx_dtype_t want_dtype;          /* picks the fp16 variant of a folder */
    s_names_t names[S_MAX_FILES];
    int strip[S_MAX_FILES];
    bool unet_only;                  /* a UNet-only file with an SGM prefix */
    size_t skipped;                  /* unknown keys inside known components */
    char skipped_names[S_SKIP_LIST][160];
    char prediction_type[16];        /* "v_prediction" / "edm" from markers; "" */
    bool ztsnr;
    bool inferred;                   /* configs were derived from the shapes */
    char config_note[32];            /* where the configs came from */
    char infer_error[256];           /* shapes do not determine the configs */
} s_source_t;

static void s_source_free(s_source_t *s)
{
    for (int i = 0; i < s->nfiles; i++)
        sdx_safetensors_close(&s->files[i]);
    free(s->items);
    memset(s, 0, sizeof *s);
}

static void s_why(s_source_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_why(s_source_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why, sizeof s->why, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- fs helpers */

static bool s_is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool s_is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* out = a/b[/c]; -1 (error set) if it does not fit. */
static int s_join(char *out, size_t n, const char *a, const char *b, const char *c)
{
    int k = c ? snprintf(out, n, "%s/%s/%s", a, b, c) : snprintf(out, n, "%s/%s", a, b);
    if (k < 0 || (size_t)k >= n)
        return sdx_set_error("path too long: %s/%s", a, b);
    return 0;
}

static const char *s_json_str(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---------------------------------------------------------------- key scan */

/* What the tensor names of one file say, gathered in one pass. */
typedef struct {
    size_t n;
    const char *first;
    bool sgm_unet, sgm_label_emb, sgm_vae, sgm_te1, sgm_te2;
    bool sd1_cond, sd2_cond; /* cond_stage_model.transformer / .model */
    bool sd3, flux;
    bool diff_unet, diff_add_emb, diff_vae, ldm_vae, taesd;
    bool lora, lora_te_single, lora_te_dual;
    bool cn_diffusers, cn_sgm;
    bool ti_l, ti_g, ti_sd1;
    int sgm_levels, diff_levels;   /* UNet down levels (downsamplers + 1) */
    int64_t ctx_dim, lora_ctx_dim; /* from an attn2.to_k weight */
    int64_t te1_width;             /* CLIP embedding width in a single file */
    size_t n_model, n_lora;        /* keys of checkpoint components / LoRA-named keys */
    bool v_pred, ztsnr, edm_vpred;
    int edm;                       /* edm_mean, edm_std present */
    char sd_key[160];              /* a key that shows an unsupported model */
} s_keys_t;

static bool s_pre(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static bool s_suf(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* The name a planner sees for tensor t of file f (prefix rules applied);
   buf holds it when it has to be rebuilt. */
static const char *s_vname(const s_source_t *s, int f, const sdx_st_tensor_t *t, char *buf,
                           size_t n)
{
    if (s->names[f] == S_NAMES_STRIP)
        return t->name + s->strip[f];
    if (s->names[f] == S_NAMES_SGM_UNET) {
        snprintf(buf, n, "model.diffusion_model.%s", t->name + s->strip[f]);
        return buf;
    }
    return t->name;
}

static void s_scan(const s_source_t *src, s_keys_t *k)
{
    memset(k, 0, sizeof *k);
    int sgm_down = 0, diff_down = 0;
    char vbuf[SDX_NM_NAME_MAX + 64];
    for (int f = 0; f < src->nfiles; f++)
    for (size_t i = 0; i < sdx_safetensors_count(src->files[f]); i++) {
        const sdx_st_tensor_t *t = sdx_safetensors_at(src->files[f], i);
        const char *s = s_vname(src, f, t, vbuf, sizeof vbuf);
        k->n++;
        if (strcmp(s, "v_pred") == 0)
            k->v_pred = true;
        if (strcmp(s, "ztsnr") == 0)
            k->ztsnr = true;
        if (strcmp(s, "edm_mean") == 0 || strcmp(s, "edm_std") == 0)
            k->edm++;
        if (strcmp(s, "edm_vpred.sigma_max") == 0)
            k->edm_vpred = true;
        if (s_pre(s, "model.diffusion_model.") || s_pre(s, "first_stage_model.") ||
            s_pre(s, "conditioner.embedders."))
            k->n_model++;
        if (!k->first)
            k->first = t->name;
        if (s_pre(s, "model.diffusion_model.")) {
            k->sgm_unet = true;
            const char *r = s + strlen("model.diffusion_model.");
            if (s_pre(r, "label_emb."))
                k->sgm_label_emb = true;
            if (s_pre(r, "joint_blocks."))
                k->sd3 = true;
            if (s_pre(r, "double_blocks.") || s_pre(r, "single_blocks."))
                k->flux = true;
            if (s_pre(r, "input_blocks.") && s_suf(r, ".0.op.weight"))
                sgm_down++;
        } else if (s_pre(s, "first_stage_model.")) {
            k->sgm_vae = true;
        } else if (s_pre(s, "conditioner.embedders.")) {
            const char *r = strchr(s + strlen("conditioner.embedders."), '.');
            if (r && s_pre(r, ".transformer."))
                k->sgm_te1 = true;
            if (r && s_pre(r, ".model."))
                k->sgm_te2 = true;
            if (s_suf(s, "token_embedding.weight") && t->ndim == 2 && r &&
                s_pre(r, ".transformer."))
                k->te1_width = t->shape[1];
        } else if (s_pre(s, "cond_stage_model.transformer.")) {
            k->sd1_cond = true;
        } else if (s_pre(s, "cond_stage_model.model.")) {
            k->sd2_cond = true;
        }
        if (s_pre(s, "double_blocks.") || s_pre(s, "single_blocks.") ||
            s_pre(s, "single_transformer_blocks."))
            k->flux = true;
        if (s_pre(s, "joint_blocks.") || (s_pre(s, "context_embedder.") && !k->flux))
            k->sd3 = true;
        if (strcmp(s, "conv_in.weight") == 0)
            k->diff_unet = true;
        if (s_pre(s, "add_embedding.linear_1."))
            k->diff_add_emb = true;
        if (s_pre(s, "down_blocks.") && s_suf(s, ".downsamplers.0.conv.weight"))
            diff_down++;
        if (strcmp(s, "encoder.conv_in.weight") == 0 || strcmp(s, "decoder.conv_in.weight") == 0)
            k->diff_vae = true;
        if (s_pre(s, "encoder.down.") || s_pre(s, "decoder.up."))
            k->ldm_vae = true;
        if (s_pre(s, "encoder.layers.") || s_pre(s, "decoder.layers."))
            k->taesd = true;
        if (strstr(s, "lora_down") || strstr(s, "lora_up") || strstr(s, ".lora_A.") ||
            strstr(s, ".lora_B.") || strstr(s, "lora_linear_layer") || strstr(s, ".lora.down.") ||
            strstr(s, ".lora.up.") || strstr(s, "hada_w") || strstr(s, "lokr_w") ||
            s_pre(s, "lora_unet_") || s_pre(s, "lora_te")) {
            k->lora = true;
            k->n_lora++;
        }
        if (s_pre(s, "lora_te_"))
            k->lora_te_single = true;
        if (s_pre(s, "lora_te1_") || s_pre(s, "lora_te2_") || s_pre(s, "text_encoder_2."))
            k->lora_te_dual = true;
        if (s_pre(s, "controlnet_cond_embedding.") || s_pre(s, "controlnet_down_blocks."))
            k->cn_diffusers = true;
        if (s_pre(s, "control_model.") || s_pre(s, "input_hint_block.") || s_pre(s, "zero_convs."))
            k->cn_sgm = true;
        if (strcmp(s, "clip_l") == 0 && t->ndim == 2)
            k->ti_l = true;
        if (strcmp(s, "clip_g") == 0 && t->ndim == 2)
            k->ti_g = true;
        if (strcmp(s, "emb_params") == 0 || s_pre(s, "string_to_param"))
            k->ti_sd1 = true;
        if (strstr(s, "attn2.to_k.weight") && t->ndim == 2 && !k->ctx_dim && !strstr(s, "lora"))
            k->ctx_dim = t->shape[1];
        if ((strstr(s, "attn2_to_k") || strstr(s, "attn2.to_k")) && t->ndim == 2 &&
            (strstr(s, "lora_down.weight") || strstr(s, "lora.down.weight") ||
             strstr(s, "lora_A.weight") || strstr(s, "lora_linear_layer.down.weight")))
            k->lora_ctx_dim = t->shape[1];
        if (!k->sd_key[0] &&
            (s_pre(s, "cond_stage_model.") || strstr(s, "joint_blocks.") ||
             strstr(s, "double_blocks.") || s_pre(s, "single_transformer_blocks.")))
            snprintf(k->sd_key, sizeof k->sd_key, "%s", s);
    }
    k->sgm_levels = sgm_down ? sgm_down + 1 : 0;
    k->diff_levels = diff_down ? diff_down + 1 : 0;
}

static const char *s_sd_family(int64_t ctx)
{
    return ctx == 768 ? "SD1.x" : ctx == 1024 ? "SD2.x" : "SD1.x/SD2.x";
}

/* Classify one safetensors file by its keys. Sets s->arch, s->kind, s->why. */
static void s_classify_file(s_source_t *s)
{
    s_keys_t k;
    s_scan(s, &k);
    const sdx_safetensors_t *st = s->files[0]; /* adapters are one file */
    s->ztsnr = k.ztsnr;
    s->prediction_type[0] = 0;
    if (k.edm == 2 || k.edm_vpred)
        snprintf(s->prediction_type, sizeof s->prediction_type, "edm");
    else if (k.v_pred)
        snprintf(s->prediction_type, sizeof s->prediction_type, "v_prediction");
    /* One stray key does not decide: a full checkpoint with LoRA-named keys
       baked in (more component keys than LoRA keys) is a checkpoint. */
    char lora_note[96] = "";
    if (k.lora && k.n_model > k.n_lora) {
        snprintf(lora_note, sizeof lora_note, "; %zu LoRA-named key(s) ignored", k.n_lora);
        k.lora = false;
    }
    s->arch = SDX_ARCH_UNKNOWN;
    s->kind = S_KIND_NONE;
    if (k.n == 0) {
        s_why(s, "no tensors in the file");
        return;
    }
    if (k.ti_l && k.ti_g) {
        s->arch = SDX_ARCH_TEXTUAL_INVERSION;
        s->kind = S_KIND_ADAPTER;
        const sdx_st_tensor_t *l = sdx_safetensors_find(st, "clip_l");
        s_why(s, "SDXL textual inversion embedding (clip_l + clip_g, %lld vectors)",
              (long long)l->shape[0]);
        return;
    }
    if (k.lora) {
        if (k.lora_te_single && !k.lora_te_dual) {
            s_why(s, "looks like an SD1.x/SD2.x LoRA (found lora_te_* for a single text "
                     "encoder), only SDXL is supported");
            return;
        }
        if (!k.lora_te_dual && (k.lora_ctx_dim == 768 || k.lora_ctx_dim == 1024)) {
            s_why(s,
                  "looks like an %s LoRA (cross-attention to_k takes %lld-d context), only "
                  "SDXL is supported",
                  s_sd_family(k.lora_ctx_dim), (long long)k.lora_ctx_dim);
            return;
        }
        s->arch = SDX_ARCH_LORA;
        s->kind = S_KIND_ADAPTER;
        s_why(s, "SDXL LoRA (%s naming, %zu tensors: %zu LoRA-named, %zu checkpoint keys)",
              s_pre(k.first, "lora_") ? "kohya" : "diffusers/peft", k.n, k.n_lora, k.n_model);
        return;
    }
    if (k.ti_sd1 || (k.n == 1 && k.first && sdx_safetensors_at(st, 0)->ndim == 2 &&
                     (sdx_safetensors_at(st, 0)->shape[1] == 768 ||
                      sdx_safetensors_at(st, 0)->shape[1] == 1024))) {
        s_why(s,
              "looks like an SD1.x/SD2.x textual inversion embedding (found '%s'), only "
              "SDXL embeddings (clip_l + clip_g) are supported",
              k.ti_sd1 ? (sdx_safetensors_find(st, "emb_params") ? "emb_params" : "string_to_param")
                       : k.first);
        return;
    }
    if (k.cn_diffusers || k.cn_sgm) {
        bool xl = k.cn_diffusers
                      ? k.diff_add_emb
                      : (k.sgm_label_emb || sdx_safetensors_find(st, "label_emb.0.0.weight") ||
                         sdx_safetensors_find(st, "control_model.label_emb.0.0.weight"));
        if (!xl) {
            s_why(s,
                  "looks like an %s ControlNet (no SDXL add_embedding/label_emb), only SDXL "
                  "is supported",
                  s_sd_family(k.ctx_dim));
            return;
        }
        s->arch = SDX_ARCH_CONTROLNET;
        s->kind = S_KIND_ADAPTER;
        s_why(s, "SDXL ControlNet (%s naming)", k.cn_diffusers ? "diffusers" : "SGM");
        return;
    }
    if (k.flux) {
        s_why(s, "looks like Flux (found %s), only SDXL is supported",
              k.sd_key[0] ? k.sd_key : "double_blocks/single_blocks");
        return;
    }
    if (k.sd3) {
        s_why(s, "looks like SD3 (found %s), only SDXL is supported",
              k.sd_key[0] ? k.sd_key : "joint transformer blocks");
        return;
    }
    if (k.sgm_unet) {
        if (!k.sgm_label_emb) {
            const char *te = k.sd1_cond   ? "cond_stage_model.transformer.* (CLIP-L)"
                             : k.sd2_cond ? "cond_stage_model.model.* (OpenCLIP-H)"
                                          : "no SDXL label_emb";
            s_why(s,
                  "looks like %s (found model.diffusion_model.* without label_emb, %s, "
                  "%lld-d context), only SDXL is supported",
                  s_sd_family(k.ctx_dim), te, (long long)k.ctx_dim);
            return;
        }
        s->kind = S_KIND_SINGLE;
        if (k.sgm_levels == 3) {
            s->arch = SDX_ARCH_SDXL_BASE;
            s_why(s, "SDXL base single file (UNet 3 levels, %lld-d context%s%s%s%s%s)",
                  (long long)k.ctx_dim, k.sgm_te1 ? ", CLIP-L" : "",
                  k.sgm_te2 ? ", OpenCLIP bigG" : "", k.sgm_vae ? ", VAE" : "",
                  s->prediction_type[0] ? ", marker: " : "", s->prediction_type);
            if (lora_note[0])
                snprintf(s->why + strlen(s->why), sizeof s->why - strlen(s->why), "%s",
                         lora_note);
        } else if (k.sgm_levels == 4) {
            s->arch = SDX_ARCH_SDXL_REFINER;
            s_why(s, "SDXL refiner single file (UNet 4 levels, %lld-d context%s%s%s%s)",
                  (long long)k.ctx_dim, k.sgm_te2 ? ", OpenCLIP bigG" : "",
                  k.sgm_vae ? ", VAE" : "", s->prediction_type[0] ? ", marker: " : "",
                  s->prediction_type);
            if (lora_note[0])
                snprintf(s->why + strlen(s->why), sizeof s->why - strlen(s->why), "%s",
                         lora_note);
        } else {
            s->kind = S_KIND_NONE;
            s_why(s, "SDXL-like UNet with %d levels (neither base: 3 nor refiner: 4)",
                  k.sgm_levels);
        }
        return;
    }
    if (k.sd1_cond || k.sd2_cond) {
        s_why(s, "looks like %s (found %s), only SDXL is supported", k.sd1_cond ? "SD1.x" : "SD2.x",
              k.sd_key);
        return;
    }
    if (k.sgm_vae && !k.sgm_te1 && !k.sgm_te2) {
        s->arch = SDX_ARCH_VAE;
        s->kind = S_KIND_SINGLE;
        s_why(s, "VAE (first_stage_model.*, ldm naming)");
        return;
    }
    if (k.diff_unet) {
        if (!k.diff_add_emb) {
            s_why(s,
                  "looks like an %s UNet (diffusers naming, no add_embedding, %lld-d "
                  "context), only SDXL is supported",
                  s_sd_family(k.ctx_dim), (long long)k.ctx_dim);
            return;
        }
        s->kind = S_KIND_UNET_FILE;
        if (k.diff_levels == 3 || k.diff_levels == 4) {
            s->arch = k.diff_levels == 3 ? SDX_ARCH_SDXL_BASE : SDX_ARCH_SDXL_REFINER;
            s_why(s, "SDXL %s UNet (diffusers naming, %d levels, %lld-d context)",
                  k.diff_levels == 3 ? "base" : "refiner", k.diff_levels, (long long)k.ctx_dim);
        } else {
            s->kind = S_KIND_NONE;
            s_why(s, "SDXL-like UNet with %d levels (neither base: 3 nor refiner: 4)",
                  k.diff_levels);
        }
        return;
    }
    if (k.taesd) {
        s_why(s, "looks like TAESD (tiny autoencoder: encoder.layers.*), not a model this "
                 "loader handles");
        return;
    }
    if (k.diff_vae && !k.ldm_vae) {
        s->arch = SDX_ARCH_VAE;
        s->kind = S_KIND_VAE_FILE;
        s_why(s, "VAE (AutoencoderKL, diffusers naming)");
        return;
    }
    if (k.ldm_vae) {
        s->arch = SDX_ARCH_VAE;
        s->kind = S_KIND_VAE_LDM_FILE;
        s_why(s, "VAE (ldm naming)");
        return;
    }
    static const char *te_pre[] = {"te1.", "te2.", "clip_l.", "clip_g.", "text_encoder.",
                                   "text_encoder_2."};
    for (size_t i = 0; k.first && i < sizeof te_pre / sizeof te_pre[0]; i++)
        if (s_pre(k.first, te_pre[i])) {
            s_why(s, "a text-encoder-only file ('%s' keys): text encoders are loaded only as part "
                     "of a whole checkpoint or diffusers folder, not on their own (yet)",
                  te_pre[i]);
            return;
        }
    s_why(s, "unrecognised tensor names (%zu tensors, e.g. '%.100s')", k.n, k.first ? k.first : "");
}

/* Classify a diffusers config.json (component folder). */
static void s_classify_config(s_source_t *s, const char *config_path)
{
    s->arch = SDX_ARCH_UNKNOWN;
    s->kind = S_KIND_NONE;
    cJSON *j = sdx_config_read_json(config_path);
    if (!j) {
        s_why(s, "%s", sdx_last_error());
        return;
    }
    const char *cls = s_json_str(j, "_class_name");
    const char *add = s_json_str(j, "addition_embed_type");
    const cJSON *boc = cJSON_GetObjectItemCaseSensitive(j, "block_out_channels");
    const cJSON *cad = cJSON_GetObjectItemCaseSensitive(j, "cross_attention_dim");
    int levels = cJSON_IsArray(boc) ? cJSON_GetArraySize(boc) : 0;
    long long ctx = cJSON_IsNumber(cad) ? (long long)cad->valuedouble : 0;
    bool text_time = add && strcmp(add, "text_time") == 0;
    if (!cls) {
        s_why(s, "%s has no _class_name", config_path);
    } else if (strcmp(cls, "UNet2DConditionModel") == 0) {
        if (!text_time) {
            s_why(s,
                  "looks like an %s UNet (diffusers config without text_time embedding, "
                  "cross_attention_dim %lld), only SDXL is supported",
                  s_sd_family(ctx), ctx);
        } else if (levels == 3 || levels == 4) {
            s->arch = levels == 3 ? SDX_ARCH_SDXL_BASE : SDX_ARCH_SDXL_REFINER;
            s->kind = S_KIND_COMPONENT;
            s_why(s, "SDXL %s UNet (diffusers, %d levels, cross_attention_dim %lld)",
                  levels == 3 ? "base" : "refiner", levels, ctx);
        } else {
            s_why(s, "SDXL-like UNet with %d levels (neither base: 3 nor refiner: 4)", levels);
        }
    } else if (strcmp(cls, "ControlNetModel") == 0) {
        if (text_time) {
            s->arch = SDX_ARCH_CONTROLNET;
            s->kind = S_KIND_ADAPTER;
            s_why(s, "SDXL ControlNet (diffusers)");
        } else {
            s_why(s,
                  "looks like an %s ControlNet (no text_time embedding), only SDXL is "
                  "supported",
                  s_sd_family(ctx));
        }
    } else if (strcmp(cls, "AutoencoderKL") == 0) {
        s->arch = SDX_ARCH_VAE;
        s->kind = S_KIND_COMPONENT;
        s_why(s, "VAE (AutoencoderKL, diffusers)");
    } else if (strstr(cls, "SD3")) {
        s_why(s, "looks like SD3 (%s), only SDXL is supported", cls);
    } else if (strstr(cls, "Flux")) {
        s_why(s, "looks like Flux (%s), only SDXL is supported", cls);
    } else {
        s_why(s, "diffusers %s is not a model this loader handles", cls);
    }
    cJSON_Delete(j);
}

/* ---------------------------------------------------------------- configs */

static void s_config_defaults(s_source_t *s)
{
    sdx_unet_config_sdxl(&s->unet_cfg, s->arch == SDX_ARCH_SDXL_REFINER);
    sdx_vae_config_sdxl(&s->vae_cfg);
    sdx_clip_config_sdxl(&s->te1_cfg, 1);
    sdx_clip_config_sdxl(&s->te2_cfg, 2);
    s->force_zeros_for_empty_prompt = true;
}

/* Read comp's config.json at `path` if it exists. */
static int s_config_read(s_source_t *s, sdx_nm_comp_t c, const char *path)
{
    if (!s_is_file(path))
        return 0;
    int rc = c == SDX_NM_UNET  ? sdx_unet_config_read(&s->unet_cfg, path)
             : c == SDX_NM_VAE ? sdx_vae_config_read(&s->vae_cfg, path)
             : c == SDX_NM_TE1 ? sdx_clip_config_read(&s->te1_cfg, path)
                               : sdx_clip_config_read(&s->te2_cfg, path);
    if (rc == 0)
        s->config_from_file[c] = true;
    return rc;
}

/* Configs, tokenizers, scheduler and model_index.json of a diffusers-style
   folder `dir` (a pipeline, or --config-dir for a single file). */
static int s_configs_from_dir(s_source_t *s, const char *dir)
{
    char p[SDX_PATH_MAX];
    for (int c = 0; c < SDX_NM_NCOMP; c++) {
        if (s_join(p, sizeof p, dir, s_comp_dirs[c], "config.json") != 0 ||
            s_config_read(s, (sdx_nm_comp_t)c, p) != 0)
            return -1;
    }
    static const struct {
        const char *sub, *probe;
        size_t off;
    } dirs[] = {
        {"tokenizer", "vocab.json", offsetof(s_source_t, tokenizer_dir)},
        {"tokenizer_2", "vocab.json", offsetof(s_source_t, tokenizer2_dir)},
    };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char *dst = (char *)s + dirs[i].off;
        if (s_join(p, sizeof p, dir, dirs[i].sub, dirs[i].probe) == 0 && s_is_file(p))
            s_join(dst, SDX_PATH_MAX, dir, dirs[i].sub, NULL);
    }
    if (s_join(p, sizeof p, dir, "scheduler", "scheduler_config.json") == 0 && s_is_file(p))
        snprintf(s->scheduler_config, sizeof s->scheduler_config, "%s", p);
    if (s_join(p, sizeof p, dir, "model_index.json", NULL) == 0 && s_is_file(p)) {
        cJSON *j = sdx_config_read_json(p);
        if (!j)
            return -1;
        const cJSON *fz = cJSON_GetObjectItemCaseSensitive(j, "force_zeros_for_empty_prompt");
        if (cJSON_IsBool(fz))
            s->force_zeros_for_empty_prompt = cJSON_IsTrue(fz);
        cJSON_Delete(j);
    }
    return 0;
}

/* ---------------------------------------------------------------- plan */

static s_item_t *s_item_add(s_source_t *s)
{
    if (s->nitems == s->capitems) {
        size_t cap = s->capitems ? s->capitems * 2 : 1024;
        s_item_t *n = realloc(s->items, cap * sizeof *n);
        if (!n) {
            sdx_set_error("out of memory");
            return NULL;
        }
        s->items = n;
        s->capitems = cap;
    }
    s_item_t *it = &s->items[s->nitems++];
    memset(it, 0, sizeof *it);
    return it;
}

static bool s_skip_name(const char *name)
{
    for (size_t i = 0; i < sizeof s_skip_names / sizeof s_skip_names[0]; i++)
        if (strcmp(name, s_skip_names[i]) == 0)
            return true;
    return false;
}

/* Plan one file tensor as target t (shape after the op); -1 if impossible. */
static int s_plan_target(s_source_t *s, int file, const sdx_st_tensor_t *src,
                         const sdx_nm_target_t *t)
{
    s_item_t *it = s_item_add(s);
    if (!it)
        return -1;
    it->comp = t->comp;
    memcpy(it->name, t->name, sizeof it->name);
    it->file = file;
    it->src = src;
    it->op = t->op;
    it->part = t->part;
    it->parts = t->parts;
    it->ndim = src->ndim;
    memcpy(it->shape, src->shape, sizeof it->shape);
    const char *path = sdx_safetensors_path(s->files[file]);
    switch (t->op) {
    case SDX_NM_COPY:
        break;
    case SDX_NM_ROWS:
        if (src->ndim < 1 || t->parts < 1 || src->shape[0] % t->parts != 0)
            return sdx_set_error("%s: '%s' has %lld rows, not divisible into %d parts", path,
                                 src->name, src->ndim ? (long long)src->shape[0] : 0LL, t->parts);
        it->shape[0] = src->shape[0] / t->parts;
        break;
    case SDX_NM_TRANSPOSE:
        if (src->ndim != 2)
            return sdx_set_error("%s: '%s' should be 2-D to transpose, has %d dims", path,
                                 src->name, src->ndim);
        it->shape[0] = src->shape[1];
        it->shape[1] = src->shape[0];
        break;
    case SDX_NM_CONV1X1_TO_LINEAR:
        if (src->ndim == 4 && src->shape[2] == 1 && src->shape[3] == 1)
            it->ndim = 2;
        else if (src->ndim != 2)
            return sdx_set_error("%s: '%s' should be a 1x1 conv or linear weight", path, src->name);
        break;
    }
    s->has_comp[t->comp] = true;
    return 0;
}

/* Plan every tensor of a file that already uses diffusers names. */
static int s_plan_identity(s_source_t *s, int file, sdx_nm_comp_t comp)
{
    sdx_safetensors_t *st = s->files[file];
    for (size_t i = 0; i < sdx_safetensors_count(st); i++) {
        const sdx_st_tensor_t *src = sdx_safetensors_at(st, i);
        char vbuf[SDX_NM_NAME_MAX + 64];
        const char *name = s_vname(s, file, src, vbuf, sizeof vbuf);
        if (s_skip_name(name))
            continue;
        sdx_nm_target_t t = {.comp = comp, .op = SDX_NM_COPY, .parts = 1};
        if (strlen(name) >= sizeof t.name)
            return sdx_set_error("%s: tensor name too long", sdx_safetensors_path(st));
        strcpy(t.name, name);
        if (s_plan_target(s, file, src, &t) != 0)
            return -1;
    }
    return 0;
}

/* Plan a single file (or an ldm VAE file when vae_only) through the maps. */
static void s_note_skipped(s_source_t *s, const char *name)
{
    if (s->skipped < S_SKIP_LIST)
        snprintf(s->skipped_names[s->skipped], sizeof s->skipped_names[0], "%s", name);
    s->skipped++;
}

static int s_plan_mapped(s_source_t *s, int file, bool vae_only)
{
    sdx_safetensors_t *st = s->files[file];
    sdx_nm_geom_t g = {s->unet_cfg.layers_per_block, s->vae_cfg.n_levels};
    char vbuf[SDX_NM_NAME_MAX + 64];
    for (size_t i = 0; i < sdx_safetensors_count(st); i++) {
        const sdx_st_tensor_t *src = sdx_safetensors_at(st, i);
        const char *name = s_vname(s, file, src, vbuf, sizeof vbuf);
        sdx_nm_target_t t[3];
        int n;
        if (vae_only) {
            n = sdx_namemap_vae(name, g.vae_n_levels, t);
        } else {
            if (sdx_namemap_component(name, NULL) < 0) {
                s->ignored++;
                continue;
            }
            n = sdx_namemap_single_file(name, &g, t);
        }
        if (n < 0) {
            /* Unknown inside a known component (an extra text_projection.weight,
               a trainer's buffer): skipped like diffusers, ComfyUI and sd.cpp
               do. A tensor the networks need and do not find fails when the
               shapes are checked and the networks bind their weights. */
            s_note_skipped(s, src->name);
            continue;
        }
        for (int k = 0; k < n; k++)
            if (s_plan_target(s, file, src, &t[k]) != 0)
                return -1;
    }
    return 0;
}

static int s_cmp_item(const void *a, const void *b)
{
    const s_item_t *x = *(const s_item_t *const *)a, *y = *(const s_item_t *const *)b;
    if (x->comp != y->comp)
        return x->comp < y->comp ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Two file tensors may not land on one diffusers name (e.g. a file with
   both OpenCLIP's text_projection and a Linear text_projection.weight). */
static int s_check_duplicates(const s_source_t *s)
{
    const s_item_t **v = malloc(sizeof *v * (s->nitems ? s->nitems : 1));
    if (!v)
        return sdx_set_error("out of memory");
    for (size_t i = 0; i < s->nitems; i++)
        v[i] = &s->items[i];
    qsort(v, s->nitems, sizeof *v, s_cmp_item);
    for (size_t i = 1; i < s->nitems; i++) {
        if (s_cmp_item(&v[i - 1], &v[i]) == 0) {
            sdx_set_error("%s: '%s' and '%s' both map to %s '%s'", s->path, v[i - 1]->src->name,
                          v[i]->src->name, sdx_nm_comp_name(v[i]->comp), v[i]->name);
            free(v);
            return -1;
        }
    }
    free(v);
    return 0;
}

static const s_item_t *s_find_item(const s_source_t *s, sdx_nm_comp_t c, const char *name)
{
    for (size_t i = 0; i < s->nitems; i++)
        if (s->items[i].comp == c && strcmp(s->items[i].name, name) == 0)
            return &s->items[i];
    return NULL;
}

/* ---------------------------------------------------------------- checks */

typedef struct {
    sdx_nm_comp_t comp;
    char name[SDX_NM_NAME_MAX];
    int dim; /* -1: the tensor must exist; -2: must NOT exist */
    int64_t expect;
    const char *what;
} s_check_t;

static void s_chk(s_check_t *c, int *n, sdx_nm_comp_t comp, int dim, int64_t expect,
                  const char *what, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void s_chk(s_check_t *c, int *n, sdx_nm_comp_t comp, int dim, int64_t expect,
                  const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c[*n].comp = comp;
    vsnprintf(c[*n].name, sizeof c[*n].name, fmt, ap);
    va_end(ap);
    c[*n].dim = dim;
    c[*n].expect = expect;
    c[*n].what = what;
    (*n)++;
}

/* Do the planned shapes agree with the configs? A single file checked
   against the SDXL defaults fails here when it is something else (e.g. the
   tiny golden model): the message says to pass --config-dir. */
static int s_check_shapes(const s_source_t *s, bool single_file_defaults)
{
    s_check_t c[64];
    int n = 0;
    const sdx_unet_config_t *u = &s->unet_cfg;
    if (s->has_comp[SDX_NM_UNET]) {
        int L = u->n_levels;
        s_chk(c, &n, SDX_NM_UNET, 0, u->block_out_channels[0], "block_out_channels[0]",
              "conv_in.weight");
        s_chk(c, &n, SDX_NM_UNET, 1, u->in_channels, "in_channels", "conv_in.weight");
        s_chk(c, &n, SDX_NM_UNET, 0, u->out_channels, "out_channels", "conv_out.weight");
        s_chk(c, &n, SDX_NM_UNET, 0, u->block_out_channels[L - 1], "block_out_channels[-1]",
              "down_blocks.%d.resnets.0.conv1.weight", L - 1);
        s_chk(c, &n, SDX_NM_UNET, -2, 0, "the number of levels",
              "down_blocks.%d.resnets.0.conv1.weight", L);
        if (u->projection_class_embeddings_input_dim > 0)
            s_chk(c, &n, SDX_NM_UNET, 1, u->projection_class_embeddings_input_dim,
                  "projection_class_embeddings_input_dim", "add_embedding.linear_1.weight");
        for (int i = 0; i < L; i++) {
            if (!u->down_cross_attn[i])
                continue;
            s_chk(c, &n, SDX_NM_UNET, 1, u->cross_attention_dim, "cross_attention_dim",
                  "down_blocks.%d.attentions.0.transformer_blocks.0.attn2.to_k.weight", i);
            s_chk(c, &n, SDX_NM_UNET, -1, 0, "transformer_layers_per_block",
                  "down_blocks.%d.attentions.0.transformer_blocks.%d.norm1.weight", i,
                  u->transformer_layers[i] - 1);
            s_chk(c, &n, SDX_NM_UNET, -2, 0, "transformer_layers_per_block",
                  "down_blocks.%d.attentions.0.transformer_blocks.%d.norm1.weight", i,
                  u->transformer_layers[i]);
        }
        if (u->mid_block_cross_attn) {
            s_chk(c, &n, SDX_NM_UNET, -1, 0, "transformer_layers_per_block[-1]",
                  "mid_block.attentions.0.transformer_blocks.%d.norm1.weight",
                  u->mid_transformer_layers - 1);
            s_chk(c, &n, SDX_NM_UNET, -2, 0, "transformer_layers_per_block[-1]",
                  "mid_block.attentions.0.transformer_blocks.%d.norm1.weight",
                  u->mid_transformer_layers);
        }
    }
    if (s->has_comp[SDX_NM_VAE]) {
        const sdx_vae_config_t *v = &s->vae_cfg;
        s_chk(c, &n, SDX_NM_VAE, 0, v->block_out_channels[0], "block_out_channels[0]",
              "encoder.conv_in.weight");
        s_chk(c, &n, SDX_NM_VAE, 1, v->in_channels, "in_channels", "encoder.conv_in.weight");
        s_chk(c, &n, SDX_NM_VAE, 0, v->out_channels, "out_channels", "decoder.conv_out.weight");
        s_chk(c, &n, SDX_NM_VAE, 1, v->latent_channels, "latent_channels",
              "decoder.conv_in.weight");
        s_chk(c, &n, SDX_NM_VAE, 0, v->block_out_channels[v->n_levels - 1],
              "block_out_channels[-1]", "encoder.down_blocks.%d.resnets.0.conv1.weight",
              v->n_levels - 1);
        s_chk(c, &n, SDX_NM_VAE, -2, 0, "the number of levels",
              "encoder.down_blocks.%d.resnets.0.conv1.weight", v->n_levels);
    }
    for (int which = 0; which < 2; which++) {
        sdx_nm_comp_t comp = which ? SDX_NM_TE2 : SDX_NM_TE1;
        const sdx_clip_config_t *t = which ? &s->te2_cfg : &s->te1_cfg;
        if (!s->has_comp[comp])
            continue;
        s_chk(c, &n, comp, 0, t->vocab_size, "vocab_size",
              "text_model.embeddings.token_embedding.weight");
        s_chk(c, &n, comp, 1, t->hidden_size, "hidden_size",
              "text_model.embeddings.token_embedding.weight");
        s_chk(c, &n, comp, 0, t->max_position_embeddings, "max_position_embeddings",
              "text_model.embeddings.position_embedding.weight");
        s_chk(c, &n, comp, 0, t->intermediate_size, "intermediate_size",
              "text_model.encoder.layers.%d.mlp.fc1.weight", t->num_hidden_layers - 1);
        s_chk(c, &n, comp, -2, 0, "num_hidden_layers",
              "text_model.encoder.layers.%d.mlp.fc1.weight", t->num_hidden_layers);
        if (t->projection_dim > 0)
            s_chk(c, &n, comp, 0, t->projection_dim, "projection_dim", "text_projection.weight");
    }
    for (int i = 0; i < n; i++) {
        const s_item_t *it = s_find_item(s, c[i].comp, c[i].name);
        const char *cn = sdx_nm_comp_name(c[i].comp);
        char msg[400];
        if (c[i].dim == -2) {
            if (!it)
                continue;
            snprintf(msg, sizeof msg, "%s '%s' exists but the config's %s says it should not", cn,
                     c[i].name, c[i].what);
        } else if (!it) {
            snprintf(msg, sizeof msg, "%s weight '%s' is missing (config: %s)", cn, c[i].name,
                     c[i].what);
        } else if (c[i].dim >= 0 && (c[i].dim >= it->ndim || it->shape[c[i].dim] != c[i].expect)) {
            snprintf(msg, sizeof msg, "%s '%s' has size %lld in dim %d but the config's %s is %lld",
                     cn, c[i].name, c[i].dim < it->ndim ? (long long)it->shape[c[i].dim] : -1LL,
                     c[i].dim, c[i].what, (long long)c[i].expect);
        } else {
            continue;
        }
        return sdx_set_error("%s: %s%s", s->path, msg,
                             single_file_defaults
                                 ? " (a single file carries no config: this one was derived "
                                   "from its tensor shapes; if the file is whole, pass "
                                   "--config-dir DIR with the model's diffusers config.json "
                                   "files)"
                                 : "");
    }
    return 0;
}

/* ---------------------------------------------------------------- open */

static int s_add_file(s_source_t *s, const char *path)
{
    if (s->nfiles >= S_MAX_FILES)
        return sdx_set_error("%s: too many weight files", s->path);
    sdx_safetensors_t *st = sdx_safetensors_open(path);
    if (!st)
        return -1;
    s->files[s->nfiles++] = st;
    return s->nfiles - 1;
}

/* Folder of `path` into dir (for a sibling config.json or shards). */
static void s_dirname(const char *path, char *dir, size_t n)
{
    snprintf(dir, n, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir)
        *slash = 0;
    else if (slash)
        slash[1] = 0;
    else
        snprintf(dir, n, ".");
}

/* Open the shards a safetensors index (.index.json: {"weight_map": {tensor:
   shard file}}) names, in order of first mention, from the index's folder.
   Every tensor of the map must be in the shard it names. Returns the number
   of files added (first one at *first), -1 on failure. */
static int s_add_index(s_source_t *s, const char *index_path, int *first)
{
    cJSON *j = sdx_config_read_json(index_path);
    if (!j)
        return -1;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    char dir[SDX_PATH_MAX], p[SDX_PATH_MAX];
    s_dirname(index_path, dir, sizeof dir);
    int f0 = s->nfiles, rc = 0;
    if (!cJSON_IsObject(wm) || !wm->child) {
        rc = sdx_set_error("%s: no weight_map object", index_path);
        goto done;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !*e->valuestring || strchr(e->valuestring, '/') ||
            strcmp(e->valuestring, "..") == 0) {
            rc = sdx_set_error("%s: weight_map entry '%.100s' is not a shard file name",
                               index_path, e->string ? e->string : "?");
            goto done;
        }
        int have = -1;
        for (int f = f0; f < s->nfiles && have < 0; f++) {
            const char *fp = sdx_safetensors_path(s->files[f]);
            const char *base = strrchr(fp, '/');
            if (strcmp(base ? base + 1 : fp, e->valuestring) == 0)
                have = f;
        }
        if (have < 0) {
            if (s_join(p, sizeof p, dir, e->valuestring, NULL) != 0 ||
                (have = s_add_file(s, p)) < 0) {
                rc = -1;
                goto done;
            }
        }
        if (!sdx_safetensors_find(s->files[have], e->string)) {
            rc = sdx_set_error("%s: weight_map puts '%.100s' in %s, which does not hold it",
                               index_path, e->string, e->valuestring);
            goto done;
        }
    }
done:
    cJSON_Delete(j);
    if (rc != 0)
        return -1;
    *first = f0;
    return s->nfiles - f0;
}

/* The weights of a diffusers component folder: one file or the shards of an
   index, preferring the fp16 variant for an f16 load and the full-precision
   files otherwise. Adds the files; returns how many (first at *first). */
static int s_component_files(s_source_t *s, const char *dir, int *first)
{
    bool f16 = s->want_dtype == SDX_F16;
    static const char *const forms_f32[] = {"%s.safetensors", "%s.safetensors.index.json",
                                            "%s.fp16.safetensors", "%s.safetensors.index.fp16.json"};
    static const char *const forms_f16[] = {"%s.fp16.safetensors", "%s.safetensors.index.fp16.json",
                                            "%s.safetensors", "%s.safetensors.index.json"};
    const char *const *forms = f16 ? forms_f16 : forms_f32;
    char name[128], p[SDX_PATH_MAX];
    for (size_t st = 0; st < sizeof s_weight_stems / sizeof s_weight_stems[0]; st++) {
        for (int k = 0; k < 4; k++) {
            snprintf(name, sizeof name, forms[k], s_weight_stems[st]);
            if (s_join(p, sizeof p, dir, name, NULL) != 0)
                return -1;
            if (!s_is_file(p))
                continue;
            if (strstr(name, ".index."))
                return s_add_index(s, p, first);
            int f = s_add_file(s, p);
            if (f < 0)
                return -1;
            *first = f;
            return 1;
        }
    }
    static const char *other[] = {"diffusion_pytorch_model.bin", "pytorch_model.bin"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (s_join(p, sizeof p, dir, other[i], NULL) == 0 && s_is_file(p))
            return sdx_set_error("%s: found %s; only .safetensors weights are supported", dir,
                                 other[i]);
    return sdx_set_error("%s: no diffusion_pytorch_model.safetensors or model.safetensors "
                         "(nor an fp16 variant or a sharded index)",
                         dir);
}

/* Add and plan every weight file of a component folder. */
static int s_plan_component_dir(s_source_t *s, const char *dir, sdx_nm_comp_t c)
{
    int first = 0, n = s_component_files(s, dir, &first);
    if (n < 0)
        return -1;
    for (int f = first; f < first + n; f++)
        if (s_plan_identity(s, f, c) != 0)
            return -1;
    return 0;
}

static int s_open_pipeline(s_source_t *s, const char *dir, unsigned comps)
{
    char p[SDX_PATH_MAX];
    if (s_join(p, sizeof p, dir, "model_index.json", NULL) != 0)
        return -1;
    cJSON *j = sdx_config_read_json(p);
    if (!j)
        return -1;
    const char *cls = s_json_str(j, "_class_name");
    char clsbuf[128];
    snprintf(clsbuf, sizeof clsbuf, "%s", cls ? cls : "?");
    cJSON_Delete(j);
    s->kind = S_KIND_PIPELINE;
    if (strstr(clsbuf, "StableDiffusion3") || strstr(clsbuf, "Flux") ||
        strcmp(clsbuf, "StableDiffusionPipeline") == 0 ||
        strcmp(clsbuf, "StableDiffusionImg2ImgPipeline") == 0) {
        s->arch = SDX_ARCH_UNKNOWN;
        s->kind = S_KIND_NONE;
        s_why(s, "looks like %s (model_index.json: %s), only SDXL is supported",
              strstr(clsbuf, "3")      ? "SD3"
              : strstr(clsbuf, "Flux") ? "Flux"
                                       : "SD1.x/SD2.x",
              clsbuf);
        return 0;
    }
    if (s_join(p, sizeof p, dir, "unet", "config.json") != 0)
        return -1;
    if (!s_is_file(p)) {
        s->kind = S_KIND_NONE;
        s_why(s, "diffusers folder without unet/config.json (%s)", clsbuf);
        return 0;
    }
    s_classify_config(s, p);
    if (s->arch != SDX_ARCH_SDXL_BASE && s->arch != SDX_ARCH_SDXL_REFINER) {
        s->arch = SDX_ARCH_UNKNOWN;
        s->kind = S_KIND_NONE;
        return 0;
    }
    s->kind = S_KIND_PIPELINE;
    char why[S_WHY_MAX];
    snprintf(why, sizeof why, "%s", s->why);
    s_why(s, "diffusers %s: %s", clsbuf, why);
    s_config_defaults(s);
    if (s_configs_from_dir(s, dir) != 0)
        return -1;
    for (int c = 0; c < SDX_NM_NCOMP; c++) {
        char cdir[SDX_PATH_MAX];
        if (s_join(cdir, sizeof cdir, dir, s_comp_dirs[c], NULL) != 0)
            return -1;
        if (!s_is_dir(cdir))
            continue;
        if (!(comps & s_comp_bits[c])) {
            s->has_comp[c] = false;
            continue;
        }
        if (s_plan_component_dir(s, cdir, (sdx_nm_comp_t)c) != 0)
            return -1;
    }
    return 0;
}

static int s_open_component_dir(s_source_t *s, const char *dir, unsigned comps)
{
    char p[SDX_PATH_MAX];
    if (s_join(p, sizeof p, dir, "config.json", NULL) != 0)
        return -1;
    s_classify_config(s, p);
    if (s->kind == S_KIND_ADAPTER) { /* a ControlNet folder: weights for inspect */
        int first;
        return s_component_files(s, dir, &first) < 0 ? -1 : 0;
    }
    if (s->kind != S_KIND_COMPONENT)
        return 0;
    s_config_defaults(s);
    sdx_nm_comp_t c = s->arch == SDX_ARCH_VAE ? SDX_NM_VAE : SDX_NM_UNET;
    if (s_config_read(s, c, p) != 0)
        return -1;
    if (!(comps & s_comp_bits[c]))
        return 0;
    return s_plan_component_dir(s, dir, c);
}

/* Prefixes other tools write on UNet-only / component files. A file whose
   every tensor starts with one of them is read without it. */
static void s_detect_prefix(s_source_t *s, int f)
{
    static const struct {
        const char *prefix;
    } pre[] = {{"diffusion_model."}, {"unet."}, {"vae."}};
    const sdx_safetensors_t *st = s->files[f];
    size_t n = sdx_safetensors_count(st);
    if (n == 0)
        return;
    for (size_t p = 0; p < sizeof pre / sizeof pre[0]; p++) {
        size_t pl = strlen(pre[p].prefix), hits = 0;
        bool sgm = false;
        for (size_t i = 0; i < n; i++) {
            const char *name = sdx_safetensors_at(st, i)->name;
            if (strncmp(name, pre[p].prefix, pl) == 0) {
                hits++;
                sgm |= s_pre(name + pl, "input_blocks.") || s_pre(name + pl, "middle_block.");
            }
        }
        if (hits != n)
            continue;
        s->strip[f] = (int)pl;
        s->names[f] = (p < 2 && sgm) ? S_NAMES_SGM_UNET : S_NAMES_STRIP;
        s->unet_only = s->names[f] == S_NAMES_SGM_UNET;
        return;
    }
}

/* Count consecutive names fmt % 0, 1, ... that the plan holds. */
static int s_count_items(const s_source_t *s, sdx_nm_comp_t c, const char *fmt, int a, bool two)
{
    char n[SDX_NM_NAME_MAX];
    int k = 0;
    for (;; k++) {
        if (two)
            snprintf(n, sizeof n, fmt, a, k);
        else
            snprintf(n, sizeof n, fmt, k);
        if (!s_find_item(s, c, n))
            return k;
    }
}

static const s_item_t *s_itemf(const s_source_t *s, sdx_nm_comp_t c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const s_item_t *s_itemf(const s_source_t *s, sdx_nm_comp_t c, const char *fmt, ...)
{
    char n[SDX_NM_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n, sizeof n, fmt, ap);
    va_end(ap);
    return s_find_item(s, c, n);
}

static void s_infer_fail(s_source_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_infer_fail(s_source_t *s, const char *fmt, ...)
{
    if (s->infer_error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->infer_error, sizeof s->infer_error, fmt, ap);
    va_end(ap);
}

/* A single file carries no config: derive every config field the tensor
   shapes determine (levels, channels, depths per level, context and
   embedding widths, text encoder sizes; so SDXL base, refiner and
   distilled variants such as Vega load without --config-dir). What shapes
   do not show is assumed as in every SDXL: 64-wide attention heads, 32
   norm groups. A shape that contradicts those assumptions, or per-block
   transformer depths within a level (SSD-1B), is a clear refusal. */
static void s_infer_configs(s_source_t *s)
{
    const sdx_nm_comp_t U = SDX_NM_UNET, V = SDX_NM_VAE;
    const s_item_t *it;
    if (s->has_comp[U] && !s->config_from_file[U]) {
        sdx_unet_config_t *u = &s->unet_cfg;
        int L = s_count_items(s, U, "down_blocks.%d.resnets.0.conv1.weight", 0, false);
        if (L >= 1 && L <= SDX_MAX_LEVELS) {
            u->n_levels = L;
            u->layers_per_block = s_count_items(s, U, "down_blocks.0.resnets.%d.conv1.weight", 0,
                                                false);
            if ((it = s_find_item(s, U, "conv_in.weight")) && it->ndim == 4)
                u->in_channels = (int)it->shape[1];
            if ((it = s_find_item(s, U, "conv_out.weight")) && it->ndim == 4)
                u->out_channels = (int)it->shape[0];
            int ctx = 0;
            bool linear = true;
            for (int i = 0; i < L; i++) {
                it = s_itemf(s, U, "down_blocks.%d.resnets.0.conv1.weight", i);
                u->block_out_channels[i] = (int)it->shape[0];
                u->down_cross_attn[i] = s_itemf(s, U, "down_blocks.%d.attentions.0.proj_in.weight", i);
                u->up_cross_attn[i] = s_itemf(s, U, "up_blocks.%d.attentions.0.proj_in.weight", i);
                int d = u->down_cross_attn[i]
                            ? s_count_items(s, U,
                                            "down_blocks.%d.attentions.0.transformer_blocks.%d."
                                            "norm1.weight",
                                            i, true)
                            : 1;
                u->transformer_layers[i] = d;
            }
            for (int i = 0; i < L; i++) {
                int c = u->block_out_channels[i];
                bool attn = u->down_cross_attn[i] || u->up_cross_attn[L - 1 - i] || i == L - 1;
                if (attn && c % 64 != 0)
                    s_infer_fail(s,
                                 "UNet level %d has %d channels: not a multiple of SDXL's 64-wide "
                                 "attention heads, so the head count is unknown",
                                 i, c);
                u->heads[i] = c % 64 == 0 ? c / 64 : 1;
                for (int j = 0; u->down_cross_attn[i] && j < u->layers_per_block; j++) {
                    char f[128];
                    snprintf(f, sizeof f, "down_blocks.%d.attentions.%d.transformer_blocks.%%d.norm1.weight", i, j);
                    if (s_count_items(s, U, f, 0, false) != u->transformer_layers[i])
                        s_infer_fail(s, "down_blocks.%d: transformer depth differs between its "
                                        "attention blocks (SSD-1B style); pass --config-dir", i);
                }
                int r = L - 1 - i; /* up block i works at level r */
                for (int j = 0; u->up_cross_attn[i] && j <= u->layers_per_block; j++) {
                    char f[128];
                    snprintf(f, sizeof f, "up_blocks.%d.attentions.%d.transformer_blocks.%%d.norm1.weight", i, j);
                    int d = s_count_items(s, U, f, 0, false);
                    if (!u->down_cross_attn[r] && j == 0)
                        u->transformer_layers[r] = d;
                    if (d != u->transformer_layers[r])
                        s_infer_fail(s,
                                     "up_blocks.%d.attentions.%d has %d transformer blocks but "
                                     "level %d has %d: per-block depths (SSD-1B style, "
                                     "reverse_transformer_layers_per_block) are not supported",
                                     i, j, d, r, u->transformer_layers[r]);
                }
            }
            for (size_t k = 0; k < s->nitems && !ctx; k++) {
                const s_item_t *x = &s->items[k];
                if (x->comp == U && s_suf(x->name, "attn2.to_k.weight") && x->ndim == 2)
                    ctx = (int)x->shape[1];
                if (x->comp == U && s_suf(x->name, "proj_in.weight"))
                    linear = x->ndim == 2;
            }
            if (ctx)
                u->cross_attention_dim = ctx;
            u->use_linear_projection = linear;
            u->mid_block_cross_attn = s_find_item(s, U, "mid_block.attentions.0.proj_in.weight");
            u->mid_transformer_layers = s_count_items(
                s, U, "mid_block.attentions.0.transformer_blocks.%d.norm1.weight", 0, false);
            if ((it = s_find_item(s, U, "add_embedding.linear_1.weight")) && it->ndim == 2) {
                int adm = (int)it->shape[1];
                const s_item_t *tp = s_find_item(s, SDX_NM_TE2, "text_projection.weight");
                int pooled = tp ? (int)tp->shape[0] : 1280;
                u->projection_class_embeddings_input_dim = adm;
                int rest = adm - pooled;
                if (rest > 0 && rest % 6 == 0)
                    u->addition_time_embed_dim = rest / 6; /* base: 6 time ids */
                else if (rest > 0 && rest % 5 == 0)
                    u->addition_time_embed_dim = rest / 5; /* refiner: 5 (aesthetic score) */
                else
                    s_infer_fail(s, "add_embedding takes %d inputs: not 5 or 6 time ids plus a "
                                    "%d-d pooled embedding", adm, pooled);
            }
            if (u->block_out_channels[0] % 32 != 0)
                s_infer_fail(s, "UNet has %d channels at level 0: not a multiple of SDXL's 32 "
                                "norm groups", u->block_out_channels[0]);
        }
    }
    if (s->has_comp[V] && !s->config_from_file[V]) {
        sdx_vae_config_t *v = &s->vae_cfg;
        int L = s_count_items(s, V, "encoder.down_blocks.%d.resnets.0.conv1.weight", 0, false);
        if (L >= 1 && L <= SDX_MAX_LEVELS) {
            v->n_levels = L;
            for (int i = 0; i < L; i++)
                v->block_out_channels[i] =
                    (int)s_itemf(s, V, "encoder.down_blocks.%d.resnets.0.conv1.weight", i)->shape[0];
            v->layers_per_block =
                s_count_items(s, V, "encoder.down_blocks.0.resnets.%d.conv1.weight", 0, false);
            if ((it = s_find_item(s, V, "decoder.conv_in.weight")) && it->ndim == 4)
                v->latent_channels = (int)it->shape[1];
            if ((it = s_find_item(s, V, "encoder.conv_in.weight")) && it->ndim == 4)
                v->in_channels = (int)it->shape[1];
            if ((it = s_find_item(s, V, "decoder.conv_out.weight")) && it->ndim == 4)
                v->out_channels = (int)it->shape[0];
            if (v->block_out_channels[0] % 32 != 0)
                s_infer_fail(s, "VAE has %d channels at level 0: not a multiple of SDXL's 32 "
                                "norm groups", v->block_out_channels[0]);
        }
    }
    for (int w = 0; w < 2; w++) {
        sdx_nm_comp_t c = w ? SDX_NM_TE2 : SDX_NM_TE1;
        sdx_clip_config_t *t = w ? &s->te2_cfg : &s->te1_cfg;
        if (!s->has_comp[c] || s->config_from_file[c])
            continue;
        if ((it = s_find_item(s, c, "text_model.embeddings.token_embedding.weight")) &&
            it->ndim == 2) {
            t->vocab_size = (int)it->shape[0];
            t->hidden_size = (int)it->shape[1];
        }
        if ((it = s_find_item(s, c, "text_model.embeddings.position_embedding.weight")) &&
            it->ndim == 2)
            t->max_position_embeddings = (int)it->shape[0];
        int layers = s_count_items(s, c, "text_model.encoder.layers.%d.mlp.fc1.weight", 0, false);
        if (layers > 0) {
            t->num_hidden_layers = layers;
            t->intermediate_size = (int)s_find_item(s, c, "text_model.encoder.layers.0.mlp.fc1.weight")->shape[0];
        }
        if (t->hidden_size % 64 != 0)
            s_infer_fail(s, "%s is %d wide: not a multiple of CLIP's 64-wide heads",
                         sdx_nm_comp_name(c), t->hidden_size);
        else
            t->num_attention_heads = t->hidden_size / 64;
        if (w && (it = s_find_item(s, c, "text_projection.weight")) && it->ndim == 2)
            t->projection_dim = (int)it->shape[0];
    }
    s->inferred = true;
}

/* Configs a single file carries in its __metadata__ (config.json text under
   "unet_config", "vae_config", "text_encoder_config",
   "text_encoder_2_config"): they win over shape inference. */
static int s_meta_configs(s_source_t *s)
{
    static const char *keys[SDX_NM_NCOMP] = {"unet_config", "vae_config", "text_encoder_config",
                                             "text_encoder_2_config"};
    for (int c = 0; c < SDX_NM_NCOMP; c++) {
        const char *j = s->nfiles ? sdx_safetensors_metadata(s->files[0], keys[c]) : NULL;
        if (!j)
            continue;
        char label[SDX_PATH_MAX + 64];
        snprintf(label, sizeof label, "%s: __metadata__.%s", s->path, keys[c]);
        int rc = c == SDX_NM_UNET  ? sdx_unet_config_parse(&s->unet_cfg, j, label)
                 : c == SDX_NM_VAE ? sdx_vae_config_parse(&s->vae_cfg, j, label)
                 : c == SDX_NM_TE1 ? sdx_clip_config_parse(&s->te1_cfg, j, label)
                                   : sdx_clip_config_parse(&s->te2_cfg, j, label);
        if (rc != 0)
            return -1;
        s->config_from_file[c] = true;
        snprintf(s->config_note, sizeof s->config_note, "checkpoint metadata");
    }
    return 0;
}

static bool s_suffix_ci(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

static int s_open_file(s_source_t *s, const char *path, const char *config_dir, unsigned comps)
{
    int f = 0, nf = 1;
    if (s_suffix_ci(path, ".index.json")) {
        nf = s_add_index(s, path, &f);
        if (nf < 0)
            return -1;
        for (int k = f; k < f + nf; k++) /* shards of a prefixed UNet-only file too */
            s_detect_prefix(s, k);
    } else {
        f = s_add_file(s, path);
        if (f < 0)
            return -1;
        s_detect_prefix(s, f);
    }
    s_classify_file(s);
    if (s->kind == S_KIND_NONE || s->kind == S_KIND_ADAPTER)
        return 0;
    s_config_defaults(s);
    char p[SDX_PATH_MAX], dir[SDX_PATH_MAX];
    switch (s->kind) {
    case S_KIND_SINGLE:
        if (config_dir && s_configs_from_dir(s, config_dir) != 0)
            return -1;
        if (!config_dir && s_meta_configs(s) != 0)
            return -1;
        for (int k = f; k < f + nf; k++)
            if (s_plan_mapped(s, k, false) != 0)
                return -1;
        if (!config_dir)
            s_infer_configs(s);
        break;
    case S_KIND_UNET_FILE:
    case S_KIND_VAE_FILE:
    case S_KIND_VAE_LDM_FILE: {
        /* A config.json beside the file wins, then --config-dir. */
        sdx_nm_comp_t c = s->kind == S_KIND_UNET_FILE ? SDX_NM_UNET : SDX_NM_VAE;
        s_dirname(path, dir, sizeof dir);
        if (s_join(p, sizeof p, dir, "config.json", NULL) == 0 && s_is_file(p)) {
            s_source_t probe = {.path = path};
            s_classify_config(&probe, p);
            if ((c == SDX_NM_UNET && probe.kind == S_KIND_COMPONENT &&
                 probe.arch != SDX_ARCH_VAE) ||
                (c == SDX_NM_VAE && probe.arch == SDX_ARCH_VAE)) {
                if (s_config_read(s, c, p) != 0)
                    return -1;
            }
        }
        if (!s->config_from_file[c] && config_dir) {
            if (s_join(p, sizeof p, config_dir, s_comp_dirs[c], "config.json") != 0 ||
                s_config_read(s, c, p) != 0)
                return -1;
        }
        for (int k = f; k < f + nf; k++) {
            if (s->kind == S_KIND_VAE_LDM_FILE) {
                if (s_plan_mapped(s, k, true) != 0)
                    return -1;
            } else if (s_plan_identity(s, k, c) != 0) {
                return -1;
            }
        }
        if (!s->config_from_file[c])
            s_infer_configs(s);
        break;
    }
    default:
        break;
    }
    for (int c = 0; c < SDX_NM_NCOMP; c++)
        if (!(comps & s_comp_bits[c]))
            s->has_comp[c] = false;
    return 0;
}

/* Open `path` as a source: detect, read configs, plan. Returns -1 only for
   I/O or validation failures; an unsupported architecture is s->arch ==
   SDX_ARCH_UNKNOWN with s->why saying what was found. */
static int s_source_open(s_source_t *s, const char *path, const char *config_dir, unsigned comps,
                         sdx_dtype_t want)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->want_dtype = want;
    if (!path)
        return sdx_set_error("model path is NULL");
    if (config_dir && !s_is_dir(config_dir))
        return sdx_set_error("%s: --config-dir is not a folder", config_dir);
    if (s_is_dir(path)) {
        char p[SDX_PATH_MAX];
        if (s_join(p, sizeof p, path, "model_index.json", NULL) != 0)
            return -1;
        if (s_is_file(p))
            return s_open_pipeline(s, path, comps);
        if (s_join(p, sizeof p, path, "config.json", NULL) != 0)
            return -1;
        if (s_is_file(p))
            return s_open_component_dir(s, path, comps);
        return sdx_set_error("%s: not a diffusers folder (no model_index.json or config.json)",
                             path);
    }
    if (!s_is_file(path))
        return sdx_set_error("%s: %s", path,
                             errno == ENOENT ? "no such file or folder" : "not a file or folder");
    return s_open_file(s, path, config_dir, comps);
}

/* ---------------------------------------------------------------- detect */

sdx_arch_t sdx_detect_arch(const char *path, char *why, size_t why_len)
{
    s_source_t s;
    sdx_arch_t a = SDX_ARCH_UNKNOWN;
    if (s_source_open(&s, path, NULL, SDX_COMP_ALL, SDX_F32) != 0) {
        if (why && why_len)
            snprintf(why, why_len, "%s", sdx_last_error());
    } else {
        a = s.arch;
        if (why && why_len)
            snprintf(why, why_len, "%s", s.why);
        if (a == SDX_ARCH_UNKNOWN)
            sdx_set_error("%s: %s", path, s.why);
    }
    s_source_free(&s);
    return a;
}

/* prediction_type of a scheduler_config.json; "epsilon" when none says. */
static const char *s_scheduler_prediction(const char *path)
{
    static _Thread_local char buf[16];
    snprintf(buf, sizeof buf, "epsilon");
    if (!path || !*path)
        return buf;
    cJSON *j = sdx_config_read_json(path);
    const char *p = j ? s_json_str(j, "prediction_type") : NULL;
    if (p)
        snprintf(buf, sizeof buf, "%s", p);
    cJSON_Delete(j);
    return buf;
}

int sdx_model_inspect(const char *path, const char *config_dir, sdx_model_info_t *info)
{
    memset(info, 0, sizeof *info);
    s_source_t s;
    if (s_source_open(&s, path, config_dir, SDX_COMP_ALL, SDX_F32) != 0) {
        s_source_free(&s);
        return -1;
    }
    info->arch = s.arch;
    snprintf(info->description, sizeof info->description, "%s", s.why);
    const char *fmt = s.kind == S_KIND_PIPELINE                      ? "diffusers"
                      : s.kind == S_KIND_COMPONENT || s_is_dir(path) ? "diffusers_component"
                      : s.kind == S_KIND_SINGLE                      ? "single_file"
                                                                     : "safetensors";
    snprintf(info->format, sizeof info->format, "%s", fmt);
    info->n_files = (size_t)s.nfiles;
    for (int f = 0; f < s.nfiles; f++) {
        for (size_t i = 0; i < sdx_safetensors_count(s.files[f]); i++) {
            const sdx_st_tensor_t *t = sdx_safetensors_at(s.files[f], i);
            info->tensor_count++;
            if (t->storage != SDX_ST_NATIVE) {
                info->f8_counts[t->storage == SDX_ST_F8_E5M2]++;
            } else {
                info->dtype_counts[t->dtype]++;
                info->dtype_names[t->dtype] = t->st_dtype;
            }
            int64_t numel = 1;
            for (int d = 0; d < t->ndim; d++)
                numel *= t->shape[d];
            info->params_total += numel;
        }
    }
    int64_t in_comps = 0;
    for (size_t i = 0; i < s.nitems; i++) {
        int64_t numel = 1;
        for (int d = 0; d < s.items[i].ndim; d++)
            numel *= s.items[i].shape[d];
        info->params[s.items[i].comp] += numel;
        in_comps += numel;
    }
    /* Split q/k/v items add up to their fused source, so this is exact. */
    info->params_other = info->params_total - in_comps;
    info->skipped_keys = s.skipped;
    for (size_t i = 0; i < s.skipped && i < S_SKIP_LIST; i++)
        snprintf(info->skipped[i], sizeof info->skipped[i], "%s", s.skipped_names[i]);
    info->ignored_keys = s.ignored;
    info->zero_terminal_snr = s.ztsnr;
    snprintf(info->prediction_type, sizeof info->prediction_type, "%s",
             s.prediction_type[0] ? s.prediction_type : s_scheduler_prediction(s.scheduler_config));
    size_t best = 0;
    for (int d = 0; d < SDX_DTYPE_COUNT; d++)
        if (info->dtype_counts[d] > best) {
            best = info->dtype_counts[d];
            snprintf(info->dtype, sizeof info->dtype, "%s",
                     info->dtype_names[d] ? info->dtype_names[d] : "?");
        }
    for (int k = 0; k < 2; k++)
        if (info->f8_counts[k] > best) {
            best = info->f8_counts[k];
            snprintf(info->dtype, sizeof info->dtype, "%s", k ? "F8_E5M2" : "F8_E4M3");
        }
    if (s.arch == SDX_ARCH_SDXL_BASE || s.arch == SDX_ARCH_SDXL_REFINER || s.arch == SDX_ARCH_VAE) {
        bool any_file = false;
        for (int c = 0; c < SDX_NM_NCOMP; c++)
            any_file |= s.config_from_file[c];
        bool defaults_only = s.kind == S_KIND_SINGLE && !config_dir;
        snprintf(info->config_source, sizeof info->config_source, "%s",
                 s.kind == S_KIND_SINGLE && config_dir ? "config-dir"
                 : s.config_note[0]                    ? s.config_note
                 : any_file                            ? "config.json"
                 : s.inferred                          ? "shapes"
                                                       : "sdxl defaults");
        if (s.infer_error[0])
            snprintf(info->config_check, sizeof info->config_check,
                     "%s (the shapes do not determine the config: pass --config-dir DIR with "
                     "the model's diffusers config.json files)",
                     s.infer_error);
        else if (s_check_duplicates(&s) == 0 && s_check_shapes(&s, defaults_only) == 0)
            snprintf(info->config_check, sizeof info->config_check, "ok");
        else
            snprintf(info->config_check, sizeof info->config_check, "%s", sdx_last_error());
    }
    if (s.arch == SDX_ARCH_UNKNOWN) {
        sdx_set_error("%s: %s", path, s.why);
        s_source_free(&s);
        return -1;
    }
    s_source_free(&s);
    return 0;
}

/* ---------------------------------------------------------------- load */

static bool s_is_float(sdx_dtype_t d)
{ /* float8 storage reads as SDX_F32 */
    return d == SDX_F32 || d == SDX_F16 || d == SDX_BF16 || d == SDX_F64;
}

/* One planned tensor: borrow, reshape (views), convert. New reference in *out. */
static int s_load_item(const s_source_t *s, const s_item_t *it, sdx_dtype_t dt, sdx_device_t dev,
                       sdx_tensor_t **out)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *t = NULL, *r = NULL;
    if (!S)
        return sdx_set_error("out of memory");
    SDX_TRY(sdx_safetensors_tensor(S, &t, s->files[it->file], it->src));
    switch (it->op) {
    case SDX_NM_COPY:
        break;
    case SDX_NM_ROWS: {
        int64_t n = it->src->shape[0] / it->parts;
        SDX_TRY(sdx_narrow(S, &t, t, 0, n * it->part, n));
        break;
    }
    case SDX_NM_TRANSPOSE:
        SDX_TRY(sdx_transpose(S, &t, t, 0, 1));
        SDX_TRY(sdx_contiguous(S, &t, t));
        break;
    case SDX_NM_CONV1X1_TO_LINEAR:
        SDX_TRY(sdx_reshape(S, &t, t, it->shape, it->ndim));
        break;
    }
    SDX_TRY(sdx_to(S, &r, t, s_is_float(it->src->dtype) ? dt : it->src->dtype, dev));
    SDX_TRY(sdx_scope_keep(S, r));
    sdx_scope_free(&S);
    *out = r;
    return 0;
fail:;
    char why[S_WHY_MAX];
    snprintf(why, sizeof why, "%s", sdx_last_error());
    sdx_scope_free(&S);
    return sdx_set_error("%s: tensor '%s' -> %s '%s': %s", sdx_safetensors_path(s->files[it->file]),
                         it->src->name, sdx_nm_comp_name(it->comp), it->name, why);
}

sdx_model_t *sdx_model_load(const sdx_load_opts_t *o)
{
    sdx_load_opts_t opts;
    sdx_load_opts_init(&opts);
    if (o)
        opts = *o;
    if (!opts.components)
        opts.components = SDX_COMP_ALL;
    if (opts.dtype != SDX_F32 && opts.dtype != SDX_F16 && opts.dtype != SDX_BF16 &&
        opts.dtype != SDX_F64) {
        sdx_set_error("model dtype must be f32, f16, bf16 or f64, not %s",
                      sdx_dtype_name(opts.dtype));
        return NULL;
    }
    s_source_t s;
    sdx_model_t *m = NULL;
    if (s_source_open(&s, opts.path, opts.config_dir, opts.components, opts.dtype) != 0)
        goto fail;
    switch (s.arch) {
    case SDX_ARCH_SDXL_BASE:
    case SDX_ARCH_SDXL_REFINER:
    case SDX_ARCH_VAE:
        break;
    case SDX_ARCH_LORA:
    case SDX_ARCH_CONTROLNET:
    case SDX_ARCH_TEXTUAL_INVERSION:
        sdx_set_error("%s: %s: an adapter, not a model (load it with its own loader)", opts.path,
                      s.why);
        goto fail;
    default:
        sdx_set_error("%s: %s", opts.path, s.why);
        goto fail;
    }
    if (strcmp(s.prediction_type, "edm") == 0) {
        sdx_set_error("%s: an EDM model (edm_mean/edm_std or edm_vpred keys, as Playground v2.5): "
                      "EDM sampling is not built yet, so it is refused rather than run with the "
                      "wrong noise schedule",
                      opts.path);
        goto fail;
    }
    if (s.infer_error[0]) {
        sdx_set_error("%s: %s (the shapes do not determine the config: pass --config-dir DIR "
                      "with the model's diffusers config.json files)",
                      opts.path, s.infer_error);
        goto fail;
    }
    bool defaults_only = s.kind == S_KIND_SINGLE && !opts.config_dir;
    if (s_check_duplicates(&s) != 0 || s_check_shapes(&s, defaults_only) != 0)
        goto fail;
    /* The components the architecture has must be there when asked for. */
    static const struct {
        sdx_arch_t arch;
        unsigned need;
    } needs[] = {
        {SDX_ARCH_SDXL_BASE, SDX_COMP_ALL},
        {SDX_ARCH_SDXL_REFINER, SDX_COMP_UNET | SDX_COMP_VAE | SDX_COMP_TE2},
        {SDX_ARCH_VAE, SDX_COMP_VAE},
    };
    for (size_t i = 0; i < sizeof needs / sizeof needs[0]; i++) {
        if (needs[i].arch != s.arch)
            continue;
        /* Component-only sources (a UNet folder or file) hold what they hold. */
        bool whole = s.kind == S_KIND_PIPELINE || (s.kind == S_KIND_SINGLE && !s.unet_only);
        for (int c = 0; c < SDX_NM_NCOMP && whole; c++) {
            if ((needs[i].need & opts.components & s_comp_bits[c]) && !s.has_comp[c]) {
                sdx_set_error("%s: %s has no %s", opts.path, sdx_arch_name(s.arch),
                              sdx_nm_comp_name((sdx_nm_comp_t)c));
                goto fail;
            }
        }
    }

    m = calloc(1, sizeof *m);
    if (!m) {
        sdx_set_error("out of memory");
        goto fail;
    }
    m->arch = s.arch;
    m->layout = (s.kind == S_KIND_PIPELINE || s.kind == S_KIND_COMPONENT ||
                 s.kind == S_KIND_UNET_FILE || s.kind == S_KIND_VAE_FILE)
                    ? SDX_LAYOUT_DIFFUSERS
                    : SDX_LAYOUT_SINGLE_FILE;
    m->dtype = opts.dtype;
    m->device = opts.device;
    m->unet_cfg = s.unet_cfg;
    m->vae_cfg = s.vae_cfg;
    m->te1_cfg = s.te1_cfg;
    m->te2_cfg = s.te2_cfg;
    memcpy(m->tokenizer_dir, s.tokenizer_dir, sizeof m->tokenizer_dir);
    memcpy(m->tokenizer2_dir, s.tokenizer2_dir, sizeof m->tokenizer2_dir);
    memcpy(m->scheduler_config, s.scheduler_config, sizeof m->scheduler_config);
    m->force_zeros_for_empty_prompt = s.force_zeros_for_empty_prompt;
    snprintf(m->prediction_type, sizeof m->prediction_type, "%s", s.prediction_type);
    m->zero_terminal_snr = s.ztsnr;
    m->skipped_keys = s.skipped;
    if (s.skipped)
        snprintf(m->skipped_example, sizeof m->skipped_example, "%s", s.skipped_names[0]);
    sdx_weights_t **dst[SDX_NM_NCOMP] = {&m->unet, &m->vae, &m->te1, &m->te2};
    for (int c = 0; c < SDX_NM_NCOMP; c++) {
        if (s.has_comp[c] && (opts.components & s_comp_bits[c]) && !(*dst[c] = sdx_weights_new()))
            goto fail;
    }
    for (size_t i = 0; i < s.nitems; i++) {
        const s_item_t *it = &s.items[i];
        if (!*dst[it->comp])
            continue;
        sdx_tensor_t *t = NULL;
        if (s_load_item(&s, it, opts.dtype, opts.device, &t) != 0)
            goto fail;
        if (sdx_weights_put(*dst[it->comp], it->name, t) != 0) {
            sdx_tensor_free(&t);
            goto fail;
        }
    }
    s_source_free(&s);
    return m;

fail:
    sdx_model_free(&m);
    s_source_free(&s);
    return NULL;
}

void sdx_model_free(sdx_model_t **mp)
{
    if (!mp || !*mp)
        return;
    sdx_model_t *m = *mp;
    sdx_weights_free(&m->unet);
    sdx_weights_free(&m->vae);
    sdx_weights_free(&m->te1);
    sdx_weights_free(&m->te2);
    free(m);
    *mp = NULL;
}
