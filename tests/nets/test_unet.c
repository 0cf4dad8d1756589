/*  test_unet.c - sdx_unet against golden ref/unet.safetensors (CPU, f32,
    rel L2 < 1e-4), both attention paths, ControlNet residual plumbing,
    weight validation errors, no leaked tensors, f16/bf16 smoke runs, the
    refiner-shaped UNet, and (when the loader is built) sdx_model_load in both
    layouts. */
#include "nets_util.h"
#include "sdx_unet.h"

#include <stdio.h>
#include <string.h>

#define TOL 1e-4

typedef struct {
    sdx_tensor_t *sample, *ehs, *te, *ids, *t_scalar, *t_b, *out_t500, *out_tb;
} ref_t;

static int s_load_ref(ref_t *r)
{
    sdx_safetensors_t *st = sdx_test_open("ref/unet.safetensors");
    if (!st)
        return -1;
    r->sample = sdx_test_get(st, "sample");
    r->ehs = sdx_test_get(st, "encoder_hidden_states");
    r->te = sdx_test_get(st, "text_embeds");
    r->ids = sdx_test_get(st, "time_ids");
    r->t_scalar = sdx_test_get(st, "timestep_scalar");
    r->t_b = sdx_test_get(st, "timesteps_b");
    r->out_t500 = sdx_test_get(st, "out_t500");
    r->out_tb = sdx_test_get(st, "out_tb");
    sdx_safetensors_close(&st);
    return r->sample && r->ehs && r->te && r->ids && r->t_scalar && r->t_b && r->out_t500 &&
                   r->out_tb
               ? 0
               : -1;
}

static void s_free_ref(ref_t *r)
{
    sdx_tensor_t **all[] = {&r->sample,   &r->ehs, &r->te,       &r->ids,
                            &r->t_scalar, &r->t_b, &r->out_t500, &r->out_tb};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        sdx_tensor_free(all[i]);
}

/* Forward with both reference timesteps; compare with tolerance tol (<0: finite only). */
static void s_parity(sdx_unet_t *u, const ref_t *r, double tol, const char *what)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *o1 = NULL, *o2 = NULL;
    int rc1 =
        sdx_unet_forward(u, S, &o1, r->sample, r->t_scalar, r->ehs, r->te, r->ids, NULL, 0, NULL);
    if (!sdx_test_check(rc1 == 0, "%s: forward t=500 (%s)", what, rc1 ? sdx_last_error() : "ok"))
        goto done;
    int rc2 = sdx_unet_forward(u, S, &o2, r->sample, r->t_b, r->ehs, r->te, r->ids, NULL, 0, NULL);
    if (!sdx_test_check(rc2 == 0, "%s: forward t=[981,1] (%s)", what,
                        rc2 ? sdx_last_error() : "ok"))
        goto done;
    char buf[160];
    snprintf(buf, sizeof buf, "%s: out_t500", what);
    sdx_test_close(o1, r->out_t500, tol, buf);
    snprintf(buf, sizeof buf, "%s: out_tb", what);
    sdx_test_close(o2, r->out_tb, tol, buf);
done:
    sdx_scope_free(&S);
}

static void s_test_errors(const sdx_unet_config_t *cfg, const sdx_weights_t *w)
{
    const char *victim = "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight";
    sdx_weights_t *w2 = nets_weights_edit(w, victim, NULL, NULL);
    sdx_unet_t *u = sdx_unet_new(cfg, w2);
    sdx_test_check(!u && strstr(sdx_last_error(), victim) && strstr(sdx_last_error(), "missing"),
                   "missing weight is named: %s", sdx_last_error());
    sdx_unet_free(&u);
    sdx_weights_free(&w2);

    /* a mis-shaped weight: a [24, 24] where [24, 40] is expected */
    const char *k = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    sdx_tensor_t *bad =
        sdx_weights_get(w, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q.weight");
    w2 = nets_weights_edit(w, k, k, bad);
    u = sdx_unet_new(cfg, w2);
    sdx_test_check(!u && strstr(sdx_last_error(), k) && strstr(sdx_last_error(), "shape"),
                   "mis-shaped weight is named: %s", sdx_last_error());
    sdx_unet_free(&u);
    sdx_weights_free(&w2);

    /* a config that does not match the weights */
    sdx_unet_config_t c2 = *cfg;
    c2.layers_per_block = 1;
    u = sdx_unet_new(&c2, w);
    sdx_test_check(!u, "layers_per_block 1 over 2-layer weights refused: %s", sdx_last_error());
    sdx_unet_free(&u);
    c2 = *cfg;
    c2.heads[1] = 5;
    u = sdx_unet_new(&c2, w);
    sdx_test_check(!u, "heads not dividing channels refused: %s", sdx_last_error());
    sdx_unet_free(&u);
}

static void s_test_inputs(sdx_unet_t *u, const ref_t *r)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *ids5, *o;
    sdx_narrow(S, &ids5, r->ids, 1, 0, 5);
    int rc = sdx_unet_forward(u, S, &o, r->sample, r->t_scalar, r->ehs, r->te, ids5, NULL, 0, NULL);
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "add_embedding"),
                   "5 time ids on a 6-id UNet refused: %s", sdx_last_error());
    rc = sdx_unet_forward(u, S, &o, r->sample, r->t_b, r->ehs, NULL, r->ids, NULL, 0, NULL);
    sdx_test_check(rc != 0, "missing text_embeds refused: %s", sdx_last_error());
    sdx_scope_free(&S);
}

static void s_test_controlnet(sdx_unet_t *u, const ref_t *r)
{
    int n = sdx_unet_n_skips(u);
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *res[128], *mid = NULL, *o = NULL, *o2 = NULL;
    /* zero residuals of the right shapes leave the output unchanged; the
       shapes are those of the skips: conv_in, then per level resnets + downsampler */
    const sdx_unet_config_t *c = sdx_unet_config(u);
    int64_t B = sdx_tensor_size(r->sample, 0), H = sdx_tensor_size(r->sample, 2),
            W = sdx_tensor_size(r->sample, 3);
    int k = 0;
    int64_t shape[4] = {B, c->block_out_channels[0], H, W};
    sdx_zeros(S, &res[k++], shape, 4, SDX_F32, (sdx_device_t){SDX_CPU, 0});
    for (int i = 0; i < c->n_levels; i++) {
        shape[1] = c->block_out_channels[i];
        for (int j = 0; j < c->layers_per_block; j++)
            sdx_zeros(S, &res[k++], shape, 4, SDX_F32, (sdx_device_t){SDX_CPU, 0});
        if (i < c->n_levels - 1) {
            shape[2] = (shape[2] + 1) / 2;
            shape[3] = (shape[3] + 1) / 2;
            sdx_zeros(S, &res[k++], shape, 4, SDX_F32, (sdx_device_t){SDX_CPU, 0});
        }
    }
    sdx_test_check(k == n, "skip count %d matches the config's %d", n, k);
    sdx_zeros(S, &mid, shape, 4, SDX_F32, (sdx_device_t){SDX_CPU, 0});
    int rc = sdx_unet_forward(u, S, &o, r->sample, r->t_scalar, r->ehs, r->te, r->ids, res, k, mid);
    if (sdx_test_check(rc == 0, "forward with zero ControlNet residuals (%s)",
                       rc ? sdx_last_error() : "ok"))
        sdx_test_close(o, r->out_t500, TOL, "zero residuals: out_t500 unchanged");
    sdx_full(S, &mid, shape, 4, 0.5, SDX_F32, (sdx_device_t){SDX_CPU, 0});
    rc = sdx_unet_forward(u, S, &o2, r->sample, r->t_scalar, r->ehs, r->te, r->ids, res, k, mid);
    sdx_test_check(rc == 0 && sdx_test_rel_l2(o2, r->out_t500) > 1e-3,
                   "a mid residual changes the output (rel %.3g)",
                   rc == 0 ? sdx_test_rel_l2(o2, r->out_t500) : -1.0);
    rc = sdx_unet_forward(u, S, &o2, r->sample, r->t_scalar, r->ehs, r->te, r->ids, res, k - 1,
                          NULL);
    sdx_test_check(rc != 0, "wrong residual count refused: %s", sdx_last_error());
    sdx_scope_free(&S);
}

static void s_test_leaks(sdx_unet_t *u, const ref_t *r)
{
    int64_t before = sdx_tensor_live_count();
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *o = NULL;
    int rc = sdx_unet_forward(u, S, &o, r->sample, r->t_b, r->ehs, r->te, r->ids, NULL, 0, NULL);
    int64_t during = sdx_tensor_live_count();
    sdx_scope_free(&S);
    int64_t after = sdx_tensor_live_count();
    sdx_test_check(rc == 0 && during == before + 1,
                   "forward leaves only its output alive (%lld -> %lld)", (long long)before,
                   (long long)during);
    sdx_test_check(after == before, "live tensors back to %lld after the scope (%lld)",
                   (long long)before, (long long)after);
    /* a failing forward leaks nothing either */
    rc = sdx_unet_forward(u, NULL, &o, r->sample, r->t_b, r->ehs, r->te, NULL, NULL, 0, NULL);
    sdx_test_check(rc != 0 && sdx_tensor_live_count() == before,
                   "failed forward leaks nothing (%lld)", (long long)sdx_tensor_live_count());
}

static void s_test_half(const sdx_unet_config_t *cfg, const sdx_weights_t *w, const ref_t *r,
                        sdx_dtype_t dt)
{
    const char *name = sdx_dtype_name(dt);
    sdx_weights_t *wh = nets_weights_cast(w, dt);
    sdx_unet_t *u = wh ? sdx_unet_new(cfg, wh) : NULL;
    if (!sdx_test_check(u != NULL, "%s: build (%s)", name, u ? "ok" : sdx_last_error()))
        goto done;
    sdx_test_check(sdx_unet_dtype(u) == dt, "%s: computes in %s", name,
                   sdx_dtype_name(sdx_unet_dtype(u)));
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *o = NULL;
    int rc = sdx_unet_forward(u, S, &o, r->sample, r->t_b, r->ehs, r->te, r->ids, NULL, 0, NULL);
    if (rc != 0 && nets_missing_kernel(sdx_last_error())) {
        printf("skip %s forward on this CPU libtorch: %s\n", name, sdx_last_error());
    } else if (sdx_test_check(rc == 0, "%s: forward (%s)", name, rc ? sdx_last_error() : "ok")) {
        int64_t shape[4];
        sdx_tensor_shape(r->out_tb, shape);
        sdx_test_check(sdx_tensor_dtype(o) == dt, "%s: output dtype", name);
        sdx_test_check(nets_finite_shape(o, shape, 4), "%s: finite output of shape [2,4,16,16]",
                       name);
        double e = sdx_test_rel_l2(o, r->out_tb);
        sdx_test_check(e < 0.1, "%s: close to the f32 reference (rel L2 %.3g < 0.1)", name, e);
    }
    sdx_scope_free(&S);
done:
    sdx_unet_free(&u);
    sdx_weights_free(&wh);
}

/* use_linear_projection = false: the same weights as 1x1 convs must give the
   same output (the conv runs before the flatten instead of the Linear after). */
static void s_test_conv_projection(const sdx_unet_config_t *cfg, const sdx_weights_t *w,
                                   const ref_t *r)
{
    sdx_weights_t *wc = sdx_weights_new();
    for (size_t i = 0; wc && i < sdx_weights_count(w); i++) {
        const char *n = sdx_weights_name_at(w, i);
        sdx_tensor_t *t = sdx_weights_tensor_at(w, i), *c = NULL;
        size_t len = strlen(n);
        bool proj = (len > 15 && strcmp(n + len - 15, ".proj_in.weight") == 0) ||
                    (len > 16 && strcmp(n + len - 16, ".proj_out.weight") == 0);
        int64_t s4[4] = {sdx_tensor_size(t, 0), sdx_tensor_size(t, -1), 1, 1};
        if ((proj ? sdx_reshape(NULL, &c, t, s4, 4) : sdx_alias(NULL, &c, t)) != 0 ||
            sdx_weights_put(wc, n, c) != 0)
            sdx_weights_free(&wc);
    }
    sdx_unet_config_t c2 = *cfg;
    c2.use_linear_projection = false;
    sdx_unet_t *u = wc ? sdx_unet_new(&c2, wc) : NULL;
    if (sdx_test_check(u != NULL, "conv projection: build (%s)", u ? "ok" : sdx_last_error()))
        s_parity(u, r, TOL, "conv projection");
    sdx_unet_free(&u);
    /* linear-projection config over conv weights names the weight */
    u = wc ? sdx_unet_new(cfg, wc) : NULL;
    sdx_test_check(!u && strstr(sdx_last_error(), "proj_in.weight"),
                   "Linear config over 1x1-conv projections refused: %s", sdx_last_error());
    sdx_unet_free(&u);
    sdx_weights_free(&wc);
}

/* upcast_attention: bf16 weights, attention computed in f32. */
static void s_test_upcast_attention(const sdx_unet_config_t *cfg, const sdx_weights_t *w,
                                    const ref_t *r)
{
    sdx_weights_t *wb = nets_weights_cast(w, SDX_BF16);
    sdx_unet_config_t c2 = *cfg;
    c2.upcast_attention = true;
    sdx_unet_t *u = wb ? sdx_unet_new(&c2, wb) : NULL;
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *o = NULL;
    int rc = u ? sdx_unet_forward(u, S, &o, r->sample, r->t_b, r->ehs, r->te, r->ids, NULL, 0, NULL)
               : -1;
    if (rc != 0 && nets_missing_kernel(sdx_last_error())) {
        printf("skip bf16 upcast_attention on this CPU libtorch: %s\n", sdx_last_error());
    } else if (sdx_test_check(rc == 0, "bf16 + upcast_attention: forward (%s)",
                              rc ? sdx_last_error() : "ok")) {
        double e = sdx_test_rel_l2(o, r->out_tb);
        sdx_test_check(sdx_tensor_dtype(o) == SDX_BF16 && e < 0.1,
                       "bf16 + upcast_attention: bf16 output near the reference (rel L2 %.3g)", e);
    }
    sdx_scope_free(&S);
    sdx_unet_free(&u);
    sdx_weights_free(&wb);
}

static void s_test_refiner(void)
{
    sdx_unet_config_t cfg;
    if (!sdx_test_check(nets_unet_config(&cfg, "refiner_unet", true) == 0, "refiner config (%s)",
                        sdx_last_error()))
        return;
    sdx_test_check(cfg.n_levels == 4 && !cfg.down_cross_attn[0] && !cfg.down_cross_attn[3] &&
                       cfg.transformer_layers[1] == 2,
                   "refiner config: 4 levels, DownBlock2D at both ends, 2 transformer layers");
    sdx_weights_t *w =
        nets_weights("refiner_unet/diffusion_pytorch_model.safetensors", SDX_DTYPE_COUNT);
    sdx_unet_t *u = w ? sdx_unet_new(&cfg, w) : NULL;
    if (!sdx_test_check(u != NULL, "refiner: build (%s)", u ? "ok" : sdx_last_error()))
        goto done;
    sdx_generator_t *g = sdx_generator_new(7);
    sdx_scope_t *S = sdx_scope_new();
    sdx_device_t cpu = {SDX_CPU, 0};
    sdx_tensor_t *x, *ehs, *te, *ids, *t, *o = NULL;
    int64_t xs[4] = {2, 4, 16, 24}, es[3] = {2, 77, cfg.cross_attention_dim}, ts[2] = {2, 20};
    float idv[10] = {128, 128, 0, 0, 2.5f, 128, 128, 0, 0, 6.0f};
    int64_t is[2] = {2, 5}, tv[2] = {199, 50}, tsz[1] = {2};
    sdx_randn(S, &x, g, xs, 4, SDX_F32, cpu);
    sdx_randn(S, &ehs, g, es, 3, SDX_F32, cpu);
    sdx_randn(S, &te, g, ts, 2, SDX_F32, cpu);
    sdx_from_host(S, &ids, idv, SDX_F32, is, 2);
    sdx_from_host(S, &t, tv, SDX_I64, tsz, 1);
    int rc = sdx_unet_forward(u, S, &o, x, t, ehs, te, ids, NULL, 0, NULL);
    if (sdx_test_check(rc == 0, "refiner: forward with 5 time ids (%s)",
                       rc ? sdx_last_error() : "ok"))
        sdx_test_check(nets_finite_shape(o, xs, 4), "refiner: finite output [2,4,16,24]");
    /* an odd latent size goes through the upsample-to-skip-size path */
    int64_t odd[4] = {1, 4, 13, 10};
    sdx_tensor_t *xo, *eo, *teo, *io, *oo = NULL;
    sdx_randn(S, &xo, g, odd, 4, SDX_F32, cpu);
    sdx_narrow(S, &eo, ehs, 0, 0, 1);
    sdx_narrow(S, &teo, te, 0, 0, 1);
    sdx_narrow(S, &io, ids, 0, 0, 1);
    rc = sdx_unet_forward(u, S, &oo, xo, t, eo, teo, io, NULL, 0, NULL);
    sdx_test_check(rc != 0, "refiner: 2 timesteps for batch 1 refused (%s)", sdx_last_error());
    sdx_tensor_t *t1;
    sdx_narrow(S, &t1, t, 0, 0, 1);
    rc = sdx_unet_forward(u, S, &oo, xo, t1, eo, teo, io, NULL, 0, NULL);
    if (sdx_test_check(rc == 0, "refiner: odd size 13x10 (%s)", rc ? sdx_last_error() : "ok"))
        sdx_test_check(nets_finite_shape(oo, odd, 4), "refiner: finite output [1,4,13,10]");
    sdx_scope_free(&S);
    sdx_generator_free(&g);
done:
    sdx_unet_free(&u);
    sdx_weights_free(&w);
}

static void s_test_model_load(const ref_t *r)
{
    for (int i = 0; i < NETS_LAYOUTS; i++) {
        const char *label;
        sdx_model_t *m = nets_model_load(i, SDX_COMP_UNET, &label);
        if (!m)
            continue;
        sdx_unet_t *u = sdx_unet_new(&m->unet_cfg, m->unet);
        if (sdx_test_check(u != NULL, "unet from %s (%s)", label, u ? "ok" : sdx_last_error()))
            s_parity(u, r, TOL, label);
        sdx_unet_free(&u);
        sdx_model_free(&m);
    }
}

int main(void)
{
    ref_t r = {0};
    sdx_set_num_threads(2);
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    sdx_unet_config_t cfg;
    if (!sdx_test_check(nets_unet_config(&cfg, "model/unet", false) == 0, "unet config (%s)",
                        sdx_last_error()))
        return sdx_test_done();
    sdx_test_check(cfg.heads[2] == 4 && cfg.transformer_layers[2] == 2 &&
                       cfg.cross_attention_dim == 40,
                   "config: heads from attention_head_dim, per-level transformer layers");
    sdx_weights_t *w =
        nets_weights("model/unet/diffusion_pytorch_model.safetensors", SDX_DTYPE_COUNT);
    if (!w || s_load_ref(&r) != 0) {
        sdx_test_check(false, "golden weights and reference");
        goto out;
    }
    sdx_unet_t *u = sdx_unet_new(&cfg, w);
    if (!sdx_test_check(u != NULL, "build (%s)", u ? "ok" : sdx_last_error()))
        goto out;
    sdx_test_check(sdx_unet_dtype(u) == SDX_F32, "computes in f32");

    s_parity(u, &r, TOL, "fused sdpa");
    sdx_nn_ctx_t *cx = sdx_unet_options(u);
    cx->fused_sdpa = false;
    s_parity(u, &r, TOL, "explicit attention");
    cx->attn_chunk = 7;
    s_parity(u, &r, TOL, "explicit attention, 7-query chunks");
    sdx_nn_ctx_init(cx);
    cx->channels_last = true;
    s_parity(u, &r, TOL, "channels-last");
    sdx_nn_ctx_init(cx);

    s_test_controlnet(u, &r);
    s_test_inputs(u, &r);
    s_test_leaks(u, &r);
    s_test_errors(&cfg, w);
    sdx_unet_free(&u);

    s_test_conv_projection(&cfg, w, &r);
    s_test_half(&cfg, w, &r, SDX_BF16);
    s_test_upcast_attention(&cfg, w, &r);
    s_test_half(&cfg, w, &r, SDX_F16);
    s_test_refiner();
    s_test_model_load(&r);
out:
    s_free_ref(&r);
    sdx_weights_free(&w);
    sdx_inference_guard_free(&guard);
    return sdx_test_done();
}
