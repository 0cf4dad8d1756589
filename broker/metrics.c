/*  metrics.c - see metrics.h. The exposition is written by hand (a small
    growing buffer): the format is a few lines of text per series, and no
    Prometheus client library for C is packaged in Debian 12. */
#include "metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 512 /* open addressing, > 2 x METRICS_MAX_TYPES */
#define TYPE_MAX 96

/* Upper bounds of the latency buckets, in seconds (+Inf is implicit). */
static const double s_bounds[METRICS_BUCKETS] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1,
                                                 2.5,   5,     10,   30,   60,  120, 300};

typedef struct {
    char type[TYPE_MAX];
    bool used;
    uint64_t outcomes[METRICS_MAX_OUTCOMES]; /* indexed like metrics_t.outcome names */
    uint64_t buckets[METRICS_BUCKETS];       /* not cumulative: rendered cumulative */
    uint64_t count;
    double sum_s;
    uint64_t images;
} s_series_t;

struct metrics {
    s_series_t slots[SLOTS];
    int ntypes;
    char outcome[METRICS_MAX_OUTCOMES][40];
    int noutcomes;
};

metrics_t *metrics_new(void)
{
    return calloc(1, sizeof(metrics_t));
}

void metrics_destroy(metrics_t **m)
{
    if (m) {
        free(*m);
        *m = NULL;
    }
}

static uint64_t s_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* The series of a type (made on first use; "other" once the table is full). */
static s_series_t *s_series(metrics_t *m, const char *type)
{
    if (!type || !*type || strlen(type) >= TYPE_MAX)
        type = "other";
    for (int pass = 0; pass < 2; pass++) {
        size_t i = s_hash(type) % SLOTS;
        for (size_t k = 0; k < SLOTS; k++, i = (i + 1) % SLOTS) {
            s_series_t *s = &m->slots[i];
            if (s->used && strcmp(s->type, type) == 0)
                return s;
            if (!s->used) {
                if (m->ntypes >= METRICS_MAX_TYPES && strcmp(type, "other") != 0)
                    break; /* full: count it as other */
                s->used = true;
                snprintf(s->type, sizeof s->type, "%s", type);
                m->ntypes++;
                return s;
            }
        }
        type = "other";
    }
    return NULL;
}

static int s_outcome(metrics_t *m, const char *outcome)
{
    if (!outcome || !*outcome)
        outcome = "unknown";
    for (int i = 0; i < m->noutcomes; i++)
        if (strcmp(m->outcome[i], outcome) == 0)
            return i;
    if (m->noutcomes == METRICS_MAX_OUTCOMES)
        return METRICS_MAX_OUTCOMES - 1; /* the error table is far smaller */
    snprintf(m->outcome[m->noutcomes], sizeof m->outcome[0], "%s", outcome);
    return m->noutcomes++;
}

void metrics_request_done(metrics_t *m, const char *type, const char *outcome, double ms)
{
    if (!m)
        return;
    s_series_t *s = s_series(m, type);
    if (!s)
        return;
    s->outcomes[s_outcome(m, outcome)]++;
    double sec = ms > 0 ? ms / 1000.0 : 0;
    for (int b = 0; b < METRICS_BUCKETS; b++) {
        if (sec <= s_bounds[b]) {
            s->buckets[b]++;
            break;
        }
    }
    s->count++;
    s->sum_s += sec;
}

void metrics_images(metrics_t *m, const char *type, int64_t n)
{
    s_series_t *s = m && n > 0 ? s_series(m, type) : NULL;
    if (s)
        s->images += (uint64_t)n;
}

/* ---------------------------------------------------------------- text */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} s_buf_t;

static void s_put(s_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_put(s_buf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static void s_head(s_buf_t *b, const char *name, const char *type, const char *help)
{
    s_put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Series in a stable order (by type name) for readable scrapes. */
static int s_by_type(const void *a, const void *b)
{
    return strcmp((*(const s_series_t *const *)a)->type, (*(const s_series_t *const *)b)->type);
}

char *metrics_render(const metrics_t *m, const metrics_gauges_t *g, size_t *len)
{
    s_buf_t b = {0};
    const s_series_t *list[SLOTS];
    int n = 0;
    for (int i = 0; m && i < SLOTS; i++)
        if (m->slots[i].used)
            list[n++] = &m->slots[i];
    qsort(list, (size_t)n, sizeof list[0], s_by_type);

    s_head(&b, "sdxl_requests_total", "counter",
           "Finished requests by message type and outcome (ok or the error code).");
    for (int i = 0; i < n; i++)
        for (int o = 0; o < m->noutcomes; o++)
            if (list[i]->outcomes[o])
                s_put(&b, "sdxl_requests_total{type=\"%s\",outcome=\"%s\"} %llu\n", list[i]->type,
                      m->outcome[o], (unsigned long long)list[i]->outcomes[o]);
    s_head(&b, "sdxl_request_duration_seconds", "histogram",
           "Time from acceptance to the final reply, by message type.");
    for (int i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (int k = 0; k < METRICS_BUCKETS; k++) {
            cum += list[i]->buckets[k];
            s_put(&b, "sdxl_request_duration_seconds_bucket{type=\"%s\",le=\"%g\"} %llu\n",
                  list[i]->type, s_bounds[k], (unsigned long long)cum);
        }
        s_put(&b, "sdxl_request_duration_seconds_bucket{type=\"%s\",le=\"+Inf\"} %llu\n",
              list[i]->type, (unsigned long long)list[i]->count);
        s_put(&b, "sdxl_request_duration_seconds_sum{type=\"%s\"} %.6f\n", list[i]->type,
              list[i]->sum_s);
        s_put(&b, "sdxl_request_duration_seconds_count{type=\"%s\"} %llu\n", list[i]->type,
              (unsigned long long)list[i]->count);
    }
    s_head(&b, "sdxl_images_total", "counter", "Images in successful replies, by message type.");
    for (int i = 0; i < n; i++)
        if (list[i]->images)
            s_put(&b, "sdxl_images_total{type=\"%s\"} %llu\n", list[i]->type,
                  (unsigned long long)list[i]->images);

    static const char *const prio[4] = {"low", "normal", "high", "critical"};
    s_head(&b, "sdxl_workers", "gauge", "Registered workers by domain.");
    for (int d = 0; d < g->ndomains; d++)
        s_put(&b, "sdxl_workers{domain=\"%s\"} %d\n", g->domains[d].name, g->domains[d].workers);
    s_head(&b, "sdxl_worker_capacity", "gauge",
           "Requests the broker may keep in flight on a domain's workers (their credit).");
    for (int d = 0; d < g->ndomains; d++)
        s_put(&b, "sdxl_worker_capacity{domain=\"%s\"} %d\n", g->domains[d].name,
              g->domains[d].capacity);
    s_head(&b, "sdxl_in_flight", "gauge", "Requests running on a domain's workers.");
    for (int d = 0; d < g->ndomains; d++)
        s_put(&b, "sdxl_in_flight{domain=\"%s\"} %d\n", g->domains[d].name,
              g->domains[d].in_flight);
    s_head(&b, "sdxl_queue_depth", "gauge",
           "Requests queued in the broker by domain and priority.");
    for (int d = 0; d < g->ndomains; d++)
        for (int p = 0; p < 4; p++)
            s_put(&b, "sdxl_queue_depth{domain=\"%s\",priority=\"%s\"} %zu\n", g->domains[d].name,
                  prio[p], g->domains[d].queued[p]);
    s_head(&b, "sdxl_broker_requests_in_broker", "gauge", "Requests queued or running.");
    s_put(&b, "sdxl_broker_requests_in_broker %zu\n", g->in_broker);
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"sdxl_broker_accepted_total", "Requests accepted (validated, queued or dispatched).",
         offsetof(metrics_gauges_t, accepted)},
        {"sdxl_broker_rejected_total", "Requests answered with an error before queueing.",
         offsetof(metrics_gauges_t, rejected)},
        {"sdxl_broker_retries_total", "Re-dispatches after a worker was lost or drained.",
         offsetof(metrics_gauges_t, retries)},
        {"sdxl_broker_worker_lost_total", "Requests failed with worker_lost.",
         offsetof(metrics_gauges_t, worker_lost)},
        {"sdxl_broker_timeouts_total", "Requests failed with timeout.",
         offsetof(metrics_gauges_t, timeouts)},
        {"sdxl_broker_late_replies_total", "Worker replies after their request was finished.",
         offsetof(metrics_gauges_t, late_replies)},
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        s_head(&b, counters[i].name, "counter", counters[i].help);
        s_put(&b, "%s %llu\n", counters[i].name,
              (unsigned long long)*(const uint64_t *)((const char *)g + counters[i].off));
    }
    s_head(&b, "sdxl_broker_uptime_seconds", "gauge", "Seconds since the broker started.");
    s_put(&b, "sdxl_broker_uptime_seconds %.3f\n", g->uptime_s);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
