/*  test_torch_leak.c - handles are not leaked by a realistic network loop.

    Runs a small "UNet-like" step (group_norm, silu, conv2d, residual add,
    attention over flattened pixels with chunked q/k/v, linear, cat/chunk)
    in a scope 200 times, keeping one result per step as the next input, and
    checks that sdx_tensor_live_count() comes back to its starting value and
    that sdx_scope_size() counts exactly the tensors created in the scope.
    Also: the same step from two threads at once, adopt/keep bookkeeping,
    and from_blob release over many iterations. */
#include "torch_test.h"

#include <pthread.h>
#include <stdio.h>

static const sdx_device_t CPU = {SDX_CPU, 0};
#define SH(...) ((const int64_t[]){__VA_ARGS__})

typedef struct {
    sdx_tensor_t *gn_w, *gn_b, *conv_w, *conv_b, *qkv_w, *out_w, *out_b;
} s_weights_t;

/* One step; returns the new x (owned by the caller) or NULL. Counts the
   tensors it made in *made. */
static sdx_tensor_t *s_step(sdx_tensor_t *x, const s_weights_t *w, size_t *made, size_t *scope_peak)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *h, *r, *seq, *qkv, *qkvs[3], *q, *k, *v, *a, *o, *cat, *halves[2], *y;
    const int64_t B = 1, C = 8, H = 4, W = 4, heads = 2, D = C / heads;
    sdx_tensor_t *qkv_parts[3];
    sdx_tensor_t *pair[2];
    SDX_TRY(sdx_group_norm(S, &h, x, 4, w->gn_w, w->gn_b, 1e-5));
    SDX_TRY(sdx_silu(S, &h, h));
    SDX_TRY(sdx_conv2d(S, &h, h, w->conv_w, w->conv_b, 1, 1, 1, 1, 1));
    SDX_TRY(sdx_add(S, &r, x, h));
    /* attention over the H*W tokens */
    SDX_TRY(sdx_flatten(S, &seq, r, 2, 3));            /* [B, C, HW] */
    SDX_TRY(sdx_transpose(S, &seq, seq, 1, 2));        /* [B, HW, C] */
    SDX_TRY(sdx_linear(S, &qkv, seq, w->qkv_w, NULL)); /* [B, HW, 3C] */
    SDX_TRY(sdx_chunk(S, qkvs, qkv, 3, -1));
    for (int i = 0; i < 3; i++) {
        SDX_TRY(sdx_view(S, &qkv_parts[i], qkvs[i], SH(B, H * W, heads, D), 4));
        SDX_TRY(sdx_transpose(S, &qkv_parts[i], qkv_parts[i], 1, 2)); /* [B, heads, HW, D] */
    }
    q = qkv_parts[0];
    k = qkv_parts[1];
    v = qkv_parts[2];
    SDX_TRY(sdx_sdpa(S, &a, q, k, v, NULL, false, 0));
    SDX_TRY(sdx_transpose(S, &a, a, 1, 2));
    SDX_TRY(sdx_reshape(S, &a, a, SH(B, H * W, C), 3));
    SDX_TRY(sdx_linear(S, &o, a, w->out_w, w->out_b));
    SDX_TRY(sdx_transpose(S, &o, o, 1, 2));
    SDX_TRY(sdx_reshape(S, &o, o, SH(B, C, H, W), 4));
    pair[0] = o;
    pair[1] = r;
    SDX_TRY(sdx_cat(S, &cat, pair, 2, 1));
    SDX_TRY(sdx_chunk(S, halves, cat, 2, 1));
    SDX_TRY(sdx_lincomb(S, &y, 0.5, halves[0], 0.5, halves[1]));
    SDX_TRY(sdx_mul_scalar(S, &y, y, 0.9));
    *made = sdx_scope_size(S);
    if (*made > *scope_peak)
        *scope_peak = *made;
    SDX_TRY(sdx_scope_keep(S, y));
    if (sdx_scope_size(S) != *made - 1)
        goto fail;
    sdx_scope_free(&S);
    return y;
fail:
    printf("step failed: %s\n", sdx_last_error());
    sdx_scope_free(&S);
    return NULL;
}

/* Two threads run steps at once on shared (read-only) weights, each with
   its own scopes: the live counter and the scopes must not mix. */
typedef struct {
    const s_weights_t *w;
    sdx_tensor_t *x; /* owned by the thread */
    int steps_ok;
} s_worker_t;

static void *s_worker(void *arg)
{
    s_worker_t *wk = arg;
    size_t made = 0, peak = 0;
    for (int i = 0; i < 50; i++) {
        sdx_tensor_t *y = s_step(wk->x, wk->w, &made, &peak);
        if (!y)
            break;
        sdx_tensor_free(&wk->x);
        wk->x = y;
        wk->steps_ok++;
    }
    return NULL;
}

static int s_released;
static void s_release(void *ctx)
{
    (void)ctx;
    s_released++;
}

int main(void)
{
    const int64_t live0 = sdx_tensor_live_count();
    sdx_inference_guard_t *ig = sdx_inference_guard_new();
    sdx_generator_t *g = sdx_generator_new(3);
    sdx_scope_t *W = sdx_scope_new();
    s_weights_t w;
    sdx_tensor_t *x = NULL;
    TT_OK(sdx_randn(W, &w.gn_w, g, SH(8), 1, SDX_F32, CPU));
    TT_OK(sdx_randn(W, &w.gn_b, g, SH(8), 1, SDX_F32, CPU));
    TT_OK(sdx_randn(W, &w.conv_w, g, SH(8, 8, 3, 3), 4, SDX_F32, CPU));
    TT_OK(sdx_randn(W, &w.conv_b, g, SH(8), 1, SDX_F32, CPU));
    TT_OK(sdx_randn(W, &w.qkv_w, g, SH(24, 8), 2, SDX_F32, CPU));
    TT_OK(sdx_randn(W, &w.out_w, g, SH(8, 8), 2, SDX_F32, CPU));
    TT_OK(sdx_randn(W, &w.out_b, g, SH(8), 1, SDX_F32, CPU));
    TT_OK(sdx_mul_scalar_(w.conv_w, 0.05));
    TT_OK(sdx_mul_scalar_(w.qkv_w, 0.2));
    TT_OK(sdx_mul_scalar_(w.out_w, 0.2));
    TT_OK(sdx_randn(NULL, &x, g, SH(1, 8, 4, 4), 4, SDX_F32, CPU));
    tt_check(sdx_scope_size(W) == 7, "weights scope holds 7 tensors");
    const int64_t live1 = sdx_tensor_live_count();
    tt_check(live1 == live0 + 8, "8 live tensors after setup (%lld)", (long long)(live1 - live0));

    const int iters = 200;
    size_t made = 0, first_made = 0, peak = 0;
    bool stable = true, ok = true;
    for (int i = 0; i < iters; i++) {
        sdx_tensor_t *y = s_step(x, &w, &made, &peak);
        if (!y) {
            ok = false;
            break;
        }
        if (i == 0)
            first_made = made;
        stable = stable && made == first_made;
        sdx_tensor_free(&x);
        x = y;
        if (sdx_tensor_live_count() != live1) {
            stable = false;
            printf("iteration %d: live %lld, expected %lld\n", i,
                   (long long)sdx_tensor_live_count(), (long long)live1);
            break;
        }
    }
    tt_check(ok, "%d forward-like steps ran", iters);
    tt_check(stable, "live count back to %lld after every step; %zu tensors per step in the scope",
             (long long)live1, first_made);
    bool fin = false;
    tt_check(sdx_isfinite_all(x, &fin) == 0 && fin, "result finite after %d steps", iters);

    /* the same from two threads at once */
    {
        s_worker_t wk[2] = {{&w, NULL, 0}, {&w, NULL, 0}};
        pthread_t th[2];
        bool started = true;
        for (int i = 0; i < 2; i++) {
            TT_OK(sdx_clone(NULL, &wk[i].x, x));
            started = started && pthread_create(&th[i], NULL, s_worker, &wk[i]) == 0;
        }
        if (started) {
            pthread_join(th[0], NULL);
            pthread_join(th[1], NULL);
        }
        tt_check(started && wk[0].steps_ok == 50 && wk[1].steps_ok == 50,
                 "two threads ran 50 steps each (%d, %d)", wk[0].steps_ok, wk[1].steps_ok);
        tt_check(tt_diff(wk[0].x, wk[1].x) == 0, "both threads computed the same result");
        sdx_tensor_free(&wk[0].x);
        sdx_tensor_free(&wk[1].x);
        tt_check(sdx_tensor_live_count() == live1, "live count back to %lld after the threads",
                 (long long)live1);
    }

    /* adopt / keep bookkeeping */
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *t1 = NULL, *t2 = NULL, *own = NULL;
    TT_OK(sdx_zeros(S, &t1, SH(2), 1, SDX_F32, CPU));
    TT_OK(sdx_alias(S, &t2, t1));
    TT_OK(sdx_zeros(NULL, &own, SH(3), 1, SDX_F32, CPU));
    tt_check(sdx_scope_size(S) == 2, "scope size 2");
    TT_OK(sdx_scope_adopt(S, own));
    tt_check(sdx_scope_size(S) == 3, "adopt: scope size 3");
    tt_check(sdx_scope_adopt(S, own) == -1 && sdx_scope_size(S) == 3, "adopting twice fails");
    TT_OK(sdx_scope_keep(S, t1));
    tt_check(sdx_scope_size(S) == 2, "keep: scope size 2");
    tt_check(sdx_scope_keep(S, t1) == -1, "keeping twice fails");
    sdx_tensor_t *chunks[4];
    TT_OK(sdx_chunk(S, chunks, t2, 2, 0));
    tt_check(sdx_scope_size(S) == 4, "chunk adds n tensors to the scope");
    TT_OK(sdx_scope_keep(S, chunks[0]));
    sdx_scope_free(&S);
    tt_check(S == NULL && sdx_tensor_live_count() == live1 + 2, "scope freed; kept tensors live");
    sdx_tensor_free(&t1);
    sdx_tensor_free(&chunks[0]);
    tt_check(sdx_scope_size(NULL) == 0, "scope_size(NULL) = 0");

    /* from_blob release over many iterations */
    static float blob[64];
    s_released = 0;
    for (int i = 0; i < 100; i++) {
        sdx_scope_t *B = sdx_scope_new();
        sdx_tensor_t *bt, *v, *s;
        if (sdx_from_blob(B, &bt, blob, SDX_F32, SH(8, 8), 2, s_release, NULL) != 0 ||
            sdx_narrow(B, &v, bt, 0, 1, 2) != 0 || sdx_add_scalar(B, &s, v, 1.0) != 0)
            break;
        sdx_scope_free(&B);
    }
    tt_check(s_released == 100, "from_blob release called once per blob (%d/100)", s_released);

    sdx_tensor_free(&x);
    sdx_scope_free(&W);
    sdx_generator_free(&g);
    sdx_inference_guard_free(&ig);
    tt_check(sdx_tensor_live_count() == live0, "live count back to start (%lld)",
             (long long)sdx_tensor_live_count());
    return tt_done();
}
