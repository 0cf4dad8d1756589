/*  test_controlnet.c - sdx_controlnet (ControlNetModel) against golden
    ref/controlnet_forward.safetensors: the 9 down residuals and the mid
    residual of cn(sample, t=700, ehs, controlnet_cond, conditioning_scale
    0.7, text_embeds, time_ids) (CPU, f32, rel L2 < 1e-4 each); loading from
    the folder and from the lone file (config.json beside it), refusals of
    a mismatched base UNet, leak checks, the keep mask and image prep. */
#include "nets_util.h"
#include "sdx_controlnet.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define TOL 1e-4
#define SCALE 0.7

static void s_check_forward(const sdx_controlnet_t *cn, sdx_safetensors_t *st, sdx_scope_t *S,
                            const char *label)
{
    sdx_tensor_t *x = sdx_test_get(st, "sample"), *ehs = sdx_test_get(st, "encoder_hidden_states");
    sdx_tensor_t *te = sdx_test_get(st, "text_embeds"), *ids = sdx_test_get(st, "time_ids");
    sdx_tensor_t *cond = sdx_test_get(st, "controlnet_cond");
    sdx_tensor_t *t, *down[16], *mid;
    sdx_scope_adopt(S, x);
    sdx_scope_adopt(S, ehs);
    sdx_scope_adopt(S, te);
    sdx_scope_adopt(S, ids);
    sdx_scope_adopt(S, cond);
    sdx_scalar_tensor(S, &t, 700.0, SDX_F32, (sdx_device_t){SDX_CPU, 0});
    sdx_tensor_t *want[10];
    for (int k = 0; k < 10; k++) {
        char ref[64];
        snprintf(ref, sizeof ref, k < 9 ? "down_block_res_sample_%d" : "mid_block_res_sample", k);
        want[k] = sdx_test_get(st, ref);
        sdx_scope_adopt(S, want[k]);
    }
    int64_t before = sdx_tensor_live_count();
    sdx_scope_t *R = sdx_scope_new();
    int rc = sdx_controlnet_forward(cn, R, down, 16, &mid, x, t, ehs, te, ids, cond, SCALE);
    if (sdx_test_check(rc == 0, "%s: forward (%s)", label, rc ? sdx_last_error() : "ok")) {
        sdx_test_check(sdx_tensor_live_count() == before + 10, "%s: only the 10 outputs alive",
                       label);
        for (int k = 0; k < sdx_controlnet_n_down(cn); k++) {
            char what[128];
            snprintf(what, sizeof what, "%s: down_block_res_sample_%d", label, k);
            sdx_test_close(down[k], want[k], TOL, what);
        }
        char what[128];
        snprintf(what, sizeof what, "%s: mid_block_res_sample", label);
        sdx_test_close(mid, want[9], TOL, what);
    }
    sdx_scope_free(&R);
    sdx_test_check(sdx_tensor_live_count() == before, "%s: nothing alive after the scope", label);

    /* caller-owned outputs (S NULL) */
    rc = sdx_controlnet_forward(cn, NULL, down, 16, &mid, x, t, ehs, te, ids, cond, SCALE);
    if (sdx_test_check(rc == 0, "%s: forward into caller-owned outputs", label)) {
        for (int k = 0; k < sdx_controlnet_n_down(cn); k++)
            sdx_tensor_free(&down[k]);
        sdx_tensor_free(&mid);
    }
    sdx_test_check(sdx_tensor_live_count() == before, "%s: caller frees them all", label);
    rc = sdx_controlnet_forward(cn, NULL, down, 16, &mid, x, t, ehs, te, ids, x, SCALE);
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "control image"),
                   "%s: a control image of the wrong shape is refused: %s", label,
                   sdx_last_error());
}

int main(void)
{
    sdx_set_num_threads(2);
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    sdx_unet_config_t base;
    if (nets_unet_config(&base, "model/unet", false) != 0)
        sdx_test_skip("no golden model/unet config");
    sdx_safetensors_t *st = sdx_test_open("ref/controlnet_forward.safetensors");
    sdx_scope_t *S = sdx_scope_new();
    const sdx_device_t cpu = {SDX_CPU, 0};
    char dir[4096], file[4200];
    snprintf(dir, sizeof dir, "%s", sdx_test_path("controlnet"));
    snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors", dir);

    sdx_controlnet_t *cn = sdx_controlnet_load(dir, &base, SDX_F32, cpu);
    if (sdx_test_check(cn != NULL, "load the folder (%s)", cn ? "ok" : sdx_last_error())) {
        sdx_test_check(sdx_controlnet_n_down(cn) == 9, "9 down residuals");
        s_check_forward(cn, st, S, "folder");
    }
    sdx_controlnet_free(&cn);
    sdx_test_check(cn == NULL, "free clears the pointer");
    cn = sdx_controlnet_load(file, &base, SDX_F32, cpu);
    if (sdx_test_check(cn != NULL, "load the lone file (%s)", cn ? "ok" : sdx_last_error()))
        s_check_forward(cn, st, S, "file");
    sdx_controlnet_free(&cn);

    /* a ControlNet for another UNet is refused, naming the path */
    sdx_unet_config_t other = base;
    other.cross_attention_dim = 2048;
    cn = sdx_controlnet_load(dir, &other, SDX_F32, cpu);
    sdx_test_check(!cn && strstr(sdx_last_error(), "controlnet: ") &&
                       strstr(sdx_last_error(), "does not fit"),
                   "mismatched base refused: %s", sdx_last_error());
    sdx_controlnet_free(&cn);
    cn = sdx_controlnet_load(sdx_test_path("model/unet"), &base, SDX_F32, cpu);
    sdx_test_check(!cn, "a UNet folder is not a ControlNet: %s", sdx_last_error());
    sdx_controlnet_free(&cn);
    cn = sdx_controlnet_load("/nonexistent/cn", &base, SDX_F32, cpu);
    sdx_test_check(!cn && strstr(sdx_last_error(), "/nonexistent/cn"), "missing path: %s",
                   sdx_last_error());

    /* controlnet_keep as diffusers: 1 - (i/n < start or (i+1)/n > end) */
    sdx_test_check(sdx_controlnet_keep(0, 5, 0, 1) == 1 && sdx_controlnet_keep(4, 5, 0, 1) == 1,
                   "keep: full range");
    sdx_test_check(sdx_controlnet_keep(0, 5, 0.2, 1) == 0 && sdx_controlnet_keep(1, 5, 0.2, 1) == 1,
                   "keep: start 0.2 drops step 0 only");
    sdx_test_check(sdx_controlnet_keep(3, 5, 0, 0.8) == 1 && sdx_controlnet_keep(4, 5, 0, 0.8) == 0,
                   "keep: end 0.8 drops the last step");

    /* image prep: u8/255, NCHW, RGBA alpha dropped, resized when needed */
    uint8_t px[2 * 1 * 4] = {255, 0, 51, 9, 0, 255, 102, 9};
    sdx_image_t img = {.width = 2, .height = 1, .channels = 4, .pixels = px};
    sdx_tensor_t *ti = NULL, *tr = NULL;
    float want[6] = {1.0f, 0, 0, 1.0f, 0.2f, 0.4f}, got[6] = {0};
    if (sdx_test_check(sdx_controlnet_image(S, &ti, &img, 2, 1, SDX_F32, cpu) == 0, "image prep")) {
        sdx_to_host(ti, SDX_F32, got, sizeof got);
        bool same = true;
        for (int i = 0; i < 6; i++)
            same &= fabsf(got[i] - want[i]) < 1e-7f;
        sdx_test_check(sdx_tensor_size(ti, 1) == 3 && same,
                       "image prep: [1,3,1,2] = u8/255 planes");
    }
    sdx_test_check(sdx_controlnet_image(S, &tr, &img, 8, 16, SDX_F32, cpu) == 0 &&
                       sdx_tensor_size(tr, 2) == 16 && sdx_tensor_size(tr, 3) == 8,
                   "image prep resizes to the output size");

    sdx_scope_free(&S);
    sdx_safetensors_close(&st);
    sdx_inference_guard_free(&guard);
    return sdx_test_done();
}
