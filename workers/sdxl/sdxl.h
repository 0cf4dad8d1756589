/*  sdxl.h - the engine's one public header.

    params_init() fills defaults, new() loads a model onto a device, generate()
    turns a prompt into images, free() releases everything. The engine knows
    nothing of ZeroMQ; sdxl-gen and the inference worker both drive it through
    this header.

        sdxl_engine_params_t ep;
        sdxl_engine_params_init(&ep);
        ep.model_path = "/models/sdxl-base";
        sdxl_engine_t *e = sdxl_engine_new(&ep);          // NULL: sdx_last_error()
        sdxl_gen_params_t gp;
        sdxl_gen_params_init(&gp);
        gp.prompt = "a lighthouse at dusk";
        sdxl_result_t r;
        if (sdxl_generate(e, &gp, &r) == 0) { ... r.images[0] ...; sdxl_result_clear(&r); }
        sdxl_engine_free(&e);
*/
#ifndef SDXL_H
#define SDXL_H

#include "sdx_controlnet.h"
#include "sdx_image.h"
#include "sdx_lora.h"
#include "sdx_ti.h"
#include "sdx_model.h"
#include "sdx_prompt.h"
#include "sdx_tokenizer.h"
#include "sdx_torch.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sdxl_engine sdxl_engine_t;

typedef void (*sdxl_log_fn)(int level /* 0 error .. 3 debug */, const char *msg, void *ud);

typedef struct {
    const char *model_path;     /* diffusers folder or single .safetensors */
    const char *config_dir;     /* configs/tokenizers for a single file (optional) */
    const char *tokenizer_dir;  /* overrides (optional) */
    const char *tokenizer2_dir;
    const char *vae_path;       /* optional external VAE (a VAE file or diffusers
                                   vae/ folder) replacing the checkpoint's; its own
                                   config decides force_upcast (an fp16-fix VAE's
                                   config.json says false: it runs in fp16) */
    int vae_upcast;             /* 0 (default): the VAE config's force_upcast;
                                   1: always upcast f16; -1: never (fp16-fix) */
    sdx_dtype_t dtype;          /* default SDX_F32 */
    sdx_device_t device;        /* default CPU */
    bool vae_f32;               /* true: the VAE computes in float32 whatever
                                   dtype is (f32 copies of its weights);
                                   false (default): the VAE config's
                                   force_upcast rule (f16 -> f32, bf16 kept) */
    int channels_last;          /* channels-last activations in the UNet and
                                   VAE: -1 auto (default: on for CUDA, off
                                   for CPU), 0 off, 1 on */
    int threads;                /* CPU threads, 0: libtorch's default */
    const char *components_path; /* a base SDXL model (folder or file) whose
                                   text_encoder_2, tokenizer_2, VAE and
                                   scheduler config a refiner checkpoint
                                   that lacks them takes (a UNet-only
                                   refiner folder); loaded (copied) into
                                   this engine, nothing is shared. NULL:
                                   none, the checkpoint must be complete */
    bool text_only;             /* load only the tokenizers and the text
                                   encoders (the conditioning worker):
                                   sdxl_encode_prompt works, sdxl_generate
                                   refuses the engine */
    sdxl_log_fn log;
    void *log_ud;
} sdxl_engine_params_t;

void sdxl_engine_params_init(sdxl_engine_params_t *p);
/* Load. NULL on failure with the reason in sdx_last_error(). Caller frees. */
sdxl_engine_t *sdxl_engine_new(const sdxl_engine_params_t *p);
void sdxl_engine_free(sdxl_engine_t **e);
/* The loaded model (borrowed). */
const sdx_model_t *sdxl_engine_model(const sdxl_engine_t *e);
/* Run the VAE of vae_path (a VAE file or a diffusers vae/ folder, with its
   own config as for params.vae_path) from now on, or the checkpoint's again
   (NULL or ""). The same VAE as now costs nothing; the checkpoint's is kept
   while an external one runs, so going back costs nothing either; another
   external VAE replaces the previous one (which is freed). On failure the
   running VAE is untouched: -1 with sdx_last_error(). Not while a
   generation runs on e. */
int sdxl_engine_set_vae(sdxl_engine_t *e, const char *vae_path);
/* Bytes of the weights the engine holds (every loaded component in its
   dtype, an external VAE included): what a worker's memory budget counts. */
int64_t sdxl_engine_weight_bytes(const sdxl_engine_t *e);
/* The tokenizer of text_encoder (which 1; NULL for a refiner) or
   text_encoder_2 (which 2), borrowed. */
const sdx_tokenizer_t *sdxl_engine_tokenizer(const sdxl_engine_t *e, int which);

/* LoRA: one adapter file (kohya/sd-scripts or diffusers/PEFT naming) and
   the weight its delta is multiplied by (1.0: as trained). */
typedef sdx_lora_spec_t sdxl_lora_t;

/* Make exactly loras[0..n-1] fused into the UNet and text encoders (n == 0
   removes all). The same set as now (paths, order, weights, files unchanged
   on disk) is a no-op; otherwise the old set comes out exactly (the
   originals of touched weights are kept, never re-read from disk) and the
   new one goes in, computed in float32 and cast to the engine's dtype.
   Every file is checked first: a bad or unsupported file (LyCORIS, SD1.x,
   a key matching no module, shapes that do not fit) returns -1 with the
   reason in sdx_last_error() and leaves the engine as it was. Paths are
   copied. Not thread-safe against a running sdxl_generate on e. */
int sdxl_engine_set_loras(sdxl_engine_t *e, const sdxl_lora_t *loras, int n);
/* The set now fused (borrowed, valid until the next set call); *n its size. */
const sdxl_lora_t *sdxl_engine_loras(const sdxl_engine_t *e, int *n);

/* Textual inversion: an SDXL embedding file (clip_l [n, 768] and clip_g
   [n, 1280] tensors, as diffusers' load_textual_inversion takes them) and
   the token that calls it in prompts. */
typedef sdx_ti_spec_t sdxl_embedding_t;

/* Replace the loaded embeddings by list[0..n) (n = 0 removes all), hot:
   each file's vectors become added tokens "<token>", "<token>_1", ... in
   both tokenizers and rows of both token-embedding tables; prompts are
   rewritten like diffusers' maybe_convert_prompt. The same set (paths and
   tokens) is a no-op; a removed set leaves the tables bit for bit as
   loaded. Rule for other forms: a file without both clip_l and clip_g
   (SD1.x emb_params / string_to_param, 768 wide only) does not fit SDXL and
   is refused. Every file is checked first; on -1 (reason in
   sdx_last_error()) the engine is as before. Paths are copied. Not
   thread-safe against a running sdxl_generate on e. */
int sdxl_engine_set_embeddings(sdxl_engine_t *e, const sdxl_embedding_t *list, int n);
/* ControlNet (diffusers' ControlNetModel, SDXL): a loaded network, kept
   by the caller and used by any number of generations. */
typedef sdx_controlnet_t sdxl_controlnet_t;
/* Load a diffusers ControlNet folder or lone .safetensors in the engine's
   dtype and device, checked against its UNet. NULL with the reason in
   sdx_last_error(). Caller frees it (after the engine's last generation
   that uses it) with sdxl_controlnet_free(). */
sdxl_controlnet_t *sdxl_controlnet_load(const sdxl_engine_t *e, const char *path);
void sdxl_controlnet_free(sdxl_controlnet_t **c);
/* The ControlNet at path, loaded on first use and kept by the engine (up
   to SDXL_MAX_CONTROLS paths, freed with the engine): the inference
   worker's per-model cache. Borrowed; NULL with sdx_last_error(). */
const sdxl_controlnet_t *sdxl_engine_controlnet(sdxl_engine_t *e, const char *path);

/* One ControlNet applied to a generation, as StableDiffusionXLControlNetPipeline
   (guess_mode off): its residuals times scale are added to the UNet's in
   the steps i of n with start <= i/n and (i+1)/n <= end (diffusers'
   controlnet_keep); several add up (MultiControlNetModel). */
typedef struct {
    const sdxl_controlnet_t *net; /* borrowed */
    const sdx_image_t *image;     /* the ready-made control image (the `none`
                                     preprocessor), 8-bit RGB or RGBA (alpha
                                     ignored); resized to the output size with
                                     Lanczos-3 when its size differs, then /255
                                     (no [-1, 1] normalisation). Borrowed. */
    double scale;                 /* controlnet_conditioning_scale, >= 0 */
    double start, end;            /* control_guidance_start/end, 0 <= start < end <= 1 */
} sdxl_control_t;

/* Progress callback: once per denoising step (step counts from 1). */
typedef void (*sdxl_progress_fn)(int step, int total, double elapsed_s, void *ud);
/* Live preview callback: the first image of the batch as the preview
   decoder sees the loop's latents after `step` (sdxl_gen_params_t.preview).
   img is borrowed for the call. */
typedef void (*sdxl_preview_fn)(int step, int total, const sdx_image_t *img, void *ud);
struct sdx_taesd; /* sdx_taesd.h */

/* The engine's hard limits: what sdxl_generate refuses as an input error.
   They bound what the engine can do, not what a deployment allows: the
   request rules (ranges and defaults) live in schemas/
   prompt_submission_schema.json, whose ranges must lie inside these
   (tests/pipeline/test_engine_defaults.c checks it). */
#define SDXL_MAX_SIDE 8192
#define SDXL_MAX_STEPS 1000
#define SDXL_MAX_BATCH 64

/* Generation parameters. The project's two callers, the inference worker and
   sdxl-gen generate, set every field from the request as validated against
   schemas/prompt_submission_schema.json (defaults filled there), so the
   schema alone decides their defaults. sdxl_gen_params_init's defaults are
   for other library users and equal the schema's (steps 30, guidance 7.5,
   rescale 0, batch 1, clip_skip 0; test_engine_defaults fails when they
   drift); width/height 0 is the model's native size (the UNet's
   sample_size * 8: 1024 for SDXL, the schema's default). */
typedef struct {
    const char *prompt;
    const char *negative_prompt; /* NULL: no negative prompt (zeros if the model
                                    says force_zeros_for_empty_prompt) */
    int width, height;           /* multiples of 8, at most SDXL_MAX_SIDE; 0: the
                                    UNet's sample_size * 8 (1024 for SDXL) */
    int steps;                   /* 1..SDXL_MAX_STEPS, default 30 */
    double guidance_scale;       /* default 7.5 (the schema's); <= 1 disables CFG */
    double guidance_rescale;     /* default 0 */
    uint64_t seed;
    const char *scheduler;       /* any name of the alias table; NULL: the
                                    model's scheduler config / Euler */
    int karras;                  /* -1 default, 0 off, 1 on */
    int clip_skip;               /* 0: none */
    const char *prompt_attention; /* NULL or "none": diffusers' encode_prompt
                                    (plain text, 77 tokens, truncated);
                                    "a1111": AUTOMATIC1111 weighting syntax
                                    and 75-token chunks, [N, 77 * k, 2048]
                                    (sdx_weighting.h); anything else
                                    ("compel") is an input error */
    const char *prediction_type; /* "epsilon" or "v_prediction" overrides the
                                    model's (its scheduler config, or the
                                    checkpoint's v_pred marker); NULL: the model's */
    int batch;                   /* num_images_per_prompt, 1..SDXL_MAX_BATCH, default 1 */
    sdxl_progress_fn progress;
    void *progress_ud;
    /* Live previews, opt-in: every preview_every denoising steps but the
       last, the loop's latents (first batch item) through preview_decoder
       (AutoencoderTiny, sdx_taesd.h) go to preview(). A preview that fails
       is logged and the rest are skipped; it never changes or fails the
       generation. NULL / 0: none. Borrowed. */
    const struct sdx_taesd *preview_decoder;
    int preview_every;
    sdxl_preview_fn preview;
    void *preview_ud;
    const volatile int *cancel;  /* checked every step; non-zero -> stop with
                                    an error "cancelled" */
    bool decode;                 /* default true; false: latents only */
    const sdx_prompt_embeds_t *embeds; /* precomputed conditioning (from
                                    sdxl_encode_prompt, possibly on another
                                    process): used instead of encoding the
                                    prompt, which then only labels the
                                    result; shapes are checked against the
                                    UNet and batch (an input error), the
                                    negative pair is required when
                                    guidance_scale > 1. Borrowed. */
    const sdx_image_t *init_image; /* img2img (diffusers'
                                    StableDiffusionXLImg2ImgPipeline): start
                                    from this 8-bit RGB (or RGBA, alpha
                                    ignored) image instead of pure noise.
                                    Not resized: its size is the output
                                    size, so width/height must be 0 or equal
                                    to it, and multiples of 8 (else an input
                                    error). NULL: txt2img. Borrowed. */
    double strength;             /* with init_image: how much of the
                                    schedule is run, in (0, 1] (default 0.8,
                                    the schema's): int(steps * strength) steps
                                    from the noise level of the first kept
                                    timestep; 1 runs every step but still
                                    starts from the image noised to the
                                    highest level (not pure noise). Ignored
                                    without init_image. */
    /* Ensemble of experts (diffusers' denoising_end / denoising_start; both
       fractions of the training schedule, 0: unused; cut at timestep
       round(1000 - frac * 1000) as diffusers does). */
    double denoising_end;        /* base: in (0, 1), run only the timesteps
                                    >= the cut; set decode false to hand the
                                    latents to a refiner */
    double denoising_start;      /* refiner: in (0, 1), with init_latents:
                                    run only the timesteps < the cut (one
                                    more for 2nd-order schedulers) */
    const sdx_tensor_t *init_latents; /* the handoff [batch, C, H/8, W/8]
                                    (unscaled, as r->latents of the base):
                                    used as they are (no VAE encode, no
                                    noise added); requires denoising_start,
                                    excludes init_image. Borrowed. */
    double aesthetic_score;      /* refiner UNets (5 time ids): default 6.0 */
    double negative_aesthetic_score; /* default 2.5 */
    const sdxl_control_t *controls; /* ControlNets, NULL/0: none; with
                                    init_image or a refiner model: refused */
    int n_controls;                 /* 0..SDXL_MAX_CONTROLS */
} sdxl_gen_params_t;

#define SDXL_MAX_CONTROLS 8

void sdxl_gen_params_init(sdxl_gen_params_t *p);

typedef struct {
    int count;              /* images (batch) */
    sdx_image_t *images;    /* count images (NULL when !decode) */
    sdx_tensor_t *latents;  /* final latents before VAE decode [B,4,h,w], owned */
    sdx_tensor_t *decoded;  /* raw VAE output [B,3,H,W] in ~[-1,1], owned (NULL when !decode) */
    double encode_ms, denoise_ms, decode_ms, total_ms;
    int steps_done;
    int previews;              /* live previews handed to params.preview */
    double preview_ms;         /* their decode time, all together */
    char preview_error[200];   /* why previews stopped early, "" if they did not */
    char scheduler[64];     /* the diffusers class that ran */
    bool karras;            /* with Karras sigmas */
    bool input_error;       /* on failure: true when the parameters were refused
                               before any work (size, steps, batch, clip_skip
                               beyond the model's layers, unknown scheduler or
                               an option it lacks, strength, an init image of
                               the wrong size, a control's scale/start/end
                               or image): the caller's mistake, not
                               a run-time failure */
} sdxl_result_t;

/* Generate. 0 on success; -1 with sdx_last_error() (a cancelled run fails
   with "cancelled"), and r->input_error says whether the parameters were at
   fault. On success the caller clears r. */
int sdxl_generate(sdxl_engine_t *e, const sdxl_gen_params_t *p, sdxl_result_t *r);
void sdxl_result_clear(sdxl_result_t *r);

/* The prompt embeddings sdxl_generate would compute for p (prompt,
   negative_prompt, clip_skip, batch as num_images_per_prompt, and the
   negative pair when guidance_scale > 1), by the same code: embeddings made
   here and denoised elsewhere give the image of one sdxl_generate call.
   Tensors on the engine's device in its dtype, the caller's
   (sdx_prompt_embeds_free). 0, or -1 with sdx_last_error() and
   *input_error (may be NULL) true when p was refused before any work. */
int sdxl_encode_prompt(sdxl_engine_t *e, const sdxl_gen_params_t *p, sdx_prompt_embeds_t *out,
                       bool *input_error);

/* The A1111 "parameters" text of a generation (prompt, Negative prompt,
   Steps, Sampler, CFG scale, Seed, Size, Model, Clip skip) for its images'
   metadata; model_name is what A1111 shows as Model (the checkpoint's name,
   NULL to leave it out), model_hash its "Model hash" (sdxl_model_autov2;
   NULL or "" to leave it out), extra more "Key: value, ..." fields (NULL
   or "": none). malloc'd, NULL on OOM. sdxl-gen and the
   inference worker both write it, so one request gives one file either way. */
char *sdxl_infotext(const sdxl_gen_params_t *p, const sdxl_result_t *r, const char *model_name,
                    const char *model_hash, const char *extra);
/* A1111's refiner fields for sdxl_infotext's extra ("Refiner: NAME,
   Refiner switch at: 0.8"; NAME quoted as the text needs), into out. */
void sdxl_infotext_refiner(const char *refiner_name, double switch_at, char *out, size_t len);

/* The refiner stage of the ensemble of experts (diffusers' denoising_end /
   denoising_start): refiner (an engine of a refiner checkpoint, loaded
   with components_path when it is a UNet alone) runs the rest of the
   schedule base_p ran to its denoising_end, from base_r->latents (the base
   ran with decode false), with the aesthetic scores (6.0 / 2.5 as
   diffusers), the same prompt, seed, scheduler and steps, and decodes.
   base_p's progress and cancel apply (a caller may set its own first).
   out->steps_done and the stage timings count both stages. 0, or -1 with
   sdx_last_error() (out->input_error for a refused input). */
int sdxl_refine(sdxl_engine_t *refiner, const sdxl_gen_params_t *base_p, const sdxl_result_t *base_r,
                double aesthetic_score, double negative_aesthetic_score, sdxl_result_t *out);

/* AutoV2, the "Model hash" of A1111 and Civitai: the first 10 hex digits
   (lower case) of the SHA-256 of a single-file checkpoint, into out. 0; -1
   with sdx_last_error() when path is a folder (a diffusers folder has no
   such hash), unreadable, or the engine was built without libsodium. Reads
   the whole file the first time; a process keeps the last 16 (by path,
   size and mtime). Thread-safe. */
int sdxl_model_autov2(const char *path, char out[11]);

#endif
