/*  fuzz_codec.c - libFuzzer target for the request decoders: msgpack,
    JSON, base64 and the envelope parser on whatever decodes. A decoded
    tree must re-encode (both encodings) and the msgpack form must decode to
    an equal tree. Built with clang only (tests/common/meson.build);
    test_codec's mutation loop covers the same ground under gcc. */
#include "sdx_codec.h"
#include "sdx_envelope.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    sdx_encoding_t enc = sdx_codec_detect(data, size);
    sdx_value_t *v = sdx_codec_decode(data, size, enc, err, sizeof err);
    if (v) {
        uint8_t *out;
        size_t len;
        if (sdx_msgpack_encode(v, &out, &len) == 0) {
            sdx_value_t *back = sdx_msgpack_decode(out, len, err, sizeof err);
            if (!back || !sdx_value_equal(v, back))
                abort();
            sdx_value_destroy(&back);
            free(out);
        }
        if (sdx_json_encode(v, &out, &len) == 0)
            free(out);
        sdx_envelope_t env;
        sdx_fault_t f;
        sdx_envelope_parse(&env, &v, enc, &f);
        sdx_envelope_clear(&env);
    }
    uint8_t *b64;
    size_t blen;
    if (sdx_base64_decode((const char *)data, size, &b64, &blen) == 0)
        free(b64);
    return 0;
}
