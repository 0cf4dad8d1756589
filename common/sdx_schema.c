/*  sdx_schema.c - a small validator for the JSON Schema subset of schemas/
    (documented in schemas/README.md), run on the decoded message tree.

    The rules live only in the schema files: this file knows the keywords,
    never a field name. It also canonicalises enum aliases (x-aliases,
    x-alias-sets), fills defaults, and calls sdx_semantic at the places the
    schemas annotate (x-path-root, x-image, x-max-pixels).
    Not for: envelope parsing or the C# dialect (sdx_csharp.c).
*/
#include "sdx_schema.h"
#include "sdx_codec.h"
#include "sdx_log.h"

#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_SCHEMA_FILE (1024 * 1024)
#define S_MAX_FILES 64
#define S_MAX_REF_HOPS 16

typedef struct {
    char *name;        /* file name */
    sdx_value_t *tree; /* decoded schema */
} s_file_t;

struct sdx_schema_set {
    s_file_t files[S_MAX_FILES];
    size_t nfiles;
};

/* Keywords of the supported subset; anything else that does not start with
   "x-" makes the load fail. */
static const char *s_keywords[] = {
    "$schema",     "$id",       "$defs",     "$ref",     "$comment",         "title",
    "description", "examples",  "type",      "required", "properties",       "additionalProperties",
    "enum",        "const",     "minimum",   "maximum",  "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf",  "minLength", "maxLength", "pattern",  "minItems",         "maxItems",
    "items",       "default",   NULL,
};

/* Keywords whose value is a schema / a map of schemas / a data value. */
static bool s_is_keyword(const char *k)
{
    for (size_t i = 0; s_keywords[i]; i++)
        if (strcmp(s_keywords[i], k) == 0)
            return true;
    return false;
}

static const char *s_type_names[] = {"null",   "boolean", "integer", "number", "string",
                                     "binary", "array",   "object",  NULL};

/* ---- loading */

/* Check that a schema node uses only known keywords; recurse into
   sub-schemas. 0 / -1 with reason. */
static int s_check_keywords(const sdx_value_t *node, const char *where, char *err, size_t err_len,
                            int depth)
{
    if (depth > 32) {
        snprintf(err, err_len, "%s: schema nested too deeply", where);
        return -1;
    }
    if (!node || node->type != SDX_MAP) {
        if (node && node->type == SDX_BOOL) /* true / false schemas */
            return 0;
        snprintf(err, err_len, "%s: a schema must be an object", where);
        return -1;
    }
    for (size_t i = 0; i < node->u.map.len; i++) {
        const char *k = node->u.map.items[i].key;
        const sdx_value_t *v = node->u.map.items[i].val;
        if (strncmp(k, "x-", 2) == 0)
            continue;
        if (!s_is_keyword(k)) {
            snprintf(err, err_len, "%s: unsupported keyword '%s' (see schemas/README.md)", where,
                     k);
            return -1;
        }
        char sub[512];
        if (strcmp(k, "properties") == 0 || strcmp(k, "$defs") == 0) {
            if (v->type != SDX_MAP) {
                snprintf(err, err_len, "%s: '%s' must be an object", where, k);
                return -1;
            }
            for (size_t j = 0; j < v->u.map.len; j++) {
                snprintf(sub, sizeof sub, "%s.%s", where, v->u.map.items[j].key);
                if (s_check_keywords(v->u.map.items[j].val, sub, err, err_len, depth + 1))
                    return -1;
            }
        } else if (strcmp(k, "items") == 0 || strcmp(k, "additionalProperties") == 0) {
            snprintf(sub, sizeof sub, "%s.%s", where, k);
            if (s_check_keywords(v, sub, err, err_len, depth + 1))
                return -1;
        } else if (strcmp(k, "type") == 0) {
            size_t n = v->type == SDX_ARRAY ? v->u.arr.len : 1;
            for (size_t j = 0; j < n; j++) {
                const sdx_value_t *t = v->type == SDX_ARRAY ? v->u.arr.items[j] : v;
                bool known = false;
                for (size_t q = 0; t->type == SDX_STR && s_type_names[q]; q++)
                    known = known || strcmp(t->u.str.ptr, s_type_names[q]) == 0;
                if (!known) {
                    snprintf(err, err_len, "%s: unknown type in 'type'", where);
                    return -1;
                }
            }
        } else if (strcmp(k, "pattern") == 0) {
            regex_t re;
            if (v->type != SDX_STR || regcomp(&re, v->u.str.ptr, REG_EXTENDED | REG_NOSUB) != 0) {
                snprintf(err, err_len, "%s: 'pattern' is not a POSIX extended regex", where);
                return -1;
            }
            regfree(&re);
        }
    }
    return 0;
}

static char *s_read_file(const char *path, size_t *len, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(S_MAX_SCHEMA_FILE + 1);
    size_t n = buf ? fread(buf, 1, S_MAX_SCHEMA_FILE + 1, f) : 0;
    fclose(f);
    if (!buf || n > S_MAX_SCHEMA_FILE) {
        snprintf(err, err_len, "%s: %s", path, buf ? "file too large" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int s_cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

sdx_schema_set_t *sdx_schema_set_load(const char *dir, char *err, size_t err_len)
{
    assert(dir);
    char local_err[512];
    if (!err) {
        err = local_err;
        err_len = sizeof local_err;
    }
    err[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, err_len, "schemas dir '%s': %s", dir, strerror(errno));
        log_error("schema: %s", err);
        return NULL;
    }
    char *names[S_MAX_FILES];
    size_t nnames = 0;
    struct dirent *de;
    bool too_many = false;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0 || de->d_name[0] == '.')
            continue;
        if (nnames == S_MAX_FILES) {
            too_many = true;
            break;
        }
        names[nnames] = strdup(de->d_name);
        if (names[nnames])
            nnames++;
    }
    closedir(d);
    qsort(names, nnames, sizeof names[0], s_cmp_names);
    sdx_schema_set_t *self = calloc(1, sizeof *self);
    if (too_many)
        snprintf(err, err_len, "schemas dir '%s': more than %d files", dir, S_MAX_FILES);
    for (size_t i = 0; i < nnames && self && !err[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t len = 0;
        char *text = s_read_file(path, &len, err, err_len);
        if (!text)
            break;
        char derr[256];
        sdx_value_t *tree = sdx_json_decode(text, len, derr, sizeof derr);
        free(text);
        if (!tree) {
            snprintf(err, err_len, "%s: %s", path, derr);
            break;
        }
        if (!sdx_map_get(tree, "$schema")) { /* an example, not a schema */
            log_debug("schema: %s has no $schema, skipped", names[i]);
            sdx_value_destroy(&tree);
            continue;
        }
        if (s_check_keywords(tree, names[i], err, err_len, 0) != 0) {
            sdx_value_destroy(&tree);
            break;
        }
        self->files[self->nfiles].name = names[i];
        self->files[self->nfiles].tree = tree;
        names[i] = NULL;
        self->nfiles++;
    }
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    if (!self || err[0]) {
        if (!self)
            snprintf(err, err_len, "out of memory");
        log_error("schema: %s", err);
        sdx_schema_set_destroy(&self);
        return NULL;
    }
    log_info("schema: loaded %zu schema files from %s", self->nfiles, dir);
    return self;
}

#ifndef SDX_SOURCE_ROOT
#define SDX_SOURCE_ROOT "."
#endif

sdx_schema_set_t *sdx_schema_set_load_default(char *err, size_t err_len)
{
    const char *env = getenv("SDXL_SCHEMAS_DIR");
    if (env && *env) {
        /* Asked for by name: a missing folder is a mistake to report, not a
           reason to validate against some other set of schemas. */
        char local_err[512];
        if (!err) {
            err = local_err;
            err_len = sizeof local_err;
        }
        DIR *d = opendir(env);
        if (!d) {
            snprintf(err, err_len,
                     "SDXL_SCHEMAS_DIR is '%s': %s; point it at the schemas folder (or unset it "
                     "to use %s/schemas)",
                     env, strerror(errno), SDX_SOURCE_ROOT);
            log_error("schema: %s", err);
            return NULL;
        }
        closedir(d);
        return sdx_schema_set_load(env, err, err_len);
    }
    const char *dirs[] = {SDX_SOURCE_ROOT "/schemas", "/usr/local/share/sdxl-fleet/schemas",
                          "/usr/share/sdxl-fleet/schemas"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        DIR *d = dirs[i] ? opendir(dirs[i]) : NULL;
        if (!d)
            continue;
        closedir(d);
        return sdx_schema_set_load(dirs[i], err, err_len);
    }
    if (err)
        snprintf(err, err_len,
                 "no schemas folder (%s/schemas, "
                 "/usr/local/share/sdxl-fleet/schemas, /usr/share/sdxl-fleet/schemas)",
                 SDX_SOURCE_ROOT);
    return NULL;
}

void sdx_schema_set_destroy(sdx_schema_set_t **self_p)
{
    assert(self_p);
    sdx_schema_set_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->nfiles; i++) {
        free(self->files[i].name);
        sdx_value_destroy(&self->files[i].tree);
    }
    free(self);
    *self_p = NULL;
}

size_t sdx_schema_set_size(const sdx_schema_set_t *self)
{
    return self ? self->nfiles : 0;
}

static const sdx_value_t *s_find_by(const sdx_schema_set_t *self, const char *annotation,
                                    const char *message_type)
{
    if (!self || !message_type)
        return NULL;
    for (size_t i = 0; i < self->nfiles; i++) {
        const sdx_value_t *types = sdx_map_get(self->files[i].tree, annotation);
        for (size_t j = 0; j < sdx_array_len(types); j++) {
            const sdx_value_t *t = sdx_array_at(types, j);
            if (t->type == SDX_STR && strcmp(t->u.str.ptr, message_type) == 0)
                return self->files[i].tree;
        }
    }
    return NULL;
}

const sdx_value_t *sdx_schema_set_for(const sdx_schema_set_t *self, const char *message_type)
{
    return s_find_by(self, "x-message-types", message_type);
}

const sdx_value_t *sdx_schema_set_csharp_for(const sdx_schema_set_t *self, const char *message_type)
{
    return s_find_by(self, "x-csharp-for", message_type);
}

const sdx_value_t *sdx_schema_set_annotation(const sdx_schema_set_t *self, const char *annotation)
{
    for (size_t i = 0; self && annotation && i < self->nfiles; i++) {
        const sdx_value_t *v = sdx_map_get(self->files[i].tree, annotation);
        if (v)
            return v;
    }
    return NULL;
}

const sdx_value_t *sdx_schema_set_get(const sdx_schema_set_t *self, const char *file_name)
{
    if (!self || !file_name)
        return NULL;
    for (size_t i = 0; i < self->nfiles; i++)
        if (strcmp(self->files[i].name, file_name) == 0)
            return self->files[i].tree;
    return NULL;
}

/* ---- validation */

typedef struct {
    const sdx_value_t *root; /* for $ref */
    const sdx_semantic_t *sem;
    sdx_schema_error_t *err;
    char path[256];
    /* Sibling fields an alias implies (x-alias-sets), found while a member
       of an object was validated. s_validate never inserts into the object
       that holds the slot it works on (an insert can move the object's items,
       and the slot with them); s_validate_member applies these once the
       member's validation is over and nothing points into the object. */
    const sdx_value_t *pending_sets;
} s_ctx_t;

static int s_fail(s_ctx_t *ctx, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_fail(s_ctx_t *ctx, const char *rule, const char *fmt, ...)
{
    sdx_schema_error_t *e = ctx->err;
    snprintf(e->field, sizeof e->field, "%s", ctx->path);
    snprintf(e->rule, sizeof e->rule, "%s", rule);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* Compare ignoring case, ' ', '_' and '-' ("DPM++ 2M" == "dpm++_2m"). */
static bool s_alias_eq(const char *a, const char *b)
{
    for (;;) {
        while (*a == '_' || *a == '-' || *a == ' ')
            a++;
        while (*b == '_' || *b == '-' || *b == ' ')
            b++;
        if (!*a || !*b)
            return !*a && !*b;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
        a++;
        b++;
    }
}

static void s_fmt_num(char *buf, size_t len, double d)
{
    if (d == floor(d) && fabs(d) < 1e15)
        snprintf(buf, len, "%.0f", d);
    else
        snprintf(buf, len, "%.15g", d);
}

/* Short text of a data value for messages ("45", "'abc'", "an object"). */
static void s_describe(const sdx_value_t *v, char *buf, size_t len)
{
    switch (v->type) {
    case SDX_INT:
        snprintf(buf, len, "%lld", (long long)v->u.i);
        break;
    case SDX_FLOAT:
        s_fmt_num(buf, len, v->u.f);
        break;
    case SDX_STR: {
        size_t n = v->u.str.len > 40 ? 40 : v->u.str.len;
        /* keep it printable: the text may be hostile */
        char safe[48];
        size_t j = 0;
        for (size_t i = 0; i < n && j < sizeof safe - 1; i++) {
            unsigned char c = (unsigned char)v->u.str.ptr[i];
            safe[j++] = (c < 0x20 || c == 0x7f || c >= 0x80) ? '?' : (char)c;
        }
        safe[j] = '\0';
        snprintf(buf, len, "'%s'%s", safe, v->u.str.len > 40 ? "..." : "");
        break;
    }
    case SDX_BOOL:
        snprintf(buf, len, "%s", v->u.b ? "true" : "false");
        break;
    case SDX_NIL:
        snprintf(buf, len, "null");
        break;
    default:
        snprintf(buf, len, "%s", sdx_vtype_name(v->type));
    }
}

/* The JSON Schema type name of a data value ("integer" for SDX_INT). */
static const char *s_data_type(const sdx_value_t *v)
{
    switch (v->type) {
    case SDX_NIL:
        return "null";
    case SDX_BOOL:
        return "boolean";
    case SDX_INT:
        return "integer";
    case SDX_FLOAT:
        return "number";
    case SDX_STR:
        return "string";
    case SDX_BIN:
        return "binary";
    case SDX_ARRAY:
        return "array";
    case SDX_MAP:
        return "object";
    case SDX_EXT:
        return "extension";
    }
    return "?";
}

/* Does data value v satisfy type name t? An integral float counts as an
   integer (it is converted by the caller). */
static bool s_type_ok(const sdx_value_t *v, const char *t)
{
    if (strcmp(t, "number") == 0)
        return v->type == SDX_INT || v->type == SDX_FLOAT;
    if (strcmp(t, "integer") == 0)
        return v->type == SDX_INT ||
               (v->type == SDX_FLOAT && isfinite(v->u.f) && v->u.f == floor(v->u.f) &&
                fabs(v->u.f) <= 9007199254740992.0);
    return strcmp(s_data_type(v), t) == 0;
}

/* Resolve "$ref": "#/$defs/name" (local only). */
static const sdx_value_t *s_deref(s_ctx_t *ctx, const sdx_value_t *schema)
{
    for (int hop = 0; hop < S_MAX_REF_HOPS && schema && schema->type == SDX_MAP; hop++) {
        const char *ref = sdx_map_str(schema, "$ref", NULL);
        if (!ref)
            return schema;
        if (strncmp(ref, "#/$defs/", 8) != 0)
            return NULL;
        schema = sdx_map_get(sdx_map_get(ctx->root, "$defs"), ref + 8);
    }
    return NULL;
}

/* Append ".key" or "[i]" to the context path; returns the old length. */
static size_t s_push_key(s_ctx_t *ctx, const char *key)
{
    size_t n = strlen(ctx->path);
    snprintf(ctx->path + n, sizeof ctx->path - n, "%s%s", n ? "." : "", key);
    return n;
}

static size_t s_push_index(s_ctx_t *ctx, size_t i)
{
    size_t n = strlen(ctx->path);
    snprintf(ctx->path + n, sizeof ctx->path - n, "[%zu]", i);
    return n;
}

static int s_validate(s_ctx_t *ctx, const sdx_value_t *schema, sdx_value_t **slot,
                      bool in_object);
static int s_validate_member(s_ctx_t *ctx, const sdx_value_t *schema, sdx_value_t *obj,
                             size_t idx);

/* Join the string items of an array (or the keys of a map) for messages. */
static void s_join(const sdx_value_t *list, char *buf, size_t len)
{
    buf[0] = '\0';
    size_t used = 0;
    size_t n = list->type == SDX_MAP ? list->u.map.len : sdx_array_len(list);
    for (size_t i = 0; i < n && used + 1 < len; i++) {
        char item[64];
        if (list->type == SDX_MAP)
            snprintf(item, sizeof item, "%s", list->u.map.items[i].key);
        else
            s_describe(list->u.arr.items[i], item, sizeof item);
        if (list->type != SDX_MAP && list->u.arr.items[i]->type == SDX_STR) {
            /* strip the quotes s_describe adds: lists read better bare */
            size_t il = strlen(item);
            if (il >= 2 && item[0] == '\'') {
                memmove(item, item + 1, il - 2);
                item[il - 2] = '\0';
            }
        }
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", item);
        if (w < 0 || (size_t)w >= len - used) {
            snprintf(buf + (len > 5 ? len - 5 : 0), len > 5 ? 5 : len, "...");
            return;
        }
        used += (size_t)w;
    }
}

/* String enum with aliases: canonicalise *slot in place. */
static int s_check_string_enum(s_ctx_t *ctx, const sdx_value_t *schema, const sdx_value_t *en,
                               sdx_value_t **slot, bool in_object)
{
    const char *s = (*slot)->u.str.ptr;
    const char *canon = NULL;
    const char *alias_key = NULL;
    for (size_t i = 0; i < sdx_array_len(en) && !canon; i++) {
        const sdx_value_t *e = sdx_array_at(en, i);
        if (e->type == SDX_STR && strcmp(e->u.str.ptr, s) == 0)
            return 0; /* exact */
    }
    for (size_t i = 0; i < sdx_array_len(en) && !canon; i++) {
        const sdx_value_t *e = sdx_array_at(en, i);
        if (e->type == SDX_STR && s_alias_eq(e->u.str.ptr, s))
            canon = e->u.str.ptr;
    }
    const sdx_value_t *aliases = sdx_map_get(schema, "x-aliases");
    for (size_t i = 0; aliases && aliases->type == SDX_MAP && i < aliases->u.map.len && !canon;
         i++) {
        if (s_alias_eq(aliases->u.map.items[i].key, s) &&
            aliases->u.map.items[i].val->type == SDX_STR) {
            canon = aliases->u.map.items[i].val->u.str.ptr;
            alias_key = aliases->u.map.items[i].key;
        }
    }
    if (!canon) {
        char got[80], valid[400];
        s_describe(*slot, got, sizeof got);
        s_join(en, valid, sizeof valid);
        return s_fail(ctx, "enum", "unknown value %s; valid: %s", got, valid);
    }
    /* an alias may imply sibling fields ("DPM++ 2M Karras" -> use_karras_sigmas):
       the enclosing object sets them after this member (see pending_sets) */
    const sdx_value_t *sets =
        alias_key ? sdx_map_get(sdx_map_get(schema, "x-alias-sets"), alias_key) : NULL;
    if (sets && sets->type == SDX_MAP && in_object)
        ctx->pending_sets = sets;
    sdx_value_t *nv = sdx_value_str_new(canon);
    if (!nv)
        return s_fail(ctx, "internal", "out of memory");
    sdx_value_destroy(slot);
    *slot = nv;
    return 0;
}

static size_t s_utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

static int s_check_number(s_ctx_t *ctx, const sdx_value_t *schema, const sdx_value_t *v)
{
    double d = 0, lim = 0;
    sdx_value_as_double(v, &d);
    char got[64], ls[64];
    s_describe(v, got, sizeof got);
    if (!isfinite(d))
        return s_fail(ctx, "type", "must be a finite number, got %s", got);
    const sdx_value_t *k;
    if ((k = sdx_map_get(schema, "minimum")) && sdx_value_as_double(k, &lim) && d < lim) {
        s_fmt_num(ls, sizeof ls, lim);
        return s_fail(ctx, "minimum", "must be >= %s, got %s", ls, got);
    }
    if ((k = sdx_map_get(schema, "maximum")) && sdx_value_as_double(k, &lim) && d > lim) {
        s_fmt_num(ls, sizeof ls, lim);
        return s_fail(ctx, "maximum", "must be <= %s, got %s", ls, got);
    }
    if ((k = sdx_map_get(schema, "exclusiveMinimum")) && sdx_value_as_double(k, &lim) && d <= lim) {
        s_fmt_num(ls, sizeof ls, lim);
        return s_fail(ctx, "exclusiveMinimum", "must be > %s, got %s", ls, got);
    }
    if ((k = sdx_map_get(schema, "exclusiveMaximum")) && sdx_value_as_double(k, &lim) && d >= lim) {
        s_fmt_num(ls, sizeof ls, lim);
        return s_fail(ctx, "exclusiveMaximum", "must be < %s, got %s", ls, got);
    }
    if ((k = sdx_map_get(schema, "multipleOf")) && sdx_value_as_double(k, &lim) && lim > 0) {
        double q = d / lim;
        if (fabs(q - nearbyint(q)) > 1e-9) {
            s_fmt_num(ls, sizeof ls, lim);
            return s_fail(ctx, "multipleOf", "must be a multiple of %s, got %s", ls, got);
        }
    }
    return 0;
}

static int s_check_string(s_ctx_t *ctx, const sdx_value_t *schema, const sdx_value_t *v)
{
    size_t chars = s_utf8_chars(v->u.str.ptr, v->u.str.len);
    int64_t lim;
    const sdx_value_t *k;
    if ((k = sdx_map_get(schema, "minLength")) && k->type == SDX_INT &&
        chars < (size_t)(lim = k->u.i))
        return s_fail(ctx, "minLength",
                      lim == 1 ? "must not be empty" : "must be at least %lld characters, got %zu",
                      (long long)lim, chars);
    if ((k = sdx_map_get(schema, "maxLength")) && k->type == SDX_INT &&
        chars > (size_t)(lim = k->u.i))
        return s_fail(ctx, "maxLength", "must be at most %lld characters, got %zu", (long long)lim,
                      chars);
    const char *pat = sdx_map_str(schema, "pattern", NULL);
    if (pat) {
        regex_t re;
        if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) != 0)
            return s_fail(ctx, "pattern", "schema pattern does not compile");
        int rc = strlen(v->u.str.ptr) == v->u.str.len ? regexec(&re, v->u.str.ptr, 0, NULL, 0)
                                                      : REG_NOMATCH;
        regfree(&re);
        if (rc != 0) {
            char got[80];
            s_describe(v, got, sizeof got);
            return s_fail(ctx, "pattern", "must match %s, got %s", pat, got);
        }
    }
    return 0;
}

static int s_check_object(s_ctx_t *ctx, const sdx_value_t *schema, sdx_value_t *obj)
{
    const sdx_value_t *props = sdx_map_get(schema, "properties");
    const sdx_value_t *req = sdx_map_get(schema, "required");
    for (size_t i = 0; i < sdx_array_len(req); i++) {
        const sdx_value_t *r = sdx_array_at(req, i);
        if (r->type != SDX_STR)
            continue;
        const sdx_value_t *have = sdx_map_get(obj, r->u.str.ptr);
        if (!have) {
            size_t old = s_push_key(ctx, r->u.str.ptr);
            int rc = s_fail(ctx, "required", "is required");
            ctx->path[old] = '\0';
            return rc;
        }
    }
    const sdx_value_t *addl = sdx_map_get(schema, "additionalProperties");
    for (size_t i = 0; i < obj->u.map.len; i++) {
        const char *key = obj->u.map.items[i].key;
        if (sdx_map_get(props, key))
            continue;
        if (addl && addl->type == SDX_BOOL && !addl->u.b) {
            size_t old = s_push_key(ctx, key);
            char accepted[400] = "";
            if (props)
                s_join(props, accepted, sizeof accepted);
            int rc = s_fail(ctx, "additionalProperties", "unknown field; accepted: %s", accepted);
            ctx->path[old] = '\0';
            return rc;
        }
        if (addl && addl->type == SDX_MAP) {
            size_t old = s_push_key(ctx, key);
            int rc = s_validate_member(ctx, addl, obj, i);
            ctx->path[old] = '\0';
            if (rc)
                return rc;
        }
    }
    for (size_t i = 0; props && props->type == SDX_MAP && i < props->u.map.len; i++) {
        const char *key = props->u.map.items[i].key;
        const sdx_value_t *sub = props->u.map.items[i].val;
        size_t old = s_push_key(ctx, key);
        int rc = 0;
        /* find the slot (index, since the map may grow while we fill defaults) */
        size_t idx = obj->u.map.len;
        for (size_t j = 0; j < obj->u.map.len; j++)
            if (strcmp(obj->u.map.items[j].key, key) == 0)
                idx = j;
        if (idx == obj->u.map.len) {
            const sdx_value_t *dsub = s_deref(ctx, sub);
            const sdx_value_t *dflt = dsub ? sdx_map_get(dsub, "default") : NULL;
            if (dflt) {
                sdx_value_t *c = sdx_value_clone(dflt);
                if (!c || sdx_map_set(obj, key, c) != 0)
                    rc = s_fail(ctx, "internal", "out of memory");
                for (size_t j = 0; j < obj->u.map.len; j++)
                    if (strcmp(obj->u.map.items[j].key, key) == 0)
                        idx = j;
            }
        }
        if (!rc && idx < obj->u.map.len)
            rc = s_validate_member(ctx, sub, obj, idx);
        ctx->path[old] = '\0';
        if (rc)
            return rc;
    }
    /* semantic: total pixels of the fields named by x-pixel-fields */
    const sdx_value_t *pxf = sdx_map_get(schema, "x-pixel-fields");
    const sdx_value_t *pxmax = sdx_map_get(schema, "x-max-pixels");
    if (sdx_array_len(pxf) == 2) {
        const sdx_value_t *a = sdx_array_at(pxf, 0), *b = sdx_array_at(pxf, 1);
        const sdx_value_t *w = a->type == SDX_STR ? sdx_map_get(obj, a->u.str.ptr) : NULL;
        const sdx_value_t *h = b->type == SDX_STR ? sdx_map_get(obj, b->u.str.ptr) : NULL;
        if (w && h && w->type == SDX_INT && h->type == SDX_INT) {
            char msg[256];
            uint64_t smax =
                pxmax && pxmax->type == SDX_INT && pxmax->u.i > 0 ? (uint64_t)pxmax->u.i : 0;
            if (sdx_semantic_check_pixels(ctx->sem, w->u.i, h->u.i, smax, msg, sizeof msg))
                return s_fail(ctx, "x-max-pixels", "%s", msg);
        }
    }
    return 0;
}

/* Validates obj's member idx, then sets the siblings its value implied. */
static int s_validate_member(s_ctx_t *ctx, const sdx_value_t *schema, sdx_value_t *obj,
                             size_t idx)
{
    ctx->pending_sets = NULL;
    int rc = s_validate(ctx, schema, &obj->u.map.items[idx].val, true);
    const sdx_value_t *sets = ctx->pending_sets;
    ctx->pending_sets = NULL;
    for (size_t i = 0; !rc && sets && i < sets->u.map.len; i++) {
        sdx_value_t *c = sdx_value_clone(sets->u.map.items[i].val);
        if (!c || sdx_map_set(obj, sets->u.map.items[i].key, c) != 0)
            rc = s_fail(ctx, "internal", "out of memory");
    }
    return rc;
}

static int s_validate(s_ctx_t *ctx, const sdx_value_t *schema, sdx_value_t **slot,
                      bool in_object)
{
    schema = s_deref(ctx, schema);
    if (!schema)
        return s_fail(ctx, "$ref", "schema error: unresolvable $ref");
    if (schema->type == SDX_BOOL) {
        if (schema->u.b)
            return 0;
        return s_fail(ctx, "false", "is not allowed here");
    }
    sdx_value_t *v = *slot;
    char got[80];

    if (v->type == SDX_EXT)
        return s_fail(ctx, "type",
                      "unsupported msgpack extension type %d here (accepted: timestamps, ext -1, "
                      "in time fields; LZ4 ext 98/99 only around the whole message)",
                      (int)v->u.ext.type);

    /* type */
    const sdx_value_t *type = sdx_map_get(schema, "type");
    if (type) {
        bool ok = false, want_int = false, want_num = false;
        size_t n = type->type == SDX_ARRAY ? type->u.arr.len : 1;
        for (size_t i = 0; i < n; i++) {
            const sdx_value_t *t = type->type == SDX_ARRAY ? type->u.arr.items[i] : type;
            if (t->type != SDX_STR)
                continue;
            if (strcmp(t->u.str.ptr, "integer") == 0)
                want_int = true;
            if (strcmp(t->u.str.ptr, "number") == 0)
                want_num = true;
            ok = ok || s_type_ok(v, t->u.str.ptr);
        }
        if (!ok) {
            char want[128] = "";
            size_t used = 0;
            for (size_t i = 0; i < n && used < sizeof want; i++) {
                const sdx_value_t *t = type->type == SDX_ARRAY ? type->u.arr.items[i] : type;
                if (t->type == SDX_STR)
                    used += (size_t)snprintf(want + used, sizeof want - used, "%s%s",
                                             used ? " or " : "", t->u.str.ptr);
            }
            s_describe(v, got, sizeof got);
            if (v->type == SDX_STR || v->type == SDX_INT || v->type == SDX_FLOAT ||
                v->type == SDX_BOOL)
                return s_fail(ctx, "type", "must be %s, got %s %s", want, s_data_type(v), got);
            return s_fail(ctx, "type", "must be %s, got %s", want, s_data_type(v));
        }
        if (want_int && !want_num && v->type == SDX_FLOAT) {
            sdx_value_t *iv = sdx_value_int_new((int64_t)v->u.f);
            if (!iv)
                return s_fail(ctx, "internal", "out of memory");
            sdx_value_destroy(slot);
            *slot = v = iv;
        }
    }

    /* enum / const */
    const sdx_value_t *en = sdx_map_get(schema, "enum");
    if (en && v->type == SDX_STR) {
        if (s_check_string_enum(ctx, schema, en, slot, in_object))
            return -1;
        v = *slot;
    } else if (en) {
        bool found = false;
        for (size_t i = 0; i < sdx_array_len(en) && !found; i++) {
            const sdx_value_t *e = sdx_array_at(en, i);
            double a, b;
            found = sdx_value_equal(e, v) ||
                    (sdx_value_as_double(e, &a) && sdx_value_as_double(v, &b) && a == b);
        }
        if (!found) {
            char valid[256];
            s_describe(v, got, sizeof got);
            s_join(en, valid, sizeof valid);
            return s_fail(ctx, "enum", "must be one of: %s; got %s", valid, got);
        }
    }
    const sdx_value_t *cst = sdx_map_get(schema, "const");
    if (cst && !sdx_value_equal(cst, v)) {
        char want[80];
        s_describe(cst, want, sizeof want);
        s_describe(v, got, sizeof got);
        return s_fail(ctx, "const", "must be %s, got %s", want, got);
    }

    switch (v->type) {
    case SDX_INT:
    case SDX_FLOAT:
        if (s_check_number(ctx, schema, v))
            return -1;
        break;
    case SDX_STR:
        if (s_check_string(ctx, schema, v))
            return -1;
        break;
    case SDX_BIN: {
        const sdx_value_t *k = sdx_map_get(schema, "minLength");
        if (k && k->type == SDX_INT && v->u.bin.len < (size_t)k->u.i)
            return s_fail(ctx, "minLength", "must not be empty");
        break;
    }
    case SDX_ARRAY: {
        const sdx_value_t *k;
        if ((k = sdx_map_get(schema, "minItems")) && k->type == SDX_INT &&
            v->u.arr.len < (size_t)k->u.i)
            return s_fail(ctx, "minItems", "must have at least %lld items, got %zu",
                          (long long)k->u.i, v->u.arr.len);
        if ((k = sdx_map_get(schema, "maxItems")) && k->type == SDX_INT &&
            v->u.arr.len > (size_t)k->u.i)
            return s_fail(ctx, "maxItems", "must have at most %lld items, got %zu",
                          (long long)k->u.i, v->u.arr.len);
        const sdx_value_t *items = sdx_map_get(schema, "items");
        for (size_t i = 0; items && i < v->u.arr.len; i++) {
            size_t old = s_push_index(ctx, i);
            int rc = s_validate(ctx, items, &v->u.arr.items[i], false);
            ctx->path[old] = '\0';
            if (rc)
                return rc;
        }
        break;
    }
    case SDX_MAP:
        if (s_check_object(ctx, schema, v))
            return -1;
        break;
    default:
        break;
    }

    /* semantic checks the schema annotates */
    const sdx_value_t *root = sdx_map_get(schema, "x-path-root");
    if (root && root->type == SDX_STR && v->type == SDX_STR) {
        char msg[400];
        if (sdx_semantic_check_path(ctx->sem, root->u.str.ptr, v->u.str.ptr, msg, sizeof msg))
            return s_fail(ctx, "x-path-root", "%s", msg);
    }
    const sdx_value_t *img = sdx_map_get(schema, "x-image");
    if (img && img->type == SDX_BOOL && img->u.b && (v->type == SDX_STR || v->type == SDX_BIN)) {
        char msg[256];
        if (sdx_semantic_check_image(ctx->sem, slot, msg, sizeof msg))
            return s_fail(ctx, "x-image", "%s", msg);
    }
    return 0;
}

int sdx_schema_validate(const sdx_value_t *schema, sdx_value_t **data_p, const sdx_semantic_t *sem,
                        sdx_schema_error_t *err)
{
    assert(schema && data_p && *data_p && err);
    memset(err, 0, sizeof *err);
    s_ctx_t ctx = {.root = schema, .sem = sem, .err = err};
    return s_validate(&ctx, schema, data_p, false);
}

int sdx_schema_check_request(const sdx_schema_set_t *self, const sdx_semantic_t *sem,
                             const char *message_type, sdx_value_t **data_p,
                             sdx_schema_error_t *err)
{
    assert(data_p && err);
    memset(err, 0, sizeof *err);
    const sdx_value_t *schema = sdx_schema_set_for(self, message_type);
    if (!schema)
        return 1;
    if (!*data_p) {
        *data_p = sdx_value_map_new();
        if (!*data_p) {
            snprintf(err->rule, sizeof err->rule, "internal");
            snprintf(err->message, sizeof err->message, "out of memory");
            return -1;
        }
    }
    return sdx_schema_validate(schema, data_p, sem, err);
}
