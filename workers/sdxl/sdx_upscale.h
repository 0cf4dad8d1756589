/*  sdx_upscale.h - image upscaling: RRDBNet (ESRGAN / Real-ESRGAN) over the
    shim, tiled with overlap so that memory stays bounded whatever the image
    size, and a Lanczos-3 resampler for when no upscaler model is configured.

    RRDBNet follows BasicSR's basicsr/archs/rrdbnet_arch.py (the network of
    RealESRGAN_x4plus and RealESRGAN_x2plus): state-dict names as BasicSR
    writes them (conv_first, body.N.rdbK.convJ, conv_body, conv_up1, conv_up2,
    conv_hr, conv_last), with an optional "params_ema." / "params." /
    "module." prefix. The x2 and x1 variants pixel-unshuffle their input by 2
    and 4 first; the configuration (scale, widths, block count) is read from
    the tensor shapes, so any BasicSR RRDBNet checkpoint in safetensors loads
    without a config file. Pickled .pth files are refused (convert them to
    safetensors first: a pickle can run code).

    Tiling follows Real-ESRGAN's tile_process: the input is cut into tiles of
    `tile` pixels, each is run with `pad` pixels of context on every side
    (replicated at the image border), and only its own region of the output is
    kept. Peak memory then depends on tile+2*pad, not on the image. */
#ifndef SDX_UPSCALE_H
#define SDX_UPSCALE_H

#include "sdx_image.h"
#include "sdx_torch.h"

typedef struct {
    int scale; /* output / input size: 1, 2 or 4 */
    int num_in_ch, num_out_ch, num_feat, num_block, num_grow_ch;
} sdx_rrdb_config_t;

typedef struct sdx_rrdb sdx_rrdb_t;

/* Load a BasicSR RRDBNet from a .safetensors file onto dev in dt (floats
   converted). NULL with the reason in sdx_last_error(). */
sdx_rrdb_t *sdx_rrdb_load(const char *path, sdx_dtype_t dt, sdx_device_t dev);
void sdx_rrdb_free(sdx_rrdb_t **m);
const sdx_rrdb_config_t *sdx_rrdb_config(const sdx_rrdb_t *m);

/* The raw network on x [B, in_ch, H, W] in [0,1] (no clamp), as BasicSR's
   forward. H and W must be multiples of 4/scale for scale < 4. Ownership of
   *out as for every shim output. */
int sdx_rrdb_forward(const sdx_rrdb_t *m, sdx_scope_t *S, sdx_tensor_t **out,
                     const sdx_tensor_t *x);

typedef struct {
    int tile; /* tile edge in input pixels; 0: the whole image at once */
    int pad;  /* context around each tile, in input pixels (Real-ESRGAN: 10) */
    /* optional: called after each tile (done, total); return false to stop
       (the call then fails with "cancelled") */
    bool (*progress)(void *ctx, int done, int total);
    void *progress_ctx;
} sdx_upscale_opts_t;

/* tile 512, pad 10, no progress callback. */
void sdx_upscale_opts_init(sdx_upscale_opts_t *o);

/* Upscale an 8-bit RGB image by the model's scale: out is RGB, scale times
   the size, rounded as Real-ESRGAN does (clamp to [0,1], *255, round).
   Caller clears out. 0 / -1 with sdx_last_error(). */
int sdx_rrdb_upscale(const sdx_rrdb_t *m, const sdx_image_t *in, const sdx_upscale_opts_t *o,
                     sdx_image_t *out);

/* Lanczos-3 resize of an 8-bit image (RGB or RGBA) to out_w x out_h,
   separable, in float, with the kernel widened by the scale when shrinking.
   Caller clears out. */
int sdx_lanczos_resize(const sdx_image_t *in, int out_w, int out_h, sdx_image_t *out);

/* An encoded image (PNG, JPEG, WebP) decoded and fitted to w x h: resized
   with Lanczos-3 when its size differs, as diffusers' image processor
   resizes an img2img input to the requested size. The one way both
   sdxl-gen and the inference worker read an init_image, so one request
   gives one image whichever door it enters by. 0, or -1 with
   sdx_last_error() and *out empty. */
int sdx_image_decode_fit(const void *data, size_t len, int w, int h, sdx_image_t *out);

#endif
