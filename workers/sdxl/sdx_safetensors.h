/*  sdx_safetensors.h - read (mmap) and write .safetensors files.

    The reader maps the file read-only, validates the whole header before any
    tensor is touched (offsets inside the data area, no overlaps, known dtypes,
    byte sizes that match shapes, a sane header length) and hands out borrowed
    views of the mapped bytes. It never reads outside the mapping, whatever the
    file holds. It knows nothing of SDXL.
*/
#ifndef SDX_SAFETENSORS_H
#define SDX_SAFETENSORS_H

#include "sdx_torch.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sdx_safetensors sdx_safetensors_t;

/* One tensor of a file. All pointers are borrowed from the open file. */
/* How a tensor's bytes are stored when that differs from its dtype. */
typedef enum {
    SDX_ST_NATIVE = 0,  /* bytes are `dtype` */
    SDX_ST_F8_E4M3,     /* 1-byte float8 e4m3fn (no inf; 0x7f/0xff NaN) */
    SDX_ST_F8_E5M2,     /* 1-byte float8 e5m2 (IEEE-like, inf and NaN) */
} sdx_st_storage_t;

typedef struct {
    const char *name;
    sdx_dtype_t dtype;   /* SDX_F32, SDX_F16, SDX_BF16, SDX_I64, ...; SDX_F32 for
                            float8 storage (libtorch 1.13 has no fp8: the reader
                            upcasts those bytes to f32 in C) */
    sdx_st_storage_t storage;
    const char *st_dtype; /* the dtype string as written ("F32", "BF16", ...) */
    int ndim;
    int64_t shape[SDX_MAX_DIMS];
    const void *data; /* inside the mapping */
    size_t nbytes;
} sdx_st_tensor_t;

/* Map and validate `path`. NULL on failure, with the reason in
   sdx_last_error() (e.g. "model.safetensors: tensor 'x': data_offsets end
   9000 beyond data size 8000"). Caller owns the result. */
sdx_safetensors_t *sdx_safetensors_open(const char *path);
void sdx_safetensors_close(sdx_safetensors_t **st);
/* Validate a whole file image held in memory (8-byte length, header, data)
   and open a private copy of it; `label` names it in errors (may be NULL).
   Same checks and API as a file. NULL on failure. Caller owns the result. */
sdx_safetensors_t *sdx_safetensors_open_memory(const void *buf, size_t len, const char *label);

size_t sdx_safetensors_count(const sdx_safetensors_t *st);
/* i-th tensor in file order (sorted by data offset); NULL if out of range. */
const sdx_st_tensor_t *sdx_safetensors_at(const sdx_safetensors_t *st, size_t i);
/* Tensor by name, NULL if absent. */
const sdx_st_tensor_t *sdx_safetensors_find(const sdx_safetensors_t *st, const char *name);
/* Value of a "__metadata__" string entry, NULL if absent. Borrowed. */
const char *sdx_safetensors_metadata(const sdx_safetensors_t *st, const char *key);
const char *sdx_safetensors_path(const sdx_safetensors_t *st);

/* A CPU tensor that borrows the mapped bytes (no copy); for float8 storage
   a new f32 tensor converted in C (a copy, the mapping is not kept). The file mapping is
   kept alive until the returned tensor (and every view of it) is freed, even
   if `st` is closed first. Ownership as for every shim output. */
int sdx_safetensors_tensor(sdx_scope_t *S, sdx_tensor_t **out, sdx_safetensors_t *st,
                           const sdx_st_tensor_t *info);
/* Convenience: find by name + sdx_safetensors_tensor; fails naming the
   missing tensor. */
int sdx_safetensors_get(sdx_scope_t *S, sdx_tensor_t **out, sdx_safetensors_t *st,
                        const char *name);

/* Validate a header buffer (the bytes after the 8-byte length) against a
   data area of `data_size` bytes, without a file. For the fuzz target and
   tests. Returns 0 if the header is acceptable, -1 with sdx_last_error(). */
/* One float8 byte as a float (exact: every fp8 value is a float). */
float sdx_f8_e4m3_to_f32(unsigned char b);
float sdx_f8_e5m2_to_f32(unsigned char b);

int sdx_safetensors_check_header(const char *json, size_t json_len, uint64_t data_size);

/* Write `n` tensors (moved to CPU, contiguous) to `path` with optional
   metadata pairs (meta_kv = {"k1","v1","k2","v2",...,NULL}). */
int sdx_safetensors_write(const char *path, const char *const *names,
                          sdx_tensor_t *const *tensors, size_t n, const char *const *meta_kv);

#endif
