/*  sdx_image.c - tensor <-> 8-bit pixels and PNG through libspng. */
#include "sdx_image.h"
#include "sdx_imgcodec.h" /* SDX_IMAGE_MAX_SIDE */

#include <stdbool.h>

#include <math.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sdx_image_clear(sdx_image_t *img)
{
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

int sdx_image_from_tensor(const sdx_tensor_t *x, sdx_image_t *out, int batch)
{
    int64_t shape[SDX_MAX_DIMS];
    if (sdx_tensor_shape(x, shape) != 4 || shape[1] != 3 || shape[0] != batch)
        return sdx_set_error("image: expected a [%d,3,H,W] tensor", batch);
    int64_t h = shape[2], w = shape[3], plane = h * w;
    size_t n = (size_t)(batch * 3 * plane);
    float *host = malloc(n * sizeof(float));
    if (!host)
        return sdx_set_error("image: out of memory");
    if (sdx_to_host(x, SDX_F32, host, n * sizeof(float)) != 0) {
        free(host);
        return -1;
    }
    for (int b = 0; b < batch; b++) {
        uint8_t *px = malloc((size_t)(plane * 3));
        if (!px) {
            for (int j = 0; j < b; j++)
                sdx_image_clear(&out[j]);
            free(host);
            return sdx_set_error("image: out of memory");
        }
        const float *src = host + (size_t)b * 3 * plane;
        for (int64_t i = 0; i < plane; i++) {
            for (int c = 0; c < 3; c++) {
                /* diffusers: (x / 2 + 0.5).clamp(0, 1), then numpy round half to even */
                float v = src[c * plane + i] / 2.0f + 0.5f;
                v = v < 0 ? 0 : (v > 1 ? 1 : v);
                px[i * 3 + c] = (uint8_t)nearbyintf(v * 255.0f);
            }
        }
        out[b] = (sdx_image_t){.width = (int)w, .height = (int)h, .channels = 3, .pixels = px};
    }
    free(host);
    return 0;
}

int sdx_image_to_tensor(sdx_scope_t *S, sdx_tensor_t **out, const sdx_image_t *img,
                        sdx_dtype_t dt, sdx_device_t dev)
{
    int64_t plane = (int64_t)img->width * img->height;
    float *chw = malloc((size_t)(plane * 3) * sizeof(float));
    if (!chw)
        return sdx_set_error("image: out of memory");
    for (int64_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            chw[c * plane + i] = img->pixels[i * img->channels + c] / 255.0f * 2.0f - 1.0f;
    int64_t shape[4] = {1, 3, img->height, img->width};
    sdx_tensor_t *t = NULL;
    int rc = sdx_from_host(NULL, &t, chw, SDX_F32, shape, 4);
    free(chw);
    if (rc != 0)
        return -1;
    rc = sdx_to(S, out, t, dt, dev);
    sdx_tensor_free(&t);
    return rc;
}

int sdx_png_encode(const sdx_image_t *img, const char *const *meta_kv, uint8_t **out,
                   size_t *out_len)
{
    if (!img || !img->pixels || (img->channels != 3 && img->channels != 4))
        return sdx_set_error("png: bad image");
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!ctx)
        return sdx_set_error("png: out of memory");
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = {
        .width = (uint32_t)img->width,
        .height = (uint32_t)img->height,
        .bit_depth = 8,
        .color_type = img->channels == 4 ? SPNG_COLOR_TYPE_TRUECOLOR_ALPHA : SPNG_COLOR_TYPE_TRUECOLOR,
    };
    int err = spng_set_ihdr(ctx, &ihdr);
    size_t nmeta = 0;
    while (meta_kv && meta_kv[2 * nmeta] && meta_kv[2 * nmeta + 1])
        nmeta++;
    struct spng_text *texts = NULL;
    if (!err && nmeta) {
        texts = calloc(nmeta, sizeof *texts);
        if (!texts) {
            spng_ctx_free(ctx);
            return sdx_set_error("png: out of memory");
        }
        for (size_t i = 0; i < nmeta; i++) {
            snprintf(texts[i].keyword, sizeof texts[i].keyword, "%s", meta_kv[2 * i]);
            const char *v = meta_kv[2 * i + 1];
            bool ascii = true;
            for (const char *p = v; *p && ascii; p++)
                ascii = (unsigned char)*p < 0x80;
            /* tEXt is Latin-1: UTF-8 text goes in an uncompressed iTXt, as
               PIL (and so A1111) writes it */
            texts[i].type = ascii ? SPNG_TEXT : SPNG_ITXT;
            texts[i].length = strlen(v);
            texts[i].text = (char *)v;
            texts[i].language_tag = (char *)"";
            texts[i].translated_keyword = (char *)"";
        }
        err = spng_set_text(ctx, texts, (uint32_t)nmeta);
    }
    size_t bytes = (size_t)img->width * img->height * img->channels;
    if (!err)
        err = spng_encode_image(ctx, img->pixels, bytes, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    free(texts);
    if (err) {
        spng_ctx_free(ctx);
        return sdx_set_error("png: encode failed: %s", spng_strerror(err));
    }
    size_t len = 0;
    void *buf = spng_get_png_buffer(ctx, &len, &err);
    spng_ctx_free(ctx);
    if (!buf)
        return sdx_set_error("png: encode failed: %s", spng_strerror(err));
    *out = buf;
    *out_len = len;
    return 0;
}

int sdx_png_decode(const void *data, size_t len, sdx_image_t *img)
{
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx)
        return sdx_set_error("png: out of memory");
    /* Hostile input: bound chunk sizes and the decoded image size. */
    spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_ERROR);
    spng_set_chunk_limits(ctx, 64u << 20, 64u << 20);
    spng_set_image_limits(ctx, SDX_IMAGE_MAX_SIDE, SDX_IMAGE_MAX_SIDE);
    int err = spng_set_png_buffer(ctx, data, len);
    struct spng_ihdr ihdr;
    size_t size = 0;
    if (!err)
        err = spng_get_ihdr(ctx, &ihdr);
    if (!err)
        err = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &size);
    uint8_t *px = NULL;
    if (!err) {
        px = malloc(size);
        if (!px) {
            spng_ctx_free(ctx);
            return sdx_set_error("png: out of memory");
        }
        err = spng_decode_image(ctx, px, size, SPNG_FMT_RGB8, SPNG_DECODE_TRNS);
    }
    spng_ctx_free(ctx);
    if (err) {
        free(px);
        return sdx_set_error("png: decode failed: %s", spng_strerror(err));
    }
    *img = (sdx_image_t){.width = (int)ihdr.width, .height = (int)ihdr.height, .channels = 3,
                         .pixels = px};
    return 0;
}

int sdx_png_write_file(const sdx_image_t *img, const char *path, const char *const *meta_kv)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (sdx_png_encode(img, meta_kv, &buf, &len) != 0)
        return -1;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(buf);
        return sdx_set_error("%s: cannot open for writing", path);
    }
    size_t wr = fwrite(buf, 1, len, f);
    int rc = fclose(f);
    free(buf);
    if (wr != len || rc != 0)
        return sdx_set_error("%s: write failed", path);
    return 0;
}
