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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_EXT_TIMESTAMP (-1)
#define S_EXT_LZ4_BLOCK 99
#define S_EXT_LZ4_BLOCK_ARRAY 98

/* Native envelope keys a C# message may also use as they are. */
static const char *s_native_envelope_keys[] = {
    "message_type", "type",   "request_id",  "data",       "priority",  "timeout_ms", "deadline_ms",
    "stream",       "action", "worker_type", "session_id", "timestamp", NULL,
};

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

/* ---- phase 1: envelope */

/* The slot of an exact key, to replace its value; NULL if absent. */
static sdx_value_t **s_map_slot(sdx_value_t *map, const char *key)
{
    for (size_t i = 0; map && map->type == SDX_MAP && i < map->u.map.len; i++)
        if (strcmp(map->u.map.items[i].key, key) == 0)
            return &map->u.map.items[i].val;
    return NULL;
}

/* Keep the request id as early as possible: an error reply echoes it. */
static void s_note_id(sdx_csharp_info_t *info, const sdx_value_t *root)
{
    const sdx_value_t *rid = sdx_map_get_loose(root, "request_id");
    if (rid && rid->type == SDX_STR)
        snprintf(info->request_id, sizeof info->request_id, "%s", rid->u.str.ptr);
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

int sdx_csharp_prepare(const sdx_schema_set_t *set, sdx_value_t **root_p, size_t max_lz4_len,
                       sdx_csharp_info_t *info, sdx_schema_error_t *ferr)
{
    assert(root_p && info && ferr);
    memset(info, 0, sizeof *info);
    memset(ferr, 0, sizeof *ferr);
    char *err = ferr->message;
    size_t err_len = sizeof ferr->message;
    snprintf(ferr->rule, sizeof ferr->rule, "csharp");
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
    s_note_id(info, *root_p);

    char path[256] = "";
    if (s_convert_ext(root_p, path, sizeof path, err, err_len))
        return -1;

    /* one envelope for every C# message: x-envelope, wherever declared */
    const sdx_value_t *env = sdx_schema_set_annotation(set, "x-envelope");
    const sdx_value_t *props = sdx_map_get(env, "properties");
    sdx_value_t *root = *root_p;
    sdx_schema_error_t e;
    if (root->type == SDX_ARRAY) {
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
        s_note_id(info, root);
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
            sdx_csharp_snake(pname, native, sizeof native);
        } else {
            bool passthrough = false;
            for (size_t j = 0; s_native_envelope_keys[j] && !passthrough; j++)
                passthrough = strcmp(kv->key, s_native_envelope_keys[j]) == 0;
            if (!passthrough) {
                sdx_value_t *c = sdx_value_clone(kv->val);
                if (!c || sdx_map_set(rest, kv->key, c) != 0) {
                    s_err(err, err_len, "out of memory");
                    goto done;
                }
                continue;
            }
            snprintf(native, sizeof native, "%s", kv->key);
        }
        sdx_value_t *val = NULL;
        if (s_enum_int(sdx_map_get(ps, "x-enum-order"), kv->val, pname ? pname : kv->key, &val,
                       &e)) {
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
        char k[64], names[400];
        s_safe(rest->u.map.items[0].key, k, sizeof k);
        s_prop_names(props, names, sizeof names);
        s_err(err, err_len, "unknown envelope field '%s'; accepted: %s (or message_type, type)", k,
              names);
        goto done;
    }
    const sdx_value_t *a = sdx_map_get(out, "action");
    if (a && a->type == SDX_STR)
        snprintf(info->action, sizeof info->action, "%s", a->u.str.ptr);
    const sdx_value_t *rid = sdx_map_get(out, "request_id");
    if (rid && rid->type == SDX_STR)
        snprintf(info->request_id, sizeof info->request_id, "%s", rid->u.str.ptr);
    sdx_value_destroy(root_p);
    *root_p = out;
    out = NULL;
    /* the data's shape depends on the message type: resolve it the way
       the envelope will (it resolves it again; the keys stay as sent so it
       knows the request named an action) */
    s_message_type(*root_p, info->message_type, sizeof info->message_type);
    sdx_value_t **data = s_map_slot(*root_p, "data");
    if (info->message_type[0] && data && (*data)->type != SDX_NIL)
        rc = sdx_csharp_map_data(set, info->message_type, data, ferr);
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
                        char *path, size_t path_cap, sdx_schema_error_t *e, int depth);

/* An array of C# objects (LoRAs, ControlNets) -> an array of flat objects. */
static int s_map_array(const sdx_value_t *ps, const sdx_value_t *val, sdx_value_t *target,
                       const char *native, char *path, size_t path_cap, sdx_schema_error_t *e,
                       int depth)
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
        if (s_map_object(items, val->u.arr.items[i], obj, path, path_cap, e, depth + 1)) {
            sdx_value_destroy(&arr);
            return -1;
        }
        path[n] = '\0';
    }
    return s_set_at(target, native, arr, path, e);
}

/* PostProcessing: each step goes to the flat field its Type selects. */
static int s_map_select(const sdx_value_t *ps, const sdx_value_t *val, sdx_value_t *target,
                        char *path, size_t path_cap, sdx_schema_error_t *e, int depth)
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
        int rc = s_map_object(items, step, obj, path, path_cap, e, depth + 1);
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
                        char *path, size_t path_cap, sdx_schema_error_t *e, int depth)
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
            char k[64], names[400];
            s_safe(kv->key, k, sizeof k);
            snprintf(path + n, path_cap - n, "%s%s", n ? "." : "", k);
            s_prop_names(props, names, sizeof names);
            rc = s_ferr(e, path, "additionalProperties", "unknown field; accepted: %s", names);
            break;
        }
        snprintf(path + n, path_cap - n, "%s%s", n ? "." : "", pname);
        if (kv->val->type == SDX_NIL) { /* C# null: as if absent */
            path[n] = '\0';
            continue;
        }
        const char *native = sdx_map_str(ps, "x-native", NULL);
        if (sdx_map_get(ps, "x-native-select")) {
            rc = s_map_select(ps, kv->val, target, path, path_cap, e, depth);
        } else if (sdx_map_get(ps, "properties")) {
            rc = s_map_object(ps, kv->val, target, path, path_cap, e, depth + 1);
        } else if (native && sdx_map_get(ps, "items")) {
            rc = s_map_array(ps, kv->val, target, native, path, path_cap, e, depth);
        } else if (native) {
            sdx_value_t *v = NULL;
            rc = s_enum_int(sdx_map_get(ps, "x-enum-order"), kv->val, path, &v, e);
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
   (GuidanceScale -> guidance_scale), following properties and items. */
static void s_rename_loose(const sdx_value_t *schema, sdx_value_t *data, int depth)
{
    if (!schema || !data || depth > 16)
        return;
    if (data->type == SDX_ARRAY) {
        const sdx_value_t *items = sdx_map_get(schema, "items");
        for (size_t i = 0; items && i < data->u.arr.len; i++)
            s_rename_loose(items, data->u.arr.items[i], depth + 1);
        return;
    }
    if (data->type != SDX_MAP)
        return;
    const sdx_value_t *props = sdx_map_get(schema, "properties");
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
                if (k) {
                    free(kv->key);
                    kv->key = k;
                    kv->key_len = strlen(k);
                }
            }
        }
        s_rename_loose(ps, kv->val, depth + 1);
    }
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

int sdx_csharp_map_data(const sdx_schema_set_t *set, const char *message_type, sdx_value_t **data_p,
                        sdx_schema_error_t *err)
{
    assert(data_p && err);
    memset(err, 0, sizeof *err);
    if (!*data_p)
        return 0;
    const sdx_value_t *cs = sdx_schema_set_csharp_for(set, message_type);
    const sdx_value_t *native = sdx_schema_set_for(set, message_type);
    if (cs && s_is_nested(cs, native, *data_p)) {
        sdx_value_t *flat = sdx_value_map_new();
        if (!flat)
            return s_ferr(err, "", "internal", "out of memory");
        char path[256] = "";
        if (s_map_object(cs, *data_p, flat, path, sizeof path, err, 0)) {
            sdx_value_destroy(&flat);
            return -1;
        }
        sdx_value_destroy(data_p);
        *data_p = flat;
        return 0;
    }
    if (native) {
        s_rename_loose(native, *data_p, 0);
        return 0;
    }
    s_snake_keys(*data_p, 0);
    return 0;
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

sdx_value_t *sdx_csharp_reply(const sdx_value_t *native_reply, sdx_encoding_t enc,
                              const sdx_csharp_info_t *info)
{
    assert(native_reply);
    sdx_value_t *r = s_pascal_tree(native_reply, enc, 0);
    if (!r || r->type != SDX_MAP)
        return r;
    sdx_map_del(r, "MessageType");
    bool ok = true;
    if (info && info->action[0] && !sdx_map_get(r, "Action"))
        ok = sdx_map_set_str(r, "Action", info->action) == 0;
    const sdx_value_t *rid = sdx_map_get(r, "RequestId");
    if (ok && info && info->request_id[0] && (!rid || rid->type == SDX_NIL))
        ok = sdx_map_set_str(r, "RequestId", info->request_id) == 0;
    const sdx_value_t *err = sdx_map_get(r, "Error");
    if (ok && !sdx_map_get(r, "Success"))
        ok = sdx_map_set_bool(r, "Success", !(err && err->type == SDX_MAP)) == 0;
    if (!ok)
        sdx_value_destroy(&r);
    return r;
}
