/*  infer_cache.h - the inference worker's loaded SDXL engines and where their
    models come from.

    A cache of sdxl_engine_t keyed by (resolved model path, dtype), least
    recently used first out when more than `max_models` would be loaded, and
    the resolution of a request's model_name to a path under the worker's
    models root (diffusers folder or single .safetensors file), refusing any
    name that would leave the root.

    Not for: request parsing or replies (handler_inference.c), ZeroMQ. Built
    only with the engine (SDX_WITH_ENGINE). */
#ifndef INFER_CACHE_H
#define INFER_CACHE_H

#include "infer_engine.h"
#include "sdxl.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct infer_cache infer_cache_t;

/* A model_name resolved under the root. */
typedef struct {
    char path[4096];       /* realpath of the folder or the .safetensors file */
    char config_dir[4096]; /* companion configs for a single file, "" for none */
    bool single_file;
} infer_model_ref_t;

/* Resolve `name` under `root` (both must exist; root is made absolute).
   Accepted: `<root>/<name>` being a diffusers folder (model_index.json or
   unet/), a UNet folder alone (config.json and
   diffusion_pytorch_model.safetensors: a refiner that takes its other
   parts from the base), a .safetensors file, or `<root>/<name>.safetensors`. A single file
   takes its configs from `<file without .safetensors>.config/` when that
   folder exists, else from `default_config_dir` (may be NULL). Returns 0;
   -1 with a reason in err and *not_found true when nothing of that name
   exists (false: the name itself is refused: `..`, absolute, a symlink out
   of the root, control characters). */
int infer_model_resolve(const char *root, const char *name, const char *default_config_dir,
                        infer_model_ref_t *out, bool *not_found, char *err, size_t err_len);

/* A new, empty cache holding at most max_models engines (>= 1). Caller
   destroys it. */
infer_cache_t *infer_cache_new(int max_models);
/* Bound the cache by memory too: idle engines are evicted, least recently
   used first, while the loaded weights (sdxl_engine_weight_bytes; a model
   not loaded yet counts as its files' size on disk) would exceed max_bytes.
   0: no bound (the default). A model larger than the budget alone is still
   loaded (with a warning). */
void infer_cache_set_budget(infer_cache_t *c, int64_t max_bytes);
/* Free every engine (none may be in use) and the cache. */
void infer_cache_destroy(infer_cache_t **c_p);

/* One cache entry in use: the engine is the caller's until release. */
typedef struct infer_entry infer_entry_t;

/* Get the engine for (ref, params->dtype), loading it with `params` (whose
   model_path/config_dir this call fills from ref) when absent; evicts the
   least recently used idle engine first when the cache is full. The entry
   is locked for the caller (engines run one generation at a time): a second
   job on the same model waits here. `name` is what the client called the
   model (reported by infer_cache_names). *loaded is set true when this call
   loaded it, *load_ms to the load time. NULL on failure with
   sdx_last_error()'s reason copied to err. */
infer_entry_t *infer_cache_acquire(infer_cache_t *c, const char *name, const infer_model_ref_t *ref,
                                   const sdxl_engine_params_t *params, bool *loaded,
                                   double *load_ms, char *err, size_t err_len);
sdxl_engine_t *infer_entry_engine(infer_entry_t *e);
/* Is (ref, dtype) loaded (or loading)? A hint for progress messages. */
bool infer_cache_has(infer_cache_t *c, const infer_model_ref_t *ref, sdx_dtype_t dtype);
/* Is (ref, dtype) loaded (not loading, not being unloaded)? Then it counts
   as used now (most recently used) and *bytes (may be NULL) is set to its
   weights. Never waits for a load or a generation. */
bool infer_cache_lookup(infer_cache_t *c, const infer_model_ref_t *ref, sdx_dtype_t dtype,
                        int64_t *bytes);
/* Drop the engines of one model: those whose path is ref->path, or when
   ref is NULL (a name that no longer resolves) those loaded under `name`;
   only the dtype `dtype` (an sdx_dtype_t), or every dtype when dtype < 0.
   An idle engine is freed now (outside the lock); one in use or loading is
   marked to be freed by its last infer_cache_release and counted in
   *deferred (it is no longer found by acquire, has or lookup, nor listed by
   infer_cache_names; infer_cache_describe shows it as "unloading").
   Returns how many were freed now. Thread-safe. */
int infer_cache_evict(infer_cache_t *c, const infer_model_ref_t *ref, const char *name, int dtype,
                      int *deferred);
/* Give the entry back (unlocks it; it stays cached, unless it failed to
   load or was evicted while in use: the last release frees it then). */
void infer_cache_release(infer_cache_t *c, infer_entry_t **e_p);

/* Names of the loaded models, most recently used first, as an array of
   `n` malloc'd strings (caller frees each and the array). Model names are
   deduplicated (one name loaded in two dtypes is listed once). */
char **infer_cache_names(infer_cache_t *c, size_t *n);

/* Describe up to max cache entries into out; returns how many. Never
   blocks on a running load or generation. */
int infer_cache_describe(infer_cache_t *c, infer_model_info_t *out, int max);

#endif
