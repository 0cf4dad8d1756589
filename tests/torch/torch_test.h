/*  torch_test.h - helpers for the shim's own tests (tests/torch).

    The shim's tests do not use tests/engine_util: those helpers link the whole
    engine (the safetensors loader among others), and the shim must be testable
    on its own while the engine is being written. What is here: a pass/fail
    tally printing the closing "N passed, N failed" line, comparisons of a
    tensor against expected values, and a minimal read-only safetensors reader
    for the golden files (u64 LE header length, JSON header, raw data). */
#ifndef TORCH_TEST_H
#define TORCH_TEST_H

#include "sdx_torch.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Record a check; prints "ok   <what>" or "FAIL <what>". Returns cond. */
bool tt_check(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "N passed, N failed"; returns the exit code (0 if none failed). */
int tt_done(void);
/* Exit 77 (meson SKIP) with a reason. */
void tt_skip(const char *why) __attribute__((noreturn));
/* Check a shim call returned 0; on failure prints sdx_last_error(). */
#define TT_OK(call) tt_ok((call), #call)
bool tt_ok(int rc, const char *expr);

/* Max |t - expect| over n values (t converted to f64; shape not checked,
   numel must equal n, else +inf). */
double tt_max_abs(const sdx_tensor_t *t, const double *expect, int64_t n);
/* Check t's shape equals shape[0..ndim-1] and its values are within tol of
   expect. */
bool tt_values(const sdx_tensor_t *t, const int64_t *shape, int ndim, const double *expect,
               double tol, const char *what);
/* max |a - b| (f64); +inf if shapes differ. */
double tt_diff(const sdx_tensor_t *a, const sdx_tensor_t *b);
/* Tensor from a float list (f32, CPU). */
sdx_tensor_t *tt_f32(sdx_scope_t *S, const float *v, const int64_t *shape, int ndim);

/* ---- minimal safetensors reader (golden data) */
typedef struct tt_st tt_st_t;
/* Golden folder: SDXL_GOLDEN_DIR, else SDXL_GOLDEN_DIR_DEFAULT; NULL if absent. */
const char *tt_golden(void);
/* Open golden/rel; NULL if the file does not exist (the caller decides to skip). */
tt_st_t *tt_st_open(const char *rel);
void tt_st_close(tt_st_t **st);
/* Copy of tensor `name` as a CPU tensor owned by S (or the caller if S is
   NULL); NULL if missing. */
sdx_tensor_t *tt_st_get(tt_st_t *st, sdx_scope_t *S, const char *name);
/* Whether `name` is in the file. */
bool tt_st_has(tt_st_t *st, const char *name);
/* Integer value of a top-level key of a JSON file under golden/ (e.g.
   schedulers.json "step_seed"); false if not found. */
bool tt_json_int(const char *rel, const char *key, int64_t *out);

#endif
