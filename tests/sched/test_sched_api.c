/*  test_sched_api.c - the scheduler interface around the numerics that
    test_sched_parity covers: the alias table, unknown names, configuration
    layering (class defaults < SDXL defaults < scheduler_config.json <
    alias < caller JSON < karras option,
    unknown keys ignored, Python's -Infinity accepted), the Karras flag,
    img2img helpers (strength -> begin index, add_noise), timestep tensors,
    step-order errors and tensor leaks. Needs no golden data. */
#include "sdx_scheduler.h"
#include "sdx_test.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const sdx_device_t s_cpu = {SDX_CPU, 0};

static cJSON *s_config(const sdx_scheduler_t *s)
{
    char *t = sdx_scheduler_config_json(s);
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    free(t);
    return j;
}

static void test_names(void)
{
    static const struct {
        const char *name, *cls, *algo;
        int karras;
    } cases[] = {
        {"Euler", "EulerDiscreteScheduler", NULL, 0},
        {"euler a", "EulerAncestralDiscreteScheduler", NULL, -1},
        {"EulerAncestralDiscrete", "EulerAncestralDiscreteScheduler", NULL, -1},
        {"eulerdiscretescheduler", "EulerDiscreteScheduler", NULL, 0},
        {"Euler Karras", "EulerDiscreteScheduler", NULL, 1},
        {"DPM++ 2M", "DPMSolverMultistepScheduler", "dpmsolver++", 0},
        {"DPM++ 2M Karras", "DPMSolverMultistepScheduler", "dpmsolver++", 1},
        {"DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", "sde-dpmsolver++", 1},
        {"DPMSolverMultistep", "DPMSolverMultistepScheduler", "dpmsolver++", 0},
        {"DPM2 a", "KDPM2AncestralDiscreteScheduler", NULL, 0},
        {"DPM2", "KDPM2DiscreteScheduler", NULL, 0},
        {"Heun", "HeunDiscreteScheduler", NULL, 0},
        {"LMS", "LMSDiscreteScheduler", NULL, 0},
        {"DDIM", "DDIMScheduler", NULL, -1},
        {"DDPM", "DDPMScheduler", NULL, -1},
        {"PLMS", "PNDMScheduler", NULL, -1},
        {"UniPC", "UniPCMultistepScheduler", NULL, 0},
        {"UniPCMultistepScheduler", "UniPCMultistepScheduler", NULL, 0},
        {"DEIS", "DEISMultistepScheduler", "deis", 0},
        {"LCM", "LCMScheduler", NULL, -1},
        {"DPMSolverSinglestep", "DPMSolverSinglestepScheduler", "dpmsolver++", 0},
        {"euler_karras", "EulerDiscreteScheduler", NULL, 1},
        {"KDPM2", "KDPM2DiscreteScheduler", NULL, 0},
        {"kdpm2", "KDPM2DiscreteScheduler", NULL, 0},
        {"KDPM2 a", "KDPM2AncestralDiscreteScheduler", NULL, 0},
        {"kdpm2_a", "KDPM2AncestralDiscreteScheduler", NULL, 0},
        {"DPM++ singlestep", "DPMSolverSinglestepScheduler", "dpmsolver++", 0},
        {"dpmpp_singlestep", "DPMSolverSinglestepScheduler", "dpmsolver++", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sdx_scheduler_t *s = sdx_scheduler_new(cases[i].name, NULL);
        if (!sdx_test_check(s != NULL, "name '%s' resolves (%s)", cases[i].name,
                            s ? "ok" : sdx_last_error()))
            continue;
        sdx_test_check(strcmp(sdx_scheduler_class_name(s), cases[i].cls) == 0,
                       "'%s' -> %s (got %s)", cases[i].name, cases[i].cls,
                       sdx_scheduler_class_name(s));
        cJSON *cfg = s_config(s);
        const cJSON *k = cJSON_GetObjectItem(cfg, "use_karras_sigmas");
        if (cases[i].karras >= 0)
            sdx_test_check(k && cJSON_IsTrue(k) == (cases[i].karras == 1),
                           "'%s' use_karras_sigmas %d", cases[i].name, cases[i].karras);
        else
            sdx_test_check(k == NULL, "'%s' has no use_karras_sigmas (unknown to the class)",
                           cases[i].name);
        if (cases[i].algo) {
            const cJSON *a = cJSON_GetObjectItem(cfg, "algorithm_type");
            sdx_test_check(cJSON_IsString(a) && !strcmp(a->valuestring, cases[i].algo),
                           "'%s' algorithm_type %s", cases[i].name, cases[i].algo);
        }
        /* SDXL defaults applied */
        const cJSON *sp = cJSON_GetObjectItem(cfg, "timestep_spacing");
        if (sp && strcmp(cases[i].cls, "DPMSolverSinglestepScheduler") != 0)
            sdx_test_check(!strcmp(sp->valuestring, "leading"), "'%s' timestep_spacing leading",
                           cases[i].name);
        cJSON_Delete(cfg);
        sdx_scheduler_destroy(&s);
        sdx_test_check(s == NULL, "destroy clears the pointer");
    }
    sdx_scheduler_t *s = sdx_scheduler_new("Euler b", NULL);
    const char *e = sdx_last_error();
    sdx_test_check(s == NULL && strstr(e, "Euler b") && strstr(e, "'Euler a'") &&
                       strstr(e, "'DPM++ 2M Karras'") && strstr(e, "EulerDiscreteScheduler"),
                   "unknown name fails listing the valid names");
    sdx_test_check(sdx_scheduler_new(NULL, NULL) == NULL, "NULL name fails");
    /* A1111's "DPM++ SDE" is k-diffusion's dpmpp_sde, which has no implementation
       here: the name must not resolve to something else. */
    s = sdx_scheduler_new("DPM++ SDE", NULL);
    sdx_test_check(s == NULL, "'DPM++ SDE' is not an alias (no DPMSolverSDEScheduler)");
    sdx_scheduler_destroy(&s);
    sdx_test_check(strstr(sdx_scheduler_names(), "DPM++ 2M SDE Karras") != NULL,
                   "names() lists the aliases");
}

static char *s_write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/sdx_sched_cfg_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_config(void)
{
    /* a model's scheduler_config.json: trailing spacing, unknown keys,
       Python's -Infinity */
    const char *cfg = "{\"_class_name\": \"EulerDiscreteScheduler\", \"_diffusers_version\": "
                      "\"0.19.0.dev0\", \"timestep_spacing\": \"trailing\", \"steps_offset\": 0, "
                      "\"some_future_key\": [1, 2], \"lambda_min_clipped\": -Infinity, "
                      "\"clip_sample\": false}";
    char *path = s_write_tmp(cfg);
    if (!sdx_test_check(path != NULL, "temp config written"))
        return;
    sdx_scheduler_opts_t o;
    sdx_scheduler_opts_init(&o);
    o.config_path = path;
    sdx_scheduler_t *s = sdx_scheduler_new("Euler", &o);
    if (sdx_test_check(s != NULL, "config file accepted (%s)", s ? "ok" : sdx_last_error())) {
        sdx_scheduler_set_timesteps(s, 4);
        /* np.arange(1000, 0, -250).round() - 1 */
        static const double want[4] = {999, 749, 499, 249};
        bool ok = sdx_scheduler_count(s) == 4;
        for (int i = 0; ok && i < 4; i++)
            ok = sdx_scheduler_timestep(s, i) == want[i];
        sdx_test_check(ok, "trailing spacing from the file: 999 749 499 249");
        int ns;
        const float *sg = sdx_scheduler_sigmas(s, &ns);
        sdx_test_check(ns == 5 && sdx_scheduler_init_noise_sigma(s) == sg[0],
                       "trailing: init_noise_sigma = max sigma (%g)",
                       sdx_scheduler_init_noise_sigma(s));
        sdx_scheduler_destroy(&s);
    }
    /* the same file under DPM: lambda_min_clipped = -inf parses, alias wins */
    s = sdx_scheduler_new("DPM++ 2M Karras", &o);
    if (sdx_test_check(s != NULL, "DPM++ 2M Karras over the file (%s)",
                       s ? "ok" : sdx_last_error())) {
        cJSON *c = s_config(s);
        sdx_test_check(cJSON_IsTrue(cJSON_GetObjectItem(c, "use_karras_sigmas")),
                       "alias overrides the file (karras on)");
        const cJSON *l = cJSON_GetObjectItem(c, "lambda_min_clipped");
        sdx_test_check(cJSON_IsString(l) && !strcmp(l->valuestring, "-inf"),
                       "lambda_min_clipped -Infinity read as -inf");
        cJSON_Delete(c);
        sdx_scheduler_destroy(&s);
    }
    /* caller JSON on top of all */
    o.config_json = "{\"use_karras_sigmas\": false, \"solver_order\": 3}";
    s = sdx_scheduler_new("DPM++ 2M Karras", &o);
    if (sdx_test_check(s != NULL, "caller JSON accepted")) {
        cJSON *c = s_config(s);
        sdx_test_check(cJSON_IsFalse(cJSON_GetObjectItem(c, "use_karras_sigmas")) &&
                           cJSON_GetObjectItem(c, "solver_order")->valueint == 3,
                       "caller JSON overrides alias and file");
        cJSON_Delete(c);
        sdx_scheduler_destroy(&s);
    }
    unlink(path);

    o.config_path = "/nonexistent/scheduler_config.json";
    o.config_json = NULL;
    s = sdx_scheduler_new("Euler", &o);
    sdx_test_check(s == NULL && strstr(sdx_last_error(), "/nonexistent"),
                   "missing config file fails naming it (%s)", sdx_last_error());
    sdx_scheduler_opts_init(&o);
    o.config_json = "{\"steps_offset\": \"one\"}";
    s = sdx_scheduler_new("Euler", &o);
    sdx_test_check(s == NULL && strstr(sdx_last_error(), "steps_offset"),
                   "wrong type fails naming the key (%s)", sdx_last_error());
    o.config_json = "{\"timestep_spacing\": \"sideways\"}";
    s = sdx_scheduler_new("Euler", &o);
    sdx_test_check(s && sdx_scheduler_set_timesteps(s, 10) != 0 &&
                       strstr(sdx_last_error(), "sideways"),
                   "unknown spacing fails at set_timesteps (%s)", sdx_last_error());
    sdx_scheduler_destroy(&s);
    o.config_json = "[1]";
    sdx_test_check(sdx_scheduler_new("Euler", &o) == NULL, "non-object JSON fails");

    /* Karras flag */
    sdx_scheduler_opts_init(&o);
    o.karras = 1;
    s = sdx_scheduler_new("Euler a", &o);
    sdx_test_check(s == NULL && strstr(sdx_last_error(), "Karras"),
                   "--karras on Euler a fails (%s)", sdx_last_error());
    s = sdx_scheduler_new("Euler", &o);
    sdx_scheduler_t *k = sdx_scheduler_new("Euler Karras", NULL);
    if (sdx_test_check(s && k, "Euler + karras and Euler Karras")) {
        sdx_scheduler_set_timesteps(s, 12);
        sdx_scheduler_set_timesteps(k, 12);
        bool same = sdx_scheduler_count(s) == sdx_scheduler_count(k);
        for (int i = 0; same && i < sdx_scheduler_count(s); i++)
            same = sdx_scheduler_timestep(s, i) == sdx_scheduler_timestep(k, i);
        sdx_test_check(same, "karras flag == Karras alias");
    }
    sdx_scheduler_destroy(&s);
    sdx_scheduler_destroy(&k);
    o.karras = 0;
    s = sdx_scheduler_new("DPM++ 2M Karras", &o);
    if (sdx_test_check(s != NULL, "karras=0 turns an alias's Karras off")) {
        cJSON *c = s_config(s);
        sdx_test_check(cJSON_IsFalse(cJSON_GetObjectItem(c, "use_karras_sigmas")),
                       "use_karras_sigmas false");
        cJSON_Delete(c);
    }
    sdx_scheduler_destroy(&s);
}

static void test_img2img(void)
{
    sdx_scheduler_t *e = sdx_scheduler_new("Euler", NULL);
    sdx_scheduler_t *h = sdx_scheduler_new("Heun", NULL);
    sdx_scheduler_t *d = sdx_scheduler_new("DDIM", NULL);
    if (!sdx_test_check(e && h && d, "schedulers for img2img"))
        goto out;
    sdx_test_check(sdx_scheduler_strength_begin(e, 0.6) < 0, "strength before set_timesteps fails");
    sdx_scheduler_set_timesteps(e, 10);
    sdx_scheduler_set_timesteps(h, 10);
    sdx_scheduler_set_timesteps(d, 10);
    /* init = int(10 * 0.6) = 6, t_start = 4, first index = t_start * order */
    sdx_test_check(sdx_scheduler_strength_begin(e, 0.6) == 4 && sdx_scheduler_begin_index(e) == 4,
                   "Euler strength 0.6 of 10 -> index 4");
    sdx_test_check(sdx_scheduler_strength_begin(h, 0.6) == 8 && sdx_scheduler_order(h) == 2,
                   "Heun strength 0.6 of 10 -> index 8 (order 2)");
    sdx_test_check(sdx_scheduler_strength_begin(d, 1.0) == 0, "strength 1 -> index 0");
    sdx_test_check(sdx_scheduler_strength_begin(d, 0.05) < 0, "strength leaving no step fails");
    sdx_test_check(sdx_scheduler_set_begin_index(d, 99) != 0, "begin index out of range fails");

    /* ensemble of experts, 10 Euler steps: 901 ... 1, cutoff round(1000 - 800) = 200 */
    sdx_test_check(sdx_scheduler_denoising_end_count(e, 0.8) == 8,
                   "denoising_end 0.8: 8 of 10 steps (t >= 200)");
    sdx_test_check(sdx_scheduler_denoising_start_begin(e, 0.8) == 8 &&
                       sdx_scheduler_begin_index(e) == 8,
                   "denoising_start 0.8: begin at index 8 (t < 200)");
    /* Heun 10 steps: 19 entries, t < 200 are 101,101,1,1 -> 4, widened to 5 */
    sdx_test_check(sdx_scheduler_denoising_start_begin(h, 0.8) == 14,
                   "Heun denoising_start 0.8: begin 14 (pair not split)");
    sdx_test_check(sdx_scheduler_denoising_end_count(e, 1.5) < 0, "denoising_end 1.5 fails");

    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *g = sdx_generator_new(7);
    int64_t shp[4] = {1, 4, 8, 8};
    sdx_tensor_t *x0, *nz, *out, *ref;
    sdx_randn(S, &x0, g, shp, 4, SDX_F32, s_cpu);
    sdx_randn(S, &nz, g, shp, 4, SDX_F32, s_cpu);
    /* sigma schedulers: x0 + noise * sigma[i] */
    int ns;
    const float *sg = sdx_scheduler_sigmas(e, &ns);
    sdx_scheduler_add_noise(e, S, &out, x0, nz, 4);
    sdx_add_scaled(S, &ref, x0, nz, sg[4]);
    sdx_test_check(sdx_test_max_abs(out, ref) == 0, "Euler add_noise = x0 + sigma[4] noise");
    /* alpha schedulers: sqrt(ac[t]) x0 + sqrt(1 - ac[t]) noise; DDIM t4 = 401 */
    double t = sdx_scheduler_timestep(d, 4);
    sdx_test_check(t == 501, "DDIM 10 steps: timesteps[4] = 501 (got %g)", t);
    sdx_scheduler_add_noise(d, S, &out, x0, nz, 4);
    double sq = 0;
    sdx_tensor_t *dd;
    sdx_sub(S, &dd, out, x0);
    sdx_test_check(sdx_test_rel_l2(out, x0) < 1.5 && sdx_test_rel_l2(out, x0) > 0.1,
                   "DDIM add_noise mixes noise in (rel %.3f)", sdx_test_rel_l2(out, x0));
    (void)sq;
    /* a DPM++ 2M img2img run from the begin index stays finite */
    sdx_scheduler_t *p = sdx_scheduler_new("DPM++ 2M Karras", NULL);
    sdx_scheduler_set_timesteps(p, 10);
    int b = sdx_scheduler_strength_begin(p, 0.5);
    sdx_tensor_t *x;
    bool ok = sdx_scheduler_add_noise(p, S, &x, x0, nz, b) == 0;
    for (int i = b; ok && i < sdx_scheduler_count(p); i++) {
        sdx_tensor_t *xin, *eps;
        ok = sdx_scheduler_scale_model_input(p, S, &xin, x, i) == 0 &&
             sdx_mul_scalar(S, &eps, xin, 0.3) == 0 &&
             sdx_scheduler_step(p, S, &x, eps, i, x, g) == 0;
    }
    bool fin = false;
    sdx_isfinite_all(x, &fin);
    sdx_test_check(ok && fin, "DPM++ 2M Karras img2img from index %d runs, finite", b);
    sdx_scheduler_destroy(&p);
    sdx_generator_free(&g);
    sdx_scope_free(&S);
out:
    sdx_scheduler_destroy(&e);
    sdx_scheduler_destroy(&h);
    sdx_scheduler_destroy(&d);
}

static void test_misc(void)
{
    sdx_scheduler_t *s = sdx_scheduler_new("DDIM", NULL);
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *t = NULL, *x, *y;
    sdx_test_check(sdx_scheduler_count(s) == 0, "no tables before set_timesteps");
    int64_t shp[2] = {2, 3};
    sdx_zeros(S, &x, shp, 2, SDX_F32, s_cpu);
    sdx_test_check(sdx_scheduler_step(s, S, &y, x, 0, x, NULL) != 0,
                   "step before set_timesteps fails");
    sdx_test_check(sdx_scheduler_set_timesteps(s, 0) != 0 &&
                       sdx_scheduler_set_timesteps(s, 5000) != 0,
                   "steps 0 and 5000 rejected");
    sdx_scheduler_set_timesteps(s, 4);
    sdx_scheduler_timestep_tensor(s, S, &t, 0, s_cpu);
    double v = 0;
    sdx_item(t, &v);
    sdx_test_check(sdx_tensor_dtype(t) == SDX_I64 && v == 751, "DDIM timestep tensor int64 751");
    sdx_test_check(sdx_scheduler_step(s, S, &y, x, 7, x, NULL) != 0, "step index out of range");
    sdx_scheduler_destroy(&s);

    s = sdx_scheduler_new("Euler a", NULL);
    sdx_scheduler_set_timesteps(s, 4);
    sdx_scheduler_timestep_tensor(s, S, &t, 0, s_cpu);
    sdx_test_check(sdx_tensor_dtype(t) == SDX_F32, "Euler timestep tensor float32");
    sdx_test_check(sdx_scheduler_step(s, S, &y, x, 0, x, NULL) != 0 &&
                       strstr(sdx_last_error(), "generator"),
                   "ancestral step without a generator fails (%s)", sdx_last_error());
    sdx_scheduler_destroy(&s);

    /* LCM: 4 steps from the 50-step skipping schedule */
    s = sdx_scheduler_new("LCM", NULL);
    sdx_scheduler_set_timesteps(s, 4);
    sdx_test_check(sdx_scheduler_count(s) == 4 && sdx_scheduler_timestep(s, 0) == 999 &&
                       sdx_scheduler_timestep(s, 1) == 759,
                   "LCM 4 steps start 999, 759");
    sdx_scheduler_destroy(&s);
    sdx_scope_free(&S);
}

/* every scheduler through a short loop: no tensor leaks, finite output */
static void test_leaks(void)
{
    static const char *names[] = {"Euler",
                                  "Euler a",
                                  "Euler Karras",
                                  "DPM++ 2M",
                                  "DPM++ 2M Karras",
                                  "DPM++ 2M SDE Karras",
                                  "DPM++ 2S",
                                  "DPM2",
                                  "DPM2 a",
                                  "Heun",
                                  "LMS",
                                  "DDIM",
                                  "DDPM",
                                  "PLMS",
                                  "UniPC",
                                  "DEIS",
                                  "LCM"};
    int64_t before = sdx_tensor_live_count();
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        for (int order = 1; order <= 3; order++) {
            char js[64];
            snprintf(js, sizeof js, "{\"solver_order\": %d}", order);
            sdx_scheduler_opts_t o;
            sdx_scheduler_opts_init(&o);
            o.config_json = js;
            o.eta = 0.5;
            sdx_scheduler_t *s = sdx_scheduler_new(names[n], &o);
            if (!s)
                continue;
            sdx_scope_t *S = sdx_scope_new();
            sdx_generator_t *g = sdx_generator_new(3);
            int64_t shp[4] = {1, 4, 4, 4};
            sdx_tensor_t *x, *r;
            if (sdx_scheduler_set_timesteps(s, 7) != 0) {
                sdx_test_check(order == 3 && strstr(sdx_last_error(), "solver_order 3"),
                               "%s (solver_order %d) refused: %s", names[n], order,
                               sdx_last_error());
                sdx_generator_free(&g);
                sdx_scope_free(&S);
                sdx_scheduler_destroy(&s);
                continue;
            }
            sdx_randn(S, &r, g, shp, 4, SDX_F32, s_cpu);
            sdx_mul_scalar(S, &x, r, sdx_scheduler_init_noise_sigma(s));
            bool ok = true;
            for (int i = 0; ok && i < sdx_scheduler_count(s); i++) {
                sdx_tensor_t *xin, *eps;
                ok = sdx_scheduler_scale_model_input(s, S, &xin, x, i) == 0 &&
                     sdx_tanh(S, &eps, xin) == 0 && sdx_scheduler_step(s, S, &x, eps, i, x, g) == 0;
            }
            bool fin = false;
            sdx_isfinite_all(x, &fin);
            if (order == 1 || order == 3)
                sdx_test_check(ok && fin, "%s (solver_order %d): 7-step loop finite (%s)", names[n],
                               order, ok ? "ok" : sdx_last_error());
            sdx_generator_free(&g);
            sdx_scope_free(&S);
            sdx_scheduler_destroy(&s);
        }
    }
    sdx_test_check(sdx_tensor_live_count() == before, "no tensor handles leaked (%lld -> %lld)",
                   (long long)before, (long long)sdx_tensor_live_count());
}

/* half-precision latents: the step returns the model output's dtype
   (diffusers upcasts inside Euler/DPM and casts back) */
static void test_f16(void)
{
    static const char *names[] = {"Euler",
                                  "Euler a",
                                  "DPM++ 2M Karras",
                                  "DPM++ 2M SDE Karras",
                                  "UniPC",
                                  "DDIM",
                                  "Heun",
                                  "DPM2 a",
                                  "LMS",
                                  "DEIS",
                                  "LCM",
                                  "PLMS",
                                  "DDPM",
                                  "DPM++ 2S",
                                  "DPM2"};
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        sdx_scheduler_t *s = sdx_scheduler_new(names[n], NULL);
        sdx_scope_t *S = sdx_scope_new();
        sdx_generator_t *g = sdx_generator_new(5);
        int64_t shp[4] = {1, 4, 4, 4};
        sdx_tensor_t *x, *r;
        sdx_scheduler_set_timesteps(s, 5);
        sdx_randn(S, &r, g, shp, 4, SDX_F16, s_cpu);
        sdx_mul_scalar(S, &x, r, sdx_scheduler_init_noise_sigma(s));
        bool ok = true;
        for (int i = 0; ok && i < sdx_scheduler_count(s); i++) {
            sdx_tensor_t *xin, *eps;
            ok = sdx_scheduler_scale_model_input(s, S, &xin, x, i) == 0 &&
                 sdx_mul_scalar(S, &eps, xin, 0.5) == 0 &&
                 sdx_scheduler_step(s, S, &x, eps, i, x, g) == 0 && sdx_tensor_dtype(x) == SDX_F16;
        }
        bool fin = false;
        sdx_isfinite_all(x, &fin);
        sdx_test_check(ok && fin, "%s: float16 loop keeps float16, finite (%s)", names[n],
                       ok ? "ok" : sdx_last_error());
        sdx_generator_free(&g);
        sdx_scope_free(&S);
        sdx_scheduler_destroy(&s);
    }
}

int main(void)
{
    test_names();
    test_config();
    test_img2img();
    test_misc();
    test_leaks();
    test_f16();
    return sdx_test_done();
}
