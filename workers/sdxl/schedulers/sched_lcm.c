/*  sched_lcm.c - LCMScheduler of diffusers 0.27.2 (latent consistency
    models): timesteps picked from the `original_inference_steps` skipping
    schedule, the consistency boundary scalings c_skip/c_out, and fresh
    noise injected after every step but the last. */
#include "sdx_sched_impl.h"

#include <math.h>
#include <stdlib.h>

int sdx_sched_lcm_set_timesteps(sdx_scheduler_t *s, int n)
{
    const sdx_sched_config_t *c = &s->cfg;
    int orig = c->original_inference_steps;
    if (orig < 1)
        return sdx_set_error("scheduler %s: original_inference_steps must be >= 1", s->cls->name);
    int k = c->num_train_timesteps / orig;
    int len = orig; /* int(original_steps * strength), strength 1 */
    if (n > orig)
        return sdx_set_error("scheduler %s: num_inference_steps %d > original_inference_steps "
                             "%d",
                             s->cls->name, n, orig);
    if (len / n < 1)
        return sdx_set_error("scheduler %s: too many inference steps for the skipping schedule",
                             s->cls->name);
    double *ts = malloc(sizeof(double) * (size_t)n);
    double *idx = malloc(sizeof(double) * (size_t)n);
    if (!ts || !idx) {
        free(ts);
        free(idx);
        return sdx_set_error("scheduler: out of memory");
    }
    /* lcm_origin_timesteps = (1..len) * k - 1, reversed; indices =
       floor(np.linspace(0, len, n, endpoint=False)) */
    double step = (double)len / n;
    for (int i = 0; i < n; i++)
        idx[i] = (double)i * step;
    for (int i = 0; i < n; i++) {
        int j = (int)floor(idx[i]);
        ts[i] = (double)((int64_t)(len - j) * k - 1);
    }
    free(idx);
    sdx_sched_set_tables(s, ts, n, NULL, 0);
    s->init_noise_sigma = 1.0f;
    return 0;
}

int sdx_sched_lcm_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                       const sdx_tensor_t *eps, int i, const sdx_tensor_t *x, sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *x0, *tmp, *den, *prev, *noise;
    if (!L)
        return -1;
    int t = (int)s->timesteps[i];
    int prev_t = i + 1 < s->n_timesteps ? (int)s->timesteps[i + 1] : t;
    float ac_t = s->alphas_cumprod[t];
    float ac_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    float beta_t = 1.0f - ac_t, beta_prev = 1.0f - ac_prev;
    /* get_scalings_for_boundary_condition_discrete */
    float sigma_data = 0.5f;
    float st = (float)t * (float)s->cfg.timestep_scaling;
    float c_skip = sigma_data * sigma_data / (st * st + sigma_data * sigma_data);
    float c_out = st / sqrtf(st * st + sigma_data * sigma_data);
    const char *pt = s->cfg.prediction_type;
    if (sdx_sched_is(pt, "epsilon")) {
        SDX_TRY(sdx_add_scaled(L, &tmp, x, eps, -(double)sqrtf(beta_t)));
        SDX_TRY(sdx_div_scalar(L, &x0, tmp, sqrtf(ac_t)));
    } else if (sdx_sched_is(pt, "sample")) {
        SDX_TRY(sdx_alias(L, &x0, eps));
    } else {
        SDX_TRY(sdx_lincomb(L, &x0, sqrtf(ac_t), x, -(double)sqrtf(beta_t), eps));
    }
    if (s->cfg.clip_sample)
        SDX_TRY(sdx_clamp(L, &x0, x0, -s->cfg.clip_sample_range, s->cfg.clip_sample_range));
    SDX_TRY(sdx_lincomb(L, &den, c_out, x0, c_skip, x));
    if (i != s->num_inference_steps - 1) {
        SDX_TRY(sdx_sched_randn(s, L, &noise, eps, sdx_tensor_dtype(den), gen));
        SDX_TRY(sdx_lincomb(L, &prev, sqrtf(ac_prev), den, sqrtf(beta_prev), noise));
    } else {
        SDX_TRY(sdx_alias(L, &prev, den));
    }
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}
