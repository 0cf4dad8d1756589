/*  test_torch_vg.c - a tiny shim workload for the valgrind run (torch-valgrind).

    Few ops on small tensors (libtorch under valgrind is slow): scope
    ownership, keep, from_blob with release, randn, a conv, attention, a
    failing call (the exception path) and the from_host/to_host copies. */
#include "sdx_torch.h"

#include <stdio.h>

static const sdx_device_t CPU = {SDX_CPU, 0};
static int s_released;
static void s_release(void *ctx)
{
    (void)ctx;
    s_released++;
}

int main(void)
{
    float data[16];
    for (int i = 0; i < 16; i++)
        data[i] = (float)i / 16.0f;
    const int64_t x_shape[4] = {1, 1, 4, 4}, w_shape[4] = {2, 1, 3, 3}, q_shape[4] = {1, 1, 4, 2};
    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *g = sdx_generator_new(5);
    sdx_tensor_t *x, *w, *h, *q, *a, *kept = NULL, *bad = NULL, *blob = NULL;
    float out[8];
    SDX_TRY(sdx_from_host(S, &x, data, SDX_F32, x_shape, 4));
    SDX_TRY(sdx_randn(S, &w, g, w_shape, 4, SDX_F32, CPU));
    SDX_TRY(sdx_conv2d(S, &h, x, w, NULL, 1, 1, 1, 1, 1));
    SDX_TRY(sdx_silu(S, &h, h));
    SDX_TRY(sdx_from_blob(S, &blob, data, SDX_F32, q_shape, 4, s_release, NULL));
    SDX_TRY(sdx_sdpa(S, &q, blob, blob, blob, NULL, true, 0));
    SDX_TRY(sdx_add(S, &a, q, q));
    SDX_TRY(sdx_scope_keep(S, a));
    kept = a;
    if (sdx_add(S, &bad, x, q) == 0) /* [1,1,4,4] + [1,1,4,2]: must fail */
        goto fail;
    SDX_TRY(sdx_to_host(kept, SDX_F32, out, sizeof out));
    sdx_scope_free(&S);
    sdx_tensor_free(&kept);
    sdx_generator_free(&g);
    if (s_released != 1 || sdx_tensor_live_count() != 0) {
        printf("FAIL released %d, live %lld\n", s_released, (long long)sdx_tensor_live_count());
        return 1;
    }
    printf("ok   valgrind workload\n1 passed, 0 failed\n");
    return 0;
fail:
    printf("FAIL %s\n", sdx_last_error());
    sdx_scope_free(&S);
    sdx_tensor_free(&kept);
    sdx_generator_free(&g);
    return 1;
}
