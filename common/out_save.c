/*  out_save.c - confined, atomic result files. See out_save.h. */
#include "out_save.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

int out_mkdirs(const char *dir)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static bool s_inside(const char *path, const char *root)
{
    size_t rl = strlen(root);
    return strncmp(path, root, rl) == 0 && (path[rl] == '/' || path[rl] == '\0');
}

int out_save_paths(const char *root_in, const char *sp, const char *base_in, const char *ext_in,
                   int count, char (*paths)[PATH_MAX], char *err, size_t err_len)
{
    char root[PATH_MAX];
    if (out_mkdirs(root_in) != 0 || !realpath(root_in, root)) {
        snprintf(err, err_len, "the worker's outputs root %s cannot be created: %s", root_in,
                 strerror(errno));
        return -1;
    }
    const char *rel = sp;
    if (sp[0] == '/') {
        if (!s_inside(sp, root)) {
            snprintf(err, err_len, "save_path %s is outside the outputs root", sp);
            return -1;
        }
        rel = sp + strlen(root);
        while (*rel == '/')
            rel++;
    }
    for (const char *p = rel; *p;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if ((len == 2 && p[0] == '.' && p[1] == '.') || memchr(p, '\\', len)) {
            snprintf(err, err_len, "save_path must stay inside the outputs root (no '..')");
            return -1;
        }
        if (!slash)
            break;
        p = slash + 1;
    }
    char full[PATH_MAX];
    if (snprintf(full, sizeof full, "%s/%s", root, rel) >= (int)sizeof full) {
        snprintf(err, err_len, "save_path is too long");
        return -1;
    }
    struct stat sb;
    size_t fl = strlen(full);
    bool is_dir = full[fl - 1] == '/' || (stat(full, &sb) == 0 && S_ISDIR(sb.st_mode));
    char dir[PATH_MAX], base[256], ext[16];
    if (is_dir) {
        snprintf(dir, sizeof dir, "%s", full);
        size_t k = 0;
        for (const char *c = base_in; *c && k < sizeof base - 1; c++)
            base[k++] = (char)((*c == '/' || *c == '\\' || (unsigned char)*c < 0x20) ? '_' : *c);
        base[k] = '\0';
        if (base[0] == '.')
            base[0] = '_';
        snprintf(ext, sizeof ext, "%s", ext_in);
    } else {
        char *slash = strrchr(full, '/');
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - full), full);
        const char *name = slash + 1;
        const char *dot = strrchr(name, '.');
        if (dot && dot != name && strlen(dot) < sizeof ext) {
            /* the name's extension must be the format's (.jpg and .jpeg alike) */
            bool jpg = (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0) &&
                       (strcasecmp(ext_in, ".jpg") == 0 || strcasecmp(ext_in, ".jpeg") == 0);
            if (!jpg && strcasecmp(dot, ext_in) != 0) {
                snprintf(err, err_len, "save_path ends in %s but the image is %s", dot, ext_in);
                return -1;
            }
            snprintf(base, sizeof base, "%.*s", (int)(dot - name), name);
            snprintf(ext, sizeof ext, "%s", dot);
        } else {
            snprintf(base, sizeof base, "%s", name);
            snprintf(ext, sizeof ext, "%s", ext_in);
        }
    }
    /* the deepest folder that exists must already be inside the root:
       nothing is made through a symlink that leads out */
    char probe[PATH_MAX], probe_real[PATH_MAX];
    snprintf(probe, sizeof probe, "%s", dir);
    struct stat pb;
    while (stat(probe, &pb) != 0) {
        char *sl = strrchr(probe, '/');
        if (!sl || sl == probe)
            break;
        *sl = '\0';
    }
    if (!realpath(probe, probe_real) || !s_inside(probe_real, root)) {
        snprintf(err, err_len, "save_path leads outside the outputs root (symlink)");
        return -1;
    }
    char dir_real[PATH_MAX];
    if (out_mkdirs(dir) != 0 || !realpath(dir, dir_real)) {
        snprintf(err, err_len, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!s_inside(dir_real, root)) {
        snprintf(err, err_len, "save_path leads outside the outputs root (symlink)");
        return -1;
    }
    for (int i = 0; i < count; i++) {
        int n = count == 1 ? snprintf(paths[i], PATH_MAX, "%s/%s%s", dir_real, base, ext)
                           : snprintf(paths[i], PATH_MAX, "%s/%s-%d%s", dir_real, base, i, ext);
        if (n >= PATH_MAX) {
            snprintf(err, err_len, "save_path is too long");
            return -1;
        }
    }
    return 0;
}

int out_save_atomic(const char *path, const void *buf, size_t len, char *err, size_t err_len)
{
    return out_save_atomic_ex(path, buf, len, true, err, err_len);
}

int out_save_atomic_ex(const char *path, const void *buf, size_t len, bool sync, char *err,
                       size_t err_len)
{
    char tmp[PATH_MAX];
    static unsigned counter;
    int fd = -1;
    for (int tries = 0; tries < 16 && fd < 0; tries++) {
        if (snprintf(tmp, sizeof tmp, "%s.tmp-%d-%u", path, (int)getpid(),
                     __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED)) >= (int)sizeof tmp) {
            snprintf(err, err_len, "path too long");
            return -1;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        snprintf(err, err_len, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    const uint8_t *p = buf;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, p + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        off += (size_t)n;
    }
    if (sync && fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    return 0;
fail:;
    int e = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    snprintf(err, err_len, "cannot write %s: %s", path, strerror(e));
    errno = e; /* for sdx_error_for_errno() */
    return -1;
}

void out_sha256_hex(const void *buf, size_t len, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, buf, len);
    for (size_t i = 0; i < sizeof h; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}
