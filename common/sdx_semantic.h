/*  sdx_semantic.h - the request checks that JSON Schema cannot say.

    The schema files decide WHERE a check applies (annotations read by the
    validator in sdx_schema.c: "x-path-root": "loras" on a name field,
    "x-image": true on an image field, "x-max-pixels" on the dimensions
    object); this object holds the mechanisms and the deployment's limits:
    - named roots ("models", "loras", "vaes", "controlnets", "embeddings",
      "upscalers", "outputs"): a name must stay inside its root: no "..",
      no absolute path outside it, no symlink that leads out of it. A kind
      without a configured root gets the lexical checks only.
    - images: base64 text must decode (it is replaced by the decoded bin in
      place, so workers get bytes once) and every image must stay under
      max_image_bytes.
    - pixels: width*height bounded by the smaller of the schema's
      x-max-pixels and the configured max_pixels.
    Not for: type/range rules (those are in schemas/), routing or I/O beyond
    realpath(3) on the configured roots.
*/
#ifndef SDX_SEMANTIC_H
#define SDX_SEMANTIC_H

#include "sdx_value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sdx_semantic sdx_semantic_t;

#define SDX_SEMANTIC_DEFAULT_MAX_IMAGE_BYTES (16u * 1024u * 1024u)

/* New checker with no roots and default limits (16 MiB images, no pixel
   limit beyond the schema's). Caller owns the result and destroys it. */
sdx_semantic_t *sdx_semantic_new(void);
void sdx_semantic_destroy(sdx_semantic_t **self_p);

/* Configure the root folder of a kind ("models", "loras", ...). The folder
   must exist: it is resolved with realpath(3) now. 0, or -1 (logged). */
int sdx_semantic_set_root(sdx_semantic_t *self, const char *kind, const char *dir);
/* Borrowed resolved root of a kind, NULL if none. */
const char *sdx_semantic_root(const sdx_semantic_t *self, const char *kind);
void sdx_semantic_set_max_image_bytes(sdx_semantic_t *self, size_t max_bytes);
size_t sdx_semantic_max_image_bytes(const sdx_semantic_t *self);
/* 0 = no limit beyond the schema's x-max-pixels. */
void sdx_semantic_set_max_pixels(sdx_semantic_t *self, uint64_t max_pixels);

/* Check that `name` stays inside the root of `kind`. `self` may be NULL
   (lexical checks only). 0, or -1 with a one-line reason in msg. */
int sdx_semantic_check_path(const sdx_semantic_t *self, const char *kind, const char *name,
                            char *msg, size_t msg_len);

/* Check an image value (SDX_STR base64, optionally a data: URI, or SDX_BIN):
   base64 is decoded and *slot replaced by the SDX_BIN it decodes to; the
   byte size must not exceed the limit. `self` may be NULL (default limit).
   0, or -1 with a reason in msg. */
int sdx_semantic_check_image(const sdx_semantic_t *self, sdx_value_t **slot, char *msg,
                             size_t msg_len);

/* Check width*height against min(schema_max, configured max); 0 means no
   limit on either side. 0, or -1 with a reason in msg. */
int sdx_semantic_check_pixels(const sdx_semantic_t *self, int64_t width, int64_t height,
                              uint64_t schema_max, char *msg, size_t msg_len);

#endif
