/*  sched_unipc.c - UniPCMultistepScheduler of diffusers 0.27.2: the UniP
    predictor and the UniC corrector (B(h) forms bh1/bh2), data or noise
    prediction (predict_x0). The small linear systems diffusers hands to
    torch.linalg.solve are solved here by Gaussian elimination in double.
    Tables come from sched_dpm.c (they are DPM's, with sigma_min last). */
#include "sdx_sched_impl.h"

#include <math.h>
#include <stdlib.h>

/* Solve A x = b (n <= 4) with partial pivoting. */
static int s_solve(double A[4][4], double *b, double *x, int n)
{
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[r][c]) > fabs(A[p][c]))
                p = r;
        if (A[p][c] == 0.0)
            return sdx_set_error("UniPC: singular coefficient system");
        if (p != c) {
            for (int k = 0; k < n; k++) {
                double t = A[c][k];
                A[c][k] = A[p][k];
                A[p][k] = t;
            }
            double t = b[c];
            b[c] = b[p];
            b[p] = t;
        }
        for (int r = c + 1; r < n; r++) {
            double f = A[r][c] / A[c][c];
            for (int k = c; k < n; k++)
                A[r][k] -= f * A[c][k];
            b[r] -= f * b[c];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        double s = b[r];
        for (int k = r + 1; k < n; k++)
            s -= A[r][k] * x[k];
        x[r] = s / A[r][r];
    }
    return 0;
}

/* The B(h) coefficient machinery shared by predictor and corrector:
   R[k][j] = rks[j]^k, b[k] = h_phi_k * k! / B_h. */
static void s_coeffs(const sdx_scheduler_t *s, float h, const double *rks, int order,
                     double R[4][4], double *b, float *h_phi_1, float *B_h)
{
    bool x0 = s->cfg.predict_x0;
    float hh = x0 ? -h : h;
    *h_phi_1 = expm1f(hh);
    float h_phi_k = *h_phi_1 / hh - 1.0f;
    float fact = 1.0f;
    *B_h = sdx_sched_is(s->cfg.solver_type, "bh1") ? hh : expm1f(hh);
    for (int k = 1; k <= order; k++) {
        for (int j = 0; j < order; j++)
            R[k - 1][j] = pow(rks[j], k - 1);
        b[k - 1] = h_phi_k * fact / *B_h;
        fact *= (float)(k + 1);
        h_phi_k = h_phi_k / hh - 1.0f / fact;
    }
}

/* x_t_ = (sigma_t/sigma_s0 x - alpha_t h_phi_1 m0) or the noise-prediction
   form, minus (alpha_t or sigma_t) * B_h * res */
static int s_finish(const sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                    const sdx_tensor_t *x, const sdx_tensor_t *m0, const sdx_tensor_t *res,
                    sdx_sched_ast_t t, sdx_sched_ast_t q0, float h_phi_1, float B_h)
{
    sdx_tensor_t *base;
    bool x0 = s->cfg.predict_x0;
    double cx = x0 ? t.sigma / q0.sigma : t.alpha / q0.alpha;
    double cm = x0 ? -(double)(t.alpha * h_phi_1) : -(double)(t.sigma * h_phi_1);
    if (sdx_lincomb(L, &base, cx, x, cm, m0) != 0)
        return -1;
    if (!res)
        return sdx_alias(L, out, base);
    double cr = x0 ? -(double)(t.alpha * B_h) : -(double)(t.sigma * B_h);
    return sdx_add_scaled(L, out, base, res, cr);
}

/* multistep_uni_p_bh_update at step i with the given order */
static int s_uni_p(sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out, const sdx_tensor_t *x,
                   int i, int order)
{
    int K = s->cfg.solver_order;
    sdx_tensor_t *const *m = s->hist; /* m[K-1] newest */
    const sdx_tensor_t *m0 = m[K - 1];
    sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[i + 1]), q0 = sdx_sched_ast(s->sigmas[i]);
    float h = t.lambda - q0.lambda;
    double rks[4];
    sdx_tensor_t *D1s[4];
    for (int k = 1; k < order; k++) {
        sdx_sched_ast_t qk = sdx_sched_ast(s->sigmas[i - k]);
        float rk = (qk.lambda - q0.lambda) / h;
        rks[k - 1] = rk;
        sdx_tensor_t *d;
        if (sdx_sub(L, &d, m[K - 1 - k], m0) != 0 || sdx_div_scalar(L, &D1s[k - 1], d, rk) != 0)
            return -1;
    }
    rks[order - 1] = 1.0;
    double R[4][4], b[4];
    float h_phi_1, B_h;
    s_coeffs(s, h, rks, order, R, b, &h_phi_1, &B_h);
    sdx_tensor_t *res = NULL;
    if (order >= 2) {
        double rhos[4];
        if (order == 2) {
            rhos[0] = 0.5;
        } else {
            double A[4][4], bb[4];
            for (int r = 0; r < order - 1; r++) {
                for (int c = 0; c < order - 1; c++)
                    A[r][c] = R[r][c];
                bb[r] = b[r];
            }
            if (s_solve(A, bb, rhos, order - 1) != 0)
                return -1;
        }
        for (int k = 0; k < order - 1; k++) {
            if (!res) {
                if (sdx_mul_scalar(L, &res, D1s[k], (float)rhos[k]) != 0)
                    return -1;
            } else if (sdx_add_scaled(L, &res, res, D1s[k], (float)rhos[k]) != 0) {
                return -1;
            }
        }
    }
    return s_finish(s, L, out, x, m0, res, t, q0, h_phi_1, B_h);
}

/* multistep_uni_c_bh_update: correct this_sample (at step i) using the
   model output converted at i and the history up to i-1. */
static int s_uni_c(sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                   const sdx_tensor_t *model_t, const sdx_tensor_t *last_sample, int i, int order)
{
    int K = s->cfg.solver_order;
    sdx_tensor_t *const *m = s->hist;
    const sdx_tensor_t *m0 = m[K - 1];
    sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[i]), q0 = sdx_sched_ast(s->sigmas[i - 1]);
    float h = t.lambda - q0.lambda;
    double rks[4];
    sdx_tensor_t *D1s[4];
    for (int k = 1; k < order; k++) {
        sdx_sched_ast_t qk = sdx_sched_ast(s->sigmas[i - (k + 1)]);
        float rk = (qk.lambda - q0.lambda) / h;
        rks[k - 1] = rk;
        sdx_tensor_t *d;
        if (sdx_sub(L, &d, m[K - 1 - k], m0) != 0 || sdx_div_scalar(L, &D1s[k - 1], d, rk) != 0)
            return -1;
    }
    rks[order - 1] = 1.0;
    double R[4][4], b[4], rhos[4];
    float h_phi_1, B_h;
    s_coeffs(s, h, rks, order, R, b, &h_phi_1, &B_h);
    if (order == 1) {
        rhos[0] = 0.5;
    } else if (s_solve(R, b, rhos, order) != 0) {
        return -1;
    }
    sdx_tensor_t *res = NULL, *D1_t;
    for (int k = 0; k < order - 1; k++) {
        if (!res) {
            if (sdx_mul_scalar(L, &res, D1s[k], (float)rhos[k]) != 0)
                return -1;
        } else if (sdx_add_scaled(L, &res, res, D1s[k], (float)rhos[k]) != 0) {
            return -1;
        }
    }
    if (sdx_sub(L, &D1_t, model_t, m0) != 0)
        return -1;
    if (!res) {
        if (sdx_mul_scalar(L, &res, D1_t, (float)rhos[order - 1]) != 0)
            return -1;
    } else if (sdx_add_scaled(L, &res, res, D1_t, (float)rhos[order - 1]) != 0) {
        return -1;
    }
    return s_finish(s, L, out, last_sample, m0, res, t, q0, h_phi_1, B_h);
}

static bool s_corrector_disabled(const sdx_scheduler_t *s, int step)
{
    for (int k = 0; k < s->cfg.n_disable_corrector; k++)
        if (s->cfg.disable_corrector[k] == step)
            return true;
    return false;
}

int sdx_sched_unipc_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, int i, const sdx_tensor_t *sample,
                         sdx_generator_t *gen)
{
    const sdx_sched_config_t *c = &s->cfg;
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *mo, *tmp, *x, *prev;
    if (!L)
        return -1;
    int K = c->solver_order, nt = s->n_timesteps;
    bool use_corrector = i > 0 && !s_corrector_disabled(s, i - 1) && s->saved_sample != NULL;
    /* convert_model_output */
    sdx_sched_ast_t q = sdx_sched_ast(s->sigmas[i]);
    const char *pt = c->prediction_type;
    if (c->predict_x0) {
        if (sdx_sched_is(pt, "epsilon")) {
            SDX_TRY(sdx_add_scaled(L, &tmp, sample, eps, -(double)q.sigma));
            SDX_TRY(sdx_div_scalar(L, &mo, tmp, q.alpha));
        } else if (sdx_sched_is(pt, "sample")) {
            SDX_TRY(sdx_alias(L, &mo, eps));
        } else {
            SDX_TRY(sdx_lincomb(L, &mo, q.alpha, sample, -(double)q.sigma, eps));
        }
    } else {
        if (sdx_sched_is(pt, "epsilon")) {
            SDX_TRY(sdx_alias(L, &mo, eps));
        } else if (sdx_sched_is(pt, "sample")) {
            SDX_TRY(sdx_add_scaled(L, &tmp, sample, eps, -(double)q.alpha));
            SDX_TRY(sdx_div_scalar(L, &mo, tmp, q.sigma));
        } else {
            SDX_TRY(sdx_lincomb(L, &mo, q.alpha, eps, q.sigma, sample));
        }
    }
    if (use_corrector) {
        SDX_TRY(s_uni_c(s, L, &x, mo, s->saved_sample, i, s->this_order));
    } else {
        SDX_TRY(sdx_alias(L, &x, sample));
    }
    SDX_TRY(sdx_sched_push_hist(s, mo, K));
    int this_order = c->lower_order_final ? (K < nt - i ? K : nt - i) : K;
    if (this_order > s->lower_order_nums + 1)
        this_order = s->lower_order_nums + 1;
    s->this_order = this_order;
    SDX_TRY(sdx_sched_save_sample(s, x));
    SDX_TRY(s_uni_p(s, L, &prev, x, i, this_order));
    if (s->lower_order_nums < K)
        s->lower_order_nums++;
    SDX_TRY(sdx_to_dtype(L, &prev, prev, sdx_tensor_dtype(x)));
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}
