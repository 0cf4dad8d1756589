/*  hooks.c - the broker's plug-in points (see hooks.h), wired to the schema
    validator (common/sdx_schema.c, rules in schemas/), the semantic checks
    (common/sdx_semantic.c) and the C# dialect (common/sdx_csharp.c).
    Not for: routing, framing, config parsing (broker.c, sdx_config.c).
*/
#include "hooks.h"

#include "sdx_csharp.h"
#include "sdx_log.h"
#include "sdx_schema.h"
#include "sdx_semantic.h"

#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static sdx_schema_set_t *s_schemas;
static sdx_semantic_t *s_sem;
static bool s_validate = true;
static size_t s_max_lz4 = 0;

/* Deployment roots and limits of the semantic checks: broker config
   options (validation.*_root, max_image_bytes, max_pixels); the SDXL_*
   environment variables are a fallback for deployments that set roots
   outside the config file. */
static const struct {
    const char *kind; /* the x-path-root name used in schemas/ */
    const char *env;
    size_t cfg_offset; /* the option in hook_config_t */
} s_roots[] = {
    {"models", "SDXL_MODELS_ROOT", offsetof(hook_config_t, models_root)},
    {"loras", "SDXL_LORAS_ROOT", offsetof(hook_config_t, loras_root)},
    {"vaes", "SDXL_VAES_ROOT", offsetof(hook_config_t, vaes_root)},
    {"controlnets", "SDXL_CONTROLNETS_ROOT", offsetof(hook_config_t, controlnets_root)},
    {"embeddings", "SDXL_EMBEDDINGS_ROOT", offsetof(hook_config_t, embeddings_root)},
    {"upscalers", "SDXL_UPSCALERS_ROOT", offsetof(hook_config_t, upscalers_root)},
    {"outputs", "SDXL_OUTPUTS_ROOT", offsetof(hook_config_t, outputs_root)},
};

int hooks_init(const hook_config_t *cfg, char *err, size_t err_len)
{
    hooks_shutdown();
    s_validate = cfg ? cfg->validate : true;
    s_max_lz4 = cfg && cfg->max_frame_bytes > 0 ? (size_t)cfg->max_frame_bytes : 0;
    if (cfg && cfg->schemas_dir && cfg->schemas_dir[0]) {
        char e[400];
        s_schemas = sdx_schema_set_load(cfg->schemas_dir, e, sizeof e);
        if (!s_schemas)
            snprintf(err, err_len, "schemas_dir (config or --schemas-dir): %s", e);
    } else
        s_schemas = sdx_schema_set_load_default(err, err_len);
    if (!s_schemas)
        return -1;
    s_sem = sdx_semantic_new();
    if (!s_sem) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < sizeof s_roots / sizeof s_roots[0]; i++) {
        const char *dir = cfg ? *(const char *const *)((const char *)cfg + s_roots[i].cfg_offset)
                              : NULL;
        bool from_env = !dir || !*dir;
        if (from_env)
            dir = getenv(s_roots[i].env);
        if (dir && *dir && sdx_semantic_set_root(s_sem, s_roots[i].kind, dir) != 0) {
            snprintf(err, err_len, "%s root '%s' (from %s%s%s): not a folder", s_roots[i].kind,
                     dir, from_env ? s_roots[i].env : "config validation.",
                     from_env ? "" : s_roots[i].kind, from_env ? "" : "_root");
            return -1;
        }
    }
    int64_t max_bytes = cfg ? cfg->max_image_bytes : 0, max_pixels = cfg ? cfg->max_pixels : 0;
    const char *v = getenv("SDXL_MAX_IMAGE_BYTES");
    if (max_bytes <= 0 && v && *v)
        max_bytes = (int64_t)strtoull(v, NULL, 10);
    v = getenv("SDXL_MAX_PIXELS");
    if (max_pixels <= 0 && v && *v)
        max_pixels = (int64_t)strtoull(v, NULL, 10);
    if (max_bytes > 0)
        sdx_semantic_set_max_image_bytes(s_sem, (size_t)max_bytes);
    if (max_pixels > 0)
        sdx_semantic_set_max_pixels(s_sem, (uint64_t)max_pixels);
    log_info("hooks: %zu schema files, validation %s", sdx_schema_set_size(s_schemas),
             s_validate ? "on" : "off");
    return 0;
}

void hooks_shutdown(void)
{
    sdx_schema_set_destroy(&s_schemas);
    sdx_semantic_destroy(&s_sem);
}

int hooks_prepare(sdx_value_t **root, sdx_encoding_t enc, hook_state_t *st, sdx_fault_t *fault)
{
    /* DIALECT PREPARE HOOK: C# phase 1 (sdx_csharp_prepare) goes here. */
    st->dialect = SDX_DIALECT_NATIVE;
    st->data = NULL;
    if (!root || !*root || sdx_csharp_detect(*root) == SDX_DIALECT_NATIVE)
        return 0;
    /* array-encoded objects ([Key(n)]) only come from MessagePack-CSharp:
       a JSON array is no C# form; the envelope refuses it natively */
    if (enc == SDX_ENC_JSON && (*root)->type == SDX_ARRAY)
        return 0;
    sdx_csharp_info_t *info = calloc(1, sizeof *info);
    if (!info) {
        sdx_fault_set(fault, SDX_ERR_INTERNAL, NULL, "out of memory");
        return -1;
    }
    st->data = info;
    st->dialect = SDX_DIALECT_CSHARP; /* answer in kind even if it fails */
    sdx_schema_error_t e;
    if (sdx_csharp_prepare(s_schemas, root, s_max_lz4, info, &e) != 0) {
        sdx_error_t code = strcmp(e.rule, "x-lz4-limit") == 0 ? SDX_ERR_PAYLOAD_TOO_LARGE
                                                              : SDX_ERR_INVALID_REQUEST;
        sdx_fault_set(fault, code, e.field[0] ? e.field : NULL, "%s", e.message);
        return -1;
    }
    st->dialect = info->dialect;
    return 0;
}

int hooks_validate(sdx_envelope_t *env, hook_state_t *st, sdx_fault_t *fault)
{
    /* VALIDATION HOOK: schema validation of env->data for env->message_type
       (sdx_schema_check_request) and C# data mapping go here. */
    if (!s_validate || !s_schemas || !env->root || env->root->type != SDX_MAP)
        return 0;
    sdx_value_t **data = NULL;
    for (size_t i = 0; i < env->root->u.map.len && !data; i++)
        if (env->root->u.map.items[i].val == env->data)
            data = &env->root->u.map.items[i].val;
    if (!data)
        return 0; /* no data map: the envelope already answered */
    sdx_schema_error_t e;
    int rc =
        sdx_csharp_check_request(s_schemas, s_sem, env->message_type,
                                 st ? (sdx_dialect_t)st->dialect : SDX_DIALECT_NATIVE, data, &e);
    env->data = *data;
    if (rc < 0) {
        sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, e.field[0] ? e.field : NULL, "%s", e.message);
        return -1;
    }
    /* defaults may have named the model only now */
    const char *model = sdx_map_str(env->data, "model_name", NULL);
    if (model && *model)
        env->model = model;
    return 0;
}

int hooks_check_data(const char *message_type, bool csharp, sdx_value_t **data,
                     sdx_fault_t *fault)
{
    if (!s_validate || !s_schemas || !data || !*data)
        return 0;
    sdx_schema_error_t e;
    sdx_dialect_t d = csharp ? SDX_DIALECT_CSHARP : SDX_DIALECT_NATIVE;
    if (csharp && sdx_csharp_map_data(s_schemas, message_type, data, &e) != 0) {
        sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, e.field[0] ? e.field : NULL, "%s",
                      e.message);
        return -1;
    }
    if (sdx_csharp_check_request(s_schemas, s_sem, message_type, d, data, &e) < 0) {
        sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, e.field[0] ? e.field : NULL, "%s",
                      e.message);
        return -1;
    }
    return 0;
}

sdx_value_t *hooks_reply(const sdx_value_t *reply, sdx_encoding_t enc, const hook_state_t *st)
{
    /* REPLY DIALECT HOOK: sdx_csharp_reply() for C#-dialect clients. */
    if (!st || st->dialect != SDX_DIALECT_CSHARP || !reply)
        return NULL;
    return sdx_csharp_reply(reply, enc, (const sdx_csharp_info_t *)st->data);
}

void hooks_undecodable(const void *buf, size_t len, hook_state_t *st)
{
    st->dialect = SDX_DIALECT_NATIVE;
    st->data = NULL;
    sdx_csharp_info_t *info = calloc(1, sizeof *info);
    if (!info)
        return;
    if (sdx_csharp_sniff(buf, len, info) != SDX_DIALECT_CSHARP) {
        free(info);
        return;
    }
    info->set = s_schemas;
    st->data = info;
    st->dialect = SDX_DIALECT_CSHARP;
}

void hooks_request_done(hook_state_t *st)
{
    free(st->data);
    st->data = NULL;
    st->dialect = 0;
}
