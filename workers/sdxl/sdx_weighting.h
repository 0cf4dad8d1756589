/*  sdx_weighting.h - prompt weighting and long prompts in AUTOMATIC1111's
    manner (modules/prompt_parser.py parse_prompt_attention and
    modules/sd_hijack_clip.py), the engine's prompt_attention "a1111".

    Syntax: (x) multiplies x's weight by 1.1, [x] by 1/1.1, (x:1.3) by 1.3;
    brackets nest (their factors multiply); \( \) \[ \] \\ are the literal
    characters and a lone \ is dropped; ) or ] without an opening bracket is
    plain text, as is ":w" in (x:w) when w is no number ("1.2.3"; A1111
    raises there), whose ")" then closes with 1.1; brackets still open at
    the end apply to the rest of the prompt. BREAK (upper case, a whole
    word; the spaces around it are dropped) ends the current chunk. Unlike
    A1111, a BREAK inside brackets still breaks (A1111 multiplies its -1
    marker and then types the word "BREAK" with a negative weight).
    Non-ASCII bytes count as word characters for BREAK's word boundary.

    Tokens: every segment is tokenized on its own (sdx_tokenizer_tokenize)
    and its tokens carry its weight. Chunks hold 75 tokens; each becomes
    BOS + tokens + EOS + the tokenizer's pad id up to 77, BOS/EOS/pad with
    weight 1. A full chunk moves the tokens after a comma among its last 20
    into the next chunk (A1111's comma_padding_backtrack default 20). An
    empty prompt, or a BREAK with nothing since the last one, gives an empty
    chunk (BOS EOS pad...).

    Embeddings (sdx_weighting_encode): each chunk goes through each encoder
    with today's layer rules (positives hidden_states[-(2 + clip_skip)],
    negatives [-2]); per encoder, per prompt and per chunk z = z * w and
    then z *= mean(z_before) / mean(z * w) (A1111's "Original" emphasis;
    A1111 takes the mean over its whole batch of prompts, here over one
    prompt's chunk, the same when the batch repeats one prompt). Chunks are
    concatenated along the sequence: [N, 77 * k, H1 + H2]. pooled_prompt_
    embeds is text_encoder_2's from the FIRST chunk (A1111's zs[0].pooled).
    Positive and negative prompts, and both tokenizers, are padded to the
    largest chunk count k with empty chunks (A1111's pad_cond_uncond
    behaviour; its default instead runs cond and uncond unpadded in separate
    UNet calls, which this pipeline's single CFG batch cannot). A negative of
    NULL with force_zeros_for_empty_prompt is exact zeros of the positive's
    shape. Nothing is truncated (out->truncated stays false); more than
    SDX_WEIGHTING_MAX_CHUNKS chunks is an error.

    Not for: compel syntax, A1111's prompt editing [a:b:step] and
    alternation [a|b] (their brackets are read as weights here, as
    parse_prompt_attention alone would), textual-inversion lookup (the
    tokenizers' added tokens do that), the "old emphasis" implementation.
*/
#ifndef SDX_WEIGHTING_H
#define SDX_WEIGHTING_H

#include "sdx_prompt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SDX_WEIGHTING_CHUNK 75      /* tokens per chunk between BOS and EOS */
#define SDX_WEIGHTING_MAX_CHUNKS 64 /* 4800 tokens */

/* One parsed piece: text with its weight, or a BREAK (text "", weight 1). */
typedef struct {
    char *text;
    double weight;
    bool is_break;
} sdx_weight_segment_t;

/* A1111's parse_prompt_attention (see above): *segs (n of them, at least 1;
   adjacent non-BREAK pieces of equal weight merged) is the caller's, freed
   with sdx_weight_segments_free. 0, or -1 on out of memory. */
int sdx_weighting_parse(const char *prompt, sdx_weight_segment_t **segs, size_t *n);
void sdx_weight_segments_free(sdx_weight_segment_t **segs, size_t n);

/* Token ids and weights of a prompt for one tokenizer, n_chunks * 77 of
   each, chunk after chunk. Owned by whoever called sdx_weighting_tokenize;
   sdx_weighted_tokens_free releases. */
typedef struct {
    int64_t *ids;
    float *weights;
    int n_chunks;
} sdx_weighted_tokens_t;

/* Parse and tokenize prompt with tok into *out (zeroed first). 0, or -1 with
   sdx_last_error() (invalid UTF-8, out of memory, too many chunks). */
int sdx_weighting_tokenize(const sdx_tokenizer_t *tok, const char *prompt,
                           sdx_weighted_tokens_t *out);
/* Append empty chunks (BOS EOS pad..., weight 1) up to n_chunks. */
int sdx_weighting_pad(const sdx_tokenizer_t *tok, sdx_weighted_tokens_t *t, int n_chunks);
void sdx_weighted_tokens_free(sdx_weighted_tokens_t *t);

/* A1111's emphasis on hidden states z [R, T, H] with weights w [R, T] (any
   dtype/device; moved to z's): z * w rescaled so each row's mean over T and
   H is z's. *out is new (in S, or the caller's when S is NULL). */
int sdx_weighting_apply(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *z,
                        const sdx_tensor_t *w);

/* sdx_prompt_encode with A1111 weighting and chunking (see above); the same
   parameters, results and ownership, with [N, 77 * k, H1 + H2] embeddings. */
int sdx_weighting_encode(const sdx_text_encoders_t *te, const sdx_prompt_params_t *p,
                         sdx_prompt_embeds_t *out);

#endif
