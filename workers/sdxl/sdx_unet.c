/*  sdx_unet.c - UNet2DConditionModel (diffusers 0.27.2 semantics) driven by
    its config; see sdx_unet.h.

    Memory: the activation being computed and the skip connections are the
    only tensors alive between blocks (each held as one caller-owned handle
    and freed the moment it is consumed); every block computes in its own
    scope. Not for: schedulers, classifier-free guidance, weight loading.
*/
#include "sdx_unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 8 /* resnets per down block (up blocks have one more) */
#define MAX_SKIPS (1 + SDX_MAX_LEVELS * (MAX_LAYERS + 1))

typedef struct {
    int n_res;
    sdx_nn_resnet_t res[MAX_LAYERS + 1];
    bool has_attn;
    sdx_nn_transformer_t attn[MAX_LAYERS + 1];
    bool has_sampler; /* downsampler (down blocks) or upsampler (up blocks) */
    sdx_nn_conv_t sampler;
} s_block_t;

struct sdx_unet {
    sdx_unet_config_t cfg;
    sdx_nn_ctx_t cx;
    sdx_dtype_t dtype;
    sdx_device_t device;
    int64_t time_dim;
    sdx_nn_conv_t conv_in, conv_out;
    sdx_nn_linear_t t_lin1, t_lin2;
    bool has_add;
    sdx_nn_linear_t a_lin1, a_lin2;
    s_block_t down[SDX_MAX_LEVELS], up[SDX_MAX_LEVELS];
    sdx_nn_resnet_t mid_res[2];
    sdx_nn_transformer_t mid_attn;
    sdx_nn_norm_t norm_out;
    int n_skips;
    bool encoder_only; /* no up path (the half ControlNet shares) */
};

/* ---------------------------------------------------------------- build */

static int s_check_config(const sdx_unet_config_t *c)
{
    if (c->n_levels < 1 || c->n_levels > SDX_MAX_LEVELS)
        return sdx_set_error("unet: config has %d levels (1..%d supported)", c->n_levels,
                             SDX_MAX_LEVELS);
    if (c->layers_per_block < 1 || c->layers_per_block > MAX_LAYERS)
        return sdx_set_error("unet: config has layers_per_block %d (1..%d supported)",
                             c->layers_per_block, MAX_LAYERS);
    if (c->in_channels < 1 || c->out_channels < 1 || c->norm_num_groups < 1)
        return sdx_set_error("unet: config lacks in/out channels or norm_num_groups");
    if (c->time_cond_proj_dim > 0)
        return sdx_set_error("unet: time_cond_proj_dim (LCM-distilled UNet) is not supported");
    if (!c->mid_block_cross_attn)
        return sdx_set_error("unet: only UNetMidBlock2DCrossAttn mid blocks are supported");
    for (int i = 0; i < c->n_levels; i++) {
        if (c->block_out_channels[i] < 1)
            return sdx_set_error("unet: block_out_channels[%d] is %d", i, c->block_out_channels[i]);
        bool attn =
            c->down_cross_attn[i] || c->up_cross_attn[c->n_levels - 1 - i] || i == c->n_levels - 1;
        if (attn && (c->heads[i] < 1 || c->block_out_channels[i] % c->heads[i] != 0))
            return sdx_set_error("unet: level %d: %d channels do not split into %d heads", i,
                                 c->block_out_channels[i], c->heads[i]);
        if (attn && c->transformer_layers[i] < 1)
            return sdx_set_error("unet: level %d: transformer_layers_per_block is %d", i,
                                 c->transformer_layers[i]);
    }
    return 0;
}

static void s_release(sdx_unet_t *u)
{
    for (int i = 0; i < SDX_MAX_LEVELS; i++)
        for (int j = 0; j <= MAX_LAYERS; j++) {
            sdx_nn_transformer_release(&u->down[i].attn[j]);
            sdx_nn_transformer_release(&u->up[i].attn[j]);
        }
    sdx_nn_transformer_release(&u->mid_attn);
}

static int s_bind_block_attn(sdx_nn_binder_t *b, const sdx_unet_config_t *c,
                             sdx_nn_transformer_t *t, const char *name, int level)
{
    return sdx_nn_transformer_bind(
        b, t, name, c->block_out_channels[level], c->heads[level], c->transformer_layers[level],
        c->cross_attention_dim, c->norm_num_groups, c->use_linear_projection, c->upcast_attention);
}

static int s_bind(sdx_unet_t *u, sdx_nn_binder_t *b)
{
    const sdx_unet_config_t *c = &u->cfg;
    const int L = c->n_levels, nl = c->layers_per_block, G = c->norm_num_groups;
    const int *ch = c->block_out_channels;
    const double eps = c->norm_eps;
    char n[256];

    u->time_dim = 4 * (int64_t)ch[0];
    if (sdx_nn_bind_conv(b, &u->conv_in, "conv_in", c->in_channels, ch[0], 3, 1, 1) != 0)
        return -1;
    if (sdx_nn_bind_linear(b, &u->t_lin1, "time_embedding.linear_1", ch[0], u->time_dim, true) ||
        sdx_nn_bind_linear(b, &u->t_lin2, "time_embedding.linear_2", u->time_dim, u->time_dim,
                           true))
        return -1;
    u->has_add = c->addition_time_embed_dim > 0;
    if (u->has_add &&
        (sdx_nn_bind_linear(b, &u->a_lin1, "add_embedding.linear_1",
                            c->projection_class_embeddings_input_dim, u->time_dim, true) ||
         sdx_nn_bind_linear(b, &u->a_lin2, "add_embedding.linear_2", u->time_dim, u->time_dim,
                            true)))
        return -1;

    /* down path */
    u->n_skips = 1;
    for (int i = 0; i < L; i++) {
        s_block_t *blk = &u->down[i];
        int64_t in = i == 0 ? ch[0] : ch[i - 1];
        blk->n_res = nl;
        blk->has_attn = c->down_cross_attn[i];
        for (int j = 0; j < nl; j++) {
            snprintf(n, sizeof n, "down_blocks.%d.resnets.%d", i, j);
            if (sdx_nn_resnet_bind(b, &blk->res[j], n, j == 0 ? in : ch[i], ch[i], u->time_dim, G,
                                   eps))
                return -1;
            if (blk->has_attn) {
                snprintf(n, sizeof n, "down_blocks.%d.attentions.%d", i, j);
                if (s_bind_block_attn(b, c, &blk->attn[j], n, i))
                    return -1;
            }
        }
        if (sdx_nn_has(b, "down_blocks.%d.resnets.%d.conv1.weight", i, nl))
            return sdx_set_error("unet: down_blocks.%d has more resnets than layers_per_block=%d",
                                 i, nl);
        if (!blk->has_attn && sdx_nn_has(b, "down_blocks.%d.attentions.0.proj_in.weight", i))
            return sdx_set_error("unet: down_blocks.%d has attentions but the config says "
                                 "DownBlock2D",
                                 i);
        blk->has_sampler = i < L - 1;
        if (blk->has_sampler) {
            snprintf(n, sizeof n, "down_blocks.%d.downsamplers.0.conv", i);
            if (sdx_nn_bind_conv(b, &blk->sampler, n, ch[i], ch[i], 3, 2, 1))
                return -1;
        }
        u->n_skips += nl + (blk->has_sampler ? 1 : 0);
    }
    if (sdx_nn_has(b, "down_blocks.%d.resnets.0.conv1.weight", L))
        return sdx_set_error("unet: the weights have more than the config's %d levels", L);

    /* mid block */
    int mid_layers =
        c->mid_transformer_layers > 0 ? c->mid_transformer_layers : c->transformer_layers[L - 1];
    if (sdx_nn_resnet_bind(b, &u->mid_res[0], "mid_block.resnets.0", ch[L - 1], ch[L - 1],
                           u->time_dim, G, eps) ||
        sdx_nn_transformer_bind(b, &u->mid_attn, "mid_block.attentions.0", ch[L - 1],
                                c->heads[L - 1], mid_layers, c->cross_attention_dim, G,
                                c->use_linear_projection, c->upcast_attention) ||
        sdx_nn_resnet_bind(b, &u->mid_res[1], "mid_block.resnets.1", ch[L - 1], ch[L - 1],
                           u->time_dim, G, eps))
        return -1;

    if (u->encoder_only)
        return 0;
    /* up path: up block i works at level r = L-1-i */
    for (int i = 0; i < L; i++) {
        s_block_t *blk = &u->up[i];
        int r = L - 1 - i;
        int64_t prev_out = i == 0 ? ch[L - 1] : ch[r + 1];
        int64_t in = ch[r > 0 ? r - 1 : 0];
        blk->n_res = nl + 1;
        blk->has_attn = c->up_cross_attn[i];
        for (int j = 0; j <= nl; j++) {
            int64_t skip = j == nl ? in : ch[r];
            int64_t rin = j == 0 ? prev_out : ch[r];
            snprintf(n, sizeof n, "up_blocks.%d.resnets.%d", i, j);
            if (sdx_nn_resnet_bind(b, &blk->res[j], n, rin + skip, ch[r], u->time_dim, G, eps))
                return -1;
            if (blk->has_attn) {
                snprintf(n, sizeof n, "up_blocks.%d.attentions.%d", i, j);
                if (s_bind_block_attn(b, c, &blk->attn[j], n, r))
                    return -1;
            }
        }
        if (!blk->has_attn && sdx_nn_has(b, "up_blocks.%d.attentions.0.proj_in.weight", i))
            return sdx_set_error("unet: up_blocks.%d has attentions but the config says "
                                 "UpBlock2D",
                                 i);
        blk->has_sampler = i < L - 1;
        if (blk->has_sampler) {
            snprintf(n, sizeof n, "up_blocks.%d.upsamplers.0.conv", i);
            if (sdx_nn_bind_conv(b, &blk->sampler, n, ch[r], ch[r], 3, 1, 1))
                return -1;
        }
    }

    if (sdx_nn_bind_norm(b, &u->norm_out, "conv_norm_out", ch[0], G, eps) ||
        sdx_nn_bind_conv(b, &u->conv_out, "conv_out", ch[0], c->out_channels, 3, 1, 1))
        return -1;
    return 0;
}

static sdx_unet_t *s_new(const sdx_unet_config_t *cfg, const sdx_weights_t *w, bool encoder_only,
                         const char *what)
{
    if (!cfg || !w) {
        sdx_set_error("%s: no config or weights", what);
        return NULL;
    }
    if (s_check_config(cfg) != 0)
        return NULL;
    sdx_unet_t *u = calloc(1, sizeof *u);
    if (!u) {
        sdx_set_error("%s: out of memory", what);
        return NULL;
    }
    u->cfg = *cfg;
    u->encoder_only = encoder_only;
    sdx_nn_ctx_init(&u->cx);
    sdx_nn_binder_t b = {.w = w, .what = what};
    if (s_bind(u, &b) != 0) {
        s_release(u);
        free(u);
        return NULL;
    }
    u->dtype = b.dtype;
    u->device = b.device;
    return u;
}

sdx_unet_t *sdx_unet_new(const sdx_unet_config_t *cfg, const sdx_weights_t *w)
{
    return s_new(cfg, w, false, "unet");
}

sdx_unet_t *sdx_unet_new_encoder(const sdx_unet_config_t *cfg, const sdx_weights_t *w,
                                 const char *what)
{
    return s_new(cfg, w, true, what ? what : "unet-encoder");
}

void sdx_unet_free(sdx_unet_t **u)
{
    if (!u || !*u)
        return;
    s_release(*u);
    free(*u);
    *u = NULL;
}

sdx_nn_ctx_t *sdx_unet_options(sdx_unet_t *u)
{
    return &u->cx;
}

const sdx_unet_config_t *sdx_unet_config(const sdx_unet_t *u)
{
    return &u->cfg;
}

sdx_dtype_t sdx_unet_dtype(const sdx_unet_t *u)
{
    return u->dtype;
}

sdx_device_t sdx_unet_device(const sdx_unet_t *u)
{
    return u->device;
}

int sdx_unet_n_skips(const sdx_unet_t *u)
{
    return u->n_skips;
}

/* ---------------------------------------------------------------- embeddings */

int sdx_timestep_embedding(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim,
                           bool flip_sin_to_cos, double freq_shift)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *ex, *tt, *arg, *sc[2], *e;
    if (!T)
        return -1;
    int half = dim / 2;
    int64_t N = sdx_tensor_numel(t);
    int64_t col[2] = {N, 1}, row[2] = {1, half};
    /* exponent = -ln(10000) * arange(half) / (half - shift), all in f32 as diffusers */
    SDX_TRY(sdx_arange(T, &ex, 0, half, 1, SDX_F32, sdx_tensor_device(t)));
    SDX_TRY(sdx_mul_scalar(T, &ex, ex, -log(10000.0)));
    SDX_TRY(sdx_div_scalar(T, &ex, ex, half - freq_shift));
    SDX_TRY(sdx_exp(T, &ex, ex));
    SDX_TRY(sdx_reshape(T, &ex, ex, row, 2));
    SDX_TRY(sdx_to_dtype(T, &tt, t, SDX_F32));
    SDX_TRY(sdx_reshape(T, &tt, tt, col, 2));
    SDX_TRY(sdx_mul(T, &arg, tt, ex));
    SDX_TRY(sdx_sin(T, &sc[0], arg));
    SDX_TRY(sdx_cos(T, &sc[1], arg));
    if (flip_sin_to_cos) {
        sdx_tensor_t *s = sc[0];
        sc[0] = sc[1];
        sc[1] = s;
    }
    SDX_TRY(sdx_cat(T, &e, sc, 2, -1));
    if (dim % 2) {
        int64_t pads[4] = {0, 1, 0, 0};
        SDX_TRY(sdx_pad(T, &e, e, pads, 4, 0.0));
    }
    SDX_TRY(sdx_nn_finish(T, S, out, e));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

/* silu(time_embedding(t) + add_embedding(text_embeds ++ embed(time_ids))):
   what every resnet's time_emb_proj takes. */
static int s_embed(const sdx_unet_t *u, sdx_scope_t *S, sdx_tensor_t **out, int64_t B,
                   const sdx_tensor_t *timestep, const sdx_tensor_t *text_embeds,
                   const sdx_tensor_t *time_ids)
{
    const sdx_unet_config_t *c = &u->cfg;
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *t, *e, *a, *parts[2];
    if (!T)
        return -1;
    int64_t n = sdx_tensor_numel(timestep), one[1] = {1}, bshape[1] = {B};
    if (n != 1 && !(n == B && sdx_tensor_ndim(timestep) == 1)) {
        sdx_set_error("unet: timestep must be 0-d, [1] or [%lld], has %lld values", (long long)B,
                      (long long)n);
        goto fail;
    }
    SDX_TRY(sdx_to(T, &t, timestep, SDX_F32, u->device));
    if (n == 1) {
        SDX_TRY(sdx_reshape(T, &t, t, one, 1));
        SDX_TRY(sdx_expand(T, &t, t, bshape, 1));
    }
    SDX_TRY(sdx_timestep_embedding(T, &e, t, c->block_out_channels[0], c->flip_sin_to_cos,
                                   c->freq_shift));
    SDX_TRY(sdx_to_dtype(T, &e, e, u->dtype));
    SDX_TRY(sdx_nn_linear(T, &e, &u->t_lin1, e));
    SDX_TRY(sdx_silu(T, &e, e));
    SDX_TRY(sdx_nn_linear(T, &e, &u->t_lin2, e));

    if (u->has_add) {
        if (!text_embeds || !time_ids || sdx_tensor_ndim(text_embeds) != 2 ||
            sdx_tensor_ndim(time_ids) != 2 || sdx_tensor_size(text_embeds, 0) != B ||
            sdx_tensor_size(time_ids, 0) != B) {
            sdx_set_error("unet: text_embeds [%lld, P] and time_ids [%lld, N] are required",
                          (long long)B, (long long)B);
            goto fail;
        }
        int64_t P = sdx_tensor_size(text_embeds, 1), N = sdx_tensor_size(time_ids, 1);
        int64_t want = u->a_lin1.in, ate = c->addition_time_embed_dim;
        if (P + N * ate != want) {
            sdx_set_error("unet: text_embeds width %lld + %lld time ids x %lld = %lld, but "
                          "add_embedding takes %lld",
                          (long long)P, (long long)N, (long long)ate, (long long)(P + N * ate),
                          (long long)want);
            goto fail;
        }
        int64_t flat[1] = {B * N}, rows[2] = {B, N * ate};
        SDX_TRY(sdx_to(T, &a, time_ids, SDX_F32, u->device));
        SDX_TRY(sdx_reshape(T, &a, a, flat, 1));
        SDX_TRY(sdx_timestep_embedding(T, &a, a, (int)ate, c->flip_sin_to_cos, c->freq_shift));
        SDX_TRY(sdx_reshape(T, &parts[1], a, rows, 2));
        SDX_TRY(sdx_to(T, &parts[0], text_embeds, SDX_F32, u->device));
        SDX_TRY(sdx_cat(T, &a, parts, 2, 1));
        SDX_TRY(sdx_to_dtype(T, &a, a, u->dtype));
        SDX_TRY(sdx_nn_linear(T, &a, &u->a_lin1, a));
        SDX_TRY(sdx_silu(T, &a, a));
        SDX_TRY(sdx_nn_linear(T, &a, &u->a_lin2, a));
        SDX_TRY(sdx_add(T, &e, e, a));
    }
    SDX_TRY(sdx_silu(T, &e, e));
    SDX_TRY(sdx_nn_finish(T, S, out, e));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

/* ---------------------------------------------------------------- forward */

static int s_check_input(const sdx_unet_t *u, const sdx_tensor_t *sample, const sdx_tensor_t *ehs)
{
    const sdx_unet_config_t *c = &u->cfg;
    if (!sample || sdx_tensor_ndim(sample) != 4 || sdx_tensor_size(sample, 1) != c->in_channels)
        return sdx_set_error("unet: sample must be [B, %d, H, W]", c->in_channels);
    int64_t B = sdx_tensor_size(sample, 0);
    if (!ehs || sdx_tensor_ndim(ehs) != 3 || sdx_tensor_size(ehs, 0) != B ||
        sdx_tensor_size(ehs, 2) != c->cross_attention_dim)
        return sdx_set_error("unet: encoder_hidden_states must be [%lld, L, %d]", (long long)B,
                             c->cross_attention_dim);
    return 0;
}

/* h <- f(h): run a block into a caller-owned result and drop the old h. */
#define STEP(call)                                                                                 \
    do {                                                                                           \
        sdx_tensor_t *nh_ = NULL;                                                                  \
        sdx_tensor_t **out_ = &nh_;                                                                \
        if ((call) != 0)                                                                           \
            goto fail;                                                                             \
        sdx_nn_replace(&h, nh_);                                                                   \
    } while (0)

/* The half shared with ControlNet: inputs converted into E, the embedding
   (silu'd, in E), conv_in (+ hint), down blocks, mid block. On success *hp
   is the mid-block output and skips[0..*n_sk) the skip connections, all
   caller-owned; on failure everything made here is freed. */
static int s_encode(const sdx_unet_t *u, sdx_scope_t *E, sdx_tensor_t **hp, sdx_tensor_t **skips,
                    int *n_sk, sdx_tensor_t **tembp, sdx_tensor_t **ctxp,
                    const sdx_tensor_t *sample, const sdx_tensor_t *timestep,
                    const sdx_tensor_t *encoder_hidden_states, const sdx_tensor_t *text_embeds,
                    const sdx_tensor_t *time_ids, const sdx_tensor_t *hint)
{
    const sdx_unet_config_t *c = &u->cfg;
    const sdx_nn_ctx_t *cx = &u->cx;
    sdx_tensor_t *h = NULL, *x, *ctx, *temb, *r;
    int n = 0;

    if (s_check_input(u, sample, encoder_hidden_states) != 0)
        return -1;
    if (!timestep)
        return sdx_set_error("unet: timestep is required");
    int64_t B = sdx_tensor_size(sample, 0);
    SDX_TRY(sdx_to(E, &x, sample, u->dtype, u->device));
    SDX_TRY(sdx_to(E, &ctx, encoder_hidden_states, u->dtype, u->device));
    SDX_TRY(s_embed(u, E, &temb, B, timestep, text_embeds, time_ids));
    if (cx->channels_last)
        SDX_TRY(sdx_channels_last(E, &x, x));

    SDX_TRY(sdx_nn_conv(NULL, &h, &u->conv_in, x));
    if (hint) {
        SDX_TRY(sdx_to(E, &r, hint, u->dtype, u->device));
        STEP(sdx_add(NULL, out_, h, r));
    }
    SDX_TRY(sdx_alias(NULL, &skips[n++], h));

    for (int i = 0; i < c->n_levels; i++) {
        const s_block_t *blk = &u->down[i];
        for (int j = 0; j < blk->n_res; j++) {
            STEP(sdx_nn_resnet(cx, NULL, out_, &blk->res[j], h, temb));
            if (blk->has_attn)
                STEP(sdx_nn_transformer(cx, NULL, out_, &blk->attn[j], h, ctx));
            SDX_TRY(sdx_alias(NULL, &skips[n++], h));
        }
        if (blk->has_sampler) {
            STEP(sdx_nn_downsample(NULL, out_, &blk->sampler, h));
            SDX_TRY(sdx_alias(NULL, &skips[n++], h));
        }
    }

    STEP(sdx_nn_resnet(cx, NULL, out_, &u->mid_res[0], h, temb));
    STEP(sdx_nn_transformer(cx, NULL, out_, &u->mid_attn, h, ctx));
    STEP(sdx_nn_resnet(cx, NULL, out_, &u->mid_res[1], h, temb));
    *hp = h;
    *n_sk = n;
    *tembp = temb;
    *ctxp = ctx;
    return 0;
fail:
    sdx_tensor_free(&h);
    for (int k = 0; k < n; k++)
        sdx_tensor_free(&skips[k]);
    return -1;
}

int sdx_unet_forward(const sdx_unet_t *u, sdx_scope_t *S, sdx_tensor_t **out,
                     const sdx_tensor_t *sample, const sdx_tensor_t *timestep,
                     const sdx_tensor_t *encoder_hidden_states, const sdx_tensor_t *text_embeds,
                     const sdx_tensor_t *time_ids, sdx_tensor_t *const *down_residuals, int n_down,
                     const sdx_tensor_t *mid_residual)
{
    const sdx_unet_config_t *c = &u->cfg;
    const sdx_nn_ctx_t *cx = &u->cx;
    sdx_scope_t *E = NULL;
    sdx_tensor_t *h = NULL, *skips[MAX_SKIPS] = {0}, *ctx, *temb, *r;
    int n_sk = 0;

    if (u->encoder_only)
        return sdx_set_error("unet: this is an encoder-only UNet (no up path)");
    if (down_residuals && n_down != u->n_skips)
        return sdx_set_error("unet: %d ControlNet down residuals given, the UNet has %d skips",
                             n_down, u->n_skips);
    if (!(E = sdx_scope_new()))
        return -1;
    if (s_encode(u, E, &h, skips, &n_sk, &temb, &ctx, sample, timestep, encoder_hidden_states,
                 text_embeds, time_ids, NULL) != 0)
        goto fail;

    /* ControlNet: residuals join the skips; the mid residual the mid output */
    if (down_residuals) {
        for (int k = 0; k < n_sk; k++) {
            sdx_tensor_t *sum = NULL;
            SDX_TRY(sdx_to(E, &r, down_residuals[k], u->dtype, u->device));
            SDX_TRY(sdx_add(NULL, &sum, skips[k], r));
            sdx_nn_replace(&skips[k], sum);
        }
    }
    if (mid_residual) {
        SDX_TRY(sdx_to(E, &r, mid_residual, u->dtype, u->device));
        STEP(sdx_add(NULL, out_, h, r));
    }

    for (int i = 0; i < c->n_levels; i++) {
        const s_block_t *blk = &u->up[i];
        for (int j = 0; j < blk->n_res; j++) {
            if (n_sk == 0) {
                sdx_set_error("unet: ran out of skip connections");
                goto fail;
            }
            sdx_tensor_t *pair[2] = {h, skips[n_sk - 1]};
            STEP(sdx_cat(NULL, out_, pair, 2, 1));
            sdx_tensor_free(&skips[--n_sk]);
            STEP(sdx_nn_resnet(cx, NULL, out_, &blk->res[j], h, temb));
            if (blk->has_attn)
                STEP(sdx_nn_transformer(cx, NULL, out_, &blk->attn[j], h, ctx));
        }
        if (blk->has_sampler) {
            /* upsample to the size of the skip it meets next (odd sizes, as
               diffusers' forward_upsample_size) */
            int64_t oh = n_sk ? sdx_tensor_size(skips[n_sk - 1], 2) : 0;
            int64_t ow = n_sk ? sdx_tensor_size(skips[n_sk - 1], 3) : 0;
            STEP(sdx_nn_upsample(NULL, out_, &blk->sampler, h, oh, ow));
        }
    }

    STEP(sdx_nn_norm_silu(NULL, out_, &u->norm_out, h));
    STEP(sdx_nn_conv(NULL, out_, &u->conv_out, h));
    if (cx->channels_last)
        STEP(sdx_contiguous(NULL, out_, h));
    if (S && sdx_scope_adopt(S, h) != 0)
        goto fail;
    *out = h;
    sdx_scope_free(&E);
    return 0;
fail:
    sdx_tensor_free(&h);
    for (int k = 0; k < n_sk; k++)
        sdx_tensor_free(&skips[k]);
    sdx_scope_free(&E);
    return -1;
}

int sdx_unet_forward_encoder(const sdx_unet_t *u, sdx_scope_t *S, sdx_tensor_t **skips_out,
                             int max_skips, sdx_tensor_t **mid_out, const sdx_tensor_t *sample,
                             const sdx_tensor_t *timestep,
                             const sdx_tensor_t *encoder_hidden_states,
                             const sdx_tensor_t *text_embeds, const sdx_tensor_t *time_ids,
                             const sdx_tensor_t *hint)
{
    sdx_scope_t *E = NULL;
    sdx_tensor_t *h = NULL, *skips[MAX_SKIPS] = {0}, *ctx, *temb;
    int n_sk = 0;
    if (max_skips < u->n_skips)
        return sdx_set_error("unet: room for %d skips, the UNet has %d", max_skips, u->n_skips);
    if (!(E = sdx_scope_new()))
        return -1;
    if (s_encode(u, E, &h, skips, &n_sk, &temb, &ctx, sample, timestep, encoder_hidden_states,
                 text_embeds, time_ids, hint) != 0)
        goto fail;
    if (S) {
        for (int k = 0; k < n_sk; k++) {
            SDX_TRY(sdx_scope_adopt(S, skips[k]));
            skips_out[k] = skips[k];
            skips[k] = NULL;
        }
        SDX_TRY(sdx_scope_adopt(S, h));
    } else {
        for (int k = 0; k < n_sk; k++) {
            skips_out[k] = skips[k];
            skips[k] = NULL;
        }
    }
    *mid_out = h;
    sdx_scope_free(&E);
    return 0;
fail:
    sdx_tensor_free(&h);
    for (int k = 0; k < n_sk; k++)
        sdx_tensor_free(&skips[k]);
    sdx_scope_free(&E);
    return -1;
}
