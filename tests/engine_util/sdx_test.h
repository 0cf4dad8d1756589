/*  sdx_test.h - helpers for the engine's tests: golden data lookup, reference
    tensors and weight sets, whole-file reads, relative L2 error, and a
    pass/fail tally that prints the closing line CI reads ("N passed, N
    failed").

    Skips: a test whose golden data is missing calls sdx_test_skip(), which
    exits 77 (meson reports SKIP). */
#ifndef SDX_TEST_H
#define SDX_TEST_H

#include "sdx_image.h"
#include "sdx_model.h"
#include "sdx_safetensors.h"
#include "sdx_torch.h"

#include <stdbool.h>
#include <stddef.h>

/* The golden folder: env SDXL_GOLDEN_DIR when set, else
   SDXL_GOLDEN_DIR_DEFAULT (what meson configured); NULL if it is not there. */
const char *sdx_test_golden(void);
/* golden/rel into a static buffer; exits 77 if golden data is absent. */
const char *sdx_test_path(const char *rel);
/* Open golden/rel (a .safetensors); exits 77 if absent, fails the test if
   it cannot be read. Caller closes. */
sdx_safetensors_t *sdx_test_open(const char *rel);
/* Copy of a reference tensor (CPU, owned by the caller); NULL + failure
   counted if missing. */
sdx_tensor_t *sdx_test_get(sdx_safetensors_t *st, const char *name);
/* Every tensor of golden/rel (a .safetensors) in a new weight set, each
   converted to dt (SDX_DTYPE_COUNT: as stored). Exits 77 if the file is
   absent (sdx_test_open). NULL on failure; when reading or converting a
   tensor failed, the reason is in err (left "" otherwise) and nothing is
   counted: the caller reports it its own way. Caller frees the set. */
sdx_weights_t *sdx_test_weights(const char *rel, sdx_dtype_t dt, char *err, size_t err_len);
/* ||a-b|| / ||b|| computed in float64 on the CPU; +inf on shape mismatch. */
double sdx_test_rel_l2(const sdx_tensor_t *a, const sdx_tensor_t *b);
/* max |a-b| in float64. */
double sdx_test_max_abs(const sdx_tensor_t *a, const sdx_tensor_t *b);

/* Record a check; prints "ok   <what>" or "FAIL <what>". Returns cond. */
bool sdx_test_check(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Check rel_l2(a, b) <= tol, printing the figure. */
bool sdx_test_close(const sdx_tensor_t *a, const sdx_tensor_t *b, double tol, const char *what);
/* The whole file at path in a malloc'd, NUL-terminated buffer the caller
   frees, its length (without the NUL) in *len if len is not NULL; NULL if
   it cannot be read. Counts nothing: the caller decides whether a missing
   file skips or fails. */
char *sdx_test_read_file(const char *path, size_t *len);
/* Exit 77 with a reason. */
void sdx_test_skip(const char *why) __attribute__((noreturn));
/* Print "N passed, N failed" and return the exit code (0 if none failed). */
int sdx_test_done(void);

/* Fraction of a golden image_np's values within 1/255 of ours: decoded
   [B,3,H,W] -> clamp(x/2+0.5, 0, 1) NHWC, as diffusers' postprocess does
   (-1 when the sizes differ or decoded is NULL). */
double sdx_test_pixel_match(const sdx_tensor_t *decoded, const sdx_tensor_t *ref_np);
/* Fraction of 8-bit image values within one level of round(image_np*255). */
double sdx_test_uint8_match(const sdx_image_t *imgs, int count, const sdx_tensor_t *ref_np);

#endif
