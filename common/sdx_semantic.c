/*  sdx_semantic.c - path confinement, image decoding/size and pixel limits
    for request fields that the schemas annotate (see sdx_semantic.h).
    Not for: deciding which fields are checked (the schema files do that).
*/
#include "sdx_semantic.h"
#include "sdx_codec.h"
#include "sdx_log.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_ROOTS 16

typedef struct {
    char *kind;
    char *dir; /* realpath'd, no trailing slash (except "/") */
} s_root_t;

struct sdx_semantic {
    s_root_t roots[S_MAX_ROOTS];
    size_t nroots;
    size_t max_image_bytes;
    uint64_t max_pixels;
};

sdx_semantic_t *sdx_semantic_new(void)
{
    sdx_semantic_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->max_image_bytes = SDX_SEMANTIC_DEFAULT_MAX_IMAGE_BYTES;
    return self;
}

void sdx_semantic_destroy(sdx_semantic_t **self_p)
{
    assert(self_p);
    sdx_semantic_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->nroots; i++) {
        free(self->roots[i].kind);
        free(self->roots[i].dir);
    }
    free(self);
    *self_p = NULL;
}

static s_root_t *s_find_root(const sdx_semantic_t *self, const char *kind)
{
    if (!self || !kind)
        return NULL;
    for (size_t i = 0; i < self->nroots; i++)
        if (strcmp(self->roots[i].kind, kind) == 0)
            return (s_root_t *)&self->roots[i];
    return NULL;
}

int sdx_semantic_set_root(sdx_semantic_t *self, const char *kind, const char *dir)
{
    assert(self && kind && dir);
    char *real = realpath(dir, NULL);
    if (!real) {
        log_error("semantic: root '%s' = '%s': %s", kind, dir, strerror(errno));
        return -1;
    }
    s_root_t *r = s_find_root(self, kind);
    if (r) {
        free(r->dir);
        r->dir = real;
        return 0;
    }
    if (self->nroots == S_MAX_ROOTS) {
        log_error("semantic: too many roots (max %d)", S_MAX_ROOTS);
        free(real);
        return -1;
    }
    char *k = strdup(kind);
    if (!k) {
        free(real);
        return -1;
    }
    self->roots[self->nroots].kind = k;
    self->roots[self->nroots].dir = real;
    self->nroots++;
    return 0;
}

const char *sdx_semantic_root(const sdx_semantic_t *self, const char *kind)
{
    s_root_t *r = s_find_root(self, kind);
    return r ? r->dir : NULL;
}

void sdx_semantic_set_max_image_bytes(sdx_semantic_t *self, size_t max_bytes)
{
    assert(self);
    self->max_image_bytes = max_bytes;
}

size_t sdx_semantic_max_image_bytes(const sdx_semantic_t *self)
{
    return self ? self->max_image_bytes : SDX_SEMANTIC_DEFAULT_MAX_IMAGE_BYTES;
}

void sdx_semantic_set_max_pixels(sdx_semantic_t *self, uint64_t max_pixels)
{
    assert(self);
    self->max_pixels = max_pixels;
}

/* Is `path` equal to `root` or below it (component-wise)? */
static bool s_inside(const char *root, const char *path)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return path[0] == '/';
    return strncmp(root, path, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* realpath of the longest existing prefix of `path`, with the rest appended
   (the rest has no "..": checked lexically before). Caller frees. */
static char *s_resolve_existing_prefix(const char *path)
{
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf)
        return NULL;
    strcpy(buf, path);
    size_t len = strlen(buf);
    for (;;) {
        char *real = realpath(buf, NULL);
        if (real) {
            const char *rest = path + len;
            size_t need = strlen(real) + strlen(rest) + 1;
            char *out = malloc(need);
            if (!out) {
                free(real);
                return NULL;
            }
            snprintf(out, need, "%s%s", real, rest);
            free(real);
            return out;
        }
        char *slash = strrchr(buf, '/');
        if (!slash)
            return NULL;
        if (slash == buf) { /* only "/" left */
            buf[1] = '\0';
            len = 1;
            if (strcmp(path, "/") == 0)
                return NULL;
            continue;
        }
        *slash = '\0';
        len = (size_t)(slash - buf);
    }
}

int sdx_semantic_check_path(const sdx_semantic_t *self, const char *kind, const char *name,
                            char *msg, size_t msg_len)
{
    assert(name && msg);
    size_t n = strlen(name);
    if (n == 0) {
        snprintf(msg, msg_len, "must not be empty");
        return -1;
    }
    if (n >= PATH_MAX / 2) {
        snprintf(msg, msg_len, "path too long (%zu bytes)", n);
        return -1;
    }
    for (const char *p = name; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == '\\') {
            snprintf(msg, msg_len, "must not contain control characters or '\\'");
            return -1;
        }
    }
    /* ".." as a whole component anywhere */
    for (const char *p = name; *p;) {
        const char *e = strchr(p, '/');
        size_t clen = e ? (size_t)(e - p) : strlen(p);
        if (clen == 2 && p[0] == '.' && p[1] == '.') {
            snprintf(msg, msg_len, "must not contain '..' (path traversal): '%s'", name);
            return -1;
        }
        p += clen;
        if (*p == '/')
            p++;
    }
    s_root_t *root = s_find_root(self, kind);
    if (!root) {
        if (name[0] == '/' || name[0] == '~') {
            snprintf(msg, msg_len, "must be a relative name under the %s root, got absolute '%s'",
                     kind ? kind : "configured", name);
            return -1;
        }
        return 0;
    }
    char joined[PATH_MAX];
    if (name[0] == '/')
        snprintf(joined, sizeof joined, "%s", name);
    else
        snprintf(joined, sizeof joined, "%s/%s", root->dir, name);
    /* strip trailing slashes ("outputs/") */
    size_t jl = strlen(joined);
    while (jl > 1 && joined[jl - 1] == '/')
        joined[--jl] = '\0';
    char *resolved = s_resolve_existing_prefix(joined);
    if (!resolved) {
        snprintf(msg, msg_len, "cannot resolve '%s' under the %s root", name, kind);
        return -1;
    }
    bool ok = s_inside(root->dir, resolved);
    if (!ok) {
        if (name[0] == '/')
            snprintf(msg, msg_len, "absolute path '%s' is outside the %s root", name, kind);
        else
            snprintf(msg, msg_len, "'%s' resolves outside the %s root (symlink escape)", name,
                     kind);
    }
    free(resolved);
    return ok ? 0 : -1;
}

int sdx_semantic_check_image(const sdx_semantic_t *self, sdx_value_t **slot, char *msg,
                             size_t msg_len)
{
    assert(slot && *slot && msg);
    size_t limit = sdx_semantic_max_image_bytes(self);
    sdx_value_t *v = *slot;
    if (v->type == SDX_BIN) {
        if (v->u.bin.len == 0) {
            snprintf(msg, msg_len, "image is empty");
            return -1;
        }
        if (limit && v->u.bin.len > limit) {
            snprintf(msg, msg_len, "image is %zu bytes, over the limit of %zu", v->u.bin.len,
                     limit);
            return -1;
        }
        return 0;
    }
    if (v->type != SDX_STR) {
        snprintf(msg, msg_len, "image must be base64 text or bin, got %s", sdx_vtype_name(v->type));
        return -1;
    }
    /* base64 is 4/3 of the bytes: reject early before decoding a huge text */
    if (limit && v->u.str.len / 4 * 3 > limit + 3 && v->u.str.len > 256) {
        size_t approx = v->u.str.len / 4 * 3;
        snprintf(msg, msg_len, "image is about %zu bytes, over the limit of %zu", approx, limit);
        return -1;
    }
    uint8_t *bytes = NULL;
    size_t nbytes = 0;
    if (sdx_base64_decode(v->u.str.ptr, v->u.str.len, &bytes, &nbytes) != 0) {
        snprintf(msg, msg_len, "image is not valid base64 (%zu characters)", v->u.str.len);
        return -1;
    }
    if (nbytes == 0) {
        free(bytes);
        snprintf(msg, msg_len, "image is empty");
        return -1;
    }
    if (limit && nbytes > limit) {
        free(bytes);
        snprintf(msg, msg_len, "image is %zu bytes, over the limit of %zu", nbytes, limit);
        return -1;
    }
    sdx_value_t *bin = sdx_value_bin_take(bytes, nbytes);
    if (!bin) {
        free(bytes);
        snprintf(msg, msg_len, "out of memory");
        return -1;
    }
    sdx_value_destroy(slot);
    *slot = bin;
    return 0;
}

int sdx_semantic_check_pixels(const sdx_semantic_t *self, int64_t width, int64_t height,
                              uint64_t schema_max, char *msg, size_t msg_len)
{
    uint64_t limit = schema_max;
    if (self && self->max_pixels && (limit == 0 || self->max_pixels < limit))
        limit = self->max_pixels;
    if (width <= 0 || height <= 0) {
        snprintf(msg, msg_len, "width and height must be positive, got %lldx%lld", (long long)width,
                 (long long)height);
        return -1;
    }
    uint64_t px = (uint64_t)width * (uint64_t)height;
    if (limit && px > limit) {
        snprintf(msg, msg_len, "width*height must be <= %llu pixels, got %llu (%lldx%lld)",
                 (unsigned long long)limit, (unsigned long long)px, (long long)width,
                 (long long)height);
        return -1;
    }
    return 0;
}
