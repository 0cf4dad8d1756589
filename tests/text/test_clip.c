/*  test_clip.c - text encoders against golden ref/text_encoders.safetensors.

    For the 4 reference prompts (p0..p3) and both encoders: every hidden
    state (embeddings + each layer), hidden_states_m2 (what SDXL uses),
    last_hidden_state, pooler_output (te1) and text_embeds (te2), in float32
    on the CPU. Also: our tokenizer reproduces the reference input_ids; the
    4 prompts batched in one forward give the same rows; a request for
    hidden_states[-2] alone (which stops a layer early) gives the same
    tensor; bind errors name the weight.

    Tolerance: relative L2 error <= 1e-4 (||got - ref|| / ||ref||). The
    references come from PyTorch 1.13 float32 on the CPU; we run the same
    ATen kernels but attention as scaled_dot_product (scale inside) instead
    of transformers' eager (q * scale) @ k^T, and BLAS blocking differs with
    batch size, so results differ at float32 rounding level (~1e-6).
    1e-4 leaves margin for other CPUs/BLAS builds while any real mistake
    (wrong activation, missing layer norm, wrong pooling row) is > 1e-2. */
#include "text_util.h"

#include <stdio.h>
#include <string.h>

#define TOL 1e-4

static void s_check_layout(sdx_safetensors_t *ref, text_models_t *m)
{
    sdx_clip_t *te[2] = {m->te1, m->te2};
    const sdx_tokenizer_t *tok[2] = {m->tok1, m->tok2};
    for (int e = 0; e < 2; e++) {
        const int NL = sdx_clip_config(te[e])->num_hidden_layers;
        sdx_tensor_t *batch_ids[4] = {0};
        for (int p = 0; p < 4; p++) {
            char name[128], what[256];
            snprintf(name, sizeof name, "p%d.te%d.input_ids", p, e + 1);
            sdx_tensor_t *ids = sdx_test_get(ref, name);
            if (!ids)
                continue;
            batch_ids[p] = ids;
            sdx_scope_t *S = sdx_scope_new();
            sdx_clip_request_t rq = {.hidden = {-2},
                                     .n_hidden = 1,
                                     .all_hidden = true,
                                     .last_hidden_state = true,
                                     .pooled = true};
            sdx_clip_output_t o;
            int rc = sdx_clip_forward(te[e], S, ids, &rq, &o);
            snprintf(what, sizeof what, "%s: p%d te%d forward", m->label, p, e + 1);
            if (!sdx_test_check(rc == 0, "%s (%s)", what, rc ? sdx_last_error() : "ok")) {
                sdx_scope_free(&S);
                continue;
            }
            snprintf(name, sizeof name, "p%d.te%d.hidden_states", p, e + 1);
            sdx_tensor_t *hs = sdx_test_get(ref, name);
            double worst = 0;
            for (int l = 0; hs && l <= NL; l++) {
                sdx_tensor_t *r = NULL;
                if (sdx_select(S, &r, hs, 0, l) == 0) {
                    double d = sdx_test_rel_l2(o.all_hidden[l], r);
                    worst = d > worst ? d : worst;
                }
            }
            sdx_test_check(hs && o.n_all_hidden == NL + 1 && worst <= TOL,
                           "%s: p%d te%d hidden_states[0..%d] rel L2 max %.2e", m->label, p, e + 1,
                           NL, worst);
            sdx_tensor_free(&hs);
            struct {
                const char *ref;
                sdx_tensor_t *got;
            } cmp[] = {{"hidden_states_m2", o.hidden[0]},
                       {"last_hidden_state", o.last_hidden_state},
                       {e == 0 ? "pooler_output" : "text_embeds",
                        e == 0 ? o.pooler_output : o.text_embeds}};
            for (size_t k = 0; k < sizeof cmp / sizeof cmp[0]; k++) {
                snprintf(name, sizeof name, "p%d.te%d.%s", p, e + 1, cmp[k].ref);
                sdx_tensor_t *r = sdx_test_get(ref, name);
                snprintf(what, sizeof what, "%s: %s", m->label, name);
                if (r)
                    sdx_test_close(cmp[k].got, r, TOL, what);
                sdx_tensor_free(&r);
            }
            /* stopping at the penultimate layer gives the same tensor */
            sdx_clip_request_t rq2 = {.hidden = {-2}, .n_hidden = 1};
            sdx_clip_output_t o2;
            rc = sdx_clip_forward(te[e], NULL, ids, &rq2, &o2);
            sdx_test_check(rc == 0 && !o2.last_hidden_state && !o2.pooler_output &&
                               sdx_test_max_abs(o2.hidden[0], o.hidden[0]) == 0.0,
                           "%s: p%d te%d hidden[-2] alone (early stop) identical", m->label, p,
                           e + 1);
            sdx_clip_output_free(&o2);
            sdx_scope_free(&S);

            /* our tokenizer gives the reference ids */
            static const char *const prompts[4] = {
                "a photo of a cat", "", "A red car parked under a tree, sunset lighting!",
                "digital art: (castle:1.2), 4k"};
            int64_t mine[SDX_CLIP_MAX_LENGTH], want[SDX_CLIP_MAX_LENGTH];
            bool same = sdx_tokenizer_encode(tok[e], prompts[p], mine, SDX_CLIP_MAX_LENGTH, NULL,
                                             NULL) == 0 &&
                        sdx_to_host(ids, SDX_I64, want, sizeof want) == 0 &&
                        memcmp(mine, want, sizeof want) == 0;
            sdx_test_check(same, "%s: tokenizer_%d ids of p%d equal reference input_ids", m->label,
                           e + 1, p);
        }
        /* all four prompts in one batch */
        sdx_scope_t *S = sdx_scope_new();
        sdx_tensor_t *ids4 = NULL;
        sdx_clip_output_t o;
        sdx_clip_request_t rq = {.hidden = {-2}, .n_hidden = 1, .pooled = true};
        int rc = -1;
        if (batch_ids[0] && batch_ids[1] && batch_ids[2] && batch_ids[3] &&
            sdx_cat(S, &ids4, batch_ids, 4, 0) == 0)
            rc = sdx_clip_forward(te[e], S, ids4, &rq, &o);
        double worst = rc == 0 ? 0 : 1;
        for (int p = 0; rc == 0 && p < 4; p++) {
            char name[128];
            sdx_tensor_t *row = NULL, *prow = NULL;
            snprintf(name, sizeof name, "p%d.te%d.hidden_states_m2", p, e + 1);
            sdx_tensor_t *r = sdx_test_get(ref, name);
            snprintf(name, sizeof name, "p%d.te%d.%s", p, e + 1,
                     e == 0 ? "pooler_output" : "text_embeds");
            sdx_tensor_t *rp = sdx_test_get(ref, name);
            if (r && rp && sdx_narrow(S, &row, o.hidden[0], 0, p, 1) == 0 &&
                sdx_narrow(S, &prow, e == 0 ? o.pooler_output : o.text_embeds, 0, p, 1) == 0) {
                double d1 = sdx_test_rel_l2(row, r), d2 = sdx_test_rel_l2(prow, rp);
                worst = d1 > worst ? d1 : worst;
                worst = d2 > worst ? d2 : worst;
            } else {
                worst = 1;
            }
            sdx_tensor_free(&r);
            sdx_tensor_free(&rp);
        }
        sdx_test_check(worst <= TOL, "%s: te%d batch of 4 in one forward, rel L2 max %.2e",
                       m->label, e + 1, worst);
        sdx_scope_free(&S);
        for (int p = 0; p < 4; p++)
            sdx_tensor_free(&batch_ids[p]);
    }
}

static void s_check_errors(const text_models_t *m)
{
    sdx_weights_t *w = sdx_weights_new();
    for (size_t i = 0; i < sdx_weights_count(m->w2); i++) {
        const char *n = sdx_weights_name_at(m->w2, i);
        sdx_tensor_t *t = NULL;
        if (strcmp(n, "text_model.encoder.layers.3.mlp.fc1.weight") == 0)
            continue;
        if (sdx_alias(NULL, &t, sdx_weights_tensor_at(m->w2, i)) == 0)
            sdx_weights_put(w, n, t);
    }
    sdx_clip_t *c = sdx_clip_new(&m->cfg2, w, "text_encoder_2");
    sdx_test_check(!c && strstr(sdx_last_error(), "layers.3.mlp.fc1.weight"),
                   "missing weight named in the error (%s)", sdx_last_error());
    sdx_clip_destroy(&c);
    sdx_weights_free(&w);

    sdx_clip_config_t bad = m->cfg2;
    bad.hidden_size = 30;
    c = sdx_clip_new(&bad, m->w2, "text_encoder_2");
    sdx_test_check(!c && strstr(sdx_last_error(), "expected"), "shape mismatch reported (%s)",
                   sdx_last_error());
    sdx_clip_destroy(&c);

    int64_t ids[78] = {0};
    int64_t shape[2] = {1, 78};
    sdx_tensor_t *t = NULL;
    sdx_clip_output_t o;
    sdx_clip_request_t rq = {.hidden = {-2}, .n_hidden = 1};
    sdx_from_host(NULL, &t, ids, SDX_I64, shape, 2);
    int rc = sdx_clip_forward(m->te1, NULL, t, &rq, &o);
    sdx_test_check(rc == -1, "78 tokens rejected (%s)", sdx_last_error());
    rq.hidden[0] = -9;
    shape[1] = 77;
    sdx_tensor_free(&t);
    sdx_from_host(NULL, &t, ids, SDX_I64, shape, 2);
    rc = sdx_clip_forward(m->te1, NULL, t, &rq, &o);
    sdx_test_check(rc == -1, "hidden_states[-9] of a 5-layer encoder rejected (%s)",
                   sdx_last_error());
    sdx_tensor_free(&t);
}

int main(void)
{
    sdx_safetensors_t *ref = sdx_test_open("ref/text_encoders.safetensors");
    sdx_inference_guard_t *g = sdx_inference_guard_new();
    int64_t live0 = sdx_tensor_live_count();
    for (int layout = 0; layout < TEXT_LAYOUTS; layout++) {
        text_models_t m;
        if (!text_models_load(&m, layout, SDX_F32)) {
            if (layout > 0 && !m.model)
                printf("note: layout %d not available in this build\n", layout);
            text_models_free(&m);
            continue;
        }
        s_check_layout(ref, &m);
        if (layout == 0)
            s_check_errors(&m);
        text_models_free(&m);
    }
    sdx_test_check(sdx_tensor_live_count() == live0, "no tensor handles leaked (%lld live)",
                   (long long)(sdx_tensor_live_count() - live0));
    sdx_inference_guard_free(&g);
    sdx_safetensors_close(&ref);
    return sdx_test_done();
}
