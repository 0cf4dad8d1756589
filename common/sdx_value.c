/*  sdx_value.c - the owned message tree (see sdx_value.h).

    Maps keep insertion order in a flat array and look keys up linearly:
    request maps hold a few dozen keys at most, where a scan beats hashing.
    Not for large dictionaries.
*/
#include "sdx_value.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static sdx_value_t *s_new(sdx_vtype_t t)
{
    sdx_value_t *v = calloc(1, sizeof *v);
    if (v)
        v->type = t;
    return v;
}

sdx_value_t *sdx_value_nil_new(void)
{
    return s_new(SDX_NIL);
}

sdx_value_t *sdx_value_bool_new(bool b)
{
    sdx_value_t *v = s_new(SDX_BOOL);
    if (v)
        v->u.b = b;
    return v;
}

sdx_value_t *sdx_value_int_new(int64_t i)
{
    sdx_value_t *v = s_new(SDX_INT);
    if (v)
        v->u.i = i;
    return v;
}

sdx_value_t *sdx_value_float_new(double f)
{
    sdx_value_t *v = s_new(SDX_FLOAT);
    if (v)
        v->u.f = f;
    return v;
}

sdx_value_t *sdx_value_strn_new(const char *s, size_t len)
{
    assert(s || len == 0);
    sdx_value_t *v = s_new(SDX_STR);
    if (!v)
        return NULL;
    v->u.str.ptr = malloc(len + 1);
    if (!v->u.str.ptr) {
        free(v);
        return NULL;
    }
    if (len)
        memcpy(v->u.str.ptr, s, len);
    v->u.str.ptr[len] = '\0';
    v->u.str.len = len;
    return v;
}

sdx_value_t *sdx_value_str_new(const char *s)
{
    assert(s);
    return sdx_value_strn_new(s, strlen(s));
}

sdx_value_t *sdx_value_bin_new(const void *data, size_t len)
{
    assert(data || len == 0);
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return NULL;
    if (len)
        memcpy(copy, data, len);
    sdx_value_t *v = sdx_value_bin_take(copy, len);
    if (!v)
        free(copy);
    return v;
}

sdx_value_t *sdx_value_bin_take(uint8_t *data, size_t len)
{
    sdx_value_t *v = s_new(SDX_BIN);
    if (!v)
        return NULL;
    v->u.bin.ptr = data;
    v->u.bin.len = len;
    return v;
}

sdx_value_t *sdx_value_ext_new(int8_t type, const void *data, size_t len)
{
    assert(data || len == 0);
    sdx_value_t *v = s_new(SDX_EXT);
    if (!v)
        return NULL;
    v->u.ext.ptr = malloc(len ? len : 1);
    if (!v->u.ext.ptr) {
        free(v);
        return NULL;
    }
    if (len)
        memcpy(v->u.ext.ptr, data, len);
    v->u.ext.len = len;
    v->u.ext.type = type;
    return v;
}

sdx_value_t *sdx_value_array_new(void)
{
    return s_new(SDX_ARRAY);
}

sdx_value_t *sdx_value_map_new(void)
{
    return s_new(SDX_MAP);
}

void sdx_value_destroy(sdx_value_t **vp)
{
    assert(vp);
    sdx_value_t *v = *vp;
    if (!v)
        return;
    switch (v->type) {
    case SDX_STR:
        free(v->u.str.ptr);
        break;
    case SDX_BIN:
        free(v->u.bin.ptr);
        break;
    case SDX_EXT:
        free(v->u.ext.ptr);
        break;
    case SDX_ARRAY:
        for (size_t i = 0; i < v->u.arr.len; i++)
            sdx_value_destroy(&v->u.arr.items[i]);
        free(v->u.arr.items);
        break;
    case SDX_MAP:
        for (size_t i = 0; i < v->u.map.len; i++) {
            free(v->u.map.items[i].key);
            sdx_value_destroy(&v->u.map.items[i].val);
        }
        free(v->u.map.items);
        break;
    default:
        break;
    }
    free(v);
    *vp = NULL;
}

sdx_value_t *sdx_value_clone(const sdx_value_t *v)
{
    if (!v)
        return NULL;
    switch (v->type) {
    case SDX_NIL:
        return sdx_value_nil_new();
    case SDX_BOOL:
        return sdx_value_bool_new(v->u.b);
    case SDX_INT:
        return sdx_value_int_new(v->u.i);
    case SDX_FLOAT:
        return sdx_value_float_new(v->u.f);
    case SDX_STR:
        return sdx_value_strn_new(v->u.str.ptr, v->u.str.len);
    case SDX_BIN:
        return sdx_value_bin_new(v->u.bin.ptr, v->u.bin.len);
    case SDX_EXT:
        return sdx_value_ext_new(v->u.ext.type, v->u.ext.ptr, v->u.ext.len);
    case SDX_ARRAY: {
        sdx_value_t *a = sdx_value_array_new();
        if (!a)
            return NULL;
        for (size_t i = 0; i < v->u.arr.len; i++) {
            sdx_value_t *c = sdx_value_clone(v->u.arr.items[i]);
            if (!c || sdx_array_push(a, c) != 0) {
                sdx_value_destroy(&a);
                return NULL;
            }
        }
        return a;
    }
    case SDX_MAP: {
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            return NULL;
        for (size_t i = 0; i < v->u.map.len; i++) {
            sdx_value_t *c = sdx_value_clone(v->u.map.items[i].val);
            if (!c || sdx_map_set(m, v->u.map.items[i].key, c) != 0) {
                sdx_value_destroy(&m);
                return NULL;
            }
        }
        return m;
    }
    }
    return NULL;
}

bool sdx_value_equal(const sdx_value_t *a, const sdx_value_t *b)
{
    if (a == b)
        return true;
    if (!a || !b || a->type != b->type)
        return false;
    switch (a->type) {
    case SDX_NIL:
        return true;
    case SDX_BOOL:
        return a->u.b == b->u.b;
    case SDX_INT:
        return a->u.i == b->u.i;
    case SDX_FLOAT:
        return a->u.f == b->u.f || (a->u.f != a->u.f && b->u.f != b->u.f);
    case SDX_STR:
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0;
    case SDX_BIN:
        return a->u.bin.len == b->u.bin.len &&
               (a->u.bin.len == 0 || memcmp(a->u.bin.ptr, b->u.bin.ptr, a->u.bin.len) == 0);
    case SDX_EXT:
        return a->u.ext.type == b->u.ext.type && a->u.ext.len == b->u.ext.len &&
               (a->u.ext.len == 0 || memcmp(a->u.ext.ptr, b->u.ext.ptr, a->u.ext.len) == 0);
    case SDX_ARRAY:
        if (a->u.arr.len != b->u.arr.len)
            return false;
        for (size_t i = 0; i < a->u.arr.len; i++)
            if (!sdx_value_equal(a->u.arr.items[i], b->u.arr.items[i]))
                return false;
        return true;
    case SDX_MAP:
        if (a->u.map.len != b->u.map.len)
            return false;
        for (size_t i = 0; i < a->u.map.len; i++) {
            const sdx_value_t *other = sdx_map_get(b, a->u.map.items[i].key);
            if (!other || !sdx_value_equal(a->u.map.items[i].val, other))
                return false;
        }
        return true;
    }
    return false;
}

/* ---- arrays */

int sdx_array_push(sdx_value_t *arr, sdx_value_t *item)
{
    assert(item);
    if (!arr || arr->type != SDX_ARRAY) {
        sdx_value_destroy(&item);
        return -1;
    }
    if (arr->u.arr.len == arr->u.arr.cap) {
        size_t cap = arr->u.arr.cap ? arr->u.arr.cap * 2 : 4;
        sdx_value_t **items = realloc(arr->u.arr.items, cap * sizeof *items);
        if (!items) {
            sdx_value_destroy(&item);
            return -1;
        }
        arr->u.arr.items = items;
        arr->u.arr.cap = cap;
    }
    arr->u.arr.items[arr->u.arr.len++] = item;
    return 0;
}

size_t sdx_array_len(const sdx_value_t *arr)
{
    return arr && arr->type == SDX_ARRAY ? arr->u.arr.len : 0;
}

sdx_value_t *sdx_array_at(const sdx_value_t *arr, size_t i)
{
    if (!arr || arr->type != SDX_ARRAY || i >= arr->u.arr.len)
        return NULL;
    return arr->u.arr.items[i];
}

/* ---- maps */

static ssize_t s_map_index(const sdx_value_t *map, const char *key)
{
    if (!map || map->type != SDX_MAP || !key)
        return -1;
    size_t klen = strlen(key);
    for (size_t i = 0; i < map->u.map.len; i++) {
        const sdx_kv_t *kv = &map->u.map.items[i];
        if (kv->key_len == klen && memcmp(kv->key, key, klen) == 0)
            return (ssize_t)i;
    }
    return -1;
}

sdx_value_t *sdx_map_get(const sdx_value_t *map, const char *key)
{
    ssize_t i = s_map_index(map, key);
    return i < 0 ? NULL : map->u.map.items[i].val;
}

bool sdx_key_equal_loose(const char *a, const char *b)
{
    for (;;) {
        while (*a == '_' || *a == '-')
            a++;
        while (*b == '_' || *b == '-')
            b++;
        if (!*a || !*b)
            return !*a && !*b;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
        a++;
        b++;
    }
}

sdx_value_t *sdx_map_get_loose(const sdx_value_t *map, const char *key)
{
    if (!map || map->type != SDX_MAP || !key)
        return NULL;
    sdx_value_t *exact = sdx_map_get(map, key);
    if (exact)
        return exact;
    for (size_t i = 0; i < map->u.map.len; i++)
        if (sdx_key_equal_loose(map->u.map.items[i].key, key))
            return map->u.map.items[i].val;
    return NULL;
}

sdx_value_t *sdx_map_get_path(const sdx_value_t *root, const char *path)
{
    if (!root || !path)
        return NULL;
    const sdx_value_t *cur = root;
    const char *p = path;
    char hop[256];
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof hop)
            return NULL;
        memcpy(hop, p, n);
        hop[n] = '\0';
        cur = sdx_map_get(cur, hop);
        if (!cur)
            return NULL;
        p += n;
        if (*p == '.')
            p++;
    }
    return (sdx_value_t *)cur;
}

int sdx_map_set(sdx_value_t *map, const char *key, sdx_value_t *val)
{
    assert(val);
    if (!map || map->type != SDX_MAP || !key) {
        sdx_value_destroy(&val);
        return -1;
    }
    ssize_t i = s_map_index(map, key);
    if (i >= 0) {
        sdx_value_destroy(&map->u.map.items[i].val);
        map->u.map.items[i].val = val;
        return 0;
    }
    if (map->u.map.len == map->u.map.cap) {
        size_t cap = map->u.map.cap ? map->u.map.cap * 2 : 8;
        sdx_kv_t *items = realloc(map->u.map.items, cap * sizeof *items);
        if (!items) {
            sdx_value_destroy(&val);
            return -1;
        }
        map->u.map.items = items;
        map->u.map.cap = cap;
    }
    size_t klen = strlen(key);
    char *k = malloc(klen + 1);
    if (!k) {
        sdx_value_destroy(&val);
        return -1;
    }
    memcpy(k, key, klen + 1);
    sdx_kv_t *kv = &map->u.map.items[map->u.map.len++];
    kv->key = k;
    kv->key_len = klen;
    kv->val = val;
    return 0;
}

static int s_set_new(sdx_value_t *map, const char *key, sdx_value_t *v)
{
    if (!v)
        return -1;
    return sdx_map_set(map, key, v);
}

int sdx_map_set_str(sdx_value_t *map, const char *key, const char *s)
{
    return s_set_new(map, key, sdx_value_str_new(s ? s : ""));
}

int sdx_map_set_int(sdx_value_t *map, const char *key, int64_t i)
{
    return s_set_new(map, key, sdx_value_int_new(i));
}

int sdx_map_set_float(sdx_value_t *map, const char *key, double f)
{
    return s_set_new(map, key, sdx_value_float_new(f));
}

int sdx_map_set_bool(sdx_value_t *map, const char *key, bool b)
{
    return s_set_new(map, key, sdx_value_bool_new(b));
}

sdx_value_t *sdx_map_take(sdx_value_t *map, const char *key)
{
    ssize_t i = s_map_index(map, key);
    if (i < 0)
        return NULL;
    sdx_kv_t *kv = &map->u.map.items[i];
    sdx_value_t *val = kv->val;
    free(kv->key);
    memmove(kv, kv + 1, (map->u.map.len - (size_t)i - 1) * sizeof *kv);
    map->u.map.len--;
    return val;
}

bool sdx_map_del(sdx_value_t *map, const char *key)
{
    sdx_value_t *v = sdx_map_take(map, key);
    if (!v)
        return false;
    sdx_value_destroy(&v);
    return true;
}

size_t sdx_map_len(const sdx_value_t *map)
{
    return map && map->type == SDX_MAP ? map->u.map.len : 0;
}

/* ---- typed reads */

const char *sdx_map_str(const sdx_value_t *map, const char *key, const char *dflt)
{
    const sdx_value_t *v = sdx_map_get(map, key);
    return v && v->type == SDX_STR ? v->u.str.ptr : dflt;
}

int64_t sdx_map_int(const sdx_value_t *map, const char *key, int64_t dflt)
{
    const sdx_value_t *v = sdx_map_get(map, key);
    if (!v)
        return dflt;
    if (v->type == SDX_INT)
        return v->u.i;
    /* An integral float (JSON 5.0, or a big msgpack uint) reads as an int. */
    if (v->type == SDX_FLOAT && v->u.f == v->u.f && v->u.f >= -9.2e18 && v->u.f <= 9.2e18 &&
        (double)(int64_t)v->u.f == v->u.f)
        return (int64_t)v->u.f;
    return dflt;
}

double sdx_map_num(const sdx_value_t *map, const char *key, double dflt)
{
    double d;
    return sdx_value_as_double(sdx_map_get(map, key), &d) ? d : dflt;
}

bool sdx_map_bool(const sdx_value_t *map, const char *key, bool dflt)
{
    const sdx_value_t *v = sdx_map_get(map, key);
    return v && v->type == SDX_BOOL ? v->u.b : dflt;
}

bool sdx_value_as_double(const sdx_value_t *v, double *out)
{
    if (!v)
        return false;
    if (v->type == SDX_INT) {
        *out = (double)v->u.i;
        return true;
    }
    if (v->type == SDX_FLOAT) {
        *out = v->u.f;
        return true;
    }
    return false;
}

const char *sdx_vtype_name(sdx_vtype_t t)
{
    switch (t) {
    case SDX_NIL:
        return "nil";
    case SDX_BOOL:
        return "bool";
    case SDX_INT:
        return "integer";
    case SDX_FLOAT:
        return "float";
    case SDX_STR:
        return "string";
    case SDX_BIN:
        return "binary";
    case SDX_ARRAY:
        return "array";
    case SDX_MAP:
        return "map";
    case SDX_EXT:
        return "ext";
    }
    return "?";
}
