/*  sdx_value.h - the owned message tree every component works on.

    A request or reply is decoded ONCE (from msgpack or JSON, see sdx_codec.h)
    into an sdx_value_t tree that owns all of its memory; validation, dialect
    mapping, routing and handlers all work on this tree, and it is encoded
    once on the way out. A msgpack_object or cJSON node never outlives the
    decode call.

    The struct is transparent so that readers can switch on `type`; mutate it
    only through the functions below so ownership stays clear:
    - sdx_value_*_new() return a new value the caller owns (NULL on OOM).
    - Setters that take an `sdx_value_t *` argument take ownership of it
      (even on failure, where it is destroyed).
    - Getters return borrowed pointers into the tree.
*/
#ifndef SDX_VALUE_H
#define SDX_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SDX_NIL = 0,
    SDX_BOOL,
    SDX_INT,   /* signed 64-bit (msgpack uint > INT64_MAX is decoded as FLOAT) */
    SDX_FLOAT, /* double */
    SDX_STR,   /* UTF-8, NUL-terminated copy, len excludes the NUL */
    SDX_BIN,   /* bytes */
    SDX_ARRAY,
    SDX_MAP,   /* string keys, insertion order kept, no duplicate keys */
    SDX_EXT,   /* msgpack extension: ext_type + bytes */
} sdx_vtype_t;

typedef struct sdx_value sdx_value_t;
typedef struct sdx_kv sdx_kv_t;

struct sdx_value {
    sdx_vtype_t type;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            char *ptr;
            size_t len;
        } str;
        struct {
            uint8_t *ptr;
            size_t len;
        } bin;
        struct {
            sdx_value_t **items;
            size_t len, cap;
        } arr;
        struct {
            sdx_kv_t *items;
            size_t len, cap;
        } map;
        struct {
            int8_t type;
            uint8_t *ptr;
            size_t len;
        } ext;
    } u;
};

struct sdx_kv {
    char *key; /* owned, NUL-terminated */
    size_t key_len;
    sdx_value_t *val; /* owned */
};

/* ---- construction (caller owns the result; NULL on OOM) */
sdx_value_t *sdx_value_nil_new(void);
sdx_value_t *sdx_value_bool_new(bool b);
sdx_value_t *sdx_value_int_new(int64_t i);
sdx_value_t *sdx_value_float_new(double f);
sdx_value_t *sdx_value_str_new(const char *s);                 /* copies */
sdx_value_t *sdx_value_strn_new(const char *s, size_t len);     /* copies */
sdx_value_t *sdx_value_bin_new(const void *data, size_t len);   /* copies */
sdx_value_t *sdx_value_bin_take(uint8_t *data, size_t len);     /* takes malloc'd data */
sdx_value_t *sdx_value_ext_new(int8_t type, const void *data, size_t len);
sdx_value_t *sdx_value_array_new(void);
sdx_value_t *sdx_value_map_new(void);
/* Deep copy; NULL on OOM. */
sdx_value_t *sdx_value_clone(const sdx_value_t *v);
/* Destroy a tree and clear the pointer; NULL is a no-op. */
void sdx_value_destroy(sdx_value_t **v);
/* Deep equality (maps compare as unordered sets of keys; INT 3 != FLOAT 3.0). */
bool sdx_value_equal(const sdx_value_t *a, const sdx_value_t *b);

/* ---- arrays */
/* Append (takes ownership of item). */
int sdx_array_push(sdx_value_t *arr, sdx_value_t *item);
size_t sdx_array_len(const sdx_value_t *arr); /* 0 if not an array */
sdx_value_t *sdx_array_at(const sdx_value_t *arr, size_t i); /* borrowed, NULL if out of range */

/* ---- maps */
/* Borrowed value of an exact key, NULL if absent or not a map. */
sdx_value_t *sdx_map_get(const sdx_value_t *map, const char *key);
/* Same, falling back to sdx_key_equal_loose when no key matches exactly
   ("guidanceScale", "GuidanceScale" and "guidance_scale" all match). */
sdx_value_t *sdx_map_get_loose(const sdx_value_t *map, const char *key);
/* The key comparison sdx_map_get_loose uses: equal ignoring ASCII case and
   every '_' and '-' ("RequestId" == "request_id" == "request-id"). Exported
   so that code matching names outside a map (action names, envelope keys,
   C# property names) matches exactly as the map lookup does. */
bool sdx_key_equal_loose(const char *a, const char *b);
/* Dotted path lookup: "data.hyperparameters.seed"; NULL if any hop is missing. */
sdx_value_t *sdx_map_get_path(const sdx_value_t *root, const char *path);
/* Set key (takes ownership of val; replaces an existing value in place). */
int sdx_map_set(sdx_value_t *map, const char *key, sdx_value_t *val);
/* Convenience setters (copy their argument). */
int sdx_map_set_str(sdx_value_t *map, const char *key, const char *s);
int sdx_map_set_int(sdx_value_t *map, const char *key, int64_t i);
int sdx_map_set_float(sdx_value_t *map, const char *key, double f);
int sdx_map_set_bool(sdx_value_t *map, const char *key, bool b);
/* Remove a key and return its value (caller owns), NULL if absent. */
sdx_value_t *sdx_map_take(sdx_value_t *map, const char *key);
bool sdx_map_del(sdx_value_t *map, const char *key);
size_t sdx_map_len(const sdx_value_t *map);

/* ---- typed reads (return `dflt` when absent or of another type) */
const char *sdx_map_str(const sdx_value_t *map, const char *key, const char *dflt);
int64_t sdx_map_int(const sdx_value_t *map, const char *key, int64_t dflt);
/* INT or FLOAT as double */
double sdx_map_num(const sdx_value_t *map, const char *key, double dflt);
bool sdx_map_bool(const sdx_value_t *map, const char *key, bool dflt);
/* Numeric value of v (INT or FLOAT); false if v is not a number. */
bool sdx_value_as_double(const sdx_value_t *v, double *out);

const char *sdx_vtype_name(sdx_vtype_t t); /* "nil", "bool", "integer", ... */

#endif
