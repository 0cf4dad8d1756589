/*  sdx_safetensors.c - read (mmap) and write .safetensors files.

    The reader maps the whole file once, validates the whole header before any
    tensor is handed out, and then gives borrowed views of the mapped bytes.
    The mapping is reference counted: the open file holds one reference and
    every tensor view made by sdx_safetensors_tensor() holds one more, so the
    bytes stay mapped until the last view is freed even if the file object is
    closed first.

    The mapping is MAP_PRIVATE with PROT_READ|PROT_WRITE: nothing here writes
    to it, but an in-place op on a borrowed weight (e.g. LoRA fusion with
    sdx_add_) then gets private copy-on-write pages instead of a SIGSEGV, and
    the file on disk is never modified.

    Not for: knowing what the tensors mean (that is sdx_model.c), or files
    bigger than the address space.
*/
#include "sdx_safetensors.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The safetensors reference implementation refuses headers above 100 MB. */
#define SDX_ST_MAX_HEADER 100000000ULL
/* JSON integers are doubles in cJSON: only integers up to 2^53 are exact. */
#define SDX_ST_MAX_INT 9007199254740992.0

/* ---------------------------------------------------------------- dtypes */

/* The safetensors dtype strings this engine can hold, as a static table. */
static const struct {
    const char *name;
    sdx_dtype_t dtype;
    size_t size;
    sdx_st_storage_t storage;
} s_dtypes[] = {
    {"F32", SDX_F32, 4}, {"F16", SDX_F16, 2},   {"BF16", SDX_BF16, 2}, {"F64", SDX_F64, 8},
    {"I64", SDX_I64, 8}, {"I32", SDX_I32, 4},   {"I16", SDX_I16, 2},   {"I8", SDX_I8, 1},
    {"U8", SDX_U8, 1},   {"BOOL", SDX_DT_BOOL, 1},
    /* float8 (published fine-tunes): read as f32, converted in C */
    {"F8_E4M3", SDX_F32, 1, SDX_ST_F8_E4M3}, {"F8_E5M2", SDX_F32, 1, SDX_ST_F8_E5M2},
};
#define S_NDTYPES (sizeof s_dtypes / sizeof s_dtypes[0])

static int s_dtype_lookup(const char *name)
{
    for (size_t i = 0; i < S_NDTYPES; i++)
        if (strcmp(s_dtypes[i].name, name) == 0)
            return (int)i;
    return -1;
}

static const char *s_dtype_to_st(sdx_dtype_t dt)
{
    for (size_t i = 0; i < S_NDTYPES; i++)
        if (s_dtypes[i].dtype == dt && s_dtypes[i].storage == SDX_ST_NATIVE)
            return s_dtypes[i].name;
    return NULL;
}

/* ---------------------------------------------------------------- mapping */

/* The mapped file, shared by the open object and every tensor view. */
typedef struct {
    void *addr;
    size_t len;
    atomic_int refs;
    bool is_heap; /* a private malloc'd copy (open_memory), not an mmap */
} s_mapping_t;

static void s_mapping_unref(void *ctx)
{
    s_mapping_t *m = ctx;
    if (!m)
        return;
    if (atomic_fetch_sub(&m->refs, 1) == 1) {
        if (m->is_heap)
            free(m->addr);
        else if (m->addr && m->len)
            munmap(m->addr, m->len);
        free(m);
    }
}

/* ---------------------------------------------------------------- parsed header */

typedef struct {
    sdx_st_tensor_t *tensors; /* sorted by data offset (file order) */
    size_t count;
    size_t *by_name; /* indices into tensors, sorted by name */
    char **meta_keys, **meta_vals;
    size_t meta_count;
} s_header_t;

struct sdx_safetensors {
    char *path;
    s_mapping_t *map;
    s_header_t h;
};

static void s_header_clear(s_header_t *h)
{
    for (size_t i = 0; i < h->count; i++) {
        free((char *)h->tensors[i].name);
    }
    free(h->tensors);
    free(h->by_name);
    for (size_t i = 0; i < h->meta_count; i++) {
        free(h->meta_keys[i]);
        free(h->meta_vals[i]);
    }
    free(h->meta_keys);
    free(h->meta_vals);
    memset(h, 0, sizeof *h);
}

/* A non-negative JSON integer that a double holds exactly. */
static bool s_json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > SDX_ST_MAX_INT || d != (double)(uint64_t)d)
        return false;
    *out = (uint64_t)d;
    return true;
}

/* (name, index) pairs sorted by name build the lookup index; no global
   state, so files can be opened from several threads at once. */
typedef struct {
    const char *name;
    size_t index;
} s_name_idx_t;

static int s_cmp_offset(const void *a, const void *b)
{
    const sdx_st_tensor_t *x = a, *y = b;
    uintptr_t xo = (uintptr_t)x->data, yo = (uintptr_t)y->data;
    if (xo != yo)
        return xo < yo ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int s_cmp_name(const void *a, const void *b)
{
    return strcmp(((const s_name_idx_t *)a)->name, ((const s_name_idx_t *)b)->name);
}

/* Parse and validate a header. `data` is the start of the data area (may be
   NULL when only checking: offsets are then kept as offsets in .data).
   `label` prefixes error messages. On failure sets the error, clears *h. */
static int s_header_parse(s_header_t *h, const char *label, const char *json, size_t json_len,
                          uint64_t data_size, const uint8_t *data)
{
    memset(h, 0, sizeof *h);
    cJSON *root = NULL;
    char why[512] = "";
    size_t n_entries = 0;

    if (json_len < 2) {
        snprintf(why, sizeof why, "header of %zu bytes is too short", json_len);
        goto malformed;
    }
    if (json_len > SDX_ST_MAX_HEADER) {
        snprintf(why, sizeof why, "header length %zu exceeds the %llu byte limit", json_len,
                 (unsigned long long)SDX_ST_MAX_HEADER);
        goto malformed;
    }
    if (json[0] != '{') {
        snprintf(why, sizeof why, "header does not start with '{' (not a safetensors file?)");
        goto malformed;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(json, json_len, &end, false);
    if (!root || !cJSON_IsObject(root)) {
        /* cJSON reports the error position through `end` (its global
           cJSON_GetErrorPtr() is not thread safe). */
        size_t at = end && end >= json && end <= json + json_len ? (size_t)(end - json) : 0;
        snprintf(why, sizeof why, "header is not a JSON object (parse error near byte %zu)", at);
        goto malformed;
    }
    /* Only padding may follow the object. */
    for (const char *p = end; p && p < json + json_len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            snprintf(why, sizeof why, "unexpected bytes after the header JSON at byte %zu",
                     (size_t)(p - json));
            goto malformed;
        }
    }

    for (cJSON *e = root->child; e; e = e->next)
        n_entries++;
    h->tensors = calloc(n_entries ? n_entries : 1, sizeof *h->tensors);
    h->meta_keys = calloc(1, sizeof(char *));
    h->meta_vals = calloc(1, sizeof(char *));
    if (!h->tensors || !h->meta_keys || !h->meta_vals) {
        snprintf(why, sizeof why, "out of memory");
        goto malformed;
    }

    bool seen_meta = false;
    for (cJSON *e = root->child; e; e = e->next) {
        const char *name = e->string ? e->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            if (seen_meta) {
                snprintf(why, sizeof why, "duplicate __metadata__");
                goto malformed;
            }
            seen_meta = true;
            if (!cJSON_IsObject(e)) {
                snprintf(why, sizeof why, "__metadata__ is not an object");
                goto malformed;
            }
            size_t nm = 0;
            for (cJSON *m = e->child; m; m = m->next)
                nm++;
            free(h->meta_keys);
            free(h->meta_vals);
            h->meta_keys = calloc(nm ? nm : 1, sizeof(char *));
            h->meta_vals = calloc(nm ? nm : 1, sizeof(char *));
            if (!h->meta_keys || !h->meta_vals) {
                snprintf(why, sizeof why, "out of memory");
                goto malformed;
            }
            for (cJSON *m = e->child; m; m = m->next) {
                if (!cJSON_IsString(m) || !m->valuestring) {
                    snprintf(why, sizeof why, "__metadata__ entry '%.100s' is not a string",
                             m->string ? m->string : "");
                    goto malformed;
                }
                h->meta_keys[h->meta_count] = strdup(m->string ? m->string : "");
                h->meta_vals[h->meta_count] = strdup(m->valuestring);
                h->meta_count++;
                if (!h->meta_keys[h->meta_count - 1] || !h->meta_vals[h->meta_count - 1]) {
                    snprintf(why, sizeof why, "out of memory");
                    goto malformed;
                }
            }
            continue;
        }

        if (!cJSON_IsObject(e)) {
            snprintf(why, sizeof why, "tensor '%.100s': entry is not an object", name);
            goto malformed;
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(jd) || !jd->valuestring) {
            snprintf(why, sizeof why, "tensor '%.100s': missing or non-string dtype", name);
            goto malformed;
        }
        int di = s_dtype_lookup(jd->valuestring);
        if (di < 0) {
            snprintf(why, sizeof why, "tensor '%.100s': unsupported dtype '%.20s'", name,
                     jd->valuestring);
            goto malformed;
        }
        if (!cJSON_IsArray(js)) {
            snprintf(why, sizeof why, "tensor '%.100s': missing or non-array shape", name);
            goto malformed;
        }
        int ndim = cJSON_GetArraySize(js);
        if (ndim > SDX_MAX_DIMS) {
            snprintf(why, sizeof why, "tensor '%.100s': %d dimensions (at most %d)", name, ndim,
                     SDX_MAX_DIMS);
            goto malformed;
        }
        sdx_st_tensor_t *t = &h->tensors[h->count];
        t->ndim = ndim;
        uint64_t numel = 1;
        bool overflow = false;
        int d = 0;
        for (const cJSON *x = js->child; x; x = x->next, d++) {
            uint64_t v;
            if (!s_json_uint(x, &v)) {
                snprintf(why, sizeof why,
                         "tensor '%.100s': shape[%d] is not a non-negative integer", name, d);
                goto malformed;
            }
            t->shape[d] = (int64_t)v;
            if (__builtin_mul_overflow(numel, v, &numel))
                overflow = true;
        }
        uint64_t nbytes = 0;
        if (overflow || __builtin_mul_overflow(numel, (uint64_t)s_dtypes[di].size, &nbytes)) {
            snprintf(why, sizeof why, "tensor '%.100s': shape too large (size overflows)", name);
            goto malformed;
        }
        if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2) {
            snprintf(why, sizeof why, "tensor '%.100s': data_offsets must be [begin, end]", name);
            goto malformed;
        }
        uint64_t b, en;
        if (!s_json_uint(jo->child, &b) || !s_json_uint(jo->child->next, &en)) {
            snprintf(why, sizeof why, "tensor '%.100s': data_offsets are not non-negative integers",
                     name);
            goto malformed;
        }
        if (en < b) {
            snprintf(why, sizeof why, "tensor '%.100s': data_offsets end %llu before begin %llu",
                     name, (unsigned long long)en, (unsigned long long)b);
            goto malformed;
        }
        if (en > data_size) {
            snprintf(why, sizeof why,
                     "tensor '%.100s': data_offsets end %llu beyond data size %llu", name,
                     (unsigned long long)en, (unsigned long long)data_size);
            goto malformed;
        }
        if (en - b != nbytes) {
            snprintf(why, sizeof why,
                     "tensor '%.100s': %llu data bytes but shape and dtype %s need %llu", name,
                     (unsigned long long)(en - b), s_dtypes[di].name, (unsigned long long)nbytes);
            goto malformed;
        }
        t->dtype = s_dtypes[di].dtype;
        t->storage = s_dtypes[di].storage;
        t->st_dtype = s_dtypes[di].name;
        t->nbytes = (size_t)nbytes;
        /* Without a data area the pointer carries the offset (for sorting). */
        t->data = data ? (const void *)(data + b) : (const void *)(uintptr_t)b;
        t->name = strdup(name);
        if (!t->name) {
            snprintf(why, sizeof why, "out of memory");
            goto malformed;
        }
        h->count++;
    }

    /* File order, then overlaps. Zero-byte tensors overlap nothing. */
    qsort(h->tensors, h->count, sizeof *h->tensors, s_cmp_offset);
    uintptr_t prev_end = 0;
    const char *prev_name = NULL;
    for (size_t i = 0; i < h->count; i++) {
        const sdx_st_tensor_t *t = &h->tensors[i];
        uintptr_t b = (uintptr_t)t->data;
        if (t->nbytes == 0)
            continue;
        if (prev_name && b < prev_end) {
            snprintf(why, sizeof why, "tensors '%.100s' and '%.100s' overlap in the data area",
                     prev_name, t->name);
            goto malformed;
        }
        prev_end = b + t->nbytes;
        prev_name = t->name;
    }

    /* Name index, then duplicates. */
    h->by_name = malloc(sizeof(size_t) * (h->count ? h->count : 1));
    s_name_idx_t *pairs = malloc(sizeof *pairs * (h->count ? h->count : 1));
    if (!h->by_name || !pairs) {
        free(pairs);
        snprintf(why, sizeof why, "out of memory");
        goto malformed;
    }
    for (size_t i = 0; i < h->count; i++) {
        pairs[i].name = h->tensors[i].name;
        pairs[i].index = i;
    }
    qsort(pairs, h->count, sizeof *pairs, s_cmp_name);
    for (size_t i = 0; i < h->count; i++) {
        h->by_name[i] = pairs[i].index;
        if (i > 0 && strcmp(pairs[i - 1].name, pairs[i].name) == 0) {
            snprintf(why, sizeof why, "duplicate tensor name '%.100s'", pairs[i].name);
            free(pairs);
            goto malformed;
        }
    }
    free(pairs);
    cJSON_Delete(root);
    return 0;

malformed:
    cJSON_Delete(root);
    s_header_clear(h);
    sdx_set_error("%s: %s", label, why);
    return -1;
}

/* ---------------------------------------------------------------- reader */

int sdx_safetensors_check_header(const char *json, size_t json_len, uint64_t data_size)
{
    s_header_t h;
    if (!json && json_len)
        return sdx_set_error("safetensors header: NULL buffer");
    if (s_header_parse(&h, "safetensors header", json ? json : "", json_len, data_size, NULL) != 0)
        return -1;
    s_header_clear(&h);
    return 0;
}

/* Validate a whole file image (8-byte length, header, data) held in `buf`. */
static int s_parse_image(s_header_t *h, const char *label, const uint8_t *buf, size_t len)
{
    if (len < 8) {
        sdx_set_error("%s: file of %zu bytes is too short for a safetensors header", label, len);
        return -1;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | buf[i];
    if (n > SDX_ST_MAX_HEADER) {
        sdx_set_error("%s: header length %llu exceeds the %llu byte limit (corrupt or not a "
                      "safetensors file)",
                      label, (unsigned long long)n, (unsigned long long)SDX_ST_MAX_HEADER);
        return -1;
    }
    if (n > len - 8) {
        sdx_set_error("%s: header length %llu beyond the end of the %zu byte file (truncated?)",
                      label, (unsigned long long)n, len);
        return -1;
    }
    return s_header_parse(h, label, (const char *)buf + 8, (size_t)n, len - 8 - n, buf + 8 + n);
}

sdx_safetensors_t *sdx_safetensors_open_memory(const void *buf, size_t len, const char *label)
{
    if (!label)
        label = "(memory)";
    if (!buf && len) {
        sdx_set_error("%s: NULL buffer", label);
        return NULL;
    }
    sdx_safetensors_t *st = calloc(1, sizeof *st);
    s_mapping_t *m = calloc(1, sizeof *m);
    if (!st || !m || !(st->path = strdup(label)) || !(m->addr = malloc(len ? len : 1))) {
        sdx_set_error("%s: out of memory", label);
        goto fail;
    }
    atomic_init(&m->refs, 1);
    m->is_heap = true;
    m->len = len;
    if (len)
        memcpy(m->addr, buf, len);
    st->map = m;
    m = NULL;
    if (s_parse_image(&st->h, label, st->map->addr, len) != 0)
        goto fail;
    return st;

fail:
    if (m) {
        free(m->addr);
        free(m);
    }
    if (st) {
        s_mapping_unref(st->map);
        free(st->path);
        free(st);
    }
    return NULL;
}

sdx_safetensors_t *sdx_safetensors_open(const char *path)
{
    if (!path) {
        sdx_set_error("safetensors: NULL path");
        return NULL;
    }
    sdx_safetensors_t *st = calloc(1, sizeof *st);
    s_mapping_t *m = calloc(1, sizeof *m);
    int fd = -1;
    if (!st || !m || !(st->path = strdup(path))) {
        sdx_set_error("%s: out of memory", path);
        goto fail;
    }
    atomic_init(&m->refs, 1);
    st->map = m;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sdx_set_error("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        sdx_set_error("%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        sdx_set_error("%s: not a regular file", path);
        goto fail;
    }
    if (sb.st_size < 8) {
        sdx_set_error("%s: file of %lld bytes is too short for a safetensors header", path,
                      (long long)sb.st_size);
        goto fail;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        sdx_set_error("%s: file too large to map", path);
        goto fail;
    }
    void *addr = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
        sdx_set_error("%s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    m->addr = addr;
    m->len = (size_t)sb.st_size;
    close(fd);
    fd = -1;
    if (s_parse_image(&st->h, path, addr, m->len) != 0)
        goto fail;
    return st;

fail:
    if (fd >= 0)
        close(fd);
    if (st) {
        s_mapping_unref(st->map);
        free(st->path);
        free(st);
    } else {
        free(m);
    }
    return NULL;
}

void sdx_safetensors_close(sdx_safetensors_t **stp)
{
    if (!stp || !*stp)
        return;
    sdx_safetensors_t *st = *stp;
    s_header_clear(&st->h);
    s_mapping_unref(st->map);
    free(st->path);
    free(st);
    *stp = NULL;
}

size_t sdx_safetensors_count(const sdx_safetensors_t *st)
{
    return st ? st->h.count : 0;
}

const sdx_st_tensor_t *sdx_safetensors_at(const sdx_safetensors_t *st, size_t i)
{
    if (!st || i >= st->h.count)
        return NULL;
    return &st->h.tensors[i];
}

const sdx_st_tensor_t *sdx_safetensors_find(const sdx_safetensors_t *st, const char *name)
{
    if (!st || !name)
        return NULL;
    size_t lo = 0, hi = st->h.count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const sdx_st_tensor_t *t = &st->h.tensors[st->h.by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0)
            return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *sdx_safetensors_metadata(const sdx_safetensors_t *st, const char *key)
{
    if (!st || !key)
        return NULL;
    for (size_t i = 0; i < st->h.meta_count; i++)
        if (strcmp(st->h.meta_keys[i], key) == 0)
            return st->h.meta_vals[i];
    return NULL;
}

const char *sdx_safetensors_path(const sdx_safetensors_t *st)
{
    return st ? st->path : NULL;
}

int sdx_safetensors_tensor(sdx_scope_t *S, sdx_tensor_t **out, sdx_safetensors_t *st,
                           const sdx_st_tensor_t *info)
{
    if (!st || !info || !out)
        return sdx_set_error("sdx_safetensors_tensor: NULL argument");
    if (info < st->h.tensors || info >= st->h.tensors + st->h.count)
        return sdx_set_error("%s: tensor info does not belong to this file", st->path);
    if (info->storage != SDX_ST_NATIVE) {
        size_t n = info->nbytes; /* one byte per element */
        float *f = malloc((n ? n : 1) * sizeof *f);
        if (!f)
            return sdx_set_error("%s: tensor '%s': out of memory", st->path, info->name);
        const unsigned char *b = info->data;
        for (size_t i = 0; i < n; i++)
            f[i] = info->storage == SDX_ST_F8_E4M3 ? sdx_f8_e4m3_to_f32(b[i])
                                                   : sdx_f8_e5m2_to_f32(b[i]);
        int rc = sdx_from_host(S, out, f, SDX_F32, info->shape, info->ndim);
        free(f);
        return rc;
    }
    size_t esize = sdx_dtype_size(info->dtype);
    /* A misaligned element (possible in hand-made files) would be undefined
       behaviour for ATen's kernels: that tensor alone is copied. */
    if (esize > 1 && ((uintptr_t)info->data % esize) != 0)
        return sdx_from_host(S, out, info->data, info->dtype, info->shape, info->ndim);
    /* ATen refuses a NULL data pointer less often than a dangling one; a
       zero-byte tensor points at the start of the mapping, which is valid. */
    atomic_fetch_add(&st->map->refs, 1);
    if (sdx_from_blob(S, out, (void *)info->data, info->dtype, info->shape, info->ndim,
                      s_mapping_unref, st->map) != 0) {
        /* The release callback may or may not have run; from_blob's contract
           is that the deleter runs only once the tensor existed. */
        s_mapping_unref(st->map);
        return -1;
    }
    return 0;
}

float sdx_f8_e4m3_to_f32(unsigned char b)
{
    int sign = b >> 7, e = (b >> 3) & 0xF, m = b & 7;
    float v;
    if (e == 0xF && m == 7)
        v = NAN; /* e4m3fn: no infinities, S.1111.111 is NaN */
    else if (e == 0)
        v = ldexpf((float)m / 8.0f, -6);
    else
        v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return sign ? -v : v;
}

float sdx_f8_e5m2_to_f32(unsigned char b)
{
    int sign = b >> 7, e = (b >> 2) & 0x1F, m = b & 3;
    float v;
    if (e == 0x1F)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexpf((float)m / 4.0f, -14);
    else
        v = ldexpf(1.0f + (float)m / 4.0f, e - 15);
    return sign ? -v : v;
}

int sdx_safetensors_get(sdx_scope_t *S, sdx_tensor_t **out, sdx_safetensors_t *st, const char *name)
{
    if (!st)
        return sdx_set_error("sdx_safetensors_get: NULL file");
    const sdx_st_tensor_t *t = sdx_safetensors_find(st, name);
    if (!t)
        return sdx_set_error("%s: no tensor '%s'", st->path, name ? name : "(null)");
    return sdx_safetensors_tensor(S, out, st, t);
}

/* ---------------------------------------------------------------- writer */

/* Append a JSON string literal for s to the growing buffer. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} s_sbuf_t;

static void s_sb_put(s_sbuf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = true;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}

static void s_sb_printf(s_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_sb_printf(s_sbuf_t *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        s_sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void s_sb_json_string(s_sbuf_t *b, const char *s)
{
    s_sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            s_sb_put(b, e, 2);
        } else if (*p < 0x20) {
            s_sb_printf(b, "\\u%04x", *p);
        } else {
            s_sb_put(b, (const char *)p, 1);
        }
    }
    s_sb_put(b, "\"", 1);
}

int sdx_safetensors_write(const char *path, const char *const *names, sdx_tensor_t *const *tensors,
                          size_t n, const char *const *meta_kv)
{
    if (!path || (n && (!names || !tensors)))
        return sdx_set_error("sdx_safetensors_write: NULL argument");
    s_sbuf_t hb = {0};
    size_t *nbytes = calloc(n ? n : 1, sizeof(size_t));
    char *tmp = NULL;
    FILE *f = NULL;
    void *buf = NULL;
    int rc = -1;
    if (!nbytes) {
        sdx_set_error("%s: out of memory", path);
        goto done;
    }
    s_sb_put(&hb, "{", 1);
    bool first = true;
    if (meta_kv && meta_kv[0]) {
        s_sb_put(&hb, "\"__metadata__\":{", 16);
        for (size_t i = 0; meta_kv[i]; i += 2) {
            if (!meta_kv[i + 1]) {
                sdx_set_error("%s: metadata key '%s' has no value", path, meta_kv[i]);
                goto done;
            }
            if (i)
                s_sb_put(&hb, ",", 1);
            s_sb_json_string(&hb, meta_kv[i]);
            s_sb_put(&hb, ":", 1);
            s_sb_json_string(&hb, meta_kv[i + 1]);
        }
        s_sb_put(&hb, "}", 1);
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (!names[i] || !tensors[i]) {
            sdx_set_error("%s: tensor %zu has no name or value", path, i);
            goto done;
        }
        if (strcmp(names[i], "__metadata__") == 0) {
            sdx_set_error("%s: '__metadata__' is not a valid tensor name", path);
            goto done;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[j], names[i]) == 0) {
                sdx_set_error("%s: duplicate tensor name '%s'", path, names[i]);
                goto done;
            }
        sdx_dtype_t dt = sdx_tensor_dtype(tensors[i]);
        const char *sd = s_dtype_to_st(dt);
        if (!sd) {
            sdx_set_error("%s: tensor '%s': dtype %s cannot be written", path, names[i],
                          sdx_dtype_name(dt));
            goto done;
        }
        int64_t shape[SDX_MAX_DIMS];
        int nd = sdx_tensor_shape(tensors[i], shape);
        nbytes[i] = (size_t)sdx_tensor_numel(tensors[i]) * sdx_dtype_size(dt);
        if (!first)
            s_sb_put(&hb, ",", 1);
        first = false;
        s_sb_json_string(&hb, names[i]);
        s_sb_printf(&hb, ":{\"dtype\":\"%s\",\"shape\":[", sd);
        for (int d = 0; d < nd; d++)
            s_sb_printf(&hb, d ? ",%lld" : "%lld", (long long)shape[d]);
        s_sb_printf(&hb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                    (unsigned long long)(off + nbytes[i]));
        off += nbytes[i];
    }
    s_sb_put(&hb, "}", 1);
    while (!hb.oom && hb.len % 8)
        s_sb_put(&hb, " ", 1);
    if (hb.oom) {
        sdx_set_error("%s: out of memory", path);
        goto done;
    }

    /* Written beside the target and renamed: readers never see half a file. */
    size_t plen = strlen(path) + 16;
    tmp = malloc(plen);
    if (!tmp) {
        sdx_set_error("%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, plen, "%s.tmp%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f) {
        sdx_set_error("%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)hb.len >> (8 * i));
    if (fwrite(le, 1, 8, f) != 8 || fwrite(hb.buf, 1, hb.len, f) != hb.len) {
        sdx_set_error("%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (!nbytes[i])
            continue;
        buf = malloc(nbytes[i]);
        if (!buf) {
            sdx_set_error("%s: out of memory for tensor '%s'", path, names[i]);
            goto done;
        }
        if (sdx_to_host(tensors[i], sdx_tensor_dtype(tensors[i]), buf, nbytes[i]) != 0)
            goto done; /* the shim's message stands */
        if (fwrite(buf, 1, nbytes[i], f) != nbytes[i]) {
            sdx_set_error("%s: write failed: %s", tmp, strerror(errno));
            goto done;
        }
        free(buf);
        buf = NULL;
    }
    if (fflush(f) != 0 || ferror(f)) {
        sdx_set_error("%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    int cr = fclose(f);
    f = NULL;
    if (cr != 0) {
        sdx_set_error("%s: close failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        sdx_set_error("%s: cannot rename into place: %s", path, strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    rc = 0;

done:
    if (f)
        fclose(f);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(buf);
    free(nbytes);
    free(hb.buf);
    return rc;
}
