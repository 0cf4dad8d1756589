/*  test_img2img.c - img2img (sdxl_gen_params_t.init_image, .strength)
    against diffusers' StableDiffusionXLImg2ImgPipeline.

    Reference: golden ref/pipeline/img2img_euler_s06 (Euler, 5 steps,
    strength 0.6 -> timesteps[2:], 3 model steps; seed 51, guidance 5, the
    golden prompt/negative; init image golden/inputs/init_image.png, 128x128).
    Checks, on the CPU in float32:
      - the init PNG decodes to the reference's init_image_uint8 exactly, and
        its [-1, 1] tensor equals image_preprocessed (|d| <= 1e-6);
      - the start (sdx_img2img_latents) against the formula with the
        reference's own draws: 0.13025 * (mean + std * rng_draw_0) +
        sigmas[begin] * rng_draw_1, mean/std from our VAE encoder of
        image_preprocessed: rel L2 < 1e-5 (single model call accuracy); the
        generator's next draw is rng_draw_2 (exactly two draws, in diffusers'
        order: posterior sample, then the noise); a batch of 2 shares one
        posterior sample and draws [2, ...] noise;
      - bf16: the encode runs in f32 (diffusers upcasts for force_upcast
        whatever the dtype) and the posterior draw is f32, the noise bf16;
      - strength 1: begin index 0, all steps run, and the start is
        init + sigmas[0] * noise (diffusers' img2img still adds noise to the
        image at strength 1; txt2img would start from noise *
        init_noise_sigma instead);
      - sdxl_generate end to end with the same tolerances as
        test_pipeline.c: final latents rel L2 < 1e-3, image_np within 1/255
        on >= 99.9% of values, 8-bit images within one level on >= 99.9%;
        3 progress callbacks of total 3; both model layouts;
      - smoke runs of other scheduler families (Euler a, DPM++ 2M Karras,
        DDIM, UniPC, Heun, LMS, PNDM, DPM2 a): model calls = the table's
        length from t_start * order, finite latents (no reference data);
      - refused as input errors: strength 0, < 0, > 1, NaN, a strength that
        leaves no step, an init image of another size than width/height,
        one whose size is not a multiple of 8;
      - the infotext carries "Denoising strength"; no tensor handle leaks. */
#include "sdx_img2img.h"
#include "sdx_test.h"
#include "sdxl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_prompt = "a photo of an astronaut riding a horse, highly detailed";
static const char *s_negative = "blurry, low quality";
#define SEED 51

typedef struct {
    sdx_tensor_t *lat, *np, *d0, *d1, *d2, *u8, *pre;
} ref_t;

static void s_ref_free(ref_t *r)
{
    sdx_tensor_t **all[] = {&r->lat, &r->np, &r->d0, &r->d1, &r->d2, &r->u8, &r->pre};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        sdx_tensor_free(all[i]);
}



static int s_steps_seen, s_total_seen;
static void s_count(int step, int total, double elapsed, void *ud)
{
    (void)step;
    (void)elapsed;
    (void)ud;
    s_steps_seen++;
    s_total_seen = total;
}

static sdxl_engine_t *s_engine(const char *model, const char *config_dir)
{
    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.model_path = model;
    ep.config_dir = config_dir;
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    sdx_test_check(e != NULL, "load %s (%s)", model, e ? "ok" : sdx_last_error());
    return e;
}

static void s_params(sdxl_gen_params_t *gp, const sdx_image_t *img, double strength)
{
    sdxl_gen_params_init(gp);
    gp->prompt = s_prompt;
    gp->negative_prompt = s_negative;
    gp->steps = 5;
    gp->guidance_scale = 5.0;
    gp->seed = SEED;
    gp->scheduler = "EulerDiscreteScheduler";
    gp->init_image = img;
    gp->strength = strength;
}

/* The golden case through sdxl_generate. */
static void s_golden_run(sdxl_engine_t *e, const char *layout, const sdx_image_t *img,
                         const ref_t *ref, int wh)
{
    sdxl_gen_params_t gp;
    s_params(&gp, img, 0.6);
    gp.width = gp.height = wh;
    gp.progress = s_count;
    s_steps_seen = s_total_seen = 0;
    sdxl_result_t r;
    int rc = sdxl_generate(e, &gp, &r);
    if (!sdx_test_check(rc == 0, "%s: img2img strength 0.6 (width/height %d): generate (%s)",
                        layout, wh, rc ? sdx_last_error() : "ok"))
        return;
    sdx_test_check(r.steps_done == 3 && s_steps_seen == 3 && s_total_seen == 3,
                   "%s: strength 0.6 of 5 steps runs 3 (steps_done %d, callbacks %d of %d)", layout,
                   r.steps_done, s_steps_seen, s_total_seen);
    char what[160];
    snprintf(what, sizeof what, "%s: img2img final latents vs diffusers", layout);
    sdx_test_close(r.latents, ref->lat, 1e-3, what);
    double frac = sdx_test_pixel_match(r.decoded, ref->np);
    sdx_test_check(frac >= 0.999, "%s: image within 1/255 on %.4f%% of values (>= 99.9%%)", layout,
                   frac * 100);
    if (sdx_test_check(r.count == 1 && r.images && r.images[0].width == 128 &&
                           r.images[0].height == 128,
                       "%s: one 128x128 image", layout)) {
        double f8 = sdx_test_uint8_match(&r.images[0], 1, ref->np);
        sdx_test_check(f8 >= 0.999,
                       "%s: uint8 image within 1 level of round(image_np*255) on %.4f%% of "
                       "values (>= 99.9%%)",
                       layout, f8 * 100);
    }
    char *info = sdxl_infotext(&gp, &r, NULL, NULL, NULL);
    sdx_test_check(info && strstr(info, "Denoising strength: 0.6"),
                   "%s: infotext has 'Denoising strength: 0.6'", layout);
    free(info);
    sdxl_result_clear(&r);
}

/* expected start: 0.13025 * (mean + std * d0) (repeated to the batch) +
   sigma * noise */
static int s_expected_start(sdx_scope_t *S, sdx_tensor_t **out, const sdx_vae_t *v,
                            const sdx_tensor_t *pre, const sdx_tensor_t *d0,
                            const sdx_tensor_t *noise, double sigma, int batch)
{
    sdx_tensor_t *mean, *std, *z;
    SDX_TRY(sdx_vae_encode(v, S, &mean, NULL, &std, pre));
    SDX_TRY(sdx_mul(S, &z, std, d0));
    SDX_TRY(sdx_add(S, &z, mean, z));
    SDX_TRY(sdx_mul_scalar(S, &z, z, sdx_vae_config(v)->scaling_factor));
    if (batch > 1) {
        int64_t reps[4] = {batch, 1, 1, 1};
        SDX_TRY(sdx_repeat(S, &z, z, reps, 4));
    }
    return sdx_add_scaled(S, out, z, noise, sigma);
fail:
    return -1;
}

/* The start of a run (sdx_img2img_begin + sdx_img2img_latents) against the
   formula with the reference draws. */
static void s_start_checks(const sdxl_engine_t *e, const sdx_image_t *img, const ref_t *ref)
{
    const sdx_model_t *m = sdxl_engine_model(e);
    sdx_vae_t *v = sdx_vae_new(&m->vae_cfg, m->vae);
    sdx_scheduler_t *sch = sdx_scheduler_new("EulerDiscreteScheduler", NULL);
    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *gen = NULL;
    sdx_tensor_t *lat = NULL, *want = NULL, *next = NULL;
    sdx_device_t cpu = {SDX_CPU, 0};
    if (!sdx_test_check(v && sch && S && sdx_scheduler_set_timesteps(sch, 5) == 0,
                        "VAE and Euler scheduler for the start checks (%s)", sdx_last_error()))
        goto done;
    int n_sig = 0;
    const float *sig = sdx_scheduler_sigmas(sch, &n_sig);

    /* strength 0.6: t_start = 5 - int(3.0) = 2 */
    int begin = sdx_img2img_begin(sch, 0.6);
    sdx_test_check(begin == 2 && sdx_scheduler_begin_index(sch) == 2,
                   "strength 0.6 of 5 steps begins at index 2 (got %d)", begin);
    gen = sdx_generator_new(SEED);
    int rc = sdx_img2img_latents(v, m->vae, sch, gen, img, 1, SDX_F32, cpu, &lat);
    if (sdx_test_check(rc == 0, "img2img start latents (%s)", rc ? sdx_last_error() : "ok") &&
        s_expected_start(S, &want, v, ref->pre, ref->d0, ref->d1, sig[2], 1) == 0) {
        sdx_test_close(lat, want, 1e-5,
                       "start = 0.13025*(mean+std*rng_draw_0) + sigmas[2]*rng_draw_1");
        int64_t shape[4] = {1, 4, 16, 16};
        if (sdx_randn(S, &next, gen, shape, 4, SDX_F32, cpu) == 0)
            sdx_test_check(sdx_test_max_abs(next, ref->d2) == 0,
                           "the start drew exactly twice: the next draw is rng_draw_2");
    }
    sdx_tensor_free(&lat);
    sdx_generator_free(&gen);

    /* strength 1: every step, and the image noised to sigmas[0] (not pure
       noise: diffusers' img2img adds noise even at strength 1) */
    begin = sdx_img2img_begin(sch, 1.0);
    sdx_test_check(begin == 0, "strength 1 begins at index 0 (got %d)", begin);
    gen = sdx_generator_new(SEED);
    rc = sdx_img2img_latents(v, m->vae, sch, gen, img, 1, SDX_F32, cpu, &lat);
    if (sdx_test_check(rc == 0, "strength 1 start latents (%s)", rc ? sdx_last_error() : "ok") &&
        s_expected_start(S, &want, v, ref->pre, ref->d0, ref->d1, sig[0], 1) == 0) {
        sdx_test_close(lat, want, 1e-5,
                       "strength 1 start = 0.13025*(mean+std*rng_draw_0) + sigmas[0]*rng_draw_1");
        sdx_tensor_t *noise_only;
        if (sdx_mul_scalar(S, &noise_only, ref->d1, sig[0]) == 0)
            sdx_test_check(sdx_test_rel_l2(lat, noise_only) > 1e-3,
                           "strength 1 start is not noise alone (rel diff to sigmas[0]*noise "
                           "%.3g)",
                           sdx_test_rel_l2(lat, noise_only));
    }
    sdx_tensor_free(&lat);
    sdx_generator_free(&gen);

    /* batch 2: one posterior sample [1, ...] shared, then [2, ...] noise */
    sdx_img2img_begin(sch, 0.6);
    gen = sdx_generator_new(SEED);
    rc = sdx_img2img_latents(v, m->vae, sch, gen, img, 2, SDX_F32, cpu, &lat);
    sdx_generator_t *g2 = sdx_generator_new(SEED);
    sdx_tensor_t *e0 = NULL, *e1 = NULL;
    int64_t s1[4] = {1, 4, 16, 16}, s2[4] = {2, 4, 16, 16};
    if (sdx_test_check(rc == 0, "batch 2 start latents (%s)", rc ? sdx_last_error() : "ok") && g2 &&
        sdx_randn(S, &e0, g2, s1, 4, SDX_F32, cpu) == 0 &&
        sdx_randn(S, &e1, g2, s2, 4, SDX_F32, cpu) == 0 &&
        s_expected_start(S, &want, v, ref->pre, e0, e1, sig[2], 2) == 0)
        sdx_test_close(lat, want, 1e-5,
                       "batch 2 start: shared posterior draw [1,...], then noise [2,...]");
    sdx_generator_free(&g2);
done:
    sdx_tensor_free(&lat);
    sdx_generator_free(&gen);
    sdx_scope_free(&S);
    sdx_scheduler_destroy(&sch);
    sdx_vae_free(&v);
}

/* A start made by hand: encode img (in dt) with enc, draw the posterior
   sample in enc's output dtype, to dt, scale, draw noise in dt, add_noise at
   the begin index. */
static int s_manual_start(sdx_scope_t *S, sdx_tensor_t **out, const sdx_vae_t *enc,
                          sdx_scheduler_t *sch, const sdx_image_t *img, sdx_dtype_t dt)
{
    sdx_device_t cpu = {SDX_CPU, 0};
    sdx_generator_t *g = sdx_generator_new(SEED);
    sdx_tensor_t *x, *mean, *std, *d0, *z, *d1;
    int64_t shape[4];
    if (!g)
        return -1;
    SDX_TRY(sdx_image_to_tensor(S, &x, img, dt, cpu));
    SDX_TRY(sdx_vae_encode(enc, S, &mean, NULL, &std, x));
    sdx_tensor_shape(mean, shape);
    SDX_TRY(sdx_randn(S, &d0, g, shape, 4, sdx_tensor_dtype(mean), cpu));
    SDX_TRY(sdx_mul(S, &z, std, d0));
    SDX_TRY(sdx_add(S, &z, mean, z));
    SDX_TRY(sdx_to(S, &z, z, dt, cpu));
    SDX_TRY(sdx_mul_scalar(S, &z, z, sdx_vae_config(enc)->scaling_factor));
    SDX_TRY(sdx_randn(S, &d1, g, shape, 4, dt, cpu));
    SDX_TRY(sdx_scheduler_add_noise(sch, S, out, z, d1, sdx_scheduler_begin_index(sch)));
    sdx_generator_free(&g);
    return 0;
fail:
    sdx_generator_free(&g);
    return -1;
}

/* bf16: diffusers' prepare_latents upcasts the VAE for the encode whenever
   force_upcast (the golden VAE config says true), even for bf16, where
   decode keeps bf16. A small strength (1 of 5 steps, sigma ~0.03) keeps the
   image term dominant so that an encode in bf16 would show. */
static void s_bf16_checks(const char *model, const sdx_image_t *img)
{
    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.model_path = model;
    ep.dtype = SDX_BF16;
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    if (!sdx_test_check(e != NULL, "load bf16 (%s)", e ? "ok" : sdx_last_error()))
        return;
    const sdx_model_t *m = sdxl_engine_model(e);
    sdx_vae_t *vb = sdx_vae_new(&m->vae_cfg, m->vae),
              *v32 = sdx_vae_new_f32(&m->vae_cfg, m->vae, true);
    sdx_scheduler_t *sch = sdx_scheduler_new("EulerDiscreteScheduler", NULL);
    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *gen = sdx_generator_new(SEED);
    sdx_tensor_t *lat = NULL, *want_up, *want_bf;
    sdx_device_t cpu = {SDX_CPU, 0};
    bool ready = sdx_test_check(
        vb && v32 && sch && S && gen && m->vae_cfg.force_upcast && sdx_vae_dtype(vb) == SDX_BF16 &&
            sdx_scheduler_set_timesteps(sch, 5) == 0 && sdx_img2img_begin(sch, 0.2) == 4,
        "bf16 VAE (force_upcast in its config), strength 0.2 begins at 4");
    int rc = ready ? sdx_img2img_latents(vb, m->vae, sch, gen, img, 1, SDX_BF16, cpu, &lat) : -1;
    if (ready && sdx_test_check(rc == 0, "bf16 start latents (%s)", rc ? sdx_last_error() : "ok") &&
        s_manual_start(S, &want_up, v32, sch, img, SDX_BF16) == 0 &&
        s_manual_start(S, &want_bf, vb, sch, img, SDX_BF16) == 0) {
        sdx_test_check(sdx_tensor_dtype(lat) == SDX_BF16, "bf16 start latents are bf16");
        sdx_test_close(lat, want_up, 1e-5,
                       "bf16 start = f32 encode + f32 posterior draw, then bf16");
        sdx_test_check(sdx_test_rel_l2(want_bf, want_up) > 1e-3,
                       "(an encode in bf16 would differ: rel L2 %.3g)",
                       sdx_test_rel_l2(want_bf, want_up));
    }
    sdx_tensor_free(&lat);
    sdx_generator_free(&gen);
    sdx_scope_free(&S);
    sdx_scheduler_destroy(&sch);
    sdx_vae_free(&vb);
    sdx_vae_free(&v32);

    sdxl_gen_params_t gp;
    s_params(&gp, img, 0.6);
    sdxl_result_t r;
    rc = sdxl_generate(e, &gp, &r);
    sdx_test_check(rc == 0 && r.steps_done == 3 && sdx_tensor_dtype(r.latents) == SDX_BF16 &&
                       r.images && r.images[0].width == 128,
                   "bf16 engine: img2img runs 3 steps, bf16 latents, a 128x128 image (%s)",
                   rc ? sdx_last_error() : "ok");
    if (rc == 0)
        sdxl_result_clear(&r);
    sdxl_engine_free(&e);
}

static void s_refused(sdxl_engine_t *e, const sdx_image_t *img, double strength, int w, int h,
                      const char *needle, const char *what)
{
    sdxl_gen_params_t gp;
    s_params(&gp, img, strength);
    gp.width = w;
    gp.height = h;
    sdxl_result_t r;
    int rc = sdxl_generate(e, &gp, &r);
    sdx_test_check(rc != 0 && r.input_error && strstr(sdx_last_error(), needle),
                   "%s refused as an input error: %s", what, rc ? sdx_last_error() : "ran");
    if (rc == 0)
        sdxl_result_clear(&r);
}

/* An RGB image of w x h (a grey ramp) in *img; caller clears. */
static int s_make_image(sdx_image_t *img, int w, int h)
{
    img->width = w;
    img->height = h;
    img->channels = 3;
    img->pixels = malloc((size_t)w * h * 3);
    if (!img->pixels)
        return -1;
    for (int i = 0; i < w * h * 3; i++)
        img->pixels[i] = (uint8_t)(i * 7);
    return 0;
}

int main(void)
{
    char model[4096], single[4096];
    snprintf(model, sizeof model, "%s", sdx_test_path("model"));
    snprintf(single, sizeof single, "%s", sdx_test_path("model_single_file/tiny_sdxl.safetensors"));
    int64_t live0 = sdx_tensor_live_count();

    ref_t ref = {0};
    sdx_safetensors_t *st = sdx_test_open("ref/pipeline/img2img_euler_s06.safetensors");
    if (!st)
        return sdx_test_done();
    ref.lat = sdx_test_get(st, "latents_final");
    ref.np = sdx_test_get(st, "image_np");
    ref.d0 = sdx_test_get(st, "rng_draw_0");
    ref.d1 = sdx_test_get(st, "rng_draw_1");
    ref.d2 = sdx_test_get(st, "rng_draw_2");
    ref.u8 = sdx_test_get(st, "init_image_uint8");
    ref.pre = sdx_test_get(st, "image_preprocessed");
    sdx_safetensors_close(&st);
    if (!ref.lat || !ref.np || !ref.d0 || !ref.d1 || !ref.d2 || !ref.u8 || !ref.pre) {
        s_ref_free(&ref);
        return sdx_test_done();
    }

    /* the init image as sdxl-gen would read it */
    sdx_image_t img = {0};
    size_t len = 0;
    char *png = sdx_test_read_file(sdx_test_path("inputs/init_image.png"), &len);
    if (!sdx_test_check(png && sdx_png_decode(png, len, &img) == 0 && img.width == 128 &&
                            img.height == 128 && img.channels == 3,
                        "decode inputs/init_image.png to 128x128 RGB (%s)",
                        png ? sdx_last_error() : "unreadable")) {
        free(png);
        s_ref_free(&ref);
        return sdx_test_done();
    }
    free(png);
    uint8_t *u8 = malloc((size_t)128 * 128 * 3);
    sdx_test_check(u8 && sdx_to_host(ref.u8, SDX_U8, u8, 128 * 128 * 3) == 0 &&
                       memcmp(u8, img.pixels, 128 * 128 * 3) == 0,
                   "the PNG's pixels are init_image_uint8");
    free(u8);
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *pre;
    sdx_device_t cpu = {SDX_CPU, 0};
    if (sdx_image_to_tensor(S, &pre, &img, SDX_F32, cpu) == 0)
        sdx_test_check(sdx_test_max_abs(pre, ref.pre) <= 1e-6,
                       "preprocessed image = image_preprocessed (max |d| %.3g)",
                       sdx_test_max_abs(pre, ref.pre));
    sdx_scope_free(&S);

    sdxl_engine_t *e = s_engine(model, NULL);
    if (e) {
        s_start_checks(e, &img, &ref);
        s_golden_run(e, "diffusers", &img, &ref, 0);

        /* strength 1: all 5 steps */
        sdxl_gen_params_t gp;
        s_params(&gp, &img, 1.0);
        gp.progress = s_count;
        s_steps_seen = s_total_seen = 0;
        sdxl_result_t r;
        int rc = sdxl_generate(e, &gp, &r);
        sdx_test_check(rc == 0 && r.steps_done == 5 && s_steps_seen == 5 && s_total_seen == 5,
                       "strength 1 runs all 5 steps (%s, steps_done %d, callbacks %d of %d)",
                       rc ? sdx_last_error() : "ok", rc ? 0 : r.steps_done, s_steps_seen,
                       s_total_seen);
        if (rc == 0)
            sdxl_result_clear(&r);

        /* every scheduler family starts mid-schedule: the count of model
           calls is the table's length from t_start * order */
        static const char *const scheds[] = {
            "Euler a", "DPM++ 2M Karras", "DDIM", "UniPC", "Heun", "LMS", "PNDM", "DPM2 a"};
        for (size_t k = 0; k < sizeof scheds / sizeof *scheds; k++) {
            s_params(&gp, &img, 0.6);
            gp.scheduler = scheds[k];
            sdx_scheduler_t *sch = sdx_scheduler_new(scheds[k], NULL);
            int want = -1;
            if (sch && sdx_scheduler_set_timesteps(sch, 5) == 0 &&
                sdx_scheduler_strength_begin(sch, 0.6) >= 0)
                want = sdx_scheduler_count(sch) - sdx_scheduler_begin_index(sch);
            sdx_scheduler_destroy(&sch);
            rc = sdxl_generate(e, &gp, &r);
            /* rel_l2 is +inf when a value is NaN: a finiteness probe */
            double norm = rc == 0 ? sdx_test_rel_l2(r.latents, r.latents) : INFINITY;
            sdx_test_check(rc == 0 && r.steps_done == want && isfinite(norm),
                           "img2img with %s: %d model calls (want %d), finite latents (%s)",
                           scheds[k], rc ? -1 : r.steps_done, want, rc ? sdx_last_error() : "ok");
            if (rc == 0)
                sdxl_result_clear(&r);
        }

        s_refused(e, &img, 0.0, 0, 0, "strength", "strength 0");
        s_refused(e, &img, -0.5, 0, 0, "strength", "strength -0.5");
        s_refused(e, &img, 1.5, 0, 0, "strength", "strength 1.5");
        s_refused(e, &img, NAN, 0, 0, "strength", "strength NaN");
        s_refused(e, &img, 0.1, 0, 0, "leaves no denoising step",
                  "strength 0.1 of 5 steps (int(0.5) = 0 steps)");
        s_refused(e, &img, 0.6, 64, 64, "does not match", "a 128x128 image for 64x64");
        s_refused(e, &img, 0.6, 128, 96, "does not match", "a 128x128 image for 128x96");
        sdx_image_t odd = {0};
        if (s_make_image(&odd, 100, 100) == 0)
            s_refused(e, &odd, 0.6, 0, 0, "multiples of 8", "a 100x100 init image");
        sdx_image_clear(&odd);
        sdx_image_t empty = {.width = 128, .height = 128, .channels = 3, .pixels = NULL};
        s_refused(e, &empty, 0.6, 0, 0, "init_image", "an init image without pixels");
        sdxl_engine_free(&e);
    }

    s_bf16_checks(model, &img);

    e = s_engine(single, model);
    if (e) {
        s_golden_run(e, "single-file", &img, &ref, 128);
        sdxl_engine_free(&e);
    }

    sdx_image_clear(&img);
    s_ref_free(&ref);
    sdx_test_check(sdx_tensor_live_count() == live0, "no tensor handles leaked (%lld live)",
                   (long long)(sdx_tensor_live_count() - live0));
    return sdx_test_done();
}
