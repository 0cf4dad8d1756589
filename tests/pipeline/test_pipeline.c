/*  test_pipeline.c - the text-to-image pipeline against diffusers.

    For every txt2img case of golden/ref/pipeline (several schedulers, batch 2,
    guidance_rescale, non-square, clip_skip) and for both model layouts
    (diffusers folder, single SGM file + --config-dir), run sdxl_generate on
    the CPU in float32 and compare:
      - final latents: relative L2 error < 1e-3. Five denoising steps of a
        UNet in float32 accumulate rounding differences between our kernels'
        order of operations and PyTorch's; 1e-3 leaves headroom over the
        ~1e-5 per-call agreement while still catching any semantic slip (a
        wrong sigma, a swapped CFG half or a missing rescale moves the
        latents by >1e-2).
      - decoded images: |ours - diffusers| <= 1/255 on at least 99.9% of the
        values of image_np (the [0,1] NHWC output), i.e. at most one 8-bit
        level of difference.
      - the 8-bit images (r.images) against round(image_np * 255), what
        diffusers' numpy_to_pil writes: at most one level off on >= 99.9%
        of the values.
    Also: the progress callback fires once per step, the cancel flag stops
    a run between steps with "cancelled", refused parameters set
    r.input_error (and a run-time stop does not), channels-last gives the
    same results, and vae_f32 makes a bf16 engine decode in f32. */
#include "sdx_test.h"
#include "sdxl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *file; /* ref/pipeline/<file>.safetensors */
    const char *scheduler;
    int karras;
    uint64_t seed;
    int width, height, batch, clip_skip;
    double rescale;
} s_case_t;

/* The calls that made the references (golden README, "ref/pipeline"). */
static const s_case_t s_cases[] = {
    {"t2i_euler", "EulerDiscreteScheduler", -1, 42, 128, 128, 1, 0, 0},
    {"t2i_euler_a", "EulerAncestralDiscreteScheduler", -1, 43, 128, 128, 1, 0, 0},
    {"t2i_dpmpp_2m_karras", "DPMSolverMultistepScheduler", 1, 44, 128, 128, 1, 0, 0},
    {"t2i_ddim", "DDIMScheduler", -1, 45, 128, 128, 1, 0, 0},
    {"t2i_unipc", "UniPCMultistepScheduler", -1, 46, 128, 128, 1, 0, 0},
    {"t2i_euler_nipp2", "EulerDiscreteScheduler", -1, 47, 128, 128, 2, 0, 0},
    {"t2i_euler_rescale07", "EulerDiscreteScheduler", -1, 48, 128, 128, 1, 0, 0.7},
    {"t2i_euler_nonsquare", "EulerDiscreteScheduler", -1, 49, 160, 96, 1, 0, 0},
    {"t2i_euler_clipskip2", "EulerDiscreteScheduler", -1, 50, 128, 128, 1, 2, 0},
};

static const char *s_prompt = "a photo of an astronaut riding a horse, highly detailed";
static const char *s_negative = "blurry, low quality";



static int s_steps_seen;
static void s_count(int step, int total, double elapsed, void *ud)
{
    s_steps_seen++;
    volatile int *cancel = ud;
    if (cancel && step == 2)
        *cancel = 1;
}

static void s_run_case(sdxl_engine_t *e, const char *layout, const s_case_t *c)
{
    char rel[256];
    snprintf(rel, sizeof rel, "ref/pipeline/%s.safetensors", c->file);
    sdx_safetensors_t *st = sdx_test_open(rel);
    if (!st)
        return;
    sdx_tensor_t *ref_lat = sdx_test_get(st, "latents_final");
    sdx_tensor_t *ref_np = sdx_test_get(st, "image_np");

    sdxl_gen_params_t gp;
    sdxl_gen_params_init(&gp);
    gp.prompt = s_prompt;
    gp.negative_prompt = s_negative;
    gp.steps = 5;
    gp.guidance_scale = 5.0;
    gp.seed = c->seed;
    gp.scheduler = c->scheduler;
    gp.karras = c->karras;
    gp.width = c->width;
    gp.height = c->height;
    gp.batch = c->batch;
    gp.clip_skip = c->clip_skip;
    gp.guidance_rescale = c->rescale;
    gp.progress = s_count;
    s_steps_seen = 0;

    sdxl_result_t r;
    int rc = sdxl_generate(e, &gp, &r);
    if (sdx_test_check(rc == 0, "%s/%s: generate (%s)", layout, c->file,
                       rc ? sdx_last_error() : "ok")) {
        sdx_test_check(s_steps_seen == 5 && r.steps_done == 5, "%s/%s: 5 progress callbacks (%d)",
                       layout, c->file, s_steps_seen);
        char what[256];
        snprintf(what, sizeof what, "%s/%s: final latents", layout, c->file);
        sdx_test_close(r.latents, ref_lat, 1e-3, what);
        double frac = sdx_test_pixel_match(r.decoded, ref_np);
        sdx_test_check(frac >= 0.999, "%s/%s: image within 1/255 on %.4f%% of values (>= 99.9%%)",
                       layout, c->file, frac * 100);
        if (r.images) {
            double f8 = sdx_test_uint8_match(r.images, r.count, ref_np);
            sdx_test_check(f8 >= 0.999,
                           "%s/%s: uint8 images within 1 level of round(image_np*255) on %.4f%% "
                           "of values (>= 99.9%%)",
                           layout, c->file, f8 * 100);
        }
        sdx_test_check(r.count == c->batch && r.images && r.images[0].width == c->width &&
                           r.images[0].height == c->height,
                       "%s/%s: %d image(s) of %dx%d", layout, c->file, c->batch, c->width,
                       c->height);
        sdxl_result_clear(&r);
    }
    sdx_tensor_free(&ref_lat);
    sdx_tensor_free(&ref_np);
    sdx_safetensors_close(&st);
}

static sdxl_engine_t *s_engine_ex(const char *model, const char *config_dir, sdx_dtype_t dt,
                                  int channels_last, bool vae_f32)
{
    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.model_path = model;
    ep.config_dir = config_dir;
    ep.dtype = dt;
    ep.channels_last = channels_last;
    ep.vae_f32 = vae_f32;
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    sdx_test_check(e != NULL, "load %s (%s, channels_last %d, vae_f32 %d: %s)", model,
                   sdx_dtype_name(dt), channels_last, vae_f32, e ? "ok" : sdx_last_error());
    return e;
}

static sdxl_engine_t *s_engine(const char *model, const char *config_dir)
{
    return s_engine_ex(model, config_dir, SDX_F32, -1, false);
}

/* A small bf16 run: the decoded tensor's dtype says where the VAE computed. */
static void s_vae_dtype_case(const char *model, bool vae_f32, sdx_dtype_t want)
{
    sdxl_engine_t *e = s_engine_ex(model, NULL, SDX_BF16, -1, vae_f32);
    if (!e)
        return;
    sdxl_gen_params_t gp;
    sdxl_gen_params_init(&gp);
    gp.prompt = s_prompt;
    gp.steps = 2;
    gp.width = gp.height = 64;
    sdxl_result_t r;
    int rc = sdxl_generate(e, &gp, &r);
    if (sdx_test_check(rc == 0, "bf16 engine, vae_f32 %d: generate (%s)", vae_f32,
                       rc ? sdx_last_error() : "ok")) {
        sdx_test_check(r.decoded && sdx_tensor_dtype(r.decoded) == want &&
                           sdx_tensor_dtype(r.latents) == SDX_BF16,
                       "bf16 engine, vae_f32 %d: latents bf16, VAE output %s (got %s)", vae_f32,
                       sdx_dtype_name(want),
                       r.decoded ? sdx_dtype_name(sdx_tensor_dtype(r.decoded)) : "none");
        sdx_test_check(r.count == 1 && r.images && r.images[0].width == 64,
                       "bf16 engine, vae_f32 %d: image written", vae_f32);
        sdxl_result_clear(&r);
    }
    sdxl_engine_free(&e);
}

int main(void)
{
    char model[4096], single[4096];
    snprintf(model, sizeof model, "%s", sdx_test_path("model"));
    snprintf(single, sizeof single, "%s", sdx_test_path("model_single_file/tiny_sdxl.safetensors"));
    int64_t live0 = sdx_tensor_live_count();

    sdxl_engine_t *e = s_engine(model, NULL);
    if (e) {
        for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++)
            s_run_case(e, "diffusers", &s_cases[i]);

        /* cancel: the flag set during step 2 stops the run before step 3 */
        volatile int cancel = 0;
        sdxl_gen_params_t gp;
        sdxl_gen_params_init(&gp);
        gp.prompt = s_prompt;
        gp.steps = 5;
        gp.width = gp.height = 64;
        gp.progress = s_count;
        gp.progress_ud = (void *)&cancel;
        gp.cancel = &cancel;
        s_steps_seen = 0;
        sdxl_result_t r;
        int rc = sdxl_generate(e, &gp, &r);
        sdx_test_check(rc != 0 && strstr(sdx_last_error(), "cancelled") && s_steps_seen == 2,
                       "cancel flag stops after step 2 (rc %d, steps %d, '%s')", rc,
                       s_steps_seen, sdx_last_error());
        sdx_test_check(!r.input_error, "a cancelled run is not an input error");

        /* bad input is refused with a message naming the field */
        gp.cancel = NULL;
        gp.progress = NULL;
        gp.width = 100;
        rc = sdxl_generate(e, &gp, &r);
        sdx_test_check(rc != 0 && r.input_error && strstr(sdx_last_error(), "multiples of 8"),
                       "width 100 refused as an input error: %s", sdx_last_error());
        gp.width = 64;
        gp.scheduler = "NoSuchScheduler";
        rc = sdxl_generate(e, &gp, &r);
        sdx_test_check(rc != 0 && r.input_error && strstr(sdx_last_error(), "unknown scheduler"),
                       "unknown scheduler refused as an input error: %s", sdx_last_error());
        gp.scheduler = "DDIM";
        gp.karras = 1;
        rc = sdxl_generate(e, &gp, &r);
        sdx_test_check(rc != 0 && r.input_error && strstr(sdx_last_error(), "Karras"),
                       "karras on DDIM refused as an input error: %s", sdx_last_error());
        gp.scheduler = NULL;
        gp.karras = -1;
        gp.clip_skip = 10;
        rc = sdxl_generate(e, &gp, &r);
        sdx_test_check(rc != 0 && r.input_error && strstr(sdx_last_error(), "clip_skip"),
                       "clip_skip beyond the model's layers refused up front: %s",
                       sdx_last_error());
        sdxl_engine_free(&e);
    }

    /* channels-last activations give the same results (first case) */
    e = s_engine_ex(model, NULL, SDX_F32, 1, false);
    if (e) {
        s_run_case(e, "diffusers+channels-last", &s_cases[0]);
        sdxl_engine_free(&e);
    }
    sdxl_engine_params_t bad;
    sdxl_engine_params_init(&bad);
    sdx_test_check(bad.channels_last == -1 && !bad.vae_f32,
                   "defaults: channels_last auto, vae_f32 off");
    bad.model_path = model;
    bad.channels_last = 2;
    e = sdxl_engine_new(&bad);
    sdx_test_check(e == NULL && strstr(sdx_last_error(), "channels_last"),
                   "channels_last 2 refused: %s", sdx_last_error());
    sdxl_engine_free(&e);

    /* vae_f32: a bf16 engine decodes in bf16 (force_upcast is for f16
       only), and in f32 when asked */
    s_vae_dtype_case(model, false, SDX_BF16);
    s_vae_dtype_case(model, true, SDX_F32);

    e = s_engine(single, model);
    if (e) {
        for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++)
            s_run_case(e, "single-file", &s_cases[i]);
        sdxl_engine_free(&e);
    }

    sdx_test_check(sdx_tensor_live_count() == live0, "no tensor handles leaked (%lld live)",
                   (long long)(sdx_tensor_live_count() - live0));
    return sdx_test_done();
}
