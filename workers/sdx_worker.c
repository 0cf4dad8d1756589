/*  sdx_worker.c - the worker runtime (see sdx_worker.h): the worker object
    (sdx_worker_new/run/stop/destroy), its jobs, dispatch, broker connection
    and main loop. The command line, --config, domain options and GPU
    selection that sdx_worker_main builds a worker from are in
    sdx_worker_cli.c; the domains in handler_*.c.

    Threads:
    - main: owns the DEALER to the broker and a PULL bound on an inproc
      endpoint. It polls both, sends heartbeats, detects a dead broker,
      reconnects, dispatches REQUESTs (inline or to the job queue), applies
      CANCEL, forwards PROGRESS/REPLY that job threads push, and owns every
      job's lifetime (the "active" list is touched by main only).
    - job threads (--concurrency of them): pop a job from a mutex+condvar
      queue, run its handler, push PROGRESS/REPLY frames to main through their
      own PUSH socket. After pushing REPLY a job thread never touches the job.

    Connection generations: each (re)connect increments `gen`. On a
    reconnection the jobs still held (running, queued, or answered while
    there was no broker: their REPLY kept in job->held) move to the new
    connection, and READY lists them under `resume`: the broker carries them
    over from the old registration instead of re-running them (PROTOCOL.md
    2.2), and the held replies follow the READY. A broker that does not know
    them any more drops their replies as late.

    Stopping: sdx_worker_stop counts stop requests (1: drain, 2: cancel what
    runs) and writes to an eventfd that the main loop polls beside its
    sockets, so a stop from a signal handler or another thread wakes it at
    once.

    Not for: domain logic (handler_*.c), option parsing (sdx_worker_cli.c).
*/
#include "sdx_worker.h"
#include "sdx_worker_catalog.h"
#include "sdx_worker_priv.h"

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
#include <sys/eventfd.h>
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
    uint8_t *held;            /* REPLY body (msgpack) made while disconnected (main only) */
    size_t held_len;
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
    bool own_ctx;  /* zctx made here (terminated at the end of run) */
    int wakefd;    /* eventfd: sdx_worker_stop wakes the main loop */
    atomic_int stops; /* sdx_worker_stop calls (1: drain, 2: cancel) */
    bool ran;      /* sdx_worker_run was called */
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
    bool domain_touched; /* the option hook or init ran: destroy runs fini */
    bool inited;         /* init ran and succeeded */
    /* <domain>.ping and <domain>.status (rows of the runtime's own) */
    sdx_handler_t builtin[2];
    char builtin_names[2][96];
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

static int s_stops(const sdx_worker_t *w)
{
    return atomic_load((atomic_int *)&w->stops);
}

/* Clear the eventfd after it woke a poll. */
static void s_wake_clear(sdx_worker_t *w)
{
    uint64_t n;
    if (w->wakefd >= 0 && read(w->wakefd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_debug("wake eventfd: %s", strerror(errno));
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
    if (w->active) {
        sdx_value_t *ids = sdx_value_array_new();
        for (sdx_job_t *j = w->active; ids && j; j = j->anext)
            sdx_array_push(ids, sdx_value_str_new(j->request_id));
        if (ids)
            sdx_map_set(b, "resume", ids);
    }
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
    free((*job_p)->held);
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
    return sdx_worker_progress_with(job, step, total, msg, it_per_s, NULL);
}

int sdx_worker_progress_with(sdx_job_t *job, int64_t step, int64_t total, const char *msg,
                             double it_per_s, sdx_value_t *extra)
{
    sdx_value_t *b = extra ? extra : sdx_value_map_new();
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

/* Row 0: ping, row 1: status; the message types are the worker's domain's
   (w->builtin, filled by sdx_worker_new). */
static void s_builtin_init(sdx_worker_t *w)
{
    snprintf(w->builtin_names[0], sizeof w->builtin_names[0], "%s.ping", w->domain->name);
    snprintf(w->builtin_names[1], sizeof w->builtin_names[1], "%s.status", w->domain->name);
    w->builtin[0] = (sdx_handler_t){w->builtin_names[0], s_h_ping, SDX_HANDLER_INLINE,
                                    "liveness check, answers pong"};
    w->builtin[1] = (sdx_handler_t){w->builtin_names[1], s_h_status, SDX_HANDLER_INLINE,
                                    "uptime, counters, gpu, loaded models"};
}

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
        if (strcmp(w->builtin[i].message_type, type) == 0)
            return &w->builtin[i];
    return NULL;
}

/* The catalogue's row of a message type, NULL when it has none. */
static const sdx_catalog_row_t *s_catalog_row(const char *type)
{
    for (const sdx_catalog_row_t *r = sdx_worker_catalog; r->message_type; r++)
        if (strcmp(r->message_type, type) == 0)
            return r;
    return NULL;
}

/* Whether a type this worker has no handler for is one of its domain's
   (answered not_available, not unknown_message_type): the domain's own
   planned list when it gives one, else proto/catalog.json's rows of the
   domain (planned, or not built into this binary). */
static bool s_is_planned(const sdx_worker_t *w, const char *type)
{
    if (w->domain->planned) {
        for (const char *const *p = w->domain->planned; *p; p++)
            if (strcmp(*p, type) == 0)
                return true;
        return false;
    }
    const sdx_catalog_row_t *r = s_catalog_row(type);
    return r && strcmp(r->domain, w->domain->name) == 0;
}

/* At start: a handler of a catalogued domain for a type the catalogue does
   not list is a programming error the broker would never route to. */
static void s_catalog_check(const sdx_worker_t *w)
{
    bool catalogued = false;
    for (const sdx_catalog_row_t *r = sdx_worker_catalog; r->message_type && !catalogued; r++)
        catalogued = strcmp(r->domain, w->domain->name) == 0;
    for (const sdx_handler_t *h = w->domain->handlers; catalogued && h && h->message_type; h++) {
        const sdx_catalog_row_t *r = s_catalog_row(h->message_type);
        if (!r || strcmp(r->domain, w->domain->name) != 0)
            log_warn("%s has a handler but no row in proto/catalog.json: the broker does not "
                     "route it here",
                     h->message_type);
        else if (r->planned)
            log_warn("%s is served here but proto/catalog.json still says planned",
                     h->message_type);
    }
}

static void s_capabilities_to(sdx_worker_t *w, sdx_value_t *arr)
{
    for (int i = 0; i < 2; i++)
        if (!s_domain_handler(w, w->builtin[i].message_type))
            sdx_array_push(arr, sdx_value_str_new(w->builtin[i].message_type));
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
        sdx_worker_config_key(w->domain->options[i].name, key, sizeof key);
        sdx_map_set_str(one, "value", w->opt_value[i]);
        sdx_map_set_str(one, "from", w->opt_from[i]);
        sdx_map_set(opts, key, one);
    }
    if (opts)
        sdx_map_set(out, "options", opts); /* the domain's, and where each came from */
    sdx_value_t *planned = sdx_value_array_new();
    if (planned) {
        if (w->domain->planned) {
            for (const char *const *p = w->domain->planned; *p; p++)
                sdx_array_push(planned, sdx_value_str_new(*p));
        } else {
            for (const sdx_catalog_row_t *r = sdx_worker_catalog; r->message_type; r++)
                if (strcmp(r->domain, w->domain->name) == 0 && !s_find_handler(w, r->message_type))
                    sdx_array_push(planned, sdx_value_str_new(r->message_type));
        }
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
        if (s_is_planned(w, type)) {
            const sdx_catalog_row_t *r = s_catalog_row(type);
            char what[512] = "";
            if (r && r->description[0])
                snprintf(what, sizeof what, " (%s: %.400s)", r->planned ? "planned" : "not built",
                         r->description);
            s_send_error(w, rid, "not_available", "%s is not available on the %s worker: %s%s",
                         type, w->domain->name,
                         w->domain->planned_issue ? w->domain->planned_issue
                                                  : "it is not built yet",
                         what);
        }
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
            /* no broker now (between connections): keep the reply for the next */
            if (!w->sock && !w->draining && (job->held = malloc(zmq_msg_size(&body) + 1))) {
                memcpy(job->held, zmq_msg_data(&body), zmq_msg_size(&body));
                job->held_len = zmq_msg_size(&body);
                log_info("%s: reply held for the next broker connection", job->request_id);
                w->threaded--;
                zmq_msg_close(&body);
                continue;
            }
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

/* The jobs whose REPLY was held while disconnected: sent on the current
   connection (send) or dropped, and done with either way. */
static void s_release_held(sdx_worker_t *w, bool send)
{
    for (sdx_job_t *j = w->active, *next; j; j = next) {
        next = j->anext;
        if (!j->held)
            continue;
        if (!send)
            atomic_fetch_add(&w->dropped_replies, 1);
        else if (sdx_mdp_send_raw(w->sock, NULL, 0, SDX_MDP_REPLY, j->request_id, j->held,
                                  j->held_len, true) != 0)
            log_warn("%s: send held REPLY failed: %s", j->request_id, zmq_strerror(errno));
        s_active_remove(w, j);
        s_job_destroy(&j);
    }
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
    size_t moved = 0;
    for (sdx_job_t *j = w->active; j; j = j->anext, moved++)
        j->gen = w->gen;
    s_send_ready(w);
    if (moved)
        log_info("connection %u: %zu request(s) still held here resumed in READY", w->gen,
                 moved);
    s_release_held(w, true);
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
    while (!s_stops(w)) {
        int64_t left = end - sdx_worker_mono_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t it[2] = {{.socket = w->pull, .events = ZMQ_POLLIN},
                                {.fd = w->wakefd, .events = ZMQ_POLLIN}};
        zmq_poll(it, 2, (long)left);
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
    if (!s_stops(w) || !w->draining)
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
    int seen_stops = 0;
    for (;;) {
        int stops = s_stops(w);
        if (stops != seen_stops) {
            if (seen_stops == 0)
                s_begin_drain(w);
            if (stops >= 2 && seen_stops < 2)
                s_cancel_all(w);
            seen_stops = stops;
        }
        if (w->draining && !w->active)
            break;
        if (!w->sock) {
            if (w->draining) { /* no broker to reply to: wait for the jobs */
                s_release_held(w, false); /* answered, with no broker to take them */
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
        if (more || w->sock != sock || !w->sock || s_stops(w) != seen_stops)
            continue; /* more waiting, reconnected, or a signal: look again before blocking */
        /* Block on the sockets' file descriptors: one poll() per wake-up
           instead of zmq_poll's several, which matters for small requests.
           The pull socket only while job threads have work. */
        int fds[2] = {-1, -1};
        size_t fl = sizeof fds[0];
        zmq_getsockopt(w->sock, ZMQ_FD, &fds[0], &fl);
        zmq_getsockopt(w->pull, ZMQ_FD, &fds[1], &fl);
        struct pollfd pfd[3] = {{.fd = w->wakefd, .events = POLLIN},
                                {.fd = fds[0], .events = POLLIN},
                                {.fd = fds[1], .events = POLLIN}};
        long timeout = (long)(w->next_hb - sdx_worker_mono_ms());
        if (timeout < 0)
            timeout = 0;
        if (poll(pfd, w->threaded > 0 ? 3 : 2, (int)timeout) < 0 && errno != EINTR) {
            log_error("poll: %s", strerror(errno));
            return 1;
        }
        if (pfd[0].revents & POLLIN)
            s_wake_clear(w);
    }
    s_disconnect(w, true);
    log_info("stopped cleanly (%ld served)", (long)atomic_load(&w->served));
    return 0;
}

/* ------------------------------------------------------------ the object */

sdx_worker_t *sdx_worker_new(const sdx_worker_opts_t *o, char *err, size_t err_len)
{
    if (!o || !o->domain || !o->domain->name || !o->broker || !o->broker[0]) {
        snprintf(err, err_len, "a worker needs a domain and a broker endpoint");
        return NULL;
    }
    bool curve = o->curve_cert && o->curve_cert[0];
    if (curve != (o->curve_broker_key && o->curve_broker_key[0])) {
        snprintf(err, err_len, "CURVE needs both the worker's key pair and the broker's "
                               "public certificate");
        return NULL;
    }
    if (o->capacity > SDX_MDP_MAX_CAPACITY || o->concurrency > 256) {
        snprintf(err, err_len, "capacity wants 1..%d and concurrency 1..256",
                 SDX_MDP_MAX_CAPACITY);
        return NULL;
    }
    sdx_worker_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    const sdx_domain_t *domain = o->domain;
    w->domain = domain;
    w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wakefd < 0) {
        snprintf(err, err_len, "eventfd: %s", strerror(errno));
        free(w);
        return NULL;
    }
    snprintf(w->broker, sizeof w->broker, "%s", o->broker);
    snprintf(w->curve_cert, sizeof w->curve_cert, "%s", curve ? o->curve_cert : "");
    snprintf(w->curve_broker_key, sizeof w->curve_broker_key, "%s",
             curve ? o->curve_broker_key : "");
    w->gpu_requested = o->gpu;
    w->gpu = -1;
    snprintf(w->device, sizeof w->device, "cpu");
    w->concurrency = o->concurrency > 0 ? o->concurrency : 1;
    w->prefetch = o->prefetch < 0 ? -1 : o->prefetch > 64 ? 64 : o->prefetch;
    /* credit: capacity, else concurrency + prefetch when a prefetch was
       set, else the domain's default; never fewer than the job threads */
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
    if (o->id && o->id[0])
        snprintf(w->id, sizeof w->id, "%s", o->id);
    else if (o->gpu >= 0)
        snprintf(w->id, sizeof w->id, "%s-gpu%d-%.40s-%d", domain->name, o->gpu, w->host,
                 (int)getpid());
    else
        snprintf(w->id, sizeof w->id, "%s-%.40s-%d", domain->name, w->host, (int)getpid());
    w->zctx = o->zmq_context;
    /* unique per worker: several may share one context (tests) */
    snprintf(w->pull_ep, sizeof w->pull_ep, "inproc://sdx-worker-jobs-%p", (void *)w);
    s_builtin_init(w);
    s_catalog_check(w);
    pthread_mutex_init(&w->qlock, NULL);
    pthread_cond_init(&w->qcond, NULL);
    pthread_mutex_init(&w->mlock, NULL);
    w->started_unix_ms = sdx_worker_now_ms();
    w->started_mono = sdx_worker_mono_ms();
    return w;
}

void sdx_worker_destroy(sdx_worker_t **w_p)
{
    sdx_worker_t *w = w_p ? *w_p : NULL;
    if (!w)
        return;
    if (w->domain_touched && w->domain->fini)
        w->domain->fini(w);
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
    if (w->wakefd >= 0)
        close(w->wakefd);
    free(w);
    *w_p = NULL;
}

void sdx_worker_stop(sdx_worker_t *w)
{
    if (!w)
        return;
    atomic_fetch_add(&w->stops, 1);
    uint64_t one = 1;
    ssize_t n = write(w->wakefd, &one, sizeof one); /* EAGAIN: already pending */
    (void)n;
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

int sdx_worker_run(sdx_worker_t *w)
{
    if (w->ran) {
        log_error("sdx_worker_run: this worker ran already");
        return 1;
    }
    w->ran = true;
    if (!w->inited) {
        char err[1024] = "";
        if (sdx_worker_priv_init(w, err, sizeof err) != 0) {
            log_error("%s init: %s", w->domain->name, err[0] ? err : "refused");
            return 2;
        }
    }
    int rc = 1;
    if (!w->zctx) {
        w->zctx = zmq_ctx_new();
        w->own_ctx = w->zctx != NULL;
    }
    w->pull = w->zctx ? zmq_socket(w->zctx, ZMQ_PULL) : NULL;
    if (!w->pull || zmq_bind(w->pull, w->pull_ep) != 0) {
        log_error("inproc bind: %s", zmq_strerror(errno));
    } else if (s_start_threads(w) == 0) {
        log_info("%s worker %s: broker %s, %d job thread(s), capacity %d, device %s",
                 w->domain->name, w->id, w->broker, w->concurrency, w->capacity, w->device);
        rc = s_run(w);
    }
    /* job threads finish what they run (they were cancelled on a 2nd stop) */
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
    w->pull = NULL;
    s_disconnect(w, false);
    if (w->own_ctx)
        zmq_ctx_term(w->zctx);
    w->zctx = NULL;
    return rc;
}

/* ------------------------------------------------- for sdx_worker_cli.c */

void sdx_worker_config_key(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s", name);
    for (char *p = out; *p; p++)
        if (*p == '-')
            *p = '_';
}

void sdx_worker_priv_adopt_options(sdx_worker_t *w, size_t n, char **values, const char **from,
                                   const char *config_path)
{
    w->nopts = n;
    w->opt_value = values;
    w->opt_from = from;
    snprintf(w->config, sizeof w->config, "%s", config_path ? config_path : "");
}

const char *sdx_worker_priv_option(const sdx_worker_t *w, size_t i, const char **from)
{
    if (i >= w->nopts || !w->opt_value)
        return NULL;
    if (from)
        *from = w->opt_from[i];
    return w->opt_value[i];
}

const char *sdx_worker_priv_config_path(const sdx_worker_t *w)
{
    return w->config[0] ? w->config : NULL;
}

void sdx_worker_priv_set_gpu_probe(sdx_worker_t *w, sdx_gpu_t *g)
{
    sdx_gpu_destroy(&w->gpu_probe);
    w->gpu_probe = g;
}

void sdx_worker_priv_domain_touched(sdx_worker_t *w)
{
    w->domain_touched = true;
}

int sdx_worker_priv_init(sdx_worker_t *w, char *err, size_t err_len)
{
    w->domain_touched = true;
    if (w->domain->init && w->domain->init(w, err, err_len) != 0)
        return -1;
    w->inited = true;
    return 0;
}
