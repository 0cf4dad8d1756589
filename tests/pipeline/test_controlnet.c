/*  test_controlnet.c - sdxl_generate with a ControlNet against diffusers'
    StableDiffusionXLControlNetPipeline.

    Reference: golden ref/pipeline/controlnet (Euler, 5 steps, seed 53,
    guidance 5, controlnet_conditioning_scale 0.7, control_guidance 0..1,
    guess_mode off, golden prompt/negative, control image
    golden/inputs/control_image.png 128x128). CPU, float32:
      - the PNG decodes to control_image_uint8 exactly and prepares (u8/255,
        NCHW) to control_image_preprocessed (|d| <= 1e-7 rel);
      - final latents rel L2 < 1e-3 (as test_pipeline.c), image_np within
        1/255 on >= 99.9% of values;
      - the ControlNet changes the result (vs. no control: rel > 1e-2), a
        scale of 0 or a guidance window that keeps no step gives the plain
        txt2img latents exactly;
      - refused as input errors: scale < 0, start >= end, end > 1, no image,
        together with init_image; no tensor handle leaks. */
#include "sdx_test.h"
#include "sdxl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEED 53
#define LAT_TOL 1e-3


static void s_params(sdxl_gen_params_t *gp)
{
    sdxl_gen_params_init(gp);
    gp->prompt = "a photo of an astronaut riding a horse, highly detailed";
    gp->negative_prompt = "blurry, low quality";
    gp->width = gp->height = 128;
    gp->steps = 5;
    gp->guidance_scale = 5.0;
    gp->seed = SEED;
    gp->scheduler = "euler";
}

static int s_refused(sdxl_engine_t *e, sdxl_control_t c, const sdx_image_t *init, const char *what)
{
    sdxl_gen_params_t gp;
    sdxl_result_t r;
    s_params(&gp);
    gp.controls = &c;
    gp.n_controls = 1;
    gp.init_image = init;
    int rc = sdxl_generate(e, &gp, &r);
    return sdx_test_check(rc != 0 && r.input_error, "refused (input error): %s: %s", what,
                          sdx_last_error());
}

int main(void)
{
    sdx_set_num_threads(2);
    sdx_safetensors_t *st = sdx_test_open("ref/pipeline/controlnet.safetensors");
    sdx_tensor_t *lat = sdx_test_get(st, "latents_final"), *np = sdx_test_get(st, "image_np");
    sdx_tensor_t *u8 = sdx_test_get(st, "control_image_uint8");
    sdx_tensor_t *pre = sdx_test_get(st, "control_image_preprocessed");
    sdx_image_t img = {0};
    size_t len = 0;
    char *png = sdx_test_read_file(sdx_test_path("inputs/control_image.png"), &len);
    sdxl_engine_t *e = NULL;
    sdxl_controlnet_t *cn = NULL;
    int64_t live0 = sdx_tensor_live_count();
    if (!sdx_test_check(png && sdx_png_decode(png, len, &img) == 0 && img.width == 128,
                        "control image PNG decodes"))
        goto out;
    {
        sdx_scope_t *S = sdx_scope_new();
        sdx_tensor_t *mine, *ref;
        int64_t shape[3] = {128, 128, img.channels};
        if (img.channels == 3 && sdx_from_host(S, &mine, img.pixels, SDX_U8, shape, 3) == 0)
            sdx_test_check(sdx_test_max_abs(mine, u8) == 0, "PNG = control_image_uint8");
        if (sdx_controlnet_image(S, &ref, &img, 128, 128, SDX_F32, (sdx_device_t){SDX_CPU, 0}) == 0)
            sdx_test_close(ref, pre, 1e-7, "prepared = control_image_preprocessed");
        sdx_scope_free(&S);
    }

    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    char model[4096];
    snprintf(model, sizeof model, "%s", sdx_test_path("model"));
    ep.model_path = model;
    e = sdxl_engine_new(&ep);
    if (!sdx_test_check(e != NULL, "engine (%s)", e ? "ok" : sdx_last_error()))
        goto out;
    cn = sdxl_controlnet_load(e, sdx_test_path("controlnet"));
    if (!sdx_test_check(cn != NULL, "ControlNet loads (%s)", cn ? "ok" : sdx_last_error()))
        goto out;

    sdxl_gen_params_t gp;
    sdxl_result_t r, r0;
    sdxl_control_t c = {.net = cn, .image = &img, .scale = 0.7, .start = 0, .end = 1};
    s_params(&gp);
    gp.controls = &c;
    gp.n_controls = 1;
    int rc = sdxl_generate(e, &gp, &r);
    if (sdx_test_check(rc == 0, "generate with ControlNet (%s)", rc ? sdx_last_error() : "ok")) {
        sdx_test_close(r.latents, lat, LAT_TOL, "latents_final");
        double frac = sdx_test_pixel_match(r.decoded, np);
        sdx_test_check(frac >= 0.999, "image_np within 1/255 on %.4f%% of values", 100 * frac);
        sdx_test_check(r.steps_done == 5, "5 steps");
    }
    /* no control, scale 0, an empty window: plain txt2img */
    s_params(&gp);
    gp.decode = false;
    if (sdx_test_check(sdxl_generate(e, &gp, &r0) == 0, "plain txt2img")) {
        if (rc == 0)
            sdx_test_check(sdx_test_rel_l2(r.latents, r0.latents) > 1e-2,
                           "the ControlNet changes the latents (rel %.3g)",
                           sdx_test_rel_l2(r.latents, r0.latents));
        sdxl_control_t z[2] = {c, c};
        z[0].scale = 0;
        z[1].start = 0.9; /* (i+1)/5 > ... : 0.9 <= i/5 never holds for i < 5 */
        for (int k = 0; k < 2; k++) {
            sdxl_result_t rz;
            gp.controls = &z[k];
            gp.n_controls = 1;
            if (sdx_test_check(sdxl_generate(e, &gp, &rz) == 0, "control %s",
                               k ? "window keeps no step" : "scale 0")) {
                sdx_test_check(sdx_test_max_abs(rz.latents, r0.latents) == 0,
                               "  = plain txt2img exactly");
                sdxl_result_clear(&rz);
            }
        }
        /* two ControlNets at 0.35 each = one at 0.7 (residuals add) */
        sdxl_control_t two[2] = {c, c};
        two[0].scale = two[1].scale = 0.35;
        gp.controls = two;
        gp.n_controls = 2;
        sdxl_result_t r2;
        if (rc == 0 && sdx_test_check(sdxl_generate(e, &gp, &r2) == 0, "two ControlNets")) {
            sdx_test_close(r2.latents, r.latents, 1e-5, "two at 0.35 = one at 0.7");
            sdxl_result_clear(&r2);
        }
        sdxl_result_clear(&r0);
    }
    if (rc == 0)
        sdxl_result_clear(&r);

    sdxl_control_t bad = c;
    bad.scale = -1;
    s_refused(e, bad, NULL, "scale -1");
    bad = c;
    bad.start = 0.5;
    bad.end = 0.5;
    s_refused(e, bad, NULL, "start = end");
    bad = c;
    bad.end = 1.5;
    s_refused(e, bad, NULL, "end 1.5");
    bad = c;
    bad.image = NULL;
    s_refused(e, bad, NULL, "no image");
    s_refused(e, c, &img, "with init_image");
out:
    sdxl_controlnet_free(&cn);
    sdxl_engine_free(&e);
    sdx_image_clear(&img);
    free(png);
    sdx_tensor_free(&lat);
    sdx_tensor_free(&np);
    sdx_tensor_free(&u8);
    sdx_tensor_free(&pre);
    sdx_test_check(sdx_tensor_live_count() == live0 - 4, "no tensor handle leaks (%lld)",
                   (long long)(sdx_tensor_live_count() - live0 + 4));
    sdx_safetensors_close(&st);
    return sdx_test_done();
}
