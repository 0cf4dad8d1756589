/*  sdxl_worker_main.c - `sdxl-worker`: the process entry and the table of
    domains this binary can serve (one per process, chosen by --domain).
    Not for: runtime logic (sdx_worker.c) or handlers (handler_*.c). */
#include "sdx_worker.h"

#include <string.h>

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

const sdx_domain_t *sdx_worker_find_domain(const char *name)
{
    for (const sdx_domain_t *const *d = s_domains; *d; d++)
        if (strcmp((*d)->name, name) == 0)
            return *d;
    return NULL;
}

const sdx_domain_t *sdx_worker_domain_at(size_t i)
{
    return i < sizeof s_domains / sizeof s_domains[0] ? s_domains[i] : NULL;
}

int main(int argc, char **argv)
{
    return sdx_worker_main(argc, argv);
}
