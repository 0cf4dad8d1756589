/*  sdxl_gen_tokenize.c - `sdxl-gen tokenize`: CLIP token ids of a text as
    JSON, the same call diffusers makes (padding to max_length, truncation),
    plus the untruncated ids and the BPE token strings. A debugging aid for
    prompts; not used by serving.

      sdxl-gen tokenize --tokenizer DIR [--pad-id N] [--max-length N]
                        [--add-token TEXT]... [--] TEXT
*/
#include "sdxl_gen.h"
#include "sdxl_gen_util.h"

#include "sdx_tokenizer.h"
#include "sdx_torch.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_usage(const char *why)
{
    fprintf(stderr,
            "sdxl-gen tokenize: %s\n"
            "usage: sdxl-gen tokenize --tokenizer DIR [--pad-id N] [--max-length N]\n"
            "                         [--add-token TEXT]... [--] TEXT\n"
            "  DIR holds vocab.json + merges.txt (and optionally tokenizer_config.json);\n"
            "  --pad-id 0 gives SDXL tokenizer_2's padding for a bare folder.\n",
            why);
    return 2;
}

int sdxl_gen_tokenize(int argc, char **argv)
{
    const char *dir = NULL, *text = NULL;
    const char *added[64];
    int n_added = 0;
    long pad = -1, max_len = SDX_CLIP_MAX_LENGTH;
    bool opts = true; /* "--" ends the options (for a TEXT starting with "-") */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (opts && !strcmp(a, "--")) {
            opts = false;
        } else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            s_usage("help");
            return 0;
        } else if (opts && a[0] == '-' && a[1] == '-') {
            if (!has)
                return s_usage("option needs a value");
            const char *v = argv[++i];
            if (!strcmp(a, "--tokenizer"))
                dir = v;
            else if (!strcmp(a, "--pad-id")) {
                if (!sdxl_gen_parse_long(v, 0, 100000000, &pad))
                    return s_usage("--pad-id needs a token id");
            } else if (!strcmp(a, "--max-length")) {
                if (!sdxl_gen_parse_long(v, 2, 4096, &max_len))
                    return s_usage("--max-length needs an integer in 2..4096");
            } else if (!strcmp(a, "--add-token")) {
                if (n_added == 64)
                    return s_usage("at most 64 --add-token");
                added[n_added++] = v;
            } else {
                return s_usage("unknown option");
            }
        } else if (!text) {
            text = a;
        } else {
            return s_usage("only one TEXT (quote it)");
        }
    }
    if (!dir || !text)
        return s_usage("--tokenizer DIR and TEXT are required");

    sdx_tokenizer_t *tok = sdx_tokenizer_load(dir);
    if (!tok) {
        fprintf(stderr, "sdxl-gen tokenize: %s\n", sdx_last_error());
        return 2;
    }
    int rc = 1;
    int64_t *ids = malloc((size_t)max_len * sizeof *ids), *full = NULL;
    size_t n_full = 0;
    int n_real = 0;
    cJSON *o = cJSON_CreateObject();
    if (pad >= 0 && sdx_tokenizer_set_pad_id(tok, (int32_t)pad) != 0) {
        fprintf(stderr, "sdxl-gen tokenize: %s\n", sdx_last_error());
        rc = 2;
        goto done;
    }
    for (int i = 0; i < n_added; i++)
        if (sdx_tokenizer_add_token(tok, added[i], false, NULL) != 0)
            goto fail;
    if (!ids || !o || sdx_tokenizer_encode(tok, text, ids, (int)max_len, &n_real, NULL) != 0 ||
        sdx_tokenizer_encode_untruncated(tok, text, &full, &n_full) != 0)
        goto fail;
    cJSON *a = cJSON_AddArrayToObject(o, "input_ids");
    cJSON *m = cJSON_AddArrayToObject(o, "attention_mask");
    for (long i = 0; i < max_len; i++) {
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)ids[i]));
        cJSON_AddItemToArray(m, cJSON_CreateNumber(i < n_real ? 1 : 0));
    }
    cJSON *u = cJSON_AddArrayToObject(o, "ids_untruncated");
    cJSON *s = cJSON_AddArrayToObject(o, "tokens");
    for (size_t i = 0; i < n_full; i++) {
        cJSON_AddItemToArray(u, cJSON_CreateNumber((double)full[i]));
        if (i > 0 && i + 1 < n_full) {
            const char *str = sdx_tokenizer_id_to_token(tok, (int32_t)full[i]);
            cJSON_AddItemToArray(s, cJSON_CreateString(str ? str : ""));
        }
    }
    cJSON_AddNumberToObject(o, "n_tokens_untruncated", (double)n_full);
    cJSON_AddBoolToObject(o, "truncated", n_full > (size_t)max_len);
    cJSON_AddNumberToObject(o, "pad_id", sdx_tokenizer_pad_id(tok));
    char *out = cJSON_PrintUnformatted(o);
    if (!out)
        goto fail;
    printf("%s\n", out);
    free(out);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "sdxl-gen tokenize: %s\n", sdx_last_error());
done:
    cJSON_Delete(o);
    free(ids);
    free(full);
    sdx_tokenizer_destroy(&tok);
    return rc;
}
