/*  test_arch.c - architecture detection on every golden model-like path and
    on synthesized SD1.5 / SD2 / SD3 / Flux files (written by the test),
    which must give a clear error naming what was found. */
#include "sdx_model.h"
#include "sdx_safetensors.h"
#include "sdx_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char s_dir[256];

static void s_expect(const char *path, sdx_arch_t want, const char *why_has)
{
    char why[512] = "";
    sdx_arch_t a = sdx_detect_arch(path, why, sizeof why);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    sdx_test_check(a == want && (!why_has || strstr(why, why_has)), "%s -> %s: %s", base,
                   sdx_arch_name(a), why);
}

static void s_golden(const char *rel, sdx_arch_t want, const char *why_has)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", sdx_test_path(rel));
    s_expect(p, want, why_has);
}

/* Write a file of zero tensors with the given names and shapes. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
} s_spec_t;

static const char *s_synth(const char *file, const s_spec_t *spec, int n)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", s_dir, file);
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *ts[16];
    const char *names[16];
    for (int i = 0; i < n; i++) {
        names[i] = spec[i].name;
        if (sdx_zeros(S, &ts[i], spec[i].shape, spec[i].ndim, SDX_F16,
                      (sdx_device_t){SDX_CPU, 0}) != 0) {
            printf("zeros: %s\n", sdx_last_error());
            exit(1);
        }
    }
    if (sdx_safetensors_write(p, names, ts, (size_t)n, NULL) != 0) {
        printf("write: %s\n", sdx_last_error());
        exit(1);
    }
    sdx_scope_free(&S);
    return p;
}

static void s_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

int main(void)
{
    sdx_test_path("model");
    snprintf(s_dir, sizeof s_dir, "/tmp/sdx-test-arch-XXXXXX");
    if (!mkdtemp(s_dir))
        return 1;

    s_golden("model", SDX_ARCH_SDXL_BASE, "diffusers");
    s_golden("model_single_file/tiny_sdxl.safetensors", SDX_ARCH_SDXL_BASE, "single file");
    s_golden("model/unet", SDX_ARCH_SDXL_BASE, "3 levels");
    s_golden("model/unet/diffusion_pytorch_model.safetensors", SDX_ARCH_SDXL_BASE, "3 levels");
    s_golden("refiner_unet", SDX_ARCH_SDXL_REFINER, "4 levels");
    s_golden("refiner_unet/diffusion_pytorch_model.safetensors", SDX_ARCH_SDXL_REFINER, NULL);
    s_golden("model/vae", SDX_ARCH_VAE, NULL);
    s_golden("model/vae/diffusion_pytorch_model.safetensors", SDX_ARCH_VAE, NULL);
    s_golden("lora/lora_kohya.safetensors", SDX_ARCH_LORA, "kohya");
    s_golden("lora/lora_diffusers.safetensors", SDX_ARCH_LORA, NULL);
    s_golden("controlnet", SDX_ARCH_CONTROLNET, NULL);
    s_golden("controlnet/diffusion_pytorch_model.safetensors", SDX_ARCH_CONTROLNET, NULL);
    s_golden("ti/tiny_ti.safetensors", SDX_ARCH_TEXTUAL_INVERSION, "2 vectors");
    s_golden("taesd", SDX_ARCH_UNKNOWN, "AutoencoderTiny");
    s_golden("taesd/diffusion_pytorch_model.safetensors", SDX_ARCH_UNKNOWN, "TAESD");
    s_golden("upscaler/rrdbnet_x4.safetensors", SDX_ARCH_UNKNOWN, "unrecognised");

    /* SD1.5 single file (A1111 names): CLIP-L under cond_stage_model, no label_emb. */
    static const s_spec_t sd15[] = {
        {"model.diffusion_model.input_blocks.0.0.weight", 4, {320, 4, 3, 3}},
        {"model.diffusion_model.input_blocks.1.1.proj_in.weight", 4, {320, 320, 1, 1}},
        {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
         2,
         {320, 768}},
        {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 2, {16, 768}},
        {"first_stage_model.decoder.conv_in.weight", 4, {512, 4, 3, 3}},
    };
    const char *p = s_synth("sd15.safetensors", sd15, 5);
    s_expect(p, SDX_ARCH_UNKNOWN, "looks like SD1.x");
    char why[512];
    sdx_detect_arch(p, why, sizeof why);
    sdx_test_check(strstr(why, "cond_stage_model.transformer") && strstr(why, "768-d") &&
                       strstr(why, "only SDXL"),
                   "SD1.5 message names what was found");
    sdx_load_opts_t o;
    sdx_load_opts_init(&o);
    o.path = p;
    sdx_model_t *m = sdx_model_load(&o);
    sdx_test_check(!m && strstr(sdx_last_error(), "sd15.safetensors: looks like SD1.x"),
                   "loading SD1.5 fails: %s", sdx_last_error());
    sdx_model_free(&m);

    static const s_spec_t sd2[] = {
        {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
         2,
         {320, 1024}},
        {"cond_stage_model.model.token_embedding.weight", 2, {16, 1024}},
    };
    s_expect(s_synth("sd2.safetensors", sd2, 2), SDX_ARCH_UNKNOWN, "looks like SD2.x");

    static const s_spec_t sd3[] = {
        {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", 2, {12, 4}},
        {"model.diffusion_model.x_embedder.proj.weight", 4, {4, 16, 2, 2}},
    };
    s_expect(s_synth("sd3.safetensors", sd3, 2), SDX_ARCH_UNKNOWN,
             "looks like SD3 (found model.diffusion_model.joint_blocks");

    static const s_spec_t flux[] = {
        {"double_blocks.0.img_attn.qkv.weight", 2, {12, 4}},
        {"single_blocks.0.linear1.weight", 2, {8, 4}},
    };
    s_expect(s_synth("flux.safetensors", flux, 2), SDX_ARCH_UNKNOWN, "looks like Flux");

    static const s_spec_t flux_diffusers[] = {
        {"single_transformer_blocks.0.attn.to_q.weight", 2, {4, 4}},
        {"transformer_blocks.0.attn.add_q_proj.weight", 2, {4, 4}},
    };
    s_expect(s_synth("flux_d.safetensors", flux_diffusers, 2), SDX_ARCH_UNKNOWN, "Flux");

    static const s_spec_t lora15[] = {
        {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 2, {4, 768}},
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", 2, {4, 320}},
    };
    s_expect(s_synth("lora15.safetensors", lora15, 2), SDX_ARCH_UNKNOWN, "SD1.x/SD2.x LoRA");

    static const s_spec_t lora15u[] = {
        {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
         2,
         {4, 768}},
    };
    s_expect(s_synth("lora15u.safetensors", lora15u, 1), SDX_ARCH_UNKNOWN, "SD1.x LoRA");

    static const s_spec_t ti15[] = {{"emb_params", 2, {2, 768}}};
    s_expect(s_synth("ti15.safetensors", ti15, 1), SDX_ARCH_UNKNOWN,
             "SD1.x/SD2.x textual inversion");

    static const s_spec_t cn15[] = {
        {"control_model.input_hint_block.0.weight", 4, {16, 3, 3, 3}},
        {"control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", 2, {320, 768}},
    };
    s_expect(s_synth("cn15.safetensors", cn15, 2), SDX_ARCH_UNKNOWN, "SD1.x ControlNet");

    /* A diffusers SD1.5 pipeline folder: named by its model_index.json. */
    char d[512], f[600];
    snprintf(d, sizeof d, "%s/sd15_pipe", s_dir);
    mkdir(d, 0700);
    snprintf(f, sizeof f, "%s/model_index.json", d);
    s_write_text(f, "{\"_class_name\": \"StableDiffusionPipeline\"}");
    s_expect(d, SDX_ARCH_UNKNOWN,
             "looks like SD1.x/SD2.x (model_index.json: StableDiffusionPipeline)");
    /* ... and an SD1.5 UNet component folder. */
    snprintf(d, sizeof d, "%s/sd15_unet", s_dir);
    mkdir(d, 0700);
    snprintf(f, sizeof f, "%s/config.json", d);
    s_write_text(f, "{\"_class_name\": \"UNet2DConditionModel\", \"cross_attention_dim\": 768, "
                    "\"block_out_channels\": [320, 640, 1280, 1280]}");
    s_expect(d, SDX_ARCH_UNKNOWN, "SD1.x UNet");

    /* Not a model at all. */
    s_expect(s_dir, SDX_ARCH_UNKNOWN, "not a diffusers folder");
    snprintf(f, sizeof f, "%s/garbage.safetensors", s_dir);
    s_write_text(f, "this is not a safetensors file at all");
    s_expect(f, SDX_ARCH_UNKNOWN, "exceeds");

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", s_dir);
    return sdx_test_done();
}
