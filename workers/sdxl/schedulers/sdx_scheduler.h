/*  sdx_scheduler.h - the one interface to the diffusion schedulers.

    Every scheduler follows diffusers 0.27.2 to the letter: the same timestep
    tables (timestep_spacing, steps_offset, Karras sigmas), the same
    init_noise_sigma, scale_model_input and step(), the same multi-order
    history, and the same order of draws from the generator. The pipeline
    drives it as diffusers' denoising loop does:

        sdx_scheduler_t *sch = sdx_scheduler_new("DPM++ 2M Karras", NULL);
        sdx_scheduler_set_timesteps(sch, steps);
        x = randn(...) * sdx_scheduler_init_noise_sigma(sch);
        for (int i = sdx_scheduler_begin_index(sch); i < sdx_scheduler_count(sch); i++) {
            sdx_scheduler_scale_model_input(sch, S, &xin, x, i);
            eps = unet(xin, sdx_scheduler_timestep(sch, i));
            sdx_scheduler_step(sch, S, &x, eps, i, x, gen);
        }

    Steps are indexed by their position i in the timestep table (0 ..
    count-1), which is what diffusers' internal step_index is in every
    pipeline; step() must be called for consecutive i, as the multistep and
    second-order schedulers keep state between calls.

    Tables (betas, alphas_cumprod, sigmas, timesteps) live on the host and are
    computed with diffusers' float32/float64 choices; tensor work goes through
    the shim in the sample's dtype and on its device (float32 upcast where
    diffusers upcasts). Not for training: no velocity targets, no custom
    timestep lists. */
#ifndef SDX_SCHEDULER_H
#define SDX_SCHEDULER_H

#include "sdx_torch.h"

#include <stdbool.h>

typedef struct sdx_scheduler sdx_scheduler_t;

typedef struct {
    /* A diffusers scheduler_config.json laid over the SDXL base defaults;
       keys a scheduler does not know are ignored (as from_config does).
       NULL: the SDXL defaults alone. */
    const char *config_path;
    /* A JSON object read as the content of a scheduler_config.json (laid
       over config_path, under the alias overrides): what the scheduler
       worker's requests send instead of a model's file. NULL: none. */
    const char *model_config_json;
    /* A JSON object laid over everything else, e.g. {"solver_order": 3}.
       NULL: none. */
    const char *config_json;
    /* -1 keep the configured use_karras_sigmas, 0 off, 1 on (fails for a
       scheduler without Karras sigmas). */
    int karras;
    /* DDIM's eta (the pipeline's extra step kwarg); 0 is deterministic. */
    double eta;
} sdx_scheduler_opts_t;

/* Defaults: no file, no JSON, karras -1, eta 0. */
void sdx_scheduler_opts_init(sdx_scheduler_opts_t *opts);

/* A scheduler by name: a diffusers class name (EulerAncestralDiscreteScheduler),
   its short form (EulerAncestralDiscrete) or a name users know (Euler a,
   DPM++ 2M Karras, ...), matched without regard to case. opts may be NULL.
   NULL on failure with the reason in sdx_last_error() (an unknown name lists
   the valid ones). Caller owns the result and destroys it. */
sdx_scheduler_t *sdx_scheduler_new(const char *name, const sdx_scheduler_opts_t *opts);
void sdx_scheduler_destroy(sdx_scheduler_t **sch);

/* The diffusers class this scheduler implements (static string). */
const char *sdx_scheduler_class_name(const sdx_scheduler_t *sch);
/* Every accepted name, one per line, "name -> Class [overrides]" (static). */
const char *sdx_scheduler_names(void);

/* ---- the tables, for catalogues (scheduler.list); static data, any thread */

/* The engine's scheduler table: the i-th class (0 .. count-1). */
typedef struct {
    const char *name;   /* diffusers class, "EulerDiscreteScheduler" */
    const char *keys;   /* the config keys it knows, separated by one space */
    int order;          /* diffusers' `order` */
    bool int_timesteps; /* diffusers keeps its timesteps as int64 */
} sdx_scheduler_class_info_t;
int sdx_scheduler_class_count(void);
/* 0, or -1 when i is out of range. Strings are static. */
int sdx_scheduler_class_at(int i, sdx_scheduler_class_info_t *out);
/* True when class `cls` (exact class name) knows config key `key`. */
bool sdx_scheduler_class_knows(const char *cls, const char *key);

/* The engine's alias table (names users know): the i-th row's name, its
   class and its config overrides as JSON (NULL: none). 0, or -1 past the
   last. Strings are static. */
int sdx_scheduler_alias_count(void);
int sdx_scheduler_alias_at(int i, const char **alias, const char **cls, const char **overrides);

/* The config keys the engine parses, and the JSON kind each takes:
   "integer", "number", "boolean", "string", "number[]" or "integer[]".
   0, or -1 past the last. Strings are static. */
int sdx_scheduler_key_count(void);
int sdx_scheduler_key_at(int i, const char **key, const char **kind);

/* The JSON a model lays over its scheduler config (opts.config_json): the
   prediction_type override and, for zero-terminal-SNR models, the rescale
   and trailing spacing. Written into buf (cap bytes); "" when there is
   nothing to lay. The pipeline and the scheduler worker both use it, so that
   a request resolves to the same configuration in either. 0, or -1 when buf
   is too small. */
int sdx_scheduler_model_json(char *buf, size_t cap, const char *prediction_type,
                             bool zero_terminal_snr);

/* Resolved configuration as a JSON object (the keys this class knows).
   Caller frees the string with free(). NULL on allocation failure. */
char *sdx_scheduler_config_json(const sdx_scheduler_t *sch);

/* Build the tables for `num_inference_steps` steps and reset the step
   state (history, begin index). 0 on success, -1 with sdx_last_error(). */
int sdx_scheduler_set_timesteps(sdx_scheduler_t *sch, int num_inference_steps);

/* Number of entries of the timestep table = model calls for a full run
   (2N-1 for Heun/KDPM2, N+1 for PNDM-PLMS, N otherwise). */
int sdx_scheduler_count(const sdx_scheduler_t *sch);
/* The i-th timestep as the UNet receives it. */
double sdx_scheduler_timestep(const sdx_scheduler_t *sch, int i);
/* true when diffusers keeps the timesteps as int64 (DDIM, DDPM, PNDM, DPM,
   UniPC, DEIS, LCM), false for float32 (the sigma-based schedulers). */
bool sdx_scheduler_timesteps_are_int(const sdx_scheduler_t *sch);
/* A 0-d tensor holding timestep i in diffusers' dtype (int64 or float32).
   Ownership as for shim outputs. */
int sdx_scheduler_timestep_tensor(const sdx_scheduler_t *sch, sdx_scope_t *S, sdx_tensor_t **out,
                                  int i, sdx_device_t dev);
/* The sigma table (float32, the final entry included) and its length;
   NULL and 0 for schedulers without sigmas (DDIM, DDPM, PNDM, LCM).
   Borrowed: valid until the next set_timesteps or destroy. */
const float *sdx_scheduler_sigmas(const sdx_scheduler_t *sch, int *n);
/* Standard deviation of the initial noise (float32 value as diffusers). */
double sdx_scheduler_init_noise_sigma(const sdx_scheduler_t *sch);
/* diffusers' `order` attribute: 2 for Heun/KDPM2/KDPM2 a, 1 otherwise. Used by
   img2img: first index = t_start * order. */
int sdx_scheduler_order(const sdx_scheduler_t *sch);
/* num_inference_steps as diffusers records it after set_timesteps. */
int sdx_scheduler_num_inference_steps(const sdx_scheduler_t *sch);

/* Start the loop at timestep index `begin` (img2img strength; diffusers'
   set_begin_index). Reset by set_timesteps. */
int sdx_scheduler_set_begin_index(sdx_scheduler_t *sch, int begin);
int sdx_scheduler_begin_index(const sdx_scheduler_t *sch);
/* diffusers' get_timesteps(num_inference_steps, strength) for img2img:
   returns the first index t_start * order (and sets it as begin index).
   Call after set_timesteps. */
int sdx_scheduler_strength_begin(sdx_scheduler_t *sch, double strength);

/* Ensemble of experts (SDXL base + refiner), diffusers' discrete cut at
   round(T - frac * T):
   denoising_end: how many model calls from index 0 the base runs (the
   timesteps >= the cutoff); denoising_start: the first index the refiner
   runs (the timesteps < the cutoff, widened by one for 2nd-order schedulers
   so a Heun/KDPM2 pair is never split), also set as begin index. -1 with
   sdx_last_error() when frac is not in (0, 1) or no step is left. */
int sdx_scheduler_denoising_end_count(const sdx_scheduler_t *sch, double denoising_end);
int sdx_scheduler_denoising_start_begin(sdx_scheduler_t *sch, double denoising_start);

/* Input scaling for model call i (x / sqrt(sigma^2 + 1) for the sigma-based
   schedulers, identity for the others). *out is new (owned per S). */
int sdx_scheduler_scale_model_input(sdx_scheduler_t *sch, sdx_scope_t *S, sdx_tensor_t **out,
                                    const sdx_tensor_t *sample, int i);

/* One scheduler step for model call i: *prev = the sample to feed call i+1.
   gen is the pipeline's generator (may be NULL only for schedulers that draw
   nothing). *prev is new (owned per S) and has model_output's dtype. */
int sdx_scheduler_step(sdx_scheduler_t *sch, sdx_scope_t *S, sdx_tensor_t **prev,
                       const sdx_tensor_t *model_output, int i, const sdx_tensor_t *sample,
                       sdx_generator_t *gen);

/* Noise `original` to the level of timestep index i (diffusers add_noise
   with timesteps[i], as img2img does with timesteps[begin]). */
int sdx_scheduler_add_noise(sdx_scheduler_t *sch, sdx_scope_t *S, sdx_tensor_t **out,
                            const sdx_tensor_t *original, const sdx_tensor_t *noise, int i);

/* Tests and previews: called with every noise tensor a step draws (borrowed
   for the duration of the call). NULL removes the hook. */
typedef void (*sdx_scheduler_noise_fn)(void *ctx, const sdx_tensor_t *noise);
void sdx_scheduler_set_noise_hook(sdx_scheduler_t *sch, sdx_scheduler_noise_fn fn, void *ctx);
/* Number of noise tensors drawn since set_timesteps. */
int sdx_scheduler_draw_count(const sdx_scheduler_t *sch);

#endif /* SDX_SCHEDULER_H */
