/*  fuzz_text_shim.c - the tensor and text-encoder functions that
    sdx_weighting.c and sdx_image.c reference (the embedding and tensor
    halves, which the fuzz targets never call), so that the tokenizer,
    prompt-weighting and image-decoding targets link without libtorch. Each
    one fails: a call would mean a target reached code it is not meant to. */
#include "sdx_prompt.h"
#include "sdx_torch.h"

#include <stdlib.h>

#define NO_TENSORS return sdx_set_error("fuzz shim: no tensors")

void sdx_tensor_free(sdx_tensor_t **t)
{
    if (t)
        *t = NULL;
}
sdx_scope_t *sdx_scope_new(void)
{
    return NULL;
}
void sdx_scope_free(sdx_scope_t **S)
{
    if (S)
        *S = NULL;
}
void sdx_prompt_embeds_free(sdx_prompt_embeds_t *e)
{
    (void)e;
}
int64_t sdx_tensor_size(const sdx_tensor_t *t, int dim)
{
    (void)t, (void)dim;
    return 0;
}
sdx_device_t sdx_tensor_device(const sdx_tensor_t *t)
{
    (void)t;
    return (sdx_device_t){0};
}
int sdx_to(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_dtype_t dt,
           sdx_device_t dev)
{
    (void)S, (void)out, (void)t, (void)dt, (void)dev;
    NO_TENSORS;
}
int sdx_to_dtype(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_dtype_t dt)
{
    (void)S, (void)out, (void)t, (void)dt;
    NO_TENSORS;
}
int sdx_to_device(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_device_t dev)
{
    (void)S, (void)out, (void)t, (void)dev;
    NO_TENSORS;
}
int sdx_zeros_like(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t)
{
    (void)S, (void)out, (void)t;
    NO_TENSORS;
}
int sdx_reshape(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *shape,
                int ndim)
{
    (void)S, (void)out, (void)t, (void)shape, (void)ndim;
    NO_TENSORS;
}
int sdx_unsqueeze(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim)
{
    (void)S, (void)out, (void)t, (void)dim;
    NO_TENSORS;
}
int sdx_narrow(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim, int64_t start,
               int64_t length)
{
    (void)S, (void)out, (void)t, (void)dim, (void)start, (void)length;
    NO_TENSORS;
}
int sdx_cat(sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *const *ts, int n, int dim)
{
    (void)S, (void)out, (void)ts, (void)n, (void)dim;
    NO_TENSORS;
}
int sdx_index_select(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim,
                     const sdx_tensor_t *index)
{
    (void)S, (void)out, (void)t, (void)dim, (void)index;
    NO_TENSORS;
}
int sdx_mul(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b)
{
    (void)S, (void)out, (void)a, (void)b;
    NO_TENSORS;
}
int sdx_div(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b)
{
    (void)S, (void)out, (void)a, (void)b;
    NO_TENSORS;
}
int sdx_mean(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
             int ndims, bool keepdim)
{
    (void)S, (void)out, (void)a, (void)dims, (void)ndims, (void)keepdim;
    NO_TENSORS;
}
const sdx_clip_config_t *sdx_clip_config(const sdx_clip_t *c)
{
    (void)c;
    abort();
}
sdx_dtype_t sdx_clip_dtype(const sdx_clip_t *c)
{
    (void)c;
    abort();
}
sdx_device_t sdx_clip_device(const sdx_clip_t *c)
{
    (void)c;
    abort();
}
int sdx_clip_forward(const sdx_clip_t *c, sdx_scope_t *S, const sdx_tensor_t *input_ids,
                     const sdx_clip_request_t *req, sdx_clip_output_t *out)
{
    (void)c, (void)S, (void)input_ids, (void)req, (void)out;
    NO_TENSORS;
}
