/*  fuzz_request.c - libFuzzer target for a client request's whole way
    through the broker before routing, as broker.c runs it: decode (msgpack
    or JSON) -> hooks_prepare (C# detection, LZ4, array contracts, PascalCase
    mapping) -> sdx_envelope_parse -> hooks_validate (schemas/, defaults,
    aliases, semantic checks) -> a success reply carrying the validated data
    and an error reply -> hooks_reply (the C# shape) -> encode in the client's
    encoding. Every reply must encode and decode again; the validated data
    must survive a msgpack round trip unchanged.

    The seed corpus (tests/fuzz/corpus/request/, written by
    tools/make-request-corpus) holds a native and a C# request for every
    scheduler value, alias and alias set and every enum value of the schema,
    in JSON and msgpack: the schema fix of issue 9 (a stale slot after an
    alias set's insert) is exactly the kind of bug this walks into.
    Built with clang by tools/fuzz-run request; replay_request (any
    compiler) runs the corpus and regressions in every test run. */
#include "hooks.h"
#include "sdx_codec.h"
#include "sdx_envelope.h"
#include "sdx_log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int s_init(void)
{
    static int ready;
    if (ready)
        return 0;
    char err[512];
    sdx_log_set_level(SDX_LOG_ERROR + 1);
    if (sdx_actions_load_default(err, sizeof err) != 0 || hooks_init(NULL, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_request: %s\n", err);
        abort(); /* a target that cannot load schemas/ tests nothing */
    }
    ready = 1;
    return 0;
}

/* Encode a reply tree in enc and decode it again: both must work. */
static void s_roundtrip(const sdx_value_t *reply, sdx_encoding_t enc, const hook_state_t *st)
{
    sdx_value_t *dialect = hooks_reply(reply, enc, st);
    const sdx_value_t *out = dialect ? dialect : reply;
    uint8_t *buf;
    size_t len;
    char err[192];
    if (sdx_codec_encode(out, enc, &buf, &len) != 0)
        abort();
    sdx_value_t *back = sdx_codec_decode(buf, len, enc, err, sizeof err);
    if (!back)
        abort();
    sdx_value_destroy(&back);
    free(buf);
    sdx_value_destroy(&dialect);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_init();
    char err[192];
    sdx_encoding_t enc = sdx_codec_detect(data, size);
    sdx_value_t *root = sdx_codec_decode(data, size, enc, err, sizeof err);
    if (!root)
        return 0;
    hook_state_t st = {0};
    sdx_fault_t f;
    sdx_fault_clear(&f);
    sdx_envelope_t env = {0};
    if (hooks_prepare(&root, enc, &st, &f) != 0) {
        sdx_value_t *r = sdx_reply_fault(NULL, NULL, &f);
        if (r)
            s_roundtrip(r, enc, &st);
        sdx_value_destroy(&r);
        sdx_value_destroy(&root);
        hooks_request_done(&st);
        return 0;
    }
    if (sdx_envelope_parse(&env, &root, enc, &f) == 0 && hooks_validate(&env, &st, &f) == 0) {
        /* the validated data must survive the trip to a worker unchanged */
        if (env.data) {
            uint8_t *buf;
            size_t len;
            if (sdx_msgpack_encode(env.data, &buf, &len) != 0)
                abort();
            sdx_value_t *back = sdx_msgpack_decode(buf, len, err, sizeof err);
            if (!back || !sdx_value_equal(back, env.data))
                abort();
            sdx_value_destroy(&back);
            free(buf);
        }
        sdx_value_t *copy = env.data ? sdx_value_clone(env.data) : NULL;
        sdx_value_t *r = sdx_reply_ok(env.request_id, env.message_type, copy, NULL);
        if (r && sdx_reply_echo_id(r, &env) == 0)
            s_roundtrip(r, enc, &st);
        sdx_value_destroy(&r);
    } else {
        sdx_value_t *r = sdx_reply_fault(env.request_id, env.message_type[0] ? env.message_type
                                                                               : NULL, &f);
        if (r)
            s_roundtrip(r, enc, &st);
        sdx_value_destroy(&r);
    }
    sdx_envelope_clear(&env);
    sdx_value_destroy(&root);
    hooks_request_done(&st);
    return 0;
}
