/*  sdx_lora.c - LoRA files read against a model, and fused sets of them;
    see sdx_lora.h.

    A file is read in three passes: every key is classified by static tables
    (refused algorithms, tensor roles by suffix), the keys are sorted so the
    tensors of one module sit together, and each module is mapped to a
    diffusers weight (kohya names through the compound-word table and
    sdx_namemap) and its shapes are checked against that weight. Only then
    are tensors converted. Not for: keeping files open, or the VAE.
*/
#include "sdx_lora.h"

#include "sdx_namemap.h"
#include "sdx_safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- tables */

/* Keys of adapters that are not plain LoRA, refused by name (first match;
   `end`: the needle must end the key). */
static const struct {
    const char *needle;
    bool end;
    const char *what;
} s_refused[] = {
    {".hada_w1_a", false, "LyCORIS LoHa"},
    {".hada_", false, "LyCORIS LoHa"},
    {".lokr_w1", false, "LyCORIS LoKr"},
    {".lokr_", false, "LyCORIS LoKr"},
    {".lora_mid.", false, "LyCORIS LoCon with CP/Tucker decomposition (lora_mid)"},
    {".oft_blocks", false, "LyCORIS OFT"},
    {".oft_diag", false, "LyCORIS OFT"},
    {".on_input", true, "LyCORIS IA3"},
    {".diff", true, "LyCORIS full (diff)"},
    {".diff_b", true, "LyCORIS full (diff)"},
    {".w_norm", true, "LyCORIS norm"},
    {".b_norm", true, "LyCORIS norm"},
    {".dora_scale", true, "DoRA"},
    {".lora_magnitude_vector", false, "DoRA"},
};

typedef enum { R_DOWN = 0, R_UP, R_ALPHA, R_NROLES } s_role_t;
static const char *const s_role_names[R_NROLES] = {"lora_down", "lora_up", "alpha"};

/* Tensor roles by key suffix; what precedes the suffix is the module. */
static const struct {
    const char *suffix;
    s_role_t role;
} s_suffixes[] = {
    {".lora_down.weight", R_DOWN},
    {".lora_up.weight", R_UP},
    {".lora.down.weight", R_DOWN},
    {".lora.up.weight", R_UP},
    {".lora_linear_layer.down.weight", R_DOWN},
    {".lora_linear_layer.up.weight", R_UP},
    {".lora_A.weight", R_DOWN},
    {".lora_B.weight", R_UP},
    {".lora_A.default.weight", R_DOWN},
    {".lora_B.default.weight", R_UP},
    /* diffusers' attention-processor files (before 0.21): attn1.processor.to_q_lora */
    {"_lora.down.weight", R_DOWN},
    {"_lora.up.weight", R_UP},
    {".alpha", R_ALPHA},
};

/* Module renames at the end of a diffusers name (attention-processor files). */
static const struct {
    const char *from, *to;
} s_module_renames[] = {
    {".processor.to_q", ".to_q"},
    {".processor.to_k", ".to_k"},
    {".processor.to_v", ".to_v"},
    {".processor.to_out", ".to_out.0"},
};

typedef enum { N_KOHYA = 0, N_DIFFUSERS } s_naming_t;

/* Module prefixes: which component, and how the rest is named. */
static const struct {
    const char *prefix;
    sdx_nm_comp_t comp;
    s_naming_t naming;
} s_prefixes[] = {
    {"lora_unet_", SDX_NM_UNET, N_KOHYA},       {"lora_te1_", SDX_NM_TE1, N_KOHYA},
    {"lora_te2_", SDX_NM_TE2, N_KOHYA},         {"unet.", SDX_NM_UNET, N_DIFFUSERS},
    {"text_encoder.", SDX_NM_TE1, N_DIFFUSERS}, {"text_encoder_2.", SDX_NM_TE2, N_DIFFUSERS},
};

/* Module names that contain '_' (kohya writes every '.' as '_'): SGM UNet,
   diffusers UNet and HF CLIP words. Longest match wins. A new module word is
   one new row. */
static const char *const s_compounds[] = {
    /* SGM openaimodel */
    "input_blocks",
    "middle_block",
    "output_blocks",
    "in_layers",
    "out_layers",
    "emb_layers",
    "skip_connection",
    "time_embed",
    "label_emb",
    /* diffusers UNet (some SDXL LoRAs name modules this way) */
    "down_blocks",
    "mid_block",
    "up_blocks",
    "conv_shortcut",
    "time_emb_proj",
    "conv_in",
    "conv_out",
    "conv_norm_out",
    "time_embedding",
    "add_embedding",
    "linear_1",
    "linear_2",
    /* both UNet namings: transformer blocks */
    "transformer_blocks",
    "proj_in",
    "proj_out",
    "to_q",
    "to_k",
    "to_v",
    "to_out",
    /* HF CLIP */
    "text_model",
    "self_attn",
    "q_proj",
    "k_proj",
    "v_proj",
    "out_proj",
    "layer_norm1",
    "layer_norm2",
    "final_layer_norm",
    "token_embedding",
    "position_embedding",
    "text_projection",
};

/* diffusers UNet module roots: a kohya UNet name starting with one of these
   is already in diffusers naming (no SGM mapping). */
static const char *const s_diffusers_roots[] = {
    "down_blocks.", "mid_block.",    "up_blocks.",      "conv_in",
    "conv_out",     "conv_norm_out", "time_embedding.", "add_embedding.",
};

#define S_N(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- types */

typedef struct {
    sdx_nm_comp_t comp;
    char name[SDX_NM_NAME_MAX]; /* diffusers weight name inside comp */
    sdx_tensor_t *down;         /* [rank, in * kh * kw], f32, the model's device */
    sdx_tensor_t *up;           /* [out, rank] */
    double scale;               /* alpha / rank */
} s_entry_t;

struct sdx_lora {
    const char *format;
    s_entry_t *entries; /* sorted by (comp, name) */
    size_t count, skipped;
};

/* One key of the file while it is read. */
typedef struct {
    char *module; /* owned */
    s_role_t role;
    const sdx_st_tensor_t *t; /* borrowed from the open file */
} s_key_t;

static bool s_starts(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static bool s_ends(const char *s, size_t n, const char *suf)
{
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

static sdx_weights_t *s_comp_weights(const sdx_model_t *m, sdx_nm_comp_t c)
{
    switch (c) {
    case SDX_NM_UNET:
        return m->unet;
    case SDX_NM_VAE:
        return m->vae;
    case SDX_NM_TE1:
        return m->te1;
    case SDX_NM_TE2:
        return m->te2;
    default:
        return NULL;
    }
}

static int s_key_cmp(const void *a, const void *b)
{
    const s_key_t *x = a, *y = b;
    int c = strcmp(x->module, y->module);
    return c ? c : (int)x->role - (int)y->role;
}

static int s_entry_cmp(const void *a, const void *b)
{
    const s_entry_t *x = a, *y = b;
    if (x->comp != y->comp)
        return (int)x->comp - (int)y->comp;
    return strcmp(x->name, y->name);
}

/* kohya "input_blocks_4_1_transformer_blocks_0_attn1_to_out_0" ->
   "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0". */
static int s_unkohya(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    const char *p = in;
    while (*p) {
        size_t best = 0;
        for (size_t i = 0; i < S_N(s_compounds); i++) {
            size_t k = strlen(s_compounds[i]);
            if (k > best && strncmp(p, s_compounds[i], k) == 0 && (p[k] == '_' || p[k] == 0))
                best = k;
        }
        if (!best) /* one word: up to the next '_' */
            best = strcspn(p, "_");
        if (best == 0 || o + best + 2 > outlen)
            return -1; /* "__", a leading '_' or too long */
        if (o)
            out[o++] = '.';
        memcpy(out + o, p, best);
        o += best;
        p += best;
        if (*p == '_') {
            p++;
            if (!*p)
                return -1; /* trailing '_' */
        }
    }
    out[o] = 0;
    return o ? 0 : -1;
}

/* The diffusers weight a module changes. 1: mapped into (*comp, target);
   0: its component is not loaded; -1 with the reason. */
static int s_map_module(const char *path, const char *module, const sdx_model_t *m,
                        sdx_nm_comp_t *comp, char *target, size_t tlen, const char **naming)
{
    if (s_starts(module, "lora_te_"))
        return sdx_set_error("%s: looks like an SD1.x/SD2.x LoRA (key '%s' names a single text "
                             "encoder, lora_te_*), only SDXL LoRAs are supported",
                             path, module);
    size_t r = 0;
    while (r < S_N(s_prefixes) && !s_starts(module, s_prefixes[r].prefix))
        r++;
    if (r == S_N(s_prefixes))
        return sdx_set_error("%s: module '%s' belongs to no component (expected lora_unet_, "
                             "lora_te1_, lora_te2_, unet., text_encoder. or text_encoder_2.)",
                             path, module);
    *comp = s_prefixes[r].comp;
    *naming = s_prefixes[r].naming == N_KOHYA ? "kohya" : "diffusers";
    const char *rest = module + strlen(s_prefixes[r].prefix);
    sdx_weights_t *w = s_comp_weights(m, *comp);
    if (!w)
        return 0;

    char dotted[SDX_NM_NAME_MAX], wname[SDX_NM_NAME_MAX + 8];
    if (s_prefixes[r].naming == N_KOHYA) {
        if (s_unkohya(rest, dotted, sizeof dotted) != 0)
            return sdx_set_error("%s: module '%s' is not a kohya module name", path, module);
    } else {
        size_t len = strlen(rest);
        if (len >= sizeof dotted)
            return sdx_set_error("%s: module name too long: '%.100s...'", path, module);
        strcpy(dotted, rest);
        for (size_t i = 0; i < S_N(s_module_renames); i++)
            if (s_ends(dotted, len, s_module_renames[i].from)) {
                size_t f = strlen(s_module_renames[i].from);
                if (len - f + strlen(s_module_renames[i].to) >= sizeof dotted)
                    return sdx_set_error("%s: module name too long: '%.100s...'", path, module);
                strcpy(dotted + len - f, s_module_renames[i].to);
                break;
            }
    }
    snprintf(wname, sizeof wname, "%s.weight", dotted);

    /* kohya UNet modules are SGM paths (unless already diffusers names),
       text_encoder ones HF names: through the single-file tables */
    sdx_nm_target_t t[3];
    int nt = 1;
    bool sgm = *comp == SDX_NM_UNET && s_prefixes[r].naming == N_KOHYA;
    for (size_t i = 0; sgm && i < S_N(s_diffusers_roots); i++)
        if (s_starts(dotted, s_diffusers_roots[i]))
            sgm = false;
    if (sgm) {
        nt = sdx_namemap_unet(wname, m->unet_cfg.layers_per_block, t);
    } else if (*comp == SDX_NM_TE1 && s_prefixes[r].naming == N_KOHYA) {
        nt = sdx_namemap_te1(wname, t);
    } else {
        if (strlen(wname) >= sizeof t[0].name)
            return sdx_set_error("%s: module name too long: '%.100s...'", path, module);
        memcpy(t[0].name, wname, strlen(wname) + 1);
        t[0].op = SDX_NM_COPY;
    }
    if (nt != 1 || t[0].op != SDX_NM_COPY || !sdx_weights_has(w, t[0].name))
        return sdx_set_error("%s: key '%s' matches no module of the model (no %s weight "
                             "'%s')",
                             path, module, sdx_nm_comp_name(*comp), nt == 1 ? t[0].name : wname);
    if (strlen(t[0].name) >= tlen)
        return sdx_set_error("%s: module name too long: '%.100s...'", path, module);
    strcpy(target, t[0].name);
    return 1;
}

static void s_shape_str(char *buf, size_t len, const int64_t *shape, int ndim)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
}

/* Check down/up against the target weight w; the rank in *rank. */
static int s_check_shapes(const char *path, const char *module, const char *target,
                          const sdx_tensor_t *w, const sdx_st_tensor_t *d, const sdx_st_tensor_t *u,
                          int64_t *rank)
{
    int64_t ws[SDX_MAX_DIMS];
    int wn = sdx_tensor_shape(w, ws);
    bool ok = (wn == 2 || wn == 4) && (d->ndim == 2 || d->ndim == 4) &&
              (u->ndim == 2 || u->ndim == 4) && d->shape[0] >= 1 && u->shape[1] == d->shape[0] &&
              u->shape[0] == ws[0] && d->shape[1] == ws[1];
    /* up is [out, rank] or a 1x1 conv; down has the target's kernel */
    if (ok && u->ndim == 4)
        ok = u->shape[2] == 1 && u->shape[3] == 1;
    if (ok && d->ndim == 4)
        ok = wn == 4 ? d->shape[2] == ws[2] && d->shape[3] == ws[3]
                     : d->shape[2] == 1 && d->shape[3] == 1;
    if (ok && d->ndim == 2 && wn == 4)
        ok = ws[2] == 1 && ws[3] == 1;
    if (!ok) {
        char a[96], b[96], c[96];
        s_shape_str(a, sizeof a, d->shape, d->ndim);
        s_shape_str(b, sizeof b, u->shape, u->ndim);
        s_shape_str(c, sizeof c, ws, wn);
        return sdx_set_error("%s: module '%s': lora_down %s and lora_up %s do not fit '%s' %s",
                             path, module, a, b, target, c);
    }
    *rank = d->shape[0];
    return 0;
}

static void s_free_keys(s_key_t *keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++)
        free(keys[i].module);
    free(keys);
}

/* Pass 1: every tensor of st as (module, role). */
static int s_read_keys(sdx_safetensors_t *st, const char *path, s_key_t **out, size_t *nout)
{
    size_t n = sdx_safetensors_count(st);
    s_key_t *keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys)
        return sdx_set_error("%s: out of memory", path);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const sdx_st_tensor_t *t = sdx_safetensors_at(st, i);
        size_t len = strlen(t->name), j = 0;
        for (j = 0; j < S_N(s_refused); j++)
            if (s_refused[j].end ? s_ends(t->name, len, s_refused[j].needle)
                                 : strstr(t->name, s_refused[j].needle) != NULL) {
                sdx_set_error("%s: %s (key '%s'), only LoRA (lora_down/lora_up) is supported", path,
                              s_refused[j].what, t->name);
                goto fail;
            }
        j = 0;
        while (j < S_N(s_suffixes) && !s_ends(t->name, len, s_suffixes[j].suffix))
            j++;
        if (j == S_N(s_suffixes)) {
            sdx_set_error("%s: key '%s' is not a LoRA tensor (expected MODULE.lora_down.weight, "
                          ".lora_up.weight, .alpha, .lora_A/.lora_B.weight, ...)",
                          path, t->name);
            goto fail;
        }
        size_t mlen = len - strlen(s_suffixes[j].suffix);
        keys[k].module = strndup(t->name, mlen);
        if (!keys[k].module) {
            sdx_set_error("%s: out of memory", path);
            goto fail;
        }
        keys[k].role = s_suffixes[j].role;
        keys[k].t = t;
        k++;
    }
    qsort(keys, k, sizeof *keys, s_key_cmp);
    *out = keys;
    *nout = k;
    return 0;
fail:
    s_free_keys(keys, k);
    return -1;
}

/* The alpha of a module: a one-element float tensor. */
static int s_alpha(sdx_safetensors_t *st, const char *path, const char *module,
                   const sdx_st_tensor_t *t, double *out)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *a;
    int rc = -1;
    if (!S)
        return sdx_set_error("%s: out of memory", path);
    int64_t numel = 1;
    for (int i = 0; i < t->ndim; i++)
        numel *= t->shape[i];
    if (numel != 1) {
        sdx_set_error("%s: module '%s': alpha has %lld values, expected one", path, module,
                      (long long)numel);
        goto done;
    }
    if (sdx_safetensors_tensor(S, &a, st, t) != 0 || sdx_item(a, out) != 0)
        goto done;
    if (!isfinite(*out)) {
        sdx_set_error("%s: module '%s': alpha is not finite", path, module);
        goto done;
    }
    rc = 0;
done:
    sdx_scope_free(&S);
    return rc;
}

/* down/up as 2-D f32 tensors on dev (caller-owned). */
static int s_convert(sdx_safetensors_t *st, const sdx_st_tensor_t *t, int64_t d0, sdx_device_t dev,
                     sdx_tensor_t **out)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *x;
    int64_t shape[2] = {d0, -1};
    int rc = -1;
    if (!S)
        return sdx_set_error("lora: out of memory");
    bool finite = false;
    if (sdx_safetensors_tensor(S, &x, st, t) != 0 || sdx_to(S, &x, x, SDX_F32, dev) != 0 ||
        sdx_isfinite_all(x, &finite) != 0)
        goto done;
    if (!finite) {
        /* one NaN would spread through every fused weight it touches */
        sdx_set_error("'%s' holds NaN or infinite values", t->name);
        goto done;
    }
    if (sdx_reshape(S, &x, x, shape, 2) == 0 && sdx_contiguous(S, &x, x) == 0 &&
        sdx_clone(NULL, out, x) == 0)
        rc = 0;
done:
    sdx_scope_free(&S);
    return rc;
}

void sdx_lora_free(sdx_lora_t **lp)
{
    if (!lp || !*lp)
        return;
    sdx_lora_t *l = *lp;
    for (size_t i = 0; i < l->count; i++) {
        sdx_tensor_free(&l->entries[i].down);
        sdx_tensor_free(&l->entries[i].up);
    }
    free(l->entries);
    free(l);
    *lp = NULL;
}

sdx_lora_t *sdx_lora_load(const char *path, const sdx_model_t *m)
{
    if (!path || !*path || !m) {
        sdx_set_error("lora: no path");
        return NULL;
    }
    /* the catalogue's classifier first: it names what a wrong file is (a
       checkpoint, an SD1.x LoRA, ...) */
    char why[512] = "";
    sdx_arch_t arch = sdx_detect_arch(path, why, sizeof why);
    if (arch != SDX_ARCH_LORA) {
        /* unknown: sdx_last_error() already says why, with the path */
        if (arch != SDX_ARCH_UNKNOWN)
            sdx_set_error("%s: a %s, not a LoRA (%s)", path, sdx_arch_name(arch), why);
        return NULL;
    }
    sdx_safetensors_t *st = sdx_safetensors_open(path);
    if (!st)
        return NULL;
    s_key_t *keys = NULL;
    size_t nkeys = 0;
    sdx_lora_t *l = calloc(1, sizeof *l);
    if (!l) {
        sdx_set_error("%s: out of memory", path);
        goto fail;
    }
    if (s_read_keys(st, path, &keys, &nkeys) != 0)
        goto fail;
    if (nkeys == 0) {
        sdx_set_error("%s: no LoRA tensors in the file", path);
        goto fail;
    }
    l->entries = calloc(nkeys, sizeof *l->entries); /* at most one per key */
    if (!l->entries) {
        sdx_set_error("%s: out of memory", path);
        goto fail;
    }

    bool kohya = false, diffusers = false, peft = false;
    for (size_t i = 0; i < nkeys;) {
        /* the keys of one module: at most one of each role */
        const sdx_st_tensor_t *role[R_NROLES] = {0};
        const char *module = keys[i].module;
        size_t j = i;
        for (; j < nkeys && strcmp(keys[j].module, module) == 0; j++) {
            if (role[keys[j].role]) {
                sdx_set_error("%s: module '%s' has two %s tensors ('%s', '%s')", path, module,
                              s_role_names[keys[j].role], role[keys[j].role]->name,
                              keys[j].t->name);
                goto fail;
            }
            role[keys[j].role] = keys[j].t;
        }
        i = j;
        if (!role[R_DOWN] || !role[R_UP]) {
            sdx_set_error("%s: module '%s' has %s but no %s", path, module,
                          role[R_DOWN] ? "lora_down"
                          : role[R_UP] ? "lora_up"
                                       : "only an alpha",
                          role[R_DOWN] ? "lora_up" : "lora_down");
            goto fail;
        }
        s_entry_t *e = &l->entries[l->count];
        const char *naming = "";
        int mapped = s_map_module(path, module, m, &e->comp, e->name, sizeof e->name, &naming);
        if (mapped < 0)
            goto fail;
        if (mapped == 0) {
            l->skipped++;
            continue;
        }
        if (strcmp(naming, "kohya") == 0)
            kohya = true;
        else if (strstr(role[R_DOWN]->name, "lora_A"))
            peft = true;
        else
            diffusers = true;
        sdx_tensor_t *w = sdx_weights_get(s_comp_weights(m, e->comp), e->name);
        int64_t rank = 0;
        if (s_check_shapes(path, module, e->name, w, role[R_DOWN], role[R_UP], &rank) != 0)
            goto fail;
        double alpha = (double)rank;
        if (role[R_ALPHA] && s_alpha(st, path, module, role[R_ALPHA], &alpha) != 0)
            goto fail;
        e->scale = alpha / (double)rank;
        sdx_device_t dev = sdx_tensor_device(w);
        if (s_convert(st, role[R_DOWN], rank, dev, &e->down) != 0 ||
            s_convert(st, role[R_UP], sdx_tensor_size(w, 0), dev, &e->up) != 0) {
            sdx_tensor_free(&e->down);
            char why[512];
            snprintf(why, sizeof why, "%s", sdx_last_error());
            sdx_set_error("%s: module '%s': %s", path, module, why);
            goto fail;
        }
        l->count++;
    }
    qsort(l->entries, l->count, sizeof *l->entries, s_entry_cmp);
    for (size_t i = 1; i < l->count; i++)
        if (s_entry_cmp(&l->entries[i - 1], &l->entries[i]) == 0) {
            sdx_set_error("%s: two modules change %s '%s'", path,
                          sdx_nm_comp_name(l->entries[i].comp), l->entries[i].name);
            goto fail;
        }
    l->format = (kohya + diffusers + peft) > 1 ? "mixed"
                : kohya                        ? "kohya"
                : peft                         ? "peft"
                                               : "diffusers";
    s_free_keys(keys, nkeys);
    sdx_safetensors_close(&st);
    return l;
fail:
    s_free_keys(keys, nkeys);
    sdx_lora_free(&l);
    {
        char why[1024];
        snprintf(why, sizeof why, "%s", sdx_last_error());
        sdx_safetensors_close(&st);
        sdx_set_error("%s", why);
    }
    return NULL;
}

const char *sdx_lora_format(const sdx_lora_t *l)
{
    return l && l->format ? l->format : "?";
}

size_t sdx_lora_count(const sdx_lora_t *l)
{
    return l ? l->count : 0;
}

size_t sdx_lora_skipped(const sdx_lora_t *l)
{
    return l ? l->skipped : 0;
}

static const s_entry_t *s_find(const sdx_lora_t *l, sdx_nm_comp_t comp, const char *name)
{
    s_entry_t key;
    key.comp = comp;
    snprintf(key.name, sizeof key.name, "%s", name);
    return bsearch(&key, l->entries, l->count, sizeof *l->entries, s_entry_cmp);
}

/* ---------------------------------------------------------------- fused sets */

/* What identifies a file between calls: a changed file is a new set. */
typedef struct {
    long long size, mtime_s, mtime_ns;
} s_stamp_t;

struct sdx_lora_state {
    sdx_model_t *m;
    /* originals (host copies) of the touched weights, per component, by name */
    sdx_weights_t *orig[SDX_NM_NCOMP];
    sdx_lora_spec_t *cur; /* paths owned */
    s_stamp_t *stamps;
    int ncur;
};

static void s_stamp(const char *path, s_stamp_t *s)
{
    struct stat sb;
    memset(s, 0, sizeof *s);
    if (stat(path, &sb) == 0) {
        s->size = (long long)sb.st_size;
        s->mtime_s = (long long)sb.st_mtim.tv_sec;
        s->mtime_ns = (long long)sb.st_mtim.tv_nsec;
    }
}

static void s_clear_set(sdx_lora_state_t *s)
{
    for (int i = 0; i < s->ncur; i++)
        free((char *)s->cur[i].path);
    free(s->cur);
    free(s->stamps);
    s->cur = NULL;
    s->stamps = NULL;
    s->ncur = 0;
}

static void s_free_maps(sdx_weights_t **maps)
{
    for (int c = 0; c < SDX_NM_NCOMP; c++)
        sdx_weights_free(&maps[c]);
}

static int s_new_maps(sdx_weights_t **maps)
{
    for (int c = 0; c < SDX_NM_NCOMP; c++) {
        maps[c] = sdx_weights_new();
        if (!maps[c]) {
            s_free_maps(maps);
            return -1;
        }
    }
    return 0;
}

sdx_lora_state_t *sdx_lora_state_new(sdx_model_t *m)
{
    sdx_lora_state_t *s = calloc(1, sizeof *s);
    if (!s || !m || s_new_maps(s->orig) != 0) {
        free(s);
        sdx_set_error("lora: out of memory");
        return NULL;
    }
    s->m = m;
    return s;
}

void sdx_lora_state_free(sdx_lora_state_t **sp)
{
    if (!sp || !*sp)
        return;
    sdx_lora_state_t *s = *sp;
    s_free_maps(s->orig);
    s_clear_set(s);
    free(s);
    *sp = NULL;
}

const sdx_lora_spec_t *sdx_lora_state_current(const sdx_lora_state_t *s, int *n)
{
    if (n)
        *n = s ? s->ncur : 0;
    return s ? s->cur : NULL;
}

size_t sdx_lora_state_touched(const sdx_lora_state_t *s)
{
    size_t n = 0;
    for (int c = 0; s && c < SDX_NM_NCOMP; c++)
        n += sdx_weights_count(s->orig[c]);
    return n;
}

static bool s_same_set(const sdx_lora_state_t *s, const sdx_lora_spec_t *specs, int n)
{
    if (n != s->ncur)
        return false;
    for (int i = 0; i < n; i++) {
        s_stamp_t st;
        s_stamp(specs[i].path, &st);
        if (strcmp(specs[i].path, s->cur[i].path) != 0 || specs[i].weight != s->cur[i].weight ||
            memcmp(&st, &s->stamps[i], sizeof st) != 0)
            return false;
    }
    return true;
}

/* Copy every original in maps back into the model (best effort). */
static void s_restore(sdx_model_t *m, sdx_weights_t **maps)
{
    for (int c = 0; c < SDX_NM_NCOMP; c++)
        for (size_t i = 0; i < sdx_weights_count(maps[c]); i++) {
            sdx_tensor_t *w =
                sdx_weights_get(s_comp_weights(m, c), sdx_weights_name_at(maps[c], i));
            if (w)
                sdx_copy_(w, sdx_weights_tensor_at(maps[c], i));
        }
}

/* W = cast(f32(W0) + sum_i weight_i * scale_i * up_i @ down_i). */
static int s_fuse_one(sdx_tensor_t *w, const sdx_tensor_t *orig, sdx_nm_comp_t comp,
                      const char *name, sdx_lora_t *const *loras, const sdx_lora_spec_t *specs,
                      int n)
{
    sdx_scope_t *S = sdx_scope_new();
    if (!S)
        return sdx_set_error("lora: out of memory");
    int64_t shape[SDX_MAX_DIMS];
    int nd = sdx_tensor_shape(w, shape);
    sdx_tensor_t *acc, *d;
    SDX_TRY(sdx_to(S, &acc, orig, SDX_F32, sdx_tensor_device(w)));
    for (int i = 0; i < n; i++) {
        const s_entry_t *e = s_find(loras[i], comp, name);
        if (!e)
            continue;
        SDX_TRY(sdx_matmul(S, &d, e->up, e->down));
        SDX_TRY(sdx_reshape(S, &d, d, shape, nd));
        SDX_TRY(sdx_add_scaled(S, &acc, acc, d, specs[i].weight * e->scale));
    }
    SDX_TRY(sdx_copy_(w, acc));
    sdx_scope_free(&S);
    return 0;
fail:
    sdx_scope_free(&S);
    return -1;
}

int sdx_lora_state_set(sdx_lora_state_t *s, const sdx_lora_spec_t *specs, int n)
{
    if (!s || n < 0 || (n > 0 && !specs))
        return sdx_set_error("lora: bad arguments");
    for (int i = 0; i < n; i++) {
        if (!specs[i].path || !*specs[i].path)
            return sdx_set_error("lora %d: no path", i);
        if (!isfinite(specs[i].weight))
            return sdx_set_error("lora %d (%s): weight is not finite", i, specs[i].path);
    }
    if (s_same_set(s, specs, n))
        return 0;

    sdx_model_t *m = s->m;
    int rc = -1;
    char keep[1024];
    sdx_lora_t **loras = calloc((size_t)(n ? n : 1), sizeof *loras);
    sdx_lora_spec_t *cur = calloc((size_t)(n ? n : 1), sizeof *cur);
    s_stamp_t *stamps = calloc((size_t)(n ? n : 1), sizeof *stamps);
    sdx_weights_t *next[SDX_NM_NCOMP] = {0};
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    if (!loras || !cur || !stamps || s_new_maps(next) != 0) {
        sdx_set_error("lora: out of memory");
        goto done;
    }
    /* 1. read and check every file; nothing has changed yet */
    for (int i = 0; i < n; i++) {
        s_stamp(specs[i].path, &stamps[i]);
        loras[i] = sdx_lora_load(specs[i].path, m);
        if (!loras[i])
            goto done;
    }
    /* 2. the originals of every weight the new set touches: kept from the
       current set, else copied aside now (still nothing changed) */
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < loras[i]->count; k++) {
            const s_entry_t *e = &loras[i]->entries[k];
            if (sdx_weights_has(next[e->comp], e->name))
                continue;
            sdx_tensor_t *o = sdx_weights_get(s->orig[e->comp], e->name), *copy = NULL;
            sdx_tensor_t *w = sdx_weights_get(s_comp_weights(m, e->comp), e->name);
            int r = o ? sdx_alias(NULL, &copy, o)
                    : sdx_tensor_device(w).type == SDX_CPU
                        ? sdx_clone(NULL, &copy, w)
                        : sdx_to_device(NULL, &copy, w, (sdx_device_t){SDX_CPU, 0});
            if (r != 0 || sdx_weights_put(next[e->comp], e->name, copy) != 0) {
                sdx_tensor_free(&copy);
                goto done;
            }
        }
    /* 3. write: weights left by the new set get their originals, the others
       are recomputed from theirs */
    for (int c = 0; c < SDX_NM_NCOMP; c++)
        for (size_t k = 0; k < sdx_weights_count(s->orig[c]); k++) {
            const char *name = sdx_weights_name_at(s->orig[c], k);
            if (sdx_weights_has(next[c], name))
                continue;
            if (sdx_copy_(sdx_weights_get(s_comp_weights(m, c), name),
                          sdx_weights_tensor_at(s->orig[c], k)) != 0)
                goto undo;
        }
    for (int c = 0; c < SDX_NM_NCOMP; c++)
        for (size_t k = 0; k < sdx_weights_count(next[c]); k++) {
            const char *name = sdx_weights_name_at(next[c], k);
            if (s_fuse_one(sdx_weights_get(s_comp_weights(m, c), name),
                           sdx_weights_tensor_at(next[c], k), c, name, loras, specs, n) != 0)
                goto undo;
        }
    for (int i = 0; i < n; i++) {
        cur[i].weight = specs[i].weight;
        cur[i].path = strdup(specs[i].path);
        if (!cur[i].path) {
            sdx_set_error("lora: out of memory");
            goto undo;
        }
    }
    s_free_maps(s->orig);
    memcpy(s->orig, next, sizeof next);
    memset(next, 0, sizeof next);
    s_clear_set(s);
    s->cur = cur;
    s->stamps = stamps;
    s->ncur = n;
    cur = NULL;
    stamps = NULL;
    rc = 0;
    goto done;
undo : {
    /* back to the unmodified model: every original we hold goes back */
    char why[1024];
    snprintf(why, sizeof why, "%s", sdx_last_error());
    s_restore(m, s->orig);
    s_restore(m, next);
    s_free_maps(s->orig);
    s_new_maps(s->orig);
    s_clear_set(s);
    sdx_set_error("%s (all LoRAs removed)", why);
}
done:
    snprintf(keep, sizeof keep, "%s", rc ? sdx_last_error() : "");
    for (int i = 0; i < n && cur; i++)
        free((char *)cur[i].path);
    free(cur);
    free(stamps);
    for (int i = 0; loras && i < n; i++)
        sdx_lora_free(&loras[i]);
    free(loras);
    s_free_maps(next);
    sdx_inference_guard_free(&guard);
    if (rc)
        sdx_set_error("%s", keep);
    return rc;
}
