/*  sdx_refiner.c - base/refiner handoff checks, cut schedule and start
    latents (see sdx_refiner.h). */
#include "sdx_refiner.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int sdx_refiner_complete(sdx_model_t *m, const char *base_path)
{
    if (!base_path || !*base_path)
        return 0;
    unsigned need = (m->te2 ? 0u : SDX_COMP_TE2) | (m->vae ? 0u : SDX_COMP_VAE);
    if (!need && m->tokenizer2_dir[0] && m->scheduler_config[0])
        return 0;
    sdx_load_opts_t lo;
    sdx_load_opts_init(&lo);
    lo.path = base_path;
    lo.dtype = m->dtype;
    lo.device = m->device;
    lo.components = need ? need : SDX_COMP_VAE;
    sdx_model_t *b = sdx_model_load(&lo);
    if (!b)
        return -1;
    if (!m->te2 && b->te2) {
        m->te2 = b->te2;
        b->te2 = NULL;
        m->te2_cfg = b->te2_cfg;
    }
    if (!m->vae && b->vae) {
        m->vae = b->vae;
        b->vae = NULL;
        m->vae_cfg = b->vae_cfg;
    }
    if (!m->tokenizer2_dir[0])
        snprintf(m->tokenizer2_dir, sizeof m->tokenizer2_dir, "%s", b->tokenizer2_dir);
    if (!m->scheduler_config[0])
        snprintf(m->scheduler_config, sizeof m->scheduler_config, "%s", b->scheduler_config);
    sdx_model_free(&b);
    return 0;
}

static bool s_frac_ok(double f)
{
    return f == 0 || (f > 0 && f < 1); /* NaN fails both */
}

int sdx_refiner_check(const sdxl_gen_params_t *p, int channels, int width, int height)
{
    if (!s_frac_ok(p->denoising_end))
        return sdx_set_error("denoising_end: must be in (0, 1) (0: unused), got %g",
                             p->denoising_end);
    if (!s_frac_ok(p->denoising_start))
        return sdx_set_error("denoising_start: must be in (0, 1) (0: unused), got %g",
                             p->denoising_start);
    if (p->denoising_start > 0 && !p->init_latents)
        return sdx_set_error("denoising_start: needs init_latents (the base's handoff)");
    if (!p->init_latents)
        return 0;
    if (p->denoising_start == 0)
        return sdx_set_error("init_latents: need denoising_start");
    if (p->init_image)
        return sdx_set_error("init_latents: cannot be combined with init_image");
    const sdx_tensor_t *t = p->init_latents;
    if (sdx_tensor_ndim(t) != 4 || sdx_tensor_size(t, 0) != p->batch ||
        sdx_tensor_size(t, 1) != channels || sdx_tensor_size(t, 2) != height / 8 ||
        sdx_tensor_size(t, 3) != width / 8)
        return sdx_set_error("init_latents: must be [%d, %d, %d, %d] (batch, channels, "
                             "height/8, width/8)",
                             p->batch, channels, height / 8, width / 8);
    return 0;
}

int sdx_refiner_schedule(sdx_scheduler_t *sch, const sdxl_gen_params_t *p, int *end)
{
    *end = sdx_scheduler_count(sch);
    if (p->init_latents && p->denoising_start > 0 &&
        sdx_scheduler_denoising_start_begin(sch, p->denoising_start) < 0)
        return -1;
    if (p->denoising_end > 0) {
        int n = sdx_scheduler_denoising_end_count(sch, p->denoising_end);
        if (n < 0)
            return -1;
        if (n <= sdx_scheduler_begin_index(sch))
            return sdx_set_error("denoising_end: %g leaves no step after the start",
                                 p->denoising_end);
        *end = n;
    }
    return 0;
}

int sdx_refiner_latents(const sdx_tensor_t *given, sdx_dtype_t dt, sdx_device_t dev,
                        sdx_tensor_t **out)
{
    sdx_scope_t *S = sdx_scope_new();
    if (!S)
        return sdx_set_error("refiner: out of memory");
    sdx_tensor_t *x;
    int rc = -1;
    if (sdx_to(S, &x, given, dt, dev) == 0 && sdx_mul_scalar(NULL, out, x, 1.0) == 0)
        rc = 0;
    sdx_scope_free(&S);
    return rc;
}

int sdxl_refine(sdxl_engine_t *refiner, const sdxl_gen_params_t *base_p, const sdxl_result_t *base_r,
                double aesthetic_score, double negative_aesthetic_score, sdxl_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (!base_r || !base_r->latents || !(base_p->denoising_end > 0 && base_p->denoising_end < 1)) {
        out->input_error = true;
        return sdx_set_error("refiner: the base ran no denoising_end in (0, 1) or kept no latents");
    }
    sdxl_gen_params_t p = *base_p;
    p.denoising_start = base_p->denoising_end;
    p.denoising_end = 0;
    p.decode = true;
    p.init_latents = base_r->latents;
    p.aesthetic_score = aesthetic_score;
    p.negative_aesthetic_score = negative_aesthetic_score;
    p.embeds = NULL; /* the refiner encodes the prompt with its own text_encoder_2 */
    p.init_image = NULL;
    p.controls = NULL;
    p.n_controls = 0;
    int rc = sdxl_generate(refiner, &p, out);
    if (rc == 0) {
        out->steps_done += base_r->steps_done;
        out->encode_ms += base_r->encode_ms;
        out->denoise_ms += base_r->denoise_ms;
        out->total_ms += base_r->total_ms;
    }
    return rc;
}
