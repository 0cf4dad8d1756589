/*  test_refiner.c - the ensemble of experts (sdxl_gen_params_t
    denoising_end / denoising_start / init_latents, a refiner engine with
    components_path) against diffusers.

    References: golden ref/pipeline/refiner_base_part (base
    StableDiffusionXLPipeline, Euler, 10 steps, denoising_end 0.8 -> 8 model
    steps, seed 52) and ref/pipeline/refiner (StableDiffusionXLImg2ImgPipeline
    with refiner_unet, the base's text_encoder_2/VAE, denoising_start 0.8 ->
    2 steps, aesthetic 6.0 / 2.5, seed 1052, handoff_latents as input);
    guidance 5, the golden prompt/negative, 128x128, CPU float32.
    Tolerances as test_img2img.c: latents rel L2 < 1e-3, image_np within
    1/255 on >= 99.9% of values. Also: our own base handoff fed to the
    refiner gives the reference too; bad fractions and shapes are input
    errors naming the field; no tensor handle leaks. */
#include "sdx_test.h"
#include "sdxl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_prompt = "a photo of an astronaut riding a horse, highly detailed";
static const char *s_negative = "blurry, low quality";


static int s_steps_seen, s_total_seen;
static void s_count(int step, int total, double elapsed, void *ud)
{
    (void)step;
    (void)elapsed;
    (void)ud;
    s_steps_seen++;
    s_total_seen = total;
}

static void s_params(sdxl_gen_params_t *gp, uint64_t seed)
{
    sdxl_gen_params_init(gp);
    gp->prompt = s_prompt;
    gp->negative_prompt = s_negative;
    gp->steps = 10;
    gp->guidance_scale = 5.0;
    gp->seed = seed;
    gp->width = gp->height = 128;
    gp->scheduler = "EulerDiscreteScheduler";
    gp->progress = s_count;
}

static void s_refused(sdxl_engine_t *e, sdxl_gen_params_t *gp, const char *needle)
{
    sdxl_result_t r;
    int rc = sdxl_generate(e, gp, &r);
    sdx_test_check(rc != 0 && r.input_error && strstr(sdx_last_error(), needle),
                   "refused as an input error naming %s (%s)", needle,
                   rc ? sdx_last_error() : "accepted");
    if (rc == 0)
        sdxl_result_clear(&r);
}

int main(void)
{
    char model[4096], refiner[4096];
    snprintf(model, sizeof model, "%s", sdx_test_path("model"));
    snprintf(refiner, sizeof refiner, "%s", sdx_test_path("refiner_unet"));
    int64_t live0 = sdx_tensor_live_count();

    sdx_safetensors_t *st = sdx_test_open("ref/pipeline/refiner_base_part.safetensors");
    if (!st)
        return sdx_test_done();
    sdx_tensor_t *b_lat = sdx_test_get(st, "latents_final"), *b_np = sdx_test_get(st, "image_np");
    sdx_safetensors_close(&st);
    st = sdx_test_open("ref/pipeline/refiner.safetensors");
    if (!st) {
        sdx_tensor_free(&b_lat);
        sdx_tensor_free(&b_np);
        return sdx_test_done();
    }
    sdx_tensor_t *r_lat = sdx_test_get(st, "latents_final"), *r_np = sdx_test_get(st, "image_np"),
                 *hand = sdx_test_get(st, "handoff_latents");
    sdx_safetensors_close(&st);

    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.model_path = model;
    sdxl_engine_t *base = sdxl_engine_new(&ep);
    sdx_test_check(base != NULL, "load base (%s)", base ? "ok" : sdx_last_error());
    ep.model_path = refiner;
    ep.components_path = model;
    sdxl_engine_t *ref = sdxl_engine_new(&ep);
    sdx_test_check(ref != NULL, "load refiner UNet + base te2/VAE (%s)",
                   ref ? "ok" : sdx_last_error());

    sdxl_gen_params_t gp;
    sdxl_result_t rb = {0}, rr;
    if (base && b_lat) {
        s_params(&gp, 52);
        gp.denoising_end = 0.8;
        s_steps_seen = s_total_seen = 0;
        int rc = sdxl_generate(base, &gp, &rb);
        if (sdx_test_check(rc == 0, "base denoising_end 0.8 (%s)", rc ? sdx_last_error() : "ok")) {
            sdx_test_check(rb.steps_done == 8 && s_steps_seen == 8 && s_total_seen == 8,
                           "base: 8 of 10 steps (ran %d, progress %d/%d)", rb.steps_done,
                           s_steps_seen, s_total_seen);
            sdx_test_close(rb.latents, b_lat, 1e-3, "base handoff latents vs diffusers");
            double f = sdx_test_pixel_match(rb.decoded, b_np);
            sdx_test_check(f >= 0.999, "base handoff image within 1/255 on %.4f%%", 100 * f);
        }
    }
    if (ref && hand && r_lat) {
        for (int pass = 0; pass < 2; pass++) {
            const sdx_tensor_t *in = pass == 0 ? hand : rb.latents;
            if (!in)
                continue;
            const char *what =
                pass == 0 ? "refiner from the reference handoff" : "refiner from our base handoff";
            s_params(&gp, 1052);
            gp.denoising_start = 0.8;
            gp.init_latents = in;
            s_steps_seen = s_total_seen = 0;
            int rc = sdxl_generate(ref, &gp, &rr);
            if (!sdx_test_check(rc == 0, "%s (%s)", what, rc ? sdx_last_error() : "ok"))
                continue;
            sdx_test_check(rr.steps_done == 2 && s_steps_seen == 2 && s_total_seen == 2,
                           "%s: 2 steps (ran %d, progress %d/%d)", what, rr.steps_done,
                           s_steps_seen, s_total_seen);
            sdx_test_close(rr.latents, r_lat, 1e-3, what);
            double f = sdx_test_pixel_match(rr.decoded, r_np);
            sdx_test_check(f >= 0.999, "%s: image within 1/255 on %.4f%%", what, 100 * f);
            sdxl_result_clear(&rr);
        }
        s_params(&gp, 1);
        gp.denoising_start = 1.5;
        gp.init_latents = hand;
        s_refused(ref, &gp, "denoising_start");
        gp.denoising_start = 0;
        s_refused(ref, &gp, "init_latents");
        gp.denoising_start = 0.8;
        gp.width = 64;
        s_refused(ref, &gp, "init_latents");
        s_params(&gp, 1);
        gp.denoising_start = 0.8;
        s_refused(ref, &gp, "denoising_start");
    }
    if (base) {
        s_params(&gp, 1);
        gp.denoising_end = 1.0;
        s_refused(base, &gp, "denoising_end");
    }
    sdxl_result_clear(&rb);
    sdxl_engine_free(&base);
    sdxl_engine_free(&ref);
    sdx_tensor_t **all[] = {&b_lat, &b_np, &r_lat, &r_np, &hand};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        sdx_tensor_free(all[i]);
    sdx_test_check(sdx_tensor_live_count() == live0, "no tensor handle leaks (%lld live)",
                   (long long)(sdx_tensor_live_count() - live0));
    return sdx_test_done();
}
