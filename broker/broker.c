/*  broker.c - the sdxl-broker's event loop: clients on the frontend
    ROUTER, workers (SDXW01) on the backend ROUTER, lifecycle events on an
    XPUB socket.

    A request is decoded once into an owned tree (sdx_envelope_t), routed by
    its domain prefix, dispatched to the best worker (registry.c) or queued
    by priority (queue.c); its deadline sits in a heap (dheap.c) and its id
    in a hash map (idmap.c). Every accepted request gets exactly one final
    reply: from its worker, or timeout / worker_lost / shutting_down from
    here. What is not here: schema validation and the C# dialect (hooks.c),
    the orchestrator (orch.c: processing.*, workflows, sessions, batches),
    whose steps come back in here as internal requests (breq_t.orch_token,
    route-less) and whose results go back to it instead of to a socket.

    Hot path rules: no logging above debug per frame, no allocation that a
    free list or a stack-built tree can avoid, worker bodies are encoded
    from borrowed sub-trees.
*/
#include "broker.h"

#include "dheap.h"
#include "hooks.h"
#include "idmap.h"
#include "metrics.h"
#include "orch.h"
#include "queue.h"
#include "registry.h"

#include "sdx_catalog.h"
#include "sdx_clock.h"
#include "sdx_codec.h"
#include "sdx_csharp.h"
#include "sdx_curve.h"
#include "sdx_envelope.h"
#include "sdx_errors.h"
#include "sdx_log.h"
#include "sdx_mdp.h"
#include "sdx_value.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define ROUTE_FRAMES 4  /* envelope frames kept per client message */
#define ROUTE_BYTES 600 /* their total size */
#define KEY_MAX (SDX_MDP_MAX_ID + 1)
#define DRAIN_BATCH 256 /* messages taken from one socket per poll round */
#define MAX_DOMAINS 32
#define FANOUT_BIT (UINT64_C(1) << 63)

/* ------------------------------------------------------------------ types */

typedef struct {
    uint8_t buf[ROUTE_BYTES];
    uint16_t len[ROUTE_FRAMES];
    int n;
} route_t;

typedef enum { RS_QUEUED = 0, RS_RUNNING, RS_CANCELLING } rstate_t;

typedef struct breq {
    char key[KEY_MAX]; /* backend request id, the idmap key */
    size_t key_len;
    sdx_envelope_t env;
    hook_state_t hook;
    route_t route;
    int domain;
    rstate_t state;
    worker_t *worker;
    int attempt;           /* dispatches so far */
    int64_t t_accept_us;   /* monotonic */
    int64_t t_dispatch_us; /* last dispatch */
    int64_t deadline_unix_ms;
    int64_t progress_count;
    struct client *client; /* counted in its in-flight limit, NULL otherwise */
    uint64_t orch_token;   /* an orchestrator step / batch item: its final reply goes to
                              orch_result, not to a client (route is empty); with
                              FANOUT_BIT, to the system.status refresh it belongs to */
    worker_t *pin;         /* sent to this worker only (a status refresh), or NULL */
    bool deferred;         /* a local reply still owed later (system.status refresh) */
    qnode_t qn;
    dnode_t dn;
    struct breq *free_next;
} breq_t;

typedef struct {
    const char *name;
    bool by_broker;
    int prefetch; /* catalogue default */
    queue_t queue;
    int64_t empty_since_ms; /* queued work and no worker since */
} domain_t;

typedef struct {
    uint64_t accepted, ok, failed, timeouts, retries, lost, late_replies, rejected, progress;
    uint64_t resumed; /* requests carried over to a worker's new connection (s_resume) */
    uint64_t stalls;  /* times the broker found it had not run (s_check_stall) */
} stats_t;

/* One client connection (its ROUTER routing id) while per-client limits are
   on: requests it has in the broker and its token bucket. */
typedef struct client {
    uint8_t id[ROUTE_BYTES];
    size_t id_len;
    int64_t in_flight;
    double tokens;
    int64_t refill_ms, seen_ms;
} client_t;

struct broker {
    broker_config_t cfg;
    void *ctx, *front, *back, *pub;
    sdx_catalog_t *cat;
    domain_t domains[MAX_DOMAINS];
    int ndomains;
    registry_t reg;
    idmap_t reqs;
    dheap_t deadlines;
    breq_t *free_list;
    size_t live_requests;
    uint64_t seq;
    int subscriptions; /* distinct topics subscribed on the events socket */
    int64_t started_ms, started_unix_ms, next_heartbeat_ms;
    stats_t st;
    metrics_t *metrics;
    void *http;      /* ZMQ_STREAM for GET /metrics, NULL when off */
    idmap_t clients; /* routing id -> client_t, when per-client limits are on */
    orch_t *orch;
    sdx_zap_t *zap; /* CURVE allow-lists (NULL: CURVE off) */
    struct fanout *fanouts; /* system.status refreshes waiting for their workers */
    uint64_t fanout_seq;
    struct {
        char id[128], domain[32], why[96];
        int gpu;
        int64_t at_unix_ms;
    } lost[16]; /* the last workers lost, for system.status */
    unsigned nlost;
};

volatile sig_atomic_t broker_reload_requested;

static inline breq_t *s_from_qn(qnode_t *n)
{
    return (breq_t *)((char *)n - offsetof(breq_t, qn));
}

static inline breq_t *s_from_dn(dnode_t *n)
{
    return (breq_t *)((char *)n - offsetof(breq_t, dn));
}

/* ------------------------------------------------------------- options */

#define OFF(f) offsetof(broker_config_t, f)
const sdx_option_t broker_options[] = {
    {"frontend", "--frontend", SDX_OPT_STR, "tcp://127.0.0.1:5555",
     "client endpoint (ROUTER, bind)", OFF(frontend), 0, 0},
    {"backend", "--backend", SDX_OPT_STR, "tcp://127.0.0.1:5556",
     "worker endpoint (ROUTER, bind, SDXW01)", OFF(backend), 0, 0},
    {"events", "--events", SDX_OPT_STR, "tcp://127.0.0.1:5557",
     "lifecycle events (PUB, bind); \"\" disables", OFF(events), 0, 0},
    {"metrics_endpoint", "--metrics-endpoint", SDX_OPT_STR, "",
     "Prometheus metrics over HTTP (GET /metrics) on this tcp endpoint, e.g. "
     "tcp://127.0.0.1:9464; \"\" off (system.metrics answers either way)",
     OFF(metrics_endpoint), 0, 0},
    {"log_level", "--log-level", SDX_OPT_LEVEL, "info", "error|warn|info|debug", OFF(log_level), 0,
     0},
    {"max_frame_bytes", "--max-frame-bytes", SDX_OPT_SIZE, "16MiB",
     "largest request frame; larger -> payload_too_large", OFF(max_frame_bytes), 1024,
     (int64_t)1 << 32},
    {"heartbeat_ms", "--heartbeat-ms", SDX_OPT_INT, "1000", "heartbeat interval, both ways",
     OFF(heartbeat_ms), 50, 60000},
    {"liveness", "--liveness", SDX_OPT_INT, "3", "missed heartbeats before a worker is dead",
     OFF(liveness), 1, 100},
    {"default_timeout_ms", "--default-timeout-ms", SDX_OPT_INT, "600000",
     "deadline of requests without timeout_ms", OFF(default_timeout_ms), 1, 7LL * 24 * 3600 * 1000},
    {"max_timeout_ms", "--max-timeout-ms", SDX_OPT_INT, "3600000", "cap on a request's timeout_ms",
     OFF(max_timeout_ms), 1, 7LL * 24 * 3600 * 1000},
    {"max_retries", "--max-retries", SDX_OPT_INT, "2", "re-dispatches after a worker is lost",
     OFF(max_retries), 0, 10},
    {"max_queue", "--max-queue", SDX_OPT_INT, "10000",
     "queued requests per domain before queue_full", OFF(max_queue), 0, 10000000},
    {"max_requests", "--max-requests", SDX_OPT_INT, "100000",
     "requests in the broker at once before queue_full", OFF(max_requests), 1, 100000000},
    {"client_max_in_flight", "--client-max-in-flight", SDX_OPT_INT, "0",
     "requests one client connection may have queued or running; more get rate_limited (0: no "
     "limit)",
     OFF(client_max_in_flight), 0, 100000000},
    {"client_max_rps", "--client-max-rps", SDX_OPT_INT, "0",
     "requests per second one client connection may send (a token bucket of that many, refilled "
     "continuously); more get rate_limited (0: no limit)",
     OFF(client_max_rps), 0, 100000000},
    {"cancel_grace_ms", "--cancel-grace-ms", SDX_OPT_INT, "10000",
     "how long a cancelled request keeps its worker slot", OFF(cancel_grace_ms), 0, 3600000},
    {"no_worker_grace_ms", "--no-worker-grace-ms", SDX_OPT_INT, "10000",
     "queued work fails when its domain has had no worker this long", OFF(no_worker_grace_ms), 0,
     3600000},
    {"prefetch", "--prefetch", SDX_OPT_INT, "-1",
     "slots beyond concurrency for a worker whose READY has no capacity (older workers); -1: the "
     "domain's catalogue value (READY may ask for its own)",
     OFF(prefetch), -1, 64},
    {"hwm", "--hwm", SDX_OPT_INT, "100000", "ZeroMQ send/receive high-water marks", OFF(hwm), 0,
     100000000},
    {"events_enabled", "--events-enabled", SDX_OPT_BOOL, "true", "publish request lifecycle events",
     OFF(events_enabled), 0, 0},
    {"log_requests", "--log-requests", SDX_OPT_BOOL, "true", "one info line per finished request",
     OFF(log_requests), 0, 0},
    {"validate", "--validate", SDX_OPT_BOOL, "true", "schema validation at the VALIDATION HOOK",
     OFF(validate), 0, 0},
    {"actions_file", "--actions-file", SDX_OPT_STR, "",
     "action alias table (\"\" = proto/actions.json)", OFF(actions_file), 0, 0},
    {"catalog_file", "--catalog-file", SDX_OPT_STR, "",
     "message catalogue (\"\" = proto/catalog.json)", OFF(catalog_file), 0, 0},
    {"schemas_dir", "--schemas-dir", SDX_OPT_STR, "",
     "JSON schemas for validation (\"\" = schemas/)", OFF(schemas_dir), 0, 0},
    {"orchestrator.workflows_dir", "--workflows-dir", SDX_OPT_STR, "",
     "workflow definitions (*.yaml), re-read on SIGHUP (\"\" = <source>/deploy/workflows when "
     "it exists; \"none\": inline workflows only)",
     OFF(workflows_dir), 0, 0},
    {"orchestrator.state_db", "--state-db", SDX_OPT_STR, "",
     "SQLite file for sessions, batches and the journal (\"\" = in memory: lost on restart)",
     OFF(state_db), 0, 0},
    {"orchestrator.outputs_dir", "--batch-outputs", SDX_OPT_STR, "",
     "where batch images are written (\"\" = <state_db folder>/outputs)", OFF(batch_outputs), 0, 0},
    {"orchestrator.step_timeout_ms", "--step-timeout-ms", SDX_OPT_INT, "600000",
     "deadline of a workflow step or batch item that names none", OFF(step_timeout_ms), 1,
     7LL * 24 * 3600 * 1000},
    {"orchestrator.keep_finished", "--keep-finished", SDX_OPT_INT, "1000",
     "finished sessions and batches kept (each kind); older ones are deleted", OFF(keep_finished),
     1, 100000000},
    {"curve.cert", "--curve-cert", SDX_OPT_STR, "",
     "the broker's CURVE key pair (FILE and FILE_secret from sdxl-cli keygen): CURVE on the "
     "frontend, backend and events sockets, plaintext refused (\"\" = off)",
     OFF(curve_cert), 0, 0},
    {"curve.clients_dir", "--curve-clients", SDX_OPT_STR, "",
     "folder of client public keys allowed on the frontend and events sockets (re-read on SIGHUP)",
     OFF(curve_clients_dir), 0, 0},
    {"curve.workers_dir", "--curve-workers", SDX_OPT_STR, "",
     "folder of worker public keys allowed on the backend (re-read on SIGHUP)",
     OFF(curve_workers_dir), 0, 0},
    {"validation.models_root", "--models-root", SDX_OPT_STR, "",
     "folder model names resolve in (semantic checks)", OFF(models_root), 0, 0},
    {"validation.loras_root", "--loras-root", SDX_OPT_STR, "", "folder LoRA names resolve in",
     OFF(loras_root), 0, 0},
    {"validation.vaes_root", "--vaes-root", SDX_OPT_STR, "", "folder VAE names resolve in",
     OFF(vaes_root), 0, 0},
    {"validation.controlnets_root", "--controlnets-root", SDX_OPT_STR, "",
     "folder ControlNet names resolve in", OFF(controlnets_root), 0, 0},
    {"validation.embeddings_root", "--embeddings-root", SDX_OPT_STR, "",
     "folder textual-inversion names resolve in", OFF(embeddings_root), 0, 0},
    {"validation.upscalers_root", "--upscalers-root", SDX_OPT_STR, "",
     "folder upscaler names resolve in", OFF(upscalers_root), 0, 0},
    {"validation.outputs_root", "--outputs-root", SDX_OPT_STR, "", "folder save paths must stay in",
     OFF(outputs_root), 0, 0},
    {"validation.max_image_bytes", "--max-image-bytes", SDX_OPT_SIZE, "0",
     "cap on an input image (0 = the validator's default)", OFF(max_image_bytes), 0, 0},
    {"validation.max_pixels", "--max-pixels", SDX_OPT_INT, "0",
     "cap on width x height (0 = the validator's default)", OFF(max_pixels), 0, (int64_t)1 << 40},
};
const size_t broker_options_count = sizeof broker_options / sizeof broker_options[0];

/* ------------------------------------------------------ small msgpack writer
   for events: a fixed stack buffer, no allocation. Overflow truncates the
   event (it is then not sent). */

typedef struct {
    uint8_t buf[1024];
    size_t len;
    bool overflow;
} mpw_t;

static void mpw_raw(mpw_t *w, const void *p, size_t n)
{
    if (w->len + n > sizeof w->buf) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void mpw_map(mpw_t *w, size_t n)
{
    uint8_t h = (uint8_t)(0x80 | n); /* events hold < 16 keys */
    mpw_raw(w, &h, 1);
}

static void mpw_str(mpw_t *w, const char *s)
{
    size_t n = strlen(s);
    uint8_t h[3];
    if (n < 32) {
        h[0] = (uint8_t)(0xA0 | n);
        mpw_raw(w, h, 1);
    } else if (n < 256) {
        h[0] = 0xD9;
        h[1] = (uint8_t)n;
        mpw_raw(w, h, 2);
    } else {
        n = n > 65535 ? 65535 : n;
        h[0] = 0xDA;
        h[1] = (uint8_t)(n >> 8);
        h[2] = (uint8_t)n;
        mpw_raw(w, h, 3);
    }
    mpw_raw(w, s, n);
}

static void mpw_int(mpw_t *w, int64_t v)
{
    uint8_t h[9];
    if (v >= 0 && v < 128) {
        h[0] = (uint8_t)v;
        mpw_raw(w, h, 1);
        return;
    }
    h[0] = 0xD3;
    for (int i = 0; i < 8; i++)
        h[1 + i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
    mpw_raw(w, h, 9);
}

static void mpw_f64(mpw_t *w, double d)
{
    uint8_t h[9];
    uint64_t u;
    memcpy(&u, &d, 8);
    h[0] = 0xCB;
    for (int i = 0; i < 8; i++)
        h[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    mpw_raw(w, h, 9);
}

/* --------------------------------------------------------------- helpers */

static const char *s_hex_id(const uint8_t *id, size_t len, char *out, size_t out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 3 < out_len; i++)
        o += (size_t)snprintf(out + o, out_len - o, "%02x", id[i]);
    out[o] = '\0';
    return out;
}

/* A value struct on the stack pointing at borrowed bytes (never destroyed). */
static inline sdx_value_t s_sv_str(const char *s)
{
    sdx_value_t v = {.type = SDX_STR};
    v.u.str.ptr = (char *)s;
    v.u.str.len = strlen(s);
    return v;
}

static inline sdx_value_t s_sv_int(int64_t i)
{
    sdx_value_t v = {.type = SDX_INT};
    v.u.i = i;
    return v;
}

static inline sdx_value_t s_sv_float(double f)
{
    sdx_value_t v = {.type = SDX_FLOAT};
    v.u.f = f;
    return v;
}

static inline sdx_value_t s_sv_bool(bool b)
{
    sdx_value_t v = {.type = SDX_BOOL};
    v.u.b = b;
    return v;
}

/* A stack-built map: kv entries point at borrowed keys/values. */
typedef struct {
    sdx_value_t map;
    sdx_kv_t kv[48];
} svmap_t;

static void svmap_init(svmap_t *m)
{
    memset(&m->map, 0, sizeof m->map);
    m->map.type = SDX_MAP;
    m->map.u.map.items = m->kv;
    m->map.u.map.cap = sizeof m->kv / sizeof m->kv[0];
}

static void svmap_add(svmap_t *m, const char *key, const sdx_value_t *val)
{
    if (!val || m->map.u.map.len >= m->map.u.map.cap)
        return;
    for (size_t i = 0; i < m->map.u.map.len; i++)
        if (strcmp(m->kv[i].key, key) == 0) {
            m->kv[i].val = (sdx_value_t *)val;
            return;
        }
    sdx_kv_t *kv = &m->kv[m->map.u.map.len++];
    kv->key = (char *)key;
    kv->key_len = strlen(key);
    kv->val = (sdx_value_t *)val;
}

static void s_free_buf(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Send route frames then a malloc'd body (ownership passes to libzmq). */
static void s_send_route(broker_t *b, const route_t *rt, uint8_t *body, size_t len)
{
    size_t off = 0;
    for (int i = 0; i < rt->n; i++) {
        if (zmq_send(b->front, rt->buf + off, rt->len[i], ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            log_debug("frontend send: %s", zmq_strerror(errno));
            free(body);
            return;
        }
        off += rt->len[i];
    }
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, body, len, s_free_buf, NULL) != 0) {
        free(body);
        return;
    }
    if (zmq_msg_send(&m, b->front, ZMQ_DONTWAIT) < 0) {
        log_debug("frontend send: %s", zmq_strerror(errno));
        zmq_msg_close(&m);
    }
}

/* Encode a reply tree in the client's encoding (through the REPLY DIALECT
   HOOK) and send it. */
static void s_send_tree(broker_t *b, const route_t *rt, const sdx_value_t *tree, sdx_encoding_t enc,
                        const hook_state_t *hook)
{
    /* REPLY DIALECT HOOK: replies (and progress) to C#-dialect clients are
       reshaped here, after the native reply is complete, before encoding. */
    sdx_value_t *alt = hook ? hooks_reply(tree, enc, hook) : NULL;
    uint8_t *buf;
    size_t len;
    int rc = sdx_codec_encode(alt ? alt : tree, enc, &buf, &len);
    sdx_value_destroy(&alt);
    if (rc != 0) {
        log_error("cannot encode a reply (out of memory)");
        return;
    }
    s_send_route(b, rt, buf, len);
}

/* Timing of a reply the broker makes itself (PROTOCOL.md 1.5: every reply
   has {total_ms, queued_ms, attempts}): nothing was queued or dispatched. */
static sdx_value_t *s_local_timing(int64_t t0_us)
{
    sdx_value_t *t = sdx_value_map_new();
    if (!t)
        return NULL;
    sdx_map_set_float(t, "total_ms", (double)(sdx_clock_mono_us() - t0_us) / 1000.0);
    sdx_map_set_float(t, "queued_ms", 0.0);
    sdx_map_set_int(t, "attempts", 0);
    return t;
}

/* The one info line every request ends with, whoever answered it:
   "<id> <type> worker=<id|broker|-> attempt=<n> <ms>ms <ok|code>[ field=<f>][: <message>]". */
static void s_log_final(broker_t *b, const char *request_id, const char *message_type,
                        const char *worker, int attempt, double ms, const char *outcome,
                        const char *field, const char *detail)
{
    metrics_request_done(b->metrics, message_type, outcome, ms);
    if (!b->cfg.log_requests || sdx_log_level_current < SDX_LOG_INFO)
        return;
    log_info("%s %s worker=%s attempt=%d %.2fms %s%s%s%s%s", request_id ? request_id : "-",
             message_type ? message_type : "-", worker ? worker : "-", attempt, ms, outcome,
             field && field[0] ? " field=" : "", field && field[0] ? field : "", detail ? ": " : "",
             detail ? detail : "");
}

/* An error reply for a message that has no breq (yet). request_id is the
   id to echo as the client sent it (borrowed; NULL when unknown). */
static void s_reply_fault_raw(broker_t *b, const route_t *rt, sdx_encoding_t enc,
                              const sdx_value_t *request_id, const char *message_type,
                              const sdx_fault_t *f, const hook_state_t *hook, int64_t t0_us)
{
    sdx_value_t *err = sdx_fault_value(f);
    sdx_value_t *timing = s_local_timing(t0_us);
    sdx_value_t *r = sdx_reply_error(NULL, message_type, err, timing);
    if (r && request_id) {
        sdx_value_t *id = sdx_value_clone(request_id);
        if (!id || sdx_map_set(r, "request_id", id) != 0)
            sdx_value_destroy(&r);
    }
    if (r)
        s_send_tree(b, rt, r, enc, hook);
    sdx_value_destroy(&r);
    b->st.rejected++;
    char idtext[SDX_MDP_MAX_ID + 24];
    const char *idp = NULL;
    if (request_id && request_id->type == SDX_STR)
        idp = request_id->u.str.ptr;
    else if (request_id && request_id->type == SDX_INT) {
        snprintf(idtext, sizeof idtext, "%" PRId64, request_id->u.i);
        idp = idtext;
    }
    s_log_final(b, idp, message_type, NULL, 0, (double)(sdx_clock_mono_us() - t0_us) / 1000.0,
                sdx_error_name(f->code), f->field, f->message);
}

/* -------------------------------------------------------------- events */

static void s_event(broker_t *b, const char *topic, const breq_t *r, const char *outcome,
                    double duration_ms, const sdx_value_t *progress)
{
    if (!b->pub || b->subscriptions <= 0)
        return;
    mpw_t w = {.len = 0};
    int n = 7 + (r->worker ? 1 : 0) + (outcome ? 2 : 0) + (progress ? 2 : 0) +
            (r->env.session_id[0] ? 1 : 0);
    mpw_map(&w, (size_t)n);
    mpw_str(&w, "event");
    mpw_str(&w, topic + 8); /* "request." */
    mpw_str(&w, "request_id");
    mpw_str(&w, r->env.request_id);
    mpw_str(&w, "key");
    mpw_str(&w, r->key);
    mpw_str(&w, "message_type");
    mpw_str(&w, r->env.message_type);
    mpw_str(&w, "priority");
    mpw_str(&w, sdx_priority_name(r->env.priority));
    mpw_str(&w, "attempt");
    mpw_int(&w, r->attempt);
    mpw_str(&w, "ts_ms");
    mpw_int(&w, sdx_clock_unix_ms());
    if (r->worker) {
        mpw_str(&w, "worker");
        mpw_str(&w, r->worker->id);
    }
    if (r->env.session_id[0]) {
        mpw_str(&w, "session_id");
        mpw_str(&w, r->env.session_id);
    }
    if (outcome) {
        mpw_str(&w, "outcome");
        mpw_str(&w, outcome);
        mpw_str(&w, "duration_ms");
        mpw_f64(&w, duration_ms);
    }
    if (progress) {
        mpw_str(&w, "step");
        mpw_int(&w, sdx_map_int(progress, "step", 0));
        mpw_str(&w, "total");
        mpw_int(&w, sdx_map_int(progress, "total", 0));
    }
    if (w.overflow)
        return;
    /* topic request.<client's request id>: a subscriber can follow one */
    char t[SDX_MDP_MAX_ID + 16];
    int tl = snprintf(t, sizeof t, "request.%s", r->env.request_id);
    if (zmq_send(b->pub, t, (size_t)tl, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    zmq_send(b->pub, w.buf, w.len, ZMQ_DONTWAIT);
}

static void s_worker_event(broker_t *b, const char *topic, const worker_t *wk, const char *why)
{
    if (!b->pub || b->subscriptions <= 0)
        return;
    mpw_t w = {.len = 0};
    mpw_map(&w, why ? 6 : 5);
    mpw_str(&w, "event");
    mpw_str(&w, topic + 7); /* "worker." */
    mpw_str(&w, "worker");
    mpw_str(&w, wk->id);
    mpw_str(&w, "domain");
    mpw_str(&w, b->domains[wk->domain].name);
    mpw_str(&w, "gpu");
    mpw_int(&w, wk->gpu);
    mpw_str(&w, "ts_ms");
    mpw_int(&w, sdx_clock_unix_ms());
    if (why) {
        mpw_str(&w, "reason");
        mpw_str(&w, why);
    }
    if (w.overflow)
        return;
    char t[160];
    int tl = snprintf(t, sizeof t, "worker.%s", wk->id);
    if (zmq_send(b->pub, t, (size_t)tl, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    zmq_send(b->pub, w.buf, w.len, ZMQ_DONTWAIT);
}

/* ------------------------------------------------------------- requests */

static breq_t *s_req_alloc(broker_t *b)
{
    breq_t *r = b->free_list;
    if (r)
        b->free_list = r->free_next;
    else {
        r = malloc(sizeof *r);
        if (!r)
            return NULL;
    }
    memset(r, 0, offsetof(breq_t, env));
    memset(&r->env, 0, sizeof r->env);
    memset(&r->hook, 0, sizeof r->hook);
    r->route.n = 0;
    r->domain = -1;
    r->state = RS_QUEUED;
    r->worker = NULL;
    r->attempt = 0;
    r->progress_count = 0;
    r->client = NULL;
    r->orch_token = 0;
    r->pin = NULL;
    r->deferred = false;
    memset(&r->qn, 0, sizeof r->qn);
    dnode_init(&r->dn);
    r->free_next = NULL;
    return r;
}

/* Forget a request: out of the map, queue, heap and worker; memory back to
   the free list. Does NOT reply. */
static void s_req_release(broker_t *b, breq_t *r)
{
    if (r->key_len)
        idmap_del(&b->reqs, r->key, r->key_len);
    if (r->domain >= 0)
        queue_remove(&b->domains[r->domain].queue, &r->qn);
    dheap_remove(&b->deadlines, &r->dn);
    if (r->worker) {
        worker_job_del(r->worker, r);
        if (r->worker->in_flight > 0)
            r->worker->in_flight--;
        r->worker = NULL;
    }
    if (r->client) {
        r->client->in_flight--;
        r->client = NULL;
    }
    hooks_request_done(&r->hook);
    sdx_envelope_clear(&r->env);
    b->live_requests--;
    r->free_next = b->free_list;
    b->free_list = r;
}

static double s_ms_since(int64_t t_us)
{
    return (double)(sdx_clock_mono_us() - t_us) / 1000.0;
}

static void s_log_done(broker_t *b, const breq_t *r, const char *outcome, const char *field,
                       const char *detail)
{
    s_log_final(b, r->env.request_id, r->env.message_type, r->worker ? r->worker->id : NULL,
                r->attempt, s_ms_since(r->t_accept_us), outcome, field, detail);
}

/* Broker-side timing block for a reply (stack values in the caller's
   svmap; `vals` must hold 4 entries). */
static void s_timing_add(svmap_t *t, sdx_value_t *vals, const breq_t *r)
{
    int64_t now = sdx_clock_mono_us();
    vals[0] = s_sv_float((double)(now - r->t_accept_us) / 1000.0);
    vals[1] = s_sv_float(r->attempt ? (double)(r->t_dispatch_us - r->t_accept_us) / 1000.0 : 0.0);
    vals[2] = s_sv_int(r->attempt);
    vals[3] = s_sv_str(r->worker ? r->worker->id : "");
    svmap_add(t, "total_ms", &vals[0]);
    svmap_add(t, "queued_ms", &vals[1]);
    svmap_add(t, "attempts", &vals[2]);
    if (r->worker)
        svmap_add(t, "worker", &vals[3]);
}

static void s_internal_result(broker_t *b, breq_t *r, bool ok, sdx_value_t *data,
                              const sdx_value_t *err);

/* Final error reply from the broker for a request it holds, then release
   it (or, for a running request, keep the slot until the worker answers:
   see s_cancel_running). */
static void s_finish_error(broker_t *b, breq_t *r, sdx_error_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_finish_error(broker_t *b, breq_t *r, sdx_error_t code, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    sdx_value_t *err = sdx_error_value(code, NULL, msg);
    if (r->orch_token) {
        s_internal_result(b, r, false, NULL, err);
        sdx_value_destroy(&err);
        goto counted;
    }
    svmap_t timing, reply;
    sdx_value_t tv[4];
    svmap_init(&timing);
    s_timing_add(&timing, tv, r);
    sdx_value_t rid = sdx_envelope_id_echo(&r->env), mt = s_sv_str(r->env.message_type),
                succ = s_sv_bool(false);
    svmap_init(&reply);
    svmap_add(&reply, "request_id", &rid);
    svmap_add(&reply, "message_type", &mt);
    svmap_add(&reply, "success", &succ);
    if (err)
        svmap_add(&reply, "error", err);
    svmap_add(&reply, "timing", &timing.map);
    s_send_tree(b, &r->route, &reply.map, r->env.encoding, &r->hook);
    sdx_value_destroy(&err);
counted:
    if (code == SDX_ERR_TIMEOUT)
        b->st.timeouts++;
    else if (code == SDX_ERR_WORKER_LOST)
        b->st.lost++;
    b->st.failed++;
    s_log_done(b, r, sdx_error_name(code), NULL, msg);
    s_event(b, "request.done", r, sdx_error_name(code), s_ms_since(r->t_accept_us), NULL);
}

/* ------------------------------------------------------------- fan-outs

   One client request answered from several workers: each gets its own
   internal request, pinned to it (beside its capacity), and the client's
   reply waits for the last answer or deadline.
   - system.status refresh: true: <domain>.status to every worker (the
     runtime answers status on its I/O thread), deadline data.deadline_ms
     (1000); the workers that did not answer are marked.
   - model.load / model.unload: <domain>.load_model / unload_model to the
     workers that hold weights (inference, conditioning; data.domains
     narrows, the gpu hint picks the GPU), deadline the request's
     timeout_ms; the reply lists what each worker did. The model worker
     keeps the catalogue; the weights live in those workers. */

typedef enum { FAN_STATUS, FAN_MODEL } fan_kind_t;

typedef struct {
    char wid[128], key[KEY_MAX];
    int domain;
    bool done;
    sdx_value_t *answer; /* the status data, or {error} */
} fan_entry_t;

typedef struct fanout {
    uint64_t token;
    fan_kind_t kind;
    breq_t *origin; /* the client's request, answered at the end */
    fan_entry_t *e;
    int n, got;
    bool starting;
    int64_t t0_us, deadline_ms;
    struct fanout *next;
} fanout_t;

static sdx_value_t *s_sys_status(broker_t *b, const sdx_envelope_t *env, sdx_fault_t *f);
static int s_admit(broker_t *b, breq_t *r, int d, client_t *client, char *key_out, size_t key_len,
                   sdx_fault_t *f);
static int s_domain_index(const broker_t *b, const char *name);

static void s_fanout_free(fanout_t *fo)
{
    for (int i = 0; i < fo->n; i++)
        sdx_value_destroy(&fo->e[i].answer);
    free(fo->e);
    free(fo);
}

static sdx_value_t *s_fanout_model_data(broker_t *b, fanout_t *fo, sdx_fault_t *f);

static void s_fanout_finish(broker_t *b, fanout_t *fo)
{
    for (fanout_t **p = &b->fanouts; *p; p = &(*p)->next)
        if (*p == fo) {
            *p = fo->next;
            break;
        }
    breq_t *r = fo->origin;
    sdx_fault_t f;
    sdx_fault_clear(&f);
    if (fo->kind == FAN_MODEL) {
        sdx_value_t *d = s_fanout_model_data(b, fo, &f);
        sdx_value_t rid = sdx_envelope_id_echo(&r->env);
        if (d) {
            sdx_value_t *reply = sdx_reply_ok(r->env.request_id, r->env.message_type, d,
                                              s_local_timing(r->t_accept_us));
            if (reply && sdx_reply_echo_id(reply, &r->env) == 0)
                s_send_tree(b, &r->route, reply, r->env.encoding, &r->hook);
            sdx_value_destroy(&reply);
            b->st.ok++;
            s_log_final(b, r->env.request_id, r->env.message_type, "broker", 0,
                        s_ms_since(r->t_accept_us), "ok", NULL, NULL);
        } else {
            s_reply_fault_raw(b, &r->route, r->env.encoding, &rid, r->env.message_type, &f,
                              &r->hook, r->t_accept_us);
        }
        s_req_release(b, r);
        s_fanout_free(fo);
        return;
    }
    sdx_value_t *d = s_sys_status(b, &r->env, &f);
    sdx_value_t *doms = sdx_map_get(d, "domains");
    sdx_value_t *missing = sdx_value_array_new();
    int answered = 0;
    for (int i = 0; i < fo->n; i++) {
        fan_entry_t *e = &fo->e[i];
        bool ok = e->answer && !sdx_map_get(e->answer, "error");
        answered += ok;
        if (!ok && missing)
            sdx_array_push(missing, sdx_value_str_new(e->wid));
        /* the worker's entry in domains.<d>.worker_list gets what it said */
        const sdx_value_t *wl =
            e->domain >= 0
                ? sdx_map_get(sdx_map_get(doms, b->domains[e->domain].name), "worker_list")
                : NULL;
        for (size_t k = 0; k < sdx_array_len(wl); k++) {
            sdx_value_t *wm = sdx_array_at(wl, k);
            if (strcmp(sdx_map_str(wm, "worker_id", ""), e->wid) != 0)
                continue;
            sdx_map_set_bool(wm, "answered", ok);
            if (e->answer)
                sdx_map_set(wm, ok ? "live" : "refresh_error", e->answer);
            else
                sdx_map_set(wm, "refresh_error",
                            sdx_error_value(SDX_ERR_WORKER_LOST, NULL, "no answer"));
            e->answer = NULL;
            if (!ok)
                sdx_map_set_str(wm, "health", "not_answering");
        }
    }
    sdx_value_t *rf = sdx_value_map_new();
    if (rf && d) {
        sdx_map_set_int(rf, "asked", fo->n);
        sdx_map_set_int(rf, "answered", answered);
        sdx_map_set(rf, "missing", missing ? missing : sdx_value_array_new());
        missing = NULL;
        sdx_map_set_int(rf, "deadline_ms", fo->deadline_ms);
        sdx_map_set_float(rf, "ms", s_ms_since(fo->t0_us));
        sdx_map_set(d, "refresh", rf);
        rf = NULL;
    }
    sdx_value_destroy(&rf);
    sdx_value_destroy(&missing);
    sdx_value_t rid = sdx_envelope_id_echo(&r->env);
    if (d) {
        sdx_value_t *reply =
            sdx_reply_ok(r->env.request_id, r->env.message_type, d, s_local_timing(r->t_accept_us));
        if (reply && sdx_reply_echo_id(reply, &r->env) == 0)
            s_send_tree(b, &r->route, reply, r->env.encoding, &r->hook);
        sdx_value_destroy(&reply);
        b->st.ok++;
        s_log_final(b, r->env.request_id, r->env.message_type, "broker", 0,
                    s_ms_since(r->t_accept_us), "ok", NULL, NULL);
    } else {
        if (f.code == SDX_ERR_NONE)
            sdx_fault_set(&f, SDX_ERR_INTERNAL, NULL, "out of memory");
        s_reply_fault_raw(b, &r->route, r->env.encoding, &rid, r->env.message_type, &f, &r->hook,
                          r->t_accept_us);
    }
    s_req_release(b, r);
    s_fanout_free(fo);
}

static void s_fanout_result(broker_t *b, uint64_t token, const breq_t *r, bool ok,
                            sdx_value_t *data, const sdx_value_t *err)
{
    fanout_t *fo = b->fanouts;
    while (fo && fo->token != token)
        fo = fo->next;
    for (int i = 0; fo && i < fo->n; i++) {
        fan_entry_t *e = &fo->e[i];
        if (e->done || strcmp(e->key, r->key) != 0)
            continue;
        e->done = true;
        if (ok) {
            e->answer = data;
            data = NULL;
        } else {
            e->answer = sdx_value_map_new();
            if (e->answer)
                sdx_map_set(e->answer, "error", err ? sdx_value_clone(err) : sdx_value_nil_new());
        }
        if (++fo->got == fo->n && !fo->starting)
            s_fanout_finish(b, fo);
        break;
    }
    sdx_value_destroy(&data);
}

/* Ask the workers for which want(b, w, ud) holds: <domain>.<verb> with a
   copy of data (NULL: {}), deadline dl ms. 0: r belongs to the fan-out now
   (answered by s_fanout_finish), -1: out of memory (answer r at once). */
static int s_fanout_start(broker_t *b, breq_t *r, fan_kind_t kind, const char *verb,
                          const sdx_value_t *data, bool (*want)(broker_t *, worker_t *, void *),
                          void *ud, int64_t dl)
{
    fanout_t *fo = calloc(1, sizeof *fo);
    if (!fo || (b->reg.len && !(fo->e = calloc(b->reg.len, sizeof *fo->e)))) {
        free(fo);
        return -1;
    }
    fo->token = FANOUT_BIT | ++b->fanout_seq;
    fo->kind = kind;
    fo->origin = r;
    fo->t0_us = sdx_clock_mono_us();
    fo->deadline_ms = dl;
    fo->starting = true;
    r->deferred = true;
    fo->next = b->fanouts;
    b->fanouts = fo;
    size_t nw = b->reg.len;
    worker_t **ws = nw ? malloc(nw * sizeof *ws) : NULL;
    if (nw && !ws)
        nw = 0;
    if (ws) /* a copy: a dispatch failure may remove a worker from the registry */
        memcpy(ws, b->reg.items, nw * sizeof *ws);
    for (size_t k = 0; k < nw; k++) {
        worker_t *w = ws[k];
        if (!want(b, w, ud))
            continue;
        fan_entry_t *e = &fo->e[fo->n++];
        snprintf(e->wid, sizeof e->wid, "%s", w->id);
        e->domain = w->domain;
        sdx_fault_t f;
        sdx_fault_clear(&f);
        sdx_value_t *root = sdx_value_map_new();
        char mt[SDX_TYPE_MAX], rid[SDX_MDP_MAX_ID + 1];
        snprintf(mt, sizeof mt, "%s.%s", b->domains[w->domain].name, verb);
        snprintf(rid, sizeof rid, "%.40s.%" PRIu64 ".%.60s", r->env.request_id,
                 fo->token & ~FANOUT_BIT, w->id);
        breq_t *q = root ? s_req_alloc(b) : NULL;
        if (q) {
            b->live_requests++;
            q->t_accept_us = sdx_clock_mono_us();
            sdx_map_set_str(root, "message_type", mt);
            sdx_map_set_str(root, "request_id", rid);
            sdx_map_set_int(root, "timeout_ms", dl);
            sdx_map_set_str(root, "priority",
                            kind == FAN_STATUS ? "critical" : sdx_priority_name(r->env.priority));
            sdx_map_set(root, "data", data ? sdx_value_clone(data) : sdx_value_map_new());
        }
        if (!q || sdx_envelope_parse(&q->env, &root, SDX_ENC_MSGPACK, &f) != 0) {
            sdx_value_destroy(&root);
            if (q)
                s_req_release(b, q);
            e->done = true;
            fo->got++;
            continue;
        }
        q->orch_token = fo->token;
        q->pin = w;
        /* the key before dispatch: a synchronous failure finds its entry */
        snprintf(e->key, sizeof e->key, "%s", rid);
        if (s_admit(b, q, w->domain, NULL, e->key, sizeof e->key, &f) != 0) {
            q->orch_token = 0;
            s_req_release(b, q);
            if (!e->done) {
                e->done = true;
                e->answer = sdx_value_map_new();
                if (e->answer)
                    sdx_map_set(e->answer, "error", sdx_fault_value(&f));
                fo->got++;
            }
        }
    }
    free(ws);
    fo->starting = false;
    if (fo->got == fo->n)
        s_fanout_finish(b, fo);
    return 0;
}

static bool s_want_all(broker_t *b, worker_t *w, void *ud)
{
    (void)b;
    (void)ud;
    return !w->draining;
}

/* system.status with refresh: true. */
static int s_status_refresh(broker_t *b, breq_t *r)
{
    int64_t dl = sdx_map_int(r->env.data, "deadline_ms", 1000);
    dl = dl < 10 ? 10 : dl > 30000 ? 30000 : dl;
    return s_fanout_start(b, r, FAN_STATUS, "status", NULL, s_want_all, NULL, dl);
}

/* The domains a model.load goes to. */
typedef struct {
    bool domain[MAX_DOMAINS];
    int gpu;
} model_want_t;

static bool s_want_model(broker_t *b, worker_t *w, void *ud)
{
    const model_want_t *mw = ud;
    (void)b;
    return !w->draining && w->domain >= 0 && mw->domain[w->domain] &&
           (mw->gpu < 0 || w->gpu == mw->gpu);
}

/* model.load / model.unload {model_name, precision?, domains?}: 0 when the
   fan-out holds r, -1 with f when it is refused at once. */
static int s_model_fanout(broker_t *b, breq_t *r, sdx_fault_t *f)
{
    const char *name = sdx_map_str(r->env.data, "model_name", NULL);
    if (!name || !*name) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "model_name",
                      "%s needs data.model_name: a checkpoint name from model.list",
                      r->env.message_type);
        return -1;
    }
    model_want_t mw = {.gpu = r->env.gpu};
    const sdx_value_t *doms = sdx_map_get(r->env.data, "domains");
    static const char *const holders[] = {"inference", "conditioning"};
    if (doms && doms->type != SDX_ARRAY) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "domains",
                      "domains must be an array of inference and/or conditioning");
        return -1;
    }
    for (size_t i = 0; i < (doms ? sdx_array_len(doms) : 2); i++) {
        const sdx_value_t *dv = doms ? sdx_array_at(doms, i) : NULL;
        const char *dn = doms ? (dv && dv->type == SDX_STR ? dv->u.str.ptr : "") : holders[i];
        int d = s_domain_index(b, dn);
        if (d < 0 || (strcmp(dn, "inference") != 0 && strcmp(dn, "conditioning") != 0)) {
            sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "domains",
                          "domains[%zu] \"%s\": models are held by inference and conditioning "
                          "workers",
                          i, dn);
            return -1;
        }
        mw.domain[d] = true;
    }
    int asked = 0;
    for (size_t k = 0; k < b->reg.len; k++)
        asked += s_want_model(b, b->reg.items[k], &mw);
    if (!asked) {
        sdx_fault_set(f, SDX_ERR_NO_WORKER, r->env.gpu >= 0 ? "gpu" : NULL,
                      "no inference or conditioning worker%s is registered to %s %s",
                      r->env.gpu >= 0 ? " on that gpu" : "",
                      strcmp(r->env.message_type, "model.load") == 0 ? "load" : "unload", name);
        return -1;
    }
    sdx_value_t *data = sdx_value_map_new();
    if (!data)
        return -1;
    sdx_map_set_str(data, "model_name", name);
    const sdx_value_t *prec = sdx_map_get(r->env.data, "precision");
    if (prec)
        sdx_map_set(data, "precision", sdx_value_clone(prec));
    int64_t dl = r->env.timeout_ms > 0 ? r->env.timeout_ms : b->cfg.default_timeout_ms;
    if (dl > b->cfg.max_timeout_ms)
        dl = b->cfg.max_timeout_ms;
    const char *verb =
        strcmp(r->env.message_type, "model.load") == 0 ? "load_model" : "unload_model";
    int rc = s_fanout_start(b, r, FAN_MODEL, verb, data, s_want_model, &mw, dl);
    sdx_value_destroy(&data);
    if (rc != 0)
        sdx_fault_set(f, SDX_ERR_INTERNAL, NULL, "out of memory");
    return rc;
}

/* The model.load / model.unload reply: what each worker did. All failed:
   the first worker's error, naming the worker. */
static sdx_value_t *s_fanout_model_data(broker_t *b, fanout_t *fo, sdx_fault_t *f)
{
    sdx_value_t *d = sdx_value_map_new(), *list = sdx_value_array_new();
    if (!d || !list) {
        sdx_value_destroy(&d);
        sdx_value_destroy(&list);
        sdx_fault_set(f, SDX_ERR_INTERNAL, NULL, "out of memory");
        return NULL;
    }
    int ok = 0, failed = 0;
    const fan_entry_t *first_bad = NULL;
    for (int i = 0; i < fo->n; i++) {
        fan_entry_t *e = &fo->e[i];
        const sdx_value_t *err = e->answer ? sdx_map_get(e->answer, "error") : NULL;
        bool good = e->answer && !err;
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            continue;
        sdx_map_set_str(m, "worker_id", e->wid);
        sdx_map_set_str(m, "domain", e->domain >= 0 ? b->domains[e->domain].name : "?");
        sdx_map_set_bool(m, "ok", good);
        if (good) {
            sdx_map_set(m, "result", e->answer);
            e->answer = NULL;
            ok++;
        } else {
            sdx_map_set(m, "error",
                        err ? sdx_value_clone(err)
                            : sdx_error_value(SDX_ERR_TIMEOUT, NULL, "no answer"));
            failed++;
            if (!first_bad)
                first_bad = e;
        }
        sdx_array_push(list, m);
    }
    if (ok == 0 && first_bad) {
        const sdx_value_t *err = first_bad->answer ? sdx_map_get(first_bad->answer, "error") : NULL;
        bool known = false;
        sdx_error_t code = sdx_error_parse(sdx_map_str(err, "code", "timeout"), &known);
        sdx_fault_set(f, known ? code : SDX_ERR_INTERNAL, sdx_map_str(err, "field", NULL),
                      "%s on %s: %s", fo->origin->env.message_type, first_bad->wid,
                      sdx_map_str(err, "message", "no answer before the deadline"));
        sdx_value_destroy(&d);
        sdx_value_destroy(&list);
        return NULL;
    }
    sdx_map_set_str(d, "model_name", sdx_map_str(fo->origin->env.data, "model_name", ""));
    sdx_map_set_str(d, "operation",
                    strcmp(fo->origin->env.message_type, "model.load") == 0 ? "load" : "unload");
    sdx_map_set_int(d, "asked", fo->n);
    sdx_map_set_int(d, "succeeded", ok);
    sdx_map_set_int(d, "failed", failed);
    sdx_map_set_float(d, "ms", s_ms_since(fo->t0_us));
    sdx_map_set(d, "workers", list);
    return d;
}

static void s_internal_result(broker_t *b, breq_t *r, bool ok, sdx_value_t *data,
                              const sdx_value_t *err)
{
    uint64_t tok = r->orch_token;
    r->orch_token = 0;
    if (tok & FANOUT_BIT)
        s_fanout_result(b, tok, r, ok, data, err);
    else
        orch_result(b->orch, tok, ok, data, err, r->worker ? r->worker->id : NULL);
}

/* ------------------------------------------------------------- dispatch */

static int s_dispatch(broker_t *b, breq_t *r, worker_t *w)
{
    r->attempt++;
    r->state = RS_RUNNING;
    r->worker = w;
    r->t_dispatch_us = sdx_clock_mono_us();
    if (worker_job_add(w, r) != 0) {
        r->worker = NULL;
        return -1;
    }
    registry_charge(&b->reg, w);

    /* REQUEST body, built on the stack around the borrowed data tree. */
    svmap_t body;
    svmap_init(&body);
    sdx_value_t empty = {.type = SDX_MAP};
    int64_t remaining = r->deadline_unix_ms - sdx_clock_unix_ms();
    sdx_value_t v_mt = s_sv_str(r->env.message_type), v_id = s_sv_str(r->key),
                v_prio = s_sv_str(sdx_priority_name(r->env.priority)),
                v_to = s_sv_int(remaining > 0 ? remaining : 1),
                v_dl = s_sv_int(r->deadline_unix_ms), v_att = s_sv_int(r->attempt),
                v_stream = s_sv_bool(r->env.stream), v_cid = s_sv_str(r->env.request_id),
                v_sid = s_sv_str(r->env.session_id), v_gpu = s_sv_int(r->env.gpu);
    svmap_add(&body, "message_type", &v_mt);
    svmap_add(&body, "request_id", &v_id);
    svmap_add(&body, "data", r->env.data ? r->env.data : &empty);
    svmap_add(&body, "priority", &v_prio);
    svmap_add(&body, "timeout_ms", &v_to);
    svmap_add(&body, "deadline_ms", &v_dl);
    svmap_add(&body, "attempt", &v_att);
    svmap_add(&body, "stream", &v_stream);
    if (strcmp(r->key, r->env.request_id) != 0)
        svmap_add(&body, "client_request_id", &v_cid);
    if (r->env.session_id[0])
        svmap_add(&body, "session_id", &v_sid);
    if (r->env.gpu >= 0)
        svmap_add(&body, "gpu", &v_gpu);
    uint8_t *buf;
    size_t len;
    if (sdx_msgpack_encode(&body.map, &buf, &len) != 0)
        return -1;
    if (sdx_mdp_send_take(b->back, w->identity, w->identity_len, SDX_MDP_REQUEST, r->key, buf, len,
                          true) != 0) {
        log_error("%s: cannot send REQUEST to %s: %s", r->key, w->id, zmq_strerror(errno));
        return -1;
    }
    log_debug("%s -> %s (attempt %d)", r->key, w->id, r->attempt);
    s_event(b, "request.dispatched", r, NULL, 0, NULL);
    return 0;
}

/* Hand queued requests of a domain to workers with free slots. */
static void s_pump(broker_t *b, int d)
{
    queue_t *q = &b->domains[d].queue;
    int scanned = 0;
    for (qnode_t *n = queue_first(q); n && scanned < 4096; scanned++) {
        qnode_t *next = queue_next(q, n);
        breq_t *r = s_from_qn(n);
        worker_t *w = registry_pick(&b->reg, d, r->env.gpu, r->env.model);
        if (w) {
            queue_remove(q, n);
            if (s_dispatch(b, r, w) != 0) {
                s_finish_error(b, r, SDX_ERR_INTERNAL, "dispatch to %s failed", w->id);
                s_req_release(b, r);
            }
        } else if (!registry_pick(&b->reg, d, -1, NULL)) {
            break; /* no free slot anywhere in the domain */
        }
        n = next;
    }
}

/* A running request whose deadline passed: answer timeout now, CANCEL the
   worker, keep its slot busy until it replies or the grace ends. */
static void s_cancel_running(broker_t *b, breq_t *r, sdx_error_t code, const char *why)
{
    worker_t *w = r->worker;
    if (w)
        sdx_mdp_send(b->back, w->identity, w->identity_len, SDX_MDP_CANCEL, r->key, NULL, true);
    s_finish_error(b, r, code, "%s", why);
    r->state = RS_CANCELLING;
    if (b->cfg.cancel_grace_ms <= 0 || !w ||
        dheap_set(&b->deadlines, &r->dn, sdx_clock_mono_ms() + b->cfg.cancel_grace_ms) != 0) {
        int d = r->domain;
        s_req_release(b, r);
        if (d >= 0)
            s_pump(b, d);
    }
}

/* Oldest accepted first. s_worker_lost takes jobs from the end and puts
   each at the front of its queue, so the oldest ends up first again. */
static int s_oldest_first(const void *a, const void *b)
{
    const breq_t *x = *(breq_t *const *)a, *y = *(breq_t *const *)b;
    return x->t_accept_us < y->t_accept_us ? -1 : x->t_accept_us > y->t_accept_us ? 1 : 0;
}

/* The worker is gone: every request in its slots goes back to the front of
   its queue (at most max_retries times), in acceptance order; the rest fail
   with worker_lost. */
static void s_worker_lost(broker_t *b, worker_t *w, const char *why)
{
    char hex[64];
    int d = w->domain;
    sdx_log(w->njobs ? SDX_LOG_WARN : SDX_LOG_INFO,
            "worker %s (%s, %s) %s: %s; %zu request(s) in flight", w->id,
            d >= 0 ? b->domains[d].name : "?",
            s_hex_id(w->identity, w->identity_len, hex, sizeof hex), w->njobs ? "lost" : "gone",
            why, w->njobs);
    s_worker_event(b, "worker.lost", w, why);
    {
        unsigned k = b->nlost++ % (sizeof b->lost / sizeof b->lost[0]);
        snprintf(b->lost[k].id, sizeof b->lost[k].id, "%s", w->id);
        snprintf(b->lost[k].domain, sizeof b->lost[k].domain, "%s",
                 d >= 0 ? b->domains[d].name : "?");
        snprintf(b->lost[k].why, sizeof b->lost[k].why, "%s", why);
        b->lost[k].gpu = w->gpu;
        b->lost[k].at_unix_ms = sdx_clock_unix_ms();
    }
    if (w->njobs > 1) /* jobs[] order is not dispatch order (swap removal) */
        qsort(w->jobs, w->njobs, sizeof *w->jobs, s_oldest_first);
    while (w->njobs) {
        breq_t *r = w->jobs[w->njobs - 1];
        w->njobs--;
        r->worker = NULL;
        if (w->in_flight > 0)
            w->in_flight--;
        if (r->state == RS_CANCELLING) {
            s_req_release(b, r);
            continue;
        }
        if (r->pin) { /* it was for this worker alone */
            r->pin = NULL;
            s_finish_error(b, r, SDX_ERR_WORKER_LOST, "worker %s was lost (%s)", w->id, why);
            s_req_release(b, r);
            continue;
        }
        if (r->attempt <= b->cfg.max_retries) {
            b->st.retries++;
            r->state = RS_QUEUED;
            queue_push_front(&b->domains[r->domain].queue, &r->qn, (int)r->env.priority);
            log_info("%s %s: worker %s lost, re-queued (attempt %d of %" PRId64 ")",
                     r->env.request_id, r->env.message_type, w->id, r->attempt,
                     b->cfg.max_retries + 1);
        } else {
            s_finish_error(b, r, SDX_ERR_WORKER_LOST,
                           "worker %s was lost (%s) and the request was already tried %d times",
                           w->id, why, r->attempt);
            s_req_release(b, r);
        }
    }
    registry_remove(&b->reg, w);
    if (d >= 0)
        s_pump(b, d);
}

/* -------------------------------------------------- broker-side handlers */

typedef sdx_value_t *(*sys_fn)(broker_t *b, const sdx_envelope_t *env, sdx_fault_t *f);

/* The dialect state of the request s_handle_local is answering (its
   handlers shape C# DTO fields by it). */
static const hook_state_t *s_cur_hook;

static sdx_value_t *s_sys_ping(broker_t *b, const sdx_envelope_t *env, sdx_fault_t *f)
{
    (void)b;
    (void)env;
    (void)f;
    sdx_value_t *d = sdx_value_map_new();
    if (d) {
        sdx_map_set_bool(d, "pong", true);
        sdx_map_set_int(d, "time_ms", sdx_clock_unix_ms());
    }
    return d;
}

static sdx_value_t *s_sys_status(broker_t *b, const sdx_envelope_t *env, sdx_fault_t *f)
{
    (void)env;
    (void)f;
    sdx_value_t *d = sdx_value_map_new();
    if (!d)
        return NULL;
    sdx_map_set_str(d, "service", "sdxl-broker");
    sdx_map_set_str(d, "version", "0.1.0");
    sdx_map_set_str(d, "protocol", SDX_MDP_PROTOCOL);
    sdx_map_set_int(d, "pid", getpid());
    sdx_map_set_float(d, "uptime_s", (double)(sdx_clock_mono_ms() - b->started_ms) / 1000.0);
    sdx_map_set_int(d, "started_ms", b->started_unix_ms);
    sdx_value_t *ep = sdx_value_map_new();
    if (ep) {
        sdx_map_set_str(ep, "frontend", b->cfg.frontend);
        sdx_map_set_str(ep, "backend", b->cfg.backend);
        sdx_map_set_str(ep, "events", b->pub ? b->cfg.events : "");
        sdx_map_set(d, "endpoints", ep);
    }
    sdx_value_t *evs = sdx_value_map_new();
    if (evs) {
        sdx_map_set_bool(evs, "enabled", b->pub != NULL);
        sdx_map_set_int(evs, "subscriptions", b->subscriptions);
        sdx_map_set(d, "events", evs);
    }
    sdx_value_t *cv = sdx_value_map_new();
    if (cv) {
        uint64_t allowed = 0, refused = 0;
        sdx_zap_counts(b->zap, &allowed, &refused);
        sdx_map_set_bool(cv, "enabled", b->zap != NULL);
        sdx_map_set_int(cv, "handshakes_allowed", (int64_t)allowed);
        sdx_map_set_int(cv, "handshakes_refused", (int64_t)refused);
        sdx_map_set(d, "curve", cv);
    }
    sdx_value_t *rq = sdx_value_map_new();
    if (rq) {
        sdx_map_set_int(rq, "accepted", (int64_t)b->st.accepted);
        sdx_map_set_int(rq, "succeeded", (int64_t)b->st.ok);
        sdx_map_set_int(rq, "failed", (int64_t)b->st.failed);
        sdx_map_set_int(rq, "timeouts", (int64_t)b->st.timeouts);
        sdx_map_set_int(rq, "retries", (int64_t)b->st.retries);
        sdx_map_set_int(rq, "worker_lost", (int64_t)b->st.lost);
        sdx_map_set_int(rq, "rejected", (int64_t)b->st.rejected);
        sdx_map_set_int(rq, "late_replies", (int64_t)b->st.late_replies);
        sdx_map_set_int(rq, "resumed", (int64_t)b->st.resumed);
        sdx_map_set_int(rq, "broker_stalls", (int64_t)b->st.stalls);
        /* minus this status request itself */
        sdx_map_set_int(rq, "in_broker", (int64_t)b->live_requests - 1);
        sdx_map_set(d, "requests", rq);
    }
    sdx_value_t *doms = sdx_value_map_new();
    int total_workers = 0;
    int64_t now = sdx_clock_mono_ms();
    int64_t dead_after = b->cfg.heartbeat_ms * b->cfg.liveness;
    sdx_value_t *gpus = sdx_value_array_new(), *hostmem = NULL;
    for (int i = 0; doms && i < b->ndomains; i++) {
        sdx_value_t *dm = sdx_value_map_new(), *wl = sdx_value_array_new();
        if (!dm || !wl) {
            sdx_value_destroy(&dm);
            sdx_value_destroy(&wl);
            break;
        }
        int nw = 0, cap = 0, inf = 0;
        for (size_t k = 0; k < b->reg.len; k++) {
            worker_t *w = b->reg.items[k];
            if (w->domain != i)
                continue;
            nw++;
            cap += w->capacity;
            inf += w->in_flight;
            sdx_value_t *wm = sdx_value_map_new();
            if (!wm)
                continue;
            int64_t ago = now - w->last_seen_ms;
            sdx_map_set_str(wm, "worker_id", w->id);
            sdx_map_set_str(wm, "health",
                            w->draining            ? "draining"
                            : ago > dead_after / 2 ? "late"
                                                   : "ok");
            sdx_map_set_int(wm, "last_heartbeat_ms_ago", ago);
            sdx_map_set_int(wm, "gpu", w->gpu);
            sdx_map_set_str(wm, "host", w->host);
            sdx_map_set_int(wm, "in_flight", w->in_flight);
            sdx_map_set_int(wm, "capacity", w->capacity);
            sdx_map_set_int(wm, "served", (int64_t)w->served);
            sdx_value_t *models = sdx_value_array_new();
            for (size_t m = 0; models && m < w->nmodels; m++)
                sdx_array_push(models, sdx_value_str_new(w->models[m]));
            if (models)
                sdx_map_set(wm, "models", models);
            sdx_array_push(wl, wm);
            /* GPUs and host memory as the device workers last reported them */
            const sdx_value_t *rg = w->report ? sdx_map_get(w->report, "gpus") : NULL;
            for (size_t g = 0; gpus && g < sdx_array_len(rg); g++) {
                sdx_value_t *c = sdx_value_clone(sdx_array_at(rg, g));
                if (c) {
                    sdx_map_set_str(c, "host", w->host);
                    sdx_map_set_str(c, "reported_by", w->id);
                    sdx_map_set_int(c, "reported_ms_ago", now - w->report_ms);
                    sdx_array_push(gpus, c);
                }
            }
            const sdx_value_t *rm = w->report ? sdx_map_get(w->report, "memory") : NULL;
            if (rm && !hostmem) {
                hostmem = sdx_value_clone(rm);
                if (hostmem)
                    sdx_map_set_str(hostmem, "host", w->host);
            }
        }
        total_workers += nw;
        sdx_map_set_str(dm, "handled_by", b->domains[i].by_broker ? "broker" : "worker");
        sdx_map_set_int(dm, "workers", nw);
        sdx_map_set_int(dm, "capacity", cap);
        sdx_map_set_int(dm, "in_flight", inf);
        sdx_map_set_int(dm, "queued", (int64_t)queue_len(&b->domains[i].queue));
        sdx_value_t *qp = sdx_value_map_new();
        for (int p = 0; qp && p < QUEUE_LEVELS; p++)
            sdx_map_set_int(qp, sdx_priority_name((sdx_priority_t)p),
                            (int64_t)b->domains[i].queue.len_level[p]);
        if (qp)
            sdx_map_set(dm, "queued_by_priority", qp);
        sdx_map_set(dm, "worker_list", wl);
        sdx_map_set(doms, b->domains[i].name, dm);
    }
    sdx_map_set_int(d, "workers", total_workers);
    if (doms)
        sdx_map_set(d, "domains", doms);
    if (gpus)
        sdx_map_set(d, "gpus", gpus);
    sdx_map_set(d, "host_memory", hostmem ? hostmem : sdx_value_nil_new());
    sdx_value_t *lost = sdx_value_array_new();
    size_t cap_lost = sizeof b->lost / sizeof b->lost[0];
    for (unsigned k = 0; lost && k < b->nlost && k < cap_lost; k++) {
        unsigned at = (b->nlost - 1 - k) % (unsigned)cap_lost; /* newest first */
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            break;
        sdx_map_set_str(m, "worker_id", b->lost[at].id);
        sdx_map_set_str(m, "domain", b->lost[at].domain);
        sdx_map_set_int(m, "gpu", b->lost[at].gpu);
        sdx_map_set_str(m, "reason", b->lost[at].why);
        sdx_map_set_int(m, "lost_ms", b->lost[at].at_unix_ms);
        sdx_array_push(lost, m);
    }
    if (lost)
        sdx_map_set(d, "lost_workers", lost);
    sdx_value_t *os_ = b->orch ? orch_status(b->orch) : NULL;
    if (os_)
        sdx_map_set(d, "orchestrator", os_);
    return d;
}

/* The Prometheus exposition of the broker's state now (malloc'd). */
static char *s_metrics_text(broker_t *b, size_t *len)
{
    metrics_domain_t doms[MAX_DOMAINS];
    memset(doms, 0, sizeof doms);
    for (int i = 0; i < b->ndomains; i++) {
        doms[i].name = b->domains[i].name;
        for (size_t k = 0; k < b->reg.len; k++) {
            const worker_t *w = b->reg.items[k];
            if (w->domain != i)
                continue;
            doms[i].workers++;
            doms[i].capacity += w->capacity;
            doms[i].in_flight += w->in_flight;
        }
        for (int p = 0; p < QUEUE_LEVELS && p < 4; p++)
            doms[i].queued[p] = b->domains[i].queue.len_level[p];
    }
    metrics_gauges_t g = {
        .uptime_s = (double)(sdx_clock_mono_ms() - b->started_ms) / 1000.0,
        .accepted = b->st.accepted,
        .rejected = b->st.rejected,
        .retries = b->st.retries,
        .worker_lost = b->st.lost,
        .timeouts = b->st.timeouts,
        .late_replies = b->st.late_replies,
        .in_broker = b->live_requests,
        .domains = doms,
        .ndomains = b->ndomains,
    };
    return metrics_render(b->metrics, &g, len);
}

/* system.metrics: the same text as GET /metrics, for clients without HTTP. */
static sdx_value_t *s_sys_metrics(broker_t *b, const sdx_envelope_t *env, sdx_fault_t *f)
{
    (void)env;
    (void)f;
    size_t len = 0;
    char *text = s_metrics_text(b, &len);
    sdx_value_t *d = text ? sdx_value_map_new() : NULL;
    if (d) {
        sdx_map_set_str(d, "format", "prometheus-text-0.0.4");
        sdx_map_set(d, "text", sdx_value_strn_new(text, len));
    }
    free(text);
    return d;
}

/* One HTTP request on the metrics STREAM socket: [id][bytes]. GET /metrics
   (or /) is answered with the exposition, anything else 404/405, and the
   connection is closed after the answer (HTTP/1.0 style). An empty frame is
   libzmq's connect/disconnect notice. Bytes past the first read are not
   needed: the request line comes first. */
static void s_http_one(broker_t *b)
{
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, b->http, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        return;
    }
    if (!zmq_msg_more(&id) || zmq_msg_recv(&body, b->http, 0) < 0 || zmq_msg_size(&body) == 0) {
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        return;
    }
    const char *req = zmq_msg_data(&body);
    size_t n = zmq_msg_size(&body);
    char line[128];
    size_t k = 0;
    while (k < n && k < sizeof line - 1 && req[k] != '\r' && req[k] != '\n')
        line[k] = req[k], k++;
    line[k] = '\0';
    char *text = NULL;
    size_t tlen = 0;
    const char *status = "404 Not Found", *ctype = "text/plain; charset=utf-8";
    if (strncmp(line, "GET ", 4) != 0) {
        status = "405 Method Not Allowed";
    } else if (!strncmp(line + 4, "/metrics ", 9) || !strncmp(line + 4, "/ ", 2) ||
               !strcmp(line + 4, "/metrics") || !strcmp(line + 4, "/")) {
        text = s_metrics_text(b, &tlen);
        status = text ? "200 OK" : "500 Internal Server Error";
        ctype = "text/plain; version=0.0.4; charset=utf-8";
    }
    const char *fallback = text ? NULL : status;
    char head[256];
    size_t blen = text ? tlen : strlen(fallback) + 1;
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      status, ctype, blen);
    size_t total = (size_t)hl + blen;
    char *out = malloc(total + 1); /* + the NUL snprintf writes after a fallback text */
    if (out) {
        memcpy(out, head, (size_t)hl);
        if (text)
            memcpy(out + hl, text, tlen);
        else
            snprintf(out + hl, blen + 1, "%s\n", fallback);
        /* a slow or gone scraper holds the broker at most ZMQ_SNDTIMEO
           (100 ms) per frame: then the answer is dropped (it retries) */
        if (zmq_send(b->http, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE) >= 0 &&
            zmq_send(b->http, out, total, 0) >= 0 &&
            zmq_send(b->http, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE) >= 0)
            zmq_send(b->http, "", 0, 0); /* an empty frame closes the connection */
    }
    free(out);
    free(text);
    zmq_msg_close(&id);
    zmq_msg_close(&body);
}

static sdx_value_t *s_sys_workers(broker_t *b, const sdx_envelope_t *env, sdx_fault_t *f)
{
    (void)f;
    const char *only = sdx_map_str(env->data, "domain", NULL);
    sdx_value_t *d = sdx_value_map_new();
    sdx_value_t *list = sdx_value_array_new();
    if (!d || !list) {
        sdx_value_destroy(&d);
        sdx_value_destroy(&list);
        return NULL;
    }
    int64_t now = sdx_clock_mono_ms();
    for (size_t k = 0; k < b->reg.len; k++) {
        worker_t *w = b->reg.items[k];
        if (only && strcmp(only, b->domains[w->domain].name) != 0)
            continue;
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            break;
        sdx_map_set_str(m, "worker_id", w->id);
        sdx_map_set_str(m, "domain", b->domains[w->domain].name);
        sdx_map_set_int(m, "gpu", w->gpu);
        sdx_map_set_int(m, "concurrency", w->concurrency);
        sdx_map_set_int(m, "prefetch", w->prefetch);
        sdx_map_set_int(m, "capacity", w->capacity);
        sdx_map_set_int(m, "in_flight", w->in_flight);
        sdx_map_set_int(m, "served", (int64_t)w->served);
        sdx_map_set_bool(m, "draining", w->draining);
        sdx_map_set_int(m, "pid", w->pid);
        sdx_map_set_str(m, "host", w->host);
        sdx_map_set_str(m, "version", w->version);
        sdx_map_set_int(m, "last_seen_ms_ago", now - w->last_seen_ms);
        sdx_map_set_float(m, "up_s", (double)(now - w->ready_ms) / 1000.0);
        sdx_value_t *models = sdx_value_array_new();
        for (size_t i = 0; models && i < w->nmodels; i++)
            sdx_array_push(models, sdx_value_str_new(w->models[i]));
        if (models)
            sdx_map_set(m, "models", models);
        sdx_array_push(list, m);
    }
    sdx_map_set_int(d, "count", (int64_t)sdx_array_len(list));
    sdx_map_set(d, "workers", list);
    return d;
}

/* system.cancel {request_id}: the request gets error `cancelled` (its
   worker a CANCEL); the caller gets {cancelled, state}. */
static sdx_value_t *s_sys_cancel(broker_t *b, const sdx_envelope_t *env, sdx_fault_t *f)
{
    const sdx_value_t *idv = sdx_map_get(env->data, "request_id");
    char id[KEY_MAX];
    if (idv && idv->type == SDX_INT)
        snprintf(id, sizeof id, "%" PRId64, idv->u.i);
    else if (idv && idv->type == SDX_STR && idv->u.str.len > 0 && idv->u.str.len < KEY_MAX)
        snprintf(id, sizeof id, "%s", idv->u.str.ptr);
    else {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "data.request_id",
                      "system.cancel needs data.request_id: the id of the request to cancel");
        return NULL;
    }
    breq_t *r = idmap_get(&b->reqs, id, strlen(id));
    if (!r) {
        sdx_fault_set(f, SDX_ERR_NOT_FOUND, "data.request_id",
                      "no request %s is queued or running (it may have finished)", id);
        return NULL;
    }
    const char *state = r->state == RS_QUEUED    ? "queued"
                        : r->state == RS_RUNNING ? "running"
                                                 : "finished";
    bool cancelled = r->state != RS_CANCELLING;
    char why[192];
    snprintf(why, sizeof why, "cancelled by system.cancel (request %s)", env->request_id);
    if (r->state == RS_QUEUED) {
        s_finish_error(b, r, SDX_ERR_CANCELLED, "%s", why);
        s_req_release(b, r);
    } else if (r->state == RS_RUNNING) {
        s_cancel_running(b, r, SDX_ERR_CANCELLED, why);
    }
    sdx_value_t *d = sdx_value_map_new();
    if (d) {
        sdx_map_set_str(d, "request_id", id);
        sdx_map_set_bool(d, "cancelled", cancelled);
        sdx_map_set_str(d, "state", state);
    }
    return d;
}

/* processing.*: the orchestrator answers at once (work it starts runs as
   internal requests). */
static sdx_value_t *s_processing(broker_t *b, const sdx_envelope_t *env, sdx_fault_t *f)
{
    orch_req_t rq = {.request_id = env->request_id,
                     .csharp = s_cur_hook && s_cur_hook->dialect == SDX_DIALECT_CSHARP,
                     .msgpack = env->encoding == SDX_ENC_MSGPACK,
                     .priority = (int)env->priority,
                     .timeout_ms = env->timeout_ms};
    sdx_value_t *v = orch_request(b->orch, env->message_type, env->data, &rq, f);
    orch_tick(b->orch); /* what it started (a session's first step) goes out now */
    return v;
}

static const struct {
    const char *type;
    sys_fn fn;
} s_sys_table[] = {
    {"system.cancel", s_sys_cancel}, {"system.metrics", s_sys_metrics}, {"system.ping", s_sys_ping},
    {"system.status", s_sys_status}, {"system.workers", s_sys_workers},
};

/* processing.* and system.*: answered here, at once. */
static void s_handle_local(broker_t *b, const route_t *rt, sdx_envelope_t *env, hook_state_t *hook,
                           int64_t t0_us)
{
    s_cur_hook = hook;
    sdx_fault_t f;
    sdx_fault_clear(&f);
    sdx_value_t rid = sdx_envelope_id_echo(env);
    sys_fn fn = NULL;
    for (size_t i = 0; i < sizeof s_sys_table / sizeof s_sys_table[0]; i++)
        if (strcmp(s_sys_table[i].type, env->message_type) == 0)
            fn = s_sys_table[i].fn;
    if (!fn && b->orch && orch_handles(env->message_type))
        fn = s_processing;
    if (!fn) {
        const sdx_catalog_msg_t *m = sdx_catalog_find(b->cat, env->message_type);
        if (m && !m->implemented)
            sdx_fault_set(&f, SDX_ERR_NOT_AVAILABLE, NULL,
                          "%s is planned but not available yet (see the catalogue in "
                          "proto/PROTOCOL.md)",
                          env->message_type);
        else
            sdx_fault_set(&f, SDX_ERR_UNKNOWN_MESSAGE_TYPE, "message_type",
                          "unknown message type %s (the %s domain has: see system.status / "
                          "proto/PROTOCOL.md)",
                          env->message_type, env->domain);
        s_reply_fault_raw(b, rt, env->encoding, &rid, env->message_type, &f, hook, t0_us);
        return;
    }
    sdx_value_t *data = fn(b, env, &f);
    if (!data) {
        if (f.code == SDX_ERR_NONE)
            sdx_fault_set(&f, SDX_ERR_INTERNAL, NULL, "out of memory");
        s_reply_fault_raw(b, rt, env->encoding, &rid, env->message_type, &f, hook, t0_us);
        return;
    }
    sdx_value_t *timing = s_local_timing(t0_us);
    sdx_value_t *reply = sdx_reply_ok(env->request_id, env->message_type, data, timing);
    if (reply && sdx_reply_echo_id(reply, env) != 0)
        sdx_value_destroy(&reply);
    if (reply)
        s_send_tree(b, rt, reply, env->encoding, hook);
    sdx_value_destroy(&reply);
    b->st.ok++;
    s_log_final(b, env->request_id, env->message_type, "broker", 0, s_ms_since(t0_us), "ok", NULL,
                NULL);
}

/* ------------------------------------------------------------- frontend */

static int s_domain_index(const broker_t *b, const char *name)
{
    for (int i = 0; i < b->ndomains; i++)
        if (strcmp(b->domains[i].name, name) == 0)
            return i;
    return -1;
}

/* One client message: route frames + one body frame. */
/* ------------------------------------------------------ per-client limits */

static bool s_client_limits(const broker_t *b)
{
    return b->cfg.client_max_in_flight > 0 || b->cfg.client_max_rps > 0;
}

/* The client of a route (its first frame: the ROUTER routing id), made on
   first sight; NULL when limits are off or out of memory (not limited). */
static client_t *s_client(broker_t *b, const route_t *rt, int64_t now_ms)
{
    if (!s_client_limits(b) || rt->n < 1 || rt->len[0] == 0 || rt->len[0] > ROUTE_BYTES)
        return NULL;
    client_t *c = idmap_get(&b->clients, rt->buf, rt->len[0]);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        memcpy(c->id, rt->buf, rt->len[0]);
        c->id_len = rt->len[0];
        c->tokens = (double)b->cfg.client_max_rps;
        c->refill_ms = now_ms;
        if (idmap_put(&b->clients, c->id, c->id_len, c) != 0) {
            free(c);
            return NULL;
        }
    }
    c->seen_ms = now_ms;
    return c;
}

/* The rate limit: a token bucket of client_max_rps tokens refilled at that
   rate. 0 when the request may pass (a token taken), -1 with f set. */
static int s_client_rate(const broker_t *b, client_t *c, int64_t now_ms, sdx_fault_t *f)
{
    if (!c || b->cfg.client_max_rps <= 0)
        return 0;
    double cap = (double)b->cfg.client_max_rps;
    c->tokens += (double)(now_ms - c->refill_ms) * cap / 1000.0;
    if (c->tokens > cap)
        c->tokens = cap;
    c->refill_ms = now_ms;
    if (c->tokens < 1.0) {
        sdx_fault_set(f, SDX_ERR_RATE_LIMITED, NULL,
                      "this client sent more than %" PRId64
                      " requests in the last second (client_max_rps); back off and retry",
                      b->cfg.client_max_rps);
        return -1;
    }
    c->tokens -= 1.0;
    return 0;
}

/* Forget idle clients (no request in the broker, not seen for a minute). */
static void s_clients_sweep(broker_t *b, int64_t now_ms)
{
    for (size_t i = 0; i < b->clients.cap; i++) {
        idmap_slot_t *sl = &b->clients.slots[i];
        if (sl->hash < 2)
            continue;
        client_t *c = sl->val;
        if (c->in_flight <= 0 && now_ms - c->seen_ms > 60000) {
            idmap_del(&b->clients, c->id, c->id_len);
            free(c);
        }
    }
}

/* Route a parsed, validated request of a worker domain d (-1: unknown): 0
   when the broker now holds it (queued or dispatched; a failure after this
   point is answered through s_finish_error), -1 with f filled when it is
   refused at once (the caller answers and releases it). key_out (may be
   NULL) receives the backend key. */
static int s_admit(broker_t *b, breq_t *r, int d, client_t *client, char *key_out, size_t key_len,
                   sdx_fault_t *f)
{
    int64_t t0 = r->t_accept_us;
    if (d < 0) {
        sdx_fault_set(f, SDX_ERR_UNKNOWN_MESSAGE_TYPE, "message_type",
                      "unknown message type %s: no domain \"%s\" (domains: device, model, "
                      "conditioning, scheduler, inference, postprocessing, processing, system)",
                      r->env.message_type, r->env.domain);
        return -1;
    }
    if (registry_count(&b->reg, d, false) == 0) {
        sdx_fault_set(f, SDX_ERR_NO_WORKER, NULL, "no %s worker is registered", b->domains[d].name);
        return -1;
    }
    if (r->env.gpu >= 0 && !registry_has_gpu(&b->reg, d, r->env.gpu)) {
        sdx_fault_set(f, SDX_ERR_NO_WORKER, "gpu", "no %s worker runs on gpu %d",
                      b->domains[d].name, r->env.gpu);
        return -1;
    }
    if ((int64_t)b->live_requests > b->cfg.max_requests) {
        sdx_fault_set(f, SDX_ERR_QUEUE_FULL, NULL,
                      "the broker holds %zu requests (max_requests); back off and retry",
                      b->live_requests - 1);
        return -1;
    }

    if (client && b->cfg.client_max_in_flight > 0 &&
        client->in_flight >= b->cfg.client_max_in_flight) {
        sdx_fault_set(f, SDX_ERR_RATE_LIMITED, NULL,
                      "this client has %" PRId64 " requests in the broker (client_max_in_flight); "
                      "wait for their replies and retry",
                      client->in_flight);
        return -1;
    }
    if (client) {
        client->in_flight++;
        r->client = client;
    }

    /* Backend key: the client's id when free, made unique otherwise. */
    size_t idl = strlen(r->env.request_id);
    memcpy(r->key, r->env.request_id, idl + 1);
    r->key_len = idl;
    if (idmap_get(&b->reqs, r->key, r->key_len)) {
        char suffix[24];
        int sl = snprintf(suffix, sizeof suffix, "#%" PRIu64, ++b->seq);
        size_t keep = idl + (size_t)sl < KEY_MAX ? idl : KEY_MAX - 1 - (size_t)sl;
        memcpy(r->key + keep, suffix, (size_t)sl + 1);
        r->key_len = keep + (size_t)sl;
    }
    r->domain = d;
    if (key_out)
        snprintf(key_out, key_len, "%s", r->key);
    if (idmap_put(&b->reqs, r->key, r->key_len, r) != 0) {
        r->key_len = 0;
        sdx_fault_set(f, SDX_ERR_INTERNAL, NULL, "out of memory");
        return -1;
    }
    int64_t timeout = r->env.timeout_ms > 0 ? r->env.timeout_ms : b->cfg.default_timeout_ms;
    if (timeout > b->cfg.max_timeout_ms)
        timeout = b->cfg.max_timeout_ms;
    r->deadline_unix_ms = sdx_clock_unix_ms() + timeout;
    if (dheap_set(&b->deadlines, &r->dn, t0 / 1000 + timeout) != 0) {
        sdx_fault_set(f, SDX_ERR_INTERNAL, NULL, "out of memory");
        return -1;
    }
    b->st.accepted++;
    s_event(b, "request.accepted", r, NULL, 0, NULL);

    worker_t *w = r->pin ? r->pin : registry_pick(&b->reg, d, r->env.gpu, r->env.model);
    if (w) {
        if (s_dispatch(b, r, w) != 0) {
            s_finish_error(b, r, SDX_ERR_INTERNAL, "dispatch to %s failed", w->id);
            s_req_release(b, r);
        }
        return 0;
    }
    queue_t *q = &b->domains[d].queue;
    if ((int64_t)queue_len(q) >= b->cfg.max_queue) {
        s_finish_error(b, r, SDX_ERR_QUEUE_FULL,
                       "all %s workers are busy and %zu requests are queued (max_queue)",
                       b->domains[d].name, queue_len(q));
        s_req_release(b, r);
        return 0;
    }
    queue_push(q, &r->qn, (int)r->env.priority);
    log_debug("%s queued in %s (%zu queued)", r->key, b->domains[d].name, queue_len(q));
    return 0;
}

/* ------------------------------------------- the orchestrator's host */

/* An internal request: built as a client's would be, validated by the same
   hook, routed by s_admit; its final reply goes to orch_result. */
static int s_orch_submit(void *ctx, uint64_t token, const char *message_type,
                         const char *request_id, const char *session_id, sdx_value_t *data,
                         int priority, int64_t timeout_ms, char *key, size_t key_len,
                         sdx_fault_t *f)
{
    broker_t *b = ctx;
    sdx_value_t *root = sdx_value_map_new();
    if (!root || sdx_map_set_str(root, "message_type", message_type) != 0 ||
        sdx_map_set_str(root, "request_id", request_id) != 0 ||
        sdx_map_set(root, "data", data ? data : sdx_value_map_new()) != 0) {
        if (!root)
            sdx_value_destroy(&data);
        sdx_value_destroy(&root);
        sdx_fault_set(f, SDX_ERR_INTERNAL, NULL, "out of memory");
        return -1;
    }
    sdx_map_set_str(root, "priority", sdx_priority_name((sdx_priority_t)priority));
    if (timeout_ms > 0)
        sdx_map_set_int(root, "timeout_ms", timeout_ms);
    if (session_id && *session_id)
        sdx_map_set_str(root, "session_id", session_id);
    breq_t *r = s_req_alloc(b);
    if (!r) {
        sdx_value_destroy(&root);
        sdx_fault_set(f, SDX_ERR_INTERNAL, NULL, "out of memory");
        return -1;
    }
    b->live_requests++;
    r->t_accept_us = sdx_clock_mono_us();
    if (sdx_envelope_parse(&r->env, &root, SDX_ENC_MSGPACK, f) != 0 ||
        hooks_validate(&r->env, &r->hook, f) != 0) {
        if (f->code == SDX_ERR_NONE)
            sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, NULL, "rejected by validation");
        s_req_release(b, r);
        return -1;
    }
    int d = s_domain_index(b, r->env.domain);
    if (d >= 0 && b->domains[d].by_broker) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "type",
                      "%s is answered by the broker: a workflow step or batch item must name a "
                      "worker domain",
                      r->env.message_type);
        s_req_release(b, r);
        return -1;
    }
    r->orch_token = token;
    if (s_admit(b, r, d, NULL, key, key_len, f) != 0) {
        r->orch_token = 0;
        s_req_release(b, r);
        return -1;
    }
    return 0;
}

static void s_orch_cancel(void *ctx, const char *key, const char *why)
{
    broker_t *b = ctx;
    breq_t *r = idmap_get(&b->reqs, key, strlen(key));
    if (!r)
        return;
    if (r->state == RS_QUEUED) {
        s_finish_error(b, r, SDX_ERR_CANCELLED, "%s", why);
        s_req_release(b, r);
    } else if (r->state == RS_RUNNING) {
        s_cancel_running(b, r, SDX_ERR_CANCELLED, why);
    }
}

static void s_orch_publish(void *ctx, const char *topic, const sdx_value_t *body)
{
    broker_t *b = ctx;
    if (!b->pub || b->subscriptions <= 0)
        return;
    uint8_t *buf;
    size_t len;
    if (sdx_msgpack_encode(body, &buf, &len) != 0)
        return;
    if (zmq_send(b->pub, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_send(b->pub, buf, len, ZMQ_DONTWAIT);
    free(buf);
}

static int s_orch_check(void *ctx, const char *message_type, bool csharp, sdx_value_t **data,
                        sdx_fault_t *f)
{
    (void)ctx;
    return hooks_check_data(message_type, csharp, data, f);
}

static int s_orch_workers(void *ctx, const char *domain)
{
    broker_t *b = ctx;
    int d = s_domain_index(b, domain);
    return d < 0 ? -1 : (int)registry_count(&b->reg, d, false);
}

/* From the device workers' heartbeats (their `gpus` and `memory`). */
static void s_orch_memory(void *ctx, int64_t *best_free, int64_t *best_total, double *max_frac)
{
    broker_t *b = ctx;
    *best_free = *best_total = -1;
    *max_frac = -1;
    double ram_frac = -1;
    for (size_t k = 0; k < b->reg.len; k++) {
        const worker_t *w = b->reg.items[k];
        if (!w->report)
            continue;
        const sdx_value_t *gpus = sdx_map_get(w->report, "gpus");
        for (size_t i = 0; i < sdx_array_len(gpus); i++) {
            const sdx_value_t *g = sdx_array_at(gpus, i);
            int64_t tot = sdx_map_int(g, "total", -1), fr = sdx_map_int(g, "free", -1);
            if (tot <= 0 || fr < 0)
                continue;
            if (fr > *best_free) {
                *best_free = fr;
                *best_total = tot;
            }
            double frac = (double)(tot - fr) / (double)tot;
            if (frac > *max_frac)
                *max_frac = frac;
        }
        const sdx_value_t *mem = sdx_map_get(w->report, "memory");
        int64_t mt = sdx_map_int(mem, "total", -1), ma = sdx_map_int(mem, "available", -1);
        if (mt > 0 && ma >= 0 && (double)(mt - ma) / (double)mt > ram_frac)
            ram_frac = (double)(mt - ma) / (double)mt;
    }
    if (*max_frac < 0)
        *max_frac = ram_frac; /* a CPU fleet: host RAM is what the workers use */
}

static void s_handle_request(broker_t *b, const route_t *rt, const uint8_t *data, size_t len)
{
    int64_t t0 = sdx_clock_mono_us();
    sdx_fault_t f;
    sdx_fault_clear(&f);
    sdx_encoding_t enc = sdx_codec_detect(data, len);

    if ((int64_t)len > b->cfg.max_frame_bytes) {
        sdx_fault_set(&f, SDX_ERR_PAYLOAD_TOO_LARGE, NULL,
                      "the request frame is %zu bytes; this broker accepts at most %" PRId64, len,
                      b->cfg.max_frame_bytes);
        s_reply_fault_raw(b, rt, enc, NULL, NULL, &f, NULL, t0);
        return;
    }
    if (len == 0) {
        sdx_fault_set(&f, SDX_ERR_INVALID_REQUEST, NULL,
                      "empty request frame: send one frame holding a msgpack map or JSON object");
        s_reply_fault_raw(b, rt, enc, NULL, NULL, &f, NULL, t0);
        return;
    }
    char derr[192];
    sdx_value_t *root = sdx_codec_decode(data, len, enc, derr, sizeof derr);
    if (!root) {
        /* answered in the C# shape when the frame still looks like C# */
        hook_state_t hs = {0};
        hooks_undecodable(data, len, &hs);
        sdx_fault_set(&f, SDX_ERR_INVALID_REQUEST, NULL, "cannot decode the request: %s", derr);
        s_reply_fault_raw(b, rt, enc, NULL, NULL, &f, &hs, t0);
        hooks_request_done(&hs);
        return;
    }

    breq_t *r = s_req_alloc(b);
    if (!r) {
        sdx_value_destroy(&root);
        sdx_fault_set(&f, SDX_ERR_INTERNAL, NULL, "out of memory");
        s_reply_fault_raw(b, rt, enc, NULL, NULL, &f, NULL, t0);
        return;
    }
    b->live_requests++;
    r->route = *rt;
    r->t_accept_us = t0;

    /* DIALECT PREPARE HOOK (see hooks.h): before the envelope is parsed. */
    if (hooks_prepare(&root, enc, &r->hook, &f) != 0) {
        const sdx_value_t *rid = root ? sdx_map_get_loose(root, "request_id") : NULL;
        if (rid && rid->type != SDX_STR && rid->type != SDX_INT)
            rid = NULL;
        s_reply_fault_raw(b, rt, enc, rid, NULL, &f, &r->hook, t0);
        sdx_value_destroy(&root);
        s_req_release(b, r);
        return;
    }
    int parsed = sdx_envelope_parse(&r->env, &root, enc, &f);
    sdx_value_t rid = sdx_envelope_id_echo(&r->env); /* echoed as sent */
    if (parsed != 0) {
        s_reply_fault_raw(b, rt, enc, &rid, r->env.message_type[0] ? r->env.message_type : NULL, &f,
                          &r->hook, t0);
        s_req_release(b, r);
        return;
    }
    int64_t now_ms = sdx_clock_mono_ms();
    client_t *client = s_client(b, rt, now_ms);
    if (s_client_rate(b, client, now_ms, &f) != 0) {
        s_reply_fault_raw(b, rt, enc, &rid, r->env.message_type, &f, &r->hook, t0);
        s_req_release(b, r);
        return;
    }

    /* VALIDATION HOOK: schema validation and C#-dialect mapping of the
       decoded tree (r->env.root / r->env.data, encoding r->env.encoding);
       returns invalid_request {field, message} through f. Called once per
       request, after envelope parsing and before routing. */
    if (hooks_validate(&r->env, &r->hook, &f) != 0) {
        if (f.code == SDX_ERR_NONE)
            sdx_fault_set(&f, SDX_ERR_INVALID_REQUEST, NULL, "request rejected by validation");
        s_reply_fault_raw(b, rt, enc, &rid, r->env.message_type, &f, &r->hook, t0);
        s_req_release(b, r);
        return;
    }

    /* model.load / model.unload: the weights live in the inference and
       conditioning workers, so the broker asks them (a fan-out) */
    if (!strcmp(r->env.message_type, "model.load") ||
        !strcmp(r->env.message_type, "model.unload")) {
        if (s_model_fanout(b, r, &f) == 0)
            return;
        s_reply_fault_raw(b, rt, enc, &rid, r->env.message_type, &f, &r->hook, t0);
        s_req_release(b, r);
        return;
    }
    /* Routing by domain prefix. */
    int d = s_domain_index(b, r->env.domain);
    if (d >= 0 && b->domains[d].by_broker) {
        if (strcmp(r->env.message_type, "system.status") == 0 &&
            sdx_map_bool(r->env.data, "refresh", false) && s_status_refresh(b, r) == 0)
            return; /* answered when the workers have */
        s_handle_local(b, rt, &r->env, &r->hook, t0);
        s_req_release(b, r);
        return;
    }
    if (s_admit(b, r, d, client, NULL, 0, &f) != 0) {
        s_reply_fault_raw(b, rt, enc, &rid, r->env.message_type, &f, &r->hook, t0);
        s_req_release(b, r);
    }
}

/* Read one client message. 0 handled, 1 nothing there, -1 socket error. */
static int s_frontend_one(broker_t *b)
{
    route_t rt;
    rt.n = 0;
    size_t used = 0, all_frames = 0, all_bytes = 0;
    bool bad_route = false;
    zmq_msg_t m;
    for (int frame = 0;; frame++) {
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, b->front, frame == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int e = errno;
            zmq_msg_close(&m);
            if (e == EAGAIN && frame == 0)
                return 1;
            if (e == EINTR && frame == 0)
                return 1;
            errno = e;
            return -1;
        }
        if (!zmq_msg_more(&m))
            break;
        size_t n = zmq_msg_size(&m);
        all_frames++;
        all_bytes += n;
        if (rt.n < ROUTE_FRAMES && used + n <= ROUTE_BYTES) {
            memcpy(rt.buf + used, zmq_msg_data(&m), n);
            rt.len[rt.n++] = (uint16_t)n;
            used += n;
        } else
            bad_route = true;
        zmq_msg_close(&m);
    }
    if (rt.n == 0) {
        /* no identity at all: nowhere to answer */
        log_warn("dropped a client message with no envelope frames");
        zmq_msg_close(&m);
        return 0;
    }
    if (bad_route) {
        /* The frames between the routing id and the body cannot be kept
           to route the answer back through them, but the routing id (the
           first frame) was kept: tell the client why, straight to it. */
        sdx_fault_t f;
        sdx_fault_set(&f, SDX_ERR_INVALID_REQUEST, NULL,
                      "a request may carry at most %d envelope frames (the routing id included) "
                      "of at most %d bytes in all before its body frame; this one had %zu "
                      "frames of %zu bytes",
                      ROUTE_FRAMES, ROUTE_BYTES, all_frames, all_bytes);
        rt.n = 1;
        s_reply_fault_raw(b, &rt, sdx_codec_detect(zmq_msg_data(&m), zmq_msg_size(&m)), NULL, NULL,
                          &f, NULL, sdx_clock_mono_us());
        zmq_msg_close(&m);
        return 0;
    }
    if (sdx_log_level_current >= SDX_LOG_DEBUG) {
        char hex[80];
        log_debug("frontend: %zu bytes from %s (%d envelope frame(s))", zmq_msg_size(&m),
                  s_hex_id(rt.buf, rt.len[0], hex, sizeof hex), rt.n);
    }
    s_handle_request(b, &rt, zmq_msg_data(&m), zmq_msg_size(&m));
    zmq_msg_close(&m);
    return 0;
}

/* -------------------------------------------------------------- backend */

/* A READY registers a worker only when every field it carries has its type
   and range (PROTOCOL.md 2.2): a worker that says something else is broken
   or not ours, and gets DISCONNECT rather than a guess. 0 ok, -1 with why. */
static int s_ready_int(const sdx_value_t *body, const char *key, int64_t lo, int64_t hi, char *why,
                       size_t why_len)
{
    const sdx_value_t *v = sdx_map_get(body, key);
    if (!v || (v->type == SDX_INT && v->u.i >= lo && v->u.i <= hi))
        return 0;
    snprintf(why, why_len, "%s must be an integer %" PRId64 "..%" PRId64, key, lo, hi);
    return -1;
}

static int s_ready_strs(const sdx_value_t *body, const char *key, char *why, size_t why_len)
{
    const sdx_value_t *v = sdx_map_get(body, key);
    bool ok = !v || v->type == SDX_NIL || v->type == SDX_ARRAY;
    for (size_t i = 0; ok && v && i < sdx_array_len(v); i++)
        ok = sdx_array_at(v, i)->type == SDX_STR;
    if (!ok)
        snprintf(why, why_len, "%s must be an array of strings", key);
    return ok ? 0 : -1;
}

static int s_ready_check(const sdx_value_t *body, char *why, size_t why_len)
{
    const sdx_value_t *id = sdx_map_get(body, "worker_id");
    if (id && (id->type != SDX_STR || id->u.str.len == 0 ||
               id->u.str.len >= sizeof(((worker_t *)0)->id))) {
        snprintf(why, why_len, "worker_id must be a string of 1..%zu bytes",
                 sizeof(((worker_t *)0)->id) - 1);
        return -1;
    }
    if (s_ready_int(body, "concurrency", 1, 4096, why, why_len) ||
        s_ready_int(body, "capacity", 1, SDX_MDP_MAX_CAPACITY, why, why_len) ||
        s_ready_int(body, "gpu", -1, 4096, why, why_len) ||
        s_ready_int(body, "prefetch", 0, 64, why, why_len) ||
        s_ready_strs(body, "capabilities", why, why_len) ||
        s_ready_strs(body, "models", why, why_len) || s_ready_strs(body, "resume", why, why_len))
        return -1;
    return 0;
}

/* A worker that reconnected (its own liveness count ran out: a broker stall,
   a network cut) sends READY from a new socket with `resume`: the request
   ids it still holds, running, queued, or answered while it had no broker.
   Those of its earlier registration (same worker_id, domain, pid and host)
   move to the new one as they are - no re-run, same attempt - and the
   earlier one is dropped at once (with or without `resume`: its socket is
   gone, nothing sent to it would arrive); what it held that the worker no
   longer has (a REQUEST lost with the old socket) is re-queued as for a
   lost worker. */
static void s_resume(broker_t *b, worker_t *w, const sdx_value_t *resume)
{
    size_t n = sdx_array_len(resume);
    worker_t *old = NULL;
    for (size_t i = 0; i < b->reg.len && !old; i++) {
        worker_t *o = b->reg.items[i];
        if (o != w && o->domain == w->domain && o->pid == w->pid && strcmp(o->id, w->id) == 0 &&
            strcmp(o->host, w->host) == 0)
            old = o;
    }
    if (!old) {
        if (n)
            log_info("worker %s resumes %zu request(s) the broker no longer has on it: their "
                     "replies will be dropped",
                     w->id, n);
        return;
    }
    size_t moved = 0;
    for (size_t j = old->njobs; j-- > 0;) { /* from the end: worker_job_del swaps */
        breq_t *r = old->jobs[j];
        bool held = false;
        for (size_t k = 0; k < n && !held; k++) {
            const sdx_value_t *id = sdx_array_at(resume, k);
            held = id->u.str.len == strlen(r->key) && memcmp(id->u.str.ptr, r->key,
                                                             id->u.str.len) == 0;
        }
        if (!held || worker_job_add(w, r) != 0)
            continue;
        worker_job_del(old, r);
        if (old->in_flight > 0)
            old->in_flight--;
        w->in_flight++;
        r->worker = w;
        moved++;
    }
    b->st.resumed += moved;
    log_info("worker %s reconnected: %zu request(s) carried over to its new connection", w->id,
             moved);
    s_worker_lost(b, old, "replaced by its reconnection");
}

static void s_on_ready(broker_t *b, sdx_mdp_msg_t *msg)
{
    char hex[64];
    s_hex_id(msg->identity, msg->identity_len, hex, sizeof hex);
    const char *dom = sdx_map_str(msg->body, "domain", NULL);
    int d = dom ? s_domain_index(b, dom) : -1;
    if (d < 0 || b->domains[d].by_broker) {
        log_warn("READY from %s for unknown domain \"%s\": DISCONNECT", hex, dom ? dom : "(none)");
        sdx_mdp_send(b->back, msg->identity, msg->identity_len, SDX_MDP_DISCONNECT, NULL, NULL,
                     true);
        return;
    }
    char why[160];
    if (s_ready_check(msg->body, why, sizeof why) != 0) {
        log_warn("READY from %s (%s): %s: DISCONNECT", hex,
                 sdx_map_str(msg->body, "worker_id", "no worker_id"), why);
        sdx_mdp_send(b->back, msg->identity, msg->identity_len, SDX_MDP_DISCONNECT, NULL, NULL,
                     true);
        return;
    }
    worker_t *w = registry_find(&b->reg, msg->identity, msg->identity_len);
    if (w)
        s_worker_lost(b, w, "sent READY again (restarted)");
    w = registry_add(&b->reg, msg->identity, msg->identity_len);
    if (!w) {
        log_error("cannot register worker %s: out of memory", hex);
        return;
    }
    w->domain = d;
    const char *wid = sdx_map_str(msg->body, "worker_id", NULL);
    snprintf(w->id, sizeof w->id, "%s", wid && *wid ? wid : hex);
    snprintf(w->host, sizeof w->host, "%s", sdx_map_str(msg->body, "host", ""));
    snprintf(w->version, sizeof w->version, "%s", sdx_map_str(msg->body, "version", ""));
    w->pid = sdx_map_int(msg->body, "pid", 0);
    w->gpu = (int)sdx_map_int(msg->body, "gpu", -1);
    w->concurrency = (int)sdx_map_int(msg->body, "concurrency", 1);
    int64_t pf = sdx_map_int(msg->body, "prefetch",
                             b->cfg.prefetch >= 0 ? b->cfg.prefetch : b->domains[d].prefetch);
    w->prefetch = pf < 0 ? 0 : pf > 64 ? 64 : (int)pf; /* the broker's own may be any */
    /* Credit: the slots the worker declared (PROTOCOL.md 2.3); a worker that
       declares none gets concurrency + prefetch (1 for a plain READY). */
    const sdx_value_t *capv = sdx_map_get(msg->body, "capacity");
    w->capacity = w->concurrency + w->prefetch;
    if (capv) { /* s_ready_check: an integer 1..SDX_MDP_MAX_CAPACITY */
        w->capacity = (int)capv->u.i;
        w->prefetch = w->capacity > w->concurrency ? w->capacity - w->concurrency : 0;
    }
    const sdx_value_t *models = sdx_map_get(msg->body, "models");
    const char *names[256];
    size_t nm = 0;
    for (size_t i = 0; i < sdx_array_len(models) && nm < 256; i++) {
        const sdx_value_t *s = sdx_array_at(models, i);
        if (s && s->type == SDX_STR)
            names[nm++] = s->u.str.ptr;
    }
    worker_set_models(w, names, nm);
    w->last_seen_ms = w->ready_ms = sdx_clock_mono_ms();
    log_info("worker %s ready: domain=%s gpu=%d concurrency=%d capacity=%d models=%zu host=%s "
             "pid=%" PRId64,
             w->id, b->domains[d].name, w->gpu, w->concurrency, w->capacity, w->nmodels, w->host,
             w->pid);
    s_resume(b, w, sdx_map_get(msg->body, "resume"));
    /* acknowledged at once: the worker's liveness count restarts now, not
       at the next heartbeat tick (a worker that registered late in its own
       3-interval window would otherwise reconnect again, and again) */
    sdx_mdp_send(b->back, w->identity, w->identity_len, SDX_MDP_HEARTBEAT, NULL, NULL, true);
    s_worker_event(b, "worker.ready", w, NULL);
    b->domains[d].empty_since_ms = 0;
    s_pump(b, d);
}

static void s_on_heartbeat(broker_t *b, worker_t *w, sdx_mdp_msg_t *msg)
{
    (void)b;
    if (msg->body && (sdx_map_get(msg->body, "gpus") || sdx_map_get(msg->body, "memory"))) {
        sdx_value_t *rep = sdx_value_map_new();
        if (rep) {
            sdx_value_t *g = sdx_map_take(msg->body, "gpus"),
                        *m = sdx_map_take(msg->body, "memory");
            if (g)
                sdx_map_set(rep, "gpus", g);
            if (m)
                sdx_map_set(rep, "memory", m);
            sdx_value_destroy(&w->report);
            w->report = rep;
            w->report_ms = sdx_clock_mono_ms();
        }
    }
    const sdx_value_t *models = msg->body ? sdx_map_get(msg->body, "models") : NULL;
    if (models && models->type == SDX_ARRAY) {
        const char *names[256];
        size_t nm = 0;
        bool same = sdx_array_len(models) == w->nmodels;
        for (size_t i = 0; i < sdx_array_len(models) && nm < 256; i++) {
            const sdx_value_t *s = sdx_array_at(models, i);
            if (s && s->type == SDX_STR) {
                names[nm++] = s->u.str.ptr;
                if (same && (i >= w->nmodels || strcmp(w->models[i], s->u.str.ptr) != 0))
                    same = false;
            }
        }
        if (!same)
            worker_set_models(w, names, nm);
    }
}

static void s_on_progress(broker_t *b, worker_t *w, sdx_mdp_msg_t *msg)
{
    breq_t *r = idmap_get(&b->reqs, msg->request_id, strlen(msg->request_id));
    if (!r || r->worker != w || r->state != RS_RUNNING) {
        log_debug("PROGRESS for unknown/finished %s from %s: dropped", msg->request_id, w->id);
        return;
    }
    r->progress_count++;
    b->st.progress++;
    s_event(b, "request.progress", r, NULL, 0, msg->body);
    if (r->orch_token) {
        if (!(r->orch_token & FANOUT_BIT))
            orch_progress(b->orch, r->orch_token, sdx_map_int(msg->body, "step", 0),
                          sdx_map_int(msg->body, "total", 0));
        return;
    }
    /* Only DEALER-framed clients (identity frame only, no empty delimiter)
       can take more than one message per request. */
    if (!r->env.stream || r->route.n != 1)
        return;
    svmap_t m;
    svmap_init(&m);
    sdx_value_t rid = sdx_envelope_id_echo(&r->env), mt = s_sv_str("progress"),
                rt = s_sv_str(r->env.message_type);
    svmap_add(&m, "request_id", &rid);
    svmap_add(&m, "message_type", &mt);
    svmap_add(&m, "request_type", &rt);
    const sdx_value_t *body = msg->body;
    for (size_t i = 0; body && body->type == SDX_MAP && i < body->u.map.len; i++)
        svmap_add(&m, body->u.map.items[i].key, body->u.map.items[i].val);
    svmap_add(&m, "request_id", &rid); /* the worker cannot override these */
    svmap_add(&m, "message_type", &mt);
    s_send_tree(b, &r->route, &m.map, r->env.encoding, &r->hook);
}

static void s_on_reply(broker_t *b, worker_t *w, sdx_mdp_msg_t *msg)
{
    breq_t *r = idmap_get(&b->reqs, msg->request_id, strlen(msg->request_id));
    w->served++;
    if (!r || r->worker != w) {
        b->st.late_replies++;
        log_debug("late/unknown REPLY %s from %s: dropped", msg->request_id, w->id);
        return;
    }
    int d = r->domain;
    if (r->state == RS_CANCELLING) {
        b->st.late_replies++;
        log_debug("REPLY %s from %s after its timeout: dropped", r->key, w->id);
        s_req_release(b, r);
        s_pump(b, d);
        return;
    }
    const sdx_value_t *body = msg->body;
    const sdx_value_t *succ = sdx_map_get(body, "success");
    bool ok = succ && succ->type == SDX_BOOL && succ->u.b;
    const sdx_value_t *err = sdx_map_get(body, "error");
    const char *code = sdx_map_str(err, "code", NULL);

    /* A draining worker hands the request back: try another one. */
    if (!ok && code && strcmp(code, "worker_lost") == 0 && r->attempt <= b->cfg.max_retries) {
        w->draining = true;
        worker_job_del(w, r);
        if (w->in_flight > 0)
            w->in_flight--;
        r->worker = NULL;
        r->state = RS_QUEUED;
        b->st.retries++;
        queue_push_front(&b->domains[d].queue, &r->qn, (int)r->env.priority);
        log_info("%s %s: worker %s is draining, re-queued", r->env.request_id, r->env.message_type,
                 w->id);
        s_pump(b, d);
        return;
    }

    if (r->orch_token) {
        /* an orchestrator step / batch item: the reply's data moves to it */
        sdx_value_t *own = NULL;
        if (!ok && !(err && err->type == SDX_MAP && code))
            own = sdx_error_value(SDX_ERR_INTERNAL, NULL,
                                  "the worker's reply had neither success:true nor an error{code}");
        s_internal_result(b, r, ok, ok ? sdx_map_take(msg->body, "data") : NULL, own ? own : err);
        sdx_value_destroy(&own);
        if (ok)
            b->st.ok++;
        else
            b->st.failed++;
        const char *oc = ok ? "ok" : code ? code : "internal";
        s_log_done(b, r, oc, NULL, ok ? NULL : sdx_map_str(err, "message", NULL));
        s_event(b, "request.done", r, oc, s_ms_since(r->t_accept_us), NULL);
        s_req_release(b, r);
        s_pump(b, d);
        return;
    }
    svmap_t reply, timing;
    svmap_init(&reply);
    svmap_init(&timing);
    sdx_value_t tv[4];
    const sdx_value_t *wt = sdx_map_get(body, "timing");
    for (size_t i = 0; wt && wt->type == SDX_MAP && i < wt->u.map.len && i < 40; i++)
        svmap_add(&timing, wt->u.map.items[i].key, wt->u.map.items[i].val);
    s_timing_add(&timing, tv, r);
    sdx_value_t rid = sdx_envelope_id_echo(&r->env), mt = s_sv_str(r->env.message_type),
                sv = s_sv_bool(ok);
    svmap_add(&reply, "request_id", &rid);
    svmap_add(&reply, "message_type", &mt);
    svmap_add(&reply, "success", &sv);
    sdx_value_t *own_err = NULL;
    sdx_value_t empty = {.type = SDX_MAP};
    if (ok) {
        const sdx_value_t *data = sdx_map_get(body, "data");
        svmap_add(&reply, "data", data ? data : &empty);
    } else if (err && err->type == SDX_MAP && code) {
        svmap_add(&reply, "error", err);
    } else {
        own_err = sdx_error_value(SDX_ERR_INTERNAL, NULL,
                                  "the worker's reply had neither success:true nor an error{code}");
        if (own_err)
            svmap_add(&reply, "error", own_err);
        code = "internal";
    }
    svmap_add(&reply, "timing", &timing.map);
    s_send_tree(b, &r->route, &reply.map, r->env.encoding, &r->hook);
    sdx_value_destroy(&own_err);

    if (ok) {
        b->st.ok++;
        const sdx_value_t *data = sdx_map_get(body, "data");
        const sdx_value_t *cnt = sdx_map_get(data, "count");
        int64_t images = cnt && cnt->type == SDX_INT
                             ? cnt->u.i
                             : (int64_t)sdx_array_len(sdx_map_get(data, "images"));
        metrics_images(b->metrics, r->env.message_type, images);
    } else {
        b->st.failed++;
    }
    const char *outcome = ok ? "ok" : code;
    const char *detail = ok ? NULL : sdx_map_str(err, "message", NULL);
    s_log_done(b, r, outcome, ok ? NULL : sdx_map_str(err, "field", NULL), detail);
    s_event(b, "request.done", r, outcome, s_ms_since(r->t_accept_us), NULL);
    s_req_release(b, r);
    s_pump(b, d);
}

/* Read one worker message. 0 handled, 1 nothing there, -1 socket error. */
static int s_backend_one(broker_t *b)
{
    sdx_mdp_msg_t msg = {0};
    char err[256];
    int rc = sdx_mdp_recv(b->back, true, &msg, true, err, sizeof err);
    if (rc == 1)
        return 1;
    if (rc < 0) {
        if (errno == ETERM || errno == ENOTSOCK) {
            sdx_mdp_msg_clear(&msg);
            return -1;
        }
        if (msg.identity_len) {
            char hex[64];
            log_warn("malformed message from worker %s: %s",
                     s_hex_id(msg.identity, msg.identity_len, hex, sizeof hex), err);
        }
        /* an unreadable REPLY still ends its request, as a failure */
        worker_t *w = msg.bad_body && msg.cmd == SDX_MDP_REPLY
                          ? registry_find(&b->reg, msg.identity, msg.identity_len)
                          : NULL;
        if (w) {
            msg.body = sdx_value_map_new();
            char why[640];
            snprintf(why, sizeof why, "worker %s sent a reply that cannot be decoded (%s)", w->id,
                     err);
            sdx_value_t *e = sdx_error_value(SDX_ERR_INTERNAL, NULL, why);
            if (msg.body && e && sdx_map_set(msg.body, "error", e) == 0)
                s_on_reply(b, w, &msg);
            else
                sdx_value_destroy(&e);
        }
        sdx_mdp_msg_clear(&msg);
        return 0;
    }
    log_debug("backend: %s %s", sdx_mdp_cmd_name(msg.cmd), msg.request_id);
    worker_t *w = registry_find(&b->reg, msg.identity, msg.identity_len);
    if (msg.cmd == SDX_MDP_READY) {
        s_on_ready(b, &msg);
    } else if (!w) {
        /* not registered (e.g. the broker restarted): ask it to reconnect */
        if (msg.cmd != SDX_MDP_DISCONNECT) {
            char hex[64];
            log_info("%s from unregistered worker %s: DISCONNECT", sdx_mdp_cmd_name(msg.cmd),
                     s_hex_id(msg.identity, msg.identity_len, hex, sizeof hex));
            sdx_mdp_send(b->back, msg.identity, msg.identity_len, SDX_MDP_DISCONNECT, NULL, NULL,
                         true);
        }
    } else {
        w->last_seen_ms = sdx_clock_mono_ms();
        switch (msg.cmd) {
        case SDX_MDP_REPLY:
            s_on_reply(b, w, &msg);
            break;
        case SDX_MDP_PROGRESS:
            s_on_progress(b, w, &msg);
            break;
        case SDX_MDP_HEARTBEAT:
            s_on_heartbeat(b, w, &msg);
            break;
        case SDX_MDP_DISCONNECT:
            s_worker_lost(b, w, "sent DISCONNECT");
            break;
        default:
            log_warn("unexpected %s from worker %s", sdx_mdp_cmd_name(msg.cmd), w->id);
        }
    }
    sdx_mdp_msg_clear(&msg);
    return 0;
}

/* Subscriptions on the XPUB socket: count distinct topics. */
static void s_events_one(broker_t *b)
{
    for (int i = 0; i < DRAIN_BATCH; i++) {
        uint8_t buf[256];
        int n = zmq_recv(b->pub, buf, sizeof buf, ZMQ_DONTWAIT);
        if (n < 0)
            return;
        if (n >= 1 && buf[0] == 1)
            b->subscriptions++;
        else if (n >= 1 && buf[0] == 0 && b->subscriptions > 0)
            b->subscriptions--;
    }
}

/* ---------------------------------------------------------------- timers */

static void s_expire(broker_t *b, int64_t now_ms)
{
    dnode_t *n;
    while ((n = dheap_top(&b->deadlines)) && n->when <= now_ms) {
        breq_t *r = s_from_dn(n);
        dheap_remove(&b->deadlines, n);
        int64_t asked = r->env.timeout_ms > 0 ? r->env.timeout_ms : b->cfg.default_timeout_ms;
        switch (r->state) {
        case RS_QUEUED:
            s_finish_error(b, r, SDX_ERR_TIMEOUT,
                           "timeout_ms %" PRId64 " passed while queued (no free %s worker)", asked,
                           b->domains[r->domain].name);
            s_req_release(b, r);
            break;
        case RS_RUNNING: {
            char why[192];
            snprintf(why, sizeof why,
                     "timeout_ms %" PRId64 " passed while running on %s; cancelled", asked,
                     r->worker ? r->worker->id : "?");
            s_cancel_running(b, r, SDX_ERR_TIMEOUT, why);
            break;
        }
        case RS_CANCELLING: {
            int d = r->domain;
            log_debug("%s: no REPLY after CANCEL within the grace; slot freed", r->key);
            s_req_release(b, r);
            s_pump(b, d);
            break;
        }
        }
    }
}

static void s_heartbeat(broker_t *b, int64_t now_ms)
{
    if (now_ms >= b->next_heartbeat_ms && b->clients.len)
        s_clients_sweep(b, now_ms);
    if (now_ms < b->next_heartbeat_ms)
        return;
    b->next_heartbeat_ms = now_ms + b->cfg.heartbeat_ms;
    int64_t dead_after = b->cfg.heartbeat_ms * b->cfg.liveness;
    for (size_t i = 0; i < b->reg.len;) {
        worker_t *w = b->reg.items[i];
        if (now_ms - w->last_seen_ms > dead_after) {
            char why[96];
            snprintf(why, sizeof why, "silent for %" PRId64 " ms", now_ms - w->last_seen_ms);
            s_worker_lost(b, w, why); /* removes items[i] */
            continue;
        }
        sdx_mdp_send(b->back, w->identity, w->identity_len, SDX_MDP_HEARTBEAT, NULL, NULL, true);
        i++;
    }
    /* Queued work in a domain that has had no worker for a while fails. */
    for (int d = 0; d < b->ndomains; d++) {
        domain_t *dm = &b->domains[d];
        if (dm->by_broker || queue_len(&dm->queue) == 0 || registry_count(&b->reg, d, false) > 0) {
            dm->empty_since_ms = 0;
            continue;
        }
        if (!dm->empty_since_ms) {
            dm->empty_since_ms = now_ms;
            continue;
        }
        if (now_ms - dm->empty_since_ms < b->cfg.no_worker_grace_ms)
            continue;
        qnode_t *n;
        while ((n = queue_pop(&dm->queue))) {
            breq_t *r = s_from_qn(n);
            if (r->attempt > 0)
                s_finish_error(b, r, SDX_ERR_WORKER_LOST,
                               "its %s worker was lost and no other has come for %" PRId64 " ms",
                               dm->name, now_ms - dm->empty_since_ms);
            else
                s_finish_error(b, r, SDX_ERR_NO_WORKER, "no %s worker for %" PRId64 " ms", dm->name,
                               now_ms - dm->empty_since_ms);
            s_req_release(b, r);
        }
        dm->empty_since_ms = 0;
    }
}

/* ------------------------------------------------------------ lifecycle */

static int s_sockopt_int(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

static void *s_bind(broker_t *b, int type, const char *ep, const char *what, char *err,
                    size_t err_len)
{
    void *s = zmq_socket(b->ctx, type);
    if (!s) {
        snprintf(err, err_len, "%s socket: %s", what, zmq_strerror(errno));
        return NULL;
    }
    s_sockopt_int(s, ZMQ_LINGER, 1000);
    s_sockopt_int(s, ZMQ_SNDHWM, (int)b->cfg.hwm);
    s_sockopt_int(s, ZMQ_RCVHWM, (int)b->cfg.hwm);
    if (type == ZMQ_ROUTER)
        s_sockopt_int(s, ZMQ_ROUTER_HANDOVER, 1);
    if (b->zap && type != ZMQ_STREAM &&
        sdx_curve_server(s, b->cfg.curve_cert, type == ZMQ_ROUTER && strcmp(what, "backend") == 0
                                                   ? "workers"
                                                   : "clients",
                         err, err_len) != 0) {
        zmq_close(s);
        return NULL;
    }
    if (zmq_bind(s, ep) != 0) {
        snprintf(err, err_len, "%s: cannot bind %s: %s", what, ep, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* The workflows folder: the option, else $SDXL_WORKFLOWS_DIR, else the
   source tree's deploy/workflows or the installed one; "none" for none. */
static void s_workflows_dir(const char *opt, char *out, size_t len)
{
    out[0] = '\0';
    if (opt && strcmp(opt, "none") == 0)
        return;
    if (opt && *opt) {
        snprintf(out, len, "%s", opt);
        return;
    }
    const char *env = getenv("SDXL_WORKFLOWS_DIR");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    static const char *const cands[] = {SDX_SOURCE_ROOT "/deploy/workflows",
                                        "/usr/local/share/sdxl-fleet/workflows",
                                        "/usr/share/sdxl-fleet/workflows"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++)
        if (access(cands[i], R_OK) == 0) {
            snprintf(out, len, "%s", cands[i]);
            return;
        }
}

broker_t *broker_new(const broker_config_t *cfg, char *err, size_t err_len)
{
    broker_t *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    registry_init(&b->reg);
    idmap_init(&b->reqs);
    idmap_init(&b->clients);
    dheap_init(&b->deadlines);
    char e[512];
    if (cfg->actions_file[0] ? sdx_actions_load(cfg->actions_file, e, sizeof e)
                             : sdx_actions_load_default(e, sizeof e)) {
        snprintf(err, err_len, "action table: %s", e);
        goto fail;
    }
    b->cat = cfg->catalog_file[0] ? sdx_catalog_load(cfg->catalog_file, e, sizeof e)
                                  : sdx_catalog_load_default(e, sizeof e);
    if (!b->cat) {
        snprintf(err, err_len, "catalogue: %s", e);
        goto fail;
    }
    for (size_t i = 0; i < sdx_catalog_domain_count(b->cat) && b->ndomains < MAX_DOMAINS; i++) {
        const sdx_catalog_domain_t *cd = sdx_catalog_domain_at(b->cat, i);
        domain_t *d = &b->domains[b->ndomains++];
        d->name = cd->name;
        d->by_broker = cd->by_broker;
        d->prefetch = cd->prefetch;
        queue_init(&d->queue);
    }
    hook_config_t hc = {.models_root = cfg->models_root,
                        .loras_root = cfg->loras_root,
                        .vaes_root = cfg->vaes_root,
                        .controlnets_root = cfg->controlnets_root,
                        .embeddings_root = cfg->embeddings_root,
                        .upscalers_root = cfg->upscalers_root,
                        .outputs_root = cfg->outputs_root,
                        .max_image_bytes = cfg->max_image_bytes,
                        .max_pixels = cfg->max_pixels,
                        .schemas_dir = cfg->schemas_dir,
                        .validate = cfg->validate,
                        .max_frame_bytes = cfg->max_frame_bytes};
    if (hooks_init(&hc, e, sizeof e) != 0) {
        snprintf(err, err_len, "hooks: %s", e);
        goto fail;
    }
    b->ctx = zmq_ctx_new();
    if (!b->ctx) {
        snprintf(err, err_len, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    if (cfg->curve_cert[0]) {
        /* the handler first: no CURVE socket may take a peer before it is there */
        if (!(b->zap = sdx_zap_new(b->ctx, cfg->curve_clients_dir, cfg->curve_workers_dir, e,
                                   sizeof e))) {
            snprintf(err, err_len, "curve: %s", e);
            goto fail;
        }
        log_info("curve: on (key %s); clients from %s, workers from %s; plaintext refused",
                 cfg->curve_cert, cfg->curve_clients_dir, cfg->curve_workers_dir);
    } else if (cfg->curve_clients_dir[0] || cfg->curve_workers_dir[0]) {
        snprintf(err, err_len, "curve: allow-lists given without curve.cert (the broker's key)");
        goto fail;
    }
    if (!(b->front = s_bind(b, ZMQ_ROUTER, cfg->frontend, "frontend", err, err_len)))
        goto fail;
    /* Frames up to 4 x max_frame_bytes are read and answered payload_too_large;
       beyond that libzmq drops the connection before buffering it all. */
    int64_t hard = cfg->max_frame_bytes * 4;
    zmq_setsockopt(b->front, ZMQ_MAXMSGSIZE, &hard, sizeof hard);
    if (!(b->back = s_bind(b, ZMQ_ROUTER, cfg->backend, "backend", err, err_len)))
        goto fail;
    if (cfg->events_enabled && cfg->events[0]) {
        if (!(b->pub = s_bind(b, ZMQ_XPUB, cfg->events, "events", err, err_len)))
            goto fail;
        s_sockopt_int(b->pub, ZMQ_LINGER, 0);
    }
    if (!(b->metrics = metrics_new())) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (cfg->metrics_endpoint[0]) {
        if (!(b->http = s_bind(b, ZMQ_STREAM, cfg->metrics_endpoint, "metrics", err, err_len)))
            goto fail;
        s_sockopt_int(b->http, ZMQ_LINGER, 0);
        s_sockopt_int(b->http, ZMQ_SNDTIMEO, 100);
    }
    char wfdir[SDX_CONFIG_STR_MAX + 64];
    s_workflows_dir(cfg->workflows_dir, wfdir, sizeof wfdir);
    orch_config_t oc = {.workflows_dir = wfdir,
                        .state_db = cfg->state_db,
                        .outputs_dir = cfg->batch_outputs,
                        .step_timeout_ms = cfg->step_timeout_ms,
                        .keep_finished = cfg->keep_finished,
                        .cat = b->cat,
                        .models_root = cfg->models_root};
    orch_host_t oh = {.ctx = b,
                      .submit = s_orch_submit,
                      .cancel = s_orch_cancel,
                      .publish = s_orch_publish,
                      .check = s_orch_check,
                      .workers = s_orch_workers,
                      .memory = s_orch_memory};
    if (!(b->orch = orch_new(&oc, &oh, e, sizeof e))) {
        snprintf(err, err_len, "orchestrator: %s", e);
        goto fail;
    }
    b->started_ms = sdx_clock_mono_ms();
    b->started_unix_ms = sdx_clock_unix_ms();
    b->next_heartbeat_ms = b->started_ms + cfg->heartbeat_ms;
    log_info("sdxl-broker %s: frontend %s, backend %s, events %s; %d domains from %s, %zu action "
             "aliases from %s",
             "0.1.0", cfg->frontend, cfg->backend, b->pub ? cfg->events : "(off)", b->ndomains,
             sdx_catalog_source(b->cat), sdx_actions_count(), sdx_actions_source());
    return b;
fail:
    broker_destroy(&b);
    return NULL;
}

/* Answer everything pending with shutting_down and let workers go. */
static void s_shutdown(broker_t *b)
{
    if (b->orch) /* steps cut off by the stop resume at the next start */
        orch_stopping(b->orch);
    for (int d = 0; d < b->ndomains; d++) {
        qnode_t *n;
        while ((n = queue_pop(&b->domains[d].queue))) {
            breq_t *r = s_from_qn(n);
            s_finish_error(b, r, SDX_ERR_SHUTTING_DOWN, "the broker is stopping");
            s_req_release(b, r);
        }
    }
    while (b->reg.len) {
        worker_t *w = b->reg.items[b->reg.len - 1];
        while (w->njobs) {
            breq_t *r = w->jobs[w->njobs - 1];
            if (r->state == RS_RUNNING) {
                sdx_mdp_send(b->back, w->identity, w->identity_len, SDX_MDP_CANCEL, r->key, NULL,
                             true);
                s_finish_error(b, r, SDX_ERR_SHUTTING_DOWN, "the broker is stopping; cancelled");
            }
            s_req_release(b, r); /* removes it from w->jobs */
        }
        sdx_mdp_send(b->back, w->identity, w->identity_len, SDX_MDP_DISCONNECT, NULL, NULL, true);
        registry_remove(&b->reg, w);
    }
}

/* A poll normally returns within a heartbeat of the last one (it waits at
   most that long). A gap of more than two means the broker itself
   did not run (SIGSTOP, swap, a paused VM): its workers' silence in that time
   is its own, so their liveness counts restart now instead of every worker
   being declared lost, and its requests re-run, on the first pass back. A
   worker that really died is still found a liveness period later. */
static void s_check_stall(broker_t *b, int64_t gap_ms, int64_t now_ms)
{
    if (gap_ms <= 2 * b->cfg.heartbeat_ms || gap_ms <= 100)
        return;
    log_warn("the broker did not run for %" PRId64 " ms (stopped or starved): the liveness of "
             "its %zu worker(s) restarts now",
             gap_ms, b->reg.len);
    for (size_t i = 0; i < b->reg.len; i++)
        b->reg.items[i]->last_seen_ms = now_ms;
    b->st.stalls++;
}

int broker_run(broker_t *b, volatile sig_atomic_t *stop)
{
    zmq_pollitem_t items[5] = {
        {b->front, 0, ZMQ_POLLIN, 0},
        {b->back, 0, ZMQ_POLLIN, 0},
        {b->pub, 0, ZMQ_POLLIN, 0},
        {b->http, 0, ZMQ_POLLIN, 0},
    };
    int nitems = b->pub ? 3 : 2;
    int http_at = -1, zap_at = -1;
    if (b->http) {
        http_at = nitems;
        items[nitems++] = (zmq_pollitem_t){b->http, 0, ZMQ_POLLIN, 0};
    }
    if (b->zap) { /* CURVE handshakes wait for this socket's answer */
        zap_at = nitems;
        items[nitems++] = (zmq_pollitem_t){sdx_zap_socket(b->zap), 0, ZMQ_POLLIN, 0};
    }
    int rc = 0;
    int64_t last_loop = sdx_clock_mono_ms();
    while (!*stop) {
        int64_t now = sdx_clock_mono_ms();
        int64_t wait = b->next_heartbeat_ms - now;
        dnode_t *top = dheap_top(&b->deadlines);
        if (top && top->when - now < wait)
            wait = top->when - now;
        if (wait < 0)
            wait = 0;
        if (wait > 1000)
            wait = 1000;
        int n = zmq_poll(items, nitems, (long)wait);
        /* before anything reads the clock against the workers' last words */
        int64_t back = sdx_clock_mono_ms();
        s_check_stall(b, back - last_loop, back);
        last_loop = back;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("zmq_poll: %s", zmq_strerror(errno));
            rc = -1;
            break;
        }
        /* Backend first: replies free slots for the requests behind them. */
        if (items[1].revents & ZMQ_POLLIN)
            for (int i = 0; i < DRAIN_BATCH; i++) {
                int r = s_backend_one(b);
                if (r)
                    break;
            }
        if (items[0].revents & ZMQ_POLLIN)
            for (int i = 0; i < DRAIN_BATCH; i++) {
                int r = s_frontend_one(b);
                if (r < 0)
                    log_error("frontend receive: %s", zmq_strerror(errno));
                if (r)
                    break;
            }
        if (b->pub && (items[2].revents & ZMQ_POLLIN))
            s_events_one(b);
        if (zap_at >= 0 && (items[zap_at].revents & ZMQ_POLLIN))
            sdx_zap_handle(b->zap);
        if (http_at >= 0 && (items[http_at].revents & ZMQ_POLLIN))
            for (int i = 0; i < 16; i++)
                s_http_one(b);
        now = sdx_clock_mono_ms();
        s_expire(b, now);
        s_heartbeat(b, now);
        if (broker_reload_requested) {
            broker_reload_requested = 0;
            log_info("SIGHUP: re-reading the workflows%s", b->zap ? " and the CURVE allow-lists" : "");
            orch_reload(b->orch);
            char e[512];
            if (b->zap && sdx_zap_reload(b->zap, e, sizeof e) != 0)
                log_error("curve: %s (keeping the allow-lists loaded before)", e);
        }
        orch_tick(b->orch);
    }
    log_info("stopping: %zu request(s) pending, %zu worker(s)", b->live_requests, b->reg.len);
    s_shutdown(b);
    return rc;
}

void broker_destroy(broker_t **bp)
{
    if (!bp || !*bp)
        return;
    broker_t *b = *bp;
    /* pending requests (if broker_run was not called to its end) */
    for (size_t i = 0; i < b->reqs.cap; i++) {
        idmap_slot_t *s = &b->reqs.slots[i];
        if (s->hash >= 2) {
            breq_t *r = s->val;
            hooks_request_done(&r->hook);
            sdx_envelope_clear(&r->env);
            free(r);
        }
    }
    while (b->free_list) {
        breq_t *r = b->free_list;
        b->free_list = r->free_next;
        free(r);
    }
    registry_free(&b->reg);
    idmap_free(&b->reqs);
    dheap_free(&b->deadlines);
    if (b->front)
        zmq_close(b->front);
    if (b->back)
        zmq_close(b->back);
    if (b->pub)
        zmq_close(b->pub);
    if (b->http)
        zmq_close(b->http);
    sdx_zap_destroy(&b->zap);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    metrics_destroy(&b->metrics);
    orch_destroy(&b->orch);
    while (b->fanouts) {
        fanout_t *fo = b->fanouts;
        b->fanouts = fo->next;
        hooks_request_done(&fo->origin->hook);
        sdx_envelope_clear(&fo->origin->env);
        free(fo->origin);
        s_fanout_free(fo);
    }
    for (size_t i = 0; i < b->clients.cap; i++)
        if (b->clients.slots[i].hash >= 2)
            free(b->clients.slots[i].val);
    idmap_free(&b->clients);
    hooks_shutdown();
    sdx_catalog_destroy(&b->cat);
    free(b);
    *bp = NULL;
}
