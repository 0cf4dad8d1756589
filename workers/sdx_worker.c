/*  sdx_worker.c - the worker runtime (see sdx_worker.h).

    Threads:
    - main: owns the DEALER to the broker and a PULL bound on an inproc
      endpoint. It polls both, sends heartbeats, detects a dead broker,
      reconnects, dispatches REQUESTs (inline or to the job queue), applies
      CANCEL, forwards PROGRESS/REPLY that job threads push, and owns every
      job's lifetime (the "active" list is touched by main only).
    - job threads (--concurrency of them): pop a job from a mutex+condvar
      queue, run its handler, push PROGRESS/REPLY frames to main through their
      own PUSH socket. After pushing REPLY a job thread never touches the job.

    Connection generations: each (re)connect increments `gen`. A reply for a
    request received on an older connection is dropped: the broker that sent
    it has either died or (having seen this worker's old identity go silent)
    already retried it elsewhere.

    Not for: domain logic (handler_*.c).
*/
#include "sdx_worker.h"

#include "sdx_codec.h"
#include "sdx_curve.h"
#include "sdx_errors.h"
#include "sdx_gpu.h"
#include "sdx_log.h"
#include "sdx_mdp.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>
#include <zmq.h>

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 32000
/* A deadline is the broker's clock; give it this much slack before the worker
   stops a request on its own (the broker's CANCEL normally comes first). */
#define DEADLINE_GRACE_MS 1000
/* Error code for a request that reaches a worker after it began to drain. */
#define CODE_DRAINING "worker_lost"

/* frames a job thread pushes to main: [hdr][body]; hdr = cmd byte + job ptr */
typedef struct {
    uint8_t cmd;
    bool ok;       /* REPLY: success */
    char code[32]; /* REPLY: error code when !ok */
    sdx_job_t *job;
} s_push_hdr_t;

struct sdx_job {
    sdx_worker_t *w;
    char request_id[SDX_MDP_MAX_ID + 1];
    char message_type[128];
    sdx_value_t *request; /* owned REQUEST body */
    sdx_value_t *empty;   /* owned empty data map when the request had none */
    const sdx_handler_t *handler;
    unsigned gen;
    atomic_bool cancel;
    int64_t deadline_ms;   /* unix ms, 0 = none */
    int64_t received_mono; /* ms */
    int prio;              /* 0 low .. 3 critical: order in the job queue */
    int64_t started_mono;
    void *push; /* job thread's PUSH; NULL when running inline on main */
    bool failed;
    char err_code[48];
    char err_field[96];
    char err_msg[512];
    sdx_job_t *qnext;         /* job queue (under w->qlock) */
    sdx_job_t *anext, *aprev; /* active list (main only) */
};

struct sdx_worker {
    const sdx_domain_t *domain;
    /* options */
    char id[96];
    char broker[512];
    char curve_cert[512], curve_broker_key[512]; /* "" : plaintext */
    char config[512];
    int gpu_requested;
    int concurrency;
    int prefetch; /* -1: not sent in READY (the broker's default applies) */
    int capacity; /* READY capacity: requests the broker keeps in flight here */
    /* selected device */
    int gpu;
    char device[32];
    char gpu_name[128];
    char host[256];
    /* sockets and connection state (main only) */
    void *zctx;
    void *sock;
    void *pull;
    char pull_ep[64];
    unsigned gen;
    int64_t last_rx;
    int64_t next_hb;
    int backoff_ms;
    atomic_bool draining; /* read by job threads (status) */
    bool heard;           /* the broker sent something other than DISCONNECT on this connection */
    /* jobs */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    sdx_job_t *qhead, *qtail;
    bool threads_stop;
    pthread_t *threads;
    int nthreads;
    sdx_job_t *active; /* main only */
    int threaded;      /* main only: jobs handed to job threads, not yet replied */
    /* counters (read from any thread) */
    int64_t started_unix_ms;
    int64_t started_mono;
    atomic_long served, failed, cancelled, timeouts, cancels_received, in_flight, queued,
        reconnects, dropped_replies;
    /* models */
    pthread_mutex_t mlock;
    char **models;
    size_t nmodels;
    void *domain_state;
    /* the domain's options as resolved, parallel to domain->options */
    size_t nopts;
    char **opt_value;      /* malloc'd texts, NULL where unset */
    const char **opt_from; /* "flag", "config", "env", "default" (static) */
    sdx_gpu_t *gpu_probe;  /* NVML handle for the selected GPU's figures, or NULL */
    /* Replies of inline handlers answered in one pass over the broker
       socket, sent together at its end (main only): libzmq wakes its I/O
       thread once per burst of sends instead of once per reply. */
    struct {
        char rid[SDX_MDP_MAX_ID + 1];
        uint8_t *body; /* msgpack, owned */
        size_t len;
    } outbox[64];
    int nout;
};

static volatile sig_atomic_t s_signals = 0;

static void s_on_signal(int sig)
{
    (void)sig;
    s_signals++;
}

/* ------------------------------------------------------------------ time */

int64_t sdx_worker_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sdx_worker_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double s_mono_ms_f(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------- accessors */

const char *sdx_worker_id(const sdx_worker_t *w)
{
    return w->id;
}
const char *sdx_worker_domain(const sdx_worker_t *w)
{
    return w->domain->name;
}
int sdx_worker_gpu(const sdx_worker_t *w)
{
    return w->gpu;
}
const char *sdx_worker_device(const sdx_worker_t *w)
{
    return w->device;
}
int sdx_worker_gpu_requested(const sdx_worker_t *w)
{
    return w->gpu_requested;
}
void *sdx_worker_domain_state(sdx_worker_t *w)
{
    return w->domain_state;
}
void sdx_worker_set_domain_state(sdx_worker_t *w, void *state)
{
    w->domain_state = state;
}

void sdx_worker_set_gpu(sdx_worker_t *w, int index, const char *device, const char *name)
{
    w->gpu = index;
    snprintf(w->device, sizeof w->device, "%s", device ? device : "cpu");
    snprintf(w->gpu_name, sizeof w->gpu_name, "%s", name ? name : "");
}

void sdx_worker_set_models(sdx_worker_t *w, const char *const *models, size_t n)
{
    char **copy = n ? calloc(n, sizeof *copy) : NULL;
    size_t k = 0;
    for (size_t i = 0; copy && i < n; i++)
        if ((copy[k] = strdup(models[i])))
            k++;
    pthread_mutex_lock(&w->mlock);
    char **old = w->models;
    size_t oldn = w->nmodels;
    w->models = copy;
    w->nmodels = k;
    pthread_mutex_unlock(&w->mlock);
    for (size_t i = 0; i < oldn; i++)
        free(old[i]);
    free(old);
}

void sdx_worker_models_to(sdx_worker_t *w, sdx_value_t *arr)
{
    pthread_mutex_lock(&w->mlock);
    for (size_t i = 0; i < w->nmodels; i++)
        sdx_array_push(arr, sdx_value_str_new(w->models[i]));
    pthread_mutex_unlock(&w->mlock);
}

const char *sdx_job_request_id(const sdx_job_t *job)
{
    return job->request_id;
}
const char *sdx_job_message_type(const sdx_job_t *job)
{
    return job->message_type;
}
const sdx_value_t *sdx_job_request(const sdx_job_t *job)
{
    return job->request;
}
sdx_worker_t *sdx_job_worker(sdx_job_t *job)
{
    return job->w;
}

static bool s_deadline_passed(const sdx_job_t *job)
{
    return job->deadline_ms > 0 && sdx_worker_now_ms() > job->deadline_ms + DEADLINE_GRACE_MS;
}

bool sdx_worker_cancelled(const sdx_job_t *job)
{
    return atomic_load_explicit(&job->cancel, memory_order_relaxed) || s_deadline_passed(job);
}

bool sdx_job_sleep(sdx_job_t *job, int64_t ms)
{
    int64_t end = sdx_worker_mono_ms() + ms;
    for (;;) {
        if (sdx_worker_cancelled(job))
            return false;
        int64_t left = end - sdx_worker_mono_ms();
        if (left <= 0)
            return true;
        if (left > 10)
            left = 10; /* cancel latency <= 10 ms */
        struct timespec ts = {.tv_sec = 0, .tv_nsec = left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int sdx_job_fail(sdx_job_t *job, sdx_error_t code, const char *field, const char *fmt, ...)
{
    job->failed = true;
    snprintf(job->err_code, sizeof job->err_code, "%s",
             sdx_error_name(code > SDX_ERR_NONE && code < SDX_ERR__COUNT ? code : SDX_ERR_INTERNAL));
    snprintf(job->err_field, sizeof job->err_field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->err_msg, sizeof job->err_msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ------------------------------------------------------------- replies */

static sdx_value_t *s_error_body(const char *code, const char *field, const char *message)
{
    sdx_value_t *body = sdx_value_map_new();
    bool known = false;
    sdx_error_t c = sdx_error_parse(code, &known);
    /* known codes get the table's retryable flag; others pass as named */
    sdx_value_t *err =
        known ? sdx_error_value(c, field && *field ? field : NULL, message) : sdx_value_map_new();
    if (!body || !err) {
        sdx_value_destroy(&body);
        sdx_value_destroy(&err);
        return NULL;
    }
    if (!known) {
        sdx_map_set_str(err, "code", code);
        sdx_map_set_str(err, "message", message);
        if (field && *field)
            sdx_map_set_str(err, "field", field);
    }
    sdx_map_set_bool(body, "success", false);
    sdx_map_set(body, "error", err);
    return body;
}

static void s_add_timing(sdx_value_t *body, const sdx_job_t *job, double worker_ms)
{
    sdx_value_t *t = sdx_value_map_new();
    if (!t)
        return;
    sdx_map_set_float(t, "worker_ms", worker_ms);
    /* time waiting for a free job thread inside the worker */
    sdx_map_set_int(t, "worker_queue_ms", job->started_mono - job->received_mono);
    sdx_map_set(body, "timing", t);
}

/* Run the job's handler and build the REPLY body (caller owns). */
static sdx_value_t *s_run_handler(sdx_job_t *job)
{
    job->started_mono = sdx_worker_mono_ms();
    double t0 = s_mono_ms_f();
    sdx_value_t *reply = NULL;
    int rc = -1;
    if (!sdx_worker_cancelled(job)) {
        reply = sdx_value_map_new();
        if (!reply) {
            sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "out of memory");
        } else {
            const sdx_value_t *data = sdx_map_get(job->request, "data");
            if (!data || data->type != SDX_MAP)
                data = job->empty;
            rc = job->handler->fn(job, data, reply);
        }
    }
    double worker_ms = s_mono_ms_f() - t0;
    sdx_value_t *body;
    if (rc == 0 && !job->failed) {
        body = sdx_value_map_new();
        if (!body) {
            sdx_value_destroy(&reply);
            return NULL;
        }
        sdx_map_set_bool(body, "success", true);
        sdx_map_set(body, "data", reply);
        reply = NULL;
    } else {
        sdx_value_destroy(&reply);
        if (!job->failed) {
            if (atomic_load(&job->cancel))
                sdx_job_fail(job, SDX_ERR_CANCELLED, NULL, "request %s was cancelled", job->request_id);
            else if (s_deadline_passed(job))
                sdx_job_fail(job, SDX_ERR_TIMEOUT, NULL, "request %s passed its deadline on the worker",
                             job->request_id);
            else
                sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "handler for %s failed without a reason",
                             job->message_type);
        }
        body = s_error_body(job->err_code, job->err_field, job->err_msg);
        if (!body)
            return NULL;
    }
    s_add_timing(body, job, worker_ms);
    return body;
}

/* ------------------------------------------------------ main-side sends */

static int s_send(sdx_worker_t *w, sdx_mdp_cmd_t cmd, const char *rid, const sdx_value_t *body)
{
    if (!w->sock)
        return -1;
    if (sdx_mdp_send(w->sock, NULL, 0, cmd, rid, body, true) != 0) {
        log_warn("send %s%s%s failed: %s", sdx_mdp_cmd_name(cmd), rid ? " " : "", rid ? rid : "",
                 zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* Send the outbox (see sdx_worker.outbox). */
static void s_outbox_flush(sdx_worker_t *w)
{
    for (int i = 0; i < w->nout; i++) {
        if (!w->sock) {
            free(w->outbox[i].body);
        } else if (sdx_mdp_send_take(w->sock, NULL, 0, SDX_MDP_REPLY, w->outbox[i].rid,
                                     w->outbox[i].body, w->outbox[i].len, true) != 0) {
            log_warn("send REPLY %s failed: %s", w->outbox[i].rid, zmq_strerror(errno));
        }
        w->outbox[i].body = NULL;
    }
    w->nout = 0;
}

/* A REPLY an inline handler made: into the outbox (sent at the end of this
   pass over the broker socket, or now when the outbox is full). */
static void s_reply_later(sdx_worker_t *w, const char *rid, const sdx_value_t *body)
{
    if (w->nout == (int)(sizeof w->outbox / sizeof w->outbox[0]))
        s_outbox_flush(w);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (sdx_msgpack_encode(body, &buf, &len) != 0) {
        s_send(w, SDX_MDP_REPLY, rid, body); /* out of memory: try the direct way */
        return;
    }
    snprintf(w->outbox[w->nout].rid, sizeof w->outbox[w->nout].rid, "%s", rid);
    w->outbox[w->nout].body = buf;
    w->outbox[w->nout].len = len;
    w->nout++;
}

static void s_send_error(sdx_worker_t *w, const char *rid, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_send_error(sdx_worker_t *w, const char *rid, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sdx_value_t *body = s_error_body(code, NULL, msg);
    if (body) {
        sdx_value_t *t = sdx_value_map_new();
        if (t) {
            sdx_map_set_float(t, "worker_ms", 0.0);
            sdx_map_set(body, "timing", t);
        }
        s_send(w, SDX_MDP_REPLY, rid, body);
    }
    sdx_value_destroy(&body);
}

static sdx_value_t *s_heartbeat_body(sdx_worker_t *w)
{
    sdx_value_t *b = sdx_value_map_new();
    sdx_value_t *m = sdx_value_array_new();
    if (!b || !m) {
        sdx_value_destroy(&b);
        sdx_value_destroy(&m);
        return NULL;
    }
    sdx_map_set_int(b, "in_flight", atomic_load(&w->in_flight));
    sdx_worker_models_to(w, m);
    sdx_map_set(b, "models", m);
    if (w->draining)
        sdx_map_set_bool(b, "draining", true);
    if (w->domain && w->domain->heartbeat)
        w->domain->heartbeat(w, b);
    return b;
}

static void s_send_heartbeat(sdx_worker_t *w)
{
    sdx_value_t *b = s_heartbeat_body(w);
    s_send(w, SDX_MDP_HEARTBEAT, NULL, b);
    sdx_value_destroy(&b);
}

/* Every message type this worker answers for real. */
static void s_capabilities_to(sdx_worker_t *w, sdx_value_t *arr);
/* An option's config key: "models-root" -> "models_root". */
static void s_config_key(const char *name, char *out, size_t len);

static void s_send_ready(sdx_worker_t *w)
{
    sdx_value_t *b = sdx_value_map_new();
    sdx_value_t *caps = sdx_value_array_new();
    sdx_value_t *models = sdx_value_array_new();
    if (!b || !caps || !models) {
        sdx_value_destroy(&b);
        sdx_value_destroy(&caps);
        sdx_value_destroy(&models);
        return;
    }
    sdx_map_set_str(b, "worker_id", w->id);
    sdx_map_set_str(b, "domain", w->domain->name);
    sdx_map_set_int(b, "gpu", w->gpu);
    s_capabilities_to(w, caps);
    sdx_map_set(b, "capabilities", caps);
    sdx_map_set_int(b, "concurrency", w->concurrency);
    sdx_map_set_int(b, "capacity", w->capacity);
    if (w->prefetch >= 0)
        sdx_map_set_int(b, "prefetch", w->prefetch);
    sdx_worker_models_to(w, models);
    sdx_map_set(b, "models", models);
    sdx_map_set_int(b, "pid", (int64_t)getpid());
    sdx_map_set_str(b, "host", w->host);
    sdx_map_set_str(b, "version", SDX_WORKER_VERSION);
    sdx_map_set_str(b, "device", w->device);
    if (w->gpu_name[0])
        sdx_map_set_str(b, "gpu_name", w->gpu_name);
    s_send(w, SDX_MDP_READY, NULL, b);
    sdx_value_destroy(&b);
}

/* ---------------------------------------------------------- job threads */

static void s_job_destroy(sdx_job_t **job_p)
{
    if (!job_p || !*job_p)
        return;
    sdx_value_destroy(&(*job_p)->request);
    sdx_value_destroy(&(*job_p)->empty);
    free(*job_p);
    *job_p = NULL;
}

static int s_push(void *push, uint8_t cmd, sdx_job_t *job, const sdx_value_t *body)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (body && sdx_msgpack_encode(body, &buf, &len) != 0)
        return -1;
    s_push_hdr_t hdr = {.cmd = cmd, .job = job};
    if (cmd == SDX_MDP_REPLY) {
        hdr.ok = body && sdx_map_bool(body, "success", false);
        snprintf(hdr.code, sizeof hdr.code, "%s",
                 hdr.ok ? "ok" : sdx_map_str(sdx_map_get(body, "error"), "code", "internal"));
    }
    int rc = zmq_send(push, &hdr, sizeof hdr, ZMQ_SNDMORE);
    if (rc >= 0)
        rc = zmq_send(push, buf ? buf : (uint8_t *)"", len, 0);
    free(buf);
    return rc < 0 ? -1 : 0;
}

int sdx_worker_progress(sdx_job_t *job, int64_t step, int64_t total, const char *msg)
{
    return sdx_worker_progress_rate(job, step, total, msg, 0);
}

int sdx_worker_progress_rate(sdx_job_t *job, int64_t step, int64_t total, const char *msg,
                             double it_per_s)
{
    sdx_value_t *b = sdx_value_map_new();
    if (!b)
        return -1;
    sdx_map_set_int(b, "step", step);
    sdx_map_set_int(b, "total", total);
    sdx_map_set_int(b, "elapsed_ms", sdx_worker_mono_ms() - job->started_mono);
    if (it_per_s > 0)
        sdx_map_set_float(b, "it_per_s", it_per_s);
    if (msg)
        sdx_map_set_str(b, "message", msg);
    int rc;
    if (job->push) {
        rc = s_push(job->push, SDX_MDP_PROGRESS, job, b);
    } else {
        /* inline handler: we are on the main thread */
        rc = job->gen == job->w->gen ? s_send(job->w, SDX_MDP_PROGRESS, job->request_id, b) : -1;
    }
    sdx_value_destroy(&b);
    return rc;
}

static void *s_job_thread(void *arg)
{
    sdx_worker_t *w = arg;
    void *push = zmq_socket(w->zctx, ZMQ_PUSH);
    int zero = 0;
    zmq_setsockopt(push, ZMQ_LINGER, &zero, sizeof zero);
    if (!push || zmq_connect(push, w->pull_ep) != 0) {
        log_error("job thread: cannot connect %s: %s", w->pull_ep, zmq_strerror(errno));
        if (push)
            zmq_close(push);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&w->qlock);
        while (!w->qhead && !w->threads_stop)
            pthread_cond_wait(&w->qcond, &w->qlock);
        sdx_job_t *job = w->qhead;
        if (!job) { /* stopping and nothing left */
            pthread_mutex_unlock(&w->qlock);
            break;
        }
        w->qhead = job->qnext;
        if (!w->qhead)
            w->qtail = NULL;
        atomic_fetch_sub(&w->queued, 1);
        pthread_mutex_unlock(&w->qlock);

        job->push = push;
        log_debug("%s %s: start", job->request_id, job->message_type);
        sdx_value_t *body = s_run_handler(job);
        if (!body)
            body = s_error_body("internal", NULL, "out of memory building the reply");
        /* after this push main owns the job again: do not touch it */
        if (s_push(push, SDX_MDP_REPLY, job, body) != 0)
            log_error("%s: cannot hand the reply to the main thread", job->request_id);
        sdx_value_destroy(&body);
    }
    zmq_close(push);
    return NULL;
}

/* -------------------------------------------------------------- dispatch */

static void s_active_add(sdx_worker_t *w, sdx_job_t *job)
{
    job->aprev = NULL;
    job->anext = w->active;
    if (w->active)
        w->active->aprev = job;
    w->active = job;
    atomic_fetch_add(&w->in_flight, 1);
}

static void s_active_remove(sdx_worker_t *w, sdx_job_t *job)
{
    if (job->aprev)
        job->aprev->anext = job->anext;
    else
        w->active = job->anext;
    if (job->anext)
        job->anext->aprev = job->aprev;
    job->anext = job->aprev = NULL;
    atomic_fetch_sub(&w->in_flight, 1);
}

static int s_h_ping(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    sdx_worker_t *w = job->w;
    sdx_map_set_bool(reply, "pong", true);
    sdx_map_set_str(reply, "worker_id", w->id);
    sdx_map_set_str(reply, "domain", w->domain->name);
    sdx_map_set_int(reply, "gpu", w->gpu);
    sdx_map_set_int(reply, "time_ms", sdx_worker_now_ms());
    const sdx_value_t *echo = sdx_map_get(data, "echo");
    if (echo)
        sdx_map_set(reply, "echo", sdx_value_clone(echo));
    return 0;
}

static int s_h_status(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    sdx_worker_status_to(job->w, reply);
    if (job->w->domain->status)
        job->w->domain->status(job->w, reply);
    return 0;
}

/* Row 0: ping, row 1: status; the message type is built per domain. */
static sdx_handler_t s_builtin[2] = {
    {NULL, s_h_ping, SDX_HANDLER_INLINE, "liveness check, answers pong"},
    {NULL, s_h_status, SDX_HANDLER_INLINE, "uptime, counters, gpu, loaded models"},
};
static char s_builtin_names[2][96];

static const sdx_handler_t *s_domain_handler(const sdx_worker_t *w, const char *type)
{
    for (const sdx_handler_t *h = w->domain->handlers; h && h->message_type; h++)
        if (strcmp(h->message_type, type) == 0)
            return h;
    return NULL;
}

/* The domain's own row wins over the runtime's ping/status. */
static const sdx_handler_t *s_find_handler(sdx_worker_t *w, const char *type)
{
    const sdx_handler_t *h = s_domain_handler(w, type);
    if (h)
        return h;
    for (int i = 0; i < 2; i++)
        if (strcmp(s_builtin[i].message_type, type) == 0)
            return &s_builtin[i];
    return NULL;
}

static void s_capabilities_to(sdx_worker_t *w, sdx_value_t *arr)
{
    for (int i = 0; i < 2; i++)
        if (!s_domain_handler(w, s_builtin[i].message_type))
            sdx_array_push(arr, sdx_value_str_new(s_builtin[i].message_type));
    for (const sdx_handler_t *h = w->domain->handlers; h && h->message_type; h++)
        sdx_array_push(arr, sdx_value_str_new(h->message_type));
}

void sdx_worker_status_to(sdx_worker_t *w, sdx_value_t *out)
{
    sdx_map_set_str(out, "worker_id", w->id);
    sdx_map_set_str(out, "domain", w->domain->name);
    sdx_map_set_int(out, "gpu", w->gpu);
    sdx_map_set_str(out, "device", w->device);
    if (w->gpu_name[0])
        sdx_map_set_str(out, "gpu_name", w->gpu_name);
    sdx_map_set_str(out, "host", w->host);
    sdx_map_set_int(out, "pid", (int64_t)getpid());
    sdx_map_set_str(out, "version", SDX_WORKER_VERSION);
    sdx_map_set_str(out, "broker", w->broker);
    sdx_map_set_int(out, "started_ms", w->started_unix_ms);
    sdx_map_set_float(out, "uptime_s", (sdx_worker_mono_ms() - w->started_mono) / 1000.0);
    sdx_map_set_int(out, "concurrency", w->concurrency);
    sdx_map_set_int(out, "capacity", w->capacity);
    sdx_map_set_int(out, "requests_served", atomic_load(&w->served));
    sdx_map_set_int(out, "requests_failed", atomic_load(&w->failed));
    sdx_map_set_int(out, "requests_cancelled", atomic_load(&w->cancelled));
    sdx_map_set_int(out, "requests_timed_out", atomic_load(&w->timeouts));
    sdx_map_set_int(out, "cancels_received", atomic_load(&w->cancels_received));
    /* counts the status request asking, too */
    sdx_map_set_int(out, "in_flight", atomic_load(&w->in_flight));
    sdx_map_set_int(out, "queued", atomic_load(&w->queued));
    sdx_map_set_int(out, "reconnects", atomic_load(&w->reconnects));
    sdx_map_set_int(out, "dropped_replies", atomic_load(&w->dropped_replies));
    sdx_map_set_bool(out, "draining", w->draining);
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    if (cvd)
        sdx_map_set_str(out, "cuda_visible_devices", cvd);
    sdx_gpu_info_t gi;
    if (w->gpu_probe && sdx_gpu_query(w->gpu_probe, w->gpu, &gi) == 0) {
        sdx_value_t *gm = sdx_value_map_new();
        if (gm) {
            sdx_map_set_int(gm, "total", gi.mem_total);
            if (gi.mem_free >= 0) {
                sdx_map_set_int(gm, "free", gi.mem_free);
                sdx_map_set_int(gm, "used", gi.mem_used);
            }
            if (gi.util_gpu >= 0)
                sdx_map_set_int(gm, "utilization_gpu", gi.util_gpu);
            sdx_map_set(out, "gpu_memory", gm);
        }
    }
    sdx_value_t *m = sdx_value_array_new();
    if (m) {
        sdx_worker_models_to(w, m);
        sdx_map_set(out, "loaded_models", m);
    }
    sdx_value_t *caps = sdx_value_array_new();
    if (caps) {
        s_capabilities_to(w, caps);
        sdx_map_set(out, "capabilities", caps);
    }
    sdx_value_t *opts = w->nopts ? sdx_value_map_new() : NULL;
    for (size_t i = 0; opts && i < w->nopts; i++) {
        sdx_value_t *one = w->opt_value[i] ? sdx_value_map_new() : NULL;
        if (!one)
            continue;
        char key[96];
        s_config_key(w->domain->options[i].name, key, sizeof key);
        sdx_map_set_str(one, "value", w->opt_value[i]);
        sdx_map_set_str(one, "from", w->opt_from[i]);
        sdx_map_set(opts, key, one);
    }
    if (opts)
        sdx_map_set(out, "options", opts); /* the domain's, and where each came from */
    sdx_value_t *planned = sdx_value_array_new();
    if (planned) {
        for (const char *const *p = w->domain->planned; p && *p; p++)
            sdx_array_push(planned, sdx_value_str_new(*p));
        sdx_map_set(out, "planned", planned);
        if (w->domain->planned_issue)
            sdx_map_set_str(out, "planned_issue", w->domain->planned_issue);
    }
}

/* Count a finished job's outcome. */
static void s_account(sdx_worker_t *w, const sdx_job_t *job, bool ok, const char *code, double ms)
{
    if (ok)
        atomic_fetch_add(&w->served, 1);
    else if (strcmp(code, "cancelled") == 0)
        atomic_fetch_add(&w->cancelled, 1);
    else if (strcmp(code, "timeout") == 0)
        atomic_fetch_add(&w->timeouts, 1);
    else
        atomic_fetch_add(&w->failed, 1);
    if (ok)
        log_debug("%s %s: ok %.2f ms", job->request_id, job->message_type, ms);
    else
        log_info("%s %s: %s", job->request_id, job->message_type, code);
}

/* REQUEST priority name -> 0 low .. 3 critical (normal when absent). */
static int s_priority(const char *p)
{
    if (!p)
        return 1;
    if (strcmp(p, "critical") == 0)
        return 3;
    if (strcmp(p, "high") == 0)
        return 2;
    return strcmp(p, "low") == 0 ? 0 : 1;
}

static void s_handle_request(sdx_worker_t *w, sdx_mdp_msg_t *msg)
{
    const char *rid = msg->request_id;
    if (!msg->body || msg->body->type != SDX_MAP) {
        s_send_error(w, rid, "invalid_request", "REQUEST %s has no body map", rid);
        atomic_fetch_add(&w->failed, 1);
        return;
    }
    const char *type = sdx_map_str(msg->body, "message_type", NULL);
    if (!type || !*type) {
        s_send_error(w, rid, "invalid_request", "REQUEST %s has no message_type", rid);
        atomic_fetch_add(&w->failed, 1);
        return;
    }
    if (w->draining) {
        s_send_error(w, rid, CODE_DRAINING,
                     "worker %s is shutting down and takes no new requests; retry", w->id);
        atomic_fetch_add(&w->failed, 1);
        return;
    }
    size_t dl = strlen(w->domain->name);
    if (strncmp(type, w->domain->name, dl) != 0 || type[dl] != '.') {
        s_send_error(w, rid, "unknown_message_type", "%s is not a %s message type (worker %s)",
                     type, w->domain->name, w->id);
        atomic_fetch_add(&w->failed, 1);
        return;
    }
    const sdx_handler_t *h = s_find_handler(w, type);
    if (!h) {
        bool planned = false;
        for (const char *const *p = w->domain->planned; p && *p && !planned; p++)
            planned = strcmp(*p, type) == 0;
        if (planned)
            s_send_error(w, rid, "not_available", "%s is not available on the %s worker: %s",
                         type, w->domain->name,
                         w->domain->planned_issue ? w->domain->planned_issue
                                                  : "it is not built yet");
        else
            s_send_error(w, rid, "unknown_message_type",
                         "%s is not a message type of the %s domain (see %s.status: "
                         "capabilities, planned)",
                         type, w->domain->name, w->domain->name);
        atomic_fetch_add(&w->failed, 1);
        return;
    }
    sdx_job_t *job = calloc(1, sizeof *job);
    if (!job) {
        s_send_error(w, rid, "internal", "out of memory");
        return;
    }
    job->w = w;
    snprintf(job->request_id, sizeof job->request_id, "%s", rid);
    snprintf(job->message_type, sizeof job->message_type, "%s", type);
    job->request = msg->body;
    msg->body = NULL;
    job->empty = sdx_value_map_new();
    job->handler = h;
    job->gen = w->gen;
    atomic_init(&job->cancel, false);
    job->deadline_ms = sdx_map_int(job->request, "deadline_ms", 0);
    job->prio = s_priority(sdx_map_str(job->request, "priority", NULL));
    job->received_mono = sdx_worker_mono_ms();
    if (!job->empty) {
        s_send_error(w, rid, "internal", "out of memory");
        s_job_destroy(&job);
        return;
    }
    s_active_add(w, job);
    if (h->flags & SDX_HANDLER_INLINE) {
        double t0 = s_mono_ms_f();
        sdx_value_t *body = s_run_handler(job);
        if (!body)
            body = s_error_body("internal", NULL, "out of memory building the reply");
        s_reply_later(w, job->request_id, body);
        bool ok = sdx_map_bool(body, "success", false);
        s_account(w, job, ok,
                  ok ? "ok" : sdx_map_str(sdx_map_get(body, "error"), "code", "internal"),
                  s_mono_ms_f() - t0);
        sdx_value_destroy(&body);
        s_active_remove(w, job);
        s_job_destroy(&job);
        return;
    }
    w->threaded++;
    /* Behind the jobs of its priority or higher, ahead of lower ones: the
       requests a worker holds beyond its job threads keep priority order. */
    pthread_mutex_lock(&w->qlock);
    if (!w->qtail || w->qtail->prio >= job->prio) {
        if (w->qtail)
            w->qtail->qnext = job;
        else
            w->qhead = job;
        w->qtail = job;
    } else {
        sdx_job_t **pp = &w->qhead;
        while (*pp && (*pp)->prio >= job->prio)
            pp = &(*pp)->qnext;
        job->qnext = *pp;
        *pp = job;
    }
    atomic_fetch_add(&w->queued, 1);
    pthread_cond_signal(&w->qcond);
    pthread_mutex_unlock(&w->qlock);
}

static void s_handle_cancel(sdx_worker_t *w, const char *rid)
{
    atomic_fetch_add(&w->cancels_received, 1);
    for (sdx_job_t *j = w->active; j; j = j->anext) {
        if (j->gen == w->gen && strcmp(j->request_id, rid) == 0) {
            atomic_store(&j->cancel, true);
            log_info("%s %s: CANCEL received, stopping it", rid, j->message_type);
            return;
        }
    }
    log_info("%s: CANCEL received for a request not running here (already answered)", rid);
}

/* Frames a job thread pushed: forward PROGRESS/REPLY of the current
   connection, finish the job on REPLY. */
static void s_drain_pull(sdx_worker_t *w)
{
    for (;;) {
        s_push_hdr_t hdr;
        int n = zmq_recv(w->pull, &hdr, sizeof hdr, ZMQ_DONTWAIT);
        if (n < 0)
            return;
        zmq_msg_t body;
        zmq_msg_init(&body);
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(w->pull, ZMQ_RCVMORE, &more, &ml);
        if (!more || zmq_msg_recv(&body, w->pull, 0) < 0 || n != (int)sizeof hdr) {
            zmq_msg_close(&body);
            log_error("malformed frame from a job thread");
            continue;
        }
        sdx_job_t *job = hdr.job;
        bool current = w->sock && job->gen == w->gen;
        if (current) {
            if (sdx_mdp_send_raw(w->sock, NULL, 0, (sdx_mdp_cmd_t)hdr.cmd, job->request_id,
                                 zmq_msg_data(&body), zmq_msg_size(&body), true) != 0)
                log_warn("%s: send %s failed: %s", job->request_id,
                         sdx_mdp_cmd_name((sdx_mdp_cmd_t)hdr.cmd), zmq_strerror(errno));
        }
        if (hdr.cmd == SDX_MDP_REPLY) {
            hdr.code[sizeof hdr.code - 1] = '\0';
            s_account(w, job, hdr.ok, hdr.code, (double)(sdx_worker_mono_ms() - job->started_mono));
            if (!current) {
                atomic_fetch_add(&w->dropped_replies, 1);
                log_warn("%s: reply dropped: the request came over an earlier broker connection",
                         job->request_id);
            }
            s_active_remove(w, job);
            s_job_destroy(&job);
            w->threaded--;
        }
        zmq_msg_close(&body);
    }
}

/* ------------------------------------------------------------ connection */

static void s_disconnect(sdx_worker_t *w, bool say_goodbye)
{
    if (!w->sock)
        return;
    s_outbox_flush(w); /* replies of this connection go out before it closes */
    if (say_goodbye)
        s_send(w, SDX_MDP_DISCONNECT, NULL, NULL);
    zmq_close(w->sock);
    w->sock = NULL;
}

static int s_connect(sdx_worker_t *w)
{
    w->sock = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!w->sock) {
        log_error("zmq_socket: %s", zmq_strerror(errno));
        return -1;
    }
    int linger = 1000; /* give DISCONNECT / last replies a second on close */
    zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    int hwm = 100000;
    zmq_setsockopt(w->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(w->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    int ivl = 100, ivl_max = 2000;
    zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    char cerr[600];
    if (w->curve_cert[0] &&
        sdx_curve_client(w->sock, w->curve_cert, w->curve_broker_key, cerr, sizeof cerr) != 0) {
        log_error("curve: %s", cerr);
        zmq_close(w->sock);
        w->sock = NULL;
        return -1;
    }
    if (zmq_connect(w->sock, w->broker) != 0) {
        log_error("connect %s: %s", w->broker, zmq_strerror(errno));
        zmq_close(w->sock);
        w->sock = NULL;
        return -1;
    }
    w->gen++;
    w->heard = false;
    s_send_ready(w);
    int64_t now = sdx_worker_mono_ms();
    w->last_rx = now;
    w->next_hb = now + SDX_MDP_HEARTBEAT_MS;
    log_info("connected to %s (connection %u), READY sent", w->broker, w->gen);
    return 0;
}

/* Wait up to ms while still serving job threads' frames (their replies are
   dropped: no broker) and watching for signals. */
static void s_wait(sdx_worker_t *w, int ms)
{
    int64_t end = sdx_worker_mono_ms() + ms;
    while (!s_signals) {
        int64_t left = end - sdx_worker_mono_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t it = {.socket = w->pull, .events = ZMQ_POLLIN};
        zmq_poll(&it, 1, (long)left);
        s_drain_pull(w);
    }
}

static void s_reconnect(sdx_worker_t *w, const char *why)
{
    s_disconnect(w, false);
    atomic_fetch_add(&w->reconnects, 1);
    log_warn("broker %s: %s; reconnecting in %d ms", w->broker, why, w->backoff_ms);
    s_wait(w, w->backoff_ms);
    w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2;
    if (!s_signals || !w->draining)
        s_connect(w);
}

/* Whether a zmq socket has a message waiting. Reading ZMQ_EVENTS also
   processes the socket's pending commands, which re-arms its ZMQ_FD. */
static bool s_readable(void *sock)
{
    int ev = 0;
    size_t len = sizeof ev;
    return zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLIN);
}

/* Handle what the broker sent, until its socket says nothing is waiting:
   the last call on the socket is then a ZMQ_EVENTS check made after every
   send, which is what makes blocking on its ZMQ_FD safe (edge-triggered). */
#define BROKER_BUDGET 1000 /* messages handled before the main loop looks around */

/* One pass: messages until none is waiting (a non-blocking receive finds
   nothing: no ZMQ_EVENTS check per message, which costs libzmq two system
   calls), a (re)connection, or the budget is spent. Inline replies collect
   in the outbox. */
static void s_broker_pass(sdx_worker_t *w, int *budget)
{
    for (; *budget < BROKER_BUDGET && w->sock; (*budget)++) {
        sdx_mdp_msg_t msg;
        memset(&msg, 0, sizeof msg);
        char err[256] = "";
        int rc = sdx_mdp_recv(w->sock, false, &msg, true, err, sizeof err);
        if (rc == 1)
            return;
        if (rc < 0) {
            if (!err[0]) { /* a socket error: poll again */
                sdx_mdp_msg_clear(&msg);
                *budget += BROKER_BUDGET / 10; /* bounds the retries of s_handle_broker */
                return;
            }
            log_warn("malformed message from the broker: %s", err);
            /* a REQUEST whose body cannot be read is answered, not dropped:
               the broker frees the slot now instead of at its deadline */
            if (msg.bad_body && msg.cmd == SDX_MDP_REQUEST)
                s_send_error(w, msg.request_id, "invalid_request",
                             "the worker could not decode this request from the broker: %s", err);
            sdx_mdp_msg_clear(&msg);
            continue;
        }
        w->last_rx = sdx_worker_mono_ms();
        if (msg.cmd != SDX_MDP_DISCONNECT) {
            w->heard = true;
            w->backoff_ms = BACKOFF_MIN_MS;
        }
        switch (msg.cmd) {
        case SDX_MDP_REQUEST:
            s_handle_request(w, &msg);
            break;
        case SDX_MDP_HEARTBEAT:
            break;
        case SDX_MDP_CANCEL:
            s_handle_cancel(w, msg.request_id);
            break;
        case SDX_MDP_DISCONNECT:
            sdx_mdp_msg_clear(&msg);
            if (!w->heard) {
                /* DISCONNECT as the answer to READY: the broker refuses this
                   worker (e.g. a domain its catalogue does not route to
                   workers). Back off rather than spin. */
                log_warn("broker refused the registration (DISCONNECT after READY)");
                s_reconnect(w, "registration refused");
                return;
            }
            log_warn("broker sent DISCONNECT (restarted?): re-registering");
            s_disconnect(w, false);
            atomic_fetch_add(&w->reconnects, 1);
            if (!w->draining)
                s_connect(w);
            return;
        default:
            log_warn("unexpected %s from the broker", sdx_mdp_cmd_name(msg.cmd));
            break;
        }
        sdx_mdp_msg_clear(&msg);
    }
}

/* Passes until nothing is waiting, sending the outbox after each: the last
   call on the socket is a ZMQ_EVENTS check made after every send, which is
   what makes blocking on its ZMQ_FD safe (edge-triggered). True when the
   budget ran out with messages maybe still waiting (the main loop must then
   come back before it blocks). */
static bool s_handle_broker(sdx_worker_t *w)
{
    int budget = 0;
    for (;;) {
        s_broker_pass(w, &budget);
        s_outbox_flush(w);
        if (!w->sock || budget >= BROKER_BUDGET || !s_readable(w->sock))
            break;
    }
    return w->sock && budget >= BROKER_BUDGET;
}

/* ------------------------------------------------------------- main loop */

/* Jobs still waiting for a job thread (prefetched ones) go back to the
   broker as worker_lost, which it re-dispatches to another worker. */
static void s_return_queued(sdx_worker_t *w)
{
    pthread_mutex_lock(&w->qlock);
    sdx_job_t *list = w->qhead;
    w->qhead = w->qtail = NULL;
    atomic_store(&w->queued, 0);
    pthread_mutex_unlock(&w->qlock);
    while (list) {
        sdx_job_t *job = list;
        list = job->qnext;
        if (job->gen == w->gen)
            s_send_error(w, job->request_id, CODE_DRAINING,
                         "worker %s is shutting down before it started %s; retry", w->id,
                         job->request_id);
        s_account(w, job, false, CODE_DRAINING, 0);
        s_active_remove(w, job);
        s_job_destroy(&job);
        w->threaded--;
    }
}

static void s_begin_drain(sdx_worker_t *w)
{
    w->draining = true;
    s_return_queued(w);
    log_info("stop requested: finishing %ld request(s) in flight, then DISCONNECT",
             (long)atomic_load(&w->in_flight));
    s_send_heartbeat(w); /* tells the broker we are draining */
}

static void s_cancel_all(sdx_worker_t *w)
{
    log_warn("second stop signal: cancelling %ld request(s) in flight",
             (long)atomic_load(&w->in_flight));
    for (sdx_job_t *j = w->active; j; j = j->anext)
        atomic_store(&j->cancel, true);
}

static int s_run(sdx_worker_t *w)
{
    w->backoff_ms = BACKOFF_MIN_MS;
    if (s_connect(w) != 0)
        return 1;
    int seen_signals = 0;
    for (;;) {
        if (s_signals != seen_signals) {
            if (seen_signals == 0)
                s_begin_drain(w);
            if (s_signals >= 2 && seen_signals < 2)
                s_cancel_all(w);
            seen_signals = s_signals;
        }
        if (w->draining && !w->active)
            break;
        if (!w->sock) {
            if (w->draining) { /* no broker to reply to: wait for the jobs */
                s_wait(w, 100);
                continue;
            }
            s_reconnect(w, "connection failed");
            continue;
        }
        /* job threads' frames first: forwarding them sends on the DEALER */
        if (w->threaded > 0)
            s_drain_pull(w);
        int64_t now = sdx_worker_mono_ms();
        if (now >= w->next_hb) {
            if (now - w->last_rx > (int64_t)SDX_MDP_LIVENESS * SDX_MDP_HEARTBEAT_MS) {
                if (w->draining) {
                    s_disconnect(w, false);
                    continue;
                }
                s_reconnect(w, "no heartbeat for 3 intervals");
                continue;
            }
            s_send_heartbeat(w);
            w->next_hb = now + SDX_MDP_HEARTBEAT_MS;
        }
        void *sock = w->sock;
        bool more = s_handle_broker(w); /* last: ends with a ZMQ_EVENTS check after all sends */
        if (more || w->sock != sock || !w->sock || s_signals != seen_signals)
            continue; /* more waiting, reconnected, or a signal: look again before blocking */
        /* Block on the sockets' file descriptors: one poll() per wake-up
           instead of zmq_poll's several, which matters for small requests.
           The pull socket only while job threads have work. */
        int fds[2] = {-1, -1};
        size_t fl = sizeof fds[0];
        zmq_getsockopt(w->sock, ZMQ_FD, &fds[0], &fl);
        zmq_getsockopt(w->pull, ZMQ_FD, &fds[1], &fl);
        struct pollfd pfd[2] = {{.fd = fds[0], .events = POLLIN}, {.fd = fds[1], .events = POLLIN}};
        long timeout = (long)(w->next_hb - sdx_worker_mono_ms());
        if (timeout < 0)
            timeout = 0;
        if (poll(pfd, w->threaded > 0 ? 2 : 1, (int)timeout) < 0 && errno != EINTR) {
            log_error("poll: %s", strerror(errno));
            return 1;
        }
    }
    s_disconnect(w, true);
    log_info("stopped cleanly (%ld served)", (long)atomic_load(&w->served));
    return 0;
}

/* ---------------------------------------------------------------- config */

/* Load a YAML document as an sdx_value tree (scalars as strings). */
static sdx_value_t *s_yaml_node(yaml_parser_t *p, yaml_event_t *first, int depth, char *err,
                                size_t err_len);

static sdx_value_t *s_yaml_collection(yaml_parser_t *p, bool is_map, int depth, char *err,
                                      size_t err_len)
{
    sdx_value_t *v = is_map ? sdx_value_map_new() : sdx_value_array_new();
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(p, &ev)) {
            snprintf(err, err_len, "yaml: %s at line %zu", p->problem ? p->problem : "error",
                     p->problem_mark.line + 1);
            sdx_value_destroy(&v);
            return NULL;
        }
        if (ev.type == (is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT)) {
            yaml_event_delete(&ev);
            return v;
        }
        if (is_map) {
            if (ev.type != YAML_SCALAR_EVENT) {
                snprintf(err, err_len, "yaml: non-scalar key at line %zu", ev.start_mark.line + 1);
                yaml_event_delete(&ev);
                sdx_value_destroy(&v);
                return NULL;
            }
            char *key = strdup((const char *)ev.data.scalar.value);
            yaml_event_delete(&ev);
            if (!yaml_parser_parse(p, &ev)) {
                free(key);
                snprintf(err, err_len, "yaml: %s", p->problem ? p->problem : "error");
                sdx_value_destroy(&v);
                return NULL;
            }
            sdx_value_t *val = s_yaml_node(p, &ev, depth + 1, err, err_len);
            if (!val || !key) {
                free(key);
                sdx_value_destroy(&val);
                sdx_value_destroy(&v);
                return NULL;
            }
            sdx_map_set(v, key, val);
            free(key);
        } else {
            sdx_value_t *val = s_yaml_node(p, &ev, depth + 1, err, err_len);
            if (!val) {
                sdx_value_destroy(&v);
                return NULL;
            }
            sdx_array_push(v, val);
        }
    }
}

static sdx_value_t *s_yaml_node(yaml_parser_t *p, yaml_event_t *ev, int depth, char *err,
                                size_t err_len)
{
    sdx_value_t *v = NULL;
    if (depth > 32) {
        snprintf(err, err_len, "yaml: nested too deeply");
    } else if (ev->type == YAML_SCALAR_EVENT) {
        v = sdx_value_strn_new((const char *)ev->data.scalar.value, ev->data.scalar.length);
    } else if (ev->type == YAML_MAPPING_START_EVENT || ev->type == YAML_SEQUENCE_START_EVENT) {
        bool is_map = ev->type == YAML_MAPPING_START_EVENT;
        yaml_event_delete(ev);
        return s_yaml_collection(p, is_map, depth, err, err_len);
    } else {
        snprintf(err, err_len, "yaml: unsupported node (aliases are not supported) at line %zu",
                 ev->start_mark.line + 1);
    }
    yaml_event_delete(ev);
    return v;
}

/* The first document's mapping from p (input already set); name stands for
   the file in errors. */
static sdx_value_t *s_yaml_parse(yaml_parser_t *p, const char *name, char *err, size_t err_len)
{
    sdx_value_t *root = NULL;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(p, &ev)) {
            snprintf(err, err_len, "%s: yaml: %s at line %zu", name,
                     p->problem ? p->problem : "error", p->problem_mark.line + 1);
            break;
        }
        if (ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (ev.type == YAML_MAPPING_START_EVENT) {
            root = s_yaml_node(p, &ev, 0, err, err_len);
            break;
        }
        yaml_event_delete(&ev);
    }
    if (!root && !err[0])
        snprintf(err, err_len, "%s: expected a YAML mapping", name);
    return root;
}

static sdx_value_t *s_yaml_load(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        fclose(f);
        snprintf(err, err_len, "%s: cannot initialise the YAML parser", path);
        return NULL;
    }
    yaml_parser_set_input_file(&p, f);
    sdx_value_t *root = s_yaml_parse(&p, path, err, err_len);
    yaml_parser_delete(&p);
    fclose(f);
    return root;
}

sdx_value_t *sdx_worker_yaml_parse(const char *text, size_t len, const char *name, char *err,
                                   size_t err_len)
{
    if (err_len)
        err[0] = '\0';
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        snprintf(err, err_len, "%s: cannot initialise the YAML parser", name);
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    sdx_value_t *root = s_yaml_parse(&p, name, err, err_len);
    yaml_parser_delete(&p);
    return root;
}

typedef struct {
    char domain[64];
    char broker[512];
    char id[96];
    char log_level[16];
    int gpu;
    int concurrency;
    int prefetch;
    int capacity; /* 0: unset; -2: an invalid config value */
    char curve_cert[512];       /* this worker's key pair (FILE + FILE_secret), "" : plaintext */
    char curve_broker_key[512]; /* the broker's public certificate */
} s_opts_t;

/* Config keys of the runtime's own options (the rest belong to domains). */
static const char *const s_runtime_keys[] = {
    "domain",    "broker",    "gpu",        "concurrency",      "prefetch", "capacity",
    "id",        "log_level", "curve_cert", "curve_broker_key", "count", NULL,
};

/* The --config file, kept while the options are resolved: the maps that
   hold this worker's keys, in the order they apply (a later one wins). */
typedef struct {
    const char *path;
    sdx_value_t *root;           /* owned */
    const sdx_value_t *layer[3]; /* flat keys, `worker:` defaults, our `workers:` entry */
    size_t nlayers;
    const sdx_value_t *entry; /* our `workers:` entry, NULL if none */
} s_config_t;

static void s_config_free(s_config_t *c)
{
    sdx_value_destroy(&c->root);
    memset(c, 0, sizeof *c);
}

/* Turn a bind endpoint from a broker config into one to connect to. */
static void s_connectable(const char *bind_ep, char *out, size_t len)
{
    const char *star = strstr(bind_ep, "://*:");
    const char *any = strstr(bind_ep, "://0.0.0.0:");
    if (star)
        snprintf(out, len, "%.*s://127.0.0.1:%s", (int)(star - bind_ep), bind_ep, star + 5);
    else if (any)
        snprintf(out, len, "%.*s://127.0.0.1:%s", (int)(any - bind_ep), bind_ep, any + 11);
    else
        snprintf(out, len, "%s", bind_ep);
}

static void s_opts_apply_map(s_opts_t *o, const sdx_value_t *m, bool set_domain)
{
    const char *s;
    if (set_domain && (s = sdx_map_str(m, "domain", NULL)))
        snprintf(o->domain, sizeof o->domain, "%s", s);
    if ((s = sdx_map_str(m, "broker", NULL)))
        snprintf(o->broker, sizeof o->broker, "%s", s);
    if ((s = sdx_map_str(m, "id", NULL)))
        snprintf(o->id, sizeof o->id, "%s", s);
    if ((s = sdx_map_str(m, "log_level", NULL)))
        snprintf(o->log_level, sizeof o->log_level, "%s", s);
    if ((s = sdx_map_str(m, "curve_cert", NULL)))
        snprintf(o->curve_cert, sizeof o->curve_cert, "%s", s);
    if ((s = sdx_map_str(m, "curve_broker_key", NULL)))
        snprintf(o->curve_broker_key, sizeof o->curve_broker_key, "%s", s);
    if ((s = sdx_map_str(m, "gpu", NULL)))
        o->gpu = atoi(s);
    if ((s = sdx_map_str(m, "concurrency", NULL)))
        o->concurrency = atoi(s);
    if ((s = sdx_map_str(m, "prefetch", NULL)))
        o->prefetch = atoi(s);
    if ((s = sdx_map_str(m, "capacity", NULL))) {
        char *end;
        long v = strtol(s, &end, 10);
        o->capacity = *s && !*end && v >= 1 && v <= SDX_MDP_MAX_CAPACITY ? (int)v : -2;
    }
}

/* The worker's config file: flat keys (domain, broker, gpu, concurrency, id,
   log_level, and the domain's option keys), or a fleet file
   (deploy/fleet.yaml): broker.backend gives the endpoint, `worker:` holds
   defaults, and the `workers:` entry with our domain (and gpu, when several)
   overrides them. Fills o with the runtime's options and c with the layers
   the domain's options are looked up in (c->root stays loaded). */
static void s_config_layers(s_config_t *c, s_opts_t *o, const char *domain_hint, int gpu_hint);

static int s_config_load(s_config_t *c, s_opts_t *o, const char *path, const char *domain_hint,
                         int gpu_hint, char *err, size_t err_len)
{
    memset(c, 0, sizeof *c);
    c->path = path;
    c->root = s_yaml_load(path, err, err_len);
    if (!c->root)
        return -1;
    s_config_layers(c, o, domain_hint, gpu_hint);
    return 0;
}

int sdx_worker_config_text(const char *text, size_t len, const char *name,
                           const char *domain_hint, int gpu_hint, char *err, size_t err_len)
{
    s_config_t c = {.path = name};
    s_opts_t o = {.gpu = -1, .concurrency = 0, .prefetch = -1};
    c.root = sdx_worker_yaml_parse(text, len, name, err, err_len);
    if (!c.root)
        return -1;
    s_config_layers(&c, &o, domain_hint, gpu_hint);
    int rc = o.capacity == -2 ? -1 : 0;
    if (rc)
        snprintf(err, err_len, "%s: capacity wants 1..%d", name, SDX_MDP_MAX_CAPACITY);
    s_config_free(&c);
    return rc;
}

/* Fill o and c's layers from c->root (see s_config_load). */
static void s_config_layers(s_config_t *c, s_opts_t *o, const char *domain_hint, int gpu_hint)
{
    const sdx_value_t *root = c->root;
    s_opts_apply_map(o, root, true);
    c->layer[c->nlayers++] = root;
    const sdx_value_t *broker = sdx_map_get(root, "broker");
    if (broker && broker->type == SDX_MAP) {
        const char *be = sdx_map_str(broker, "backend", NULL);
        if (be)
            s_connectable(be, o->broker, sizeof o->broker);
    }
    const sdx_value_t *defaults = sdx_map_get(root, "worker");
    if (defaults && defaults->type == SDX_MAP) {
        s_opts_apply_map(o, defaults, true);
        c->layer[c->nlayers++] = defaults;
    }
    const char *dom = domain_hint && *domain_hint ? domain_hint : o->domain;
    const sdx_value_t *list = sdx_map_get(root, "workers");
    for (size_t i = 0; dom && *dom && i < sdx_array_len(list); i++) {
        const sdx_value_t *e = sdx_array_at(list, i);
        if (!e || e->type != SDX_MAP || strcmp(sdx_map_str(e, "domain", ""), dom) != 0)
            continue;
        const char *g = sdx_map_str(e, "gpu", NULL);
        if (gpu_hint >= 0 && g && atoi(g) != gpu_hint)
            continue;
        s_opts_apply_map(o, e, true);
        c->layer[c->nlayers++] = e;
        c->entry = e;
        break;
    }
}

/* ------------------------------------------------------- domain options */

#define S_DOMAIN_OPT 256 /* getopt val of the first domain option */

/* The runtime's own flags; domain options are appended at run time. */
static const struct option s_longopts[] = {
    {"domain", required_argument, NULL, 'd'},
    {"broker", required_argument, NULL, 'b'},
    {"gpu", required_argument, NULL, 'g'},
    {"config", required_argument, NULL, 'c'},
    {"concurrency", required_argument, NULL, 'n'},
    {"prefetch", required_argument, NULL, 'p'},
    {"capacity", required_argument, NULL, 'C'},
    {"id", required_argument, NULL, 'i'},
    {"log-level", required_argument, NULL, 'l'},
    {"curve-cert", required_argument, NULL, 'K'},
    {"curve-broker-key", required_argument, NULL, 'B'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* A domain option given on the command line (the last one given wins). */
typedef struct {
    const char *name;
    const char *value; /* borrowed from argv, or "true" for a switch */
} s_flag_t;

/* "models-root" -> "models_root" */
static void s_config_key(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s", name);
    for (char *p = out; *p; p++)
        if (*p == '-')
            *p = '_';
}

static const sdx_option_t *s_domain_option(const sdx_domain_t *d, const char *name)
{
    for (const sdx_option_t *o = d ? d->options : NULL; o && o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

static size_t s_noptions(const sdx_domain_t *d)
{
    size_t n = 0;
    for (const sdx_option_t *o = d->options; o && o->name; o++)
        n++;
    return n;
}

/* getopt's table: the runtime's flags, then every domain's options (each
   name once). Caller frees. */
static struct option *s_longopts_build(void)
{
    size_t nrt = sizeof s_longopts / sizeof s_longopts[0] - 1;
    size_t total = nrt;
    const sdx_domain_t *d;
    for (size_t i = 0; (d = sdx_worker_domain_at(i)); i++)
        total += s_noptions(d);
    struct option *lo = calloc(total + 1, sizeof *lo);
    if (!lo)
        return NULL;
    memcpy(lo, s_longopts, nrt * sizeof *lo);
    size_t n = nrt;
    for (size_t i = 0; (d = sdx_worker_domain_at(i)); i++) {
        for (const sdx_option_t *o = d->options; o && o->name; o++) {
            int has_arg = o->has_value ? required_argument : no_argument;
            bool seen = false;
            for (size_t j = 0; j < n && !seen; j++) {
                if (strcmp(lo[j].name, o->name) != 0)
                    continue;
                /* programmer errors: a domain shadowing a runtime flag, or
                   two domains disagreeing on one option */
                assert(j >= nrt && "a domain option has the name of a runtime flag");
                assert(lo[j].has_arg == has_arg && "domains disagree on an option's has_value");
                seen = true;
            }
            if (!seen) {
                lo[n] = (struct option){o->name, has_arg, NULL, S_DOMAIN_OPT + (int)n};
                n++;
            }
        }
    }
    return lo;
}

/* "true"/"false" for a switch's config or environment text, NULL if neither. */
static const char *s_switch_value(const char *v)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return "true";
        if (strcasecmp(v, no[i]) == 0)
            return "false";
    }
    return NULL;
}

/* Where an option's value came from, for error messages:
   "--max-models 0", "max_models: 0 in FILE", "SDXL_MAX_MODELS=0",
   "--max-models 1 (the default)". */
static void s_option_origin(const sdx_option_t *o, const char *value, const char *from,
                            const char *config_path, char *out, size_t len)
{
    char key[96];
    s_config_key(o->name, key, sizeof key);
    if (strcmp(from, "config") == 0)
        snprintf(out, len, "%s: %s in %s", key, value, config_path ? config_path : "--config");
    else if (strcmp(from, "env") == 0)
        snprintf(out, len, "%s=%s", o->env, value);
    else if (strcmp(from, "default") != 0)
        snprintf(out, len, "--%s%s%s", o->name, o->has_value ? " " : "", o->has_value ? value : "");
    else /* say how to set it */
        snprintf(out, len, "--%s%s%s (the default; set --%s, config key %s%s%s)", o->name,
                 o->has_value ? " " : "", o->has_value ? value : "", o->name, key,
                 o->env ? " or " : "", o->env ? o->env : "");
}

/* Resolve every option of the domain: flag > config > environment >
   default. value[i]/from[i] (parallel to d->options, zeroed by the caller)
   receive a malloc'd text and a static source name, NULL when unset. */
static int s_options_resolve(const sdx_domain_t *d, const s_flag_t *flags, size_t nflags,
                             const s_config_t *cfg, char **value, const char **from, char *err,
                             size_t err_len)
{
    size_t i = 0;
    for (const sdx_option_t *o = d->options; o && o->name; o++, i++) {
        const char *v = NULL, *src = NULL;
        for (size_t k = nflags; !v && k-- > 0;)
            if (strcmp(flags[k].name, o->name) == 0) {
                v = flags[k].value;
                src = "flag";
            }
        char key[96];
        s_config_key(o->name, key, sizeof key);
        for (size_t l = cfg ? cfg->nlayers : 0; !v && l-- > 0;) {
            const sdx_value_t *c = sdx_map_get(cfg->layer[l], key);
            if (!c)
                continue;
            if (c->type != SDX_STR) {
                snprintf(err, err_len, "--config %s: %s wants a single value, not a %s", cfg->path,
                         key, c->type == SDX_MAP ? "map" : "list");
                return -1;
            }
            v = c->u.str.ptr;
            src = "config";
        }
        const char *e = !v && o->env ? getenv(o->env) : NULL;
        if (e && *e) {
            v = e;
            src = "env";
        }
        if (!v && o->dflt) {
            v = o->dflt;
            src = "default";
        }
        if (!v)
            continue;
        if (!o->has_value && strcmp(src, "flag") != 0) {
            const char *b = s_switch_value(v);
            if (!b) {
                char where[700];
                s_option_origin(o, v, src, cfg ? cfg->path : NULL, where, sizeof where);
                snprintf(err, err_len, "%s: a switch: true or false", where);
                return -1;
            }
            v = b;
        }
        if (!(value[i] = strdup(v))) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        from[i] = src;
    }
    return 0;
}

/* A config map's keys that neither the runtime nor the domain knows: a
   warning (a misspelt key would otherwise be silently ignored). */
static void s_config_warn_unknown(const sdx_value_t *m, const sdx_domain_t *d, const char *path)
{
    for (size_t i = 0; m && m->type == SDX_MAP && i < m->u.map.len; i++) {
        const char *key = m->u.map.items[i].key;
        if (m->u.map.items[i].val->type != SDX_STR)
            continue; /* a fleet file's broker:, worker:, workers: */
        bool known = false;
        for (const char *const *k = s_runtime_keys; *k && !known; k++)
            known = strcmp(*k, key) == 0;
        for (const sdx_option_t *o = d->options; o && o->name && !known; o++) {
            char ck[96];
            s_config_key(o->name, ck, sizeof ck);
            known = strcmp(ck, key) == 0;
        }
        if (!known)
            fprintf(stderr,
                    "sdxl-worker: warning: --config %s: unknown key '%s' for the %s domain "
                    "(ignored; sdxl-worker --domain %s --help lists the keys)\n",
                    path, key, d->name, d->name);
    }
}

/* Every domain option given on the command line must be one of this
   domain's. */
static int s_flags_check(const sdx_domain_t *d, const s_flag_t *flags, size_t nflags, char *err,
                         size_t err_len)
{
    for (size_t k = 0; k < nflags; k++) {
        if (s_domain_option(d, flags[k].name))
            continue;
        char owners[256] = "";
        const sdx_domain_t *o;
        for (size_t i = 0; (o = sdx_worker_domain_at(i)); i++)
            if (s_domain_option(o, flags[k].name))
                snprintf(owners + strlen(owners), sizeof owners - strlen(owners), "%s%s",
                         owners[0] ? ", " : "", o->name);
        snprintf(err, err_len, "--%s is not an option of the %s domain (it is one of: %s)",
                 flags[k].name, d->name, owners);
        return -1;
    }
    return 0;
}

static void s_usage(FILE *f)
{
    fprintf(
        f,
        "usage: sdxl-worker --domain NAME --broker ENDPOINT [--gpu N] [--config FILE]\n"
        "                   [--concurrency N] [--capacity N] [--prefetch N] [--id ID]\n"
        "                   [--log-level error|warn|info|debug]\n"
        "                   [domain options]\n"
        "  --domain       device, model, conditioning, scheduler, inference,\n"
        "                 postprocessing or test\n"
        "  --broker       the broker's backend, e.g. tcp://127.0.0.1:5556 or ipc:///run/sdxl/be\n"
        "                 (default tcp://127.0.0.1:5556)\n"
        "  --gpu N        serve on GPU N (host index, as nvidia-smi numbers them)\n"
        "  --config FILE  YAML: flat keys named like the flags ('-' written '_'), or a fleet\n"
        "                 file (deploy/fleet.yaml); flags override the file\n"
        "  --concurrency  requests run at once (job threads, default 1)\n"
        "  --capacity N   requests the broker keeps in flight here (READY capacity,\n"
        "                 1..1024; default: the domain's, device/scheduler/test 32, model 8,\n"
        "                 conditioning/inference/postprocessing 1; at least --concurrency)\n"
        "  --prefetch N   older form: capacity = --concurrency + N (0..64)\n"
        "  --id           worker id (default <domain>-<host>-<pid>)\n"
        "  --curve-cert FILE        CURVE: this worker's key pair (FILE and FILE_secret,\n"
        "                           sdxl-cli keygen); its FILE goes in the broker's workers\n"
        "                           allow-list\n"
        "  --curve-broker-key FILE  CURVE: the broker's public certificate (both or neither)\n");
}

/* The domain's options for --help. */
static void s_usage_domain(FILE *f, const sdx_domain_t *d)
{
    if (!d->options || !d->options[0].name)
        return;
    fprintf(f, "\noptions of the %s domain (flag > --config key > environment > default):\n",
            d->name);
    for (const sdx_option_t *o = d->options; o->name; o++) {
        char left[128], key[96];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->has_value ? " " : "",
                 o->has_value ? (o->metavar ? o->metavar : "VALUE") : "");
        s_config_key(o->name, key, sizeof key);
        fprintf(f, "  %-22s %s\n", left, o->help ? o->help : "");
        fprintf(f, "  %-22s config key %s%s%s", "", key, o->env ? ", env " : "",
                o->env ? o->env : "");
        if (o->dflt)
            fprintf(f, ", default %s", o->dflt[0] ? o->dflt : "\"\" (none)");
        fputc('\n', f);
    }
}

/* Select --gpu N for this process: validate it and restrict CUDA to it. */
static int s_select_gpu(sdx_worker_t *w, char *err, size_t err_len)
{
    int n = w->gpu_requested;
    if (n < 0) {
        sdx_worker_set_gpu(w, -1, "cpu", NULL);
        return 0;
    }
    sdx_gpu_t *g = sdx_gpu_new(false); /* NVML only: no cuInit in this process */
    if (!g) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int count = sdx_gpu_count(g);
    bool nvml = strcmp(sdx_gpu_backend(g), "nvml") == 0;
    char why[256];
    snprintf(why, sizeof why, "%s", sdx_gpu_error(g));
    if (!nvml)
        count = sdx_gpu_cuda_count_isolated();
    if (count <= 0 || n >= count) {
        if (count <= 0)
            snprintf(err, err_len, "--gpu %d: this host has no GPU (%s)", n,
                     why[0] ? why : "no devices");
        else
            snprintf(err, err_len, "--gpu %d: no such GPU, this host has %d (0..%d)", n, count,
                     count - 1);
        sdx_gpu_destroy(&g);
        return -1;
    }
    sdx_gpu_info_t info;
    char visible[128];
    if (nvml && sdx_gpu_query(g, n, &info) == 0 && info.uuid[0]) {
        snprintf(visible, sizeof visible, "%s", info.uuid);
    } else {
        /* CUDA order: pick the n-th of an existing restriction, if any */
        const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
        snprintf(visible, sizeof visible, "%d", n);
        if (cvd && *cvd) {
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s", cvd);
            char *save = NULL;
            int i = 0;
            for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save), i++)
                if (i == n)
                    snprintf(visible, sizeof visible, "%s", t);
        }
        info.name[0] = '\0';
    }
    setenv("CUDA_VISIBLE_DEVICES", visible, 1);
    sdx_worker_set_gpu(w, n, "cuda:0", info.name[0] ? info.name : NULL);
    log_info("using GPU %d%s%s (CUDA_VISIBLE_DEVICES=%s)", n, info.name[0] ? ": " : "", info.name,
             visible);
    if (nvml)
        w->gpu_probe = g; /* kept: status reports the GPU's memory */
    else
        sdx_gpu_destroy(&g);
    return 0;
}

static sdx_worker_t *s_worker_new(const sdx_domain_t *domain, const s_opts_t *o)
{
    sdx_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->domain = domain;
    snprintf(w->broker, sizeof w->broker, "%s", o->broker);
    snprintf(w->curve_cert, sizeof w->curve_cert, "%s", o->curve_cert);
    snprintf(w->curve_broker_key, sizeof w->curve_broker_key, "%s", o->curve_broker_key);
    w->gpu_requested = o->gpu;
    w->gpu = -1;
    snprintf(w->device, sizeof w->device, "cpu");
    w->concurrency = o->concurrency > 0 ? o->concurrency : 1;
    w->prefetch = o->prefetch < 0 ? -1 : o->prefetch > 64 ? 64 : o->prefetch;
    /* credit: --capacity, else --concurrency + --prefetch when a prefetch
       was set, else the domain's default; never fewer than the job threads */
    if (o->capacity > 0)
        w->capacity = o->capacity;
    else if (w->prefetch >= 0)
        w->capacity = w->concurrency + w->prefetch;
    else
        w->capacity = domain->capacity > 0 ? domain->capacity : 1;
    if (w->capacity < w->concurrency)
        w->capacity = w->concurrency;
    if (w->capacity > SDX_MDP_MAX_CAPACITY)
        w->capacity = SDX_MDP_MAX_CAPACITY;
    gethostname(w->host, sizeof w->host - 1);
    if (o->id[0])
        snprintf(w->id, sizeof w->id, "%s", o->id);
    else if (o->gpu >= 0)
        snprintf(w->id, sizeof w->id, "%s-gpu%d-%.40s-%d", domain->name, o->gpu, w->host,
                 (int)getpid());
    else
        snprintf(w->id, sizeof w->id, "%s-%.40s-%d", domain->name, w->host, (int)getpid());
    pthread_mutex_init(&w->qlock, NULL);
    pthread_cond_init(&w->qcond, NULL);
    pthread_mutex_init(&w->mlock, NULL);
    w->started_unix_ms = sdx_worker_now_ms();
    w->started_mono = sdx_worker_mono_ms();
    return w;
}

static void s_worker_destroy(sdx_worker_t **w_p)
{
    sdx_worker_t *w = *w_p;
    if (!w)
        return;
    sdx_worker_set_models(w, NULL, 0);
    sdx_gpu_destroy(&w->gpu_probe);
    for (size_t i = 0; w->opt_value && i < w->nopts; i++)
        free(w->opt_value[i]);
    free(w->opt_value);
    free(w->opt_from);
    pthread_mutex_destroy(&w->qlock);
    pthread_cond_destroy(&w->qcond);
    pthread_mutex_destroy(&w->mlock);
    free(w->threads);
    free(w);
    *w_p = NULL;
}

static int s_start_threads(sdx_worker_t *w)
{
    w->threads = calloc((size_t)w->concurrency, sizeof *w->threads);
    if (!w->threads)
        return -1;
    for (int i = 0; i < w->concurrency; i++) {
        if (pthread_create(&w->threads[i], NULL, s_job_thread, w) != 0) {
            log_error("pthread_create: %s", strerror(errno));
            return -1;
        }
        w->nthreads++;
    }
    return 0;
}

static void s_stop_threads(sdx_worker_t *w)
{
    pthread_mutex_lock(&w->qlock);
    w->threads_stop = true;
    pthread_cond_broadcast(&w->qcond);
    pthread_mutex_unlock(&w->qlock);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    w->nthreads = 0;
}

/* The command line: the runtime's flags, and the domain options given. */
typedef struct {
    s_opts_t flags;
    const char *config;
    bool help;
    s_flag_t *dflags; /* malloc'd, argc entries at most */
    size_t ndflags;
} s_cmdline_t;

/* Parse argv. Returns -1 to go on, else the exit code (help: 0, error: 2). */
static int s_parse_args(int argc, char **argv, s_cmdline_t *cl)
{
    struct option *lo = s_longopts_build();
    cl->dflags = calloc((size_t)argc + 1, sizeof *cl->dflags);
    if (!lo || !cl->dflags) {
        free(lo);
        fprintf(stderr, "sdxl-worker: out of memory\n");
        return 1;
    }
    int rc = -1, ch;
    char *end;
    opterr = 0; /* our own messages below */
    while (rc < 0 && (ch = getopt_long(argc, argv, ":d:b:g:c:n:p:C:i:l:K:B:h", lo, NULL)) != -1) {
        s_opts_t *f = &cl->flags;
        switch (ch) {
        case 'd':
            snprintf(f->domain, sizeof f->domain, "%s", optarg);
            break;
        case 'b':
            snprintf(f->broker, sizeof f->broker, "%s", optarg);
            break;
        case 'g':
            f->gpu = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || f->gpu < 0) {
                fprintf(stderr, "sdxl-worker: --gpu wants a GPU index >= 0, not '%s'\n", optarg);
                rc = 2;
            }
            break;
        case 'c':
            cl->config = optarg;
            break;
        case 'p':
            f->prefetch = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || f->prefetch < 0 || f->prefetch > 64) {
                fprintf(stderr, "sdxl-worker: --prefetch wants 0..64, not '%s'\n", optarg);
                rc = 2;
            }
            break;
        case 'C':
            f->capacity = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || f->capacity < 1 || f->capacity > SDX_MDP_MAX_CAPACITY) {
                fprintf(stderr,
                        "sdxl-worker: --capacity wants 1..%d (requests in flight on this "
                        "worker), not '%s'\n",
                        SDX_MDP_MAX_CAPACITY, optarg);
                rc = 2;
            }
            break;
        case 'n':
            f->concurrency = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || f->concurrency < 1 || f->concurrency > 256) {
                fprintf(stderr, "sdxl-worker: --concurrency wants 1..256, not '%s'\n", optarg);
                rc = 2;
            }
            break;
        case 'i':
            snprintf(f->id, sizeof f->id, "%s", optarg);
            break;
        case 'l':
            snprintf(f->log_level, sizeof f->log_level, "%s", optarg);
            break;
        case 'K':
            snprintf(f->curve_cert, sizeof f->curve_cert, "%s", optarg);
            break;
        case 'B':
            snprintf(f->curve_broker_key, sizeof f->curve_broker_key, "%s", optarg);
            break;
        case 'h':
            cl->help = true;
            break;
        case ':':
            fprintf(stderr, "sdxl-worker: option '%s' needs a value\n", argv[optind - 1]);
            rc = 2;
            break;
        case '?':
            if (optopt)
                fprintf(stderr, "sdxl-worker: unknown option '-%c'", optopt);
            else
                fprintf(stderr, "sdxl-worker: unknown option '%.*s'",
                        (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
            fprintf(stderr, " (sdxl-worker --domain NAME --help lists the options)\n");
            rc = 2;
            break;
        default:
            if (ch >= S_DOMAIN_OPT) {
                const struct option *o = &lo[ch - S_DOMAIN_OPT];
                cl->dflags[cl->ndflags++] =
                    (s_flag_t){o->name, o->has_arg == no_argument ? "true" : optarg};
            } else {
                rc = 2;
            }
            break;
        }
    }
    free(lo);
    if (rc < 0 && optind < argc) {
        fprintf(stderr, "sdxl-worker: unexpected argument '%s'\n", argv[optind]);
        rc = 2;
    }
    if (rc < 0 && cl->help) {
        s_usage(stdout);
        const sdx_domain_t *d =
            cl->flags.domain[0] ? sdx_worker_find_domain(cl->flags.domain) : NULL;
        if (d) {
            s_usage_domain(stdout, d);
        } else {
            for (size_t i = 0; (d = sdx_worker_domain_at(i)); i++)
                s_usage_domain(stdout, d);
        }
        rc = 0;
    }
    return rc;
}

/* "device, model, ..." */
static void s_domain_names(char *out, size_t len)
{
    const sdx_domain_t *d;
    out[0] = '\0';
    for (size_t i = 0; (d = sdx_worker_domain_at(i)); i++)
        snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? ", " : "", d->name);
}

/* Hand each resolved option to the domain's hook; every refused one is
   printed (one line each, so that one start shows them all). */
static int s_options_apply(sdx_worker_t *w)
{
    const sdx_domain_t *d = w->domain;
    int rc = 0;
    for (size_t i = 0; d->option && i < w->nopts; i++) {
        if (!w->opt_value[i])
            continue;
        char why[512] = "";
        if (d->option(w, d->options[i].name, w->opt_value[i], why, sizeof why) == 0)
            continue;
        char where[700];
        s_option_origin(&d->options[i], w->opt_value[i], w->opt_from[i],
                        w->config[0] ? w->config : NULL, where, sizeof where);
        fprintf(stderr, "sdxl-worker: %s: %s\n", where, why[0] ? why : "refused");
        rc = -1;
    }
    return rc;
}

int sdx_worker_main(int argc, char **argv)
{
    s_opts_t o = {.gpu = -1, .concurrency = 0, .prefetch = -1};
    s_cmdline_t cl = {.flags = {.gpu = -1, .concurrency = 0, .prefetch = -1}};
    s_config_t cfg = {0};
    char **opt_value = NULL;
    const char **opt_from = NULL;
    size_t nopts = 0;
    const sdx_domain_t *domain = NULL;
    sdx_worker_t *w = NULL;
    char err[1024] = "";
    int rc = s_parse_args(argc, argv, &cl);
    if (rc >= 0)
        goto out;
    rc = 2;
    const s_opts_t *flags = &cl.flags;
    if (cl.config &&
        s_config_load(&cfg, &o, cl.config, flags->domain, flags->gpu, err, sizeof err) != 0) {
        fprintf(stderr, "sdxl-worker: --config %s\n", err);
        goto out;
    }
    /* flags override the file */
    if (flags->domain[0])
        snprintf(o.domain, sizeof o.domain, "%s", flags->domain);
    if (flags->broker[0])
        snprintf(o.broker, sizeof o.broker, "%s", flags->broker);
    if (flags->id[0])
        snprintf(o.id, sizeof o.id, "%s", flags->id);
    if (flags->log_level[0])
        snprintf(o.log_level, sizeof o.log_level, "%s", flags->log_level);
    if (flags->gpu >= 0)
        o.gpu = flags->gpu;
    if (flags->concurrency > 0)
        o.concurrency = flags->concurrency;
    if (flags->prefetch >= 0)
        o.prefetch = flags->prefetch;
    if (flags->capacity > 0)
        o.capacity = flags->capacity;
    if (o.capacity == -2) {
        fprintf(stderr, "sdxl-worker: --config %s: capacity wants an integer 1..%d\n", cl.config,
                SDX_MDP_MAX_CAPACITY);
        goto out;
    }
    if (flags->curve_cert[0])
        snprintf(o.curve_cert, sizeof o.curve_cert, "%s", flags->curve_cert);
    if (flags->curve_broker_key[0])
        snprintf(o.curve_broker_key, sizeof o.curve_broker_key, "%s", flags->curve_broker_key);
    if (!o.curve_cert[0] != !o.curve_broker_key[0]) {
        fprintf(stderr, "sdxl-worker: CURVE needs both --curve-cert (this worker's key pair) and "
                        "--curve-broker-key (the broker's public certificate)\n");
        goto out;
    }
    if (o.curve_cert[0] && (sdx_curve_cert_check(o.curve_cert, true, err, sizeof err) != 0 ||
                            sdx_curve_cert_check(o.curve_broker_key, false, err, sizeof err) != 0)) {
        fprintf(stderr, "sdxl-worker: curve: %s\n", err);
        goto out;
    }
    if (!o.broker[0])
        snprintf(o.broker, sizeof o.broker, "tcp://127.0.0.1:5556");
    if (!o.domain[0]) {
        fprintf(stderr, "sdxl-worker: --domain is required\n");
        s_usage(stderr);
        goto out;
    }
    domain = sdx_worker_find_domain(o.domain);
    if (!domain) {
        char names[256];
        s_domain_names(names, sizeof names);
        fprintf(stderr, "sdxl-worker: unknown domain '%s' (%s)\n", o.domain, names);
        goto out;
    }
    if (s_flags_check(domain, cl.dflags, cl.ndflags, err, sizeof err) != 0) {
        fprintf(stderr, "sdxl-worker: %s\n", err);
        goto out;
    }
    if (cfg.root) {
        if (cfg.entry)
            s_config_warn_unknown(cfg.entry, domain, cfg.path);
        else if (!sdx_map_get(cfg.root, "workers"))
            s_config_warn_unknown(cfg.root, domain, cfg.path); /* a flat file */
    }
    nopts = s_noptions(domain);
    opt_value = calloc(nopts + 1, sizeof *opt_value);
    opt_from = calloc(nopts + 1, sizeof *opt_from);
    if (!opt_value || !opt_from) {
        fprintf(stderr, "sdxl-worker: out of memory\n");
        goto out;
    }
    if (s_options_resolve(domain, cl.dflags, cl.ndflags, cfg.root ? &cfg : NULL, opt_value,
                          opt_from, err, sizeof err) != 0) {
        fprintf(stderr, "sdxl-worker: %s\n", err);
        goto out;
    }
    int level = SDX_LOG_INFO;
    if (o.log_level[0] && (level = sdx_log_level_parse(o.log_level)) < 0) {
        fprintf(stderr, "sdxl-worker: --log-level: error, warn, info or debug, not '%s'\n",
                o.log_level);
        goto out;
    }
    char ident[128];
    if (o.gpu >= 0)
        snprintf(ident, sizeof ident, "worker[%s:gpu%d]", domain->name, o.gpu);
    else
        snprintf(ident, sizeof ident, "worker[%s]", domain->name);
    sdx_log_init(ident, (sdx_log_level_t)level);

    snprintf(s_builtin_names[0], sizeof s_builtin_names[0], "%s.ping", domain->name);
    snprintf(s_builtin_names[1], sizeof s_builtin_names[1], "%s.status", domain->name);
    s_builtin[0].message_type = s_builtin_names[0];
    s_builtin[1].message_type = s_builtin_names[1];

    w = s_worker_new(domain, &o);
    if (!w) {
        fprintf(stderr, "sdxl-worker: out of memory\n");
        rc = 1;
        goto out;
    }
    if (cl.config)
        snprintf(w->config, sizeof w->config, "%s", cl.config);
    w->nopts = nopts;
    w->opt_value = opt_value;
    w->opt_from = opt_from;
    opt_value = NULL;
    opt_from = NULL;
    s_config_free(&cfg);
    if (s_select_gpu(w, err, sizeof err) != 0) {
        log_error("%s", err);
        fprintf(stderr, "sdxl-worker: %s\n", err);
        goto out;
    }
    /* from here on fini runs, whatever happens (the hooks may set state) */
    if (s_options_apply(w) != 0)
        goto fini;
    if (domain->init && domain->init(w, err, sizeof err) != 0) {
        log_error("%s init: %s", domain->name, err);
        fprintf(stderr, "sdxl-worker: %s\n", err);
        goto fini;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = 1;
    w->zctx = zmq_ctx_new();
    w->pull = w->zctx ? zmq_socket(w->zctx, ZMQ_PULL) : NULL;
    snprintf(w->pull_ep, sizeof w->pull_ep, "inproc://sdx-worker-jobs");
    if (!w->pull || zmq_bind(w->pull, w->pull_ep) != 0) {
        log_error("inproc bind: %s", zmq_strerror(errno));
    } else if (s_start_threads(w) == 0) {
        log_info("%s worker %s: broker %s, %d job thread(s), capacity %d, device %s",
                 domain->name, w->id, w->broker, w->concurrency, w->capacity, w->device);
        rc = s_run(w);
    }
    /* job threads finish what they run (they were cancelled on a 2nd signal) */
    s_stop_threads(w);
    if (w->pull)
        s_drain_pull(w);
    while (w->active) { /* jobs that never reached a thread */
        sdx_job_t *j = w->active;
        s_active_remove(w, j);
        s_job_destroy(&j);
    }
    if (w->pull)
        zmq_close(w->pull);
    s_disconnect(w, false);
    if (w->zctx)
        zmq_ctx_term(w->zctx);
fini:
    if (domain->fini)
        domain->fini(w);
out:
    s_config_free(&cfg);
    for (size_t i = 0; opt_value && i < nopts; i++)
        free(opt_value[i]);
    free(opt_value);
    free(opt_from);
    free(cl.dflags);
    s_worker_destroy(&w);
    return rc;
}
