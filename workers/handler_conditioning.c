/*  handler_conditioning.c - the conditioning domain: prompt tokenization and
    the two SDXL text encoders. Only conditioning.ping/status are real (from
    the runtime) until the engine's tokenizer and encoders land. */
#include "sdx_worker.h"

static const char *const s_planned[] = {
    "conditioning.tokenize",
    "conditioning.encode_prompt",
    "conditioning.encode",
    NULL,
};

const sdx_domain_t sdx_domain_conditioning = {
    .name = "conditioning",
    .capacity = 1, /* text encoders run on the device */
    .handlers = NULL,
    .planned = s_planned,
    .planned_issue = "issue #4 (engine part 1: CLIP tokenizer and both SDXL text encoders)",
};
