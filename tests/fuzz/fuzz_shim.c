/*  fuzz_shim.c - the few sdx_torch.h functions sdx_safetensors.c needs, for
    fuzzing and replaying the parser without libtorch (fast, and buildable
    with clang's -fsanitize=fuzzer alone). Tensor functions fail: the fuzz
    target never makes tensors. */
#include "sdx_torch.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char s_err[1024];

const char *sdx_last_error(void)
{
    return s_err;
}

int sdx_set_error(const char *fmt, ...)
{
    char tmp[sizeof s_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    snprintf(s_err, sizeof s_err, "%s", tmp);
    return -1;
}

size_t sdx_dtype_size(sdx_dtype_t dt)
{
    static const size_t sz[SDX_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
    return (unsigned)dt < SDX_DTYPE_COUNT ? sz[dt] : 0;
}

const char *sdx_dtype_name(sdx_dtype_t dt)
{
    static const char *n[SDX_DTYPE_COUNT] = {"f32", "f16", "bf16", "f64", "i64",
                                             "i32", "i16", "i8",   "u8",  "bool"};
    return (unsigned)dt < SDX_DTYPE_COUNT ? n[dt] : "?";
}

int sdx_from_host(sdx_scope_t *S, sdx_tensor_t **out, const void *data, sdx_dtype_t dt,
                  const int64_t *shape, int ndim)
{
    return sdx_set_error("fuzz shim: no tensors");
}

int sdx_from_blob(sdx_scope_t *S, sdx_tensor_t **out, void *data, sdx_dtype_t dt,
                  const int64_t *shape, int ndim, void (*release)(void *ctx), void *ctx)
{
    return sdx_set_error("fuzz shim: no tensors");
}

sdx_dtype_t sdx_tensor_dtype(const sdx_tensor_t *t)
{
    return SDX_F32;
}

int sdx_tensor_shape(const sdx_tensor_t *t, int64_t *shape)
{
    return 0;
}

int64_t sdx_tensor_numel(const sdx_tensor_t *t)
{
    return 0;
}

int sdx_to_host(const sdx_tensor_t *t, sdx_dtype_t dt, void *dst, size_t dst_bytes)
{
    return sdx_set_error("fuzz shim: no tensors");
}
