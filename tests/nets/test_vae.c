/*  test_vae.c - sdx_vae against golden ref/vae.safetensors (CPU, f32, rel L2
    < 1e-4): decode (batch 1 and 2, sliced), encode (mean, std, logvar),
    force_upcast of f16 weights, bf16 smoke run, weight validation errors, no
    leaked tensors, and (when the loader is built) sdx_model_load in both
    layouts. */
#include "nets_util.h"
#include "sdx_vae.h"

#include <stdio.h>
#include <string.h>

#define TOL 1e-4

typedef struct {
    sdx_tensor_t *lat, *dec, *lat2, *dec2, *img, *mean, *std, *logvar;
} ref_t;

static int s_load_ref(ref_t *r)
{
    sdx_safetensors_t *st = sdx_test_open("ref/vae.safetensors");
    if (!st)
        return -1;
    r->lat = sdx_test_get(st, "latents");
    r->dec = sdx_test_get(st, "decoded");
    r->lat2 = sdx_test_get(st, "latents_batch2");
    r->dec2 = sdx_test_get(st, "decoded_batch2");
    r->img = sdx_test_get(st, "image");
    r->mean = sdx_test_get(st, "enc_mean");
    r->std = sdx_test_get(st, "enc_std");
    r->logvar = sdx_test_get(st, "enc_logvar");
    sdx_safetensors_close(&st);
    return r->lat && r->dec && r->lat2 && r->dec2 && r->img && r->mean && r->std && r->logvar ? 0
                                                                                              : -1;
}

static void s_free_ref(ref_t *r)
{
    sdx_tensor_t **all[] = {&r->lat, &r->dec,  &r->lat2, &r->dec2,
                            &r->img, &r->mean, &r->std,  &r->logvar};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        sdx_tensor_free(all[i]);
}

static void s_parity(sdx_vae_t *v, const ref_t *r, double tol, const char *what)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *d = NULL, *d2 = NULL, *z = NULL, *dz = NULL, *m = NULL, *lv = NULL, *sd = NULL;
    char buf[160];
    int rc = sdx_vae_decode_latents(v, S, &d, r->lat);
    if (sdx_test_check(rc == 0, "%s: decode_latents (%s)", what, rc ? sdx_last_error() : "ok")) {
        snprintf(buf, sizeof buf, "%s: decoded", what);
        sdx_test_close(d, r->dec, tol, buf);
    }
    /* decode() takes latents already divided by the scaling factor */
    sdx_div_scalar(S, &z, r->lat, sdx_vae_config(v)->scaling_factor);
    rc = sdx_vae_decode(v, S, &dz, z);
    if (sdx_test_check(rc == 0, "%s: decode (%s)", what, rc ? sdx_last_error() : "ok")) {
        snprintf(buf, sizeof buf, "%s: decode(latents / scaling_factor)", what);
        sdx_test_close(dz, r->dec, tol, buf);
    }
    rc = sdx_vae_decode_latents(v, S, &d2, r->lat2);
    if (sdx_test_check(rc == 0, "%s: decode batch 2 (%s)", what, rc ? sdx_last_error() : "ok")) {
        snprintf(buf, sizeof buf, "%s: decoded_batch2", what);
        sdx_test_close(d2, r->dec2, tol, buf);
    }
    rc = sdx_vae_encode(v, S, &m, &lv, &sd, r->img);
    if (sdx_test_check(rc == 0, "%s: encode (%s)", what, rc ? sdx_last_error() : "ok")) {
        snprintf(buf, sizeof buf, "%s: enc_mean", what);
        sdx_test_close(m, r->mean, tol, buf);
        snprintf(buf, sizeof buf, "%s: enc_std", what);
        sdx_test_close(sd, r->std, tol, buf);
        snprintf(buf, sizeof buf, "%s: enc_logvar", what);
        sdx_test_close(lv, r->logvar, tol, buf);
    }
    sdx_scope_free(&S);
}

static void s_test_errors(const sdx_vae_config_t *cfg, const sdx_weights_t *w)
{
    const char *victim = "decoder.up_blocks.2.resnets.1.conv2.bias";
    sdx_weights_t *w2 = nets_weights_edit(w, victim, NULL, NULL);
    sdx_vae_t *v = sdx_vae_new(cfg, w2);
    sdx_test_check(!v && strstr(sdx_last_error(), victim), "missing weight is named: %s",
                   sdx_last_error());
    sdx_vae_free(&v);
    sdx_weights_free(&w2);

    const char *q = "encoder.mid_block.attentions.0.to_q.weight";
    w2 = nets_weights_edit(w, q, q, sdx_weights_get(w, "encoder.conv_in.bias"));
    v = sdx_vae_new(cfg, w2);
    sdx_test_check(!v && strstr(sdx_last_error(), q) && strstr(sdx_last_error(), "shape"),
                   "mis-shaped weight is named: %s", sdx_last_error());
    sdx_vae_free(&v);
    sdx_weights_free(&w2);

    /* a decoder-only VAE builds and refuses to encode */
    sdx_weights_t *dec = sdx_weights_new();
    for (size_t i = 0; i < sdx_weights_count(w); i++) {
        const char *n = sdx_weights_name_at(w, i);
        sdx_tensor_t *t = NULL;
        if (strncmp(n, "encoder.", 8) == 0 || strncmp(n, "quant_conv.", 11) == 0)
            continue;
        sdx_alias(NULL, &t, sdx_weights_tensor_at(w, i));
        sdx_weights_put(dec, n, t);
    }
    v = sdx_vae_new(cfg, dec);
    sdx_test_check(v && !sdx_vae_has_encoder(v), "decoder-only VAE builds (%s)",
                   v ? "ok" : sdx_last_error());
    if (v) {
        sdx_tensor_t *m = NULL;
        sdx_scope_t *S = sdx_scope_new();
        sdx_tensor_t *img;
        int64_t s[4] = {1, 3, 16, 16};
        sdx_zeros(S, &img, s, 4, SDX_F32, (sdx_device_t){SDX_CPU, 0});
        sdx_test_check(sdx_vae_encode(v, S, &m, NULL, NULL, img) != 0,
                       "decoder-only VAE refuses to encode: %s", sdx_last_error());
        sdx_scope_free(&S);
    }
    sdx_vae_free(&v);
    sdx_weights_free(&dec);
}

/* Single-file VAEs store the mid-block attention projections as 1x1 convs
   [C, C, 1, 1]; they are taken as the Linear weights they are. */
static void s_test_conv_attn(const sdx_vae_config_t *cfg, const sdx_weights_t *w, const ref_t *r)
{
    sdx_weights_t *wc = sdx_weights_new();
    for (size_t i = 0; wc && i < sdx_weights_count(w); i++) {
        const char *n = sdx_weights_name_at(w, i);
        sdx_tensor_t *t = sdx_weights_tensor_at(w, i), *c = NULL;
        bool proj = strstr(n, "mid_block.attentions.0.to_") && sdx_tensor_ndim(t) == 2;
        int64_t s4[4] = {sdx_tensor_size(t, 0), sdx_tensor_size(t, -1), 1, 1};
        if ((proj ? sdx_reshape(NULL, &c, t, s4, 4) : sdx_alias(NULL, &c, t)) != 0 ||
            sdx_weights_put(wc, n, c) != 0)
            sdx_weights_free(&wc);
    }
    sdx_vae_t *v = wc ? sdx_vae_new(cfg, wc) : NULL;
    if (sdx_test_check(v != NULL, "1x1-conv attention weights: build (%s)",
                       v ? "ok" : sdx_last_error()))
        s_parity(v, r, TOL, "1x1-conv attention weights");
    sdx_vae_free(&v);
    sdx_weights_free(&wc);
}

static void s_test_leaks(sdx_vae_t *v, const ref_t *r)
{
    int64_t before = sdx_tensor_live_count();
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *d = NULL, *m = NULL, *sd = NULL;
    int rc = sdx_vae_decode_latents(v, S, &d, r->lat2);
    rc |= sdx_vae_encode(v, S, &m, NULL, &sd, r->img);
    int64_t during = sdx_tensor_live_count();
    sdx_scope_free(&S);
    int64_t after = sdx_tensor_live_count();
    sdx_test_check(rc == 0 && during == before + 3,
                   "decode + encode leave only their outputs alive (%lld -> %lld)",
                   (long long)before, (long long)during);
    sdx_test_check(after == before, "live tensors back to %lld (%lld)", (long long)before,
                   (long long)after);
}

static void s_test_upcast(const sdx_vae_config_t *cfg, const sdx_weights_t *w, const ref_t *r)
{
    sdx_weights_t *wh = nets_weights_cast(w, SDX_F16);
    sdx_vae_t *v = wh ? sdx_vae_new(cfg, wh) : NULL;
    if (sdx_test_check(v != NULL, "f16 weights + force_upcast: build (%s)",
                       v ? "ok" : sdx_last_error())) {
        sdx_test_check(sdx_vae_dtype(v) == SDX_F32, "f16 weights + force_upcast computes in f32");
        /* the VAE holds f32 copies: it must not need the f16 set any more */
        sdx_weights_free(&wh);
        sdx_scope_t *S = sdx_scope_new();
        sdx_tensor_t *lat16, *d = NULL;
        sdx_to_dtype(S, &lat16, r->lat, SDX_F16);
        int rc = sdx_vae_decode_latents(v, S, &d, lat16);
        if (sdx_test_check(rc == 0, "upcast decode of f16 latents (%s)",
                           rc ? sdx_last_error() : "ok")) {
            sdx_test_check(sdx_tensor_dtype(d) == SDX_F32, "upcast decode returns f32");
            double e = sdx_test_rel_l2(d, r->dec);
            sdx_test_check(
                e < 1e-2, "upcast decode close to the reference (rel L2 %.3g, f16-rounded weights)",
                e);
        }
        sdx_scope_free(&S);
    }
    sdx_vae_free(&v);
    sdx_weights_free(&wh);

    /* without force_upcast the f16 weights are used as they are */
    sdx_vae_config_t c2 = *cfg;
    c2.force_upcast = false;
    wh = nets_weights_cast(w, SDX_F16);
    v = wh ? sdx_vae_new(&c2, wh) : NULL;
    sdx_test_check(v && sdx_vae_dtype(v) == SDX_F16,
                   "f16 weights, no force_upcast: computes in f16");
    sdx_vae_free(&v);
    sdx_weights_free(&wh);
}

static void s_test_bf16(const sdx_vae_config_t *cfg, const sdx_weights_t *w, const ref_t *r)
{
    sdx_weights_t *wb = nets_weights_cast(w, SDX_BF16);
    sdx_vae_t *v = wb ? sdx_vae_new(cfg, wb) : NULL;
    if (!sdx_test_check(v != NULL, "bf16: build (%s)", v ? "ok" : sdx_last_error()))
        goto done;
    sdx_test_check(sdx_vae_dtype(v) == SDX_BF16, "bf16 weights are not upcast");
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *d = NULL;
    int rc = sdx_vae_decode_latents(v, S, &d, r->lat);
    if (rc != 0 && nets_missing_kernel(sdx_last_error())) {
        printf("skip bf16 decode on this CPU libtorch: %s\n", sdx_last_error());
    } else if (sdx_test_check(rc == 0, "bf16 decode (%s)", rc ? sdx_last_error() : "ok")) {
        int64_t shape[4] = {1, 3, 128, 128};
        sdx_test_check(nets_finite_shape(d, shape, 4), "bf16: finite output [1,3,128,128]");
        double e = sdx_test_rel_l2(d, r->dec);
        sdx_test_check(e < 0.1, "bf16 decode near the reference (rel L2 %.3g < 0.1)", e);
    }
    sdx_scope_free(&S);
done:
    sdx_vae_free(&v);
    sdx_weights_free(&wb);
}

static void s_test_model_load(const ref_t *r)
{
    for (int i = 0; i < NETS_LAYOUTS; i++) {
        const char *label;
        sdx_model_t *m = nets_model_load(i, SDX_COMP_VAE, &label);
        if (!m)
            continue;
        sdx_vae_t *v = sdx_vae_new(&m->vae_cfg, m->vae);
        if (sdx_test_check(v != NULL, "vae from %s (%s)", label, v ? "ok" : sdx_last_error()))
            s_parity(v, r, TOL, label);
        sdx_vae_free(&v);
        sdx_model_free(&m);
    }
}

int main(void)
{
    ref_t r = {0};
    sdx_set_num_threads(2);
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    sdx_vae_config_t cfg;
    if (!sdx_test_check(nets_vae_config(&cfg, "model/vae") == 0, "vae config (%s)",
                        sdx_last_error()))
        return sdx_test_done();
    sdx_test_check(cfg.n_levels == 4 && cfg.norm_num_groups == 4 && cfg.force_upcast &&
                       cfg.scaling_factor == 0.13025,
                   "config: 4 levels, 4 groups, force_upcast, scaling 0.13025");
    sdx_weights_t *w =
        nets_weights("model/vae/diffusion_pytorch_model.safetensors", SDX_DTYPE_COUNT);
    if (!w || s_load_ref(&r) != 0) {
        sdx_test_check(false, "golden weights and reference");
        goto out;
    }
    sdx_vae_t *v = sdx_vae_new(&cfg, w);
    if (!sdx_test_check(v != NULL, "build (%s)", v ? "ok" : sdx_last_error()))
        goto out;
    sdx_test_check(sdx_vae_dtype(v) == SDX_F32 && sdx_vae_has_encoder(v),
                   "computes in f32, has an encoder");

    s_parity(v, &r, TOL, "fused sdpa");
    sdx_nn_ctx_t *cx = sdx_vae_options(v);
    cx->fused_sdpa = false;
    cx->attn_chunk = 5;
    s_parity(v, &r, TOL, "explicit attention, 5-query chunks");
    sdx_nn_ctx_init(cx);
    sdx_vae_set_slicing(v, true);
    s_parity(v, &r, TOL, "sliced decode");
    sdx_vae_set_slicing(v, false);
    cx->channels_last = true;
    s_parity(v, &r, TOL, "channels-last");
    sdx_nn_ctx_init(cx);

    s_test_leaks(v, &r);
    sdx_vae_free(&v);
    s_test_errors(&cfg, w);
    s_test_conv_attn(&cfg, w, &r);
    s_test_upcast(&cfg, w, &r);
    s_test_bf16(&cfg, w, &r);
    s_test_model_load(&r);
out:
    s_free_ref(&r);
    sdx_weights_free(&w);
    sdx_inference_guard_free(&guard);
    return sdx_test_done();
}
