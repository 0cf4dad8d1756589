/*  text_util.c - see text_util.h. */
#include "text_util.h"

#include <stdio.h>
#include <string.h>

/* Weights read straight from the safetensors file; a read failure is a
   failed check here (the nets tests only print it). */
static sdx_weights_t *s_weights(const char *rel, sdx_dtype_t dt)
{
    char err[512];
    sdx_weights_t *w = sdx_test_weights(rel, dt, err, sizeof err);
    if (!w && err[0])
        sdx_test_check(false, "read %s (%s)", rel, err);
    return w;
}

static bool s_finish(text_models_t *m, const sdx_weights_t *w1, const sdx_weights_t *w2,
                     const char *tok1_dir, const char *tok2_dir)
{
    char d1[4096], d2[4096];
    snprintf(d1, sizeof d1, "%s", tok1_dir);
    snprintf(d2, sizeof d2, "%s", tok2_dir);
    m->te1 = sdx_clip_new(&m->cfg1, w1, "text_encoder");
    sdx_test_check(m->te1 != NULL, "%s: bind text_encoder (%s)", m->label,
                   m->te1 ? "ok" : sdx_last_error());
    m->te2 = sdx_clip_new(&m->cfg2, w2, "text_encoder_2");
    sdx_test_check(m->te2 != NULL, "%s: bind text_encoder_2 (%s)", m->label,
                   m->te2 ? "ok" : sdx_last_error());
    m->tok1 = sdx_tokenizer_load(d1);
    sdx_test_check(m->tok1 != NULL, "%s: tokenizer %s (%s)", m->label, d1,
                   m->tok1 ? "ok" : sdx_last_error());
    m->tok2 = sdx_tokenizer_load(d2);
    sdx_test_check(m->tok2 != NULL, "%s: tokenizer_2 %s (%s)", m->label, d2,
                   m->tok2 ? "ok" : sdx_last_error());
    return m->te1 && m->te2 && m->tok1 && m->tok2;
}

bool text_models_load(text_models_t *m, int layout, sdx_dtype_t dtype)
{
    memset(m, 0, sizeof *m);
    if (layout == 0) {
        m->label = "direct safetensors";
        sdx_clip_config_sdxl(&m->cfg1, 1);
        sdx_clip_config_sdxl(&m->cfg2, 2);
        char p[4096];
        snprintf(p, sizeof p, "%s", sdx_test_path("model/text_encoder/config.json"));
        bool ok = sdx_clip_config_read(&m->cfg1, p) == 0;
        snprintf(p, sizeof p, "%s", sdx_test_path("model/text_encoder_2/config.json"));
        ok = ok && sdx_clip_config_read(&m->cfg2, p) == 0;
        if (!sdx_test_check(ok, "read text encoder configs (%s)", ok ? "ok" : sdx_last_error()))
            return false;
        m->w1 = s_weights("model/text_encoder/model.safetensors", dtype);
        m->w2 = s_weights("model/text_encoder_2/model.safetensors", dtype);
        if (!m->w1 || !m->w2)
            return false;
        char t1[4096], t2[4096];
        snprintf(t1, sizeof t1, "%s", sdx_test_path("model/tokenizer"));
        snprintf(t2, sizeof t2, "%s", sdx_test_path("model/tokenizer_2"));
        return s_finish(m, m->w1, m->w2, t1, t2);
    }
    char path[4096], cfgdir[4096];
    sdx_load_opts_t o;
    sdx_load_opts_init(&o);
    o.dtype = dtype;
    o.components = SDX_COMP_TE1 | SDX_COMP_TE2;
    if (layout == 1) {
        m->label = "sdx_model_load(diffusers folder)";
        snprintf(path, sizeof path, "%s", sdx_test_path("model"));
        o.path = path;
    } else {
        m->label = "sdx_model_load(single file)";
        snprintf(path, sizeof path, "%s", sdx_test_path("model_single_file/tiny_sdxl.safetensors"));
        snprintf(cfgdir, sizeof cfgdir, "%s", sdx_test_path("model"));
        o.path = path;
        o.config_dir = cfgdir;
    }
    m->model = sdx_model_load(&o);
    if (!sdx_test_check(m->model && m->model->te1 && m->model->te2, "%s (%s)", m->label,
                        m->model ? "ok" : sdx_last_error()))
        return false;
    m->cfg1 = m->model->te1_cfg;
    m->cfg2 = m->model->te2_cfg;
    sdx_test_check(m->model->tokenizer_dir[0] && m->model->tokenizer2_dir[0],
                   "%s: tokenizer folders known ('%s', '%s')", m->label, m->model->tokenizer_dir,
                   m->model->tokenizer2_dir);
    return s_finish(m, m->model->te1, m->model->te2, m->model->tokenizer_dir,
                    m->model->tokenizer2_dir);
}

void text_models_free(text_models_t *m)
{
    sdx_clip_destroy(&m->te1);
    sdx_clip_destroy(&m->te2);
    sdx_tokenizer_destroy(&m->tok1);
    sdx_tokenizer_destroy(&m->tok2);
    sdx_weights_free(&m->w1);
    sdx_weights_free(&m->w2);
    sdx_model_free(&m->model);
}
