/*  sdx_nn.c - building blocks shared by the SDXL networks (see sdx_nn.h).

    Every run function opens its own scope T for temporaries and moves only
    its result out, so a block never leaves intermediate activations alive.
    Not for: network topology (sdx_unet.c, sdx_vae.c), weight loading.
*/
#include "sdx_nn.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 512

void sdx_nn_ctx_init(sdx_nn_ctx_t *cx)
{
    memset(cx, 0, sizeof *cx);
    cx->fused_sdpa = true;
    cx->attn_chunk = 0;
    cx->channels_last = false;
}

int sdx_nn_finish(sdx_scope_t *T, sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *t)
{
    if (sdx_scope_keep(T, t) != 0)
        return -1;
    if (S && sdx_scope_adopt(S, t) != 0) {
        sdx_tensor_free(&t);
        return -1;
    }
    *out = t;
    return 0;
}

void sdx_nn_replace(sdx_tensor_t **h, sdx_tensor_t *nh)
{
    sdx_tensor_free(h);
    *h = nh;
}

/* NAME.SUFFIX into buf; fails on an over-long name instead of truncating it. */
static int s_join(char *buf, size_t len, const char *name, const char *suffix)
{
    int k = snprintf(buf, len, "%s.%s", name, suffix);
    if (k < 0 || (size_t)k >= len)
        return sdx_set_error("parameter name too long: %s.%s", name, suffix);
    return 0;
}

/* ---------------------------------------------------------------- binding */

static void s_shape_str(char *buf, size_t len, const int64_t *shape, int ndim)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, len - n, "[");
    for (int i = 0; i < ndim && n < len; i++) {
        if (shape[i] < 0)
            n += (size_t)snprintf(buf + n, len - n, "%s*", i ? ", " : "");
        else
            n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    }
    if (n < len)
        snprintf(buf + n, len - n, "]");
}

static int s_bind_v(sdx_nn_binder_t *b, sdx_tensor_t **out, const int64_t *shape, int ndim,
                    bool allow_1x1, const char *fmt, va_list ap)
{
    char name[NAME_MAX_LEN];
    vsnprintf(name, sizeof name, fmt, ap);
    sdx_tensor_t *t = sdx_weights_get(b->w, name);
    if (!t)
        return sdx_set_error("%s: missing weight '%s'", b->what, name);

    int64_t have[SDX_MAX_DIMS];
    int hn = sdx_tensor_shape(t, have);
    bool is_1x1 = allow_1x1 && hn == ndim + 2 && have[hn - 1] == 1 && have[hn - 2] == 1;
    bool ok = hn == ndim || is_1x1;
    for (int i = 0; ok && i < ndim; i++)
        if (shape[i] >= 0 && have[i] != shape[i])
            ok = false;
    if (!ok) {
        char hs[160], ws[160];
        s_shape_str(hs, sizeof hs, have, hn);
        s_shape_str(ws, sizeof ws, shape, ndim);
        return sdx_set_error("%s: weight '%s' has shape %s, expected %s", b->what, name, hs, ws);
    }

    sdx_dtype_t dt = sdx_tensor_dtype(t);
    sdx_device_t dev = sdx_tensor_device(t);
    if (!b->dtype_set) {
        b->dtype = dt;
        b->device = dev;
        b->dtype_set = true;
    }
    if (dev.type != b->device.type || dev.index != b->device.index)
        return sdx_set_error("%s: weight '%s' is on another device than the first weight", b->what,
                             name);
    if (dt != b->dtype && !b->convert)
        return sdx_set_error("%s: weight '%s' is %s, the others are %s", b->what, name,
                             sdx_dtype_name(dt), sdx_dtype_name(b->dtype));
    if (dt != b->dtype || is_1x1) {
        if (!b->owned)
            return sdx_set_error("%s: weight '%s' needs a converted copy and the binder owns none",
                                 b->what, name);
        sdx_tensor_t *c = t;
        if (dt != b->dtype && sdx_to_dtype(b->owned, &c, c, b->dtype) != 0)
            return -1;
        if (is_1x1 && sdx_reshape(b->owned, &c, c, have, ndim) != 0)
            return -1;
        t = c;
    }
    *out = t;
    return 0;
}

int sdx_nn_bind(sdx_nn_binder_t *b, sdx_tensor_t **out, const int64_t *shape, int ndim,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = s_bind_v(b, out, shape, ndim, false, fmt, ap);
    va_end(ap);
    return rc;
}

static int s_bind_1x1(sdx_nn_binder_t *b, sdx_tensor_t **out, const int64_t *shape, int ndim,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = s_bind_v(b, out, shape, ndim, b->owned != NULL, fmt, ap);
    va_end(ap);
    return rc;
}

bool sdx_nn_has(const sdx_nn_binder_t *b, const char *fmt, ...)
{
    char name[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return sdx_weights_has(b->w, name);
}

int sdx_nn_bind_linear(sdx_nn_binder_t *b, sdx_nn_linear_t *l, const char *name, int64_t in,
                       int64_t out, bool bias)
{
    memset(l, 0, sizeof *l);
    int64_t ws[2] = {out, in}, bs[1] = {out};
    if (s_bind_1x1(b, &l->w, ws, 2, "%s.weight", name) != 0)
        return -1;
    if (bias && sdx_nn_bind(b, &l->b, bs, 1, "%s.bias", name) != 0)
        return -1;
    l->in = sdx_tensor_size(l->w, 1);
    l->out = sdx_tensor_size(l->w, 0);
    return 0;
}

int sdx_nn_bind_conv(sdx_nn_binder_t *b, sdx_nn_conv_t *c, const char *name, int64_t in,
                     int64_t out, int kernel, int stride, int pad)
{
    memset(c, 0, sizeof *c);
    int64_t ws[4] = {out, in, kernel, kernel}, bs[1] = {out};
    if (sdx_nn_bind(b, &c->w, ws, 4, "%s.weight", name) != 0)
        return -1;
    if (sdx_nn_bind(b, &c->b, bs, 1, "%s.bias", name) != 0)
        return -1;
    c->in = in;
    c->out = out;
    c->kernel = kernel;
    c->stride = stride;
    c->pad = pad;
    return 0;
}

int sdx_nn_bind_norm(sdx_nn_binder_t *b, sdx_nn_norm_t *n, const char *name, int64_t channels,
                     int groups, double eps)
{
    memset(n, 0, sizeof *n);
    if (groups > 0 && channels % groups != 0)
        return sdx_set_error("%s: %s: %lld channels do not split into %d groups", b->what, name,
                             (long long)channels, groups);
    int64_t s[1] = {channels};
    if (sdx_nn_bind(b, &n->w, s, 1, "%s.weight", name) != 0)
        return -1;
    if (sdx_nn_bind(b, &n->b, s, 1, "%s.bias", name) != 0)
        return -1;
    n->groups = groups;
    n->eps = eps;
    return 0;
}

/* ---------------------------------------------------------------- simple layers */

int sdx_nn_linear(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_linear_t *l,
                  const sdx_tensor_t *x)
{
    return sdx_linear(S, out, x, l->w, l->b);
}

int sdx_nn_conv(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_conv_t *c, const sdx_tensor_t *x)
{
    return sdx_conv2d(S, out, x, c->w, c->b, c->stride, c->stride, c->pad, c->pad, 1);
}

int sdx_nn_norm(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_norm_t *n, const sdx_tensor_t *x)
{
    if (n->groups > 0)
        return sdx_group_norm(S, out, x, n->groups, n->w, n->b, n->eps);
    return sdx_layer_norm(S, out, x, n->w, n->b, n->eps);
}

int sdx_nn_norm_silu(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_norm_t *n,
                     const sdx_tensor_t *x)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *h;
    if (!T)
        return -1;
    SDX_TRY(sdx_nn_norm(T, &h, n, x));
    SDX_TRY(sdx_silu(T, &h, h));
    SDX_TRY(sdx_nn_finish(T, S, out, h));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

/* ---------------------------------------------------------------- resnet */

int sdx_nn_resnet_bind(sdx_nn_binder_t *b, sdx_nn_resnet_t *r, const char *name, int64_t in,
                       int64_t out, int64_t temb_dim, int groups, double eps)
{
    char n[NAME_MAX_LEN + 64];
    memset(r, 0, sizeof *r);
    if (s_join(n, sizeof n, name, "norm1") != 0 ||
        sdx_nn_bind_norm(b, &r->norm1, n, in, groups, eps) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "conv1") != 0 ||
        sdx_nn_bind_conv(b, &r->conv1, n, in, out, 3, 1, 1) != 0)
        return -1;
    if (temb_dim > 0) {
        if (s_join(n, sizeof n, name, "time_emb_proj") != 0 ||
            sdx_nn_bind_linear(b, &r->temb, n, temb_dim, out, true) != 0)
            return -1;
    }
    if (s_join(n, sizeof n, name, "norm2") != 0 ||
        sdx_nn_bind_norm(b, &r->norm2, n, out, groups, eps) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "conv2") != 0 ||
        sdx_nn_bind_conv(b, &r->conv2, n, out, out, 3, 1, 1) != 0)
        return -1;
    if (in != out) {
        if (s_join(n, sizeof n, name, "conv_shortcut") != 0 ||
            sdx_nn_bind_conv(b, &r->shortcut, n, in, out, 1, 1, 0) != 0)
            return -1;
    }
    return 0;
}

int sdx_nn_resnet(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                  const sdx_nn_resnet_t *r, const sdx_tensor_t *x, const sdx_tensor_t *temb_act)
{
    (void)cx;
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *h, *t, *sc;
    if (!T)
        return -1;
    SDX_TRY(sdx_nn_norm_silu(T, &h, &r->norm1, x));
    SDX_TRY(sdx_nn_conv(T, &h, &r->conv1, h));
    if (r->temb.w) {
        if (!temb_act) {
            sdx_set_error("resnet: a time embedding is required");
            goto fail;
        }
        int64_t shape[4] = {sdx_tensor_size(temb_act, 0), r->temb.out, 1, 1};
        SDX_TRY(sdx_nn_linear(T, &t, &r->temb, temb_act));
        SDX_TRY(sdx_reshape(T, &t, t, shape, 4));
        SDX_TRY(sdx_add(T, &h, h, t));
    }
    SDX_TRY(sdx_nn_norm_silu(T, &h, &r->norm2, h));
    SDX_TRY(sdx_nn_conv(T, &h, &r->conv2, h));
    if (r->shortcut.w)
        SDX_TRY(sdx_nn_conv(T, &sc, &r->shortcut, x));
    else
        sc = (sdx_tensor_t *)x;
    SDX_TRY(sdx_add(T, &h, sc, h));
    SDX_TRY(sdx_nn_finish(T, S, out, h));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

/* ---------------------------------------------------------------- attention */

int sdx_nn_attn_bind(sdx_nn_binder_t *b, sdx_nn_attn_t *a, const char *name, int64_t query_dim,
                     int64_t ctx_dim, int heads, bool qkv_bias)
{
    char n[NAME_MAX_LEN + 64];
    memset(a, 0, sizeof *a);
    if (heads <= 0 || query_dim % heads != 0)
        return sdx_set_error("%s: %s: %lld channels do not split into %d heads", b->what, name,
                             (long long)query_dim, heads);
    if (s_join(n, sizeof n, name, "to_q") != 0 ||
        sdx_nn_bind_linear(b, &a->q, n, query_dim, query_dim, qkv_bias) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "to_k") != 0 ||
        sdx_nn_bind_linear(b, &a->k, n, ctx_dim, query_dim, qkv_bias) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "to_v") != 0 ||
        sdx_nn_bind_linear(b, &a->v, n, ctx_dim, query_dim, qkv_bias) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "to_out.0") != 0 ||
        sdx_nn_bind_linear(b, &a->out, n, query_dim, query_dim, true) != 0)
        return -1;
    a->heads = heads;
    return 0;
}

/* softmax(q k^T * scale) v, chunked over queries (dim 2) when asked. */
static int s_sdpa_explicit(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *q, const sdx_tensor_t *k, const sdx_tensor_t *v)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *kt, *res = NULL, **parts = NULL;
    if (!T)
        return -1;
    double scale = 1.0 / sqrt((double)sdx_tensor_size(q, -1));
    int64_t L = sdx_tensor_size(q, 2);
    int64_t chunk = cx->attn_chunk > 0 && cx->attn_chunk < L ? cx->attn_chunk : L;
    int64_t nparts = (L + chunk - 1) / chunk;
    parts = calloc((size_t)nparts, sizeof *parts);
    if (!parts) {
        sdx_set_error("out of memory");
        goto fail;
    }
    SDX_TRY(sdx_transpose(T, &kt, k, -2, -1));
    for (int64_t i = 0; i < nparts; i++) {
        sdx_scope_t *C = sdx_scope_new();
        sdx_tensor_t *qc, *s;
        if (!C)
            goto fail;
        int64_t len = i * chunk + chunk <= L ? chunk : L - i * chunk;
        if (sdx_narrow(C, &qc, q, 2, i * chunk, len) != 0 || sdx_matmul(C, &s, qc, kt) != 0 ||
            sdx_mul_scalar_(s, scale) != 0 || sdx_softmax(C, &s, s, -1) != 0 ||
            sdx_matmul(C, &s, s, v) != 0 || sdx_nn_finish(C, T, &parts[i], s) != 0) {
            sdx_scope_free(&C);
            goto fail;
        }
        sdx_scope_free(&C);
    }
    if (nparts == 1)
        res = parts[0];
    else
        SDX_TRY(sdx_cat(T, &res, parts, (int)nparts, 2));
    SDX_TRY(sdx_nn_finish(T, S, out, res));
    free(parts);
    sdx_scope_free(&T);
    return 0;
fail:
    free(parts);
    sdx_scope_free(&T);
    return -1;
}

int sdx_nn_sdpa(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *q,
                const sdx_tensor_t *k, const sdx_tensor_t *v)
{
    if (cx->fused_sdpa)
        return sdx_sdpa(S, out, q, k, v, NULL, false, 0.0);
    return s_sdpa_explicit(cx, S, out, q, k, v);
}

/* [B, L, H*D] -> [B, H, L, D] */
static int s_split_heads(sdx_scope_t *T, sdx_tensor_t **out, const sdx_tensor_t *x, int heads)
{
    int64_t B = sdx_tensor_size(x, 0), L = sdx_tensor_size(x, 1), C = sdx_tensor_size(x, 2);
    int64_t shape[4] = {B, L, heads, C / heads};
    sdx_tensor_t *h;
    if (sdx_reshape(T, &h, x, shape, 4) != 0)
        return -1;
    return sdx_transpose(T, out, h, 1, 2);
}

int sdx_nn_attention(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                     const sdx_nn_attn_t *a, const sdx_tensor_t *x, const sdx_tensor_t *ctx)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *q, *k, *v, *o;
    if (!T)
        return -1;
    if (!ctx)
        ctx = x;
    sdx_dtype_t dt = sdx_tensor_dtype(x);
    int64_t B = sdx_tensor_size(x, 0), L = sdx_tensor_size(x, 1);
    SDX_TRY(sdx_nn_linear(T, &q, &a->q, x));
    SDX_TRY(sdx_nn_linear(T, &k, &a->k, ctx));
    SDX_TRY(sdx_nn_linear(T, &v, &a->v, ctx));
    SDX_TRY(s_split_heads(T, &q, q, a->heads));
    SDX_TRY(s_split_heads(T, &k, k, a->heads));
    SDX_TRY(s_split_heads(T, &v, v, a->heads));
    if (a->upcast && (dt == SDX_F16 || dt == SDX_BF16)) {
        SDX_TRY(sdx_to_dtype(T, &q, q, SDX_F32));
        SDX_TRY(sdx_to_dtype(T, &k, k, SDX_F32));
        SDX_TRY(sdx_to_dtype(T, &v, v, SDX_F32));
    }
    SDX_TRY(sdx_nn_sdpa(cx, T, &o, q, k, v));
    SDX_TRY(sdx_transpose(T, &o, o, 1, 2));
    int64_t shape[3] = {B, L, a->q.out};
    SDX_TRY(sdx_reshape(T, &o, o, shape, 3));
    SDX_TRY(sdx_to_dtype(T, &o, o, dt));
    SDX_TRY(sdx_nn_linear(T, &o, &a->out, o));
    SDX_TRY(sdx_nn_finish(T, S, out, o));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

/* ---------------------------------------------------------------- transformer */

static int s_tblock_bind(sdx_nn_binder_t *b, sdx_nn_tblock_t *t, const char *name, int64_t dim,
                         int heads, int64_t ctx_dim, bool upcast)
{
    char n[NAME_MAX_LEN + 64];
    memset(t, 0, sizeof *t);
    if (s_join(n, sizeof n, name, "norm1") != 0 ||
        sdx_nn_bind_norm(b, &t->norm1, n, dim, 0, 1e-5) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "attn1") != 0 ||
        sdx_nn_attn_bind(b, &t->attn1, n, dim, dim, heads, false) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "norm2") != 0 ||
        sdx_nn_bind_norm(b, &t->norm2, n, dim, 0, 1e-5) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "attn2") != 0 ||
        sdx_nn_attn_bind(b, &t->attn2, n, dim, ctx_dim, heads, false) != 0)
        return -1;
    if (s_join(n, sizeof n, name, "norm3") != 0 ||
        sdx_nn_bind_norm(b, &t->norm3, n, dim, 0, 1e-5) != 0)
        return -1;
    /* GEGLU: the inner width is read from the weights (4*dim in SDXL). */
    if (s_join(n, sizeof n, name, "ff.net.0.proj") != 0 ||
        sdx_nn_bind_linear(b, &t->ff_in, n, dim, -1, true) != 0)
        return -1;
    if (t->ff_in.out % 2 != 0)
        return sdx_set_error("%s: weight '%s.weight' has an odd number of rows for GEGLU", b->what,
                             n);
    if (s_join(n, sizeof n, name, "ff.net.2") != 0 ||
        sdx_nn_bind_linear(b, &t->ff_out, n, t->ff_in.out / 2, dim, true) != 0)
        return -1;
    t->attn1.upcast = upcast;
    t->attn2.upcast = upcast;
    return 0;
}

static int s_tblock(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                    const sdx_nn_tblock_t *t, const sdx_tensor_t *x, const sdx_tensor_t *ctx)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *h = (sdx_tensor_t *)x, *n, *a, *parts[2];
    if (!T)
        return -1;
    SDX_TRY(sdx_nn_norm(T, &n, &t->norm1, h));
    SDX_TRY(sdx_nn_attention(cx, T, &a, &t->attn1, n, NULL));
    SDX_TRY(sdx_add(T, &h, a, h));
    SDX_TRY(sdx_nn_norm(T, &n, &t->norm2, h));
    SDX_TRY(sdx_nn_attention(cx, T, &a, &t->attn2, n, ctx));
    SDX_TRY(sdx_add(T, &h, a, h));
    SDX_TRY(sdx_nn_norm(T, &n, &t->norm3, h));
    SDX_TRY(sdx_nn_linear(T, &a, &t->ff_in, n));
    SDX_TRY(sdx_chunk(T, parts, a, 2, -1));
    SDX_TRY(sdx_gelu(T, &parts[1], parts[1], false));
    SDX_TRY(sdx_mul(T, &a, parts[0], parts[1]));
    SDX_TRY(sdx_nn_linear(T, &a, &t->ff_out, a));
    SDX_TRY(sdx_add(T, &h, a, h));
    SDX_TRY(sdx_nn_finish(T, S, out, h));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

int sdx_nn_transformer_bind(sdx_nn_binder_t *b, sdx_nn_transformer_t *t, const char *name,
                            int64_t channels, int heads, int n_layers, int64_t ctx_dim, int groups,
                            bool linear_projection, bool upcast_attention)
{
    char n[NAME_MAX_LEN + 64];
    memset(t, 0, sizeof *t);
    if (n_layers <= 0)
        return sdx_set_error("%s: %s: %d transformer layers", b->what, name, n_layers);
    if (s_join(n, sizeof n, name, "norm") != 0 ||
        sdx_nn_bind_norm(b, &t->norm, n, channels, groups, 1e-6) != 0)
        return -1;
    t->linear = linear_projection;
    if (s_join(n, sizeof n, name, "proj_in") != 0)
        return -1;
    if (linear_projection ? sdx_nn_bind_linear(b, &t->proj_in_l, n, channels, channels, true)
                          : sdx_nn_bind_conv(b, &t->proj_in_c, n, channels, channels, 1, 1, 0))
        return -1;
    if (s_join(n, sizeof n, name, "proj_out") != 0)
        return -1;
    if (linear_projection ? sdx_nn_bind_linear(b, &t->proj_out_l, n, channels, channels, true)
                          : sdx_nn_bind_conv(b, &t->proj_out_c, n, channels, channels, 1, 1, 0))
        return -1;
    t->blocks = calloc((size_t)n_layers, sizeof *t->blocks);
    if (!t->blocks)
        return sdx_set_error("out of memory");
    t->n_blocks = n_layers;
    for (int i = 0; i < n_layers; i++) {
        snprintf(n, sizeof n, "%s.transformer_blocks.%d", name, i);
        if (s_tblock_bind(b, &t->blocks[i], n, channels, heads, ctx_dim, upcast_attention) != 0) {
            sdx_nn_transformer_release(t);
            return -1;
        }
    }
    /* More blocks in the weights than the config says is a config/weights mismatch. */
    if (sdx_nn_has(b, "%s.transformer_blocks.%d.norm1.weight", name, n_layers)) {
        sdx_nn_transformer_release(t);
        return sdx_set_error("%s: %s has more than the %d transformer blocks the config gives",
                             b->what, name, n_layers);
    }
    return 0;
}

void sdx_nn_transformer_release(sdx_nn_transformer_t *t)
{
    free(t->blocks);
    t->blocks = NULL;
    t->n_blocks = 0;
}

int sdx_nn_transformer(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                       const sdx_nn_transformer_t *t, const sdx_tensor_t *x,
                       const sdx_tensor_t *ctx)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *h = NULL, *nh = NULL, *r;
    if (!T)
        return -1;
    int64_t B = sdx_tensor_size(x, 0), C = sdx_tensor_size(x, 1);
    int64_t H = sdx_tensor_size(x, 2), W = sdx_tensor_size(x, 3);
    int64_t perm_in[4] = {0, 2, 3, 1}, perm_out[4] = {0, 3, 1, 2};
    int64_t seq[3] = {B, H * W, C}, img[4] = {B, H, W, C};

    {
        sdx_scope_t *I = sdx_scope_new();
        if (!I)
            goto fail;
        if (sdx_nn_norm(I, &r, &t->norm, x) != 0 ||
            (!t->linear && sdx_nn_conv(I, &r, &t->proj_in_c, r) != 0) ||
            sdx_permute(I, &r, r, perm_in, 4) != 0 || sdx_reshape(I, &r, r, seq, 3) != 0 ||
            (t->linear && sdx_nn_linear(I, &r, &t->proj_in_l, r) != 0) ||
            sdx_nn_finish(I, NULL, &h, r) != 0) {
            sdx_scope_free(&I);
            goto fail;
        }
        sdx_scope_free(&I);
    }
    for (int i = 0; i < t->n_blocks; i++) {
        SDX_TRY(s_tblock(cx, NULL, &nh, &t->blocks[i], h, ctx));
        sdx_nn_replace(&h, nh);
        nh = NULL;
    }
    if (t->linear)
        SDX_TRY(sdx_nn_linear(T, &r, &t->proj_out_l, h));
    else
        r = h;
    SDX_TRY(sdx_reshape(T, &r, r, img, 4));
    SDX_TRY(sdx_permute(T, &r, r, perm_out, 4));
    SDX_TRY(sdx_contiguous(T, &r, r));
    if (!t->linear)
        SDX_TRY(sdx_nn_conv(T, &r, &t->proj_out_c, r));
    SDX_TRY(sdx_add(T, &r, r, x));
    SDX_TRY(sdx_nn_finish(T, S, out, r));
    sdx_tensor_free(&h);
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_tensor_free(&h);
    sdx_scope_free(&T);
    return -1;
}

/* ---------------------------------------------------------------- VAE attention */

int sdx_nn_spatial_attn_bind(sdx_nn_binder_t *b, sdx_nn_spatial_attn_t *a, const char *name,
                             int64_t channels, int groups, double eps)
{
    char n[NAME_MAX_LEN + 64];
    memset(a, 0, sizeof *a);
    if (s_join(n, sizeof n, name, "group_norm") != 0 ||
        sdx_nn_bind_norm(b, &a->norm, n, channels, groups, eps) != 0)
        return -1;
    return sdx_nn_attn_bind(b, &a->attn, name, channels, channels, 1, true);
}

int sdx_nn_spatial_attn(const sdx_nn_ctx_t *cx, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_nn_spatial_attn_t *a, const sdx_tensor_t *x)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *h;
    if (!T)
        return -1;
    int64_t B = sdx_tensor_size(x, 0), C = sdx_tensor_size(x, 1);
    int64_t H = sdx_tensor_size(x, 2), W = sdx_tensor_size(x, 3);
    int64_t flat[3] = {B, C, H * W}, img[4] = {B, C, H, W};
    /* diffusers: view(B, C, HW).transpose(1, 2), group_norm on the
       transposed-back tensor, which is group_norm(x) reshaped. */
    SDX_TRY(sdx_nn_norm(T, &h, &a->norm, x));
    SDX_TRY(sdx_reshape(T, &h, h, flat, 3));
    SDX_TRY(sdx_transpose(T, &h, h, 1, 2));
    SDX_TRY(sdx_nn_attention(cx, T, &h, &a->attn, h, NULL));
    SDX_TRY(sdx_transpose(T, &h, h, 1, 2));
    SDX_TRY(sdx_reshape(T, &h, h, img, 4));
    SDX_TRY(sdx_add(T, &h, h, x));
    SDX_TRY(sdx_nn_finish(T, S, out, h));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

/* ---------------------------------------------------------------- sampling */

int sdx_nn_downsample(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_conv_t *c,
                      const sdx_tensor_t *x)
{
    if (c->pad != 0)
        return sdx_nn_conv(S, out, c, x);
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *h;
    int64_t pads[4] = {0, 1, 0, 1};
    if (!T)
        return -1;
    SDX_TRY(sdx_pad(T, &h, x, pads, 4, 0.0));
    SDX_TRY(sdx_nn_conv(T, &h, c, h));
    SDX_TRY(sdx_nn_finish(T, S, out, h));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

int sdx_nn_upsample(sdx_scope_t *S, sdx_tensor_t **out, const sdx_nn_conv_t *c,
                    const sdx_tensor_t *x, int64_t out_h, int64_t out_w)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *h = (sdx_tensor_t *)x;
    if (!T)
        return -1;
    sdx_dtype_t dt = sdx_tensor_dtype(x);
    if (out_h <= 0 || out_w <= 0) {
        out_h = 2 * sdx_tensor_size(x, 2);
        out_w = 2 * sdx_tensor_size(x, 3);
    }
    if (dt == SDX_BF16)
        SDX_TRY(sdx_to_dtype(T, &h, h, SDX_F32));
    SDX_TRY(sdx_interpolate_nearest(T, &h, h, out_h, out_w));
    if (dt == SDX_BF16)
        SDX_TRY(sdx_to_dtype(T, &h, h, dt));
    SDX_TRY(sdx_nn_conv(T, &h, c, h));
    SDX_TRY(sdx_nn_finish(T, S, out, h));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}
