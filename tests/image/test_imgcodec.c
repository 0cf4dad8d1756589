/*  test_imgcodec.c - sdx_imgcodec: the A1111 parameters text against
    hand-written expectations, PNG/JPEG/WebP encode + decode round trips
    (lossless WebP and PNG bit-exact, JPEG within its loss), the EXIF block's
    layout, quality honoured, decoder refusals.
    With an argument DIR it also writes sample.{png,jpg,webp} there for
    test_pil_metadata.py, which reads them back with PIL. */
#include "sdx_imgcodec.h"
#include "sdx_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *PROMPT = "a lighthouse, at dusk: (dramatic:1.2) \"clouds\"";

static void s_image(sdx_image_t *img, int w, int h, int c)
{
    img->width = w, img->height = h, img->channels = c;
    img->pixels = malloc((size_t)w * h * c);
    uint32_t s = 7;
    for (size_t i = 0; i < (size_t)w * h * c; i++) {
        s = s * 1103515245u + 12345u;
        img->pixels[i] = (uint8_t)((i / c % w) * 2 + (s >> 29));
    }
}

static char *s_text(void)
{
    sdx_infotext_t it;
    sdx_infotext_init(&it);
    char sampler[64];
    it.prompt = PROMPT;
    it.negative_prompt = "blurry, low quality";
    it.steps = 30;
    it.sampler = sdx_a1111_sampler("DPMSolverMultistepScheduler", true, sampler, sizeof sampler);
    it.cfg_scale = 7;
    it.seed = 1234567;
    it.width = 1024, it.height = 768;
    it.model_hash = "31e35c80fc";
    it.model_name = "sd_xl_base_1.0";
    return sdx_infotext_format(&it);
}

static void test_infotext(void)
{
    char *t = s_text();
    const char *want = "a lighthouse, at dusk: (dramatic:1.2) \"clouds\"\n"
                       "Negative prompt: blurry, low quality\n"
                       "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.0, Seed: 1234567, "
                       "Size: 1024x768, Model hash: 31e35c80fc, Model: sd_xl_base_1.0";
    sdx_test_check(t && strcmp(t, want) == 0, "infotext as A1111 writes it:\n%s", t ? t : "(null)");
    free(t);
    sdx_infotext_t it;
    sdx_infotext_init(&it);
    char sampler[64];
    it.prompt = "p";
    it.steps = 4;
    it.sampler = sdx_a1111_sampler("EulerAncestralDiscreteScheduler", false, sampler, 64);
    it.cfg_scale = 6.5;
    it.seed = -1;
    it.width = it.height = 64;
    it.model_name = "my, model: v2";
    it.denoising_strength = 0.75;
    it.clip_skip = 2;
    t = sdx_infotext_format(&it);
    want = "p\nSteps: 4, Sampler: Euler a, CFG scale: 6.5, Seed: -1, Size: 64x64, "
           "Model: \"my, model: v2\", Denoising strength: 0.75, Clip skip: 2";
    sdx_test_check(t && strcmp(t, want) == 0,
                   "no negative line when empty; quoting of , and :; img2img fields:\n%s",
                   t ? t : "(null)");
    free(t);
    sdx_test_check(strcmp(sdx_a1111_sampler("UniPCMultistepScheduler", false, sampler, 64),
                          "UniPC") == 0 &&
                       strcmp(sdx_a1111_sampler("NoSuchScheduler", false, sampler, 64),
                              "NoSuchScheduler") == 0,
                   "sampler names: UniPC; unknown classes as given");
}

static void test_roundtrip(const char *dir)
{
    char *text = s_text();
    sdx_image_t img = {0};
    s_image(&img, 67, 45, 3);
    struct {
        sdx_img_format_t f;
        bool lossless;
        int quality;
        const char *file;
    } cases[] = {
        {SDX_FMT_PNG, false, 95, "sample.png"},
        {SDX_FMT_JPEG, false, 95, "sample.jpg"},
        {SDX_FMT_WEBP, false, 90, "sample.webp"},
        {SDX_FMT_WEBP, true, 95, "sample-lossless.webp"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *name = cases[i].file;
        if (!sdx_img_format_available(cases[i].f)) {
            sdx_test_check(false, "%s: this build cannot encode %s", name,
                           sdx_img_format_name(cases[i].f));
            continue;
        }
        sdx_encode_opts_t o;
        sdx_encode_opts_init(&o);
        o.format = cases[i].f;
        o.lossless = cases[i].lossless;
        o.quality = cases[i].quality;
        o.text = text;
        uint8_t *buf = NULL;
        size_t len = 0;
        int rc = sdx_image_encode(&img, &o, &buf, &len);
        sdx_test_check(rc == 0 && sdx_img_format_sniff(buf, len) == cases[i].f,
                       "%s: encoded %zu bytes (%s)", name, len, rc ? sdx_last_error() : "ok");
        sdx_image_t back = {0};
        if (rc == 0 && sdx_image_decode(buf, len, 0, &back) == 0 && back.width == img.width &&
            back.height == img.height && back.channels == 3) {
            double se = 0;
            int maxd = 0;
            for (size_t k = 0; k < (size_t)img.width * img.height * 3; k++) {
                int d = abs((int)img.pixels[k] - (int)back.pixels[k]);
                se += (double)d * d;
                maxd = d > maxd ? d : maxd;
            }
            bool exact = cases[i].f == SDX_FMT_PNG || cases[i].lossless;
            double rmse = __builtin_sqrt(se / ((double)img.width * img.height * 3));
            sdx_test_check(exact ? maxd == 0 : rmse < 12.0,
                           "%s: decodes back %s (max diff %d, rmse %.2f)", name,
                           exact ? "bit-exact" : "close", maxd, rmse);
        } else if (rc == 0) {
            sdx_test_check(false, "%s: decode back (%s)", name, sdx_last_error());
        }
        sdx_image_clear(&back);
        if (dir && rc == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, name);
            FILE *f = fopen(path, "wb");
            sdx_test_check(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0, "write %s",
                           path);
        }
        free(buf);
    }
    /* quality is honoured: a lower JPEG quality gives fewer bytes */
    if (sdx_img_format_available(SDX_FMT_JPEG)) {
        sdx_encode_opts_t o;
        sdx_encode_opts_init(&o);
        o.format = SDX_FMT_JPEG;
        size_t sizes[2];
        for (int q = 0; q < 2; q++) {
            uint8_t *b = NULL;
            o.quality = q ? 30 : 95;
            sdx_image_encode(&img, &o, &b, &sizes[q]);
            free(b);
        }
        sdx_test_check(sizes[1] < sizes[0], "JPEG quality 30 is smaller than 95 (%zu < %zu)",
                       sizes[1], sizes[0]);
    }
    sdx_image_clear(&img);
    free(text);
}

static void test_exif_layout(void)
{
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = sdx_exif_usercomment("h\xc3\xa9\xf0\x9f\x98\x80", 0, &b, &n);
    /* "h", "é" (U+00E9), "😀" (U+1F600 -> D83D DE00) */
    static const uint8_t want[] = {'U', 'N', 'I', 'C', 'O', 'D', 'E', 0,    0x00, 'h',
                                   0x00, 0xE9, 0xD8, 0x3D, 0xDE, 0x00};
    sdx_test_check(rc == 0 && n == 44 + sizeof want && memcmp(b, "II*\0", 4) == 0 &&
                       memcmp(b + 44, want, sizeof want) == 0,
                   "EXIF: TIFF header, UserComment UNICODE + UTF-16BE with a surrogate pair");
    free(b);
    char big[40001];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    rc = sdx_exif_usercomment(big, 65527, &b, &n);
    sdx_test_check(rc == 0 && n <= 65527 && n > 65000, "EXIF: a long text is cut to fit (%zu)",
                   n);
    free(b);
}

static bool s_refused(const void *d, size_t n, uint64_t maxpx, const char *want, char *why)
{
    sdx_image_t img = {0};
    int rc = sdx_image_decode(d, n, maxpx, &img);
    snprintf(why, 256, "%s", rc ? sdx_last_error() : "accepted");
    sdx_image_clear(&img);
    return rc != 0 && (!want || strstr(why, want));
}

static void test_decode_refusals(void)
{
    char why[256];
    bool ok = s_refused("GIF89a....", 10, 0, "not a PNG, JPEG or WebP", why);
    sdx_test_check(ok, "unknown bytes refused: %s", why);
    static const uint8_t jpeg_head[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F'};
    ok = s_refused(jpeg_head, sizeof jpeg_head, 0, NULL, why);
    sdx_test_check(ok, "a truncated JPEG is refused: %s", why);
    static const uint8_t webp_head[] = {'R', 'I', 'F', 'F', 4, 0, 0, 0, 'W', 'E', 'B', 'P', 0, 0};
    ok = s_refused(webp_head, sizeof webp_head, 0, NULL, why);
    sdx_test_check(ok, "a truncated WebP is refused: %s", why);
    sdx_image_t big = {0};
    s_image(&big, 300, 200, 3);
    uint8_t *b = NULL;
    size_t n = 0;
    sdx_image_encode(&big, NULL, &b, &n);
    ok = s_refused(b, n, 1000, "larger", why);
    sdx_test_check(ok, "an image over the pixel limit is refused: %s", why);
    free(b);
    sdx_image_clear(&big);
}

int main(int argc, char **argv)
{
    test_infotext();
    test_roundtrip(argc > 1 ? argv[1] : NULL);
    test_exif_layout();
    test_decode_refusals();
    return sdx_test_done();
}
