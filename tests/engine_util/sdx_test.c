/*  sdx_test.c - shared helpers for engine tests (see sdx_test.h). */
#include "sdx_test.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int s_passed, s_failed;

const char *sdx_test_golden(void)
{
    /* The caller's SDXL_GOLDEN_DIR wins; meson's configured folder
       (SDXL_GOLDEN_DIR_DEFAULT) is the fallback. An explicit SDXL_GOLDEN_DIR
       that is not a folder skips rather than quietly testing another set. */
    const char *g = getenv("SDXL_GOLDEN_DIR");
    if (!g || !*g)
        g = getenv("SDXL_GOLDEN_DIR_DEFAULT");
    struct stat sb;
    if (!g || !*g || stat(g, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return NULL;
    return g;
}

void sdx_test_skip(const char *why)
{
    printf("SKIP: %s\n", why);
    fflush(stdout);
    exit(77);
}

const char *sdx_test_path(const char *rel)
{
    static char buf[4096];
    const char *g = sdx_test_golden();
    if (!g)
        sdx_test_skip("golden data not found (set SDXL_GOLDEN_DIR)");
    snprintf(buf, sizeof buf, "%s/%s", g, rel);
    return buf;
}

sdx_safetensors_t *sdx_test_open(const char *rel)
{
    const char *p = sdx_test_path(rel);
    struct stat sb;
    if (stat(p, &sb) != 0)
        sdx_test_skip("golden file missing");
    sdx_safetensors_t *st = sdx_safetensors_open(p);
    sdx_test_check(st != NULL, "open %s (%s)", rel, st ? "ok" : sdx_last_error());
    return st;
}

sdx_tensor_t *sdx_test_get(sdx_safetensors_t *st, const char *name)
{
    sdx_tensor_t *view = NULL, *copy = NULL;
    if (!st || sdx_safetensors_get(NULL, &view, st, name) != 0) {
        sdx_test_check(false, "reference tensor '%s' present (%s)", name, sdx_last_error());
        return NULL;
    }
    if (sdx_clone(NULL, &copy, view) != 0)
        copy = NULL;
    sdx_tensor_free(&view);
    return copy;
}

sdx_weights_t *sdx_test_weights(const char *rel, sdx_dtype_t dt, char *err, size_t err_len)
{
    if (err_len)
        err[0] = '\0';
    sdx_safetensors_t *st = sdx_test_open(rel);
    sdx_weights_t *w = st ? sdx_weights_new() : NULL;
    for (size_t i = 0; w && i < sdx_safetensors_count(st); i++) {
        const sdx_st_tensor_t *info = sdx_safetensors_at(st, i);
        sdx_tensor_t *t = NULL, *c = NULL;
        if (sdx_safetensors_tensor(NULL, &t, st, info) != 0)
            goto fail;
        if (dt != SDX_DTYPE_COUNT && dt != info->dtype) {
            int rc = sdx_to_dtype(NULL, &c, t, dt);
            sdx_tensor_free(&t);
            if (rc != 0)
                goto fail;
            t = c;
        }
        if (sdx_weights_put(w, info->name, t) != 0) {
            sdx_tensor_free(&t);
            goto fail;
        }
    }
    sdx_safetensors_close(&st);
    return w;
fail:
    snprintf(err, err_len, "%s", sdx_last_error());
    sdx_weights_free(&w);
    sdx_safetensors_close(&st);
    return NULL;
}

static double *s_host64(const sdx_tensor_t *t, int64_t *n)
{
    *n = sdx_tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)(*n > 0 ? *n : 1));
    if (d && sdx_to_host(t, SDX_F64, d, sizeof(double) * (size_t)*n) != 0) {
        free(d);
        return NULL;
    }
    return d;
}

static bool s_same_shape(const sdx_tensor_t *a, const sdx_tensor_t *b)
{
    int64_t sa[SDX_MAX_DIMS], sb[SDX_MAX_DIMS];
    int na = sdx_tensor_shape(a, sa), nb = sdx_tensor_shape(b, sb);
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++)
        if (sa[i] != sb[i])
            return false;
    return true;
}

double sdx_test_rel_l2(const sdx_tensor_t *a, const sdx_tensor_t *b)
{
    if (!a || !b || !s_same_shape(a, b))
        return INFINITY;
    int64_t n;
    double *x = s_host64(a, &n), *y = s_host64(b, &n);
    double num = 0, den = 0;
    if (!x || !y) {
        free(x);
        free(y);
        return INFINITY;
    }
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - y[i];
        num += d * d;
        den += y[i] * y[i];
    }
    free(x);
    free(y);
    if (isnan(num))
        return INFINITY;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

double sdx_test_max_abs(const sdx_tensor_t *a, const sdx_tensor_t *b)
{
    if (!a || !b || !s_same_shape(a, b))
        return INFINITY;
    int64_t n;
    double *x = s_host64(a, &n), *y = s_host64(b, &n), m = 0;
    if (!x || !y) {
        free(x);
        free(y);
        return INFINITY;
    }
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(x[i] - y[i]);
        if (!(d <= m))
            m = d;
    }
    free(x);
    free(y);
    return m;
}

char *sdx_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

bool sdx_test_check(bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", cond ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (cond)
        s_passed++;
    else
        s_failed++;
    return cond;
}

bool sdx_test_close(const sdx_tensor_t *a, const sdx_tensor_t *b, double tol, const char *what)
{
    double e = sdx_test_rel_l2(a, b);
    return sdx_test_check(e <= tol, "%s: rel_l2 %.3e (tol %.0e)", what, e, tol);
}

int sdx_test_done(void)
{
    printf("%d passed, %d failed\n", s_passed, s_failed);
    return s_failed ? 1 : 0;
}

/* Fraction of image_np values within 1/255 of ours (as test_pipeline.c). */
double sdx_test_pixel_match(const sdx_tensor_t *decoded, const sdx_tensor_t *ref_np)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *x, *nhwc;
    double frac = -1;
    int64_t perm[4] = {0, 2, 3, 1};
    if (!decoded || sdx_to_dtype(S, &x, decoded, SDX_F32) || sdx_mul_scalar(S, &x, x, 0.5) ||
        sdx_add_scalar(S, &x, x, 0.5) || sdx_clamp(S, &x, x, 0, 1) ||
        sdx_permute(S, &nhwc, x, perm, 4) || sdx_contiguous(S, &nhwc, nhwc))
        goto done;
    int64_t n = sdx_tensor_numel(nhwc);
    if (n != sdx_tensor_numel(ref_np))
        goto done;
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    if (a && b && !sdx_to_host(nhwc, SDX_F32, a, sizeof(float) * (size_t)n) &&
        !sdx_to_host(ref_np, SDX_F32, b, sizeof(float) * (size_t)n)) {
        int64_t ok = 0;
        for (int64_t i = 0; i < n; i++)
            ok += fabsf(a[i] - b[i]) <= 1.0f / 255.0f + 1e-6f;
        frac = (double)ok / (double)n;
    }
    free(a);
    free(b);
done:
    sdx_scope_free(&S);
    return frac;
}

double sdx_test_uint8_match(const sdx_image_t *imgs, int count, const sdx_tensor_t *ref_np)
{
    int64_t n = sdx_tensor_numel(ref_np), per = n / (count > 0 ? count : 1);
    float *b = malloc(sizeof(float) * (size_t)n);
    double frac = -1;
    if (!b || sdx_to_host(ref_np, SDX_F32, b, sizeof(float) * (size_t)n) != 0)
        goto done;
    int64_t ok = 0, seen = 0;
    for (int k = 0; k < count; k++) {
        const sdx_image_t *im = &imgs[k];
        if (im->channels != 3 || (int64_t)im->width * im->height * 3 != per)
            goto done;
        for (int64_t i = 0; i < per; i++, seen++) {
            int want = (int)lrintf(b[k * per + i] * 255.0f);
            ok += abs((int)im->pixels[i] - want) <= 1;
        }
    }
    frac = seen == n ? (double)ok / (double)n : -1;
done:
    free(b);
    return frac;
}
