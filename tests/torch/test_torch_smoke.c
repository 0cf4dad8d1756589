/* Smallest shim check: links, creates a tensor, adds, frees. */
#include "sdx_torch.h"

#include <stdio.h>

int main(void)
{
    float a[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4};
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *x = NULL, *y = NULL;
    float r[4];
    SDX_TRY(sdx_from_host(S, &x, a, SDX_F32, shape, 1));
    SDX_TRY(sdx_add(S, &y, x, x));
    SDX_TRY(sdx_to_host(y, SDX_F32, r, sizeof r));
    sdx_scope_free(&S);
    if (r[3] != 8.0f || sdx_tensor_live_count() != 0) {
        printf("FAIL smoke\n");
        return 1;
    }
    printf("ok   smoke (libtorch %s)\n1 passed, 0 failed\n", sdx_torch_version());
    return 0;
fail:
    printf("FAIL %s\n", sdx_last_error());
    sdx_scope_free(&S);
    return 1;
}
