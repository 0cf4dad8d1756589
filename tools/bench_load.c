/*  bench_load.c - `bench-load-bin`: a load test of sdxl-broker and its fast
    workers. N client threads (default 50), each a DEALER socket keeping K
    requests in flight (default 1), send a weighted mix of cheap, real
    requests (default: test.echo, device.ping, device.status,
    scheduler.timesteps, scheduler.list, model.list, system.ping) through the
    broker, R requests each (default 1,000), or, in soak mode, for S seconds
    (default 600). It measures:

    - throughput: final replies to the measured requests / the time from the
      start of the measured phase to the last of them (req/s);
    - latency: send to final reply of each request (microseconds; p50, p90,
      p99, p99.9 and max over all requests, p50/p99/max per type), exact
      percentiles of every sample;
    - the broker's memory: VmRSS from /proc/PID/status once every client is
      connected, after a warm-up of W requests per client (default 500), then
      every 0.25 s during the load (its peak), and after it; the growth from
      "before" (after the warm-up) to "after" in kB and %. The warm-up is
      long because the broker's RSS climbs from ~10.5 MB (50 clients
      connected) to ~16 MB over its first ~25,000 requests of this mix, as
      its allocator arenas, libzmq buffers and tables reach their working
      size (measured on 2 cores: +2.0 MB over the 50,000 after a warm-up of
      10,000, +0.2 MB after 25,000, +0.1 MB after 50,000); a short warm-up
      reports that as growth.
      In soak mode also a series, one sample every --sample seconds (default
      10) with the throughput of that interval, and the least-squares slope of
      RSS over time (kB/min);
    - correctness: every request must get exactly one final reply. Replies are
      decoded in full and matched by their request_id ("L<client>-<12
      digits>"), their message_type must be the request's, and `success` must
      be true. Counted per type: errors (by error code), timeouts (no reply
      within --timeout-ms, default 10 s), duplicates (a second final reply),
      late replies (after the timeout); per run: stray frames (a request_id
      this client never sent, or undecodable). After its last reply each
      client keeps listening --grace-ms (default 500) for duplicates. With
      $SDXL_FLEET_STATE (tools/run-fleet exports it) the supervisor's state
      file is read before and after the run: a process that restarted (a
      worker crash whose requests were re-dispatched) is a failure too.

        bench-load-bin [--broker EP (default $SDXL_ENDPOINT)] [--clients 50]
                       [--requests 1000 (per client)] [--inflight 1]
                       [--soak [SECONDS (default 600)]] [--sample 10]
                       [--mix "type=weight,..."] [--data TYPE=JSON]...
                       [--warmup 500] [--timeout-ms 10000] [--grace-ms 500]
                       [--msgpack|--json-wire] [--json]
                       [--broker-pid PID (default $SDXL_BROKER_PID, else from
                        $SDXL_FLEET_STATE)]

    The broker and its workers must already run; tools/bench-load starts them
    (tools/run-fleet). Each type's request data is fixed (the defaults below,
    or --data TYPE=JSON; a type without either sends {}), encoded once per
    client, and only the digits of its request_id change from one request to
    the next, so the clients spend their CPU on sending and checking, not on
    building trees (on a small machine they share the cores with what they
    measure). Which type a request has is a hash of (client, sequence number)
    against the weights: the same mix in every run.

    Output: a report on stdout; with --json the report goes to stderr and
    stdout gets one JSON object of the results (for report generators).
    Not a test of speed: it never fails on slow figures, it reports them.
    Exit 0: every request got exactly one successful final reply; 1: some
    request failed, timed out or was answered twice (or stray frames, or a
    fleet process restarted); 2: usage.
*/
#include "sdx_codec.h"
#include "sdx_value.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_TYPES 32
#define MAX_ERRS 32  /* distinct (type, code) pairs kept per client */
#define MAX_PROCS 64 /* fleet processes compared */
#define SEQ_DIGITS 12

/* ---------------------------------------------------------------- the mix */

/* Requests that the fast domains answer successfully, with the data they
   need (checked against a run-fleet of device, scheduler, model and test). */
static const struct {
    const char *type;
    const char *data;
} s_known[] = {
    {"test.echo",
     "{\"pad\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"},
    {"device.ping", "{\"echo\": \"bench-load\"}"},
    {"device.status", "{}"},
    {"device.list", "{}"},
    {"device.memory", "{}"},
    {"scheduler.timesteps", "{\"scheduler\": \"DPM++ 2M Karras\", \"num_inference_steps\": 10}"},
    {"scheduler.validate", "{\"scheduler\": \"Euler a\", \"num_inference_steps\": 20}"},
    {"scheduler.info", "{\"scheduler\": \"Euler a\"}"},
    {"scheduler.list", "{}"},
    {"model.list", "{}"},
    {"model.status", "{}"},
    {"system.ping", "{}"},
};

static const char s_default_mix[] = "test.echo=30,device.ping=15,device.status=10,"
                                    "scheduler.timesteps=20,scheduler.list=5,model.list=15,"
                                    "system.ping=5";

typedef struct {
    char type[64];
    double weight;
    char *data;     /* JSON text of the request's data (owned) */
    uint64_t units; /* weight in integer units */
    uint64_t cum;   /* cumulative units up to and including this type */
} s_mixent_t;

typedef struct {
    const char *broker;
    int clients;
    long requests; /* per client, fixed mode */
    int inflight;
    double soak_s; /* > 0: soak mode */
    double sample_s;
    int warmup; /* per client */
    int timeout_ms;
    int grace_ms;
    bool json_out;
    sdx_encoding_t enc;
    long broker_pid;
    const char *fleet_state;
    int ntypes;
    s_mixent_t mix[MAX_TYPES];
    uint64_t wtotal;
} s_opts_t;

/* ------------------------------------------------------------------ time */

static double s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* --------------------------------------------------------- shared state */

static atomic_int s_stop_send;   /* soak deadline or SIGINT: send no more */
static atomic_int s_interrupted; /* SIGINT/SIGTERM seen */
static atomic_long s_done_measured;
static atomic_int s_clients_done;
static atomic_int s_error_prints; /* the first few error replies go to stderr */

static void s_on_signal(int sig)
{
    (void)sig;
    atomic_store(&s_stop_send, 1);
    atomic_store(&s_interrupted, 1);
}

/* The type of request `seq` of client `client`: splitmix64 of the pair
   against the cumulative weights (the same mix in every run). */
static int s_pick(const s_opts_t *o, int client, long seq)
{
    uint64_t z = ((uint64_t)(unsigned)client << 40) + (uint64_t)seq + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    uint64_t r = z % o->wtotal;
    for (int i = 0; i < o->ntypes; i++)
        if (r < o->mix[i].cum)
            return i;
    return o->ntypes - 1;
}

/* ------------------------------------------------------------- requests */

/* One encoded request per (client, type), made once: request_id is
   "L<client>-<12 digits>" and s_req_set_seq writes the sequence number into
   those digits in place. */
typedef struct {
    uint8_t *buf;
    size_t len;
    size_t seq_off;
} s_req_t;

static int s_req_make(const s_opts_t *o, int client, int t, s_req_t *q, char *err, size_t el)
{
    memset(q, 0, sizeof *q);
    char rid[64];
    int pl = snprintf(rid, sizeof rid, "L%d-", client);
    snprintf(rid + pl, sizeof rid - (size_t)pl, "%0*d", SEQ_DIGITS, 0);
    char derr[128];
    sdx_value_t *d = sdx_json_decode(o->mix[t].data, strlen(o->mix[t].data), derr, sizeof derr);
    if (!d || d->type != SDX_MAP) {
        snprintf(err, el, "data of %s is not a JSON object: %s", o->mix[t].type,
                 d ? "not a map" : derr);
        sdx_value_destroy(&d);
        return -1;
    }
    sdx_value_t *r = sdx_value_map_new();
    if (!r) {
        sdx_value_destroy(&d);
        snprintf(err, el, "out of memory");
        return -1;
    }
    sdx_map_set_str(r, "message_type", o->mix[t].type);
    sdx_map_set_str(r, "request_id", rid);
    sdx_map_set(r, "data", d);
    int rc = sdx_codec_encode(r, o->enc, &q->buf, &q->len);
    sdx_value_destroy(&r);
    if (rc != 0) {
        snprintf(err, el, "cannot encode the %s request", o->mix[t].type);
        return -1;
    }
    uint8_t *at = memmem(q->buf, q->len, rid, strlen(rid));
    if (!at) {
        free(q->buf);
        q->buf = NULL;
        snprintf(err, el, "request_id not found in the encoded %s request", o->mix[t].type);
        return -1;
    }
    q->seq_off = (size_t)(at - q->buf) + (size_t)pl;
    return 0;
}

static void s_req_set_seq(s_req_t *q, long seq)
{
    for (int i = SEQ_DIGITS - 1; i >= 0; i--, seq /= 10)
        q->buf[q->seq_off + (size_t)i] = (uint8_t)('0' + seq % 10);
}

/* -------------------------------------------------------------- clients */

enum { ST_NONE = 0, ST_PENDING = 1, ST_ANSWERED = 2, ST_TIMEDOUT = 3, ST_MEASURED = 0x10 };

typedef struct {
    long sent, ok, errors, timeouts, dups, late;
    float *lat; /* measured phase only, microseconds */
    size_t n, cap;
} s_tstat_t;

typedef struct {
    long seq;
    double t_sent;
    int type;
    bool measured;
} s_out_t;

typedef struct {
    int type;
    char code[40];
    long count;
} s_errent_t;

typedef struct {
    const s_opts_t *o;
    int id;
    void *zctx;
    pthread_barrier_t *bar;
    s_req_t req[MAX_TYPES];
    uint8_t *st; /* per sequence number: ST_* */
    size_t st_cap;
    long next_seq;
    s_out_t *out;
    int nout;
    s_tstat_t ph[2][MAX_TYPES]; /* [0] warm-up, [1] measured */
    long stray, bad_frames, progress_msgs, send_failures;
    s_errent_t errs[MAX_ERRS];
    int nerrs;
    long errs_other;
    double t_last_reply; /* of the measured phase */
    bool setup_failed;
} s_client_t;

static int s_lat_push(s_tstat_t *t, float us)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 1024;
        float *nl = realloc(t->lat, nc * sizeof *nl);
        if (!nl)
            return -1;
        t->lat = nl;
        t->cap = nc;
    }
    t->lat[t->n++] = us;
    return 0;
}

static void s_err_count(s_client_t *c, int type, const char *code)
{
    for (int i = 0; i < c->nerrs; i++)
        if (c->errs[i].type == type && strcmp(c->errs[i].code, code) == 0) {
            c->errs[i].count++;
            return;
        }
    if (c->nerrs == MAX_ERRS) {
        c->errs_other++;
        return;
    }
    s_errent_t *e = &c->errs[c->nerrs++];
    e->type = type;
    snprintf(e->code, sizeof e->code, "%s", code);
    e->count = 1;
}

static void s_print_reply(const char *what, const void *buf, size_t len)
{
    if (atomic_fetch_add(&s_error_prints, 1) >= 8)
        return;
    /* JSON replies print as they are; msgpack ones are re-encoded as JSON */
    char err[128];
    sdx_value_t *v = sdx_codec_decode(buf, len, sdx_codec_detect(buf, len), err, sizeof err);
    uint8_t *j = NULL;
    size_t jl = 0;
    if (v && sdx_json_encode(v, &j, &jl) == 0)
        fprintf(stderr, "bench-load: %s: %.*s\n", what, (int)(jl > 400 ? 400 : jl), (char *)j);
    else
        fprintf(stderr, "bench-load: %s (%zu bytes, undecodable: %s)\n", what, len,
                v ? "encode failed" : err);
    free(j);
    sdx_value_destroy(&v);
}

static int s_st_reserve(s_client_t *c, long seq)
{
    if ((size_t)seq < c->st_cap)
        return 0;
    size_t nc = c->st_cap ? c->st_cap : 4096;
    while (nc <= (size_t)seq)
        nc *= 2;
    uint8_t *ns = realloc(c->st, nc);
    if (!ns)
        return -1;
    memset(ns + c->st_cap, 0, nc - c->st_cap);
    c->st = ns;
    c->st_cap = nc;
    return 0;
}

/* A final reply, a progress message or something else: account for it. */
static void s_handle(s_client_t *c, void *sock, zmq_msg_t *m)
{
    (void)sock;
    const s_opts_t *o = c->o;
    const void *buf = zmq_msg_data(m);
    size_t len = zmq_msg_size(m);
    double t1 = s_now_us();
    char err[128];
    sdx_value_t *v = sdx_codec_decode(buf, len, sdx_codec_detect(buf, len), err, sizeof err);
    if (!v || v->type != SDX_MAP) {
        c->bad_frames++;
        s_print_reply("undecodable frame", buf, len);
        sdx_value_destroy(&v);
        return;
    }
    const char *mtype = sdx_map_str(v, "message_type", "");
    if (strcmp(mtype, "progress") == 0) { /* not asked for (no stream: true); not final */
        c->progress_msgs++;
        sdx_value_destroy(&v);
        return;
    }
    const char *rid = sdx_map_str(v, "request_id", NULL);
    char prefix[24];
    int pl = snprintf(prefix, sizeof prefix, "L%d-", c->id);
    long seq = -1;
    if (rid && strncmp(rid, prefix, (size_t)pl) == 0 && strlen(rid) == (size_t)pl + SEQ_DIGITS) {
        char *end;
        seq = strtol(rid + pl, &end, 10);
        if (*end)
            seq = -1;
    }
    const sdx_value_t *succ = sdx_map_get(v, "success");
    if (seq < 0 || seq >= c->next_seq || !succ || succ->type != SDX_BOOL) {
        c->stray++;
        s_print_reply("stray frame (not a reply to this client's requests)", buf, len);
        sdx_value_destroy(&v);
        return;
    }
    uint8_t st = c->st[seq];
    int phase = (st & ST_MEASURED) ? 1 : 0;
    int type = s_pick(o, c->id, seq);
    s_tstat_t *ts = &c->ph[phase][type];
    switch (st & 0x0f) {
    case ST_PENDING: {
        int k = 0;
        while (k < c->nout && c->out[k].seq != seq)
            k++;
        double t0 = k < c->nout ? c->out[k].t_sent : t1;
        if (k < c->nout)
            c->out[k] = c->out[--c->nout];
        c->st[seq] = (uint8_t)(ST_ANSWERED | (st & ST_MEASURED));
        bool ok = succ->u.b && strcmp(mtype, o->mix[type].type) == 0;
        if (ok) {
            ts->ok++;
            if (phase == 1)
                s_lat_push(ts, (float)(t1 - t0));
        } else {
            ts->errors++;
            const sdx_value_t *e = sdx_map_get(v, "error");
            const char *code =
                !succ->u.b ? sdx_map_str(e, "code", "unknown") : "wrong_message_type";
            s_err_count(c, type, code);
            s_print_reply("error reply", buf, len);
        }
        if (phase == 1) {
            c->t_last_reply = t1;
            atomic_fetch_add_explicit(&s_done_measured, 1, memory_order_relaxed);
        }
        break;
    }
    case ST_ANSWERED:
        ts->dups++;
        s_print_reply("duplicate final reply", buf, len);
        break;
    case ST_TIMEDOUT:
        ts->late++;
        c->st[seq] = (uint8_t)(ST_ANSWERED | (st & ST_MEASURED)); /* a second one is a dup */
        break;
    default:
        c->stray++;
        break;
    }
    sdx_value_destroy(&v);
}

/* Requests outstanding for longer than the timeout: given up, counted. */
static void s_expire(s_client_t *c, double now)
{
    for (int k = 0; k < c->nout;) {
        if (now - c->out[k].t_sent >= c->o->timeout_ms * 1e3) {
            s_out_t *x = &c->out[k];
            c->ph[x->measured][x->type].timeouts++;
            c->st[x->seq] = (uint8_t)(ST_TIMEDOUT | (x->measured ? ST_MEASURED : 0));
            if (atomic_fetch_add(&s_error_prints, 1) < 8)
                fprintf(stderr, "bench-load: client %d: %s (seq %ld) timed out after %d ms\n",
                        c->id, c->o->mix[x->type].type, x->seq, c->o->timeout_ms);
            if (x->measured)
                atomic_fetch_add_explicit(&s_done_measured, 1, memory_order_relaxed);
            c->out[k] = c->out[--c->nout];
        } else {
            k++;
        }
    }
}

/* Run one phase: `target` requests (or, target < 0, until s_stop_send),
   K in flight, until every one got its reply or timed out. */
static void s_phase(s_client_t *c, void *s, bool measured, long target)
{
    const s_opts_t *o = c->o;
    long sent = 0;
    for (;;) {
        while (c->nout < o->inflight && (target < 0 || sent < target) &&
               !atomic_load_explicit(&s_stop_send, memory_order_relaxed)) {
            long seq = c->next_seq;
            if (s_st_reserve(c, seq) != 0) {
                c->send_failures++;
                target = sent; /* out of memory: stop sending */
                break;
            }
            int t = s_pick(o, c->id, seq);
            s_req_t *q = &c->req[t];
            s_req_set_seq(q, seq);
            double t0 = s_now_us();
            if (zmq_send(s, q->buf, q->len, 0) < 0) {
                c->send_failures++;
                if (atomic_fetch_add(&s_error_prints, 1) < 8)
                    fprintf(stderr, "bench-load: client %d: send: %s\n", c->id,
                            zmq_strerror(errno));
                target = sent; /* stop sending; drain what is out */
                break;
            }
            c->next_seq++;
            sent++;
            c->ph[measured][t].sent++;
            c->st[seq] = (uint8_t)(ST_PENDING | (measured ? ST_MEASURED : 0));
            c->out[c->nout++] = (s_out_t){seq, t0, t, measured};
        }
        if (c->nout == 0)
            break;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0) {
            s_handle(c, s, &m);
            zmq_msg_close(&m);
            continue;
        }
        zmq_msg_close(&m);
        /* nothing there: wait, until the oldest request's timeout at most */
        double now = s_now_us(), oldest = now;
        for (int k = 0; k < c->nout; k++)
            if (c->out[k].t_sent < oldest)
                oldest = c->out[k].t_sent;
        long wait_ms = (long)((oldest + o->timeout_ms * 1e3 - now) / 1e3) + 1;
        if (wait_ms < 1)
            wait_ms = 1;
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        int pr = zmq_poll(&it, 1, wait_ms);
        if (pr == 0 || (pr < 0 && errno != EINTR))
            s_expire(c, s_now_us());
    }
}

/* After the last reply: anything more is a duplicate, a late or a stray. */
static void s_grace(s_client_t *c, void *s)
{
    double end = s_now_us() + c->o->grace_ms * 1e3;
    for (;;) {
        double now = s_now_us();
        if (now >= end)
            break;
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        int pr = zmq_poll(&it, 1, (long)((end - now) / 1e3) + 1);
        if (pr <= 0) {
            if (pr < 0 && errno == EINTR)
                continue;
            break;
        }
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0) {
            s_handle(c, s, &m);
            zmq_msg_close(&m);
            zmq_msg_init(&m);
        }
        zmq_msg_close(&m);
    }
}

static void *s_client_thread(void *arg)
{
    s_client_t *c = arg;
    const s_opts_t *o = c->o;
    void *s = zmq_socket(c->zctx, ZMQ_DEALER);
    int linger = 0, hwm = 100000, tmo = 5000;
    if (s) {
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo); /* a broker that never reads: no hang */
    }
    c->out = calloc((size_t)o->inflight, sizeof *c->out);
    if (!s || !c->out || zmq_connect(s, o->broker) != 0) {
        fprintf(stderr, "bench-load: client %d: connect %s: %s\n", c->id, o->broker,
                zmq_strerror(errno));
        c->setup_failed = true;
    }
    /* every client is connected (or failed) */
    pthread_barrier_wait(c->bar);
    if (!c->setup_failed && o->warmup > 0)
        s_phase(c, s, false, o->warmup);
    /* warm-up over everywhere; main reads the broker's RSS */
    pthread_barrier_wait(c->bar);
    pthread_barrier_wait(c->bar);
    if (!c->setup_failed) {
        s_phase(c, s, true, o->soak_s > 0 ? -1 : o->requests);
        s_grace(c, s);
    }
    if (s)
        zmq_close(s);
    atomic_fetch_add(&s_clients_done, 1);
    return NULL;
}

/* ---------------------------------------------------------------- /proc */

/* VmRSS and VmHWM of pid, kB; -1 when unreadable. */
static int s_proc_mem(long pid, long *rss, long *hwm)
{
    *rss = *hwm = -1;
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            *rss = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            *hwm = strtol(line + 6, NULL, 10);
    }
    fclose(f);
    return *rss >= 0 ? 0 : -1;
}

/* ------------------------------------------------------- the fleet state */

typedef struct {
    char name[64];
    char role[16];
    long pid;
    long restarts;
    char state[24];
} s_proc_t;

/* The supervisor's state file (sdxl-fleet up: children[] with name, role,
   pid, restarts, state). Returns the count, -1 when unreadable. */
static int s_fleet_read(const char *path, s_proc_t *p, int max)
{
    if (!path || !*path)
        return -1;
    char err[256];
    size_t len;
    char *txt = sdx_codec_read_file(path, &len, err, sizeof err);
    if (!txt)
        return -1;
    sdx_value_t *v = sdx_json_decode(txt, len, err, sizeof err);
    free(txt);
    const sdx_value_t *kids = sdx_map_get(v, "children");
    int n = 0;
    for (size_t i = 0; kids && i < sdx_array_len(kids) && n < max; i++) {
        const sdx_value_t *k = sdx_array_at(kids, i);
        snprintf(p[n].name, sizeof p[n].name, "%s", sdx_map_str(k, "name", "?"));
        snprintf(p[n].role, sizeof p[n].role, "%s", sdx_map_str(k, "role", "?"));
        snprintf(p[n].state, sizeof p[n].state, "%s", sdx_map_str(k, "state", "?"));
        p[n].pid = (long)sdx_map_num(k, "pid", 0);
        p[n].restarts = (long)sdx_map_num(k, "restarts", 0);
        n++;
    }
    int rc = kids ? n : -1;
    sdx_value_destroy(&v);
    return rc;
}

/* -------------------------------------------------------------- results */

static int s_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    size_t n;
    double p50, p90, p99, p999, max, mean;
} s_pct_t;

static s_pct_t s_percentiles(float *v, size_t n)
{
    s_pct_t p = {.n = n};
    if (!n)
        return p;
    qsort(v, n, sizeof *v, s_cmp_float);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
#define AT(q) ((double)v[(size_t)((double)n * (q)) < n ? (size_t)((double)n * (q)) : n - 1])
    p.p50 = AT(0.50);
    p.p90 = AT(0.90);
    p.p99 = AT(0.99);
    p.p999 = AT(0.999);
#undef AT
    p.max = v[n - 1];
    p.mean = sum / (double)n;
    return p;
}

static double s_r1(double x) /* one decimal, for the JSON */
{
    return round(x * 10) / 10;
}

static double s_r2(double x)
{
    return round(x * 100) / 100;
}

typedef struct {
    double t_s;
    long rss_kb; /* -1: not measured */
    long done;   /* measured requests answered or timed out so far */
    double rps;  /* of the interval before the sample; < 0 for the first */
} s_sample_t;

static void s_sample_print(FILE *f, const s_sample_t *x, const char *note)
{
    char rss[24] = "-", rps[24] = "-";
    if (x->rss_kb >= 0)
        snprintf(rss, sizeof rss, "%ld", x->rss_kb);
    if (x->rps >= 0)
        snprintf(rps, sizeof rps, "%.0f", x->rps);
    fprintf(f, "  %7.1f %10s %10s %12ld%s\n", x->t_s, rss, rps, x->done, note);
    fflush(f);
}

/* ------------------------------------------------------------- options */

static int s_mix_find(const s_opts_t *o, const char *type)
{
    for (int i = 0; i < o->ntypes; i++)
        if (strcmp(o->mix[i].type, type) == 0)
            return i;
    return -1;
}

static const char *s_known_data(const char *type)
{
    for (size_t i = 0; i < sizeof s_known / sizeof s_known[0]; i++)
        if (strcmp(s_known[i].type, type) == 0)
            return s_known[i].data;
    return "{}";
}

/* "type=weight,..." (a type alone: weight 1) */
static int s_mix_parse(s_opts_t *o, const char *spec)
{
    for (int i = 0; i < o->ntypes; i++)
        free(o->mix[i].data);
    o->ntypes = 0;
    char *copy = strdup(spec), *save = NULL;
    if (!copy)
        return -1;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *eq = strchr(tok, '=');
        double w = 1;
        if (eq) {
            *eq = '\0';
            char *end;
            w = strtod(eq + 1, &end);
            if (end == eq + 1 || *end || !(w >= 0) || w > 1e6) {
                fprintf(stderr, "bench-load: --mix: weight of %s must be a number >= 0\n", tok);
                rc = -1;
                break;
            }
        }
        size_t tl = strlen(tok);
        while (tl && tok[tl - 1] == ' ')
            tok[--tl] = '\0';
        if (!tl || tl >= sizeof o->mix[0].type || !strchr(tok, '.')) {
            fprintf(stderr, "bench-load: --mix: '%s' is not a message type (domain.verb)\n", tok);
            rc = -1;
            break;
        }
        if (s_mix_find(o, tok) >= 0) {
            fprintf(stderr, "bench-load: --mix: %s given twice\n", tok);
            rc = -1;
            break;
        }
        if (o->ntypes == MAX_TYPES) {
            fprintf(stderr, "bench-load: --mix: at most %d types\n", MAX_TYPES);
            rc = -1;
            break;
        }
        if (w == 0)
            continue;
        s_mixent_t *e = &o->mix[o->ntypes++];
        snprintf(e->type, sizeof e->type, "%s", tok);
        e->weight = w;
        e->data = strdup(s_known_data(tok));
        if (!e->data) {
            rc = -1;
            break;
        }
    }
    free(copy);
    if (rc == 0 && o->ntypes == 0) {
        fprintf(stderr, "bench-load: --mix: no type with a weight above 0\n");
        rc = -1;
    }
    return rc;
}

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: bench-load-bin [--broker EP (default $SDXL_ENDPOINT)] [--clients 50]\n"
            "         [--requests 1000 (per client)] [--inflight K (DEALER, K in flight; 1)]\n"
            "         [--soak [SECONDS (600)]] [--sample SECONDS (10, soak RSS series)]\n"
            "         [--mix \"type=weight,...\"] [--data TYPE=JSON (request data of TYPE)]\n"
            "         [--warmup N (per client, 500)] [--timeout-ms 10000] [--grace-ms 500]\n"
            "         [--msgpack|--json-wire (request encoding, msgpack)] [--json (results)]\n"
            "         [--broker-pid PID (default $SDXL_BROKER_PID)]\n"
            "default mix: %s\n",
            s_default_mix);
}

static bool s_is_number(const char *s)
{
    if (!s || !*s)
        return false;
    char *end;
    strtod(s, &end);
    return *end == '\0';
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    s_opts_t o = {.clients = 50,
                  .requests = 1000,
                  .inflight = 1,
                  .soak_s = 0,
                  .sample_s = 10,
                  .warmup = 500,
                  .timeout_ms = 10000,
                  .grace_ms = 500,
                  .enc = SDX_ENC_MSGPACK,
                  .broker_pid = -1};
    const char *mix_spec = s_default_mix;
    const char *data_args[MAX_TYPES];
    int ndata = 0;
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"clients", required_argument, NULL, 'c'},
        {"requests", required_argument, NULL, 'n'},
        {"inflight", required_argument, NULL, 'k'},
        {"soak", optional_argument, NULL, 'S'},
        {"sample", required_argument, NULL, 's'},
        {"mix", required_argument, NULL, 'x'},
        {"data", required_argument, NULL, 'D'},
        {"warmup", required_argument, NULL, 'w'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"grace-ms", required_argument, NULL, 'g'},
        {"msgpack", no_argument, NULL, 'm'},
        {"json-wire", no_argument, NULL, 'W'},
        {"json", no_argument, NULL, 'j'},
        {"broker-pid", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "b:c:n:k:s:x:D:w:t:g:p:mWjh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            o.broker = optarg;
            break;
        case 'c':
            o.clients = (int)strtol(optarg, &end, 10);
            if (*end)
                o.clients = -1;
            break;
        case 'n':
            o.requests = strtol(optarg, &end, 10);
            if (*end)
                o.requests = -1;
            break;
        case 'k':
            o.inflight = (int)strtol(optarg, &end, 10);
            if (*end)
                o.inflight = -1;
            break;
        case 'S': /* --soak, --soak=S, --soak S */
            if (optarg)
                o.soak_s = s_is_number(optarg) ? atof(optarg) : -1;
            else if (optind < argc && s_is_number(argv[optind]))
                o.soak_s = atof(argv[optind++]);
            else
                o.soak_s = 600;
            break;
        case 's':
            o.sample_s = s_is_number(optarg) ? atof(optarg) : -1;
            break;
        case 'x':
            mix_spec = optarg;
            break;
        case 'D':
            if (ndata == MAX_TYPES) {
                fprintf(stderr, "bench-load: at most %d --data\n", MAX_TYPES);
                return 2;
            }
            data_args[ndata++] = optarg;
            break;
        case 'w':
            o.warmup = (int)strtol(optarg, &end, 10);
            if (*end)
                o.warmup = -1;
            break;
        case 't':
            o.timeout_ms = (int)strtol(optarg, &end, 10);
            if (*end)
                o.timeout_ms = -1;
            break;
        case 'g':
            o.grace_ms = (int)strtol(optarg, &end, 10);
            if (*end)
                o.grace_ms = -1;
            break;
        case 'm':
            o.enc = SDX_ENC_MSGPACK;
            break;
        case 'W':
            o.enc = SDX_ENC_JSON;
            break;
        case 'j':
            o.json_out = true;
            break;
        case 'p':
            o.broker_pid = strtol(optarg, &end, 10);
            if (*end)
                o.broker_pid = 0;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench-load: unexpected argument '%s'\n", argv[optind]);
        s_usage(stderr);
        return 2;
    }
    if (!o.broker)
        o.broker = getenv("SDXL_ENDPOINT"); /* set by tools/run-fleet --exec */
    if (!o.broker || o.clients < 1 || o.clients > 1000 || o.requests < 1 ||
        o.requests > 100000000L || o.inflight < 1 || o.inflight > 1024 || o.soak_s < 0 ||
        o.soak_s > 7 * 86400 || o.sample_s < 0.5 || o.sample_s > 3600 || o.warmup < 0 ||
        o.warmup > 1000000 || o.timeout_ms < 1 || o.grace_ms < 0 || o.grace_ms > 600000 ||
        o.broker_pid == 0) {
        if (!o.broker)
            fprintf(stderr, "bench-load: no broker: --broker EP or $SDXL_ENDPOINT\n");
        s_usage(stderr);
        return 2;
    }
    if (s_mix_parse(&o, mix_spec) != 0)
        return 2;
    for (int i = 0; i < ndata; i++) {
        const char *eq = strchr(data_args[i], '=');
        char type[64];
        if (!eq || (size_t)(eq - data_args[i]) >= sizeof type) {
            fprintf(stderr, "bench-load: --data TYPE=JSON, not '%s'\n", data_args[i]);
            return 2;
        }
        snprintf(type, sizeof type, "%.*s", (int)(eq - data_args[i]), data_args[i]);
        int t = s_mix_find(&o, type);
        if (t < 0) {
            fprintf(stderr, "bench-load: --data %s: that type is not in the mix\n", type);
            return 2;
        }
        free(o.mix[t].data);
        o.mix[t].data = strdup(eq + 1);
        if (!o.mix[t].data)
            return 2;
    }
    for (int t = 0; t < o.ntypes; t++) { /* every type's data is a JSON object */
        char err[128] = "";
        sdx_value_t *d = sdx_json_decode(o.mix[t].data, strlen(o.mix[t].data), err, sizeof err);
        if (d && d->type != SDX_MAP)
            snprintf(err, sizeof err, "a JSON %s", sdx_vtype_name(d->type));
        bool ok = d && d->type == SDX_MAP;
        sdx_value_destroy(&d);
        if (!ok) {
            fprintf(stderr, "bench-load: data of %s (--data) is not a JSON object: %s\n",
                    o.mix[t].type, err);
            return 2;
        }
    }
    double wsum = 0;
    for (int i = 0; i < o.ntypes; i++)
        wsum += o.mix[i].weight;
    for (int i = 0; i < o.ntypes; i++) {
        o.mix[i].units = (uint64_t)llround(o.mix[i].weight / wsum * 1e6);
        if (o.mix[i].units == 0)
            o.mix[i].units = 1;
        o.wtotal += o.mix[i].units;
        o.mix[i].cum = o.wtotal;
    }
    /* the broker's pid: --broker-pid, $SDXL_BROKER_PID, else the fleet state's broker */
    o.fleet_state = getenv("SDXL_FLEET_STATE");
    s_proc_t procs0[MAX_PROCS], procs1[MAX_PROCS];
    int nprocs0 = s_fleet_read(o.fleet_state, procs0, MAX_PROCS);
    if (o.broker_pid < 0) {
        const char *e = getenv("SDXL_BROKER_PID");
        if (e && *e) {
            o.broker_pid = strtol(e, &end, 10);
            if (*end || o.broker_pid <= 0)
                o.broker_pid = -1;
        }
    }
    for (int i = 0; o.broker_pid < 0 && i < nprocs0; i++)
        if (strcmp(procs0[i].role, "broker") == 0 && procs0[i].pid > 0)
            o.broker_pid = procs0[i].pid;
    FILE *rep = o.json_out ? stderr : stdout;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    bool soak = o.soak_s > 0;
    fprintf(rep,
            "bench-load: %d clients (DEALER, %d in flight each), %d warm-up requests per "
            "client, %s\n",
            o.clients, o.inflight, o.warmup, o.enc == SDX_ENC_MSGPACK ? "msgpack" : "JSON");
    if (soak)
        fprintf(rep, "  soak: %g s, broker RSS every %g s\n", o.soak_s, o.sample_s);
    else
        fprintf(rep, "  %ld requests per client, %ld in all\n", o.requests, o.requests * o.clients);
    fprintf(rep, "  broker %s", o.broker);
    if (o.broker_pid > 0)
        fprintf(rep, " (pid %ld)", o.broker_pid);
    fprintf(rep, "\n  mix:");
    for (int i = 0; i < o.ntypes; i++)
        fprintf(rep, "%s %s %.1f%%", i ? "," : "", o.mix[i].type,
                100.0 * (double)o.mix[i].units / (double)o.wtotal);
    fprintf(rep, "\n");
    fflush(rep);

    /* ---- clients */
    void *zctx = zmq_ctx_new();
    zmq_ctx_set(zctx, ZMQ_MAX_SOCKETS, o.clients + 64);
    s_client_t *cs = calloc((size_t)o.clients, sizeof *cs);
    pthread_t *th = calloc((size_t)o.clients, sizeof *th);
    pthread_barrier_t bar;
    if (!zctx || !cs || !th || pthread_barrier_init(&bar, NULL, (unsigned)o.clients + 1) != 0) {
        fprintf(stderr, "bench-load: out of memory\n");
        return 1;
    }
    for (int i = 0; i < o.clients; i++) {
        cs[i].o = &o;
        cs[i].id = i;
        cs[i].zctx = zctx;
        cs[i].bar = &bar;
        for (int t = 0; t < o.ntypes; t++) {
            char err[256];
            if (s_req_make(&o, i, t, &cs[i].req[t], err, sizeof err) != 0) {
                fprintf(stderr, "bench-load: %s\n", err);
                return 2;
            }
        }
    }
    for (int i = 0; i < o.clients; i++)
        if (pthread_create(&th[i], NULL, s_client_thread, &cs[i]) != 0) {
            fprintf(stderr, "bench-load: cannot start client thread %d\n", i);
            return 1;
        }
    pthread_barrier_wait(&bar); /* connected */
    long rss_start, hwm_start;
    s_proc_mem(o.broker_pid, &rss_start, &hwm_start);
    double t_warm = s_now_us();
    pthread_barrier_wait(&bar); /* warm-up done */
    double warm_s = (s_now_us() - t_warm) / 1e6;
    s_sleep_ms(200); /* the broker settles (replies flushed, timers run) */
    long rss0, hwm0, rss_peak = -1, rss1 = -1, hwm1 = -1;
    s_proc_mem(o.broker_pid, &rss0, &hwm0);
    rss_peak = rss0;
    size_t nsamples = 0, samples_cap = 0;
    s_sample_t *samples = NULL;
    if (soak) {
        samples_cap = (size_t)(o.soak_s / o.sample_s) + 8;
        samples = calloc(samples_cap, sizeof *samples);
        if (samples) {
            samples[nsamples++] = (s_sample_t){0, rss0, 0, -1};
            fprintf(rep,
                    "\nsoak series (broker VmRSS, throughput of each interval):\n"
                    "  %7s %10s %10s %12s\n",
                    "t s", "rss kB", "req/s", "done");
            s_sample_print(rep, &samples[0], "  (after the warm-up)");
        }
    }
    double t_start = s_now_us();
    pthread_barrier_wait(&bar); /* measured phase starts */

    double next_sample = t_start + o.sample_s * 1e6, next_peak = t_start + 250e3;
    long last_done = 0;
    double last_t = t_start;
    while (atomic_load(&s_clients_done) < o.clients) {
        s_sleep_ms(50);
        double now = s_now_us();
        if (soak && !atomic_load(&s_stop_send) && now - t_start >= o.soak_s * 1e6)
            atomic_store(&s_stop_send, 1);
        if (now >= next_peak) {
            long r, h;
            if (s_proc_mem(o.broker_pid, &r, &h) == 0 && r > rss_peak)
                rss_peak = r;
            next_peak = now + 250e3;
        }
        if (soak && samples && now >= next_sample && !atomic_load(&s_stop_send)) {
            long r, h;
            s_proc_mem(o.broker_pid, &r, &h);
            long done = atomic_load(&s_done_measured);
            double rps = (double)(done - last_done) / ((now - last_t) / 1e6);
            s_sample_t x = {(now - t_start) / 1e6, r, done, rps};
            if (nsamples < samples_cap)
                samples[nsamples++] = x;
            s_sample_print(rep, &x, "");
            last_done = done;
            last_t = now;
            next_sample += o.sample_s * 1e6;
        }
    }
    for (int i = 0; i < o.clients; i++)
        pthread_join(th[i], NULL);
    s_proc_mem(o.broker_pid, &rss1, &hwm1);
    if (rss1 > rss_peak)
        rss_peak = rss1;
    if (soak && samples && nsamples < samples_cap) { /* the last one: after the load */
        double now = s_now_us();
        long done = atomic_load(&s_done_measured);
        double rps = now > last_t ? (double)(done - last_done) / ((now - last_t) / 1e6) : 0;
        samples[nsamples++] = (s_sample_t){(now - t_start) / 1e6, rss1, done, rps};
        s_sample_print(rep, &samples[nsamples - 1], "  (end: the load drained)");
    }
    int nprocs1 = s_fleet_read(o.fleet_state, procs1, MAX_PROCS);
    pthread_barrier_destroy(&bar);
    zmq_ctx_term(zctx);

    /* ---- merge */
    double t_end = t_start;
    s_tstat_t tot[2][MAX_TYPES];
    memset(tot, 0, sizeof tot);
    long stray = 0, bad = 0, progress = 0, send_fail = 0, setup_fail = 0, errs_other = 0;
    size_t nall = 0;
    for (int i = 0; i < o.clients; i++) {
        s_client_t *c = &cs[i];
        if (c->t_last_reply > t_end)
            t_end = c->t_last_reply;
        stray += c->stray;
        bad += c->bad_frames;
        progress += c->progress_msgs;
        send_fail += c->send_failures;
        setup_fail += c->setup_failed;
        errs_other += c->errs_other;
        for (int p = 0; p < 2; p++)
            for (int t = 0; t < o.ntypes; t++) {
                s_tstat_t *a = &tot[p][t], *b = &c->ph[p][t];
                a->sent += b->sent;
                a->ok += b->ok;
                a->errors += b->errors;
                a->timeouts += b->timeouts;
                a->dups += b->dups;
                a->late += b->late;
                if (p == 1)
                    nall += b->n;
            }
    }
    float *all = malloc((nall ? nall : 1) * sizeof *all);
    s_pct_t per[MAX_TYPES];
    size_t k = 0;
    for (int t = 0; t < o.ntypes; t++) {
        size_t n = 0;
        for (int i = 0; i < o.clients; i++)
            n += cs[i].ph[1][t].n;
        float *v = malloc((n ? n : 1) * sizeof *v);
        size_t j = 0;
        for (int i = 0; i < o.clients; i++) {
            s_tstat_t *b = &cs[i].ph[1][t];
            if (v)
                memcpy(v + j, b->lat, b->n * sizeof *v);
            if (all)
                memcpy(all + k, b->lat, b->n * sizeof *all);
            j += b->n;
            k += b->n;
        }
        per[t] = v ? s_percentiles(v, n) : (s_pct_t){0};
        free(v);
    }
    s_pct_t ov = all ? s_percentiles(all, nall) : (s_pct_t){0};
    free(all);
    double elapsed = (t_end - t_start) / 1e6;
    long m_sent = 0, m_ok = 0, m_err = 0, m_tmo = 0, m_dup = 0, m_late = 0;
    long w_sent = 0, w_fail = 0;
    for (int t = 0; t < o.ntypes; t++) {
        m_sent += tot[1][t].sent;
        m_ok += tot[1][t].ok;
        m_err += tot[1][t].errors;
        m_tmo += tot[1][t].timeouts;
        m_dup += tot[1][t].dups;
        m_late += tot[1][t].late;
        w_sent += tot[0][t].sent;
        w_fail += tot[0][t].errors + tot[0][t].timeouts + tot[0][t].dups + tot[0][t].late;
    }
    long replies = m_ok + m_err;
    double rps = elapsed > 0 ? (double)replies / elapsed : 0;

    /* fleet processes that restarted or changed pid during the run */
    int restarted = 0;
    char restarted_names[512] = "";
    if (nprocs0 >= 0 && nprocs1 >= 0) {
        for (int i = 0; i < nprocs0; i++) {
            bool same = false;
            for (int j = 0; j < nprocs1; j++)
                if (strcmp(procs0[i].name, procs1[j].name) == 0)
                    same = procs0[i].pid == procs1[j].pid &&
                           procs0[i].restarts == procs1[j].restarts &&
                           strcmp(procs1[j].state, "running") == 0;
            if (!same) {
                restarted++;
                size_t l = strlen(restarted_names);
                snprintf(restarted_names + l, sizeof restarted_names - l, "%s%.63s", l ? " " : "",
                         procs0[i].name);
            }
        }
    }

    /* ---- report */
    fprintf(rep, "\n%-22s %9s %9s %7s %8s %5s %5s %9s %9s %9s\n", "type", "sent", "ok", "errors",
            "timeouts", "dups", "late", "p50 us", "p99 us", "max us");
    for (int t = 0; t < o.ntypes; t++) {
        s_tstat_t *a = &tot[1][t];
        fprintf(rep, "%-22s %9ld %9ld %7ld %8ld %5ld %5ld %9.1f %9.1f %9.1f\n", o.mix[t].type,
                a->sent, a->ok, a->errors, a->timeouts, a->dups, a->late, per[t].p50, per[t].p99,
                per[t].max);
    }
    fprintf(rep, "%-22s %9ld %9ld %7ld %8ld %5ld %5ld %9.1f %9.1f %9.1f\n", "all", m_sent, m_ok,
            m_err, m_tmo, m_dup, m_late, ov.p50, ov.p99, ov.max);
    bool any_err = false;
    for (int i = 0; i < o.clients; i++)
        any_err |= cs[i].nerrs > 0;
    if (any_err || errs_other) {
        fprintf(rep, "error codes:");
        for (int t = 0; t < o.ntypes; t++) {
            /* merge the clients' (type, code) counts for this type */
            char seen[MAX_ERRS * 2][40];
            long cnt[MAX_ERRS * 2];
            int ns = 0;
            for (int i = 0; i < o.clients; i++)
                for (int e = 0; e < cs[i].nerrs; e++) {
                    if (cs[i].errs[e].type != t)
                        continue;
                    int x = 0;
                    while (x < ns && strcmp(seen[x], cs[i].errs[e].code) != 0)
                        x++;
                    if (x == ns && ns < MAX_ERRS * 2) {
                        snprintf(seen[ns], sizeof seen[ns], "%s", cs[i].errs[e].code);
                        cnt[ns++] = 0;
                    }
                    if (x < ns)
                        cnt[x] += cs[i].errs[e].count;
                }
            for (int x = 0; x < ns; x++)
                fprintf(rep, " %s:%s=%ld", o.mix[t].type, seen[x], cnt[x]);
        }
        if (errs_other)
            fprintf(rep, " (other pairs: %ld)", errs_other);
        fprintf(rep, " (warm-up included)\n");
    }
    fprintf(rep,
            "\nthroughput: %ld final replies in %.2f s: %.0f req/s (%s)\n"
            "latency:    p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us  "
            "mean %.1f us\n",
            replies, elapsed, rps, soak ? "soak" : "fixed count", ov.p50, ov.p90, ov.p99, ov.p999,
            ov.max, ov.mean);
    fprintf(rep, "warm-up:    %ld requests in %.2f s, %ld failed", w_sent, warm_s, w_fail);
    if (rss_start >= 0)
        fprintf(rep, "; broker RSS %ld kB before it (clients connected)", rss_start);
    fprintf(rep, "\n");
    double growth_kb = 0, growth_pct = 0;
    if (o.broker_pid > 0 && rss0 >= 0 && rss1 >= 0) {
        growth_kb = (double)(rss1 - rss0);
        growth_pct = rss0 > 0 ? 100.0 * growth_kb / (double)rss0 : 0;
        fprintf(rep,
                "broker RSS: before %ld kB, after %ld kB: %+.0f kB (%+.2f%%); peak during the run "
                "%ld kB; VmHWM %ld -> %ld kB (pid %ld)\n",
                rss0, rss1, growth_kb, growth_pct, rss_peak, hwm0, hwm1, o.broker_pid);
    } else if (o.broker_pid > 0) {
        fprintf(rep, "broker RSS: pid %ld not readable %s\n", o.broker_pid,
                rss0 < 0 ? "before the run" : "after the run (did the broker exit?)");
    } else {
        fprintf(rep, "broker RSS: not measured (no --broker-pid, $SDXL_BROKER_PID or "
                     "$SDXL_FLEET_STATE)\n");
    }
    double slope = 0;
    if (soak && nsamples >= 3) {
        /* least squares of rss over t, every sample but the first (the
           pre-load value) */
        double sx = 0, sy = 0, sxx = 0, sxy = 0;
        int n = 0;
        for (size_t i = 1; i < nsamples; i++) {
            if (samples[i].rss_kb < 0)
                continue;
            double x = samples[i].t_s / 60, y = (double)samples[i].rss_kb;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
            n++;
        }
        if (n >= 2 && n * sxx - sx * sx > 0)
            slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        fprintf(rep, "soak:       %zu samples, RSS slope over the load %+.1f kB/min\n", nsamples,
                slope);
    }
    if (nprocs0 >= 0 && nprocs1 >= 0)
        fprintf(rep, "fleet:      %d processes, %d restarted or stopped during the run%s%s\n",
                nprocs0, restarted, restarted ? ": " : "", restarted_names);
    if (stray || bad || progress || send_fail || setup_fail)
        fprintf(rep,
                "other:      %ld stray replies, %ld undecodable frames, %ld progress messages, "
                "%ld send failures, %ld clients failed to connect\n",
                stray, bad, progress, send_fail, setup_fail);
    bool failed = m_err || m_tmo || m_dup || m_late || w_fail || stray || bad || send_fail ||
                  setup_fail || restarted || replies == 0 ||
                  (!soak && m_sent != o.requests * o.clients && !atomic_load(&s_interrupted));
    if (atomic_load(&s_interrupted))
        fprintf(rep, "interrupted: the figures cover the requests sent until then\n");
    fprintf(rep, "result:     %s\n",
            failed ? "FAILED (a request failed, timed out or was answered twice; see above)"
                   : "OK (every request got exactly one final reply, all successful)");
    fflush(rep);

    /* ---- JSON */
    if (o.json_out) {
        sdx_value_t *r = sdx_value_map_new();
        sdx_map_set_str(r, "tool", "bench-load");
        sdx_map_set_str(r, "mode", soak ? "soak" : "fixed");
        sdx_map_set_str(r, "endpoint", o.broker);
        sdx_map_set_int(r, "clients", o.clients);
        sdx_map_set_int(r, "inflight", o.inflight);
        if (soak)
            sdx_map_set_float(r, "soak_s", o.soak_s);
        else
            sdx_map_set_int(r, "requests_per_client", o.requests);
        sdx_map_set_int(r, "warmup_per_client", o.warmup);
        sdx_map_set_str(r, "encoding", o.enc == SDX_ENC_MSGPACK ? "msgpack" : "json");
        sdx_value_t *mix = sdx_value_map_new();
        for (int t = 0; t < o.ntypes; t++)
            sdx_map_set_float(mix, o.mix[t].type,
                              s_r2(100.0 * (double)o.mix[t].units / (double)o.wtotal));
        sdx_map_set(r, "mix_pct", mix);
        sdx_map_set_int(r, "sent", m_sent);
        sdx_map_set_int(r, "succeeded", m_ok);
        sdx_map_set_int(r, "errors", m_err);
        sdx_map_set_int(r, "timeouts", m_tmo);
        sdx_map_set_int(r, "duplicates", m_dup);
        sdx_map_set_int(r, "late", m_late);
        sdx_map_set_int(r, "stray", stray + bad);
        sdx_map_set_int(r, "warmup_sent", w_sent);
        sdx_map_set_int(r, "warmup_failed", w_fail);
        sdx_map_set_float(r, "elapsed_s", s_r2(elapsed));
        sdx_map_set_float(r, "throughput_rps", s_r1(rps));
        sdx_value_t *lat = sdx_value_map_new();
        sdx_map_set_float(lat, "p50", s_r1(ov.p50));
        sdx_map_set_float(lat, "p90", s_r1(ov.p90));
        sdx_map_set_float(lat, "p99", s_r1(ov.p99));
        sdx_map_set_float(lat, "p999", s_r1(ov.p999));
        sdx_map_set_float(lat, "max", s_r1(ov.max));
        sdx_map_set_float(lat, "mean", s_r1(ov.mean));
        sdx_map_set(r, "latency_us", lat);
        sdx_value_t *pt = sdx_value_map_new();
        for (int t = 0; t < o.ntypes; t++) {
            s_tstat_t *a = &tot[1][t];
            sdx_value_t *e = sdx_value_map_new();
            sdx_map_set_int(e, "sent", a->sent);
            sdx_map_set_int(e, "succeeded", a->ok);
            sdx_map_set_int(e, "errors", a->errors);
            sdx_map_set_int(e, "timeouts", a->timeouts);
            sdx_map_set_int(e, "duplicates", a->dups);
            sdx_map_set_int(e, "late", a->late);
            sdx_map_set_float(e, "p50_us", s_r1(per[t].p50));
            sdx_map_set_float(e, "p99_us", s_r1(per[t].p99));
            sdx_map_set_float(e, "max_us", s_r1(per[t].max));
            sdx_map_set(pt, o.mix[t].type, e);
        }
        sdx_map_set(r, "per_type", pt);
        sdx_value_t *b = sdx_value_map_new();
        if (o.broker_pid > 0)
            sdx_map_set_int(b, "pid", o.broker_pid);
        if (rss0 >= 0 && rss1 >= 0) {
            sdx_map_set_int(b, "rss_start_kb", rss_start);
            sdx_map_set_int(b, "rss_before_kb", rss0);
            sdx_map_set_int(b, "rss_after_kb", rss1);
            sdx_map_set_int(b, "rss_growth_kb", (int64_t)growth_kb);
            sdx_map_set_float(b, "rss_growth_pct", s_r2(growth_pct));
            sdx_map_set_int(b, "rss_peak_kb", rss_peak);
            sdx_map_set_int(b, "hwm_before_kb", hwm0);
            sdx_map_set_int(b, "hwm_after_kb", hwm1);
        }
        sdx_map_set(r, "broker", b);
        if (soak) {
            sdx_value_t *sk = sdx_value_map_new();
            sdx_map_set_float(sk, "interval_s", o.sample_s);
            sdx_map_set_float(sk, "rss_slope_kb_per_min", s_r1(slope));
            sdx_value_t *ser = sdx_value_array_new();
            for (size_t i = 0; i < nsamples; i++) {
                sdx_value_t *e = sdx_value_map_new();
                sdx_map_set_float(e, "t_s", s_r1(samples[i].t_s));
                if (samples[i].rss_kb >= 0)
                    sdx_map_set_int(e, "rss_kb", samples[i].rss_kb);
                else
                    sdx_map_set(e, "rss_kb", sdx_value_nil_new());
                sdx_map_set_int(e, "done", samples[i].done);
                if (samples[i].rps >= 0)
                    sdx_map_set_float(e, "rps", s_r1(samples[i].rps));
                else
                    sdx_map_set(e, "rps", sdx_value_nil_new());
                sdx_array_push(ser, e);
            }
            sdx_map_set(sk, "series", ser);
            sdx_map_set(r, "soak", sk);
        }
        if (nprocs0 >= 0 && nprocs1 >= 0) {
            sdx_value_t *fl = sdx_value_map_new();
            sdx_map_set_int(fl, "processes", nprocs0);
            sdx_map_set_int(fl, "restarted", restarted);
            sdx_map_set(r, "fleet", fl);
        }
        sdx_map_set_bool(r, "interrupted", atomic_load(&s_interrupted) != 0);
        sdx_map_set_bool(r, "ok", !failed);
        uint8_t *j = NULL;
        size_t jl = 0;
        if (sdx_json_encode(r, &j, &jl) == 0)
            printf("%.*s\n", (int)jl, (char *)j);
        free(j);
        sdx_value_destroy(&r);
    }

    for (int i = 0; i < o.clients; i++) {
        for (int t = 0; t < o.ntypes; t++) {
            free(cs[i].req[t].buf);
            free(cs[i].ph[0][t].lat);
            free(cs[i].ph[1][t].lat);
        }
        free(cs[i].st);
        free(cs[i].out);
    }
    for (int t = 0; t < o.ntypes; t++)
        free(o.mix[t].data);
    free(cs);
    free(th);
    free(samples);
    return failed ? 1 : 0;
}
