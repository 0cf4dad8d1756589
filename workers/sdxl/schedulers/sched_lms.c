/*  sched_lms.c - LMSDiscreteScheduler (linear multistep, order 4), after
    diffusers 0.27.2. diffusers integrates the Lagrange basis polynomial with
    scipy.integrate.quad; the integrand is a polynomial of degree <= 3, so a
    3-point Gauss-Legendre rule gives the same integral exactly (in double). */
#include "sdx_sched_impl.h"

#include <math.h>

#define S_LMS_ORDER 4

static double s_basis(const float *sg, int t, int order, int cur, double tau)
{
    double prod = 1.0;
    for (int k = 0; k < order; k++) {
        if (k == cur)
            continue;
        prod *= (tau - sg[t - k]) / ((double)sg[t - cur] - sg[t - k]);
    }
    return prod;
}

static double s_lms_coefficient(const float *sg, int t, int order, int cur)
{
    static const double xg[3] = {-0.7745966692414833770358531, 0.0, 0.7745966692414833770358531};
    static const double wg[3] = {5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0};
    double a = sg[t], b = sg[t + 1];
    double half = 0.5 * (b - a), mid = 0.5 * (a + b), sum = 0;
    for (int q = 0; q < 3; q++)
        sum += wg[q] * s_basis(sg, t, order, cur, mid + half * xg[q]);
    return sum * half;
}

int sdx_sched_lms_set_timesteps(sdx_scheduler_t *s, int n)
{
    return sdx_sched_sigma_tables(s, n, 1);
}

int sdx_sched_lms_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                       const sdx_tensor_t *eps, int i, const sdx_tensor_t *x, sdx_generator_t *gen)
{
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *pred, *d, *der, *acc = NULL, *prev;
    if (!L)
        return -1;
    float sigma = s->sigmas[i];
    SDX_TRY(sdx_sched_pred_x0_sigma(s, L, &pred, x, eps, sigma));
    SDX_TRY(sdx_sub(L, &d, x, pred));
    SDX_TRY(sdx_div_scalar(L, &der, d, sigma));
    SDX_TRY(sdx_sched_push_hist(s, der, S_LMS_ORDER));
    int order = i + 1 < S_LMS_ORDER ? i + 1 : S_LMS_ORDER;
    /* newest derivative first, as zip(coeffs, reversed(derivatives)) */
    for (int k = 0; k < order; k++) {
        const sdx_tensor_t *dk = s->hist[S_LMS_ORDER - 1 - k];
        if (!dk)
            break; /* zip() stops at the shorter list (img2img starts late) */
        double coeff = s_lms_coefficient(s->sigmas, i, order, k);
        if (!acc)
            SDX_TRY(sdx_mul_scalar(L, &acc, dk, coeff));
        else
            SDX_TRY(sdx_add_scaled(L, &acc, acc, dk, coeff));
    }
    SDX_TRY(sdx_add(L, &prev, x, acc));
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}
