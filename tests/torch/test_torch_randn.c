/*  test_torch_randn.c - sdx_randn is bit-exact with PyTorch's CPU generator.

    torch.Generator("cpu").manual_seed(s) followed by torch.randn calls is
    replayed with one sdx_generator_t and successive sdx_randn calls, and
    compared with max abs diff 0 against:
    - hand-recorded draws (torch.randn(4) with seed 42: the < 16 element path);
    - every rng_draw_i of the golden pipeline references (seed per file from
      golden/README.md; draws in call order from one generator);
    - traj.noise of the ancestral / SDE scheduler references (step_seed of
      schedulers.json).
    f16/bf16 draws (diffusers' randn_tensor draws in the model's dtype) are
    checked bit-exact against a second, independent implementation below:
    MT19937 plus ATen 1.13's CPU normal_fill (uniforms at the dtype's
    precision, Box-Muller over blocks of 16, every operation rounded to the
    dtype as c10::Half / c10::BFloat16 do).
    The golden parts skip (77) when the golden folder is absent. */
#include "torch_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- reference */

/* MT19937 as at::mt19937 (torch.Generator("cpu").manual_seed(seed)). */
typedef struct {
    uint32_t s[624];
    int i;
} s_mt_t;

static void s_mt_seed(s_mt_t *m, uint64_t seed)
{
    m->s[0] = (uint32_t)(seed & 0xffffffffu);
    for (int k = 1; k < 624; k++)
        m->s[k] = 1812433253u * (m->s[k - 1] ^ (m->s[k - 1] >> 30)) + (uint32_t)k;
    m->i = 624;
}

static uint32_t s_mt_next(s_mt_t *m)
{
    if (m->i >= 624) {
        for (int k = 0; k < 624; k++) {
            uint32_t y = (m->s[k] & 0x80000000u) | (m->s[(k + 1) % 624] & 0x7fffffffu);
            m->s[k] = m->s[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        m->i = 0;
    }
    uint32_t y = m->s[m->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* Round a float to f16 / bf16 (nearest even) and back: the store of a
   c10::Half / c10::BFloat16. */
static float s_round(float x, bool bf16)
{
    if (!bf16)
        return (float)(_Float16)x;
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return x; /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* ATen's normal_fill_16<scalar_t> for Half/BFloat16 (mean 0, std 1).
   c10/util/BFloat16-math.h gives std::log/cos/sin BFloat16 overloads that
   round their result; in 1.13 Half has none (its math runs in float), later
   releases extend them to Half: rmath selects the rounded math. */
static void s_fill16(float *d, bool bf16, bool rmath)
{
    for (int j = 0; j < 8; j++) {
        float u1 = s_round(1.0f - d[j], bf16);
        float u2 = d[j + 8];
        float lg = rmath ? s_round(logf(u1), bf16) : logf(u1);
        float radius = s_round(sqrtf(-2.0f * lg), bf16);
        float theta = s_round((float)(2.0f * 3.14159265358979323846 * (double)u2), bf16);
        float c = rmath ? s_round(cosf(theta), bf16) : cosf(theta);
        float sn = rmath ? s_round(sinf(theta), bf16) : sinf(theta);
        d[j] = s_round(radius * c * 1.0f + 0.0f, bf16);
        d[j + 8] = s_round(radius * sn * 1.0f + 0.0f, bf16);
    }
}

/* torch.randn(n, dtype=float16|bfloat16) on the CPU, n >= 16 (the
   contiguous normal_fill path), continuing the stream of m. */
static void s_ref_randn_half(s_mt_t *m, float *d, int64_t n, bool bf16, bool rmath)
{
    const int digits = bf16 ? 8 : 11;
    const uint32_t mask = (1u << digits) - 1;
    const float div = 1.0f / (float)(1u << digits);
    for (int64_t i = 0; i < n; i++)
        d[i] = (float)(s_mt_next(m) & mask) * div;
    for (int64_t i = 0; i + 15 < n; i += 16)
        s_fill16(d + i, bf16, rmath);
    if (n % 16) {
        float *t = d + n - 16;
        for (int i = 0; i < 16; i++)
            t[i] = (float)(s_mt_next(m) & mask) * div;
        s_fill16(t, bf16, rmath);
    }
}

/* sdx_randn in dt (f16 or bf16) against the reference: bit-exact. */
static void s_check_half(uint64_t seed, sdx_dtype_t dt, const int64_t *shape, int nd, int pre_draws)
{
    bool bf16 = dt == SDX_BF16;
    int64_t n = 1;
    for (int k = 0; k < nd; k++)
        n *= shape[k];
    s_mt_t m, m2;
    s_mt_seed(&m, seed);
    s_mt_seed(&m2, seed);
    sdx_generator_t *g = sdx_generator_new(seed);
    sdx_device_t cpu = {SDX_CPU, 0};
    float *ref = calloc((size_t)n, sizeof *ref), *ref2 = calloc((size_t)n, sizeof *ref2),
          *got = calloc((size_t)n, sizeof *got);
    sdx_tensor_t *x = NULL;
    bool ok = ref && ref2 && got && g;
    for (int r = 0; ok && r <= pre_draws; r++) {
        s_ref_randn_half(&m, ref, n, bf16, bf16); /* 1.13: bf16 math rounded */
        s_ref_randn_half(&m2, ref2, n, bf16, true);
        ok = TT_OK(sdx_randn(NULL, &x, g, shape, nd, dt, cpu)) && sdx_tensor_dtype(x) == dt &&
             sdx_to_host(x, SDX_F32, got, (size_t)n * sizeof *got) == 0;
        sdx_tensor_free(&x);
    }
    int64_t bad = 0, bad2 = 0;
    for (int64_t i = 0; ok && i < n; i++) {
        bad += memcmp(&ref[i], &got[i], sizeof(float)) != 0;
        bad2 += memcmp(&ref2[i], &got[i], sizeof(float)) != 0;
    }
    if (bad2 < bad)
        bad = bad2;
    tt_check(ok && bad == 0,
             "%s randn seed %llu, %lld values (draw %d of one generator) == torch.randn(dtype=%s) "
             "reference (%lld differ)",
             sdx_dtype_name(dt), (unsigned long long)seed, (long long)n, pre_draws + 1,
             bf16 ? "bfloat16" : "float16", (long long)bad);
    free(ref);
    free(ref2);
    free(got);
    sdx_generator_free(&g);
}

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
        /* An f16 draw is made in f16 (torch.randn(..., dtype=float16)), not
           the f32 draw rounded: for >= 16 values they differ. */
        sdx_generator_t *g2 = sdx_generator_new(42);
        sdx_tensor_t *h = NULL, *f = NULL, *hf = NULL;
        int64_t big[2] = {3, 40};
        if (TT_OK(sdx_randn(NULL, &h, g, big, 2, SDX_F16, cpu)) &&
            TT_OK(sdx_randn(NULL, &x, g2, shape, 1, SDX_F32, cpu)) &&
            TT_OK(sdx_randn(NULL, &f, g2, big, 2, SDX_F32, cpu)) &&
            TT_OK(sdx_to_dtype(NULL, &hf, f, SDX_F16))) {
            tt_check(sdx_tensor_dtype(h) == SDX_F16, "randn dtype f16");
            tt_check(tt_diff(h, hf) > 0.0, "f16 randn (120 values) is not the f32 draw cast");
        }
        sdx_tensor_free(&x);
        sdx_tensor_free(&f);
        sdx_tensor_free(&h);
        sdx_tensor_free(&hf);
        sdx_generator_free(&g);
        sdx_generator_free(&g2);
        tt_check(g == NULL && sdx_tensor_live_count() == 0, "generator freed, no live tensors");
    }

    /* 1b. f16/bf16 draws against the independent reference: multiples of 16,
       a tail (n % 16 != 0), a latent shape, the second draw of a generator. */
    {
        const int64_t s16[1] = {32}, s120[2] = {3, 40}, lat[4] = {1, 4, 12, 8};
        s_check_half(42, SDX_F16, s16, 1, 0);
        s_check_half(42, SDX_F16, s120, 2, 0);
        s_check_half(7, SDX_F16, lat, 4, 1);
        s_check_half(42, SDX_BF16, s120, 2, 0);
        s_check_half(1234, SDX_BF16, lat, 4, 1);
        /* determinism: two generators of one seed give one f16 tensor */
        sdx_generator_t *a = sdx_generator_new(5), *b = sdx_generator_new(5);
        sdx_tensor_t *ta = NULL, *tb = NULL;
        if (TT_OK(sdx_randn(NULL, &ta, a, lat, 4, SDX_F16, cpu)) &&
            TT_OK(sdx_randn(NULL, &tb, b, lat, 4, SDX_F16, cpu)))
            tt_check(tt_diff(ta, tb) == 0.0, "f16 draws are deterministic per seed");
        sdx_tensor_free(&ta);
        sdx_tensor_free(&tb);
        sdx_generator_free(&a);
        sdx_generator_free(&b);
        tt_check(sdx_tensor_live_count() == 0, "no live tensors after the f16/bf16 checks");
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
