/*  infer_domain.h - what the engine-backed domains (inference, conditioning)
    share on the fleet side of infer_engine.h: the engine's log into the
    worker's, the error code of an infer_status_t, the loaded models in READY
    and status, and a millisecond clock.

    Not for: engine calls (infer_engine.h) or request parsing (the handlers). */
#ifndef INFER_DOMAIN_H
#define INFER_DOMAIN_H

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

/* Milliseconds on the monotonic clock. */
double infer_domain_ms(void);

#endif
