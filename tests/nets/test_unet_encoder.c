/*  test_unet_encoder.c - the UNet's encoder half (sdx_unet_new_encoder /
    sdx_unet_forward_encoder), the part ControlNetModel shares with the UNet,
    checked end to end against golden ref/controlnet_forward.safetensors: the
    test adds ControlNet's own small parts (conditioning embedding, 1x1 zero
    convs, conditioning scale) around it and compares the 9 down residuals
    and the mid residual (CPU, f32, rel L2 < 1e-4). Then the residuals go
    into the full UNet's forward. */
#include "nets_util.h"
#include "sdx_nn.h"
#include "sdx_unet.h"

#include <stdio.h>
#include <string.h>

#define TOL 1e-4
#define SCALE 0.7

/* ControlNetConditioningEmbedding: silu(conv_in), 6 x silu(conv) with
   every second one strided, conv_out. */
static int s_cond_embed(sdx_scope_t *S, sdx_tensor_t **out, const sdx_weights_t *w,
                        const sdx_tensor_t *cond)
{
    sdx_tensor_t *h;
    const char *names[8] = {"conv_in",  "blocks.0", "blocks.1", "blocks.2",
                            "blocks.3", "blocks.4", "blocks.5", "conv_out"};
    SDX_TRY(sdx_alias(S, &h, cond));
    for (int i = 0; i < 8; i++) {
        sdx_tensor_t *cw = sdx_weights_getf(w, "controlnet_cond_embedding.%s.weight", names[i]);
        sdx_tensor_t *cb = sdx_weights_getf(w, "controlnet_cond_embedding.%s.bias", names[i]);
        int stride = (i >= 1 && i <= 6 && i % 2 == 0) ? 2 : 1;
        if (!cw || !cb)
            goto fail;
        SDX_TRY(sdx_conv2d(S, &h, h, cw, cb, stride, stride, 1, 1, 1));
        if (i < 7)
            SDX_TRY(sdx_silu(S, &h, h));
    }
    *out = h;
    return 0;
fail:
    return -1;
}

static int s_zero_conv(sdx_scope_t *S, sdx_tensor_t **out, const sdx_weights_t *w, const char *name,
                       const sdx_tensor_t *x)
{
    sdx_tensor_t *cw = sdx_weights_getf(w, "%s.weight", name);
    sdx_tensor_t *cb = sdx_weights_getf(w, "%s.bias", name);
    sdx_tensor_t *h;
    if (!cw || !cb)
        return -1;
    if (sdx_conv2d(S, &h, x, cw, cb, 1, 1, 0, 0, 1) != 0)
        return -1;
    return sdx_mul_scalar(S, out, h, SCALE);
}

int main(void)
{
    sdx_set_num_threads(2);
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    sdx_unet_config_t cfg;
    if (nets_unet_config(&cfg, "controlnet", false) != 0) {
        printf("note: controlnet/config.json not readable as a UNet config (%s); using "
               "model/unet's\n",
               sdx_last_error());
        if (!sdx_test_check(nets_unet_config(&cfg, "model/unet", false) == 0, "unet config"))
            return sdx_test_done();
    }
    sdx_weights_t *w =
        nets_weights("controlnet/diffusion_pytorch_model.safetensors", SDX_DTYPE_COUNT);
    sdx_safetensors_t *st = sdx_test_open("ref/controlnet_forward.safetensors");
    sdx_scope_t *S = sdx_scope_new();
    sdx_unet_t *enc = NULL, *full = NULL;
    sdx_weights_t *uw = NULL;
    if (!w || !st)
        goto out;

    enc = sdx_unet_new_encoder(&cfg, w, "controlnet");
    if (!sdx_test_check(enc != NULL, "encoder half builds over ControlNet weights (%s)",
                        enc ? "ok" : sdx_last_error()))
        goto out;
    sdx_test_check(sdx_unet_n_skips(enc) == 9, "9 skips");

    sdx_tensor_t *x = sdx_test_get(st, "sample"), *ehs = sdx_test_get(st, "encoder_hidden_states");
    sdx_tensor_t *te = sdx_test_get(st, "text_embeds"), *ids = sdx_test_get(st, "time_ids");
    sdx_tensor_t *cond = sdx_test_get(st, "controlnet_cond");
    sdx_tensor_t *t, *hint = NULL, *skips[16], *mid, *res[16], *midres;
    sdx_scope_adopt(S, x);
    sdx_scope_adopt(S, ehs);
    sdx_scope_adopt(S, te);
    sdx_scope_adopt(S, ids);
    sdx_scope_adopt(S, cond);
    sdx_scalar_tensor(S, &t, 700.0, SDX_F32, (sdx_device_t){SDX_CPU, 0});
    if (!sdx_test_check(s_cond_embed(S, &hint, w, cond) == 0, "conditioning embedding (%s)",
                        sdx_last_error()))
        goto out;

    int64_t before = sdx_tensor_live_count();
    sdx_scope_t *R = sdx_scope_new();
    int rc = sdx_unet_forward_encoder(enc, R, skips, 16, &mid, x, t, ehs, te, ids, hint);
    if (!sdx_test_check(rc == 0, "encoder forward (%s)", rc ? sdx_last_error() : "ok")) {
        sdx_scope_free(&R);
        goto out;
    }
    sdx_test_check(sdx_tensor_live_count() == before + 10, "only the 10 outputs are alive");
    for (int k = 0; k < 9; k++) {
        char name[64], ref[64];
        snprintf(name, sizeof name, "controlnet_down_blocks.%d", k);
        snprintf(ref, sizeof ref, "down_block_res_sample_%d", k);
        sdx_tensor_t *want = sdx_test_get(st, ref);
        sdx_scope_adopt(S, want);
        if (sdx_test_check(s_zero_conv(S, &res[k], w, name, skips[k]) == 0, "zero conv %d", k))
            sdx_test_close(res[k], want, TOL, ref);
    }
    sdx_tensor_t *want = sdx_test_get(st, "mid_block_res_sample");
    sdx_scope_adopt(S, want);
    if (sdx_test_check(s_zero_conv(S, &midres, w, "controlnet_mid_block", mid) == 0, "mid conv"))
        sdx_test_close(midres, want, TOL, "mid_block_res_sample");
    sdx_scope_free(&R);

    /* a second run into its own scope: nothing outlives the scope */
    before = sdx_tensor_live_count();
    R = sdx_scope_new();
    rc = sdx_unet_forward_encoder(enc, R, skips, 16, &mid, x, t, ehs, te, ids, hint);
    sdx_scope_free(&R);
    sdx_test_check(rc == 0 && sdx_tensor_live_count() == before,
                   "live tensors back to %lld after the scope (%lld)", (long long)before,
                   (long long)sdx_tensor_live_count());

    rc = sdx_unet_forward(enc, S, &mid, x, t, ehs, te, ids, NULL, 0, NULL);
    sdx_test_check(rc != 0, "full forward refused on the encoder half: %s", sdx_last_error());

    /* the residuals plug into the full UNet (shapes and order match) */
    sdx_unet_config_t ucfg;
    uw = nets_weights("model/unet/diffusion_pytorch_model.safetensors", SDX_DTYPE_COUNT);
    if (nets_unet_config(&ucfg, "model/unet", false) == 0 && uw)
        full = sdx_unet_new(&ucfg, uw);
    if (sdx_test_check(full != NULL, "full UNet builds")) {
        sdx_tensor_t *o = NULL, *o0 = NULL;
        int64_t shape[4] = {2, 4, 16, 16};
        rc = sdx_unet_forward(full, S, &o, x, t, ehs, te, ids, res, 9, midres);
        rc |= sdx_unet_forward(full, S, &o0, x, t, ehs, te, ids, NULL, 0, NULL);
        if (sdx_test_check(rc == 0, "UNet forward with ControlNet residuals (%s)",
                           rc ? sdx_last_error() : "ok"))
            sdx_test_check(nets_finite_shape(o, shape, 4) && sdx_test_rel_l2(o, o0) > 1e-3,
                           "finite output, changed by the residuals (rel %.3g)",
                           sdx_test_rel_l2(o, o0));
    }
out:
    sdx_unet_free(&full);
    sdx_unet_free(&enc);
    sdx_weights_free(&uw);
    sdx_scope_free(&S);
    sdx_safetensors_close(&st);
    sdx_weights_free(&w);
    sdx_inference_guard_free(&guard);
    return sdx_test_done();
}
