/*  infer_domain.c - see infer_domain.h. */
#include "infer_domain.h"

#include "sdx_log.h"

#include <limits.h>
#include <stdio.h>

#include <stdlib.h>
#include <string.h>
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

const char *infer_domain_run_dtype(const infer_engine_t *e, const char *dtype)
{
    return dtype && strcmp(dtype, "fp16") == 0 && !infer_engine_is_cuda(e) ? "fp32" : dtype;
}

void infer_domain_near_models(model_catalog_t *catalog, const char *name, char *err, size_t err_len)
{
    char cerr[512] = "";
    model_entry_t e;
    if (!catalog || model_catalog_rescan(catalog, NULL, cerr, sizeof cerr) != 0 ||
        model_catalog_find(catalog, MODEL_CHECKPOINT, name, &e, cerr, sizeof cerr) !=
            MODEL_NOT_FOUND)
        return;
    const char *near = strstr(cerr, "; ");
    size_t n = strlen(err);
    if (near && n + 2 < err_len)
        snprintf(err + n, err_len - n, "%s", near);
}

/* The loaded model names (most recently used first) as an array. */
static sdx_value_t *s_model_names(infer_engine_t *e)
{
    size_t n = 0;
    char **names = infer_engine_models(e, &n);
    sdx_value_t *arr = sdx_value_array_new();
    for (size_t i = 0; i < n; i++) {
        sdx_value_t *s = arr ? sdx_value_str_new(names[i]) : NULL;
        if (s)
            sdx_array_push(arr, s);
        free(names[i]);
    }
    free(names);
    return arr;
}

int infer_domain_model_op(sdx_job_t *job, const domain_schema_t *rules, const char *like_type,
                          infer_engine_t *e, model_catalog_t *catalog, const sdx_value_t *data,
                          bool load, sdx_value_t *reply)
{
    static const char *const keys[] = {"model_name", "precision", NULL};
    static const char *const required[] = {"model_name", NULL};
    if (!e)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "the engine is not initialised");
    /* unload: no dtype given means every dtype, not the schema's default */
    bool dtype_given = sdx_map_get_path(data, "precision.dtype") != NULL;
    sdx_value_t *req = sdx_value_clone(data);
    if (!req)
        return sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of host memory");
    if (domain_schema_check_like(job, rules, like_type, keys, required, &req) != 0) {
        sdx_value_destroy(&req);
        return -1;
    }
    const sdx_value_t *nv = sdx_map_get(req, "model_name");
    const sdx_value_t *dv = sdx_map_get_path(req, "precision.dtype");
    if (!nv || nv->type != SDX_STR || (load && (!dv || dv->type != SDX_STR))) {
        sdx_value_destroy(&req);
        return sdx_job_fail(job, SDX_ERR_INTERNAL, nv ? "precision.dtype" : "model_name",
                            "the request schema of %s gave it no string default (check the "
                            "schemas folder)",
                            like_type);
    }
    const char *name = nv->u.str.ptr;
    const char *dtype = dv && dv->type == SDX_STR && (load || dtype_given)
                            ? infer_domain_run_dtype(e, dv->u.str.ptr)
                            : NULL;
    char err[768] = "";
    infer_status_t rc;
    infer_load_t lo;
    int unloaded = 0, deferred = 0;
    double t0 = infer_domain_ms();
    if (load)
        rc = infer_engine_load(e, name, dtype, &lo, err, sizeof err);
    else
        rc = infer_engine_unload(e, name, dtype, &unloaded, &deferred, err, sizeof err);
    bool changed = load ? lo.models_changed : unloaded + deferred > 0;
    if (changed)
        infer_domain_publish_models(sdx_job_worker(job), e);
    if (rc != INFER_OK) {
        int frc;
        if (rc == INFER_LOAD_FAILED) {
            frc = sdx_job_fail(job, SDX_ERR_INTERNAL, "model_name", "cannot load model '%s': %s",
                               name, err);
        } else {
            if (rc == INFER_NOT_FOUND)
                infer_domain_near_models(catalog, name, err, sizeof err);
            frc = sdx_job_fail(job, infer_domain_code(rc), "model_name", "%s", err);
        }
        sdx_value_destroy(&req);
        return frc;
    }
    sdx_map_set_str(reply, "model_name", name);
    if (load) {
        sdx_map_set_str(reply, "path", lo.path);
        sdx_map_set_str(reply, "dtype", lo.dtype);
        sdx_map_set_bool(reply, "loaded", lo.loaded);
        sdx_map_set_bool(reply, "already_loaded", lo.already_loaded);
        sdx_map_set_float(reply, "load_ms", lo.load_ms);
        sdx_map_set_float(reply, "mb", (double)lo.bytes / (1 << 20));
        log_info("%s: model %s (%s) %s in %.0f ms", sdx_job_request_id(job), name, lo.dtype,
                 lo.loaded ? "loaded" : "was loaded already", infer_domain_ms() - t0);
    } else {
        if (dtype)
            sdx_map_set_str(reply, "dtype", dtype);
        sdx_map_set_int(reply, "unloaded", unloaded);
        sdx_map_set_int(reply, "deferred", deferred);
        if (unloaded + deferred == 0) {
            char note[384];
            snprintf(note, sizeof note, "model '%.256s'%s%s was not loaded", name,
                     dtype ? " in " : "", dtype ? dtype : "");
            sdx_map_set_str(reply, "note", note);
        } else if (deferred > 0) {
            sdx_map_set_str(reply, "note",
                            "an engine in use is freed when its running job gives it back");
        }
        log_info("%s: model %s unloaded (%d now, %d when their jobs end)", sdx_job_request_id(job),
                 name, unloaded, deferred);
    }
    sdx_value_t *names = s_model_names(e);
    if (names)
        sdx_map_set(reply, "loaded_models", names);
    sdx_value_destroy(&req);
    return 0;
}
