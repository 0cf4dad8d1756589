/*  sched_dpm.c - the exponential-integrator multistep family of diffusers
    0.27.2: DPMSolverMultistepScheduler (DPM++ 2M, its Karras and SDE
    variants, orders 1-3), DPMSolverSinglestepScheduler and
    DEISMultistepScheduler, plus the sigma/timestep tables that UniPC and
    DEIS share with DPM. Scalars (alpha_t, sigma_t, lambda, h) are float32 as
    diffusers computes them on 0-d tensors; DPM multistep steps in float32
    (diffusers upcasts), singlestep and DEIS in the sample's dtype. */
#include "sdx_sched_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- tables */

/* searchsorted(flip(lambda_t), lambda_min_clipped) */
static int s_clipped_idx(const sdx_scheduler_t *s)
{
    double v = s->cfg.lambda_min_clipped;
    int T = s->T, idx = 0;
    for (int k = 0; k < T; k++) {
        float ac = s->alphas_cumprod[T - 1 - k];
        float lam = logf(sqrtf(ac)) - logf(sqrtf(1.0f - ac));
        if ((double)lam < v)
            idx = k + 1;
        else
            break;
    }
    return idx;
}

static int s_check_algorithm(sdx_scheduler_t *s)
{
    sdx_sched_config_t *c = &s->cfg;
    const char *a = c->algorithm_type;
    if (sdx_sched_is(a, "deis"))
        strcpy(c->algorithm_type, "dpmsolver++");
    else if (!sdx_sched_is(a, "dpmsolver") && !sdx_sched_is(a, "dpmsolver++") &&
             !sdx_sched_is(a, "sde-dpmsolver") && !sdx_sched_is(a, "sde-dpmsolver++"))
        return sdx_set_error("scheduler %s: algorithm_type '%s' is not implemented", s->cls->name,
                             a);
    const char *st = c->solver_type;
    if (sdx_sched_is(st, "logrho") || sdx_sched_is(st, "bh1") || sdx_sched_is(st, "bh2"))
        strcpy(c->solver_type, "midpoint");
    else if (!sdx_sched_is(st, "midpoint") && !sdx_sched_is(st, "heun"))
        return sdx_set_error("scheduler %s: solver_type '%s' is not implemented", s->cls->name, st);
    bool pp = sdx_sched_is(c->algorithm_type, "dpmsolver++") ||
              sdx_sched_is(c->algorithm_type, "sde-dpmsolver++");
    if (!pp && sdx_sched_is(c->final_sigmas_type, "zero"))
        return sdx_set_error("scheduler %s: final_sigmas_type 'zero' is not supported for "
                             "algorithm_type '%s'; choose 'sigma_min'",
                             s->cls->name, c->algorithm_type);
    if (!sdx_sched_is(c->final_sigmas_type, "zero") &&
        !sdx_sched_is(c->final_sigmas_type, "sigma_min"))
        return sdx_set_error("scheduler %s: final_sigmas_type must be 'zero' or 'sigma_min'",
                             s->cls->name);
    if (c->solver_order == 3 && (sdx_sched_is(c->algorithm_type, "sde-dpmsolver++") ||
                                 sdx_sched_is(c->algorithm_type, "sde-dpmsolver")))
        return sdx_set_error("scheduler %s: solver_order 3 is not defined for algorithm_type "
                             "'%s' (diffusers has no third-order SDE update)",
                             s->cls->name, c->algorithm_type);
    if (c->variance_type[0])
        return sdx_set_error("scheduler %s: variance_type '%s' (learned variance) is not "
                             "supported",
                             s->cls->name, c->variance_type);
    return 0;
}

/* Karras / Lu / interpolated sigmas over integer timesteps ts[0..nt-1];
   `final` is the appended last sigma, or NAN for "repeat the last Karras
   sigma" (UniPC, DEIS). Takes ownership of ts. */
static int s_int_sigma_tables(sdx_scheduler_t *s, double *ts, int nt, int n, double final_interp,
                              bool final_karras_repeat)
{
    const sdx_sched_config_t *c = &s->cfg;
    float *train = sdx_sched_train_sigmas(s);
    float *logs = malloc(sizeof(float) * (size_t)s->T);
    double *sg = NULL;
    float *sigmas = NULL;
    if (!train || !logs)
        goto oom;
    for (int i = 0; i < s->T; i++)
        logs[i] = logf(train[i]);
    bool karras = c->use_karras_sigmas;
    bool lu = !karras && c->use_lu_lambdas; /* only DPM multistep knows the key */
    if (karras || lu) {
        double *nts = malloc(sizeof(double) * (size_t)n);
        sg = malloc(sizeof(double) * (size_t)n);
        if (!nts || !sg) {
            free(nts);
            goto oom;
        }
        if (karras) {
            sdx_sched_karras(sg, n, train[0], train[s->T - 1]);
        } else {
            double lmin = logs[0], lmax = logs[s->T - 1];
            sdx_np_linspace(sg, 0, 1, n);
            for (int i = 0; i < n; i++)
                sg[i] = exp(lmax + sg[i] * (lmin - lmax));
        }
        for (int i = 0; i < n; i++)
            nts[i] = sdx_np_round(sdx_np_sigma_to_t(sg[i], logs, s->T));
        free(ts);
        ts = nts;
        nt = n;
    } else {
        sg = malloc(sizeof(double) * (size_t)nt);
        if (!sg)
            goto oom;
        for (int i = 0; i < nt; i++)
            sg[i] = sdx_np_interp(ts[i], train, s->T);
    }
    sigmas = malloc(sizeof(float) * (size_t)(nt + 1));
    if (!sigmas)
        goto oom;
    for (int i = 0; i < nt; i++)
        sigmas[i] = (float)sg[i];
    if ((karras || lu) && final_karras_repeat)
        sigmas[nt] = (float)sg[nt - 1];
    else
        sigmas[nt] = (float)final_interp;
    for (int i = 0; i < nt; i++)
        if (ts[i] < 0 || ts[i] >= s->T) {
            double bad = ts[i];
            free(train);
            free(logs);
            free(sg);
            free(sigmas);
            free(ts);
            return sdx_set_error("scheduler %s: timestep %g outside [0, %d)", s->cls->name, bad,
                                 s->T);
        }
    free(train);
    free(logs);
    free(sg);
    sdx_sched_set_tables(s, ts, nt, sigmas, nt + 1);
    s->num_inference_steps = nt;
    s->init_noise_sigma = 1.0f;
    return 0;
oom:
    free(train);
    free(logs);
    free(sg);
    free(sigmas);
    free(ts);
    return sdx_set_error("scheduler: out of memory");
}

int sdx_sched_dpm_set_timesteps(sdx_scheduler_t *s, int n)
{
    sdx_sched_config_t *c = &s->cfg;
    const char *cls = s->cls->name;
    bool dpm = sdx_sched_is(cls, "DPMSolverMultistepScheduler");
    bool unipc = sdx_sched_is(cls, "UniPCMultistepScheduler");
    if (dpm && s_check_algorithm(s) != 0)
        return -1;
    if (unipc) {
        const char *st = c->solver_type;
        if (sdx_sched_is(st, "midpoint") || sdx_sched_is(st, "heun") || sdx_sched_is(st, "logrho"))
            strcpy(c->solver_type, "bh2");
        else if (!sdx_sched_is(st, "bh1") && !sdx_sched_is(st, "bh2"))
            return sdx_set_error("scheduler %s: solver_type '%s' is not implemented", cls, st);
    }
    if (!dpm && !unipc) { /* DEIS */
        const char *a = c->algorithm_type;
        if (sdx_sched_is(a, "dpmsolver") || sdx_sched_is(a, "dpmsolver++"))
            strcpy(c->algorithm_type, "deis");
        else if (!sdx_sched_is(a, "deis"))
            return sdx_set_error("scheduler %s: algorithm_type '%s' is not implemented", cls, a);
        const char *st = c->solver_type;
        if (sdx_sched_is(st, "midpoint") || sdx_sched_is(st, "heun") || sdx_sched_is(st, "bh1") ||
            sdx_sched_is(st, "bh2"))
            strcpy(c->solver_type, "logrho");
        else if (!sdx_sched_is(st, "logrho"))
            return sdx_set_error("scheduler %s: solver_type '%s' is not implemented", cls, st);
    }
    int last = dpm ? s->T - s_clipped_idx(s) : c->num_train_timesteps;
    double *ts = sdx_sched_spaced_timesteps_dpm(s, n, last);
    if (!ts)
        return -1;
    double final;
    if (dpm)
        final = sdx_sched_is(c->final_sigmas_type, "sigma_min")
                    ? sqrtf((1.0f - s->alphas_cumprod[0]) / s->alphas_cumprod[0])
                    : 0.0;
    else
        final = sqrtf((1.0f - s->alphas_cumprod[0]) / s->alphas_cumprod[0]);
    return s_int_sigma_tables(s, ts, s->n_timesteps, n, final, !dpm);
}

int sdx_sched_dpmss_set_timesteps(sdx_scheduler_t *s, int n)
{
    sdx_sched_config_t *c = &s->cfg;
    if (s_check_algorithm(s) != 0)
        return -1;
    int top = c->num_train_timesteps - 1 - s_clipped_idx(s);
    double *l = malloc(sizeof(double) * (size_t)(n + 1));
    double *ts = malloc(sizeof(double) * (size_t)n);
    if (!l || !ts) {
        free(l);
        free(ts);
        return sdx_set_error("scheduler: out of memory");
    }
    sdx_np_linspace(l, 0, top, n + 1);
    for (int i = 0; i < n; i++)
        ts[i] = sdx_np_round(l[n - i]);
    free(l);
    double final = sdx_sched_is(c->final_sigmas_type, "sigma_min")
                       ? sqrtf((1.0f - s->alphas_cumprod[0]) / s->alphas_cumprod[0])
                       : 0.0;
    if (s_int_sigma_tables(s, ts, n, n, final, false) != 0)
        return -1;
    s->num_inference_steps = n;
    int order = c->solver_order;
    /* register_to_config(lower_order_final=True), persistent as in diffusers */
    if (!c->lower_order_final && n % order != 0)
        c->lower_order_final = true;
    if (!c->lower_order_final && sdx_sched_is(c->final_sigmas_type, "zero"))
        c->lower_order_final = true;
    int *ol = calloc((size_t)n + 3, sizeof(int));
    if (!ol)
        return sdx_set_error("scheduler: out of memory");
    int k = 0;
    static const int o3[3] = {1, 2, 3};
    if (c->lower_order_final) {
        if (order == 3) {
            int reps = n % 3 == 0 ? n / 3 - 1 : n / 3;
            for (int r = 0; r < reps; r++)
                for (int j = 0; j < 3; j++)
                    ol[k++] = o3[j];
            if (n % 3 == 0) {
                ol[k++] = 1;
                ol[k++] = 2;
                ol[k++] = 1;
            } else if (n % 3 == 1) {
                ol[k++] = 1;
            } else {
                ol[k++] = 1;
                ol[k++] = 2;
            }
        } else if (order == 2) {
            if (n % 2 == 0) {
                for (int r = 0; r < n / 2 - 1; r++) {
                    ol[k++] = 1;
                    ol[k++] = 2;
                }
                ol[k++] = 1;
                ol[k++] = 1;
            } else {
                for (int r = 0; r < n / 2; r++) {
                    ol[k++] = 1;
                    ol[k++] = 2;
                }
                ol[k++] = 1;
            }
        } else {
            for (int r = 0; r < n; r++)
                ol[k++] = 1;
        }
    } else {
        for (int r = 0; r < n / order; r++)
            for (int j = 0; j < order; j++)
                ol[k++] = o3[j];
    }
    for (; k < n; k++) /* never shorter than the timesteps */
        ol[k] = 1;
    s->order_list = ol;
    return 0;
}

/* ---------------------------------------------------------------- helpers */

/* acc = sum coeffs[k] * ts[k] (k < n), in L; NULL entries are skipped */
static int s_combine(sdx_scope_t *L, sdx_tensor_t **out, const double *coeffs,
                     sdx_tensor_t *const *ts, int n)
{
    sdx_tensor_t *acc = NULL;
    for (int k = 0; k < n; k++) {
        if (!ts[k] || coeffs[k] == 0.0)
            continue;
        if (!acc) {
            if (sdx_mul_scalar(L, &acc, ts[k], coeffs[k]) != 0)
                return -1;
        } else if (sdx_add_scaled(L, &acc, acc, ts[k], coeffs[k]) != 0) {
            return -1;
        }
    }
    if (!acc)
        return sdx_mul_scalar(L, out, ts[0], 0.0);
    *out = acc;
    return 0;
}

/* D1 = (1/r0) * (m0 - m1) */
static int s_diff_scaled(sdx_scope_t *L, sdx_tensor_t **out, const sdx_tensor_t *m0,
                         const sdx_tensor_t *m1, float inv_r)
{
    sdx_tensor_t *d;
    if (sdx_sub(L, &d, m0, m1) != 0)
        return -1;
    return sdx_mul_scalar(L, out, d, inv_r);
}

/* convert_model_output of DPM-Solver: x0 prediction for the ++ variants,
   noise prediction otherwise. */
static int s_dpm_convert(const sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, const sdx_tensor_t *x, int i)
{
    const char *pt = s->cfg.prediction_type;
    const char *a = s->cfg.algorithm_type;
    bool pp = sdx_sched_is(a, "dpmsolver++") || sdx_sched_is(a, "sde-dpmsolver++");
    sdx_sched_ast_t q = sdx_sched_ast(s->sigmas[i]);
    sdx_tensor_t *tmp;
    if (pp) {
        if (sdx_sched_is(pt, "epsilon")) {
            if (sdx_add_scaled(L, &tmp, x, eps, -(double)q.sigma) != 0)
                return -1;
            return sdx_div_scalar(L, out, tmp, q.alpha);
        }
        if (sdx_sched_is(pt, "sample"))
            return sdx_alias(L, out, eps);
        return sdx_lincomb(L, out, q.alpha, x, -(double)q.sigma, eps);
    }
    if (sdx_sched_is(pt, "epsilon"))
        return sdx_alias(L, out, eps);
    if (sdx_sched_is(pt, "sample")) {
        if (sdx_add_scaled(L, &tmp, x, eps, -(double)q.alpha) != 0)
            return -1;
        return sdx_div_scalar(L, out, tmp, q.sigma);
    }
    return sdx_lincomb(L, out, q.alpha, eps, q.sigma, x);
}

/* first-order update (DDIM-like) from sigma index `from` to `to` */
static int s_dpm_first(const sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                       const sdx_tensor_t *m, const sdx_tensor_t *x, const sdx_tensor_t *noise,
                       int from, int to)
{
    sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[to]), q = sdx_sched_ast(s->sigmas[from]);
    float h = t.lambda - q.lambda;
    const char *a = s->cfg.algorithm_type;
    double c[3] = {0, 0, 0};
    if (sdx_sched_is(a, "dpmsolver++")) {
        c[0] = t.sigma / q.sigma;
        c[1] = -(t.alpha * (expf(-h) - 1.0f));
    } else if (sdx_sched_is(a, "dpmsolver")) {
        c[0] = t.alpha / q.alpha;
        c[1] = -(t.sigma * (expf(h) - 1.0f));
    } else if (sdx_sched_is(a, "sde-dpmsolver++")) {
        c[0] = t.sigma / q.sigma * expf(-h);
        c[1] = t.alpha * (1.0f - expf(-2.0f * h));
        c[2] = t.sigma * sqrtf(1.0f - expf(-2.0f * h));
    } else {
        c[0] = t.alpha / q.alpha;
        c[1] = -2.0f * (t.sigma * (expf(h) - 1.0f));
        c[2] = t.sigma * sqrtf(expf(2.0f * h) - 1.0f);
    }
    sdx_tensor_t *ts[3] = {(sdx_tensor_t *)x, (sdx_tensor_t *)m, (sdx_tensor_t *)noise};
    return s_combine(L, out, c, ts, noise ? 3 : 2);
}

/* Second-order update. Multistep: base sigma index s0 = i, previous
   s1 = i-1, base sample at s0, D0 = m0. Singlestep: the base is s1 (the
   sample saved at order 1), D0 = m1. */
static int s_dpm_second(const sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                        const sdx_tensor_t *m0, const sdx_tensor_t *m1, const sdx_tensor_t *x,
                        const sdx_tensor_t *noise, int i, bool singlestep)
{
    sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[i + 1]), q0 = sdx_sched_ast(s->sigmas[i]),
                    q1 = sdx_sched_ast(s->sigmas[i - 1]);
    float h, h0;
    sdx_sched_ast_t base;
    if (singlestep) {
        h = t.lambda - q1.lambda;
        h0 = q0.lambda - q1.lambda;
        base = q1;
    } else {
        h = t.lambda - q0.lambda;
        h0 = q0.lambda - q1.lambda;
        base = q0;
    }
    float r0 = h0 / h;
    sdx_tensor_t *D1;
    if (s_diff_scaled(L, &D1, m0, m1, 1.0f / r0) != 0)
        return -1;
    const sdx_tensor_t *D0 = singlestep ? m1 : m0;
    const char *a = s->cfg.algorithm_type;
    bool mid = sdx_sched_is(s->cfg.solver_type, "midpoint");
    double c[4] = {0, 0, 0, 0};
    if (sdx_sched_is(a, "dpmsolver++")) {
        c[0] = t.sigma / base.sigma;
        c[1] = -(t.alpha * (expf(-h) - 1.0f));
        c[2] = mid ? -0.5f * (t.alpha * (expf(-h) - 1.0f))
                   : (t.alpha * ((expf(-h) - 1.0f) / h + 1.0f));
    } else if (sdx_sched_is(a, "dpmsolver")) {
        c[0] = t.alpha / base.alpha;
        c[1] = -(t.sigma * (expf(h) - 1.0f));
        c[2] =
            mid ? -0.5f * (t.sigma * (expf(h) - 1.0f)) : -(t.sigma * ((expf(h) - 1.0f) / h - 1.0f));
    } else if (sdx_sched_is(a, "sde-dpmsolver++")) {
        c[0] = t.sigma / base.sigma * expf(-h);
        c[1] = t.alpha * (1.0f - expf(-2.0f * h));
        c[2] = mid ? 0.5f * (t.alpha * (1.0f - expf(-2.0f * h)))
                   : (t.alpha * ((1.0f - expf(-2.0f * h)) / (-2.0f * h) + 1.0f));
        c[3] = t.sigma * sqrtf(1.0f - expf(-2.0f * h));
    } else {
        c[0] = t.alpha / base.alpha;
        c[1] = -2.0f * (t.sigma * (expf(h) - 1.0f));
        c[2] =
            mid ? -(t.sigma * (expf(h) - 1.0f)) : -2.0f * (t.sigma * ((expf(h) - 1.0f) / h - 1.0f));
        c[3] = t.sigma * sqrtf(expf(2.0f * h) - 1.0f);
    }
    sdx_tensor_t *ts[4] = {(sdx_tensor_t *)x, (sdx_tensor_t *)D0, D1, (sdx_tensor_t *)noise};
    return s_combine(L, out, c, ts, noise ? 4 : 3);
}

/* Third-order multistep update (dpmsolver / dpmsolver++). */
static int s_dpm_third_multistep(const sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                                 sdx_tensor_t *const *m, const sdx_tensor_t *x, int i)
{
    sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[i + 1]), q0 = sdx_sched_ast(s->sigmas[i]),
                    q1 = sdx_sched_ast(s->sigmas[i - 1]), q2 = sdx_sched_ast(s->sigmas[i - 2]);
    float h = t.lambda - q0.lambda, h0 = q0.lambda - q1.lambda, h1 = q1.lambda - q2.lambda;
    float r0 = h0 / h, r1 = h1 / h;
    sdx_tensor_t *D1_0, *D1_1, *dd, *D1, *D2;
    if (s_diff_scaled(L, &D1_0, m[0], m[1], 1.0f / r0) != 0 ||
        s_diff_scaled(L, &D1_1, m[1], m[2], 1.0f / r1) != 0 || sdx_sub(L, &dd, D1_0, D1_1) != 0 ||
        sdx_add_scaled(L, &D1, D1_0, dd, r0 / (r0 + r1)) != 0 ||
        sdx_mul_scalar(L, &D2, dd, 1.0f / (r0 + r1)) != 0)
        return -1;
    double c[4];
    if (sdx_sched_is(s->cfg.algorithm_type, "dpmsolver++")) {
        c[0] = t.sigma / q0.sigma;
        c[1] = -(t.alpha * (expf(-h) - 1.0f));
        c[2] = t.alpha * ((expf(-h) - 1.0f) / h + 1.0f);
        c[3] = -(t.alpha * ((expf(-h) - 1.0f + h) / (h * h) - 0.5f));
    } else if (sdx_sched_is(s->cfg.algorithm_type, "dpmsolver")) {
        c[0] = t.alpha / q0.alpha;
        c[1] = -(t.sigma * (expf(h) - 1.0f));
        c[2] = -(t.sigma * ((expf(h) - 1.0f) / h - 1.0f));
        c[3] = -(t.sigma * ((expf(h) - 1.0f - h) / (h * h) - 0.5f));
    } else {
        return sdx_set_error("scheduler %s: third order is not defined for %s", s->cls->name,
                             s->cfg.algorithm_type);
    }
    sdx_tensor_t *ts[4] = {(sdx_tensor_t *)x, m[0], D1, D2};
    return s_combine(L, out, c, ts, 4);
}

/* Third-order singlestep update from the sample saved at i-2. */
static int s_dpm_third_singlestep(const sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                                  sdx_tensor_t *const *m, const sdx_tensor_t *x, int i)
{
    sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[i + 1]), q0 = sdx_sched_ast(s->sigmas[i]),
                    q1 = sdx_sched_ast(s->sigmas[i - 1]), q2 = sdx_sched_ast(s->sigmas[i - 2]);
    float h = t.lambda - q2.lambda, h0 = q0.lambda - q2.lambda, h1 = q1.lambda - q2.lambda;
    float r0 = h0 / h, r1 = h1 / h;
    /* m[0] newest (m0), m[1] = m1, m[2] = m2 */
    sdx_tensor_t *D1_0, *D1_1, *a, *b, *D1, *D2;
    if (s_diff_scaled(L, &D1_0, m[1], m[2], 1.0f / r1) != 0 ||
        s_diff_scaled(L, &D1_1, m[0], m[2], 1.0f / r0) != 0)
        return -1;
    bool mid = sdx_sched_is(s->cfg.solver_type, "midpoint");
    bool pp = sdx_sched_is(s->cfg.algorithm_type, "dpmsolver++");
    if (!pp && !sdx_sched_is(s->cfg.algorithm_type, "dpmsolver"))
        return sdx_set_error("scheduler %s: third order is not defined for %s", s->cls->name,
                             s->cfg.algorithm_type);
    double c[4];
    if (pp) {
        c[0] = t.sigma / q2.sigma;
        c[1] = -(t.alpha * (expf(-h) - 1.0f));
        c[2] = t.alpha * ((expf(-h) - 1.0f) / h + 1.0f);
        c[3] = -(t.alpha * ((expf(-h) - 1.0f + h) / (h * h) - 0.5f));
    } else {
        c[0] = t.alpha / q2.alpha;
        c[1] = -(t.sigma * (expf(h) - 1.0f));
        c[2] = -(t.sigma * ((expf(h) - 1.0f) / h - 1.0f));
        c[3] = -(t.sigma * ((expf(h) - 1.0f - h) / (h * h) - 0.5f));
    }
    if (mid) {
        sdx_tensor_t *ts[3] = {(sdx_tensor_t *)x, m[2], D1_1};
        return s_combine(L, out, c, ts, 3);
    }
    /* heun: D1 = (r0 D1_0 - r1 D1_1) / (r0 - r1), D2 = 2 (D1_1 - D1_0) / (r0 - r1) */
    if (sdx_lincomb(L, &a, r0, D1_0, -(double)r1, D1_1) != 0 ||
        sdx_div_scalar(L, &D1, a, r0 - r1) != 0 || sdx_sub(L, &b, D1_1, D1_0) != 0 ||
        sdx_mul_scalar(L, &b, b, 2.0) != 0 || sdx_div_scalar(L, &D2, b, r0 - r1) != 0)
        return -1;
    sdx_tensor_t *ts[4] = {(sdx_tensor_t *)x, m[2], D1, D2};
    return s_combine(L, out, c, ts, 4);
}

static bool s_is_sde(const sdx_scheduler_t *s)
{
    return sdx_sched_is(s->cfg.algorithm_type, "sde-dpmsolver") ||
           sdx_sched_is(s->cfg.algorithm_type, "sde-dpmsolver++");
}

/* ---------------------------------------------------------------- DPM multistep */

int sdx_sched_dpm_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                       const sdx_tensor_t *eps, int i, const sdx_tensor_t *sample,
                       sdx_generator_t *gen)
{
    const sdx_sched_config_t *c = &s->cfg;
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *mo, *x, *noise = NULL, *prev, *res;
    if (!L)
        return -1;
    int nt = s->n_timesteps, order = c->solver_order;
    bool lof = i == nt - 1 && (c->euler_at_final || (c->lower_order_final && nt < 15) ||
                               sdx_sched_is(c->final_sigmas_type, "zero"));
    bool los = i == nt - 2 && c->lower_order_final && nt < 15;
    SDX_TRY(s_dpm_convert(s, L, &mo, eps, sample, i));
    SDX_TRY(sdx_sched_push_hist(s, mo, order));
    sdx_tensor_t *const *m = s->hist; /* m[order-1] newest */
    SDX_TRY(sdx_to_dtype(L, &x, sample, SDX_F32));
    if (s_is_sde(s))
        SDX_TRY(sdx_sched_randn(s, L, &noise, eps, SDX_F32, gen));
    if (order == 1 || s->lower_order_nums < 1 || lof) {
        SDX_TRY(s_dpm_first(s, L, &prev, mo, x, noise, i, i + 1));
    } else if (order == 2 || s->lower_order_nums < 2 || los) {
        SDX_TRY(s_dpm_second(s, L, &prev, m[order - 1], m[order - 2], x, noise, i, false));
    } else {
        sdx_tensor_t *mm[3] = {m[2], m[1], m[0]};
        SDX_TRY(s_dpm_third_multistep(s, L, &prev, mm, x, i));
    }
    if (s->lower_order_nums < order)
        s->lower_order_nums++;
    SDX_TRY(sdx_to_dtype(L, &res, prev, sdx_tensor_dtype(eps)));
    SDX_TRY(sdx_sched_give(L, S, res, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}

/* ---------------------------------------------------------------- DPM singlestep */

int sdx_sched_dpmss_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                         const sdx_tensor_t *eps, int i, const sdx_tensor_t *sample,
                         sdx_generator_t *gen)
{
    const sdx_sched_config_t *c = &s->cfg;
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *mo, *noise = NULL, *prev;
    if (!L)
        return -1;
    int order_cfg = c->solver_order;
    SDX_TRY(s_dpm_convert(s, L, &mo, eps, sample, i));
    SDX_TRY(sdx_sched_push_hist(s, mo, order_cfg));
    sdx_tensor_t *const *m = s->hist;
    if (s_is_sde(s))
        SDX_TRY(sdx_sched_randn(s, L, &noise, eps, sdx_tensor_dtype(mo), gen));
    int order = s->order_list[i];
    while (order > 1 && m[order_cfg - order] == NULL)
        order--;
    if (order == 1)
        SDX_TRY(sdx_sched_save_sample(s, sample));
    const sdx_tensor_t *x = s->saved_sample;
    if (!x) {
        sdx_set_error("scheduler %s: step %d called out of order", s->cls->name, i);
        goto fail;
    }
    if (order == 1) {
        SDX_TRY(s_dpm_first(s, L, &prev, m[order_cfg - 1], x, noise, i, i + 1));
    } else if (order == 2) {
        SDX_TRY(s_dpm_second(s, L, &prev, m[order_cfg - 1], m[order_cfg - 2], x, noise, i, true));
    } else {
        sdx_tensor_t *mm[3] = {m[order_cfg - 1], m[order_cfg - 2], m[order_cfg - 3]};
        SDX_TRY(s_dpm_third_singlestep(s, L, &prev, mm, x, i));
    }
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}

/* ---------------------------------------------------------------- DEIS */

static float s_ind2(float t, float b, float c)
{
    /* Integrate[(log(t) - log(c)) / (log(b) - log(c)), {t}] */
    return t * (-logf(c) + logf(t) - 1.0f) / (logf(b) - logf(c));
}

static float s_ind3(float t, float b, float c, float d)
{
    float lt = logf(t), lb = logf(b), lc = logf(c), ld = logf(d);
    float num = t * (lc * (ld - lt + 1.0f) - ld * lt + ld + lt * lt - 2.0f * lt + 2.0f);
    float den = (lb - lc) * (lb - ld);
    return num / den;
}

int sdx_sched_deis_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *eps, int i, const sdx_tensor_t *x, sdx_generator_t *gen)
{
    const sdx_sched_config_t *c = &s->cfg;
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *x0, *mo, *prev, *tmp;
    if (!L)
        return -1;
    int nt = s->n_timesteps, order = c->solver_order;
    bool lof = i == nt - 1 && c->lower_order_final && nt < 15;
    bool los = i == nt - 2 && c->lower_order_final && nt < 15;
    /* convert_model_output: x0 prediction, then back to the noise the
       log-rho DEIS integrates */
    sdx_sched_ast_t q = sdx_sched_ast(s->sigmas[i]);
    const char *pt = c->prediction_type;
    if (sdx_sched_is(pt, "epsilon")) {
        SDX_TRY(sdx_add_scaled(L, &tmp, x, eps, -(double)q.sigma));
        SDX_TRY(sdx_div_scalar(L, &x0, tmp, q.alpha));
    } else if (sdx_sched_is(pt, "sample")) {
        SDX_TRY(sdx_alias(L, &x0, eps));
    } else {
        SDX_TRY(sdx_lincomb(L, &x0, q.alpha, x, -(double)q.sigma, eps));
    }
    SDX_TRY(sdx_add_scaled(L, &tmp, x, x0, -(double)q.alpha));
    SDX_TRY(sdx_div_scalar(L, &mo, tmp, q.sigma));
    SDX_TRY(sdx_sched_push_hist(s, mo, order));
    sdx_tensor_t *const *m = s->hist;
    if (order == 1 || s->lower_order_nums < 1 || lof) {
        sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[i + 1]);
        float h = t.lambda - q.lambda;
        SDX_TRY(
            sdx_lincomb(L, &prev, t.alpha / q.alpha, x, -(double)(t.sigma * (expf(h) - 1.0f)), mo));
    } else if (order == 2 || s->lower_order_nums < 2 || los) {
        sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[i + 1]), q0 = q,
                        q1 = sdx_sched_ast(s->sigmas[i - 1]);
        float rt = t.sigma / t.alpha, r0 = q0.sigma / q0.alpha, r1 = q1.sigma / q1.alpha;
        float c1 = s_ind2(rt, r0, r1) - s_ind2(r0, r0, r1);
        float c2 = s_ind2(rt, r1, r0) - s_ind2(r0, r1, r0);
        double cf[3] = {1.0 / q0.alpha, c1, c2};
        sdx_tensor_t *ts[3] = {(sdx_tensor_t *)x, m[order - 1], m[order - 2]};
        SDX_TRY(s_combine(L, &tmp, cf, ts, 3));
        SDX_TRY(sdx_mul_scalar(L, &prev, tmp, t.alpha));
    } else {
        sdx_sched_ast_t t = sdx_sched_ast(s->sigmas[i + 1]), q0 = q,
                        q1 = sdx_sched_ast(s->sigmas[i - 1]), q2 = sdx_sched_ast(s->sigmas[i - 2]);
        float rt = t.sigma / t.alpha, r0 = q0.sigma / q0.alpha, r1 = q1.sigma / q1.alpha,
              r2 = q2.sigma / q2.alpha;
        float c1 = s_ind3(rt, r0, r1, r2) - s_ind3(r0, r0, r1, r2);
        float c2 = s_ind3(rt, r1, r2, r0) - s_ind3(r0, r1, r2, r0);
        float c3 = s_ind3(rt, r2, r0, r1) - s_ind3(r0, r2, r0, r1);
        double cf[4] = {1.0 / q0.alpha, c1, c2, c3};
        sdx_tensor_t *ts[4] = {(sdx_tensor_t *)x, m[2], m[1], m[0]};
        SDX_TRY(s_combine(L, &tmp, cf, ts, 4));
        SDX_TRY(sdx_mul_scalar(L, &prev, tmp, t.alpha));
    }
    if (s->lower_order_nums < order)
        s->lower_order_nums++;
    SDX_TRY(sdx_sched_give(L, S, prev, out));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}
