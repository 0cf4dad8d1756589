/*  sdx_autov2.c - the "Model hash" A1111, ComfyUI extensions and Civitai
    show for a checkpoint: AutoV2, the first 10 hex digits of the SHA-256 of
    the single file (see sdxl.h, sdxl_model_autov2). SHA-256 is libsodium's
    (crypto_hash_sha256), read in 4 MiB blocks; without libsodium in the
    build the hash is "not built" and the text leaves it out.

    A small cache (path, size, mtime) keeps a process from hashing a
    multi-gigabyte file twice: the worker hashes a model once, on its first
    generation, sdxl-gen once per run. The model worker keeps its own
    persistent cache (workers/model_catalog.c) and gives the same digits.
*/
#include "sdxl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef SDX_WITH_SODIUM
#include <sodium.h>
#endif

#define CACHE_N 16

typedef struct {
    char path[4096];
    off_t size;
    struct timespec mtime;
    char autov2[11];
} s_entry_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_entry_t s_cache[CACHE_N];
static unsigned s_next;

int sdxl_model_autov2(const char *path, char out[11])
{
    out[0] = '\0';
    struct stat st;
    if (!path || stat(path, &st) != 0)
        return sdx_set_error("model hash: %s: %s", path ? path : "(null)", strerror(errno));
    if (!S_ISREG(st.st_mode))
        return sdx_set_error("model hash: %s is a folder: AutoV2 is the hash of one file", path);
    pthread_mutex_lock(&s_lock);
    for (unsigned i = 0; i < CACHE_N; i++) {
        const s_entry_t *c = &s_cache[i];
        if (c->autov2[0] && c->size == st.st_size && c->mtime.tv_sec == st.st_mtim.tv_sec &&
            c->mtime.tv_nsec == st.st_mtim.tv_nsec && strcmp(c->path, path) == 0) {
            memcpy(out, c->autov2, 11);
            pthread_mutex_unlock(&s_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&s_lock);
#ifndef SDX_WITH_SODIUM
    return sdx_set_error("model hash: this engine was built without libsodium (SHA-256)");
#else
    if (sodium_init() < 0)
        return sdx_set_error("model hash: libsodium failed to initialise");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sdx_set_error("model hash: %s: %s", path, strerror(errno));
    size_t blk = (size_t)4 << 20;
    unsigned char *buf = malloc(blk);
    if (!buf) {
        close(fd);
        return sdx_set_error("model hash: out of memory");
    }
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, buf, blk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = sdx_set_error("model hash: %s: %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        crypto_hash_sha256_update(&h, buf, (unsigned long long)n);
    }
    free(buf);
    close(fd);
    if (rc != 0)
        return rc;
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&h, d);
    for (int i = 0; i < 5; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    pthread_mutex_lock(&s_lock);
    s_entry_t *c = &s_cache[s_next++ % CACHE_N];
    snprintf(c->path, sizeof c->path, "%s", path);
    c->size = st.st_size;
    c->mtime = st.st_mtim;
    memcpy(c->autov2, out, 11);
    pthread_mutex_unlock(&s_lock);
    return 0;
#endif
}
