/*  out_save.h - writing results under a worker's outputs root: a request's
    save_path resolved and confined to the root (no "..", no absolute path
    elsewhere, no symlink leading out), atomic writes (temporary file in the
    same folder, fsync, rename: a reader never sees half a file) and the
    SHA-256 the reply carries. Used by the postprocessing domain and the
    broker (batch outputs).
    Not for: choosing what to write (the handlers). */
#ifndef OUT_SAVE_H
#define OUT_SAVE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

/* save_path -> count file paths under root (made when missing). A
   save_path ending in '/' (or naming an existing folder) is a folder: the
   files are <base>[-i]<ext> in it; otherwise it names the file (with -i
   before the extension for count > 1, and ext added when it has none; an
   extension other than ext is refused). An existing file of that name is
   replaced (atomically), as a re-run of the same request expects.
   0, or -1 with the reason in err (the field is save_path). */
int out_save_paths(const char *root, const char *save_path, const char *base, const char *ext,
                   int count, char (*paths)[PATH_MAX], char *err, size_t err_len);

/* Write len bytes to path atomically (temp + fsync + rename; the temporary
   is created with O_EXCL|O_NOFOLLOW). 0, or -1 with errno's text in err. */
int out_save_atomic(const char *path, const void *buf, size_t len, char *err, size_t err_len);
/* On failure both leave errno as the failing call set it (ENOSPC, ...), the
   temp file removed. */
/* The same, with the fsync only when sync: without it a reader still never
   sees half a file and a killed process loses nothing, but a power cut may
   lose the file (for data whose index is no more durable either, such as
   the orchestrator's step results next to its synchronous=NORMAL SQLite). */
int out_save_atomic_ex(const char *path, const void *buf, size_t len, bool sync, char *err,
                       size_t err_len);

/* Lowercase hex SHA-256 of buf (libsodium). */
void out_sha256_hex(const void *buf, size_t len, char out[65]);

/* mkdir -p. 0 / -1 with errno. */
int out_mkdirs(const char *dir);

#endif
