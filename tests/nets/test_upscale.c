/*  test_upscale.c - RRDBNet (sdx_upscale.c) against the golden references
    (BasicSR's RRDBNet run by diffusers' generator: ref/upscaler.safetensors,
    models upscaler/rrdbnet_x4 and _x2), tiled against whole-image upscaling,
    the configuration read from shapes, refusals, and Lanczos-3 resizing.

    Tolerances: the raw network output within rel L2 1e-5 (float32, the same
    convolutions in the same order; measured ~1e-7). Tiling with a pad wider
    than the network's receptive field (about 1 + 2*3*5 = 31 input pixels for
    the tiny 2-block model) must give the whole-image result to within one
    8-bit level (different convolution tile sizes may round differently). */
#include "sdx_test.h"
#include "sdx_upscale.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_parity(const char *file, const char *ref, int scale)
{
    sdx_safetensors_t *st = sdx_test_open("ref/upscaler.safetensors");
    sdx_tensor_t *x = sdx_test_get(st, "input"), *want = sdx_test_get(st, ref);
    sdx_rrdb_t *m = sdx_rrdb_load(sdx_test_path(file), SDX_F32, (sdx_device_t){SDX_CPU, 0});
    sdx_test_check(m != NULL, "load %s (%s)", file, m ? "ok" : sdx_last_error());
    if (m) {
        const sdx_rrdb_config_t *c = sdx_rrdb_config(m);
        sdx_test_check(c->scale == scale && c->num_feat == 8 && c->num_block == 2 &&
                           c->num_grow_ch == 4 && c->num_in_ch == 3 && c->num_out_ch == 3,
                       "%s: config from shapes: scale %d feat %d blocks %d grow %d", file,
                       c->scale, c->num_feat, c->num_block, c->num_grow_ch);
        sdx_tensor_t *y = NULL;
        int rc = sdx_rrdb_forward(m, NULL, &y, x);
        sdx_test_check(rc == 0, "%s forward (%s)", file, rc ? sdx_last_error() : "ok");
        if (rc == 0)
            sdx_test_close(y, want, 1e-5, ref);
        sdx_tensor_free(&y);
        int64_t live = sdx_tensor_live_count();
        for (int i = 0; i < 3; i++) {
            rc = sdx_rrdb_forward(m, NULL, &y, x);
            sdx_tensor_free(&y);
        }
        sdx_test_check(sdx_tensor_live_count() == live, "%s: forward leaks no tensor", file);
    }
    sdx_rrdb_free(&m);
    sdx_tensor_free(&x);
    sdx_tensor_free(&want);
    sdx_safetensors_close(&st);
}

static void s_noise_image(sdx_image_t *img, int w, int h)
{
    img->width = w;
    img->height = h;
    img->channels = 3;
    img->pixels = malloc((size_t)w * h * 3);
    uint32_t s = 12345;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        s = s * 1664525u + 1013904223u;
        /* smooth-ish content plus noise, so the network sees structure */
        size_t p = i / 3, x = p % (size_t)w, y = p / (size_t)w;
        img->pixels[i] = (uint8_t)((x * 5 + y * 3 + (s >> 28) * 4 + (i % 3) * 60) & 0xff);
    }
}

static void test_tiling(const char *file)
{
    sdx_rrdb_t *m = sdx_rrdb_load(sdx_test_path(file), SDX_F32, (sdx_device_t){SDX_CPU, 0});
    if (!m)
        return;
    sdx_image_t in = {0}, whole = {0}, tiled = {0};
    s_noise_image(&in, 75, 50); /* odd sizes: the x2 model needs even tiles */
    sdx_upscale_opts_t o;
    sdx_upscale_opts_init(&o);
    o.tile = 0;
    int rc1 = sdx_rrdb_upscale(m, &in, &o, &whole);
    o.tile = 24;
    o.pad = 36;
    int rc2 = sdx_rrdb_upscale(m, &in, &o, &tiled);
    int sc = sdx_rrdb_config(m)->scale;
    sdx_test_check(rc1 == 0 && rc2 == 0 && whole.width == 75 * sc && whole.height == 50 * sc &&
                       tiled.width == whole.width && tiled.height == whole.height,
                   "%s: whole and tiled upscale %dx%d -> %dx%d (%s)", file, in.width, in.height,
                   whole.width, whole.height, rc1 || rc2 ? sdx_last_error() : "ok");
    if (rc1 == 0 && rc2 == 0) {
        int maxd = 0;
        size_t n = (size_t)whole.width * whole.height * 3, differ = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)whole.pixels[i] - (int)tiled.pixels[i]);
            maxd = d > maxd ? d : maxd;
            differ += d != 0;
        }
        sdx_test_check(maxd <= 1, "%s: 24-pixel tiles with 36 of pad match the whole image "
                       "(max diff %d, %zu of %zu values differ)", file, maxd, differ, n);
    }
    sdx_image_clear(&whole);
    sdx_image_clear(&tiled);
    sdx_image_clear(&in);
    sdx_rrdb_free(&m);
}

static void test_refusals(void)
{
    sdx_rrdb_t *m = sdx_rrdb_load("/nonexistent/x.pth", SDX_F32, (sdx_device_t){SDX_CPU, 0});
    sdx_test_check(!m && strstr(sdx_last_error(), "pickle"), "a .pth is refused: %s",
                   sdx_last_error());
    m = sdx_rrdb_load(sdx_test_path("model/vae/diffusion_pytorch_model.safetensors"), SDX_F32,
                      (sdx_device_t){SDX_CPU, 0});
    sdx_test_check(!m && strstr(sdx_last_error(), "not a BasicSR RRDBNet"),
                   "a VAE is not an upscaler: %s", sdx_last_error());
}

static void test_lanczos(void)
{
    sdx_image_t in = {0}, out = {0}, back = {0};
    s_noise_image(&in, 40, 30);
    memset(in.pixels, 200, (size_t)40 * 30 * 3);
    int rc = sdx_lanczos_resize(&in, 100, 75, &out);
    bool flat = rc == 0;
    for (size_t i = 0; flat && i < (size_t)100 * 75 * 3; i++)
        flat = out.pixels[i] == 200;
    sdx_test_check(flat, "Lanczos keeps a flat image flat (40x30 -> 100x75)");
    sdx_image_clear(&out);
    sdx_image_clear(&in);
    /* a smooth ramp survives 2x up and back down within a couple of levels */
    in.width = 64, in.height = 48, in.channels = 3;
    in.pixels = malloc((size_t)64 * 48 * 3);
    for (int y = 0; y < 48; y++)
        for (int x = 0; x < 64; x++)
            for (int c = 0; c < 3; c++)
                in.pixels[((size_t)y * 64 + x) * 3 + c] = (uint8_t)(x * 3 + y + c * 10);
    rc = sdx_lanczos_resize(&in, 128, 96, &out) || sdx_lanczos_resize(&out, 64, 48, &back);
    int maxd = 0;
    for (int y = 4; rc == 0 && y < 44; y++) /* away from the borders */
        for (int x = 4; x < 60; x++)
            for (int c = 0; c < 3; c++) {
                size_t i = ((size_t)y * 64 + x) * 3 + c;
                int d = abs((int)in.pixels[i] - (int)back.pixels[i]);
                maxd = d > maxd ? d : maxd;
            }
    sdx_test_check(rc == 0 && maxd <= 2, "Lanczos 2x up and down keeps a ramp (max diff %d)",
                   maxd);
    sdx_image_clear(&out);
    sdx_test_check(sdx_lanczos_resize(&in, 0, 10, &out) != 0, "Lanczos refuses a 0 size");
    sdx_image_clear(&in);
    sdx_image_clear(&out);
    sdx_image_clear(&back);
}

int main(void)
{
    test_lanczos();
    test_parity("upscaler/rrdbnet_x4.safetensors", "output_x4", 4);
    test_parity("upscaler/rrdbnet_x2.safetensors", "output_x2", 2);
    test_tiling("upscaler/rrdbnet_x4.safetensors");
    test_tiling("upscaler/rrdbnet_x2.safetensors");
    test_refusals();
    return sdx_test_done();
}
