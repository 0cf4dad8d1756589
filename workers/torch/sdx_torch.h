/*  sdx_torch.h - the thin C shim over libtorch's ATen.

    This is the only interface between the project's C code and C++. It knows
    nothing of SDXL: it offers tensors and the ops a diffusion network needs.

    Conventions (every function follows them):
    - Every function that can fail returns int: 0 on success, -1 on failure.
      The reason is kept in a thread-local string, sdx_last_error(). No C++
      exception ever crosses this boundary.
    - Outputs come back through `sdx_tensor_t **out` and are written only after
      the call succeeded (on failure *out is left untouched).
    - Ownership of an output: if the scope argument S is non-NULL the new tensor
      is owned by S and freed by sdx_scope_free(); if S is NULL the caller owns
      it and frees it with sdx_tensor_free(). Inputs are always borrowed.
    - Shapes are given as (const int64_t *shape, int ndim). Negative dims count
      from the end, as in PyTorch.
    - Tensors are immutable values for the C side except where a function's
      name ends in _ (in-place), as in PyTorch.

    Typical network code:

        sdx_scope_t *S = sdx_scope_new();
        sdx_tensor_t *h, *out;
        TRY(sdx_group_norm(S, &h, x, 32, gamma, beta, 1e-5));
        TRY(sdx_silu(S, &h, h));
        TRY(sdx_conv2d(S, &h, h, w, b, 1, 1, 1, 1, 1));
        TRY(sdx_scope_keep(S, h));      // h survives, now owned by the caller
        sdx_scope_free(&S);             // every temporary is freed here
*/
#ifndef SDX_TORCH_H
#define SDX_TORCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sdx_tensor sdx_tensor_t;       /* one at::Tensor */
typedef struct sdx_scope sdx_scope_t;         /* owns a set of tensors */
typedef struct sdx_generator sdx_generator_t; /* a seeded CPU generator */

typedef enum {
    SDX_F32 = 0,
    SDX_F16,
    SDX_BF16,
    SDX_F64,
    SDX_I64,
    SDX_I32,
    SDX_I16,
    SDX_I8,
    SDX_U8,
    SDX_DT_BOOL,
    SDX_DTYPE_COUNT
} sdx_dtype_t;

typedef enum { SDX_CPU = 0, SDX_CUDA = 1 } sdx_device_type_t;

typedef struct {
    sdx_device_type_t type;
    int index; /* CUDA ordinal; 0 for the CPU */
} sdx_device_t;

#define SDX_MAX_DIMS 8

/* ---------------------------------------------------------------- errors */

/* The message of the last failure on this thread (never NULL; "" if none).
   Borrowed: valid until the next shim call on this thread. */
const char *sdx_last_error(void);
/* Set the thread's last error (printf style). Lets C code above the shim
   report its own failures through the same channel. Always returns -1. */
int sdx_set_error(const char *fmt, ...);

/* ---------------------------------------------------------------- runtime */

/* libtorch version as "major.minor.patch" (static string). */
const char *sdx_torch_version(void);
/* Intra-op thread count for CPU kernels (ATen's OpenMP pool, and OpenBLAS'
   pool when the process has OpenBLAS: Debian's libtorch takes BLAS from the
   system libblas.so.3 alternative). With OpenMP the setting belongs to the
   calling thread and to threads started after it: call it on the thread that
   runs the network, or before starting threads. */
int sdx_set_num_threads(int n);
int sdx_get_num_threads(void);
/* Number of CUDA devices visible to this libtorch (0 on CPU builds). */
int sdx_cuda_device_count(void);
/* Make `index` the current CUDA device of this thread (fails without CUDA). */
int sdx_cuda_set_device(int index);
/* Allocator statistics of a CUDA device in bytes; all zero on CPU builds. */
typedef struct {
    uint64_t allocated, reserved, peak_allocated, peak_reserved;
} sdx_cuda_memory_t;
int sdx_cuda_memory(int index, sdx_cuda_memory_t *out);
int sdx_cuda_reset_peak(int index);
int sdx_cuda_empty_cache(void);
/* Wait for the device's queued work; fails without CUDA. */
int sdx_cuda_synchronize(int index);
/* Parse "cpu", "cuda", "cuda:N" into a device. */
int sdx_device_parse(const char *text, sdx_device_t *out);
/* Name of a dtype ("f32", "f16", ...); "?" if out of range. */
const char *sdx_dtype_name(sdx_dtype_t dt);
/* Size of one element in bytes. */
size_t sdx_dtype_size(sdx_dtype_t dt);

/* Inference mode (no autograd bookkeeping) for the calling thread until the
   guard is freed. Returns NULL on failure. Guards nest like PyTorch's: free
   them on the thread that made them, innermost first. */
typedef struct sdx_inference_guard sdx_inference_guard_t;
sdx_inference_guard_t *sdx_inference_guard_new(void);
void sdx_inference_guard_free(sdx_inference_guard_t **g);

/* ---------------------------------------------------------------- scope */

/* A scope owns tensors created with it; freeing it frees them all. */
sdx_scope_t *sdx_scope_new(void);
void sdx_scope_free(sdx_scope_t **S);
/* Move `t` out of S: the caller now owns it. Fails if S does not own t. */
int sdx_scope_keep(sdx_scope_t *S, sdx_tensor_t *t);
/* Put a caller-owned tensor under S's ownership. */
int sdx_scope_adopt(sdx_scope_t *S, sdx_tensor_t *t);
/* Number of live tensors S owns (for tests). */
size_t sdx_scope_size(const sdx_scope_t *S);

/* ---------------------------------------------------------------- tensors */

/* Free a caller-owned tensor and clear the pointer; NULL is a no-op. */
void sdx_tensor_free(sdx_tensor_t **t);
/* Process-wide count of live sdx_tensor_t handles (for leak tests). */
int64_t sdx_tensor_live_count(void);

int sdx_tensor_ndim(const sdx_tensor_t *t);
int64_t sdx_tensor_size(const sdx_tensor_t *t, int dim); /* negative dims ok */
/* Copies up to SDX_MAX_DIMS sizes into shape; returns ndim. */
int sdx_tensor_shape(const sdx_tensor_t *t, int64_t *shape);
int64_t sdx_tensor_numel(const sdx_tensor_t *t);
sdx_dtype_t sdx_tensor_dtype(const sdx_tensor_t *t);
sdx_device_t sdx_tensor_device(const sdx_tensor_t *t);
bool sdx_tensor_is_contiguous(const sdx_tensor_t *t);
/* A new handle to the same storage (cheap, like `b = a` in Python). */
int sdx_alias(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t);

/* New tensor holding a copy of `data` (host memory, dtype dt, contiguous). */
int sdx_from_host(sdx_scope_t *S, sdx_tensor_t **out, const void *data, sdx_dtype_t dt,
                  const int64_t *shape, int ndim);
/* New CPU tensor that BORROWS `data` (e.g. an mmap'd safetensors region) with
   no copy. `release(ctx)` is called when the last reference to the storage is
   gone. The memory must stay valid and unchanged until then. If the call
   fails, release is not called (the caller still owns the memory). */
int sdx_from_blob(sdx_scope_t *S, sdx_tensor_t **out, void *data, sdx_dtype_t dt,
                  const int64_t *shape, int ndim, void (*release)(void *ctx), void *ctx);
/* Copy the tensor's values (converted to `dt`, moved to the CPU, made
   contiguous) into `dst` of `dst_bytes` bytes; fails if too small. */
int sdx_to_host(const sdx_tensor_t *t, sdx_dtype_t dt, void *dst, size_t dst_bytes);
/* The value of a one-element tensor as double. */
int sdx_item(const sdx_tensor_t *t, double *out);

int sdx_zeros(sdx_scope_t *S, sdx_tensor_t **out, const int64_t *shape, int ndim, sdx_dtype_t dt,
              sdx_device_t dev);
int sdx_ones(sdx_scope_t *S, sdx_tensor_t **out, const int64_t *shape, int ndim, sdx_dtype_t dt,
             sdx_device_t dev);
int sdx_full(sdx_scope_t *S, sdx_tensor_t **out, const int64_t *shape, int ndim, double value,
             sdx_dtype_t dt, sdx_device_t dev);
int sdx_zeros_like(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t);
/* [start, end) with step, like torch.arange. */
int sdx_arange(sdx_scope_t *S, sdx_tensor_t **out, double start, double end, double step,
               sdx_dtype_t dt, sdx_device_t dev);
/* A 0-d tensor holding `value`. */
int sdx_scalar_tensor(sdx_scope_t *S, sdx_tensor_t **out, double value, sdx_dtype_t dt,
                      sdx_device_t dev);

/* Convert dtype and/or move device (a no-op copy is avoided: if nothing
   changes, the result aliases the input). */
int sdx_to(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_dtype_t dt,
           sdx_device_t dev);
int sdx_to_dtype(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_dtype_t dt);
int sdx_to_device(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, sdx_device_t dev);
int sdx_contiguous(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t);
/* Channels-last memory format for 4-D tensors (faster convs on CUDA). */
int sdx_channels_last(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t);
int sdx_clone(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t);
/* dst <- src (same shape; converts dtype/device). */
int sdx_copy_(sdx_tensor_t *dst, const sdx_tensor_t *src);

/* ---------------------------------------------------------------- random */

/* A CPU generator seeded like torch.Generator("cpu").manual_seed(seed). */
sdx_generator_t *sdx_generator_new(uint64_t seed);
void sdx_generator_free(sdx_generator_t **g);
/* randn of `shape` drawn on the CPU from g IN dtype dt, then moved to dev:
   bit-exact with torch.randn(shape, generator=g, dtype=dt) on the CPU, which
   is what diffusers' randn_tensor does for a CPU generator. f16, bf16, f32
   and f64 are drawn directly (libtorch >= 1.13 CPU has all four); for 16 or
   more elements an f16/bf16/f64 draw is NOT the f32 draw rounded (ATen takes
   its uniforms at the dtype's precision), so the same seed gives other
   values per dtype, as in PyTorch. Any other dt is drawn in f32 and
   converted. New tensor per the scope convention. */
int sdx_randn(sdx_scope_t *S, sdx_tensor_t **out, sdx_generator_t *g, const int64_t *shape,
              int ndim, sdx_dtype_t dt, sdx_device_t dev);

/* ---------------------------------------------------------------- shape ops */

int sdx_reshape(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *shape,
                int ndim);
int sdx_view(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *shape,
             int ndim);
int sdx_permute(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *dims,
                int ndim);
int sdx_transpose(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int d0, int d1);
int sdx_unsqueeze(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim);
int sdx_squeeze(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim);
int sdx_flatten(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int start, int end);
int sdx_expand(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *shape,
               int ndim);
/* torch.Tensor.repeat(reps). */
int sdx_repeat(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *reps,
               int ndim);
int sdx_repeat_interleave(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t,
                          int64_t repeats, int dim);
/* t.narrow(dim, start, length): a view. */
int sdx_narrow(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim, int64_t start,
               int64_t length);
/* t.select(dim, index): a view with `dim` removed. */
int sdx_select(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim, int64_t index);
int sdx_cat(sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *const *ts, int n, int dim);
int sdx_stack(sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *const *ts, int n, int dim);
/* Split into n equal chunks along dim (like torch.chunk); outs[0..n-1]. */
int sdx_chunk(sdx_scope_t *S, sdx_tensor_t **outs, const sdx_tensor_t *t, int n, int dim);
int sdx_index_select(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim,
                     const sdx_tensor_t *index);
/* weight[ids]: ids is an integer tensor of any shape. */
int sdx_embedding(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *weight,
                  const sdx_tensor_t *ids);
/* Constant padding; pads as in F.pad: (last_lo, last_hi, prev_lo, prev_hi, ...). */
int sdx_pad(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *pads,
            int npads, double value);
int sdx_flip(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, const int64_t *dims,
             int ndims);

/* ---------------------------------------------------------------- elementwise */

int sdx_add(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b);
int sdx_sub(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b);
int sdx_mul(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b);
int sdx_div(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b);
/* a + alpha * b (torch.add(a, b, alpha=alpha)). */
int sdx_add_scaled(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b,
                   double alpha);
/* alpha * a + beta * b, in one kernel where possible. */
int sdx_lincomb(sdx_scope_t *S, sdx_tensor_t **out, double alpha, const sdx_tensor_t *a,
                double beta, const sdx_tensor_t *b);
int sdx_add_scalar(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double s);
int sdx_mul_scalar(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double s);
int sdx_div_scalar(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double s);
int sdx_pow_scalar(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double p);
/* In place: a += alpha * b, a *= s. */
int sdx_add_(sdx_tensor_t *a, const sdx_tensor_t *b, double alpha);
int sdx_mul_scalar_(sdx_tensor_t *a, double s);
int sdx_neg(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_exp(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
/* Natural logarithm (named sdx_ln so it cannot clash with logging). */
int sdx_ln(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_sqrt(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_rsqrt(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_abs(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_sin(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_cos(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_tanh(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_sigmoid(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_silu(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
/* GELU; tanh_approx selects the tanh approximation ("gelu_pytorch_tanh"). */
int sdx_gelu(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, bool tanh_approx);
/* x * sigmoid(1.702 x), CLIP's quick_gelu. */
int sdx_quick_gelu(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_relu(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a);
int sdx_leaky_relu(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double slope);
int sdx_clamp(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double lo, double hi);
int sdx_where(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *cond, const sdx_tensor_t *a,
              const sdx_tensor_t *b);
/* Elementwise comparisons producing bool tensors. */
int sdx_gt_scalar(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, double s);
int sdx_isfinite_all(const sdx_tensor_t *a, bool *out);

/* ---------------------------------------------------------------- reductions */

/* Reduce over dims[0..ndims-1] (ndims == 0: all dims). */
int sdx_sum(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
            int ndims, bool keepdim);
int sdx_mean(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
             int ndims, bool keepdim);
int sdx_var(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
            int ndims, bool unbiased, bool keepdim);
int sdx_std(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
            int ndims, bool unbiased, bool keepdim);
int sdx_amax(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const int64_t *dims,
             int ndims, bool keepdim);
int sdx_argmax(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, int dim, bool keepdim);
int sdx_softmax(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, int dim);

/* ---------------------------------------------------------------- nn */

/* x @ w^T + b, w: [out, in], b may be NULL. */
int sdx_linear(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, const sdx_tensor_t *w,
               const sdx_tensor_t *b);
int sdx_matmul(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b);
int sdx_bmm(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *a, const sdx_tensor_t *b);
/* 2-D convolution, b may be NULL. */
int sdx_conv2d(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, const sdx_tensor_t *w,
               const sdx_tensor_t *b, int stride_h, int stride_w, int pad_h, int pad_w,
               int groups);
int sdx_group_norm(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, int groups,
                   const sdx_tensor_t *w, const sdx_tensor_t *b, double eps);
/* Layer norm over the last dimension; w/b may be NULL. */
int sdx_layer_norm(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x,
                   const sdx_tensor_t *w, const sdx_tensor_t *b, double eps);
/* Scaled dot-product attention on [B, H, L, D] tensors:
   softmax(q k^T * scale + mask) v. scale <= 0 means 1/sqrt(D). mask may be
   NULL (additive float mask broadcastable to [B, H, Lq, Lk]). is_causal adds
   the causal mask. Uses ATen's fused kernel when the libtorch has one, a
   manual path otherwise (that never uses baddbmm with beta=0). */
int sdx_sdpa(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *q, const sdx_tensor_t *k,
             const sdx_tensor_t *v, const sdx_tensor_t *mask, bool is_causal, double scale);
/* Force the manual attention path (for tests and old libtorch). */
void sdx_sdpa_force_manual(bool manual);
/* Nearest-neighbour resize of a 4-D tensor to (out_h, out_w). */
int sdx_interpolate_nearest(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x,
                            int64_t out_h, int64_t out_w);
/* Bilinear resize of a 4-D tensor (align_corners=false, antialias off). */
int sdx_interpolate_bilinear(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x,
                             int64_t out_h, int64_t out_w);
int sdx_avg_pool2d(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, int kernel,
                   int stride);
int sdx_pixel_unshuffle(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, int factor);
int sdx_pixel_shuffle(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *x, int factor);

#ifdef __cplusplus
}
#endif

/* Network code helper: leave through `fail:` on the first failing call. */
#define SDX_TRY(call)                                                                              \
    do {                                                                                           \
        if ((call) != 0)                                                                           \
            goto fail;                                                                             \
    } while (0)

#endif /* SDX_TORCH_H */
