/*  handler_inference.c - the inference domain: SDXL text-to-image on this
    worker's GPU. Only inference.ping/status are real (from the runtime) until
    the engine's UNet, VAE and pipeline land; inference.generate then reports
    progress per denoising step and polls the cancel flag per step. */
#include "sdx_worker.h"

static const char *const s_planned[] = {
    "inference.generate", "inference.txt2img", "inference.img2img",
    "inference.inpaint",  "inference.denoise", NULL,
};

const sdx_domain_t sdx_domain_inference = {
    .name = "inference",
    .handlers = NULL,
    .planned = s_planned,
    .planned_issue = "issue #5 (engine part 2: SDXL UNet, VAE and the text-to-image pipeline)",
};
