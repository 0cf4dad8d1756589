/*  torch_test.c - helpers for the shim's tests (see torch_test.h). */
#include "torch_test.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int s_passed, s_failed;

bool tt_check(bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", cond ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (cond)
        s_passed++;
    else
        s_failed++;
    return cond;
}

bool tt_ok(int rc, const char *expr)
{
    if (rc == 0)
        return tt_check(true, "%s", expr);
    return tt_check(false, "%s -> %d: %s", expr, rc, sdx_last_error());
}

int tt_done(void)
{
    printf("%d passed, %d failed\n", s_passed, s_failed);
    return s_failed == 0 ? 0 : 1;
}

void tt_skip(const char *why)
{
    printf("SKIP: %s\n", why);
    fflush(stdout);
    exit(77);
}

double tt_max_abs(const sdx_tensor_t *t, const double *expect, int64_t n)
{
    if (!t || sdx_tensor_numel(t) != n)
        return INFINITY;
    double *d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!d)
        return INFINITY;
    if (sdx_to_host(t, SDX_F64, d, sizeof(double) * (size_t)n) != 0) {
        free(d);
        return INFINITY;
    }
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(d[i] - expect[i]);
        if (isnan(e) || e > m)
            m = isnan(e) ? INFINITY : e;
    }
    free(d);
    return m;
}

bool tt_values(const sdx_tensor_t *t, const int64_t *shape, int ndim, const double *expect,
               double tol, const char *what)
{
    if (!t)
        return tt_check(false, "%s: no tensor (%s)", what, sdx_last_error());
    int64_t sh[SDX_MAX_DIMS];
    int nd = sdx_tensor_shape(t, sh);
    bool same = nd == ndim;
    int64_t n = 1;
    for (int i = 0; same && i < nd; i++) {
        same = sh[i] == shape[i];
        n *= shape[i];
    }
    if (!same)
        return tt_check(false, "%s: shape mismatch (ndim %d vs %d)", what, nd, ndim);
    double m = tt_max_abs(t, expect, n);
    return tt_check(m <= tol, "%s (max abs err %.3g, tol %.3g)", what, m, tol);
}

double tt_diff(const sdx_tensor_t *a, const sdx_tensor_t *b)
{
    int64_t sa[SDX_MAX_DIMS], sb[SDX_MAX_DIMS];
    if (!a || !b)
        return INFINITY;
    int na = sdx_tensor_shape(a, sa), nb = sdx_tensor_shape(b, sb);
    if (na != nb)
        return INFINITY;
    for (int i = 0; i < na; i++)
        if (sa[i] != sb[i])
            return INFINITY;
    int64_t n = sdx_tensor_numel(b);
    double *d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!d || sdx_to_host(b, SDX_F64, d, sizeof(double) * (size_t)n) != 0) {
        free(d);
        return INFINITY;
    }
    double m = tt_max_abs(a, d, n);
    free(d);
    return m;
}

sdx_tensor_t *tt_f32(sdx_scope_t *S, const float *v, const int64_t *shape, int ndim)
{
    sdx_tensor_t *t = NULL;
    if (sdx_from_host(S, &t, v, SDX_F32, shape, ndim) != 0)
        return NULL;
    return t;
}

/* ---------------------------------------------------------------- safetensors */

struct tt_st {
    unsigned char *buf; /* whole file */
    size_t size;
    size_t data_off;
    cJSON *header;
};

const char *tt_golden(void)
{
    /* same rule as sdx_test_golden(): the caller's folder, then meson's */
    const char *g = getenv("SDXL_GOLDEN_DIR");
    if (!g || !*g)
        g = getenv("SDXL_GOLDEN_DIR_DEFAULT");
    struct stat sb;
    if (!g || !*g || stat(g, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return NULL;
    return g;
}

static unsigned char *s_slurp(const char *rel, size_t *size)
{
    const char *g = tt_golden();
    if (!g)
        return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g, rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)n + 1);
            if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            }
            if (buf) {
                buf[n] = 0;
                *size = (size_t)n;
            }
        }
    }
    fclose(f);
    return buf;
}

tt_st_t *tt_st_open(const char *rel)
{
    size_t size = 0;
    unsigned char *buf = s_slurp(rel, &size);
    if (!buf)
        return NULL;
    uint64_t hl = 0;
    if (size < 8)
        goto bad;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | buf[i];
    if (hl > size - 8)
        goto bad;
    cJSON *h = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hl);
    if (!h)
        goto bad;
    tt_st_t *st = calloc(1, sizeof *st);
    if (!st) {
        cJSON_Delete(h);
        goto bad;
    }
    st->buf = buf;
    st->size = size;
    st->data_off = 8 + (size_t)hl;
    st->header = h;
    return st;
bad:
    fprintf(stderr, "malformed safetensors file %s\n", rel);
    free(buf);
    return NULL;
}

void tt_st_close(tt_st_t **st)
{
    if (!st || !*st)
        return;
    cJSON_Delete((*st)->header);
    free((*st)->buf);
    free(*st);
    *st = NULL;
}

bool tt_st_has(tt_st_t *st, const char *name)
{
    return st && cJSON_GetObjectItemCaseSensitive(st->header, name) != NULL;
}

static const struct {
    const char *name;
    sdx_dtype_t dt;
} s_dtypes[] = {
    {"F32", SDX_F32}, {"F16", SDX_F16}, {"BF16", SDX_BF16}, {"F64", SDX_F64}, {"I64", SDX_I64},
    {"I32", SDX_I32}, {"I16", SDX_I16}, {"I8", SDX_I8},     {"U8", SDX_U8},   {"BOOL", SDX_DT_BOOL},
};

sdx_tensor_t *tt_st_get(tt_st_t *st, sdx_scope_t *S, const char *name)
{
    if (!st)
        return NULL;
    cJSON *e = cJSON_GetObjectItemCaseSensitive(st->header, name);
    if (!e)
        return NULL;
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
        cJSON_GetArraySize(off) != 2 || cJSON_GetArraySize(sh) > SDX_MAX_DIMS)
        return NULL;
    int found = -1;
    for (size_t i = 0; i < sizeof s_dtypes / sizeof s_dtypes[0]; i++)
        if (strcmp(dt->valuestring, s_dtypes[i].name) == 0)
            found = (int)i;
    if (found < 0)
        return NULL;
    int64_t shape[SDX_MAX_DIMS];
    int nd = cJSON_GetArraySize(sh);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) {
        shape[i] = (int64_t)cJSON_GetArrayItem(sh, i)->valuedouble;
        n *= shape[i];
    }
    size_t b0 = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    size_t b1 = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    size_t es = sdx_dtype_size(s_dtypes[found].dt);
    if (b1 < b0 || b1 - b0 != (size_t)n * es || st->data_off + b1 > st->size)
        return NULL;
    sdx_tensor_t *t = NULL;
    if (sdx_from_host(S, &t, st->buf + st->data_off + b0, s_dtypes[found].dt, shape, nd) != 0)
        return NULL;
    return t;
}

bool tt_json_int(const char *rel, const char *key, int64_t *out)
{
    /* A plain text search for "key": <int>: Python's json writes NaN and
       Infinity, which cJSON (strict JSON) refuses, so the file is not parsed. */
    size_t size = 0;
    unsigned char *buf = s_slurp(rel, &size);
    if (!buf)
        return false;
    char pat[256];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr((const char *)buf, pat);
    bool ok = false;
    if (p) {
        p += strlen(pat);
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p == ':') {
            char *end = NULL;
            long long v = strtoll(p + 1, &end, 10);
            if (end != p + 1) {
                *out = (int64_t)v;
                ok = true;
            }
        }
    }
    free(buf);
    return ok;
}
