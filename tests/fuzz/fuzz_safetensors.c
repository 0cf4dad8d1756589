/*  fuzz_safetensors.c - libFuzzer target for the safetensors header parser.

    Each input is used twice:
      1. as a header JSON alone: sdx_safetensors_check_header(data, size,
         data_size) with a data area size taken from the input's length;
      2. as a whole file image: sdx_safetensors_open_memory(); when it opens,
         every tensor is looked up by name and every byte of its data read,
         so ASan catches a validation gap that would let a tensor point
         outside the image.
    The same function runs in the replay test (replay_safetensors.c) over the
    seed corpus and the regressions folder, without libFuzzer. */
#include "sdx_safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. The header parser alone. */
    (void)sdx_safetensors_check_header((const char *)data, size, (uint64_t)size * 3);
    (void)sdx_safetensors_check_header((const char *)data, size, 0);

    /* 2. A whole file image. */
    sdx_safetensors_t *st = sdx_safetensors_open_memory(data, size, "fuzz");
    if (!st)
        return 0;
    volatile uint8_t sink = 0;
    size_t n = sdx_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        const sdx_st_tensor_t *t = sdx_safetensors_at(st, i);
        if (!t || sdx_safetensors_find(st, t->name) != t)
            abort(); /* find must return the very entry of a unique name */
        if (t->ndim < 0 || t->ndim > SDX_MAX_DIMS)
            abort();
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            numel *= (size_t)t->shape[d];
        /* float8 storage is one byte per element (read as f32) */
        size_t esize = t->storage != SDX_ST_NATIVE ? 1 : sdx_dtype_size(t->dtype);
        if (numel * esize != t->nbytes)
            abort(); /* the parser promised sizes that match shapes */
        const uint8_t *p = t->data;
        for (size_t b = 0; b < t->nbytes; b++)
            sink ^= p[b];
    }
    (void)sdx_safetensors_at(st, n);
    (void)sdx_safetensors_metadata(st, "format");
    (void)sink;
    sdx_safetensors_close(&st);
    return 0;
}
