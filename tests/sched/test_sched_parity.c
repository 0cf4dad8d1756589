/*  test_sched_parity.c - every scheduler against diffusers 0.27.2.

    For one golden file ref/schedulers/<NAME>.safetensors (argv[1]; all of
    them without an argument): the timestep and sigma tables for 1, 4 and
    25 steps and init_noise_sigma, exactly (to float rounding), and the
    README's trajectory (x0 = randn * init_noise_sigma, eps = 0.5 tanh(xin)
    + 0.001 t, one generator for the loop): every model input, every step's
    output, every noise draw and the final sample under 1e-4 relative L2.

    Tolerances: integer timesteps must be equal; float tables within 4e-6
    relative (a few float32 ulps: torch/numpy's log and exp kernels are not
    glibc's); trajectories 1e-4 (the bar) though they land near
    1e-6. CPU, float32. */
#include "sdx_scheduler.h"
#include "sdx_test.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TABLE_TOL 4e-6
#define TRAJ_TOL 1e-4

static cJSON *s_json;

/* schedulers.json has -Infinity for lambda_min_clipped: not JSON. */
static void s_fix_nonjson(char *t)
{
    for (char *p = t; (p = strstr(p, "-Infinity")) != NULL;)
        memcpy(p, "-1.0e308 ", 9);
    for (char *p = t; (p = strstr(p, "Infinity")) != NULL;)
        memcpy(p, "1.0e308 ", 8);
    for (char *p = t; (p = strstr(p, "NaN")) != NULL;)
        memcpy(p, "0.0", 3);
}

static double *s_host(const sdx_tensor_t *t, int64_t *n)
{
    *n = sdx_tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)(*n > 0 ? *n : 1));
    if (d && sdx_to_host(t, SDX_F64, d, sizeof(double) * (size_t)*n) != 0) {
        free(d);
        return NULL;
    }
    return d;
}

/* max relative element error (abs error against 1 for values below 1) */
static double s_table_err(const double *a, const double *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]) / (fabs(b[i]) > 1 ? fabs(b[i]) : 1);
        if (isnan(a[i]) != isnan(b[i]))
            d = INFINITY;
        if (!(d <= m))
            m = d;
    }
    return m;
}

static void s_check_tables(const char *name, sdx_scheduler_t *sch, sdx_safetensors_t *st,
                           const cJSON *entry, int n)
{
    char key[64];
    if (!sdx_test_check(sdx_scheduler_set_timesteps(sch, n) == 0, "%s n%d: set_timesteps (%s)",
                        name, n, sdx_last_error()))
        return;
    snprintf(key, sizeof key, "n%d.timesteps", n);
    sdx_tensor_t *ref = sdx_test_get(st, key);
    if (ref) {
        int64_t cnt;
        double *r = s_host(ref, &cnt);
        int c = sdx_scheduler_count(sch);
        if (sdx_test_check(c == cnt, "%s n%d: %d timesteps (diffusers %lld)", name, n, c,
                           (long long)cnt)) {
            double *m = malloc(sizeof(double) * (size_t)c);
            for (int i = 0; i < c; i++)
                m[i] = sdx_scheduler_timestep(sch, i);
            bool is_int = sdx_tensor_dtype(ref) == SDX_I64;
            sdx_test_check(is_int == sdx_scheduler_timesteps_are_int(sch),
                           "%s n%d: timesteps dtype %s", name, n, is_int ? "int64" : "float32");
            double e = s_table_err(m, r, cnt);
            sdx_test_check(is_int ? e == 0 : e <= TABLE_TOL, "%s n%d: timesteps max err %.2e", name,
                           n, e);
            if (e > (is_int ? 0 : TABLE_TOL))
                for (int i = 0; i < c; i++)
                    if (m[i] != r[i])
                        printf("   t[%d] = %.9g, diffusers %.9g\n", i, m[i], r[i]);
            free(m);
        }
        free(r);
        sdx_tensor_free(&ref);
    }
    snprintf(key, sizeof key, "n%d.sigmas", n);
    if (sdx_safetensors_find(st, key)) {
        sdx_tensor_t *rs = sdx_test_get(st, key);
        int64_t cnt;
        double *r = s_host(rs, &cnt);
        int ns = 0;
        const float *sg = sdx_scheduler_sigmas(sch, &ns);
        if (sdx_test_check(sg && ns == cnt, "%s n%d: %d sigmas (diffusers %lld)", name, n, ns,
                           (long long)cnt)) {
            double *m = malloc(sizeof(double) * (size_t)ns);
            for (int i = 0; i < ns; i++)
                m[i] = sg[i];
            double e = s_table_err(m, r, cnt);
            sdx_test_check(e <= TABLE_TOL, "%s n%d: sigmas max err %.2e", name, n, e);
            if (e > TABLE_TOL)
                for (int i = 0; i < ns; i++)
                    if (m[i] != r[i])
                        printf("   sigma[%d] = %.9g, diffusers %.9g\n", i, m[i], r[i]);
            free(m);
        }
        free(r);
        sdx_tensor_free(&rs);
    }
    snprintf(key, sizeof key, "n%d", n);
    const cJSON *tab = cJSON_GetObjectItem(cJSON_GetObjectItem(entry, "tables"), key);
    const cJSON *ins = cJSON_GetObjectItem(tab, "init_noise_sigma");
    if (cJSON_IsNumber(ins)) {
        double v = sdx_scheduler_init_noise_sigma(sch);
        sdx_test_check(fabs(v - ins->valuedouble) <= TABLE_TOL * fabs(ins->valuedouble),
                       "%s n%d: init_noise_sigma %.9g (diffusers %.9g)", name, n, v,
                       ins->valuedouble);
    }
}

typedef struct {
    sdx_tensor_t *draws[256];
    int n;
} s_noise_log_t;

static void s_on_noise(void *ctx, const sdx_tensor_t *noise)
{
    s_noise_log_t *log = ctx;
    if (log->n < 256)
        sdx_clone(NULL, &log->draws[log->n], noise);
    log->n++;
}

static void s_check_traj(const char *name, sdx_scheduler_t *sch, sdx_safetensors_t *st,
                         const cJSON *entry)
{
    int steps = cJSON_GetObjectItem(s_json, "traj_steps")->valueint;
    uint64_t traj_seed = (uint64_t)cJSON_GetObjectItem(s_json, "traj_seed")->valuedouble;
    uint64_t step_seed = (uint64_t)cJSON_GetObjectItem(s_json, "step_seed")->valuedouble;
    const cJSON *shp = cJSON_GetObjectItem(s_json, "traj_shape");
    int64_t shape[SDX_MAX_DIMS];
    int nd = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, shp) shape[nd++] = (int64_t)e->valuedouble;
    const cJSON *tj = cJSON_GetObjectItem(entry, "trajectory");
    const cJSON *dps = cJSON_GetObjectItem(tj, "noise_draws_per_step");
    sdx_device_t cpu = {SDX_CPU, 0};

    if (!sdx_test_check(sdx_scheduler_set_timesteps(sch, steps) == 0, "%s traj: set_timesteps",
                        name))
        return;
    sdx_tensor_t *ref_ts = sdx_test_get(st, "traj.timesteps");
    sdx_tensor_t *ref_x0 = sdx_test_get(st, "traj.x0");
    sdx_tensor_t *ref_in = sdx_test_get(st, "traj.model_input");
    sdx_tensor_t *ref_eps = sdx_test_get(st, "traj.eps");
    sdx_tensor_t *ref_out = sdx_test_get(st, "traj.x_after_step");
    sdx_tensor_t *ref_fin = sdx_test_get(st, "traj.final");
    sdx_tensor_t *ref_noise =
        sdx_safetensors_find(st, "traj.noise") ? sdx_test_get(st, "traj.noise") : NULL;
    if (!ref_ts || !ref_x0 || !ref_in || !ref_eps || !ref_out || !ref_fin)
        goto done;
    int count = sdx_scheduler_count(sch);
    sdx_test_check(count == sdx_tensor_size(ref_in, 0), "%s traj: %d model calls (diffusers %lld)",
                   name, count, (long long)sdx_tensor_size(ref_in, 0));
    {
        int64_t nts;
        double *r = s_host(ref_ts, &nts);
        double *m = malloc(sizeof(double) * (size_t)(count > 0 ? count : 1));
        for (int i = 0; i < count; i++)
            m[i] = sdx_scheduler_timestep(sch, i);
        double err = nts == count ? s_table_err(m, r, nts) : INFINITY;
        sdx_test_check(err <= TABLE_TOL, "%s traj: timesteps max err %.2e", name, err);
        free(r);
        free(m);
    }
    double ins = sdx_scheduler_init_noise_sigma(sch);
    const cJSON *jins = cJSON_GetObjectItem(tj, "init_noise_sigma");
    sdx_test_check(fabs(ins - jins->valuedouble) <= TABLE_TOL * fabs(jins->valuedouble),
                   "%s traj: init_noise_sigma %.9g (diffusers %.9g)", name, ins, jins->valuedouble);

    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *g0 = sdx_generator_new(traj_seed);
    sdx_generator_t *gen = sdx_generator_new(step_seed);
    s_noise_log_t log = {.n = 0};
    sdx_scheduler_set_noise_hook(sch, s_on_noise, &log);
    sdx_tensor_t *x, *r0;
    if (sdx_randn(S, &r0, g0, shape, nd, SDX_F32, cpu) != 0 ||
        sdx_mul_scalar(S, &x, r0, (float)ins) != 0) {
        sdx_test_check(false, "%s traj: initial draw (%s)", name, sdx_last_error());
        goto out;
    }
    sdx_test_close(x, ref_x0, 1e-6, "traj.x0");
    double worst_in = 0, worst_out = 0, worst_eps = 0;
    int at_in = -1, at_out = -1, bad_draws = 0, draws_before = 0;
    bool ok = true;
    for (int i = 0; i < count && ok; i++) {
        sdx_tensor_t *xin, *th, *eps, *eps2, *ri, *ro, *re;
        double t = sdx_scheduler_timestep(sch, i);
        if (sdx_scheduler_scale_model_input(sch, S, &xin, x, i) != 0 ||
            sdx_tanh(S, &th, xin) != 0 || sdx_mul_scalar(S, &eps, th, 0.5) != 0 ||
            sdx_add_scalar(S, &eps2, eps, 0.001 * t) != 0 ||
            sdx_scheduler_step(sch, S, &x, eps2, i, x, gen) != 0) {
            ok = sdx_test_check(false, "%s traj step %d: %s", name, i, sdx_last_error());
            break;
        }
        if (sdx_select(S, &ri, ref_in, 0, i) != 0 || sdx_select(S, &ro, ref_out, 0, i) != 0 ||
            sdx_select(S, &re, ref_eps, 0, i) != 0)
            break;
        double ei = sdx_test_rel_l2(xin, ri), eo = sdx_test_rel_l2(x, ro),
               ee = sdx_test_rel_l2(eps2, re);
        if (!(ei <= worst_in)) {
            worst_in = ei;
            at_in = i;
        }
        if (!(eo <= worst_out)) {
            worst_out = eo;
            at_out = i;
        }
        if (!(ee <= worst_eps))
            worst_eps = ee;
        int want = cJSON_GetArrayItem(dps, i) ? cJSON_GetArrayItem(dps, i)->valueint : 0;
        if (log.n - draws_before != want) {
            bad_draws++;
            printf("   step %d drew %d noise tensors, diffusers %d\n", i, log.n - draws_before,
                   want);
        }
        draws_before = log.n;
    }
    sdx_test_check(worst_in <= TRAJ_TOL, "%s traj: model_input worst rel_l2 %.2e (step %d)", name,
                   worst_in, at_in);
    sdx_test_check(worst_eps <= TRAJ_TOL, "%s traj: eps worst rel_l2 %.2e", name, worst_eps);
    sdx_test_check(worst_out <= TRAJ_TOL, "%s traj: x_after_step worst rel_l2 %.2e (step %d)", name,
                   worst_out, at_out);
    sdx_test_check(bad_draws == 0, "%s traj: noise draws per step match (%d total)", name, log.n);
    if (ref_noise) {
        double wn = 0;
        int64_t nref = sdx_tensor_size(ref_noise, 0);
        for (int j = 0; j < log.n && j < nref && j < 256; j++) {
            sdx_tensor_t *rn;
            if (sdx_select(S, &rn, ref_noise, 0, j) != 0)
                break;
            double en = sdx_test_rel_l2(log.draws[j], rn);
            if (!(en <= wn))
                wn = en;
        }
        sdx_test_check(log.n == nref && wn <= 1e-6, "%s traj: %d noise tensors, worst rel_l2 %.2e",
                       name, log.n, wn);
    }
    if (ok)
        sdx_test_close(x, ref_fin, TRAJ_TOL, "traj.final");
out:
    for (int j = 0; j < log.n && j < 256; j++)
        sdx_tensor_free(&log.draws[j]);
    sdx_scheduler_set_noise_hook(sch, NULL, NULL);
    sdx_generator_free(&g0);
    sdx_generator_free(&gen);
    sdx_scope_free(&S);
done:
    sdx_tensor_free(&ref_ts);
    sdx_tensor_free(&ref_x0);
    sdx_tensor_free(&ref_in);
    sdx_tensor_free(&ref_eps);
    sdx_tensor_free(&ref_out);
    sdx_tensor_free(&ref_fin);
    sdx_tensor_free(&ref_noise);
}

static void s_run(const char *name)
{
    const cJSON *entry = cJSON_GetObjectItem(cJSON_GetObjectItem(s_json, "schedulers"), name);
    if (!sdx_test_check(entry != NULL, "%s listed in schedulers.json", name))
        return;
    const char *cls = cJSON_GetObjectItem(entry, "cls")->valuestring;
    char *ov = cJSON_PrintUnformatted(cJSON_GetObjectItem(entry, "overrides"));
    sdx_scheduler_opts_t opts;
    sdx_scheduler_opts_init(&opts);
    opts.config_json = ov;
    sdx_scheduler_t *sch = sdx_scheduler_new(cls, &opts);
    free(ov);
    if (!sdx_test_check(sch != NULL, "%s: new(%s) (%s)", name, cls, sch ? "ok" : sdx_last_error()))
        return;
    char rel[256];
    snprintf(rel, sizeof rel, "ref/schedulers/%s.safetensors", name);
    sdx_safetensors_t *st = sdx_test_open(rel);
    if (st) {
        static const int ns[] = {1, 4, 25};
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            s_check_tables(name, sch, st, entry, ns[k]);
        s_check_traj(name, sch, st, entry);
        sdx_safetensors_close(&st);
    }
    sdx_scheduler_destroy(&sch);
}

int main(int argc, char **argv)
{
    char *text = sdx_test_read_file(sdx_test_path("ref/schedulers/schedulers.json"), NULL);
    if (!text)
        sdx_test_skip("ref/schedulers/schedulers.json missing");
    s_fix_nonjson(text);
    s_json = cJSON_Parse(text);
    free(text);
    if (!sdx_test_check(s_json != NULL, "schedulers.json parses"))
        return sdx_test_done();
    if (argc > 1) {
        for (int a = 1; a < argc; a++)
            s_run(argv[a]);
    } else {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(s_json, "schedulers")) s_run(e->string);
    }
    cJSON_Delete(s_json);
    return sdx_test_done();
}
