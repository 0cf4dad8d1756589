/*  handler_inference.c - the inference domain: SDXL text-to-image on this
    worker's device through the engine (workers/sdxl/sdxl.h).

    inference.generate (and its alias inference.txt2img) takes the flat
    request the broker validated against schemas/prompt_submission_schema.json
    (defaults filled, scheduler names canonical), checks it again against the
    same schema files through the same validator (common/sdx_schema: a worker
    does not trust the wire, and a request sent past the broker's validation
    gets its defaults here), so no default or range of a request field is
    written in this file; it loads the model on first use
    into an LRU cache (infer_cache.c), reports progress per denoising step,
    stops within a step on CANCEL or deadline, and answers the images as
    encoded bytes (PNG, or WebP) with the timings. Fields the engine cannot
    honour yet answer not_available naming the field; nothing is silently
    dropped. inference.load_model / inference.unload_model load a model into
    that cache or drop it (infer_domain_model_op, for the broker's
    model.load / model.unload fan-out).

    Built without the engine (-Dengine=disabled: no SDX_WITH_ENGINE) the
    domain keeps answering not_available for every generation type; it still
    takes and checks its options, so one deployment config fits both builds.

    Settings: the domain options below (s_options), which the runtime takes
    as flags (--models-root DIR), as --config keys (models_root: DIR) or from
    the environment (SDXL_MODELS_ROOT), in that order, else the default; they
    are checked once at start (a bad one exits 2). See workers/README.md.

    Not for: the runtime (sdx_worker.c), model management verbs (model.*). */
#include "sdx_worker.h"

#include "domain_opts.h"
#include "domain_schema.h"
#include "out_save.h"
#include "sdx_codec.h"
#include "sdx_log.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ settings */

typedef struct {
    char models_root[PATH_MAX];
    char outputs_root[PATH_MAX];
    char config_dir[PATH_MAX]; /* "" for none */
    char upscalers_root[PATH_MAX]; /* "" for none: output.upscale uses Lanczos only */
    char loras_root[PATH_MAX];     /* "": <models_root>/lora */
    char vaes_root[PATH_MAX];      /* "": <models_root>/vae */
    char embeddings_root[PATH_MAX]; /* "": <models_root>/embeddings */
    char controlnets_root[PATH_MAX]; /* "": <models_root>/controlnet */
    char schemas_dir[PATH_MAX]; /* "": found as the broker finds it (sdx_schema_set_load_default) */
    char preview_decoder[PATH_MAX]; /* "": no live previews */
    int max_models;
    int max_model_mb; /* 0: no memory budget */
    int threads; /* 0: libtorch's default */
} s_settings_t;

static const sdx_option_t s_options[] = {
    {"models-root", true, "DIR", "./models", "SDXL_MODELS_ROOT",
     "models: diffusers folders, .safetensors files (must exist)"},
    {"outputs-root", true, "DIR", "./outputs", "SDXL_OUTPUTS_ROOT",
     "where output.save_path writes (made when missing)"},
    {"config-dir", true, "DIR", "", "SDXL_CONFIG_DIR",
     "configs for single files without <name>.config/"},
    {"max-models", true, "N", "1", "SDXL_MAX_MODELS",
     "engines kept loaded, least recently used out (1..64)"},
    {"max-model-mb", true, "MB", "0", "SDXL_MAX_MODEL_MB",
     "memory budget of the loaded models' weights, least recently used out (0: none)"},
    {"threads", true, "N", "0", "SDXL_THREADS", "libtorch CPU threads, 0: its default (0..1024)"},
    {"upscalers-root", true, "DIR", "", "SDXL_UPSCALERS_ROOT",
     "RRDBNet upscalers for output.upscale (\"\": Lanczos only)"},
    {"loras-root", true, "DIR", "", "SDXL_LORAS_ROOT",
     "LoRA files that lora.models names (\"\": <models-root>/lora)"},
    {"vaes-root", true, "DIR", "", "SDXL_VAES_ROOT",
     "VAE files or folders that vae_model names (\"\": <models-root>/vae)"},
    {"embeddings-root", true, "DIR", "", "SDXL_EMBEDDINGS_ROOT",
     "textual-inversion files that textual_inversions names (\"\": <models-root>/embeddings)"},
    {"controlnets-root", true, "DIR", "", "SDXL_CONTROLNETS_ROOT",
     "ControlNets (diffusers folders or files) that controlnet[].model names "
     "(\"\": <models-root>/controlnet)"},
    {"preview-decoder", true, "PATH", "", "SDXL_PREVIEW_DECODER",
     "TAESD (AutoencoderTiny) folder or file for output.preview live previews (\"\": none)"},
    /* the broker's --schemas-dir: same default, same environment variable */
    {"schemas-dir", true, "DIR", "", "SDXL_SCHEMAS_DIR",
     "request schemas (\"\": <source>/schemas, then <datadir>/sdxl-fleet/schemas)"},
    {NULL, false, NULL, NULL, NULL, NULL},
};

/* How each option is checked (domain_opts.h), and where it is kept. */
static const domain_opt_field_t s_fields[] = {
    {"models-root", DOMAIN_OPT_DIR, offsetof(s_settings_t, models_root), 0, 0},
    {"outputs-root", DOMAIN_OPT_DIR_CREATE, offsetof(s_settings_t, outputs_root), 0, 0},
    {"config-dir", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, config_dir), 0, 0},
    {"max-models", DOMAIN_OPT_INT, offsetof(s_settings_t, max_models), 1, 64},
    {"max-model-mb", DOMAIN_OPT_INT, offsetof(s_settings_t, max_model_mb), 0, 1 << 30},
    {"threads", DOMAIN_OPT_INT, offsetof(s_settings_t, threads), 0, 1024},
    {"upscalers-root", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, upscalers_root), 0, 0},
    {"loras-root", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, loras_root), 0, 0},
    {"vaes-root", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, vaes_root), 0, 0},
    {"schemas-dir", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, schemas_dir), 0, 0},
    {"embeddings-root", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, embeddings_root), 0, 0},
    {"controlnets-root", DOMAIN_OPT_DIR_OPTIONAL, offsetof(s_settings_t, controlnets_root), 0, 0},
    {"preview-decoder", DOMAIN_OPT_PATH_OPTIONAL, offsetof(s_settings_t, preview_decoder), 0, 0},
};

/* Check one option's value and store it in set. 0, or -1 with what is
   wrong in err (the runtime says which option and where it came from). */
static int s_settings_set(s_settings_t *set, const char *key, const char *value, char *err,
                          size_t err_len)
{
    return domain_opts_set(s_fields, sizeof s_fields / sizeof s_fields[0], "inference", set, key,
                           value, err, err_len);
}

#ifndef SDX_WITH_ENGINE

typedef struct {
    s_settings_t set;
} s_state_t;

#else /* SDX_WITH_ENGINE */

#include "infer_domain.h"
#include "infer_engine.h"
#include "model_catalog.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <time.h>

/* A random seed (the request's -1) is drawn below 2^53, so that it survives
   a JSON double; the schema's maximum is the same number. */
#define SEED_BITS_MASK 9007199254740991ULL

typedef struct {
    s_settings_t set;
    char device_note[256];
    infer_engine_t *engine;
    domain_schema_t rules;     /* the request rules and this worker's roots */
    model_catalog_t *catalog;  /* checkpoints and LoRAs under their roots (names, near matches) */
    char loras_dir[PATH_MAX];  /* --loras-root, else <models_root>/lora */
    char vaes_dir[PATH_MAX];   /* --vaes-root, else <models_root>/vae */
    char emb_dir[PATH_MAX];    /* --embeddings-root, else <models_root>/embeddings */
    char cnets_dir[PATH_MAX];  /* --controlnets-root, else <models_root>/controlnet */
    atomic_long generated, images, cancelled_runs;
} s_state_t;

#endif /* SDX_WITH_ENGINE */

/* The domain state, made by the first option (the runtime hands every
   option over before init: each has a default). */
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
    return s_settings_set(&st->set, key, value, err, err_len);
}

#ifndef SDX_WITH_ENGINE

static void s_fini(sdx_worker_t *w)
{
    free(sdx_worker_domain_state(w));
    sdx_worker_set_domain_state(w, NULL);
}

const sdx_domain_t sdx_domain_inference = {
    .name = "inference",
    .capacity = 1, /* one denoising run at a time per GPU */
    .handlers = NULL,
    .planned_issue = "this sdxl-worker was built without the libtorch engine (-Dengine=disabled)",
    .options = s_options,
    .option = s_option,
    .fini = s_fini,
};

#else /* SDX_WITH_ENGINE */


static int s_init(sdx_worker_t *w, char *err, size_t err_len)
{
    s_state_t *st = s_state(w); /* the option hook made it and filled st->set */
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    infer_set_log(infer_domain_log_sink);
    /* the request rules, found as the broker finds them: a named folder that
       is missing or does not load stops the worker (exit 2), no fallback;
       x-path-root names stay inside this worker's own folders */
    if (st->set.loras_root[0])
        snprintf(st->loras_dir, sizeof st->loras_dir, "%s", st->set.loras_root);
    else if ((size_t)snprintf(st->loras_dir, sizeof st->loras_dir, "%s/lora",
                              st->set.models_root) >= sizeof st->loras_dir)
        st->loras_dir[0] = '\0';
    if (st->set.vaes_root[0])
        snprintf(st->vaes_dir, sizeof st->vaes_dir, "%s", st->set.vaes_root);
    else if ((size_t)snprintf(st->vaes_dir, sizeof st->vaes_dir, "%s/vae", st->set.models_root) >=
             sizeof st->vaes_dir)
        st->vaes_dir[0] = '\0';
    if (st->set.embeddings_root[0])
        snprintf(st->emb_dir, sizeof st->emb_dir, "%s", st->set.embeddings_root);
    else if ((size_t)snprintf(st->emb_dir, sizeof st->emb_dir, "%s/embeddings",
                              st->set.models_root) >= sizeof st->emb_dir)
        st->emb_dir[0] = '\0';
    if (st->set.controlnets_root[0])
        snprintf(st->cnets_dir, sizeof st->cnets_dir, "%s", st->set.controlnets_root);
    else if ((size_t)snprintf(st->cnets_dir, sizeof st->cnets_dir, "%s/controlnet",
                              st->set.models_root) >= sizeof st->cnets_dir)
        st->cnets_dir[0] = '\0';
    struct stat lsb;
    bool have_loras = st->loras_dir[0] && stat(st->loras_dir, &lsb) == 0 && S_ISDIR(lsb.st_mode);
    bool have_vaes = st->vaes_dir[0] && stat(st->vaes_dir, &lsb) == 0 && S_ISDIR(lsb.st_mode);
    bool have_emb = st->emb_dir[0] && stat(st->emb_dir, &lsb) == 0 && S_ISDIR(lsb.st_mode);
    bool have_cnets = st->cnets_dir[0] && stat(st->cnets_dir, &lsb) == 0 && S_ISDIR(lsb.st_mode);
    static const char *const need[] = {"inference.generate", NULL};
    const char *roots[] = {"models",     st->set.models_root,
                           "outputs",    st->set.outputs_root,
                           "upscalers",  st->set.upscalers_root,
                           "loras",      have_loras ? st->loras_dir : "",
                           "vaes",       have_vaes ? st->vaes_dir : "",
                           "embeddings", have_emb ? st->emb_dir : "",
                           "controlnets", have_cnets ? st->cnets_dir : "",
                           NULL};
    if (domain_schema_load(&st->rules, st->set.schemas_dir, need, roots, err, err_len) != 0)
        return -1; /* fini frees the state */
    /* the checkpoints' catalogue (headers only; in memory): a model_name that
       is not there is answered with the names near it */
    model_catalog_config_t mc = {.detect = NULL};
    mc.roots[MODEL_CHECKPOINT] = st->set.models_root;
    mc.roots[MODEL_LORA] = st->loras_dir;
    mc.roots[MODEL_VAE] = st->vaes_dir;
    mc.roots[MODEL_EMBEDDING] = st->emb_dir;
    mc.roots[MODEL_CONTROLNET] = have_cnets ? st->cnets_dir : NULL;
    if (!(st->catalog = model_catalog_new(&mc, err, err_len)))
        return -1;
    infer_engine_config_t cfg = {
        .models_root = st->set.models_root,
        .config_dir = st->set.config_dir,
        .max_models = st->set.max_models > 0 ? st->set.max_models : 1,
        .gpu = sdx_worker_gpu(w),
        .threads = st->set.threads,
        .upscalers_root = st->set.upscalers_root,
        .max_model_bytes = (int64_t)st->set.max_model_mb << 20,
        .preview_decoder = st->set.preview_decoder,
    };
    st->engine = infer_engine_new(&cfg, st->device_note, sizeof st->device_note, err, err_len);
    if (!st->engine)
        return -1; /* fini frees the state */
    if (st->device_note[0])
        log_warn("%s", st->device_note);
    log_info("engine on %s, models root %s, outputs root %s, max %d model(s), %d CPU thread(s)",
             infer_engine_device(st->engine), st->set.models_root, st->set.outputs_root,
             cfg.max_models, infer_engine_threads(st->engine));
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
    if (!st)
        return;
    sdx_value_t *eng = sdx_value_map_new();
    if (!eng)
        return;
    sdx_map_set_str(eng, "device", infer_engine_device(st->engine));
    if (st->device_note[0])
        sdx_map_set_str(eng, "device_note", st->device_note);
    sdx_map_set_str(eng, "models_root", st->set.models_root);
    sdx_map_set_str(eng, "outputs_root", st->set.outputs_root);
    sdx_map_set_str(eng, "schemas_dir", st->set.schemas_dir);
    sdx_map_set_int(eng, "max_models", st->set.max_models);
    sdx_map_set_int(eng, "max_model_mb", st->set.max_model_mb);
    sdx_map_set_int(eng, "threads", infer_engine_threads(st->engine));
    sdx_map_set_int(eng, "generations", atomic_load(&st->generated));
    sdx_map_set_int(eng, "images", atomic_load(&st->images));
    sdx_map_set_int(eng, "cancelled_runs", atomic_load(&st->cancelled_runs));
    sdx_value_t *loaded = infer_domain_loaded_models(st->engine);
    if (loaded)
        sdx_map_set(eng, "loaded_models", loaded);
    sdx_map_set(out, "engine", eng);
}

/* Tell the runtime (READY/HEARTBEAT/status) which models are loaded. */
static void s_publish_models(sdx_worker_t *w, s_state_t *st)
{
    infer_domain_publish_models(w, st->engine);
}

/* ------------------------------------------------- the request's fields */

/* A value counts as "given" unless it is absent, nil, "", [] or {}. */
static bool s_given(const sdx_value_t *v)
{
    if (!v || v->type == SDX_NIL)
        return false;
    if (v->type == SDX_STR)
        return v->u.str.len > 0;
    if (v->type == SDX_ARRAY)
        return v->u.arr.len > 0;
    if (v->type == SDX_MAP)
        return v->u.map.len > 0;
    if (v->type == SDX_BIN)
        return v->u.bin.len > 0;
    return true;
}

/* Memory/speed switches with no effect on the image: reported in the
   reply's `ignored` list rather than refused. */
static const char *const s_no_effect[] = {
    "precision.cpu_offload", "precision.attention_slicing",
    "precision.vae_slicing", "precision.vae_tiling",
    "batch.parallel",
};

typedef struct {
    infer_request_t gp;
    const char *model_name;
    const char *dtype_name;
    const char *format;
    int quality;
    const char *save_path;
    int64_t seed;
    bool seed_random;
} s_req_t;

/* ---- reading the filled request. After the schema check every field that
   has a default in schemas/ is present and of the schema's type; one that is
   not is the schema's doing (a default removed there, a type changed) and is
   answered `internal` naming the field, never replaced by a value from C. */

static const sdx_value_t *s_field(sdx_job_t *job, const sdx_value_t *data, const char *path,
                                  sdx_vtype_t type)
{
    const sdx_value_t *v = sdx_map_get_path(data, path);
    bool ok = v && (v->type == type || (type == SDX_FLOAT && v->type == SDX_INT));
    if (!ok)
        sdx_job_fail(job, SDX_ERR_INTERNAL, path,
                     "%s: the request schema gave it no %s default (check the schemas folder)",
                     path, sdx_vtype_name(type));
    return ok ? v : NULL;
}

static bool s_int(sdx_job_t *job, const sdx_value_t *data, const char *path, int64_t *out)
{
    const sdx_value_t *v = s_field(job, data, path, SDX_INT);
    if (v)
        *out = v->u.i;
    return v != NULL;
}

static bool s_num(sdx_job_t *job, const sdx_value_t *data, const char *path, double *out)
{
    const sdx_value_t *v = s_field(job, data, path, SDX_FLOAT);
    return v && sdx_value_as_double(v, out);
}

static bool s_text(sdx_job_t *job, const sdx_value_t *data, const char *path, const char **out)
{
    const sdx_value_t *v = s_field(job, data, path, SDX_STR);
    if (v)
        *out = v->u.str.ptr;
    return v != NULL;
}

/* A field that may be absent or null (no default in the schema): NULL then. */
static const char *s_opt_text(const sdx_value_t *data, const char *path)
{
    const sdx_value_t *v = sdx_map_get_path(data, path);
    return v && v->type == SDX_STR ? v->u.str.ptr : NULL;
}

/* Check *data_p against the request schema of this message type, with the
   worker's roots for x-path-root, filling defaults in place: a refusal is
   answered invalid_request naming the field, as the broker would. 0, or -1
   after sdx_job_fail. */
static int s_check(sdx_job_t *job, s_state_t *st, sdx_value_t **data_p)
{
    return domain_schema_check(job, &st->rules, data_p);
}

/* The filled, schema-checked request -> engine parameters; refuses what this
   worker cannot do. Strings in r borrow from data. */
static int s_parse(sdx_job_t *job, const sdx_value_t *data, s_req_t *r, s_state_t *st)
{
    memset(r, 0, sizeof *r);
    const char *attn, *neg;
    if (!s_text(job, data, "prompt_attention", &attn))
        return -1;
    if (strcmp(attn, "none") != 0 && strcmp(attn, "a1111") != 0)
        return sdx_job_fail(job, SDX_ERR_NOT_AVAILABLE, "prompt_attention",
                            "prompt_attention '%s' is not supported yet: compel syntax is not "
                            "built into the engine; use 'none' or 'a1111'",
                            attn);
    int64_t steps, seed, w, h, clip_skip, batch, quality;
    double cfg, rescale;
    if (!s_text(job, data, "prompt", &r->gp.prompt) ||
        !s_text(job, data, "negative_prompt", &neg) ||
        !s_text(job, data, "model_name", &r->model_name) ||
        !s_text(job, data, "scheduler", &r->gp.scheduler) ||
        !s_field(job, data, "use_karras_sigmas", SDX_BOOL) ||
        !s_int(job, data, "hyperparameters.num_inference_steps", &steps) ||
        !s_num(job, data, "hyperparameters.guidance_scale", &cfg) ||
        !s_num(job, data, "hyperparameters.guidance_rescale", &rescale) ||
        !s_int(job, data, "hyperparameters.seed", &seed) ||
        !s_int(job, data, "dimensions.width", &w) || !s_int(job, data, "dimensions.height", &h) ||
        !s_int(job, data, "clip_skip", &clip_skip) || !s_int(job, data, "batch.size", &batch) ||
        !s_text(job, data, "output.format", &r->format) ||
        !s_int(job, data, "output.quality", &quality) ||
        !s_text(job, data, "precision.dtype", &r->dtype_name))
        return -1;
    /* "" (the schema's default) means no negative prompt, as in diffusers'
       pipe(prompt): the model's force_zeros_for_empty_prompt applies. */
    r->gp.negative_prompt = *neg ? neg : NULL;
    r->gp.prompt_attention = attn;
    /* epsilon / v_prediction overrides the model's; absent: the model's */
    r->gp.prediction_type = s_opt_text(data, "prediction_type");
    /* true forces Karras sigmas; false keeps the scheduler config's choice */
    r->gp.karras = sdx_map_get_path(data, "use_karras_sigmas")->u.b ? 1 : -1;

    if (!infer_engine_format_available(r->format))
        return sdx_job_fail(job, SDX_ERR_NOT_AVAILABLE, "output.format",
                            "output.format %s: this worker was built without its encoder; use "
                            "png",
                            r->format);
    const sdx_value_t *up = sdx_map_get_path(data, "output.upscale");
    if (up && up->type == SDX_MAP) {
        if (!s_num(job, data, "output.upscale.factor", &r->gp.upscale_factor) ||
            !s_text(job, data, "output.upscale.model", &r->gp.upscale_model))
            return -1;
    }
    r->quality = (int)quality;
    r->save_path = s_opt_text(data, "output.save_path");
    const sdx_value_t *pv = sdx_map_get_path(data, "output.preview");
    if (pv && pv->type == SDX_MAP) {
        int64_t every, pq;
        if (!s_int(job, data, "output.preview.every", &every) ||
            !s_text(job, data, "output.preview.format", &r->gp.preview_format) ||
            !s_int(job, data, "output.preview.quality", &pq))
            return -1;
        if (!infer_engine_has_previews(st->engine))
            return sdx_job_fail(job, SDX_ERR_NOT_AVAILABLE, "output.preview",
                                "this worker has no preview decoder: live previews need a TAESD "
                                "model (--preview-decoder PATH, config preview_decoder)");
        if (!infer_engine_format_available(r->gp.preview_format))
            return sdx_job_fail(job, SDX_ERR_NOT_AVAILABLE, "output.preview.format",
                                "output.preview.format %s: this worker was built without its "
                                "encoder; use png",
                                r->gp.preview_format);
        r->gp.preview_every = (int)every;
        r->gp.preview_quality = (int)pq;
    }

    /* fp16 (the schema's default) is meant for GPUs; libtorch's CPU kernels
       lack half precision for much of the UNet: run fp32 there (the reply's
       dtype says so). sdxl-gen generate does the same for its default. */
    r->dtype_name = infer_domain_run_dtype(st->engine, r->dtype_name);

    if (seed < 0) { /* the schema's "pick one for me" */
        uint64_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
            rnd = (uint64_t)sdx_worker_now_ms() * 2654435761u;
        seed = (int64_t)(rnd & SEED_BITS_MASK);
        r->seed_random = true;
    }
    r->seed = seed;
    r->gp.seed = (uint64_t)seed;
    r->gp.model_name = r->model_name;
    r->gp.dtype = r->dtype_name;
    r->gp.format = r->format;
    r->gp.quality = r->quality;
    r->gp.steps = (int)steps;
    r->gp.guidance_scale = cfg;
    r->gp.guidance_rescale = rescale;
    r->gp.width = (int)w;
    r->gp.height = (int)h;
    r->gp.clip_skip = (int)clip_skip;
    r->gp.batch = (int)batch;
    /* img2img: the image's bytes (the schema turned base64 text into bin) */
    const sdx_value_t *init = sdx_map_get_path(data, "init_image");
    if (init && init->type == SDX_BIN) {
        if (!s_num(job, data, "hyperparameters.strength", &r->gp.strength))
            return -1;
        r->gp.init_image = init->u.bin.ptr;
        r->gp.init_image_len = init->u.bin.len;
    } else if (init && init->type != SDX_NIL) {
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "init_image",
                            "init_image must be image bytes (bin, or base64 text in JSON)");
    }
    /* the ensemble of experts: base to refiner.switch_at, then refiner_model */
    r->gp.refiner_model = s_opt_text(data, "refiner_model");
    if (r->gp.refiner_model) {
        if (!s_num(job, data, "refiner.switch_at", &r->gp.refiner_switch) ||
            !s_num(job, data, "refiner.aesthetic_score", &r->gp.aesthetic_score) ||
            !s_num(job, data, "refiner.negative_aesthetic_score",
                   &r->gp.negative_aesthetic_score))
            return -1;
        if (r->gp.init_image)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "refiner_model",
                                "a refiner runs after a text-to-image base, not with "
                                "init_image (send the refiner an img2img request instead)");
    }
    return 0;
}

/* --------------------------------------------------------------- outputs */

/* output.save_path -> the files to write, under the outputs root
   (out_save.h: a folder gets <request id>[-i].<ext>, a file name gets -i
   before the extension for batches). 0, or -1 after sdx_job_fail. */
static int s_save_paths(sdx_job_t *job, s_state_t *st, const s_req_t *r, int count,
                        char (*paths)[PATH_MAX])
{
    const char *ext = strcmp(r->format, "webp") == 0   ? ".webp"
                      : strcmp(r->format, "jpeg") == 0 ? ".jpg"
                                                       : ".png";
    char err[PATH_MAX + 128];
    if (out_save_paths(st->set.outputs_root, r->save_path, sdx_job_request_id(job), ext, count,
                       paths, err, sizeof err) != 0)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "output.save_path", "%s", err);
    return 0;
}

/* ------------------------------------------------------------ generation */

typedef struct {
    sdx_job_t *job;
    volatile int cancel;
    const char *preview_format; /* output.preview.format */
} s_run_t;

/* A live preview -> PROGRESS {step, total, message "preview", preview (the
   encoded bytes), preview_format, preview_width, preview_height}. */
static void s_on_preview(int step, int total, const uint8_t *data, size_t len, int width,
                         int height, void *ud)
{
    s_run_t *run = ud;
    sdx_value_t *x = sdx_value_map_new();
    sdx_value_t *bin = sdx_value_bin_new(data, len);
    if (!x || !bin || sdx_map_set(x, "preview", bin) != 0) {
        sdx_value_destroy(&x);
        sdx_value_destroy(&bin);
        return;
    }
    sdx_map_set_str(x, "preview_format", run->preview_format);
    sdx_map_set_int(x, "preview_width", width);
    sdx_map_set_int(x, "preview_height", height);
    sdx_worker_progress_with(run->job, step, total, "preview", 0, x);
}

/* Engine progress -> PROGRESS; a CANCEL or a passed deadline sets the flag
   the engine checks before the next step. */
static void s_on_progress(int step, int total, double it_per_s, const char *msg, void *ud)
{
    s_run_t *run = ud;
    sdx_worker_progress_rate(run->job, step, total, msg, it_per_s);
    if (sdx_worker_cancelled(run->job))
        run->cancel = 1;
}

/* A model_name with nothing under the models root: the near names
   (infer_domain_near_models), after the resolver's message in err. */
static void s_near_models(s_state_t *st, const char *name, char *err, size_t err_len)
{
    infer_domain_near_models(st->catalog, name, err, err_len);
}

/* vae_model -> the VAE file or folder under the VAE root, by catalogue name
   (rescanned on a miss; near matches when unknown). 0, or -1 after
   sdx_job_fail. */
static int s_resolve_vae(sdx_job_t *job, s_state_t *st, const char *name, char path[PATH_MAX])
{
    model_entry_t e;
    char cerr[512];
    model_status_t ms = model_catalog_find(st->catalog, MODEL_VAE, name, &e, cerr, sizeof cerr);
    if (ms == MODEL_NOT_FOUND && model_catalog_rescan(st->catalog, NULL, cerr, sizeof cerr) == 0)
        ms = model_catalog_find(st->catalog, MODEL_VAE, name, &e, cerr, sizeof cerr);
    if (ms != MODEL_OK)
        return sdx_job_fail(job, ms == MODEL_NOT_FOUND ? SDX_ERR_NOT_FOUND : SDX_ERR_INVALID_REQUEST,
                            "vae_model", "%s (VAE root %s)", cerr, st->vaes_dir);
    if ((size_t)snprintf(path, PATH_MAX, "%s/%s", st->vaes_dir, e.path) >= PATH_MAX)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "vae_model", "the path is too long");
    return 0;
}

/* textual_inversions -> files under the embeddings root, by catalogue name
   (rescanned when a name is not there yet; near names when unknown).
   paths[i] backs out[i].path; tokens are borrowed from the request. 0, or
   -1 after sdx_job_fail. */
static int s_resolve_tis(sdx_job_t *job, s_state_t *st, const sdx_value_t *data,
                         infer_ti_t out[16], char (*paths)[PATH_MAX], int *n)
{
    *n = 0;
    const sdx_value_t *list = sdx_map_get(data, "textual_inversions");
    size_t count = sdx_array_len(list);
    if (count > 16)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "textual_inversions",
                            "at most 16 embeddings");
    for (size_t i = 0; i < count; i++) {
        const sdx_value_t *m = sdx_array_at(list, i);
        char field[48];
        snprintf(field, sizeof field, "textual_inversions[%zu].name", i);
        const char *name = s_opt_text(m, "name"), *token = s_opt_text(m, "token");
        if (!name || !token)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                "an embedding needs a name and a token");
        model_entry_t e;
        char cerr[512];
        model_status_t ms = model_catalog_find(st->catalog, MODEL_EMBEDDING, name, &e, cerr,
                                               sizeof cerr);
        if (ms == MODEL_NOT_FOUND &&
            model_catalog_rescan(st->catalog, NULL, cerr, sizeof cerr) == 0)
            ms = model_catalog_find(st->catalog, MODEL_EMBEDDING, name, &e, cerr, sizeof cerr);
        if (ms != MODEL_OK)
            return sdx_job_fail(job, ms == MODEL_NOT_FOUND ? SDX_ERR_NOT_FOUND : SDX_ERR_INVALID_REQUEST,
                                field, "%s (embeddings root %s)", cerr, st->emb_dir);
        if ((size_t)snprintf(paths[i], PATH_MAX, "%s/%s", st->emb_dir, e.path) >= PATH_MAX)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field, "the path is too long");
        out[i] = (infer_ti_t){paths[i], token};
        (*n)++;
    }
    return 0;
}

/* controlnet[] -> ControlNets under the ControlNet root, by catalogue name
   (rescanned when a name is not there yet), with their image bytes
   (borrowed from the request), scale and guidance window; only the `none`
   preprocessor (a ready-made control image). paths[i] backs out[i].path.
   0, or -1 after sdx_job_fail. */
static int s_resolve_controls(sdx_job_t *job, s_state_t *st, const sdx_value_t *data,
                              infer_control_t out[4], char (*paths)[PATH_MAX], int *n)
{
    *n = 0;
    const sdx_value_t *list = sdx_map_get(data, "controlnet");
    size_t count = sdx_array_len(list);
    if (count > 4)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "controlnet", "at most 4 ControlNets");
    for (size_t i = 0; i < count; i++) {
        const sdx_value_t *c = sdx_array_at(list, i);
        char field[48];
        const char *name = s_opt_text(c, "model");
        const char *pre = s_opt_text(c, "preprocessor");
        const sdx_value_t *img = sdx_map_get(c, "image");
        double scale = 1.0, start = 0.0, end = 1.0;
        const sdx_value_t *v;
        if ((v = sdx_map_get(c, "conditioning_scale")))
            sdx_value_as_double(v, &scale);
        if ((v = sdx_map_get(c, "guidance_start")))
            sdx_value_as_double(v, &start);
        if ((v = sdx_map_get(c, "guidance_end")))
            sdx_value_as_double(v, &end);
        bool canny = pre && strcmp(pre, "canny") == 0;
        if (pre && strcmp(pre, "none") != 0 && !canny) {
            snprintf(field, sizeof field, "controlnet[%zu].preprocessor", i);
            return sdx_job_fail(job, SDX_ERR_NOT_AVAILABLE, field,
                                "preprocessor '%s' is not built yet (canny and none are); send a "
                                "ready-made control image with preprocessor none",
                                pre);
        }
        double lo = 100, hi = 200, sigma = 0;
        if (canny) {
            const sdx_value_t *cp = sdx_map_get(c, "canny");
            if ((v = sdx_map_get(cp, "low_threshold")))
                sdx_value_as_double(v, &lo);
            if ((v = sdx_map_get(cp, "high_threshold")))
                sdx_value_as_double(v, &hi);
            if ((v = sdx_map_get(cp, "blur_sigma")))
                sdx_value_as_double(v, &sigma);
            if (lo > hi) {
                snprintf(field, sizeof field, "controlnet[%zu].canny.low_threshold", i);
                return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                    "low_threshold %g must not be above high_threshold %g", lo,
                                    hi);
            }
        }
        if (!img || img->type != SDX_BIN || img->u.bin.len == 0) {
            snprintf(field, sizeof field, "controlnet[%zu].image", i);
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                "image must be image bytes (bin, or base64 text in JSON)");
        }
        if (!(start < end)) {
            snprintf(field, sizeof field, "controlnet[%zu].guidance_start", i);
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                "guidance_start %g must be below guidance_end %g", start, end);
        }
        snprintf(field, sizeof field, "controlnet[%zu].model", i);
        if (!name)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field, "a ControlNet needs a model");
        if (!st->cnets_dir[0])
            return sdx_job_fail(job, SDX_ERR_NOT_FOUND, field, "this worker has no ControlNet root");
        model_entry_t e;
        char cerr[512];
        model_status_t ms =
            model_catalog_find(st->catalog, MODEL_CONTROLNET, name, &e, cerr, sizeof cerr);
        if (ms == MODEL_NOT_FOUND &&
            model_catalog_rescan(st->catalog, NULL, cerr, sizeof cerr) == 0)
            ms = model_catalog_find(st->catalog, MODEL_CONTROLNET, name, &e, cerr, sizeof cerr);
        if (ms != MODEL_OK)
            return sdx_job_fail(job, ms == MODEL_NOT_FOUND ? SDX_ERR_NOT_FOUND : SDX_ERR_INVALID_REQUEST, field,
                                "%s (ControlNet root %s)", cerr, st->cnets_dir);
        if ((size_t)snprintf(paths[i], PATH_MAX, "%s/%s", st->cnets_dir, e.path) >= PATH_MAX)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field, "the path is too long");
        out[i] = (infer_control_t){paths[i], img->u.bin.ptr, img->u.bin.len, scale, start, end,
                                   canny, lo, hi, sigma};
        (*n)++;
    }
    return 0;
}

/* inference.denoise's data.embeddings: conditioning.encode_prompt's tensors
   {name: {dtype, shape, data}}, checked (dtype, rank, sizes) and borrowed
   into out (bin bytes stay in the request; base64 text from a JSON client is
   decoded into owned[i], which the caller frees). 0, or -1 after
   sdx_job_fail. */
static int s_parse_embeds(sdx_job_t *job, const sdx_value_t *data, infer_tensor_t out[4], int *n,
                          uint8_t *owned[4])
{
    static const char *const names[] = {"prompt_embeds", "pooled_prompt_embeds",
                                         "negative_prompt_embeds",
                                         "negative_pooled_prompt_embeds"};
    *n = 0;
    const sdx_value_t *emb = sdx_map_get(data, "embeddings");
    if (!emb || emb->type != SDX_MAP || emb->u.map.len == 0)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "embeddings",
                            "inference.denoise needs embeddings: the tensors of "
                            "conditioning.encode_prompt (prompt_embeds, pooled_prompt_embeds, "
                            "and with guidance_scale > 1 the negative pair)");
    for (size_t i = 0; i < emb->u.map.len; i++) {
        const char *key = emb->u.map.items[i].key;
        const sdx_value_t *t = emb->u.map.items[i].val;
        size_t k = 0;
        while (k < 4 && strcmp(names[k], key) != 0)
            k++;
        char field[96];
        snprintf(field, sizeof field, "embeddings.%.40s", key);
        if (k == 4)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                "unknown tensor '%s'; accepted: prompt_embeds, "
                                "pooled_prompt_embeds, negative_prompt_embeds, "
                                "negative_pooled_prompt_embeds",
                                key);
        const char *dt = s_opt_text(t, "dtype");
        size_t item = !dt                         ? 0
                      : !strcmp(dt, "float32")    ? 4
                      : !strcmp(dt, "float16")    ? 2
                      : !strcmp(dt, "bfloat16")   ? 2
                                                  : 0;
        if (!item)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                "%s.dtype must be float32, float16 or bfloat16", field);
        const sdx_value_t *shape = sdx_map_get(t, "shape");
        size_t nd = sdx_array_len(shape);
        if (nd < 1 || nd > 4)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                "%s.shape must be an array of 1 to 4 sizes", field);
        infer_tensor_t *o = &out[*n];
        memset(o, 0, sizeof *o);
        uint64_t numel = 1;
        for (size_t d = 0; d < nd; d++) {
            const sdx_value_t *v = sdx_array_at(shape, d);
            if (!v || v->type != SDX_INT || v->u.i < 1 || v->u.i > (1 << 24))
                return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                    "%s.shape[%zu] must be an integer in 1..2^24", field, d);
            o->shape[d] = v->u.i;
            numel *= (uint64_t)v->u.i;
        }
        const sdx_value_t *bytes = sdx_map_get(t, "data");
        const uint8_t *ptr = NULL;
        size_t len = 0;
        if (bytes && bytes->type == SDX_BIN) {
            ptr = bytes->u.bin.ptr;
            len = bytes->u.bin.len;
        } else if (bytes && bytes->type == SDX_STR) { /* a JSON client's base64 */
            uint8_t *dec = NULL;
            if (sdx_base64_decode(bytes->u.str.ptr, bytes->u.str.len, &dec, &len) != 0)
                return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field, "%s.data is not base64",
                                    field);
            owned[*n] = dec;
            ptr = dec;
        }
        if (!ptr || numel > (1ULL << 32) || len != numel * item)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field,
                                "%s.data must be %llu bytes of %s (shape x item size), got %zu",
                                field, (unsigned long long)(numel * item), dt, len);
        for (int j = 0; j < *n; j++)
            if (!strcmp(out[j].name, names[k]))
                return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field, "given twice");
        o->name = names[k];
        o->dtype = dt;
        o->ndim = (int)nd;
        o->data = (uint8_t *)ptr; /* the request's bytes, borrowed for the call */
        o->nbytes = len;
        (*n)++;
    }
    return 0;
}

static int s_run(sdx_job_t *job, s_state_t *st, sdx_worker_t *w, const sdx_value_t *data,
                 const s_req_t *rp, sdx_value_t *reply, double t_start, bool denoise);

/* inference.generate / inference.denoise: the request checked and filled by
   the schema, parsed, run. */
static int s_start(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply, bool denoise)
{
    double t_start = infer_domain_ms();
    sdx_worker_t *w = sdx_job_worker(job);
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "the inference engine is not initialised");
    /* the request as the schema fills it: our own copy, which r borrows from
       until the reply is built (req is freed on every path below) */
    sdx_value_t *req = sdx_value_clone(data);
    if (!req)
        return sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of host memory");
    s_req_t r;
    if (s_check(job, st, &req) != 0 || s_parse(job, req, &r, st) != 0) {
        sdx_value_destroy(&req);
        return -1;
    }
    int rc = s_run(job, st, w, req, &r, reply, t_start, denoise);
    sdx_value_destroy(&req);
    return rc;
}

/* One generation of the parsed request r (borrowing from req) into reply. */
static int s_run(sdx_job_t *job, s_state_t *st, sdx_worker_t *w, const sdx_value_t *data,
                 const s_req_t *rp, sdx_value_t *reply, double t_start, bool denoise)
{
    s_req_t r = *rp;
    char seed_text[32], steps_text[16];
    snprintf(seed_text, sizeof seed_text, "%lld", (long long)r.seed);
    snprintf(steps_text, sizeof steps_text, "%d", r.gp.steps);
    /* the same text chunks sdxl-gen generate writes: one seed, one file */
    const char *meta[] = {"prompt", r.gp.prompt, "seed",     seed_text,
                          "steps",  steps_text,  "software", "sdxl-fleet",
                          NULL};
    r.gp.png_text = meta;
    s_run_t run = {.job = job, .cancel = 0, .preview_format = r.gp.preview_format};
    r.gp.progress = s_on_progress;
    r.gp.progress_ud = &run;
    if (r.gp.preview_every > 0) {
        r.gp.preview = s_on_preview;
        r.gp.preview_ud = &run;
    }
    r.gp.cancel = &run.cancel;
    if (sdx_worker_cancelled(job))
        return -1;

    infer_tensor_t embeds[4];
    uint8_t *owned[4] = {NULL, NULL, NULL, NULL};
    if (denoise) {
        int prc = s_parse_embeds(job, data, embeds, &r.gp.n_embeds, owned);
        if (prc == 0)
            r.gp.embeds = embeds;
        else
            r.gp.n_embeds = 0;
        if (prc != 0) {
            for (int i = 0; i < 4; i++)
                free(owned[i]);
            return -1;
        }
    } else if (s_given(sdx_map_get(data, "embeddings"))) {
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "embeddings",
                            "embeddings are for inference.denoise; inference.generate encodes "
                            "the prompt itself");
    }
    infer_lora_t loras[8];
    char(*lora_paths)[PATH_MAX] = calloc(8, PATH_MAX);
    if (!lora_paths || infer_domain_loras(job, st->catalog, st->loras_dir, data, loras, lora_paths, &r.gp.n_loras) != 0) {
        for (int i = 0; i < 4; i++)
            free(owned[i]);
        int frc = lora_paths ? -1 : sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of memory");
        free(lora_paths);
        return frc;
    }
    r.gp.loras = loras;
    char vae_path[PATH_MAX];
    const char *vae_name = s_opt_text(data, "vae_model");
    if (vae_name && s_resolve_vae(job, st, vae_name, vae_path) != 0) {
        for (int i = 0; i < 4; i++)
            free(owned[i]);
        free(lora_paths);
        return -1;
    }
    r.gp.vae_path = vae_name ? vae_path : NULL;
    infer_ti_t tis[16];
    char(*ti_paths)[PATH_MAX] = calloc(16, PATH_MAX);
    if (!ti_paths || s_resolve_tis(job, st, data, tis, ti_paths, &r.gp.n_tis) != 0) {
        for (int i = 0; i < 4; i++)
            free(owned[i]);
        int frc = ti_paths ? -1 : sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of memory");
        free(ti_paths);
        free(lora_paths);
        return frc;
    }
    r.gp.tis = tis;
    infer_control_t controls[4];
    char(*cn_paths)[PATH_MAX] = calloc(4, PATH_MAX);
    if (!cn_paths || s_resolve_controls(job, st, data, controls, cn_paths, &r.gp.n_controls) != 0) {
        for (int i = 0; i < 4; i++)
            free(owned[i]);
        int frc = cn_paths ? -1 : sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of memory");
        free(cn_paths);
        free(lora_paths);
        return frc;
    }
    r.gp.controls = controls;
    infer_output_t res;
    char err[768];
    infer_status_t rc = infer_engine_generate(st->engine, &r.gp, &res, err, sizeof err);
    free(lora_paths);
    free(ti_paths);
    free(cn_paths);
    for (int i = 0; i < 4; i++)
        free(owned[i]); /* base64-decoded embeddings, done with */
    if (res.models_changed)
        s_publish_models(w, st);
    if (rc != INFER_OK) {
        if (rc == INFER_CANCELLED || sdx_worker_cancelled(job)) {
            atomic_fetch_add(&st->cancelled_runs, 1);
            log_info("%s: stopped (cancelled or past its deadline)", sdx_job_request_id(job));
            return -1; /* the runtime answers cancelled / timeout */
        }
        const char *field = rc == INFER_BAD_NAME || rc == INFER_NOT_FOUND || rc == INFER_LOAD_FAILED
                                ? "model_name"
                            : rc == INFER_BAD_UPSCALE ? "output.upscale.model"
                            : rc == INFER_BAD_LORA    ? "lora.models"
                            : rc == INFER_BAD_TI      ? "textual_inversions"
                            : rc == INFER_BAD_IMAGE   ? "init_image"
                            : rc == INFER_BAD_VAE     ? "vae_model"
                            : rc == INFER_BAD_CONTROLNET ? "controlnet"
                            : rc == INFER_BAD_REFINER    ? "refiner_model"
                                                      : NULL;
        if (rc == INFER_LOAD_FAILED)
            return sdx_job_fail(job, SDX_ERR_INTERNAL, field, "cannot load model '%s': %s", r.model_name,
                                err);
        if (rc == INFER_NOT_FOUND)
            s_near_models(st, r.model_name, err, sizeof err);
        return sdx_job_fail(job, infer_domain_code(rc), field, "%s", err);
    }

    /* the images, and the files when output.save_path asks for them */
    sdx_value_t *images = sdx_value_array_new();
    sdx_value_t *saved = r.save_path ? sdx_value_array_new() : NULL;
    char(*paths)[PATH_MAX] = r.save_path ? calloc((size_t)res.count, PATH_MAX) : NULL;
    int fail = !images || (r.save_path && (!saved || !paths)) ? -2 : 0;
    if (fail == 0 && r.save_path && s_save_paths(job, st, &r, res.count, paths) != 0)
        fail = -1;
    for (int i = 0; fail == 0 && i < res.count; i++) {
        infer_image_t *img = &res.images[i];
        char werr[PATH_MAX + 128];
        if (paths && out_save_atomic(paths[i], img->data, img->len, werr, sizeof werr) != 0) {
            fail = sdx_job_fail(job, sdx_error_for_errno(errno), "output.save_path", "%s", werr);
            for (int k = 0; k < i; k++) /* no file of a failed request stays behind */
                unlink(paths[k]);
            break;
        }
        sdx_value_t *im = sdx_value_map_new();
        sdx_value_t *bin = sdx_value_bin_take(img->data, img->len);
        if (!im || !bin) {
            sdx_value_destroy(&im);
            sdx_value_destroy(&bin);
            fail = -2;
            break;
        }
        img->data = NULL; /* owned by bin now */
        sdx_map_set(im, "image", bin);
        sdx_map_set_str(im, "format", r.format);
        sdx_map_set_int(im, "width", img->width);
        sdx_map_set_int(im, "height", img->height);
        sdx_map_set_int(im, "seed", r.seed);
        if (paths) {
            sdx_map_set_str(im, "save_path", paths[i]);
            sdx_array_push(saved, sdx_value_str_new(paths[i]));
        }
        sdx_array_push(images, im);
    }
    free(paths);
    int count = res.count;
    char *params = res.parameters; /* ours from here: the clear below frees the rest */
    res.parameters = NULL;
    infer_output_t t = res;
    infer_output_clear(&res);
    if (fail != 0) {
        free(params);
        sdx_value_destroy(&images);
        sdx_value_destroy(&saved);
        return fail == -2 ? sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of host memory") : -1;
    }

    sdx_map_set(reply, "images", images);
    if (saved)
        sdx_map_set(reply, "saved", saved);
    sdx_map_set_str(reply, "format", r.format);
    sdx_map_set_int(reply, "count", count);
    sdx_map_set_int(reply, "width", r.gp.width);
    sdx_map_set_int(reply, "height", r.gp.height);
    if (t.upscale_method[0])
        sdx_map_set_str(reply, "upscale", t.upscale_method);
    sdx_map_set_int(reply, "seed", r.seed);
    sdx_map_set_bool(reply, "seed_random", r.seed_random);
    sdx_map_set_int(reply, "steps", t.steps_done);
    if (r.gp.preview_every > 0) {
        sdx_map_set_int(reply, "previews", t.previews);
        if (t.preview_error[0])
            sdx_map_set_str(reply, "preview_error", t.preview_error);
    }
    sdx_map_set_str(reply, "scheduler", r.gp.scheduler); /* always named once filled */
    sdx_map_set_bool(reply, "use_karras_sigmas", r.gp.karras == 1);
    sdx_map_set_str(reply, "model", r.model_name);
    sdx_map_set_str(reply, "model_name", r.model_name);
    if (t.model_hash[0])
        sdx_map_set_str(reply, "model_hash", t.model_hash);
    if (params)
        sdx_map_set_str(reply, "parameters", params);
    free(params);
    sdx_map_set_str(reply, "dtype", r.dtype_name);
    if (vae_name)
        sdx_map_set_str(reply, "vae_model", vae_name);
    const sdx_value_t *lm = sdx_map_get_path(data, "lora.models");
    if (sdx_array_len(lm) > 0) {
        sdx_value_t *lc = sdx_value_clone(lm);
        if (lc)
            sdx_map_set(reply, "loras", lc);
    }
    sdx_map_set_str(reply, "device", infer_engine_device(st->engine));
    sdx_value_t *ignored = sdx_value_array_new();
    for (size_t i = 0; ignored && i < sizeof s_no_effect / sizeof s_no_effect[0]; i++) {
        const sdx_value_t *v = sdx_map_get_path(data, s_no_effect[i]);
        if (v && v->type == SDX_BOOL && v->u.b)
            sdx_array_push(ignored, sdx_value_str_new(s_no_effect[i]));
    }
    if (ignored && sdx_array_len(ignored) > 0)
        sdx_map_set(reply, "ignored", ignored);
    else
        sdx_value_destroy(&ignored);
    sdx_value_t *tm = sdx_value_map_new();
    if (tm) {
        sdx_map_set_float(tm, "load_ms", t.load_ms);
        sdx_map_set_float(tm, "lora_ms", t.lora_ms);
        if (r.gp.preview_every > 0)
            sdx_map_set_float(tm, "preview_ms", t.preview_ms);
        sdx_map_set_float(tm, "encode_ms", t.encode_ms);
        sdx_map_set_float(tm, "denoise_ms", t.denoise_ms);
        sdx_map_set_float(tm, "decode_ms", t.decode_ms);
        sdx_map_set_float(tm, "image_ms", t.image_ms);
        sdx_map_set_float(tm, "total_ms", infer_domain_ms() - t_start);
        sdx_map_set(reply, "timings", tm);
    }
    atomic_fetch_add(&st->generated, 1);
    atomic_fetch_add(&st->images, count);
    log_info("%s: %d image(s) %dx%d, %d steps, model %s, seed %lld, %.0f ms",
             sdx_job_request_id(job), count, r.gp.width, r.gp.height, t.steps_done, r.model_name,
             (long long)r.seed, infer_domain_ms() - t_start);
    return 0;
}

static int s_generate(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    return s_start(job, data, reply, false);
}

static int s_denoise(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    return s_start(job, data, reply, true);
}

/* inference.img2img: inference.generate whose init_image is required. */
static int s_img2img(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    const sdx_value_t *init = sdx_map_get(data, "init_image");
    if (!init || init->type == SDX_NIL)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "init_image",
                            "inference.img2img needs init_image (PNG, JPEG or WebP bytes, or base64 "
                            "text in JSON) and takes hyperparameters.strength");
    return s_start(job, data, reply, false);
}

/* inference.load_model / inference.unload_model: model_name and
   precision.dtype as inference.generate takes them (its schema's rules and
   default), see infer_domain_model_op. */
static int s_model_op(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply, bool load)
{
    sdx_worker_t *w = sdx_job_worker(job);
    s_state_t *st = sdx_worker_domain_state(w);
    if (!st || !st->engine)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "the inference engine is not initialised");
    return infer_domain_model_op(job, &st->rules, "inference.generate", st->engine, st->catalog,
                                 data, load, reply);
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
    {"inference.generate", s_generate, 0, "text-to-image: PNG/WebP bytes, seed, timings"},
    {"inference.txt2img", s_generate, 0, "same as inference.generate"},
    {"inference.denoise", s_denoise, 0,
     "inference.generate from given embeddings (conditioning.encode_prompt's tensors)"},
    {"inference.img2img", s_img2img, 0, "inference.generate from init_image with strength"},
    {"inference.load_model", s_load_model, 0,
     "load a model into the cache (as a generation would): path, dtype, load_ms, mb"},
    {"inference.unload_model", s_unload_model, 0,
     "drop a model's engines from the cache (one in use when its generation ends)"},
    {NULL, NULL, 0, NULL},
};

const sdx_domain_t sdx_domain_inference = {
    .name = "inference",
    .handlers = s_handlers,
    .planned_issue = "inpainting (a mask) is not built into the engine yet",
    .options = s_options,
    .option = s_option,
    .init = s_init,
    .fini = s_fini,
    .status = s_status,
};

#endif /* SDX_WITH_ENGINE */
