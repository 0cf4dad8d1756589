/*  sdx_imgcodec.h - encoded images with generation metadata that other tools
    read: PNG (libspng, through sdx_image), JPEG (libjpeg-turbo) and WebP
    (libwebp, lossy or lossless, libwebpmux for the EXIF chunk); decoding of
    the same three for init, control and upscale inputs; and the A1111
    "parameters" text ("infotext") that A1111, ComfyUI and Civitai parse.

    Where the text goes, as A1111 writes it:
    - PNG: a tEXt chunk with keyword "parameters" (iTXt when not Latin-1);
    - JPEG: EXIF (APP1) UserComment, "UNICODE\0" + UTF-16BE (piexif's
      encoding, which A1111 reads back with piexif.helper);
    - WebP: the same EXIF block in the RIFF "EXIF" chunk.
    A JPEG APP1 segment holds at most 65533 bytes: a text longer than that in
    UTF-16 is cut at a character boundary (about 32,000 characters). */
#ifndef SDX_IMGCODEC_H
#define SDX_IMGCODEC_H

#include "sdx_image.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What A1111's create_infotext writes, for one image. NULL / negative /
   zero fields are left out as A1111 leaves them out. */
typedef struct {
    const char *prompt;          /* first line(s) */
    const char *negative_prompt; /* "Negative prompt: ..." line when non-empty */
    int steps;
    const char *sampler; /* A1111 name, e.g. "DPM++ 2M Karras" (sdx_a1111_sampler) */
    double cfg_scale;
    int64_t seed;
    int width, height;
    const char *model_hash;     /* AutoV2: first 10 hex digits of the file's SHA-256 */
    const char *model_name;
    double denoising_strength; /* < 0: not written (txt2img) */
    int clip_skip;             /* written when > 1 */
    const char *extra;         /* already formatted "Key: value, ..." appended, or NULL */
} sdx_infotext_t;

void sdx_infotext_init(sdx_infotext_t *it); /* zeros, denoising_strength -1 */

/* The parameters text, malloc'd (caller frees); NULL on OOM. Values that
   hold ',', ':' or a newline are JSON-quoted as A1111's quote() does. */
char *sdx_infotext_format(const sdx_infotext_t *it);

/* The A1111 sampler name of a diffusers scheduler class (as schemas/ names
   them), with " Karras" for Karras sigmas: "DPMSolverMultistepScheduler" +
   karras -> "DPM++ 2M Karras". Unknown classes come back as given. */
const char *sdx_a1111_sampler(const char *scheduler_class, bool karras, char *buf, size_t len);

typedef enum { SDX_FMT_PNG = 0, SDX_FMT_JPEG, SDX_FMT_WEBP, SDX_FMT_UNKNOWN } sdx_img_format_t;

/* "png", "jpeg"/"jpg", "webp" (any case) -> format; SDX_FMT_UNKNOWN else. */
sdx_img_format_t sdx_img_format_parse(const char *name);
const char *sdx_img_format_name(sdx_img_format_t f); /* "png", "jpeg", "webp" */
const char *sdx_img_format_mime(sdx_img_format_t f);
/* The format of encoded bytes from their signature. */
sdx_img_format_t sdx_img_format_sniff(const void *data, size_t len);
/* The largest width or height the format holds (WebP 16383, JPEG 65500). */
int sdx_img_format_max_side(sdx_img_format_t f);
/* Whether this build can encode/decode the format. */
bool sdx_img_format_available(sdx_img_format_t f);

typedef struct {
    sdx_img_format_t format;
    int quality;        /* JPEG / lossy WebP, 1..100 */
    bool lossless;      /* WebP only: VP8L, bit-exact */
    const char *text;   /* the parameters text (may be NULL) */
    const char *const *png_extra; /* more PNG tEXt pairs {"k","v",...,NULL} (PNG only) */
} sdx_encode_opts_t;

void sdx_encode_opts_init(sdx_encode_opts_t *o); /* PNG, quality 95 */

/* Encode img (RGB or RGBA; JPEG drops alpha) into a malloc'd buffer.
   0 / -1 with sdx_last_error(). */
int sdx_image_encode(const sdx_image_t *img, const sdx_encode_opts_t *o, uint8_t **out,
                     size_t *out_len);

/* The longest side any decoded image may have, whatever its format (the
   PNG decoder's own limit; libjpeg allows 65500): one rule for init and
   control images however they are encoded. */
#define SDX_IMAGE_MAX_SIDE 16384

/* Decode PNG, JPEG or WebP bytes (by signature) to 8-bit RGB. Refuses
   images over max_pixels (0: 64 Mpx) or with a side over
   SDX_IMAGE_MAX_SIDE. Caller clears img. */
int sdx_image_decode(const void *data, size_t len, uint64_t max_pixels, sdx_image_t *img);

/* The EXIF block (TIFF, without the "Exif\0\0" prefix) holding text as
   UserComment, malloc'd. For tests and other writers. */
int sdx_exif_usercomment(const char *text, size_t max_len, uint8_t **out, size_t *out_len);

#endif
