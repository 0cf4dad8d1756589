/*  metrics.h - the broker's counters in the Prometheus text format (0.0.4):
    finished requests by message type and outcome, their latency as a
    histogram, images made, and the gauges the broker holds already (workers,
    capacity, requests in flight and queued per domain and priority). The
    broker answers them as `system.metrics` and, when `metrics_endpoint` is
    set, over HTTP (GET /metrics) on a ZeroMQ STREAM socket in its own poll
    loop: no thread, no HTTP library.

    Counting is a hash lookup and a few additions per finished request (on
    the broker's one thread); message types beyond METRICS_MAX_TYPES are
    counted under type="other" so that a client inventing types cannot grow
    the table.

    Not for: GPU memory (the device workers report it: device.memory). */
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_TYPES 255
#define METRICS_MAX_OUTCOMES 32
#define METRICS_BUCKETS 14

typedef struct metrics metrics_t;

metrics_t *metrics_new(void);
void metrics_destroy(metrics_t **m);

/* One finished request: its message type, outcome ("ok" or an error code)
   and time in the broker (accepted -> final reply). */
void metrics_request_done(metrics_t *m, const char *type, const char *outcome, double ms);
/* Images in a successful reply of `type`. */
void metrics_images(metrics_t *m, const char *type, int64_t n);

/* The broker's gauges at the time of a scrape. */
typedef struct {
    const char *name;
    int workers, capacity, in_flight;
    size_t queued[4]; /* by priority: low, normal, high, critical */
} metrics_domain_t;

typedef struct {
    double uptime_s;
    uint64_t accepted, rejected, retries, worker_lost, timeouts, late_replies;
    size_t in_broker;
    const metrics_domain_t *domains;
    int ndomains;
} metrics_gauges_t;

/* The whole exposition as a malloc'd NUL-terminated text (caller frees);
   NULL on out of memory. */
char *metrics_render(const metrics_t *m, const metrics_gauges_t *g, size_t *len);

#endif
