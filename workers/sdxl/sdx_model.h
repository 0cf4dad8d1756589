/*  sdx_model.h - SDXL model components: configs, named weights, loading.

    A model is loaded from either layout:
      - a diffusers folder (model_index.json, unet/, vae/, text_encoder/,
        text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/), or
      - a single SGM/A1111 .safetensors checkpoint, whose keys are renamed to
        diffusers names through the static tables of sdx_namemap.c.
    Whatever the layout, every component's weights are addressed by their
    diffusers names (e.g. "down_blocks.1.attentions.0.proj_in.weight" inside
    the UNet, "text_model.encoder.layers.0.self_attn.q_proj.weight" inside a
    text encoder), converted to the requested dtype and device at load.

    The networks (sdx_unet.c, sdx_vae.c, sdx_clip.c) read configs and weights
    from here and never look at files.
*/
#ifndef SDX_MODEL_H
#define SDX_MODEL_H

#include "sdx_torch.h"

#include <stdbool.h>
#include <stddef.h>

#define SDX_MAX_LEVELS 8
#define SDX_PATH_MAX 4096

/* ---------------------------------------------------------------- weights */

/* A set of named tensors of one component (all on one device and dtype). */
typedef struct sdx_weights sdx_weights_t;

sdx_weights_t *sdx_weights_new(void);
void sdx_weights_free(sdx_weights_t **w);
/* Insert (takes ownership of t; replaces an existing entry of that name). */
int sdx_weights_put(sdx_weights_t *w, const char *name, sdx_tensor_t *t);
/* Borrowed tensor, or NULL if absent (no error set). */
sdx_tensor_t *sdx_weights_get(const sdx_weights_t *w, const char *name);
/* printf-style name; on a missing name sets sdx_last_error("missing weight
   'NAME'") and returns NULL. Borrowed. */
sdx_tensor_t *sdx_weights_getf(const sdx_weights_t *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
bool sdx_weights_has(const sdx_weights_t *w, const char *name);
size_t sdx_weights_count(const sdx_weights_t *w);
/* i-th entry in insertion order; NULL past the end. Borrowed. */
const char *sdx_weights_name_at(const sdx_weights_t *w, size_t i);
sdx_tensor_t *sdx_weights_tensor_at(const sdx_weights_t *w, size_t i);
int64_t sdx_weights_param_count(const sdx_weights_t *w);

/* ---------------------------------------------------------------- configs */

/* UNet2DConditionModel config (diffusers config.json names). */
typedef struct {
    int in_channels, out_channels;
    int n_levels;                              /* len(block_out_channels) */
    int block_out_channels[SDX_MAX_LEVELS];
    bool down_cross_attn[SDX_MAX_LEVELS];      /* CrossAttnDownBlock2D at level i */
    bool up_cross_attn[SDX_MAX_LEVELS];        /* CrossAttnUpBlock2D at up level i */
    int layers_per_block;
    int heads[SDX_MAX_LEVELS];                 /* attention heads per level */
    int transformer_layers[SDX_MAX_LEVELS];    /* per down level (up uses reversed) */
    int mid_transformer_layers;                /* = transformer_layers[last] */
    int cross_attention_dim;
    int norm_num_groups;
    double norm_eps;
    int addition_time_embed_dim;               /* 256 for real SDXL */
    int projection_class_embeddings_input_dim; /* 2816 base, 2560 refiner */
    bool flip_sin_to_cos;
    double freq_shift;
    bool use_linear_projection;
    bool upcast_attention;
    int time_cond_proj_dim;                    /* 0 if none */
    int sample_size;
    bool mid_block_cross_attn;                 /* UNetMidBlock2DCrossAttn */
} sdx_unet_config_t;

/* AutoencoderKL config. */
typedef struct {
    int in_channels, out_channels, latent_channels;
    int n_levels;
    int block_out_channels[SDX_MAX_LEVELS];
    int layers_per_block;
    int norm_num_groups;
    double scaling_factor; /* 0.13025 for SDXL */
    double shift_factor;   /* 0 if absent */
    bool force_upcast;
    int sample_size;
} sdx_vae_config_t;

/* CLIPTextModel / CLIPTextModelWithProjection config. */
typedef struct {
    int vocab_size, hidden_size, intermediate_size;
    int num_hidden_layers, num_attention_heads;
    int max_position_embeddings;
    bool quick_gelu;    /* hidden_act == "quick_gelu" (else "gelu") */
    double layer_norm_eps;
    int projection_dim; /* 0: no text_projection */
    int eos_token_id;
    int pad_token_id;
} sdx_clip_config_t;

/* Fill a config with the real SDXL defaults (for single files that carry
   none). refiner selects the SDXL refiner UNet defaults. */
void sdx_unet_config_sdxl(sdx_unet_config_t *c, bool refiner);
void sdx_vae_config_sdxl(sdx_vae_config_t *c);
void sdx_clip_config_sdxl(sdx_clip_config_t *c, int which /* 1: CLIP-L, 2: bigG */);
/* Parse a diffusers config.json into a config; unknown keys are ignored,
   missing keys keep the value already in *c (call the _sdxl default first). */
int sdx_unet_config_read(sdx_unet_config_t *c, const char *config_json_path);
int sdx_vae_config_read(sdx_vae_config_t *c, const char *config_json_path);
int sdx_clip_config_read(sdx_clip_config_t *c, const char *config_json_path);
/* The same from config.json text (label names it in errors), e.g. a config
   a single file carries in its __metadata__. */
int sdx_unet_config_parse(sdx_unet_config_t *c, const char *json, const char *label);
int sdx_vae_config_parse(sdx_vae_config_t *c, const char *json, const char *label);
int sdx_clip_config_parse(sdx_clip_config_t *c, const char *json, const char *label);
/* Read a JSON object from a file (a config.json, model_index.json,
   scheduler_config.json; at most 4 MiB). NULL with the reason in
   sdx_last_error(). Caller frees the result with cJSON_Delete(). */
struct cJSON *sdx_config_read_json(const char *path);

/* ---------------------------------------------------------------- models */

typedef enum {
    SDX_ARCH_UNKNOWN = 0,
    SDX_ARCH_SDXL_BASE,
    SDX_ARCH_SDXL_REFINER,
    SDX_ARCH_VAE,
    SDX_ARCH_LORA,
    SDX_ARCH_CONTROLNET,
    SDX_ARCH_TEXTUAL_INVERSION,
} sdx_arch_t;

const char *sdx_arch_name(sdx_arch_t a); /* "sdxl_base", "sdxl_refiner", ... */

typedef enum { SDX_LAYOUT_DIFFUSERS = 0, SDX_LAYOUT_SINGLE_FILE } sdx_layout_t;

/* Component selection bits for sdx_load_opts_t.components. */
enum {
    SDX_COMP_UNET = 1 << 0,
    SDX_COMP_VAE = 1 << 1,
    SDX_COMP_TE1 = 1 << 2,
    SDX_COMP_TE2 = 1 << 3,
    SDX_COMP_ALL = 0xF,
};

typedef struct {
    const char *path;       /* diffusers folder or single .safetensors file */
    const char *config_dir; /* optional diffusers folder whose unet/vae/text_encoder*
                               config.json (and tokenizer*, scheduler/) are used
                               for a single file; NULL: SDXL defaults */
    sdx_dtype_t dtype;      /* weights' dtype (default SDX_F32) */
    sdx_device_t device;    /* default CPU */
    unsigned components;    /* SDX_COMP_* bits; 0 means SDX_COMP_ALL */
} sdx_load_opts_t;

void sdx_load_opts_init(sdx_load_opts_t *o);

typedef struct {
    sdx_arch_t arch;
    sdx_layout_t layout;
    sdx_dtype_t dtype;
    sdx_device_t device;
    sdx_weights_t *unet, *vae, *te1, *te2; /* NULL when absent or not requested */
    sdx_unet_config_t unet_cfg;
    sdx_vae_config_t vae_cfg;
    sdx_clip_config_t te1_cfg, te2_cfg;
    /* tokenizer folders (vocab.json + merges.txt); "" if unknown */
    char tokenizer_dir[SDX_PATH_MAX], tokenizer2_dir[SDX_PATH_MAX];
    /* scheduler/scheduler_config.json; "" if none (use SDXL defaults) */
    char scheduler_config[SDX_PATH_MAX];
    bool force_zeros_for_empty_prompt; /* model_index.json, default true */
    /* Model-type markers of the checkpoint (ComfyUI's rule: a "v_pred" key
       means v-prediction, "ztsnr" zero terminal SNR): "v_prediction", or ""
       (the scheduler config decides, epsilon by default). */
    char prediction_type[16];
    bool zero_terminal_snr;
    /* Keys inside a known component that no name table knows: skipped (as
       diffusers, ComfyUI and sd.cpp do), counted, one kept as an example. */
    size_t skipped_keys;
    char skipped_example[160];
} sdx_model_t;

/* Load a model. NULL on failure with a one-line reason in sdx_last_error()
   (e.g. "x.safetensors: looks like SD1.5 (found
   model.diffusion_model.input_blocks.1.1.proj_in with 768-d context), only
   SDXL is supported"). Caller owns the result. */
sdx_model_t *sdx_model_load(const sdx_load_opts_t *o);
void sdx_model_free(sdx_model_t **m);

/* Detect the architecture of a safetensors file or diffusers folder without
   loading weights. Writes a one-line description into why (may be NULL). */
sdx_arch_t sdx_detect_arch(const char *path, char *why, size_t why_len);

/* What a model path holds, from the safetensors headers alone (no weight
   bytes are read): for `sdxl-gen inspect`. */
typedef struct {
    sdx_arch_t arch;
    char format[32];            /* "diffusers", "diffusers_component", "single_file",
                                   "safetensors" (a lone file in diffusers naming, or an
                                   adapter) */
    char description[512];      /* one line: what was detected and from what */
    size_t n_files;             /* safetensors files read */
    size_t tensor_count;        /* tensors in those files */
    size_t dtype_counts[SDX_DTYPE_COUNT];
    const char *dtype_names[SDX_DTYPE_COUNT]; /* safetensors names ("F32"); static */
    int64_t params[4];          /* unet, vae, text_encoder, text_encoder_2 */
    int64_t params_other;       /* in no model component (adapters, EMA, ...) */
    int64_t params_total;
    /* Models only (sdxl_base, sdxl_refiner, vae): where the configs came from
       ("config.json", "config-dir", "sdxl defaults") and whether the tensor
       shapes fit them ("ok", or the reason they do not: what load would say). */
    char config_source[32];
    char config_check[512];
    /* Float8 tensors (F8_E4M3, F8_E5M2): not in dtype_counts, upcast at load. */
    size_t f8_counts[2];
    char dtype[16];             /* the storage dtype of most parameters ("F16") */
    /* "epsilon", "v_prediction" (v_pred marker or scheduler config), "edm"
       (edm_mean/edm_std: Playground v2.5, refused at load) */
    char prediction_type[16];
    bool zero_terminal_snr;
    /* Unknown keys inside known components, skipped at load; the first few. */
    size_t skipped_keys;
    char skipped[8][160];
    size_t ignored_keys;        /* keys outside every component (EMA, markers, LoRA) */
} sdx_model_info_t;

/* Fill *info for `path` (config_dir as for sdx_model_load). Returns 0, or
   -1 with sdx_last_error() for unreadable/corrupt input or an unsupported
   architecture (the message names what was found). */
int sdx_model_inspect(const char *path, const char *config_dir, sdx_model_info_t *info);

#endif
