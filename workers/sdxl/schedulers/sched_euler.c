/*  sched_euler.c - EulerDiscreteScheduler (with its Karras variant) and
    EulerAncestralDiscreteScheduler, after diffusers 0.27.2 / k-diffusion.
    Both step in float32 (diffusers upcasts the sample) and both draw one
    noise tensor per step: Euler draws it even though s_churn = 0 leaves it
    unused, which keeps the pipeline's generator in step with diffusers. */
#include "sdx_sched_impl.h"

#include <math.h>
#include <stdlib.h>

int sdx_sched_sigma_tables(sdx_scheduler_t *s, int n, int karras_mode)
{
    bool allow_karras = karras_mode != 0;
    const sdx_sched_config_t *c = &s->cfg;
    double *ts = sdx_sched_spaced_timesteps(s, n, true);
    if (!ts)
        return -1;
    int nt = s->n_timesteps;
    float *train = sdx_sched_train_sigmas(s);
    float *logs = malloc(sizeof(float) * (size_t)s->T);
    double *sg = malloc(sizeof(double) * (size_t)nt);
    float *sigmas = malloc(sizeof(float) * (size_t)(nt + 1));
    if (!train || !logs || !sg || !sigmas) {
        free(ts);
        free(train);
        free(logs);
        free(sg);
        free(sigmas);
        return sdx_set_error("scheduler: out of memory");
    }
    for (int i = 0; i < s->T; i++)
        logs[i] = logf(train[i]);
    if (!sdx_sched_is(c->interpolation_type, "linear")) {
        free(ts);
        free(train);
        free(logs);
        free(sg);
        free(sigmas);
        return sdx_set_error("scheduler %s: interpolation_type '%s' is not supported (linear)",
                             s->cls->name, c->interpolation_type);
    }
    for (int i = 0; i < nt; i++)
        sg[i] = sdx_np_interp(ts[i], train, s->T);
    if (allow_karras && c->use_karras_sigmas) {
        double smin = isnan(c->sigma_min) ? sg[nt - 1] : c->sigma_min;
        double smax = isnan(c->sigma_max) ? sg[0] : c->sigma_max;
        sdx_sched_karras(sg, nt, smin, smax);
        for (int i = 0; i < nt; i++)
            ts[i] = karras_mode == 2 ? sdx_np_round(sdx_np_sigma_to_t(sg[i], logs, s->T))
                                     : (double)(float)sdx_np_sigma_to_t(sg[i], logs, s->T);
    }
    for (int i = 0; i < nt; i++)
        sigmas[i] = (float)sg[i];
    sigmas[nt] = 0.0f;
    if (sdx_sched_is(c->timestep_type, "continuous") &&
        sdx_sched_is(c->prediction_type, "v_prediction")) {
        for (int i = 0; i < nt; i++)
            ts[i] = (double)(0.25f * logf(sigmas[i]));
    }
    free(train);
    free(logs);
    free(sg);
    sdx_sched_set_tables(s, ts, nt, sigmas, nt + 1);
    s->init_noise_sigma = sdx_sched_sigma_init_noise(s);
    return 0;
}

int sdx_sched_euler_set_timesteps(sdx_scheduler_t *s, int n)
{
    return sdx_sched_sigma_tables(s, n, 1);
}

int sdx_sched_euler_a_set_timesteps(sdx_scheduler_t *s, int n)
{
    return sdx_sched_sigma_tables(s, n, 0);
}

int sdx_sched_euler_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, int i, const sdx_tensor_t *sample,
                         sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *x, *noise, *pred, *d, *der, *prev, *res;
    if (!L)
        return -1;
    float sigma = s->sigmas[i];
    float sigma_hat = sigma; /* gamma = 0: s_churn defaults to 0 */
    SDX_TRY(sdx_to_dtype(L, &x, sample, SDX_F32));
    SDX_TRY(sdx_sched_randn(s, L, &noise, eps, sdx_tensor_dtype(eps), gen));
    SDX_TRY(sdx_sched_pred_x0_sigma(s, L, &pred, x, eps, sigma_hat));
    SDX_TRY(sdx_sub(L, &d, x, pred));
    SDX_TRY(sdx_div_scalar(L, &der, d, sigma_hat));
    float dt = s->sigmas[i + 1] - sigma_hat;
    SDX_TRY(sdx_add_scaled(L, &prev, x, der, dt));
    SDX_TRY(sdx_to_dtype(L, &res, prev, sdx_tensor_dtype(eps)));
    SDX_TRY(sdx_sched_give(L, S, res, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}

int sdx_sched_euler_a_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *eps, int i, const sdx_tensor_t *sample,
                           sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *x, *noise, *pred, *d, *der, *prev, *prev2, *res;
    if (!L)
        return -1;
    float sigma = s->sigmas[i];
    SDX_TRY(sdx_to_dtype(L, &x, sample, SDX_F32));
    SDX_TRY(sdx_sched_pred_x0_sigma(s, L, &pred, x, eps, sigma));
    float sf = s->sigmas[i], st = s->sigmas[i + 1];
    float sf2 = sf * sf, st2 = st * st;
    float sigma_up = sqrtf(st2 * (sf2 - st2) / sf2);
    float sigma_down = sqrtf(st2 - sigma_up * sigma_up);
    SDX_TRY(sdx_sub(L, &d, x, pred));
    SDX_TRY(sdx_div_scalar(L, &der, d, sigma));
    float dt = sigma_down - sigma;
    SDX_TRY(sdx_add_scaled(L, &prev, x, der, dt));
    SDX_TRY(sdx_sched_randn(s, L, &noise, eps, sdx_tensor_dtype(eps), gen));
    SDX_TRY(sdx_add_scaled(L, &prev2, prev, noise, sigma_up));
    SDX_TRY(sdx_to_dtype(L, &res, prev2, sdx_tensor_dtype(eps)));
    SDX_TRY(sdx_sched_give(L, S, res, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}
