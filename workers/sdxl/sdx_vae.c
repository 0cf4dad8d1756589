/*  sdx_vae.c - AutoencoderKL encoder/decoder driven by its config; see
    sdx_vae.h. Every resnet/attention/sampler runs in its own scope and the
    running activation is the only tensor alive between blocks.
    Not for: image <-> tensor conversion (sdx_image.c), TAESD previews.
*/
#include "sdx_vae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RES 9
#define VAE_EPS 1e-6

typedef struct {
    int n_res;
    sdx_nn_resnet_t res[MAX_RES];
    bool has_sampler;
    sdx_nn_conv_t sampler;
} s_vblock_t;

typedef struct {
    sdx_nn_resnet_t res[2];
    sdx_nn_spatial_attn_t attn;
} s_mid_t;

struct sdx_vae {
    sdx_vae_config_t cfg;
    sdx_nn_ctx_t cx;
    bool slicing;
    sdx_dtype_t dtype;
    sdx_device_t device;
    sdx_scope_t *owned; /* upcast / reshaped weight copies */
    bool has_enc;
    sdx_nn_conv_t e_conv_in, e_conv_out, quant;
    s_vblock_t e_down[SDX_MAX_LEVELS];
    s_mid_t e_mid;
    sdx_nn_norm_t e_norm_out;
    sdx_nn_conv_t post_quant, d_conv_in, d_conv_out;
    s_mid_t d_mid;
    s_vblock_t d_up[SDX_MAX_LEVELS];
    sdx_nn_norm_t d_norm_out;
};

/* ---------------------------------------------------------------- build */

static int s_bind_mid(sdx_nn_binder_t *b, s_mid_t *m, const char *part, int64_t ch, int groups)
{
    char n[128];
    snprintf(n, sizeof n, "%s.mid_block.resnets.0", part);
    if (sdx_nn_resnet_bind(b, &m->res[0], n, ch, ch, 0, groups, VAE_EPS))
        return -1;
    snprintf(n, sizeof n, "%s.mid_block.attentions.0", part);
    if (sdx_nn_spatial_attn_bind(b, &m->attn, n, ch, groups, VAE_EPS))
        return -1;
    snprintf(n, sizeof n, "%s.mid_block.resnets.1", part);
    return sdx_nn_resnet_bind(b, &m->res[1], n, ch, ch, 0, groups, VAE_EPS);
}

static int s_bind_encoder(sdx_vae_t *v, sdx_nn_binder_t *b)
{
    const sdx_vae_config_t *c = &v->cfg;
    const int L = c->n_levels, G = c->norm_num_groups, nl = c->layers_per_block;
    const int *ch = c->block_out_channels;
    char n[128];
    if (sdx_nn_bind_conv(b, &v->e_conv_in, "encoder.conv_in", c->in_channels, ch[0], 3, 1, 1))
        return -1;
    for (int i = 0; i < L; i++) {
        s_vblock_t *blk = &v->e_down[i];
        int64_t in = i == 0 ? ch[0] : ch[i - 1];
        blk->n_res = nl;
        for (int j = 0; j < nl; j++) {
            snprintf(n, sizeof n, "encoder.down_blocks.%d.resnets.%d", i, j);
            if (sdx_nn_resnet_bind(b, &blk->res[j], n, j == 0 ? in : ch[i], ch[i], 0, G, VAE_EPS))
                return -1;
        }
        blk->has_sampler = i < L - 1;
        if (blk->has_sampler) {
            snprintf(n, sizeof n, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            if (sdx_nn_bind_conv(b, &blk->sampler, n, ch[i], ch[i], 3, 2, 0))
                return -1;
        }
    }
    if (s_bind_mid(b, &v->e_mid, "encoder", ch[L - 1], G) ||
        sdx_nn_bind_norm(b, &v->e_norm_out, "encoder.conv_norm_out", ch[L - 1], G, VAE_EPS) ||
        sdx_nn_bind_conv(b, &v->e_conv_out, "encoder.conv_out", ch[L - 1], 2 * c->latent_channels,
                         3, 1, 1) ||
        sdx_nn_bind_conv(b, &v->quant, "quant_conv", 2 * c->latent_channels, 2 * c->latent_channels,
                         1, 1, 0))
        return -1;
    return 0;
}

static int s_bind_decoder(sdx_vae_t *v, sdx_nn_binder_t *b)
{
    const sdx_vae_config_t *c = &v->cfg;
    const int L = c->n_levels, G = c->norm_num_groups, nl = c->layers_per_block;
    const int *ch = c->block_out_channels;
    char n[128];
    if (sdx_nn_bind_conv(b, &v->post_quant, "post_quant_conv", c->latent_channels,
                         c->latent_channels, 1, 1, 0) ||
        sdx_nn_bind_conv(b, &v->d_conv_in, "decoder.conv_in", c->latent_channels, ch[L - 1], 3, 1,
                         1) ||
        s_bind_mid(b, &v->d_mid, "decoder", ch[L - 1], G))
        return -1;
    for (int i = 0; i < L; i++) {
        s_vblock_t *blk = &v->d_up[i];
        int r = L - 1 - i;
        int64_t prev = i == 0 ? ch[L - 1] : ch[r + 1];
        blk->n_res = nl + 1;
        for (int j = 0; j <= nl; j++) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
            if (sdx_nn_resnet_bind(b, &blk->res[j], n, j == 0 ? prev : ch[r], ch[r], 0, G, VAE_EPS))
                return -1;
        }
        blk->has_sampler = i < L - 1;
        if (blk->has_sampler) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            if (sdx_nn_bind_conv(b, &blk->sampler, n, ch[r], ch[r], 3, 1, 1))
                return -1;
        }
    }
    if (sdx_nn_bind_norm(b, &v->d_norm_out, "decoder.conv_norm_out", ch[0], G, VAE_EPS) ||
        sdx_nn_bind_conv(b, &v->d_conv_out, "decoder.conv_out", ch[0], c->out_channels, 3, 1, 1))
        return -1;
    return 0;
}

sdx_vae_t *sdx_vae_new(const sdx_vae_config_t *cfg, const sdx_weights_t *w)
{
    return sdx_vae_new_f32(cfg, w, false);
}

sdx_vae_t *sdx_vae_new_f32(const sdx_vae_config_t *cfg, const sdx_weights_t *w, bool force_f32)
{
    if (!cfg || !w) {
        sdx_set_error("vae: no config or weights");
        return NULL;
    }
    if (cfg->n_levels < 1 || cfg->n_levels > SDX_MAX_LEVELS || cfg->layers_per_block < 1 ||
        cfg->layers_per_block + 1 > MAX_RES || cfg->norm_num_groups < 1 ||
        cfg->latent_channels < 1 || cfg->in_channels < 1 || cfg->out_channels < 1) {
        sdx_set_error("vae: unsupported config (levels %d, layers_per_block %d, groups %d)",
                      cfg->n_levels, cfg->layers_per_block, cfg->norm_num_groups);
        return NULL;
    }
    sdx_tensor_t *probe = sdx_weights_get(w, "decoder.conv_in.weight");
    if (!probe) {
        sdx_set_error("vae: missing weight 'decoder.conv_in.weight'");
        return NULL;
    }
    sdx_vae_t *v = calloc(1, sizeof *v);
    if (!v || !(v->owned = sdx_scope_new())) {
        free(v);
        sdx_set_error("vae: out of memory");
        return NULL;
    }
    v->cfg = *cfg;
    sdx_nn_ctx_init(&v->cx);
    sdx_nn_binder_t b = {.w = w, .what = "vae", .owned = v->owned};
    sdx_dtype_t wdt = sdx_tensor_dtype(probe);
    if ((cfg->force_upcast && wdt == SDX_F16) ||
        (force_f32 && (wdt == SDX_F16 || wdt == SDX_BF16))) {
        b.dtype = SDX_F32;
        b.device = sdx_tensor_device(probe);
        b.dtype_set = true;
        b.convert = true;
    }
    if (s_bind_decoder(v, &b) != 0)
        goto fail;
    v->has_enc = sdx_weights_has(w, "encoder.conv_in.weight");
    if (v->has_enc && s_bind_encoder(v, &b) != 0)
        goto fail;
    v->dtype = b.dtype;
    v->device = b.device;
    return v;
fail:
    sdx_scope_free(&v->owned);
    free(v);
    return NULL;
}

void sdx_vae_free(sdx_vae_t **v)
{
    if (!v || !*v)
        return;
    sdx_scope_free(&(*v)->owned);
    free(*v);
    *v = NULL;
}

sdx_nn_ctx_t *sdx_vae_options(sdx_vae_t *v)
{
    return &v->cx;
}

void sdx_vae_set_slicing(sdx_vae_t *v, bool on)
{
    v->slicing = on;
}

const sdx_vae_config_t *sdx_vae_config(const sdx_vae_t *v)
{
    return &v->cfg;
}

sdx_dtype_t sdx_vae_dtype(const sdx_vae_t *v)
{
    return v->dtype;
}

sdx_device_t sdx_vae_device(const sdx_vae_t *v)
{
    return v->device;
}

bool sdx_vae_has_encoder(const sdx_vae_t *v)
{
    return v->has_enc;
}

/* ---------------------------------------------------------------- run */

#define STEP(call)                                                                                 \
    do {                                                                                           \
        sdx_tensor_t *nh_ = NULL;                                                                  \
        sdx_tensor_t **out_ = &nh_;                                                                \
        if ((call) != 0)                                                                           \
            goto fail;                                                                             \
        sdx_nn_replace(&h, nh_);                                                                   \
    } while (0)

static int s_mid(const sdx_vae_t *v, const s_mid_t *m, sdx_tensor_t **hp)
{
    sdx_tensor_t *h = *hp;
    STEP(sdx_nn_resnet(&v->cx, NULL, out_, &m->res[0], h, NULL));
    *hp = h;
    STEP(sdx_nn_spatial_attn(&v->cx, NULL, out_, &m->attn, h));
    *hp = h;
    STEP(sdx_nn_resnet(&v->cx, NULL, out_, &m->res[1], h, NULL));
    *hp = h;
    return 0;
fail:
    *hp = h;
    return -1;
}

/* z (already in the VAE's dtype/device) -> decoded image, caller-owned. */
static int s_decode(const sdx_vae_t *v, sdx_tensor_t **out, const sdx_tensor_t *z)
{
    sdx_tensor_t *h = NULL;
    SDX_TRY(sdx_nn_conv(NULL, &h, &v->post_quant, z));
    if (v->cx.channels_last)
        STEP(sdx_channels_last(NULL, out_, h));
    STEP(sdx_nn_conv(NULL, out_, &v->d_conv_in, h));
    SDX_TRY(s_mid(v, &v->d_mid, &h));
    for (int i = 0; i < v->cfg.n_levels; i++) {
        const s_vblock_t *blk = &v->d_up[i];
        for (int j = 0; j < blk->n_res; j++)
            STEP(sdx_nn_resnet(&v->cx, NULL, out_, &blk->res[j], h, NULL));
        if (blk->has_sampler)
            STEP(sdx_nn_upsample(NULL, out_, &blk->sampler, h, 0, 0));
    }
    STEP(sdx_nn_norm_silu(NULL, out_, &v->d_norm_out, h));
    STEP(sdx_nn_conv(NULL, out_, &v->d_conv_out, h));
    if (v->cx.channels_last)
        STEP(sdx_contiguous(NULL, out_, h));
    *out = h;
    return 0;
fail:
    sdx_tensor_free(&h);
    return -1;
}

static int s_adopt(sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *t)
{
    if (S && sdx_scope_adopt(S, t) != 0) {
        sdx_tensor_free(&t);
        return -1;
    }
    *out = t;
    return 0;
}

int sdx_vae_decode(const sdx_vae_t *v, sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *z)
{
    const sdx_vae_config_t *c = &v->cfg;
    if (!z || sdx_tensor_ndim(z) != 4 || sdx_tensor_size(z, 1) != c->latent_channels)
        return sdx_set_error("vae: latents must be [B, %d, h, w]", c->latent_channels);
    sdx_scope_t *E = sdx_scope_new();
    sdx_tensor_t *x, *res = NULL, **parts = NULL;
    if (!E)
        return -1;
    int64_t B = sdx_tensor_size(z, 0);
    SDX_TRY(sdx_to(E, &x, z, v->dtype, v->device));
    if (!v->slicing || B == 1) {
        SDX_TRY(s_decode(v, &res, x));
    } else {
        parts = calloc((size_t)B, sizeof *parts);
        if (!parts) {
            sdx_set_error("vae: out of memory");
            goto fail;
        }
        for (int64_t i = 0; i < B; i++) {
            sdx_tensor_t *zi;
            SDX_TRY(sdx_narrow(E, &zi, x, 0, i, 1));
            SDX_TRY(s_decode(v, &parts[i], zi));
            SDX_TRY(sdx_scope_adopt(E, parts[i]));
        }
        SDX_TRY(sdx_cat(NULL, &res, parts, (int)B, 0));
    }
    SDX_TRY(s_adopt(S, out, res));
    free(parts);
    sdx_scope_free(&E);
    return 0;
fail:
    free(parts);
    sdx_scope_free(&E);
    return -1;
}

int sdx_vae_decode_latents(const sdx_vae_t *v, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *latents)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *z;
    if (!T)
        return -1;
    SDX_TRY(sdx_to(T, &z, latents, v->dtype, v->device));
    SDX_TRY(sdx_div_scalar(T, &z, z, v->cfg.scaling_factor));
    if (v->cfg.shift_factor != 0.0)
        SDX_TRY(sdx_add_scalar(T, &z, z, v->cfg.shift_factor));
    SDX_TRY(sdx_vae_decode(v, S, out, z));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

int sdx_vae_encode(const sdx_vae_t *v, sdx_scope_t *S, sdx_tensor_t **mean, sdx_tensor_t **logvar,
                   sdx_tensor_t **std, const sdx_tensor_t *image)
{
    const sdx_vae_config_t *c = &v->cfg;
    if (!v->has_enc)
        return sdx_set_error("vae: this VAE has no encoder weights");
    if (!image || sdx_tensor_ndim(image) != 4 || sdx_tensor_size(image, 1) != c->in_channels)
        return sdx_set_error("vae: image must be [B, %d, H, W]", c->in_channels);
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *h = NULL, *x, *ch[2], *m, *lv, *sd;
    if (!T)
        return -1;
    SDX_TRY(sdx_to(T, &x, image, v->dtype, v->device));
    if (v->cx.channels_last)
        SDX_TRY(sdx_channels_last(T, &x, x));
    SDX_TRY(sdx_nn_conv(NULL, &h, &v->e_conv_in, x));
    for (int i = 0; i < c->n_levels; i++) {
        const s_vblock_t *blk = &v->e_down[i];
        for (int j = 0; j < blk->n_res; j++)
            STEP(sdx_nn_resnet(&v->cx, NULL, out_, &blk->res[j], h, NULL));
        if (blk->has_sampler)
            STEP(sdx_nn_downsample(NULL, out_, &blk->sampler, h));
    }
    SDX_TRY(s_mid(v, &v->e_mid, &h));
    STEP(sdx_nn_norm_silu(NULL, out_, &v->e_norm_out, h));
    STEP(sdx_nn_conv(NULL, out_, &v->e_conv_out, h));
    STEP(sdx_nn_conv(NULL, out_, &v->quant, h));
    SDX_TRY(sdx_chunk(T, ch, h, 2, 1));
    SDX_TRY(sdx_contiguous(T, &m, ch[0]));
    SDX_TRY(sdx_clamp(T, &lv, ch[1], -30.0, 20.0));
    SDX_TRY(sdx_mul_scalar(T, &sd, lv, 0.5));
    SDX_TRY(sdx_exp(T, &sd, sd));
    if (mean)
        SDX_TRY(sdx_nn_finish(T, S, mean, m));
    if (logvar)
        SDX_TRY(sdx_nn_finish(T, S, logvar, lv));
    if (std)
        SDX_TRY(sdx_nn_finish(T, S, std, sd));
    sdx_tensor_free(&h);
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_tensor_free(&h);
    sdx_scope_free(&T);
    return -1;
}

int sdx_vae_scale_latents(const sdx_vae_t *v, sdx_scope_t *S, sdx_tensor_t **out,
                          const sdx_tensor_t *x)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *z;
    if (!T)
        return -1;
    SDX_TRY(sdx_alias(T, &z, x));
    if (v->cfg.shift_factor != 0.0)
        SDX_TRY(sdx_add_scalar(T, &z, z, -v->cfg.shift_factor));
    SDX_TRY(sdx_mul_scalar(T, &z, z, v->cfg.scaling_factor));
    SDX_TRY(sdx_nn_finish(T, S, out, z));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}
