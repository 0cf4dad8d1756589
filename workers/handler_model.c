/*  handler_model.c - the model domain: the catalogue of model files under
    the worker's roots (model_catalog.h does the work; this file turns
    requests into calls and entries into replies).

      model.list     {kind?, hash?}          -> {models: [entry], count, counts}
      model.inspect  {name, kind?, hash?}    -> entry + sha256, autov2, metadata
      model.rescan   {}                      -> {added, removed, count, scan_ms}
      model.status   (runtime) + catalog: roots, counts, hash cache

    Names are catalogue names (model.list shows them), never paths: a name
    the catalogue lacks answers invalid_request naming the field, with the
    near matches. model.load / model.unload are answered by the broker,
    which asks the inference and conditioning workers (they hold the
    weights: inference.load_model ...).

    Built without the engine, everything but architecture detection works
    (the catalogue reads safetensors headers itself). */
#include "model_catalog.h"
#include "sdx_worker.h"

#include "sdx_log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef SDX_WITH_ENGINE
/* model_detect.c: the engine's sdx_detect_arch behind the catalogue's hook */
const char *model_detect_engine(const char *path, char *why, size_t why_len);
#endif

/* The option of each kind's root, in model_kind_t order; "" means
   <models-root>/<sub>. */
static const struct {
    const char *option;
    const char *sub;
} s_kind_roots[MODEL_KIND_COUNT] = {
    {"models-root", ""},
    {"vae-root", "vae"},
    {"lora-root", "lora"},
    {"controlnet-root", "controlnet"},
    {"embeddings-root", "embeddings"},
    {"upscalers-root", "upscalers"},
};

static const sdx_option_t s_options[] = {
    {"models-root", true, "DIR", "./models", "SDXL_MODELS_ROOT",
     "checkpoints (diffusers folders, .safetensors files), as the inference worker resolves them"},
    {"vae-root", true, "DIR", "", "SDXL_VAE_ROOT", "VAEs (\"\": <models-root>/vae)"},
    {"lora-root", true, "DIR", "", "SDXL_LORA_ROOT", "LoRAs (\"\": <models-root>/lora)"},
    {"controlnet-root", true, "DIR", "", "SDXL_CONTROLNET_ROOT",
     "ControlNets (\"\": <models-root>/controlnet)"},
    {"embeddings-root", true, "DIR", "", "SDXL_EMBEDDINGS_ROOT",
     "textual inversions (\"\": <models-root>/embeddings)"},
    {"upscalers-root", true, "DIR", "", "SDXL_UPSCALERS_ROOT",
     "RRDBNet upscalers, as postprocessing names them (\"\": <models-root>/upscalers)"},
    {"state-dir", true, "DIR", "", "SDXL_STATE_DIR",
     "keeps the hash cache (model_catalog.sqlite; made when missing); \"\": in memory"},
    {NULL, false, NULL, NULL, NULL, NULL},
};

typedef struct {
    char roots[MODEL_KIND_COUNT][PATH_MAX];
    char state_dir[PATH_MAX];
    model_catalog_t *cat;
} s_model_t;

static s_model_t *s_state(sdx_worker_t *w)
{
    s_model_t *st = sdx_worker_domain_state(w);
    if (!st && (st = calloc(1, sizeof *st)))
        sdx_worker_set_domain_state(w, st);
    return st;
}

static int s_option(sdx_worker_t *w, const char *key, const char *value, char *err, size_t err_len)
{
    s_model_t *st = s_state(w);
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (strlen(value) >= PATH_MAX - 64) {
        snprintf(err, err_len, "the path is too long");
        return -1;
    }
    if (strcmp(key, "state-dir") == 0) {
        snprintf(st->state_dir, sizeof st->state_dir, "%s", value);
        return 0;
    }
    for (int k = 0; k < MODEL_KIND_COUNT; k++)
        if (strcmp(key, s_kind_roots[k].option) == 0) {
            if (k == MODEL_CHECKPOINT && !*value) {
                snprintf(err, err_len, "must name a folder");
                return -1;
            }
            snprintf(st->roots[k], sizeof st->roots[k], "%s", value);
            return 0;
        }
    snprintf(err, err_len, "not an option of the model domain");
    return -1;
}

/* mkdir -p */
static int s_mkdirs(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int s_init(sdx_worker_t *w, char *err, size_t err_len)
{
    s_model_t *st = s_state(w);
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (!st->roots[MODEL_CHECKPOINT][0])
        snprintf(st->roots[MODEL_CHECKPOINT], sizeof st->roots[0], "./models");
    model_catalog_config_t cfg = {0};
    for (int k = 0; k < MODEL_KIND_COUNT; k++) {
        if (!st->roots[k][0])
            snprintf(st->roots[k], sizeof st->roots[k], "%.4000s/%.32s",
                     st->roots[MODEL_CHECKPOINT], s_kind_roots[k].sub);
        cfg.roots[k] = st->roots[k];
        struct stat sb;
        if (stat(st->roots[k], &sb) != 0 || !S_ISDIR(sb.st_mode))
            log_info("model: no %s folder %s: none listed until it exists (model.rescan)",
                     model_kind_name((model_kind_t)k), st->roots[k]);
    }
    char db[PATH_MAX + 32] = "";
    if (st->state_dir[0]) {
        if (s_mkdirs(st->state_dir) != 0) {
            snprintf(err, err_len, "state dir %s cannot be made: %s", st->state_dir,
                     strerror(errno));
            return -1;
        }
        snprintf(db, sizeof db, "%s/model_catalog.sqlite", st->state_dir);
    }
    cfg.db_path = db;
#ifdef SDX_WITH_ENGINE
    cfg.detect = model_detect_engine;
#endif
    if (!(st->cat = model_catalog_new(&cfg, err, err_len)))
        return -1;
    model_catalog_stats_t s;
    model_catalog_stats(st->cat, &s);
    log_info("model catalogue: %zu checkpoints, %zu vae, %zu lora, %zu controlnet, "
             "%zu embeddings, %zu upscalers (%.1f ms); hash cache %s",
             s.counts[0], s.counts[1], s.counts[2], s.counts[3], s.counts[4], s.counts[5],
             s.last_scan_ms, s.db_path);
    return 0;
}

static void s_fini(sdx_worker_t *w)
{
    s_model_t *st = sdx_worker_domain_state(w);
    if (!st)
        return;
    model_catalog_destroy(&st->cat);
    free(st);
    sdx_worker_set_domain_state(w, NULL);
}

static void s_status(sdx_worker_t *w, sdx_value_t *out)
{
    s_model_t *st = sdx_worker_domain_state(w);
    if (!st || !st->cat)
        return;
    model_catalog_stats_t s;
    model_catalog_stats(st->cat, &s);
    sdx_value_t *cat = sdx_value_map_new(), *roots = sdx_value_map_new(),
                *counts = sdx_value_map_new();
    size_t total = 0;
    for (int k = 0; k < MODEL_KIND_COUNT; k++) {
        sdx_value_t *r = sdx_value_map_new();
        sdx_map_set_str(r, "path", s.roots[k]);
        sdx_map_set_bool(r, "exists", s.root_exists[k]);
        sdx_map_set_int(r, "count", (int64_t)s.counts[k]);
        sdx_map_set(roots, model_kind_name((model_kind_t)k), r);
        sdx_map_set_int(counts, model_kind_name((model_kind_t)k), (int64_t)s.counts[k]);
        total += s.counts[k];
    }
    sdx_map_set(cat, "roots", roots);
    sdx_map_set(cat, "counts", counts);
    sdx_map_set_int(cat, "total", (int64_t)total);
    sdx_map_set_int(cat, "skipped", (int64_t)s.skipped);
    sdx_map_set_str(cat, "hash_cache", s.db_path);
    sdx_map_set_int(cat, "hash_cache_hits", s.hash_cache_hits);
    sdx_map_set_int(cat, "hashes_computed", s.hashes_computed);
    sdx_map_set_int(cat, "rescans", s.rescans);
    sdx_map_set_float(cat, "last_scan_ms", s.last_scan_ms);
    sdx_map_set_int(cat, "last_scan_at_ms", s.last_scan_at_ms);
    sdx_map_set(out, "catalog", cat);
}

/* ---------------------------------------------------------------- replies */

static void s_entry_fill(sdx_value_t *m, const model_entry_t *e)
{
    sdx_map_set_str(m, "name", e->name);
    sdx_map_set_str(m, "kind", model_kind_name(e->kind));
    sdx_map_set_str(m, "path", e->path);
    sdx_map_set_str(m, "format", e->format);
    sdx_map_set_int(m, "size", e->size);
    sdx_map_set_int(m, "mtime", e->mtime);
    sdx_map_set_str(m, "architecture", e->architecture);
    sdx_map_set_str(m, "architecture_detail", e->arch_detail);
    sdx_map_set_str(m, "dtype", e->dtype);
    sdx_map_set_int(m, "tensor_count", e->tensor_count);
    sdx_map_set_int(m, "params", e->params);
    sdx_map_set_str(m, "hash_file", e->hash_file);
    if (e->sha256[0]) {
        sdx_map_set_str(m, "sha256", e->sha256);
        sdx_map_set_str(m, "autov2", e->autov2);
    }
    if (e->error[0])
        sdx_map_set_str(m, "error", e->error);
}

static sdx_value_t *s_entry_map(const model_entry_t *e)
{
    sdx_value_t *m = sdx_value_map_new();
    if (m)
        s_entry_fill(m, e);
    return m;
}

/* data.kind: -1 when absent; -2 after a fail */
static int s_kind_arg(sdx_job_t *job, const sdx_value_t *data)
{
    const sdx_value_t *v = sdx_map_get(data, "kind");
    if (!v || v->type == SDX_NIL)
        return -1;
    int k = v->type == SDX_STR ? model_kind_parse(v->u.str.ptr) : -1;
    if (k < 0) {
        sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "kind",
                     "kind must be one of checkpoints, vae, lora, controlnet, embeddings, "
                     "upscalers");
        return -2;
    }
    return k;
}

typedef struct {
    sdx_job_t *job;
    const char *name;
} s_progress_t;

static bool s_hash_progress(void *ctx, int64_t done, int64_t total)
{
    s_progress_t *p = ctx;
    char msg[320];
    snprintf(msg, sizeof msg, "hashing %s", p->name);
    /* progress in MiB: totals of big files fit any client's integers */
    sdx_worker_progress(p->job, done >> 20, total >> 20, msg);
    return !sdx_worker_cancelled(p->job);
}

/* Hash e; 0, or -1 after fail (field names the request's field). */
static int s_hash(sdx_job_t *job, model_catalog_t *cat, model_entry_t *e, bool *cached)
{
    char err[1024];
    s_progress_t p = {job, e->name};
    model_status_t rc = model_catalog_hash(cat, e, s_hash_progress, &p, cached, err, sizeof err);
    if (rc == MODEL_OK)
        return 0;
    if (rc == MODEL_CANCELLED)
        return -1; /* the runtime answers cancelled / timeout */
    return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "hashing %s: %s", e->name, err);
}

static int s_h_list(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    s_model_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    int kind = s_kind_arg(job, data);
    if (kind == -2)
        return -1;
    const sdx_value_t *hv = sdx_map_get(data, "hash");
    if (hv && hv->type != SDX_BOOL && hv->type != SDX_NIL)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "hash", "hash must be true or false");
    bool hash = sdx_map_bool(data, "hash", false);
    size_t n = 0;
    model_entry_t *v = model_catalog_list(st->cat, kind, &n);
    sdx_value_t *arr = sdx_value_array_new();
    int rc = 0;
    size_t counts[MODEL_KIND_COUNT] = {0};
    for (size_t i = 0; i < n && rc == 0; i++) {
        bool cached;
        if (hash && !v[i].error[0] && v[i].hash_file[0])
            rc = s_hash(job, st->cat, &v[i], &cached);
        counts[v[i].kind]++;
        if (rc == 0)
            sdx_array_push(arr, s_entry_map(&v[i]));
    }
    free(v);
    if (rc != 0) {
        sdx_value_destroy(&arr);
        return -1;
    }
    sdx_map_set(reply, "models", arr);
    sdx_map_set_int(reply, "count", (int64_t)n);
    sdx_value_t *cm = sdx_value_map_new();
    for (int k = 0; k < MODEL_KIND_COUNT; k++)
        if (kind < 0 || k == kind)
            sdx_map_set_int(cm, model_kind_name((model_kind_t)k), (int64_t)counts[k]);
    sdx_map_set(reply, "counts", cm);
    return 0;
}

static int s_h_inspect(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    s_model_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    int kind = s_kind_arg(job, data);
    if (kind == -2)
        return -1;
    const char *field = sdx_map_get(data, "name") ? "name" : "model_name";
    const sdx_value_t *nv = sdx_map_get(data, field);
    if (!nv || nv->type != SDX_STR)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "name",
                            "name is required: a catalogue name (model.list shows them)");
    model_entry_t e;
    char err[2048];
    model_status_t rc = model_catalog_find(st->cat, kind, nv->u.str.ptr, &e, err, sizeof err);
    if (rc != MODEL_OK)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, field, "%s", err);
    bool cached = false, hashed = false;
    if (sdx_map_bool(data, "hash", true) && !e.error[0] && e.hash_file[0]) {
        if (s_hash(job, st->cat, &e, &cached) != 0)
            return -1;
        hashed = true;
    }
    s_entry_fill(reply, &e); /* the entry's fields at the top of the reply */
    if (hashed)
        sdx_map_set_bool(reply, "hash_cached", cached);
    char **kv = NULL;
    size_t nkv = 0;
    sdx_value_t *meta = sdx_value_map_new();
    if (!e.error[0] && model_catalog_metadata(st->cat, &e, 1024, &kv, &nkv, err, sizeof err) == 0) {
        for (size_t i = 0; i < nkv; i++)
            sdx_map_set_str(meta, kv[2 * i], kv[2 * i + 1]);
        model_kv_free(kv, nkv);
    } else if (!e.error[0]) {
        sdx_map_set_str(reply, "metadata_error", err);
    }
    sdx_map_set(reply, "metadata", meta);
    sdx_map_set_int(reply, "metadata_count", (int64_t)nkv);
    return 0;
}

static sdx_value_t *s_str_array(char *const *v, size_t n)
{
    sdx_value_t *a = sdx_value_array_new();
    for (size_t i = 0; i < n; i++)
        sdx_array_push(a, sdx_value_str_new(v[i]));
    return a;
}

static int s_h_rescan(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    s_model_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    model_scan_report_t r;
    char err[512];
    if (model_catalog_rescan(st->cat, &r, err, sizeof err) != 0)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "rescan: %s", err);
    sdx_map_set(reply, "added", s_str_array(r.added, r.n_added));
    sdx_map_set(reply, "removed", s_str_array(r.removed, r.n_removed));
    sdx_map_set_int(reply, "count", (int64_t)r.total);
    sdx_map_set_float(reply, "scan_ms", r.scan_ms);
    log_info("%s: rescan: %zu added, %zu removed, %zu in all (%.1f ms)", sdx_job_request_id(job),
             r.n_added, r.n_removed, r.total, r.scan_ms);
    model_scan_report_clear(&r);
    return 0;
}

static const sdx_handler_t s_handlers[] = {
    {"model.list", s_h_list, 0, "catalogue entries (kind filter; hash: true adds SHA-256/AutoV2)"},
    {"model.inspect", s_h_inspect, 0,
     "one entry by name: architecture, dtype, tensors, metadata, SHA-256/AutoV2"},
    {"model.rescan", s_h_rescan, 0, "scan the roots again: added, removed"},
    {NULL, NULL, 0, NULL},
};

/* None: the catalogue's model.load / model.unload never reach this worker,
   the broker fans them out to the inference and conditioning workers, which
   hold the weights. */
static const char *const s_none[] = {NULL};

const sdx_domain_t sdx_domain_model = {
    .name = "model",
    .capacity = 8, /* catalogue requests are cheap (hashing is the exception) */
    .handlers = s_handlers,
    .planned = s_none,
    .options = s_options,
    .option = s_option,
    .init = s_init,
    .fini = s_fini,
    .status = s_status,
};
