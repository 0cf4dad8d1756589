/*  sdx_codec.c - msgpack and JSON <-> sdx_value_t, base64, and reading a
    whole file to decode.

    msgpack decoding is a direct reader into sdx_value_t rather than
    msgpack-c's unpacker: one pass, no zone, and every declared length or
    element count is checked against the bytes left BEFORE anything is
    allocated (msgpack-c allocates a declared array32 count up front, so a
    5-byte frame could ask for 100 GB). Depth is capped at SDX_CODEC_MAX_DEPTH.
    Strings and map keys must be valid UTF-8; map keys must be strings and
    unique.

    JSON decoding uses cJSON (the project's JSON library) for the syntax. A
    pre-pass over the raw text validates UTF-8, checks nesting depth, and
    later supplies the literal text of each number in document order so that
    integers beyond 2^53 keep their exact value (cJSON only stores doubles).

    Encoders write straight into a growable buffer (no intermediate cJSON or
    msgpack-c tree). Not for streaming; frames are decoded whole.
*/
#include "sdx_codec.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ utils */

static void s_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* Offset of the first byte of an invalid UTF-8 sequence, or len if valid.
   Rejects overlong forms, surrogates and code points above U+10FFFF. */
static size_t s_utf8_check(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1;
        else if (c == 0xE0) {
            n = 2;
            lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
            n = 2;
        else if (c == 0xED) {
            n = 2;
            hi = 0x9F;
        } else if (c == 0xF0) {
            n = 3;
            lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3)
            n = 3;
        else if (c == 0xF4) {
            n = 3;
            hi = 0x8F;
        } else
            return i;
        if (i + n >= len)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += n + 1;
    }
    return len;
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} s_buf_t;

static bool s_buf_grow(s_buf_t *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static inline void s_buf_put(s_buf_t *b, const void *data, size_t n)
{
    if (!s_buf_grow(b, n))
        return;
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static inline void s_buf_byte(s_buf_t *b, uint8_t c)
{
    if (!s_buf_grow(b, 1))
        return;
    b->p[b->len++] = c;
}

static int s_buf_finish(s_buf_t *b, uint8_t **out, size_t *out_len, bool nul)
{
    if (nul && s_buf_grow(b, 1))
        b->p[b->len] = '\0';
    if (b->oom || !b->p) {
        free(b->p);
        *out = NULL;
        *out_len = 0;
        return -1;
    }
    *out = b->p;
    *out_len = b->len;
    return 0;
}

/* Map keys must be unique. Small maps: pairwise; large: sort a copy of the
   key pointers (keeps hostile 100k-key maps at n log n). */
static int s_cmp_kv(const void *a, const void *b)
{
    const sdx_kv_t *x = *(const sdx_kv_t *const *)a, *y = *(const sdx_kv_t *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

static const char *s_map_dup_key(const sdx_value_t *m)
{
    size_t n = m->u.map.len;
    const sdx_kv_t *kv = m->u.map.items;
    if (n < 2)
        return NULL;
    if (n <= 16) {
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                if (kv[i].key_len == kv[j].key_len &&
                    memcmp(kv[i].key, kv[j].key, kv[i].key_len) == 0)
                    return kv[i].key;
        return NULL;
    }
    const sdx_kv_t **idx = malloc(n * sizeof *idx);
    if (!idx)
        return NULL; /* cannot check; accept (lookups return the first) */
    for (size_t i = 0; i < n; i++)
        idx[i] = &kv[i];
    qsort(idx, n, sizeof *idx, s_cmp_kv);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (s_cmp_kv(&idx[i - 1], &idx[i]) == 0)
            dup = idx[i]->key;
    free(idx);
    return dup;
}

/* Append without the duplicate check (decoders check once per map). Takes
   ownership of key and val. */
static int s_map_append(sdx_value_t *m, char *key, size_t key_len, sdx_value_t *val)
{
    if (m->u.map.len == m->u.map.cap) {
        size_t cap = m->u.map.cap ? m->u.map.cap * 2 : 8;
        sdx_kv_t *items = realloc(m->u.map.items, cap * sizeof *items);
        if (!items) {
            free(key);
            sdx_value_destroy(&val);
            return -1;
        }
        m->u.map.items = items;
        m->u.map.cap = cap;
    }
    sdx_kv_t *kv = &m->u.map.items[m->u.map.len++];
    kv->key = key;
    kv->key_len = key_len;
    kv->val = val;
    return 0;
}

sdx_encoding_t sdx_codec_detect(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    /* a UTF-8 byte order mark (which .NET writers can emit) before JSON */
    size_t start = len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf ? 3 : 0;
    for (size_t i = start; i < len; i++) {
        uint8_t c = p[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        return (c == '{' || c == '[') ? SDX_ENC_JSON : SDX_ENC_MSGPACK;
    }
    return SDX_ENC_MSGPACK;
}

/* --------------------------------------------------------- msgpack decode */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    char *err;
    size_t err_len;
} s_mp_t;

static inline uint64_t s_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static sdx_value_t *s_mp_value(s_mp_t *r, int depth);

/* Read an n-byte big-endian length/number; -1 if truncated. */
static int s_mp_uint(s_mp_t *r, int n, uint64_t *out)
{
    if (r->len - r->pos < (size_t)n) {
        s_err(r->err, r->err_len, "msgpack: truncated at byte %zu", r->len);
        return -1;
    }
    *out = s_be(r->p + r->pos, n);
    r->pos += (size_t)n;
    return 0;
}

static int s_mp_need(s_mp_t *r, uint64_t n)
{
    if (n > r->len - r->pos) {
        s_err(r->err, r->err_len, "msgpack: truncated at byte %zu (needs %" PRIu64 " more bytes)",
              r->len, n - (r->len - r->pos));
        return -1;
    }
    return 0;
}

static sdx_value_t *s_mp_str(s_mp_t *r, uint64_t n)
{
    if (s_mp_need(r, n) < 0)
        return NULL;
    const uint8_t *s = r->p + r->pos;
    size_t bad = s_utf8_check(s, (size_t)n);
    if (bad != n) {
        s_err(r->err, r->err_len, "msgpack: invalid UTF-8 in string at byte %zu", r->pos + bad);
        return NULL;
    }
    r->pos += (size_t)n;
    return sdx_value_strn_new((const char *)s, (size_t)n);
}

static sdx_value_t *s_mp_bin(s_mp_t *r, uint64_t n)
{
    if (s_mp_need(r, n) < 0)
        return NULL;
    sdx_value_t *v = sdx_value_bin_new(r->p + r->pos, (size_t)n);
    r->pos += (size_t)n;
    return v;
}

static sdx_value_t *s_mp_ext(s_mp_t *r, uint64_t n)
{
    if (s_mp_need(r, n + 1) < 0)
        return NULL;
    int8_t type = (int8_t)r->p[r->pos];
    sdx_value_t *v = sdx_value_ext_new(type, r->p + r->pos + 1, (size_t)n);
    r->pos += (size_t)n + 1;
    return v;
}

static sdx_value_t *s_mp_array(s_mp_t *r, uint64_t n, int depth)
{
    /* every element takes at least one byte */
    if (s_mp_need(r, n) < 0)
        return NULL;
    sdx_value_t *a = sdx_value_array_new();
    if (!a)
        return NULL;
    if (n) {
        a->u.arr.items = malloc((size_t)n * sizeof *a->u.arr.items);
        if (!a->u.arr.items)
            goto fail;
        a->u.arr.cap = (size_t)n;
    }
    for (uint64_t i = 0; i < n; i++) {
        sdx_value_t *item = s_mp_value(r, depth + 1);
        if (!item)
            goto fail;
        a->u.arr.items[a->u.arr.len++] = item;
    }
    return a;
fail:
    sdx_value_destroy(&a);
    return NULL;
}

static sdx_value_t *s_mp_map(s_mp_t *r, uint64_t n, int depth)
{
    if (n > (r->len - r->pos) / 2) {
        s_err(r->err, r->err_len, "msgpack: truncated at byte %zu (map of %" PRIu64 " entries)",
              r->len, n);
        return NULL;
    }
    sdx_value_t *m = sdx_value_map_new();
    if (!m)
        return NULL;
    if (n) {
        m->u.map.items = malloc((size_t)n * sizeof *m->u.map.items);
        if (!m->u.map.items)
            goto fail;
        m->u.map.cap = (size_t)n;
    }
    for (uint64_t i = 0; i < n; i++) {
        size_t key_at = r->pos;
        if (r->pos >= r->len) {
            s_err(r->err, r->err_len, "msgpack: truncated at byte %zu", r->len);
            goto fail;
        }
        uint8_t c = r->p[r->pos];
        uint64_t klen;
        if ((c & 0xE0) == 0xA0) {
            klen = c & 0x1F;
            r->pos++;
        } else if (c == 0xD9 || c == 0xDA || c == 0xDB) {
            r->pos++;
            if (s_mp_uint(r, c == 0xD9 ? 1 : c == 0xDA ? 2 : 4, &klen) < 0)
                goto fail;
        } else {
            s_err(r->err, r->err_len, "msgpack: map key at byte %zu is not a string", key_at);
            goto fail;
        }
        if (s_mp_need(r, klen) < 0)
            goto fail;
        size_t bad = s_utf8_check(r->p + r->pos, (size_t)klen);
        if (bad != klen) {
            s_err(r->err, r->err_len, "msgpack: invalid UTF-8 in map key at byte %zu",
                  r->pos + bad);
            goto fail;
        }
        if (memchr(r->p + r->pos, '\0', (size_t)klen)) {
            s_err(r->err, r->err_len, "msgpack: map key at byte %zu holds a NUL byte", key_at);
            goto fail;
        }
        char *key = malloc((size_t)klen + 1);
        if (!key)
            goto fail;
        memcpy(key, r->p + r->pos, (size_t)klen);
        key[klen] = '\0';
        r->pos += (size_t)klen;
        sdx_value_t *val = s_mp_value(r, depth + 1);
        if (!val) {
            free(key);
            goto fail;
        }
        s_map_append(m, key, (size_t)klen, val); /* capacity reserved: cannot fail */
    }
    const char *dup = s_map_dup_key(m);
    if (dup) {
        s_err(r->err, r->err_len, "msgpack: duplicate map key \"%.64s\"", dup);
        goto fail;
    }
    return m;
fail:
    sdx_value_destroy(&m);
    return NULL;
}

static sdx_value_t *s_mp_value(s_mp_t *r, int depth)
{
    if (depth > SDX_CODEC_MAX_DEPTH) {
        s_err(r->err, r->err_len, "msgpack: nesting deeper than %d at byte %zu",
              SDX_CODEC_MAX_DEPTH, r->pos);
        return NULL;
    }
    if (r->pos >= r->len) {
        s_err(r->err, r->err_len, "msgpack: truncated at byte %zu", r->len);
        return NULL;
    }
    size_t at = r->pos;
    uint8_t c = r->p[r->pos++];
    uint64_t u;
    if (c <= 0x7F)
        return sdx_value_int_new(c);
    if (c >= 0xE0)
        return sdx_value_int_new((int8_t)c);
    if ((c & 0xF0) == 0x80)
        return s_mp_map(r, c & 0x0F, depth);
    if ((c & 0xF0) == 0x90)
        return s_mp_array(r, c & 0x0F, depth);
    if ((c & 0xE0) == 0xA0)
        return s_mp_str(r, c & 0x1F);
    switch (c) {
    case 0xC0:
        return sdx_value_nil_new();
    case 0xC2:
        return sdx_value_bool_new(false);
    case 0xC3:
        return sdx_value_bool_new(true);
    case 0xC4:
    case 0xC5:
    case 0xC6:
        if (s_mp_uint(r, c == 0xC4 ? 1 : c == 0xC5 ? 2 : 4, &u) < 0)
            return NULL;
        return s_mp_bin(r, u);
    case 0xC7:
    case 0xC8:
    case 0xC9:
        if (s_mp_uint(r, c == 0xC7 ? 1 : c == 0xC8 ? 2 : 4, &u) < 0)
            return NULL;
        return s_mp_ext(r, u);
    case 0xCA: {
        if (s_mp_uint(r, 4, &u) < 0)
            return NULL;
        uint32_t bits = (uint32_t)u;
        float f;
        memcpy(&f, &bits, 4);
        return sdx_value_float_new(f);
    }
    case 0xCB: {
        if (s_mp_uint(r, 8, &u) < 0)
            return NULL;
        double d;
        memcpy(&d, &u, 8);
        return sdx_value_float_new(d);
    }
    case 0xCC:
    case 0xCD:
    case 0xCE:
    case 0xCF: {
        int n = c == 0xCC ? 1 : c == 0xCD ? 2 : c == 0xCE ? 4 : 8;
        if (s_mp_uint(r, n, &u) < 0)
            return NULL;
        if (u > (uint64_t)INT64_MAX)
            return sdx_value_float_new((double)u);
        return sdx_value_int_new((int64_t)u);
    }
    case 0xD0:
    case 0xD1:
    case 0xD2:
    case 0xD3: {
        int n = c == 0xD0 ? 1 : c == 0xD1 ? 2 : c == 0xD2 ? 4 : 8;
        if (s_mp_uint(r, n, &u) < 0)
            return NULL;
        int64_t i;
        if (n == 1)
            i = (int8_t)u;
        else if (n == 2)
            i = (int16_t)u;
        else if (n == 4)
            i = (int32_t)u;
        else
            i = (int64_t)u;
        return sdx_value_int_new(i);
    }
    case 0xD4:
    case 0xD5:
    case 0xD6:
    case 0xD7:
    case 0xD8:
        return s_mp_ext(r, (uint64_t)1 << (c - 0xD4));
    case 0xD9:
    case 0xDA:
    case 0xDB:
        if (s_mp_uint(r, c == 0xD9 ? 1 : c == 0xDA ? 2 : 4, &u) < 0)
            return NULL;
        return s_mp_str(r, u);
    case 0xDC:
    case 0xDD:
        if (s_mp_uint(r, c == 0xDC ? 2 : 4, &u) < 0)
            return NULL;
        return s_mp_array(r, u, depth);
    case 0xDE:
    case 0xDF:
        if (s_mp_uint(r, c == 0xDE ? 2 : 4, &u) < 0)
            return NULL;
        return s_mp_map(r, u, depth);
    default: /* 0xC1 is never used */
        s_err(r->err, r->err_len, "msgpack: invalid type byte 0x%02x at byte %zu", c, at);
        return NULL;
    }
}

sdx_value_t *sdx_msgpack_decode(const void *buf, size_t len, char *err, size_t err_len)
{
    s_err(err, err_len, "msgpack: out of memory");
    if (!buf || len == 0) {
        s_err(err, err_len, "msgpack: empty frame");
        return NULL;
    }
    s_mp_t r = {.p = buf, .len = len, .pos = 0, .err = err, .err_len = err_len};
    sdx_value_t *v = s_mp_value(&r, 0);
    if (v && r.pos != len) {
        s_err(err, err_len, "msgpack: %zu trailing bytes at byte %zu", len - r.pos, r.pos);
        sdx_value_destroy(&v);
    }
    return v;
}

/* ------------------------------------------------------------ JSON decode */

typedef struct {
    const char *p;
    size_t len, pos;
} s_numscan_t;

/* Next number literal outside strings, in document order. */
static bool s_next_number(s_numscan_t *s, const char **start, size_t *n)
{
    bool in_str = false;
    while (s->pos < s->len) {
        char c = s->p[s->pos];
        if (in_str) {
            if (c == '\\')
                s->pos++;
            else if (c == '"')
                in_str = false;
            s->pos++;
            continue;
        }
        if (c == '"') {
            in_str = true;
            s->pos++;
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t b = s->pos;
            while (s->pos < s->len && strchr("0123456789+-.eE", s->p[s->pos]) && s->p[s->pos])
                s->pos++;
            *start = s->p + b;
            *n = s->pos - b;
            return true;
        }
        s->pos++;
    }
    return false;
}

/* Pre-pass: UTF-8 validity and nesting depth. 0 ok, -1 with err. */
static int s_json_prescan(const uint8_t *p, size_t len, char *err, size_t err_len)
{
    size_t bad = s_utf8_check(p, len);
    if (bad != len) {
        s_err(err, err_len, "json: invalid UTF-8 at byte %zu", bad);
        return -1;
    }
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (in_str) {
            if (c == '\\') {
                /* cJSON would cut the string at an escaped NUL */
                if (i + 5 < len && memcmp(p + i + 1, "u0000", 5) == 0) {
                    s_err(err, err_len,
                          "json: \\u0000 (NUL) in a string at byte %zu is not supported", i);
                    return -1;
                }
                i++;
            } else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"')
            in_str = true;
        else if (c == '{' || c == '[') {
            if (++depth > SDX_CODEC_MAX_DEPTH + 1) {
                s_err(err, err_len, "json: nesting deeper than %d at byte %zu", SDX_CODEC_MAX_DEPTH,
                      i);
                return -1;
            }
        } else if (c == '}' || c == ']')
            depth--;
    }
    return 0;
}

typedef struct {
    s_numscan_t nums;
    char *err;
    size_t err_len;
} s_jconv_t;

static sdx_value_t *s_json_number(s_jconv_t *c, const cJSON *node)
{
    const char *t;
    size_t n;
    if (s_next_number(&c->nums, &t, &n) && n < 32) {
        bool integral = true;
        for (size_t i = 0; i < n; i++)
            if (t[i] == '.' || t[i] == 'e' || t[i] == 'E')
                integral = false;
        if (integral) {
            char tmp[32];
            memcpy(tmp, t, n);
            tmp[n] = '\0';
            errno = 0;
            char *end;
            long long ll = strtoll(tmp, &end, 10);
            if (errno == 0 && *end == '\0')
                return sdx_value_int_new(ll);
        }
    }
    return sdx_value_float_new(node->valuedouble);
}

static sdx_value_t *s_json_conv(s_jconv_t *c, const cJSON *node, int depth)
{
    if (depth > SDX_CODEC_MAX_DEPTH) {
        s_err(c->err, c->err_len, "json: nesting deeper than %d", SDX_CODEC_MAX_DEPTH);
        return NULL;
    }
    switch (node->type & 0xFF) {
    case cJSON_NULL:
        return sdx_value_nil_new();
    case cJSON_False:
        return sdx_value_bool_new(false);
    case cJSON_True:
        return sdx_value_bool_new(true);
    case cJSON_Number:
        return s_json_number(c, node);
    case cJSON_String:
        return sdx_value_str_new(node->valuestring ? node->valuestring : "");
    case cJSON_Array: {
        sdx_value_t *a = sdx_value_array_new();
        if (!a)
            return NULL;
        for (const cJSON *it = node->child; it; it = it->next) {
            sdx_value_t *v = s_json_conv(c, it, depth + 1);
            if (!v || sdx_array_push(a, v) != 0) {
                sdx_value_destroy(&a);
                return NULL;
            }
        }
        return a;
    }
    case cJSON_Object: {
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            return NULL;
        for (const cJSON *it = node->child; it; it = it->next) {
            size_t klen = strlen(it->string ? it->string : "");
            char *key = malloc(klen + 1);
            if (!key) {
                sdx_value_destroy(&m);
                return NULL;
            }
            memcpy(key, it->string ? it->string : "", klen + 1);
            sdx_value_t *v = s_json_conv(c, it, depth + 1);
            if (!v) {
                free(key);
                sdx_value_destroy(&m);
                return NULL;
            }
            if (s_map_append(m, key, klen, v) != 0) {
                sdx_value_destroy(&m);
                return NULL;
            }
        }
        const char *dup = s_map_dup_key(m);
        if (dup) {
            s_err(c->err, c->err_len, "json: duplicate key \"%.64s\"", dup);
            sdx_value_destroy(&m);
        }
        return m;
    }
    default:
        s_err(c->err, c->err_len, "json: unsupported node type");
        return NULL;
    }
}

sdx_value_t *sdx_json_decode(const void *buf, size_t len, char *err, size_t err_len)
{
    if (!buf || len == 0) {
        s_err(err, err_len, "json: empty frame");
        return NULL;
    }
    /* a UTF-8 byte order mark (System.Text.Json / StreamWriter can emit one)
       is not part of the text */
    const uint8_t *u8 = buf;
    if (len >= 3 && u8[0] == 0xef && u8[1] == 0xbb && u8[2] == 0xbf) {
        buf = u8 + 3;
        len -= 3;
        if (len == 0) {
            s_err(err, err_len, "json: empty frame (a byte order mark only)");
            return NULL;
        }
    }
    const char *text = buf;
    if (s_json_prescan(buf, len, err, err_len) < 0)
        return NULL;
    /* cJSON stops at a NUL: one inside the frame is an error of its own */
    if (memchr(text, '\0', len)) {
        s_err(err, err_len, "json: NUL byte at byte %zu",
              (size_t)((const char *)memchr(text, '\0', len) - text));
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        if (at >= len)
            s_err(err, err_len, "json: truncated at byte %zu", len);
        else
            s_err(err, err_len, "json: syntax error at byte %zu", at);
        return NULL;
    }
    size_t at = (size_t)(end - text);
    while (at < len &&
           (text[at] == ' ' || text[at] == '\t' || text[at] == '\r' || text[at] == '\n'))
        at++;
    if (at != len) {
        s_err(err, err_len, "json: trailing bytes at byte %zu", at);
        cJSON_Delete(root);
        return NULL;
    }
    s_err(err, err_len, "json: out of memory");
    s_jconv_t c = {.nums = {.p = text, .len = len, .pos = 0}, .err = err, .err_len = err_len};
    sdx_value_t *v = s_json_conv(&c, root, 0);
    cJSON_Delete(root);
    return v;
}

sdx_value_t *sdx_codec_decode(const void *buf, size_t len, sdx_encoding_t enc, char *err,
                              size_t err_len)
{
    return enc == SDX_ENC_JSON ? sdx_json_decode(buf, len, err, err_len)
                               : sdx_msgpack_decode(buf, len, err, err_len);
}

/* --------------------------------------------------------- msgpack encode */

static void s_mp_head(s_buf_t *b, uint8_t tag, uint64_t v, int n)
{
    uint8_t tmp[9];
    tmp[0] = tag;
    for (int i = 0; i < n; i++)
        tmp[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    s_buf_put(b, tmp, (size_t)n + 1);
}

static void s_mp_len(s_buf_t *b, uint64_t n, uint8_t fix, uint64_t fixmax, uint8_t t8, uint8_t t16,
                     uint8_t t32)
{
    if (fix && n <= fixmax)
        s_buf_byte(b, (uint8_t)(fix | n));
    else if (t8 && n <= 0xFF)
        s_mp_head(b, t8, n, 1);
    else if (n <= 0xFFFF)
        s_mp_head(b, t16, n, 2);
    else
        s_mp_head(b, t32, n, 4);
}

static void s_mp_enc(s_buf_t *b, const sdx_value_t *v)
{
    switch (v->type) {
    case SDX_NIL:
        s_buf_byte(b, 0xC0);
        break;
    case SDX_BOOL:
        s_buf_byte(b, v->u.b ? 0xC3 : 0xC2);
        break;
    case SDX_INT: {
        int64_t i = v->u.i;
        if (i >= 0) {
            if (i <= 0x7F)
                s_buf_byte(b, (uint8_t)i);
            else if (i <= 0xFF)
                s_mp_head(b, 0xCC, (uint64_t)i, 1);
            else if (i <= 0xFFFF)
                s_mp_head(b, 0xCD, (uint64_t)i, 2);
            else if (i <= 0xFFFFFFFFLL)
                s_mp_head(b, 0xCE, (uint64_t)i, 4);
            else
                s_mp_head(b, 0xCF, (uint64_t)i, 8);
        } else {
            if (i >= -32)
                s_buf_byte(b, (uint8_t)(int8_t)i);
            else if (i >= INT8_MIN)
                s_mp_head(b, 0xD0, (uint64_t)(uint8_t)(int8_t)i, 1);
            else if (i >= INT16_MIN)
                s_mp_head(b, 0xD1, (uint64_t)(uint16_t)(int16_t)i, 2);
            else if (i >= INT32_MIN)
                s_mp_head(b, 0xD2, (uint64_t)(uint32_t)(int32_t)i, 4);
            else
                s_mp_head(b, 0xD3, (uint64_t)i, 8);
        }
        break;
    }
    case SDX_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &v->u.f, 8);
        s_mp_head(b, 0xCB, bits, 8);
        break;
    }
    case SDX_STR:
        s_mp_len(b, v->u.str.len, 0xA0, 31, 0xD9, 0xDA, 0xDB);
        s_buf_put(b, v->u.str.ptr, v->u.str.len);
        break;
    case SDX_BIN:
        s_mp_len(b, v->u.bin.len, 0, 0, 0xC4, 0xC5, 0xC6);
        s_buf_put(b, v->u.bin.ptr, v->u.bin.len);
        break;
    case SDX_EXT: {
        size_t n = v->u.ext.len;
        if (n == 1 || n == 2 || n == 4 || n == 8 || n == 16)
            s_buf_byte(b, (uint8_t)(0xD4 + (n == 1   ? 0
                                            : n == 2 ? 1
                                            : n == 4 ? 2
                                            : n == 8 ? 3
                                                     : 4)));
        else
            s_mp_len(b, n, 0, 0, 0xC7, 0xC8, 0xC9);
        s_buf_byte(b, (uint8_t)v->u.ext.type);
        s_buf_put(b, v->u.ext.ptr, n);
        break;
    }
    case SDX_ARRAY:
        s_mp_len(b, v->u.arr.len, 0x90, 15, 0, 0xDC, 0xDD);
        for (size_t i = 0; i < v->u.arr.len; i++)
            s_mp_enc(b, v->u.arr.items[i]);
        break;
    case SDX_MAP:
        s_mp_len(b, v->u.map.len, 0x80, 15, 0, 0xDE, 0xDF);
        for (size_t i = 0; i < v->u.map.len; i++) {
            const sdx_kv_t *kv = &v->u.map.items[i];
            s_mp_len(b, kv->key_len, 0xA0, 31, 0xD9, 0xDA, 0xDB);
            s_buf_put(b, kv->key, kv->key_len);
            s_mp_enc(b, kv->val);
        }
        break;
    }
}

int sdx_msgpack_encode(const sdx_value_t *v, uint8_t **out, size_t *out_len)
{
    if (!v || !out || !out_len)
        return -1;
    s_buf_t b = {0};
    s_mp_enc(&b, v);
    return s_buf_finish(&b, out, out_len, false);
}

/* ------------------------------------------------------------ JSON encode */

static const char s_hex[] = "0123456789abcdef";

/* Quoted JSON string; invalid UTF-8 bytes become U+FFFD. */
static void s_json_str(s_buf_t *b, const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    s_buf_byte(b, '"');
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        while (run < len && p[run] >= 0x20 && p[run] != '"' && p[run] != '\\' && p[run] < 0x80)
            run++;
        if (run > i) {
            s_buf_put(b, p + i, run - i);
            i = run;
            continue;
        }
        uint8_t c = p[i];
        if (c >= 0x80) {
            size_t ok = s_utf8_check(p + i, len - i);
            if (ok > 0) {
                /* copy the valid multi-byte run up to the next ASCII */
                size_t n = 0;
                while (n < ok && p[i + n] >= 0x80)
                    n++;
                s_buf_put(b, p + i, n);
                i += n;
            } else {
                s_buf_put(b, "\xEF\xBF\xBD", 3);
                i++;
            }
            continue;
        }
        char esc[7];
        switch (c) {
        case '"':
            s_buf_put(b, "\\\"", 2);
            break;
        case '\\':
            s_buf_put(b, "\\\\", 2);
            break;
        case '\n':
            s_buf_put(b, "\\n", 2);
            break;
        case '\r':
            s_buf_put(b, "\\r", 2);
            break;
        case '\t':
            s_buf_put(b, "\\t", 2);
            break;
        case '\b':
            s_buf_put(b, "\\b", 2);
            break;
        case '\f':
            s_buf_put(b, "\\f", 2);
            break;
        default:
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = s_hex[c >> 4];
            esc[5] = s_hex[c & 15];
            s_buf_put(b, esc, 6);
        }
        i++;
    }
    s_buf_byte(b, '"');
}

static void s_json_b64(s_buf_t *b, const uint8_t *p, size_t n)
{
    char *t = sdx_base64_encode(p, n);
    if (!t) {
        b->oom = true;
        return;
    }
    s_buf_byte(b, '"');
    s_buf_put(b, t, strlen(t));
    s_buf_byte(b, '"');
    free(t);
}

static void s_json_enc(s_buf_t *b, const sdx_value_t *v)
{
    char tmp[40];
    switch (v->type) {
    case SDX_NIL:
        s_buf_put(b, "null", 4);
        break;
    case SDX_BOOL:
        if (v->u.b)
            s_buf_put(b, "true", 4);
        else
            s_buf_put(b, "false", 5);
        break;
    case SDX_INT: {
        int n = snprintf(tmp, sizeof tmp, "%" PRId64, v->u.i);
        s_buf_put(b, tmp, (size_t)n);
        break;
    }
    case SDX_FLOAT: {
        double d = v->u.f;
        if (!isfinite(d)) {
            s_buf_put(b, "null", 4); /* JSON has no NaN/Inf */
            break;
        }
        int n = snprintf(tmp, sizeof tmp, "%.15g", d);
        if (strtod(tmp, NULL) != d)
            n = snprintf(tmp, sizeof tmp, "%.17g", d);
        /* keep it a float on the way back */
        if (!strpbrk(tmp, ".eE")) {
            tmp[n++] = '.';
            tmp[n++] = '0';
            tmp[n] = '\0';
        }
        s_buf_put(b, tmp, (size_t)n);
        break;
    }
    case SDX_STR:
        s_json_str(b, v->u.str.ptr, v->u.str.len);
        break;
    case SDX_BIN:
        s_json_b64(b, v->u.bin.ptr, v->u.bin.len);
        break;
    case SDX_EXT: {
        int n = snprintf(tmp, sizeof tmp, "{\"$ext\":%d,\"data\":", v->u.ext.type);
        s_buf_put(b, tmp, (size_t)n);
        s_json_b64(b, v->u.ext.ptr, v->u.ext.len);
        s_buf_byte(b, '}');
        break;
    }
    case SDX_ARRAY:
        s_buf_byte(b, '[');
        for (size_t i = 0; i < v->u.arr.len; i++) {
            if (i)
                s_buf_byte(b, ',');
            s_json_enc(b, v->u.arr.items[i]);
        }
        s_buf_byte(b, ']');
        break;
    case SDX_MAP:
        s_buf_byte(b, '{');
        for (size_t i = 0; i < v->u.map.len; i++) {
            if (i)
                s_buf_byte(b, ',');
            s_json_str(b, v->u.map.items[i].key, v->u.map.items[i].key_len);
            s_buf_byte(b, ':');
            s_json_enc(b, v->u.map.items[i].val);
        }
        s_buf_byte(b, '}');
        break;
    }
}

int sdx_json_encode(const sdx_value_t *v, uint8_t **out, size_t *out_len)
{
    if (!v || !out || !out_len)
        return -1;
    s_buf_t b = {0};
    s_json_enc(&b, v);
    return s_buf_finish(&b, out, out_len, true);
}

int sdx_codec_encode(const sdx_value_t *v, sdx_encoding_t enc, uint8_t **out, size_t *out_len)
{
    return enc == SDX_ENC_JSON ? sdx_json_encode(v, out, out_len)
                               : sdx_msgpack_encode(v, out, out_len);
}

/* ----------------------------------------------------------------- base64 */

static const char s_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *sdx_base64_encode(const void *data, size_t len)
{
    const uint8_t *p = data;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    size_t n = (len + 2) / 3 * 4;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = s_b64[w >> 18];
        out[o++] = s_b64[(w >> 12) & 63];
        out[o++] = s_b64[(w >> 6) & 63];
        out[o++] = s_b64[w & 63];
    }
    if (i < len) {
        uint32_t w = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = s_b64[w >> 18];
        out[o++] = s_b64[(w >> 12) & 63];
        out[o++] = i + 1 < len ? s_b64[(w >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int s_b64_val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int sdx_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len)
{
    if (!text || !out || !out_len)
        return -1;
    *out = NULL;
    *out_len = 0;
    /* optional data URI prefix: "data:image/png;base64," */
    if (len >= 5 && memcmp(text, "data:", 5) == 0) {
        const char *comma = memchr(text, ',', len);
        if (!comma || comma - text < 12 || memcmp(comma - 7, ";base64", 7) != 0)
            return -1;
        len -= (size_t)(comma + 1 - text);
        text = comma + 1;
    }
    uint8_t *buf = malloc(len / 4 * 3 + 3);
    if (!buf)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int nbits = 0, quad = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)text[i];
        if (c == '\r' || c == '\n')
            continue; /* MIME line breaks */
        if (c == '=') {
            pad++;
            quad++;
            continue;
        }
        if (pad)
            goto invalid; /* data after padding */
        int v = s_b64_val(c);
        if (v < 0)
            goto invalid;
        acc = (acc << 6) | (uint32_t)v;
        nbits += 6;
        quad++;
        if (nbits >= 8) {
            nbits -= 8;
            buf[o++] = (uint8_t)(acc >> nbits);
        }
    }
    /* unpadded input is accepted; a lone sextet or too much padding is not */
    if (pad > 2 || (pad && quad % 4 != 0) || quad % 4 == 1)
        goto invalid;
    *out = buf;
    *out_len = o;
    return 0;
invalid:
    free(buf);
    return -1;
}

/* ------------------------------------------------------------------ files */

char *sdx_codec_read_file(const char *path, size_t *len, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        s_err(err, err_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    /* read until EOF rather than trusting a size from stat/ftell, so pipes
       and files that change under us still give what was read */
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                s_err(err, err_len, "%s: out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}
