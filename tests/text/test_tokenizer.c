/*  test_tokenizer.c - the CLIP tokenizer against golden/tokens.json.

    Exact equality for every prompt of tokens.json: input_ids and attention
    mask of both SDXL tokenizers (tok1 pads with <|endoftext|>, tok2 with "!"
    = id 0 and treats "!" as an added special token), the untruncated ids and
    the BPE token strings. Token ids are integers: the tolerance is zero.
    Also: both tokenizer folder forms (model/tokenizer*, with their
    tokenizer_config.json, and the bare golden/tokenizer with an explicit pad
    id), added tokens (textual inversion ids against
    ref/pipeline/textual_inversion.safetensors), clean-up corner cases and
    invalid UTF-8. */
#include "sdx_test.h"
#include "sdx_tokenizer.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool s_ids_equal(const cJSON *arr, const int64_t *ids, size_t n)
{
    if (cJSON_GetArraySize(arr) != (int)n)
        return false;
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++)
        if ((int64_t)e->valuedouble != ids[i])
            return false;
    return true;
}

static void s_print_ids(const char *what, const int64_t *ids, size_t n)
{
    printf("  %s:", what);
    for (size_t i = 0; i < n; i++)
        printf(" %lld", (long long)ids[i]);
    printf("\n");
}

/* One tokenizer against the "tok1"/"tok2" entries of every prompt. */
static void s_check_tokens(const sdx_tokenizer_t *tok, const cJSON *prompts, const char *key,
                           const char *label)
{
    int bad = 0, total = 0;
    for (const cJSON *p = prompts->child; p; p = p->next) {
        const char *text = cJSON_GetObjectItem(p, "prompt")->valuestring;
        const cJSON *ref = cJSON_GetObjectItem(cJSON_GetObjectItem(p, key), "input_ids");
        const cJSON *mask = cJSON_GetObjectItem(cJSON_GetObjectItem(p, key), "attention_mask");
        int64_t ids[SDX_CLIP_MAX_LENGTH];
        int n_real = 0;
        size_t n_untr = 0;
        total++;
        if (sdx_tokenizer_encode(tok, text, ids, SDX_CLIP_MAX_LENGTH, &n_real, &n_untr) != 0) {
            printf("  encode failed for '%s': %s\n", text, sdx_last_error());
            bad++;
            continue;
        }
        bool ok = s_ids_equal(ref, ids, SDX_CLIP_MAX_LENGTH);
        int ones = 0;
        for (const cJSON *e = mask->child; e; e = e->next)
            ones += e->valueint;
        ok = ok && ones == n_real;
        /* n_tokens_untruncated was counted with tok1 ("!" splits differently in tok2) */
        if (strcmp(key, "tok1") == 0)
            ok = ok && (int)n_untr == cJSON_GetObjectItem(p, "n_tokens_untruncated")->valueint;
        if (!ok) {
            printf("  mismatch for '%s'\n", text);
            s_print_ids("got", ids, SDX_CLIP_MAX_LENGTH);
            bad++;
        }
    }
    sdx_test_check(bad == 0, "%s: %d/%d prompts match input_ids + attention_mask exactly", label,
                   total - bad, total);
}

static void s_check_untruncated(const sdx_tokenizer_t *tok, const cJSON *prompts)
{
    int bad = 0, total = 0, bad_str = 0;
    for (const cJSON *p = prompts->child; p; p = p->next) {
        const char *text = cJSON_GetObjectItem(p, "prompt")->valuestring;
        const cJSON *ref = cJSON_GetObjectItem(p, "ids_untruncated");
        const cJSON *bpe = cJSON_GetObjectItem(p, "bpe_tokens");
        int64_t *ids = NULL;
        size_t n = 0;
        total++;
        if (sdx_tokenizer_encode_untruncated(tok, text, &ids, &n) != 0 ||
            !s_ids_equal(ref, ids, n)) {
            printf("  untruncated mismatch for '%s'\n", text);
            if (ids)
                s_print_ids("got", ids, n);
            bad++;
        }
        /* bpe_tokens = tok1.tokenize(prompt): the strings of ids[1..n-1) */
        if (ids && cJSON_GetArraySize(bpe) == (int)n - 2) {
            size_t i = 1;
            for (const cJSON *e = bpe->child; e; e = e->next, i++) {
                const char *s = sdx_tokenizer_id_to_token(tok, (int32_t)ids[i]);
                if (!s || strcmp(s, e->valuestring) != 0) {
                    printf("  token %zu of '%s': got '%s', want '%s'\n", i, text, s ? s : "?",
                           e->valuestring);
                    bad_str++;
                    break;
                }
            }
        } else {
            bad_str++;
        }
        free(ids);
    }
    sdx_test_check(bad == 0, "ids_untruncated: %d/%d prompts exact", total - bad, total);
    sdx_test_check(bad_str == 0, "bpe_tokens strings: %d/%d prompts exact", total - bad_str, total);
}

/* Textual inversion: added tokens are cut out before BPE and get ids
   49408, 49409; compared with the ids the reference pipeline used. */
static void s_check_added_tokens(const char *dir, const char *ref_name)
{
    sdx_tokenizer_t *tok = sdx_tokenizer_load(dir);
    if (!sdx_test_check(tok != NULL, "load %s (%s)", dir, tok ? "ok" : sdx_last_error()))
        return;
    int32_t id0 = -1, id1 = -1;
    int rc0 = sdx_tokenizer_add_token(tok, "<tiny-ti>", false, &id0);
    int rc1 = sdx_tokenizer_add_token(tok, "<tiny-ti>_1", false, &id1);
    sdx_test_check(rc0 == 0 && id0 == 49408, "added token <tiny-ti> -> 49408 (got %d)", (int)id0);
    sdx_test_check(rc1 == 0 && id1 == 49409, "added token <tiny-ti>_1 -> 49409 (got %d)", (int)id1);
    int32_t again = -1;
    sdx_test_check(sdx_tokenizer_add_token(tok, "<tiny-ti>", false, &again) == 0 && again == 49408,
                   "re-adding keeps the id");
    sdx_test_check(sdx_tokenizer_size(tok) == 49410, "len(tokenizer) = 49410");
    int64_t ids[SDX_CLIP_MAX_LENGTH];
    /* the prompt after diffusers' maybe_convert_prompt */
    const char *prompt = "a photo of <tiny-ti> <tiny-ti>_1 on a table";
    bool ok = sdx_tokenizer_encode(tok, prompt, ids, SDX_CLIP_MAX_LENGTH, NULL, NULL) == 0;
    sdx_safetensors_t *st = sdx_test_open("ref/pipeline/textual_inversion.safetensors");
    sdx_tensor_t *ref = sdx_test_get(st, ref_name);
    int64_t want[SDX_CLIP_MAX_LENGTH];
    if (ref && sdx_to_host(ref, SDX_I64, want, sizeof want) == 0)
        ok = ok && memcmp(want, ids, sizeof want) == 0;
    else
        ok = false;
    if (!ok)
        s_print_ids("got", ids, SDX_CLIP_MAX_LENGTH);
    sdx_test_check(ok, "%s: textual-inversion prompt ids equal %s", dir, ref_name);
    /* added tokens are case-sensitive and matched inside words too */
    int32_t *t = NULL;
    size_t n = 0;
    ok = sdx_tokenizer_tokenize(tok, "x<tiny-ti>_1y <TINY-TI>", &t, &n) == 0 && n >= 3 &&
         t[1] == 49409 && t[n - 1] != 49408;
    sdx_test_check(ok, "added token cut out of 'x<tiny-ti>_1y', upper case not matched");
    free(t);
    sdx_tensor_free(&ref);
    sdx_safetensors_close(&st);
    sdx_tokenizer_destroy(&tok);
}

static void s_check_cleanup(void)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"  A\tB\nC\r\x0b D  ", "a b c d"},   /* \v is a control char (dropped) */
        {"x\xc2\xa0y\xe3\x80\x80z", "x y z"}, /* NBSP, ideographic space: Zs */
        {"a\xe2\x80\xa8"
         "b",
         "a b"},                                          /* U+2028: str.split() separator */
        {"zero\xe2\x80\x8bwidth", "zerowidth"},           /* U+200B (Cf) dropped */
        {"e\xcc\x81", "\xc3\xa9"},                        /* NFC composes e + acute */
        {"\xe1\xba\x9b\xcc\xa3", "\xe1\xba\x9b\xcc\xa3"}, /* U+1E9B U+0323 stays (NFC) */
        {"\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5 \xe6\x9c\xac"},                /* CJK split */
        {"\xce\x9f\xce\x94\xce\x9f\xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82"}, /* final sigma */
        {"\xce\xa3\xce\x91", "\xcf\x83\xce\xb1"},                 /* initial sigma */
        {"\xc4\xb0stanbul", "i\xcc\x87stanbul"},                  /* U+0130 lower() = i + U+0307 */
        {"\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xea\xb0\x81"}, /* Hangul jamo L V T -> U+AC01 */
        {"caf\xc3\xa9 CR\xc3\x88ME", "caf\xc3\xa9 cr\xc3\xa8me"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = sdx_tokenizer_clean_text(cases[i].in);
        sdx_test_check(got && strcmp(got, cases[i].want) == 0, "clean-up case %zu ('%s')", i,
                       got ? got : "NULL");
        free(got);
    }
}

int main(void)
{
    const char *path = sdx_test_path("tokens.json");
    char *json = sdx_test_read_file(path, NULL);
    if (!json)
        sdx_test_skip("tokens.json missing");
    cJSON *root = cJSON_Parse(json);
    free(json);
    const cJSON *prompts = cJSON_GetObjectItem(root, "prompts");
    if (!sdx_test_check(cJSON_IsArray(prompts), "tokens.json parsed"))
        return sdx_test_done();

    char dir[4096];
    snprintf(dir, sizeof dir, "%s", sdx_test_path("model/tokenizer"));
    sdx_tokenizer_t *tok1 = sdx_tokenizer_load(dir);
    sdx_test_check(tok1 != NULL, "load model/tokenizer (%s)", tok1 ? "ok" : sdx_last_error());
    snprintf(dir, sizeof dir, "%s", sdx_test_path("model/tokenizer_2"));
    sdx_tokenizer_t *tok2 = sdx_tokenizer_load(dir);
    sdx_test_check(tok2 != NULL, "load model/tokenizer_2 (%s)", tok2 ? "ok" : sdx_last_error());
    if (tok1 && tok2) {
        sdx_test_check(sdx_tokenizer_pad_id(tok1) == 49407 && sdx_tokenizer_pad_id(tok2) == 0 &&
                           sdx_tokenizer_bos_id(tok1) == 49406 &&
                           sdx_tokenizer_eos_id(tok2) == 49407,
                       "special ids: bos 49406, eos 49407, pad 49407 / 0");
        s_check_tokens(tok1, prompts, "tok1", "model/tokenizer (tok1)");
        s_check_tokens(tok2, prompts, "tok2", "model/tokenizer_2 (tok2)");
        s_check_untruncated(tok1, prompts);
    }

    /* the bare folder (vocab.json + merges.txt only) with explicit pads */
    snprintf(dir, sizeof dir, "%s", sdx_test_path("tokenizer"));
    sdx_tokenizer_t *bare1 = sdx_tokenizer_load(dir);
    sdx_tokenizer_t *bare2 = sdx_tokenizer_load(dir);
    sdx_test_check(bare1 && bare2, "load bare tokenizer/ (%s)", bare1 ? "ok" : sdx_last_error());
    if (bare1 && bare2) {
        sdx_test_check(sdx_tokenizer_set_pad_id(bare2, 0) == 0, "set pad id 0");
        s_check_tokens(bare1, prompts, "tok1", "bare tokenizer/, default pad (tok1)");
        s_check_tokens(bare2, prompts, "tok2", "bare tokenizer/, --pad-id 0 (tok2)");
    }

    /* the CLIP files compiled into the engine (what a lone single file uses) */
    sdx_tokenizer_t *in1 = sdx_tokenizer_builtin(1), *in2 = sdx_tokenizer_builtin(2);
    sdx_test_check(in1 && in2 && !sdx_tokenizer_builtin(3),
                   "built-in tokenizers 1 and 2 (and no 3) (%s)", in1 ? "ok" : sdx_last_error());
    if (in1 && in2) {
        sdx_test_check(sdx_tokenizer_size(in1) == 49408 && sdx_tokenizer_pad_id(in1) == 49407 &&
                           sdx_tokenizer_pad_id(in2) == 0 && sdx_tokenizer_bos_id(in2) == 49406,
                       "built-in: 49408 tokens, pad 49407 / 0 (tokenizer_2 pads with '!')");
        s_check_tokens(in1, prompts, "tok1", "built-in tokenizer (tok1)");
        s_check_tokens(in2, prompts, "tok2", "built-in tokenizer_2 (tok2)");
    }
    sdx_tokenizer_destroy(&in1);
    sdx_tokenizer_destroy(&in2);

    snprintf(dir, sizeof dir, "%s", sdx_test_path("model/tokenizer"));
    s_check_added_tokens(dir, "ti_input_ids_tok1");
    snprintf(dir, sizeof dir, "%s", sdx_test_path("model/tokenizer_2"));
    s_check_added_tokens(dir, "ti_input_ids_tok2");
    s_check_cleanup();

    if (tok1) {
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = sdx_tokenizer_tokenize(tok1, "bad \xff utf8", &ids, &n);
        sdx_test_check(rc == -1, "invalid UTF-8 rejected (%s)", sdx_last_error());
        sdx_test_check(sdx_tokenizer_tokenize(tok1, "", &ids, &n) == 0 && n == 0 && ids,
                       "empty text: no tokens");
        free(ids);
        ids = NULL;
        /* a special-token string reached only through clean-up (upper case
           here) still maps whole, through CLIPTokenizer's bpe cache */
        sdx_test_check(sdx_tokenizer_tokenize(tok1, "<|ENDOFTEXT|>", &ids, &n) == 0 && n == 1 &&
                           ids[0] == 49407,
                       "<|ENDOFTEXT|> -> 49407 after lower-casing");
        free(ids);
    }

    sdx_tokenizer_destroy(&tok1);
    sdx_tokenizer_destroy(&tok2);
    sdx_tokenizer_destroy(&bare1);
    sdx_tokenizer_destroy(&bare2);
    sdx_test_check(tok1 == NULL, "destroy clears the pointer");
    cJSON_Delete(root);
    return sdx_test_done();
}
