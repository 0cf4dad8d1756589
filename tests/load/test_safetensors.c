/*  test_safetensors.c - the reader against hostile files it writes itself
    (each must fail with a clear, specific message and no out-of-bounds read:
    run it under ASan/valgrind), valid edge cases, the writer round trip, and
    tensor views that outlive the file object. No golden data needed. */
#include "sdx_safetensors.h"
#include "sdx_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_dir[256];

static const char *s_tmp(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", s_dir, name);
    return p;
}

/* Write an 8-byte length (hlen, or strlen(header) when hlen is UINT64_MAX),
   the header bytes, then `data`. */
static void s_write_raw(const char *path, uint64_t hlen, const char *header, size_t header_len,
                        const void *data, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (hlen == UINT64_MAX)
        hlen = header_len;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(hlen >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, header_len, f);
    if (data_len)
        fwrite(data, 1, data_len, f);
    fclose(f);
}

typedef struct {
    const char *what;
    const char *header; /* NULL: raw bytes below */
    size_t data_len;
    const char *expect; /* substring of the error */
} s_case_t;

/* Files whose header is valid JSON-wise or not, all of which must fail. */
static const s_case_t s_bad[] = {
    {"non-JSON header", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_off", 4,
     "not a JSON object"},
    {"JSON array, not object", "[1, 2, 3]", 0, "does not start with '{'"},
    {"garbage after the object", "{}  xyz", 0, "unexpected bytes after the header"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"C64\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
     "unsupported dtype 'C64'"},
    {"fp8 sized as 1 byte", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,8]}}",
     8, "8 data bytes but shape and dtype F8_E4M3 need 4"},
    {"dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "non-string dtype"},
    {"shape/size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8,
     "8 data bytes but shape and dtype F32 need 16"},
    {"end beyond data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
     "data_offsets end 16 beyond data size 8"},
    {"end before begin", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
     "end 4 before begin 8"},
    {"overlapping tensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "overlap"},
    {"duplicate names",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "duplicate tensor name 'a'"},
    {"negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
     "shape[0] is not a non-negative integer"},
    {"fractional offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0.5,1.5]}}", 4,
     "not non-negative integers"},
    {"offset 1e300", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 4,
     "not non-negative integers"},
    {"size overflow",
     "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}}", 8,
     "overflows"},
    {"too many dims",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
     "9 dimensions"},
    {"missing data_offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1,
     "data_offsets must be [begin, end]"},
    {"three offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 2,
     "data_offsets must be [begin, end]"},
    {"shape not an array", "{\"a\":{\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]}}", 1,
     "non-array shape"},
    {"entry not an object", "{\"a\": 5}", 0, "entry is not an object"},
    {"metadata not strings", "{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ entry 'k'"},
    {"metadata not an object", "{\"__metadata__\":[]}", 0, "__metadata__ is not an object"},
    {"too short header", "{", 0, "too short"},
};

static void s_check_bad_file(const s_case_t *c)
{
    const char *p = s_tmp("bad.safetensors");
    static const uint8_t zeros[64];
    s_write_raw(p, UINT64_MAX, c->header, strlen(c->header), zeros, c->data_len);
    sdx_safetensors_t *st = sdx_safetensors_open(p);
    const char *err = sdx_last_error();
    sdx_test_check(!st && strstr(err, c->expect) && strstr(err, "bad.safetensors"),
                   "%s: rejected with '%s'", c->what, st ? "(opened!)" : err);
    sdx_safetensors_close(&st);
    /* The same header through the fuzz entry point. */
    int rc = sdx_safetensors_check_header(c->header, strlen(c->header), c->data_len);
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), c->expect), "%s: check_header rejects",
                   c->what);
}

static void s_raw_cases(void)
{
    const char *p = s_tmp("raw.safetensors");
    sdx_safetensors_t *st;

    FILE *f = fopen(p, "wb");
    fclose(f);
    st = sdx_safetensors_open(p);
    sdx_test_check(!st && strstr(sdx_last_error(), "too short"), "empty file: %s",
                   sdx_last_error());

    f = fopen(p, "wb");
    fwrite("\x10\0\0", 1, 3, f);
    fclose(f);
    st = sdx_safetensors_open(p);
    sdx_test_check(!st && strstr(sdx_last_error(), "too short"), "3-byte file: %s",
                   sdx_last_error());

    s_write_raw(p, 0xFFFFFFFFFFFFFFFFULL - 1, "{}", 2, NULL, 0);
    st = sdx_safetensors_open(p);
    sdx_test_check(!st && strstr(sdx_last_error(), "exceeds"), "header length 2^64-2: %s",
                   sdx_last_error());

    s_write_raw(p, 50000000, "{}", 2, NULL, 0);
    st = sdx_safetensors_open(p);
    sdx_test_check(!st && strstr(sdx_last_error(), "beyond the end"),
                   "header length past EOF (truncated): %s", sdx_last_error());

    /* A valid file cut short in its data: the offsets now point past EOF. */
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    float v[4] = {1, 2, 3, 4};
    s_write_raw(p, UINT64_MAX, h, strlen(h), v, 10);
    st = sdx_safetensors_open(p);
    sdx_test_check(!st && strstr(sdx_last_error(), "beyond data size 10"), "truncated data: %s",
                   sdx_last_error());

    /* NUL bytes and deep nesting inside the header. */
    char nul[] = "{\"a\0b\":{}}";
    s_write_raw(p, UINT64_MAX, nul, sizeof nul - 1, NULL, 0);
    st = sdx_safetensors_open(p);
    sdx_test_check(!st, "NUL inside the header: %s", sdx_last_error());

    size_t depth = 20000;
    char *deep = malloc(2 * depth + 16);
    size_t k = 0;
    deep[k++] = '{';
    memcpy(deep + k, "\"a\":", 4);
    k += 4;
    for (size_t i = 0; i < depth; i++)
        deep[k++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[k++] = ']';
    deep[k++] = '}';
    s_write_raw(p, UINT64_MAX, deep, k, NULL, 0);
    st = sdx_safetensors_open(p);
    sdx_test_check(!st, "20000-deep nesting rejected without a crash: %s", sdx_last_error());
    free(deep);

    /* A folder and a missing file. */
    st = sdx_safetensors_open(s_dir);
    sdx_test_check(!st && strstr(sdx_last_error(), "not a regular file"), "folder: %s",
                   sdx_last_error());
    st = sdx_safetensors_open(s_tmp("missing.safetensors"));
    sdx_test_check(!st && strstr(sdx_last_error(), "cannot open"), "missing file: %s",
                   sdx_last_error());

    /* Memory images: same checks. */
    st = sdx_safetensors_open_memory("\x02\0\0\0\0\0\0\0{}", 10, "mem");
    sdx_test_check(st && sdx_safetensors_count(st) == 0, "empty header from memory");
    sdx_safetensors_close(&st);
    st = sdx_safetensors_open_memory("\x09\0\0\0\0\0\0\0{}", 10, "mem");
    sdx_test_check(!st && strstr(sdx_last_error(), "mem: header length 9 beyond"),
                   "memory image truncated: %s", sdx_last_error());
}

/* Valid edge cases: zero-size and 0-d tensors, gaps, padding, metadata. */
static void s_valid_cases(void)
{
    const char *p = s_tmp("ok.safetensors");
    const char *h = "{\"__metadata__\":{\"format\":\"pt\",\"who\":\"test\"},"
                    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]},"
                    "\"z\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[12,12]},"
                    "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[16,18]}}    ";
    uint8_t data[18] = {0};
    int64_t i7 = 7;
    float f = 2.5f;
    memcpy(data, &i7, 8);
    memcpy(data + 8, &f, 4);
    data[16] = 1;
    s_write_raw(p, UINT64_MAX, h, strlen(h), data, sizeof data);
    sdx_safetensors_t *st = sdx_safetensors_open(p);
    sdx_test_check(st != NULL, "valid edge cases open (%s)", st ? "ok" : sdx_last_error());
    if (!st)
        return;
    sdx_test_check(sdx_safetensors_count(st) == 4, "4 tensors");
    const sdx_st_tensor_t *a0 = sdx_safetensors_at(st, 0), *a1 = sdx_safetensors_at(st, 1);
    sdx_test_check(a0 && strcmp(a0->name, "i") == 0 && a1 && strcmp(a1->name, "s") == 0,
                   "file order is data order");
    sdx_test_check(sdx_safetensors_at(st, 4) == NULL, "at() past the end is NULL");
    const sdx_st_tensor_t *s = sdx_safetensors_find(st, "s");
    sdx_test_check(s && s->ndim == 0 && s->dtype == SDX_F32 && s->nbytes == 4 &&
                       strcmp(s->st_dtype, "F32") == 0,
                   "0-d F32 tensor");
    const sdx_st_tensor_t *z = sdx_safetensors_find(st, "z");
    sdx_test_check(z && z->nbytes == 0 && z->ndim == 2 && z->shape[1] == 3, "zero-size tensor");
    sdx_test_check(sdx_safetensors_find(st, "nope") == NULL, "find: absent is NULL");
    const char *md = sdx_safetensors_metadata(st, "who");
    sdx_test_check(md && strcmp(md, "test") == 0, "metadata");
    sdx_test_check(sdx_safetensors_metadata(st, "x") == NULL, "absent metadata");

    sdx_tensor_t *t = NULL, *zt = NULL;
    double val = 0;
    sdx_test_check(sdx_safetensors_get(NULL, &t, st, "s") == 0 && sdx_item(t, &val) == 0 &&
                       val == 2.5,
                   "0-d value 2.5");
    sdx_tensor_free(&t);
    sdx_test_check(sdx_safetensors_get(NULL, &zt, st, "z") == 0 && sdx_tensor_numel(zt) == 0,
                   "zero-size tensor view");
    sdx_tensor_free(&zt);
    sdx_test_check(sdx_safetensors_get(NULL, &t, st, "nope") != 0 &&
                       strstr(sdx_last_error(), "no tensor 'nope'"),
                   "get of a missing name fails naming it");
    sdx_safetensors_close(&st);
    sdx_safetensors_close(&st); /* NULL: no-op */
}

static void s_writer_round_trip(void)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *a, *b, *c, *d, *e, *g, *ar;
    const char *p = s_tmp("rt.safetensors");
    int64_t sh23[2] = {2, 3}, sh0[1] = {0};
    bool ok = sdx_arange(S, &ar, 0, 6, 1, SDX_F32, (sdx_device_t){SDX_CPU, 0}) == 0 &&
              sdx_reshape(S, &a, ar, sh23, 2) == 0 &&
              sdx_transpose(S, &b, a, 0, 1) == 0 && /* non-contiguous input */
              sdx_arange(S, &c, 0, 5, 1, SDX_I64, (sdx_device_t){SDX_CPU, 0}) == 0 &&
              sdx_to_dtype(S, &d, a, SDX_BF16) == 0 && sdx_to_dtype(S, &e, a, SDX_F16) == 0 &&
              sdx_zeros(S, &g, sh0, 1, SDX_U8, (sdx_device_t){SDX_CPU, 0}) == 0;
    sdx_test_check(ok, "round trip: inputs built (%s)", ok ? "ok" : sdx_last_error());
    if (!ok) {
        sdx_scope_free(&S);
        return;
    }
    const char *names[] = {"a", "b.transposed", "c\"quoted\\", "d", "e", "g"};
    sdx_tensor_t *ts[] = {a, b, c, d, e, g};
    const char *meta[] = {"format", "pt", "note", "line\nbreak", NULL};
    int rc = sdx_safetensors_write(p, names, ts, 6, meta);
    sdx_test_check(rc == 0, "write (%s)", rc ? sdx_last_error() : "ok");
    sdx_safetensors_t *st = sdx_safetensors_open(p);
    sdx_test_check(st && sdx_safetensors_count(st) == 6, "re-open: 6 tensors (%s)",
                   st ? "ok" : sdx_last_error());
    if (st) {
        for (int i = 0; i < 6; i++) {
            sdx_tensor_t *v = NULL;
            bool same = sdx_safetensors_get(NULL, &v, st, names[i]) == 0 &&
                        sdx_tensor_dtype(v) == sdx_tensor_dtype(ts[i]) &&
                        sdx_tensor_numel(v) == sdx_tensor_numel(ts[i]) &&
                        (sdx_tensor_numel(v) == 0 || sdx_test_max_abs(v, ts[i]) == 0);
            sdx_test_check(same, "round trip '%s' identical", names[i]);
            sdx_tensor_free(&v);
        }
        const char *nb = sdx_safetensors_metadata(st, "note");
        sdx_test_check(nb && strcmp(nb, "line\nbreak") == 0, "metadata round trip (escaped)");
        /* The header the writer produced is 8-byte padded, so data is aligned. */
        const sdx_st_tensor_t *ta = sdx_safetensors_find(st, "a");
        sdx_test_check(ta && ((uintptr_t)ta->data % 8) == 0, "data aligned to 8");
    }
    sdx_safetensors_close(&st);
    const char *dup[] = {"x", "x"};
    sdx_tensor_t *two[] = {a, a};
    sdx_test_check(sdx_safetensors_write(p, dup, two, 2, NULL) != 0 &&
                       strstr(sdx_last_error(), "duplicate"),
                   "writer refuses duplicate names");
    sdx_scope_free(&S);
}

/* A view outlives the file object; the mapping goes with the last view. */
static void s_view_lifetime(void)
{
    const char *p = s_tmp("life.safetensors");
    const char *h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    float v[4] = {1, -2, 3.5f, 4};
    s_write_raw(p, UINT64_MAX, h, strlen(h), v, sizeof v);
    sdx_safetensors_t *st = sdx_safetensors_open(p);
    sdx_tensor_t *t = NULL, *u = NULL;
    sdx_test_check(st && sdx_safetensors_get(NULL, &t, st, "w") == 0, "view made");
    sdx_scope_t *S = sdx_scope_new();
    sdx_test_check(sdx_narrow(S, &u, t, 0, 1, 1) == 0, "narrowed view");
    sdx_safetensors_close(&st);
    sdx_tensor_free(&t);
    unlink(p); /* even gone from disk, the mapping holds the bytes */
    float out[2] = {0};
    sdx_test_check(sdx_to_host(u, SDX_F32, out, sizeof out) == 0 && out[0] == 3.5f && out[1] == 4,
                   "view of a view still reads after close + unlink");
    /* In-place ops on a borrowed weight (LoRA fusion) get private pages. */
    sdx_test_check(sdx_mul_scalar_(u, 2.0) == 0 && sdx_to_host(u, SDX_F32, out, sizeof out) == 0 &&
                       out[0] == 7.0f,
                   "in-place op on a mapped view works (copy-on-write)");
    sdx_scope_free(&S);
}

/* float8 storage: every code point decodes as ml_dtypes / torch define
   float8_e4m3fn and float8_e5m2, and a tensor reads back upcast to f32. */
static void s_fp8(void)
{
    static const struct {
        unsigned char b;
        float e4m3, e5m2;
    } v[] = {
        {0x00, 0.0f, 0.0f},          {0x01, 0.001953125f, 1.52587890625e-05f},
        {0x08, 0.015625f, 0.0001220703125f}, {0x38, 1.0f, 0.5f},
        {0x3c, 1.5f, 1.0f},          {0x40, 2.0f, 2.0f},
        {0x77, 240.0f, 28672.0f},    {0xb8, -1.0f, -0.5f},
        {0xc0, -2.0f, -2.0f},        {0x7b, 352.0f, 57344.0f}, /* e5m2's largest finite */
    };
    bool ok = true;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        float a = sdx_f8_e4m3_to_f32(v[i].b), b = sdx_f8_e5m2_to_f32(v[i].b);
        if (a != v[i].e4m3 || b != v[i].e5m2) {
            ok = false;
            fprintf(stderr, "0x%02x: e4m3 %g (want %g), e5m2 %g (want %g)\n", v[i].b, a,
                    v[i].e4m3, b, v[i].e5m2);
        }
    }
    sdx_test_check(ok, "fp8 e4m3fn / e5m2 code points decode exactly");
    sdx_test_check(sdx_f8_e4m3_to_f32(0x7e) == 448.0f && isnan(sdx_f8_e4m3_to_f32(0x7f)) && isnan(sdx_f8_e4m3_to_f32(0xff)) &&
                       isinf(sdx_f8_e5m2_to_f32(0x7c)) && isnan(sdx_f8_e5m2_to_f32(0x7d)),
                   "fp8 specials: e4m3fn NaN only at 0x7f/0xff, e5m2 inf at 0x7c, NaN above");
    /* a file with one tensor of each kind */
    char buf[256];
    const char *h = "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"F8_E5M2\",\"shape\":[3],\"data_offsets\":[4,7]}}";
    size_t hl = strlen(h), pad = (8 - hl % 8) % 8;
    uint64_t n = hl + pad;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, h, hl);
    memset(buf + 8 + hl, ' ', pad);
    unsigned char data[8] = {0x38, 0x40, 0xb8, 0x7e, 0x3c, 0xc0, 0x01, 0};
    memcpy(buf + 8 + n, data, 7);
    sdx_safetensors_t *st = sdx_safetensors_open_memory(buf, 8 + n + 7, "fp8");
    const sdx_st_tensor_t *a = st ? sdx_safetensors_find(st, "a") : NULL;
    const sdx_st_tensor_t *b = st ? sdx_safetensors_find(st, "b") : NULL;
    sdx_test_check(a && b && a->storage == SDX_ST_F8_E4M3 && b->storage == SDX_ST_F8_E5M2 &&
                       a->dtype == SDX_F32 && a->nbytes == 4 && strcmp(a->st_dtype, "F8_E4M3") == 0,
                   "fp8 tensors open: storage and logical dtype f32 (%s)", sdx_last_error());
    sdx_tensor_t *ta = NULL, *tb = NULL;
    float fa[4] = {0}, fb[3] = {0};
    bool read = a && b && sdx_safetensors_tensor(NULL, &ta, st, a) == 0 &&
                sdx_safetensors_tensor(NULL, &tb, st, b) == 0 &&
                sdx_tensor_dtype(ta) == SDX_F32 && sdx_to_host(ta, SDX_F32, fa, sizeof fa) == 0 &&
                sdx_to_host(tb, SDX_F32, fb, sizeof fb) == 0;
    sdx_test_check(read && fa[0] == 1 && fa[1] == 2 && fa[2] == -1 && fa[3] == 448 && fb[0] == 1 &&
                       fb[1] == -2 && fb[2] == 1.52587890625e-05f,
                   "fp8 tensors read upcast to f32 with the right values");
    sdx_tensor_free(&ta);
    sdx_tensor_free(&tb);
    sdx_safetensors_close(&st);
}

int main(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/sdx-test-st-XXXXXX");
    if (!mkdtemp(s_dir)) {
        perror("mkdtemp");
        return 1;
    }
    for (size_t i = 0; i < sizeof s_bad / sizeof s_bad[0]; i++)
        s_check_bad_file(&s_bad[i]);
    s_raw_cases();
    s_valid_cases();
    s_writer_round_trip();
    s_view_lifetime();
    s_fp8();
    sdx_test_check(sdx_tensor_live_count() == 0, "no tensor handle leaked (%lld live)",
                   (long long)sdx_tensor_live_count());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", s_dir);
    return sdx_test_done();
}
