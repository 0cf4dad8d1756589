/*  sdxl_random_model.c - random-weight SDXL pipelines in diffusers layout
    (see sdxl_random_model.h): tensor specs derived from the configs, the
    two presets' config.json texts, and the writers. Shared by sdxl-gen
    (make-tiny) and bench-engine (make-random, FLOP counts). */
#include "sdxl_random_model.h"

#include "sdx_clip.h"
#include "sdx_safetensors.h"
#include "sdx_torch.h"
#include "sdx_unet.h"
#include "sdx_vae.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int s_mkdirs(const char *path)
{
    char buf[SDX_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return sdx_set_error("%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return sdx_set_error("%s: cannot create: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return sdx_set_error("%s: cannot create: %s", buf, strerror(errno));
    return 0;
}

static int s_write_text(const char *dir, const char *name, const char *text)
{
    char path[SDX_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return sdx_set_error("%s: cannot create: %s", path, strerror(errno));
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : sdx_set_error("%s: write failed: %s", path, strerror(errno));
}

static char *s_read_small(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 4096);
    if (buf && fread(buf, 1, 4095, f) == 0 && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}
/* splitmix64: offsets of weight windows (deterministic from the seed). */
static uint64_t s_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* ================================================================ tensor specs */

static rmodel_spec_t *s_add(rmodel_specs_t *sp, rmodel_init_t init, double std, double flops,
                            int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static rmodel_spec_t *s_add(rmodel_specs_t *sp, rmodel_init_t init, double std, double flops,
                            int ndim, const int64_t *shape, const char *fmt, ...)
{
    if (sp->n == sp->cap) {
        size_t cap = sp->cap ? sp->cap * 2 : 512;
        rmodel_spec_t *v = realloc(sp->v, cap * sizeof *v);
        if (!v) {
            sp->oom = true;
            return NULL;
        }
        sp->v = v;
        sp->cap = cap;
    }
    rmodel_spec_t *s = &sp->v[sp->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->init = init;
    s->std = std;
    s->flops = flops;
    s->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s->shape[i] = shape[i];
    return s;
}

static int64_t s_numel(const rmodel_spec_t *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->shape[i];
    return s->init == RMODEL_FLOPS_ONLY ? 0 : n;
}

#define S_BIAS_STD 0.02

/* Linear `p`.weight [out, in] (+ bias) applied at `pos` positions per sample. */
static void s_linear(rmodel_specs_t *sp, const char *p, int64_t out, int64_t in, bool bias,
                     double pos)
{
    int64_t w[2] = {out, in}, b[1] = {out};
    s_add(sp, RMODEL_RAND, 1.0 / sqrt((double)in), 2.0 * out * in * pos, 2, w, "%s.weight", p);
    if (bias)
        s_add(sp, RMODEL_RAND, S_BIAS_STD, 0, 1, b, "%s.bias", p);
}

/* Conv `p` [out, in, k, k] + bias producing `pos` output positions per sample. */
static void s_conv(rmodel_specs_t *sp, const char *p, int64_t out, int64_t in, int k, double pos)
{
    int64_t w[4] = {out, in, k, k}, b[1] = {out};
    s_add(sp, RMODEL_RAND, 1.0 / sqrt((double)in * k * k), 2.0 * out * in * k * k * pos, 4, w,
          "%s.weight", p);
    s_add(sp, RMODEL_RAND, S_BIAS_STD, 0, 1, b, "%s.bias", p);
}

static void s_norm(rmodel_specs_t *sp, const char *p, int64_t c)
{
    int64_t s[1] = {c};
    s_add(sp, RMODEL_ONES, 0, 0, 1, s, "%s.weight", p);
    s_add(sp, RMODEL_ZEROS, 0, 0, 1, s, "%s.bias", p);
}

/* softmax(q k^T) v: two products of lq x lk x c per sample. */
static void s_attn_flops(rmodel_specs_t *sp, const char *p, double lq, double lk, double c)
{
    int64_t none[1] = {0};
    s_add(sp, RMODEL_FLOPS_ONLY, 0, 4.0 * lq * lk * c, 1, none, "%s.(scores)", p);
}

static void s_sub(char *out, const char *p, const char *leaf)
{
    if (snprintf(out, RMODEL_NAME_MAX, "%s.%s", p, leaf) >= RMODEL_NAME_MAX)
        out[0] = 0; /* no diffusers name is that long */
}

/* ResnetBlock2D (temb 0: the VAE's, without time_emb_proj). */
static void s_resnet(rmodel_specs_t *sp, const char *p, int64_t cin, int64_t cout, int64_t temb,
                     double pos)
{
    char n[RMODEL_NAME_MAX];
    s_sub(n, p, "norm1"), s_norm(sp, n, cin);
    s_sub(n, p, "conv1"), s_conv(sp, n, cout, cin, 3, pos);
    if (temb)
        s_sub(n, p, "time_emb_proj"), s_linear(sp, n, cout, temb, true, 1);
    s_sub(n, p, "norm2"), s_norm(sp, n, cout);
    s_sub(n, p, "conv2"), s_conv(sp, n, cout, cout, 3, pos);
    if (cin != cout)
        s_sub(n, p, "conv_shortcut"), s_conv(sp, n, cout, cin, 1, pos);
}

/* Transformer2DModel: norm, proj_in, `layers` BasicTransformerBlocks (self
   attention, cross attention to `ctx_len` tokens of `ctx_dim`, GEGLU FF), proj_out. */
static void s_transformer(rmodel_specs_t *sp, const char *p, int64_t c, int layers, int64_t ctx_dim,
                          double pos, double ctx_len, bool linear_proj)
{
    char n[RMODEL_NAME_MAX], t[RMODEL_NAME_MAX];
    s_sub(n, p, "norm"), s_norm(sp, n, c);
    s_sub(n, p, "proj_in");
    if (linear_proj)
        s_linear(sp, n, c, c, true, pos);
    else
        s_conv(sp, n, c, c, 1, pos);
    for (int k = 0; k < layers; k++) {
        snprintf(t, sizeof t, "%s.transformer_blocks.%d", p, k);
        static const char *self[] = {"attn1.to_q", "attn1.to_k", "attn1.to_v"};
        s_sub(n, t, "norm1"), s_norm(sp, n, c);
        for (int i = 0; i < 3; i++)
            s_sub(n, t, self[i]), s_linear(sp, n, c, c, false, pos);
        s_sub(n, t, "attn1.to_out.0"), s_linear(sp, n, c, c, true, pos);
        s_sub(n, t, "attn1"), s_attn_flops(sp, n, pos, pos, (double)c);
        s_sub(n, t, "norm2"), s_norm(sp, n, c);
        s_sub(n, t, "attn2.to_q"), s_linear(sp, n, c, c, false, pos);
        s_sub(n, t, "attn2.to_k"), s_linear(sp, n, c, ctx_dim, false, ctx_len);
        s_sub(n, t, "attn2.to_v"), s_linear(sp, n, c, ctx_dim, false, ctx_len);
        s_sub(n, t, "attn2.to_out.0"), s_linear(sp, n, c, c, true, pos);
        s_sub(n, t, "attn2"), s_attn_flops(sp, n, pos, ctx_len, (double)c);
        s_sub(n, t, "norm3"), s_norm(sp, n, c);
        s_sub(n, t, "ff.net.0.proj"), s_linear(sp, n, 8 * c, c, true, pos);
        s_sub(n, t, "ff.net.2"), s_linear(sp, n, c, 4 * c, true, pos);
    }
    s_sub(n, p, "proj_out");
    if (linear_proj)
        s_linear(sp, n, c, c, true, pos);
    else
        s_conv(sp, n, c, c, 1, pos);
}

/* UNet2DConditionModel at latent size h x w with `ctx_len` text tokens. */
void rmodel_unet_specs(rmodel_specs_t *sp, const sdx_unet_config_t *c, int64_t h, int64_t w,
                       double ctx_len)
{
    const int L = c->n_levels, lpb = c->layers_per_block;
    const int *boc = c->block_out_channels;
    const int64_t c0 = boc[0], temb = 4 * c0, ctx = c->cross_attention_dim;
    const bool lin = c->use_linear_projection;
    char n[RMODEL_NAME_MAX];
    double pos = (double)h * w;
    s_conv(sp, "conv_in", c0, c->in_channels, 3, pos);
    s_linear(sp, "time_embedding.linear_1", temb, c0, true, 1);
    s_linear(sp, "time_embedding.linear_2", temb, temb, true, 1);
    if (c->projection_class_embeddings_input_dim > 0) {
        s_linear(sp, "add_embedding.linear_1", temb, c->projection_class_embeddings_input_dim, true,
                 1);
        s_linear(sp, "add_embedding.linear_2", temb, temb, true, 1);
    }
    int64_t ch = c0;
    for (int i = 0; i < L; i++) {
        int64_t out = boc[i];
        for (int j = 0; j < lpb; j++) {
            snprintf(n, sizeof n, "down_blocks.%d.resnets.%d", i, j);
            s_resnet(sp, n, j == 0 ? ch : out, out, temb, pos);
            if (c->down_cross_attn[i]) {
                snprintf(n, sizeof n, "down_blocks.%d.attentions.%d", i, j);
                s_transformer(sp, n, out, c->transformer_layers[i], ctx, pos, ctx_len, lin);
            }
        }
        ch = out;
        if (i < L - 1) {
            pos /= 4;
            snprintf(n, sizeof n, "down_blocks.%d.downsamplers.0.conv", i);
            s_conv(sp, n, out, out, 3, pos);
        }
    }
    s_resnet(sp, "mid_block.resnets.0", ch, ch, temb, pos);
    s_transformer(sp, "mid_block.attentions.0", ch, c->mid_transformer_layers, ctx, pos, ctx_len,
                  lin);
    s_resnet(sp, "mid_block.resnets.1", ch, ch, temb, pos);
    int64_t prev = boc[L - 1];
    for (int i = 0; i < L; i++) {
        int64_t out = boc[L - 1 - i], in = boc[L - 1 - (i + 1 < L ? i + 1 : L - 1)];
        for (int j = 0; j <= lpb; j++) {
            int64_t skip = j == lpb ? in : out, rin = j == 0 ? prev : out;
            snprintf(n, sizeof n, "up_blocks.%d.resnets.%d", i, j);
            s_resnet(sp, n, rin + skip, out, temb, pos);
            if (c->up_cross_attn[i]) {
                snprintf(n, sizeof n, "up_blocks.%d.attentions.%d", i, j);
                s_transformer(sp, n, out, c->transformer_layers[L - 1 - i], ctx, pos, ctx_len, lin);
            }
        }
        if (i < L - 1) {
            pos *= 4;
            snprintf(n, sizeof n, "up_blocks.%d.upsamplers.0.conv", i);
            s_conv(sp, n, out, out, 3, pos);
        }
        prev = out;
    }
    s_norm(sp, "conv_norm_out", c0);
    s_conv(sp, "conv_out", c->out_channels, c0, 3, (double)h * w);
}

/* The VAE's UNetMidBlock2D: resnet, one spatial self-attention, resnet. */
static void s_vae_mid(rmodel_specs_t *sp, const char *p, int64_t c, double pos)
{
    char n[RMODEL_NAME_MAX];
    static const char *proj[] = {"to_q", "to_k", "to_v", "to_out.0"};
    snprintf(n, sizeof n, "%s.resnets.0", p), s_resnet(sp, n, c, c, 0, pos);
    snprintf(n, sizeof n, "%s.attentions.0.group_norm", p), s_norm(sp, n, c);
    for (int i = 0; i < 4; i++)
        snprintf(n, sizeof n, "%s.attentions.0.%s", p, proj[i]), s_linear(sp, n, c, c, true, pos);
    snprintf(n, sizeof n, "%s.attentions.0", p), s_attn_flops(sp, n, pos, pos, (double)c);
    snprintf(n, sizeof n, "%s.resnets.1", p), s_resnet(sp, n, c, c, 0, pos);
}

/* AutoencoderKL for an H x W image. */
void rmodel_vae_specs(rmodel_specs_t *sp, const sdx_vae_config_t *c, int64_t H, int64_t W)
{
    const int L = c->n_levels, lpb = c->layers_per_block;
    const int *boc = c->block_out_channels;
    const int64_t lat = c->latent_channels;
    char n[RMODEL_NAME_MAX];
    double pos = (double)H * W;
    s_conv(sp, "encoder.conv_in", boc[0], c->in_channels, 3, pos);
    int64_t ch = boc[0];
    for (int i = 0; i < L; i++) {
        int64_t out = boc[i];
        for (int j = 0; j < lpb; j++) {
            snprintf(n, sizeof n, "encoder.down_blocks.%d.resnets.%d", i, j);
            s_resnet(sp, n, j == 0 ? ch : out, out, 0, pos);
        }
        ch = out;
        if (i < L - 1) {
            pos /= 4;
            snprintf(n, sizeof n, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            s_conv(sp, n, out, out, 3, pos);
        }
    }
    s_vae_mid(sp, "encoder.mid_block", ch, pos);
    s_norm(sp, "encoder.conv_norm_out", ch);
    s_conv(sp, "encoder.conv_out", 2 * lat, ch, 3, pos);
    s_conv(sp, "quant_conv", 2 * lat, 2 * lat, 1, pos);
    s_conv(sp, "post_quant_conv", lat, lat, 1, pos);
    s_conv(sp, "decoder.conv_in", boc[L - 1], lat, 3, pos);
    s_vae_mid(sp, "decoder.mid_block", boc[L - 1], pos);
    int64_t prev = boc[L - 1];
    for (int i = 0; i < L; i++) {
        int64_t out = boc[L - 1 - i];
        for (int j = 0; j <= lpb; j++) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
            s_resnet(sp, n, j == 0 ? prev : out, out, 0, pos);
        }
        if (i < L - 1) {
            pos *= 4;
            snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            s_conv(sp, n, out, out, 3, pos);
        }
        prev = out;
    }
    s_norm(sp, "decoder.conv_norm_out", boc[0]);
    s_conv(sp, "decoder.conv_out", c->out_channels, boc[0], 3, pos);
}

/* CLIPTextModel / CLIPTextModelWithProjection (projection_dim > 0) on `len` tokens. */
void rmodel_clip_specs(rmodel_specs_t *sp, const sdx_clip_config_t *c, double len)
{
    const int64_t H = c->hidden_size, I = c->intermediate_size;
    int64_t tok[2] = {c->vocab_size, H}, pe[2] = {c->max_position_embeddings, H};
    char n[RMODEL_NAME_MAX];
    s_add(sp, RMODEL_RAND, 0.02, 0, 2, tok, "text_model.embeddings.token_embedding.weight");
    s_add(sp, RMODEL_RAND, 0.01, 0, 2, pe, "text_model.embeddings.position_embedding.weight");
    static const char *proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char p[RMODEL_NAME_MAX];
        snprintf(p, sizeof p, "text_model.encoder.layers.%d", l);
        s_sub(n, p, "layer_norm1"), s_norm(sp, n, H);
        for (int i = 0; i < 4; i++) {
            char leaf[32];
            snprintf(leaf, sizeof leaf, "self_attn.%s", proj[i]);
            s_sub(n, p, leaf), s_linear(sp, n, H, H, true, len);
        }
        s_sub(n, p, "self_attn"), s_attn_flops(sp, n, len, len, (double)H);
        s_sub(n, p, "layer_norm2"), s_norm(sp, n, H);
        s_sub(n, p, "mlp.fc1"), s_linear(sp, n, I, H, true, len);
        s_sub(n, p, "mlp.fc2"), s_linear(sp, n, H, I, true, len);
    }
    s_norm(sp, "text_model.final_layer_norm", H);
    if (c->projection_dim > 0)
        s_linear(sp, "text_projection", c->projection_dim, H, false, 1);
}

/* FLOPs per sample of the entries whose name starts with one of `prefixes`
   (NULL-terminated; NULL: all). */
double rmodel_flops(const rmodel_specs_t *sp, const char *const *prefixes)
{
    double f = 0;
    for (size_t i = 0; i < sp->n; i++) {
        bool take = !prefixes;
        for (size_t k = 0; prefixes && prefixes[k] && !take; k++)
            take = strncmp(sp->v[i].name, prefixes[k], strlen(prefixes[k])) == 0;
        if (take)
            f += sp->v[i].flops;
    }
    return f;
}

int64_t rmodel_params(const rmodel_specs_t *sp)
{
    int64_t n = 0;
    for (size_t i = 0; i < sp->n; i++)
        n += s_numel(&sp->v[i]);
    return n;
}
/* The real configs of stabilityai/stable-diffusion-xl-base-1.0 (diffusers
   layout), verbatim values. */
/* clang-format off */
static const char s_base_model_index[] =
    "{\n"
    "  \"_class_name\": \"StableDiffusionXLPipeline\",\n"
    "  \"_diffusers_version\": \"0.19.0.dev0\",\n"
    "  \"force_zeros_for_empty_prompt\": true,\n"
    "  \"add_watermarker\": null,\n"
    "  \"scheduler\": [\"diffusers\", \"EulerDiscreteScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"tokenizer_2\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n"
    "}\n";

static const char s_base_scheduler[] =
    "{\n"
    "  \"_class_name\": \"EulerDiscreteScheduler\",\n"
    "  \"_diffusers_version\": \"0.19.0.dev0\",\n"
    "  \"beta_end\": 0.012,\n"
    "  \"beta_schedule\": \"scaled_linear\",\n"
    "  \"beta_start\": 0.00085,\n"
    "  \"clip_sample\": false,\n"
    "  \"interpolation_type\": \"linear\",\n"
    "  \"num_train_timesteps\": 1000,\n"
    "  \"prediction_type\": \"epsilon\",\n"
    "  \"sample_max_value\": 1.0,\n"
    "  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n"
    "  \"steps_offset\": 1,\n"
    "  \"timestep_spacing\": \"leading\",\n"
    "  \"trained_betas\": null,\n"
    "  \"use_karras_sigmas\": false\n"
    "}\n";

static const char s_base_unet[] =
    "{\n"
    "  \"_class_name\": \"UNet2DConditionModel\",\n"
    "  \"_diffusers_version\": \"0.19.0.dev0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"addition_embed_type\": \"text_time\",\n"
    "  \"addition_embed_type_num_heads\": 64,\n"
    "  \"addition_time_embed_dim\": 256,\n"
    "  \"attention_head_dim\": [5, 10, 20],\n"
    "  \"block_out_channels\": [320, 640, 1280],\n"
    "  \"center_input_sample\": false,\n"
    "  \"class_embed_type\": null,\n"
    "  \"class_embeddings_concat\": false,\n"
    "  \"conv_in_kernel\": 3,\n"
    "  \"conv_out_kernel\": 3,\n"
    "  \"cross_attention_dim\": 2048,\n"
    "  \"cross_attention_norm\": null,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n"
    "  \"dual_cross_attention\": false,\n"
    "  \"encoder_hid_dim\": null,\n"
    "  \"encoder_hid_dim_type\": null,\n"
    "  \"flip_sin_to_cos\": true,\n"
    "  \"freq_shift\": 0,\n"
    "  \"in_channels\": 4,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_only_cross_attention\": null,\n"
    "  \"mid_block_scale_factor\": 1,\n"
    "  \"mid_block_type\": \"UNetMidBlock2DCrossAttn\",\n"
    "  \"norm_eps\": 1e-05,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"num_attention_heads\": null,\n"
    "  \"num_class_embeds\": null,\n"
    "  \"only_cross_attention\": false,\n"
    "  \"out_channels\": 4,\n"
    "  \"projection_class_embeddings_input_dim\": 2816,\n"
    "  \"resnet_out_scale_factor\": 1.0,\n"
    "  \"resnet_skip_time_act\": false,\n"
    "  \"resnet_time_scale_shift\": \"default\",\n"
    "  \"sample_size\": 128,\n"
    "  \"time_cond_proj_dim\": null,\n"
    "  \"time_embedding_act_fn\": null,\n"
    "  \"time_embedding_dim\": null,\n"
    "  \"time_embedding_type\": \"positional\",\n"
    "  \"timestep_post_act\": null,\n"
    "  \"transformer_layers_per_block\": [1, 2, 10],\n"
    "  \"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"],\n"
    "  \"upcast_attention\": null,\n"
    "  \"use_linear_projection\": true\n"
    "}\n";

static const char s_base_vae[] =
    "{\n"
    "  \"_class_name\": \"AutoencoderKL\",\n"
    "  \"_diffusers_version\": \"0.20.0.dev0\",\n"
    "  \"_name_or_path\": \"../sdxl-vae/\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"block_out_channels\": [128, 256, 512, 512],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n"
    "  \"force_upcast\": true,\n"
    "  \"in_channels\": 3,\n"
    "  \"latent_channels\": 4,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 3,\n"
    "  \"sample_size\": 1024,\n"
    "  \"scaling_factor\": 0.13025,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n"
    "}\n";

static const char s_base_te1[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModel\"],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"dropout\": 0.0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"quick_gelu\",\n"
    "  \"hidden_size\": 768,\n"
    "  \"initializer_factor\": 1.0,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 3072,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 12,\n"
    "  \"num_hidden_layers\": 12,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 768,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"transformers_version\": \"4.32.0.dev0\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";

static const char s_base_te2[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModelWithProjection\"],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"dropout\": 0.0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"gelu\",\n"
    "  \"hidden_size\": 1280,\n"
    "  \"initializer_factor\": 1.0,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 5120,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 20,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 1280,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"transformers_version\": \"4.32.0.dev0\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";


/* The tiny configuration: that of ../shared/golden/model (its README gives
   it), so a fresh clone runs the same shapes as the golden tests. */
static const char s_tiny_model_index[] =
    "{\n"
    "  \"_class_name\": \"StableDiffusionXLPipeline\",\n"
    "  \"force_zeros_for_empty_prompt\": true,\n"
    "  \"scheduler\": [\"diffusers\", \"EulerDiscreteScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"tokenizer_2\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n"
    "}\n";

static const char s_tiny_unet[] =
    "{\n"
    "  \"_class_name\": \"UNet2DConditionModel\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"addition_embed_type\": \"text_time\",\n"
    "  \"addition_time_embed_dim\": 8,\n"
    "  \"attention_head_dim\": [1, 2, 4],\n"
    "  \"block_out_channels\": [16, 24, 32],\n"
    "  \"cross_attention_dim\": 40,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"],\n"
    "  \"flip_sin_to_cos\": true,\n"
    "  \"freq_shift\": 0,\n"
    "  \"in_channels\": 4,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_type\": \"UNetMidBlock2DCrossAttn\",\n"
    "  \"norm_eps\": 1e-05,\n"
    "  \"norm_num_groups\": 8,\n"
    "  \"out_channels\": 4,\n"
    "  \"projection_class_embeddings_input_dim\": 68,\n"
    "  \"sample_size\": 16,\n"
    "  \"transformer_layers_per_block\": [1, 1, 2],\n"
    "  \"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"],\n"
    "  \"upcast_attention\": false,\n"
    "  \"use_linear_projection\": true\n"
    "}\n";

static const char s_tiny_vae[] =
    "{\n"
    "  \"_class_name\": \"AutoencoderKL\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"block_out_channels\": [8, 16, 32, 32],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n"
    "  \"force_upcast\": true,\n"
    "  \"in_channels\": 3,\n"
    "  \"latent_channels\": 4,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"norm_num_groups\": 4,\n"
    "  \"out_channels\": 3,\n"
    "  \"sample_size\": 128,\n"
    "  \"scaling_factor\": 0.13025,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n"
    "}\n";

static const char s_tiny_te1[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModel\"],\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"quick_gelu\",\n"
    "  \"hidden_size\": 16,\n"
    "  \"intermediate_size\": 40,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 2,\n"
    "  \"num_hidden_layers\": 5,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 16,\n"
    "  \"torch_dtype\": \"float32\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";

static const char s_tiny_te2[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModelWithProjection\"],\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"gelu\",\n"
    "  \"hidden_size\": 24,\n"
    "  \"intermediate_size\": 56,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 3,\n"
    "  \"num_hidden_layers\": 6,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 20,\n"
    "  \"torch_dtype\": \"float32\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";

/* Tokenizer folders when the engine's own CLIP files are written: the pad
   token is CLIP-L's "<|endoftext|>" for tokenizer/, OpenCLIP bigG's "!"
   for tokenizer_2/ (as in stable-diffusion-xl-base-1.0). */
static const char s_tok_config_fmt[] =
    "{\n"
    "  \"bos_token\": \"<|startoftext|>\",\n"
    "  \"clean_up_tokenization_spaces\": true,\n"
    "  \"eos_token\": \"<|endoftext|>\",\n"
    "  \"errors\": \"replace\",\n"
    "  \"model_max_length\": 77,\n"
    "  \"pad_token\": \"%s\",\n"
    "  \"tokenizer_class\": \"CLIPTokenizer\",\n"
    "  \"unk_token\": \"<|endoftext|>\"\n"
    "}\n";
static const char s_tok_special_fmt[] =
    "{\n"
    "  \"bos_token\": \"<|startoftext|>\",\n"
    "  \"eos_token\": \"<|endoftext|>\",\n"
    "  \"pad_token\": \"%s\",\n"
    "  \"unk_token\": \"<|endoftext|>\"\n"
    "}\n";
/* clang-format on */

typedef struct {
    const char *name, *model_index, *scheduler, *unet, *vae, *te1, *te2;
} s_preset_t;

static const s_preset_t s_presets[] = {
    [RMODEL_TINY] = {"tiny", s_tiny_model_index, s_base_scheduler, s_tiny_unet, s_tiny_vae,
                     s_tiny_te1, s_tiny_te2},
    [RMODEL_SDXL_BASE] = {"sdxl-base", s_base_model_index, s_base_scheduler, s_base_unet,
                          s_base_vae, s_base_te1, s_base_te2},
};

/* The components of a diffusers folder, in the order they are generated
   (smallest first). */
typedef enum { S_TE1, S_TE2, S_VAE, S_UNET } s_comp_t;

static const struct {
    s_comp_t comp;
    const char *dir, *weights;
} s_components[] = {
    {S_TE1, "text_encoder", "model.safetensors"},
    {S_TE2, "text_encoder_2", "model.safetensors"},
    {S_VAE, "vae", "diffusion_pytorch_model.safetensors"},
    {S_UNET, "unet", "diffusion_pytorch_model.safetensors"},
};

static const char *s_component_config(const s_preset_t *p, s_comp_t c)
{
    return c == S_TE1 ? p->te1 : c == S_TE2 ? p->te2 : c == S_VAE ? p->vae : p->unet;
}

/* Specs of one component of the folder `dir` from its config.json (shapes
   for a 1024x1024 image; sizes do not depend on it). */
static int s_component_specs(const char *dir, s_comp_t comp, rmodel_specs_t *sp)
{
    char path[SDX_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/config.json", dir, s_components[comp].dir);
    switch (comp) {
    case S_UNET: {
        sdx_unet_config_t c;
        sdx_unet_config_sdxl(&c, false);
        if (sdx_unet_config_read(&c, path) != 0)
            return -1;
        rmodel_unet_specs(sp, &c, 128, 128, 77);
        break;
    }
    case S_VAE: {
        sdx_vae_config_t c;
        sdx_vae_config_sdxl(&c);
        if (sdx_vae_config_read(&c, path) != 0)
            return -1;
        rmodel_vae_specs(sp, &c, 1024, 1024);
        break;
    }
    case S_TE1:
    case S_TE2: {
        sdx_clip_config_t c;
        sdx_clip_config_sdxl(&c, comp == S_TE2 ? 2 : 1);
        if (sdx_clip_config_read(&c, path) != 0)
            return -1;
        rmodel_clip_specs(sp, &c, c.max_position_embeddings);
        break;
    }
    }
    return sp->oom ? sdx_set_error("out of memory") : 0;
}

/* One random pool per (init, std): weights are windows into it. */
typedef struct {
    rmodel_init_t init;
    double std;
    int64_t need;
    sdx_tensor_t *t;
} s_pool_t;

#define S_MAX_POOLS 128

/* Materialise the specs as views into seeded pools and write them to `path`
   in dtype `dt`. Peak memory: the pools (the largest tensor per std), not
   the component. */
static int s_write_component(const rmodel_specs_t *sp, const char *path, sdx_dtype_t dt,
                             uint64_t seed, double *pool_mb)
{
    s_pool_t pools[S_MAX_POOLS];
    int npools = 0, rc = -1;
    size_t nt = 0;
    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *g = sdx_generator_new(seed);
    const char **names = calloc(sp->n, sizeof *names);
    sdx_tensor_t **ts = calloc(sp->n, sizeof *ts);
    int *which = calloc(sp->n, sizeof *which);
    if (!S || !g || !names || !ts || !which) {
        sdx_set_error("out of memory");
        goto fail;
    }
    for (size_t i = 0; i < sp->n; i++) {
        const rmodel_spec_t *s = &sp->v[i];
        which[i] = -1;
        if (s->init == RMODEL_FLOPS_ONLY)
            continue;
        double std = s->init == RMODEL_RAND ? s->std : 0;
        int k = 0;
        while (k < npools && !(pools[k].init == s->init && pools[k].std == std))
            k++;
        if (k == npools) {
            if (npools == S_MAX_POOLS) {
                sdx_set_error("more than %d distinct weight scales", S_MAX_POOLS);
                goto fail;
            }
            pools[npools++] = (s_pool_t){s->init, std, 0, NULL};
        }
        if (s_numel(s) > pools[k].need)
            pools[k].need = s_numel(s);
        which[i] = k;
    }
    *pool_mb = 0;
    for (int k = 0; k < npools; k++) {
        /* a little slack so that equal-sized tensors get different windows */
        int64_t n = pools[k].need + pools[k].need / 8 + 1;
        if (pools[k].init == RMODEL_RAND) {
            SDX_TRY(sdx_randn(S, &pools[k].t, g, &n, 1, dt, (sdx_device_t){SDX_CPU, 0}));
            SDX_TRY(sdx_mul_scalar_(pools[k].t, pools[k].std));
        } else {
            SDX_TRY(sdx_full(S, &pools[k].t, &n, 1, pools[k].init == RMODEL_ONES ? 1.0 : 0.0, dt,
                             (sdx_device_t){SDX_CPU, 0}));
        }
        pools[k].need = n;
        *pool_mb += n * (double)sdx_dtype_size(dt) / (1 << 20);
    }
    uint64_t rng = seed ^ 0x5d5e1u;
    for (size_t i = 0; i < sp->n; i++) {
        const rmodel_spec_t *s = &sp->v[i];
        if (which[i] < 0)
            continue;
        const s_pool_t *p = &pools[which[i]];
        int64_t numel = s_numel(s), room = p->need - numel + 1;
        int64_t off = p->init == RMODEL_RAND ? (int64_t)(s_rng_next(&rng) % (uint64_t)room) : 0;
        sdx_tensor_t *t;
        SDX_TRY(sdx_narrow(S, &t, p->t, 0, off, numel));
        SDX_TRY(sdx_view(S, &t, t, s->shape, s->ndim));
        names[nt] = s->name;
        ts[nt++] = t;
    }
    char seed_text[32];
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
    const char *meta[] = {
        "format", "pt",      "sdxl-fleet", "random weights (bench-engine make-random)",
        "seed",   seed_text, NULL};
    SDX_TRY(sdx_safetensors_write(path, names, ts, nt, meta));
    rc = 0;
fail:
    free(names);
    free(ts);
    free(which);
    sdx_generator_free(&g);
    sdx_scope_free(&S);
    return rc;
}

/* FNV-1a of the component and tensor name, mixed into the seed: the
   stream of one tensor. */
static uint64_t s_tensor_stream(uint64_t seed, const char *comp, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    const char *parts[2] = {comp, name};
    for (int i = 0; i < 2; i++) {
        for (const unsigned char *c = (const unsigned char *)parts[i]; *c; c++)
            h = (h ^ *c) * 0x100000001b3ull;
        h = (h ^ '/') * 0x100000001b3ull;
    }
    uint64_t s = seed ^ h;
    return s_rng_next(&s);
}

static void s_release(void *ctx)
{
    free(ctx);
}

/* Every spec as its own tensor, values uniform in +-std*sqrt(3) from the
   tensor's SplitMix64 stream (float32 computed, then converted to dt):
   byte-identical on every machine. For small models (all tensors are in
   memory at once). */
static int s_write_independent(const rmodel_specs_t *sp, const char *comp, const char *path,
                               sdx_dtype_t dt, uint64_t seed)
{
    int rc = -1;
    size_t nt = 0;
    sdx_scope_t *S = sdx_scope_new();
    const char **names = calloc(sp->n ? sp->n : 1, sizeof *names);
    sdx_tensor_t **ts = calloc(sp->n ? sp->n : 1, sizeof *ts);
    if (!S || !names || !ts) {
        sdx_set_error("out of memory");
        goto fail;
    }
    for (size_t i = 0; i < sp->n; i++) {
        const rmodel_spec_t *s = &sp->v[i];
        if (s->init == RMODEL_FLOPS_ONLY)
            continue;
        int64_t numel = s_numel(s);
        float *v = malloc((size_t)(numel ? numel : 1) * sizeof *v);
        if (!v) {
            sdx_set_error("out of memory");
            goto fail;
        }
        uint64_t st = s_tensor_stream(seed, comp, s->name);
        double bound = s->std * sqrt(3.0);
        for (int64_t k = 0; k < numel; k++) {
            if (s->init == RMODEL_RAND) {
                double u = (double)(s_rng_next(&st) >> 11) * 0x1.0p-53; /* [0, 1) */
                v[k] = (float)((2.0 * u - 1.0) * bound);
            } else {
                v[k] = s->init == RMODEL_ONES ? 1.0f : 0.0f;
            }
        }
        sdx_tensor_t *t;
        if (sdx_from_blob(S, &t, v, SDX_F32, s->shape, s->ndim, s_release, v) != 0) {
            free(v);
            goto fail;
        }
        if (dt != SDX_F32)
            SDX_TRY(sdx_to_dtype(S, &t, t, dt));
        names[nt] = s->name;
        ts[nt++] = t;
    }
    char seed_text[32];
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
    const char *meta[] = {"format", "pt",      "sdxl-fleet", "random weights (sdxl-gen make-tiny)",
                          "seed",   seed_text, NULL};
    SDX_TRY(sdx_safetensors_write(path, names, ts, nt, meta));
    rc = 0;
fail:
    free(names);
    free(ts);
    sdx_scope_free(&S);
    return rc;
}

extern const char sdx_clip_vocab_json[], sdx_clip_merges_txt[];

/* tokenizer/ and tokenizer_2/ of `dir`: links into o->tokenizers, or the
   engine's built-in CLIP BPE files. */
static int s_write_tokenizers(const char *dir, const rmodel_opts_t *o)
{
    static const char *toks[] = {"tokenizer", "tokenizer_2"};
    static const char *pads[] = {"<|endoftext|>", "!"};
    char path[SDX_PATH_MAX], text[1024];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, toks[i]);
        if (o->tokenizers) {
            char src[SDX_PATH_MAX];
            snprintf(src, sizeof src, "%s/%s", o->tokenizers, toks[i]);
            struct stat st;
            if (stat(src, &st) != 0 || !S_ISDIR(st.st_mode))
                return sdx_set_error("%s: no tokenizer folder (give --tokenizers DIR holding "
                                     "tokenizer/ and tokenizer_2/)",
                                     src);
            unlink(path);
            if (symlink(src, path) != 0)
                return sdx_set_error("%s: cannot link to %s: %s", path, src, strerror(errno));
            continue;
        }
        /* a link left by an earlier --tokenizers run goes: never write through it */
        struct stat lst;
        if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode) && unlink(path) != 0)
            return sdx_set_error("%s: cannot remove the old link: %s", path, strerror(errno));
        if (s_mkdirs(path) != 0 || s_write_text(path, "vocab.json", sdx_clip_vocab_json) != 0 ||
            s_write_text(path, "merges.txt", sdx_clip_merges_txt) != 0)
            return -1;
        snprintf(text, sizeof text, s_tok_config_fmt, pads[i]);
        if (s_write_text(path, "tokenizer_config.json", text) != 0)
            return -1;
        snprintf(text, sizeof text, s_tok_special_fmt, pads[i]);
        if (s_write_text(path, "special_tokens_map.json", text) != 0)
            return -1;
    }
    return 0;
}

int rmodel_write(const char *dir, const rmodel_opts_t *o, bool force, bool *cached)
{
    if (o->preset != RMODEL_TINY && o->preset != RMODEL_SDXL_BASE)
        return sdx_set_error("unknown random model preset %d", (int)o->preset);
    const s_preset_t *p = &s_presets[o->preset];
    char path[SDX_PATH_MAX], stamp[128];
    snprintf(stamp, sizeof stamp, "%s random seed=%llu dtype=%s\n", p->name,
             (unsigned long long)o->seed, sdx_dtype_name(o->dtype));
    snprintf(path, sizeof path, "%s/.complete", dir);
    char *have = s_read_small(path);
    bool same = have && strcmp(have, stamp) == 0;
    free(have);
    if (cached)
        *cached = same && !force;
    if (same && !force)
        return 0;
    unlink(path);
    if (s_mkdirs(dir) != 0 || s_write_text(dir, "model_index.json", p->model_index) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/scheduler", dir);
    if (s_mkdirs(path) != 0 || s_write_text(path, "scheduler_config.json", p->scheduler) != 0)
        return -1;
    if (s_write_text(dir, "README.txt",
                     "Random-weight SDXL pipeline (diffusers layout) written by sdxl-fleet\n"
                     "(sdxl-gen make-tiny, or bench-engine make-random for the full-size\n"
                     "shapes). The images it makes are noise. Safe to delete.\n") != 0 ||
        s_write_tokenizers(dir, o) != 0)
        return -1;
    for (size_t c = 0; c < sizeof s_components / sizeof s_components[0]; c++) {
        double t0 = s_now_ms(), pool_mb = 0;
        snprintf(path, sizeof path, "%s/%s", dir, s_components[c].dir);
        if (s_mkdirs(path) != 0 ||
            s_write_text(path, "config.json", s_component_config(p, s_components[c].comp)) != 0)
            return -1;
        rmodel_specs_t sp = {0};
        if (s_component_specs(dir, s_components[c].comp, &sp) != 0) {
            free(sp.v);
            return -1;
        }
        snprintf(path, sizeof path, "%s/%s/%s", dir, s_components[c].dir, s_components[c].weights);
        int rc = o->preset == RMODEL_TINY
                     ? s_write_independent(&sp, s_components[c].dir, path, o->dtype, o->seed)
                     : s_write_component(&sp, path, o->dtype, o->seed + c, &pool_mb);
        int64_t params = rmodel_params(&sp);
        free(sp.v);
        if (rc != 0)
            return -1;
        if (!o->quiet)
            fprintf(stderr, "random model: wrote %s/%s: %.2f M params, %.3f GB, %.1f s\n",
                    s_components[c].dir, s_components[c].weights, params / 1e6,
                    params * (double)sdx_dtype_size(o->dtype) / 1e9, (s_now_ms() - t0) / 1e3);
    }
    return s_write_text(dir, ".complete", stamp);
}

int rmodel_list_shapes(const char *dir, FILE *out)
{
    for (size_t c = 0; c < sizeof s_components / sizeof s_components[0]; c++) {
        rmodel_specs_t sp = {0};
        if (s_component_specs(dir, s_components[c].comp, &sp) != 0) {
            free(sp.v);
            return -1;
        }
        for (size_t i = 0; i < sp.n; i++) {
            if (sp.v[i].init == RMODEL_FLOPS_ONLY)
                continue;
            fprintf(out, "%s %s [", s_components[c].dir, sp.v[i].name);
            for (int d = 0; d < sp.v[i].ndim; d++)
                fprintf(out, d ? ", %lld" : "%lld", (long long)sp.v[i].shape[d]);
            fprintf(out, "]\n");
        }
        free(sp.v);
    }
    return 0;
}

int rmodel_check_shapes(const char *dir, FILE *out)
{
    int bad = 0;
    for (size_t c = 0; c < sizeof s_components / sizeof s_components[0]; c++) {
        char path[SDX_PATH_MAX];
        rmodel_specs_t sp = {0};
        snprintf(path, sizeof path, "%s/%s/%s", dir, s_components[c].dir, s_components[c].weights);
        sdx_safetensors_t *st = NULL;
        if (s_component_specs(dir, s_components[c].comp, &sp) != 0 ||
            !(st = sdx_safetensors_open(path))) {
            free(sp.v);
            return -1;
        }
        size_t derived = 0, mismatched = 0;
        for (size_t i = 0; i < sp.n; i++) {
            const rmodel_spec_t *s = &sp.v[i];
            if (s->init == RMODEL_FLOPS_ONLY)
                continue;
            derived++;
            const sdx_st_tensor_t *t = sdx_safetensors_find(st, s->name);
            bool same = t && t->ndim == s->ndim;
            for (int d = 0; same && d < s->ndim; d++)
                same = t->shape[d] == s->shape[d];
            if (!same && mismatched++ < 5)
                fprintf(out, "  %s: %s %s\n", s_components[c].dir, s->name,
                        t ? "has another shape in the file" : "is not in the file");
        }
        size_t in_file = sdx_safetensors_count(st);
        fprintf(out, "%-15s derived %5zu tensors, file %5zu, mismatched %zu\n", s_components[c].dir,
                derived, in_file, mismatched);
        bad += mismatched > 0 || in_file != derived;
        sdx_safetensors_close(&st);
        free(sp.v);
    }
    return bad;
}
