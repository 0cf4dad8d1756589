/*  handler_test.c - the `test` domain, for integration tests and the broker
    benchmark: test.echo answers its data (inline, no thread hop), test.sleep
    sleeps in slices reporting progress and polling cancel, test.fail answers
    a chosen error, test.crash kills the process. Its options exercise the
    runtime's domain options (flag > config > environment > default, switches,
    a refused value): --label TEXT, reported in test.status, and --fail-init.
    Not for production fleets. */
#include "sdx_worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int s_echo(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    for (size_t i = 0; i < data->u.map.len; i++) {
        const sdx_kv_t *kv = &data->u.map.items[i];
        sdx_value_t *copy = sdx_value_clone(kv->val);
        if (!copy || sdx_map_set(reply, kv->key, copy) != 0)
            return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "out of memory");
    }
    return 0;
}

/* data: {ms (default 1000), steps (progress reports, default 10)} */
static int s_sleep(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    const sdx_value_t *msv = sdx_map_get(data, "ms");
    double ms = 1000;
    if (msv && (!sdx_value_as_double(msv, &ms) || ms < 0 || ms > 3600e3))
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "data.ms", "ms must be 0..3600000");
    int64_t steps = sdx_map_int(data, "steps", 10);
    if (steps < 1 || steps > 100000)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "data.steps", "steps must be 1..100000");
    int64_t t0 = sdx_worker_mono_ms();
    for (int64_t s = 1; s <= steps; s++) {
        int64_t until = (int64_t)(ms * s / steps);
        if (!sdx_job_sleep(job, until - (sdx_worker_mono_ms() - t0)))
            return -1; /* cancelled: the runtime answers cancelled/timeout */
        char msg[64];
        snprintf(msg, sizeof msg, "slept %lld of %.0f ms", (long long)until, ms);
        sdx_worker_progress(job, s, steps, msg);
    }
    sdx_worker_t *w = sdx_job_worker(job);
    sdx_map_set_int(reply, "slept_ms", sdx_worker_mono_ms() - t0);
    sdx_map_set_int(reply, "steps", steps);
    sdx_map_set_str(reply, "worker_id", sdx_worker_id(w));
    sdx_map_set_int(reply, "pid", (int64_t)getpid());
    const sdx_value_t *tag = sdx_map_get(data, "tag");
    if (tag)
        sdx_map_set(reply, "tag", sdx_value_clone(tag));
    return 0;
}

/* data: {code, message, field?}: answers that error (a code the protocol's
   table does not know is answered internal) */
static int s_fail(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    (void)reply;
    bool known = false;
    sdx_error_t code = sdx_error_parse(sdx_map_str(data, "code", "internal"), &known);
    return sdx_job_fail(job, known ? code : SDX_ERR_INTERNAL,
                        sdx_map_str(data, "field", NULL), "%s",
                        sdx_map_str(data, "message", "test.fail asked for this error"));
}

/* data: {mode: abort|exit|segv} (default abort) */
static int s_crash(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    const char *mode = sdx_map_str(data, "mode", "abort");
    if (strcmp(mode, "exit") == 0)
        _exit(3);
    if (strcmp(mode, "segv") == 0)
        raise(SIGSEGV);
    abort();
}

static const sdx_handler_t s_handlers[] = {
    {"test.echo", s_echo, SDX_HANDLER_INLINE, "answers its data"},
    {"test.sleep", s_sleep, 0, "sleeps data.ms in data.steps slices, progress per slice"},
    {"test.fail", s_fail, 0, "answers the error data.code / data.message"},
    {"test.crash", s_crash, 0, "kills the worker (data.mode abort|exit|segv)"},
    {NULL, NULL, 0, NULL},
};

static const sdx_option_t s_options[] = {
    {"label", true, "TEXT", NULL, "SDXL_TEST_LABEL", "a label test.status reports (1..64 chars)"},
    {"fail-init", false, NULL, "false", NULL, "refuse to start (exit 2), for tests"},
    {NULL, false, NULL, NULL, NULL, NULL},
};

/* Nothing to keep: test.status shows the values (the runtime's `options`). */
static int s_option(sdx_worker_t *w, const char *key, const char *value, char *err, size_t err_len)
{
    size_t len = strlen(value);
    if (strcmp(key, "label") == 0 && (len < 1 || len > 64)) {
        snprintf(err, err_len, "must be 1..64 characters");
        return -1;
    }
    if (strcmp(key, "fail-init") == 0 && strcmp(value, "true") == 0) {
        snprintf(err, err_len, "refusing to start, as asked");
        return -1;
    }
    return 0;
}

const sdx_domain_t sdx_domain_test = {
    .name = "test",
    .capacity = 32, /* echo is inline; the bench measures it at default settings */
    .handlers = s_handlers,
    .options = s_options,
    .option = s_option,
    .planned = NULL,
    .planned_issue = NULL,
};
