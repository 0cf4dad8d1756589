/*  infer_cache.c - loaded SDXL engines of an inference worker (LRU) and the
    resolution of model names under the models root. See infer_cache.h.

    Locking: `lock` guards the list and is only held for list work (never
    while loading, generating or freeing an engine), so inference.status on
    the main thread never waits for the GPU. Each entry has its own `run`
    mutex: one generation per engine at a time. */
#include "infer_cache.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Logging goes through infer_log (infer_cache.h): this file may not include
   common/sdx_log.h, whose names clash with the engine's shim. */
#define log_info(...) infer_log(2, __VA_ARGS__)
#define log_warn(...) infer_log(1, __VA_ARGS__)
#define log_error(...) infer_log(0, __VA_ARGS__)

static infer_log_fn s_log_fn;

void infer_set_log(infer_log_fn fn)
{
    s_log_fn = fn;
}

void infer_log(int level, const char *fmt, ...)
{
    if (!s_log_fn)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s_log_fn(level, msg);
}

struct infer_entry {
    char name[256];
    infer_model_ref_t ref;
    sdx_dtype_t dtype;
    sdxl_engine_t *engine; /* NULL while loading or after a failed load */
    bool failed;
    bool drop; /* unloaded while in use: freed by the last release */
    char err[512];
    int refs;            /* jobs holding or waiting for it (under cache lock) */
    pthread_mutex_t run; /* held by the job using the engine */
    uint64_t last_used;
    int64_t uses;
    double load_ms;
    int64_t bytes; /* its weights; before the load, its files' size */
    infer_entry_t *next;
};

struct infer_cache {
    pthread_mutex_t lock;
    infer_entry_t *head;
    int count;
    int max_models;
    int64_t max_bytes; /* 0: no memory bound */
    uint64_t tick;
};

/* ------------------------------------------------------------ resolution */

static bool s_is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool s_is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool s_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Is `p` (a realpath) `root` itself or inside it? */
static bool s_inside(const char *root, const char *p)
{
    size_t n = strlen(root);
    if (strncmp(root, p, n) != 0)
        return false;
    return p[n] == '/' || (n == 1 && root[0] == '/');
}

/* Lexical checks: no empty or absolute name, no `..`/`.` component, no
   backslash or control character. */
static const char *s_name_problem(const char *name)
{
    if (!name || !*name)
        return "is empty";
    if (name[0] == '/')
        return "is an absolute path; give a name under the models root";
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c < 0x20 || *c == 0x7f || *c == '\\')
            return "contains a backslash or a control character";
    const char *p = name;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if ((len == 2 && p[0] == '.' && p[1] == '.') || (len == 1 && p[0] == '.'))
            return "has a '.' or '..' component; names must stay inside the models root";
        if (!slash)
            break;
        p = slash + 1;
    }
    return NULL;
}

int infer_model_resolve(const char *root, const char *name, const char *default_config_dir,
                        infer_model_ref_t *out, bool *not_found, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    *not_found = false;
    const char *why = s_name_problem(name);
    if (why) {
        snprintf(err, err_len, "model_name '%s' %s", name ? name : "", why);
        return -1;
    }
    char root_real[PATH_MAX];
    if (!realpath(root, root_real)) {
        *not_found = true;
        snprintf(err, err_len, "the worker's models root %s: %s", root, strerror(errno));
        return -1;
    }
    const char *suffixes[] = {"", ".safetensors"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char cand[PATH_MAX + 300], real[PATH_MAX];
        int n = snprintf(cand, sizeof cand, "%s/%s%s", root_real, name, suffixes[i]);
        if (n < 0 || (size_t)n >= sizeof cand) {
            snprintf(err, err_len, "model_name is too long");
            return -1;
        }
        if (!realpath(cand, real))
            continue;
        if (!s_inside(root_real, real)) {
            snprintf(err, err_len, "model_name '%s' leads outside the models root (symlink)", name);
            return -1;
        }
        if (s_is_dir(real)) {
            char probe[PATH_MAX + 64];
            snprintf(probe, sizeof probe, "%s/model_index.json", real);
            bool diffusers = s_is_file(probe);
            snprintf(probe, sizeof probe, "%s/unet", real);
            bool has_unet = s_is_dir(probe);
            /* a UNet alone (config.json + weights): a refiner as it ships,
               which takes its other parts from a base (refiner_model) */
            snprintf(probe, sizeof probe, "%s/config.json", real);
            bool unet_only = s_is_file(probe);
            snprintf(probe, sizeof probe, "%s/diffusion_pytorch_model.safetensors", real);
            unet_only = unet_only && s_is_file(probe);
            if (!diffusers && !has_unet && !unet_only)
                continue;
            snprintf(out->path, sizeof out->path, "%s", real);
            return 0;
        }
        if (s_is_file(real) && s_ends_with(real, ".safetensors")) {
            snprintf(out->path, sizeof out->path, "%s", real);
            out->single_file = true;
            /* companion configs: <cand without .safetensors>.config/ */
            char comp[PATH_MAX + 320], comp_real[PATH_MAX];
            size_t base = strlen(cand) - strlen(".safetensors");
            snprintf(comp, sizeof comp, "%.*s.config", (int)base, cand);
            if (realpath(comp, comp_real) && s_is_dir(comp_real)) {
                if (!s_inside(root_real, comp_real)) {
                    snprintf(err, err_len,
                             "the configs of model '%s' lead outside the models root (symlink)",
                             name);
                    return -1;
                }
                snprintf(out->config_dir, sizeof out->config_dir, "%s", comp_real);
            } else if (default_config_dir && *default_config_dir) {
                snprintf(out->config_dir, sizeof out->config_dir, "%s", default_config_dir);
            }
            return 0;
        }
    }
    *not_found = true;
    snprintf(err, err_len,
             "no model '%s' under the models root %s (a diffusers folder, a .safetensors file "
             "or <name>.safetensors)",
             name, root_real);
    return -1;
}

/* ----------------------------------------------------------------- cache */

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

infer_cache_t *infer_cache_new(int max_models)
{
    infer_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->max_models = max_models > 0 ? max_models : 1;
    return c;
}

static void s_entry_free(infer_entry_t **e_p)
{
    infer_entry_t *e = *e_p;
    if (!e)
        return;
    if (e->engine)
        log_info("unloading model %s (%s)", e->name, sdx_dtype_name(e->dtype));
    sdxl_engine_free(&e->engine);
    pthread_mutex_destroy(&e->run);
    free(e);
    *e_p = NULL;
}

void infer_cache_destroy(infer_cache_t **c_p)
{
    infer_cache_t *c = *c_p;
    if (!c)
        return;
    while (c->head) {
        infer_entry_t *e = c->head;
        c->head = e->next;
        s_entry_free(&e);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
    *c_p = NULL;
}

static void s_unlink(infer_cache_t *c, infer_entry_t *e)
{
    for (infer_entry_t **pp = &c->head; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            c->count--;
            return;
        }
}

void infer_cache_set_budget(infer_cache_t *c, int64_t max_bytes)
{
    pthread_mutex_lock(&c->lock);
    c->max_bytes = max_bytes > 0 ? max_bytes : 0;
    pthread_mutex_unlock(&c->lock);
}

/* Bytes of the .safetensors files of a model (a file, or a folder's files
   one level down: unet/, vae/, ...): the estimate of a model not loaded yet. */
static int64_t s_disk_bytes(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (S_ISREG(st.st_mode))
        return (int64_t)st.st_size;
    int64_t n = 0;
    static const char *const parts[] = {
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors", "text_encoder_2/model.safetensors"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char p[PATH_MAX];
        if ((size_t)snprintf(p, sizeof p, "%s/%s", path, parts[i]) < sizeof p && stat(p, &st) == 0)
            n += (int64_t)st.st_size;
    }
    return n;
}

static int64_t s_loaded_bytes(const infer_cache_t *c)
{
    int64_t n = 0;
    for (const infer_entry_t *e = c->head; e; e = e->next)
        n += e->bytes;
    return n;
}

/* Under lock: unlink idle entries (LRU first) until one more of `need`
   bytes fits (count and budget); returns them as a list for the caller to
   free outside the lock. */
static infer_entry_t *s_evict_for_one(infer_cache_t *c, int64_t need)
{
    infer_entry_t *out = NULL;
    while (c->count >= c->max_models ||
           (c->max_bytes && c->count > 0 && s_loaded_bytes(c) + need > c->max_bytes)) {
        infer_entry_t *lru = NULL;
        for (infer_entry_t *e = c->head; e; e = e->next)
            if (e->refs == 0 && (!lru || e->last_used < lru->last_used))
                lru = e;
        if (!lru) {
            if (c->count >= c->max_models)
                log_warn("every loaded model is in use: loading one more than max_models (%d)",
                         c->max_models);
            else
                log_warn("every loaded model is in use: going over the memory budget (%lld MB)",
                         (long long)(c->max_bytes >> 20));
            break;
        }
        s_unlink(c, lru);
        lru->next = out;
        out = lru;
    }
    return out;
}

infer_entry_t *infer_cache_acquire(infer_cache_t *c, const char *name, const infer_model_ref_t *ref,
                                   const sdxl_engine_params_t *params, bool *loaded,
                                   double *load_ms, char *err, size_t err_len)
{
    *loaded = false;
    *load_ms = 0;
    pthread_mutex_lock(&c->lock);
    infer_entry_t *e = c->head;
    while (e && !(e->dtype == params->dtype && !e->failed && !e->drop &&
                  strcmp(e->ref.path, ref->path) == 0))
        e = e->next;
    if (e) {
        e->refs++;
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_lock(&e->run); /* waits for a load or a generation */
    } else {
        e = calloc(1, sizeof *e);
        if (!e) {
            pthread_mutex_unlock(&c->lock);
            snprintf(err, err_len, "out of memory");
            return NULL;
        }
        snprintf(e->name, sizeof e->name, "%s", name);
        e->ref = *ref;
        e->dtype = params->dtype;
        e->refs = 1;
        pthread_mutex_init(&e->run, NULL);
        pthread_mutex_lock(&e->run);
        e->bytes = s_disk_bytes(ref->path);
        if (c->max_bytes && e->bytes > c->max_bytes)
            log_warn("model %s (%lld MB on disk) is larger than the memory budget (%lld MB) alone",
                     name, (long long)(e->bytes >> 20), (long long)(c->max_bytes >> 20));
        infer_entry_t *gone = s_evict_for_one(c, e->bytes);
        e->next = c->head;
        c->head = e;
        c->count++;
        pthread_mutex_unlock(&c->lock);
        while (gone) {
            infer_entry_t *g = gone;
            gone = g->next;
            s_entry_free(&g);
        }
        sdxl_engine_params_t p = *params;
        p.model_path = e->ref.path;
        p.config_dir = e->ref.config_dir[0] ? e->ref.config_dir : NULL;
        double t0 = s_now_ms();
        log_info("loading model %s from %s (%s%s%s)", name, e->ref.path, sdx_dtype_name(p.dtype),
                 p.config_dir ? ", configs " : "", p.config_dir ? p.config_dir : "");
        sdxl_engine_t *eng = sdxl_engine_new(&p);
        double ms = s_now_ms() - t0;
        pthread_mutex_lock(&c->lock);
        e->engine = eng;
        e->load_ms = ms;
        if (eng)
            e->bytes = sdxl_engine_weight_bytes(eng); /* the real size replaces the estimate */
        if (!eng) {
            e->failed = true;
            snprintf(e->err, sizeof e->err, "%s", sdx_last_error());
        }
        pthread_mutex_unlock(&c->lock);
        if (eng) {
            *loaded = true;
            *load_ms = ms;
            log_info("loaded model %s in %.0f ms", name, ms);
        } else {
            log_error("loading model %s failed: %s", name, e->err);
        }
    }
    if (!e->engine) {
        snprintf(err, err_len, "%s", e->err[0] ? e->err : "the model failed to load");
        infer_cache_release(c, &e);
        return NULL;
    }
    pthread_mutex_lock(&c->lock);
    e->last_used = ++c->tick;
    e->uses++;
    pthread_mutex_unlock(&c->lock);
    return e;
}

bool infer_cache_has(infer_cache_t *c, const infer_model_ref_t *ref, sdx_dtype_t dtype)
{
    pthread_mutex_lock(&c->lock);
    infer_entry_t *e = c->head;
    while (e &&
           !(e->dtype == dtype && !e->failed && !e->drop && strcmp(e->ref.path, ref->path) == 0))
        e = e->next;
    pthread_mutex_unlock(&c->lock);
    return e != NULL;
}

sdxl_engine_t *infer_entry_engine(infer_entry_t *e)
{
    return e->engine;
}

void infer_cache_release(infer_cache_t *c, infer_entry_t **e_p)
{
    infer_entry_t *e = *e_p;
    if (!e)
        return;
    *e_p = NULL;
    pthread_mutex_unlock(&e->run);
    pthread_mutex_lock(&c->lock);
    bool drop = --e->refs == 0 && (e->failed || e->drop);
    if (drop)
        s_unlink(c, e);
    pthread_mutex_unlock(&c->lock);
    if (drop)
        s_entry_free(&e);
}

char **infer_cache_names(infer_cache_t *c, size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&c->lock);
    char **out = calloc((size_t)c->count + 1, sizeof *out);
    /* most recently used first: repeated selection by last_used */
    uint64_t below = UINT64_MAX;
    for (int k = 0; out && k < c->count; k++) {
        infer_entry_t *best = NULL;
        for (infer_entry_t *e = c->head; e; e = e->next)
            if (e->engine && !e->drop && e->last_used < below &&
                (!best || e->last_used > best->last_used))
                best = e;
        if (!best)
            break;
        below = best->last_used;
        bool dup = false;
        for (size_t i = 0; i < *n; i++)
            dup = dup || strcmp(out[i], best->name) == 0;
        if (!dup && (out[*n] = strdup(best->name)) != NULL)
            (*n)++;
    }
    pthread_mutex_unlock(&c->lock);
    return out;
}

int infer_cache_describe(infer_cache_t *c, infer_model_info_t *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&c->lock);
    for (infer_entry_t *e = c->head; e && n < max; e = e->next, n++) {
        infer_model_info_t *m = &out[n];
        snprintf(m->name, sizeof m->name, "%s", e->name);
        snprintf(m->path, sizeof m->path, "%.1023s", e->ref.path);
        m->format = e->ref.single_file ? "safetensors" : "diffusers";
        m->dtype = sdx_dtype_name(e->dtype);
        m->state = e->drop ? "unloading" : e->engine ? "loaded" : e->failed ? "failed" : "loading";
        m->in_use = e->refs > 0;
        m->uses = e->uses;
        m->bytes = e->bytes;
        m->load_ms = e->load_ms;
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}

bool infer_cache_lookup(infer_cache_t *c, const infer_model_ref_t *ref, sdx_dtype_t dtype,
                        int64_t *bytes)
{
    pthread_mutex_lock(&c->lock);
    infer_entry_t *e = c->head;
    while (e &&
           !(e->dtype == dtype && e->engine && !e->drop && strcmp(e->ref.path, ref->path) == 0))
        e = e->next;
    if (e) {
        e->last_used = ++c->tick;
        if (bytes)
            *bytes = e->bytes;
    }
    pthread_mutex_unlock(&c->lock);
    return e != NULL;
}

int infer_cache_evict(infer_cache_t *c, const infer_model_ref_t *ref, const char *name, int dtype,
                      int *deferred)
{
    int freed = 0;
    *deferred = 0;
    infer_entry_t *gone = NULL;
    pthread_mutex_lock(&c->lock);
    infer_entry_t **pp = &c->head;
    while (*pp) {
        infer_entry_t *e = *pp;
        bool match = !e->failed && !e->drop && (dtype < 0 || (int)e->dtype == dtype) &&
                     (ref ? strcmp(e->ref.path, ref->path) == 0 : strcmp(e->name, name) == 0);
        if (match && e->refs > 0) {
            e->drop = true; /* the last infer_cache_release frees it */
            (*deferred)++;
        } else if (match) {
            *pp = e->next;
            c->count--;
            e->next = gone;
            gone = e;
            freed++;
            continue;
        }
        pp = &e->next;
    }
    pthread_mutex_unlock(&c->lock);
    while (gone) {
        infer_entry_t *g = gone;
        gone = g->next;
        s_entry_free(&g);
    }
    return freed;
}
