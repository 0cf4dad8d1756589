/*  test_prompt.c - SDXL encode_prompt against golden ref/encode_prompt.safetensors
    (diffusers 0.27.2 StableDiffusionXLPipeline.encode_prompt), in every
    layout the build can load (direct safetensors read, sdx_model_load of the
    diffusers folder, sdx_model_load of the single file).

    Cases: default, clip_skip 1 and 2 (positives move to hidden_states[-3] /
    [-4], negatives stay at [-2] as in diffusers), negative "" (encoded),
    negative None + force_zeros_for_empty_prompt (exact zeros), a 92-token
    prompt (truncated to 77), prompt_2/negative_prompt_2, and a batch of 2
    prompts x num_images_per_prompt 2 (rows [p0,p0,p1,p1]). Plus: the
    textual-inversion prompt (added tokens, extended embedding tables,
    argmax pooling on id 49409) against ref/pipeline/textual_inversion,
    do_cfg=false, and the same numbers from every layout.

    Tolerance: relative L2 <= 1e-4 on every tensor (float32, CPU), for the
    reasons given in test_clip.c (same kernels; attention formulation and
    batch composition differ from diffusers at float32 rounding level,
    ~1e-6 observed). Forced-zero negatives must be exactly 0. */
#include "text_util.h"

#include <stdio.h>
#include <string.h>

#define TOL 1e-4

static const char *const P = "a photo of an astronaut riding a horse, highly detailed";
static const char *const NEG = "blurry, low quality";
static const char *const LONG =
    "a majestic castle on a hill surrounded by a dense forest and a winding river a majestic "
    "castle on a hill surrounded by a dense forest and a winding river a majestic castle on a "
    "hill surrounded by a dense forest and a winding river a majestic castle on a hill "
    "surrounded by a dense forest and a winding river a majestic castle on a hill surrounded by "
    "a dense forest and a winding river a majestic castle on a hill surrounded by a dense "
    "forest and a winding river";

typedef struct {
    const char *name;
    const char *prompt[2], *prompt_2[2], *neg[2], *neg_2[2];
    int batch, nipp, clip_skip;
    bool neg_none, has_p2, truncated;
} s_case_t;

static const s_case_t s_cases[] = {
    {"default", {P}, {0}, {NEG}, {0}, 1, 1, 0, false, false, false},
    {"clip_skip1", {P}, {0}, {NEG}, {0}, 1, 1, 1, false, false, false},
    {"clip_skip2", {P}, {0}, {NEG}, {0}, 1, 1, 2, false, false, false},
    {"neg_empty_string", {P}, {0}, {""}, {0}, 1, 1, 0, false, false, false},
    {"neg_none_force_zeros", {P}, {0}, {0}, {0}, 1, 1, 0, true, false, false},
    {"long_prompt", {LONG}, {0}, {NEG}, {0}, 1, 1, 0, false, false, true},
    {"prompt_2", {P}, {"a watercolor painting"}, {NEG}, {"photo"}, 1, 1, 0, false, true, false},
    {"batch2_nipp2", {P, "a tiny robot"}, {0}, {NEG, ""}, {0}, 2, 2, 0, false, false, false},
};

static sdx_text_encoders_t s_te(const text_models_t *m)
{
    return (sdx_text_encoders_t){m->te1, m->tok1, m->te2, m->tok2};
}

static void s_compare(sdx_safetensors_t *ref, const char *label, const char *cname,
                      const sdx_prompt_embeds_t *e, bool zeros)
{
    struct {
        const char *n;
        sdx_tensor_t *t;
    } outs[] = {{"prompt_embeds", e->prompt_embeds},
                {"negative_prompt_embeds", e->negative_prompt_embeds},
                {"pooled_prompt_embeds", e->pooled_prompt_embeds},
                {"negative_pooled_prompt_embeds", e->negative_pooled_prompt_embeds}};
    for (size_t k = 0; k < 4; k++) {
        char name[128], what[256];
        snprintf(name, sizeof name, "%s.%s", cname, outs[k].n);
        snprintf(what, sizeof what, "%s: %s", label, name);
        sdx_tensor_t *r = sdx_test_get(ref, name);
        if (!r)
            continue;
        if (zeros && k % 2 == 1)
            sdx_test_check(outs[k].t && sdx_test_max_abs(outs[k].t, r) == 0.0, "%s: exactly zero",
                           what);
        else
            sdx_test_close(outs[k].t, r, TOL, what);
        sdx_tensor_free(&r);
    }
}

static void s_check_cases(sdx_safetensors_t *ref, const text_models_t *m)
{
    sdx_text_encoders_t te = s_te(m);
    for (size_t c = 0; c < sizeof s_cases / sizeof s_cases[0]; c++) {
        const s_case_t *k = &s_cases[c];
        sdx_prompt_params_t p;
        sdx_prompt_params_init(&p);
        p.prompt = k->prompt;
        p.prompt_2 = k->has_p2 ? k->prompt_2 : NULL;
        p.negative = k->neg_none ? NULL : k->neg;
        p.negative_2 = k->has_p2 ? k->neg_2 : NULL;
        p.batch_size = k->batch;
        p.num_images_per_prompt = k->nipp;
        p.clip_skip = k->clip_skip;
        sdx_prompt_embeds_t e;
        int rc = sdx_prompt_encode(&te, &p, &e);
        if (!sdx_test_check(rc == 0, "%s: encode %s (%s)", m->label, k->name,
                            rc ? sdx_last_error() : "ok"))
            continue;
        s_compare(ref, m->label, k->name, &e, k->neg_none);
        sdx_test_check(e.truncated == k->truncated, "%s: %s truncated flag %d", m->label, k->name,
                       (int)e.truncated);
        sdx_prompt_embeds_free(&e);
    }
    /* without CFG there are no negatives */
    sdx_prompt_params_t p;
    sdx_prompt_params_init(&p);
    p.prompt = &P;
    p.do_cfg = false;
    sdx_prompt_embeds_t e;
    int rc = sdx_prompt_encode(&te, &p, &e);
    sdx_tensor_t *r = sdx_test_get(ref, "default.prompt_embeds");
    sdx_test_check(rc == 0 && !e.negative_prompt_embeds && !e.negative_pooled_prompt_embeds && r &&
                       sdx_test_rel_l2(e.prompt_embeds, r) <= TOL,
                   "%s: do_cfg=false gives prompt_embeds only", m->label);
    sdx_tensor_free(&r);
    sdx_prompt_embeds_free(&e);
    /* clip_skip beyond the encoder depth is an error, not a crash */
    p.clip_skip = 10;
    rc = sdx_prompt_encode(&te, &p, &e);
    sdx_test_check(rc == -1, "%s: clip_skip 10 rejected (%s)", m->label, sdx_last_error());
}

/* Append the textual-inversion rows to a token embedding table. */
static bool s_extend(sdx_weights_t *w, sdx_tensor_t *rows)
{
    const char *n = "text_model.embeddings.token_embedding.weight";
    sdx_tensor_t *parts[2] = {sdx_weights_get(w, n), rows}, *cat = NULL;
    if (!parts[0] || sdx_cat(NULL, &cat, parts, 2, 0) != 0)
        return false;
    return sdx_weights_put(w, n, cat) == 0;
}

static void s_check_textual_inversion(text_models_t *m)
{
    sdx_safetensors_t *ti = sdx_test_open("ti/tiny_ti.safetensors");
    sdx_safetensors_t *ref = sdx_test_open("ref/pipeline/textual_inversion.safetensors");
    sdx_tensor_t *l = sdx_test_get(ti, "clip_l"), *g = sdx_test_get(ti, "clip_g");
    bool ok = l && g && s_extend(m->w1, l) && s_extend(m->w2, g);
    sdx_clip_destroy(&m->te1);
    sdx_clip_destroy(&m->te2);
    m->te1 = sdx_clip_new(&m->cfg1, m->w1, "text_encoder");
    m->te2 = sdx_clip_new(&m->cfg2, m->w2, "text_encoder_2");
    ok = ok && m->te1 && m->te2;
    const char *toks[2] = {"<tiny-ti>", "<tiny-ti>_1"};
    for (int i = 0; i < 2 && ok; i++)
        ok = sdx_tokenizer_add_token(m->tok1, toks[i], false, NULL) == 0 &&
             sdx_tokenizer_add_token(m->tok2, toks[i], false, NULL) == 0;
    if (!sdx_test_check(ok, "textual inversion set up (%s)", ok ? "ok" : sdx_last_error()))
        goto done;
    sdx_text_encoders_t te = s_te(m);
    sdx_prompt_params_t p;
    sdx_prompt_params_init(&p);
    const char *prompt = "a photo of <tiny-ti> <tiny-ti>_1 on a table"; /* maybe_convert_prompt */
    p.prompt = &prompt;
    p.negative = &NEG;
    sdx_prompt_embeds_t e;
    int rc = sdx_prompt_encode(&te, &p, &e);
    sdx_tensor_t *r1 = sdx_test_get(ref, "ti_prompt_embeds");
    sdx_tensor_t *r2 = sdx_test_get(ref, "ti_pooled_prompt_embeds");
    if (sdx_test_check(rc == 0, "encode textual-inversion prompt (%s)",
                       rc ? sdx_last_error() : "ok") &&
        r1 && r2) {
        sdx_test_close(e.prompt_embeds, r1, TOL, "ti_prompt_embeds (added tokens)");
        sdx_test_close(e.pooled_prompt_embeds, r2, TOL,
                       "ti_pooled_prompt_embeds (argmax pooling on id 49409)");
    }
    sdx_tensor_free(&r1);
    sdx_tensor_free(&r2);
    sdx_prompt_embeds_free(&e);
done:
    sdx_tensor_free(&l);
    sdx_tensor_free(&g);
    sdx_safetensors_close(&ti);
    sdx_safetensors_close(&ref);
}

/* The refiner's text side: text_encoder_2 only. */
static void s_check_te2_only(const text_models_t *m)
{
    sdx_text_encoders_t te = {NULL, NULL, m->te2, m->tok2};
    sdx_prompt_params_t p;
    sdx_prompt_params_init(&p);
    p.prompt = &P;
    p.negative = &NEG;
    sdx_prompt_embeds_t e;
    int rc = sdx_prompt_encode(&te, &p, &e);
    sdx_test_check(rc == 0 && sdx_tensor_size(e.prompt_embeds, 2) == m->cfg2.hidden_size &&
                       sdx_tensor_size(e.negative_pooled_prompt_embeds, 1) ==
                           m->cfg2.projection_dim,
                   "text_encoder_2 only (refiner): embeds [1, 77, %d]", m->cfg2.hidden_size);
    sdx_prompt_embeds_free(&e);
}

/* The default case's tensors, for comparing layouts with each other. */
static void s_default(const text_models_t *m, sdx_prompt_embeds_t *e)
{
    sdx_text_encoders_t te = s_te(m);
    sdx_prompt_params_t p;
    sdx_prompt_params_init(&p);
    p.prompt = &P;
    p.negative = &NEG;
    if (sdx_prompt_encode(&te, &p, e) != 0)
        memset(e, 0, sizeof *e);
}

/* bfloat16 weights compute in bfloat16 (CPU): same graph, ~3 significant
   digits, so only a loose 3e-2 bound and the dtype are checked. */
static void s_check_bf16(sdx_safetensors_t *ref)
{
    text_models_t m;
    if (!text_models_load(&m, 0, SDX_BF16)) {
        text_models_free(&m);
        return;
    }
    sdx_prompt_embeds_t e;
    s_default(&m, &e);
    sdx_tensor_t *r = sdx_test_get(ref, "default.prompt_embeds");
    sdx_tensor_t *rp = sdx_test_get(ref, "default.pooled_prompt_embeds");
    double d1 = e.prompt_embeds && r ? sdx_test_rel_l2(e.prompt_embeds, r) : 1;
    double d2 = e.pooled_prompt_embeds && rp ? sdx_test_rel_l2(e.pooled_prompt_embeds, rp) : 1;
    sdx_test_check(e.prompt_embeds && sdx_tensor_dtype(e.prompt_embeds) == SDX_BF16 && d1 < 3e-2 &&
                       d2 < 3e-2,
                   "bf16 weights: bf16 outputs, rel L2 %.2e / %.2e (< 3e-2)", d1, d2);
    sdx_tensor_free(&r);
    sdx_tensor_free(&rp);
    sdx_prompt_embeds_free(&e);
    text_models_free(&m);
}

int main(void)
{
    sdx_prompt_embeds_t first = {0};
    sdx_safetensors_t *ref = sdx_test_open("ref/encode_prompt.safetensors");
    sdx_inference_guard_t *g = sdx_inference_guard_new();
    int64_t live0 = sdx_tensor_live_count();
    int layouts = 0;
    for (int layout = 0; layout < TEXT_LAYOUTS; layout++) {
        text_models_t m;
        if (!text_models_load(&m, layout, SDX_F32)) {
            text_models_free(&m);
            continue;
        }
        layouts++;
        s_check_cases(ref, &m);
        /* every layout gives the same numbers (same weights, same graph) */
        sdx_prompt_embeds_t e;
        s_default(&m, &e);
        if (layout == 0) {
            first = e;
        } else {
            double d =
                first.prompt_embeds && e.prompt_embeds
                    ? sdx_test_max_abs(first.prompt_embeds, e.prompt_embeds) +
                          sdx_test_max_abs(first.negative_prompt_embeds, e.negative_prompt_embeds) +
                          sdx_test_max_abs(first.pooled_prompt_embeds, e.pooled_prompt_embeds)
                    : 1;
            sdx_test_check(d <= 1e-6, "%s: same result as the direct read (max |diff| %.1e)",
                           m.label, d);
            sdx_prompt_embeds_free(&e);
        }
        if (layout == 0) {
            s_check_te2_only(&m);
            s_check_textual_inversion(&m);
        }
        text_models_free(&m);
    }
    printf("layouts tested: %d of %d\n", layouts, TEXT_LAYOUTS);
    sdx_prompt_embeds_free(&first);
    s_check_bf16(ref);
    sdx_test_check(sdx_tensor_live_count() == live0, "no tensor handles leaked (%lld live)",
                   (long long)(sdx_tensor_live_count() - live0));
    sdx_inference_guard_free(&g);
    sdx_safetensors_close(&ref);
    return sdx_test_done();
}
