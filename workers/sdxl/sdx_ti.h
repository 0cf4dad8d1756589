/*  sdx_ti.h - textual inversion for SDXL: embedding files (clip_l/clip_g
    tensors [n, H1|H2]) registered as added tokens in both tokenizers and
    appended as rows to both token-embedding tables, hot (the tables come
    back exactly when removed), and diffusers' maybe_convert_prompt for
    multi-vector embeddings. Not for the prompt logic itself (sdx_prompt.h).
*/
#ifndef SDX_TI_H
#define SDX_TI_H

#include "sdx_clip.h"
#include "sdx_model.h"
#include "sdx_tokenizer.h"

/* One embedding: a file and the token it is called by in prompts. */
typedef struct {
    const char *path;
    const char *token;
} sdx_ti_spec_t;

typedef struct sdx_ti_state sdx_ti_state_t;

/* Caller owns the result (sdx_ti_state_free). NULL on allocation failure. */
sdx_ti_state_t *sdx_ti_state_new(void);
void sdx_ti_state_free(sdx_ti_state_t **st);

/* Replace the loaded set by list[0..n) (n = 0 removes all). The same set
   (paths and tokens) is a no-op. Files are read and checked first: a file
   without both clip_l and clip_g (SD1.x), widths that do not match the
   encoders, or a token already in the vocabulary return -1 and leave
   everything as it was. te1 and te2 are rebound to the new tables. */
int sdx_ti_state_set(sdx_ti_state_t *st, sdx_model_t *m, sdx_clip_t **te1, sdx_clip_t **te2,
                     sdx_tokenizer_t *tok1, sdx_tokenizer_t *tok2, const sdx_ti_spec_t *list,
                     int n);

/* maybe_convert_prompt: every "<tok>" of a k-vector embedding becomes
   "<tok> <tok>_1 ... <tok>_{k-1}". Caller frees the result; NULL for a
   NULL prompt or on allocation failure. */
char *sdx_ti_convert_prompt(const sdx_ti_state_t *st, const char *prompt);

#endif
