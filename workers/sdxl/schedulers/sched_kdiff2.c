/*  sched_kdiff2.c - the second-order k-diffusion samplers of diffusers
    0.27.2: HeunDiscreteScheduler, KDPM2DiscreteScheduler and
    KDPM2AncestralDiscreteScheduler. Each makes two model calls per step, so
    their timestep tables hold 2N-1 entries and `order` is 2; the state
    between the two calls (first-order sample, dt, derivative) lives in the
    scheduler. The interpolated sigmas and timesteps of KDPM2 are computed in
    float32 as torch does. */
#include "sdx_sched_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x[0], x[1..n-1-tail] twice each, x[n-1]  (torch.cat with repeat_interleave) */
static float *s_expand(const float *x, int n, int tail, int *out_n)
{
    int m = 2 * (n - tail);
    float *r = malloc(sizeof(float) * (size_t)m);
    if (!r)
        return NULL;
    int k = 0;
    r[k++] = x[0];
    for (int i = 1; i < n - tail; i++) {
        r[k++] = x[i];
        r[k++] = x[i];
    }
    r[k++] = x[n - 1];
    *out_n = k;
    return r;
}

/* torch lerp(a, b, 0.5) takes the `end - (end - self) * (1 - w)` branch */
static float s_lerp_half(float a, float b)
{
    return b - (b - a) * 0.5f;
}

static float *s_log_train_sigmas(const sdx_scheduler_t *s)
{
    float *logs = sdx_sched_train_sigmas(s);
    if (logs)
        for (int i = 0; i < s->T; i++)
            logs[i] = logf(logs[i]);
    return logs;
}

/* ---------------------------------------------------------------- Heun */

int sdx_sched_heun_set_timesteps(sdx_scheduler_t *s, int n)
{
    if (sdx_sched_sigma_tables(s, n, 1) != 0)
        return -1;
    int nt = s->n_timesteps, ns = 0;
    /* sigmas: [s0, s1, s1, ..., s_{N-1}, s_{N-1}, 0] */
    float *sg = s_expand(s->sigmas, nt + 1, 1, &ns);
    double *ts = malloc(sizeof(double) * (size_t)(2 * nt - 1));
    if (!sg || !ts) {
        free(sg);
        free(ts);
        return sdx_set_error("scheduler: out of memory");
    }
    int k = 0;
    ts[k++] = s->timesteps[0];
    for (int i = 1; i < nt; i++) {
        ts[k++] = s->timesteps[i];
        ts[k++] = s->timesteps[i];
    }
    sdx_sched_set_tables(s, ts, k, sg, ns);
    return 0;
}

int sdx_sched_heun_scale(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *x, int i)
{
    return sdx_sched_scale_sigma(s, S, out, x, i);
}

int sdx_sched_heun_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *sample,
                        sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *pred, *d, *der, *sum, *prev;
    const sdx_tensor_t *x = sample;
    if (!L)
        return -1;
    bool first = !s->has_saved_dt;
    if (!first && i < 1) {
        sdx_set_error("scheduler %s: step %d called out of order", s->cls->name, i);
        goto fail;
    }
    float sigma = first ? s->sigmas[i] : s->sigmas[i - 1];
    float sigma_next = first ? s->sigmas[i + 1] : s->sigmas[i];
    float sigma_hat = sigma;
    float sigma_input = first ? sigma_hat : sigma_next;
    SDX_TRY(sdx_sched_pred_x0_sigma(s, L, &pred, x, eps, sigma_input));
    if (s->cfg.clip_sample)
        SDX_TRY(sdx_clamp(L, &pred, pred, -s->cfg.clip_sample_range, s->cfg.clip_sample_range));
    SDX_TRY(sdx_sub(L, &d, x, pred));
    double dt;
    if (first) {
        SDX_TRY(sdx_div_scalar(L, &der, d, sigma_hat));
        dt = (double)(sigma_next - sigma_hat);
        SDX_TRY(sdx_sched_push_hist(s, der, 1));
        SDX_TRY(sdx_sched_save_sample(s, x));
        s->saved_dt = dt;
        s->has_saved_dt = true;
        SDX_TRY(sdx_add_scaled(L, &prev, x, der, dt));
    } else {
        SDX_TRY(sdx_div_scalar(L, &der, d, sigma_next));
        SDX_TRY(sdx_add(L, &sum, s->hist[0], der));
        SDX_TRY(sdx_div_scalar(L, &der, sum, 2.0));
        dt = s->saved_dt;
        SDX_TRY(sdx_add_scaled(L, &prev, s->saved_sample, der, dt));
        sdx_sched_push_hist(s, NULL, 1);
        sdx_sched_save_sample(s, NULL);
        s->has_saved_dt = false;
    }
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}

/* ---------------------------------------------------------------- KDPM2 */

enum { A_INTERPOL = 0, A_UP = 1, A_DOWN = 2 };

int sdx_sched_kdpm2_set_timesteps(sdx_scheduler_t *s, int n)
{
    if (sdx_sched_sigma_tables(s, n, 2) != 0)
        return -1;
    int N = s->n_timesteps;
    float *logs = s_log_train_sigmas(s);
    float *ip = malloc(sizeof(float) * (size_t)(N + 1));
    double *ts = malloc(sizeof(double) * (size_t)(2 * N - 1));
    float *sg = NULL, *ipx = NULL;
    int ns = 0, ni = 0;
    if (!logs || !ip || !ts)
        goto oom;
    const float *x = s->sigmas; /* N + 1 entries, the last 0 */
    for (int k = 0; k <= N; k++) {
        float prev = x[k == 0 ? N : k - 1]; /* sigmas.roll(1) */
        ip[k] = expf(s_lerp_half(logf(x[k]), logf(prev)));
    }
    sg = s_expand(x, N + 1, 0, &ns);
    ipx = s_expand(ip, N + 1, 0, &ni);
    if (!sg || !ipx)
        goto oom;
    int k = 0;
    ts[k++] = s->timesteps[0];
    for (int j = 1; j < N; j++) {
        ts[k++] = (double)sdx_f32_sigma_to_t(ip[j], logs, s->T);
        ts[k++] = s->timesteps[j];
    }
    free(logs);
    free(ip);
    sdx_sched_set_tables(s, ts, k, sg, ns);
    s->aux[A_INTERPOL] = ipx;
    s->n_aux = ni;
    return 0;
oom:
    free(logs);
    free(ip);
    free(ts);
    free(sg);
    free(ipx);
    return sdx_set_error("scheduler: out of memory");
}

int sdx_sched_kdpm2_scale(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                          const sdx_tensor_t *x, int i)
{
    if (i < 0 || i >= s->n_timesteps)
        return sdx_set_error("scheduler %s: step index %d out of range", s->cls->name, i);
    float sigma = s->saved_sample ? s->aux[A_INTERPOL][i] : s->sigmas[i];
    return sdx_div_scalar(S, out, x, sqrtf(sigma * sigma + 1.0f));
}

int sdx_sched_kdpm2_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                         sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *pred, *d, *der, *prev;
    if (!L)
        return -1;
    const float *ip = s->aux[A_INTERPOL];
    bool first = s->saved_sample == NULL;
    if (!first && i < 1) {
        sdx_set_error("scheduler %s: step %d called out of order", s->cls->name, i);
        goto fail;
    }
    float sigma = first ? s->sigmas[i] : s->sigmas[i - 1];
    float sigma_interpol = first ? ip[i + 1] : ip[i];
    float sigma_next = first ? s->sigmas[i + 1] : s->sigmas[i];
    float sigma_hat = sigma;
    float sigma_input = first ? sigma_hat : sigma_interpol;
    SDX_TRY(sdx_sched_pred_x0_sigma(s, L, &pred, x, eps, sigma_input));
    SDX_TRY(sdx_sub(L, &d, x, pred));
    if (first) {
        SDX_TRY(sdx_div_scalar(L, &der, d, sigma_hat));
        float dt = sigma_interpol - sigma_hat;
        SDX_TRY(sdx_sched_save_sample(s, x));
        SDX_TRY(sdx_add_scaled(L, &prev, x, der, dt));
    } else {
        SDX_TRY(sdx_div_scalar(L, &der, d, sigma_interpol));
        float dt = sigma_next - sigma_hat;
        SDX_TRY(sdx_add_scaled(L, &prev, s->saved_sample, der, dt));
        sdx_sched_save_sample(s, NULL);
    }
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}

/* ---------------------------------------------------------------- KDPM2 a */

int sdx_sched_kdpm2a_set_timesteps(sdx_scheduler_t *s, int n)
{
    if (sdx_sched_sigma_tables(s, n, 2) != 0)
        return -1;
    int N = s->n_timesteps;
    float *logs = s_log_train_sigmas(s);
    float *up = malloc(sizeof(float) * (size_t)(N + 1));
    float *down = malloc(sizeof(float) * (size_t)(N + 1));
    float *ip = malloc(sizeof(float) * (size_t)(N + 1));
    double *ts = malloc(sizeof(double) * (size_t)(2 * N - 1));
    float *sg = NULL, *ipx = NULL, *upx = NULL, *downx = NULL;
    int ns = 0, nx = 0;
    if (!logs || !up || !down || !ip || !ts)
        goto oom;
    const float *x = s->sigmas;
    for (int k = 0; k <= N; k++) {
        float nxt = k < N ? x[k + 1] : 0.0f;
        float s2 = x[k] * x[k], n2 = nxt * nxt;
        up[k] = sqrtf(n2 * (s2 - n2) / s2);
        down[k] = k < N ? sqrtf(n2 - up[k] * up[k]) : 0.0f;
    }
    for (int k = 0; k <= N; k++)
        ip[k] = k >= N - 1 ? 0.0f : expf(s_lerp_half(logf(x[k]), logf(down[k])));
    sg = s_expand(x, N + 1, 0, &ns);
    ipx = s_expand(ip, N + 1, 0, &nx);
    upx = s_expand(up, N + 1, 0, &nx);
    downx = s_expand(down, N + 1, 0, &nx);
    if (!sg || !ipx || !upx || !downx)
        goto oom;
    int k = 0;
    ts[k++] = s->timesteps[0];
    for (int j = 1; j < N; j++) {
        ts[k++] = (double)sdx_f32_sigma_to_t(ip[j - 1], logs, s->T);
        ts[k++] = s->timesteps[j];
    }
    free(logs);
    free(ip);
    free(up);
    free(down);
    sdx_sched_set_tables(s, ts, k, sg, ns);
    s->aux[A_INTERPOL] = ipx;
    s->aux[A_UP] = upx;
    s->aux[A_DOWN] = downx;
    s->n_aux = nx;
    return 0;
oom:
    free(logs);
    free(up);
    free(down);
    free(ip);
    free(ts);
    free(sg);
    free(ipx);
    free(upx);
    free(downx);
    return sdx_set_error("scheduler: out of memory");
}

int sdx_sched_kdpm2a_scale(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *x, int i)
{
    if (i < 0 || i >= s->n_timesteps || (s->saved_sample && i < 1))
        return sdx_set_error("scheduler %s: step index %d out of range", s->cls->name, i);
    float sigma = s->saved_sample ? s->aux[A_INTERPOL][i - 1] : s->sigmas[i];
    return sdx_div_scalar(S, out, x, sqrtf(sigma * sigma + 1.0f));
}

int sdx_sched_kdpm2a_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                          const sdx_tensor_t *eps, int i, const sdx_tensor_t *x,
                          sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *noise, *pred, *d, *der, *prev;
    if (!L)
        return -1;
    bool first = s->saved_sample == NULL;
    if (!first && i < 1) {
        sdx_set_error("scheduler %s: step %d called out of order", s->cls->name, i);
        goto fail;
    }
    int j = first ? i : i - 1;
    float sigma = s->sigmas[j];
    float sigma_interpol = s->aux[A_INTERPOL][j];
    float sigma_up = s->aux[A_UP][j];
    float sigma_down = i > 0 ? s->aux[A_DOWN][i - 1] : 0.0f;
    float sigma_hat = sigma;
    SDX_TRY(sdx_sched_randn(s, L, &noise, eps, sdx_tensor_dtype(eps), gen));
    float sigma_input = first ? sigma_hat : sigma_interpol;
    SDX_TRY(sdx_sched_pred_x0_sigma(s, L, &pred, x, eps, sigma_input));
    SDX_TRY(sdx_sub(L, &d, x, pred));
    if (first) {
        SDX_TRY(sdx_div_scalar(L, &der, d, sigma_hat));
        float dt = sigma_interpol - sigma_hat;
        SDX_TRY(sdx_sched_save_sample(s, x));
        SDX_TRY(sdx_add_scaled(L, &prev, x, der, dt));
    } else {
        SDX_TRY(sdx_div_scalar(L, &der, d, sigma_interpol));
        float dt = sigma_down - sigma_hat;
        SDX_TRY(sdx_add_scaled(L, &prev, s->saved_sample, der, dt));
        SDX_TRY(sdx_add_scaled(L, &prev, prev, noise, sigma_up));
        sdx_sched_save_sample(s, NULL);
    }
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}
