/*  infer_domain.c - see infer_domain.h. */
#include "infer_domain.h"

#include "sdx_log.h"

#include <limits.h>
#include <stdio.h>

#include <stdlib.h>
#include <time.h>

void infer_domain_log_sink(int level, const char *msg)
{
    sdx_log(level <= 0   ? SDX_LOG_ERROR
            : level == 1 ? SDX_LOG_WARN
            : level == 2 ? SDX_LOG_INFO
                         : SDX_LOG_DEBUG,
            "%s", msg);
}

sdx_error_t infer_domain_code(infer_status_t rc)
{
    switch (rc) {
    case INFER_NOT_FOUND:
        return SDX_ERR_NOT_FOUND;
    case INFER_CANCELLED:
        return SDX_ERR_CANCELLED;
    case INFER_OOM:
        return SDX_ERR_OUT_OF_MEMORY;
    case INFER_OK:
    case INFER_LOAD_FAILED:
    case INFER_FAILED:
        return SDX_ERR_INTERNAL;
    default: /* the request's fault: a bad name, parameter, file or image */
        return SDX_ERR_INVALID_REQUEST;
    }
}

void infer_domain_publish_models(sdx_worker_t *w, infer_engine_t *e)
{
    size_t n = 0;
    char **names = infer_engine_models(e, &n);
    sdx_worker_set_models(w, (const char *const *)names, n);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

sdx_value_t *infer_domain_loaded_models(infer_engine_t *e)
{
    infer_model_info_t info[16];
    int n = infer_engine_describe(e, info, 16);
    sdx_value_t *loaded = sdx_value_array_new();
    for (int i = 0; loaded && i < n; i++) {
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            break;
        sdx_map_set_str(m, "name", info[i].name);
        sdx_map_set_str(m, "path", info[i].path);
        sdx_map_set_str(m, "format", info[i].format);
        sdx_map_set_str(m, "dtype", info[i].dtype);
        sdx_map_set_str(m, "state", info[i].state);
        sdx_map_set_bool(m, "in_use", info[i].in_use);
        sdx_map_set_int(m, "uses", info[i].uses);
        sdx_map_set_float(m, "load_ms", info[i].load_ms);
        sdx_map_set_float(m, "mb", (double)info[i].bytes / (1 << 20));
        sdx_array_push(loaded, m);
    }
    return loaded;
}

double infer_domain_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static const char *s_text(const sdx_value_t *m, const char *key)
{
    const sdx_value_t *v = sdx_map_get(m, key);
    return v && v->type == SDX_STR ? v->u.str.ptr : NULL;
}

/* lora.models -> files under the LoRA root, by catalogue name (the
   catalogue is rescanned when a name is not there yet); names the
   catalogue lacks are answered with the near ones. paths[i] backs
   out[i].path. 0, or -1 after sdx_job_fail. */
int infer_domain_loras(sdx_job_t *job, model_catalog_t *catalog, const char *root,
                       const sdx_value_t *data, infer_lora_t out[8], char (*paths)[PATH_MAX],
                       int *n)
{
    *n = 0;
    const sdx_value_t *models = sdx_map_get_path(data, "lora.models");
    size_t count = sdx_array_len(models);
    if (count > 8)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "lora.models", "at most 8 LoRAs");
    for (size_t i = 0; i < count; i++) {
        const sdx_value_t *m = sdx_array_at(models, i);
        char field[48];
        snprintf(field, sizeof field, "lora.models[%zu].name", i);
        const char *name = s_text(m, "name");
        const sdx_value_t *wv = sdx_map_get(m, "weight");
        double weight;
        if (!name || !wv || !sdx_value_as_double(wv, &weight))
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                "a LoRA needs a name and a weight (the schema fills 1.0)");
        model_entry_t e;
        char cerr[512];
        model_status_t ms = model_catalog_find(catalog, MODEL_LORA, name, &e, cerr,
                                               sizeof cerr);
        if (ms == MODEL_NOT_FOUND &&
            model_catalog_rescan(catalog, NULL, cerr, sizeof cerr) == 0)
            ms = model_catalog_find(catalog, MODEL_LORA, name, &e, cerr, sizeof cerr);
        if (ms != MODEL_OK)
            return sdx_job_fail(job, ms == MODEL_NOT_FOUND ? SDX_ERR_NOT_FOUND : SDX_ERR_INVALID_REQUEST,
                                field, "%s (LoRA root %s)", cerr, root);
        if ((size_t)snprintf(paths[i], PATH_MAX, "%s/%s", root, e.path) >= PATH_MAX)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field, "the path is too long");
        out[i] = (infer_lora_t){paths[i], weight};
        (*n)++;
    }
    return 0;
}
