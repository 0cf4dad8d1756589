/*  post_upscale.h - the upscaling step shared by the postprocessing domain
    (postprocessing.upscale / finalize) and the inference domain
    (output.upscale of a generation): upscaler names resolved under an
    upscalers root, the last used RRDBNet kept loaded, Lanczos-3 for
    "lanczos" or no name, and the model's output resized to the requested
    factor when its scale differs (as A1111 does).

    Names: the .safetensors stems under the root (RealESRGAN_x4plus), matched
    exactly, then ignoring case, then as the one stem containing the name
    ("ESRGAN"), the factor ("x4") breaking a tie. An unknown or ambiguous
    name fails with the list of what is there. Thread-safe: one upscale runs
    at a time per post_upscaler_t. */
#ifndef POST_UPSCALE_H
#define POST_UPSCALE_H

#include "sdx_image.h"
#include "sdx_torch.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct post_upscaler post_upscaler_t;

/* No image made on the way (the model's output, the final size) exceeds
   this many pixels: 8192x8192, about 200 MB as RGB and 800 MB of floats
   in the Lanczos pass. */
#define POST_MAX_PIXELS ((int64_t)8192 * 8192)

typedef enum {
    POST_OK = 0,
    POST_BAD_REQUEST, /* factor out of range, a file that is no upscaler */
    POST_NOT_FOUND,   /* no such upscaler (err lists what is there) */
    POST_CANCELLED,   /* the progress callback said stop */
    POST_FAILED,
} post_status_t;

/* root "" or NULL: no upscalers, Lanczos only. tile/pad: sdx_upscale_opts_t. */
post_upscaler_t *post_upscaler_new(const char *root, sdx_device_t dev, int tile, int pad);
void post_upscaler_free(post_upscaler_t **u);
const char *post_upscaler_root(const post_upscaler_t *u); /* "" when none */

/* Upscale img in place by factor (0: 2) with the named model (NULL, "" or
   "lanczos": Lanczos). method gets what ran ("RealESRGAN_x4plus x4",
   "... + lanczos", "lanczos"). progress(ctx, done, total) after each tile
   (may be NULL; false stops). On failure err holds the reason. */
post_status_t post_upscale(post_upscaler_t *u, sdx_image_t *img, double factor, const char *model,
                           bool (*progress)(void *ctx, int done, int total), void *ctx,
                           char *method, size_t method_len, char *err, size_t err_len);

/* Counters and the loaded file for <domain>.status. */
void post_upscaler_stats(post_upscaler_t *u, char *loaded, size_t loaded_len,
                         unsigned long *upscales);

#endif
