/*  handler_postprocessing.c - the postprocessing domain: VAE decode, image
    encoding (PNG/WebP), upscaling. Only postprocessing.ping/status are real
    (from the runtime) until the engine's VAE and image output land. */
#include "sdx_worker.h"

static const char *const s_planned[] = {
    "postprocessing.decode",
    "postprocessing.encode_image",
    "postprocessing.upscale",
    "postprocessing.safety_check",
    NULL,
};

const sdx_domain_t sdx_domain_postprocessing = {
    .name = "postprocessing",
    .capacity = 1, /* VAE decode runs on the device */
    .handlers = NULL,
    .planned = s_planned,
    .planned_issue = "issue #5 (engine part 2: VAE decode and image output)",
};
