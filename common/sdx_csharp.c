/*  sdx_csharp.c - C# dialect <-> native envelope and flat request, driven by
    the annotations of schemas/csharp_enhanced_request.json (see
    sdx_csharp.h for the two phases). Knows the MessagePack-CSharp wire
    forms (LZ4 ext 99/98, timestamps ext -1, [Key(n)] arrays) but no field
    names: those are all in schemas/.
    Not for: validation (sdx_schema.c), framing, the action table.
*/
#include "sdx_csharp.h"
#include "sdx_envelope.h"
#include "sdx_log.h"

#include <assert.h>
#include <ctype.h>
#include <lz4.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define S_EXT_TIMESTAMP (-1)
#define S_EXT_LZ4_BLOCK 99
#define S_EXT_LZ4_BLOCK_ARRAY 98

/* Native envelope keys (PROTOCOL.md 1.3) a C# message may also use, matched
   with the one loose rule of every envelope key (sdx_key_equal_loose: case,
   '_' and '-' ignored), so "Type", "type" and "TYPE" are the same key. */
static const char *s_native_envelope_keys[] = {
    "message_type", "type",       "request_id", "data",        "priority",
    "timeout_ms",   "timeout_s",  "timeout_seconds", "stream",
    "action",       "worker_type", "session_id", "timestamp",   "gpu",
    NULL,
};

/* The native envelope key `key` names loosely, NULL if none. */
static const char *s_native_envelope_key(const char *key)
{
    for (size_t j = 0; s_native_envelope_keys[j]; j++)
        if (sdx_key_equal_loose(key, s_native_envelope_keys[j]))
            return s_native_envelope_keys[j];
    return NULL;
}

/* ---- names */

bool sdx_csharp_pascal(const char *in, char *out, size_t out_len)
{
    assert(in && out && out_len);
    size_t j = 0;
    bool up = true;
    const char *p = in;
    for (; *p && j + 1 < out_len; p++) {
        if (*p == '_' || *p == '-') {
            up = true;
            continue;
        }
        out[j++] = up ? (char)toupper((unsigned char)*p) : *p;
        up = false;
    }
    out[j] = '\0';
    return *p == '\0';
}

bool sdx_csharp_snake(const char *in, char *out, size_t out_len)
{
    assert(in && out && out_len);
    size_t j = 0, i = 0;
    for (; in[i] && j + 2 < out_len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (isupper(c)) {
            bool prev_lower =
                i > 0 && (islower((unsigned char)in[i - 1]) || isdigit((unsigned char)in[i - 1]));
            bool acronym_end = i > 0 && isupper((unsigned char)in[i - 1]) &&
                               islower((unsigned char)in[i + 1]) && in[i + 2] != '\0';
            if (j > 0 && out[j - 1] != '_' && (prev_lower || acronym_end))
                out[j++] = '_';
            out[j++] = (char)tolower(c);
        } else {
            out[j++] = (char)(c == '-' ? '_' : c);
        }
    }
    out[j] = '\0';
    return in[i] == '\0';
}

/* ---- errors */

static int s_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int s_ferr(sdx_schema_error_t *e, const char *field, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int s_ferr(sdx_schema_error_t *e, const char *field, const char *rule, const char *fmt, ...)
{
    snprintf(e->field, sizeof e->field, "%s", field);
    snprintf(e->rule, sizeof e->rule, "%s", rule);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* A printable, bounded copy of a (possibly hostile) key for messages. */
static void s_safe(const char *in, char *out, size_t out_len)
{
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 4 < out_len && i < 48; i++) {
        unsigned char c = (unsigned char)in[i];
        out[j++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    if (strlen(in) > 48 && j + 4 < out_len) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = '\0';
}

/* The names of a schema's properties, "A, B, C". */
static void s_prop_names(const sdx_value_t *props, char *out, size_t out_len)
{
    out[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; props && props->type == SDX_MAP && i < props->u.map.len; i++) {
        int w =
            snprintf(out + used, out_len - used, "%s%s", i ? ", " : "", props->u.map.items[i].key);
        if (w < 0 || (size_t)w >= out_len - used)
            return;
        used += (size_t)w;
    }
}

/* ---- .NET wire forms and warnings */

/* Keep a warning for the reply's Warnings (bounded; the rest counted). */
static void s_warn(sdx_csharp_info_t *info, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void s_warn(sdx_csharp_info_t *info, const char *fmt, ...)
{
    if (!info)
        return;
    if (info->nwarnings >= SDX_CSHARP_MAX_WARNINGS) {
        info->warnings_dropped++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info->warnings[info->nwarnings++], sizeof info->warnings[0], fmt, ap);
    va_end(ap);
}

/* A .NET Guid's 16 bytes (Guid.ToByteArray / NativeGuidResolver order:
   Data1..Data3 little-endian, Data4 as is) -> its 36-character text. */
static void s_guid_text(const uint8_t *b, char *out, size_t out_len)
{
    snprintf(out, out_len,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[3], b[2],
             b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

/* A .NET TimeSpan as System.Text.Json writes it ("[-][d.]hh:mm:ss[.fffffff]")
   -> milliseconds. false if the text is not one. */
static bool s_timespan_ms(const char *t, double *ms)
{
    const char *p = t;
    bool neg = *p == '-';
    if (neg)
        p++;
    long long f[4] = {0, 0, 0, 0};
    int nf = 0;
    char sep[4] = {0};
    while (nf < 4) {
        if (!isdigit((unsigned char)*p))
            return false;
        char *end;
        f[nf] = strtoll(p, &end, 10);
        p = end;
        sep[nf] = *p;
        nf++;
        if (*p == ':' || (*p == '.' && nf == 1 && strchr(p + 1, ':')))
            p++;
        else
            break;
    }
    double frac = 0;
    if (*p == '.') {
        char *end;
        frac = strtod(p, &end);
        p = end;
    }
    if (*p != '\0')
        return false;
    long long d = 0, h, m, s = 0;
    if (sep[0] == '.') { /* d.hh:mm[:ss] */
        d = f[0];
        h = f[1];
        m = f[2];
        s = nf > 3 ? f[3] : 0;
        if (nf < 3)
            return false;
    } else { /* hh:mm[:ss] */
        if (nf < 2 || nf > 3)
            return false;
        h = f[0];
        m = f[1];
        s = nf > 2 ? f[2] : 0;
    }
    if (h > 23 || m > 59 || s > 59 || d > 10675199)
        return false;
    double v = ((((double)d * 24 + (double)h) * 60 + (double)m) * 60 + (double)s + frac) * 1000.0;
    *ms = neg ? -v : v;
    return true;
}

/* A decimal as MessagePack-CSharp writes it (a string, "7.5") -> a number.
   NULL if the text is not a finite number. */
static sdx_value_t *s_decimal_value(const char *t, bool want_int)
{
    /* .NET writes decimals in plain notation: no hex, no inf/nan words */
    if (!*t || isspace((unsigned char)*t) || strpbrk(t, "xXpPiInN"))
        return NULL;
    char *end;
    double d = strtod(t, &end);
    if (*end != '\0' || d != d || d > 1e300 || d < -1e300)
        return NULL;
    if (want_int) {
        if (d > 9.2e18 || d < -9.2e18 || d != (double)(long long)d)
            return NULL;
        return sdx_value_int_new((int64_t)d);
    }
    return sdx_value_float_new(d);
}

/* Does a schema node's "type" (a name or a list) include `name`? */
static bool s_type_has(const sdx_value_t *node, const char *name)
{
    const sdx_value_t *t = sdx_map_get(node, "type");
    if (t && t->type == SDX_STR)
        return strcmp(t->u.str.ptr, name) == 0;
    for (size_t i = 0; t && t->type == SDX_ARRAY && i < t->u.arr.len; i++)
        if (t->u.arr.items[i]->type == SDX_STR && strcmp(t->u.arr.items[i]->u.str.ptr, name) == 0)
            return true;
    return false;
}

/* .NET wire forms of one leaf, turned into what the schema wants (a new
   value in *out, or NULL when nothing applies):
   - decimal as a string where the schema wants a number;
   - a Guid as 16 bytes (NativeGuidResolver) where it wants a string;
   - a TimeSpan (x-timespan {unit: ms|s[, integer: ticks][, ticks_from: N]}):
     STJ text, or MessagePack-CSharp int64 ticks when the field says so
     (every integer, or those >= ticks_from: smaller ones are plain numbers
     in `unit`). */
static int s_dotnet_leaf(const sdx_value_t *ps, const sdx_value_t *v, const char *path,
                         sdx_value_t **out, sdx_schema_error_t *e)
{
    *out = NULL;
    if (!ps)
        return 0;
    const sdx_value_t *ts = sdx_map_get(ps, "x-timespan");
    if (ts && ts->type == SDX_MAP) {
        const char *unit = sdx_map_str(ts, "unit", "ms");
        double div = strcmp(unit, "s") == 0 ? 1000.0 : 1.0;
        double ms;
        if (v->type == SDX_STR) {
            if (!s_timespan_ms(v->u.str.ptr, &ms))
                return s_ferr(e, path, "x-timespan",
                              "not a TimeSpan: expected [-][d.]hh:mm:ss[.fffffff] (e.g. "
                              "\"00:05:00\") or a number");
        } else if (v->type == SDX_INT &&
                   (strcmp(sdx_map_str(ts, "integer", ""), "ticks") == 0 ||
                    (sdx_map_get(ts, "ticks_from") &&
                     v->u.i >= sdx_map_int(ts, "ticks_from", INT64_MAX)))) {
            ms = (double)v->u.i / 10000.0; /* .NET ticks are 100 ns */
        } else {
            return 0;
        }
        double x = ms / div;
        bool want_int = s_type_has(ps, "integer") && !s_type_has(ps, "number");
        *out = want_int ? sdx_value_int_new((int64_t)(x + (x >= 0 ? 0.5 : -0.5)))
                        : sdx_value_float_new(x);
        return *out ? 0 : s_ferr(e, path, "internal", "out of memory");
    }
    if (v->type == SDX_STR && !s_type_has(ps, "string") &&
        (s_type_has(ps, "number") || s_type_has(ps, "integer"))) {
        *out = s_decimal_value(v->u.str.ptr, !s_type_has(ps, "number"));
        return 0; /* not a number: the validator says what is wanted */
    }
    if (v->type == SDX_BIN && v->u.bin.len == 16 && s_type_has(ps, "string") &&
        !s_type_has(ps, "binary")) {
        char g[40];
        s_guid_text(v->u.bin.ptr, g, sizeof g);
        *out = sdx_value_str_new(g);
        return *out ? 0 : s_ferr(e, path, "internal", "out of memory");
    }
    return 0;
}

/* ---- detection and LZ4 */

static bool s_is_lz4(const sdx_value_t *root)
{
    if (!root)
        return false;
    if (root->type == SDX_EXT && root->u.ext.type == S_EXT_LZ4_BLOCK)
        return true;
    return root->type == SDX_ARRAY && root->u.arr.len >= 1 &&
           root->u.arr.items[0]->type == SDX_EXT &&
           root->u.arr.items[0]->u.ext.type == S_EXT_LZ4_BLOCK_ARRAY;
}

sdx_dialect_t sdx_csharp_detect(const sdx_value_t *root)
{
    if (!root)
        return SDX_DIALECT_NATIVE;
    if (s_is_lz4(root) || root->type == SDX_ARRAY)
        return SDX_DIALECT_CSHARP;
    if (root->type != SDX_MAP)
        return SDX_DIALECT_NATIVE;
    for (size_t i = 0; i < root->u.map.len; i++) {
        const char *k = root->u.map.items[i].key;
        if (sdx_key_equal_loose(k, "action") || sdx_key_equal_loose(k, "worker_type") ||
            isupper((unsigned char)k[0]))
            return SDX_DIALECT_CSHARP;
    }
    return SDX_DIALECT_NATIVE;
}

/* Read one msgpack integer at p (any int encoding); advances *pos. */
static bool s_read_mp_int(const uint8_t *p, size_t len, size_t *pos, int64_t *out)
{
    if (*pos >= len)
        return false;
    uint8_t c = p[*pos];
    size_t need;
    if (c <= 0x7f) {
        *out = c;
        (*pos)++;
        return true;
    }
    if (c >= 0xe0) {
        *out = (int8_t)c;
        (*pos)++;
        return true;
    }
    switch (c) {
    case 0xcc:
    case 0xd0:
        need = 1;
        break;
    case 0xcd:
    case 0xd1:
        need = 2;
        break;
    case 0xce:
    case 0xd2:
        need = 4;
        break;
    default:
        return false;
    }
    if (len - *pos < 1 + need)
        return false;
    uint64_t u = 0;
    for (size_t i = 0; i < need; i++)
        u = (u << 8) | p[*pos + 1 + i];
    if (c >= 0xd0) { /* signed */
        int64_t s = need == 1 ? (int8_t)u : need == 2 ? (int16_t)u : (int32_t)u;
        *out = s;
    } else {
        *out = (int64_t)u;
    }
    *pos += 1 + need;
    return true;
}

int sdx_csharp_unwrap_lz4(sdx_value_t **root_p, size_t max_len, char *err, size_t err_len)
{
    assert(root_p);
    sdx_value_t *root = *root_p;
    if (!s_is_lz4(root))
        return 0;
    if (!max_len)
        max_len = SDX_CSHARP_MAX_LZ4_BYTES;
    uint8_t *out = NULL;
    size_t total = 0;
    if (root->type == SDX_EXT) { /* Lz4Block: int32 length, then one LZ4 block */
        size_t pos = 0;
        int64_t n = 0;
        if (!s_read_mp_int(root->u.ext.ptr, root->u.ext.len, &pos, &n) || n < 0)
            return s_err(err, err_len,
                         "lz4 ext 99: payload must start with the uncompressed length as a "
                         "msgpack int32");
        if ((uint64_t)n > max_len)
            return s_err(err, err_len, "lz4 ext 99: uncompressed length %lld over the limit %zu",
                         (long long)n, max_len);
        total = (size_t)n;
        out = malloc(total ? total : 1);
        if (!out)
            return s_err(err, err_len, "out of memory");
        int got = LZ4_decompress_safe((const char *)root->u.ext.ptr + pos, (char *)out,
                                      (int)(root->u.ext.len - pos), (int)total);
        if (got < 0 || (size_t)got != total) {
            free(out);
            return s_err(err, err_len, "lz4 ext 99: corrupt LZ4 block (declared %zu bytes)", total);
        }
    } else { /* Lz4BlockArray: [ext 98 (lengths), bin, bin, ...] */
        const sdx_value_t *hdr = root->u.arr.items[0];
        size_t nchunks = root->u.arr.len - 1;
        int64_t *lens = calloc(nchunks ? nchunks : 1, sizeof *lens);
        if (!lens)
            return s_err(err, err_len, "out of memory");
        size_t pos = 0;
        for (size_t i = 0; i < nchunks; i++) {
            if (!s_read_mp_int(hdr->u.ext.ptr, hdr->u.ext.len, &pos, &lens[i]) || lens[i] < 0) {
                free(lens);
                return s_err(err, err_len,
                             "lz4 ext 98: header must hold one msgpack int per chunk (%zu chunks)",
                             nchunks);
            }
            if ((uint64_t)lens[i] > max_len - total) {
                free(lens);
                return s_err(err, err_len, "lz4 ext 98: uncompressed size over the limit %zu",
                             max_len);
            }
            total += (size_t)lens[i];
        }
        if (pos != hdr->u.ext.len) {
            free(lens);
            return s_err(err, err_len, "lz4 ext 98: header holds more lengths than chunks");
        }
        out = malloc(total ? total : 1);
        if (!out) {
            free(lens);
            return s_err(err, err_len, "out of memory");
        }
        size_t off = 0;
        for (size_t i = 0; i < nchunks; i++) {
            const sdx_value_t *c = root->u.arr.items[i + 1];
            if (c->type != SDX_BIN) {
                free(lens);
                free(out);
                return s_err(err, err_len, "lz4 ext 98: chunk %zu must be bin, got %s", i,
                             sdx_vtype_name(c->type));
            }
            int got = LZ4_decompress_safe((const char *)c->u.bin.ptr, (char *)out + off,
                                          (int)c->u.bin.len, (int)lens[i]);
            if (got < 0 || got != lens[i]) {
                free(lens);
                free(out);
                return s_err(err, err_len, "lz4 ext 98: chunk %zu is corrupt", i);
            }
            off += (size_t)lens[i];
        }
        free(lens);
    }
    char derr[200];
    sdx_value_t *inner = sdx_msgpack_decode(out, total, derr, sizeof derr);
    free(out);
    if (!inner)
        return s_err(err, err_len, "lz4: decompressed payload: %s", derr);
    if (s_is_lz4(inner)) {
        sdx_value_destroy(&inner);
        return s_err(err, err_len, "lz4: nested compression is not accepted");
    }
    sdx_value_destroy(root_p);
    *root_p = inner;
    return 1;
}

/* ---- timestamps and other extensions */

/* msgpack timestamp (ext -1: 4, 8 or 12 bytes) -> RFC 3339 UTC. */
static bool s_timestamp_text(const sdx_value_t *v, char *out, size_t out_len)
{
    const uint8_t *p = v->u.ext.ptr;
    int64_t sec;
    uint32_t nsec = 0;
    if (v->u.ext.len == 4) {
        sec = (int64_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                        p[3]);
    } else if (v->u.ext.len == 8) {
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u = (u << 8) | p[i];
        nsec = (uint32_t)(u >> 34);
        sec = (int64_t)(u & 0x3ffffffffULL);
    } else if (v->u.ext.len == 12) {
        nsec = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
        uint64_t u = 0;
        for (int i = 4; i < 12; i++)
            u = (u << 8) | p[i];
        sec = (int64_t)u;
    } else {
        return false;
    }
    if (nsec >= 1000000000u)
        return false;
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return false;
    char base[40];
    if (!strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm))
        return false;
    if (nsec)
        snprintf(out, out_len, "%s.%09uZ", base, nsec);
    else
        snprintf(out, out_len, "%sZ", base);
    return true;
}

/* Replace timestamps by text everywhere; any other extension is an error. */
static int s_convert_ext(sdx_value_t **slot, char *path, size_t path_cap, char *err, size_t err_len)
{
    sdx_value_t *v = *slot;
    if (v->type == SDX_EXT) {
        char text[64];
        if (v->u.ext.type == S_EXT_TIMESTAMP && s_timestamp_text(v, text, sizeof text)) {
            sdx_value_t *s = sdx_value_str_new(text);
            if (!s)
                return s_err(err, err_len, "out of memory");
            sdx_value_destroy(slot);
            *slot = s;
            return 0;
        }
        return s_err(err, err_len,
                     "%s%sunsupported msgpack extension type %d (%zu bytes); accepted: -1 "
                     "(timestamp, 4/8/12 bytes), 99/98 (LZ4, around the whole message)",
                     path, path[0] ? ": " : "", (int)v->u.ext.type, v->u.ext.len);
    }
    /* DateTimeOffset as MessagePack-CSharp writes it: [DateTime, int16
       offset minutes], the DateTime holding the local clock time. */
    if (v->type == SDX_ARRAY && v->u.arr.len == 2 && v->u.arr.items[0]->type == SDX_EXT &&
        v->u.arr.items[0]->u.ext.type == S_EXT_TIMESTAMP && v->u.arr.items[1]->type == SDX_INT &&
        v->u.arr.items[1]->u.i >= -1080 && v->u.arr.items[1]->u.i <= 1080) {
        char text[80];
        if (s_timestamp_text(v->u.arr.items[0], text, sizeof text)) {
            int64_t off = v->u.arr.items[1]->u.i;
            size_t tl = strlen(text);
            int64_t ao = off < 0 ? -off : off;
            snprintf(text + tl - 1, sizeof text - (tl - 1), "%c%02d:%02d", off < 0 ? '-' : '+',
                     (int)(ao / 60), (int)(ao % 60));
            sdx_value_t *str = sdx_value_str_new(text);
            if (!str)
                return s_err(err, err_len, "out of memory");
            sdx_value_destroy(slot);
            *slot = str;
            return 0;
        }
    }
    size_t n = strlen(path);
    if (v->type == SDX_ARRAY) {
        for (size_t i = 0; i < v->u.arr.len; i++) {
            snprintf(path + n, path_cap - n, "[%zu]", i);
            if (s_convert_ext(&v->u.arr.items[i], path, path_cap, err, err_len))
                return -1;
            path[n] = '\0';
        }
    } else if (v->type == SDX_MAP) {
        for (size_t i = 0; i < v->u.map.len; i++) {
            char k[64];
            s_safe(v->u.map.items[i].key, k, sizeof k);
            snprintf(path + n, path_cap - n, "%s%s", n ? "." : "", k);
            if (s_convert_ext(&v->u.map.items[i].val, path, path_cap, err, err_len))
                return -1;
            path[n] = '\0';
        }
    }
    return 0;
}

/* ---- schema helpers */

/* The property of `props` that `key` names: exact, loose, or one of its
   x-aliases. Returns the property's schema and sets *name. */
static const sdx_value_t *s_find_prop(const sdx_value_t *props, const char *key, const char **name)
{
    if (!props || props->type != SDX_MAP)
        return NULL;
    for (size_t i = 0; i < props->u.map.len; i++) {
        const sdx_kv_t *kv = &props->u.map.items[i];
        bool hit = sdx_key_equal_loose(kv->key, key);
        const sdx_value_t *al = sdx_map_get(kv->val, "x-aliases");
        for (size_t j = 0; !hit && al && al->type == SDX_ARRAY && j < al->u.arr.len; j++)
            hit = al->u.arr.items[j]->type == SDX_STR &&
                  sdx_key_equal_loose(al->u.arr.items[j]->u.str.ptr, key);
        if (hit) {
            *name = kv->key;
            return kv->val;
        }
    }
    return NULL;
}

/* Turn an array-encoded object into a map through node's x-key-order.
   Returns a new map (caller owns) or NULL with err. */
static sdx_value_t *s_array_to_map(const sdx_value_t *node, const sdx_value_t *arr,
                                   const char *path, sdx_schema_error_t *e)
{
    const sdx_value_t *order = sdx_map_get(node, "x-key-order");
    if (!order || order->type != SDX_ARRAY) {
        s_ferr(e, path, "type",
               "must be an object, got array (no [Key(n)] order is declared here)");
        return NULL;
    }
    if (arr->u.arr.len > order->u.arr.len) {
        char names[300];
        s_prop_names(sdx_map_get(node, "properties"), names, sizeof names);
        s_ferr(e, path, "x-key-order",
               "array-encoded object has %zu items, the declared [Key(n)] order has %zu (%s)",
               arr->u.arr.len, order->u.arr.len, names);
        return NULL;
    }
    sdx_value_t *m = sdx_value_map_new();
    if (!m) {
        s_ferr(e, path, "internal", "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < arr->u.arr.len; i++) {
        const sdx_value_t *k = order->u.arr.items[i];
        if (k->type != SDX_STR || arr->u.arr.items[i]->type == SDX_NIL)
            continue;
        sdx_value_t *c = sdx_value_clone(arr->u.arr.items[i]);
        if (!c || sdx_map_set(m, k->u.str.ptr, c) != 0) {
            sdx_value_destroy(&m);
            s_ferr(e, path, "internal", "out of memory");
            return NULL;
        }
    }
    return m;
}

/* An integer enum -> its name through x-enum-order; NULL if not applicable
   (err set if out of range). */
static int s_enum_int(const sdx_value_t *order, const sdx_value_t *v, const char *path,
                      sdx_value_t **out, sdx_schema_error_t *e)
{
    *out = NULL;
    if (!order || order->type != SDX_ARRAY || v->type != SDX_INT)
        return 0;
    if (v->u.i < 0 || (uint64_t)v->u.i >= order->u.arr.len) {
        char names[400] = "";
        size_t used = 0;
        for (size_t i = 0; i < order->u.arr.len && used + 1 < sizeof names; i++) {
            const sdx_value_t *n = order->u.arr.items[i];
            int w = snprintf(names + used, sizeof names - used, "%s%zu=%s", i ? ", " : "", i,
                             n->type == SDX_STR ? n->u.str.ptr : "?");
            if (w < 0 || (size_t)w >= sizeof names - used)
                break;
            used += (size_t)w;
        }
        return s_ferr(e, path, "x-enum-order", "enum value %lld out of range; accepted: %s",
                      (long long)v->u.i, names);
    }
    const sdx_value_t *n = order->u.arr.items[v->u.i];
    *out = n->type == SDX_STR ? sdx_value_str_new(n->u.str.ptr) : NULL;
    if (!*out)
        return s_ferr(e, path, "internal", "out of memory");
    return 0;
}

/* x-enum-unsupported {name: reason} beside an enum: values the C# side
   numbers (so the integer order must keep them) but this fleet cannot run.
   `v` is the value after enum mapping, `sent` the value as sent. */
static int s_enum_unsupported(const sdx_value_t *ps, const sdx_value_t *v, const sdx_value_t *sent,
                              const char *path, sdx_schema_error_t *e)
{
    const sdx_value_t *un = sdx_map_get(ps, "x-enum-unsupported");
    if (!un || un->type != SDX_MAP || !v || v->type != SDX_STR)
        return 0;
    for (size_t i = 0; i < un->u.map.len; i++) {
        const sdx_kv_t *kv = &un->u.map.items[i];
        if (!sdx_key_equal_loose(kv->key, v->u.str.ptr))
            continue;
        char names[400] = "";
        size_t used = 0;
        const sdx_value_t *order = sdx_map_get(ps, "x-enum-order");
        /* the names' common suffix ("Scheduler") is left out of the list */
        size_t suffix = SIZE_MAX;
        const char *first = NULL;
        for (size_t j = 0; order && order->type == SDX_ARRAY && j < order->u.arr.len; j++) {
            const sdx_value_t *n = order->u.arr.items[j];
            if (n->type != SDX_STR)
                continue;
            if (!first) {
                first = n->u.str.ptr;
                suffix = strlen(first);
                continue;
            }
            size_t a = strlen(first), b = n->u.str.len, k = 0;
            while (k < suffix && k < a && k < b && first[a - 1 - k] == n->u.str.ptr[b - 1 - k])
                k++;
            suffix = k;
        }
        if (suffix == SIZE_MAX)
            suffix = 0;
        for (size_t j = 0; order && order->type == SDX_ARRAY && j < order->u.arr.len; j++) {
            const sdx_value_t *n = order->u.arr.items[j];
            if (n->type != SDX_STR || sdx_map_get(un, n->u.str.ptr))
                continue;
            size_t keep = n->u.str.len > suffix ? n->u.str.len - suffix : n->u.str.len;
            int w = snprintf(names + used, sizeof names - used, "%s%zu=%.*s", used ? ", " : "", j,
                             (int)keep, n->u.str.ptr);
            if (w < 0 || (size_t)w >= sizeof names - used)
                break;
            used += (size_t)w;
        }
        char as_sent[48] = "";
        if (sent && sent->type == SDX_INT)
            snprintf(as_sent, sizeof as_sent, "enum value %lld ", (long long)sent->u.i);
        return s_ferr(e, path, "x-enum-unsupported", "%s(%s) is not supported: %s; accepted: %s",
                      as_sent, kv->key,
                      kv->val->type == SDX_STR ? kv->val->u.str.ptr : "the engine does not run it", names);
    }
    return 0;
}

/* ---- phase 1: envelope */

/* The slot of an exact key, to replace its value; NULL if absent. */
static sdx_value_t **s_map_slot(sdx_value_t *map, const char *key)
{
    for (size_t i = 0; map && map->type == SDX_MAP && i < map->u.map.len; i++)
        if (strcmp(map->u.map.items[i].key, key) == 0)
            return &map->u.map.items[i].val;
    return NULL;
}

/* The slot of the request id in a C# root: a map key (loosely), or the
   RequestId position of the envelope's x-key-order in an array. */
static sdx_value_t **s_id_slot(sdx_value_t *root, const sdx_value_t *env)
{
    if (root && root->type == SDX_MAP) {
        for (size_t i = 0; i < root->u.map.len; i++)
            if (sdx_key_equal_loose(root->u.map.items[i].key, "request_id"))
                return &root->u.map.items[i].val;
        return NULL;
    }
    const sdx_value_t *order = sdx_map_get(env, "x-key-order");
    for (size_t i = 0; root && root->type == SDX_ARRAY && order && order->type == SDX_ARRAY &&
                       i < order->u.arr.len && i < root->u.arr.len;
         i++)
        if (order->u.arr.items[i]->type == SDX_STR &&
            sdx_key_equal_loose(order->u.arr.items[i]->u.str.ptr, "request_id"))
            return &root->u.arr.items[i];
    return NULL;
}

/* Keep the request id as early as possible (an error reply echoes it, also
   for an array-encoded envelope that fails), as sent: text, integer, or a
   Guid's 16 bytes, which become its text for the rest of the fleet. */
static int s_note_id(sdx_csharp_info_t *info, sdx_value_t *root, const sdx_value_t *env)
{
    sdx_value_t **slot = s_id_slot(root, env);
    const sdx_value_t *rid = slot ? *slot : NULL;
    if (!rid)
        return 0;
    if (rid->type == SDX_STR) {
        snprintf(info->request_id, sizeof info->request_id, "%s", rid->u.str.ptr);
    } else if (rid->type == SDX_INT) {
        info->request_id_int = true;
        info->request_id_i = rid->u.i;
        snprintf(info->request_id, sizeof info->request_id, "%lld", (long long)rid->u.i);
    } else if (rid->type == SDX_BIN && rid->u.bin.len == 16) {
        info->request_id_bin = true;
        memcpy(info->request_id_bytes, rid->u.bin.ptr, 16);
        s_guid_text(info->request_id_bytes, info->request_id, sizeof info->request_id);
        sdx_value_t *t = sdx_value_str_new(info->request_id);
        if (!t)
            return -1;
        sdx_value_destroy(slot);
        *slot = t;
    }
    return 0;
}

/* The canonical message type a (renamed) envelope names, "" if none. */
static void s_message_type(const sdx_value_t *env, char *out, size_t out_len)
{
    out[0] = '\0';
    const char *mt = sdx_map_str(env, "message_type", NULL);
    if (!mt)
        mt = sdx_map_str(env, "type", NULL);
    if (mt) {
        snprintf(out, out_len, "%s", sdx_actions_canonical(mt));
        return;
    }
    const char *action = sdx_map_str(env, "action", NULL);
    if (!action)
        return;
    if (sdx_actions_count() == 0) {
        char err[256];
        if (sdx_actions_load_default(err, sizeof err) != 0)
            log_warn("csharp: no action table: %s", err);
    }
    if (sdx_actions_resolve(sdx_map_str(env, "worker_type", NULL), action, out, out_len) != 0)
        out[0] = '\0';
}

static int s_map_data(const sdx_schema_set_t *set, const char *message_type, sdx_value_t **data_p,
                      sdx_schema_error_t *err, sdx_csharp_info_t *wi);

int sdx_csharp_prepare(const sdx_schema_set_t *set, sdx_value_t **root_p, size_t max_lz4_len,
                       sdx_csharp_info_t *info, sdx_schema_error_t *ferr)
{
    assert(root_p && info && ferr);
    memset(info, 0, sizeof *info);
    memset(ferr, 0, sizeof *ferr);
    char *err = ferr->message;
    size_t err_len = sizeof ferr->message;
    snprintf(ferr->rule, sizeof ferr->rule, "csharp");
    info->set = set;
    if (!*root_p)
        return 0;
    int lz = sdx_csharp_unwrap_lz4(root_p, max_lz4_len, err, err_len);
    if (lz < 0) {
        info->dialect = SDX_DIALECT_CSHARP;
        info->lz4 = true;
        snprintf(ferr->rule, sizeof ferr->rule, "%s",
                 strstr(err, "over the limit") ? "x-lz4-limit" : "x-lz4");
        return -1;
    }
    info->lz4 = lz == 1;
    info->dialect = lz == 1 ? SDX_DIALECT_CSHARP : sdx_csharp_detect(*root_p);
    if (info->dialect == SDX_DIALECT_NATIVE)
        return 0;
    /* one envelope for every C# message: x-envelope, wherever declared */
    const sdx_value_t *env = sdx_schema_set_annotation(set, "x-envelope");
    const sdx_value_t *props = sdx_map_get(env, "properties");
    if (s_note_id(info, *root_p, env) != 0)
        return s_err(err, err_len, "out of memory");

    char path[256] = "";
    if (s_convert_ext(root_p, path, sizeof path, err, err_len))
        return -1;

    sdx_value_t *root = *root_p;
    sdx_schema_error_t e;
    if (root->type == SDX_ARRAY) {
        info->array_encoded = true; /* answered in the array contract, errors too */
        if (!env)
            return s_err(err, err_len,
                         "array-encoded request but no C# envelope is declared "
                         "(x-envelope in schemas/)");
        sdx_value_t *m = s_array_to_map(env, root, "", &e);
        if (!m)
            return s_err(err, err_len, "envelope: %s", e.message);
        /* positions carry no names: check each item's type against the
           envelope description before trusting it */
        if (sdx_schema_validate(env, &m, NULL, &e) != 0) {
            char order[300];
            s_prop_names(props, order, sizeof order);
            sdx_value_destroy(&m);
            return s_err(err, err_len, "array-encoded envelope [%s]: %s %s", order, e.field,
                         e.message);
        }
        sdx_value_destroy(root_p);
        *root_p = root = m;
        info->array_encoded = true;
    }
    if (root->type != SDX_MAP)
        return s_err(err, err_len,
                     "a C# request must be an object (map) or an array-encoded object, got %s",
                     sdx_vtype_name(root->type));

    sdx_value_t *out = sdx_value_map_new();
    sdx_value_t *rest = sdx_value_map_new();
    int rc = -1;
    if (!out || !rest) {
        s_err(err, err_len, "out of memory");
        goto done;
    }
    bool have_data = false;
    for (size_t i = 0; i < root->u.map.len; i++) {
        sdx_kv_t *kv = &root->u.map.items[i];
        const char *pname = NULL;
        const sdx_value_t *ps = s_find_prop(props, kv->key, &pname);
        char native[64];
        if (ps) {
            const char *xn = sdx_map_str(ps, "x-native", NULL);
            if (xn)
                snprintf(native, sizeof native, "%s", xn);
            else
                sdx_csharp_snake(pname, native, sizeof native);
        } else {
            const char *nk = s_native_envelope_key(kv->key);
            if (!nk) {
                sdx_value_t *c = sdx_value_clone(kv->val);
                if (!c || sdx_map_set(rest, kv->key, c) != 0) {
                    s_err(err, err_len, "out of memory");
                    goto done;
                }
                continue;
            }
            snprintf(native, sizeof native, "%s", nk);
        }
        sdx_value_t *val = NULL;
        if (s_enum_int(sdx_map_get(ps, "x-enum-order"), kv->val, pname ? pname : kv->key, &val,
                       &e) ||
            (!val && s_dotnet_leaf(ps, kv->val, pname ? pname : kv->key, &val, &e))) {
            *ferr = e;
            goto done;
        }
        if (!val)
            val = sdx_value_clone(kv->val);
        if (!val || sdx_map_set(out, native, val) != 0) {
            s_err(err, err_len, "out of memory");
            goto done;
        }
        if (strcmp(native, "data") == 0)
            have_data = true;
    }
    if (!have_data && sdx_map_len(rest) > 0) {
        /* the request's fields sit beside Action: they are the data */
        if (sdx_map_set(out, "data", rest) != 0) {
            rest = NULL;
            s_err(err, err_len, "out of memory");
            goto done;
        }
        rest = NULL;
    } else if (sdx_map_len(rest) > 0) {
        /* a real DTO has more properties than we know: ignored, and said so
           in the reply's Warnings */
        char names[400];
        s_prop_names(props, names, sizeof names);
        for (size_t i = 0; i < rest->u.map.len; i++) {
            char k[64];
            s_safe(rest->u.map.items[i].key, k, sizeof k);
            s_warn(info, "unknown envelope field '%s' ignored; known: %s", k, names);
        }
    }
    const sdx_value_t *a = sdx_map_get(out, "action");
    if (a && a->type == SDX_STR)
        snprintf(info->action, sizeof info->action, "%s", a->u.str.ptr);
    sdx_value_destroy(root_p);
    *root_p = out;
    out = NULL;
    /* the data's shape depends on the message type: resolve it the way
       the envelope will (it resolves it again; the keys stay as sent so it
       knows the request named an action) */
    s_message_type(*root_p, info->message_type, sizeof info->message_type);
    sdx_value_t **data = s_map_slot(*root_p, "data");
    if (info->message_type[0] && data && (*data)->type != SDX_NIL)
        rc = s_map_data(set, info->message_type, data, ferr, info);
    else
        rc = 0;
done:
    sdx_value_destroy(&out);
    sdx_value_destroy(&rest);
    return rc;
}

/* ---- phase 2: data */

static int s_set_at(sdx_value_t *target, const char *dotted, sdx_value_t *val, const char *cs_path,
                    sdx_schema_error_t *e)
{
    char hop[128];
    sdx_value_t *cur = target;
    const char *p = dotted;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof hop) {
            sdx_value_destroy(&val);
            return s_ferr(e, cs_path, "x-native", "schema error: bad x-native '%s'", dotted);
        }
        memcpy(hop, p, n);
        hop[n] = '\0';
        if (!dot) {
            if (sdx_map_get(cur, hop)) {
                sdx_value_destroy(&val);
                return s_ferr(e, cs_path, "duplicate", "given twice (maps to '%s')", dotted);
            }
            return sdx_map_set(cur, hop, val) == 0
                       ? 0
                       : s_ferr(e, cs_path, "internal", "out of memory");
        }
        sdx_value_t *next = sdx_map_get(cur, hop);
        if (!next) {
            next = sdx_value_map_new();
            if (!next || sdx_map_set(cur, hop, next) != 0) {
                sdx_value_destroy(&val);
                return s_ferr(e, cs_path, "internal", "out of memory");
            }
        } else if (next->type != SDX_MAP) {
            sdx_value_destroy(&val);
            return s_ferr(e, cs_path, "x-native", "conflicts with another field at '%s'", hop);
        }
        cur = next;
        p = dot + 1;
    }
}

static int s_map_object(const sdx_value_t *node, const sdx_value_t *val, sdx_value_t *target,
                        char *path, size_t path_cap, sdx_schema_error_t *e, int depth,
                        sdx_csharp_info_t *wi);

/* An array of C# objects (LoRAs, ControlNets) -> an array of flat objects. */
static int s_map_array(const sdx_value_t *ps, const sdx_value_t *val, sdx_value_t *target,
                       const char *native, char *path, size_t path_cap, sdx_schema_error_t *e,
                       int depth, sdx_csharp_info_t *wi)
{
    if (val->type != SDX_ARRAY)
        return s_ferr(e, path, "type", "must be an array, got %s", sdx_vtype_name(val->type));
    const sdx_value_t *items = sdx_map_get(ps, "items");
    sdx_value_t *arr = sdx_value_array_new();
    if (!arr)
        return s_ferr(e, path, "internal", "out of memory");
    size_t n = strlen(path);
    for (size_t i = 0; i < val->u.arr.len; i++) {
        snprintf(path + n, path_cap - n, "[%zu]", i);
        sdx_value_t *obj = sdx_value_map_new();
        if (!obj || sdx_array_push(arr, obj) != 0) {
            sdx_value_destroy(&arr);
            return s_ferr(e, path, "internal", "out of memory");
        }
        if (s_map_object(items, val->u.arr.items[i], obj, path, path_cap, e, depth + 1, wi)) {
            sdx_value_destroy(&arr);
            return -1;
        }
        path[n] = '\0';
    }
    return s_set_at(target, native, arr, path, e);
}

/* PostProcessing: each step goes to the flat field its Type selects. */
static int s_map_select(const sdx_value_t *ps, const sdx_value_t *val, sdx_value_t *target,
                        char *path, size_t path_cap, sdx_schema_error_t *e, int depth,
                        sdx_csharp_info_t *wi)
{
    const sdx_value_t *sel = sdx_map_get(ps, "x-native-select");
    const char *by = sdx_map_str(sel, "by", NULL);
    const sdx_value_t *map = sdx_map_get(sel, "map");
    const sdx_value_t *items = sdx_map_get(ps, "items");
    if (!by || !map || map->type != SDX_MAP)
        return s_ferr(e, path, "x-native-select", "schema error: x-native-select needs by and map");
    if (val->type != SDX_ARRAY)
        return s_ferr(e, path, "type", "must be an array, got %s", sdx_vtype_name(val->type));
    size_t n = strlen(path);
    for (size_t i = 0; i < val->u.arr.len; i++) {
        snprintf(path + n, path_cap - n, "[%zu]", i);
        const sdx_value_t *step = val->u.arr.items[i];
        sdx_value_t *tmp = NULL;
        if (step->type == SDX_ARRAY) {
            tmp = s_array_to_map(items, step, path, e);
            if (!tmp)
                return -1;
            step = tmp;
        }
        if (step->type != SDX_MAP) {
            sdx_value_destroy(&tmp);
            return s_ferr(e, path, "type", "must be an object, got %s", sdx_vtype_name(step->type));
        }
        const sdx_value_t *kind = sdx_map_get_loose(step, by);
        sdx_value_t *named = NULL;
        char tpath[300];
        snprintf(tpath, sizeof tpath, "%s.%s", path, by);
        if (kind && s_enum_int(sdx_map_get(sel, "x-enum-order"), kind, tpath, &named, e)) {
            sdx_value_destroy(&tmp);
            return -1;
        }
        const char *kname =
            named ? named->u.str.ptr : (kind && kind->type == SDX_STR ? kind->u.str.ptr : NULL);
        const char *dest = NULL;
        for (size_t j = 0; kname && j < map->u.map.len && !dest; j++)
            if (sdx_key_equal_loose(map->u.map.items[j].key, kname) &&
                map->u.map.items[j].val->type == SDX_STR)
                dest = map->u.map.items[j].val->u.str.ptr;
        if (!dest) {
            char got[64] = "nothing", names[200];
            if (kname)
                s_safe(kname, got, sizeof got);
            else if (kind)
                snprintf(got, sizeof got, "%s", sdx_vtype_name(kind->type));
            s_prop_names(map, names, sizeof names);
            sdx_value_destroy(&named);
            sdx_value_destroy(&tmp);
            return s_ferr(e, tpath, "x-native-select", "unsupported step '%s'; accepted: %s", got,
                          names);
        }
        sdx_value_destroy(&named);
        sdx_value_t *obj = sdx_value_map_new();
        if (!obj) {
            sdx_value_destroy(&tmp);
            return s_ferr(e, path, "internal", "out of memory");
        }
        int rc = s_map_object(items, step, obj, path, path_cap, e, depth + 1, wi);
        sdx_value_destroy(&tmp);
        if (rc || s_set_at(target, dest, obj, path, e)) {
            if (rc)
                sdx_value_destroy(&obj);
            return -1;
        }
        path[n] = '\0';
    }
    return 0;
}

static int s_map_object(const sdx_value_t *node, const sdx_value_t *val, sdx_value_t *target,
                        char *path, size_t path_cap, sdx_schema_error_t *e, int depth,
                        sdx_csharp_info_t *wi)
{
    if (depth > 16)
        return s_ferr(e, path, "depth", "nested too deeply");
    if (val->type == SDX_NIL)
        return 0;
    sdx_value_t *tmp = NULL;
    if (val->type == SDX_ARRAY) {
        tmp = s_array_to_map(node, val, path, e);
        if (!tmp)
            return -1;
        val = tmp;
    }
    int rc = 0;
    if (val->type != SDX_MAP) {
        rc = s_ferr(e, path, "type", "must be an object, got %s", sdx_vtype_name(val->type));
        goto done;
    }
    const sdx_value_t *props = sdx_map_get(node, "properties");
    size_t n = strlen(path);
    for (size_t i = 0; i < val->u.map.len && !rc; i++) {
        const sdx_kv_t *kv = &val->u.map.items[i];
        const char *pname = NULL;
        const sdx_value_t *ps = s_find_prop(props, kv->key, &pname);
        if (!ps) {
            /* a DTO property we do not know: ignored, listed in Warnings */
            char k[64], names[400];
            s_safe(kv->key, k, sizeof k);
            snprintf(path + n, path_cap - n, "%s%s", n ? "." : "", k);
            s_prop_names(props, names, sizeof names);
            s_warn(wi, "%s: unknown field ignored; known: %s", path, names);
            path[n] = '\0';
            continue;
        }
        snprintf(path + n, path_cap - n, "%s%s", n ? "." : "", pname);
        if (kv->val->type == SDX_NIL) { /* C# null: as if absent */
            path[n] = '\0';
            continue;
        }
        const char *native = sdx_map_str(ps, "x-native", NULL);
        if (sdx_map_get(ps, "x-native-select")) {
            rc = s_map_select(ps, kv->val, target, path, path_cap, e, depth, wi);
        } else if (sdx_map_get(ps, "properties")) {
            rc = s_map_object(ps, kv->val, target, path, path_cap, e, depth + 1, wi);
        } else if (native && sdx_map_get(ps, "items")) {
            rc = s_map_array(ps, kv->val, target, native, path, path_cap, e, depth, wi);
        } else if (native) {
            sdx_value_t *v = NULL;
            rc = s_enum_int(sdx_map_get(ps, "x-enum-order"), kv->val, path, &v, e);
            if (!rc && !v)
                rc = s_dotnet_leaf(ps, kv->val, path, &v, e);
            if (!rc)
                rc = s_enum_unsupported(ps, v ? v : kv->val, kv->val, path, e);
            if (rc)
                sdx_value_destroy(&v);
            if (!rc && !v && !(v = sdx_value_clone(kv->val)))
                rc = s_ferr(e, path, "internal", "out of memory");
            if (!rc)
                rc = s_set_at(target, native, v, path, e);
        } /* else: a field with no flat counterpart (e.g. a step's Type) */
        if (!rc)
            path[n] = '\0';
    }
done:
    sdx_value_destroy(&tmp);
    return rc;
}

/* Is this data the nested EnhancedSDXLRequest rather than a flat request?
   Yes if it is an array, or has a key of the C# top level that the native
   schema does not have, or whose value's shape the native one cannot take
   (Scheduler as an object). */
static bool s_is_nested(const sdx_value_t *cs, const sdx_value_t *native, const sdx_value_t *data)
{
    if (data->type == SDX_ARRAY)
        return true;
    if (data->type != SDX_MAP)
        return false;
    const sdx_value_t *cprops = sdx_map_get(cs, "properties");
    const sdx_value_t *nprops = sdx_map_get(native, "properties");
    for (size_t i = 0; i < data->u.map.len; i++) {
        const char *k = data->u.map.items[i].key;
        const char *name;
        if (!s_find_prop(cprops, k, &name))
            continue;
        const sdx_value_t *np = s_find_prop(nprops, k, &name);
        if (!np)
            return true;
        const sdx_value_t *v = data->u.map.items[i].val;
        const sdx_value_t *t = sdx_map_get(np, "type");
        bool native_obj = false;
        size_t nt = t && t->type == SDX_ARRAY ? t->u.arr.len : 1;
        for (size_t j = 0; t && j < nt; j++) {
            const sdx_value_t *ti = t->type == SDX_ARRAY ? t->u.arr.items[j] : t;
            native_obj =
                native_obj || (ti->type == SDX_STR && (strcmp(ti->u.str.ptr, "object") == 0 ||
                                                       strcmp(ti->u.str.ptr, "array") == 0));
        }
        if ((v->type == SDX_MAP || v->type == SDX_ARRAY) && !native_obj)
            return true;
    }
    return false;
}

/* Flat request with C#-cased keys: rename keys to the native schema's names
   (GuidanceScale -> guidance_scale), following properties and items; turn
   .NET leaf forms (decimal strings, Guid bytes) into what the schema wants;
   drop keys an object with additionalProperties: false does not know, with
   a warning (the C# dialect is lenient, the native one strict). */
static int s_rename_loose(const sdx_value_t *schema, sdx_value_t *data, char *path,
                          size_t path_cap, sdx_schema_error_t *e, int depth,
                          sdx_csharp_info_t *wi)
{
    if (!schema || !data || depth > 16)
        return 0;
    size_t n = strlen(path);
    if (data->type == SDX_ARRAY) {
        const sdx_value_t *items = sdx_map_get(schema, "items");
        for (size_t i = 0; items && i < data->u.arr.len; i++) {
            snprintf(path + n, path_cap - n, "[%zu]", i);
            sdx_value_t *conv = NULL;
            if (s_dotnet_leaf(items, data->u.arr.items[i], path, &conv, e))
                return -1;
            if (conv) {
                sdx_value_destroy(&data->u.arr.items[i]);
                data->u.arr.items[i] = conv;
            }
            if (s_rename_loose(items, data->u.arr.items[i], path, path_cap, e, depth + 1, wi))
                return -1;
            path[n] = '\0';
        }
        return 0;
    }
    if (data->type != SDX_MAP)
        return 0;
    const sdx_value_t *props = sdx_map_get(schema, "properties");
    const sdx_value_t *addl = sdx_map_get(schema, "additionalProperties");
    bool strict = addl && addl->type == SDX_BOOL && !addl->u.b;
    for (size_t i = 0; i < data->u.map.len; i++) {
        sdx_kv_t *kv = &data->u.map.items[i];
        const char *name = NULL;
        const sdx_value_t *ps = sdx_map_get(props, kv->key);
        if (ps) {
            name = kv->key;
        } else {
            for (size_t j = 0; props && props->type == SDX_MAP && j < props->u.map.len; j++)
                if (sdx_key_equal_loose(props->u.map.items[j].key, kv->key)) {
                    name = props->u.map.items[j].key;
                    ps = props->u.map.items[j].val;
                }
            if (name && !sdx_map_get(data, name)) {
                char *k = strdup(name);
                if (!k)
                    return s_ferr(e, path, "internal", "out of memory");
                free(kv->key);
                kv->key = k;
                kv->key_len = strlen(k);
            }
        }
        char k[64];
        s_safe(kv->key, k, sizeof k);
        snprintf(path + n, path_cap - n, "%s%s", n ? "." : "", k);
        if (!ps && strict && props && !(depth == 0 && sdx_key_equal_loose(kv->key, "gpu"))) {
            char names[400];
            s_prop_names(props, names, sizeof names);
            s_warn(wi, "%s: unknown field ignored; known: %s", path, names);
            path[n] = '\0';
            sdx_map_del(data, kv->key);
            i--;
            continue;
        }
        sdx_value_t *conv = NULL;
        if (s_dotnet_leaf(ps, kv->val, path, &conv, e))
            return -1;
        if (conv) {
            sdx_value_destroy(&kv->val);
            kv->val = conv;
        }
        if (s_rename_loose(ps, kv->val, path, path_cap, e, depth + 1, wi))
            return -1;
        path[n] = '\0';
    }
    return 0;
}

/* No schema for this message type: snake_case every key (DeviceId -> device_id). */
static void s_snake_keys(sdx_value_t *v, int depth)
{
    if (!v || depth > SDX_CODEC_MAX_DEPTH)
        return;
    if (v->type == SDX_ARRAY)
        for (size_t i = 0; i < v->u.arr.len; i++)
            s_snake_keys(v->u.arr.items[i], depth + 1);
    if (v->type != SDX_MAP)
        return;
    for (size_t i = 0; i < v->u.map.len; i++) {
        sdx_kv_t *kv = &v->u.map.items[i];
        char s[128];
        if (sdx_csharp_snake(kv->key, s, sizeof s) && strcmp(s, kv->key) != 0 &&
            !sdx_map_get(v, s)) {
            char *k = strdup(s);
            if (k) {
                free(kv->key);
                kv->key = k;
                kv->key_len = strlen(k);
            }
        }
        s_snake_keys(kv->val, depth + 1);
    }
}

static int s_map_data(const sdx_schema_set_t *set, const char *message_type, sdx_value_t **data_p,
                      sdx_schema_error_t *err, sdx_csharp_info_t *wi)
{
    assert(data_p && err);
    memset(err, 0, sizeof *err);
    if (!*data_p)
        return 0;
    const sdx_value_t *cs = sdx_schema_set_csharp_for(set, message_type);
    const sdx_value_t *native = sdx_schema_set_for(set, message_type);
    char path[256] = "";
    if (cs && s_is_nested(cs, native, *data_p)) {
        sdx_value_t *flat = sdx_value_map_new();
        if (!flat)
            return s_ferr(err, "", "internal", "out of memory");
        if (s_map_object(cs, *data_p, flat, path, sizeof path, err, 0, wi)) {
            sdx_value_destroy(&flat);
            return -1;
        }
        sdx_value_destroy(data_p);
        *data_p = flat;
        return 0;
    }
    if (native) {
        if (s_rename_loose(native, *data_p, path, sizeof path, err, 0, wi) != 0) {
            /* the path is in the flat names: give it in the C# ones */
            char nat[sizeof err->field];
            memcpy(nat, err->field, sizeof nat);
            sdx_csharp_field_path(set, message_type, nat, err->field, sizeof err->field);
            return -1;
        }
        return 0;
    }
    s_snake_keys(*data_p, 0);
    return 0;
}

int sdx_csharp_map_data(const sdx_schema_set_t *set, const char *message_type, sdx_value_t **data_p,
                        sdx_schema_error_t *err)
{
    return s_map_data(set, message_type, data_p, err, NULL);
}

/* ---- error paths back to C# names */

typedef struct {
    const char *target; /* native path with indices replaced by [] */
    char found[320];
} s_rev_t;

static bool s_rev_walk(const sdx_value_t *node, const char *cs_prefix, const char *native_base,
                       s_rev_t *r, int depth)
{
    const sdx_value_t *props = sdx_map_get(node, "properties");
    for (size_t i = 0; depth < 8 && props && props->type == SDX_MAP && i < props->u.map.len; i++) {
        const char *name = props->u.map.items[i].key;
        const sdx_value_t *ps = props->u.map.items[i].val;
        char cp[256], np[256];
        snprintf(cp, sizeof cp, "%s%s%s", cs_prefix, cs_prefix[0] ? "." : "", name);
        const char *native = sdx_map_str(ps, "x-native", NULL);
        const sdx_value_t *sel = sdx_map_get(ps, "x-native-select");
        if (sel) {
            const sdx_value_t *map = sdx_map_get(sel, "map");
            for (size_t j = 0; map && map->type == SDX_MAP && j < map->u.map.len; j++) {
                const sdx_value_t *dest = map->u.map.items[j].val;
                if (dest->type != SDX_STR)
                    continue;
                char cpi[300];
                snprintf(cpi, sizeof cpi, "%s[]", cp);
                if (strcmp(dest->u.str.ptr, r->target) == 0) {
                    snprintf(r->found, sizeof r->found, "%s", cpi);
                    return true;
                }
                snprintf(np, sizeof np, "%s.", dest->u.str.ptr);
                if (s_rev_walk(sdx_map_get(ps, "items"), cpi, np, r, depth + 1))
                    return true;
            }
        } else if (sdx_map_get(ps, "properties")) {
            if (s_rev_walk(ps, cp, native_base, r, depth + 1))
                return true;
        } else if (native) {
            snprintf(np, sizeof np, "%s%s", native_base, native);
            if (strcmp(np, r->target) == 0) {
                snprintf(r->found, sizeof r->found, "%s", cp);
                return true;
            }
            if (sdx_map_get(ps, "items")) {
                char cpi[300], npi[300];
                snprintf(cpi, sizeof cpi, "%s[]", cp);
                snprintf(npi, sizeof npi, "%s[].", np);
                if (s_rev_walk(sdx_map_get(ps, "items"), cpi, npi, r, depth + 1))
                    return true;
            }
        }
    }
    return false;
}

void sdx_csharp_field_path(const sdx_schema_set_t *set, const char *message_type,
                           const char *native_path, char *out, size_t out_len)
{
    assert(native_path && out && out_len);
    /* strip indices: "lora.models[0].weight" -> "lora.models[].weight" */
    char target[256];
    long idx[16];
    size_t nidx = 0, j = 0;
    for (const char *p = native_path; *p && j + 1 < sizeof target; p++) {
        if (*p == '[') {
            char *end;
            long v = strtol(p + 1, &end, 10);
            if (*end == ']' && nidx < 16) {
                idx[nidx++] = v;
                target[j++] = '[';
                if (j + 1 < sizeof target)
                    target[j++] = ']';
                p = end;
                continue;
            }
        }
        target[j++] = *p;
    }
    target[j] = '\0';
    s_rev_t r = {.target = target};
    const sdx_value_t *cs = sdx_schema_set_csharp_for(set, message_type);
    if (native_path[0] && cs && s_rev_walk(cs, "", "", &r, 0)) {
        /* put the indices back, in order; a select step ([] with no
           native index) keeps its brackets off */
        size_t o = 0, k = 0;
        for (const char *p = r.found; *p && o + 1 < out_len; p++) {
            if (p[0] == '[' && p[1] == ']') {
                if (k < nidx)
                    o += (size_t)snprintf(out + o, out_len - o, "[%ld]", idx[k++]);
                p++;
                continue;
            }
            out[o++] = *p;
        }
        out[o < out_len ? o : out_len - 1] = '\0';
        return;
    }
    /* fallback: PascalCase each dotted hop, keep indices */
    size_t o = 0;
    char hop[128];
    size_t h = 0;
    for (const char *p = native_path;; p++) {
        if (*p == '.' || *p == '[' || *p == '\0') {
            hop[h] = '\0';
            char pc[128];
            sdx_csharp_pascal(hop, pc, sizeof pc);
            int w = snprintf(out + o, out_len - o, "%s", pc);
            if (w > 0)
                o = o + (size_t)w < out_len ? o + (size_t)w : out_len - 1;
            h = 0;
            if (*p == '\0')
                break;
            if (*p == '[') {
                const char *end = strchr(p, ']');
                size_t n = end ? (size_t)(end - p + 1) : strlen(p);
                w = snprintf(out + o, out_len - o, "%.*s", (int)n, p);
                if (w > 0)
                    o = o + (size_t)w < out_len ? o + (size_t)w : out_len - 1;
                p += n - 1;
                if (p[1] == '.')
                    p++;
                if (o + 1 < out_len && p[1])
                    out[o++] = '.';
                out[o] = '\0';
                continue;
            }
            if (o + 1 < out_len)
                out[o++] = '.';
            out[o] = '\0';
            continue;
        }
        if (h + 1 < sizeof hop)
            hop[h++] = *p;
    }
}

/* A uniform random integer in [lo, hi] (lo <= hi). */
static int64_t s_random_in(int64_t lo, int64_t hi)
{
    uint64_t u = 0;
    if (getrandom(&u, sizeof u, 0) != (ssize_t)sizeof u) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        u = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec;
    }
    uint64_t span = (uint64_t)(hi - lo) + 1;
    return lo + (int64_t)(span ? u % span : u);
}

/* x-random {when, minimum, maximum} on a C# leaf: when the flat field it
   maps to holds `when` (the flat "pick one for me" value, e.g. seed -1) or
   is absent, draw the value here, in the C# type's range (a C# int cannot
   take the native 2^53 range). */
static int s_fill_random(const sdx_value_t *node, sdx_value_t *data, int depth)
{
    const sdx_value_t *props = sdx_map_get(node, "properties");
    for (size_t i = 0; depth < 8 && props && props->type == SDX_MAP && i < props->u.map.len; i++) {
        const sdx_value_t *ps = props->u.map.items[i].val;
        if (sdx_map_get(ps, "properties")) {
            if (s_fill_random(ps, data, depth + 1))
                return -1;
            continue;
        }
        const sdx_value_t *rnd = sdx_map_get(ps, "x-random");
        const char *native = sdx_map_str(ps, "x-native", NULL);
        if (!rnd || rnd->type != SDX_MAP || !native)
            continue;
        char parent[128];
        const char *dot = strrchr(native, '.');
        const char *leaf = dot ? dot + 1 : native;
        snprintf(parent, sizeof parent, "%.*s", dot ? (int)(dot - native) : 0, native);
        sdx_value_t *obj = parent[0] ? sdx_map_get_path(data, parent) : data;
        if (!obj || obj->type != SDX_MAP)
            continue;
        const sdx_value_t *cur = sdx_map_get(obj, leaf);
        if (cur && !(cur->type == SDX_INT && cur->u.i == sdx_map_int(rnd, "when", -1)))
            continue;
        int64_t lo = sdx_map_int(rnd, "minimum", 0), hi = sdx_map_int(rnd, "maximum", 2147483647);
        if (hi < lo || sdx_map_set_int(obj, leaf, s_random_in(lo, hi)) != 0)
            return -1;
    }
    return 0;
}

int sdx_csharp_check_request(const sdx_schema_set_t *set, const sdx_semantic_t *sem,
                             const char *message_type, sdx_dialect_t dialect, sdx_value_t **data_p,
                             sdx_schema_error_t *err)
{
    int rc = sdx_schema_check_request(set, sem, message_type, data_p, err);
    if (rc < 0 && dialect == SDX_DIALECT_CSHARP && err->field[0]) {
        char native[sizeof err->field];
        memcpy(native, err->field, sizeof native);
        sdx_csharp_field_path(set, message_type, native, err->field, sizeof err->field);
    }
    const sdx_value_t *cs = sdx_schema_set_csharp_for(set, message_type);
    if (rc == 0 && dialect == SDX_DIALECT_CSHARP && cs && *data_p &&
        s_fill_random(cs, *data_p, 0) != 0) {
        s_ferr(err, "", "internal", "out of memory");
        return -1;
    }
    return rc;
}

/* ---- replies */

static sdx_value_t *s_pascal_tree(const sdx_value_t *v, sdx_encoding_t enc, int depth)
{
    if (depth > SDX_CODEC_MAX_DEPTH)
        return NULL;
    if (v->type == SDX_BIN && enc == SDX_ENC_JSON) {
        char *b64 = sdx_base64_encode(v->u.bin.ptr, v->u.bin.len);
        sdx_value_t *s = b64 ? sdx_value_str_new(b64) : NULL;
        free(b64);
        return s;
    }
    if (v->type == SDX_ARRAY) {
        sdx_value_t *a = sdx_value_array_new();
        for (size_t i = 0; a && i < v->u.arr.len; i++) {
            sdx_value_t *c = s_pascal_tree(v->u.arr.items[i], enc, depth + 1);
            if (!c || sdx_array_push(a, c) != 0)
                sdx_value_destroy(&a);
        }
        return a;
    }
    if (v->type == SDX_MAP) {
        sdx_value_t *m = sdx_value_map_new();
        for (size_t i = 0; m && i < v->u.map.len; i++) {
            char k[128];
            const char *key = v->u.map.items[i].key; /* as it is if too long to rename */
            if (sdx_csharp_pascal(key, k, sizeof k))
                key = k;
            sdx_value_t *c = s_pascal_tree(v->u.map.items[i].val, enc, depth + 1);
            if (!c || sdx_map_set(m, key, c) != 0)
                sdx_value_destroy(&m);
        }
        return m;
    }
    return sdx_value_clone(v);
}

/* A field path that is still in the native names (snake_case, lower case
   first): "refiner_model", "output.format", "request_id". */
static bool s_native_path(const char *f)
{
    return f && f[0] && (islower((unsigned char)f[0]) || strchr(f, '_'));
}

/* A reply map -> an array in the order of node's x-key-order ([Key(n)]
   contracts), recursively through properties and items. Keys outside the
   order are left out (an int-keyed DTO has no place for them); missing
   ones are nil. Data is shaped by x-for[message type] when declared. */
static sdx_value_t *s_keyed(const sdx_value_t *v, const sdx_value_t *node, const char *mt,
                            int depth)
{
    if (depth > 16 || !node)
        return sdx_value_clone(v);
    const sdx_value_t *xf = sdx_map_get(node, "x-for");
    if (xf && mt)
        node = sdx_map_get(xf, mt);
    if (!node)
        return sdx_value_clone(v);
    if (v->type == SDX_ARRAY) {
        const sdx_value_t *items = sdx_map_get(node, "items");
        if (!items)
            return sdx_value_clone(v);
        sdx_value_t *a = sdx_value_array_new();
        for (size_t i = 0; a && i < v->u.arr.len; i++) {
            sdx_value_t *c = s_keyed(v->u.arr.items[i], items, mt, depth + 1);
            if (!c || sdx_array_push(a, c) != 0)
                sdx_value_destroy(&a);
        }
        return a;
    }
    const sdx_value_t *order = sdx_map_get(node, "x-key-order");
    if (v->type != SDX_MAP || !order || order->type != SDX_ARRAY)
        return sdx_value_clone(v);
    const sdx_value_t *props = sdx_map_get(node, "properties");
    sdx_value_t *a = sdx_value_array_new();
    for (size_t i = 0; a && i < order->u.arr.len; i++) {
        const sdx_value_t *k = order->u.arr.items[i];
        const sdx_value_t *item = k->type == SDX_STR ? sdx_map_get(v, k->u.str.ptr) : NULL;
        sdx_value_t *c = !item ? sdx_value_nil_new()
                               : s_keyed(item, sdx_map_get(props, k->u.str.ptr), mt, depth + 1);
        if (!c || sdx_array_push(a, c) != 0)
            sdx_value_destroy(&a);
    }
    return a;
}

/* sdx_map_set for a freshly made value that may be NULL (out of memory). */
static int s_set_new(sdx_value_t *map, const char *key, sdx_value_t *val)
{
    return val ? sdx_map_set(map, key, val) : -1;
}

/* Progress: {RequestId, Type: "progress", Action, Progress {Step, Total,
   Elapsed (ms, the worker's elapsed_ms), Message, ...}}; no Success and no
   Data, so that a client completing calls by RequestId never takes it for
   the final reply. */
static sdx_value_t *s_progress(const sdx_value_t *native, sdx_encoding_t enc)
{
    sdx_value_t *r = sdx_value_map_new();
    sdx_value_t *p = sdx_value_map_new();
    bool ok = r && p;
    const sdx_value_t *rid = sdx_map_get(native, "request_id");
    ok = ok && (!rid || s_set_new(r, "RequestId", sdx_value_clone(rid)) == 0);
    ok = ok && sdx_map_set_str(r, "Type", "progress") == 0;
    for (size_t i = 0; ok && i < native->u.map.len; i++) {
        const char *k = native->u.map.items[i].key;
        if (strcmp(k, "request_id") == 0 || strcmp(k, "message_type") == 0 ||
            strcmp(k, "request_type") == 0)
            continue;
        char pk[128];
        const char *key = k; /* as it is if too long to rename */
        if (strcmp(k, "elapsed_ms") == 0)
            key = "Elapsed";
        else if (sdx_csharp_pascal(k, pk, sizeof pk))
            key = pk;
        ok = s_set_new(p, key, s_pascal_tree(native->u.map.items[i].val, enc, 1)) == 0;
    }
    if (ok && !sdx_map_get(p, "Total"))
        ok = s_set_new(p, "Total", sdx_value_nil_new()) == 0;
    if (ok && !sdx_map_get(p, "Elapsed"))
        ok = s_set_new(p, "Elapsed", sdx_value_nil_new()) == 0;
    if (ok && sdx_map_set(r, "Progress", p) == 0)
        return r;
    if (!ok)
        sdx_value_destroy(&p);
    sdx_value_destroy(&r);
    return NULL;
}

sdx_value_t *sdx_csharp_reply(const sdx_value_t *native_reply, sdx_encoding_t enc,
                              const sdx_csharp_info_t *info)
{
    assert(native_reply);
    const char *mt = sdx_map_str(native_reply, "message_type", NULL);
    bool progress = mt && strcmp(mt, "progress") == 0;
    sdx_value_t *r = progress ? s_progress(native_reply, enc) : s_pascal_tree(native_reply, enc, 0);
    if (!r || r->type != SDX_MAP)
        return r;
    sdx_map_del(r, "MessageType");
    bool ok = true;
    if (info && info->action[0] && !sdx_map_get(r, "Action"))
        ok = sdx_map_set_str(r, "Action", info->action) == 0;
    /* the RequestId as sent: a Guid's 16 bytes come back as those bytes
       (msgpack), an integer as an integer, text as text */
    const sdx_value_t *rid = sdx_map_get(r, "RequestId");
    if (ok && info && info->request_id_bin && enc == SDX_ENC_MSGPACK)
        ok = s_set_new(r, "RequestId", sdx_value_bin_new(info->request_id_bytes, 16)) == 0;
    else if (ok && info && info->request_id[0] && (!rid || rid->type == SDX_NIL))
        ok = s_set_new(r, "RequestId",
                       info->request_id_int ? sdx_value_int_new(info->request_id_i)
                                            : sdx_value_str_new(info->request_id)) == 0;
    sdx_value_t *err = sdx_map_get(r, "Error");
    if (ok && !progress && !sdx_map_get(r, "Success"))
        ok = sdx_map_set_bool(r, "Success", !(err && err->type == SDX_MAP)) == 0;
    /* an error's field in the C# names, whoever raised it (the broker's
       envelope checks or a worker's reply name native fields) */
    const char *field = err ? sdx_map_str(err, "Field", NULL) : NULL;
    if (ok && info && s_native_path(field)) {
        char cs[256];
        sdx_csharp_field_path(info->set, info->message_type, field, cs, sizeof cs);
        ok = sdx_map_set_str(err, "Field", cs) == 0;
    }
    if (ok && info && !progress && (info->nwarnings || info->warnings_dropped)) {
        sdx_value_t *w = sdx_value_array_new();
        ok = w != NULL;
        for (int i = 0; ok && i < info->nwarnings; i++) {
            sdx_value_t *t = sdx_value_str_new(info->warnings[i]);
            ok = t && sdx_array_push(w, t) == 0;
        }
        if (ok && info->warnings_dropped) {
            char t[64];
            snprintf(t, sizeof t, "... and %d more warning(s)", info->warnings_dropped);
            sdx_value_t *tv = sdx_value_str_new(t);
            ok = tv && sdx_array_push(w, tv) == 0;
        }
        if (ok)
            ok = sdx_map_set(r, "Warnings", w) == 0;
        else
            sdx_value_destroy(&w);
    }
    if (ok && info && info->array_encoded) {
        /* answered in the array contract the request came in */
        const sdx_value_t *order = sdx_schema_set_annotation(info->set, "x-reply");
        if (order) {
            sdx_value_t *a = s_keyed(r, order, info->message_type, 0);
            sdx_value_destroy(&r);
            return a;
        }
    }
    if (!ok)
        sdx_value_destroy(&r);
    return r;
}

/* ---- undecodable frames */

/* Copy a JSON string value that follows `"key"` + ':' loosely (no escapes),
   or an integer. */
static void s_sniff_json_id(const char *t, size_t len, sdx_csharp_info_t *info)
{
    for (size_t i = 0; i + 11 < len; i++) {
        if (t[i] != '"')
            continue;
        size_t j = i + 1, k = 0;
        char key[24];
        while (j < len && t[j] != '"' && k + 1 < sizeof key)
            key[k++] = t[j++];
        key[k] = '\0';
        if (j >= len || t[j] != '"' || !sdx_key_equal_loose(key, "request_id"))
            continue;
        j++;
        while (j < len && (t[j] == ' ' || t[j] == '\t' || t[j] == '\r' || t[j] == '\n'))
            j++;
        if (j >= len || t[j] != ':')
            continue;
        j++;
        while (j < len && (t[j] == ' ' || t[j] == '\t' || t[j] == '\r' || t[j] == '\n'))
            j++;
        if (j < len && t[j] == '"') {
            size_t s0 = ++j, e0 = s0;
            while (e0 < len && t[e0] != '"' && t[e0] != '\\' && (unsigned char)t[e0] >= 0x20 &&
                   (unsigned char)t[e0] < 0x7f && e0 - s0 < 128)
                e0++;
            if (e0 < len && t[e0] == '"' && e0 > s0)
                snprintf(info->request_id, sizeof info->request_id, "%.*s", (int)(e0 - s0),
                         t + s0);
        } else if (j < len && (isdigit((unsigned char)t[j]) || t[j] == '-')) {
            char num[24];
            size_t n = 0;
            while (j < len && n + 1 < sizeof num && (isdigit((unsigned char)t[j]) || t[j] == '-'))
                num[n++] = t[j++];
            num[n] = '\0';
            char *end;
            long long v = strtoll(num, &end, 10);
            if (*end == '\0' && n > 0) {
                info->request_id_int = true;
                info->request_id_i = v;
                snprintf(info->request_id, sizeof info->request_id, "%lld", v);
            }
        }
        return;
    }
}

sdx_dialect_t sdx_csharp_sniff(const void *buf, size_t len, sdx_csharp_info_t *info)
{
    assert(info);
    memset(info, 0, sizeof *info);
    const uint8_t *p = buf;
    if (!p || len == 0)
        return SDX_DIALECT_NATIVE;
    size_t i = 0;
    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf)
        i = 3;
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i < len && p[i] == '{') {
        /* a PascalCase key, or an action / worker_type key, anywhere */
        const char *t = (const char *)p;
        for (size_t j = i; j + 2 < len; j++) {
            if (t[j] != '"')
                continue;
            char key[24];
            size_t k = 0, q = j + 1;
            while (q < len && t[q] != '"' && k + 1 < sizeof key)
                key[k++] = t[q++];
            key[k] = '\0';
            size_t c = q + 1;
            while (c < len && (t[c] == ' ' || t[c] == '\t' || t[c] == '\r' || t[c] == '\n'))
                c++;
            if (q < len && t[q] == '"' && c < len && t[c] == ':' && k > 0 &&
                (isupper((unsigned char)key[0]) || sdx_key_equal_loose(key, "action") ||
                 sdx_key_equal_loose(key, "worker_type"))) {
                info->dialect = SDX_DIALECT_CSHARP;
                break;
            }
            j = q;
        }
        if (info->dialect == SDX_DIALECT_CSHARP)
            s_sniff_json_id(t + i, len - i, info);
        return info->dialect;
    }
    uint8_t c = p[0];
    bool arr = (c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd;
    bool ext99 = ((c >= 0xd4 && c <= 0xd8) && len > 1 && p[1] == S_EXT_LZ4_BLOCK) ||
                 (c == 0xc7 && len > 2 && p[2] == S_EXT_LZ4_BLOCK) ||
                 (c == 0xc8 && len > 3 && p[3] == S_EXT_LZ4_BLOCK) ||
                 (c == 0xc9 && len > 5 && p[5] == S_EXT_LZ4_BLOCK);
    bool pascal_map = c >= 0x81 && c <= 0x8f && len > 2 && p[1] >= 0xa1 && p[1] <= 0xbf &&
                      isupper(p[2]);
    if (!arr && !ext99 && !pascal_map)
        return SDX_DIALECT_NATIVE;
    info->dialect = SDX_DIALECT_CSHARP;
    info->array_encoded = arr;
    if (arr) { /* [RequestId, ...]: a str first item is the id */
        size_t o = c == 0xdc ? 3 : c == 0xdd ? 5 : 1;
        if (o < len) {
            size_t n = 0, h = 0;
            if (p[o] >= 0xa0 && p[o] <= 0xbf) {
                n = p[o] & 0x1f;
                h = 1;
            } else if (p[o] == 0xd9 && o + 1 < len) {
                n = p[o + 1];
                h = 2;
            }
            if (h && n && n <= 128 && o + h + n <= len) {
                bool printable = true;
                for (size_t q = 0; q < n; q++)
                    printable = printable && p[o + h + q] >= 0x20 && p[o + h + q] < 0x7f;
                if (printable)
                    snprintf(info->request_id, sizeof info->request_id, "%.*s", (int)n,
                             (const char *)p + o + h);
            }
        }
    }
    return info->dialect;
}
