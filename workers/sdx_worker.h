/*  sdx_worker.h - the worker runtime: one process serves one domain.

    The runtime owns the broker connection (a DEALER speaking SDXW01, see
    common/sdx_mdp.h) on the main thread: READY, heartbeats both ways,
    Paranoid-Pirate reconnection with back-off, CANCEL, DISCONNECT and the
    SIGTERM/SIGINT drain. Requests run on up to `concurrency` job threads so
    that long handlers never hold up heartbeats; a job thread talks to the
    main thread only through an inproc socket (ZeroMQ sockets are not
    thread-safe), never through the DEALER.

    A domain is a static table (sdx_domain_t) of handlers, and optionally of
    options (sdx_option_t: flags and config keys the runtime parses for it,
    flag > config > environment > default). The runtime adds
    `<domain>.ping` and `<domain>.status` to every domain; message types of
    the domain without a handler answer `not_available`, saying what is missing
    (sdx_domain_t.planned_issue) and what the catalogue says of them: the
    domain's types are proto/catalog.json's, compiled in at build time
    (sdx_worker_catalog.h), and a handler the catalogue lacks is warned about
    at start.

    Not for: anything engine-specific (that lives in the handler modules).
*/
#ifndef SDX_WORKER_H
#define SDX_WORKER_H

#include "sdx_errors.h"
#include "sdx_value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SDX_WORKER_VERSION "0.1.0"

typedef struct sdx_worker sdx_worker_t;
typedef struct sdx_job sdx_job_t;

/* A handler. `data` is the request's data map (borrowed; an empty map when
   the request had none); `reply` is an empty map the handler fills (borrowed).
   Return 0 for success. On failure call sdx_job_fail() and return -1 (a
   handler returning -1 without sdx_job_fail() gets `internal`). Runs on a job
   thread unless the table row says SDX_HANDLER_INLINE. */
typedef int (*sdx_handler_fn)(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply);

enum {
    /* Run on the main thread: only for handlers that never block and take
       microseconds (echo, ping, status). Saves the thread hop. */
    SDX_HANDLER_INLINE = 1 << 0,
};

typedef struct {
    const char *message_type; /* "device.list"; NULL ends a table */
    sdx_handler_fn fn;
    unsigned flags;
    const char *summary; /* one line, listed by <domain>.status */
} sdx_handler_t;

/* One option of a domain (a row of sdx_domain_t.options). The runtime
   accepts it as `--NAME VALUE` (`--NAME` alone for a switch) and as the key
   NAME with '-' written '_' in the --config file (flat keys, the `worker:`
   defaults and the domain's `workers:` entry of a fleet file); the value is
   the first of: the flag, the config key, the environment variable `env`,
   `dflt`. `<domain>.status` reports each value and where it came from. */
typedef struct {
    const char *name;    /* "models-root" (config key models_root); NULL ends a table */
    bool has_value;      /* false: a switch, handed to the hook as "true"/"false" */
    const char *metavar; /* "DIR" in --help (NULL: VALUE) */
    const char *dflt;    /* NULL: none (the hook is not called unless it is set) */
    const char *env;     /* fallback environment variable, NULL for none */
    const char *help;    /* one line for --help */
} sdx_option_t;

typedef struct {
    const char *name;              /* "device" */
    const sdx_handler_t *handlers; /* NULL-terminated table (may be NULL) */
    /* The domain's message types this worker does not serve, answered
       not_available: NULL (the rule) means proto/catalog.json's rows of the
       domain without a handler here (planned ones, and those a build leaves
       out); a NULL-terminated list overrides that (a domain the catalogue
       lacks; rows another process serves, as the broker's model.load). */
    const char *const *planned;
    const char *planned_issue; /* why those are not served (what is missing), said in
                                  their not_available errors */
    /* Default credit: requests the broker may keep in flight on one worker of
       the domain (READY `capacity`; --capacity / config key `capacity`
       override it; never below --concurrency). 0 means 1. Cheap domains
       (device, scheduler, model catalogue) take many, so the broker does not
       wait for a round trip between requests; a GPU domain takes 1, so that
       requests wait in the broker's priority queues, not behind a running
       one. Requests beyond the job threads wait on the worker in priority
       order. */
    int capacity;
    /* The domain's own options (NULL-terminated table, may be NULL). Two
       domains may declare the same name; they must agree on has_value. */
    const sdx_option_t *options;
    /* Optional: called once per option that has a value, in table order,
       after the GPU was selected and before init; key is the row's name
       ("models-root"), value its text. Validate and keep it (the hook may
       create the domain state for init to finish). Return 0, or -1 with what
       is wrong in err ("must be an integer >= 1"): the runtime prints it
       after the option and where it came from, and exits 2. */
    int (*option)(sdx_worker_t *w, const char *key, const char *value, char *err, size_t err_len);
    /* Optional: called once after the options, before connecting. Return 0,
       or -1 with a reason in err: the worker then exits 2. */
    int (*init)(sdx_worker_t *w, char *err, size_t err_len);
    /* Optional: runs at exit whenever the option hook or init ran, also after
       one of them failed (so it must cope with a partial or NULL state). */
    void (*fini)(sdx_worker_t *w);
    /* Optional: adds domain-specific fields to <domain>.status (job thread). */
    void (*status)(sdx_worker_t *w, sdx_value_t *out);
    /* Optional: adds fields to every HEARTBEAT body (the runtime's thread,
       once per heartbeat interval: keep it cheap). The broker keeps the last
       one per worker for system.status and the orchestrator (the device
       domain reports GPU and host memory here). */
    void (*heartbeat)(sdx_worker_t *w, sdx_value_t *out);
} sdx_domain_t;

/* ---- per-request API for handlers (any thread) */

/* Report progress for the running request; sent to the broker as PROGRESS
   (the broker relays it to streaming clients and the events socket).
   msg may be NULL. Call it from the thread that runs the handler (it uses
   that thread's socket). Cheap: returns 0, or -1 if the request is gone. */
int sdx_worker_progress(sdx_job_t *job, int64_t step, int64_t total, const char *msg);
/* The same with the rate of the steps (it_per_s in the PROGRESS body, left
   out when <= 0): the denoising loop's steps per second, which the handler
   knows better than the runtime (the job's elapsed time includes a model
   load). */
int sdx_worker_progress_rate(sdx_job_t *job, int64_t step, int64_t total, const char *msg,
                             double it_per_s);
/* The same with more keys in the PROGRESS body: extra is a map (taken; its
   step, total, elapsed_ms, it_per_s and message keys are overwritten), e.g.
   a live preview's `preview` bytes. */
int sdx_worker_progress_with(sdx_job_t *job, int64_t step, int64_t total, const char *msg,
                             double it_per_s, sdx_value_t *extra);

/* True once the broker sent CANCEL for this request, its deadline passed, or
   the worker is stopping hard. Long handlers poll it and return soon after
   (the runtime answers `cancelled`/`timeout` for them). */
bool sdx_worker_cancelled(const sdx_job_t *job);

/* Sleep up to ms milliseconds, waking early when the request is cancelled.
   Returns true if it slept the whole time. */
bool sdx_job_sleep(sdx_job_t *job, int64_t ms);

/* Record an error reply: a code of the protocol's table (common/sdx_errors.h:
   SDX_ERR_INVALID_REQUEST, SDX_ERR_NOT_AVAILABLE, ...), field may be NULL.
   Returns -1 so a handler can `return sdx_job_fail(...)`. */
int sdx_job_fail(sdx_job_t *job, sdx_error_t code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

const char *sdx_job_request_id(const sdx_job_t *job);
const char *sdx_job_message_type(const sdx_job_t *job);
/* The whole REQUEST body (borrowed): priority, timeout_ms, attempt, stream ... */
const sdx_value_t *sdx_job_request(const sdx_job_t *job);
sdx_worker_t *sdx_job_worker(sdx_job_t *job);

/* ---- worker-wide information (any thread) */
const char *sdx_worker_id(const sdx_worker_t *w);
const char *sdx_worker_domain(const sdx_worker_t *w);
/* The selected GPU's index as the host numbers it, -1 for none (CPU). */
int sdx_worker_gpu(const sdx_worker_t *w);
/* The device string the engine should use: "cpu" or "cuda:0" (after the
   runtime restricted CUDA_VISIBLE_DEVICES to the selected GPU). */
const char *sdx_worker_device(const sdx_worker_t *w);
/* The --gpu value given (-1 when none). A domain's init validates it. */
int sdx_worker_gpu_requested(const sdx_worker_t *w);
/* Called by a domain's init once it selected a GPU: index on the host,
   device string, a name for logs. */
void sdx_worker_set_gpu(sdx_worker_t *w, int index, const char *device, const char *name);
/* Replace the list of loaded models (copied) reported in READY, HEARTBEAT
   and status. Thread-safe. */
void sdx_worker_set_models(sdx_worker_t *w, const char *const *models, size_t n);
/* Append the loaded models to arr (an SDX_ARRAY). Thread-safe. */
void sdx_worker_models_to(sdx_worker_t *w, sdx_value_t *arr);
/* Fill `out` (a map) with the runtime's status: uptime, counters, gpu ... */
void sdx_worker_status_to(sdx_worker_t *w, sdx_value_t *out);
/* The domain's private state, set by its init. */
void *sdx_worker_domain_state(sdx_worker_t *w);
void sdx_worker_set_domain_state(sdx_worker_t *w, void *state);
/* Milliseconds since the Unix epoch / since an arbitrary start (monotonic). */
int64_t sdx_worker_now_ms(void);
int64_t sdx_worker_mono_ms(void);

/* ---- the worker object (czmq style): what sdx_worker_main builds from the
   command line, and what a test drives over inproc */

/* What a worker is made of. Strings are copied. */
typedef struct {
    const sdx_domain_t *domain; /* required; borrowed, must outlive the worker */
    const char *broker;         /* the broker's backend endpoint (required) */
    const char *id;             /* NULL or "": <domain>[-gpuN]-<host>-<pid> */
    int gpu;                    /* --gpu as given, -1: none (the CLI selects it) */
    int concurrency;            /* job threads, <= 0: 1 */
    int prefetch;               /* -1: none (older READY form: capacity = concurrency + N) */
    int capacity;               /* READY capacity, <= 0: from prefetch, else the domain's */
    const char *curve_cert;     /* CURVE: this worker's key pair, NULL or "": plaintext */
    const char *curve_broker_key; /* CURVE: the broker's public certificate */
    /* A libzmq context to make the sockets in (borrowed: it must outlive
       the worker), so that a test can reach the worker over inproc. NULL:
       the worker makes its own and terminates it. */
    void *zmq_context;
} sdx_worker_opts_t;

/* A worker for opts (see above), not yet connected: the domain's option
   hook and init have not run. NULL with a reason in err on bad options or
   out of memory. */
sdx_worker_t *sdx_worker_new(const sdx_worker_opts_t *opts, char *err, size_t err_len);

/* Run the domain's init (unless it ran), connect, and serve until stopped
   (sdx_worker_stop, or a SIGTERM/SIGINT that sdx_worker_main turns into
   one). Returns 0 after a clean stop, 2 when init refused (its reason is
   logged), 1 for run-time failures. Call it once per worker, from one
   thread. */
int sdx_worker_run(sdx_worker_t *w);

/* Ask a running worker to stop: the first call drains (prefetched requests
   go back to the broker, running ones finish, then DISCONNECT), a second
   one cancels what still runs. Any thread, and async-signal-safe (an atomic
   counter and a write(2) to an eventfd), so a signal handler may call it. */
void sdx_worker_stop(sdx_worker_t *w);

/* Free the worker and null the pointer; runs the domain's fini when its
   option hook or init ran. Not while sdx_worker_run runs. */
void sdx_worker_destroy(sdx_worker_t **w_p);

/* ---- process entry */

/* `sdxl-worker`: parse argv against the runtime's flags and the options of
   `domains` (a NULL-terminated table: --domain picks one), read --config,
   select the GPU, run the worker until SIGTERM/SIGINT. Returns the process
   exit code: 0 after a clean stop, 2 for usage/configuration errors (bad
   --gpu too), 1 for run-time failures. */
int sdx_worker_main(const sdx_domain_t *const *domains, int argc, char **argv);

/* The --config reader from text in memory (for tests and fuzzing; the
   runtime reads the file): the first YAML document's mapping as a tree of
   string scalars, maps and arrays (NULL with "name: reason" in err), and
   the whole resolution of the runtime's options from it (flat keys,
   `worker:` defaults, the `workers:` entry of domain_hint / gpu_hint, -1 for
   any gpu): 0, or -1 with err. */
sdx_value_t *sdx_worker_yaml_parse(const char *text, size_t len, const char *name, char *err,
                                   size_t err_len);
int sdx_worker_config_text(const char *text, size_t len, const char *name,
                           const char *domain_hint, int gpu_hint, char *err, size_t err_len);

#endif
