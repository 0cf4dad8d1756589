/*  sdx_sched_impl.h - what the scheduler families share inside the engine:
    the resolved configuration, the scheduler object, the per-class table row
    and the numeric helpers that reproduce diffusers' numpy/torch table math.
    Not a public header: the pipeline uses sdx_scheduler.h only. */
#ifndef SDX_SCHED_IMPL_H
#define SDX_SCHED_IMPL_H

#include "sdx_scheduler.h"

#include <stdbool.h>
#include <stdint.h>

#define SDX_SCHED_STR 32
#define SDX_SCHED_MAX_ORDER 3
#define SDX_SCHED_MAX_BETAS 4096

/* Every configuration key any supported class knows (diffusers names). */
typedef struct {
    int num_train_timesteps;
    double beta_start, beta_end;
    char beta_schedule[SDX_SCHED_STR];
    int n_trained_betas; /* 0: none */
    double *trained_betas;
    char prediction_type[SDX_SCHED_STR];
    char timestep_spacing[SDX_SCHED_STR];
    int steps_offset;
    bool clip_sample;
    double clip_sample_range;
    bool set_alpha_to_one;
    bool skip_prk_steps;
    bool thresholding;
    double dynamic_thresholding_ratio;
    double sample_max_value;
    bool rescale_betas_zero_snr;
    char interpolation_type[SDX_SCHED_STR];
    bool use_karras_sigmas;
    double sigma_min, sigma_max; /* NAN: none */
    char timestep_type[SDX_SCHED_STR];
    char variance_type[SDX_SCHED_STR]; /* "" = None */
    int solver_order;
    char algorithm_type[SDX_SCHED_STR];
    char solver_type[SDX_SCHED_STR];
    bool lower_order_final;
    bool euler_at_final;
    bool use_lu_lambdas;
    char final_sigmas_type[SDX_SCHED_STR];
    double lambda_min_clipped;
    bool predict_x0;
    int n_disable_corrector;
    int disable_corrector[64];
    char solver_p[SDX_SCHED_STR]; /* "" = None (a nested solver is not supported) */
    int original_inference_steps;
    double timestep_scaling;
} sdx_sched_config_t;

typedef struct sdx_sched_class sdx_sched_class_t;

struct sdx_scheduler {
    const sdx_sched_class_t *cls;
    sdx_sched_config_t cfg;
    double eta;

    /* training tables, float32 as torch keeps them */
    int T;
    float *betas, *alphas, *alphas_cumprod;
    float final_alpha_cumprod;

    /* inference tables */
    int num_inference_steps; /* as diffusers records it */
    int requested_steps;     /* what set_timesteps was given */
    int n_timesteps;
    double *timesteps; /* values (int64 or float32 semantics per class) */
    int n_sigmas;
    float *sigmas; /* NULL for alpha-based schedulers */
    float *aux[4]; /* family tables (sigmas_interpol, sigmas_up, ...) */
    int n_aux;     /* their length */
    float init_noise_sigma;

    int step_index;  /* -1: not started */
    int begin_index; /* -1: none */

    /* history, caller-owned tensors kept between steps */
    sdx_tensor_t *hist[SDX_SCHED_MAX_ORDER + 2];
    int n_hist;
    sdx_tensor_t *saved_sample; /* Heun/KDPM2 first-order sample, UniPC last_sample, ... */
    double saved_dt;
    bool has_saved_dt;
    int lower_order_nums;
    int counter;     /* PNDM */
    int this_order;  /* UniPC */
    int *order_list; /* DPM singlestep */

    sdx_scheduler_noise_fn noise_fn;
    void *noise_ctx;
    int draws;
};

/* One row of the class table. */
struct sdx_sched_class {
    const char *name;     /* diffusers class name */
    const char *defaults; /* JSON of class defaults that differ from the common ones */
    const char *keys;     /* space-separated config keys the class knows */
    int order;            /* diffusers' `order` attribute */
    bool int_timesteps;   /* timesteps kept as int64 */
    int (*set_timesteps)(sdx_scheduler_t *s, int n);
    int (*scale)(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x,
                 int i);
    int (*step)(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *eps,
                int i, const sdx_tensor_t *x, sdx_generator_t *gen);
    int (*add_noise)(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x0,
                     const sdx_tensor_t *noise, int i);
};

/* ---- family entry points (one file per family) */
/* sched_euler.c */
/* Float32 timesteps per timestep_spacing, sigmas interpolated from the
   training sigmas (+ a final 0), Karras sigmas when configured (karras_mode
   0: never, 1: timesteps from _sigma_to_t, 2: the same rounded), and the
   init_noise_sigma: the tables of Euler, Euler a, LMS, Heun and KDPM2. */
int sdx_sched_sigma_tables(sdx_scheduler_t *s, int n, int karras_mode);
int sdx_sched_euler_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_euler_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                         sdx_generator_t *gen);
int sdx_sched_euler_a_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_euler_a_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                           sdx_generator_t *gen);
/* sched_lms.c */
int sdx_sched_lms_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_lms_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                       const sdx_tensor_t *eps, int i, const sdx_tensor_t *x, sdx_generator_t *gen);
/* sched_kdiff2.c: Heun, KDPM2, KDPM2 ancestral */
int sdx_sched_heun_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_heun_scale(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *x, int i);
int sdx_sched_heun_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                        sdx_generator_t *gen);
int sdx_sched_kdpm2_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_kdpm2_scale(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                          const sdx_tensor_t *x, int i);
int sdx_sched_kdpm2_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                         sdx_generator_t *gen);
int sdx_sched_kdpm2a_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_kdpm2a_scale(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *x, int i);
int sdx_sched_kdpm2a_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                          const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                          sdx_generator_t *gen);
/* sched_ddim.c: DDIM, DDPM */
int sdx_sched_ddim_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_ddim_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                        sdx_generator_t *gen);
int sdx_sched_ddpm_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                        sdx_generator_t *gen);
/* sched_pndm.c */
int sdx_sched_pndm_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_pndm_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                        sdx_generator_t *gen);
/* sched_lcm.c */
int sdx_sched_lcm_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_lcm_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                       const sdx_tensor_t *eps, int i, const sdx_tensor_t *x, sdx_generator_t *gen);
/* sched_dpm.c: DPM-Solver multistep / singlestep, DEIS */
int sdx_sched_dpm_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_dpm_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                       const sdx_tensor_t *eps, int i, const sdx_tensor_t *x, sdx_generator_t *gen);
int sdx_sched_dpmss_set_timesteps(sdx_scheduler_t *s, int n);
int sdx_sched_dpmss_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                         sdx_generator_t *gen);
int sdx_sched_deis_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                        sdx_generator_t *gen);
/* sched_unipc.c */
int sdx_sched_unipc_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                         sdx_generator_t *gen);

/* ---- shared implementations (sdx_sched_common.c) */
/* scale_model_input for sigma schedulers: x / sqrt(sigmas[i]^2 + 1). */
int sdx_sched_scale_sigma(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                          const sdx_tensor_t *x, int i);
/* Identity scaling (a new handle). */
int sdx_sched_scale_identity(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                             const sdx_tensor_t *x, int i);
/* add_noise variants: x0 + noise * sigmas[i]; sqrt(ac[t]) x0 + sqrt(1-ac[t]) noise;
   alpha_t x0 + sigma_t noise from sigmas[i]. */
int sdx_sched_add_noise_sigma(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                              const sdx_tensor_t *x0, const sdx_tensor_t *noise, int i);
int sdx_sched_add_noise_alpha(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                              const sdx_tensor_t *x0, const sdx_tensor_t *noise, int i);
int sdx_sched_add_noise_vp(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *x0, const sdx_tensor_t *noise, int i);

/* x0 prediction of the sigma (k-diffusion) schedulers from the model output:
   epsilon x - sigma*eps, v_prediction eps*(-sigma/sqrt(sigma^2+1)) + x/(sigma^2+1),
   sample eps. New tensor in L. */
int sdx_sched_pred_x0_sigma(const sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                            const sdx_tensor_t *x, const sdx_tensor_t *eps, float sigma);
/* init_noise_sigma of the sigma schedulers: max sigma, or sqrt(max^2+1) for
   "leading" spacing (float32). */
float sdx_sched_sigma_init_noise(const sdx_scheduler_t *s);

/* Build betas/alphas/alphas_cumprod from the config (torch float32 math). */
int sdx_sched_make_betas(sdx_scheduler_t *s, bool zero_snr_floor);
/* sigmas of the training schedule ((1-ac)/ac)^0.5 in float32 (n = T). */
float *sdx_sched_train_sigmas(const sdx_scheduler_t *s);

/* _sigma_to_alpha_sigma_t of the VP-form schedulers (DPM, DEIS, UniPC):
   alpha = 1/sqrt(sigma^2+1), sigma_t = sigma*alpha, and
   lambda = log(alpha) - log(sigma_t), all float32 as diffusers computes them
   on 0-d tensors. */
typedef struct {
    float alpha, sigma, lambda;
} sdx_sched_ast_t;
sdx_sched_ast_t sdx_sched_ast(float sigma);

/* numpy helpers in float64 */
void sdx_np_linspace(double *out, double start, double stop, int num);
double sdx_np_interp(double x, const float *fp, int n); /* xp = 0..n-1 */
double sdx_np_round(double x);                          /* half to even */
/* EulerDiscreteScheduler._sigma_to_t with numpy 1.x promotion. */
double sdx_np_sigma_to_t(double sigma, const float *log_sigmas, int n);
/* The same computed in torch float32 (KDPM2 interpolated timesteps). */
float sdx_f32_sigma_to_t(float sigma, const float *log_sigmas, int n);
/* _convert_to_karras: rho 7 between sigma_min and sigma_max (float64). */
void sdx_sched_karras(double *out, int n, double sigma_min, double sigma_max);

/* Replace the table arrays (takes ownership, frees the old ones). */
void sdx_sched_set_tables(sdx_scheduler_t *s, double *timesteps, int n_timesteps, float *sigmas,
                          int n_sigmas);
/* Free history tensors and reset the step state. */
void sdx_sched_reset_state(sdx_scheduler_t *s);
/* Spaced integer timesteps shared by the alpha schedulers: "linspace",
   "leading", "trailing" with N entries (DDIM/DDPM style), descending.
   Returns a new array or NULL (error set). */
double *sdx_sched_spaced_timesteps(sdx_scheduler_t *s, int n, bool as_float32);
/* DPM-style spacing over N+1 points dropping the last (DPM, UniPC, DEIS). */
double *sdx_sched_spaced_timesteps_dpm(sdx_scheduler_t *s, int n, int last_timestep);

/* Draw a noise tensor like randn_tensor(shape of like, dtype, device). */
int sdx_sched_randn(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                    const sdx_tensor_t *like, sdx_dtype_t dt, sdx_generator_t *gen);
/* Move a tensor computed in scope L out to the caller (S may be NULL). */
int sdx_sched_give(sdx_scope_t *L, sdx_scope_t *S, sdx_tensor_t *t, sdx_tensor_t **out);
/* Keep a caller-owned alias of t in the history ring (drops the oldest when
   `keep` entries are already held). */
int sdx_sched_push_hist(sdx_scheduler_t *s, const sdx_tensor_t *t, int keep);
/* Store a caller-owned alias of t as saved_sample (NULL clears it). */
int sdx_sched_save_sample(sdx_scheduler_t *s, const sdx_tensor_t *t);

/* Config helpers */
bool sdx_sched_is(const char *a, const char *b);

#endif
