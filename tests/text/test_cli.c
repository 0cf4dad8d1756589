/*  test_cli.c - `sdxl-gen tokenize` and `sdxl-gen encode` as a user runs
    them (argv[1] = path of sdxl-gen): tokenize must print exactly the
    reference ids of golden/tokens.json (bare tokenizer folder with
    --pad-id 0 = tokenizer_2's ids, a quarter of the prompts: each run
    loads libtorch and the vocabulary); encode must print the
    shapes and norms of the reference encode_prompt tensors (norm relative
    difference <= 1e-4, the parity tolerance of test_prompt.c), zeros for
    a None negative, and usage errors must exit 2. */
#include "sdx_test.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run argv, return its exit status and its stdout (caller frees). */
static int s_run(char *const argv[], char **out)
{
    int fd[2];
    *out = NULL;
    if (pipe(fd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    size_t n = 0, cap = 65536;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd[0], buf + n, cap - n - 1)) > 0) {
        n += (size_t)r;
        if (cap - n < 1024) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
            }
            buf = b;
        }
    }
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (buf)
        buf[n] = 0;
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool s_same_array(const cJSON *a, const cJSON *b)
{
    if (!cJSON_IsArray(a) || !cJSON_IsArray(b) || cJSON_GetArraySize(a) != cJSON_GetArraySize(b))
        return false;
    for (const cJSON *x = a->child, *y = b->child; x; x = x->next, y = y->next)
        if (x->valuedouble != y->valuedouble)
            return false;
    return true;
}

static double s_norm(const sdx_tensor_t *t)
{
    int64_t n = sdx_tensor_numel(t);
    double *v = malloc((size_t)n * sizeof *v), ss = 0;
    if (v && sdx_to_host(t, SDX_F64, v, (size_t)n * sizeof *v) == 0)
        for (int64_t i = 0; i < n; i++)
            ss += v[i] * v[i];
    free(v);
    return sqrt(ss);
}

static void s_check_tokenize(char *gen)
{
    char tokdir[4096];
    snprintf(tokdir, sizeof tokdir, "%s", sdx_test_path("tokenizer"));
    char *json = sdx_test_read_file(sdx_test_path("tokens.json"), NULL);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    free(json);
    const cJSON *prompts = cJSON_GetObjectItem(root, "prompts");
    int total = 0, bad = 0, i = 0;
    for (const cJSON *p = prompts ? prompts->child : NULL; p; p = p->next, i++) {
        char *text = cJSON_GetObjectItem(p, "prompt")->valuestring;
        /* every 4th prompt and every "!" (an added token for tok2): the
           tokenizer itself is checked on all of them by test_tokenizer */
        if (i % 4 != 0 && !strchr(text, '!'))
            continue;
        char *argv[] = {gen, "tokenize", "--tokenizer", tokdir, "--pad-id", "0", "--", text, NULL};
        char *out = NULL;
        int rc = s_run(argv, &out);
        cJSON *o = out ? cJSON_Parse(out) : NULL;
        const cJSON *want = cJSON_GetObjectItem(cJSON_GetObjectItem(p, "tok2"), "input_ids");
        total++;
        if (rc != 0 || !s_same_array(cJSON_GetObjectItem(o, "input_ids"), want)) {
            printf("  tokenize mismatch for '%s' (rc %d): %s\n", text, rc, out ? out : "");
            bad++;
        }
        cJSON_Delete(o);
        free(out);
    }
    sdx_test_check(total > 0 && bad == 0,
                   "sdxl-gen tokenize --pad-id 0: %d/%d sampled prompts print tok2's ids",
                   total - bad, total);
    cJSON_Delete(root);

    char *bad_argv[] = {gen, "tokenize", "--tokenizer", tokdir, "--pad-id", "x", "y", NULL};
    char *out = NULL;
    sdx_test_check(s_run(bad_argv, &out) == 2, "tokenize with a bad --pad-id exits 2");
    free(out);
}

static void s_check_encode(char *gen)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", sdx_test_path("model"));
    sdx_safetensors_t *ref = sdx_test_open("ref/encode_prompt.safetensors");
    char *argv[] = {gen,          "encode",
                    "--model",    model,
                    "--prompt",   "a photo of an astronaut riding a horse, highly detailed",
                    "--negative", "blurry, low quality",
                    NULL};
    static const char *const names[] = {"prompt_embeds", "negative_prompt_embeds",
                                        "pooled_prompt_embeds", "negative_pooled_prompt_embeds"};
    char *out = NULL;
    int rc = s_run(argv, &out);
    cJSON *o = out ? cJSON_Parse(out) : NULL;
    sdx_test_check(rc == 0 && o, "sdxl-gen encode runs (rc %d)", rc);
    for (int k = 0; o && k < 4; k++) {
        char name[128];
        snprintf(name, sizeof name, "default.%s", names[k]);
        sdx_tensor_t *r = sdx_test_get(ref, name);
        const cJSON *s = cJSON_GetObjectItem(o, names[k]);
        double norm =
            cJSON_GetObjectItem(s, "norm") ? cJSON_GetObjectItem(s, "norm")->valuedouble : -1;
        double want = r ? s_norm(r) : -2;
        const cJSON *shape = cJSON_GetObjectItem(s, "shape");
        int64_t sh[SDX_MAX_DIMS];
        int nd = r ? sdx_tensor_shape(r, sh) : 0;
        bool same_shape = cJSON_GetArraySize(shape) == nd;
        for (int i = 0; same_shape && i < nd; i++)
            same_shape = cJSON_GetArrayItem(shape, i)->valuedouble == (double)sh[i];
        sdx_test_check(same_shape && fabs(norm - want) <= 1e-4 * want,
                       "encode: %s shape and norm %.6f (reference %.6f)", names[k], norm, want);
        sdx_tensor_free(&r);
    }
    cJSON_Delete(o);
    free(out);

    argv[6] = NULL; /* no --negative: None -> zeros */
    rc = s_run(argv, &out);
    o = out ? cJSON_Parse(out) : NULL;
    const cJSON *n = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "negative_prompt_embeds"), "norm");
    sdx_test_check(rc == 0 && n && n->valuedouble == 0.0,
                   "encode without --negative: negative embeds are zeros");
    cJSON_Delete(o);
    free(out);

    char *bad[] = {gen, "encode", "--prompt", "x", NULL};
    sdx_test_check(s_run(bad, &out) == 2, "encode without --model exits 2");
    free(out);
    sdx_safetensors_close(&ref);
}

/* generate --prompt-attention a1111 runs end to end (weights, BREAK, a
   second chunk); compel is refused before any work. */
static void s_check_prompt_attention(const char *bin)
{
    char model[4096], out[64];
    snprintf(model, sizeof model, "%s", sdx_test_path("model"));
    snprintf(out, sizeof out, "/tmp/test_text_cli_%d.png", (int)getpid());
    char *argv[] = {(char *)bin, "generate", "--model", model, "--prompt",
                    "a (castle:1.3) on a [hill] BREAK ((forest))", "--negative", "blurry",
                    "--steps", "2", "--width", "64", "--height", "64", "--seed", "1",
                    "--prompt-attention", "a1111", "--quiet", "--out", out, NULL};
    char *o = NULL;
    int rc = s_run(argv, &o);
    sdx_test_check(rc == 0 && access(out, R_OK) == 0,
                   "generate --prompt-attention a1111: exit %d, image written", rc);
    free(o);
    unlink(out);
    argv[17] = "compel";
    rc = s_run(argv, &o);
    sdx_test_check(rc != 0 && access(out, R_OK) != 0, "generate --prompt-attention compel: "
                                                      "refused (exit %d)",
                   rc);
    free(o);
    unlink(out);
}

int main(int argc, char **argv)
{
    if (argc < 2 || access(argv[1], X_OK) != 0)
        sdx_test_skip("sdxl-gen not built");
    s_check_tokenize(argv[1]);
    s_check_encode(argv[1]);
    s_check_prompt_attention(argv[1]);
    return sdx_test_done();
}
