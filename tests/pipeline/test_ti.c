/*  test_ti.c - textual inversion (sdx_ti.c, sdxl_engine_set_embeddings)
    against diffusers.

    Checks, on the golden tiny model (CPU):
      - pipeline parity against ref/pipeline/textual_inversion (diffusers'
        load_textual_inversion of ti/tiny_ti.safetensors as "<tiny-ti>",
        prompt "a photo of <tiny-ti> on a table", Euler, seed 55) with
        test_lora's tolerances: final latents relative L2 < 1e-3, image_np
        within 1/255 on >= 99.9% of values.
      - tokens: "<tiny-ti>" = 49408 and "<tiny-ti>_1" = 49409 in both
        tokenizers; removing the set restores both token-embedding tables
        bit for bit and both tokenizer sizes; setting it again reproduces
        the same latents bit for bit; the same set twice is a no-op.
      - refusals (an SD1.x single-tensor file, emb_params / string_to_param
        style; widths that do not fit; a missing file; a vocabulary token):
        a message naming the problem, and the current set unchanged. */
#include "sdx_test.h"
#include "sdxl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN_EMB "text_model.embeddings.token_embedding.weight"

static const char *s_prompt = "a photo of <tiny-ti> on a table";
static const char *s_negative = "blurry, low quality";

static bool s_bits_equal(const sdx_tensor_t *a, const sdx_tensor_t *b)
{
    if (!a || !b || sdx_tensor_dtype(a) != sdx_tensor_dtype(b) ||
        sdx_tensor_ndim(a) != sdx_tensor_ndim(b) || sdx_tensor_numel(a) != sdx_tensor_numel(b))
        return false;
    for (int d = 0; d < sdx_tensor_ndim(a); d++)
        if (sdx_tensor_size(a, d) != sdx_tensor_size(b, d))
            return false;
    size_t n = (size_t)sdx_tensor_numel(a) * sdx_dtype_size(sdx_tensor_dtype(a));
    unsigned char *x = malloc(n ? n : 1), *y = malloc(n ? n : 1);
    bool eq = x && y && sdx_to_host(a, sdx_tensor_dtype(a), x, n) == 0 &&
              sdx_to_host(b, sdx_tensor_dtype(b), y, n) == 0 && memcmp(x, y, n) == 0;
    free(x);
    free(y);
    return eq;
}


/* The textual_inversion call; latents (caller frees). */
static sdx_tensor_t *s_generate(sdxl_engine_t *e, const char *label, bool compare)
{
    sdxl_gen_params_t gp;
    sdxl_gen_params_init(&gp);
    gp.prompt = s_prompt;
    gp.negative_prompt = s_negative;
    gp.steps = 5;
    gp.guidance_scale = 5.0;
    gp.seed = 55;
    gp.scheduler = "EulerDiscreteScheduler";
    gp.width = gp.height = 128;
    sdxl_result_t r;
    int rc = sdxl_generate(e, &gp, &r);
    if (!sdx_test_check(rc == 0, "%s: generate (%s)", label, rc ? sdx_last_error() : "ok"))
        return NULL;
    if (compare) {
        sdx_safetensors_t *st = sdx_test_open("ref/pipeline/textual_inversion.safetensors");
        sdx_tensor_t *ref_lat = sdx_test_get(st, "latents_final");
        sdx_tensor_t *ref_np = sdx_test_get(st, "image_np");
        char what[256];
        snprintf(what, sizeof what, "%s vs textual_inversion: final latents", label);
        sdx_test_close(r.latents, ref_lat, 1e-3, what);
        double frac = ref_np ? sdx_test_pixel_match(r.decoded, ref_np) : -1;
        sdx_test_check(
            frac >= 0.999,
            "%s vs textual_inversion: image within 1/255 on %.4f%% of values (>= 99.9%%)", label,
            frac * 100);
        sdx_tensor_free(&ref_lat);
        sdx_tensor_free(&ref_np);
        sdx_safetensors_close(&st);
    }
    sdx_tensor_t *lat = r.latents;
    r.latents = NULL;
    sdxl_result_clear(&r);
    return lat;
}

/* A one-tensor float32 safetensors file of zeros: name [rows, cols]. */
static bool s_write_st(const char *path, const char *n1, int r1, int c1, const char *n2, int r2,
                       int c2)
{
    char hdr[512];
    size_t b1 = (size_t)r1 * c1 * 4, b2 = n2 ? (size_t)r2 * c2 * 4 : 0;
    int len =
        n2 ? snprintf(hdr, sizeof hdr,
                      "{\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[0,%zu]},"
                      "\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}}",
                      n1, r1, c1, b1, n2, r2, c2, b1, b1 + b2)
           : snprintf(hdr, sizeof hdr,
                      "{\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[0,%zu]}}", n1,
                      r1, c1, b1);
    while (len % 8)
        hdr[len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    uint64_t n = (uint64_t)len;
    bool ok = fwrite(&n, 8, 1, f) == 1 && fwrite(hdr, 1, (size_t)len, f) == (size_t)len;
    for (size_t i = 0; ok && i < b1 + b2; i++)
        ok = fputc(0, f) != EOF;
    return fclose(f) == 0 && ok;
}

static void s_refuse(sdxl_engine_t *e, const sdxl_embedding_t *sp, const char *label,
                     const char *needle)
{
    int rc = sdxl_engine_set_embeddings(e, sp, 1);
    const char *msg = rc ? sdx_last_error() : "";
    sdx_test_check(rc == -1 && strstr(msg, needle) != NULL, "refused: %s (%s)", label, msg);
}

int main(void)
{
    char model[4096], ti[4096];
    snprintf(model, sizeof model, "%s", sdx_test_path("model"));
    snprintf(ti, sizeof ti, "%s", sdx_test_path("ti/tiny_ti.safetensors"));
    if (access(ti, R_OK) != 0)
        sdx_test_skip("golden textual-inversion file missing");
    int64_t live0 = sdx_tensor_live_count();

    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.model_path = model;
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    if (!sdx_test_check(e != NULL, "load %s (%s)", model, e ? "ok" : sdx_last_error()))
        return sdx_test_done();
    const sdx_model_t *m = sdxl_engine_model(e);
    const sdx_tokenizer_t *tok1 = sdxl_engine_tokenizer(e, 1), *tok2 = sdxl_engine_tokenizer(e, 2);
    int32_t size1 = sdx_tokenizer_size(tok1), size2 = sdx_tokenizer_size(tok2);
    sdx_tensor_t *orig1 = NULL, *orig2 = NULL;
    sdx_clone(NULL, &orig1, sdx_weights_get(m->te1, TOKEN_EMB));
    sdx_clone(NULL, &orig2, sdx_weights_get(m->te2, TOKEN_EMB));

    const sdxl_embedding_t emb = {ti, "<tiny-ti>"};
    int rc = sdxl_engine_set_embeddings(e, &emb, 1);
    sdx_tensor_t *lat1 = NULL, *lat2 = NULL;
    if (sdx_test_check(rc == 0, "set <tiny-ti> (%s)", rc ? sdx_last_error() : "ok")) {
        for (int k = 1; k <= 2; k++) {
            const sdx_tokenizer_t *t = sdxl_engine_tokenizer(e, k);
            sdx_test_check(sdx_tokenizer_token_to_id(t, "<tiny-ti>") == 49408 &&
                               sdx_tokenizer_token_to_id(t, "<tiny-ti>_1") == 49409,
                           "tokenizer %d: <tiny-ti> = %d, <tiny-ti>_1 = %d (49408, 49409)", k,
                           sdx_tokenizer_token_to_id(t, "<tiny-ti>"),
                           sdx_tokenizer_token_to_id(t, "<tiny-ti>_1"));
        }
        sdx_test_check(sdx_tensor_size(sdx_weights_get(m->te1, TOKEN_EMB), 0) ==
                               sdx_tensor_size(orig1, 0) + 2 &&
                           sdx_tensor_size(sdx_weights_get(m->te2, TOKEN_EMB), 0) ==
                               sdx_tensor_size(orig2, 0) + 2,
                       "both tables grew by 2 rows");
        lat1 = s_generate(e, "<tiny-ti>", true);
        rc = sdxl_engine_set_embeddings(e, &emb, 1);
        sdx_test_check(rc == 0, "same set again is a no-op (%s)", rc ? sdx_last_error() : "ok");
    }

    /* refusals, the current set kept */
    char sd1[4096], wide[4096];
    snprintf(sd1, sizeof sd1, "/tmp/test_ti_sd1_%d.safetensors", (int)getpid());
    snprintf(wide, sizeof wide, "/tmp/test_ti_wide_%d.safetensors", (int)getpid());
    sdx_test_check(s_write_st(sd1, "emb_params", 1, 16, NULL, 0, 0) &&
                       s_write_st(wide, "clip_l", 1, 16, "clip_g", 1, 16),
                   "bad embedding files written");
    const sdxl_embedding_t bad_sd1 = {sd1, "<sd1>"}, bad_wide = {wide, "<wide>"},
                           missing = {"/nonexistent/x.safetensors", "<x>"},
                           vocab = {ti, "photo</w>"};
    s_refuse(e, &bad_sd1, "SD1.x single-tensor file", "does not fit SDXL");
    s_refuse(e, &bad_wide, "clip_g of the wrong width", "must be [n, ");
    s_refuse(e, &missing, "missing file", "/nonexistent/x.safetensors");
    s_refuse(e, &vocab, "a vocabulary token", "already in the vocabulary");
    sdx_test_check(sdx_tokenizer_token_to_id(tok1, "<tiny-ti>_1") == 49409 &&
                       sdx_tokenizer_token_to_id(tok1, "<sd1>") < 0,
                   "after the refusals the set is unchanged");
    unlink(sd1);
    unlink(wide);

    /* removal restores exactly */
    rc = sdxl_engine_set_embeddings(e, NULL, 0);
    if (sdx_test_check(rc == 0, "remove all (%s)", rc ? sdx_last_error() : "ok")) {
        sdx_test_check(s_bits_equal(sdx_weights_get(m->te1, TOKEN_EMB), orig1) &&
                           s_bits_equal(sdx_weights_get(m->te2, TOKEN_EMB), orig2),
                       "both token-embedding tables restored bit for bit");
        sdx_test_check(sdx_tokenizer_size(tok1) == size1 && sdx_tokenizer_size(tok2) == size2 &&
                           sdx_tokenizer_token_to_id(tok1, "<tiny-ti>") < 0 &&
                           sdx_tokenizer_token_to_id(tok2, "<tiny-ti>_1") < 0,
                       "tokenizers back to %d / %d, the tokens gone", size1, size2);
    }
    rc = sdxl_engine_set_embeddings(e, &emb, 1);
    if (sdx_test_check(rc == 0, "set <tiny-ti> again (%s)", rc ? sdx_last_error() : "ok")) {
        lat2 = s_generate(e, "<tiny-ti> (second time)", false);
        sdx_test_check(s_bits_equal(lat1, lat2), "re-added: latents bit-identical");
    }
    sdxl_engine_set_embeddings(e, NULL, 0);
    sdx_tensor_free(&lat1);
    sdx_tensor_free(&lat2);
    sdx_tensor_free(&orig1);
    sdx_tensor_free(&orig2);
    sdxl_engine_free(&e);
    sdx_test_check(sdx_tensor_live_count() == live0, "no tensor left alive (%lld)",
                   (long long)(sdx_tensor_live_count() - live0));
    return sdx_test_done();
}
