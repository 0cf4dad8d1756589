/*  registry.c - see registry.h. A linear scan over the domain's workers:
    fleets are a handful of workers per domain, where a scan is faster than
    any index. */
#include "registry.h"

#include <stdlib.h>
#include <string.h>

void registry_init(registry_t *r)
{
    memset(r, 0, sizeof *r);
    idmap_init(&r->by_identity);
}

static void s_worker_destroy(worker_t *w)
{
    for (size_t i = 0; i < w->nmodels; i++)
        free(w->models[i]);
    free(w->models);
    free(w->jobs);
    sdx_value_destroy(&w->report);
    free(w);
}

void registry_free(registry_t *r)
{
    for (size_t i = 0; i < r->len; i++)
        s_worker_destroy(r->items[i]);
    free(r->items);
    idmap_free(&r->by_identity);
    memset(r, 0, sizeof *r);
}

worker_t *registry_find(const registry_t *r, const uint8_t *identity, size_t len)
{
    return idmap_get(&r->by_identity, identity, len);
}

worker_t *registry_add(registry_t *r, const uint8_t *identity, size_t len)
{
    if (len > sizeof((worker_t *)0)->identity || registry_find(r, identity, len))
        return NULL;
    if (r->len == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        worker_t **items = realloc(r->items, cap * sizeof *items);
        if (!items)
            return NULL;
        r->items = items;
        r->cap = cap;
    }
    worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    memcpy(w->identity, identity, len);
    w->identity_len = len;
    w->gpu = -1;
    w->concurrency = 1;
    w->capacity = 1;
    w->domain = -1;
    if (idmap_put(&r->by_identity, w->identity, w->identity_len, w) != 0) {
        free(w);
        return NULL;
    }
    r->items[r->len++] = w;
    return w;
}

void registry_remove(registry_t *r, worker_t *w)
{
    idmap_del(&r->by_identity, w->identity, w->identity_len);
    for (size_t i = 0; i < r->len; i++)
        if (r->items[i] == w) {
            memmove(&r->items[i], &r->items[i + 1], (r->len - i - 1) * sizeof *r->items);
            r->len--;
            break;
        }
    s_worker_destroy(w);
}

int worker_set_models(worker_t *w, const char *const *models, size_t n)
{
    char **copy = calloc(n ? n : 1, sizeof *copy);
    if (!copy)
        return -1;
    for (size_t i = 0; i < n; i++) {
        copy[i] = strdup(models[i]);
        if (!copy[i]) {
            for (size_t k = 0; k < i; k++)
                free(copy[k]);
            free(copy);
            return -1;
        }
    }
    for (size_t i = 0; i < w->nmodels; i++)
        free(w->models[i]);
    free(w->models);
    w->models = copy;
    w->nmodels = n;
    return 0;
}

bool worker_has_model(const worker_t *w, const char *model)
{
    if (!model)
        return false;
    for (size_t i = 0; i < w->nmodels; i++)
        if (strcmp(w->models[i], model) == 0)
            return true;
    return false;
}

int worker_job_add(worker_t *w, void *job)
{
    if (w->njobs == w->jobs_cap) {
        size_t cap = w->jobs_cap ? w->jobs_cap * 2 : 8;
        void **jobs = realloc(w->jobs, cap * sizeof *jobs);
        if (!jobs)
            return -1;
        w->jobs = jobs;
        w->jobs_cap = cap;
    }
    w->jobs[w->njobs++] = job;
    return 0;
}

bool worker_job_del(worker_t *w, void *job)
{
    for (size_t i = 0; i < w->njobs; i++)
        if (w->jobs[i] == job) {
            w->jobs[i] = w->jobs[--w->njobs];
            return true;
        }
    return false;
}

size_t registry_count(const registry_t *r, int domain, bool with_draining)
{
    size_t n = 0;
    for (size_t i = 0; i < r->len; i++)
        if (r->items[i]->domain == domain && (with_draining || !r->items[i]->draining))
            n++;
    return n;
}

bool registry_has_gpu(const registry_t *r, int domain, int gpu)
{
    for (size_t i = 0; i < r->len; i++)
        if (r->items[i]->domain == domain && r->items[i]->gpu == gpu && !r->items[i]->draining)
            return true;
    return false;
}

bool registry_worker_fits(const worker_t *w, int domain, int gpu)
{
    return w->domain == domain && !w->draining && w->in_flight < w->capacity &&
           (gpu < 0 || w->gpu == gpu);
}

worker_t *registry_pick(const registry_t *r, int domain, int gpu, const char *model)
{
    worker_t *best = NULL;
    bool best_model = false;
    for (size_t i = 0; i < r->len; i++) {
        worker_t *w = r->items[i];
        if (!registry_worker_fits(w, domain, gpu))
            continue;
        bool has = model && worker_has_model(w, model);
        if (!best) {
            best = w;
            best_model = has;
            continue;
        }
        if (has != best_model) {
            if (has) {
                best = w;
                best_model = true;
            }
            continue;
        }
        if (w->in_flight != best->in_flight) {
            if (w->in_flight < best->in_flight)
                best = w;
            continue;
        }
        if (w->last_dispatch < best->last_dispatch)
            best = w;
    }
    return best;
}

void registry_charge(registry_t *r, worker_t *w)
{
    w->in_flight++;
    w->last_dispatch = ++r->dispatch_seq;
}
