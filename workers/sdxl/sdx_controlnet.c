/*  sdx_controlnet.c - ControlNetModel (diffusers 0.27.2) over the UNet's
    encoder half; see sdx_controlnet.h. Not for: the denoising loop (the
    pipeline calls sdx_controlnet_forward per step), preprocessors.
*/
#include "sdx_controlnet.h"

#include "sdx_safetensors.h"
#include "sdx_upscale.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_EMB 8   /* conditioning_embedding_out_channels entries */
#define MAX_DOWN 64 /* zero convs (= UNet skips) */

struct sdx_controlnet {
    char path[SDX_PATH_MAX];
    sdx_unet_config_t cfg;
    sdx_weights_t *w; /* owned: every tensor of the file, in dt on dev */
    sdx_unet_t *enc;  /* the encoder half over w */
    int cond_channels;
    int n_emb;
    int emb_ch[MAX_EMB];
    sdx_nn_conv_t emb_in, emb_blocks[2 * (MAX_EMB - 1)], emb_out;
    int n_down;
    sdx_nn_conv_t zero[MAX_DOWN], zero_mid;
};

static bool s_is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool s_is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ControlNet-only config keys; the UNet part is read by sdx_unet_config_read. */
static int s_read_extra(sdx_controlnet_t *c, const char *cfg_path)
{
    cJSON *j = sdx_config_read_json(cfg_path);
    if (!j)
        return -1;
    int rc = -1;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, "conditioning_embedding_out_channels");
    if (cJSON_IsArray(it)) {
        int n = cJSON_GetArraySize(it);
        if (n < 1 || n > MAX_EMB) {
            sdx_set_error("conditioning_embedding_out_channels has %d entries (1..%d)", n, MAX_EMB);
            goto out;
        }
        c->n_emb = n;
        for (int i = 0; i < n; i++)
            c->emb_ch[i] = cJSON_GetArrayItem(it, i)->valueint;
    }
    it = cJSON_GetObjectItemCaseSensitive(j, "conditioning_channels");
    if (cJSON_IsNumber(it))
        c->cond_channels = it->valueint;
    it = cJSON_GetObjectItemCaseSensitive(j, "controlnet_conditioning_channel_order");
    if (cJSON_IsString(it) && strcmp(it->valuestring, "rgb") != 0) {
        sdx_set_error("controlnet_conditioning_channel_order '%s' is not supported (rgb only)",
                      it->valuestring);
        goto out;
    }
    it = cJSON_GetObjectItemCaseSensitive(j, "global_pool_conditions");
    if (cJSON_IsTrue(it)) {
        sdx_set_error("global_pool_conditions is not supported");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}

/* Every tensor of the file, converted to dt on dev, into c->w. */
static int s_read_weights(sdx_controlnet_t *c, const char *file, sdx_dtype_t dt, sdx_device_t dev)
{
    sdx_safetensors_t *st = sdx_safetensors_open(file);
    if (!st)
        return -1;
    int rc = -1;
    if (!(c->w = sdx_weights_new())) {
        sdx_set_error("out of memory");
        goto out;
    }
    size_t n = sdx_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        const sdx_st_tensor_t *info = sdx_safetensors_at(st, i);
        sdx_tensor_t *raw = NULL, *t = NULL;
        if (sdx_safetensors_tensor(NULL, &raw, st, info) != 0)
            goto out;
        int r = sdx_to(NULL, &t, raw, dt, dev);
        sdx_tensor_free(&raw);
        if (r != 0)
            goto out;
        const char *name = info->name;
        if (strncmp(name, "control_model.", 14) == 0) {
            sdx_tensor_free(&t);
            sdx_set_error("SGM/A1111-named ControlNet (control_model.*) is not supported; "
                          "use a diffusers ControlNet");
            goto out;
        }
        if (sdx_weights_put(c->w, name, t) != 0) {
            sdx_tensor_free(&t);
            goto out;
        }
    }
    if (!sdx_weights_has(c->w, "controlnet_cond_embedding.conv_in.weight")) {
        sdx_set_error("no controlnet_cond_embedding.conv_in.weight: not a diffusers ControlNet");
        goto out;
    }
    rc = 0;
out:
    sdx_safetensors_close(&st);
    return rc;
}

static int s_bind(sdx_controlnet_t *c)
{
    sdx_nn_binder_t b = {.w = c->w, .what = "controlnet"};
    char n[128];
    const int *ch = c->cfg.block_out_channels;
    if (sdx_nn_bind_conv(&b, &c->emb_in, "controlnet_cond_embedding.conv_in", c->cond_channels,
                         c->emb_ch[0], 3, 1, 1))
        return -1;
    for (int i = 0; i < c->n_emb - 1; i++) {
        snprintf(n, sizeof n, "controlnet_cond_embedding.blocks.%d", 2 * i);
        if (sdx_nn_bind_conv(&b, &c->emb_blocks[2 * i], n, c->emb_ch[i], c->emb_ch[i], 3, 1, 1))
            return -1;
        snprintf(n, sizeof n, "controlnet_cond_embedding.blocks.%d", 2 * i + 1);
        if (sdx_nn_bind_conv(&b, &c->emb_blocks[2 * i + 1], n, c->emb_ch[i], c->emb_ch[i + 1], 3, 2,
                             1))
            return -1;
    }
    if (sdx_nn_bind_conv(&b, &c->emb_out, "controlnet_cond_embedding.conv_out",
                         c->emb_ch[c->n_emb - 1], ch[0], 3, 1, 1))
        return -1;
    /* zero convs: one per skip, with the skip's channels */
    int k = 0;
    const int L = c->cfg.n_levels, nl = c->cfg.layers_per_block;
    int skip_ch[MAX_DOWN];
    skip_ch[k++] = ch[0];
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < nl && k < MAX_DOWN; j++)
            skip_ch[k++] = ch[i];
        if (i < L - 1 && k < MAX_DOWN)
            skip_ch[k++] = ch[i];
    }
    if (k != c->n_down)
        return sdx_set_error("controlnet: %d skips counted, the encoder has %d", k, c->n_down);
    for (int i = 0; i < k; i++) {
        snprintf(n, sizeof n, "controlnet_down_blocks.%d", i);
        if (sdx_nn_bind_conv(&b, &c->zero[i], n, skip_ch[i], skip_ch[i], 1, 1, 0))
            return -1;
    }
    if (sdx_nn_bind_conv(&b, &c->zero_mid, "controlnet_mid_block", ch[L - 1], ch[L - 1], 1, 1, 0))
        return -1;
    return 0;
}

/* The ControlNet must steer this UNet: same latent channels, levels,
   widths, text conditioning. */
static int s_check_base(const sdx_controlnet_t *c, const sdx_unet_config_t *u)
{
    const sdx_unet_config_t *k = &c->cfg;
    bool ok = k->in_channels == u->in_channels && k->n_levels == u->n_levels &&
              k->layers_per_block == u->layers_per_block &&
              k->cross_attention_dim == u->cross_attention_dim &&
              k->addition_time_embed_dim == u->addition_time_embed_dim &&
              k->projection_class_embeddings_input_dim == u->projection_class_embeddings_input_dim;
    for (int i = 0; ok && i < k->n_levels; i++)
        ok = k->block_out_channels[i] == u->block_out_channels[i];
    if (!ok)
        return sdx_set_error("does not fit the model's UNet (levels %d vs %d, first width %d vs "
                             "%d, cross_attention_dim %d vs %d, add-embedding inputs %d vs %d)",
                             k->n_levels, u->n_levels, k->block_out_channels[0],
                             u->block_out_channels[0], k->cross_attention_dim,
                             u->cross_attention_dim, k->projection_class_embeddings_input_dim,
                             u->projection_class_embeddings_input_dim);
    return 0;
}

sdx_controlnet_t *sdx_controlnet_load(const char *path, const sdx_unet_config_t *base,
                                      sdx_dtype_t dt, sdx_device_t dev)
{
    if (!path || !*path || !base) {
        sdx_set_error("controlnet: no path or base UNet config");
        return NULL;
    }
    sdx_controlnet_t *c = calloc(1, sizeof *c);
    if (!c) {
        sdx_set_error("controlnet: out of memory");
        return NULL;
    }
    snprintf(c->path, sizeof c->path, "%s", path);
    /* diffusers' ControlNetModel defaults */
    static const int dflt[4] = {16, 32, 96, 256};
    c->n_emb = 4;
    memcpy(c->emb_ch, dflt, sizeof dflt);
    c->cond_channels = 3;
    c->cfg = *base;

    char file[SDX_PATH_MAX + 64], cfgp[SDX_PATH_MAX + 64];
    cfgp[0] = 0;
    if (s_is_dir(path)) {
        snprintf(cfgp, sizeof cfgp, "%s/config.json", path);
        snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors", path);
        if (!s_is_file(file))
            snprintf(file, sizeof file, "%s/diffusion_pytorch_model.fp16.safetensors", path);
        if (!s_is_file(cfgp)) {
            sdx_set_error("no config.json");
            goto fail;
        }
    } else {
        snprintf(file, sizeof file, "%s", path);
        const char *slash = strrchr(path, '/');
        int dirlen = slash ? (int)(slash - path) : 0;
        snprintf(cfgp, sizeof cfgp, "%.*s%sconfig.json", dirlen, path, slash ? "/" : "");
        if (!s_is_file(cfgp))
            cfgp[0] = 0;
    }
    if (!s_is_file(file)) {
        sdx_set_error("no such file %s", file);
        goto fail;
    }
    if (cfgp[0] && (sdx_unet_config_read(&c->cfg, cfgp) != 0 || s_read_extra(c, cfgp) != 0))
        goto fail;
    if (s_check_base(c, base) != 0 || s_read_weights(c, file, dt, dev) != 0)
        goto fail;
    if (!(c->enc = sdx_unet_new_encoder(&c->cfg, c->w, "controlnet")))
        goto fail;
    c->n_down = sdx_unet_n_skips(c->enc);
    if (c->n_down > MAX_DOWN) {
        sdx_set_error("%d skips (at most %d)", c->n_down, MAX_DOWN);
        goto fail;
    }
    if (s_bind(c) != 0)
        goto fail;
    return c;
fail : {
    char why[1024];
    snprintf(why, sizeof why, "%s", sdx_last_error());
    sdx_controlnet_free(&c);
    sdx_set_error("controlnet: %s: %s", path, why);
}
    return NULL;
}

void sdx_controlnet_free(sdx_controlnet_t **cp)
{
    if (!cp || !*cp)
        return;
    sdx_unet_free(&(*cp)->enc);
    sdx_weights_free(&(*cp)->w);
    free(*cp);
    *cp = NULL;
}

const char *sdx_controlnet_path(const sdx_controlnet_t *c)
{
    return c->path;
}

int sdx_controlnet_n_down(const sdx_controlnet_t *c)
{
    return c->n_down;
}

/* ControlNetConditioningEmbedding: silu after every conv but the last. */
static int s_embed_cond(const sdx_controlnet_t *c, sdx_scope_t *T, sdx_tensor_t **out,
                        const sdx_tensor_t *cond)
{
    sdx_tensor_t *h;
    SDX_TRY(sdx_to(T, &h, cond, sdx_unet_dtype(c->enc), sdx_unet_device(c->enc)));
    SDX_TRY(sdx_nn_conv(T, &h, &c->emb_in, h));
    SDX_TRY(sdx_silu(T, &h, h));
    for (int i = 0; i < 2 * (c->n_emb - 1); i++) {
        SDX_TRY(sdx_nn_conv(T, &h, &c->emb_blocks[i], h));
        SDX_TRY(sdx_silu(T, &h, h));
    }
    return sdx_nn_conv(T, out, &c->emb_out, h);
fail:
    return -1;
}

int sdx_controlnet_forward(const sdx_controlnet_t *c, sdx_scope_t *S, sdx_tensor_t **down_out,
                           int max_down, sdx_tensor_t **mid_out, const sdx_tensor_t *sample,
                           const sdx_tensor_t *timestep, const sdx_tensor_t *encoder_hidden_states,
                           const sdx_tensor_t *text_embeds, const sdx_tensor_t *time_ids,
                           const sdx_tensor_t *cond, double scale)
{
    if (max_down < c->n_down)
        return sdx_set_error("controlnet: room for %d residuals, it gives %d", max_down, c->n_down);
    if (!cond || !sample || sdx_tensor_ndim(cond) != 4 || sdx_tensor_ndim(sample) != 4 ||
        sdx_tensor_size(cond, 1) != c->cond_channels ||
        sdx_tensor_size(cond, 0) != sdx_tensor_size(sample, 0) ||
        sdx_tensor_size(cond, 2) != 8 * sdx_tensor_size(sample, 2) ||
        sdx_tensor_size(cond, 3) != 8 * sdx_tensor_size(sample, 3))
        return sdx_set_error("controlnet: control image must be [B, %d, 8h, 8w] for latents "
                             "[B, C, h, w]",
                             c->cond_channels);
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *hint, *skips[MAX_DOWN], *mid, *r, *res[MAX_DOWN];
    if (!T)
        return -1;
    SDX_TRY(s_embed_cond(c, T, &hint, cond));
    SDX_TRY(sdx_unet_forward_encoder(c->enc, T, skips, MAX_DOWN, &mid, sample, timestep,
                                     encoder_hidden_states, text_embeds, time_ids, hint));
    for (int k = 0; k < c->n_down; k++) {
        SDX_TRY(sdx_nn_conv(T, &r, &c->zero[k], skips[k]));
        SDX_TRY(sdx_mul_scalar(T, &res[k], r, scale));
    }
    SDX_TRY(sdx_nn_conv(T, &r, &c->zero_mid, mid));
    SDX_TRY(sdx_mul_scalar(T, &mid, r, scale));
    /* hand the results over */
    int k = 0;
    for (; k < c->n_down; k++)
        if (sdx_nn_finish(T, S, &down_out[k], res[k]) != 0)
            goto handover_fail;
    if (sdx_nn_finish(T, S, mid_out, mid) != 0)
        goto handover_fail;
    sdx_scope_free(&T);
    return 0;
handover_fail:
    while (!S && k-- > 0)
        sdx_tensor_free(&down_out[k]);
fail:
    sdx_scope_free(&T);
    return -1;
}

int sdx_controlnet_image(sdx_scope_t *S, sdx_tensor_t **out, const sdx_image_t *img, int w, int h,
                         sdx_dtype_t dt, sdx_device_t dev)
{
    if (!img || !img->pixels || (img->channels != 3 && img->channels != 4) || img->width < 1 ||
        img->height < 1)
        return sdx_set_error("control image: must be an 8-bit RGB or RGBA image");
    sdx_image_t rs = {0};
    const sdx_image_t *src = img;
    if (img->width != w || img->height != h) {
        if (sdx_lanczos_resize(img, w, h, &rs) != 0)
            return -1;
        src = &rs;
    }
    size_t plane = (size_t)w * (size_t)h;
    float *buf = malloc(3 * plane * sizeof *buf);
    if (!buf) {
        sdx_image_clear(&rs);
        return sdx_set_error("control image: out of memory");
    }
    const int C = src->channels;
    for (size_t p = 0; p < plane; p++)
        for (int k = 0; k < 3; k++)
            buf[k * plane + p] = (float)src->pixels[p * (size_t)C + (size_t)k] / 255.0f;
    sdx_image_clear(&rs);
    int64_t shape[4] = {1, 3, h, w};
    sdx_tensor_t *t = NULL;
    int rc = sdx_from_host(NULL, &t, buf, SDX_F32, shape, 4);
    free(buf);
    if (rc != 0)
        return -1;
    rc = sdx_to(S, out, t, dt, dev);
    sdx_tensor_free(&t);
    return rc;
}

double sdx_controlnet_keep(int i, int n, double start, double end)
{
    double a = (double)i / n, b = (double)(i + 1) / n;
    return (a < start || b > end) ? 0.0 : 1.0;
}

int sdx_controlnet_apply(sdx_controlnet_t *const *nets, sdx_tensor_t *const *conds,
                         const double *scales, int n, sdx_scope_t *S, sdx_tensor_t **down_out,
                         int max_down, int *n_down, sdx_tensor_t **mid_out, bool *any,
                         const sdx_tensor_t *sample, const sdx_tensor_t *timestep,
                         const sdx_tensor_t *encoder_hidden_states, const sdx_tensor_t *text_embeds,
                         const sdx_tensor_t *time_ids)
{
    assert(S);
    *any = false;
    for (int i = 0; i < n; i++) {
        if (scales[i] == 0.0)
            continue;
        sdx_tensor_t *down[MAX_DOWN], *mid;
        const sdx_controlnet_t *c = nets[i];
        if (*any && c->n_down != *n_down)
            return sdx_set_error("controlnet: %s gives %d residuals, %s %d", c->path, c->n_down,
                                 nets[0]->path, *n_down);
        if (sdx_controlnet_forward(c, S, down, MAX_DOWN, &mid, sample, timestep,
                                   encoder_hidden_states, text_embeds, time_ids, conds[i],
                                   scales[i]) != 0)
            return -1;
        if (!*any) {
            if (c->n_down > max_down)
                return sdx_set_error("controlnet: room for %d residuals", max_down);
            memcpy(down_out, down, (size_t)c->n_down * sizeof *down);
            *mid_out = mid;
            *n_down = c->n_down;
            *any = true;
            continue;
        }
        for (int k = 0; k < c->n_down; k++)
            if (sdx_add(S, &down_out[k], down_out[k], down[k]) != 0)
                return -1;
        if (sdx_add(S, mid_out, *mid_out, mid) != 0)
            return -1;
    }
    return 0;
}
