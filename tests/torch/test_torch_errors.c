/*  test_torch_errors.c - failures come back as -1 with a readable message.

    Checks: no C++ exception escapes (the process would abort), the message
    names the function and the cause on one line without a C++ backtrace,
    outputs are left untouched, nothing is allocated on failure, and the last
    error is per thread. */
#include "torch_test.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const sdx_device_t CPU = {SDX_CPU, 0};
#define SH(...) ((const int64_t[]){__VA_ARGS__})

static sdx_tensor_t *const SENTINEL = (sdx_tensor_t *)(uintptr_t)0x5d75d75d;

/* rc must be -1, *out unchanged, the message contain `needle`, have no
   newline nor backtrace, and name the function. */
static void s_expect_fail(int rc, sdx_tensor_t *out, const char *func, const char *needle,
                          const char *what)
{
    const char *e = sdx_last_error();
    bool named = strncmp(e, func, strlen(func)) == 0;
    bool clean = strchr(e, '\n') == NULL && strstr(e, "Exception raised from") == NULL &&
                 strstr(e, "frame #") == NULL;
    bool has = needle == NULL || strstr(e, needle) != NULL;
    tt_check(rc == -1 && out == SENTINEL && named && clean && has,
             "%s: rc %d, out %s, message \"%s\"", what, rc,
             out == SENTINEL ? "untouched" : "CHANGED", e);
}

static void *s_thread(void *arg)
{
    (void)arg;
    /* A fresh thread sees no error; its own error does not leak back. */
    bool empty = sdx_last_error()[0] == '\0';
    sdx_set_error("thread error %d", 7);
    bool own = strcmp(sdx_last_error(), "thread error 7") == 0;
    return (void *)(uintptr_t)(empty && own);
}

int main(void)
{
    int64_t live0 = sdx_tensor_live_count();
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *a = NULL, *b = NULL, *w = NULL, *img = NULL, *k = NULL;
    TT_OK(sdx_ones(S, &a, SH(2, 3), 2, SDX_F32, CPU));
    TT_OK(sdx_ones(S, &b, SH(2, 4), 2, SDX_F32, CPU));
    TT_OK(sdx_ones(S, &w, SH(5, 4), 2, SDX_F32, CPU));
    TT_OK(sdx_ones(S, &img, SH(1, 3, 8, 8), 4, SDX_F32, CPU));
    TT_OK(sdx_ones(S, &k, SH(4, 2, 3, 3), 4, SDX_F32, CPU));
    size_t n0 = sdx_scope_size(S);
    int64_t live1 = sdx_tensor_live_count();
    sdx_tensor_t *out = SENTINEL;
    int rc;

    rc = sdx_add(S, &out, a, b);
    s_expect_fail(rc, out, "sdx_add", "must match", "add [2,3] + [2,4]");
    rc = sdx_linear(S, &out, a, w, NULL);
    s_expect_fail(rc, out, "sdx_linear", NULL, "linear in 3 vs weight in 4");
    rc = sdx_matmul(NULL, &out, a, a);
    s_expect_fail(rc, out, "sdx_matmul", NULL, "matmul [2,3] x [2,3]");
    rc = sdx_conv2d(S, &out, img, k, NULL, 1, 1, 1, 1, 1);
    s_expect_fail(rc, out, "sdx_conv2d", NULL, "conv2d 3 channels vs weight for 2");
    rc = sdx_view(S, &out, a, SH(4, 2), 2);
    s_expect_fail(rc, out, "sdx_view", NULL, "view [2,3] as [4,2]");
    rc = sdx_narrow(S, &out, a, 1, 2, 5);
    s_expect_fail(rc, out, "sdx_narrow", NULL, "narrow past the end");
    rc = sdx_permute(S, &out, a, SH(0, 0), 2);
    s_expect_fail(rc, out, "sdx_permute", NULL, "permute with a repeated dim");
    rc = sdx_group_norm(S, &out, img, 2, NULL, NULL, 1e-5);
    s_expect_fail(rc, out, "sdx_group_norm", NULL, "group_norm 3 channels in 2 groups");
    sdx_tensor_t *ts[2] = {a, b};
    rc = sdx_cat(S, &out, ts, 2, 0);
    s_expect_fail(rc, out, "sdx_cat", NULL, "cat [2,3] and [2,4] on dim 0");
    rc = sdx_cat(S, &out, ts, 0, 0);
    s_expect_fail(rc, out, "sdx_cat", "at least one", "cat of zero tensors");
    sdx_tensor_t *outs[4] = {SENTINEL, SENTINEL, SENTINEL, SENTINEL};
    rc = sdx_chunk(S, outs, a, 2, 1);
    s_expect_fail(rc, outs[0], "sdx_chunk", "divisible", "chunk 3 into 2");
    tt_check(outs[1] == SENTINEL, "chunk failure leaves every output untouched");
    rc = sdx_sdpa(S, &out, img, k, img, NULL, false, 0);
    s_expect_fail(rc, out, "sdx_sdpa", NULL, "sdpa with mismatched head dims");
    rc = sdx_add(S, &out, a, NULL);
    s_expect_fail(rc, out, "sdx_add", "NULL", "add with a NULL input");
    rc = sdx_add(S, NULL, a, a);
    tt_check(rc == -1, "NULL output pointer refused (%s)", sdx_last_error());
    rc = sdx_zeros(S, &out, SH(2), 1, (sdx_dtype_t)99, CPU);
    s_expect_fail(rc, out, "sdx_zeros", "dtype", "invalid dtype");
    rc = sdx_zeros(S, &out, SH(2), SDX_MAX_DIMS + 1, SDX_F32, CPU);
    s_expect_fail(rc, out, "sdx_zeros", "ndim", "ndim > SDX_MAX_DIMS");
    sdx_device_t cuda = {SDX_CUDA, 0};
    if (sdx_cuda_device_count() == 0) {
        rc = sdx_zeros(S, &out, SH(2), 1, SDX_F32, cuda);
        s_expect_fail(rc, out, "sdx_zeros", NULL, "zeros on CUDA without CUDA");
        rc = sdx_to_device(S, &out, a, cuda);
        s_expect_fail(rc, out, "sdx_to_device", NULL, "to_device CUDA without CUDA");
    }
    rc = sdx_embedding(S, &out, w, a);
    s_expect_fail(rc, out, "sdx_embedding", NULL, "embedding with float ids");
    sdx_tensor_t *ids = NULL;
    TT_OK(sdx_full(S, &ids, SH(2), 1, 7, SDX_I64, CPU));
    out = SENTINEL;
    rc = sdx_embedding(S, &out, w, ids);
    s_expect_fail(rc, out, "sdx_embedding", NULL, "embedding id out of range");
    rc = sdx_pad(S, &out, a, SH(1, 1, 1), 3, 0);
    s_expect_fail(rc, out, "sdx_pad", "even", "odd pad count");
    rc = sdx_interpolate_nearest(S, &out, a, 4, 4);
    s_expect_fail(rc, out, "sdx_interpolate_nearest", "4-D", "interpolate a 2-D tensor");

    /* Failures with non-tensor outputs. */
    float small[2];
    rc = sdx_to_host(a, SDX_F32, small, sizeof small);
    tt_check(rc == -1 && strstr(sdx_last_error(), "too small") != NULL,
             "to_host into a too small buffer: %s", sdx_last_error());
    double v = 12345;
    rc = sdx_item(a, &v);
    tt_check(rc == -1 && v == 12345, "item of a 6-element tensor: %s", sdx_last_error());
    bool fin = true;
    rc = sdx_isfinite_all(NULL, &fin);
    tt_check(rc == -1 && fin, "isfinite_all(NULL) refused: %s", sdx_last_error());
    rc = sdx_copy_(a, b);
    tt_check(rc == -1 && strstr(sdx_last_error(), "shape") != NULL, "copy_ shape mismatch: %s",
             sdx_last_error());
    rc = sdx_add_(a, b, 1.0);
    tt_check(rc == -1, "add_ shape mismatch: %s", sdx_last_error());
    sdx_tensor_t *sum = NULL;
    if (TT_OK(sdx_sum(S, &sum, a, NULL, 0, false))) {
        double s = 0;
        tt_check(sdx_item(sum, &s) == 0 && s == 6, "a untouched by the failed in-place ops");
    }
    /* Scope errors */
    sdx_tensor_t *mine = NULL;
    TT_OK(sdx_zeros(NULL, &mine, SH(1), 1, SDX_F32, CPU));
    rc = sdx_scope_keep(S, mine);
    tt_check(rc == -1 && strstr(sdx_last_error(), "not owned") != NULL,
             "keep of a tensor the scope does not own: %s", sdx_last_error());
    rc = sdx_scope_keep(NULL, mine);
    tt_check(rc == -1, "keep with a NULL scope: %s", sdx_last_error());
    sdx_tensor_free(&mine);
    tt_check(mine == NULL, "tensor_free clears the pointer");
    sdx_tensor_free(&mine); /* NULL: no-op */
    sdx_tensor_free(NULL);

    /* Nothing was allocated by the failures (sum above is the only new one). */
    tt_check(sdx_scope_size(S) == n0 + 2 && sdx_tensor_live_count() == live1 + 2,
             "failures allocate nothing (scope %zu, live %lld)", sdx_scope_size(S),
             (long long)sdx_tensor_live_count());

    /* sdx_set_error */
    tt_check(sdx_set_error("custom %s %d", "failure", 3) == -1 &&
                 strcmp(sdx_last_error(), "custom failure 3") == 0,
             "set_error formats and returns -1");
    pthread_t th;
    void *res = NULL;
    if (pthread_create(&th, NULL, s_thread, NULL) == 0 && pthread_join(th, &res) == 0)
        tt_check(res != NULL && strcmp(sdx_last_error(), "custom failure 3") == 0,
                 "last error is per thread");
    /* A failing call after a success still reports; errors are not cleared
       by successful calls (documented: last failure). */
    sdx_generator_t *g = sdx_generator_new(1);
    out = SENTINEL;
    rc = sdx_randn(S, &out, NULL, SH(2), 1, SDX_F32, CPU);
    s_expect_fail(rc, out, "sdx_randn", "generator", "randn with a NULL generator");
    sdx_generator_free(&g);

    sdx_scope_free(&S);
    sdx_scope_free(&S); /* NULL: no-op */
    tt_check(sdx_tensor_live_count() == live0, "no live tensors left");
    return tt_done();
}
