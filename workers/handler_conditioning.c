/*  handler_conditioning.c - the conditioning domain: the tokenizers and the
    two SDXL text encoders of the models it serves, on this worker's device.

      conditioning.tokenize       the CLIP token ids of a prompt for both
                                  tokenizers (the model's, or the engine's
                                  built-in CLIP files when no model_name)
      conditioning.encode_prompt  prompt_embeds, pooled_prompt_embeds and (with
                                  guidance_scale > 1) their negative pair, as
                                  tensors (proto/PROTOCOL.md "Tensors")
      conditioning.load_model     load a model's text encoders into the cache
      conditioning.unload_model   drop them (infer_domain_model_op)

    encode_prompt takes the flat generation request, validated against
    schemas/prompt_submission_schema.json (tokenize has its own,
    conditioning_tokenize_schema.json) by the broker and again here, with the
    same files (--schemas-dir) through the same validator (domain_schema.h):
    the defaults are the schema's and the same fields mean the same thing as
    in inference.generate: prompt, negative_prompt ("" = none, the model's
    force_zeros_for_empty_prompt applies), model_name, clip_skip,
    hyperparameters.guidance_scale, batch.size, precision.dtype (fp16 runs as
    fp32 on a CPU, as in the inference worker). The embeddings are computed by
    the engine's own encode step (sdxl_encode_prompt), the one
    inference.generate runs, so they are the tensors a one-hop generation
    uses. Text encoders stay loaded in an LRU of --max-models models
    (infer_cache.c, text side only: no UNet, no VAE).

    Settings (flags, --config keys, environment): models-root, config-dir,
    max-models, threads, schemas-dir, as for the inference domain.

    Built without the engine the domain answers not_available for both. */
#include "sdx_worker.h"

#ifndef SDX_WITH_ENGINE

const sdx_domain_t sdx_domain_conditioning = {
    .name = "conditioning",
    .capacity = 1,
    .handlers = NULL,
    .planned_issue = "this sdxl-worker was built without the libtorch engine (-Dengine=disabled)",
};

#else /* SDX_WITH_ENGINE */

#include "domain_opts.h"
#include "domain_schema.h"
#include "infer_domain.h"
#include "infer_engine.h"
#include "sdx_log.h"

#include <limits.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char models_root[PATH_MAX];
    char config_dir[PATH_MAX];
    char schemas_dir[PATH_MAX]; /* "": found as the broker finds it */
    char loras_root[PATH_MAX];  /* "": <models_root>/lora */
    int max_models;
    int threads;
} s_settings_t;

static const sdx_option_t s_options[] = {
    {"models-root", true, "DIR", "./models", "SDXL_MODELS_ROOT",
     "models: diffusers folders, .safetensors files (must exist)"},
    {"config-dir", true, "DIR", "", "SDXL_CONFIG_DIR",
     "configs for single files without <name>.config/"},
    {"max-models", true, "N", "2", "SDXL_MAX_MODELS",
     "text encoders kept loaded, least recently used out (1..64)"},
    {"threads", true, "N", "0", "SDXL_THREADS", "libtorch CPU threads, 0: its default (0..1024)"},
    {"schemas-dir", true, "DIR", "", "SDXL_SCHEMAS_DIR",
     "request schemas (\"\": <source>/schemas, then <datadir>/sdxl-fleet/schemas)"},
    {"loras-root", true, "DIR", "", "SDXL_LORAS_ROOT",
     "LoRA files that lora.models names (\"\": <models-root>/lora; their text-encoder part)"},
    {NULL, false, NULL, NULL, NULL, NULL},
};

static const domain_opt_field_t s_fields[] = {
    {"models-root", DOMAIN_OPT_DIR, offsetof(s_settings_t, models_root), 0, 0},
    {"config-dir", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, config_dir), 0, 0},
    {"max-models", DOMAIN_OPT_INT, offsetof(s_settings_t, max_models), 1, 64},
    {"threads", DOMAIN_OPT_INT, offsetof(s_settings_t, threads), 0, 1024},
    {"schemas-dir", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, schemas_dir), 0, 0},
    {"loras-root", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, loras_root), 0, 0},
};

typedef struct {
    s_settings_t set;
    char device_note[256];
    domain_schema_t rules; /* the request rules and the models root */
    model_catalog_t *catalog; /* checkpoints and LoRAs (names, near matches) */
    char loras_dir[PATH_MAX];
    infer_engine_t *engine;
    atomic_long encoded, tokenized;
} s_state_t;

static s_state_t *s_state(sdx_worker_t *w)
{
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st && (st = calloc(1, sizeof *st)))
        sdx_worker_set_domain_state(w, st);
    return st;
}

static int s_option(sdx_worker_t *w, const char *key, const char *value, char *err, size_t err_len)
{
    s_state_t *st = s_state(w);
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return domain_opts_set(s_fields, sizeof s_fields / sizeof s_fields[0], "conditioning", &st->set,
                           key, value, err, err_len);
}


static int s_init(sdx_worker_t *w, char *err, size_t err_len)
{
    s_state_t *st = s_state(w);
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    infer_set_log(infer_domain_log_sink);
    static const char *const need[] = {"conditioning.encode_prompt", "conditioning.tokenize", NULL};
    if (st->set.loras_root[0])
        snprintf(st->loras_dir, sizeof st->loras_dir, "%s", st->set.loras_root);
    else if ((size_t)snprintf(st->loras_dir, sizeof st->loras_dir, "%s/lora",
                              st->set.models_root) >= sizeof st->loras_dir)
        st->loras_dir[0] = '\0';
    struct stat lsb;
    bool have_loras = st->loras_dir[0] && stat(st->loras_dir, &lsb) == 0 && S_ISDIR(lsb.st_mode);
    const char *roots[] = {"models", st->set.models_root, "loras",
                           have_loras ? st->loras_dir : "", NULL};
    if (domain_schema_load(&st->rules, st->set.schemas_dir, need, roots, err, err_len) != 0)
        return -1;
    model_catalog_config_t mc = {.detect = NULL};
    mc.roots[MODEL_CHECKPOINT] = st->set.models_root; /* near names of an unknown model_name */
    mc.roots[MODEL_LORA] = st->loras_dir;
    if (!(st->catalog = model_catalog_new(&mc, err, err_len)))
        return -1;
    infer_engine_config_t cfg = {
        .models_root = st->set.models_root,
        .config_dir = st->set.config_dir,
        .max_models = st->set.max_models > 0 ? st->set.max_models : 1,
        .gpu = sdx_worker_gpu(w),
        .threads = st->set.threads,
        .upscalers_root = "",
        .text_only = true,
    };
    st->engine = infer_engine_new(&cfg, st->device_note, sizeof st->device_note, err, err_len);
    if (!st->engine)
        return -1;
    if (st->device_note[0])
        log_warn("%s", st->device_note);
    log_info("text encoders on %s, models root %s, max %d model(s), %d CPU thread(s)",
             infer_engine_device(st->engine), st->set.models_root, cfg.max_models,
             infer_engine_threads(st->engine));
    return 0;
}

static void s_fini(sdx_worker_t *w)
{
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st)
        return;
    infer_engine_destroy(&st->engine);
    domain_schema_fini(&st->rules);
    model_catalog_destroy(&st->catalog);
    free(st);
    sdx_worker_set_domain_state(w, NULL);
}

static void s_status(sdx_worker_t *w, sdx_value_t *out)
{
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st || !st->engine)
        return;
    sdx_value_t *eng = sdx_value_map_new();
    if (!eng)
        return;
    sdx_map_set_str(eng, "device", infer_engine_device(st->engine));
    if (st->device_note[0])
        sdx_map_set_str(eng, "device_note", st->device_note);
    sdx_map_set_str(eng, "models_root", st->set.models_root);
    sdx_map_set_int(eng, "max_models", st->set.max_models);
    sdx_map_set_int(eng, "threads", infer_engine_threads(st->engine));
    sdx_map_set_int(eng, "encoded", atomic_load(&st->encoded));
    sdx_map_set_int(eng, "tokenized", atomic_load(&st->tokenized));
    sdx_value_t *loaded = infer_domain_loaded_models(st->engine);
    if (loaded)
        sdx_map_set(eng, "loaded_models", loaded);
    sdx_map_set(out, "engine", eng);
}

static void s_publish_models(sdx_worker_t *w, s_state_t *st)
{
    infer_domain_publish_models(w, st->engine);
}



static int s_fail_status(sdx_job_t *job, infer_status_t rc, const char *model, const char *err)
{
    const char *field = rc == INFER_BAD_NAME || rc == INFER_NOT_FOUND || rc == INFER_LOAD_FAILED
                            ? "model_name"
                            : NULL;
    if (rc == INFER_LOAD_FAILED)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, field, "cannot load model '%s': %s", model, err);
    return sdx_job_fail(job, infer_domain_code(rc), field, "%s", err);
}

/* ---------------------------------------------------------- the fields */

/* A string field of the filled-in request; NULL when absent or not text. */
static const char *s_str(const sdx_value_t *m, const char *path)
{
    const sdx_value_t *v = sdx_map_get_path(m, path);
    return v && v->type == SDX_STR ? v->u.str.ptr : NULL;
}

/* An integer field the schema fills (its default): absent means the
   request did not come through the broker's validation. */
static int s_int(sdx_job_t *job, const sdx_value_t *m, const char *path, int64_t *out)
{
    const sdx_value_t *v = sdx_map_get_path(m, path);
    if (!v || v->type != SDX_INT)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, path,
                            "%s: an integer is required (the broker fills the schema's default)",
                            path);
    *out = v->u.i;
    return 0;
}

static int s_num(sdx_job_t *job, const sdx_value_t *m, const char *path, double *out)
{
    const sdx_value_t *v = sdx_map_get_path(m, path);
    if (!v || !sdx_value_as_double(v, out) || *out != *out)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, path,
                            "%s: a number is required (the broker fills the schema's default)",
                            path);
    return 0;
}

/* The text side of the flat request into req (strings borrowed from data). */
static int s_parse(sdx_job_t *job, const sdx_value_t *data, s_state_t *st, infer_request_t *req)
{
    memset(req, 0, sizeof *req);
    if (sdx_array_len(sdx_map_get(data, "textual_inversions")) > 0)
        return sdx_job_fail(job, SDX_ERR_NOT_AVAILABLE, "textual_inversions",
                            "textual_inversions are not applied by the conditioning worker yet: "
                            "use inference.generate");
    req->prompt = s_str(data, "prompt");
    if (!req->prompt)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "prompt", "prompt (a string) is required");
    const char *neg = s_str(data, "negative_prompt");
    req->negative_prompt = neg && *neg ? neg : NULL;
    req->model_name = s_str(data, "model_name");
    if (!req->model_name || !*req->model_name)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "model_name", "model_name is required");
    int64_t clip_skip = 0, batch = 0;
    if (s_int(job, data, "clip_skip", &clip_skip) || s_int(job, data, "batch.size", &batch) ||
        s_num(job, data, "hyperparameters.guidance_scale", &req->guidance_scale))
        return -1;
    if (clip_skip < 0 || clip_skip > 64)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "clip_skip", "must be in 0..64");
    if (batch < 1 || batch > 64)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "batch.size", "must be in 1..64");
    req->clip_skip = (int)clip_skip;
    /* as the inference worker: a1111 weighting in the engine, compel not */
    req->prompt_attention = s_str(data, "prompt_attention");
    if (req->prompt_attention && strcmp(req->prompt_attention, "none") != 0 &&
        strcmp(req->prompt_attention, "a1111") != 0)
        return sdx_job_fail(job, SDX_ERR_NOT_AVAILABLE, "prompt_attention",
                            "prompt_attention '%s' is not supported yet: compel syntax is not "
                            "built into the engine; use 'none' or 'a1111'",
                            req->prompt_attention);
    req->batch = (int)batch;
    req->dtype = s_str(data, "precision.dtype");
    if (!req->dtype)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "precision.dtype",
                            "precision.dtype is required (the broker fills the schema's default)");
    if (strcmp(req->dtype, "fp16") != 0 && strcmp(req->dtype, "fp32") != 0 &&
        strcmp(req->dtype, "bf16") != 0)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "precision.dtype",
                            "unknown dtype '%s'; accepted: fp32, fp16, bf16", req->dtype);
    /* as the inference worker: no Half kernels on the CPU */
    req->dtype = infer_domain_run_dtype(st->engine, req->dtype);
    return 0;
}

/* {"dtype", "shape", "data"}: the protocol's tensor form (bytes moved in). */
static sdx_value_t *s_tensor_value(infer_tensor_t *t)
{
    sdx_value_t *m = sdx_value_map_new(), *shape = sdx_value_array_new();
    if (!m || !shape) {
        sdx_value_destroy(&m);
        sdx_value_destroy(&shape);
        return NULL;
    }
    for (int d = 0; d < t->ndim; d++)
        sdx_array_push(shape, sdx_value_int_new(t->shape[d]));
    sdx_map_set_str(m, "dtype", t->dtype);
    sdx_map_set(m, "shape", shape);
    sdx_value_t *bin = sdx_value_bin_take(t->data, t->nbytes);
    if (!bin) {
        sdx_value_destroy(&m);
        return NULL;
    }
    t->data = NULL; /* owned by bin */
    sdx_map_set(m, "data", bin);
    return m;
}

/* ---------------------------------------------------------- handlers */

static int s_encode_prompt(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    double t0 = infer_domain_ms();
    sdx_worker_t *w = sdx_job_worker(job);
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st || !st->engine)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "the text encoders are not initialised");
    /* our own copy, checked and filled by the schema; req borrows from it */
    sdx_value_t *filled = sdx_value_clone(data);
    if (!filled)
        return sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of host memory");
    infer_request_t req;
    if (domain_schema_check(job, &st->rules, &filled) != 0 || s_parse(job, filled, st, &req) != 0) {
        sdx_value_destroy(&filled);
        return -1;
    }
    /* lora.models: their text-encoder part changes the embeddings */
    infer_lora_t loras[8];
    char(*lora_paths)[PATH_MAX] = calloc(8, PATH_MAX);
    if (!lora_paths || infer_domain_loras(job, st->catalog, st->loras_dir, filled, loras,
                                          lora_paths, &req.n_loras) != 0) {
        int frc = lora_paths ? -1 : sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of memory");
        free(lora_paths);
        sdx_value_destroy(&filled);
        return frc;
    }
    req.loras = loras;
    infer_embeds_t out;
    char err[768];
    infer_status_t rc = infer_engine_encode(st->engine, &req, &out, err, sizeof err);
    free(lora_paths);
    if (out.models_changed)
        s_publish_models(w, st);
    if (rc != INFER_OK) {
        int frc = s_fail_status(job, rc, req.model_name, err);
        sdx_value_destroy(&filled);
        return frc;
    }
    sdx_value_t *tensors = sdx_value_map_new();
    int bad = !tensors;
    for (int i = 0; !bad && i < out.count; i++) {
        sdx_value_t *tv = s_tensor_value(&out.t[i]);
        bad = !tv || sdx_map_set(tensors, out.t[i].name, tv) != 0;
    }
    infer_embeds_t kept = out;
    infer_embeds_clear(&out);
    if (bad) {
        sdx_value_destroy(&tensors);
        sdx_value_destroy(&filled);
        return sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of host memory");
    }
    sdx_map_set(reply, "tensors", tensors);
    sdx_map_set_str(reply, "model_name", req.model_name);
    sdx_map_set_str(reply, "dtype", req.dtype);
    sdx_map_set_str(reply, "device", infer_engine_device(st->engine));
    sdx_map_set_bool(reply, "do_classifier_free_guidance", req.guidance_scale > 1.0);
    sdx_map_set_bool(reply, "truncated", kept.truncated);
    sdx_value_t *tm = sdx_value_map_new();
    if (tm) {
        sdx_map_set_float(tm, "load_ms", kept.load_ms);
        sdx_map_set_float(tm, "encode_ms", kept.encode_ms);
        sdx_map_set_float(tm, "total_ms", infer_domain_ms() - t0);
        sdx_map_set(reply, "timings", tm);
    }
    atomic_fetch_add(&st->encoded, 1);
    log_info("%s: encoded %d prompt tensor(s) with %s in %.1f ms", sdx_job_request_id(job),
             kept.count, req.model_name, infer_domain_ms() - t0);
    sdx_value_destroy(&filled);
    return 0;
}

static int s_tokenize(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    sdx_worker_t *w = sdx_job_worker(job);
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st || !st->engine)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "the tokenizers are not initialised");
    sdx_value_t *filled = sdx_value_clone(data);
    if (!filled)
        return sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of host memory");
    if (domain_schema_check(job, &st->rules, &filled) != 0) {
        sdx_value_destroy(&filled);
        return -1;
    }
    const char *prompt = s_str(filled, "prompt");
    /* no model_name: the engine's built-in CLIP tokenizers */
    const char *model = s_str(filled, "model_name");
    infer_tokens_t out;
    char err[768];
    infer_status_t rc =
        prompt ? infer_engine_tokenize(st->engine, model, prompt, &out, err, sizeof err)
               : INFER_BAD_INPUT;
    if (!prompt) {
        memset(&out, 0, sizeof out);
        snprintf(err, sizeof err, "prompt (a string) is required");
    }
    if (out.models_changed)
        s_publish_models(w, st);
    if (rc != INFER_OK) {
        int frc = rc == INFER_BAD_INPUT ? sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "prompt", "%s", err)
                                        : s_fail_status(job, rc, model, err);
        sdx_value_destroy(&filled);
        return frc;
    }
    sdx_value_t *toks = sdx_value_array_new();
    bool truncated = false;
    for (int i = 0; toks && i < out.count; i++) {
        sdx_value_t *t = sdx_value_map_new(), *ids = sdx_value_array_new();
        if (!t || !ids) {
            sdx_value_destroy(&t);
            sdx_value_destroy(&ids);
            break;
        }
        for (int k = 0; k < 77; k++)
            sdx_array_push(ids, sdx_value_int_new(out.ids[i][k]));
        sdx_map_set_str(t, "name", out.names[i]);
        sdx_map_set(t, "input_ids", ids);
        sdx_map_set_int(t, "length", out.n_real[i]);
        sdx_map_set_int(t, "untruncated_length", (int64_t)out.n_untruncated[i]);
        sdx_map_set_int(t, "pad_id", out.pad_id[i]);
        truncated |= out.n_untruncated[i] > 77;
        sdx_array_push(toks, t);
    }
    if (!toks || sdx_array_len(toks) != (size_t)out.count) {
        sdx_value_destroy(&toks);
        sdx_value_destroy(&filled);
        return sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of host memory");
    }
    sdx_map_set(reply, "tokenizers", toks);
    sdx_map_set_str(reply, "model_name", model && *model ? model : "built-in CLIP tokenizer");
    sdx_map_set_int(reply, "max_length", 77);
    sdx_map_set_bool(reply, "truncated", truncated);
    atomic_fetch_add(&st->tokenized, 1);
    sdx_value_destroy(&filled);
    return 0;
}

/* conditioning.load_model / conditioning.unload_model: the text side of a
   model, model_name and precision.dtype as conditioning.encode_prompt takes
   them (its schema's rules and default), see infer_domain_model_op. */
static int s_model_op(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply, bool load)
{
    s_state_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    if (!st || !st->engine)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "the text encoders are not initialised");
    return infer_domain_model_op(job, &st->rules, "conditioning.encode_prompt", st->engine,
                                 st->catalog, data, load, reply);
}

static int s_load_model(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    return s_model_op(job, data, reply, true);
}

static int s_unload_model(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    return s_model_op(job, data, reply, false);
}

static const sdx_handler_t s_handlers[] = {
    {"conditioning.tokenize", s_tokenize, 0,
     "CLIP token ids of a prompt for both tokenizers (the model's, or built-in)"},
    {"conditioning.encode_prompt", s_encode_prompt, 0,
     "SDXL prompt embeddings (+ pooled, + negatives with CFG) as tensors"},
    {"conditioning.load_model", s_load_model, 0,
     "load a model's text encoders into the cache: path, dtype, load_ms, mb"},
    {"conditioning.unload_model", s_unload_model, 0,
     "drop a model's text encoders from the cache (one in use when its job ends)"},
    {NULL, NULL, 0, NULL},
};

const sdx_domain_t sdx_domain_conditioning = {
    .name = "conditioning",
    .capacity = 1, /* text encoders run on the device, one request at a time */
    .handlers = s_handlers,
    .options = s_options,
    .option = s_option,
    .init = s_init,
    .fini = s_fini,
    .status = s_status,
};

#endif /* SDX_WITH_ENGINE */
