/*  test_config.c - SDXL default configs and the config.json readers: broadcast
    of scalar per-level keys, diffusers' attention_head_dim legacy, missing
    keys keeping defaults, and clear errors for wrong types. No golden data. */
#include "sdx_model.h"
#include "sdx_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_path[64];

static const char *s_write(const char *text)
{
    FILE *f = fopen(s_path, "w");
    if (!f || fputs(text, f) < 0)
        exit(1);
    fclose(f);
    return s_path;
}

int main(void)
{
    snprintf(s_path, sizeof s_path, "/tmp/sdx-test-config-%ld.json", (long)getpid());
    sdx_unet_config_t u;
    sdx_unet_config_sdxl(&u, false);
    sdx_test_check(u.n_levels == 3 && u.block_out_channels[2] == 1280 && u.heads[2] == 20 &&
                       u.transformer_layers[2] == 10 && u.mid_transformer_layers == 10 &&
                       u.cross_attention_dim == 2048 &&
                       u.projection_class_embeddings_input_dim == 2816 &&
                       u.addition_time_embed_dim == 256 && u.norm_num_groups == 32 &&
                       !u.down_cross_attn[0] && u.up_cross_attn[0] && !u.up_cross_attn[2],
                   "SDXL base UNet defaults");
    sdx_unet_config_sdxl(&u, true);
    sdx_test_check(
        u.n_levels == 4 && u.block_out_channels[0] == 384 && u.block_out_channels[3] == 1536 &&
            u.heads[1] == 12 && u.transformer_layers[1] == 4 && u.mid_transformer_layers == 4 &&
            u.cross_attention_dim == 1280 && u.projection_class_embeddings_input_dim == 2560 &&
            !u.up_cross_attn[0] && u.up_cross_attn[1] && !u.down_cross_attn[3],
        "SDXL refiner UNet defaults");
    sdx_vae_config_t v;
    sdx_vae_config_sdxl(&v);
    sdx_test_check(v.n_levels == 4 && v.block_out_channels[3] == 512 &&
                       v.scaling_factor == 0.13025 && v.force_upcast && v.latent_channels == 4,
                   "SDXL VAE defaults");
    sdx_clip_config_t c1, c2;
    sdx_clip_config_sdxl(&c1, 1);
    sdx_clip_config_sdxl(&c2, 2);
    sdx_test_check(c1.hidden_size == 768 && c1.num_hidden_layers == 12 && c1.quick_gelu &&
                       c1.projection_dim == 0 && c2.hidden_size == 1280 &&
                       c2.num_hidden_layers == 32 && c2.num_attention_heads == 20 &&
                       !c2.quick_gelu && c2.projection_dim == 1280 && c2.intermediate_size == 5120,
                   "CLIP-L and bigG defaults");

    /* Scalars broadcast to every level; missing keys keep the defaults. */
    sdx_unet_config_sdxl(&u, false);
    int rc = sdx_unet_config_read(
        &u, s_write("{\"block_out_channels\": [8, 16, 24, 24],"
                    "\"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", "
                    "\"CrossAttnDownBlock2D\", \"DownBlock2D\"],"
                    "\"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", "
                    "\"CrossAttnUpBlock2D\", \"UpBlock2D\"],"
                    "\"attention_head_dim\": 3, \"transformer_layers_per_block\": 2,"
                    "\"time_cond_proj_dim\": null, \"upcast_attention\": null}"));
    sdx_test_check(rc == 0 && u.n_levels == 4 && u.heads[0] == 3 && u.heads[3] == 3 &&
                       u.transformer_layers[3] == 2 && u.mid_transformer_layers == 2 &&
                       u.cross_attention_dim == 2048 && u.down_cross_attn[1] &&
                       !u.down_cross_attn[3] && !u.up_cross_attn[0] && !u.upcast_attention,
                   "scalar per-level keys broadcast, missing keys kept (%s)",
                   rc ? sdx_last_error() : "ok");
    rc = sdx_unet_config_read(&u, s_write("{\"num_attention_heads\": [2, 4, 6, 6],"
                                          "\"attention_head_dim\": [64, 64, 64, 64]}"));
    sdx_test_check(rc == 0 && u.heads[2] == 6, "num_attention_heads wins over attention_head_dim");

    /* Errors name the file and the key; the struct is left as it was. */
    sdx_unet_config_t before = u;
    rc = sdx_unet_config_read(&u, s_write("{\"norm_num_groups\": \"eight\"}"));
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "'norm_num_groups' has the wrong type") &&
                       strstr(sdx_last_error(), s_path) &&
                       u.norm_num_groups == before.norm_num_groups &&
                       u.n_levels == before.n_levels && u.heads[2] == before.heads[2],
                   "wrong type: %s", sdx_last_error());
    rc = sdx_unet_config_read(&u, s_write("{\"block_out_channels\": [1,2,3,4,5,6,7,8,9]}"));
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "9 entries"), "too many levels: %s",
                   sdx_last_error());
    rc = sdx_unet_config_read(&u, s_write("{\"down_block_types\": [\"DownBlock2D\"]}"));
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "must list 4 block types"),
                   "block types must match the levels: %s", sdx_last_error());
    rc = sdx_unet_config_read(&u,
                              s_write("{\"mid_block_type\": \"UNetMidBlock2DSimpleCrossAttn\"}"));
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "not supported"),
                   "unsupported mid block: %s", sdx_last_error());
    rc = sdx_unet_config_read(&u, s_write("{\"in_channels\": 4,"));
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "not a JSON object"), "broken JSON: %s",
                   sdx_last_error());
    rc = sdx_unet_config_read(&u, "/nonexistent/config.json");
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "cannot open"), "missing file: %s",
                   sdx_last_error());

    rc = sdx_clip_config_read(
        &c1, s_write("{\"architectures\": [\"CLIPTextModel\"], \"hidden_size\": 16,"
                     "\"num_attention_heads\": 2, \"projection_dim\": 16,"
                     "\"hidden_act\": \"quick_gelu\"}"));
    sdx_test_check(rc == 0 && c1.hidden_size == 16 && c1.projection_dim == 0 && c1.quick_gelu,
                   "CLIPTextModel: projection_dim ignored");
    rc = sdx_clip_config_read(&c2, s_write("{\"architectures\": [\"CLIPTextModelWithProjection\"],"
                                           "\"projection_dim\": 20, \"hidden_act\": \"gelu\"}"));
    sdx_test_check(rc == 0 && c2.projection_dim == 20 && !c2.quick_gelu,
                   "CLIPTextModelWithProjection: projection_dim read");
    rc = sdx_clip_config_read(&c2, s_write("{\"hidden_act\": \"relu\"}"));
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "hidden_act 'relu'"),
                   "unknown activation: %s", sdx_last_error());
    rc = sdx_clip_config_read(&c2, s_write("{\"hidden_size\": 10, \"num_attention_heads\": 3}"));
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "implausible"),
                   "heads must divide hidden: %s", sdx_last_error());
    rc = sdx_vae_config_read(&v, s_write("{\"scaling_factor\": 0.18215, \"shift_factor\": null,"
                                         "\"block_out_channels\": [8, 16]}"));
    sdx_test_check(rc == 0 && v.scaling_factor == 0.18215 && v.shift_factor == 0 && v.n_levels == 2,
                   "VAE config read");
    unlink(s_path);
    return sdx_test_done();
}
