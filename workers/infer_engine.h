/*  infer_engine.h - the inference worker's face of the SDXL engine, in
    plain C types.

    This header is the boundary between the fleet side (handler_inference.c,
    which works on sdx_value_t trees) and the engine (sdxl.h, tensors): only
    libc types cross it, so neither side's types leak into the other. The
    implementation (infer_engine.c, infer_cache.c) includes sdxl.h and never
    the common headers.

    Not for: ZeroMQ, request validation, replies (handler_inference.c). */
#ifndef INFER_ENGINE_H
#define INFER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct infer_engine infer_engine_t;

/* Log sink (level 0 error .. 3 debug). NULL: silent. */
typedef void (*infer_log_fn)(int level, const char *msg);
void infer_set_log(infer_log_fn fn);
void infer_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct {
    const char *models_root; /* model names resolve under it */
    const char *config_dir;  /* configs for single files without <name>.config/ ("" none) */
    int max_models;          /* engines kept loaded (LRU), >= 1 */
    int gpu;                 /* the worker's GPU (host index), -1: CPU */
    int threads;             /* CPU threads, 0: libtorch's default */
    const char *upscalers_root; /* output.upscale models ("" or NULL: Lanczos only) */
    int64_t max_model_bytes;    /* memory budget of the loaded models, 0: none */
    bool text_only;             /* load tokenizers and text encoders only (the conditioning
                                   worker): infer_engine_encode/tokenize, no generation */
    const char *preview_decoder; /* TAESD (AutoencoderTiny) folder or file for live previews,
                                    loaded at start ("" or NULL: none) */
} infer_engine_config_t;

/* Set up (nothing is loaded yet). NULL on failure with a reason in err.
   note receives a remark about the device (e.g. "--gpu 0 given, but this
   libtorch has no CUDA: running on the CPU"), "" when none. Call before the
   job threads start (it sets libtorch's thread count). Caller destroys. */
infer_engine_t *infer_engine_new(const infer_engine_config_t *cfg, char *note, size_t note_len,
                                 char *err, size_t err_len);
void infer_engine_destroy(infer_engine_t **e_p);
/* "cpu" or "cuda:0" (static). */
const char *infer_engine_device(const infer_engine_t *e);
bool infer_engine_is_cuda(const infer_engine_t *e);
int infer_engine_threads(const infer_engine_t *e);
/* Whether live previews can be made (a preview decoder is loaded). */
bool infer_engine_has_previews(const infer_engine_t *e);

typedef enum {
    INFER_OK = 0,
    INFER_BAD_NAME,  /* model_name refused (.., absolute, symlink out of the root) */
    INFER_NOT_FOUND, /* no such model under the root */
    INFER_LOAD_FAILED,
    INFER_CANCELLED, /* *cancel was set */
    INFER_BAD_INPUT, /* the engine refused a parameter */
    INFER_OOM,
    INFER_FAILED,
    INFER_BAD_UPSCALE, /* output.upscale: no such upscaler, or a file that is none */
    INFER_BAD_LORA,    /* lora.models: a file that is no LoRA this engine applies */
    INFER_BAD_IMAGE,   /* init_image: not a PNG/JPEG/WebP this build decodes */
    INFER_BAD_VAE,     /* vae_model: no VAE this engine loads */
    INFER_BAD_TI,      /* textual_inversions: a file that is no SDXL embedding */
    INFER_BAD_REFINER,    /* refiner_model: no such model, or none the handoff runs */
    INFER_BAD_CONTROLNET, /* controlnet: a file that is no ControlNet for this model, or its
                             image does not decode */
} infer_status_t;

/* One tensor crossing the boundary: raw little-endian bytes on the host, in
   the protocol's tensor form (proto/PROTOCOL.md "Tensors"). Leaving the
   engine (infer_engine_encode) data is malloc'd and the caller's; going in
   (infer_request_t.embeds) it is borrowed for the call. */
typedef struct {
    const char *name;  /* "prompt_embeds", ... (static) */
    const char *dtype; /* "float32", "float16", "bfloat16" (static) */
    int ndim;
    int64_t shape[4];
    uint8_t *data; /* malloc'd, nbytes */
    size_t nbytes;
} infer_tensor_t;

/* One LoRA of a request: a file (resolved by the caller under its LoRA
   root) and its weight. */
typedef struct {
    const char *path;
    double weight;
} infer_lora_t;

/* One textual-inversion embedding of a request: a file (resolved by the
   caller under its embeddings root) and the token prompts call it by. */
typedef struct {
    const char *path;
    const char *token;
} infer_ti_t;
/* One ControlNet of a request: a file or folder (resolved by the caller
   under its ControlNet root), the encoded control image (borrowed; resized
   to width x height with Lanczos-3 when its size differs), its scale and
   guidance window (fractions of the steps). */
typedef struct {
    const char *path;
    const uint8_t *image;
    size_t image_len;
    double scale, start, end;
    /* preprocessor canny: the image (once resized) becomes its Canny edge
       map with these thresholds and blur (sdx_canny.h); false: as given */
    bool canny;
    double canny_low, canny_high, canny_sigma;
} infer_control_t;

/* One generation. Strings are borrowed for the call. */
typedef struct {
    const char *model_name;
    const char *dtype; /* "fp32", "fp16", "bf16" */
    const char *prompt;
    const char *negative_prompt; /* NULL: none */
    const char *scheduler;       /* NULL: the model's */
    const char *prediction_type; /* "epsilon"/"v_prediction"; NULL: the model's */
    const char *prompt_attention; /* "none" (or NULL) or "a1111" (sdxl.h) */
    int karras;                  /* -1 config, 0 off, 1 on */
    int width, height, steps, clip_skip, batch;
    double guidance_scale, guidance_rescale;
    uint64_t seed;
    const char *format;          /* "png", "jpeg" or "webp" */
    int quality;                 /* jpeg / webp quality 1..100 */
    const char *const *png_text; /* more tEXt pairs {"k","v",...,NULL} or NULL */
    /* output.upscale: factor > 0 upscales every image before encoding with
       upscale_model ("lanczos"/NULL: Lanczos), from the upscalers root */
    double upscale_factor;
    const char *upscale_model;
    /* the images carry the A1111 parameters text (prompt, Steps, Sampler,
       CFG scale, Seed, Size, Model) built from the fields above */
    /* step 0 with msg "loading model" before a load, then 1..steps
       "denoising", with the denoising loop's steps per second (0 when not
       known: loading, upscaling); called on the calling thread */
    void (*progress)(int step, int total, double it_per_s, const char *msg, void *ud);
    void *progress_ud;
    const volatile int *cancel; /* checked every step */
    /* inference.denoise: precomputed conditioning (conditioning.encode_prompt's
       tensors, by name: prompt_embeds, pooled_prompt_embeds and with CFG the
       negative pair) used instead of encoding the prompt; NULL: encode. */
    const infer_tensor_t *embeds;
    int n_embeds;
    /* lora.models: fused into the model for this request (a set already
       fused is kept; another set is swapped in from the kept originals, no
       reload; none removes them) */
    const infer_lora_t *loras;
    int n_loras;
    /* vae_model: this VAE file or folder instead of the checkpoint's (the
       engine keeps both; NULL: the checkpoint's) */
    const char *vae_path;
    /* textual_inversions: registered for this request (the same set as
       last time costs nothing; none removes them, the tables restored) */
    const infer_ti_t *tis;
    int n_tis;
    /* init_image: img2img from these encoded bytes (PNG, JPEG, WebP;
       borrowed), resized to width x height with Lanczos-3 when its size
       differs (as diffusers' image processor does), with strength in (0, 1];
       NULL: text-to-image */
    const uint8_t *init_image;
    size_t init_image_len;
    double strength;
    /* controlnet: loaded once per loaded model and kept with it */
    const infer_control_t *controls;
    int n_controls;
    /* the ensemble of experts: the base runs to refiner_switch (a share of
       the schedule) and hands its latents to refiner_model (a name under the
       models root, resolved as model_name; a UNet-only refiner takes
       text_encoder_2, the VAE and the scheduler config of the base), which
       runs the rest with the aesthetic scores. NULL: no refiner. */
    const char *refiner_model;
    double refiner_switch, aesthetic_score, negative_aesthetic_score;
    /* output.preview: every preview_every steps but the last, the loop's
       latents (first image) through the engine's preview decoder, encoded
       as preview_format ("jpeg", "png", "webp") at preview_quality, go to
       preview() on the calling thread; 0 or no decoder: none */
    int preview_every;
    const char *preview_format;
    int preview_quality;
    void (*preview)(int step, int total, const uint8_t *data, size_t len, int width, int height,
                    void *ud);
    void *preview_ud;
} infer_request_t;

typedef struct {
    uint8_t *data; /* encoded bytes, malloc'd */
    size_t len;
    int width, height;
} infer_image_t;

typedef struct {
    int count;
    infer_image_t *images;
    int steps_done;
    bool loaded; /* this call loaded the model */
    int previews;             /* live previews sent */
    double preview_ms;        /* their decoding and encoding, all together */
    char preview_error[200];  /* why they stopped early, "" if they did not */
    char upscale_method[320]; /* what output.upscale ran, "" if nothing */
    double load_ms, lora_ms, encode_ms, denoise_ms, decode_ms, image_ms;
    /* the loaded models changed (publish them): set on a load or eviction */
    bool models_changed;
    char *parameters;   /* the A1111 text the images carry, malloc'd (NULL: none) */
    char model_hash[11]; /* AutoV2 of a single-file model, "" for a folder */
} infer_output_t;

/* Resolve the model, load it if needed (LRU), generate, encode. INFER_OK
   and *out filled (caller clears it), or a status with the reason in err. */
infer_status_t infer_engine_generate(infer_engine_t *e, const infer_request_t *req,
                                     infer_output_t *out, char *err, size_t err_len);
void infer_output_clear(infer_output_t *out);

/* Whether this build encodes "png", "jpeg", "webp". */
bool infer_engine_format_available(const char *format);

/* Loaded model names, most recently used first: n malloc'd strings in a
   malloc'd array (caller frees all). */
char **infer_engine_models(infer_engine_t *e, size_t *n);

typedef struct {
    char name[256];
    char path[1024];
    const char *format; /* "diffusers" or "safetensors" (static) */
    const char *dtype;  /* static */
    const char *state;  /* "loaded", "loading", "failed" (static) */
    bool in_use;
    int64_t uses;
    double load_ms;
    int64_t bytes; /* its weights (the files' size while it loads) */
} infer_model_info_t;

/* Up to max cache entries into out; returns how many. Never blocks on a
   load or a generation (safe on the main thread). */
int infer_engine_describe(infer_engine_t *e, infer_model_info_t *out, int max);

/* ------------------------------------------- explicit load and unload */

/* What infer_engine_load did. */
typedef struct {
    char path[4096];   /* the resolved folder or file */
    const char *dtype; /* "fp32", "fp16", "bf16" (static) */
    bool loaded;       /* this call loaded it */
    bool already_loaded;
    double load_ms; /* this call's load time, 0 when it was loaded already */
    int64_t bytes;  /* its weights */
    bool models_changed;
} infer_load_t;

/* Resolve model_name as infer_engine_generate does (text side only for a
   text_only engine) and load it in dtype ("fp32", "fp16", "bf16") into the
   cache when it is not there; it stays cached (LRU, memory budget). Does
   not wait for a generation on a model already loaded. INFER_OK and *out
   filled, or a status (INFER_BAD_NAME, INFER_NOT_FOUND, INFER_LOAD_FAILED,
   INFER_OOM) with the reason in err. */
infer_status_t infer_engine_load(infer_engine_t *e, const char *model_name, const char *dtype,
                                 infer_load_t *out, char *err, size_t err_len);

/* Drop model_name's engines in dtype (NULL: every dtype) from the cache: a
   name that no longer resolves matches the engines loaded under that name.
   Engines in use are freed when their generation gives them back
   (*deferred of them); *unloaded were freed now. INFER_OK (also when
   nothing was loaded), INFER_BAD_NAME, or INFER_NOT_FOUND (no such model
   on disk nor loaded) with the reason in err. */
infer_status_t infer_engine_unload(infer_engine_t *e, const char *model_name, const char *dtype,
                                   int *unloaded, int *deferred, char *err, size_t err_len);

/* ------------------------------------------------------ the text side */


/* What conditioning.encode_prompt computes: the four SDXL conditioning
   tensors (the negative pair only when guidance_scale > 1), exactly as
   infer_engine_generate would for the same request fields. */
typedef struct {
    int count; /* tensors filled: 4 with CFG, 2 without */
    infer_tensor_t t[4];
    bool truncated; /* a prompt was longer than 75 tokens */
    bool loaded;
    double load_ms, encode_ms;
    bool models_changed;
} infer_embeds_t;

/* Encode req's prompt, negative_prompt, clip_skip, batch and
   guidance_scale (the other fields are ignored) with the model's text
   encoders in req->dtype. INFER_OK and *out filled (caller clears), or a
   status with the reason in err. */
infer_status_t infer_engine_encode(infer_engine_t *e, const infer_request_t *req,
                                   infer_embeds_t *out, char *err, size_t err_len);
void infer_embeds_clear(infer_embeds_t *out);

/* Token ids of one text for both tokenizers (conditioning.tokenize). */
typedef struct {
    int count;               /* 2, or 1 for a refiner (tokenizer_2 only) */
    const char *names[2];    /* "tokenizer", "tokenizer_2" (static) */
    int64_t ids[2][77];      /* BOS, tokens, EOS, padding (max_length 77) */
    int n_real[2];           /* BOS..EOS before the padding */
    size_t n_untruncated[2]; /* BOS + every token + EOS without truncation */
    int32_t pad_id[2];
    bool loaded;
    double load_ms;
    bool models_changed;
} infer_tokens_t;

/* model_name NULL or "": the CLIP tokenizers built into the engine (no
   model is loaded); else the model's tokenizers (its text side is loaded
   into the cache). */
infer_status_t infer_engine_tokenize(infer_engine_t *e, const char *model_name, const char *text,
                                     infer_tokens_t *out, char *err, size_t err_len);

#endif
