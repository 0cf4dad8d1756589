/*  test_sched_pipeline.c - the schedulers as the golden SDXL pipelines drove
    them: for every ref/pipeline file the scheduler, steps and
    img2img/ensemble cut must give diffusers' callback_timesteps, and the
    loop must draw as many noise tensors from the generator as diffusers did
    (rng_draw_* count = initial draws + scheduler draws). The UNet is not
    needed: a stand-in model output drives the loop. */
#include "sdx_scheduler.h"
#include "sdx_test.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef enum { M_T2I, M_IMG2IMG, M_BASE_END, M_REFINER_START } s_mode_t;

static const struct {
    const char *file, *scheduler;
    int steps;
    s_mode_t mode;
    double frac; /* strength, denoising_end or denoising_start */
    int initial; /* rng draws before the loop */
} s_runs[] = {
    {"t2i_euler", "Euler", 5, M_T2I, 0, 1},
    {"t2i_euler_a", "Euler a", 5, M_T2I, 0, 1},
    {"t2i_dpmpp_2m_karras", "DPM++ 2M Karras", 5, M_T2I, 0, 1},
    {"t2i_ddim", "DDIM", 5, M_T2I, 0, 1},
    {"t2i_unipc", "UniPC", 5, M_T2I, 0, 1},
    {"t2i_euler_rescale07", "Euler", 5, M_T2I, 0, 1},
    {"t2i_euler_nonsquare", "Euler", 5, M_T2I, 0, 1},
    {"controlnet", "Euler", 5, M_T2I, 0, 1},
    {"img2img_euler_s06", "Euler", 5, M_IMG2IMG, 0.6, 2},
    {"refiner_base_part", "Euler", 10, M_BASE_END, 0.8, 1},
    {"refiner", "Euler", 10, M_REFINER_START, 0.8, 0},
};

static int s_count_prefix(sdx_safetensors_t *st, const char *prefix)
{
    int n = 0;
    for (size_t i = 0; i < sdx_safetensors_count(st); i++)
        if (strncmp(sdx_safetensors_at(st, i)->name, prefix, strlen(prefix)) == 0)
            n++;
    return n;
}

static void s_run(size_t k)
{
    char rel[128];
    snprintf(rel, sizeof rel, "ref/pipeline/%s.safetensors", s_runs[k].file);
    sdx_safetensors_t *st = sdx_test_open(rel);
    if (!st)
        return;
    const char *f = s_runs[k].file;
    sdx_tensor_t *cb = sdx_test_get(st, "callback_timesteps");
    sdx_scheduler_t *s = sdx_scheduler_new(s_runs[k].scheduler, NULL);
    if (!cb || !sdx_test_check(s != NULL, "%s: scheduler %s", f, s_runs[k].scheduler))
        goto out;
    sdx_scheduler_set_timesteps(s, s_runs[k].steps);
    int begin = 0, end = sdx_scheduler_count(s);
    switch (s_runs[k].mode) {
    case M_T2I:
        break;
    case M_IMG2IMG:
        begin = sdx_scheduler_strength_begin(s, s_runs[k].frac);
        break;
    case M_BASE_END:
        end = sdx_scheduler_denoising_end_count(s, s_runs[k].frac);
        break;
    case M_REFINER_START:
        begin = sdx_scheduler_denoising_start_begin(s, s_runs[k].frac);
        break;
    }
    int64_t n = sdx_tensor_numel(cb);
    double want[64];
    sdx_to_host(cb, SDX_F64, want, sizeof want);
    bool ok = begin >= 0 && end - begin == n;
    for (int i = 0; ok && i < n; i++)
        ok = sdx_scheduler_timestep(s, begin + i) == want[i];
    sdx_test_check(ok, "%s: timesteps [%d, %d) of %s equal callback_timesteps (%lld)", f, begin,
                   end, s_runs[k].scheduler, (long long)n);

    /* draw count through a loop with a stand-in model */
    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *g = sdx_generator_new(1);
    int64_t shp[4] = {1, 4, 4, 4};
    sdx_tensor_t *x, *xin, *eps;
    sdx_zeros(S, &x, shp, 4, SDX_F32, (sdx_device_t){SDX_CPU, 0});
    if (s_runs[k].mode == M_REFINER_START || s_runs[k].mode == M_IMG2IMG)
        sdx_scheduler_set_begin_index(s, begin);
    bool run = true;
    for (int i = begin; run && i < end; i++)
        run = sdx_scheduler_scale_model_input(s, S, &xin, x, i) == 0 &&
              sdx_mul_scalar(S, &eps, xin, 0.1) == 0 &&
              sdx_scheduler_step(s, S, &x, eps, i, x, g) == 0;
    int draws = s_count_prefix(st, "rng_draw_");
    sdx_test_check(run && s_runs[k].initial + sdx_scheduler_draw_count(s) == draws,
                   "%s: %d initial + %d scheduler draws = %d rng draws", f, s_runs[k].initial,
                   sdx_scheduler_draw_count(s), draws);
    sdx_generator_free(&g);
    sdx_scope_free(&S);
out:
    sdx_scheduler_destroy(&s);
    sdx_tensor_free(&cb);
    sdx_safetensors_close(&st);
}

int main(void)
{
    sdx_test_path("ref/pipeline"); /* skips without golden data */
    for (size_t k = 0; k < sizeof s_runs / sizeof s_runs[0]; k++)
        s_run(k);
    return sdx_test_done();
}
