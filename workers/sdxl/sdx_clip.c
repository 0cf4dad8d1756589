/*  sdx_clip.c - CLIP text encoder forward (see sdx_clip.h).

    Mirrors transformers 4.45 modeling_clip.py: CLIPTextEmbeddings (token +
    absolute position embeddings), CLIPEncoderLayer (pre-LN self-attention
    with a causal mask, pre-LN MLP fc1 -> act -> fc2), final_layer_norm,
    pooling and text_projection. Every temporary lives in a scope freed
    before returning; outputs are new handles on the computed storage (no
    copies). Not for loading weights or choosing which layer SDXL uses.
*/
#include "sdx_clip.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    sdx_tensor_t *w, *b;
} s_lin_t;

typedef struct {
    sdx_tensor_t *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    s_lin_t q, k, v, o, fc1, fc2;
} s_layer_t;

struct sdx_clip {
    sdx_clip_config_t cfg;
    char what[64];
    sdx_tensor_t *tok_emb, *pos_emb;
    sdx_tensor_t *fln_w, *fln_b; /* NULL if the weights carry no final_layer_norm */
    sdx_tensor_t *proj;          /* [P, H]; NULL without projection */
    s_layer_t *layers;
    sdx_dtype_t dtype;
    sdx_device_t device;
};

/* ---------------------------------------------------------------- binding */

typedef struct {
    sdx_clip_t *c;
    const sdx_weights_t *w;
    bool first;
} s_binder_t;

static int s_bind(s_binder_t *b, sdx_tensor_t **out, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Look a parameter up and check its shape ([d0] if d1 < 0, else [d0, d1]),
   dtype and device. */
static int s_bind(s_binder_t *b, sdx_tensor_t **out, int64_t d0, int64_t d1, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    sdx_tensor_t *t = sdx_weights_get(b->w, name);
    if (!t)
        return sdx_set_error("%s: missing weight '%s'", b->c->what, name);
    int nd = d1 < 0 ? 1 : 2;
    if (sdx_tensor_ndim(t) != nd || sdx_tensor_size(t, 0) != d0 ||
        (nd == 2 && sdx_tensor_size(t, 1) != d1)) {
        int64_t s[SDX_MAX_DIMS];
        int n = sdx_tensor_shape(t, s);
        char got[128] = "";
        size_t len = 0;
        for (int i = 0; i < n && len < sizeof got - 24; i++)
            len += (size_t)snprintf(got + len, sizeof got - len, "%s%lld", i ? ", " : "",
                                    (long long)s[i]);
        if (nd == 1)
            return sdx_set_error("%s: weight '%s' has shape [%s], expected [%lld]", b->c->what,
                                 name, got, (long long)d0);
        return sdx_set_error("%s: weight '%s' has shape [%s], expected [%lld, %lld]", b->c->what,
                             name, got, (long long)d0, (long long)d1);
    }
    sdx_device_t dev = sdx_tensor_device(t);
    if (b->first) {
        b->c->dtype = sdx_tensor_dtype(t);
        b->c->device = dev;
        b->first = false;
    } else if (sdx_tensor_dtype(t) != b->c->dtype || dev.type != b->c->device.type ||
               dev.index != b->c->device.index) {
        return sdx_set_error("%s: weight '%s' is %s, the others %s (one dtype and device "
                             "expected)",
                             b->c->what, name, sdx_dtype_name(sdx_tensor_dtype(t)),
                             sdx_dtype_name(b->c->dtype));
    }
    *out = t;
    return 0;
}

/* The parameters of one encoder layer: name under
   text_model.encoder.layers.N, slot, shape ('H' hidden, 'I' intermediate;
   d1 == 0 for vectors). */
typedef struct {
    const char *name;
    size_t offset;
    char d0, d1;
} s_param_t;

#define P(name, field, d0, d1)                                                                     \
    {                                                                                              \
        name, offsetof(s_layer_t, field), d0, d1                                                   \
    }
static const s_param_t s_layer_params[] = {
    P("layer_norm1.weight", ln1_w, 'H', 0),        P("layer_norm1.bias", ln1_b, 'H', 0),
    P("self_attn.q_proj.weight", q.w, 'H', 'H'),   P("self_attn.q_proj.bias", q.b, 'H', 0),
    P("self_attn.k_proj.weight", k.w, 'H', 'H'),   P("self_attn.k_proj.bias", k.b, 'H', 0),
    P("self_attn.v_proj.weight", v.w, 'H', 'H'),   P("self_attn.v_proj.bias", v.b, 'H', 0),
    P("self_attn.out_proj.weight", o.w, 'H', 'H'), P("self_attn.out_proj.bias", o.b, 'H', 0),
    P("layer_norm2.weight", ln2_w, 'H', 0),        P("layer_norm2.bias", ln2_b, 'H', 0),
    P("mlp.fc1.weight", fc1.w, 'I', 'H'),          P("mlp.fc1.bias", fc1.b, 'I', 0),
    P("mlp.fc2.weight", fc2.w, 'H', 'I'),          P("mlp.fc2.bias", fc2.b, 'H', 0),
};
#undef P

static int64_t s_dim(const sdx_clip_config_t *cfg, char d)
{
    return d == 'I' ? cfg->intermediate_size : cfg->hidden_size;
}

sdx_clip_t *sdx_clip_new(const sdx_clip_config_t *cfg, const sdx_weights_t *w, const char *what)
{
    assert(cfg && w);
    const int H = cfg->hidden_size, L = cfg->num_hidden_layers, heads = cfg->num_attention_heads;
    if (H <= 0 || L <= 0 || L > SDX_CLIP_MAX_LAYERS || heads <= 0 || H % heads != 0 ||
        cfg->intermediate_size <= 0 || cfg->max_position_embeddings <= 0 || cfg->vocab_size <= 0) {
        sdx_set_error("%s: unsupported CLIP config (hidden %d, layers %d, heads %d)",
                      what ? what : "clip", H, L, heads);
        return NULL;
    }
    sdx_clip_t *c = calloc(1, sizeof *c);
    if (!c || !(c->layers = calloc((size_t)L, sizeof *c->layers))) {
        free(c);
        sdx_set_error("clip: out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    snprintf(c->what, sizeof c->what, "%s", what ? what : "clip");
    s_binder_t b = {c, w, true};
    /* the token table may be longer than vocab_size (textual inversion rows) */
    sdx_tensor_t *te = sdx_weights_get(w, "text_model.embeddings.token_embedding.weight");
    int64_t rows = te && sdx_tensor_ndim(te) == 2 ? sdx_tensor_size(te, 0) : cfg->vocab_size;
    if (rows < cfg->vocab_size)
        rows = cfg->vocab_size;
    if (s_bind(&b, &c->tok_emb, rows, H, "text_model.embeddings.token_embedding.weight") ||
        s_bind(&b, &c->pos_emb, cfg->max_position_embeddings, H,
               "text_model.embeddings.position_embedding.weight"))
        goto fail;
    for (int i = 0; i < L; i++) {
        for (size_t k = 0; k < sizeof s_layer_params / sizeof s_layer_params[0]; k++) {
            const s_param_t *q = &s_layer_params[k];
            sdx_tensor_t **slot = (sdx_tensor_t **)((char *)&c->layers[i] + q->offset);
            if (s_bind(&b, slot, s_dim(cfg, q->d0), q->d1 ? s_dim(cfg, q->d1) : -1,
                       "text_model.encoder.layers.%d.%s", i, q->name))
                goto fail;
        }
    }
    if (sdx_weights_has(w, "text_model.final_layer_norm.weight") &&
        (s_bind(&b, &c->fln_w, H, -1, "text_model.final_layer_norm.weight") ||
         s_bind(&b, &c->fln_b, H, -1, "text_model.final_layer_norm.bias")))
        goto fail;
    if (cfg->projection_dim > 0 &&
        s_bind(&b, &c->proj, cfg->projection_dim, H, "text_projection.weight"))
        goto fail;
    return c;
fail:
    sdx_clip_destroy(&c);
    return NULL;
}

void sdx_clip_destroy(sdx_clip_t **cp)
{
    if (!cp || !*cp)
        return;
    free((*cp)->layers);
    free(*cp);
    *cp = NULL;
}

const sdx_clip_config_t *sdx_clip_config(const sdx_clip_t *c)
{
    return &c->cfg;
}

sdx_dtype_t sdx_clip_dtype(const sdx_clip_t *c)
{
    return c->dtype;
}

sdx_device_t sdx_clip_device(const sdx_clip_t *c)
{
    return c->device;
}

/* ---------------------------------------------------------------- forward */

/* One CLIPEncoderLayer: h -> new h, owned by S. */
static int s_layer(const sdx_clip_t *c, const s_layer_t *y, sdx_scope_t *S, sdx_tensor_t **out,
                   const sdx_tensor_t *h)
{
    const int64_t B = sdx_tensor_size(h, 0), T = sdx_tensor_size(h, 1);
    const int64_t H = c->cfg.hidden_size, nh = c->cfg.num_attention_heads, hd = H / nh;
    const double eps = c->cfg.layer_norm_eps;
    sdx_scope_t *L = sdx_scope_new();
    sdx_tensor_t *x, *q, *k, *v, *a, *r;
    if (!L)
        return -1;
    const int64_t split[4] = {B, T, nh, hd}, merged[3] = {B, T, H};
    SDX_TRY(sdx_layer_norm(L, &x, h, y->ln1_w, y->ln1_b, eps));
    SDX_TRY(sdx_linear(L, &q, x, y->q.w, y->q.b));
    SDX_TRY(sdx_linear(L, &k, x, y->k.w, y->k.b));
    SDX_TRY(sdx_linear(L, &v, x, y->v.w, y->v.b));
    SDX_TRY(sdx_view(L, &q, q, split, 4));
    SDX_TRY(sdx_view(L, &k, k, split, 4));
    SDX_TRY(sdx_view(L, &v, v, split, 4));
    SDX_TRY(sdx_transpose(L, &q, q, 1, 2));
    SDX_TRY(sdx_transpose(L, &k, k, 1, 2));
    SDX_TRY(sdx_transpose(L, &v, v, 1, 2));
    SDX_TRY(sdx_sdpa(L, &a, q, k, v, NULL, true, 1.0 / sqrt((double)hd)));
    SDX_TRY(sdx_transpose(L, &a, a, 1, 2));
    SDX_TRY(sdx_reshape(L, &a, a, merged, 3));
    SDX_TRY(sdx_linear(L, &a, a, y->o.w, y->o.b));
    SDX_TRY(sdx_add(L, &r, h, a));
    SDX_TRY(sdx_layer_norm(L, &x, r, y->ln2_w, y->ln2_b, eps));
    SDX_TRY(sdx_linear(L, &x, x, y->fc1.w, y->fc1.b));
    if (c->cfg.quick_gelu)
        SDX_TRY(sdx_quick_gelu(L, &x, x));
    else
        SDX_TRY(sdx_gelu(L, &x, x, false));
    SDX_TRY(sdx_linear(L, &x, x, y->fc2.w, y->fc2.b));
    SDX_TRY(sdx_add(S, out, r, x));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    return -1;
}

/* Pooling rows: argmax(ids) (eos_token_id == 2, legacy) or the first EOS. */
static int s_pool_index(const sdx_clip_t *c, sdx_scope_t *S, sdx_tensor_t **out,
                        const sdx_tensor_t *ids)
{
    const int64_t B = sdx_tensor_size(ids, 0), T = sdx_tensor_size(ids, 1);
    int64_t *h = malloc((size_t)(B * T + B) * sizeof *h);
    if (!h)
        return sdx_set_error("%s: out of memory", c->what);
    int64_t *rows = h + B * T;
    if (sdx_to_host(ids, SDX_I64, h, (size_t)(B * T) * sizeof *h) != 0) {
        free(h);
        return -1;
    }
    for (int64_t b = 0; b < B; b++) {
        const int64_t *r = h + b * T;
        int64_t best = 0;
        if (c->cfg.eos_token_id == 2) {
            for (int64_t t = 1; t < T; t++)
                if (r[t] > r[best])
                    best = t;
        } else {
            for (int64_t t = 0; t < T; t++)
                if (r[t] == c->cfg.eos_token_id) {
                    best = t;
                    break;
                }
        }
        rows[b] = b * T + best;
    }
    sdx_tensor_t *cpu = NULL;
    int rc = sdx_from_host(S, &cpu, rows, SDX_I64, &B, 1);
    free(h);
    if (rc == 0)
        rc = sdx_to_device(S, out, cpu, c->device);
    return rc;
}

static int s_resolve(const sdx_clip_t *c, int idx)
{
    const int n = c->cfg.num_hidden_layers + 1;
    int r = idx < 0 ? idx + n : idx;
    return r >= 0 && r < n ? r : -1;
}

void sdx_clip_output_free(sdx_clip_output_t *out)
{
    if (!out)
        return;
    for (int i = 0; i < SDX_CLIP_MAX_REQ; i++)
        sdx_tensor_free(&out->hidden[i]);
    for (int i = 0; i < SDX_CLIP_MAX_LAYERS + 1; i++)
        sdx_tensor_free(&out->all_hidden[i]);
    sdx_tensor_free(&out->last_hidden_state);
    sdx_tensor_free(&out->pooler_output);
    sdx_tensor_free(&out->text_embeds);
    memset(out, 0, sizeof *out);
}

int sdx_clip_forward(const sdx_clip_t *c, sdx_scope_t *S, const sdx_tensor_t *input_ids,
                     const sdx_clip_request_t *req, sdx_clip_output_t *out)
{
    assert(c && input_ids && req && out);
    memset(out, 0, sizeof *out);
    const int NL = c->cfg.num_hidden_layers;
    if (sdx_tensor_ndim(input_ids) != 2)
        return sdx_set_error("%s: input_ids must be [batch, tokens]", c->what);
    const int64_t T = sdx_tensor_size(input_ids, 1);
    if (T < 1 || T > c->cfg.max_position_embeddings || sdx_tensor_size(input_ids, 0) < 1)
        return sdx_set_error("%s: input_ids has %lld tokens (1..%d allowed)", c->what, (long long)T,
                             c->cfg.max_position_embeddings);
    if (req->n_hidden < 0 || req->n_hidden > SDX_CLIP_MAX_REQ)
        return sdx_set_error("%s: %d hidden states requested (at most %d)", c->what, req->n_hidden,
                             SDX_CLIP_MAX_REQ);
    int want[SDX_CLIP_MAX_REQ];
    int need = 0; /* layers to run */
    for (int i = 0; i < req->n_hidden; i++) {
        want[i] = s_resolve(c, req->hidden[i]);
        if (want[i] < 0)
            return sdx_set_error("%s: hidden_states[%d] does not exist (%d layers)", c->what,
                                 req->hidden[i], NL);
        if (want[i] > need)
            need = want[i];
    }
    if (req->all_hidden || req->last_hidden_state || req->pooled)
        need = NL;
    if ((req->last_hidden_state || req->pooled) && !c->fln_w)
        return sdx_set_error("%s: missing weight 'text_model.final_layer_norm.weight'", c->what);

    sdx_tensor_t *states[SDX_CLIP_MAX_LAYERS + 1] = {0};
    sdx_tensor_t *ids, *h, *pos, *ln = NULL, *pooled = NULL, *proj = NULL;
    sdx_scope_t *L = sdx_scope_new();
    if (!L)
        return -1;
    /* embeddings: token_embedding(ids) + position_embedding(arange(T)) */
    SDX_TRY(sdx_to(L, &ids, input_ids, SDX_I64, c->device));
    SDX_TRY(sdx_embedding(L, &h, c->tok_emb, ids));
    SDX_TRY(sdx_narrow(L, &pos, c->pos_emb, 0, 0, T));
    SDX_TRY(sdx_add(L, &h, h, pos));
    states[0] = h;
    for (int i = 0; i < need; i++) {
        SDX_TRY(s_layer(c, &c->layers[i], L, &h, h));
        states[i + 1] = h;
    }
    if (req->last_hidden_state || req->pooled)
        SDX_TRY(sdx_layer_norm(L, &ln, states[NL], c->fln_w, c->fln_b, c->cfg.layer_norm_eps));
    if (req->pooled) {
        sdx_tensor_t *rows, *flat;
        SDX_TRY(s_pool_index(c, L, &rows, input_ids));
        SDX_TRY(sdx_flatten(L, &flat, ln, 0, 1));
        SDX_TRY(sdx_index_select(L, &pooled, flat, 0, rows));
        if (c->proj)
            SDX_TRY(sdx_linear(L, &proj, pooled, c->proj, NULL));
    }
    /* hand out new handles on the results, then drop every temporary */
    for (int i = 0; i < req->n_hidden; i++)
        SDX_TRY(sdx_alias(S, &out->hidden[i], states[want[i]]));
    if (req->all_hidden) {
        for (int i = 0; i <= NL; i++)
            SDX_TRY(sdx_alias(S, &out->all_hidden[i], states[i]));
        out->n_all_hidden = NL + 1;
    }
    if (req->last_hidden_state)
        SDX_TRY(sdx_alias(S, &out->last_hidden_state, ln));
    if (pooled)
        SDX_TRY(sdx_alias(S, &out->pooler_output, pooled));
    if (proj)
        SDX_TRY(sdx_alias(S, &out->text_embeds, proj));
    sdx_scope_free(&L);
    return 0;
fail:
    sdx_scope_free(&L);
    if (!S)
        sdx_clip_output_free(out);
    else
        memset(out, 0, sizeof *out); /* the scope still owns what was made */
    return -1;
}
