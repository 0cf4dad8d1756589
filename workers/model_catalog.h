/*  model_catalog.h - the catalogue of model files under a worker's roots.

    One root per kind (checkpoints, vae, lora, controlnet, embeddings,
    upscalers) is scanned; every entry is found from the folder listing and
    the safetensors headers alone (the 8-byte length and the JSON header: no
    weight byte is read), so a scan of a folder of multi-GiB checkpoints
    takes milliseconds. An entry is named as requests name it: the file stem
    ("juggernautXL" for juggernautXL.safetensors), the folder name of a
    diffusers model, and for checkpoints the path under the root without the
    extension ("sdxl/juggernautXL"), as the inference worker resolves
    model_name. Entries whose real path leaves their root (a symlink out)
    are skipped, as the inference worker refuses them.

    The SHA-256 of an entry's file (for a diffusers folder: its UNet weights,
    unet/diffusion_pytorch_model[.fp16].safetensors) is computed only when
    asked (model_catalog_hash) and cached in SQLite keyed by (real path,
    size, mtime): a file that did not change is never read twice, across
    restarts too when the database is a file. AutoV2 is the first 10 hex
    digits of it, as Civitai and A1111 show it.

    Plain C, no ZeroMQ, no engine: the architecture detector is a hook the
    caller may give (the engine's sdx_detect_arch); without one entries say
    "unknown" (upscalers are still recognised as RRDBNet from their tensor
    names). Thread-safe: every call takes the catalogue's lock; hashing reads
    the file outside it.

    Not for: loading models (infer_cache), request parsing (handler_model.c). */
#ifndef MODEL_CATALOG_H
#define MODEL_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct model_catalog model_catalog_t;

typedef enum {
    MODEL_CHECKPOINT = 0,
    MODEL_VAE,
    MODEL_LORA,
    MODEL_CONTROLNET,
    MODEL_EMBEDDING,
    MODEL_UPSCALER,
    MODEL_KIND_COUNT,
} model_kind_t;

/* "checkpoints", "vae", "lora", "controlnet", "embeddings", "upscalers" (static). */
const char *model_kind_name(model_kind_t k);
/* The kind of a name: the plural above or the singular ("checkpoint",
   "embedding", "upscaler", "textual_inversion" too); -1 when unknown. */
int model_kind_parse(const char *s);

/* Architecture detector: the architecture's name (static, e.g.
   "sdxl_base") of a file or diffusers folder, with one line about it in why;
   NULL when it cannot tell (why says why). Must read headers only. */
typedef const char *(*model_detect_fn)(const char *path, char *why, size_t why_len);

typedef struct {
    /* The folder of each kind; NULL or "": that kind has none. A root that
       does not exist is scanned as empty (and reported by status). */
    const char *roots[MODEL_KIND_COUNT];
    /* The SQLite file of the hash cache; NULL or "": in memory (hashes
       survive rescans, not restarts). Its folder must exist. */
    const char *db_path;
    model_detect_fn detect; /* may be NULL */
} model_catalog_config_t;

typedef struct {
    char name[256]; /* what requests give */
    model_kind_t kind;
    char path[1024];       /* relative to the kind's root ("x.safetensors", "sdxl-base") */
    char format[24];       /* "single_file", "diffusers" (a pipeline folder), "component"
                              (a folder with one diffusers weights file) */
    char hash_file[1200];  /* the file hashed, relative to the root */
    int64_t size;          /* bytes: the file, or every .safetensors file of a folder */
    int64_t mtime;         /* of the hashed file, Unix seconds */
    char architecture[32]; /* "sdxl_base", ..., "unknown" */
    char arch_detail[320]; /* the detector's line */
    char dtype[16];        /* safetensors dtype of most parameters ("F16"), "" unknown */
    int64_t tensor_count;  /* over the entry's safetensors files */
    int64_t params;        /* elements over those files */
    int files;             /* safetensors files read */
    char error[320];       /* non-empty: a header could not be read (entry still listed) */
    char sha256[65];       /* "" until hashed */
    char autov2[11];       /* first 10 hex digits of sha256, "" until hashed */
} model_entry_t;

/* Open the hash cache and scan every root. NULL with the reason in err
   (the database cannot be opened, out of memory). Caller destroys. */
model_catalog_t *model_catalog_new(const model_catalog_config_t *cfg, char *err, size_t err_len);
void model_catalog_destroy(model_catalog_t **c_p);

/* What a rescan changed: "kind/name" strings, malloc'd (clear frees them). */
typedef struct {
    char **added, **removed;
    size_t n_added, n_removed;
    size_t total;
    double scan_ms;
} model_scan_report_t;

/* Scan the roots again and replace the entries (hashes already known are
   kept for files whose size and mtime did not change). 0, or -1 with err
   (the catalogue is left as it was). report may be NULL. */
int model_catalog_rescan(model_catalog_t *c, model_scan_report_t *report, char *err,
                         size_t err_len);
void model_scan_report_clear(model_scan_report_t *r);

/* Entries of one kind (kind < 0: all), sorted by kind then name, copied
   into a malloc'd array the caller frees (NULL with *n 0 when none). */
model_entry_t *model_catalog_list(model_catalog_t *c, int kind, size_t *n);

size_t model_catalog_count(model_catalog_t *c, int kind); /* kind < 0: all */

typedef enum {
    MODEL_OK = 0,
    MODEL_BAD_NAME,  /* empty, absolute, '..'/'.' components, control characters */
    MODEL_NOT_FOUND, /* not in the catalogue: err lists near matches */
    MODEL_AMBIGUOUS, /* no kind given and the name is in several kinds */
    MODEL_FAILED,    /* reading or hashing failed: err says why */
    MODEL_CANCELLED, /* the progress callback said stop */
} model_status_t;

/* The entry `name` of `kind` (kind < 0: of any kind, if only one has it)
   into *out. Never touches the file system outside the catalogue. On
   MODEL_NOT_FOUND err reads "no lora 'x'; near: a, b" (or the kinds'
   contents when nothing is near). */
model_status_t model_catalog_find(model_catalog_t *c, int kind, const char *name,
                                  model_entry_t *out, char *err, size_t err_len);

/* Fill e->sha256/autov2: from the entry, else the cache, else by reading
   the file (progress(ctx, done, total) every 64 MiB, may be NULL; false
   stops with MODEL_CANCELLED). Stores the result in the cache and the
   catalogue. *cached tells whether the file was read (false) or not. */
model_status_t model_catalog_hash(model_catalog_t *c, model_entry_t *e,
                                  bool (*progress)(void *ctx, int64_t done, int64_t total),
                                  void *ctx, bool *cached, char *err, size_t err_len);

/* The "__metadata__" of the entry's hashed file: n key/value pairs as
   kv[2i], kv[2i+1] (values cut to max_value bytes), malloc'd; free with
   model_kv_free. 0, or -1 with err. */
int model_catalog_metadata(model_catalog_t *c, const model_entry_t *e, size_t max_value, char ***kv,
                           size_t *n, char *err, size_t err_len);
void model_kv_free(char **kv, size_t n);

typedef struct {
    char roots[MODEL_KIND_COUNT][1024]; /* as configured, "" none */
    bool root_exists[MODEL_KIND_COUNT];
    size_t counts[MODEL_KIND_COUNT];
    size_t skipped;     /* files left out at the last scan (symlinks out, ...) */
    char db_path[1024]; /* ":memory:" when in memory */
    int64_t hash_cache_hits, hashes_computed, rescans;
    double last_scan_ms;
    int64_t last_scan_at_ms; /* Unix ms */
} model_catalog_stats_t;

void model_catalog_stats(model_catalog_t *c, model_catalog_stats_t *out);

/* The header checks of a scan on a whole file image held in memory (8-byte
   length, JSON header, data): 0 with the tensor and metadata counts, or -1
   with err. For the fuzz target and tests. */
int model_header_check(const void *file, size_t len, int64_t *tensors, size_t *n_meta, char *err,
                       size_t err_len);

/* Why `name` is refused as a catalogue name (NULL when acceptable): the
   rule model_catalog_find applies. */
const char *model_name_problem(const char *name);

#endif
