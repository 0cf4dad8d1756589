/*  fuzz_image.c - libFuzzer target for the image decoders that read init,
    control and upscale inputs: sdx_image_decode (workers/sdxl/sdx_imgcodec.c)
    picks PNG (libspng, sdx_png_decode in sdx_image.c), JPEG (libjpeg-turbo)
    or WebP (libwebp) by signature. The input is the encoded file. It is
    decoded with a 4 Mpx limit (so that the fuzzer spends its time in the
    parsers, not in memset), and a small input is also decoded with the
    default 64 Mpx limit, which must refuse huge headers before allocating.
    A decoded image must be 8-bit RGB of the header's size within the limit;
    a refusal must say why. Decoded images are encoded again as PNG and
    read back (same size, same pixels). Seeds: tests/fuzz/corpus/image
    (written by tools/make-image-corpus), regressions:
    tests/fuzz/regressions/image. */
#include "sdx_imgcodec.h"
#include "sdx_torch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_image: %s:%d: %s\n", __FILE__, __LINE__, #c);                    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void s_decode(const uint8_t *data, size_t size, uint64_t limit)
{
    sdx_image_t img;
    memset(&img, 0x55, sizeof img);
    if (sdx_image_decode(data, size, limit, &img) != 0) {
        CHECK(sdx_last_error()[0] != '\0');
        CHECK(img.pixels == NULL);
        return;
    }
    if (!limit)
        limit = 64u << 20;
    CHECK(img.pixels && img.channels == 3 && img.width > 0 && img.height > 0);
    CHECK((uint64_t)img.width * (uint64_t)img.height <= limit);
    CHECK(img.width <= SDX_IMAGE_MAX_SIDE && img.height <= SDX_IMAGE_MAX_SIDE);
    /* every byte is there (ASan sees a short buffer) */
    size_t bytes = (size_t)img.width * img.height * 3;
    unsigned sum = 0;
    for (size_t i = 0; i < bytes; i += 4096)
        sum += img.pixels[i];
    sum += img.pixels[bytes - 1];
    (void)sum;
    if (bytes <= (1u << 16)) {
        uint8_t *png = NULL;
        size_t len = 0;
        CHECK(sdx_png_encode(&img, NULL, &png, &len) == 0);
        sdx_image_t back;
        CHECK(sdx_image_decode(png, len, 0, &back) == 0);
        CHECK(back.width == img.width && back.height == img.height && back.channels == 3);
        CHECK(memcmp(back.pixels, img.pixels, bytes) == 0);
        sdx_image_clear(&back);
        free(png);
    }
    sdx_image_clear(&img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_decode(data, size, 4u << 20);
    if (size < 512)
        s_decode(data, size, 0);
    return 0;
}
