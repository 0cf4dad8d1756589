/*  sdx_config.c - component configs: the real SDXL defaults and readers for
    diffusers/transformers config.json files.

    The defaults are the values of stabilityai/stable-diffusion-xl-base-1.0
    and -refiner-1.0 (unet/, vae/, text_encoder/, text_encoder_2/ config.json;
    the refiner's match sgm's configs/inference/sd_xl_refiner.yaml). Real
    single-file checkpoints carry no config, so these are what they load with.

    Readers are table driven: one row per scalar key. Unknown keys are
    ignored, missing keys keep the value already in the struct, a key of the
    wrong type is an error naming the file and key.
*/
#include "sdx_model.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_CONFIG_MAX_BYTES (4u << 20)

/* ---------------------------------------------------------------- defaults */

void sdx_unet_config_sdxl(sdx_unet_config_t *c, bool refiner)
{
    memset(c, 0, sizeof *c);
    c->in_channels = 4;
    c->out_channels = 4;
    c->layers_per_block = 2;
    c->norm_num_groups = 32;
    c->norm_eps = 1e-5;
    c->addition_time_embed_dim = 256;
    c->flip_sin_to_cos = true;
    c->freq_shift = 0;
    c->use_linear_projection = true;
    c->upcast_attention = false;
    c->time_cond_proj_dim = 0;
    c->sample_size = 128;
    c->mid_block_cross_attn = true;
    if (!refiner) {
        static const int boc[] = {320, 640, 1280}, heads[] = {5, 10, 20}, tl[] = {1, 2, 10};
        static const bool down[] = {false, true, true}, up[] = {true, true, false};
        c->n_levels = 3;
        for (int i = 0; i < 3; i++) {
            c->block_out_channels[i] = boc[i];
            c->heads[i] = heads[i];
            c->transformer_layers[i] = tl[i];
            c->down_cross_attn[i] = down[i];
            c->up_cross_attn[i] = up[i];
        }
        c->mid_transformer_layers = 10;
        c->cross_attention_dim = 2048;
        c->projection_class_embeddings_input_dim = 2816;
    } else {
        static const int boc[] = {384, 768, 1536, 1536}, heads[] = {6, 12, 24, 24};
        static const bool down[] = {false, true, true, false}, up[] = {false, true, true, false};
        c->n_levels = 4;
        for (int i = 0; i < 4; i++) {
            c->block_out_channels[i] = boc[i];
            c->heads[i] = heads[i];
            c->transformer_layers[i] = 4;
            c->down_cross_attn[i] = down[i];
            c->up_cross_attn[i] = up[i];
        }
        c->mid_transformer_layers = 4;
        c->cross_attention_dim = 1280;
        c->projection_class_embeddings_input_dim = 2560;
    }
}

void sdx_vae_config_sdxl(sdx_vae_config_t *c)
{
    static const int boc[] = {128, 256, 512, 512};
    memset(c, 0, sizeof *c);
    c->in_channels = 3;
    c->out_channels = 3;
    c->latent_channels = 4;
    c->n_levels = 4;
    for (int i = 0; i < 4; i++)
        c->block_out_channels[i] = boc[i];
    c->layers_per_block = 2;
    c->norm_num_groups = 32;
    c->scaling_factor = 0.13025;
    c->shift_factor = 0;
    c->force_upcast = true;
    c->sample_size = 1024;
}

void sdx_clip_config_sdxl(sdx_clip_config_t *c, int which)
{
    memset(c, 0, sizeof *c);
    c->vocab_size = 49408;
    c->max_position_embeddings = 77;
    c->layer_norm_eps = 1e-5;
    c->eos_token_id = 2;
    c->pad_token_id = 1;
    if (which == 2) { /* OpenCLIP ViT-bigG-14 text tower */
        c->hidden_size = 1280;
        c->intermediate_size = 5120;
        c->num_hidden_layers = 32;
        c->num_attention_heads = 20;
        c->quick_gelu = false;
        c->projection_dim = 1280;
    } else { /* OpenAI CLIP ViT-L/14 text tower */
        c->hidden_size = 768;
        c->intermediate_size = 3072;
        c->num_hidden_layers = 12;
        c->num_attention_heads = 12;
        c->quick_gelu = true;
        c->projection_dim = 0;
    }
}

/* ---------------------------------------------------------------- reading */

typedef enum {
    S_INT,       /* integer */
    S_INT_NULL0, /* integer, null means 0 */
    S_DOUBLE,    /* number */
    S_DOUBLE_NULL0,
    S_BOOL,       /* true/false */
    S_BOOL_NULL0, /* true/false, null means false */
} s_kind_t;

typedef struct {
    const char *key;
    s_kind_t kind;
    size_t offset;
} s_field_t;

#define F(type, key, kind, member)                                                                 \
    {                                                                                              \
        key, kind, offsetof(type, member)                                                          \
    }

static const s_field_t s_unet_fields[] = {
    F(sdx_unet_config_t, "in_channels", S_INT, in_channels),
    F(sdx_unet_config_t, "out_channels", S_INT, out_channels),
    F(sdx_unet_config_t, "layers_per_block", S_INT, layers_per_block),
    F(sdx_unet_config_t, "cross_attention_dim", S_INT, cross_attention_dim),
    F(sdx_unet_config_t, "norm_num_groups", S_INT, norm_num_groups),
    F(sdx_unet_config_t, "norm_eps", S_DOUBLE, norm_eps),
    F(sdx_unet_config_t, "addition_time_embed_dim", S_INT_NULL0, addition_time_embed_dim),
    F(sdx_unet_config_t, "projection_class_embeddings_input_dim", S_INT_NULL0,
      projection_class_embeddings_input_dim),
    F(sdx_unet_config_t, "flip_sin_to_cos", S_BOOL, flip_sin_to_cos),
    F(sdx_unet_config_t, "freq_shift", S_DOUBLE, freq_shift),
    F(sdx_unet_config_t, "use_linear_projection", S_BOOL_NULL0, use_linear_projection),
    F(sdx_unet_config_t, "upcast_attention", S_BOOL_NULL0, upcast_attention),
    F(sdx_unet_config_t, "time_cond_proj_dim", S_INT_NULL0, time_cond_proj_dim),
    F(sdx_unet_config_t, "sample_size", S_INT_NULL0, sample_size),
};

static const s_field_t s_vae_fields[] = {
    F(sdx_vae_config_t, "in_channels", S_INT, in_channels),
    F(sdx_vae_config_t, "out_channels", S_INT, out_channels),
    F(sdx_vae_config_t, "latent_channels", S_INT, latent_channels),
    F(sdx_vae_config_t, "layers_per_block", S_INT, layers_per_block),
    F(sdx_vae_config_t, "norm_num_groups", S_INT, norm_num_groups),
    F(sdx_vae_config_t, "scaling_factor", S_DOUBLE, scaling_factor),
    F(sdx_vae_config_t, "shift_factor", S_DOUBLE_NULL0, shift_factor),
    F(sdx_vae_config_t, "force_upcast", S_BOOL_NULL0, force_upcast),
    F(sdx_vae_config_t, "sample_size", S_INT_NULL0, sample_size),
};

static const s_field_t s_clip_fields[] = {
    F(sdx_clip_config_t, "vocab_size", S_INT, vocab_size),
    F(sdx_clip_config_t, "hidden_size", S_INT, hidden_size),
    F(sdx_clip_config_t, "intermediate_size", S_INT, intermediate_size),
    F(sdx_clip_config_t, "num_hidden_layers", S_INT, num_hidden_layers),
    F(sdx_clip_config_t, "num_attention_heads", S_INT, num_attention_heads),
    F(sdx_clip_config_t, "max_position_embeddings", S_INT, max_position_embeddings),
    F(sdx_clip_config_t, "layer_norm_eps", S_DOUBLE, layer_norm_eps),
    F(sdx_clip_config_t, "eos_token_id", S_INT, eos_token_id),
    F(sdx_clip_config_t, "pad_token_id", S_INT_NULL0, pad_token_id),
};
#undef F

cJSON *sdx_config_read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        sdx_set_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(S_CONFIG_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, S_CONFIG_MAX_BYTES + 1, f) : 0;
    bool err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        sdx_set_error("%s: cannot read", path);
        return NULL;
    }
    if (n > S_CONFIG_MAX_BYTES) {
        free(buf);
        sdx_set_error("%s: larger than %u bytes, not a config file", path, S_CONFIG_MAX_BYTES);
        return NULL;
    }
    const char *e = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, n, &e, false);
    if (!root || !cJSON_IsObject(root)) {
        long at = root ? 0 : (e && e >= buf && e <= buf + n ? (long)(e - buf) : -1);
        cJSON_Delete(root);
        free(buf);
        sdx_set_error("%s: not a JSON object (parse error near byte %ld)", path, at);
        return NULL;
    }
    free(buf);
    return root;
}

static bool s_json_int(const cJSON *j, int *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (d != (double)(int)d || d < -2147483647.0 || d > 2147483647.0)
        return false;
    *out = (int)d;
    return true;
}

static int s_apply_fields(void *cfg, const s_field_t *fields, size_t n, const cJSON *root,
                          const char *path)
{
    for (size_t i = 0; i < n; i++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, fields[i].key);
        if (!j)
            continue;
        char *p = (char *)cfg + fields[i].offset;
        bool null_ok = fields[i].kind == S_INT_NULL0 || fields[i].kind == S_DOUBLE_NULL0 ||
                       fields[i].kind == S_BOOL_NULL0;
        if (cJSON_IsNull(j) && null_ok) {
            if (fields[i].kind == S_INT_NULL0)
                *(int *)p = 0;
            else if (fields[i].kind == S_DOUBLE_NULL0)
                *(double *)p = 0;
            else
                *(bool *)p = false;
            continue;
        }
        switch (fields[i].kind) {
        case S_INT:
        case S_INT_NULL0:
            if (!s_json_int(j, (int *)p))
                goto malformed;
            break;
        case S_DOUBLE:
        case S_DOUBLE_NULL0:
            if (!cJSON_IsNumber(j))
                goto malformed;
            *(double *)p = j->valuedouble;
            break;
        case S_BOOL:
        case S_BOOL_NULL0:
            if (!cJSON_IsBool(j))
                goto malformed;
            *(bool *)p = cJSON_IsTrue(j);
            break;
        }
        continue;
    malformed:
        return sdx_set_error("%s: '%s' has the wrong type", path, fields[i].key);
    }
    return 0;
}

/* An array of ints (or one int broadcast to n when allow_scalar). Returns
   the count read, 0 if the key is absent or null, -1 on a type error. */
static int s_int_list(const cJSON *root, const char *key, int *out, int max, bool allow_scalar,
                      int broadcast_n, const char *path)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j))
        return 0;
    if (allow_scalar && cJSON_IsNumber(j)) {
        int v;
        if (!s_json_int(j, &v) || v < 0)
            return sdx_set_error("%s: '%s' is not a non-negative integer", path, key);
        for (int i = 0; i < broadcast_n && i < max; i++)
            out[i] = v;
        return broadcast_n;
    }
    if (!cJSON_IsArray(j))
        return sdx_set_error("%s: '%s' must be an array of integers", path, key);
    int n = cJSON_GetArraySize(j);
    if (n < 1 || n > max)
        return sdx_set_error("%s: '%s' has %d entries (1 to %d supported)", path, key, n, max);
    int i = 0;
    for (const cJSON *x = j->child; x; x = x->next, i++)
        if (!s_json_int(x, &out[i]) || out[i] < 0)
            return sdx_set_error("%s: '%s'[%d] is not a non-negative integer", path, key, i);
    return n;
}

/* Block type lists: "CrossAttn..." entries set flags[i]. */
static int s_block_types(const cJSON *root, const char *key, bool *flags, int n_levels,
                         const char *path)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j))
        return 0;
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != n_levels)
        return sdx_set_error("%s: '%s' must list %d block types", path, key, n_levels);
    int i = 0;
    for (const cJSON *x = j->child; x; x = x->next, i++) {
        if (!cJSON_IsString(x))
            return sdx_set_error("%s: '%s'[%d] is not a string", path, key, i);
        const char *s = x->valuestring;
        if (strstr(s, "CrossAttn"))
            flags[i] = true;
        else if (strcmp(s, "DownBlock2D") == 0 || strcmp(s, "UpBlock2D") == 0)
            flags[i] = false;
        else
            return sdx_set_error("%s: block type '%s' is not supported", path, s);
    }
    return 0;
}

static int s_unet_config_apply(sdx_unet_config_t *c, cJSON *root, const char *path);

int sdx_unet_config_read(sdx_unet_config_t *c, const char *path)
{
    cJSON *root = sdx_config_read_json(path);
    if (!root)
        return -1;
    return s_unet_config_apply(c, root, path);
}

int sdx_unet_config_parse(sdx_unet_config_t *c, const char *json, const char *label)
{
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sdx_set_error("%s: not a JSON object", label);
    }
    return s_unet_config_apply(c, root, label);
}

/* Takes ownership of root. */
static int s_unet_config_apply(sdx_unet_config_t *c, cJSON *root, const char *path)
{
    sdx_unet_config_t t = *c; /* written back only on success */
    if (s_apply_fields(&t, s_unet_fields, sizeof s_unet_fields / sizeof s_unet_fields[0], root,
                       path) != 0)
        goto fail;
    int n = s_int_list(root, "block_out_channels", t.block_out_channels, SDX_MAX_LEVELS, false, 0,
                       path);
    if (n < 0)
        goto fail;
    if (n > 0)
        t.n_levels = n;
    if (s_block_types(root, "down_block_types", t.down_cross_attn, t.n_levels, path) != 0 ||
        s_block_types(root, "up_block_types", t.up_cross_attn, t.n_levels, path) != 0)
        goto fail;
    /* diffusers' legacy naming: attention_head_dim holds the number of heads
       unless num_attention_heads is given. */
    int heads[SDX_MAX_LEVELS];
    int nh = s_int_list(root, "num_attention_heads", heads, SDX_MAX_LEVELS, true, t.n_levels, path);
    if (nh < 0)
        goto fail;
    if (nh == 0)
        nh = s_int_list(root, "attention_head_dim", heads, SDX_MAX_LEVELS, true, t.n_levels, path);
    if (nh < 0)
        goto fail;
    if (nh > 0 && nh != t.n_levels) {
        sdx_set_error("%s: %d attention head entries for %d levels", path, nh, t.n_levels);
        goto fail;
    }
    if (nh > 0)
        memcpy(t.heads, heads, sizeof heads);
    int tl[SDX_MAX_LEVELS];
    int nt = s_int_list(root, "transformer_layers_per_block", tl, SDX_MAX_LEVELS, true, t.n_levels,
                        path);
    if (nt < 0)
        goto fail;
    if (nt > 0 && nt != t.n_levels) {
        sdx_set_error("%s: %d transformer_layers_per_block entries for %d levels", path, nt,
                      t.n_levels);
        goto fail;
    }
    if (nt > 0) {
        memcpy(t.transformer_layers, tl, sizeof tl);
        t.mid_transformer_layers = tl[t.n_levels - 1];
    }
    const cJSON *rev =
        cJSON_GetObjectItemCaseSensitive(root, "reverse_transformer_layers_per_block");
    if (rev && !cJSON_IsNull(rev)) {
        /* [[n per up-block transformer] per up level]; this UNet runs one depth
           per level, so accept only a table that is uniform per level and
           mirrors the down path (what every SDXL config that writes it has) */
        bool ok = cJSON_IsArray(rev) && cJSON_GetArraySize(rev) == t.n_levels;
        int lvl = 0;
        for (const cJSON *r = ok ? rev->child : NULL; r && ok; r = r->next, lvl++) {
            int want = t.transformer_layers[t.n_levels - 1 - lvl];
            if (cJSON_IsNumber(r)) {
                ok = (int)r->valuedouble == want;
                continue;
            }
            ok = cJSON_IsArray(r);
            for (const cJSON *x = ok ? r->child : NULL; x && ok; x = x->next)
                ok = cJSON_IsNumber(x) && (int)x->valuedouble == want;
        }
        if (!ok) {
            sdx_set_error("%s: reverse_transformer_layers_per_block differs from the reversed "
                          "transformer_layers_per_block (per-block up depths are not supported)",
                          path);
            goto fail;
        }
    }
    const cJSON *mid = cJSON_GetObjectItemCaseSensitive(root, "mid_block_type");
    if (mid) {
        if (cJSON_IsNull(mid))
            t.mid_block_cross_attn = false;
        else if (cJSON_IsString(mid) && strcmp(mid->valuestring, "UNetMidBlock2DCrossAttn") == 0)
            t.mid_block_cross_attn = true;
        else {
            sdx_set_error("%s: mid_block_type '%s' is not supported", path,
                          cJSON_IsString(mid) ? mid->valuestring : "?");
            goto fail;
        }
    }
    const cJSON *cad = cJSON_GetObjectItemCaseSensitive(root, "cross_attention_dim");
    if (cJSON_IsArray(cad)) { /* per-level list: SDXL uses one value */
        int v[SDX_MAX_LEVELS];
        int k = s_int_list(root, "cross_attention_dim", v, SDX_MAX_LEVELS, false, 0, path);
        if (k < 0)
            goto fail;
        for (int i = 1; i < k; i++)
            if (v[i] != v[0]) {
                sdx_set_error("%s: per-level cross_attention_dim is not supported", path);
                goto fail;
            }
        t.cross_attention_dim = v[0];
    }
    if (t.n_levels < 1 || t.n_levels > SDX_MAX_LEVELS || t.layers_per_block < 1 ||
        t.norm_num_groups < 1) {
        sdx_set_error("%s: implausible UNet config", path);
        goto fail;
    }
    *c = t;
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    return -1;
}

static int s_vae_config_apply(sdx_vae_config_t *c, cJSON *root, const char *path);

int sdx_vae_config_read(sdx_vae_config_t *c, const char *path)
{
    cJSON *root = sdx_config_read_json(path);
    if (!root)
        return -1;
    return s_vae_config_apply(c, root, path);
}

int sdx_vae_config_parse(sdx_vae_config_t *c, const char *json, const char *label)
{
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sdx_set_error("%s: not a JSON object", label);
    }
    return s_vae_config_apply(c, root, label);
}

/* Takes ownership of root. */
static int s_vae_config_apply(sdx_vae_config_t *c, cJSON *root, const char *path)
{
    sdx_vae_config_t t = *c;
    if (s_apply_fields(&t, s_vae_fields, sizeof s_vae_fields / sizeof s_vae_fields[0], root,
                       path) != 0)
        goto fail;
    int n = s_int_list(root, "block_out_channels", t.block_out_channels, SDX_MAX_LEVELS, false, 0,
                       path);
    if (n < 0)
        goto fail;
    if (n > 0)
        t.n_levels = n;
    if (t.n_levels < 1 || t.layers_per_block < 1 || t.norm_num_groups < 1) {
        sdx_set_error("%s: implausible VAE config", path);
        goto fail;
    }
    *c = t;
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    return -1;
}

static int s_clip_config_apply(sdx_clip_config_t *c, cJSON *root, const char *path);

int sdx_clip_config_read(sdx_clip_config_t *c, const char *path)
{
    cJSON *root = sdx_config_read_json(path);
    if (!root)
        return -1;
    return s_clip_config_apply(c, root, path);
}

int sdx_clip_config_parse(sdx_clip_config_t *c, const char *json, const char *label)
{
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sdx_set_error("%s: not a JSON object", label);
    }
    return s_clip_config_apply(c, root, label);
}

/* Takes ownership of root. */
static int s_clip_config_apply(sdx_clip_config_t *c, cJSON *root, const char *path)
{
    sdx_clip_config_t t = *c;
    if (s_apply_fields(&t, s_clip_fields, sizeof s_clip_fields / sizeof s_clip_fields[0], root,
                       path) != 0)
        goto fail;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act) {
        if (cJSON_IsString(act) && strcmp(act->valuestring, "quick_gelu") == 0)
            t.quick_gelu = true;
        else if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu") == 0)
            t.quick_gelu = false;
        else {
            sdx_set_error("%s: hidden_act '%s' is not supported (quick_gelu or gelu)", path,
                          cJSON_IsString(act) ? act->valuestring : "?");
            goto fail;
        }
    }
    /* Only CLIPTextModelWithProjection has a text_projection; a plain
       CLIPTextModel's config still carries projection_dim (unused). */
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (cJSON_IsArray(arch)) {
        bool with_proj = false;
        for (const cJSON *x = arch->child; x; x = x->next)
            if (cJSON_IsString(x) && strstr(x->valuestring, "WithProjection"))
                with_proj = true;
        if (with_proj) {
            const cJSON *pd = cJSON_GetObjectItemCaseSensitive(root, "projection_dim");
            if (pd && !s_json_int(pd, &t.projection_dim)) {
                sdx_set_error("%s: 'projection_dim' has the wrong type", path);
                goto fail;
            }
        } else {
            t.projection_dim = 0;
        }
    }
    if (t.hidden_size < 1 || t.num_attention_heads < 1 ||
        t.hidden_size % t.num_attention_heads != 0 || t.num_hidden_layers < 1 || t.vocab_size < 1 ||
        t.max_position_embeddings < 1) {
        sdx_set_error("%s: implausible text encoder config", path);
        goto fail;
    }
    *c = t;
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    return -1;
}
