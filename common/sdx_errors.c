/*  sdx_errors.c - the error code table (see sdx_errors.h). One row per code;
    a new code is one new enum value and one new row. */
#include "sdx_errors.h"

#include <errno.h>

#include <stdio.h>
#include <string.h>

static const sdx_error_info_t s_table[SDX_ERR__COUNT] = {
    [SDX_ERR_NONE] = {SDX_ERR_NONE, "ok", false, "no error"},
    [SDX_ERR_INVALID_REQUEST] = {SDX_ERR_INVALID_REQUEST, "invalid_request", false,
                                 "fix the request: `field` names the offending field and "
                                 "`message` says what is expected; do not resend it unchanged"},
    [SDX_ERR_UNKNOWN_MESSAGE_TYPE] =
        {SDX_ERR_UNKNOWN_MESSAGE_TYPE, "unknown_message_type", false,
         "check message_type (or action/worker_type) against the "
         "catalogue in proto/PROTOCOL.md; system.status lists domains"},
    [SDX_ERR_NO_WORKER] = {SDX_ERR_NO_WORKER, "no_worker", true,
                           "no worker of that domain (or on that GPU) is registered; start one "
                           "or retry after a back-off; system.workers shows the fleet"},
    [SDX_ERR_TIMEOUT] = {SDX_ERR_TIMEOUT, "timeout", true,
                         "the request passed timeout_ms while queued or running and was "
                         "cancelled; raise timeout_ms or retry when the fleet is less busy"},
    [SDX_ERR_WORKER_LOST] = {SDX_ERR_WORKER_LOST, "worker_lost", true,
                             "the worker died or shut down and the broker's retries ran out; "
                             "retry later, and check the workers' logs"},
    [SDX_ERR_CANCELLED] = {SDX_ERR_CANCELLED, "cancelled", false,
                           "the request was cancelled on purpose; resend it if still wanted"},
    [SDX_ERR_INTERNAL] = {SDX_ERR_INTERNAL, "internal", true,
                          "an unexpected failure (a bug); retry once, then report it with the "
                          "request_id"},
    [SDX_ERR_NOT_AVAILABLE] = {SDX_ERR_NOT_AVAILABLE, "not_available", false,
                               "the message type is known but not implemented yet (see its "
                               "status in the catalogue); do not retry"},
    [SDX_ERR_QUEUE_FULL] = {SDX_ERR_QUEUE_FULL, "queue_full", true,
                            "every worker of the domain is busy and its queue is full; back off "
                            "(e.g. 1 s, doubling) and retry, or lower the request rate"},
    [SDX_ERR_PAYLOAD_TOO_LARGE] = {SDX_ERR_PAYLOAD_TOO_LARGE, "payload_too_large", false,
                                   "the frame exceeds the broker's max_frame_bytes; send smaller "
                                   "images/tensors or raise the limit in the broker config"},
    [SDX_ERR_UNSUPPORTED_ENCODING] = {SDX_ERR_UNSUPPORTED_ENCODING, "unsupported_encoding", false,
                                      "send one frame holding a msgpack map or a UTF-8 JSON "
                                      "object"},
    [SDX_ERR_NOT_FOUND] = {SDX_ERR_NOT_FOUND, "not_found", false,
                           "a named model, file or resource does not exist; check the name "
                           "(model.list shows what is there)"},
    [SDX_ERR_OUT_OF_MEMORY] = {SDX_ERR_OUT_OF_MEMORY, "out_of_memory", true,
                               "the worker ran out of GPU or host memory; lower the size/batch, "
                               "or retry once other work has finished"},
    [SDX_ERR_SHUTTING_DOWN] = {SDX_ERR_SHUTTING_DOWN, "shutting_down", true,
                               "the broker is stopping; retry against it (or another) shortly"},
    [SDX_ERR_RATE_LIMITED] = {SDX_ERR_RATE_LIMITED, "rate_limited", true,
                              "this client has too many requests in flight or sends faster than "
                              "the broker's per-client limit; wait for replies (or back off) and "
                              "retry"},
    [SDX_ERR_STORAGE_FULL] = {SDX_ERR_STORAGE_FULL, "storage_full", true,
                              "the output disk (or the worker's quota or file size limit) is "
                              "full; nothing was saved; free space, then retry"},
};

sdx_error_t sdx_error_for_errno(int e)
{
    return e == ENOSPC || e == EDQUOT || e == EFBIG ? SDX_ERR_STORAGE_FULL : SDX_ERR_INTERNAL;
}

const sdx_error_info_t *sdx_error_info(sdx_error_t code)
{
    if ((int)code < 0 || code >= SDX_ERR__COUNT)
        return &s_table[SDX_ERR_INTERNAL];
    return &s_table[code];
}

const char *sdx_error_name(sdx_error_t code)
{
    return sdx_error_info(code)->name;
}

const char *sdx_error_advice(sdx_error_t code)
{
    return sdx_error_info(code)->advice;
}

bool sdx_error_retryable(sdx_error_t code)
{
    return sdx_error_info(code)->retryable;
}

sdx_error_t sdx_error_parse(const char *name, bool *known)
{
    if (known)
        *known = true;
    if (name) {
        for (int i = 1; i < SDX_ERR__COUNT; i++)
            if (strcmp(name, s_table[i].name) == 0)
                return (sdx_error_t)i;
        if (strcmp(name, "busy") == 0)
            return SDX_ERR_QUEUE_FULL;
    }
    if (known)
        *known = false;
    return SDX_ERR_INTERNAL;
}

const sdx_error_info_t *sdx_error_table(size_t *count)
{
    if (count)
        *count = SDX_ERR__COUNT;
    return s_table;
}

void sdx_fault_vset(sdx_fault_t *f, sdx_error_t code, const char *field, const char *fmt,
                    va_list ap)
{
    f->code = code;
    snprintf(f->field, sizeof f->field, "%s", field ? field : "");
    vsnprintf(f->message, sizeof f->message, fmt, ap);
}

void sdx_fault_set(sdx_fault_t *f, sdx_error_t code, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdx_fault_vset(f, code, field, fmt, ap);
    va_end(ap);
}

void sdx_fault_clear(sdx_fault_t *f)
{
    f->code = SDX_ERR_NONE;
    f->field[0] = '\0';
    f->message[0] = '\0';
}

sdx_value_t *sdx_error_value(sdx_error_t code, const char *field, const char *message)
{
    sdx_value_t *e = sdx_value_map_new();
    if (!e)
        return NULL;
    int rc = sdx_map_set_str(e, "code", sdx_error_name(code));
    rc |= sdx_map_set_str(e, "message", message && *message ? message : sdx_error_advice(code));
    if (field && *field)
        rc |= sdx_map_set_str(e, "field", field);
    rc |= sdx_map_set_bool(e, "retryable", sdx_error_retryable(code));
    if (rc != 0)
        sdx_value_destroy(&e);
    return e;
}

sdx_value_t *sdx_fault_value(const sdx_fault_t *f)
{
    return sdx_error_value(f->code, f->field, f->message);
}
