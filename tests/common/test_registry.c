/*  test_registry.c - worker selection: domain, free slots, gpu hint (hard),
    model affinity, fewest in flight, round robin, draining. */
#include "registry.h"
#include "tcheck.h"

static worker_t *s_add(registry_t *r, const char *id, int domain, int gpu, int conc,
                       const char *model)
{
    worker_t *w = registry_add(r, (const uint8_t *)id, strlen(id));
    snprintf(w->id, sizeof w->id, "%s", id);
    w->domain = domain;
    w->gpu = gpu;
    w->concurrency = conc;
    w->capacity = conc;
    if (model) {
        const char *ms[] = {model};
        worker_set_models(w, ms, 1);
    }
    return w;
}

int main(void)
{
    registry_t r;
    registry_init(&r);
    enum { INF = 4, DEV = 0 };
    worker_t *a = s_add(&r, "a", INF, 0, 2, "sdxl-base");
    worker_t *b = s_add(&r, "b", INF, 1, 2, "sdxl-turbo");
    worker_t *d = s_add(&r, "d", DEV, -1, 1, NULL);
    CHECK(registry_add(&r, (const uint8_t *)"a", 1) == NULL); /* duplicate identity */
    CHECK(registry_find(&r, (const uint8_t *)"b", 1) == b);
    CHECK(registry_count(&r, INF, false) == 2 && registry_count(&r, DEV, false) == 1);
    CHECK(registry_count(&r, 2, false) == 0);
    CHECK(registry_has_gpu(&r, INF, 1) && !registry_has_gpu(&r, INF, 3));

    /* domain */
    CHECK(registry_pick(&r, DEV, -1, NULL) == d);
    CHECK(registry_pick(&r, 2, -1, NULL) == NULL);
    /* gpu hint is hard */
    CHECK(registry_pick(&r, INF, 1, NULL) == b);
    CHECK(registry_pick(&r, INF, 0, "sdxl-turbo") == a);
    CHECK(registry_pick(&r, INF, 3, NULL) == NULL);
    /* model affinity beats load */
    a->in_flight = 1;
    CHECK(registry_pick(&r, INF, -1, "sdxl-base") == a);
    CHECK(registry_pick(&r, INF, -1, "sdxl-turbo") == b);
    /* fewest in flight otherwise */
    CHECK(registry_pick(&r, INF, -1, NULL) == b);
    CHECK(registry_pick(&r, INF, -1, "unknown-model") == b);
    /* a full worker is never picked, even with the model */
    a->in_flight = 2;
    CHECK(registry_pick(&r, INF, -1, "sdxl-base") == b);
    CHECK(registry_pick(&r, INF, 0, NULL) == NULL);
    /* capacity beyond concurrency adds slots, but an idle worker still wins */
    a->capacity = 3;
    CHECK(registry_pick(&r, INF, 0, NULL) == a); /* 2 in flight, 3 slots */
    a->in_flight = 3;
    CHECK(registry_pick(&r, INF, 0, NULL) == NULL);
    a->in_flight = 2;
    b->in_flight = 1;
    CHECK(registry_pick(&r, INF, -1, NULL) == b);
    a->capacity = 2;
    /* round robin among equals */
    a->in_flight = b->in_flight = 0;
    worker_t *first = registry_pick(&r, INF, -1, NULL);
    registry_charge(&r, first);
    first->in_flight = 0; /* as if it finished at once */
    worker_t *second = registry_pick(&r, INF, -1, NULL);
    CHECK(first != second);
    registry_charge(&r, second);
    second->in_flight = 0;
    CHECK(registry_pick(&r, INF, -1, NULL) == first);
    /* charge counts */
    registry_charge(&r, a);
    CHECK(a->in_flight == 1);
    a->in_flight = 0;
    /* draining workers get nothing */
    b->draining = true;
    CHECK(registry_pick(&r, INF, 1, NULL) == NULL);
    CHECK(registry_count(&r, INF, false) == 1 && registry_count(&r, INF, true) == 2);
    b->draining = false;
    /* jobs list */
    int j1, j2;
    CHECK(worker_job_add(a, &j1) == 0 && worker_job_add(a, &j2) == 0 && a->njobs == 2);
    CHECK(worker_job_del(a, &j1) && !worker_job_del(a, &j1) && a->njobs == 1);
    CHECK(worker_has_model(a, "sdxl-base") && !worker_has_model(a, "x") &&
          !worker_has_model(a, NULL));
    /* many workers: least loaded wins */
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        worker_t *w = s_add(&r, id, 5, i % 4, 4, NULL);
        w->in_flight = i == 13 ? 0 : 1 + i % 3;
    }
    CHECK(strcmp(registry_pick(&r, 5, -1, NULL)->id, "w13") == 0);
    CHECK(strcmp(registry_pick(&r, 5, 1, NULL)->id, "w13") == 0); /* gpu1: w1,w5,w9,w13,w17 */
    registry_find(&r, (const uint8_t *)"w13", 3)->in_flight = 4;  /* full */
    CHECK(strcmp(registry_pick(&r, 5, 1, NULL)->id, "w9") == 0);  /* next least loaded on gpu1 */
    registry_remove(&r, b);
    CHECK(registry_find(&r, (const uint8_t *)"b", 1) == NULL && registry_count(&r, INF, true) == 1);
    registry_free(&r);
    return t_done();
}
