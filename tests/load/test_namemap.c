/*  test_namemap.c - every key of golden/model_single_file/key_map.json (the
    diffusers -> single-file map written by diffusers' converter) must come
    back to its diffusers name, with the right op, through sdx_namemap. Also
    checks index rules that the tiny golden model does not exercise (the
    refiner's upsampler without attention, module paths for LoRA). */
#include "sdx_namemap.h"
#include "sdx_test.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Does sgm map (among its targets) to comp/name with op and part? */
static bool s_maps_to(const char *sgm, const sdx_nm_geom_t *g, const char *want, sdx_nm_op_t op,
                      int part)
{
    sdx_nm_target_t t[3];
    int n = sdx_namemap_single_file(sgm, g, t);
    for (int i = 0; i < n; i++) {
        char full[400];
        snprintf(full, sizeof full, "%s.%s", sdx_nm_comp_name(t[i].comp), t[i].name);
        if (strcmp(full, want) == 0 && t[i].op == op && (op != SDX_NM_ROWS || t[i].part == part))
            return true;
    }
    if (n < 0)
        printf("  %s: %s\n", sgm, sdx_last_error());
    return false;
}

int main(void)
{
    size_t len;
    char *text = sdx_test_read_file(sdx_test_path("model_single_file/key_map.json"), &len);
    if (!text)
        sdx_test_skip("key_map.json missing");
    cJSON *map = cJSON_ParseWithLength(text, len);
    sdx_test_check(cJSON_IsObject(map), "key_map.json parses");
    sdx_nm_geom_t g = {2, 4};
    int total = 0, bad = 0;
    for (cJSON *e = map ? map->child : NULL; e; e = e->next) {
        char sgm[400];
        snprintf(sgm, sizeof sgm, "%s", e->valuestring);
        sdx_nm_op_t op = SDX_NM_COPY;
        int part = 0;
        char *note = strstr(sgm, "  [");
        if (note) {
            if (strstr(note, "rows 0:H"))
                op = SDX_NM_ROWS, part = 0;
            else if (strstr(note, "rows H:2H"))
                op = SDX_NM_ROWS, part = 1;
            else if (strstr(note, "rows 2H:3H"))
                op = SDX_NM_ROWS, part = 2;
            else if (strstr(note, "transposed"))
                op = SDX_NM_TRANSPOSE;
            *note = 0;
        }
        if (strstr(sgm, "first_stage_model.") && strstr(sgm, ".attn_1.") &&
            !strstr(sgm, ".norm.") && strstr(sgm, ".weight"))
            op = SDX_NM_CONV1X1_TO_LINEAR;
        total++;
        if (!s_maps_to(sgm, &g, e->string, op, part)) {
            bad++;
            printf("  no map: %s -> %s\n", sgm, e->string);
        }
    }
    sdx_test_check(total > 1000 && bad == 0, "key_map.json: %d keys, %d wrong", total, bad);

    /* Rules the tiny model does not show. */
    sdx_test_check(s_maps_to("model.diffusion_model.output_blocks.2.1.conv.weight", &g,
                             "unet.up_blocks.0.upsamplers.0.conv.weight", SDX_NM_COPY, 0),
                   "refiner-style upsampler (up block without attention)");
    sdx_test_check(s_maps_to("model.diffusion_model.output_blocks.8.2.conv.bias", &g,
                             "unet.up_blocks.2.upsamplers.0.conv.bias", SDX_NM_COPY, 0),
                   "upsampler after attention");
    sdx_test_check(s_maps_to("conditioner.embedders.0.model.transformer.resblocks.31.ln_1.weight",
                             &g, "text_encoder_2.text_model.encoder.layers.31.layer_norm1.weight",
                             SDX_NM_COPY, 0),
                   "refiner single file: OpenCLIP as embedder 0");
    sdx_nm_target_t t[3];
    sdx_test_check(sdx_namemap_single_file("conditioner.embedders.1.model.logit_scale", &g, t) == 0,
                   "logit_scale skipped");
    sdx_test_check(
        sdx_namemap_single_file(
            "conditioner.embedders.0.transformer.text_model.embeddings.position_ids", &g, t) == 0,
        "position_ids skipped");
    sdx_test_check(sdx_namemap_single_file(
                       "model.diffusion_model.input_blocks.3.0.in_layers.0.weight", &g, t) < 0 &&
                       strstr(sdx_last_error(), "input_blocks.3.0.in_layers"),
                   "impossible key is an error naming it (%s)", sdx_last_error());
    sdx_test_check(sdx_namemap_single_file("model.diffusion_model.bogus.weight", &g, t) < 0,
                   "unknown unet key is an error");
    sdx_test_check(sdx_namemap_component("model_ema.decay", NULL) < 0, "EMA keys: no component");
    int n = sdx_namemap_unet("input_blocks.4.1.transformer_blocks.0.attn1.to_q", 2, t);
    sdx_test_check(n == 1 && strcmp(t[0].name, "down_blocks.1.attentions.0.transformer_blocks.0."
                                               "attn1.to_q") == 0,
                   "module path (LoRA form) maps: %s", n == 1 ? t[0].name : sdx_last_error());
    n = sdx_namemap_unet("output_blocks.3.0.in_layers.2", 2, t);
    sdx_test_check(n == 1 && strcmp(t[0].name, "up_blocks.1.resnets.0.conv1") == 0,
                   "resnet module path maps: %s", n == 1 ? t[0].name : sdx_last_error());
    n = sdx_namemap_vae("decoder.up.0.block.2.nin_shortcut.weight", 4, t);
    sdx_test_check(n == 1 &&
                       strcmp(t[0].name, "decoder.up_blocks.3.resnets.2.conv_shortcut.weight") == 0,
                   "vae decoder levels reversed: %s", n == 1 ? t[0].name : sdx_last_error());
    cJSON_Delete(map);
    free(text);
    return sdx_test_done();
}
