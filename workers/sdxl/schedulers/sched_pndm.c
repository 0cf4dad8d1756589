/*  sched_pndm.c - PNDMScheduler of diffusers 0.27.2 in its PLMS form
    (skip_prk_steps, what Stable Diffusion configs use): N+1 model calls, the
    second one repeating the first timestep, and a linear multistep over up
    to four past model outputs. The Runge-Kutta warm-up (skip_prk_steps =
    false) is not implemented and is refused at set_timesteps. */
#include "sdx_sched_impl.h"

#include <math.h>
#include <stdlib.h>

int sdx_sched_pndm_set_timesteps(sdx_scheduler_t *s, int n)
{
    const sdx_sched_config_t *c = &s->cfg;
    if (!c->skip_prk_steps)
        return sdx_set_error("scheduler %s: the PRK warm-up (skip_prk_steps=false) is not "
                             "supported; use skip_prk_steps=true (PLMS)",
                             s->cls->name);
    int T = c->num_train_timesteps;
    double *asc = malloc(sizeof(double) * (size_t)n);
    double *ts = malloc(sizeof(double) * (size_t)(n + 1));
    if (!asc || !ts) {
        free(asc);
        free(ts);
        return sdx_set_error("scheduler: out of memory");
    }
    /* self._timesteps, ascending */
    if (sdx_sched_is(c->timestep_spacing, "linspace")) {
        sdx_np_linspace(asc, 0, T - 1, n);
        for (int i = 0; i < n; i++)
            asc[i] = sdx_np_round(asc[i]);
    } else if (sdx_sched_is(c->timestep_spacing, "leading")) {
        for (int i = 0; i < n; i++)
            asc[i] = (double)((int64_t)i * (T / n) + c->steps_offset);
    } else if (sdx_sched_is(c->timestep_spacing, "trailing")) {
        double ratio = (double)T / n, delta = ((double)T - ratio) - (double)T;
        int len = (int)ceil((double)T / ratio);
        if (len != n) {
            free(asc);
            free(ts);
            return sdx_set_error("scheduler %s: trailing spacing gave %d timesteps for %d steps",
                                 s->cls->name, len, n);
        }
        for (int i = 0; i < n; i++)
            asc[n - 1 - i] = sdx_np_round((double)T + (double)i * delta) - 1;
    } else {
        free(asc);
        free(ts);
        return sdx_set_error("scheduler %s: timestep_spacing '%s' is not supported", s->cls->name,
                             c->timestep_spacing);
    }
    /* plms = concat(_timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:])[::-1] */
    int k = 0;
    ts[k++] = asc[n - 1];
    if (n >= 2)
        ts[k++] = asc[n - 2];
    for (int i = n - 2; i >= 0; i--)
        ts[k++] = asc[i];
    free(asc);
    sdx_sched_set_tables(s, ts, k, NULL, 0);
    s->init_noise_sigma = 1.0f;
    return 0;
}

int sdx_sched_pndm_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *sample,
                        sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *mo = NULL, *a, *prev, *m;
    const sdx_tensor_t *x = sample;
    if (!L)
        return -1;
    int step = s->cfg.num_train_timesteps / s->num_inference_steps;
    int t = (int)s->timesteps[i];
    int prev_t = t - step;
    /* ets lives in hist[0..3] (newest last); saved_sample is cur_sample */
    sdx_tensor_t **ets = s->hist;
    if (s->counter != 1) {
        SDX_TRY(sdx_sched_push_hist(s, eps, 4));
    } else {
        prev_t = t;
        t = t + step;
    }
    int n_ets = 0;
    for (int k = 0; k < 4; k++)
        n_ets += ets[k] != NULL;
    if (n_ets == 1 && s->counter == 0) {
        SDX_TRY(sdx_alias(L, &mo, eps));
        SDX_TRY(sdx_sched_save_sample(s, x));
    } else if (n_ets == 1 && s->counter == 1) {
        SDX_TRY(sdx_add(L, &a, eps, ets[3]));
        SDX_TRY(sdx_div_scalar(L, &mo, a, 2.0));
        SDX_TRY(sdx_alias(L, &m, s->saved_sample));
        x = m;
        sdx_sched_save_sample(s, NULL);
    } else if (n_ets == 2) {
        SDX_TRY(sdx_lincomb(L, &a, 3.0, ets[3], -1.0, ets[2]));
        SDX_TRY(sdx_div_scalar(L, &mo, a, 2.0));
    } else if (n_ets == 3) {
        SDX_TRY(sdx_lincomb(L, &a, 23.0, ets[3], -16.0, ets[2]));
        SDX_TRY(sdx_add_scaled(L, &a, a, ets[1], 5.0));
        SDX_TRY(sdx_div_scalar(L, &mo, a, 12.0));
    } else {
        SDX_TRY(sdx_lincomb(L, &a, 55.0, ets[3], -59.0, ets[2]));
        SDX_TRY(sdx_add_scaled(L, &a, a, ets[1], 37.0));
        SDX_TRY(sdx_add_scaled(L, &a, a, ets[0], -9.0));
        SDX_TRY(sdx_mul_scalar(L, &mo, a, 1.0 / 24.0));
    }
    /* _get_prev_sample */
    if (t < 0 || t >= s->T || prev_t >= s->T) {
        sdx_set_error("scheduler %s: timestep %d outside the training range", s->cls->name, t);
        goto fail;
    }
    float ac_t = s->alphas_cumprod[t];
    float ac_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    float beta_t = 1.0f - ac_t, beta_prev = 1.0f - ac_prev;
    if (sdx_sched_is(s->cfg.prediction_type, "v_prediction"))
        SDX_TRY(sdx_lincomb(L, &mo, sqrtf(ac_t), mo, sqrtf(beta_t), x));
    else if (!sdx_sched_is(s->cfg.prediction_type, "epsilon")) {
        sdx_set_error("scheduler %s: prediction_type '%s' is not supported", s->cls->name,
                      s->cfg.prediction_type);
        goto fail;
    }
    float sample_coeff = sqrtf(ac_prev / ac_t);
    float denom = ac_t * sqrtf(beta_prev) + sqrtf(ac_t * beta_t * ac_prev);
    float c_mo = -(ac_prev - ac_t) / denom;
    SDX_TRY(sdx_lincomb(L, &prev, sample_coeff, x, c_mo, mo));
    s->counter++;
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}
