/*  test_codec.c - msgpack/JSON codec and base64: round trips, exact values,
    and hostile input (truncated, invalid UTF-8, too deep, trailing bytes);
    reading a whole file. */
#include "sdx_codec.h"
#include "tcheck.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sdx_value_t *s_sample(bool with_bin)
{
    sdx_value_t *root = sdx_value_map_new();
    sdx_map_set_str(root, "message_type", "inference.generate");
    sdx_map_set_str(root, "unicode",
                    "dragon \xe9\xbe\x8d caf\xc3\xa9 \xf0\x9f\x90\x89 \"q\" \\ \n\t\x01");
    sdx_map_set_int(root, "i_max", INT64_MAX);
    sdx_map_set_int(root, "i_min", INT64_MIN);
    sdx_map_set_int(root, "i_neg", -33);
    sdx_map_set_int(root, "i_u16", 65535);
    sdx_map_set_int(root, "i_u32", 4294967296LL);
    sdx_map_set_float(root, "f_tenth", 0.1);
    sdx_map_set_float(root, "f_big", 1e300);
    sdx_map_set_float(root, "f_neg", -2.5);
    sdx_map_set_float(root, "f_whole", 3.0);
    sdx_map_set_bool(root, "yes", true);
    sdx_map_set(root, "none", sdx_value_nil_new());
    sdx_value_t *data = sdx_value_map_new();
    sdx_value_t *hp = sdx_value_map_new();
    sdx_map_set_int(hp, "seed", 42);
    sdx_map_set_float(hp, "guidance_scale", 7.5);
    sdx_map_set(data, "hyperparameters", hp);
    sdx_value_t *arr = sdx_value_array_new();
    for (int i = 0; i < 20; i++)
        sdx_array_push(arr, sdx_value_int_new(i * 1000));
    sdx_array_push(arr, sdx_value_str_new(""));
    sdx_array_push(arr, sdx_value_map_new());
    sdx_array_push(arr, sdx_value_array_new());
    sdx_map_set(data, "list", arr);
    char longstr[300];
    memset(longstr, 'x', sizeof longstr - 1);
    longstr[sizeof longstr - 1] = 0;
    sdx_map_set_str(data, "long", longstr);
    if (with_bin) {
        uint8_t raw[70000];
        for (size_t i = 0; i < sizeof raw; i++)
            raw[i] = (uint8_t)(i * 7);
        sdx_map_set(data, "tensor", sdx_value_bin_new(raw, sizeof raw));
        sdx_map_set(data, "empty_bin", sdx_value_bin_new(NULL, 0));
        sdx_map_set(data, "ts", sdx_value_ext_new(-1, "\0\0\0\1", 4));
    }
    sdx_map_set(root, "data", data);
    return root;
}

static void test_msgpack_roundtrip(void)
{
    sdx_value_t *v = s_sample(true);
    uint8_t *buf;
    size_t len;
    CHECK(sdx_msgpack_encode(v, &buf, &len) == 0);
    CHECK(sdx_codec_detect(buf, len) == SDX_ENC_MSGPACK);
    char err[160];
    sdx_value_t *back = sdx_msgpack_decode(buf, len, err, sizeof err);
    CHECK(back != NULL);
    CHECK(sdx_value_equal(v, back));
    CHECK(sdx_map_int(back, "i_max", 0) == INT64_MAX);
    CHECK(sdx_map_int(back, "i_min", 0) == INT64_MIN);
    CHECK(sdx_map_get_path(back, "data.tensor")->u.bin.len == 70000);

    /* every strict prefix is truncated and rejected, never a crash */
    int rejected = 0;
    for (size_t cut = 0; cut < len; cut += (cut < 2000 ? 1 : 997)) {
        sdx_value_t *t = sdx_msgpack_decode(buf, cut, err, sizeof err);
        if (!t)
            rejected++;
        sdx_value_destroy(&t);
        if (cut == len / 2)
            CHECK(strstr(err, "truncated") != NULL);
    }
    CHECK(rejected == (int)(2000 + (len - 2000 + 996) / 997));
    /* trailing byte */
    uint8_t *more = malloc(len + 1);
    memcpy(more, buf, len);
    more[len] = 0xc0;
    sdx_value_t *t = sdx_msgpack_decode(more, len + 1, err, sizeof err);
    CHECK(t == NULL && strstr(err, "trailing"));
    free(more);
    free(buf);
    sdx_value_destroy(&back);
    sdx_value_destroy(&v);
}

static void test_json_roundtrip(void)
{
    sdx_value_t *v = s_sample(false);
    uint8_t *js;
    size_t jlen;
    CHECK(sdx_json_encode(v, &js, &jlen) == 0);
    CHECK(strlen((char *)js) == jlen);
    CHECK(sdx_codec_detect(js, jlen) == SDX_ENC_JSON);
    char err[160] = "";
    sdx_value_t *back = sdx_json_decode(js, jlen, err, sizeof err);
    if (!back)
        fprintf(stderr, "json decode: %s\n%s\n", err, js);
    CHECK(back && sdx_value_equal(v, back));
    CHECK(sdx_map_int(back, "i_max", 0) == INT64_MAX); /* exact beyond 2^53 */
    CHECK(sdx_map_get(back, "f_whole") && sdx_map_get(back, "f_whole")->type == SDX_FLOAT);
    /* JSON -> msgpack -> JSON is stable */
    uint8_t *mp;
    size_t mlen;
    CHECK(sdx_msgpack_encode(back, &mp, &mlen) == 0);
    sdx_value_t *again = sdx_msgpack_decode(mp, mlen, err, sizeof err);
    uint8_t *js2;
    size_t jlen2;
    CHECK(again && sdx_json_encode(again, &js2, &jlen2) == 0);
    CHECK(jlen2 == jlen && memcmp(js, js2, jlen) == 0);
    free(js2);
    free(mp);
    free(js);
    sdx_value_destroy(&again);
    sdx_value_destroy(&back);
    sdx_value_destroy(&v);

    /* binary becomes base64 in JSON; ext becomes {"$ext":t,"data":b64} */
    v = sdx_value_map_new();
    sdx_map_set(v, "png", sdx_value_bin_new("\x89PNG", 4));
    sdx_map_set(v, "e", sdx_value_ext_new(5, "ab", 2));
    CHECK(sdx_json_encode(v, &js, &jlen) == 0);
    CHECK_STR((char *)js, "{\"png\":\"iVBORw==\",\"e\":{\"$ext\":5,\"data\":\"YWI=\"}}");
    free(js);
    sdx_value_destroy(&v);
}

static void test_json_values(void)
{
    char err[160];
    const char *txt =
        " {\"a\": 9223372036854775807, \"b\": -9223372036854775808, \"c\": 18446744073709551615,"
        " \"d\": 1.5e3, \"e\": \"caf\\u00e9 \\ud83d\\udc09\", \"f\": [1, 2.0, -0],"
        " \"g\": \"x1 2\"}\n";
    sdx_value_t *v = sdx_json_decode(txt, strlen(txt), err, sizeof err);
    CHECK(v != NULL);
    CHECK(sdx_map_int(v, "a", 0) == INT64_MAX);
    CHECK(sdx_map_int(v, "b", 0) == INT64_MIN);
    CHECK(sdx_map_get(v, "c") && sdx_map_get(v, "c")->type == SDX_FLOAT);
    CHECK(sdx_map_num(v, "d", 0) == 1500.0 && sdx_map_get(v, "d")->type == SDX_FLOAT);
    CHECK_STR(sdx_map_str(v, "e", NULL), "caf\xc3\xa9 \xf0\x9f\x90\x89");
    sdx_value_t *f = sdx_map_get(v, "f");
    CHECK(sdx_array_len(f) == 3 && sdx_array_at(f, 0)->type == SDX_INT &&
          sdx_array_at(f, 1)->type == SDX_FLOAT && sdx_array_at(f, 2)->type == SDX_INT);
    sdx_value_destroy(&v);

    /* known msgpack bytes: {"a":1,"b":[true,nil],"c":-1} */
    const uint8_t mp[] = {0x83, 0xa1, 'a', 0x01, 0xa1, 'b', 0x92, 0xc3, 0xc0, 0xa1, 'c', 0xff};
    v = sdx_msgpack_decode(mp, sizeof mp, err, sizeof err);
    CHECK(v && sdx_map_int(v, "a", 0) == 1 && sdx_map_int(v, "c", 0) == -1);
    uint8_t *out;
    size_t olen;
    CHECK(sdx_msgpack_encode(v, &out, &olen) == 0 && olen == sizeof mp &&
          memcmp(out, mp, olen) == 0);
    free(out);
    sdx_value_destroy(&v);
    /* float32 and uint64 above INT64_MAX */
    const uint8_t mp2[] = {0x92, 0xca, 0x3f, 0xc0, 0x00, 0x00, 0xcf, 0xff,
                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    v = sdx_msgpack_decode(mp2, sizeof mp2, err, sizeof err);
    CHECK(v && sdx_array_at(v, 0)->u.f == 1.5 && sdx_array_at(v, 1)->type == SDX_FLOAT);
    sdx_value_destroy(&v);
}

static bool s_rejects(const void *buf, size_t len, sdx_encoding_t enc, const char *needle)
{
    char err[160] = "";
    sdx_value_t *v = sdx_codec_decode(buf, len, enc, err, sizeof err);
    bool ok = v == NULL && strstr(err, needle) != NULL;
    if (!ok)
        fprintf(stderr, "  expected error with \"%s\", got \"%s\"\n", needle, err);
    sdx_value_destroy(&v);
    return ok;
}

static void test_malformed(void)
{
    /* msgpack */
    CHECK(s_rejects("", 0, SDX_ENC_MSGPACK, "empty"));
    CHECK(s_rejects("\xdd\xff\xff\xff\xff\x01", 6, SDX_ENC_MSGPACK, "truncated")); /* array32 */
    CHECK(s_rejects("\xdf\xff\xff\xff\xff\x01", 6, SDX_ENC_MSGPACK, "truncated")); /* map32 */
    CHECK(s_rejects("\xc6\xff\xff\xff\xf0", 5, SDX_ENC_MSGPACK, "truncated"));     /* bin32 */
    CHECK(s_rejects("\xa3\x61\xff\x62", 4, SDX_ENC_MSGPACK, "UTF-8"));             /* bad str */
    CHECK(s_rejects("\x81\xa2\xc0\xaf\x01", 5, SDX_ENC_MSGPACK, "UTF-8")); /* overlong key */
    CHECK(s_rejects("\xa3\xed\xa0\x80", 4, SDX_ENC_MSGPACK, "UTF-8"));     /* surrogate */
    CHECK(s_rejects("\x81\x01\x01", 3, SDX_ENC_MSGPACK, "not a string"));  /* int key */
    CHECK(s_rejects("\x82\xa1x\x01\xa1x\x02", 7, SDX_ENC_MSGPACK, "duplicate"));
    CHECK(s_rejects("\xc1", 1, SDX_ENC_MSGPACK, "invalid type"));
    CHECK(s_rejects("\x81\xa3"
                    "a\0b\x01",
                    6, SDX_ENC_MSGPACK, "NUL")); /* NUL in key */
    CHECK(s_rejects("{\"a\\u0000b\":1}", 14, SDX_ENC_JSON, "NUL"));
    CHECK(s_rejects("\x01\x02", 2, SDX_ENC_MSGPACK, "trailing"));
    uint8_t deep[200];
    memset(deep, 0x91, sizeof deep); /* [[[[...]]]] */
    deep[SDX_CODEC_MAX_DEPTH] = 0x01;
    char err[160];
    sdx_value_t *ok = sdx_msgpack_decode(deep, SDX_CODEC_MAX_DEPTH + 1, err, sizeof err);
    CHECK(ok != NULL); /* exactly 64 levels of arrays is fine */
    sdx_value_destroy(&ok);
    deep[SDX_CODEC_MAX_DEPTH] = 0x91;
    deep[SDX_CODEC_MAX_DEPTH + 1] = 0x01;
    CHECK(s_rejects(deep, SDX_CODEC_MAX_DEPTH + 2, SDX_ENC_MSGPACK, "deeper"));
    memset(deep, 0x91, sizeof deep);
    CHECK(s_rejects(deep, sizeof deep, SDX_ENC_MSGPACK, "deeper"));

    /* JSON */
    CHECK(s_rejects("{\"a\":", 5, SDX_ENC_JSON, "json"));
    CHECK(s_rejects("{\"a\":1} x", 9, SDX_ENC_JSON, "trailing"));
    CHECK(s_rejects("{\"a\":1}{}", 9, SDX_ENC_JSON, "trailing"));
    CHECK(s_rejects("{\"a\":\"\xff\"}", 9, SDX_ENC_JSON, "invalid UTF-8 at byte 6"));
    CHECK(s_rejects("{\"a\":\"\xe9\xbe\"}", 10, SDX_ENC_JSON, "UTF-8"));
    CHECK(s_rejects("{\"a\":1,\"a\":2}", 13, SDX_ENC_JSON, "duplicate"));
    CHECK(s_rejects("{a:1}", 5, SDX_ENC_JSON, "syntax"));
    CHECK(s_rejects("{\"a\":1\0}", 8, SDX_ENC_JSON, "NUL"));
    char jdeep[400];
    memset(jdeep, '[', 200);
    memset(jdeep + 200, ']', 200);
    CHECK(s_rejects(jdeep, 400, SDX_ENC_JSON, "deeper"));
    /* 64 nested + 1 leaf level ok */
    char j64[200];
    int n = 0;
    for (int i = 0; i < SDX_CODEC_MAX_DEPTH; i++)
        j64[n++] = '[';
    j64[n++] = '1';
    for (int i = 0; i < SDX_CODEC_MAX_DEPTH; i++)
        j64[n++] = ']';
    ok = sdx_json_decode(j64, (size_t)n, err, sizeof err);
    CHECK(ok != NULL);
    sdx_value_destroy(&ok);
}

static void test_base64(void)
{
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *e = sdx_base64_encode(plain[i], strlen(plain[i]));
        CHECK_STR(e, enc[i]);
        free(e);
        uint8_t *d;
        size_t dl;
        CHECK(sdx_base64_decode(enc[i], strlen(enc[i]), &d, &dl) == 0 && dl == strlen(plain[i]) &&
              memcmp(d, plain[i], dl) == 0);
        free(d);
    }
    uint8_t *d;
    size_t dl;
    CHECK(sdx_base64_decode("Zm8", 3, &d, &dl) == 0 && dl == 2); /* unpadded */
    free(d);
    const char *uri = "data:image/png;base64,iVBORw==";
    CHECK(sdx_base64_decode(uri, strlen(uri), &d, &dl) == 0 && dl == 4 && d[1] == 'P');
    free(d);
    CHECK(sdx_base64_decode("Zm9v!", 5, &d, &dl) == -1);
    CHECK(sdx_base64_decode("Z", 1, &d, &dl) == -1);
    CHECK(sdx_base64_decode("Zm=9", 4, &d, &dl) == -1);
    CHECK(sdx_base64_decode("Zg===", 5, &d, &dl) == -1);
    CHECK(sdx_base64_decode("data:text/plain,abc", 19, &d, &dl) == -1);
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char *e = sdx_base64_encode(all, 256);
    CHECK(sdx_base64_decode(e, strlen(e), &d, &dl) == 0 && dl == 256 && memcmp(d, all, 256) == 0);
    free(d);
    free(e);
}

/* Deterministic mutation fuzzing: flip, insert and cut bytes of valid
   msgpack and JSON frames; decoding must fail cleanly or give a tree that
   re-encodes and decodes to itself. Run under ASan in CI. */
static void test_mutations(void)
{
    sdx_value_t *v = s_sample(true);
    uint8_t *mp, *js;
    size_t mlen, jlen;
    sdx_msgpack_encode(v, &mp, &mlen);
    sdx_value_destroy(&v);
    v = s_sample(false);
    sdx_json_encode(v, &js, &jlen);
    sdx_value_destroy(&v);
    uint32_t seed = 12345;
#define RND() (seed = seed * 1103515245u + 12345u, (seed >> 8))
    int decoded = 0, stable = 0;
    size_t cap = (mlen > jlen ? mlen : jlen) + 16;
    uint8_t *buf = malloc(cap);
    for (int iter = 0; iter < 3000; iter++) {
        bool json = iter & 1;
        const uint8_t *src = json ? js : mp;
        size_t len = json ? jlen : mlen;
        if (len > 4096 && !json)
            len = 600; /* mutate the head of the big msgpack sample: truncated + flips */
        memcpy(buf, src, len);
        int nmut = 1 + (int)(RND() % 4);
        for (int k = 0; k < nmut; k++) {
            size_t at = RND() % len;
            switch (RND() % 3) {
            case 0:
                buf[at] ^= (uint8_t)(1u << (RND() % 8));
                break;
            case 1:
                buf[at] = (uint8_t)RND();
                break;
            default:
                len = at + 1;
            }
        }
        char err[160];
        sdx_value_t *t =
            sdx_codec_decode(buf, len, json ? SDX_ENC_JSON : SDX_ENC_MSGPACK, err, sizeof err);
        if (!t)
            continue;
        decoded++;
        uint8_t *out;
        size_t olen;
        if (sdx_msgpack_encode(t, &out, &olen) == 0) {
            sdx_value_t *t2 = sdx_msgpack_decode(out, olen, err, sizeof err);
            if (t2 && sdx_value_equal(t, t2))
                stable++;
            sdx_value_destroy(&t2);
            free(out);
        }
        sdx_value_destroy(&t);
    }
    CHECK(decoded == stable);
    printf("mutations: %d of 3000 decoded, all re-encode stably: %s\n", decoded,
           decoded == stable ? "yes" : "no");
    free(buf);
    free(mp);
    free(js);
}

static void test_read_file(void)
{
    char path[] = "/tmp/sdx_test_codec_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    /* larger than the first buffer, so the growth path runs */
    size_t want = 200000;
    char *text = malloc(want);
    for (size_t i = 0; text && i < want; i++)
        text[i] = (char)('a' + i % 26);
    CHECK(text && write(fd, text, want) == (ssize_t)want);
    close(fd);
    char err[256] = "";
    size_t len = 0;
    char *buf = sdx_codec_read_file(path, &len, err, sizeof err);
    CHECK(buf && len == want && memcmp(buf, text, want) == 0 && buf[len] == '\0');
    free(buf);
    free(text);
    unlink(path);
    CHECK(sdx_codec_read_file(path, &len, err, sizeof err) == NULL);
    CHECK(strncmp(err, path, strlen(path)) == 0 && strstr(err, "No such file"));
}

int main(void)
{
    test_mutations();
    test_msgpack_roundtrip();
    test_json_roundtrip();
    test_json_values();
    test_malformed();
    test_base64();
    test_read_file();
    return t_done();
}
