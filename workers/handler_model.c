/*  handler_model.c - the model domain: loading, unloading and listing SDXL
    checkpoints on this worker's device. The runtime answers model.ping and
    model.status (with the loaded models); the rest needs the engine's loaders
    and answers not_available until they land. */
#include "sdx_worker.h"

static const char *const s_planned[] = {
    "model.load", "model.unload", "model.list", "model.info", "model.validate", NULL,
};

const sdx_domain_t sdx_domain_model = {
    .name = "model",
    .capacity = 8, /* catalogue requests (list, info, status) are cheap */
    .handlers = NULL,
    .planned = s_planned,
    .planned_issue = "issue #4 (engine part 1: safetensors and model loading)",
};
