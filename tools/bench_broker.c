/*  bench_broker.c - `bench-broker-bin`: round trips per second and p50/p99
    latency of small requests through sdxl-broker + its workers, against a
    plain zmq_proxy (ROUTER/DEALER) with echo threads and, optionally, an
    asyncio pyzmq broker with Python workers (tools/bench_pybroker.py), all
    measured in the same run under the same closed-loop load from N client
    threads. Prints a table and the ratios.

        bench-broker-bin [--broker EP (default $SDXL_ENDPOINT)] [--clients 8]
                         [--inflight K (0: REQ, 1 in flight; K>0: DEALER, K in flight)]
                         [--type test.echo] [--duration 5] [--warmup 2000]
                         [--echo-workers 2] [--payload 64] [--transport tcp|ipc]
                         [--msgpack|--json] [--rounds 3]
                         [--pybroker tools/bench_pybroker.py [--python /usr/bin/python3]]

    The broker (and its workers) must already run; tools/bench-broker starts
    them. The baselines run in child processes forked here, on the same
    transport: one process with zmq_proxy and --echo-workers DEALER echo
    threads (connected over the transport, so every path crosses the same
    process hops), and the Python design (its broker and --echo-workers
    Python worker processes).

    Not a test: it never fails on slow figures, it reports them (exit 0;
    exit 1 only when requests fail or time out).
*/
#include "sdx_codec.h"
#include "sdx_value.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    const char *broker;
    int clients;
    double duration_s;
    int warmup;
    int echo_workers;
    int payload;
    const char *transport;
    sdx_encoding_t enc;
    bool baseline;
    bool broker_run;
    int rounds;
    int inflight;          /* 0: REQ sockets; K: DEALER sockets with K requests in flight */
    const char *mtype;     /* message type sent (test.echo, device.ping) */
    const char *pybroker;  /* tools/bench_pybroker.py, NULL: not measured */
    const char *python;    /* interpreter for it */
} s_opts_t;

typedef struct {
    const s_opts_t *o;
    const char *endpoint;
    void *zctx;
    int id;
    bool check_reply; /* broker: decode and check success */
    volatile bool *go;
    /* results */
    double *lat_us;
    size_t n, cap;
    long errors;
    long timeouts;
    double elapsed_s;
} s_client_t;

typedef struct {
    const char *name;
    double rps;
    double p50, p90, p99, p999, max;
    size_t n;
    long errors, timeouts;
} s_result_t;

static double s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define SEQ_DIGITS 12

/* One encoded request per client, made once: its request_id is
   "b<client>-<12 digits>" and s_req_set_seq writes a sequence number into
   those digits in place, so that the load generator spends its CPU on
   sending, not on building trees (on a small machine it shares the cores with
   what it measures). */
typedef struct {
    uint8_t *buf;
    size_t len;
    size_t seq_off; /* offset of the digits in buf */
    char prefix[24];
    size_t prefix_len;
} s_req_t;

static int s_req_make(const s_opts_t *o, int client, s_req_t *q)
{
    memset(q, 0, sizeof *q);
    q->prefix_len = (size_t)snprintf(q->prefix, sizeof q->prefix, "b%d-", client);
    char rid[64];
    snprintf(rid, sizeof rid, "%s%0*d", q->prefix, SEQ_DIGITS, 0);
    sdx_value_t *r = sdx_value_map_new();
    sdx_value_t *d = sdx_value_map_new();
    char *pad = malloc((size_t)o->payload + 1);
    if (!r || !d || !pad) {
        sdx_value_destroy(&r);
        sdx_value_destroy(&d);
        free(pad);
        return -1;
    }
    sdx_map_set_str(r, "message_type", o->mtype);
    sdx_map_set_str(r, "request_id", rid);
    memset(pad, 'x', (size_t)o->payload);
    pad[o->payload] = '\0';
    /* test.echo answers its data; <domain>.ping echoes data.echo */
    sdx_map_set_str(d, strcmp(o->mtype, "test.echo") == 0 ? "pad" : "echo", pad);
    free(pad);
    sdx_map_set(r, "data", d);
    int rc = sdx_codec_encode(r, o->enc, &q->buf, &q->len);
    sdx_value_destroy(&r);
    if (rc != 0)
        return -1;
    uint8_t *at = memmem(q->buf, q->len, rid, strlen(rid));
    if (!at) {
        free(q->buf);
        q->buf = NULL;
        return -1;
    }
    q->seq_off = (size_t)(at - q->buf) + q->prefix_len;
    return 0;
}

static void s_req_set_seq(s_req_t *q, long seq)
{
    for (int i = SEQ_DIGITS - 1; i >= 0; i--, seq /= 10)
        q->buf[q->seq_off + (size_t)i] = (uint8_t)('0' + seq % 10);
}

/* The sequence number in a reply's request_id (-1 if none), and whether it
   says success. msgpack replies are scanned (the id's digits, and the key
   "success" with the value true), JSON ones decoded. */
static long s_reply_scan(const s_req_t *q, sdx_encoding_t enc, const void *buf, size_t len,
                         bool *ok)
{
    *ok = false;
    if (enc == SDX_ENC_MSGPACK) {
        const uint8_t *at = memmem(buf, len, q->prefix, q->prefix_len);
        static const uint8_t succ[] = {0xa7, 's', 'u', 'c', 'c', 'e', 's', 's', 0xc3};
        *ok = memmem(buf, len, succ, sizeof succ) != NULL;
        if (!at || (size_t)(at - (const uint8_t *)buf) + q->prefix_len + SEQ_DIGITS > len)
            return -1;
        long v = 0;
        for (size_t i = 0; i < SEQ_DIGITS; i++) {
            uint8_t ch = at[q->prefix_len + i];
            if (ch < '0' || ch > '9')
                return -1;
            v = v * 10 + (ch - '0');
        }
        return v;
    }
    char err[128];
    sdx_value_t *v = sdx_codec_decode(buf, len, sdx_codec_detect(buf, len), err, sizeof err);
    const char *rid = sdx_map_str(v, "request_id", NULL);
    long seq = -1;
    if (rid && strncmp(rid, q->prefix, q->prefix_len) == 0)
        seq = strtol(rid + q->prefix_len, NULL, 10);
    *ok = sdx_map_bool(v, "success", false);
    sdx_value_destroy(&v);
    return seq;
}

static void *s_client_thread(void *arg)
{
    s_client_t *c = arg;
    const s_opts_t *o = c->o;
    void *s = zmq_socket(c->zctx, ZMQ_REQ);
    int linger = 0, tmo = 5000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo); /* a path that never answers: no hang */
    /* a REQ that timed out can send again (the late reply is dropped) */
    int relaxed = 1;
    zmq_setsockopt(s, ZMQ_REQ_RELAXED, &relaxed, sizeof relaxed);
    zmq_setsockopt(s, ZMQ_REQ_CORRELATE, &relaxed, sizeof relaxed);
    if (zmq_connect(s, c->endpoint) != 0) {
        fprintf(stderr, "bench: connect %s: %s\n", c->endpoint, zmq_strerror(errno));
        zmq_close(s);
        c->errors++;
        return NULL;
    }
    s_req_t q;
    if (s_req_make(o, c->id, &q) != 0) {
        fprintf(stderr, "bench: cannot encode the request\n");
        zmq_close(s);
        c->errors++;
        return NULL;
    }
    while (!*c->go)
        usleep(100);
    long seq = 0;
    double t_start = 0, t_end = 0;
    bool measuring = false;
    double stop_at = 0;
    zmq_msg_t m;
    for (;;) {
        if (!measuring && seq >= o->warmup / o->clients) {
            measuring = true;
            t_start = s_now_us();
            stop_at = t_start + o->duration_s * 1e6;
        }
        s_req_set_seq(&q, seq++);
        double t0 = s_now_us();
        if (zmq_send(s, q.buf, q.len, 0) < 0) {
            c->errors++;
            break;
        }
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            c->timeouts++;
            if (c->timeouts > 3)
                break;
            continue;
        }
        double t1 = s_now_us();
        if (c->check_reply) {
            const void *buf = zmq_msg_data(&m);
            size_t bl = zmq_msg_size(&m);
            bool ok;
            if (s_reply_scan(&q, o->enc, buf, bl, &ok) != seq - 1 || !ok) {
                if (c->errors++ == 0)
                    fprintf(stderr, "bench: error reply: %.*s\n", (int)(bl > 300 ? 300 : bl),
                            (const char *)buf);
            }
        }
        zmq_msg_close(&m);
        if (measuring) {
            if (c->n == c->cap) {
                size_t nc = c->cap ? c->cap * 2 : 65536;
                double *nl = realloc(c->lat_us, nc * sizeof *nl);
                if (!nl)
                    break;
                c->lat_us = nl;
                c->cap = nc;
            }
            c->lat_us[c->n++] = t1 - t0;
            if (t1 >= stop_at) {
                t_end = t1;
                break;
            }
        }
    }
    c->elapsed_s = t_end > t_start ? (t_end - t_start) / 1e6 : 0;
    free(q.buf);
    zmq_close(s);
    return NULL;
}

static int s_lat_push(s_client_t *c, double us)
{
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 65536;
        double *nl = realloc(c->lat_us, nc * sizeof *nl);
        if (!nl)
            return -1;
        c->lat_us = nl;
        c->cap = nc;
    }
    c->lat_us[c->n++] = us;
    return 0;
}

#define SEND_RING 4096 /* send times by seq % SEND_RING (K in flight << it) */

/* A DEALER client keeping o->inflight requests in flight (closed loop):
   every reply is matched by the sequence number in its request_id
   ("b<client>-<seq>", echoed by every path) and answered by a new request. */
static void *s_dealer_thread(void *arg)
{
    s_client_t *c = arg;
    const s_opts_t *o = c->o;
    void *s = zmq_socket(c->zctx, ZMQ_DEALER);
    int linger = 0, hwm = 100000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    int tmo = 5000;
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    double *sent = calloc(SEND_RING, sizeof *sent);
    s_req_t q = {0};
    if (!sent || s_req_make(o, c->id, &q) != 0 || zmq_connect(s, c->endpoint) != 0) {
        fprintf(stderr, "bench: connect %s: %s\n", c->endpoint, zmq_strerror(errno));
        free(sent);
        free(q.buf);
        zmq_close(s);
        c->errors++;
        return NULL;
    }
    while (!*c->go)
        usleep(100);
    long seq = 0, outstanding = 0, received = 0;
    long warm = o->warmup / o->clients;
    double t_start = 0, t_end = 0, stop_at = 0;
    bool measuring = warm == 0, stopping = false;
    if (measuring) {
        t_start = s_now_us();
        stop_at = t_start + o->duration_s * 1e6;
    }
    for (;;) {
        while (!stopping && outstanding < o->inflight) {
            s_req_set_seq(&q, seq);
            sent[seq % SEND_RING] = s_now_us();
            if (zmq_send(s, q.buf, q.len, 0) < 0) {
                c->errors++;
                stopping = true;
                break;
            }
            seq++;
            outstanding++;
        }
        if (outstanding == 0)
            break;
        /* take what is there; block (poll) only when nothing is */
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 5000) <= 0) {
                c->timeouts += outstanding;
                break;
            }
            continue;
        }
        double t1 = s_now_us();
        const void *buf = zmq_msg_data(&m);
        size_t bl = zmq_msg_size(&m);
        bool ok;
        long rseq = s_reply_scan(&q, o->enc, buf, bl, &ok);
        if (c->check_reply && !ok) {
            if (c->errors++ == 0)
                fprintf(stderr, "bench: error reply: %.*s\n", (int)(bl > 300 ? 300 : bl),
                        (const char *)buf);
        }
        zmq_msg_close(&m);
        if (rseq < 0 || rseq >= seq) {
            if (c->errors++ == 0)
                fprintf(stderr, "bench: a reply without a known request_id\n");
            outstanding--;
            continue;
        }
        outstanding--;
        received++;
        if (!measuring && received >= warm) {
            measuring = true;
            t_start = t1;
            stop_at = t_start + o->duration_s * 1e6;
            continue;
        }
        if (measuring && !stopping) {
            if (s_lat_push(c, t1 - sent[rseq % SEND_RING]) != 0)
                break;
            if (t1 >= stop_at) {
                t_end = t1;
                stopping = true; /* then drain what is in flight */
            }
        }
    }
    c->elapsed_s = t_end > t_start ? (t_end - t_start) / 1e6 : 0;
    free(sent);
    free(q.buf);
    zmq_close(s);
    return NULL;
}

static int s_run_clients(const s_opts_t *o, const char *name, const char *endpoint, bool check,
                         s_result_t *res)
{
    void *zctx = zmq_ctx_new();
    int io = 2;
    zmq_ctx_set(zctx, ZMQ_IO_THREADS, io);
    s_client_t *cs = calloc((size_t)o->clients, sizeof *cs);
    pthread_t *th = calloc((size_t)o->clients, sizeof *th);
    volatile bool go = false;
    for (int i = 0; i < o->clients; i++) {
        cs[i] = (s_client_t){
            .o = o, .endpoint = endpoint, .zctx = zctx, .id = i, .check_reply = check, .go = &go};
        pthread_create(&th[i], NULL, o->inflight > 0 ? s_dealer_thread : s_client_thread, &cs[i]);
    }
    usleep(200000); /* let the sockets connect before the clock starts */
    go = true;
    size_t total = 0;
    double elapsed = 0;
    memset(res, 0, sizeof *res);
    res->name = name;
    for (int i = 0; i < o->clients; i++) {
        pthread_join(th[i], NULL);
        total += cs[i].n;
        if (cs[i].elapsed_s > elapsed)
            elapsed = cs[i].elapsed_s;
        res->errors += cs[i].errors;
        res->timeouts += cs[i].timeouts;
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < o->clients; i++) {
        memcpy(all + k, cs[i].lat_us, cs[i].n * sizeof *all);
        k += cs[i].n;
        free(cs[i].lat_us);
    }
    qsort(all, total, sizeof *all, s_cmp_double);
    res->n = total;
    res->rps = elapsed > 0 ? total / elapsed : 0;
    if (total) {
        res->p50 = all[(size_t)(total * 0.50)];
        res->p90 = all[(size_t)(total * 0.90)];
        res->p99 = all[(size_t)(total * 0.99)];
        res->p999 = all[(size_t)(total * 0.999)];
        res->max = all[total - 1];
    }
    free(all);
    free(cs);
    free(th);
    zmq_ctx_term(zctx);
    return (res->errors || res->timeouts || total == 0) ? -1 : 0;
}

/* ------------------------------------------------------------ baseline */

static volatile sig_atomic_t s_stop = 0;

static void s_on_term(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void s_child_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_term;
    sigaction(SIGTERM, &sa, NULL);
}

static int s_ready_fd = -1; /* proxy child -> parent: "FRONTEND\nBACKEND\n" once bound */

static int s_echo_threads = 2;

/* An echo thread: a DEALER on the proxy's backend that sends every message
   back as it came (routing frame included), the least work a worker can do. */
static void *s_echo_thread(void *arg)
{
    void **a = arg;
    void *s = zmq_socket(a[0], ZMQ_DEALER);
    int hwm = 100000, linger = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, (const char *)a[1]);
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            if (errno == EINTR)
                continue;
            break; /* ETERM */
        }
        int more = zmq_msg_more(&m);
        if (zmq_msg_send(&m, s, more ? ZMQ_SNDMORE : 0) < 0)
            zmq_msg_close(&m);
    }
    zmq_close(s);
    return NULL;
}

static void s_proxy_child(const char *fe, const char *be)
{
    s_child_signals();
    void *ctx = zmq_ctx_new();
    void *f = zmq_socket(ctx, ZMQ_ROUTER);
    void *b = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 100000;
    zmq_setsockopt(f, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(f, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(b, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(b, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(f, fe) != 0 || zmq_bind(b, be) != 0) {
        fprintf(stderr, "bench: proxy bind: %s\n", zmq_strerror(errno));
        _exit(1);
    }
    /* tell the parent the bound endpoints (tcp port "*" picked free ports) */
    char ef[256] = "", eb[256] = "", msg[520];
    size_t l1 = sizeof ef, l2 = sizeof eb;
    zmq_getsockopt(f, ZMQ_LAST_ENDPOINT, ef, &l1);
    zmq_getsockopt(b, ZMQ_LAST_ENDPOINT, eb, &l2);
    int n = snprintf(msg, sizeof msg, "%s\n%s\n", ef, eb);
    if (write(s_ready_fd, msg, (size_t)n) != n)
        _exit(1);
    close(s_ready_fd);
    pthread_t th[64];
    void *args[2] = {ctx, eb};
    for (int i = 0; i < s_echo_threads && i < 64; i++)
        pthread_create(&th[i], NULL, s_echo_thread, args);
    zmq_proxy(f, b, NULL); /* returns when the context is interrupted */
    _exit(0);
}

static pid_t s_fork(void (*fn)(const char *, const char *), const char *a, const char *b)
{
    pid_t p = fork();
    if (p == 0)
        fn(a, b);
    return p;
}

static void s_stop_children(pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    for (int i = 0; i < n; i++) {
        if (pids[i] <= 0)
            continue;
        int st;
        for (int t = 0; t < 200; t++) { /* 2 s, then KILL */
            if (waitpid(pids[i], &st, WNOHANG) == pids[i])
                goto reaped;
            usleep(10000);
        }
        kill(pids[i], SIGKILL);
        waitpid(pids[i], &st, 0);
    reaped:;
    }
}

static int s_baseline(const s_opts_t *o, s_result_t *res)
{
    char fe[256], be[256], dir[] = "/tmp/bench-broker-XXXXXX";
    if (strcmp(o->transport, "ipc") == 0) {
        if (!mkdtemp(dir))
            return -1;
        snprintf(fe, sizeof fe, "ipc://%s/fe", dir);
        snprintf(be, sizeof be, "ipc://%s/be", dir);
    } else { /* free ports, chosen by the proxy's bind */
        snprintf(fe, sizeof fe, "tcp://127.0.0.1:*");
        snprintf(be, sizeof be, "tcp://127.0.0.1:*");
    }
    int n = 1;
    s_echo_threads = o->echo_workers;
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    int pfd[2];
    if (!pids || pipe(pfd) != 0) {
        free(pids);
        return -1;
    }
    s_ready_fd = pfd[1];
    pids[0] = s_fork(s_proxy_child, fe, be);
    close(pfd[1]);
    /* wait (5 s at most) for the proxy's bound endpoints */
    char buf[520] = "";
    size_t got = 0;
    struct pollfd pw = {.fd = pfd[0], .events = POLLIN};
    while (got < sizeof buf - 1 && poll(&pw, 1, 5000) > 0) {
        ssize_t r = read(pfd[0], buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(pfd[0]);
    char *nl = strchr(buf, '\n');
    if (!nl || !strchr(nl + 1, '\n')) {
        fprintf(stderr, "bench: the zmq_proxy child did not start\n");
        s_stop_children(pids, 1);
        free(pids);
        return -1;
    }
    *nl = '\0';
    *strchr(nl + 1, '\n') = '\0';
    snprintf(fe, sizeof fe, "%s", buf);
    snprintf(be, sizeof be, "%s", nl + 1);
    usleep(100000); /* echo threads connect (the clients' warm-up absorbs the rest) */
    int rc = s_run_clients(o, "zmq_proxy + echo threads", fe, false, res);
    s_stop_children(pids, n);
    free(pids);
    if (strcmp(o->transport, "ipc") == 0) {
        char p[300];
        snprintf(p, sizeof p, "%s/fe", dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/be", dir);
        unlink(p);
        rmdir(dir);
    }
    return rc;
}

/* The Python design (tools/bench_pybroker.py): its broker and workers in a
   process group of their own; it prints "READY <frontend endpoint>" once its
   workers registered. */
static int s_pybaseline(const s_opts_t *o, s_result_t *res)
{
    char dir[] = "/tmp/bench-pybroker-XXXXXX", fe[300], be[300], nw[16];
    if (strcmp(o->transport, "ipc") == 0) {
        if (!mkdtemp(dir))
            return -1;
        snprintf(fe, sizeof fe, "ipc://%s/fe", dir);
        snprintf(be, sizeof be, "ipc://%s/be", dir);
    } else {
        dir[0] = '\0';
        snprintf(fe, sizeof fe, "tcp://127.0.0.1:*");
        snprintf(be, sizeof be, "tcp://127.0.0.1:*");
    }
    snprintf(nw, sizeof nw, "%d", o->echo_workers);
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execl(o->python, o->python, o->pybroker, "--frontend", fe, "--backend", be, "--workers",
              nw, "--type", o->mtype, (char *)NULL);
        fprintf(stderr, "bench: cannot run %s %s: %s\n", o->python, o->pybroker, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        return -1;
    }
    setpgid(pid, pid);
    char buf[512] = "";
    size_t got = 0;
    struct pollfd pw = {.fd = pfd[0], .events = POLLIN};
    while (got < sizeof buf - 1 && !strchr(buf, '\n') && poll(&pw, 1, 10000) > 0) {
        ssize_t r = read(pfd[0], buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = '\0';
    }
    close(pfd[0]);
    int rc = -1;
    char *nl = strchr(buf, '\n');
    if (strncmp(buf, "READY ", 6) == 0 && nl) {
        *nl = '\0';
        snprintf(fe, sizeof fe, "%.290s", buf + 6);
        rc = s_run_clients(o, "asyncio pyzmq + py workers", fe, true, res);
    } else {
        fprintf(stderr, "bench: %s did not start (got \"%s\")\n", o->pybroker, buf);
        memset(res, 0, sizeof *res);
        res->name = "asyncio pyzmq + py workers";
    }
    kill(-pid, SIGTERM);
    int st;
    for (int t = 0; t < 300 && waitpid(pid, &st, WNOHANG) != pid; t++)
        usleep(10000);
    kill(-pid, SIGKILL);
    waitpid(pid, &st, WNOHANG);
    if (dir[0]) {
        char p[340];
        snprintf(p, sizeof p, "%s/fe", dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/be", dir);
        unlink(p);
        rmdir(dir);
    }
    return rc;
}

/* ---------------------------------------------------------------- main */

/* Median of n values (sorts a copy). */
static double s_median(const double *v, int n)
{
    double tmp[16];
    memcpy(tmp, v, (size_t)n * sizeof *tmp);
    qsort(tmp, (size_t)n, sizeof *tmp, s_cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static void s_row(const s_result_t *r)
{
    printf("%-28s %10.0f %9.1f %9.1f %9.1f %9.1f %9.1f %9zu %6ld\n", r->name, r->rps, r->p50,
           r->p90, r->p99, r->p999, r->max, r->n, r->errors + r->timeouts);
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bench-broker-bin --broker EP [--clients N] [--duration S] [--warmup N]\n"
               "         [--echo-workers N] [--payload BYTES] [--transport tcp|ipc]\n"
               "         [--msgpack|--json] [--rounds N (1..16, default 3)]\n"
               "         [--no-baseline] [--baseline-only] [--inflight K] [--type TYPE]\n"
               "         [--pybroker SCRIPT [--python PATH]]\n");
}

int main(int argc, char **argv)
{
    s_opts_t o = {.clients = 8,
                  .duration_s = 5,
                  .warmup = 2000,
                  .echo_workers = 2,
                  .payload = 64,
                  .transport = "tcp",
                  .enc = SDX_ENC_MSGPACK,
                  .baseline = true,
                  .broker_run = true,
                  .rounds = 3,
                  .inflight = 0,
                  .mtype = "test.echo",
                  .pybroker = NULL,
                  .python = "/usr/bin/python3"};
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"clients", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"echo-workers", required_argument, NULL, 'e'},
        {"payload", required_argument, NULL, 'p'},
        {"transport", required_argument, NULL, 't'},
        {"msgpack", no_argument, NULL, 'm'},
        {"json", no_argument, NULL, 'j'},
        {"no-baseline", no_argument, NULL, 'N'},
        {"baseline-only", no_argument, NULL, 'B'},
        {"rounds", required_argument, NULL, 'r'},
        {"inflight", required_argument, NULL, 'k'},
        {"type", required_argument, NULL, 'T'},
        {"pybroker", required_argument, NULL, 'P'},
        {"python", required_argument, NULL, 'y'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "b:c:d:w:e:p:t:r:k:T:P:y:mjNBh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            o.broker = optarg;
            break;
        case 'c':
            o.clients = atoi(optarg);
            break;
        case 'd':
            o.duration_s = atof(optarg);
            break;
        case 'w':
            o.warmup = atoi(optarg);
            break;
        case 'e':
            o.echo_workers = atoi(optarg);
            break;
        case 'p':
            o.payload = atoi(optarg);
            break;
        case 't':
            o.transport = optarg;
            break;
        case 'm':
            o.enc = SDX_ENC_MSGPACK;
            break;
        case 'j':
            o.enc = SDX_ENC_JSON;
            break;
        case 'N':
            o.baseline = false;
            break;
        case 'B':
            o.broker_run = false;
            break;
        case 'r':
            o.rounds = atoi(optarg);
            break;
        case 'k':
            o.inflight = atoi(optarg);
            break;
        case 'T':
            o.mtype = optarg;
            break;
        case 'P':
            o.pybroker = optarg;
            break;
        case 'y':
            o.python = optarg;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (!o.broker)
        o.broker = getenv("SDXL_ENDPOINT"); /* set by tools/run-fleet --exec */
    if ((o.broker_run && !o.broker) || o.clients < 1 || o.clients > 1024 || o.duration_s <= 0 ||
        o.echo_workers < 1 || o.rounds < 1 || o.rounds > 16 || o.payload < 0 ||
        o.payload > (1 << 20) || o.warmup < 0 || o.inflight < 0 || o.inflight > 1024 ||
        o.echo_workers > 64 || !strchr(o.mtype, '.')) {
        s_usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char load[96], brk_name[40];
    if (o.inflight > 0)
        snprintf(load, sizeof load, "DEALER, %d in flight each", o.inflight);
    else
        snprintf(load, sizeof load, "REQ, 1 in flight each");
    snprintf(brk_name, sizeof brk_name, "sdxl-broker + %s", o.mtype);
    printf("bench-broker: %d client threads (%s), %.1f s per run after %d warm-up requests,\n"
           "  %s with a %d-byte payload in %s, %d echo threads / python workers, %s\n",
           o.clients, load, o.duration_s, o.warmup, o.mtype, o.payload,
           o.enc == SDX_ENC_MSGPACK ? "msgpack" : "JSON", o.echo_workers, o.transport);
    /* Rounds alternate the paths so that all see the same background load;
       the summary takes the median of the rounds. */
    s_result_t base[16], brk[16], py[16];
    int rc = 0;
    printf("\n%-5s %-28s %10s %9s %9s %9s %9s %9s %9s %6s\n", "round", "path", "req/s", "p50 us",
           "p90 us", "p99 us", "p99.9 us", "max us", "requests", "errors");
    for (int i = 0; i < o.rounds; i++) {
        if (o.baseline) {
            if (s_baseline(&o, &base[i]) != 0) {
                fprintf(stderr, "bench: baseline run had errors\n");
                rc = 1;
            }
            printf("%-5d ", i + 1);
            s_row(&base[i]);
            fflush(stdout);
        }
        if (o.broker_run) {
            if (s_run_clients(&o, brk_name, o.broker, true, &brk[i]) != 0) {
                fprintf(stderr, "bench: broker run had errors/timeouts\n");
                rc = 1;
            }
            printf("%-5d ", i + 1);
            s_row(&brk[i]);
            fflush(stdout);
        }
        if (o.pybroker) {
            if (s_pybaseline(&o, &py[i]) != 0) {
                fprintf(stderr, "bench: python design run had errors\n");
                rc = 1;
            }
            printf("%-5d ", i + 1);
            s_row(&py[i]);
            fflush(stdout);
        }
    }
    double v[16];
#define MED(arr, field)                                                                            \
    (({                                                                                            \
        for (int i_ = 0; i_ < o.rounds; i_++)                                                      \
            v[i_] = (arr)[i_].field;                                                               \
    }),                                                                                            \
     s_median(v, o.rounds))
    printf("\nmedian of %d rounds:\n", o.rounds);
    if (o.baseline)
        printf("  %-28s %10.0f req/s  p50 %7.1f us  p99 %7.1f us\n", "zmq_proxy + echo threads",
               MED(base, rps), MED(base, p50), MED(base, p99));
    if (o.broker_run)
        printf("  %-28s %10.0f req/s  p50 %7.1f us  p99 %7.1f us\n", brk_name, MED(brk, rps),
               MED(brk, p50), MED(brk, p99));
    if (o.pybroker)
        printf("  %-28s %10.0f req/s  p50 %7.1f us  p99 %7.1f us\n", "asyncio pyzmq + py workers",
               MED(py, rps), MED(py, p50), MED(py, p99));
    if (o.baseline && o.broker_run) {
        double ratio[16], add99[16];
        for (int i = 0; i < o.rounds; i++) {
            ratio[i] = base[i].rps > 0 ? brk[i].rps / base[i].rps : 0;
            add99[i] = brk[i].p99 - base[i].p99;
        }
        double r = s_median(ratio, o.rounds), a99 = s_median(add99, o.rounds);
        printf("throughput: broker / zmq_proxy = %.2fx (target >= 0.70x): %s\n", r,
               r >= 0.70 ? "MET" : "NOT MET");
        printf("latency:    broker adds %+.1f us at p99 over zmq_proxy (target <= 50 us with echo "
               "workers): %s\n",
               a99, a99 <= 50 ? "MET" : "NOT MET");
    }
    if (o.pybroker && o.broker_run) {
        double ratio[16];
        for (int i = 0; i < o.rounds; i++)
            ratio[i] = py[i].rps > 0 ? brk[i].rps / py[i].rps : 0;
        double r = s_median(ratio, o.rounds);
        printf("throughput: broker / asyncio pyzmq design = %.1fx (target >= 10x): %s\n", r,
               r >= 10 ? "MET" : "NOT MET");
    }
    return rc;
}
