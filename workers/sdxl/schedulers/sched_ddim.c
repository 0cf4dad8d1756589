/*  sched_ddim.c - DDIMScheduler and DDPMScheduler of diffusers 0.27.2: the
    alphas_cumprod-based samplers with integer timesteps. DDIM draws noise
    only with eta > 0; DDPM draws one tensor per step while t > 0. Scalars
    follow diffusers' float32 tensor arithmetic on alphas_cumprod. */
#include "sdx_sched_impl.h"

#include <math.h>
#include <stdlib.h>

int sdx_sched_ddim_set_timesteps(sdx_scheduler_t *s, int n)
{
    if (n > s->cfg.num_train_timesteps)
        return sdx_set_error("scheduler %s: num_inference_steps %d > num_train_timesteps %d",
                             s->cls->name, n, s->cfg.num_train_timesteps);
    double *ts = sdx_sched_spaced_timesteps(s, n, false);
    if (!ts)
        return -1;
    for (int i = 0; i < s->n_timesteps; i++)
        if (ts[i] < 0 || ts[i] >= s->T) {
            double bad = ts[i];
            free(ts);
            return sdx_set_error("scheduler %s: timestep %g outside [0, %d) (steps_offset?)",
                                 s->cls->name, bad, s->T);
        }
    sdx_sched_set_tables(s, ts, s->n_timesteps, NULL, 0);
    s->init_noise_sigma = 1.0f;
    return 0;
}

/* x0 and eps predictions from the model output (DDIM's three parametrisations). */
static int s_predict(const sdx_scheduler_t *s, sdx_scope_t *L, const sdx_tensor_t *x,
                     const sdx_tensor_t *eps, float ac_t, sdx_tensor_t **x0, sdx_tensor_t **pe)
{
    float beta_t = 1.0f - ac_t;
    float sa = sqrtf(ac_t), sb = sqrtf(beta_t);
    const char *pt = s->cfg.prediction_type;
    sdx_tensor_t *tmp;
    if (sdx_sched_is(pt, "epsilon")) {
        if (sdx_add_scaled(L, &tmp, x, eps, -(double)sb) != 0 || sdx_div_scalar(L, x0, tmp, sa))
            return -1;
        return pe ? sdx_alias(L, pe, eps) : 0;
    }
    if (sdx_sched_is(pt, "sample")) {
        if (sdx_alias(L, x0, eps) != 0)
            return -1;
        if (!pe)
            return 0;
        if (sdx_add_scaled(L, &tmp, x, *x0, -(double)sa) != 0)
            return -1;
        return sdx_div_scalar(L, pe, tmp, sb);
    }
    /* v_prediction */
    if (sdx_lincomb(L, x0, sa, x, -(double)sb, eps) != 0)
        return -1;
    return pe ? sdx_lincomb(L, pe, sa, eps, sb, x) : 0;
}

int sdx_sched_ddim_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *x, sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *x0, *pe, *prev, *noise;
    if (!L)
        return -1;
    int t = (int)s->timesteps[i];
    int prev_t = t - s->cfg.num_train_timesteps / s->num_inference_steps;
    float ac_t = s->alphas_cumprod[t];
    float ac_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    SDX_TRY(s_predict(s, L, x, eps, ac_t, &x0, &pe));
    if (s->cfg.clip_sample)
        SDX_TRY(sdx_clamp(L, &x0, x0, -s->cfg.clip_sample_range, s->cfg.clip_sample_range));
    float beta_t = 1.0f - ac_t, beta_prev = 1.0f - ac_prev;
    float variance = (beta_prev / beta_t) * (1.0f - ac_t / ac_prev);
    float std = (float)s->eta * sqrtf(variance);
    float dir = sqrtf(1.0f - ac_prev - std * std);
    SDX_TRY(sdx_lincomb(L, &prev, sqrtf(ac_prev), x0, dir, pe));
    if (s->eta > 0) {
        SDX_TRY(sdx_sched_randn(s, L, &noise, eps, sdx_tensor_dtype(eps), gen));
        SDX_TRY(sdx_add_scaled(L, &prev, prev, noise, std));
    }
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}

int sdx_sched_ddpm_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *x, sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *x0, *prev, *noise;
    if (!L)
        return -1;
    const char *vt = s->cfg.variance_type;
    if (!sdx_sched_is(vt, "fixed_small") && !sdx_sched_is(vt, "fixed_small_log") &&
        !sdx_sched_is(vt, "fixed_large")) {
        /* learned variances need a 2x-channel model; diffusers' fixed_large_log
           takes the square root of a log and yields NaN */
        sdx_set_error("scheduler %s: variance_type '%s' is not supported (fixed_small, "
                      "fixed_small_log, fixed_large)",
                      s->cls->name, vt);
        goto fail;
    }
    int t = (int)s->timesteps[i];
    int prev_t = t - s->cfg.num_train_timesteps / s->num_inference_steps;
    float ac_t = s->alphas_cumprod[t];
    float ac_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : 1.0f;
    float beta_t = 1.0f - ac_t, beta_prev = 1.0f - ac_prev;
    float cur_alpha = ac_t / ac_prev, cur_beta = 1.0f - cur_alpha;
    SDX_TRY(s_predict(s, L, x, eps, ac_t, &x0, NULL));
    if (s->cfg.clip_sample)
        SDX_TRY(sdx_clamp(L, &x0, x0, -s->cfg.clip_sample_range, s->cfg.clip_sample_range));
    float c_x0 = (sqrtf(ac_prev) * cur_beta) / beta_t;
    float c_x = sqrtf(cur_alpha) * beta_prev / beta_t;
    SDX_TRY(sdx_lincomb(L, &prev, c_x0, x0, c_x, x));
    if (t > 0) {
        SDX_TRY(sdx_sched_randn(s, L, &noise, eps, sdx_tensor_dtype(eps), gen));
        /* _get_variance(t), then the per-type use in step() */
        float var = (1.0f - ac_prev) / (1.0f - ac_t) * cur_beta;
        if (var < 1e-20f)
            var = 1e-20f;
        float scale;
        if (sdx_sched_is(vt, "fixed_small"))
            scale = sqrtf(var);
        else if (sdx_sched_is(vt, "fixed_small_log"))
            scale = expf(0.5f * expf(0.5f * logf(var)));
        else
            scale = sqrtf(cur_beta); /* fixed_large */
        SDX_TRY(sdx_add_scaled(L, &prev, prev, noise, scale));
    }
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}
