/*  handler_scheduler.c - the scheduler domain: the diffusers scheduler family
    (timesteps, sigmas, steps). Only scheduler.ping/status are real (from the
    runtime) until the engine's schedulers land. */
#include "sdx_worker.h"

static const char *const s_planned[] = {
    "scheduler.list", "scheduler.timesteps", "scheduler.step", "scheduler.info", NULL,
};

const sdx_domain_t sdx_domain_scheduler = {
    .name = "scheduler",
    .capacity = 32, /* timesteps/sigmas are cheap CPU work */
    .handlers = NULL,
    .planned = s_planned,
    .planned_issue = "issue #5 (engine part 2: the scheduler family)",
};
