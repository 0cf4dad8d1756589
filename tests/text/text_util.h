/*  text_util.h - helpers of the text tests: the golden text encoders and
    tokenizers, loaded either straight from the diffusers folder's
    safetensors (always available) or through sdx_model_load in both
    layouts. */
#ifndef TEXT_UTIL_H
#define TEXT_UTIL_H

#include "sdx_clip.h"
#include "sdx_model.h"
#include "sdx_prompt.h"
#include "sdx_test.h"
#include "sdx_tokenizer.h"

/* Both encoders and tokenizers of one way of loading. */
typedef struct {
    const char *label;
    sdx_model_t *model;     /* when loaded through sdx_model_load */
    sdx_weights_t *w1, *w2; /* when loaded directly */
    sdx_clip_config_t cfg1, cfg2;
    sdx_clip_t *te1, *te2;
    sdx_tokenizer_t *tok1, *tok2;
} text_models_t;

/* Layouts to test: index 0 = direct safetensors read of golden/model;
   1 = sdx_model_load(golden/model); 2 = sdx_model_load(single file with
   config_dir golden/model). Returns false for a layout not available in
   this build (the caller reports it as skipped). Failures are counted. */
#define TEXT_LAYOUTS 3
bool text_models_load(text_models_t *m, int layout, sdx_dtype_t dtype);
void text_models_free(text_models_t *m);

#endif
