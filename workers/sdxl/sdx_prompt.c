/*  sdx_prompt.c - SDXL encode_prompt (see sdx_prompt.h).

    Plan: tokenize every (positive, negative) text for both tokenizers, keep
    one row per distinct pair of id rows, run each encoder once over those
    rows asking for the two hidden states needed (-(2 + clip_skip) for
    positives, -2 for negatives), concatenate the encoders' features, then
    gather the output rows (which also performs num_images_per_prompt's
    repetition) with one index_select per output. Not for prompt weighting
    or long-prompt chunking (diffusers truncates, so do we).
*/
#include "sdx_prompt.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define T SDX_CLIP_MAX_LENGTH

void sdx_prompt_params_init(sdx_prompt_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->batch_size = 1;
    p->num_images_per_prompt = 1;
    p->do_cfg = true;
    p->force_zeros_for_empty_prompt = true;
}

void sdx_prompt_embeds_free(sdx_prompt_embeds_t *e)
{
    if (!e)
        return;
    sdx_tensor_free(&e->prompt_embeds);
    sdx_tensor_free(&e->negative_prompt_embeds);
    sdx_tensor_free(&e->pooled_prompt_embeds);
    sdx_tensor_free(&e->negative_pooled_prompt_embeds);
    memset(e, 0, sizeof *e);
}

/* Row indices [map[first + i] repeated n times for i < B] as a tensor. */
static int s_index(sdx_scope_t *S, sdx_tensor_t **out, const int *map, int first, int B, int n,
                   sdx_device_t dev)
{
    int64_t N = (int64_t)B * n;
    int64_t *idx = malloc((size_t)N * sizeof *idx);
    if (!idx)
        return sdx_set_error("encode_prompt: out of memory");
    for (int i = 0; i < B; i++)
        for (int j = 0; j < n; j++)
            idx[i * n + j] = map[first + i];
    sdx_tensor_t *cpu = NULL;
    int rc = sdx_from_host(S, &cpu, idx, SDX_I64, &N, 1);
    free(idx);
    return rc == 0 ? sdx_to_device(S, out, cpu, dev) : -1;
}

/* hidden features of encoder 1 and 2 for one layer choice -> [U, T, H1+H2] */
static int s_concat(sdx_scope_t *S, sdx_tensor_t **out, sdx_tensor_t *h1, sdx_tensor_t *h2)
{
    if (!h1)
        return sdx_alias(S, out, h2);
    if (sdx_tensor_dtype(h1) != sdx_tensor_dtype(h2) &&
        sdx_to_dtype(S, &h1, h1, sdx_tensor_dtype(h2)) != 0)
        return -1;
    sdx_tensor_t *parts[2] = {h1, h2};
    return sdx_cat(S, out, parts, 2, -1);
}

int sdx_prompt_encode(const sdx_text_encoders_t *te, const sdx_prompt_params_t *p,
                      sdx_prompt_embeds_t *out)
{
    assert(te && p && out);
    memset(out, 0, sizeof *out);
    const int B = p->batch_size, n = p->num_images_per_prompt, skip = p->clip_skip;
    if (!te->te2 || !te->tok2 || (!te->te1) != (!te->tok1))
        return sdx_set_error("encode_prompt: text_encoder_2 and its tokenizer are required "
                             "(text_encoder needs its tokenizer)");
    if (!p->prompt || B < 1 || n < 1 || skip < 0)
        return sdx_set_error("encode_prompt: need prompts, batch_size >= 1, "
                             "num_images_per_prompt >= 1, clip_skip >= 0");
    if (sdx_clip_config(te->te2)->projection_dim <= 0)
        return sdx_set_error("encode_prompt: text_encoder_2 has no text_projection");
    const int L1 = te->te1 ? sdx_clip_config(te->te1)->num_hidden_layers : 0;
    const int L2 = sdx_clip_config(te->te2)->num_hidden_layers;
    if (2 + skip > L2 + 1 || (te->te1 && 2 + skip > L1 + 1))
        return sdx_set_error("encode_prompt: clip_skip %d too large for %d/%d layers", skip, L1,
                             L2);

    const bool zero_neg = p->negative == NULL && p->force_zeros_for_empty_prompt;
    const bool enc_neg = p->do_cfg && !zero_neg;
    const int R = enc_neg ? 2 * B : B; /* rows: positives, then negatives */
    int64_t *ids1 = calloc((size_t)R * T, sizeof *ids1);
    int64_t *ids2 = calloc((size_t)R * T, sizeof *ids2);
    int *map = calloc((size_t)R, sizeof *map);
    sdx_scope_t *S = sdx_scope_new();
    int U = 0;
    if (!ids1 || !ids2 || !map || !S) {
        sdx_set_error("encode_prompt: out of memory");
        goto fail;
    }
    for (int r = 0; r < R; r++) {
        const int i = r % B;
        const bool neg = r >= B;
        const char *t1 = neg ? (p->negative ? p->negative[i] : "") : p->prompt[i];
        const char *t2 =
            neg ? (p->negative_2 ? p->negative_2[i] : t1) : (p->prompt_2 ? p->prompt_2[i] : t1);
        if (!te->te1)
            t2 = t1; /* diffusers zips [prompt, prompt_2] with [tokenizer_2] */
        if (!t1 || !t2) {
            sdx_set_error("encode_prompt: prompt %d is NULL", i);
            goto fail;
        }
        size_t full = 0;
        if (te->tok1 &&
            sdx_tokenizer_encode(te->tok1, t1, ids1 + (size_t)U * T, T, NULL, &full) != 0)
            goto fail;
        out->truncated |= full > T;
        if (sdx_tokenizer_encode(te->tok2, t2, ids2 + (size_t)U * T, T, NULL, &full) != 0)
            goto fail;
        out->truncated |= full > T;
        /* identical rows are encoded once */
        int u = 0;
        while (u < U && !(memcmp(ids1 + (size_t)u * T, ids1 + (size_t)U * T, T * 8) == 0 &&
                          memcmp(ids2 + (size_t)u * T, ids2 + (size_t)U * T, T * 8) == 0))
            u++;
        map[r] = u;
        if (u == U)
            U++;
    }

    /* one forward per encoder over the distinct rows */
    const int64_t shape[2] = {U, T};
    sdx_clip_request_t rq = {.hidden = {-(2 + skip), -2}, .n_hidden = skip && enc_neg ? 2 : 1};
    sdx_clip_output_t o1 = {0}, o2 = {0};
    sdx_tensor_t *t_ids = NULL, *pos = NULL, *neg = NULL, *idx = NULL;
    if (te->te1) {
        SDX_TRY(sdx_from_host(S, &t_ids, ids1, SDX_I64, shape, 2));
        SDX_TRY(sdx_clip_forward(te->te1, S, t_ids, &rq, &o1));
    }
    rq.pooled = true;
    SDX_TRY(sdx_from_host(S, &t_ids, ids2, SDX_I64, shape, 2));
    SDX_TRY(sdx_clip_forward(te->te2, S, t_ids, &rq, &o2));
    SDX_TRY(s_concat(S, &pos, o1.hidden[0], o2.hidden[0]));
    if (enc_neg)
        SDX_TRY(skip ? s_concat(S, &neg, o1.hidden[1], o2.hidden[1]) : sdx_alias(S, &neg, pos));

    /* gather rows (repeating each prompt num_images_per_prompt times) */
    const sdx_device_t dev = sdx_clip_device(te->te2);
    SDX_TRY(s_index(S, &idx, map, 0, B, n, dev));
    SDX_TRY(sdx_index_select(NULL, &out->prompt_embeds, pos, 0, idx));
    SDX_TRY(sdx_index_select(NULL, &out->pooled_prompt_embeds, o2.text_embeds, 0, idx));
    if (enc_neg) {
        SDX_TRY(s_index(S, &idx, map, B, B, n, dev));
        SDX_TRY(sdx_index_select(NULL, &out->negative_prompt_embeds, neg, 0, idx));
        SDX_TRY(
            sdx_index_select(NULL, &out->negative_pooled_prompt_embeds, o2.text_embeds, 0, idx));
    } else if (p->do_cfg) {
        SDX_TRY(sdx_zeros_like(NULL, &out->negative_prompt_embeds, out->prompt_embeds));
        SDX_TRY(
            sdx_zeros_like(NULL, &out->negative_pooled_prompt_embeds, out->pooled_prompt_embeds));
    }
    sdx_scope_free(&S);
    free(ids1);
    free(ids2);
    free(map);
    return 0;
fail:
    sdx_prompt_embeds_free(out);
    sdx_scope_free(&S);
    free(ids1);
    free(ids2);
    free(map);
    return -1;
}
