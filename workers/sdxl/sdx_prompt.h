/*  sdx_prompt.h - SDXL prompt encoding, as diffusers 0.27.2's
    StableDiffusionXLPipeline.encode_prompt (do_classifier_free_guidance,
    no precomputed embeddings, no LoRA scale).

      prompt_embeds = cat([te1.hidden_states[-(k)], te2.hidden_states[-(k)]], -1)
                      with k = 2 + clip_skip                          [N, 77, H1+H2]
      pooled        = te2.text_embeds (final layer, argmax pooling)   [N, P]
      negatives     = the same for the negative prompt, ALWAYS from
                      hidden_states[-2] (diffusers ignores clip_skip there),
                      or exactly zeros when negative is NULL (None) and
                      force_zeros_for_empty_prompt (SDXL base's default);
                      "" is encoded like any prompt (BOS EOS + padding).
      N = batch_size * num_images_per_prompt, rows [p0 x n, p1 x n, ...].

    prompt_2 / negative_2 feed tokenizer_2 + text_encoder_2 only; NULL means
    "same as prompt / negative" (diffusers' `prompt_2 or prompt`: callers
    translating diffusers' string form should pass NULL for ""). Without
    text_encoder (refiner: te1 == NULL) the embeddings are te2's alone and
    te2 gets `prompt`, as diffusers' zip() does. Prompts longer than 75
    tokens are truncated (diffusers does not chunk); `truncated` reports it.

    Positive and negative prompts go through each encoder in one batched
    forward; identical token rows are encoded once. Textual-inversion prompt
    rewriting ("<tok>" -> "<tok> <tok>_1") is the caller's business; the
    tokenizers only need the added tokens registered.
*/
#ifndef SDX_PROMPT_H
#define SDX_PROMPT_H

#include "sdx_clip.h"
#include "sdx_tokenizer.h"
#include "sdx_torch.h"

#include <stdbool.h>

/* The text side of a model; everything borrowed. te1/tok1 NULL for the
   refiner. */
typedef struct {
    const sdx_clip_t *te1;
    const sdx_tokenizer_t *tok1;
    const sdx_clip_t *te2;
    const sdx_tokenizer_t *tok2;
} sdx_text_encoders_t;

typedef struct {
    const char *const *prompt;         /* batch_size prompts (required) */
    const char *const *prompt_2;       /* batch_size or NULL (= prompt) */
    const char *const *negative;       /* batch_size or NULL (= None) */
    const char *const *negative_2;     /* batch_size or NULL (= negative) */
    int batch_size;                    /* >= 1 */
    int num_images_per_prompt;         /* >= 1 */
    int clip_skip;                     /* 0 = None; k skips k more layers */
    bool do_cfg;                       /* produce the negative tensors */
    bool force_zeros_for_empty_prompt; /* model_index.json (true for SDXL base) */
} sdx_prompt_params_t;

/* Defaults: batch_size 1, num_images_per_prompt 1, clip_skip 0, do_cfg
   true, force_zeros_for_empty_prompt true, all prompts NULL. */
void sdx_prompt_params_init(sdx_prompt_params_t *p);

/* Results, all owned by the caller (sdx_prompt_embeds_free). Dtype and
   device of text_encoder_2. The negative tensors are NULL without CFG. */
typedef struct {
    sdx_tensor_t *prompt_embeds;                 /* [N, 77, H1+H2] */
    sdx_tensor_t *negative_prompt_embeds;        /* [N, 77, H1+H2] */
    sdx_tensor_t *pooled_prompt_embeds;          /* [N, P] */
    sdx_tensor_t *negative_pooled_prompt_embeds; /* [N, P] */
    bool truncated; /* some prompt had more than 75 tokens and was cut */
} sdx_prompt_embeds_t;

/* Encode. 0, or -1 with sdx_last_error() and *out left empty. */
int sdx_prompt_encode(const sdx_text_encoders_t *te, const sdx_prompt_params_t *p,
                      sdx_prompt_embeds_t *out);
/* Free the four tensors and zero *e. */
void sdx_prompt_embeds_free(sdx_prompt_embeds_t *e);

#endif
