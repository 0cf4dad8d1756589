/*  sdxl_worker_main.c - `sdxl-worker`: the process entry and the table of
    domains this binary can serve (one per process, chosen by --domain).
    Not for: runtime logic (sdx_worker.c) or handlers (handler_*.c). */
#include "sdx_worker.h"

extern const sdx_domain_t sdx_domain_device;
extern const sdx_domain_t sdx_domain_model;
extern const sdx_domain_t sdx_domain_conditioning;
extern const sdx_domain_t sdx_domain_scheduler;
extern const sdx_domain_t sdx_domain_inference;
extern const sdx_domain_t sdx_domain_postprocessing;
extern const sdx_domain_t sdx_domain_test;

static const sdx_domain_t *const s_domains[] = {
    &sdx_domain_device,       &sdx_domain_model,
    &sdx_domain_conditioning, &sdx_domain_scheduler,
    &sdx_domain_inference,    &sdx_domain_postprocessing,
    &sdx_domain_test,         NULL,
};

int main(int argc, char **argv)
{
    return sdx_worker_main(s_domains, argc, argv);
}
