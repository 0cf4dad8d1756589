/*  sdx_namemap.c - static tables from single-file (SGM / A1111) checkpoint
    keys to diffusers names; the inverse of diffusers'
    scripts/convert_diffusers_to_original_sdxl.py.

    A row is (single-file pattern, diffusers format, index rule, flags).
    Patterns match literally except "{}", which matches a decimal number;
    whatever follows the pattern is appended to the diffusers name (after the
    resnet inner renames for rows marked S_RESNET). A new weight name is one
    new row. Not for: touching tensors (sdx_model.c applies the ops).
*/
#include "sdx_namemap.h"

#include "sdx_torch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- rows */

typedef enum {
    I_NONE = 0,   /* no numbers in the diffusers name */
    I_SAME,       /* numbers copied in order */
    I_DOWN,       /* input_blocks.B -> down_blocks.i.{resnets,attentions}.j */
    I_DOWNSAMPLE, /* input_blocks.B.0.op -> down_blocks.i.downsamplers.0 */
    I_UP,         /* output_blocks.B -> up_blocks.i.{resnets,attentions}.j */
    I_UP_BLOCK,   /* output_blocks.B.k.conv -> up_blocks.i.upsamplers.0 */
    I_VAE_REV,    /* decoder.up.k -> decoder.up_blocks.(n-1-k) (ldm counts bottom-up) */
    I_VAE_REV_J,  /* decoder.up.k.block.j -> up_blocks.(n-1-k).resnets.j */
} s_index_t;

enum {
    S_EXACT = 1 << 0,   /* the whole key must match (no suffix) */
    S_RESNET = 1 << 1,  /* apply the resnet inner renames to the suffix */
    S_VRESNET = 1 << 2, /* ldm VAE resnet: nin_shortcut -> conv_shortcut */
    S_SKIP = 1 << 3,    /* known, not a weight */
    S_SPLIT3 = 1 << 4,  /* fused q,k,v rows -> three targets (fmt has one %s) */
    S_TRANSPOSE = 1 << 5,
    S_CONV1X1 = 1 << 6, /* 1x1 conv weight -> Linear weight */
};

typedef struct {
    const char *pattern;
    const char *fmt; /* printf format of the diffusers name (%d from the index rule) */
    s_index_t index;
    unsigned flags;
} s_row_t;

/* UNet (model.diffusion_model.*). Order matters: first match wins. */
static const s_row_t s_unet_rows[] = {
    {"time_embed.0.", "time_embedding.linear_1.", I_NONE, 0},
    {"time_embed.2.", "time_embedding.linear_2.", I_NONE, 0},
    {"label_emb.0.0.", "add_embedding.linear_1.", I_NONE, 0},
    {"label_emb.0.2.", "add_embedding.linear_2.", I_NONE, 0},
    {"input_blocks.0.0.", "conv_in.", I_NONE, 0},
    {"input_blocks.{}.0.op.", "down_blocks.%d.downsamplers.0.conv.", I_DOWNSAMPLE, 0},
    {"input_blocks.{}.0.", "down_blocks.%d.resnets.%d.", I_DOWN, S_RESNET},
    {"input_blocks.{}.1.", "down_blocks.%d.attentions.%d.", I_DOWN, 0},
    {"middle_block.0.", "mid_block.resnets.0.", I_NONE, S_RESNET},
    {"middle_block.1.", "mid_block.attentions.0.", I_NONE, 0},
    {"middle_block.2.", "mid_block.resnets.1.", I_NONE, S_RESNET},
    {"output_blocks.{}.0.", "up_blocks.%d.resnets.%d.", I_UP, S_RESNET},
    /* The upsampler is module 1 of an up block without attention, else 2. */
    {"output_blocks.{}.1.conv.", "up_blocks.%d.upsamplers.0.conv.", I_UP_BLOCK, 0},
    {"output_blocks.{}.1.", "up_blocks.%d.attentions.%d.", I_UP, 0},
    {"output_blocks.{}.2.conv.", "up_blocks.%d.upsamplers.0.conv.", I_UP_BLOCK, 0},
    {"out.0.", "conv_norm_out.", I_NONE, 0},
    {"out.2.", "conv_out.", I_NONE, 0},
};

/* Inside a UNet resnet (ResBlock -> ResnetBlock2D). */
static const struct {
    const char *sgm, *diffusers;
} s_resnet_inner[] = {
    {"in_layers.0", "norm1"},          {"in_layers.2", "conv1"},
    {"out_layers.0", "norm2"},         {"out_layers.3", "conv2"},
    {"emb_layers.1", "time_emb_proj"}, {"skip_connection", "conv_shortcut"},
};

/* VAE (first_stage_model.*). */
static const s_row_t s_vae_rows[] = {
    {"encoder.down.{}.block.{}.", "encoder.down_blocks.%d.resnets.%d.", I_SAME, S_VRESNET},
    {"encoder.down.{}.downsample.conv.", "encoder.down_blocks.%d.downsamplers.0.conv.", I_SAME, 0},
    {"decoder.up.{}.block.{}.", "decoder.up_blocks.%d.resnets.%d.", I_VAE_REV_J, S_VRESNET},
    {"decoder.up.{}.upsample.conv.", "decoder.up_blocks.%d.upsamplers.0.conv.", I_VAE_REV, 0},
    {"encoder.mid.block_1.", "encoder.mid_block.resnets.0.", I_NONE, S_VRESNET},
    {"encoder.mid.block_2.", "encoder.mid_block.resnets.1.", I_NONE, S_VRESNET},
    {"decoder.mid.block_1.", "decoder.mid_block.resnets.0.", I_NONE, S_VRESNET},
    {"decoder.mid.block_2.", "decoder.mid_block.resnets.1.", I_NONE, S_VRESNET},
    {"encoder.mid.attn_1.norm.", "encoder.mid_block.attentions.0.group_norm.", I_NONE, 0},
    {"decoder.mid.attn_1.norm.", "decoder.mid_block.attentions.0.group_norm.", I_NONE, 0},
    {"encoder.mid.attn_1.q.", "encoder.mid_block.attentions.0.to_q.", I_NONE, S_CONV1X1},
    {"encoder.mid.attn_1.k.", "encoder.mid_block.attentions.0.to_k.", I_NONE, S_CONV1X1},
    {"encoder.mid.attn_1.v.", "encoder.mid_block.attentions.0.to_v.", I_NONE, S_CONV1X1},
    {"encoder.mid.attn_1.proj_out.", "encoder.mid_block.attentions.0.to_out.0.", I_NONE, S_CONV1X1},
    {"decoder.mid.attn_1.q.", "decoder.mid_block.attentions.0.to_q.", I_NONE, S_CONV1X1},
    {"decoder.mid.attn_1.k.", "decoder.mid_block.attentions.0.to_k.", I_NONE, S_CONV1X1},
    {"decoder.mid.attn_1.v.", "decoder.mid_block.attentions.0.to_v.", I_NONE, S_CONV1X1},
    {"decoder.mid.attn_1.proj_out.", "decoder.mid_block.attentions.0.to_out.0.", I_NONE, S_CONV1X1},
    {"encoder.norm_out.", "encoder.conv_norm_out.", I_NONE, 0},
    {"decoder.norm_out.", "decoder.conv_norm_out.", I_NONE, 0},
    {"encoder.conv_in.", "encoder.conv_in.", I_NONE, 0},
    {"encoder.conv_out.", "encoder.conv_out.", I_NONE, 0},
    {"decoder.conv_in.", "decoder.conv_in.", I_NONE, 0},
    {"decoder.conv_out.", "decoder.conv_out.", I_NONE, 0},
    {"quant_conv.", "quant_conv.", I_NONE, 0},
    {"post_quant_conv.", "post_quant_conv.", I_NONE, 0},
};

/* text_encoder (conditioner.embedders.N.transformer.*): HF names already. */
static const s_row_t s_te1_rows[] = {
    {"text_model.embeddings.position_ids", "", I_NONE, S_EXACT | S_SKIP},
    {"text_model.", "text_model.", I_NONE, 0},
    {"logit_scale", "", I_NONE, S_EXACT | S_SKIP},
};

/* text_encoder_2 (conditioner.embedders.N.model.*): OpenCLIP names. */
static const s_row_t s_te2_rows[] = {
    {"positional_embedding", "text_model.embeddings.position_embedding.weight", I_NONE, S_EXACT},
    {"token_embedding.", "text_model.embeddings.token_embedding.", I_NONE, 0},
    {"transformer.resblocks.{}.ln_1.", "text_model.encoder.layers.%d.layer_norm1.", I_SAME, 0},
    {"transformer.resblocks.{}.ln_2.", "text_model.encoder.layers.%d.layer_norm2.", I_SAME, 0},
    {"transformer.resblocks.{}.mlp.c_fc.", "text_model.encoder.layers.%d.mlp.fc1.", I_SAME, 0},
    {"transformer.resblocks.{}.mlp.c_proj.", "text_model.encoder.layers.%d.mlp.fc2.", I_SAME, 0},
    {"transformer.resblocks.{}.attn.out_proj.", "text_model.encoder.layers.%d.self_attn.out_proj.",
     I_SAME, 0},
    {"transformer.resblocks.{}.attn.in_proj_weight",
     "text_model.encoder.layers.%d.self_attn.%s_proj.weight", I_SAME, S_EXACT | S_SPLIT3},
    {"transformer.resblocks.{}.attn.in_proj_bias",
     "text_model.encoder.layers.%d.self_attn.%s_proj.bias", I_SAME, S_EXACT | S_SPLIT3},
    {"ln_final.", "text_model.final_layer_norm.", I_NONE, 0},
    /* OpenCLIP keeps a bare [H, P] matrix used as x @ P; some converted files
       already carry the Linear form. */
    {"text_projection", "text_projection.weight", I_NONE, S_EXACT | S_TRANSPOSE},
    {"text_projection.weight", "text_projection.weight", I_NONE, S_EXACT},
    {"logit_scale", "", I_NONE, S_EXACT | S_SKIP},
    {"attn_mask", "", I_NONE, S_EXACT | S_SKIP},
};

/* Component prefixes of a single file. */
static const struct {
    const char *prefix; /* "{}" = the embedder index */
    sdx_nm_comp_t comp;
} s_prefixes[] = {
    {"model.diffusion_model.", SDX_NM_UNET},
    {"first_stage_model.", SDX_NM_VAE},
    {"conditioner.embedders.{}.transformer.", SDX_NM_TE1},
    {"conditioner.embedders.{}.model.", SDX_NM_TE2},
};

static const char *s_comp_names[SDX_NM_NCOMP] = {"unet", "vae", "text_encoder", "text_encoder_2"};

const char *sdx_nm_comp_name(sdx_nm_comp_t c)
{
    return c >= 0 && c < SDX_NM_NCOMP ? s_comp_names[c] : "?";
}

/* ---------------------------------------------------------------- matching */

/* Match `pat` against the start of `key`; numbers go to nums (at most 4).
   Returns the rest of key, or NULL if no match. */
static const char *s_match(const char *pat, const char *key, int *nums, int *nnum)
{
    *nnum = 0;
    while (*pat) {
        if (pat[0] == '{' && pat[1] == '}') {
            if (*key < '0' || *key > '9' || *nnum >= 4)
                return NULL;
            long v = 0;
            int digits = 0;
            while (*key >= '0' && *key <= '9') {
                if (++digits > 6)
                    return NULL;
                v = v * 10 + (*key - '0');
                key++;
            }
            nums[(*nnum)++] = (int)v;
            pat += 2;
            continue;
        }
        if (*pat != *key)
            return NULL;
        pat++;
        key++;
    }
    return key;
}

/* Rename a resnet's inner module at the start of rest ("in_layers.2.weight"
   -> "conv1.weight"; also a bare module path "in_layers.2"). */
static int s_resnet_suffix(const char *rest, char *out, size_t outlen, bool vae)
{
    if (vae) {
        static const char nin[] = "nin_shortcut";
        size_t n = sizeof nin - 1;
        if (strncmp(rest, nin, n) == 0 && (rest[n] == '.' || rest[n] == 0))
            return snprintf(out, outlen, "conv_shortcut%s", rest + n);
        return snprintf(out, outlen, "%s", rest);
    }
    for (size_t i = 0; i < sizeof s_resnet_inner / sizeof s_resnet_inner[0]; i++) {
        size_t n = strlen(s_resnet_inner[i].sgm);
        if (strncmp(rest, s_resnet_inner[i].sgm, n) == 0 && (rest[n] == '.' || rest[n] == 0))
            return snprintf(out, outlen, "%s%s", s_resnet_inner[i].diffusers, rest + n);
    }
    return -1; /* a resnet has nothing else */
}

static int s_unknown(const char *comp, const char *key)
{
    return sdx_set_error("unknown %s key '%s'", comp, key);
}

/* Map `key` (component prefix removed) through a table. */
static int s_map(const s_row_t *rows, size_t nrows, sdx_nm_comp_t comp, const char *key,
                 const sdx_nm_geom_t *g, sdx_nm_target_t *out)
{
    int nums[4], nnum;
    for (size_t r = 0; r < nrows; r++) {
        const s_row_t *row = &rows[r];
        const char *rest = s_match(row->pattern, key, nums, &nnum);
        if (!rest)
            continue;
        if ((row->flags & S_EXACT) && *rest)
            continue;
        if (row->flags & S_SKIP)
            return 0;
        int a = nums[0], b = nnum > 1 ? nums[1] : 0;
        int L = g->unet_layers_per_block, n = g->vae_n_levels;
        switch (row->index) {
        case I_NONE:
        case I_SAME:
            break;
        case I_DOWN: /* input_blocks.B with B = i*(L+1) + j + 1, j < L */
            if (a < 1 || (a - 1) % (L + 1) >= L)
                return s_unknown(sdx_nm_comp_name(comp), key);
            b = (a - 1) % (L + 1);
            a = (a - 1) / (L + 1);
            break;
        case I_DOWNSAMPLE: /* input_blocks.B.0.op with B = (i+1)*(L+1) */
            if (a < L + 1 || a % (L + 1) != 0)
                return s_unknown(sdx_nm_comp_name(comp), key);
            a = a / (L + 1) - 1;
            break;
        case I_UP: /* output_blocks.B with B = i*(L+1) + j */
            b = a % (L + 1);
            a = a / (L + 1);
            break;
        case I_UP_BLOCK: /* the upsampler follows the last resnet of block i */
            if (a % (L + 1) != L)
                return s_unknown(sdx_nm_comp_name(comp), key);
            a = a / (L + 1);
            break;
        case I_VAE_REV:
        case I_VAE_REV_J:
            if (a >= n)
                return s_unknown(sdx_nm_comp_name(comp), key);
            a = n - 1 - a;
            break;
        }
        char head[SDX_NM_NAME_MAX], tail[SDX_NM_NAME_MAX];
        if (row->flags & (S_RESNET | S_VRESNET)) {
            int k = s_resnet_suffix(rest, tail, sizeof tail, row->flags & S_VRESNET);
            if (k < 0)
                return s_unknown(sdx_nm_comp_name(comp), key);
            if ((size_t)k >= sizeof tail)
                return sdx_set_error("key too long: '%.100s...'", key);
        } else {
            if (strlen(rest) >= sizeof tail)
                return sdx_set_error("key too long: '%.100s...'", key);
            strcpy(tail, rest);
        }
        int parts = (row->flags & S_SPLIT3) ? 3 : 1;
        static const char *qkv[3] = {"q", "k", "v"};
        for (int p = 0; p < parts; p++) {
            int k;
            if (row->flags & S_SPLIT3)
                k = snprintf(head, sizeof head, row->fmt, a, qkv[p]);
            else
                k = snprintf(head, sizeof head, row->fmt, a, b);
            if (k < 0 || (size_t)k >= sizeof head || (size_t)k + strlen(tail) >= sizeof out[p].name)
                return sdx_set_error("key too long: '%.100s...'", key);
            out[p].comp = comp;
            memcpy(out[p].name, head, (size_t)k);
            strcpy(out[p].name + k, tail);
            out[p].part = p;
            out[p].parts = parts;
            out[p].op = (row->flags & S_SPLIT3)      ? SDX_NM_ROWS
                        : (row->flags & S_TRANSPOSE) ? SDX_NM_TRANSPOSE
                        : ((row->flags & S_CONV1X1) && strcmp(tail, "weight") == 0)
                            ? SDX_NM_CONV1X1_TO_LINEAR
                            : SDX_NM_COPY;
        }
        return parts;
    }
    return s_unknown(sdx_nm_comp_name(comp), key);
}

#define S_N(rows) (sizeof(rows) / sizeof((rows)[0]))

int sdx_namemap_unet(const char *sgm, int layers_per_block, sdx_nm_target_t *out)
{
    sdx_nm_geom_t g = {layers_per_block > 0 ? layers_per_block : 2, 4};
    return s_map(s_unet_rows, S_N(s_unet_rows), SDX_NM_UNET, sgm, &g, out);
}

int sdx_namemap_vae(const char *ldm, int n_levels, sdx_nm_target_t *out)
{
    sdx_nm_geom_t g = {2, n_levels > 0 ? n_levels : 4};
    return s_map(s_vae_rows, S_N(s_vae_rows), SDX_NM_VAE, ldm, &g, out);
}

int sdx_namemap_te1(const char *hf, sdx_nm_target_t *out)
{
    sdx_nm_geom_t g = {2, 4};
    return s_map(s_te1_rows, S_N(s_te1_rows), SDX_NM_TE1, hf, &g, out);
}

int sdx_namemap_te2(const char *openclip, sdx_nm_target_t *out)
{
    sdx_nm_geom_t g = {2, 4};
    return s_map(s_te2_rows, S_N(s_te2_rows), SDX_NM_TE2, openclip, &g, out);
}

int sdx_namemap_component(const char *key, const char **rest)
{
    int nums[4], nnum;
    for (size_t i = 0; i < S_N(s_prefixes); i++) {
        const char *r = s_match(s_prefixes[i].prefix, key, nums, &nnum);
        if (r) {
            if (rest)
                *rest = r;
            return (int)s_prefixes[i].comp;
        }
    }
    return -1;
}

int sdx_namemap_single_file(const char *key, const sdx_nm_geom_t *g, sdx_nm_target_t *out)
{
    const char *rest;
    int c = sdx_namemap_component(key, &rest);
    if (c < 0)
        return sdx_set_error("key '%s' belongs to no model component", key);
    int n;
    switch ((sdx_nm_comp_t)c) {
    case SDX_NM_UNET:
        n = s_map(s_unet_rows, S_N(s_unet_rows), SDX_NM_UNET, rest, g, out);
        break;
    case SDX_NM_VAE:
        n = s_map(s_vae_rows, S_N(s_vae_rows), SDX_NM_VAE, rest, g, out);
        break;
    case SDX_NM_TE1:
        n = s_map(s_te1_rows, S_N(s_te1_rows), SDX_NM_TE1, rest, g, out);
        break;
    case SDX_NM_TE2:
        n = s_map(s_te2_rows, S_N(s_te2_rows), SDX_NM_TE2, rest, g, out);
        break;
    default:
        n = -1;
    }
    if (n < 0)
        sdx_set_error("unknown single-file key '%s'", key);
    return n;
}
