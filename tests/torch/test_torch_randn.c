/*  test_torch_randn.c - sdx_randn is bit-exact with PyTorch's CPU generator.

    torch.Generator("cpu").manual_seed(s) followed by torch.randn calls is
    replayed with one sdx_generator_t and successive sdx_randn calls, and
    compared with max abs diff 0 against:
    - hand-recorded draws (torch.randn(4) with seed 42: the < 16 element path);
    - every rng_draw_i of the golden pipeline references (seed per file from
      golden/README.md; draws in call order from one generator);
    - traj.noise of the ancestral / SDE scheduler references (step_seed of
      schedulers.json).
    The golden parts skip (77) when the golden folder is absent. */
#include "torch_test.h"

#include <stdio.h>
#include <string.h>

/* Draw `name`'s shape from g (f32, CPU) and compare bit-exact. */
static bool s_draw_matches(sdx_generator_t *g, sdx_tensor_t *ref, const char *what)
{
    int64_t shape[SDX_MAX_DIMS];
    int nd = sdx_tensor_shape(ref, shape);
    sdx_tensor_t *x = NULL;
    sdx_device_t cpu = {SDX_CPU, 0};
    if (sdx_randn(NULL, &x, g, shape, nd, SDX_F32, cpu) != 0)
        return tt_check(false, "%s: randn failed: %s", what, sdx_last_error());
    double d = tt_diff(x, ref);
    sdx_tensor_free(&x);
    return tt_check(d == 0.0, "%s bit-exact (max abs diff %g)", what, d);
}

static const struct {
    const char *file;
    uint64_t seed;
} s_pipelines[] = {
    {"ref/pipeline/t2i_euler.safetensors", 42},
    {"ref/pipeline/t2i_euler_a.safetensors", 43},
    {"ref/pipeline/t2i_dpmpp_2m_karras.safetensors", 44},
    {"ref/pipeline/t2i_ddim.safetensors", 45},
    {"ref/pipeline/t2i_unipc.safetensors", 46},
    {"ref/pipeline/t2i_euler_nipp2.safetensors", 47},
    {"ref/pipeline/t2i_euler_rescale07.safetensors", 48},
    {"ref/pipeline/t2i_euler_nonsquare.safetensors", 49},
    {"ref/pipeline/t2i_euler_clipskip2.safetensors", 50},
    {"ref/pipeline/img2img_euler_s06.safetensors", 51},
    {"ref/pipeline/refiner_base_part.safetensors", 52},
    {"ref/pipeline/controlnet.safetensors", 53},
    {"ref/pipeline/lora_diffusers_08.safetensors", 42},
    {"ref/pipeline/textual_inversion.safetensors", 55},
};

static const char *s_sde_schedulers[] = {
    "ref/schedulers/EulerAncestralDiscreteScheduler.safetensors",
    "ref/schedulers/KDPM2AncestralDiscreteScheduler.safetensors",
    "ref/schedulers/DPMSolverMultistepScheduler_sde_karras.safetensors",
    "ref/schedulers/DDPMScheduler.safetensors",
    "ref/schedulers/LCMScheduler.safetensors",
};

int main(void)
{
    sdx_device_t cpu = {SDX_CPU, 0};

    /* 1. Hand-recorded values: torch.manual_seed(42); torch.randn(4). */
    {
        sdx_generator_t *g = sdx_generator_new(42);
        sdx_tensor_t *x = NULL;
        int64_t shape[1] = {4};
        const double expect[4] = {0.3367, 0.1288, 0.2345, 0.2303};
        if (TT_OK(sdx_randn(NULL, &x, g, shape, 1, SDX_F32, cpu)))
            tt_values(x, shape, 1, expect, 5e-5, "seed 42 randn(4) = 0.3367 0.1288 0.2345 0.2303");
        sdx_tensor_free(&x);
        /* Same draw converted to f16 on creation equals the f32 draw cast. */
        sdx_generator_t *g2 = sdx_generator_new(42);
        sdx_tensor_t *h = NULL, *f = NULL, *hf = NULL;
        int64_t big[2] = {3, 40};
        if (TT_OK(sdx_randn(NULL, &h, g, big, 2, SDX_F16, cpu)) &&
            TT_OK(sdx_randn(NULL, &x, g2, shape, 1, SDX_F32, cpu)) &&
            TT_OK(sdx_randn(NULL, &f, g2, big, 2, SDX_F32, cpu)) &&
            TT_OK(sdx_to_dtype(NULL, &hf, f, SDX_F16))) {
            tt_check(sdx_tensor_dtype(h) == SDX_F16, "randn dtype f16");
            tt_check(tt_diff(h, hf) == 0.0,
                     "f16 randn == f32 randn cast, state carried across calls");
        }
        sdx_tensor_free(&x);
        sdx_tensor_free(&f);
        sdx_tensor_free(&h);
        sdx_tensor_free(&hf);
        sdx_generator_free(&g);
        sdx_generator_free(&g2);
        tt_check(g == NULL && sdx_tensor_live_count() == 0, "generator freed, no live tensors");
    }

    if (!tt_golden()) {
        tt_done();
        tt_skip("golden data not found (set SDXL_GOLDEN_DIR): pipeline draws not checked");
    }

    /* 2. Pipeline references: all draws, in order, from one generator. */
    int files = 0;
    for (size_t i = 0; i < sizeof s_pipelines / sizeof s_pipelines[0]; i++) {
        tt_st_t *st = tt_st_open(s_pipelines[i].file);
        if (!st) {
            printf("note: %s absent\n", s_pipelines[i].file);
            continue;
        }
        files++;
        sdx_generator_t *g = sdx_generator_new(s_pipelines[i].seed);
        int n = 0;
        for (;; n++) {
            char name[32], what[256];
            snprintf(name, sizeof name, "rng_draw_%d", n);
            sdx_tensor_t *ref = tt_st_get(st, NULL, name);
            if (!ref)
                break;
            snprintf(what, sizeof what, "%s seed %llu %s", s_pipelines[i].file,
                     (unsigned long long)s_pipelines[i].seed, name);
            s_draw_matches(g, ref, what);
            sdx_tensor_free(&ref);
        }
        tt_check(n > 0, "%s has rng draws (%d)", s_pipelines[i].file, n);
        sdx_generator_free(&g);
        tt_st_close(&st);
    }
    tt_check(files > 0, "pipeline references found (%d files)", files);

    /* 3. Scheduler trajectories: traj.noise[j] drawn from step_seed. */
    int64_t step_seed = 0;
    if (tt_json_int("ref/schedulers/schedulers.json", "step_seed", &step_seed)) {
        for (size_t i = 0; i < sizeof s_sde_schedulers / sizeof s_sde_schedulers[0]; i++) {
            tt_st_t *st = tt_st_open(s_sde_schedulers[i]);
            if (!st)
                continue;
            sdx_scope_t *S = sdx_scope_new();
            sdx_tensor_t *noise = tt_st_get(st, S, "traj.noise");
            if (noise && sdx_tensor_ndim(noise) >= 2 && sdx_tensor_size(noise, 0) > 0) {
                sdx_generator_t *g = sdx_generator_new((uint64_t)step_seed);
                int64_t nd = sdx_tensor_size(noise, 0);
                bool all = true;
                for (int64_t j = 0; j < nd; j++) {
                    sdx_tensor_t *ref = NULL;
                    char what[256];
                    snprintf(what, sizeof what, "%s traj.noise[%lld]", s_sde_schedulers[i],
                             (long long)j);
                    if (sdx_select(S, &ref, noise, 0, j) != 0 || !s_draw_matches(g, ref, what))
                        all = false;
                }
                (void)all;
                sdx_generator_free(&g);
            } else {
                printf("note: %s has no traj.noise\n", s_sde_schedulers[i]);
            }
            sdx_scope_free(&S);
            tt_st_close(&st);
        }
    } else {
        printf("note: schedulers.json step_seed not found\n");
    }
    tt_check(sdx_tensor_live_count() == 0, "no live tensors at the end");
    return tt_done();
}
