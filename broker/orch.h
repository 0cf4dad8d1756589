/*  orch.h - the broker's orchestrator: workflows (workflow.h) run as
    sessions, batches of generations, both kept in SQLite (store.h) so that a
    broker restart loses nothing, and progress on the events socket.

    It lives in the broker's one thread and talks to workers only through the
    broker's own request path: a step or a batch item is an internal request
    (orch_host_t.submit), routed, queued, validated, timed out and retried
    like a client's, whose final reply comes back through orch_result instead
    of a socket. Results are queued and handled in orch_tick, after the poll
    round, so no callback re-enters the orchestrator.

    Not here: routing (broker.c), workflow files (workflow.c), SQL (store.c).
*/
#ifndef BROKER_ORCH_H
#define BROKER_ORCH_H

#include "sdx_catalog.h"
#include "sdx_errors.h"
#include "sdx_value.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct orch orch_t;

/* What the orchestrator needs from the broker. */
typedef struct {
    void *ctx;
    /* Send an internal request. data is taken (destroyed on failure too).
       0 when accepted (the key the broker tracks it by is written to key;
       exactly one orch_result follows), -1 with f filled when refused at
       once (unknown type, no worker, invalid data...). */
    int (*submit)(void *ctx, uint64_t token, const char *message_type, const char *request_id,
                  const char *session_id, sdx_value_t *data, int priority, int64_t timeout_ms,
                  char *key, size_t key_len, sdx_fault_t *f);
    /* Cancel an internal request by key (its result then says cancelled). */
    void (*cancel)(void *ctx, const char *key, const char *why);
    /* Publish [topic][msgpack body] on the events socket (if any). */
    void (*publish)(void *ctx, const char *topic, const sdx_value_t *body);
    /* Validate (and for the C# dialect, map) the data of a request of
       message_type, as the broker's validation hook would: defaults filled,
       *data may be replaced. 0, or -1 with f naming the field. */
    int (*check)(void *ctx, const char *message_type, bool csharp, sdx_value_t **data,
                 sdx_fault_t *f);
    /* Live (non-draining) workers of a domain; -1 when no such domain. */
    int (*workers)(void *ctx, const char *domain);
    /* Memory the device workers last reported: the GPU with the most free
       bytes (free/total, -1 when no device worker reports a GPU) and the
       highest used fraction over all reported GPUs (or host RAM when there is
       no GPU; -1 when nothing is reported). */
    void (*memory)(void *ctx, int64_t *best_gpu_free, int64_t *best_gpu_total,
                   double *max_used_fraction);
} orch_host_t;

typedef struct {
    const char *workflows_dir; /* "" : no files (inline workflows only) */
    const char *state_db;      /* SQLite file, "" : in memory (nothing survives) */
    const char *outputs_dir;   /* batch images; "" : <state_db dir>/outputs */
    int64_t step_timeout_ms;   /* steps without timeout_ms */
    int64_t keep_finished;     /* finished sessions/batches kept (oldest go) */
    const sdx_catalog_t *cat;
    const char *models_root; /* required_models are checked here when set */
} orch_config_t;

/* NULL + err when the database cannot be opened or migrated. Loads the
   workflows (bad files are logged and skipped) and the stored sessions and
   batches: the ones that were running carry on. */
orch_t *orch_new(const orch_config_t *cfg, const orch_host_t *host, char *err, size_t err_len);
void orch_destroy(orch_t **o);

/* Re-read the workflows directory (SIGHUP). A bad file keeps the last good
   definition of its id. Returns the number of refused files. */
int orch_reload(orch_t *o);

/* Is this message type served here (processing.*)? */
bool orch_handles(const char *message_type);
/* Answer a processing.* request: a reply data tree (caller owns), or NULL
   with f filled. dialect_csharp / msgpack shape the C# DTO fields that
   differ by encoding (TimeSpan). */
typedef struct {
    const char *request_id;
    bool csharp;        /* the request came in the C# dialect */
    bool msgpack;       /* ... encoded as msgpack (TimeSpan as ticks) */
    int priority;       /* the envelope's, for the work it starts */
    int64_t timeout_ms; /* the envelope's timeout_ms, 0 none */
} orch_req_t;
sdx_value_t *orch_request(orch_t *o, const char *message_type, const sdx_value_t *data,
                          const orch_req_t *rq, sdx_fault_t *f);

/* The final reply of an internal request: ok with data (taken), or the
   error tree (borrowed, copied). worker may be NULL. Queued until orch_tick. */
void orch_result(orch_t *o, uint64_t token, bool ok, sdx_value_t *data, const sdx_value_t *error,
                 const char *worker);
/* A PROGRESS of an internal request (step/total of its worker). */
void orch_progress(orch_t *o, uint64_t token, int64_t step, int64_t total);

/* Handle queued results, advance sessions and batches. Returns the
   milliseconds until it needs to run again without new input (-1: never). */
int64_t orch_tick(orch_t *o);

/* The broker is stopping: results that say shutting_down leave their
   sessions and batches as they are stored (they resume at the next start). */
void orch_stopping(orch_t *o);

/* {sessions {state: n}, batches {state: n}, workflows n} for system.status. */
sdx_value_t *orch_status(orch_t *o);

#endif
