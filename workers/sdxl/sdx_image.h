/*  sdx_image.h - 8-bit RGB images: tensor <-> pixels, PNG encode/decode.

    The engine's images are plain host buffers (HWC, 8-bit, RGB or RGBA).
    PNG goes through libspng. Not for resizing or colour work: that belongs
    to postprocessing. */
#ifndef SDX_IMAGE_H
#define SDX_IMAGE_H

#include "sdx_torch.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int width, height, channels; /* channels: 3 (RGB) or 4 (RGBA) */
    uint8_t *pixels;             /* width*height*channels bytes, row-major, owned */
} sdx_image_t;

/* Free pixels and zero the struct. */
void sdx_image_clear(sdx_image_t *img);

/* Decoded VAE output x [B,3,H,W] in [-1,1] -> B RGB images, exactly as
   diffusers' postprocessing: clamp(x/2+0.5, 0, 1), then *255 rounded (numpy
   `(img * 255).round()`). `out` has room for B images; caller clears each. */
int sdx_image_from_tensor(const sdx_tensor_t *x, sdx_image_t *out, int batch);
/* Image -> [1,3,H,W] float tensor in [-1,1] (for img2img / VAE encode). */
int sdx_image_to_tensor(sdx_scope_t *S, sdx_tensor_t **out, const sdx_image_t *img,
                        sdx_dtype_t dt, sdx_device_t dev);

/* Encode as PNG into a malloc'd buffer (caller frees). meta_kv: optional
   tEXt pairs {"k","v",...,NULL}. 0 / -1 with sdx_last_error(). */
int sdx_png_encode(const sdx_image_t *img, const char *const *meta_kv, uint8_t **out,
                   size_t *out_len);
/* Decode PNG bytes to 8-bit RGB (alpha dropped). Caller clears img. */
int sdx_png_decode(const void *data, size_t len, sdx_image_t *img);
int sdx_png_write_file(const sdx_image_t *img, const char *path, const char *const *meta_kv);

#endif
