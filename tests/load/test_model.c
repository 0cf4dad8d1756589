/*  test_model.c - both golden layouts load and give IDENTICAL tensors under
    diffusers names (single file through the name map vs the diffusers
    folder), configs are read, dtype conversion works, component selection,
    and the clear errors of a single file without --config-dir. */
#include "sdx_model.h"
#include "sdx_test.h"

#include <stdio.h>
#include <string.h>

static const char *s_comp[4] = {"unet", "vae", "text_encoder", "text_encoder_2"};

static sdx_model_t *s_load(const char *rel, const char *config_rel, sdx_dtype_t dt, unsigned comps)
{
    char path[4096], cfg[4096];
    snprintf(path, sizeof path, "%s", sdx_test_path(rel));
    if (config_rel)
        snprintf(cfg, sizeof cfg, "%s", sdx_test_path(config_rel));
    sdx_load_opts_t o;
    sdx_load_opts_init(&o);
    o.path = path;
    o.config_dir = config_rel ? cfg : NULL;
    o.dtype = dt;
    o.components = comps;
    return sdx_model_load(&o);
}

static sdx_weights_t *s_w(const sdx_model_t *m, int c)
{
    return c == 0 ? m->unet : c == 1 ? m->vae : c == 2 ? m->te1 : m->te2;
}

/* Every weight of a is in b with the same shape and values (tol 0: exact). */
static void s_same_weights(const sdx_model_t *a, const sdx_model_t *b, double tol, const char *what)
{
    for (int c = 0; c < 4; c++) {
        sdx_weights_t *wa = s_w(a, c), *wb = s_w(b, c);
        if (!wa || !wb) {
            sdx_test_check(false, "%s: %s present in both", what, s_comp[c]);
            continue;
        }
        size_t n = sdx_weights_count(wa), bad = 0, missing = 0;
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            const char *name = sdx_weights_name_at(wa, i);
            sdx_tensor_t *ta = sdx_weights_tensor_at(wa, i), *tb = sdx_weights_get(wb, name);
            if (!tb) {
                if (missing++ < 3)
                    printf("  missing in second: %s.%s\n", s_comp[c], name);
                continue;
            }
            double d = tol == 0 ? sdx_test_max_abs(ta, tb) : sdx_test_rel_l2(ta, tb);
            if (d > worst)
                worst = d;
            if (!(d <= tol)) {
                if (bad++ < 3)
                    printf("  differs: %s.%s (%g)\n", s_comp[c], name, d);
            }
        }
        sdx_test_check(n > 0 && bad == 0 && missing == 0 && n == sdx_weights_count(wb),
                       "%s: %s %zu weights, %zu differ, %zu missing, %zu vs %zu (worst %g)", what,
                       s_comp[c], n, bad, missing, n, sdx_weights_count(wb), worst);
    }
}

static void s_check_configs(const sdx_model_t *m, const char *what)
{
    const sdx_unet_config_t *u = &m->unet_cfg;
    sdx_test_check(u->n_levels == 3 && u->block_out_channels[0] == 16 &&
                       u->block_out_channels[2] == 32 && u->heads[0] == 1 && u->heads[1] == 2 &&
                       u->heads[2] == 4 && u->transformer_layers[2] == 2 &&
                       u->mid_transformer_layers == 2 && u->cross_attention_dim == 40 &&
                       u->addition_time_embed_dim == 8 &&
                       u->projection_class_embeddings_input_dim == 68 && u->norm_num_groups == 8 &&
                       !u->down_cross_attn[0] && u->down_cross_attn[1] && u->up_cross_attn[0] &&
                       !u->up_cross_attn[2] && u->use_linear_projection && u->flip_sin_to_cos &&
                       u->mid_block_cross_attn,
                   "%s: unet config from config.json", what);
    const sdx_vae_config_t *v = &m->vae_cfg;
    sdx_test_check(v->n_levels == 4 && v->block_out_channels[0] == 8 && v->norm_num_groups == 4 &&
                       v->scaling_factor == 0.13025 && v->latent_channels == 4 && v->force_upcast,
                   "%s: vae config", what);
    sdx_test_check(m->te1_cfg.hidden_size == 16 && m->te1_cfg.num_hidden_layers == 5 &&
                       m->te1_cfg.num_attention_heads == 2 && m->te1_cfg.quick_gelu &&
                       m->te1_cfg.projection_dim == 0 && m->te1_cfg.eos_token_id == 2,
                   "%s: text_encoder config (CLIPTextModel: no projection)", what);
    sdx_test_check(m->te2_cfg.hidden_size == 24 && m->te2_cfg.num_hidden_layers == 6 &&
                       m->te2_cfg.num_attention_heads == 3 && !m->te2_cfg.quick_gelu &&
                       m->te2_cfg.projection_dim == 20 && m->te2_cfg.intermediate_size == 56,
                   "%s: text_encoder_2 config", what);
    sdx_test_check(strstr(m->tokenizer_dir, "/tokenizer") &&
                       strstr(m->tokenizer2_dir, "/tokenizer_2") &&
                       strstr(m->scheduler_config, "scheduler/scheduler_config.json") &&
                       m->force_zeros_for_empty_prompt,
                   "%s: tokenizer dirs, scheduler config, force_zeros", what);
}

/* The weights container: insertion order, replacement, many names. */
static void s_weights_basics(void)
{
    sdx_weights_t *w = sdx_weights_new();
    int64_t one = 1;
    bool ok = w != NULL;
    for (int i = 0; ok && i < 1000; i++) {
        char name[32];
        sdx_tensor_t *t = NULL;
        snprintf(name, sizeof name, "w.%d", i);
        ok = sdx_zeros(NULL, &t, &one, 1, SDX_F32, (sdx_device_t){SDX_CPU, 0}) == 0 &&
             sdx_weights_put(w, name, t) == 0;
    }
    sdx_tensor_t *r = NULL;
    int64_t three = 3;
    ok = ok && sdx_zeros(NULL, &r, &three, 1, SDX_F32, (sdx_device_t){SDX_CPU, 0}) == 0 &&
         sdx_weights_put(w, "w.500", r) == 0;
    sdx_test_check(ok && sdx_weights_count(w) == 1000 && sdx_weights_get(w, "w.500") == r &&
                       strcmp(sdx_weights_name_at(w, 500), "w.500") == 0 &&
                       sdx_weights_tensor_at(w, 500) == r && sdx_weights_has(w, "w.999") &&
                       !sdx_weights_has(w, "w.1000") && sdx_weights_name_at(w, 1000) == NULL &&
                       sdx_weights_param_count(w) == 1002,
                   "weights: 1000 names, replace keeps order, param count");
    sdx_weights_free(&w);
    sdx_weights_free(&w);
    sdx_test_check(sdx_tensor_live_count() == 0, "weights free releases every tensor");
}

int main(void)
{
    s_weights_basics();
    sdx_test_path("model"); /* skips without golden data */

    sdx_model_t *folder = s_load("model", NULL, SDX_F32, 0);
    sdx_test_check(folder != NULL, "diffusers folder loads (%s)", folder ? "ok" : sdx_last_error());
    sdx_model_t *single =
        s_load("model_single_file/tiny_sdxl.safetensors", "model", SDX_F32, SDX_COMP_ALL);
    sdx_test_check(single != NULL, "single file + --config-dir loads (%s)",
                   single ? "ok" : sdx_last_error());
    if (!folder || !single)
        return sdx_test_done();

    sdx_test_check(folder->arch == SDX_ARCH_SDXL_BASE && folder->layout == SDX_LAYOUT_DIFFUSERS,
                   "folder: sdxl_base, diffusers layout");
    sdx_test_check(single->arch == SDX_ARCH_SDXL_BASE && single->layout == SDX_LAYOUT_SINGLE_FILE,
                   "single: sdxl_base, single-file layout");
    s_check_configs(folder, "folder");
    s_check_configs(single, "single");

    /* README: parameter counts of this set. */
    static const int64_t want[4] = {669988, 334383, 804232, 1219752};
    for (int c = 0; c < 4; c++) {
        int64_t a = sdx_weights_param_count(s_w(folder, c));
        int64_t b = sdx_weights_param_count(s_w(single, c));
        sdx_test_check(a == want[c] && b == want[c], "%s parameters: folder %lld, single %lld",
                       s_comp[c], (long long)a, (long long)b);
    }
    s_same_weights(folder, single, 0, "folder vs single file");
    s_same_weights(single, folder, 0, "single file vs folder");

    /* Spot checks of the transformed tensors, by shape. */
    sdx_tensor_t *qp =
        sdx_weights_get(single->te2, "text_model.encoder.layers.0.self_attn.q_proj.weight");
    sdx_tensor_t *tp = sdx_weights_get(single->te2, "text_projection.weight");
    sdx_tensor_t *va = sdx_weights_get(single->vae, "decoder.mid_block.attentions.0.to_q.weight");
    sdx_test_check(qp && sdx_tensor_ndim(qp) == 2 && sdx_tensor_size(qp, 0) == 24 && tp &&
                       sdx_tensor_size(tp, 0) == 20 && sdx_tensor_size(tp, 1) == 24 && va &&
                       sdx_tensor_ndim(va) == 2,
                   "q/k/v split [24,24], text_projection [20,24], VAE attn Linear [C,C]");
    sdx_test_check(
        sdx_weights_getf(single->unet, "down_blocks.%d.attentions.%d.proj_in.weight", 1, 0) != NULL,
        "getf finds a formatted name");
    sdx_test_check(sdx_weights_getf(single->unet, "no.such.%s", "weight") == NULL &&
                       strstr(sdx_last_error(), "missing weight 'no.such.weight'"),
                   "getf on a missing name sets the error");

    /* dtype conversion at load. */
    sdx_model_t *h = s_load("model", NULL, SDX_F16, 0);
    sdx_model_t *bf = s_load("model_single_file/tiny_sdxl.safetensors", "model", SDX_BF16, 0);
    sdx_test_check(h && bf, "f16 folder and bf16 single-file loads (%s)",
                   h && bf ? "ok" : sdx_last_error());
    if (h && bf) {
        bool all16 = true;
        for (int c = 0; c < 4; c++)
            for (size_t i = 0; i < sdx_weights_count(s_w(h, c)); i++)
                all16 &= sdx_tensor_dtype(sdx_weights_tensor_at(s_w(h, c), i)) == SDX_F16 &&
                         sdx_tensor_dtype(sdx_weights_tensor_at(s_w(bf, c), i)) == SDX_BF16;
        sdx_test_check(all16 && h->dtype == SDX_F16, "every weight converted");
        s_same_weights(folder, h, 1e-3, "f32 vs f16");
        s_same_weights(folder, bf, 8e-3, "f32 vs bf16");
    }
    sdx_model_free(&h);
    sdx_model_free(&bf);

    /* Component selection. */
    sdx_model_t *te2 =
        s_load("model_single_file/tiny_sdxl.safetensors", "model", SDX_F32, SDX_COMP_TE2);
    sdx_test_check(te2 && !te2->unet && !te2->vae && !te2->te1 && te2->te2 &&
                       sdx_weights_count(te2->te2) == sdx_weights_count(folder->te2),
                   "components = TE2 loads text_encoder_2 only");
    sdx_model_free(&te2);
    sdx_model_t *uv = s_load("model", NULL, SDX_F32, SDX_COMP_UNET | SDX_COMP_VAE);
    sdx_test_check(uv && uv->unet && uv->vae && !uv->te1 && !uv->te2,
                   "components = UNET|VAE from a folder");
    sdx_model_free(&uv);

    /* A single file without configs: the SDXL defaults do not fit the tiny model. */
    sdx_model_t *nocfg = s_load("model_single_file/tiny_sdxl.safetensors", NULL, SDX_F32, 0);
    sdx_test_check(!nocfg && strstr(sdx_last_error(), "--config-dir") &&
                       strstr(sdx_last_error(), "tiny_sdxl.safetensors"),
                   "single file without --config-dir: %s", sdx_last_error());
    sdx_model_free(&nocfg);

    /* Component folders and files. */
    sdx_model_t *ref = s_load("refiner_unet", NULL, SDX_F32, 0);
    sdx_test_check(ref && ref->arch == SDX_ARCH_SDXL_REFINER && ref->unet && !ref->vae &&
                       ref->unet_cfg.n_levels == 4 && ref->unet_cfg.cross_attention_dim == 24 &&
                       ref->unet_cfg.projection_class_embeddings_input_dim == 60 &&
                       ref->unet_cfg.transformer_layers[1] == 2 && !ref->unet_cfg.up_cross_attn[0],
                   "refiner_unet folder: refiner UNet with its config (%s)",
                   ref ? "ok" : sdx_last_error());
    sdx_model_t *ref2 =
        s_load("refiner_unet/diffusion_pytorch_model.safetensors", NULL, SDX_F32, 0);
    sdx_test_check(
        ref2 && ref2->arch == SDX_ARCH_SDXL_REFINER && ref2->unet_cfg.cross_attention_dim == 24,
        "refiner UNet file: sibling config.json used (%s)", ref2 ? "ok" : sdx_last_error());
    if (ref && ref2)
        sdx_test_check(sdx_weights_count(ref->unet) == sdx_weights_count(ref2->unet),
                       "same weights either way");
    sdx_model_free(&ref);
    sdx_model_free(&ref2);
    sdx_model_t *vae = s_load("model/vae", NULL, SDX_F32, 0);
    sdx_test_check(vae && vae->arch == SDX_ARCH_VAE && vae->vae && !vae->unet &&
                       sdx_weights_param_count(vae->vae) == want[1],
                   "VAE folder alone (%s)", vae ? "ok" : sdx_last_error());
    sdx_model_free(&vae);

    sdx_model_t *lora = s_load("lora/lora_kohya.safetensors", NULL, SDX_F32, 0);
    sdx_test_check(!lora && strstr(sdx_last_error(), "adapter"), "a LoRA is not a model: %s",
                   sdx_last_error());
    sdx_model_free(&lora);

    sdx_model_free(&folder);
    sdx_model_free(&single);
    sdx_test_check(sdx_tensor_live_count() == 0, "no tensor handle leaked (%lld live)",
                   (long long)sdx_tensor_live_count());
    return sdx_test_done();
}
