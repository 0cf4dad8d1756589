/*  fuzz_tokenizer.c - libFuzzer target for prompt text: the CLIP tokenizer
    (workers/sdxl/sdx_tokenizer.c with the built-in vocabulary of
    sdx_clip_bpe.c and the Unicode tables) and A1111's prompt-weighting
    parser (sdx_weighting.c: weights, brackets, escapes, BREAK, chunking).
    Both built-in tokenizers (tokenizer pads with <|endoftext|>, tokenizer_2
    with "!") get two textual-inversion tokens, "<cat-toy>" and
    "<cat-toy>_1", as a loaded embedding adds them. The input is the prompt
    (a NUL in it ends it, as it would in a request's string):
    tokenize, encode (77, truncated), encode_untruncated, clean_text,
    weighting_parse and weighting_tokenize, with their invariants checked
    (BOS/EOS/pad placement, ids in range, chunks of 77, weights finite).
    Invalid UTF-8 must fail cleanly. Seeds: tests/fuzz/corpus/tokenizer,
    regressions: tests/fuzz/regressions/tokenizer. */
#include "sdx_tokenizer.h"
#include "sdx_weighting.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sdx_tokenizer_t *s_tok[2];

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_tokenizer: %s:%d: %s\n", __FILE__, __LINE__, #c);                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void s_init(void)
{
    for (int i = 0; i < 2; i++) {
        s_tok[i] = sdx_tokenizer_builtin(i + 1);
        CHECK(s_tok[i]);
        CHECK(sdx_tokenizer_add_token(s_tok[i], "<cat-toy>", false, NULL) == 0);
        CHECK(sdx_tokenizer_add_token(s_tok[i], "<cat-toy>_1", false, NULL) == 0);
    }
}

static void s_one(const sdx_tokenizer_t *t, const char *text)
{
    const int32_t size = sdx_tokenizer_size(t);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = sdx_tokenizer_tokenize(t, text, &ids, &n);
    if (rc == 0) {
        CHECK(ids);
        for (size_t i = 0; i < n; i++)
            CHECK(ids[i] >= 0 && ids[i] < size);
    }
    free(ids);

    int64_t enc[SDX_CLIP_MAX_LENGTH];
    int n_real = 0;
    size_t n_untr = 0;
    if (sdx_tokenizer_encode(t, text, enc, SDX_CLIP_MAX_LENGTH, &n_real, &n_untr) == 0) {
        CHECK(rc == 0);
        CHECK(n_real >= 2 && n_real <= SDX_CLIP_MAX_LENGTH);
        CHECK(n_untr == n + 2);
        CHECK(enc[0] == sdx_tokenizer_bos_id(t));
        CHECK(enc[n_real - 1] == sdx_tokenizer_eos_id(t));
        for (int i = n_real; i < SDX_CLIP_MAX_LENGTH; i++)
            CHECK(enc[i] == sdx_tokenizer_pad_id(t));
    }
    int64_t *all = NULL;
    size_t nall = 0;
    if (sdx_tokenizer_encode_untruncated(t, text, &all, &nall) == 0)
        CHECK(nall == n + 2);
    free(all);

    sdx_weighted_tokens_t wt;
    if (sdx_weighting_tokenize(t, text, &wt) == 0) {
        CHECK(wt.n_chunks >= 1 && wt.n_chunks <= SDX_WEIGHTING_MAX_CHUNKS);
        for (int c = 0; c < wt.n_chunks; c++) {
            CHECK(wt.ids[(size_t)c * SDX_CLIP_MAX_LENGTH] == sdx_tokenizer_bos_id(t));
            for (int i = 0; i < SDX_CLIP_MAX_LENGTH; i++) {
                size_t k = (size_t)c * SDX_CLIP_MAX_LENGTH + (size_t)i;
                CHECK(wt.ids[k] >= 0 && wt.ids[k] < size);
                CHECK(!isnan(wt.weights[k]));
            }
        }
        /* one more chunk fits below the limit, and is refused at it (the
           encoder pads prompt and negative to the larger count, never past) */
        int before = wt.n_chunks;
        int more = sdx_weighting_pad(t, &wt, before + 1);
        if (before < SDX_WEIGHTING_MAX_CHUNKS)
            CHECK(more == 0 && wt.n_chunks == before + 1);
        else
            CHECK(more == -1 && wt.n_chunks == before);
        sdx_weighted_tokens_free(&wt);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s_tok[0])
        s_init();
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    char *clean = sdx_tokenizer_clean_text(text);
    free(clean);

    sdx_weight_segment_t *segs = NULL;
    size_t nseg = 0;
    if (sdx_weighting_parse(text, &segs, &nseg) == 0) {
        CHECK(segs && nseg >= 1);
        for (size_t i = 0; i < nseg; i++) {
            CHECK(segs[i].text);
            CHECK(!segs[i].is_break || segs[i].text[0] == '\0');
        }
        sdx_weight_segments_free(&segs, nseg);
    }
    /* the second tokenizer only for short inputs: the work is the same, and
       long prompts are the slow ones */
    s_one(s_tok[0], text);
    if (size < 256)
        s_one(s_tok[1], text);
    free(text);
    return 0;
}
