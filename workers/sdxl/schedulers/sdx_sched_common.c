/*  sdx_sched_common.c - table math and tensor helpers the scheduler families
    share: torch's float32 linspace/cumprod, numpy's float64 linspace,
    interp, round and _sigma_to_t (with numpy 1.x type promotion), Karras
    sigmas, history bookkeeping and noise draws. Exactness of the tables
    against diffusers depends on reproducing these dtype choices; the
    comments say which library's rule each helper follows. */
#include "sdx_sched_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bool sdx_sched_is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

sdx_sched_ast_t sdx_sched_ast(float sigma)
{
    sdx_sched_ast_t r;
    r.alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    r.sigma = sigma * r.alpha;
    r.lambda = logf(r.alpha) - logf(r.sigma);
    return r;
}

/* ---------------------------------------------------------------- numpy */

void sdx_np_linspace(double *out, double start, double stop, int num)
{
    if (num <= 0)
        return;
    if (num == 1) {
        out[0] = start;
        return;
    }
    double step = (stop - start) / (double)(num - 1);
    for (int i = 0; i < num; i++)
        out[i] = (double)i * step + start;
    out[num - 1] = stop;
}

double sdx_np_round(double x)
{
    return nearbyint(x); /* numpy rounds half to even */
}

double sdx_np_interp(double x, const float *fp, int n)
{
    if (isnan(x))
        return x;
    if (x < 0)
        return fp[0];
    if (x > (double)(n - 1))
        return fp[n - 1];
    int j = (int)floor(x);
    if (j >= n - 1)
        return fp[n - 1];
    if ((double)j == x)
        return fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    double r = slope * (x - (double)j) + (double)fp[j];
    if (isnan(r)) {
        r = slope * (x - (double)(j + 1)) + (double)fp[j + 1];
        if (isnan(r) && fp[j] == fp[j + 1])
            r = fp[j];
    }
    return r;
}

/* argmax(cumsum(dists >= 0)): the first index where the running count of
   non-negative distances reaches its maximum. */
static int s_low_index_f(float log_sigma, const float *log_sigmas, int n)
{
    int cnt = 0, best = 0, bestval = -1;
    for (int k = 0; k < n; k++) {
        float d = log_sigma - log_sigmas[k];
        if (d >= 0)
            cnt++;
        if (cnt > bestval) {
            bestval = cnt;
            best = k;
        }
    }
    if (best > n - 2)
        best = n - 2;
    return best;
}

double sdx_np_sigma_to_t(double sigma, const float *log_sigmas, int n)
{
    /* log_sigma is a float64 scalar, but numpy 1.x value-based casting turns
       every array expression it meets into float32: the distances, `low -
       log_sigma`, `low - high` and w are float32 ((1,)-shaped arrays after
       argmax(axis=0)); only `(1 - w) * low_idx + w * high_idx` promotes to
       float64 through the int64 indices. */
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    if (isnan(sigma))
        ls = sigma;
    float lsf = (float)ls;
    int lo = s_low_index_f(lsf, log_sigmas, n);
    float low = log_sigmas[lo], high = log_sigmas[lo + 1];
    float w = (low - lsf) / (low - high);
    if (w < 0)
        w = 0;
    if (w > 1)
        w = 1;
    return (double)(1.0f - w) * (double)lo + (double)w * (double)(lo + 1);
}

float sdx_f32_sigma_to_t(float sigma, const float *log_sigmas, int n)
{
    /* The same with torch float32 tensors (KDPM2's interpolated sigmas). */
    float m = isnan(sigma) ? sigma : (sigma > 1e-10f ? sigma : 1e-10f);
    float ls = logf(m);
    int lo = s_low_index_f(ls, log_sigmas, n);
    float low = log_sigmas[lo], high = log_sigmas[lo + 1];
    float w = (low - ls) / (low - high);
    if (w < 0)
        w = 0;
    if (w > 1)
        w = 1;
    return (1.0f - w) * (float)lo + w * (float)(lo + 1);
}

void sdx_sched_karras(double *out, int n, double sigma_min, double sigma_max)
{
    double rho = 7.0;
    double *ramp = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!ramp)
        return;
    sdx_np_linspace(ramp, 0.0, 1.0, n);
    double min_inv_rho = pow(sigma_min, 1.0 / rho);
    double max_inv_rho = pow(sigma_max, 1.0 / rho);
    for (int i = 0; i < n; i++)
        out[i] = pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
    free(ramp);
}

/* ---------------------------------------------------------------- torch */

/* torch.linspace(start, end, steps, dtype=float32) as libtorch 1.13's AVX2
   kernel computes it (the capability diffusers' references ran with; the
   AVX512 kernel differs in a few betas by one ulp but gives the same
   alphas): the step is a float, the first half counts up from `start`, the
   second half back from `end`, `start + step * idx` is contracted to an FMA,
   and pairs of 8-wide vectors extend their first element by k * step. */
static float s_lin_elem(float start, float end, float step, int64_t idx, int64_t steps)
{
    int64_t halfway = steps / 2;
    if (idx < halfway)
        return fmaf(step, (float)idx, start);
    return fmaf(-step, (float)(steps - idx - 1), end);
}

static void s_torch_linspace_f32(float *out, double start_d, double end_d, int steps)
{
    const int V = 8;
    float start = (float)start_d, end = (float)end_d;
    if (steps == 1) {
        out[0] = start;
        return;
    }
    float step = (end - start) / (float)(steps - 1);
    int64_t i = 0, idx = 0;
    for (; i <= (int64_t)steps - 2 * V; i += 2 * V) {
        for (int r = 0; r < 2; r++, idx += V) {
            float base = s_lin_elem(start, end, step, idx, steps);
            for (int k = 0; k < V; k++)
                out[i + r * V + k] = base + (float)k * step;
        }
    }
    for (; i < steps; i++, idx++)
        out[i] = s_lin_elem(start, end, step, idx, steps);
}

/* torch.cumprod on the CPU accumulates in double (acc_type<float>) and
   rounds each partial product to float. */
static void s_torch_cumprod_f32(float *out, const float *in, int n)
{
    double acc = 1.0;
    for (int i = 0; i < n; i++) {
        acc *= (double)in[i];
        out[i] = (float)acc;
    }
}

static double s_alpha_bar_cos(double t)
{
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

int sdx_sched_make_betas(sdx_scheduler_t *s, bool zero_snr_floor)
{
    const sdx_sched_config_t *c = &s->cfg;
    int T = c->n_trained_betas > 0 ? c->n_trained_betas : c->num_train_timesteps;
    if (T < 2 || T > SDX_SCHED_MAX_BETAS)
        return sdx_set_error("scheduler: num_train_timesteps %d out of range", T);
    float *b = calloc((size_t)T, sizeof(float));
    float *a = calloc((size_t)T, sizeof(float));
    float *ac = calloc((size_t)T, sizeof(float));
    if (!b || !a || !ac) {
        free(b);
        free(a);
        free(ac);
        return sdx_set_error("scheduler: out of memory");
    }
    if (c->n_trained_betas > 0) {
        for (int i = 0; i < T; i++)
            b[i] = (float)c->trained_betas[i];
    } else if (sdx_sched_is(c->beta_schedule, "linear")) {
        s_torch_linspace_f32(b, c->beta_start, c->beta_end, T);
    } else if (sdx_sched_is(c->beta_schedule, "scaled_linear")) {
        s_torch_linspace_f32(b, pow(c->beta_start, 0.5), pow(c->beta_end, 0.5), T);
        for (int i = 0; i < T; i++)
            b[i] = b[i] * b[i];
    } else if (sdx_sched_is(c->beta_schedule, "squaredcos_cap_v2")) {
        for (int i = 0; i < T; i++) {
            double t1 = (double)i / T, t2 = (double)(i + 1) / T;
            double v = 1 - s_alpha_bar_cos(t2) / s_alpha_bar_cos(t1);
            b[i] = (float)(v < 0.999 ? v : 0.999);
        }
    } else {
        free(b);
        free(a);
        free(ac);
        return sdx_set_error("scheduler %s: beta_schedule '%s' is not implemented", s->cls->name,
                             c->beta_schedule);
    }
    if (c->rescale_betas_zero_snr) {
        /* rescale_zero_terminal_snr, in float32 like the torch original */
        for (int i = 0; i < T; i++)
            a[i] = 1.0f - b[i];
        s_torch_cumprod_f32(ac, a, T);
        float *sq = a; /* reuse */
        for (int i = 0; i < T; i++)
            sq[i] = sqrtf(ac[i]);
        float s0 = sq[0], sT = sq[T - 1];
        float scale = s0 / (s0 - sT);
        for (int i = 0; i < T; i++)
            sq[i] = (sq[i] - sT) * scale;
        for (int i = 0; i < T; i++)
            ac[i] = sq[i] * sq[i]; /* alphas_bar */
        b[0] = 1.0f - ac[0];
        for (int i = 1; i < T; i++)
            b[i] = 1.0f - ac[i] / ac[i - 1];
    }
    for (int i = 0; i < T; i++)
        a[i] = 1.0f - b[i];
    s_torch_cumprod_f32(ac, a, T);
    if (c->rescale_betas_zero_snr && zero_snr_floor)
        ac[T - 1] = 0x1p-24f; /* so the first sigma is not inf */
    free(s->betas);
    free(s->alphas);
    free(s->alphas_cumprod);
    s->betas = b;
    s->alphas = a;
    s->alphas_cumprod = ac;
    s->T = T;
    s->final_alpha_cumprod = c->set_alpha_to_one ? 1.0f : ac[0];
    return 0;
}

float *sdx_sched_train_sigmas(const sdx_scheduler_t *s)
{
    float *sg = malloc(sizeof(float) * (size_t)s->T);
    if (!sg) {
        sdx_set_error("scheduler: out of memory");
        return NULL;
    }
    for (int i = 0; i < s->T; i++)
        sg[i] = sqrtf((1.0f - s->alphas_cumprod[i]) / s->alphas_cumprod[i]);
    return sg;
}

/* ---------------------------------------------------------------- tables */

void sdx_sched_set_tables(sdx_scheduler_t *s, double *timesteps, int n_timesteps, float *sigmas,
                          int n_sigmas)
{
    free(s->timesteps);
    free(s->sigmas);
    s->timesteps = timesteps;
    s->n_timesteps = n_timesteps;
    s->sigmas = sigmas;
    s->n_sigmas = sigmas ? n_sigmas : 0;
}

static double *s_alloc_d(int n)
{
    double *d = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    if (!d)
        sdx_set_error("scheduler: out of memory");
    return d;
}

double *sdx_sched_spaced_timesteps(sdx_scheduler_t *s, int n, bool as_float32)
{
    const sdx_sched_config_t *c = &s->cfg;
    int T = c->num_train_timesteps;
    double *ts = s_alloc_d(n);
    if (!ts)
        return NULL;
    if (sdx_sched_is(c->timestep_spacing, "linspace")) {
        sdx_np_linspace(ts, 0, T - 1, n);
        for (int i = 0; i < n / 2; i++) {
            double t = ts[i];
            ts[i] = ts[n - 1 - i];
            ts[n - 1 - i] = t;
        }
        for (int i = 0; i < n; i++)
            ts[i] = as_float32 ? (double)(float)ts[i] : sdx_np_round(ts[i]);
    } else if (sdx_sched_is(c->timestep_spacing, "leading")) {
        int ratio = T / n;
        for (int i = 0; i < n; i++)
            ts[i] = (double)((int64_t)(n - 1 - i) * ratio + c->steps_offset);
    } else if (sdx_sched_is(c->timestep_spacing, "trailing")) {
        double ratio = (double)T / n;
        /* np.arange(T, 0, -ratio): length ceil(T / ratio), values T + i * delta */
        int len = (int)ceil((0.0 - T) / -ratio);
        double delta = ((double)T - ratio) - (double)T;
        double *tmp = s_alloc_d(len);
        if (!tmp) {
            free(ts);
            return NULL;
        }
        for (int i = 0; i < len; i++)
            tmp[i] = sdx_np_round((double)T + (double)i * delta) - 1;
        free(ts);
        ts = tmp;
        s->n_timesteps = len;
        return ts;
    } else {
        free(ts);
        sdx_set_error("scheduler %s: timestep_spacing '%s' is not supported (linspace, leading, "
                      "trailing)",
                      s->cls->name, c->timestep_spacing);
        return NULL;
    }
    s->n_timesteps = n;
    return ts;
}

double *sdx_sched_spaced_timesteps_dpm(sdx_scheduler_t *s, int n, int last_timestep)
{
    const sdx_sched_config_t *c = &s->cfg;
    int T = c->num_train_timesteps;
    double *ts = NULL;
    if (sdx_sched_is(c->timestep_spacing, "linspace")) {
        double *l = s_alloc_d(n + 1);
        ts = s_alloc_d(n);
        if (!l || !ts) {
            free(l);
            free(ts);
            return NULL;
        }
        sdx_np_linspace(l, 0, last_timestep - 1, n + 1);
        for (int i = 0; i < n; i++)
            ts[i] = sdx_np_round(l[n - i]);
        free(l);
        s->n_timesteps = n;
    } else if (sdx_sched_is(c->timestep_spacing, "leading")) {
        int ratio = last_timestep / (n + 1);
        ts = s_alloc_d(n);
        if (!ts)
            return NULL;
        for (int i = 0; i < n; i++)
            ts[i] = (double)((int64_t)(n - i) * ratio + c->steps_offset);
        s->n_timesteps = n;
    } else if (sdx_sched_is(c->timestep_spacing, "trailing")) {
        double ratio = (double)T / n;
        double start = last_timestep;
        int len = (int)ceil((0.0 - start) / -ratio);
        double delta = (start - ratio) - start;
        ts = s_alloc_d(len);
        if (!ts)
            return NULL;
        for (int i = 0; i < len; i++)
            ts[i] = sdx_np_round(start + (double)i * delta) - 1;
        s->n_timesteps = len;
    } else {
        sdx_set_error("scheduler %s: timestep_spacing '%s' is not supported (linspace, leading, "
                      "trailing)",
                      s->cls->name, c->timestep_spacing);
        return NULL;
    }
    return ts;
}

/* ---------------------------------------------------------------- tensors */

int sdx_sched_give(sdx_scope_t *L, sdx_scope_t *S, sdx_tensor_t *t, sdx_tensor_t **out)
{
    if (sdx_scope_keep(L, t) != 0)
        return -1;
    if (S && sdx_scope_adopt(S, t) != 0) {
        sdx_tensor_free(&t);
        return -1;
    }
    *out = t;
    return 0;
}

int sdx_sched_push_hist(sdx_scheduler_t *s, const sdx_tensor_t *t, int keep)
{
    sdx_tensor_t *a = NULL;
    if (t && sdx_alias(NULL, &a, t) != 0)
        return -1;
    if (keep > SDX_SCHED_MAX_ORDER + 2)
        keep = SDX_SCHED_MAX_ORDER + 2;
    if (s->n_hist < keep)
        s->n_hist = keep;
    sdx_tensor_free(&s->hist[0]);
    for (int i = 0; i < keep - 1; i++)
        s->hist[i] = s->hist[i + 1];
    s->hist[keep - 1] = a;
    return 0;
}

int sdx_sched_save_sample(sdx_scheduler_t *s, const sdx_tensor_t *t)
{
    sdx_tensor_t *a = NULL;
    if (t && sdx_alias(NULL, &a, t) != 0)
        return -1;
    sdx_tensor_free(&s->saved_sample);
    s->saved_sample = a;
    return 0;
}

void sdx_sched_reset_state(sdx_scheduler_t *s)
{
    for (int i = 0; i < SDX_SCHED_MAX_ORDER + 2; i++)
        sdx_tensor_free(&s->hist[i]);
    s->n_hist = 0;
    sdx_tensor_free(&s->saved_sample);
    s->has_saved_dt = false;
    s->saved_dt = 0;
    s->lower_order_nums = 0;
    s->counter = 0;
    s->this_order = 0;
    s->step_index = -1;
    s->begin_index = -1;
    s->draws = 0;
}

int sdx_sched_randn(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                    const sdx_tensor_t *like, sdx_dtype_t dt, sdx_generator_t *gen)
{
    if (!gen)
        return sdx_set_error("scheduler %s draws noise in step(): a generator is required",
                             s->cls->name);
    int64_t shape[SDX_MAX_DIMS];
    int nd = sdx_tensor_shape(like, shape);
    if (sdx_randn(S, out, gen, shape, nd, dt, sdx_tensor_device(like)) != 0)
        return -1;
    s->draws++;
    if (s->noise_fn)
        s->noise_fn(s->noise_ctx, *out);
    return 0;
}

/* ---------------------------------------------------------------- shared ops */

static int s_check_index(const sdx_scheduler_t *s, int i, int n, const char *what)
{
    if (!s->timesteps)
        return sdx_set_error("scheduler %s: set_timesteps was not called", s->cls->name);
    if (i < 0 || i >= n)
        return sdx_set_error("scheduler %s: %s index %d out of range [0, %d)", s->cls->name, what,
                             i, n);
    return 0;
}

int sdx_sched_scale_identity(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                             const sdx_tensor_t *x, int i)
{
    if (s_check_index(s, i, s->n_timesteps, "step") != 0)
        return -1;
    return sdx_alias(S, out, x);
}

int sdx_sched_scale_sigma(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                          const sdx_tensor_t *x, int i)
{
    if (s_check_index(s, i, s->n_timesteps, "step") != 0)
        return -1;
    float sigma = s->sigmas[i];
    float d = sqrtf(sigma * sigma + 1.0f);
    s->step_index = i;
    return sdx_div_scalar(S, out, x, d);
}

int sdx_sched_add_noise_sigma(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                              const sdx_tensor_t *x0, const sdx_tensor_t *noise, int i)
{
    if (s_check_index(s, i, s->n_timesteps, "timestep") != 0)
        return -1;
    return sdx_add_scaled(S, out, x0, noise, s->sigmas[i]);
}

int sdx_sched_add_noise_alpha(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                              const sdx_tensor_t *x0, const sdx_tensor_t *noise, int i)
{
    if (s_check_index(s, i, s->n_timesteps, "timestep") != 0)
        return -1;
    int t = (int)s->timesteps[i];
    if (t < 0 || t >= s->T)
        return sdx_set_error("scheduler %s: timestep %d outside the training range", s->cls->name,
                             t);
    float ac = s->alphas_cumprod[t];
    float a = sqrtf(ac), b = sqrtf(1.0f - ac);
    return sdx_lincomb(S, out, a, x0, b, noise);
}

int sdx_sched_add_noise_vp(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *x0, const sdx_tensor_t *noise, int i)
{
    if (s_check_index(s, i, s->n_timesteps, "timestep") != 0)
        return -1;
    sdx_sched_ast_t a = sdx_sched_ast(s->sigmas[i]);
    return sdx_lincomb(S, out, a.alpha, x0, a.sigma, noise);
}

int sdx_sched_pred_x0_sigma(const sdx_scheduler_t *s, sdx_scope_t *L, sdx_tensor_t **out,
                            const sdx_tensor_t *x, const sdx_tensor_t *eps, float sigma)
{
    const char *pt = s->cfg.prediction_type;
    if (sdx_sched_is(pt, "epsilon"))
        return sdx_add_scaled(L, out, x, eps, -(double)sigma);
    if (sdx_sched_is(pt, "v_prediction")) {
        float s2 = sigma * sigma + 1.0f;
        float c_out = -sigma / sqrtf(s2);
        return sdx_lincomb(L, out, c_out, eps, 1.0 / (double)s2, x);
    }
    return sdx_alias(L, out, eps); /* "sample" */
}

float sdx_sched_sigma_init_noise(const sdx_scheduler_t *s)
{
    float m = 0;
    for (int i = 0; i < s->n_sigmas; i++)
        if (s->sigmas[i] > m || isnan(s->sigmas[i]))
            m = s->sigmas[i];
    const char *sp = s->cfg.timestep_spacing;
    if (sdx_sched_is(sp, "linspace") || sdx_sched_is(sp, "trailing"))
        return m;
    return sqrtf(m * m + 1.0f);
}
