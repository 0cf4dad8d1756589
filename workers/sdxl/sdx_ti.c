/*  sdx_ti.c - textual-inversion embeddings in the SDXL text encoders; see
    sdx_ti.h. The base table is never copied: rows are appended with a cat,
    and removal narrows back to the base row count (bit-exact).
*/
#include "sdx_ti.h"

#include "sdx_safetensors.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_TOKEN_EMB "text_model.embeddings.token_embedding.weight"

typedef struct {
    char *path, *token;
    int n_vec;
} s_entry_t;

struct sdx_ti_state {
    s_entry_t *list;
    int n;
    int64_t base_rows[2]; /* table rows before any embedding; 0 = not yet seen */
    int32_t base_size[2]; /* tokenizer sizes before any embedding */
};

sdx_ti_state_t *sdx_ti_state_new(void)
{
    return calloc(1, sizeof(sdx_ti_state_t));
}

static void s_clear_list(sdx_ti_state_t *st)
{
    for (int i = 0; i < st->n; i++) {
        free(st->list[i].path);
        free(st->list[i].token);
    }
    free(st->list);
    st->list = NULL;
    st->n = 0;
}

void sdx_ti_state_free(sdx_ti_state_t **st)
{
    if (!st || !*st)
        return;
    s_clear_list(*st);
    free(*st);
    *st = NULL;
}

static bool s_same(const sdx_ti_state_t *st, const sdx_ti_spec_t *list, int n)
{
    if (n != st->n)
        return false;
    for (int i = 0; i < n; i++)
        if (strcmp(list[i].path, st->list[i].path) || strcmp(list[i].token, st->list[i].token))
            return false;
    return true;
}

/* Read one file's two tensors (clip_l, clip_g), also the diffusers /
   A1111 single-tensor forms are refused as not SDXL. */
static int s_read(const sdx_ti_spec_t *sp, int64_t h1, int64_t h2, sdx_tensor_t **l,
                  sdx_tensor_t **g)
{
    sdx_safetensors_t *f = sdx_safetensors_open(sp->path);
    if (!f)
        return -1;
    int rc = -1;
    if (!sdx_safetensors_find(f, "clip_l") || !sdx_safetensors_find(f, "clip_g")) {
        /* the rule: SD1.x forms (one 768-wide table) have nothing for
           text_encoder_2, so they are refused rather than half applied */
        bool sd1 = sdx_safetensors_find(f, "emb_params") || sdx_safetensors_find(f, "*") ||
                   sdx_safetensors_find(f, "string_to_param.*");
        sdx_set_error(sd1 ? "%s: an SD1.x textual-inversion embedding (one text encoder's "
                            "vectors, no clip_g): it does not fit SDXL"
                          : "%s: not an SDXL textual-inversion embedding (no clip_l and clip_g "
                            "tensors)",
                      sp->path);
        goto out;
    }
    if (sdx_safetensors_get(NULL, l, f, "clip_l") || sdx_safetensors_get(NULL, g, f, "clip_g"))
        goto out;
    if (sdx_tensor_ndim(*l) != 2 || sdx_tensor_ndim(*g) != 2 || sdx_tensor_size(*l, 1) != h1 ||
        sdx_tensor_size(*g, 1) != h2 || sdx_tensor_size(*l, 0) != sdx_tensor_size(*g, 0) ||
        sdx_tensor_size(*l, 0) < 1) {
        sdx_set_error("%s: clip_l/clip_g must be [n, %lld] and [n, %lld] for this model", sp->path,
                      (long long)h1, (long long)h2);
        goto out;
    }
    rc = 0;
out:
    if (rc) {
        sdx_tensor_free(l);
        sdx_tensor_free(g);
    }
    sdx_safetensors_close(&f);
    return rc;
}

/* Table of encoder k: base rows + rows (NULL: base only), in the table's
   dtype/device; put into w (which owns it). */
static int s_retable(sdx_weights_t *w, int64_t base, sdx_tensor_t *rows)
{
    sdx_tensor_t *cur = sdx_weights_get(w, S_TOKEN_EMB), *head = NULL, *r = NULL, *out = NULL;
    if (!cur)
        return sdx_set_error("textual inversion: model has no token embedding table");
    int rc = -1;
    if (sdx_narrow(NULL, &head, cur, 0, 0, base))
        goto done;
    if (!rows) {
        if (sdx_clone(NULL, &out, head))
            goto done;
    } else {
        if (sdx_to(NULL, &r, rows, sdx_tensor_dtype(cur), sdx_tensor_device(cur)))
            goto done;
        sdx_tensor_t *parts[2] = {head, r};
        if (sdx_cat(NULL, &out, parts, 2, 0))
            goto done;
    }
    rc = sdx_weights_put(w, S_TOKEN_EMB, out);
    if (rc)
        sdx_tensor_free(&out);
done:
    sdx_tensor_free(&head);
    sdx_tensor_free(&r);
    return rc;
}

int sdx_ti_state_set(sdx_ti_state_t *st, sdx_model_t *m, sdx_clip_t **te1, sdx_clip_t **te2,
                     sdx_tokenizer_t *tok1, sdx_tokenizer_t *tok2, const sdx_ti_spec_t *list, int n)
{
    assert(st && m && te1 && te2 && tok1 && tok2 && (n == 0 || list));
    if (s_same(st, list, n))
        return 0;
    if (!m->te1 || !m->te2 || !*te1 || !*te2)
        return sdx_set_error("textual inversion: needs both SDXL text encoders");
    sdx_weights_t *w[2] = {m->te1, m->te2};
    sdx_tokenizer_t *tok[2] = {tok1, tok2};
    if (!st->base_rows[0]) {
        for (int k = 0; k < 2; k++) {
            sdx_tensor_t *t = sdx_weights_get(w[k], S_TOKEN_EMB);
            if (!t)
                return sdx_set_error("textual inversion: model has no token embedding table");
            st->base_rows[k] = sdx_tensor_size(t, 0);
            st->base_size[k] = sdx_tokenizer_size(tok[k]);
            if (st->base_rows[k] < st->base_size[k])
                return sdx_set_error("textual inversion: token table shorter than the tokenizer");
        }
    }
    int64_t h1 = m->te1_cfg.hidden_size, h2 = m->te2_cfg.hidden_size;
    /* read and check everything first */
    sdx_tensor_t **l = calloc((size_t)n + 1, sizeof *l), **g = calloc((size_t)n + 1, sizeof *g);
    s_entry_t *ne = calloc((size_t)n + 1, sizeof *ne);
    sdx_tensor_t *rows[2] = {NULL, NULL};
    int rc = -1;
    if (!l || !g || !ne) {
        sdx_set_error("textual inversion: out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (!list[i].path || !list[i].token || !*list[i].token) {
            sdx_set_error("textual inversion %d: path and token are required", i);
            goto fail;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(list[i].token, list[j].token)) {
                sdx_set_error("textual inversion: token '%s' given twice", list[i].token);
                goto fail;
            }
        int32_t id = sdx_tokenizer_token_to_id(tok1, list[i].token);
        if (id >= 0 && id < st->base_size[0]) {
            sdx_set_error("textual inversion: token '%s' is already in the vocabulary",
                          list[i].token);
            goto fail;
        }
        if (s_read(&list[i], h1, h2, &l[i], &g[i]))
            goto fail;
        ne[i].n_vec = (int)sdx_tensor_size(l[i], 0);
        ne[i].path = strdup(list[i].path);
        ne[i].token = strdup(list[i].token);
        if (!ne[i].path || !ne[i].token) {
            sdx_set_error("textual inversion: out of memory");
            goto fail;
        }
    }
    if (n > 0 && (sdx_cat(NULL, &rows[0], l, n, 0) || sdx_cat(NULL, &rows[1], g, n, 0)))
        goto fail;
    /* apply: tables, encoders, tokenizers (tables first; they only fail on
       memory, and then the base is put back) */
    for (int k = 0; k < 2; k++)
        if (s_retable(w[k], st->base_rows[k], rows[k]))
            goto restore;
    sdx_clip_t *n1 = sdx_clip_new(&m->te1_cfg, m->te1, "text_encoder");
    sdx_clip_t *n2 = n1 ? sdx_clip_new(&m->te2_cfg, m->te2, "text_encoder_2") : NULL;
    if (!n2) {
        sdx_clip_destroy(&n1);
        goto restore;
    }
    sdx_clip_destroy(te1);
    sdx_clip_destroy(te2);
    *te1 = n1;
    *te2 = n2;
    for (int k = 0; k < 2; k++) {
        if (sdx_tokenizer_truncate(tok[k], st->base_size[k]))
            goto fail;
        /* ids must follow the table rows: base_rows, base_rows + 1, ... */
        int32_t want = (int32_t)st->base_rows[k];
        if (want != st->base_size[k] && n > 0) {
            sdx_set_error("textual inversion: the token table has %lld rows for a tokenizer of "
                          "%d; cannot place added tokens",
                          (long long)st->base_rows[k], st->base_size[k]);
            goto fail;
        }
        for (int i = 0; i < n; i++)
            for (int v = 0; v < ne[i].n_vec; v++) {
                char name[512];
                if (v == 0)
                    snprintf(name, sizeof name, "%s", ne[i].token);
                else
                    snprintf(name, sizeof name, "%s_%d", ne[i].token, v);
                if (sdx_tokenizer_add_token(tok[k], name, false, NULL))
                    goto fail;
            }
    }
    s_clear_list(st);
    st->list = ne;
    st->n = n;
    ne = NULL;
    rc = 0;
    goto fail;
restore:
    for (int k = 0; k < 2; k++)
        s_retable(w[k], st->base_rows[k], NULL);
    {
        sdx_clip_t *n1 = sdx_clip_new(&m->te1_cfg, m->te1, "text_encoder");
        sdx_clip_t *n2 = sdx_clip_new(&m->te2_cfg, m->te2, "text_encoder_2");
        if (n1 && n2) {
            sdx_clip_destroy(te1);
            sdx_clip_destroy(te2);
            *te1 = n1;
            *te2 = n2;
        } else {
            sdx_clip_destroy(&n1);
            sdx_clip_destroy(&n2);
        }
    }
    for (int k = 0; k < 2; k++)
        sdx_tokenizer_truncate(tok[k], st->base_size[k]);
    s_clear_list(st);
fail:
    for (int i = 0; i < n && l && g; i++) {
        sdx_tensor_free(&l[i]);
        sdx_tensor_free(&g[i]);
    }
    if (ne)
        for (int i = 0; i < n; i++) {
            free(ne[i].path);
            free(ne[i].token);
        }
    free(ne);
    free(l);
    free(g);
    sdx_tensor_free(&rows[0]);
    sdx_tensor_free(&rows[1]);
    return rc;
}

char *sdx_ti_convert_prompt(const sdx_ti_state_t *st, const char *prompt)
{
    if (!prompt)
        return NULL;
    char *cur = strdup(prompt);
    for (int i = 0; st && cur && i < st->n; i++) {
        const s_entry_t *en = &st->list[i];
        if (en->n_vec < 2)
            continue;
        size_t tl = strlen(en->token);
        /* the replacement: "tok tok_1 ... tok_{k-1}" */
        size_t rl = tl;
        for (int v = 1; v < en->n_vec; v++)
            rl += 1 + tl + 1 + (size_t)snprintf(NULL, 0, "%d", v);
        size_t hits = 0;
        for (const char *p = strstr(cur, en->token); p; p = strstr(p + tl, en->token))
            hits++;
        if (!hits)
            continue;
        char *out = malloc(strlen(cur) + hits * (rl - tl) + 1);
        if (!out) {
            free(cur);
            return NULL;
        }
        char *o = out;
        const char *s = cur;
        for (const char *p = strstr(s, en->token); p; p = strstr(s, en->token)) {
            memcpy(o, s, (size_t)(p - s));
            o += p - s;
            o += sprintf(o, "%s", en->token);
            /* "<tok>_1" is a token of its own: left as written */
            if (!(p[tl] == '_' && p[tl + 1] >= '0' && p[tl + 1] <= '9'))
                for (int v = 1; v < en->n_vec; v++)
                    o += sprintf(o, " %s_%d", en->token, v);
            s = p + tl;
        }
        strcpy(o, s);
        free(cur);
        cur = out;
    }
    return cur;
}
