/*  sdx_tokenizer.c - CLIP byte-level BPE tokenizer (see sdx_tokenizer.h).

    Every step mirrors a piece of transformers 4.45's Python (named in the
    comments) because the goal is bit-exact ids, including the odd corners:
    the added-token Trie's cut rules, BasicTokenizer's clean-up order
    (clean -> CJK spacing -> NFC -> split -> lower), str.lower()'s Final_Sigma,
    and the regex module's IGNORECASE matching. Unicode data comes from the
    generated sdx_unicode_tables.c. Not for: anything but CLIP's vocabulary
    format (vocab.json + merges.txt).
*/
#include "sdx_tokenizer.h"

#include "sdx_torch.h"

#include <cjson/cJSON.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- unicode tables */

enum {
    SDX_UC_L = 1 << 0,
    SDX_UC_N = 1 << 1,
    SDX_UC_C = 1 << 2,
    SDX_UC_ZS = 1 << 3,
    SDX_UC_SPACE = 1 << 4,
    SDX_UC_CASED = 1 << 5,
    SDX_UC_CASE_IGNORABLE = 1 << 6,
    SDX_UC_L_IC = 1 << 7,
    SDX_UC_N_IC = 1 << 8,
};

extern const size_t sdx_uc_range_count;
extern const uint32_t sdx_uc_range_start[];
extern const uint16_t sdx_uc_range_flags[];
extern const size_t sdx_uc_lower_count;
extern const uint32_t sdx_uc_lower[][4];
extern const size_t sdx_uc_ccc_count;
extern const uint32_t sdx_uc_ccc[][3];
extern const size_t sdx_uc_decomp_count;
extern const uint32_t sdx_uc_decomp[][3];
extern const uint32_t sdx_uc_decomp_pool[];
extern const size_t sdx_uc_comp_count;
extern const uint32_t sdx_uc_comp[][3];

static unsigned s_flags(uint32_t c)
{
    size_t lo = 0, hi = sdx_uc_range_count;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (sdx_uc_range_start[mid] <= c)
            lo = mid;
        else
            hi = mid;
    }
    return sdx_uc_range_flags[lo];
}

static int s_ccc(uint32_t c)
{
    size_t lo = 0, hi = sdx_uc_ccc_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < sdx_uc_ccc[mid][0])
            hi = mid;
        else if (c > sdx_uc_ccc[mid][1])
            lo = mid + 1;
        else
            return (int)sdx_uc_ccc[mid][2];
    }
    return 0;
}

/* Row of a table sorted by its first column, or NULL. */
static const uint32_t *s_find1(const uint32_t *table, size_t rows, size_t width, uint32_t key)
{
    size_t lo = 0, hi = rows;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *r = table + mid * width;
        if (key < r[0])
            hi = mid;
        else if (key > r[0])
            lo = mid + 1;
        else
            return r;
    }
    return NULL;
}

static uint32_t s_compose(uint32_t a, uint32_t b)
{
    /* Hangul LV and LVT (Unicode 3.12) */
    if (a >= 0x1100 && a < 0x1100 + 19 && b >= 0x1161 && b < 0x1161 + 21)
        return 0xAC00 + ((a - 0x1100) * 21 + (b - 0x1161)) * 28;
    if (a >= 0xAC00 && a < 0xAC00 + 11172 && (a - 0xAC00) % 28 == 0 && b > 0x11A7 &&
        b < 0x11A7 + 28)
        return a + (b - 0x11A7);
    size_t lo = 0, hi = sdx_uc_comp_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *r = sdx_uc_comp[mid];
        if (a < r[0] || (a == r[0] && b < r[1]))
            hi = mid;
        else if (a > r[0] || b > r[1])
            lo = mid + 1;
        else
            return r[2];
    }
    return 0;
}

/* ---------------------------------------------------------------- code point buffers */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} s_cps_t;

static int s_cps_push(s_cps_t *b, uint32_t c)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        uint32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return sdx_set_error("tokenizer: out of memory");
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = c;
    return 0;
}

static int s_utf8_decode(const char *text, size_t len, s_cps_t *out)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        uint32_t c = s[i];
        int extra;
        uint32_t min;
        if (c < 0x80) {
            extra = 0;
            min = 0;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1;
            c &= 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2;
            c &= 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3;
            c &= 0x07;
            min = 0x10000;
        } else {
            goto bad;
        }
        for (int k = 1; k <= extra; k++) {
            if (i + (size_t)k >= len || (s[i + k] & 0xC0) != 0x80)
                goto bad;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            goto bad;
        if (s_cps_push(out, c) != 0)
            return -1;
        i += (size_t)extra + 1;
    }
    return 0;
bad:
    return sdx_set_error("tokenizer: invalid UTF-8 at byte %zu", i);
}

/* Append c as UTF-8; returns bytes written (dst needs 4). */
static int s_utf8_put(uint32_t c, unsigned char *dst)
{
    if (c < 0x80) {
        dst[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        dst[0] = (unsigned char)(0xC0 | (c >> 6));
        dst[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        dst[0] = (unsigned char)(0xE0 | (c >> 12));
        dst[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        dst[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    dst[0] = (unsigned char)(0xF0 | (c >> 18));
    dst[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    dst[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    dst[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---------------------------------------------------------------- BasicTokenizer */

/* BasicTokenizer._is_chinese_char: CJK Unified Ideographs blocks only. */
static bool s_is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* unicodedata.normalize("NFC", ...) in place of b. */
static int s_nfc(s_cps_t *b)
{
    s_cps_t d = {0};
    /* full canonical decomposition */
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = b->v[i];
        if (c >= 0xAC00 && c < 0xAC00 + 11172) {
            uint32_t s = c - 0xAC00, t = s % 28;
            if (s_cps_push(&d, 0x1100 + s / 588) || s_cps_push(&d, 0x1161 + (s % 588) / 28) ||
                (t && s_cps_push(&d, 0x11A7 + t)))
                goto fail;
            continue;
        }
        const uint32_t *r = s_find1(&sdx_uc_decomp[0][0], sdx_uc_decomp_count, 3, c);
        if (r) {
            for (uint32_t k = 0; k < r[2]; k++)
                if (s_cps_push(&d, sdx_uc_decomp_pool[r[1] + k]))
                    goto fail;
        } else if (s_cps_push(&d, c)) {
            goto fail;
        }
    }
    /* canonical ordering: stable sort of each run of non-starters by ccc */
    for (size_t i = 1; i < d.n; i++) {
        int cc = s_ccc(d.v[i]);
        if (cc == 0)
            continue;
        for (size_t j = i; j > 0; j--) {
            int prev = s_ccc(d.v[j - 1]);
            if (prev <= cc)
                break;
            uint32_t tmp = d.v[j];
            d.v[j] = d.v[j - 1];
            d.v[j - 1] = tmp;
        }
    }
    /* canonical composition (UAX #15) */
    b->n = 0;
    if (d.n) {
        size_t starter = 0;
        int last_cc = s_ccc(d.v[0]) ? 256 : 0;
        b->v[b->n++] = d.v[0]; /* b->cap >= original length >= 1 */
        for (size_t i = 1; i < d.n; i++) {
            uint32_t c = d.v[i];
            int cc = s_ccc(c);
            uint32_t comp = last_cc != 256 ? s_compose(b->v[starter], c) : 0;
            if (comp && (last_cc < cc || last_cc == 0)) {
                b->v[starter] = comp;
                continue;
            }
            if (cc == 0)
                starter = b->n;
            last_cc = cc;
            if (s_cps_push(b, c))
                goto fail;
        }
    }
    free(d.v);
    return 0;
fail:
    free(d.v);
    return -1;
}

/* CPython str.lower() of s[0..n) appended to out (Final_Sigma included). */
static int s_lower(const uint32_t *s, size_t n, s_cps_t *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c == 0x3A3) { /* handle_capital_sigma() */
            size_t j = i;
            uint32_t p = 0;
            bool found = false;
            while (j > 0) {
                p = s[--j];
                if (!(s_flags(p) & SDX_UC_CASE_IGNORABLE)) {
                    found = true;
                    break;
                }
            }
            bool final = found && (s_flags(p) & SDX_UC_CASED);
            if (final && i + 1 < n) {
                size_t k = i + 1;
                while (k < n && (s_flags(s[k]) & SDX_UC_CASE_IGNORABLE))
                    k++;
                final = k == n || !(s_flags(s[k]) & SDX_UC_CASED);
            }
            if (s_cps_push(out, final ? 0x3C2 : 0x3C3))
                return -1;
            continue;
        }
        const uint32_t *r = s_find1(&sdx_uc_lower[0][0], sdx_uc_lower_count, 4, c);
        if (!r) {
            if (s_cps_push(out, c))
                return -1;
            continue;
        }
        for (int k = 1; k < 4 && r[k]; k++)
            if (s_cps_push(out, r[k]))
                return -1;
    }
    return 0;
}

/* " ".join(BasicTokenizer(strip_accents=False, do_split_on_punc=False)
   .tokenize(text)) for text = in[0..n). */
static int s_basic_clean(const uint32_t *in, size_t n, s_cps_t *out)
{
    s_cps_t a = {0}, l = {0};
    out->n = 0;
    /* _clean_text, then _tokenize_chinese_chars */
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        unsigned f = s_flags(c);
        bool ws = c == ' ' || c == '\t' || c == '\n' || c == '\r' || (f & SDX_UC_ZS);
        bool ctrl = !(c == '\t' || c == '\n' || c == '\r') && (f & SDX_UC_C);
        if (c == 0 || c == 0xFFFD || ctrl)
            continue;
        if (ws) {
            if (s_cps_push(&a, ' '))
                goto fail;
        } else if (s_is_cjk(c)) {
            if (s_cps_push(&a, ' ') || s_cps_push(&a, c) || s_cps_push(&a, ' '))
                goto fail;
        } else if (s_cps_push(&a, c)) {
            goto fail;
        }
    }
    if (s_nfc(&a))
        goto fail;
    /* whitespace_tokenize (str.split()), lower() per token, " ".join */
    size_t i = 0;
    while (i < a.n) {
        while (i < a.n && (s_flags(a.v[i]) & SDX_UC_SPACE))
            i++;
        size_t j = i;
        while (j < a.n && !(s_flags(a.v[j]) & SDX_UC_SPACE))
            j++;
        if (j > i) {
            l.n = 0;
            if (s_lower(a.v + i, j - i, &l))
                goto fail;
            if (out->n && s_cps_push(out, ' '))
                goto fail;
            for (size_t k = 0; k < l.n; k++)
                if (s_cps_push(out, l.v[k]))
                    goto fail;
        }
        i = j;
    }
    free(a.v);
    free(l.v);
    return 0;
fail:
    free(a.v);
    free(l.v);
    return -1;
}

/* ---------------------------------------------------------------- CLIP regex */

/* Literal match under the regex module's IGNORECASE (simple case folding):
   pattern characters are lower-case ASCII; U+017F LONG S folds to 's'. */
static size_t s_match_lit(const uint32_t *s, size_t n, const char *lit)
{
    size_t k = 0;
    for (; lit[k]; k++) {
        if (k >= n)
            return 0;
        uint32_t c = s[k], p = (unsigned char)lit[k];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c == 0x17F)
            c = 's';
        if (c == 0x212A)
            c = 'k';
        if (c != p)
            return 0;
    }
    return k;
}

/* Length of the leftmost match of the CLIP pattern at s[0..n), 0 if none
   (the first alternative that matches wins, as in a backtracking regex). */
static size_t s_clip_match(const uint32_t *s, size_t n)
{
    static const char *const lits[] = {
        "<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++) {
        size_t m = s_match_lit(s, n, lits[k]);
        if (m)
            return m;
    }
    unsigned f = s_flags(s[0]);
    if (f & SDX_UC_L_IC) {
        size_t m = 1;
        while (m < n && (s_flags(s[m]) & SDX_UC_L_IC))
            m++;
        return m;
    }
    if (f & SDX_UC_N_IC)
        return 1;
    const unsigned other = SDX_UC_SPACE | SDX_UC_L_IC | SDX_UC_N_IC;
    size_t m = 0;
    while (m < n && !(s_flags(s[m]) & other))
        m++;
    return m;
}

/* ---------------------------------------------------------------- hash maps */

static uint64_t s_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

/* string -> int32 (open addressing, keys owned) */
typedef struct {
    char **keys;
    int32_t *vals;
    size_t cap, count;
} s_smap_t;

static int32_t *s_smap_slot(const s_smap_t *m, const char *key, size_t len, bool *found)
{
    if (!m->cap) {
        *found = false;
        return NULL;
    }
    size_t i = (size_t)s_hash(key, len) & (m->cap - 1);
    for (;;) {
        const char *k = m->keys[i];
        if (!k) {
            *found = false;
            return &m->vals[i];
        }
        if (strlen(k) == len && memcmp(k, key, len) == 0) {
            *found = true;
            return &m->vals[i];
        }
        i = (i + 1) & (m->cap - 1);
    }
}

static bool s_smap_get(const s_smap_t *m, const char *key, size_t len, int32_t *val)
{
    bool found;
    int32_t *v = s_smap_slot(m, key, len, &found);
    if (found)
        *val = *v;
    return found;
}

static int s_smap_grow(s_smap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    s_smap_t n = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(int32_t)), cap, 0};
    if (!n.keys || !n.vals) {
        free(n.keys);
        free(n.vals);
        return sdx_set_error("tokenizer: out of memory");
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        bool found;
        size_t idx = (size_t)(s_smap_slot(&n, m->keys[i], strlen(m->keys[i]), &found) - n.vals);
        n.keys[idx] = m->keys[i];
        n.vals[idx] = m->vals[i];
        n.count++;
    }
    free(m->keys);
    free(m->vals);
    *m = n;
    return 0;
}

/* Insert or overwrite; returns 0, or -1 on allocation failure. */
static int s_smap_put(s_smap_t *m, const char *key, size_t len, int32_t val)
{
    if ((m->count + 1) * 2 > m->cap && s_smap_grow(m))
        return -1;
    bool found;
    int32_t *v = s_smap_slot(m, key, len, &found);
    if (!found) {
        size_t idx = (size_t)(v - m->vals);
        m->keys[idx] = strndup(key, len);
        if (!m->keys[idx])
            return sdx_set_error("tokenizer: out of memory");
        m->count++;
    }
    *v = val;
    return 0;
}

static void s_smap_free(s_smap_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* (symbol a, symbol b) -> merge rank and merged symbol */
typedef struct {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    int32_t rank, result;
} s_merge_t;

/* ---------------------------------------------------------------- the tokenizer */

typedef struct {
    uint32_t *cps; /* the token's text as code points */
    size_t n;
    int32_t id;
    bool special;
} s_added_t;

struct sdx_tokenizer {
    s_smap_t vocab;     /* token string -> id */
    char **id_str;      /* id -> token string (borrowed from vocab/added maps' own copies) */
    int32_t n_ids;      /* size of id_str */
    s_smap_t syms;      /* BPE symbol string -> symbol index */
    char **sym_str;     /* symbol index -> string (owned) */
    int32_t *sym_vocab; /* symbol index -> vocab id or -1 */
    int32_t n_syms, cap_syms;
    s_merge_t *merges;
    size_t merge_cap;
    int32_t base_sym[256], base_sym_w[256]; /* byte -> symbol, and with "</w>" */
    s_smap_t added;                         /* added token string -> id */
    s_added_t *added_list;
    size_t n_added;
    int32_t size; /* len(tokenizer) */
    int32_t bos, eos, unk, pad;
};

/* GPT-2/CLIP bytes_to_unicode(): byte -> code point */
static uint32_t s_byte_cp(int b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    int n = 0;
    for (int k = 0; k < b; k++)
        if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF)))
            n++;
    return 256u + (uint32_t)n;
}

static int32_t s_sym(sdx_tokenizer_t *t, const char *s, size_t len)
{
    int32_t idx;
    if (s_smap_get(&t->syms, s, len, &idx))
        return idx;
    if (t->n_syms == t->cap_syms) {
        int32_t cap = t->cap_syms ? t->cap_syms * 2 : 4096;
        char **ss = realloc(t->sym_str, (size_t)cap * sizeof *ss);
        if (ss)
            t->sym_str = ss;
        int32_t *sv = realloc(t->sym_vocab, (size_t)cap * sizeof *sv);
        if (sv)
            t->sym_vocab = sv;
        if (!ss || !sv)
            return sdx_set_error("tokenizer: out of memory");
        t->cap_syms = cap;
    }
    idx = t->n_syms;
    t->sym_str[idx] = strndup(s, len);
    if (!t->sym_str[idx] || s_smap_put(&t->syms, s, len, idx))
        return sdx_set_error("tokenizer: out of memory");
    int32_t vid;
    t->sym_vocab[idx] = s_smap_get(&t->vocab, s, len, &vid) ? vid : -1;
    t->n_syms++;
    return idx;
}

static s_merge_t *s_merge_slot(const sdx_tokenizer_t *t, uint64_t key)
{
    size_t i = (size_t)(key * 0x9E3779B97F4A7C15ULL >> 20) & (t->merge_cap - 1);
    while (t->merges[i].key && t->merges[i].key != key)
        i = (i + 1) & (t->merge_cap - 1);
    return &t->merges[i];
}

static int s_set_id_str(sdx_tokenizer_t *t, int32_t id, const char *s)
{
    if (id >= t->n_ids) {
        int32_t n = id + 1 > t->n_ids * 2 ? id + 1 : t->n_ids * 2;
        char **v = realloc(t->id_str, (size_t)n * sizeof *v);
        if (!v)
            return sdx_set_error("tokenizer: out of memory");
        for (int32_t i = t->n_ids; i < n; i++)
            v[i] = NULL;
        t->id_str = v;
        t->n_ids = n;
    }
    if (!t->id_str[id])
        t->id_str[id] = (char *)s;
    return 0;
}

static char *s_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        sdx_set_error("%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                sdx_set_error("%s: out of memory", path);
                return NULL;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        sdx_set_error("%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

/* vocab.json's text (parsed, not kept); path names it in errors. */
static int s_parse_vocab(sdx_tokenizer_t *t, const char *text, const char *path)
{
    cJSON *root = cJSON_Parse(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sdx_set_error("%s: not a JSON object", path);
    }
    int rc = 0;
    int32_t max_id = -1;
    for (cJSON *e = root->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 1e8 ||
            e->valuedouble != (double)(int32_t)e->valuedouble) {
            rc = sdx_set_error("%s: entry '%s' is not a token id", path, e->string);
            break;
        }
        int32_t id = (int32_t)e->valuedouble;
        if (s_smap_put(&t->vocab, e->string, strlen(e->string), id)) {
            rc = -1;
            break;
        }
        if (id > max_id)
            max_id = id;
    }
    cJSON_Delete(root);
    if (rc)
        return rc;
    if (t->vocab.count == 0)
        return sdx_set_error("%s: empty vocabulary", path);
    for (size_t i = 0; i < t->vocab.cap; i++)
        if (t->vocab.keys[i] && s_set_id_str(t, t->vocab.vals[i], t->vocab.keys[i]))
            return -1;
    t->size = (int32_t)t->vocab.count;
    return 0;
}

/* CLIPTokenizer: read().strip().split("\n")[1 : 49152 - 256 - 2 + 1], each
   line split() into a pair; ranks by position (a repeated pair keeps its
   last rank, as dict(zip(...)) does). */
static int s_parse_merges(sdx_tokenizer_t *t, char *text, const char *path)
{
    const int max_merges = 49152 - 256 - 2;
    t->merge_cap = 1;
    while (t->merge_cap < (size_t)max_merges * 2)
        t->merge_cap <<= 1;
    t->merges = calloc(t->merge_cap, sizeof *t->merges);
    if (!t->merges) {
        return sdx_set_error("tokenizer: out of memory");
    }
    /* strip() then split("\n"): skip leading whitespace; line 0 is the header */
    char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\v' || *p == '\f')
        p++;
    int line = 0, rank = 0;
    int rc = 0;
    while (*p && rank < max_merges) {
        char *eol = strchr(p, '\n');
        char *next = eol ? eol + 1 : p + strlen(p);
        if (eol)
            *eol = 0;
        if (line++ > 0) {
            char *parts[3];
            int np = 0;
            char *save = NULL;
            for (char *tok = strtok_r(p, " \t\r\v\f", &save); tok;
                 tok = strtok_r(NULL, " \t\r\v\f", &save))
                if (np < 3)
                    parts[np++] = tok;
                else
                    np++;
            if (np == 2) {
                char buf[1024];
                int32_t a = s_sym(t, parts[0], strlen(parts[0]));
                int32_t b = s_sym(t, parts[1], strlen(parts[1]));
                int n = snprintf(buf, sizeof buf, "%s%s", parts[0], parts[1]);
                if (a < 0 || b < 0 || n < 0 || (size_t)n >= sizeof buf) {
                    rc = a < 0 || b < 0 ? -1 : sdx_set_error("%s: merge too long", path);
                    break;
                }
                int32_t r = s_sym(t, buf, (size_t)n);
                if (r < 0) {
                    rc = -1;
                    break;
                }
                uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
                s_merge_t *m = s_merge_slot(t, key);
                m->key = key;
                m->rank = rank;
                m->result = r;
            }
            rank++; /* a malformed line still takes its slot in the slice */
        }
        p = next;
    }
    return rc;
}

static int s_load_vocab(sdx_tokenizer_t *t, const char *path)
{
    char *text = s_read_file(path, NULL);
    if (!text)
        return -1;
    int rc = s_parse_vocab(t, text, path);
    free(text);
    return rc;
}

static int s_load_merges(sdx_tokenizer_t *t, const char *path)
{
    char *text = s_read_file(path, NULL);
    if (!text)
        return -1;
    int rc = s_parse_merges(t, text, path);
    free(text);
    return rc;
}

static int s_add(sdx_tokenizer_t *t, const char *text, int32_t id, bool special)
{
    size_t len = strlen(text);
    s_cps_t cps = {0};
    if (len == 0)
        return sdx_set_error("tokenizer: empty added token");
    if (s_utf8_decode(text, len, &cps))
        return -1;
    int32_t old;
    if (s_smap_get(&t->added, text, len, &old)) {
        free(cps.v);
        return 0; /* already added: keep the first registration */
    }
    s_added_t *l = realloc(t->added_list, (t->n_added + 1) * sizeof *l);
    if (!l) {
        free(cps.v);
        return sdx_set_error("tokenizer: out of memory");
    }
    t->added_list = l;
    l[t->n_added] = (s_added_t){cps.v, cps.n, id, special};
    t->n_added++;
    if (s_smap_put(&t->added, text, len, id))
        return -1;
    /* the added map owns a copy of the string; point id_str at it */
    bool found;
    int32_t *slot = s_smap_slot(&t->added, text, len, &found);
    const char *own = t->added.keys[slot - t->added.vals];
    return s_set_id_str(t, id, own);
}

int32_t sdx_tokenizer_token_to_id(const sdx_tokenizer_t *t, const char *token)
{
    int32_t id;
    size_t len = strlen(token);
    if (s_smap_get(&t->added, token, len, &id) || s_smap_get(&t->vocab, token, len, &id))
        return id;
    return -1;
}

int sdx_tokenizer_truncate(sdx_tokenizer_t *t, int32_t size)
{
    assert(t && size >= 0);
    if (size >= t->size)
        return 0;
    /* open addressing has no delete: rebuild the added map without the
       entries at or past size (the kept keys move, not copied) */
    s_smap_t n = {0};
    for (size_t i = 0; i < t->added.cap; i++) {
        char *k = t->added.keys[i];
        if (!k)
            continue;
        if (t->added.vals[i] >= size) {
            s_set_id_str(t, t->added.vals[i], NULL);
            free(k);
            continue;
        }
        if ((n.count + 1) * 2 > n.cap && s_smap_grow(&n)) {
            s_smap_free(&n);
            return -1;
        }
        bool found;
        int32_t *v = s_smap_slot(&n, k, strlen(k), &found);
        n.keys[v - n.vals] = k;
        *v = t->added.vals[i];
        n.count++;
    }
    free(t->added.keys);
    free(t->added.vals);
    t->added = n;
    size_t w = 0;
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added_list[i].id >= size)
            free(t->added_list[i].cps);
        else
            t->added_list[w++] = t->added_list[i];
    }
    t->n_added = w;
    t->size = size;
    return 0;
}

int sdx_tokenizer_add_token(sdx_tokenizer_t *t, const char *text, bool special, int32_t *id)
{
    assert(t && text);
    int32_t cur = sdx_tokenizer_token_to_id(t, text);
    if (cur < 0) {
        cur = t->size;
        if (s_add(t, text, cur, special))
            return -1;
        t->size++;
    } else if (s_add(t, text, cur, special)) {
        return -1;
    }
    if (id)
        *id = cur;
    return 0;
}

int sdx_tokenizer_set_pad_id(sdx_tokenizer_t *t, int32_t id)
{
    assert(t);
    const char *s = sdx_tokenizer_id_to_token(t, id);
    if (!s)
        return sdx_set_error("tokenizer: pad id %d is not in the vocabulary", (int)id);
    if (s_add(t, s, id, true))
        return -1;
    t->pad = id;
    return 0;
}

/* A special-token value of tokenizer_config.json: "str" or {"content": "str"}. */
static const char *s_token_content(const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* tokenizer_config.json / special_tokens_map.json (both optional). */
static int s_load_config(sdx_tokenizer_t *t, const char *dir, const char **names)
{
    static const char *const files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (size_t f = 0; f < 2; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        FILE *probe = fopen(path, "rb");
        if (!probe)
            continue;
        fclose(probe);
        char *text = s_read_file(path, NULL);
        if (!text)
            return -1;
        cJSON *root = cJSON_Parse(text);
        free(text);
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return sdx_set_error("%s: not a JSON object", path);
        }
        static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
        for (int k = 0; k < 4; k++) {
            const char *c = s_token_content(cJSON_GetObjectItemCaseSensitive(root, keys[k]));
            if (c) {
                free((char *)names[k]);
                names[k] = strdup(c);
            }
        }
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder");
        for (const cJSON *e = dec ? dec->child : NULL; e; e = e->next) {
            char *end;
            long id = strtol(e->string, &end, 10);
            const char *c = s_token_content(e);
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "special");
            if (*end || id < 0 || id > 100000000 || !c) {
                cJSON_Delete(root);
                return sdx_set_error("%s: bad added_tokens_decoder entry '%s'", path, e->string);
            }
            int32_t known = sdx_tokenizer_token_to_id(t, c);
            if (s_add(t, c, (int32_t)id, cJSON_IsTrue(sp))) {
                cJSON_Delete(root);
                return -1;
            }
            if (known < 0 && (int32_t)id >= t->size)
                t->size = (int32_t)id + 1;
        }
        cJSON_Delete(root);
    }
    return 0;
}

/* vocab/merges are file paths, or (builtin) the texts themselves. */
static sdx_tokenizer_t *s_new(const char *vocab_json, const char *merges_txt, const char *dir,
                              bool builtin)
{
    sdx_tokenizer_t *t = calloc(1, sizeof *t);
    const char *names[4] = {NULL, NULL, NULL, NULL}; /* bos eos unk pad */
    if (!t) {
        sdx_set_error("tokenizer: out of memory");
        return NULL;
    }
    if (builtin) {
        char *m = strdup(merges_txt); /* parsing cuts lines in place */
        int rc = m ? s_parse_vocab(t, vocab_json, "builtin vocab.json") : -1;
        if (!m)
            sdx_set_error("tokenizer: out of memory");
        if (rc == 0)
            rc = s_parse_merges(t, m, "builtin merges.txt");
        free(m);
        if (rc)
            goto fail;
    } else if (s_load_vocab(t, vocab_json) || s_load_merges(t, merges_txt)) {
        goto fail;
    }
    for (int b = 0; b < 256; b++) {
        unsigned char u[4 + 5];
        int n = s_utf8_put(s_byte_cp(b), u);
        t->base_sym[b] = s_sym(t, (const char *)u, (size_t)n);
        memcpy(u + n, "</w>", 4);
        t->base_sym_w[b] = s_sym(t, (const char *)u, (size_t)n + 4);
        if (t->base_sym[b] < 0 || t->base_sym_w[b] < 0)
            goto fail;
    }
    if (dir && s_load_config(t, dir, names))
        goto fail;
    static const char *const defaults[4] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>",
                                            "<|endoftext|>"};
    int32_t *slots[4] = {&t->bos, &t->eos, &t->unk, &t->pad};
    /* PreTrainedTokenizer.__init__ adds every special token as an added
       token (bos, eos, unk, pad order) */
    for (int k = 0; k < 4; k++) {
        const char *s = names[k] ? names[k] : defaults[k];
        int32_t id = sdx_tokenizer_token_to_id(t, s);
        if (id < 0) {
            sdx_set_error("tokenizer: special token '%s' is not in the vocabulary", s);
            goto fail;
        }
        if (s_add(t, s, id, true))
            goto fail;
        *slots[k] = id;
    }
    for (int k = 0; k < 4; k++)
        free((char *)names[k]);
    return t;
fail:
    for (int k = 0; k < 4; k++)
        free((char *)names[k]);
    sdx_tokenizer_destroy(&t);
    return NULL;
}

sdx_tokenizer_t *sdx_tokenizer_new(const char *vocab_json, const char *merges_txt)
{
    assert(vocab_json && merges_txt);
    return s_new(vocab_json, merges_txt, NULL, false);
}

sdx_tokenizer_t *sdx_tokenizer_load(const char *dir)
{
    assert(dir);
    char v[4096], m[4096];
    snprintf(v, sizeof v, "%s/vocab.json", dir);
    snprintf(m, sizeof m, "%s/merges.txt", dir);
    return s_new(v, m, dir, false);
}

/* The CLIP BPE files compiled in (sdx_clip_bpe.c). */
extern const char sdx_clip_vocab_json[], sdx_clip_merges_txt[];

sdx_tokenizer_t *sdx_tokenizer_builtin(int which)
{
    if (which != 1 && which != 2) {
        sdx_set_error("tokenizer: builtin tokenizer %d (1: tokenizer, 2: tokenizer_2)", which);
        return NULL;
    }
    sdx_tokenizer_t *t = s_new(sdx_clip_vocab_json, sdx_clip_merges_txt, NULL, true);
    /* SDXL's tokenizer_2 pads with "!" (id 0) */
    if (t && which == 2 && sdx_tokenizer_set_pad_id(t, 0) != 0)
        sdx_tokenizer_destroy(&t);
    return t;
}

void sdx_tokenizer_destroy(sdx_tokenizer_t **tp)
{
    if (!tp || !*tp)
        return;
    sdx_tokenizer_t *t = *tp;
    s_smap_free(&t->vocab);
    s_smap_free(&t->syms);
    s_smap_free(&t->added);
    for (int32_t i = 0; i < t->n_syms; i++)
        free(t->sym_str[i]);
    free(t->sym_str);
    free(t->sym_vocab);
    free(t->merges);
    free(t->id_str);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added_list[i].cps);
    free(t->added_list);
    free(t);
    *tp = NULL;
}

int32_t sdx_tokenizer_bos_id(const sdx_tokenizer_t *t)
{
    return t->bos;
}

int32_t sdx_tokenizer_eos_id(const sdx_tokenizer_t *t)
{
    return t->eos;
}

int32_t sdx_tokenizer_pad_id(const sdx_tokenizer_t *t)
{
    return t->pad;
}

int32_t sdx_tokenizer_unk_id(const sdx_tokenizer_t *t)
{
    return t->unk;
}

int32_t sdx_tokenizer_size(const sdx_tokenizer_t *t)
{
    return t->size;
}

const char *sdx_tokenizer_id_to_token(const sdx_tokenizer_t *t, int32_t id)
{
    if (id < 0 || id >= t->n_ids)
        return NULL;
    return t->id_str[id];
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    int32_t *v;
    size_t n, cap;
} s_ids_t;

static int s_ids_push(s_ids_t *b, int32_t id)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 32;
        int32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return sdx_set_error("tokenizer: out of memory");
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = id;
    return 0;
}

/* _convert_token_to_id_with_added_voc for a string */
static int32_t s_token_id(const sdx_tokenizer_t *t, const char *s, size_t len, int32_t vocab_hint)
{
    int32_t id;
    if (t->added.count && s_smap_get(&t->added, s, len, &id))
        return id;
    if (vocab_hint >= 0)
        return vocab_hint;
    if (s_smap_get(&t->vocab, s, len, &id))
        return id;
    return t->unk;
}

/* CLIPTokenizer.bpe() of one byte-encoded piece, ids appended. */
static int s_bpe(const sdx_tokenizer_t *t, const unsigned char *p, size_t n, s_ids_t *out)
{
    /* CLIPTokenizer's cache is pre-seeded with these: they come back whole */
    static const char *const whole[] = {"<|startoftext|>", "<|endoftext|>"};
    for (int k = 0; k < 2; k++)
        if (n == strlen(whole[k]) && memcmp(p, whole[k], n) == 0)
            return s_ids_push(out, s_token_id(t, whole[k], n, -1));
    int32_t stack[64];
    int32_t *w = n <= 64 ? stack : malloc(n * sizeof *w);
    if (!w)
        return sdx_set_error("tokenizer: out of memory");
    for (size_t i = 0; i < n; i++)
        w[i] = i + 1 < n ? t->base_sym[p[i]] : t->base_sym_w[p[i]];
    size_t m = n;
    while (m > 1) {
        int32_t best = INT32_MAX;
        int32_t ba = 0, bb = 0, br = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            uint64_t key = (((uint64_t)(uint32_t)w[i] << 32) | (uint32_t)w[i + 1]) + 1;
            const s_merge_t *mg = s_merge_slot(t, key);
            if (mg->key && mg->rank < best) {
                best = mg->rank;
                ba = w[i];
                bb = w[i + 1];
                br = mg->result;
            }
        }
        if (best == INT32_MAX)
            break;
        size_t o = 0;
        for (size_t i = 0; i < m;) {
            if (w[i] == ba && i + 1 < m && w[i + 1] == bb) {
                w[o++] = br;
                i += 2;
            } else {
                w[o++] = w[i++];
            }
        }
        m = o;
    }
    int rc = 0;
    for (size_t i = 0; i < m && rc == 0; i++) {
        const char *s = t->sym_str[w[i]];
        rc = s_ids_push(out, s_token_id(t, s, strlen(s), t->sym_vocab[w[i]]));
    }
    if (w != stack)
        free(w);
    return rc;
}

/* CLIPTokenizer._tokenize() of a span that holds no added token. */
static int s_tokenize_span(const sdx_tokenizer_t *t, const uint32_t *s, size_t n, s_ids_t *out)
{
    s_cps_t c = {0};
    unsigned char *bytes = NULL;
    int rc = s_basic_clean(s, n, &c);
    if (rc == 0 && c.n) {
        bytes = malloc(c.n * 4);
        if (!bytes)
            rc = sdx_set_error("tokenizer: out of memory");
    }
    size_t i = 0;
    while (rc == 0 && i < c.n) {
        size_t m = s_clip_match(c.v + i, c.n - i);
        if (m == 0) {
            i++;
            continue;
        }
        size_t nb = 0;
        for (size_t k = 0; k < m; k++)
            nb += (size_t)s_utf8_put(c.v[i + k], bytes + nb);
        rc = s_bpe(t, bytes, nb, out);
        i += m;
    }
    free(bytes);
    free(c.v);
    return rc;
}

/* ---------------------------------------------------------------- added-token Trie */

/* A trie node is identified by (an added token k, depth d): the prefix
   cps[0..d) of token k. */
typedef struct {
    size_t k, d;
} s_node_t;

static bool s_node_child(const sdx_tokenizer_t *t, s_node_t nd, uint32_t c, s_node_t *child)
{
    const s_added_t *a = &t->added_list[nd.k];
    for (size_t j = 0; j < t->n_added; j++) {
        const s_added_t *b = &t->added_list[j];
        if (b->n > nd.d && b->cps[nd.d] == c && memcmp(b->cps, a->cps, nd.d * 4) == 0) {
            *child = (s_node_t){j, nd.d + 1};
            return true;
        }
    }
    return false;
}

static bool s_node_final(const sdx_tokenizer_t *t, s_node_t nd)
{
    const s_added_t *a = &t->added_list[nd.k];
    for (size_t j = 0; j < t->n_added; j++) {
        const s_added_t *b = &t->added_list[j];
        if (b->n == nd.d && memcmp(b->cps, a->cps, nd.d * 4) == 0)
            return true;
    }
    return false;
}

typedef struct {
    size_t start;
    s_node_t node;
    bool removed;
} s_state_t;

/* transformers Trie.split(): the cut offsets into *offs (caller frees).
   A literal port, including its lookahead rules. */
static int s_trie_split(const sdx_tokenizer_t *t, const uint32_t *text, size_t n, size_t **offs,
                        size_t *n_offs)
{
    s_state_t *st = malloc((n + 1) * sizeof *st);
    size_t *o = malloc((2 * n + 3) * sizeof *o);
    size_t ns = 0, no = 0, skip = 0;
    if (!st || !o) {
        free(st);
        free(o);
        return sdx_set_error("tokenizer: out of memory");
    }
    o[no++] = 0;
    for (size_t cur = 0; cur < n; cur++) {
        uint32_t ch = text[cur];
        if (skip && cur < skip)
            continue;
        bool reset = false;
        for (size_t si = 0; si < ns; si++) {
            size_t start = st[si].start;
            if (s_node_final(t, st[si].node)) {
                size_t end = 0;
                for (size_t li = 0; li < ns; li++) {
                    size_t ls = st[li].start;
                    s_node_t lp = st[li].node;
                    size_t look;
                    if (ls > start)
                        break;
                    else if (ls < start)
                        look = end = cur + 1;
                    else
                        look = end = cur;
                    bool has_next = look < n;
                    uint32_t next = has_next ? text[look] : 0;
                    if (s_node_final(t, lp)) {
                        start = ls;
                        end = look;
                        skip = look;
                    }
                    s_node_t child;
                    while (has_next && s_node_child(t, lp, next, &child)) {
                        lp = child;
                        look++;
                        if (s_node_final(t, lp)) {
                            start = ls;
                            end = look;
                            skip = look;
                        }
                        if (look == n)
                            break;
                        next = text[look];
                    }
                }
                o[no++] = start;
                o[no++] = end;
                reset = true;
                break;
            }
            s_node_t child;
            if (s_node_child(t, st[si].node, ch, &child))
                st[si].node = child;
            else
                st[si].removed = true;
        }
        if (reset) {
            ns = 0;
        } else {
            size_t k = 0;
            for (size_t si = 0; si < ns; si++)
                if (!st[si].removed)
                    st[k++] = st[si];
            ns = k;
        }
        s_node_t root = {0, 0}, child;
        if (cur >= skip && s_node_child(t, root, ch, &child))
            st[ns++] = (s_state_t){cur, child, false};
    }
    for (size_t si = 0; si < ns; si++) {
        if (s_node_final(t, st[si].node)) {
            o[no++] = st[si].start;
            o[no++] = n;
            break;
        }
    }
    o[no++] = n;
    free(st);
    *offs = o;
    *n_offs = no;
    return 0;
}

/* Id of an added token equal to s[0..n), or -1. */
static int32_t s_added_id(const sdx_tokenizer_t *t, const uint32_t *s, size_t n)
{
    for (size_t j = 0; j < t->n_added; j++)
        if (t->added_list[j].n == n && memcmp(t->added_list[j].cps, s, n * 4) == 0)
            return t->added_list[j].id;
    return -1;
}

static int s_tokenize(const sdx_tokenizer_t *t, const char *text, s_ids_t *out)
{
    s_cps_t cps = {0};
    size_t *offs = NULL, no = 0;
    int rc = s_utf8_decode(text, strlen(text), &cps);
    if (rc == 0 && cps.n && t->n_added)
        rc = s_trie_split(t, cps.v, cps.n, &offs, &no);
    if (rc == 0 && cps.n && !t->n_added)
        rc = s_tokenize_span(t, cps.v, cps.n, out);
    /* Trie.cut_text, then tokenize(): added tokens pass whole, the rest
       goes through _tokenize */
    size_t start = 0;
    for (size_t i = 0; rc == 0 && i < no; i++) {
        size_t end = offs[i];
        if (start >= end)
            continue;
        int32_t id = s_added_id(t, cps.v + start, end - start);
        if (id >= 0)
            rc = s_ids_push(out, id);
        else
            rc = s_tokenize_span(t, cps.v + start, end - start, out);
        start = end;
    }
    free(offs);
    free(cps.v);
    return rc;
}

int sdx_tokenizer_tokenize(const sdx_tokenizer_t *t, const char *text, int32_t **ids, size_t *n)
{
    assert(t && text && ids && n);
    s_ids_t out = {0};
    if (s_tokenize(t, text, &out) != 0) {
        free(out.v);
        return -1;
    }
    if (!out.v && !(out.v = malloc(sizeof *out.v)))
        return sdx_set_error("tokenizer: out of memory");
    *ids = out.v;
    *n = out.n;
    return 0;
}

int sdx_tokenizer_encode(const sdx_tokenizer_t *t, const char *text, int64_t *ids, int max_length,
                         int *n_real, size_t *n_untruncated)
{
    assert(t && text && ids && max_length >= 2);
    s_ids_t tok = {0};
    if (s_tokenize(t, text, &tok)) {
        free(tok.v);
        return -1;
    }
    size_t keep = tok.n < (size_t)max_length - 2 ? tok.n : (size_t)max_length - 2;
    int k = 0;
    ids[k++] = t->bos;
    for (size_t i = 0; i < keep; i++)
        ids[k++] = tok.v[i];
    ids[k++] = t->eos;
    if (n_real)
        *n_real = k;
    while (k < max_length)
        ids[k++] = t->pad;
    if (n_untruncated)
        *n_untruncated = tok.n + 2;
    free(tok.v);
    return 0;
}

int sdx_tokenizer_encode_untruncated(const sdx_tokenizer_t *t, const char *text, int64_t **ids,
                                     size_t *n)
{
    assert(t && text && ids && n);
    s_ids_t tok = {0};
    if (s_tokenize(t, text, &tok)) {
        free(tok.v);
        return -1;
    }
    int64_t *v = malloc((tok.n + 2) * sizeof *v);
    if (!v) {
        free(tok.v);
        return sdx_set_error("tokenizer: out of memory");
    }
    v[0] = t->bos;
    for (size_t i = 0; i < tok.n; i++)
        v[i + 1] = tok.v[i];
    v[tok.n + 1] = t->eos;
    free(tok.v);
    *ids = v;
    *n = tok.n + 2;
    return 0;
}

char *sdx_tokenizer_clean_text(const char *text)
{
    s_cps_t in = {0}, c = {0};
    char *s = NULL;
    if (s_utf8_decode(text, strlen(text), &in) == 0 && s_basic_clean(in.v, in.n, &c) == 0) {
        s = malloc(c.n * 4 + 1);
        if (s) {
            size_t nb = 0;
            for (size_t i = 0; i < c.n; i++)
                nb += (size_t)s_utf8_put(c.v[i], (unsigned char *)s + nb);
            s[nb] = 0;
        } else {
            sdx_set_error("tokenizer: out of memory");
        }
    }
    free(in.v);
    free(c.v);
    return s;
}
