/*  infer_domain.h - what the engine-backed domains (inference, conditioning)
    share on the fleet side of infer_engine.h: the engine's log into the
    worker's, the error code of an infer_status_t, the loaded models in READY
    and status, and a millisecond clock.

    Not for: engine calls (infer_engine.h) or request parsing (the handlers). */
#ifndef INFER_DOMAIN_H
#define INFER_DOMAIN_H

#include "domain_schema.h"
#include "infer_engine.h"
#include "model_catalog.h"
#include "sdx_value.h"
#include "sdx_worker.h"

#include <limits.h>

/* The engine's log lines (infer_set_log) into the worker's log. */
void infer_domain_log_sink(int level, const char *msg);

/* The protocol's error code for a failed engine call. */
sdx_error_t infer_domain_code(infer_status_t rc);

/* Tell the runtime (READY, HEARTBEAT, status) which models are loaded. */
void infer_domain_publish_models(sdx_worker_t *w, infer_engine_t *e);

/* The loaded models as a status array: name, path, format, dtype, state,
   in_use, uses, load_ms, mb. NULL on out of memory. */
sdx_value_t *infer_domain_loaded_models(infer_engine_t *e);

/* lora.models of a filled request -> files under root, by catalogue name
   (the catalogue, whose MODEL_LORA root is root, is rescanned when a name is
   not there yet); unknown names are answered not_found on
   lora.models[i].name with the near ones. paths[i] backs out[i].path. 0, or
   -1 after sdx_job_fail. */
int infer_domain_loras(sdx_job_t *job, model_catalog_t *catalog, const char *root,
                       const sdx_value_t *data, infer_lora_t out[8], char (*paths)[PATH_MAX],
                       int *n);

/* The dtype a request's precision.dtype runs in on e: fp16 (the schema's
   default, meant for GPUs) runs as fp32 on a CPU, whose libtorch kernels
   lack half precision for much of the UNet; others as given. */
const char *infer_domain_run_dtype(const infer_engine_t *e, const char *dtype);

/* A model_name with nothing under the models root: the catalogue (its
   MODEL_CHECKPOINT root rescanned, so a model copied in since is seen)
   names the checkpoints near it, or what is there, appended to the
   resolver's message in err. */
void infer_domain_near_models(model_catalog_t *catalog, const char *name, char *err,
                              size_t err_len);

/* <domain>.load_model (load true) and <domain>.unload_model on engine e:
   data {model_name (required), precision?: {dtype}} checked with the rules
   of those fields in like_type's request schema (the generation request's:
   the same names, aliases and dtype default); model_name resolves as a
   generation's does, an unknown one is answered not_found with the near
   names of catalog. load: loaded into the cache if not there, reply
   {model_name, path, dtype, loaded, already_loaded, load_ms, mb,
   loaded_models}. unload: that model's engines dropped (every dtype when
   precision.dtype is not given; one in use is dropped when its job gives it
   back), reply {model_name, unloaded, deferred, loaded_models[, note]}.
   The loaded models are published (READY/HEARTBEAT) when they changed.
   0, or -1 after sdx_job_fail. */
int infer_domain_model_op(sdx_job_t *job, const domain_schema_t *rules, const char *like_type,
                          infer_engine_t *e, model_catalog_t *catalog, const sdx_value_t *data,
                          bool load, sdx_value_t *reply);

/* Milliseconds on the monotonic clock. */
double infer_domain_ms(void);

#endif
