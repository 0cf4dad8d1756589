/*  sdx_taesd.c - AutoencoderTiny's decoder (see sdx_taesd.h). Not for: the
    loop's preview schedule (sdx_pipeline.c), image encoding. */
#include "sdx_taesd.h"

#include "sdx_model.h"
#include "sdx_nn.h"
#include "sdx_safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_LEVELS 8
#define MAX_BLOCKS 8 /* per level */

typedef struct {
    sdx_nn_conv_t c0, c2, c4;
    sdx_nn_conv_t skip; /* w NULL: identity */
} s_block_t;

struct sdx_taesd {
    char path[SDX_PATH_MAX];
    int latent_ch, out_ch, factor, nlevels;
    int ch[MAX_LEVELS], nblocks[MAX_LEVELS];
    sdx_weights_t *w; /* owned */
    sdx_nn_conv_t conv_in;
    s_block_t blocks[MAX_LEVELS][MAX_BLOCKS];
    sdx_nn_conv_t level_conv[MAX_LEVELS]; /* after the blocks (upsample before it but last) */
    sdx_dtype_t dt;
    sdx_device_t dev;
};

static bool s_is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int s_int_array(const cJSON *j, const char *key, int *out, int *n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!a)
        return 0; /* keep the defaults */
    int k = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    if (k < 1 || k > MAX_LEVELS)
        return sdx_set_error("%s: 1..%d entries wanted", key, MAX_LEVELS);
    for (int i = 0; i < k; i++) {
        const cJSON *v = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(v) || v->valueint < 1)
            return sdx_set_error("%s[%d]: a positive integer wanted", key, i);
        out[i] = v->valueint;
    }
    *n = k;
    return 0;
}

static int s_config(sdx_taesd_t *t, const char *cfg_path)
{
    /* the released taesd / taesdxl */
    t->latent_ch = 4;
    t->out_ch = 3;
    t->factor = 2;
    t->nlevels = 4;
    for (int i = 0; i < 4; i++) {
        t->ch[i] = 64;
        t->nblocks[i] = i == 3 ? 1 : 3;
    }
    if (!cfg_path)
        return 0;
    cJSON *j = sdx_config_read_json(cfg_path);
    if (!j)
        return -1;
    int rc = -1, nch = t->nlevels, nbl = t->nlevels;
    const cJSON *v;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "act_fn");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "relu") != 0)) {
        sdx_set_error("act_fn must be relu");
        goto out;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "latent_channels")) && cJSON_IsNumber(v))
        t->latent_ch = v->valueint;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "out_channels")) && cJSON_IsNumber(v))
        t->out_ch = v->valueint;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "upsampling_scaling_factor")) &&
        cJSON_IsNumber(v))
        t->factor = v->valueint;
    if (s_int_array(j, "decoder_block_out_channels", t->ch, &nch) != 0 ||
        s_int_array(j, "num_decoder_blocks", t->nblocks, &nbl) != 0)
        goto out;
    if (nch != nbl) {
        sdx_set_error("decoder_block_out_channels has %d levels, num_decoder_blocks %d", nch, nbl);
        goto out;
    }
    for (int i = 0; i < nbl; i++)
        if (t->nblocks[i] > MAX_BLOCKS) {
            sdx_set_error("num_decoder_blocks[%d]: at most %d", i, MAX_BLOCKS);
            goto out;
        }
    if (t->latent_ch < 1 || t->out_ch < 1 || t->factor < 1 || t->factor > 8) {
        sdx_set_error("latent_channels, out_channels or upsampling_scaling_factor out of range");
        goto out;
    }
    t->nlevels = nch;
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}

/* The decoder's tensors (decoder.*) of the file, in dt on dev. */
static int s_weights(sdx_taesd_t *t, const char *file)
{
    sdx_safetensors_t *st = sdx_safetensors_open(file);
    if (!st)
        return -1;
    int rc = -1;
    if (!(t->w = sdx_weights_new())) {
        sdx_set_error("out of memory");
        goto out;
    }
    size_t n = sdx_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        const sdx_st_tensor_t *info = sdx_safetensors_at(st, i);
        if (strncmp(info->name, "decoder.", 8) != 0)
            continue;
        sdx_tensor_t *raw = NULL, *x = NULL;
        if (sdx_safetensors_tensor(NULL, &raw, st, info) != 0)
            goto out;
        int r = sdx_to(NULL, &x, raw, t->dt, t->dev);
        sdx_tensor_free(&raw);
        if (r != 0)
            goto out;
        if (sdx_weights_put(t->w, info->name, x) != 0) {
            sdx_tensor_free(&x);
            goto out;
        }
    }
    if (!sdx_weights_has(t->w, "decoder.layers.0.weight")) {
        sdx_set_error("no decoder.layers.0.weight: not an AutoencoderTiny (TAESD) in diffusers "
                      "naming");
        goto out;
    }
    rc = 0;
out:
    sdx_safetensors_close(&st);
    return rc;
}

/* decoder.layers.K.weight without a bias */
static int s_bind_nobias(sdx_nn_binder_t *b, sdx_nn_conv_t *c, int k, int64_t in, int64_t out,
                         int kernel)
{
    int64_t shape[4] = {out, in, kernel, kernel};
    memset(c, 0, sizeof *c);
    c->in = in;
    c->out = out;
    c->kernel = kernel;
    c->stride = 1;
    c->pad = kernel / 2;
    return sdx_nn_bind(b, &c->w, shape, 4, "decoder.layers.%d.weight", k);
}

static int s_bind(sdx_taesd_t *t)
{
    sdx_nn_binder_t b = {.w = t->w, .what = "taesd"};
    char n[96];
    int k = 0;
    if (sdx_nn_bind_conv(&b, &t->conv_in, "decoder.layers.0", t->latent_ch, t->ch[0], 3, 1, 1) !=
        0)
        return -1;
    k = 2; /* 1 is the relu */
    int prev = t->ch[0];
    for (int i = 0; i < t->nlevels; i++) {
        int c = t->ch[i];
        bool last = i == t->nlevels - 1;
        for (int j = 0; j < t->nblocks[i]; j++, k++) {
            s_block_t *bl = &t->blocks[i][j];
            snprintf(n, sizeof n, "decoder.layers.%d.conv.0", k);
            if (sdx_nn_bind_conv(&b, &bl->c0, n, prev, c, 3, 1, 1) != 0)
                return -1;
            snprintf(n, sizeof n, "decoder.layers.%d.conv.2", k);
            if (sdx_nn_bind_conv(&b, &bl->c2, n, c, c, 3, 1, 1) != 0)
                return -1;
            snprintf(n, sizeof n, "decoder.layers.%d.conv.4", k);
            if (sdx_nn_bind_conv(&b, &bl->c4, n, c, c, 3, 1, 1) != 0)
                return -1;
            memset(&bl->skip, 0, sizeof bl->skip);
            if (prev != c) {
                int64_t shape[4] = {c, prev, 1, 1};
                bl->skip.in = prev;
                bl->skip.out = c;
                bl->skip.kernel = 1;
                bl->skip.stride = 1;
                if (sdx_nn_bind(&b, &bl->skip.w, shape, 4, "decoder.layers.%d.skip.weight", k) !=
                    0)
                    return -1;
            }
            prev = c;
        }
        if (!last)
            k++; /* the upsample */
        if (last) {
            snprintf(n, sizeof n, "decoder.layers.%d", k);
            if (sdx_nn_bind_conv(&b, &t->level_conv[i], n, c, t->out_ch, 3, 1, 1) != 0)
                return -1;
        } else if (s_bind_nobias(&b, &t->level_conv[i], k, c, c, 3) != 0) {
            return -1;
        }
        k++;
    }
    return 0;
}

sdx_taesd_t *sdx_taesd_load(const char *path, sdx_dtype_t dt, sdx_device_t dev)
{
    sdx_taesd_t *t = calloc(1, sizeof *t);
    if (!t) {
        sdx_set_error("taesd: out of memory");
        return NULL;
    }
    snprintf(t->path, sizeof t->path, "%s", path);
    t->dt = dt;
    t->dev = dev;
    char cfg[SDX_PATH_MAX + 32], file[SDX_PATH_MAX + 64];
    bool dir = s_is_dir(path);
    snprintf(cfg, sizeof cfg, "%s/config.json", path);
    snprintf(file, sizeof file, dir ? "%s/diffusion_pytorch_model.safetensors" : "%s", path);
    if (s_config(t, dir ? cfg : NULL) != 0 || s_weights(t, file) != 0 || s_bind(t) != 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", sdx_last_error());
        sdx_set_error("taesd: %s: %s", path, why);
        sdx_taesd_free(&t);
        return NULL;
    }
    return t;
}

void sdx_taesd_free(sdx_taesd_t **tp)
{
    if (!tp || !*tp)
        return;
    sdx_weights_free(&(*tp)->w);
    free(*tp);
    *tp = NULL;
}

const char *sdx_taesd_path(const sdx_taesd_t *t)
{
    return t->path;
}

/* AutoencoderTinyBlock: relu(conv(x) + skip(x)) */
static int s_block(sdx_scope_t *T, sdx_tensor_t **out, const s_block_t *b, const sdx_tensor_t *x)
{
    sdx_tensor_t *h, *s = (sdx_tensor_t *)x;
    if (sdx_nn_conv(T, &h, &b->c0, x) != 0 || sdx_relu(T, &h, h) != 0 ||
        sdx_nn_conv(T, &h, &b->c2, h) != 0 || sdx_relu(T, &h, h) != 0 ||
        sdx_nn_conv(T, &h, &b->c4, h) != 0)
        return -1;
    if (b->skip.w && sdx_nn_conv(T, &s, &b->skip, x) != 0)
        return -1;
    if (sdx_add(T, &h, h, s) != 0 || sdx_relu(T, out, h) != 0)
        return -1;
    return 0;
}

int sdx_taesd_decode(const sdx_taesd_t *t, sdx_scope_t *S, sdx_tensor_t **out,
                     const sdx_tensor_t *latents)
{
    sdx_scope_t *T = sdx_scope_new();
    if (!T)
        return -1;
    sdx_tensor_t *x;
    SDX_TRY(sdx_to(T, &x, latents, t->dt, t->dev));
    if (sdx_tensor_ndim(x) != 4 || sdx_tensor_size(x, 1) != t->latent_ch) {
        sdx_set_error("taesd: latents must be [B, %d, h, w]", t->latent_ch);
        goto fail;
    }
    /* clamp: tanh(x / 3) * 3 */
    SDX_TRY(sdx_mul_scalar(T, &x, x, 1.0 / 3.0));
    SDX_TRY(sdx_tanh(T, &x, x));
    SDX_TRY(sdx_mul_scalar(T, &x, x, 3.0));
    SDX_TRY(sdx_nn_conv(T, &x, &t->conv_in, x));
    SDX_TRY(sdx_relu(T, &x, x));
    for (int i = 0; i < t->nlevels; i++) {
        for (int j = 0; j < t->nblocks[i]; j++)
            SDX_TRY(s_block(T, &x, &t->blocks[i][j], x));
        if (i < t->nlevels - 1)
            SDX_TRY(sdx_nn_upsample(T, &x, &t->level_conv[i], x,
                                    t->factor * sdx_tensor_size(x, 2),
                                    t->factor * sdx_tensor_size(x, 3)));
        else
            SDX_TRY(sdx_nn_conv(T, &x, &t->level_conv[i], x));
    }
    /* [0, 1] -> [-1, 1] */
    SDX_TRY(sdx_mul_scalar(T, &x, x, 2.0));
    SDX_TRY(sdx_add_scalar(T, &x, x, -1.0));
    SDX_TRY(sdx_nn_finish(T, S, out, x));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}
