/*  sdxl-gen inspect PATH [--config-dir DIR]: what a model file or folder
    holds, as JSON on stdout, from the safetensors headers alone (no weight is
    loaded, so it is quick on a 7 GB checkpoint). Errors (unreadable, corrupt,
    unsupported architecture) are one line on stderr and exit 2. */
#include "sdx_model.h"
#include "sdxl_gen.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_usage(FILE *f)
{
    fprintf(f, "usage: sdxl-gen inspect PATH [--config-dir DIR]\n"
               "  PATH  a diffusers folder, a single-file SGM/A1111 checkpoint, or any SDXL\n"
               "        .safetensors (VAE, LoRA, ControlNet, textual inversion)\n"
               "  --config-dir DIR  diffusers folder whose config.json files describe a\n"
               "        single file whose shapes differ from SDXL base/refiner\n");
}

int sdxl_gen_inspect(int argc, char **argv)
{
    const char *path = NULL, *config_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            s_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--config-dir") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sdxl-gen inspect: --config-dir needs a folder\n");
                return 2;
            }
            config_dir = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "sdxl-gen inspect: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "sdxl-gen inspect: one PATH only ('%s' is extra)\n", argv[i]);
            return 2;
        }
    }
    if (!path) {
        s_usage(stderr);
        return 2;
    }
    sdx_model_info_t info;
    if (sdx_model_inspect(path, config_dir, &info) != 0) {
        fprintf(stderr, "sdxl-gen inspect: %s\n", sdx_last_error());
        return 2;
    }

    cJSON *root = cJSON_CreateObject();
    cJSON *dtypes = cJSON_CreateObject();
    cJSON *params = cJSON_CreateObject();
    if (!root || !dtypes || !params) {
        cJSON_Delete(root);
        cJSON_Delete(dtypes);
        cJSON_Delete(params);
        fprintf(stderr, "sdxl-gen inspect: out of memory\n");
        return 1;
    }
    cJSON_AddStringToObject(root, "path", path);
    cJSON_AddStringToObject(root, "format", info.format);
    cJSON_AddStringToObject(root, "architecture", sdx_arch_name(info.arch));
    cJSON_AddStringToObject(root, "description", info.description);
    if (config_dir)
        cJSON_AddStringToObject(root, "config_dir", config_dir);
    cJSON_AddNumberToObject(root, "files", (double)info.n_files);
    cJSON_AddNumberToObject(root, "tensor_count", (double)info.tensor_count);
    for (int d = 0; d < SDX_DTYPE_COUNT; d++)
        if (info.dtype_counts[d])
            cJSON_AddNumberToObject(dtypes, info.dtype_names[d] ? info.dtype_names[d] : "?",
                                    (double)info.dtype_counts[d]);
    if (info.f8_counts[0])
        cJSON_AddNumberToObject(dtypes, "F8_E4M3", (double)info.f8_counts[0]);
    if (info.f8_counts[1])
        cJSON_AddNumberToObject(dtypes, "F8_E5M2", (double)info.f8_counts[1]);
    cJSON_AddItemToObject(root, "dtypes", dtypes);
    cJSON_AddStringToObject(root, "dtype", info.dtype);
    cJSON_AddStringToObject(root, "prediction_type", info.prediction_type);
    cJSON_AddBoolToObject(root, "zero_terminal_snr", info.zero_terminal_snr);
    cJSON_AddNumberToObject(root, "skipped_keys", (double)info.skipped_keys);
    cJSON *sk = cJSON_AddArrayToObject(root, "skipped");
    for (size_t i = 0; sk && i < info.skipped_keys && i < 8; i++)
        cJSON_AddItemToArray(sk, cJSON_CreateString(info.skipped[i]));
    cJSON_AddNumberToObject(root, "ignored_keys", (double)info.ignored_keys);
    static const char *comps[4] = {"unet", "vae", "text_encoder", "text_encoder_2"};
    for (int c = 0; c < 4; c++)
        cJSON_AddNumberToObject(params, comps[c], (double)info.params[c]);
    cJSON_AddNumberToObject(params, "other", (double)info.params_other);
    cJSON_AddItemToObject(root, "parameters", params);
    cJSON_AddNumberToObject(root, "total_parameters", (double)info.params_total);
    if (info.config_source[0]) {
        cJSON_AddStringToObject(root, "config_source", info.config_source);
        cJSON_AddStringToObject(root, "config_check", info.config_check);
    }

    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "sdxl-gen inspect: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return fflush(stdout) == 0 ? 0 : 1;
}
