/*  registry.h - the broker's worker registry: who is READY, for which
    domain and GPU, how many requests each runs at once, which models each
    has loaded, and worker selection for a request.

    Selection (registry_pick), among the live, non-draining workers of the
    domain with a free slot (in_flight < capacity: the credit the worker
    declared in READY, or concurrency + prefetch for a worker that declared
    none, see proto/PROTOCOL.md 1.6)
      1. gpu hint >= 0: only workers on that GPU (a hard constraint; the
         router answers no_worker at once when no worker of the domain is on
         that GPU at all, see registry_has_gpu);
      2. model affinity: a worker whose models list holds the model wins;
      3. fewest requests in flight (so idle workers win over prefetch slots);
      4. least recently dispatched to (round robin among equals).
    Not thread-safe; the broker is one thread.
*/
#ifndef BROKER_REGISTRY_H
#define BROKER_REGISTRY_H

#include "idmap.h"
#include "sdx_value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct worker {
    uint8_t identity[256]; /* ZeroMQ routing id on the backend ROUTER */
    size_t identity_len;
    char id[128]; /* worker_id from READY (or the hex identity) */
    char host[64];
    char version[32];
    int64_t pid;
    int domain;      /* index into the broker's domain table */
    int gpu;         /* -1 = CPU */
    int concurrency; /* >= 1 */
    int in_flight;   /* requests dispatched and not finished (incl. cancelling) */
    int prefetch;    /* extra requests it may hold beyond concurrency (queued in the worker) */
    int capacity;    /* slots: requests the broker keeps in flight on it (>= 1) */
    char **models;   /* owned strings */
    size_t nmodels;
    int64_t last_seen_ms; /* monotonic: last message of any kind from it */
    int64_t ready_ms;
    uint64_t last_dispatch; /* dispatch sequence number of the last request sent */
    uint64_t served;        /* replies received */
    bool draining;          /* no new work (said it is shutting down) */
    sdx_value_t *report;    /* owned: what its last HEARTBEAT said beyond the
                               basics ({gpus, memory} from device workers), NULL */
    int64_t report_ms;      /* monotonic time of that heartbeat */
    void **jobs;            /* requests it runs (the broker's type) */
    size_t njobs, jobs_cap;
} worker_t;

typedef struct {
    worker_t **items;
    size_t len, cap;
    idmap_t by_identity;
    uint64_t dispatch_seq;
} registry_t;

void registry_init(registry_t *r);
/* Destroy every worker and the registry's tables. */
void registry_free(registry_t *r);
/* Worker by routing id, NULL if unknown. */
worker_t *registry_find(const registry_t *r, const uint8_t *identity, size_t len);
/* Add a new worker for identity (caller fills the rest). NULL on OOM or if
   the identity is already registered. The registry owns it. */
worker_t *registry_add(registry_t *r, const uint8_t *identity, size_t len);
/* Unlink and destroy a worker; its jobs array must be empty or handled. */
void registry_remove(registry_t *r, worker_t *w);
/* Replace the models list (copies the strings). 0 / -1 on OOM. */
int worker_set_models(worker_t *w, const char *const *models, size_t n);
bool worker_has_model(const worker_t *w, const char *model);
/* Track the requests a worker runs. 0 / -1 on OOM. */
int worker_job_add(worker_t *w, void *job);
bool worker_job_del(worker_t *w, void *job);

/* Number of live workers of a domain (draining ones included when
   with_draining). */
size_t registry_count(const registry_t *r, int domain, bool with_draining);
/* Whether some worker of the domain runs on that GPU. */
bool registry_has_gpu(const registry_t *r, int domain, int gpu);
/* Whether worker w can take a request with these hints right now. */
bool registry_worker_fits(const worker_t *w, int domain, int gpu);
/* Best worker for a request (see above), NULL if none has a free slot. Does
   not change any counter: the caller dispatches and calls registry_charge. */
worker_t *registry_pick(const registry_t *r, int domain, int gpu, const char *model);
/* Account a dispatch to w (in_flight++, round-robin stamp). */
void registry_charge(registry_t *r, worker_t *w);

#endif
