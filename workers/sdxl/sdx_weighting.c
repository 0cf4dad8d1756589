/*  sdx_weighting.c - A1111 prompt weighting and 75-token chunking (see
    sdx_weighting.h). The parser walks the prompt with the alternatives of
    A1111's re_attention in its order; the encoder runs every (prompt,
    chunk) row of both prompts through each encoder in one batched forward.
    Not for diffusers' plain encode_prompt (sdx_prompt.c).
*/
#include "sdx_weighting.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define T SDX_CLIP_MAX_LENGTH
#define CHUNK SDX_WEIGHTING_CHUNK
#define COMMA_BACKTRACK 20

/* ------------------------------------------------------------- parser */

typedef struct {
    sdx_weight_segment_t *v;
    size_t n, cap;
} s_segs_t;

static int s_push(s_segs_t *s, const char *text, size_t len, double weight, bool is_break)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        sdx_weight_segment_t *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    char *t = malloc(len + 1);
    if (!t)
        return -1;
    memcpy(t, text, len);
    t[len] = 0;
    s->v[s->n++] = (sdx_weight_segment_t){t, weight, is_break};
    return 0;
}

static bool s_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Python's \w, with every non-ASCII byte taken as a word character. */
static bool s_word(unsigned char c)
{
    return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z');
}

/* A plain-text match: re.split(r"\s*\bBREAK\b\s*") with a BREAK between
   the parts. */
static int s_text(s_segs_t *s, const char *t, size_t len)
{
    size_t start = 0, i = 0;
    while (i + 5 <= len) {
        if (memcmp(t + i, "BREAK", 5) == 0 && (i == 0 || !s_word((unsigned char)t[i - 1])) &&
            (i + 5 == len || !s_word((unsigned char)t[i + 5]))) {
            size_t l = i, r = i + 5;
            while (l > start && s_space(t[l - 1]))
                l--;
            while (r < len && s_space(t[r]))
                r++;
            if (s_push(s, t + start, l - start, 1.0, false) != 0 || s_push(s, "", 0, 1.0, true))
                return -1;
            start = i = r;
        } else {
            i++;
        }
    }
    return s_push(s, t + start, len - start, 1.0, false);
}

static void s_multiply(s_segs_t *s, size_t from, double m)
{
    for (size_t i = from; i < s->n; i++)
        if (!s->v[i].is_break)
            s->v[i].weight *= m;
}

/* ":\s*([+-]?[.\d]+)\s*\)" at t: its length and the number, or 0 when it
   does not match or the number is none (float() would raise). */
static size_t s_weight(const char *t, double *w)
{
    size_t i = 1;
    while (s_space(t[i]))
        i++;
    size_t n0 = i;
    if (t[i] == '+' || t[i] == '-')
        i++;
    size_t d0 = i;
    while (t[i] == '.' || (t[i] >= '0' && t[i] <= '9'))
        i++;
    if (i == d0)
        return 0;
    size_t n1 = i;
    while (s_space(t[i]))
        i++;
    if (t[i] != ')')
        return 0;
    char buf[64];
    if (n1 - n0 >= sizeof buf)
        return 0;
    memcpy(buf, t + n0, n1 - n0);
    buf[n1 - n0] = 0;
    char *end = NULL;
    *w = strtod(buf, &end);
    if (*end || end == buf)
        return 0;
    /* Python's float() takes no "+." or "." alone either; strtod agrees */
    return i + 1;
}

int sdx_weighting_parse(const char *prompt, sdx_weight_segment_t **segs, size_t *n)
{
    assert(prompt && segs && n);
    *segs = NULL;
    *n = 0;
    s_segs_t s = {0};
    size_t len = strlen(prompt);
    size_t *round = malloc((len + 1) * sizeof *round), *square = malloc((len + 1) * sizeof *square);
    size_t nr = 0, nsq = 0;
    if (!round || !square)
        goto oom;
    for (size_t i = 0; i < len;) {
        const char *t = prompt + i;
        char c = *t;
        double w = 0;
        size_t m;
        if (c == '\\') {
            char d = t[1];
            bool esc = d == '(' || d == ')' || d == '[' || d == ']' || d == '\\';
            if (s_push(&s, t + 1, esc ? 1 : 0, 1.0, false) != 0)
                goto oom;
            i += esc ? 2 : 1;
        } else if (c == '(') {
            round[nr++] = s.n;
            i++;
        } else if (c == '[') {
            square[nsq++] = s.n;
            i++;
        } else if (c == ':' && (m = s_weight(t, &w)) > 0) {
            if (nr)
                s_multiply(&s, round[--nr], w);
            else if (s_text(&s, t, m) != 0)
                goto oom;
            i += m;
        } else if (c == ')' && nr) {
            s_multiply(&s, round[--nr], 1.1);
            i++;
        } else if (c == ']' && nsq) {
            s_multiply(&s, square[--nsq], 1 / 1.1);
            i++;
        } else if (c == ')' || c == ']' || c == ':') {
            if (s_text(&s, t, 1) != 0)
                goto oom;
            i++;
        } else {
            size_t j = i;
            while (j < len && !strchr("\\()[]:", prompt[j]))
                j++;
            if (s_text(&s, t, j - i) != 0)
                goto oom;
            i = j;
        }
    }
    for (size_t k = 0; k < nr; k++)
        s_multiply(&s, round[k], 1.1);
    for (size_t k = 0; k < nsq; k++)
        s_multiply(&s, square[k], 1 / 1.1);
    if (s.n == 0 && s_push(&s, "", 0, 1.0, false) != 0)
        goto oom;
    /* merge runs of identical weights */
    for (size_t i = 0; i + 1 < s.n;) {
        sdx_weight_segment_t *a = &s.v[i], *b = &s.v[i + 1];
        if (a->is_break || b->is_break || a->weight != b->weight) {
            i++;
            continue;
        }
        size_t la = strlen(a->text), lb = strlen(b->text);
        char *t = realloc(a->text, la + lb + 1);
        if (!t)
            goto oom;
        memcpy(t + la, b->text, lb + 1);
        a->text = t;
        free(b->text);
        memmove(b, b + 1, (s.n - i - 2) * sizeof *b);
        s.n--;
    }
    free(round);
    free(square);
    *segs = s.v;
    *n = s.n;
    return 0;
oom:
    free(round);
    free(square);
    sdx_weight_segments_free(&s.v, s.n);
    return sdx_set_error("prompt weighting: out of memory");
}

void sdx_weight_segments_free(sdx_weight_segment_t **segs, size_t n)
{
    if (!segs || !*segs)
        return;
    for (size_t i = 0; i < n; i++)
        free((*segs)[i].text);
    free(*segs);
    *segs = NULL;
}

/* ---------------------------------------------------------- chunking */

void sdx_weighted_tokens_free(sdx_weighted_tokens_t *t)
{
    if (!t)
        return;
    free(t->ids);
    free(t->weights);
    memset(t, 0, sizeof *t);
}

/* Close a chunk of n tokens into t: BOS + ids + EOS + pad, weights 1 there. */
static int s_emit(const sdx_tokenizer_t *tok, sdx_weighted_tokens_t *t, const int32_t *ids,
                  const double *w, int n)
{
    if (t->n_chunks >= SDX_WEIGHTING_MAX_CHUNKS)
        return sdx_set_error("prompt weighting: the prompt needs more than %d chunks of %d tokens",
                             SDX_WEIGHTING_MAX_CHUNKS, CHUNK);
    size_t k = (size_t)t->n_chunks + 1;
    int64_t *ni = realloc(t->ids, k * T * sizeof *ni);
    if (ni)
        t->ids = ni;
    float *nw = ni ? realloc(t->weights, k * T * sizeof *nw) : NULL;
    if (!nw)
        return sdx_set_error("prompt weighting: out of memory");
    t->weights = nw;
    int64_t *ci = t->ids + (size_t)t->n_chunks * T;
    float *cw = t->weights + (size_t)t->n_chunks * T;
    for (int j = 0; j < T; j++) {
        ci[j] = sdx_tokenizer_pad_id(tok);
        cw[j] = 1.0f;
    }
    ci[0] = sdx_tokenizer_bos_id(tok);
    for (int j = 0; j < n; j++) {
        ci[1 + j] = ids[j];
        cw[1 + j] = (float)w[j];
    }
    ci[1 + n] = sdx_tokenizer_eos_id(tok);
    t->n_chunks++;
    return 0;
}

int sdx_weighting_pad(const sdx_tokenizer_t *tok, sdx_weighted_tokens_t *t, int n_chunks)
{
    while (t->n_chunks < n_chunks)
        if (s_emit(tok, t, NULL, NULL, 0) != 0)
            return -1;
    return 0;
}

int sdx_weighting_tokenize(const sdx_tokenizer_t *tok, const char *prompt,
                           sdx_weighted_tokens_t *out)
{
    assert(tok && prompt && out);
    memset(out, 0, sizeof *out);
    sdx_weight_segment_t *segs = NULL;
    size_t nseg = 0;
    if (sdx_weighting_parse(prompt, &segs, &nseg) != 0)
        return -1;
    const int32_t comma = sdx_tokenizer_token_to_id(tok, ",</w>");
    int32_t cid[CHUNK];
    double cw[CHUNK];
    int len = 0, last_comma = -1;
    for (size_t s = 0; s < nseg; s++) {
        if (segs[s].is_break) {
            if (s_emit(tok, out, cid, cw, len) != 0)
                goto fail;
            len = 0;
            last_comma = -1;
            continue;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        if (sdx_tokenizer_tokenize(tok, segs[s].text, &ids, &n) != 0)
            goto fail;
        for (size_t i = 0; i < n; i++) {
            if (ids[i] == comma) {
                last_comma = len;
            } else if (len == CHUNK && last_comma != -1 && len - last_comma <= COMMA_BACKTRACK) {
                /* the words after the last comma move to the next chunk */
                int at = last_comma + 1, moved = len - at;
                int32_t mid[CHUNK];
                double mw[CHUNK];
                memcpy(mid, cid + at, (size_t)moved * sizeof *mid);
                memcpy(mw, cw + at, (size_t)moved * sizeof *mw);
                if (s_emit(tok, out, cid, cw, at) != 0) {
                    free(ids);
                    goto fail;
                }
                memcpy(cid, mid, (size_t)moved * sizeof *mid);
                memcpy(cw, mw, (size_t)moved * sizeof *mw);
                len = moved;
                last_comma = -1;
            }
            if (len == CHUNK) {
                if (s_emit(tok, out, cid, cw, len) != 0) {
                    free(ids);
                    goto fail;
                }
                len = 0;
                last_comma = -1;
            }
            cid[len] = ids[i];
            cw[len++] = segs[s].weight;
        }
        free(ids);
    }
    if ((len > 0 || out->n_chunks == 0) && s_emit(tok, out, cid, cw, len) != 0)
        goto fail;
    sdx_weight_segments_free(&segs, nseg);
    return 0;
fail:
    sdx_weight_segments_free(&segs, nseg);
    sdx_weighted_tokens_free(out);
    return -1;
}

/* ---------------------------------------------------------- embeddings */

int sdx_weighting_apply(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *z,
                        const sdx_tensor_t *w)
{
    sdx_scope_t *L = sdx_scope_new();
    if (!L)
        return sdx_set_error("prompt weighting: out of memory");
    const int64_t dims[2] = {1, 2};
    sdx_tensor_t *wz = NULL, *w3 = NULL, *m0 = NULL, *zw = NULL, *m1 = NULL, *ratio = NULL;
    SDX_TRY(sdx_to(L, &wz, w, sdx_tensor_dtype(z), sdx_tensor_device(z)));
    SDX_TRY(sdx_unsqueeze(L, &w3, wz, -1));
    SDX_TRY(sdx_mean(L, &m0, z, dims, 2, true));
    SDX_TRY(sdx_mul(L, &zw, z, w3));
    SDX_TRY(sdx_mean(L, &m1, zw, dims, 2, true));
    SDX_TRY(sdx_div(L, &ratio, m0, m1));
    SDX_TRY(sdx_mul(S, out, zw, ratio));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}

/* Row indices as a tensor on dev. */
static int s_index(sdx_scope_t *S, sdx_tensor_t **out, const int64_t *idx, int64_t n,
                   sdx_device_t dev)
{
    sdx_tensor_t *cpu = NULL;
    if (sdx_from_host(S, &cpu, idx, SDX_I64, &n, 1) != 0)
        return -1;
    return sdx_to_device(S, out, cpu, dev);
}

/* One encoder over every (row, chunk): hidden states weighted, rows of
   positives from layer hidden[0] and negatives (rows >= npos) from
   hidden[1] when two were asked for; -> [R, K * 77, H]. */
static int s_encoder(sdx_scope_t *S, const sdx_clip_t *c, const sdx_weighted_tokens_t *rows, int R,
                     int npos, int K, const sdx_clip_request_t *rq, sdx_clip_output_t *o,
                     sdx_tensor_t **out)
{
    const size_t per = (size_t)K * T;
    int64_t *ids = malloc((size_t)R * per * sizeof *ids);
    float *w = malloc((size_t)R * per * sizeof *w);
    if (!ids || !w) {
        free(ids);
        free(w);
        return sdx_set_error("prompt weighting: out of memory");
    }
    for (int r = 0; r < R; r++) {
        memcpy(ids + r * per, rows[r].ids, per * sizeof *ids);
        memcpy(w + r * per, rows[r].weights, per * sizeof *w);
    }
    const int64_t shape[2] = {(int64_t)R * K, T};
    sdx_tensor_t *t_ids = NULL, *t_w = NULL, *h = NULL, *z = NULL;
    int rc = sdx_from_host(S, &t_ids, ids, SDX_I64, shape, 2);
    if (rc == 0)
        rc = sdx_from_host(S, &t_w, w, SDX_F32, shape, 2);
    free(ids);
    free(w);
    SDX_TRY(rc);
    SDX_TRY(sdx_clip_forward(c, S, t_ids, rq, o));
    if (rq->n_hidden == 2 && npos < R) {
        sdx_tensor_t *a = NULL, *b = NULL;
        SDX_TRY(sdx_narrow(S, &a, o->hidden[0], 0, 0, (int64_t)npos * K));
        SDX_TRY(sdx_narrow(S, &b, o->hidden[1], 0, (int64_t)npos * K, (int64_t)(R - npos) * K));
        sdx_tensor_t *parts[2] = {a, b};
        SDX_TRY(sdx_cat(S, &h, parts, 2, 0));
    } else {
        h = o->hidden[0];
    }
    SDX_TRY(sdx_weighting_apply(S, &z, h, t_w));
    const int64_t seq[3] = {R, (int64_t)K * T, sdx_tensor_size(z, 2)};
    return sdx_reshape(S, out, z, seq, 3);
fail:
    return -1;
}

int sdx_weighting_encode(const sdx_text_encoders_t *te, const sdx_prompt_params_t *p,
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
    sdx_weighted_tokens_t *tk1 = calloc((size_t)R, sizeof *tk1);
    sdx_weighted_tokens_t *tk2 = calloc((size_t)R, sizeof *tk2);
    int64_t *idx = calloc((size_t)B * n + (size_t)R, sizeof *idx);
    sdx_scope_t *S = sdx_scope_new();
    if (!tk1 || !tk2 || !idx || !S) {
        sdx_set_error("encode_prompt: out of memory");
        goto fail;
    }
    int K = 1;
    for (int r = 0; r < R; r++) {
        const int i = r % B;
        const bool neg = r >= B;
        const char *t1 = neg ? (p->negative ? p->negative[i] : "") : p->prompt[i];
        const char *t2 =
            neg ? (p->negative_2 ? p->negative_2[i] : t1) : (p->prompt_2 ? p->prompt_2[i] : t1);
        if (!te->te1)
            t2 = t1; /* as sdx_prompt_encode: tokenizer_2 gets prompt */
        if (!t1 || !t2) {
            sdx_set_error("encode_prompt: prompt %d is NULL", i);
            goto fail;
        }
        if (te->tok1 && sdx_weighting_tokenize(te->tok1, t1, &tk1[r]) != 0)
            goto fail;
        if (sdx_weighting_tokenize(te->tok2, t2, &tk2[r]) != 0)
            goto fail;
        if (tk1[r].n_chunks > K)
            K = tk1[r].n_chunks;
        if (tk2[r].n_chunks > K)
            K = tk2[r].n_chunks;
    }
    for (int r = 0; r < R; r++)
        if ((te->tok1 && sdx_weighting_pad(te->tok1, &tk1[r], K) != 0) ||
            sdx_weighting_pad(te->tok2, &tk2[r], K) != 0)
            goto fail;

    sdx_clip_request_t rq = {.hidden = {-(2 + skip), -2}, .n_hidden = skip && enc_neg ? 2 : 1};
    sdx_clip_output_t o1 = {0}, o2 = {0};
    sdx_tensor_t *z1 = NULL, *z2 = NULL, *emb = NULL, *t_idx = NULL, *pooled = NULL;
    if (te->te1) {
        SDX_TRY(s_encoder(S, te->te1, tk1, R, B, K, &rq, &o1, &z1));
        if (sdx_tensor_dtype(z1) != sdx_clip_dtype(te->te2))
            SDX_TRY(sdx_to_dtype(S, &z1, z1, sdx_clip_dtype(te->te2)));
    }
    rq.pooled = true;
    SDX_TRY(s_encoder(S, te->te2, tk2, R, B, K, &rq, &o2, &z2));
    if (z1) {
        sdx_tensor_t *parts[2] = {z1, z2};
        SDX_TRY(sdx_cat(S, &emb, parts, 2, -1));
    } else {
        emb = z2;
    }
    /* pooled: text_encoder_2's of each row's first chunk */
    const sdx_device_t dev = sdx_clip_device(te->te2);
    for (int r = 0; r < R; r++)
        idx[r] = (int64_t)r * K;
    SDX_TRY(s_index(S, &t_idx, idx, R, dev));
    SDX_TRY(sdx_index_select(S, &pooled, o2.text_embeds, 0, t_idx));

    /* rows [p0 x n, p1 x n, ...] for the positives, then the negatives */
    for (int half = 0; half < (enc_neg ? 2 : 1); half++) {
        for (int i = 0; i < B; i++)
            for (int j = 0; j < n; j++)
                idx[i * n + j] = half * B + i;
        SDX_TRY(s_index(S, &t_idx, idx, (int64_t)B * n, dev));
        SDX_TRY(sdx_index_select(NULL, half ? &out->negative_prompt_embeds : &out->prompt_embeds,
                                 emb, 0, t_idx));
        SDX_TRY(sdx_index_select(
            NULL, half ? &out->negative_pooled_prompt_embeds : &out->pooled_prompt_embeds, pooled,
            0, t_idx));
    }
    if (p->do_cfg && !enc_neg) {
        SDX_TRY(sdx_zeros_like(NULL, &out->negative_prompt_embeds, out->prompt_embeds));
        SDX_TRY(
            sdx_zeros_like(NULL, &out->negative_pooled_prompt_embeds, out->pooled_prompt_embeds));
    }
    for (int r = 0; r < R; r++) {
        sdx_weighted_tokens_free(&tk1[r]);
        sdx_weighted_tokens_free(&tk2[r]);
    }
    free(tk1);
    free(tk2);
    free(idx);
    sdx_scope_free(&S);
    return 0;
fail:
    sdx_prompt_embeds_free(out);
    for (int r = 0; tk1 && tk2 && r < R; r++) {
        sdx_weighted_tokens_free(&tk1[r]);
        sdx_weighted_tokens_free(&tk2[r]);
    }
    free(tk1);
    free(tk2);
    free(idx);
    sdx_scope_free(&S);
    return -1;
}
