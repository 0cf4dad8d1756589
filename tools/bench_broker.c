/*  bench_broker.c - `bench-broker-bin`: round trips per second and p50/p99
    latency of small requests through sdxl-broker + test-domain echo workers,
    against a plain zmq_proxy (ROUTER/DEALER) with echo workers measured in
    the same run, from N client threads. Prints a table and the ratios.

        bench-broker-bin [--broker EP (default $SDXL_ENDPOINT)] [--clients 8]
                         [--duration 5] [--warmup 2000] [--echo-workers 2]
                         [--payload 64] [--transport tcp|ipc] [--msgpack|--json]
                         [--rounds 3]

    The broker (and its `sdxl-worker --domain test` workers) must already run;
    tools/bench-broker starts them. The baseline runs in child processes
    forked here: one zmq_proxy and --echo-workers REP echo processes, on the
    same transport, so both sides cross the same number of process hops.

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

static uint8_t *s_make_request(const s_opts_t *o, int client, long seq, size_t *len)
{
    sdx_value_t *r = sdx_value_map_new();
    sdx_value_t *d = sdx_value_map_new();
    char rid[64];
    snprintf(rid, sizeof rid, "b%d-%ld", client, seq);
    sdx_map_set_str(r, "message_type", "test.echo");
    sdx_map_set_str(r, "request_id", rid);
    char *pad = malloc((size_t)o->payload + 1);
    memset(pad, 'x', (size_t)o->payload);
    pad[o->payload] = '\0';
    sdx_map_set_str(d, "pad", pad);
    sdx_map_set_int(d, "seq", seq);
    free(pad);
    sdx_map_set(r, "data", d);
    uint8_t *buf = NULL;
    if (sdx_codec_encode(r, o->enc, &buf, len) != 0)
        buf = NULL;
    sdx_value_destroy(&r);
    return buf;
}

static void *s_client_thread(void *arg)
{
    s_client_t *c = arg;
    const s_opts_t *o = c->o;
    void *s = zmq_socket(c->zctx, ZMQ_REQ);
    int linger = 0, tmo = 5000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
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
        size_t len = 0;
        uint8_t *req = s_make_request(o, c->id, seq++, &len);
        double t0 = s_now_us();
        if (!req || zmq_send(s, req, len, 0) < 0) {
            free(req);
            c->errors++;
            break;
        }
        free(req);
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
            char err[128];
            const void *buf = zmq_msg_data(&m);
            size_t bl = zmq_msg_size(&m);
            sdx_value_t *v = sdx_codec_decode(buf, bl, sdx_codec_detect(buf, bl), err, sizeof err);
            if (!v || !sdx_map_bool(v, "success", false)) {
                if (c->errors++ == 0)
                    fprintf(stderr, "bench: error reply: %.*s\n", (int)(bl > 300 ? 300 : bl),
                            (const char *)buf);
            }
            sdx_value_destroy(&v);
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
        pthread_create(&th[i], NULL, s_client_thread, &cs[i]);
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
    zmq_proxy(f, b, NULL); /* returns when the context is interrupted */
    _exit(0);
}

static void s_echo_child(const char *be)
{
    s_child_signals();
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_REP);
    zmq_connect(s, be);
    while (!s_stop) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            if (errno == EINTR)
                continue;
            break;
        }
        zmq_msg_send(&m, s, 0);
    }
    _exit(0);
}

static pid_t s_fork(void (*fn)(const char *, const char *), const char *a, const char *b)
{
    pid_t p = fork();
    if (p == 0)
        fn(a, b);
    return p;
}

static void s_echo_adapter(const char *be, const char *unused)
{
    (void)unused;
    s_echo_child(be);
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
    int n = o->echo_workers + 1;
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
    for (int i = 1; i < n; i++)
        pids[i] = s_fork(s_echo_adapter, be, NULL);
    usleep(100000); /* echo workers connect (the clients' warm-up absorbs the rest) */
    int rc = s_run_clients(o, "zmq_proxy + REP echo", fe, false, res);
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
    printf("%-26s %10.0f %9.1f %9.1f %9.1f %9.1f %9.1f %9zu %6ld\n", r->name, r->rps, r->p50,
           r->p90, r->p99, r->p999, r->max, r->n, r->errors + r->timeouts);
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bench-broker-bin --broker EP [--clients N] [--duration S] [--warmup N]\n"
               "         [--echo-workers N] [--payload BYTES] [--transport tcp|ipc]\n"
               "         [--msgpack|--json] [--rounds N (1..16, default 3)]\n"
               "         [--no-baseline] [--baseline-only]\n");
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
                  .rounds = 3};
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
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "b:c:d:w:e:p:t:r:mjNBh", longopts, NULL)) != -1) {
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
        o.payload > (1 << 20) || o.warmup < 0) {
        s_usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    printf("bench-broker: %d client threads (REQ, 1 in flight each), %.1f s per run after %d "
           "warm-up requests,\n  test.echo with a %d-byte payload in %s, %d echo workers, %s\n",
           o.clients, o.duration_s, o.warmup, o.payload,
           o.enc == SDX_ENC_MSGPACK ? "msgpack" : "JSON", o.echo_workers, o.transport);
    /* Rounds alternate baseline and broker so that both see the same
       background load; the summary takes the median of the rounds. */
    s_result_t base[16], brk[16];
    int rc = 0;
    printf("\n%-5s %-26s %10s %9s %9s %9s %9s %9s %9s %6s\n", "round", "path", "req/s", "p50 us",
           "p90 us", "p99 us", "p99.9 us", "max us", "requests", "errors");
    for (int i = 0; i < o.rounds; i++) {
        if (o.baseline) {
            if (s_baseline(&o, &base[i]) != 0) {
                fprintf(stderr, "bench: baseline run had errors\n");
                rc = 1;
            }
            printf("%-5d ", i + 1);
            s_row(&base[i]);
        }
        if (o.broker_run) {
            if (s_run_clients(&o, "sdxl-broker + test echo", o.broker, true, &brk[i]) != 0) {
                fprintf(stderr, "bench: broker run had errors/timeouts\n");
                rc = 1;
            }
            printf("%-5d ", i + 1);
            s_row(&brk[i]);
        }
        fflush(stdout);
    }
    if (o.baseline && o.broker_run) {
        double rps_b[16], rps_k[16], p50_b[16], p50_k[16], p99_b[16], p99_k[16], ratio[16],
            add99[16];
        for (int i = 0; i < o.rounds; i++) {
            rps_b[i] = base[i].rps;
            rps_k[i] = brk[i].rps;
            p50_b[i] = base[i].p50;
            p50_k[i] = brk[i].p50;
            p99_b[i] = base[i].p99;
            p99_k[i] = brk[i].p99;
            ratio[i] = base[i].rps > 0 ? brk[i].rps / base[i].rps : 0;
            add99[i] = brk[i].p99 - base[i].p99;
        }
        double r = s_median(ratio, o.rounds), a99 = s_median(add99, o.rounds);
        printf("\nmedian of %d rounds:\n", o.rounds);
        printf("  zmq_proxy   %10.0f req/s  p50 %7.1f us  p99 %7.1f us\n",
               s_median(rps_b, o.rounds), s_median(p50_b, o.rounds), s_median(p99_b, o.rounds));
        printf("  sdxl-broker %10.0f req/s  p50 %7.1f us  p99 %7.1f us\n",
               s_median(rps_k, o.rounds), s_median(p50_k, o.rounds), s_median(p99_k, o.rounds));
        printf("throughput: broker keeps %.1f%% of zmq_proxy (target >= 70%%): %s\n", 100 * r,
               r >= 0.70 ? "MET" : "NOT MET");
        printf("latency:    broker adds %+.1f us at p99 (target < 100 us): %s\n", a99,
               a99 < 100 ? "MET" : "NOT MET");
    }
    return rc;
}
