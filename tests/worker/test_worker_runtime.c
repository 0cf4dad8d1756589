/*  test_worker_runtime.c - the worker runtime (workers/sdx_worker.c) driven
    through its object face over inproc, with no process and no real domain:
    the test is the broker (a ROUTER in a shared libzmq context) and gives
    the worker a domain table of its own ("unit": an inline handler, a job
    thread handler that reports progress and honours cancel, a planned type,
    an option hook, init and fini).

    Checked: READY (id, domain, capabilities with the runtime's ping/status,
    capacity from concurrency + prefetch), REQUEST -> REPLY inline and on a
    job thread, PROGRESS frames, CANCEL -> `cancelled`, an unknown type
    (`unknown_message_type` / not served) and a planned one (`not_available`
    with the domain's reason), a malformed body answered with an error naming
    the request, heartbeats both ways, two workers in one process (their
    inproc job endpoints and ping/status rows do not collide), and
    sdx_worker_stop from another thread: the worker finishes the running
    request, says DISCONNECT, and run returns 0; destroy runs fini once.
    Runs under ASan/UBSan in build-asan and under valgrind (suite valgrind).
*/
#include "sdx_codec.h"
#include "sdx_mdp.h"
#include "sdx_value.h"
#include "sdx_worker.h"

#include "../common/tcheck.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static atomic_int s_inits, s_finis;

static int h_add(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    if (!sdx_map_get(data, "a"))
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "a", "a is required");
    sdx_map_set_int(reply, "sum", sdx_map_int(data, "a", 0) + sdx_map_int(data, "b", 0));
    return 0;
}

/* steps of 20 ms with progress; stops early when cancelled */
static int h_slow(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    int64_t steps = sdx_map_int(data, "steps", 5);
    for (int64_t i = 1; i <= steps; i++) {
        if (!sdx_job_sleep(job, 20))
            return -1; /* the runtime answers cancelled */
        sdx_worker_progress(job, i, steps, "step");
    }
    sdx_map_set_int(reply, "steps", steps);
    return 0;
}

static const sdx_handler_t s_handlers[] = {
    {"unit.add", h_add, SDX_HANDLER_INLINE, "a + b"},
    {"unit.slow", h_slow, 0, "steps of 20 ms"},
    {NULL, NULL, 0, NULL},
};
static const char *const s_planned[] = {"unit.later", NULL};

static int d_init(sdx_worker_t *w, char *err, size_t err_len)
{
    (void)w;
    (void)err;
    (void)err_len;
    atomic_fetch_add(&s_inits, 1);
    return 0;
}

static void d_fini(sdx_worker_t *w)
{
    (void)w;
    atomic_fetch_add(&s_finis, 1);
}

static const sdx_domain_t s_unit = {
    .name = "unit",
    .handlers = s_handlers,
    .planned = s_planned,
    .planned_issue = "the unit domain's later part",
    .capacity = 4,
    .init = d_init,
    .fini = d_fini,
};

typedef struct {
    sdx_worker_t *w;
    int rc;
} runner_t;

static void *s_runner(void *arg)
{
    runner_t *r = arg;
    r->rc = sdx_worker_run(r->w);
    return NULL;
}

/* Receive one message on the ROUTER within ms; skips heartbeats unless
   want_hb. Returns 0 with m filled, -1 on timeout. */
static int s_recv(void *router, sdx_mdp_msg_t *m, int ms, bool want_hb)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            return -1;
        zmq_pollitem_t it = {.socket = router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, left) <= 0)
            continue;
        char err[256];
        sdx_mdp_msg_clear(m);
        if (sdx_mdp_recv(router, true, m, false, err, sizeof err) != 0)
            continue;
        if (m->cmd == SDX_MDP_HEARTBEAT && !want_hb)
            continue;
        return 0;
    }
}

/* A REQUEST body as the broker sends it. */
static sdx_value_t *s_request(const char *type, const char *rid, sdx_value_t *data)
{
    sdx_value_t *b = sdx_value_map_new();
    sdx_map_set_str(b, "message_type", type);
    sdx_map_set_str(b, "request_id", rid);
    sdx_map_set(b, "data", data ? data : sdx_value_map_new());
    sdx_map_set_int(b, "priority", 1);
    sdx_map_set_int(b, "timeout_ms", 10000);
    sdx_map_set_int(b, "attempt", 0);
    return b;
}

static void s_send_req(void *router, const sdx_mdp_msg_t *peer, const char *type, const char *rid,
                       sdx_value_t *data)
{
    sdx_value_t *b = s_request(type, rid, data);
    CHECK(sdx_mdp_send(router, peer->identity, peer->identity_len, SDX_MDP_REQUEST, rid, b,
                       false) == 0);
    sdx_value_destroy(&b);
}

/* The REPLY for rid (progress frames counted in *progress). */
static sdx_value_t *s_reply(void *router, const char *rid, int *progress)
{
    sdx_mdp_msg_t m = {0};
    while (s_recv(router, &m, 5000, false) == 0) {
        if (strcmp(m.request_id, rid) != 0)
            continue;
        if (m.cmd == SDX_MDP_PROGRESS) {
            if (progress)
                (*progress)++;
            continue;
        }
        if (m.cmd == SDX_MDP_REPLY) {
            sdx_value_t *body = m.body;
            m.body = NULL;
            sdx_mdp_msg_clear(&m);
            return body;
        }
    }
    sdx_mdp_msg_clear(&m);
    return NULL;
}

static const char *s_err_code(const sdx_value_t *reply)
{
    return sdx_map_str(sdx_map_get(reply, "error"), "code", "");
}

static bool s_has(const sdx_value_t *arr, const char *s)
{
    for (size_t i = 0; i < sdx_array_len(arr); i++) {
        const sdx_value_t *v = sdx_array_at(arr, i);
        if (v && v->type == SDX_STR && strcmp(v->u.str.ptr, s) == 0)
            return true;
    }
    return false;
}

int main(void)
{
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    CHECK(zmq_bind(router, "inproc://test-broker") == 0);

    char err[256] = "";
    sdx_worker_opts_t bad = {.domain = &s_unit};
    CHECK(sdx_worker_new(&bad, err, sizeof err) == NULL && strstr(err, "broker"));
    sdx_worker_opts_t half = {.domain = &s_unit, .broker = "inproc://x", .curve_cert = "k"};
    CHECK(sdx_worker_new(&half, err, sizeof err) == NULL && strstr(err, "CURVE"));

    sdx_worker_opts_t o = {.domain = &s_unit,
                           .broker = "inproc://test-broker",
                           .id = "unit-a",
                           .gpu = -1,
                           .concurrency = 2,
                           .prefetch = 1,
                           .zmq_context = ctx};
    sdx_worker_t *w = sdx_worker_new(&o, err, sizeof err);
    CHECK(w != NULL);
    o.id = "unit-b";
    o.prefetch = -1;
    o.concurrency = 1;
    sdx_worker_t *w2 = sdx_worker_new(&o, err, sizeof err);
    CHECK(w2 != NULL);
    if (!w || !w2)
        return t_done();
    CHECK_STR(sdx_worker_id(w), "unit-a");
    CHECK_STR(sdx_worker_device(w), "cpu");

    runner_t r1 = {w, -1}, r2 = {w2, -1};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, s_runner, &r1);
    pthread_create(&t2, NULL, s_runner, &r2);

    /* READY from both */
    sdx_mdp_msg_t a = {0}, b = {0}, m = {0};
    for (int i = 0; i < 2 && s_recv(router, &m, 5000, false) == 0; i++) {
        CHECK(m.cmd == SDX_MDP_READY);
        const char *id = sdx_map_str(m.body, "worker_id", "");
        sdx_mdp_msg_t *dst = strcmp(id, "unit-a") == 0 ? &a : &b;
        sdx_mdp_msg_clear(dst);
        *dst = m;
        m = (sdx_mdp_msg_t){0};
    }
    CHECK(a.body && b.body);
    if (!a.body || !b.body)
        return t_done();
    CHECK_STR(sdx_map_str(a.body, "domain", ""), "unit");
    CHECK(sdx_map_int(a.body, "capacity", 0) == 3); /* concurrency 2 + prefetch 1 */
    CHECK(sdx_map_int(b.body, "capacity", 0) == 4); /* the domain's default */
    CHECK(sdx_map_int(a.body, "gpu", 0) == -1);
    const sdx_value_t *caps = sdx_map_get(a.body, "capabilities");
    CHECK(s_has(caps, "unit.add") && s_has(caps, "unit.slow") && s_has(caps, "unit.ping") &&
          s_has(caps, "unit.status"));
    CHECK(atomic_load(&s_inits) == 2); /* run did init, once per worker */

    /* inline handler */
    sdx_value_t *d = sdx_value_map_new();
    sdx_map_set_int(d, "a", 2);
    sdx_map_set_int(d, "b", 40);
    s_send_req(router, &a, "unit.add", "r-add", d);
    sdx_value_t *rep = s_reply(router, "r-add", NULL);
    CHECK(rep && sdx_map_bool(rep, "success", false) &&
          sdx_map_int(sdx_map_get(rep, "data"), "sum", 0) == 42);
    sdx_value_destroy(&rep);
    /* its error names the field */
    s_send_req(router, &a, "unit.add", "r-add-bad", NULL);
    rep = s_reply(router, "r-add-bad", NULL);
    CHECK(rep && !sdx_map_bool(rep, "success", true));
    CHECK_STR(s_err_code(rep), "invalid_request");
    CHECK_STR(sdx_map_str(sdx_map_get(rep, "error"), "field", ""), "a");
    sdx_value_destroy(&rep);

    /* the runtime's rows, per worker: status names this worker */
    s_send_req(router, &b, "unit.status", "r-st", NULL);
    rep = s_reply(router, "r-st", NULL);
    CHECK(rep && sdx_map_bool(rep, "success", false));
    CHECK_STR(sdx_map_str(sdx_map_get(rep, "data"), "worker_id", ""), "unit-b");
    sdx_value_destroy(&rep);
    s_send_req(router, &a, "unit.ping", "r-ping", NULL);
    rep = s_reply(router, "r-ping", NULL);
    CHECK(rep && sdx_map_bool(rep, "success", false));
    sdx_value_destroy(&rep);

    /* a job thread with progress */
    d = sdx_value_map_new();
    sdx_map_set_int(d, "steps", 4);
    s_send_req(router, &a, "unit.slow", "r-slow", d);
    int progress = 0;
    rep = s_reply(router, "r-slow", &progress);
    CHECK(rep && sdx_map_bool(rep, "success", false) &&
          sdx_map_int(sdx_map_get(rep, "data"), "steps", 0) == 4);
    CHECK(progress == 4);
    sdx_value_destroy(&rep);

    /* cancel a long one */
    d = sdx_value_map_new();
    sdx_map_set_int(d, "steps", 500);
    s_send_req(router, &a, "unit.slow", "r-cancel", d);
    progress = 0;
    while (s_recv(router, &m, 5000, false) == 0 && m.cmd != SDX_MDP_PROGRESS)
        ;
    CHECK(m.cmd == SDX_MDP_PROGRESS);
    CHECK(sdx_mdp_send(router, a.identity, a.identity_len, SDX_MDP_CANCEL, "r-cancel", NULL,
                       false) == 0);
    rep = s_reply(router, "r-cancel", &progress);
    CHECK(rep && !sdx_map_bool(rep, "success", true));
    CHECK_STR(s_err_code(rep), "cancelled");
    CHECK(progress < 400);
    sdx_value_destroy(&rep);

    /* not served here, and planned */
    s_send_req(router, &a, "unit.nothing", "r-none", NULL);
    rep = s_reply(router, "r-none", NULL);
    CHECK(rep && !sdx_map_bool(rep, "success", true) && s_err_code(rep)[0]);
    sdx_value_destroy(&rep);
    s_send_req(router, &a, "unit.later", "r-later", NULL);
    rep = s_reply(router, "r-later", NULL);
    CHECK(rep && !sdx_map_bool(rep, "success", true));
    CHECK_STR(s_err_code(rep), "not_available");
    CHECK(strstr(sdx_map_str(sdx_map_get(rep, "error"), "message", ""), "later part") != NULL);
    sdx_value_destroy(&rep);

    /* a malformed body: the request is still answered, by id */
    const uint8_t junk[] = {0xc1, 0xc1, 0xc1};
    CHECK(sdx_mdp_send_raw(router, a.identity, a.identity_len, SDX_MDP_REQUEST, "r-junk", junk,
                           sizeof junk, false) == 0);
    rep = s_reply(router, "r-junk", NULL);
    CHECK(rep && !sdx_map_bool(rep, "success", true));
    sdx_value_destroy(&rep);

    /* heartbeats come by themselves (1 s interval) */
    CHECK(sdx_mdp_send(router, a.identity, a.identity_len, SDX_MDP_HEARTBEAT, NULL, NULL,
                       false) == 0);
    bool hb = false;
    while (!hb && s_recv(router, &m, 2500, true) == 0)
        hb = m.cmd == SDX_MDP_HEARTBEAT;
    CHECK(hb);

    /* stop while a request runs: it finishes, then DISCONNECT, run returns 0 */
    d = sdx_value_map_new();
    sdx_map_set_int(d, "steps", 5);
    s_send_req(router, &a, "unit.slow", "r-drain", d);
    while (s_recv(router, &m, 5000, false) == 0 && m.cmd != SDX_MDP_PROGRESS)
        ;
    sdx_worker_stop(w);
    bool replied = false, bye = false;
    while (!bye && s_recv(router, &m, 5000, false) == 0) {
        if (m.cmd == SDX_MDP_REPLY && strcmp(m.request_id, "r-drain") == 0)
            replied = sdx_map_bool(m.body, "success", false);
        bye = m.cmd == SDX_MDP_DISCONNECT; /* after the reply: the loop saw it first */
    }
    CHECK(replied && bye);
    pthread_join(t1, NULL);
    CHECK(r1.rc == 0);
    CHECK(sdx_worker_run(w) == 1); /* once per worker */

    sdx_worker_stop(w2);
    pthread_join(t2, NULL);
    CHECK(r2.rc == 0);
    sdx_worker_destroy(&w);
    CHECK(w == NULL && atomic_load(&s_finis) == 1);
    sdx_worker_destroy(&w2);
    CHECK(atomic_load(&s_finis) == 2);
    sdx_worker_destroy(&w2); /* NULL: a no-op */

    sdx_mdp_msg_clear(&a);
    sdx_mdp_msg_clear(&b);
    sdx_mdp_msg_clear(&m);
    zmq_close(router);
    zmq_ctx_term(ctx);
    return t_done();
}
