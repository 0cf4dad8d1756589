/*  sdx_nn.h - building blocks shared by the SDXL networks (UNet, VAE, and
    later ControlNet): linear/conv/norm parameter sets, ResnetBlock2D,
    multi-head attention, BasicTransformerBlock + Transformer2DModel
    (continuous input), the VAE's spatial self-attention, up/down sampling.

    Semantics follow diffusers 0.27.2 (resnet.py, attention.py,
    attention_processor.py, transformers/transformer_2d.py). Parameter names
    are diffusers names relative to a module path given by the caller.

    Two phases:
    - bind (build time): a binder looks every parameter up in an
      sdx_weights_t, checks it is there with the expected shape, dtype and
      device, and stores borrowed pointers in the block struct. The first
      problem fails the bind with "<what>: missing weight 'NAME'" or
      "<what>: weight 'NAME' has shape [..], expected [..]" in sdx_last_error().
    - run (forward): each block function takes a run context (attention and
      memory-format choices), computes inside its own scope so that every
      temporary is freed before it returns, and hands back one new tensor
      owned as the shim's convention says (S non-NULL: owned by S; S NULL:
      owned by the caller).

    This file knows nothing of a whole network's topology; sdx_unet.c and
    sdx_vae.c assemble the blocks from their configs.
*/
#ifndef SDX_NN_H
#define SDX_NN_H

#include "sdx_model.h"
#include "sdx_torch.h"

#include <stdbool.h>
#include <stdint.h>

/* ---------------------------------------------------------------- run context */

/* How a network runs; owned by the network, changeable between forwards. */
typedef struct {
    /* true: attention through sdx_sdpa (ATen's fused kernel where the libtorch
       has one); false: the explicit softmax(q k^T) v path below, which can be
       chunked over queries to bound memory. */
    bool fused_sdpa;
    /* Explicit path only: query rows per chunk (0 = all at once). */
    int64_t attn_chunk;
    /* Convert activations to channels-last before the first convolution
       (helps cuDNN on CUDA with f16/bf16; usually not on the CPU). */
    bool channels_last;
} sdx_nn_ctx_t;

/* Defaults: fused_sdpa true, attn_chunk 0, channels_last false. */
void sdx_nn_ctx_init(sdx_nn_ctx_t *cx);

/* ---------------------------------------------------------------- binding */

typedef struct {
    const sdx_weights_t *w;
    const char *what;  /* prefix of error messages ("unet", "vae") */
    sdx_dtype_t dtype; /* every parameter has (or is converted to) this dtype */
    bool dtype_set;    /* false: the first parameter bound fixes dtype and device */
    sdx_device_t device;
    bool convert;       /* true: parameters of another dtype are converted (copies in owned) */
    sdx_scope_t *owned; /* owns converted / reshaped copies; may be NULL if none are needed */
} sdx_nn_binder_t;

/* Look up `name` (printf-style), check ndim and every dim whose expected
   size is >= 0. *out is borrowed from the weights (or owned by b->owned). */
int sdx_nn_bind(sdx_nn_binder_t *b, sdx_tensor_t **out, const int64_t *shape, int ndim,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* True if the weights hold `name` (printf-style). */
bool sdx_nn_has(const sdx_nn_binder_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef struct {
    sdx_tensor_t *w, *b; /* b NULL when the layer has no bias */
    int64_t in, out;
} sdx_nn_linear_t;

typedef struct {
    sdx_tensor_t *w, *b;
    int64_t in, out;
    int kernel, stride, pad;
} sdx_nn_conv_t;

typedef struct {
    sdx_tensor_t *w, *b;
    int groups; /* 0 for a layer norm */
    double eps;
} sdx_nn_norm_t;

/* NAME.weight [out, in] (+ NAME.bias [out] if bias). A [out, in, 1, 1]
   weight (1x1-conv form of single-file VAEs) is accepted when b->owned is set. */
int sdx_nn_bind_linear(sdx_nn_binder_t *b, sdx_nn_linear_t *l, const char *name, int64_t in,
                       int64_t out, bool bias);
/* NAME.weight [out, in, k, k] + NAME.bias [out]. */
int sdx_nn_bind_conv(sdx_nn_binder_t *b, sdx_nn_conv_t *c, const char *name, int64_t in,
                     int64_t out, int kernel, int stride, int pad);
/* Group norm (groups > 0) or layer norm (groups == 0) over C channels. */
int sdx_nn_bind_norm(sdx_nn_binder_t *b, sdx_nn_norm_t *n, const char *name, int64_t channels,
                     int groups, double eps);

/* Apply a bound layer to x; the result is owned per the shim convention. */
int sdx_nn_linear(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_linear_t *l,
                  const sdx_tensor_t *x);
int sdx_nn_conv(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_conv_t *c, const sdx_tensor_t *x);
int sdx_nn_norm(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_norm_t *n, const sdx_tensor_t *x);
/* silu(group_norm(x)), the pre-activation of every resnet half. */
int sdx_nn_norm_silu(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_norm_t *n,
                     const sdx_tensor_t *x);

/* ---------------------------------------------------------------- ResnetBlock2D */

/* diffusers ResnetBlock2D, time_embedding_norm "default", output_scale 1:
   out = shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(temb)))). */
typedef struct {
    sdx_nn_norm_t norm1, norm2;
    sdx_nn_conv_t conv1, conv2;
    sdx_nn_linear_t temb;   /* time_emb_proj; w NULL without a time embedding */
    sdx_nn_conv_t shortcut; /* conv_shortcut (1x1); w NULL when in == out */
} sdx_nn_resnet_t;

/* temb_dim 0: no time embedding (the VAE). */
int sdx_nn_resnet_bind(sdx_nn_binder_t *b, sdx_nn_resnet_t *r, const char *name, int64_t in,
                       int64_t out, int64_t temb_dim, int groups, double eps);
/* temb_act is silu(temb) [B, temb_dim] (computed once per network call by
   the caller), or NULL for a resnet without time embedding. */
int sdx_nn_resnet(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                  const sdx_nn_resnet_t *r, const sdx_tensor_t *x, const sdx_tensor_t *temb_act);

/* ---------------------------------------------------------------- attention */

/* diffusers Attention with the default processor: to_q/to_k/to_v, heads,
   to_out.0. inner dim = query_dim. */
typedef struct {
    sdx_nn_linear_t q, k, v, out;
    int heads;
    bool upcast; /* compute the attention itself in f32 when the dtype is f16/bf16 */
} sdx_nn_attn_t;

/* ctx_dim: key/value input width (query_dim for self-attention). */
int sdx_nn_attn_bind(sdx_nn_binder_t *b, sdx_nn_attn_t *a, const char *name, int64_t query_dim,
                     int64_t ctx_dim, int heads, bool qkv_bias);
/* x [B, L, C]; ctx [B, Lk, Cctx] or NULL for self-attention. Returns [B, L, C]. */
int sdx_nn_attention(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                     const sdx_nn_attn_t *a, const sdx_tensor_t *x, const sdx_tensor_t *ctx);
/* softmax(q k^T / sqrt(D)) v on [B, H, L, D] tensors, by the path cx selects. */
int sdx_nn_sdpa(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *q,
                const sdx_tensor_t *k, const sdx_tensor_t *v);

/* ---------------------------------------------------------------- transformer */

/* BasicTransformerBlock (norm_type layer_norm, GEGLU feed-forward):
   h += attn1(norm1(h)); h += attn2(norm2(h), ctx); h += ff(norm3(h)). */
typedef struct {
    sdx_nn_norm_t norm1, norm2, norm3;
    sdx_nn_attn_t attn1, attn2;
    sdx_nn_linear_t ff_in, ff_out; /* ff.net.0.proj [2*inner, C], ff.net.2 [C, inner] */
} sdx_nn_tblock_t;

/* Transformer2DModel over a continuous [B, C, H, W] input. */
typedef struct {
    sdx_nn_norm_t norm; /* GroupNorm(groups, C, eps 1e-6) */
    bool linear;        /* use_linear_projection: proj_in/out are Linear, else 1x1 convs */
    sdx_nn_linear_t proj_in_l, proj_out_l;
    sdx_nn_conv_t proj_in_c, proj_out_c;
    int n_blocks;
    sdx_nn_tblock_t *blocks; /* owned array */
} sdx_nn_transformer_t;

int sdx_nn_transformer_bind(sdx_nn_binder_t *b, sdx_nn_transformer_t *t, const char *name,
                            int64_t channels, int heads, int n_layers, int64_t ctx_dim, int groups,
                            bool linear_projection, bool upcast_attention);
/* Frees the blocks array (the tensors are borrowed); safe on a zeroed struct. */
void sdx_nn_transformer_release(sdx_nn_transformer_t *t);
/* x [B, C, H, W], ctx [B, L, Cctx]. Returns [B, C, H, W] (residual added). */
int sdx_nn_transformer(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                       const sdx_nn_transformer_t *t, const sdx_tensor_t *x,
                       const sdx_tensor_t *ctx);

/* ---------------------------------------------------------------- VAE attention */

/* The VAE mid-block Attention (single head over all channels, group_norm
   first, residual connection, biases on q/k/v). */
typedef struct {
    sdx_nn_norm_t norm;
    sdx_nn_attn_t attn;
} sdx_nn_spatial_attn_t;

int sdx_nn_spatial_attn_bind(sdx_nn_binder_t *b, sdx_nn_spatial_attn_t *a, const char *name,
                             int64_t channels, int groups, double eps);
int sdx_nn_spatial_attn(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_nn_spatial_attn_t *a, const sdx_tensor_t *x);

/* ---------------------------------------------------------------- sampling */

/* Downsample2D with a conv: pad 0 convs (the VAE) get F.pad(0,1,0,1) first. */
int sdx_nn_downsample(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_conv_t *c,
                      const sdx_tensor_t *x);
/* Upsample2D: nearest resize to (out_h, out_w) (0, 0: twice the size), then
   the conv. bf16 is resized in f32 like diffusers does. */
int sdx_nn_upsample(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_conv_t *c,
                    const sdx_tensor_t *x, int64_t out_h, int64_t out_w);

/* ---------------------------------------------------------------- helpers */

/* Move t from the temporary scope T to the result's owner (S, or the caller
   if S is NULL) and set *out. */
int sdx_nn_finish(sdx_scope_t *T, sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *t);
/* Replace the caller-owned *h by the caller-owned nh (frees the old one). */
void sdx_nn_replace(sdx_tensor_t **h, sdx_tensor_t *nh);

#endif
