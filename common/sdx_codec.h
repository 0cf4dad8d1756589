/*  sdx_codec.h - msgpack and JSON <-> sdx_value_t, base64, and reading a
    whole file to decode.

    Decoders check every length and type before reading and never trust the
    input: truncated, oversized, deeply nested or invalid UTF-8 input gives an
    error message, not a crash. JSON cannot carry binary: SDX_BIN is written
    as a base64 string, and SDX_EXT as {"$ext": type, "data": base64}.
*/
#ifndef SDX_CODEC_H
#define SDX_CODEC_H

#include "sdx_value.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { SDX_ENC_MSGPACK = 0, SDX_ENC_JSON = 1 } sdx_encoding_t;

#define SDX_CODEC_MAX_DEPTH 64

/* Which encoding a frame holds: JSON if its first non-blank byte is '{' or
   '[', msgpack otherwise. */
sdx_encoding_t sdx_codec_detect(const void *buf, size_t len);

/* Decode a whole frame. On failure returns NULL and writes a one-line reason
   into err (e.g. "msgpack: truncated at byte 17", "json: invalid UTF-8 at
   byte 5"). Caller owns the result. */
sdx_value_t *sdx_codec_decode(const void *buf, size_t len, sdx_encoding_t enc, char *err,
                              size_t err_len);
sdx_value_t *sdx_msgpack_decode(const void *buf, size_t len, char *err, size_t err_len);
sdx_value_t *sdx_json_decode(const void *buf, size_t len, char *err, size_t err_len);

/* Encode. On success *out is a malloc'd buffer the caller frees, *out_len its
   length (JSON output is NUL-terminated, the NUL not counted). 0 / -1. */
int sdx_codec_encode(const sdx_value_t *v, sdx_encoding_t enc, uint8_t **out, size_t *out_len);
int sdx_msgpack_encode(const sdx_value_t *v, uint8_t **out, size_t *out_len);
int sdx_json_encode(const sdx_value_t *v, uint8_t **out, size_t *out_len);

/* base64 (RFC 4648, standard alphabet, padding). encode: malloc'd,
   NUL-terminated. decode: accepts an optional "data:...;base64," prefix,
   rejects invalid characters; caller frees *out. 0 / -1. */
char *sdx_base64_encode(const void *data, size_t len);
int sdx_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len);

/* Read a whole file (a JSON table such as proto/catalog.json) into a
   malloc'd, NUL-terminated buffer the caller frees; *len is its length
   without the NUL. NULL with "<path>: <reason>" in err if it cannot be
   opened or memory runs out. */
char *sdx_codec_read_file(const char *path, size_t *len, char *err, size_t err_len);

#endif
