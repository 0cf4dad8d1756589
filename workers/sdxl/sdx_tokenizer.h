/*  sdx_tokenizer.h - CLIP byte-level BPE tokenizer (SDXL's tokenizer and
    tokenizer_2), bit-exact with transformers' slow CLIPTokenizer as diffusers
    uses it when ftfy is not installed:

      1. added tokens (BOS, EOS, UNK, PAD and tokens registered later, e.g. by
         textual inversion) are cut out of the raw text first, with
         transformers' Trie.split semantics;
      2. every other span is cleaned like BasicTokenizer(strip_accents=False,
         do_split_on_punc=False): NUL/U+FFFD/control characters dropped,
         whitespace folded, spaces around CJK ideographs, NFC, str.split(),
         str.lower() (accents kept), joined by single spaces;
      3. split with the CLIP regex
         <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
         (IGNORECASE), each piece byte-encoded and BPE'd with "</w>" on its last
         symbol; unknown BPE tokens map to UNK.
    ftfy's fix_text and HTML unescaping are NOT applied (the reference
    environment had no ftfy, so neither did the references).

    Not for: embeddings (sdx_clip.h) or prompt weighting syntax; "(cat:1.2)"
    is plain text here, exactly as in diffusers.

    A tokenizer is immutable while it tokenizes: concurrent sdx_tokenizer_*
    read calls on one object are safe; sdx_tokenizer_add_token and
    sdx_tokenizer_set_pad_id must not race with them.
*/
#ifndef SDX_TOKENIZER_H
#define SDX_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CLIP's context length (tokenizer.model_max_length): BOS + 75 + EOS. */
#define SDX_CLIP_MAX_LENGTH 77

typedef struct sdx_tokenizer sdx_tokenizer_t;

/* Load a diffusers tokenizer folder: vocab.json and merges.txt, plus, when
   present, tokenizer_config.json / special_tokens_map.json for bos/eos/unk/
   pad tokens and added_tokens_decoder (SDXL's tokenizer_2 pads with "!",
   id 0, which then is an added special token: a "!" typed in a prompt
   becomes id 0, not BPE's "!</w>" = 256). Without those files the defaults
   are CLIPTokenizer's: bos <|startoftext|>, eos = unk = pad = <|endoftext|>.
   NULL on failure with the reason in sdx_last_error(). Caller owns the
   result and destroys it. */
sdx_tokenizer_t *sdx_tokenizer_load(const char *dir);
/* The same from explicit file paths, with CLIPTokenizer's defaults. */
sdx_tokenizer_t *sdx_tokenizer_new(const char *vocab_json, const char *merges_txt);
/* The standard CLIP vocabulary and merges shipped inside the engine
   (workers/sdxl/data/, MIT, from openai/CLIP): which = 1 is SDXL's
   tokenizer (pads with <|endoftext|>), 2 is tokenizer_2 (pads with "!",
   id 0, as its special_tokens_map.json says). For checkpoints that ship no
   tokenizer folder (every single file). Caller destroys. */
sdx_tokenizer_t *sdx_tokenizer_builtin(int which);
void sdx_tokenizer_destroy(sdx_tokenizer_t **t);

/* Make vocabulary entry `id` the padding token. Like transformers, the pad
   token string becomes an added special token (matched before BPE). */
int sdx_tokenizer_set_pad_id(sdx_tokenizer_t *t, int32_t id);

/* Register an added token (textual inversion): it is cut out of the text
   before clean-up and BPE, case-sensitively, like transformers'
   tokenizer.add_tokens(). A new string gets id sdx_tokenizer_size() (49408,
   49409, ... for CLIP); a string already known keeps its id. *id (may be
   NULL) receives the id. special only marks it (as in added_tokens_decoder);
   it changes no matching. */
int sdx_tokenizer_add_token(sdx_tokenizer_t *t, const char *text, bool special, int32_t *id);

/* Forget every added token with id >= size (textual inversion removed):
   len(tokenizer) becomes size again. Only tokens added past the
   vocabulary can go; ids below size are untouched. */
int sdx_tokenizer_truncate(sdx_tokenizer_t *t, int32_t size);

int32_t sdx_tokenizer_bos_id(const sdx_tokenizer_t *t);
int32_t sdx_tokenizer_eos_id(const sdx_tokenizer_t *t);
int32_t sdx_tokenizer_pad_id(const sdx_tokenizer_t *t);
int32_t sdx_tokenizer_unk_id(const sdx_tokenizer_t *t);
/* len(tokenizer): distinct strings in vocabulary + added tokens. */
int32_t sdx_tokenizer_size(const sdx_tokenizer_t *t);
/* Id of a token string (added tokens first, then the vocabulary); -1 if
   unknown. */
int32_t sdx_tokenizer_token_to_id(const sdx_tokenizer_t *t, const char *token);
/* Token string of an id (e.g. "photo</w>"); NULL if unknown. Borrowed. */
const char *sdx_tokenizer_id_to_token(const sdx_tokenizer_t *t, int32_t id);

/* tok.tokenize(text) as ids: no BOS/EOS, no truncation. text is UTF-8
   (invalid UTF-8 fails). *ids is malloc'd (caller frees; non-NULL even when
   *n == 0). */
int sdx_tokenizer_tokenize(const sdx_tokenizer_t *t, const char *text, int32_t **ids, size_t *n);

/* tok(text, padding="max_length", max_length=max_length, truncation=True):
   BOS + the first max_length-2 token ids + EOS, then the pad id up to
   max_length. ids has room for max_length entries (>= 2). Optional outputs:
   *n_real = BOS..EOS count written before padding (the attention mask's
   ones); *n_untruncated = length of tok(text).input_ids without truncation
   (BOS + all tokens + EOS), so callers can warn or chunk. */
int sdx_tokenizer_encode(const sdx_tokenizer_t *t, const char *text, int64_t *ids, int max_length,
                         int *n_real, size_t *n_untruncated);

/* BOS + every token id + EOS (tok(text).input_ids). *ids malloc'd, caller
   frees. */
int sdx_tokenizer_encode_untruncated(const sdx_tokenizer_t *t, const char *text, int64_t **ids,
                                     size_t *n);

/* BasicTokenizer's clean-up alone (steps 2 of the header comment) as UTF-8:
   " ".join(BasicTokenizer(...).tokenize(text)). Caller frees. For tests and
   debugging. */
char *sdx_tokenizer_clean_text(const char *text);

#endif
