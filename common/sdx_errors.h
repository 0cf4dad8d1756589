/*  sdx_errors.h - the fixed list of error codes a client can see, as one
    static table (code, wire name, retryable, advice to the client).

    An error on the wire is {code, message, field?, retryable}. `code` is
    one of the names below; `message` is a human sentence about this
    request; `field` (dotted path, e.g. "data.width") is set for
    invalid_request. proto/PROTOCOL.md lists the same table; keep them in
    step (tests/common/test_errors checks the names appear there).
*/
#ifndef SDX_ERRORS_H
#define SDX_ERRORS_H

#include "sdx_value.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    SDX_ERR_NONE = 0,
    SDX_ERR_INVALID_REQUEST,      /* malformed frame, missing/ill-typed field */
    SDX_ERR_UNKNOWN_MESSAGE_TYPE, /* no such message type / domain prefix */
    SDX_ERR_NO_WORKER,            /* no worker of that domain is registered */
    SDX_ERR_TIMEOUT,              /* timeout_ms passed (queued or running) */
    SDX_ERR_WORKER_LOST,          /* worker died/drained; retries exhausted */
    SDX_ERR_CANCELLED,            /* cancelled by the client or the operator */
    SDX_ERR_INTERNAL,             /* a bug or an unexpected failure */
    SDX_ERR_NOT_AVAILABLE,        /* known message type, not implemented yet */
    SDX_ERR_QUEUE_FULL,           /* the domain's queue is full ("busy") */
    SDX_ERR_PAYLOAD_TOO_LARGE,    /* frame above max_frame_bytes */
    SDX_ERR_UNSUPPORTED_ENCODING, /* neither a msgpack nor a JSON map */
    SDX_ERR_NOT_FOUND,            /* a named model/file/resource does not exist */
    SDX_ERR_OUT_OF_MEMORY,        /* the worker ran out of GPU/host memory */
    SDX_ERR_SHUTTING_DOWN,        /* the broker is stopping */
    SDX_ERR_RATE_LIMITED,         /* this client is over its in-flight or rate limit */
    SDX_ERR_STORAGE_FULL,         /* a save found no space (ENOSPC, EDQUOT, EFBIG) */
    SDX_ERR__COUNT
} sdx_error_t;

typedef struct {
    sdx_error_t code;
    const char *name;   /* wire name, e.g. "queue_full" */
    bool retryable;     /* the same request may succeed if sent again later */
    const char *advice; /* what the client should do */
} sdx_error_info_t;

/* Table row for a code (never NULL: unknown codes give the "internal" row). */
const sdx_error_info_t *sdx_error_info(sdx_error_t code);
const char *sdx_error_name(sdx_error_t code);
/* SDX_ERR_STORAGE_FULL for ENOSPC, EDQUOT and EFBIG (a save that found no
   room), SDX_ERR_INTERNAL for any other errno. */
sdx_error_t sdx_error_for_errno(int e);
const char *sdx_error_advice(sdx_error_t code);
bool sdx_error_retryable(sdx_error_t code);
/* Code for a wire name; accepts the alias "busy" for queue_full. Returns
   SDX_ERR_INTERNAL for unknown names (a worker invented one) and sets
   *known to false when known is not NULL. */
sdx_error_t sdx_error_parse(const char *name, bool *known);
/* The table, for docs and tests: rows 1 .. SDX_ERR__COUNT-1. */
const sdx_error_info_t *sdx_error_table(size_t *count);

/* A failure on its way to becoming an error reply: fixed-size, no mallocs,
   filled by the envelope parser, the validation hook and the router. */
typedef struct {
    sdx_error_t code;
    char field[128]; /* "" when the error is not about one field */
    char message[384];
} sdx_fault_t;

void sdx_fault_set(sdx_fault_t *f, sdx_error_t code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void sdx_fault_vset(sdx_fault_t *f, sdx_error_t code, const char *field, const char *fmt,
                    va_list ap);
void sdx_fault_clear(sdx_fault_t *f);

/* Build the wire error map {code, message, field?, retryable}. Caller owns
   the result; NULL on OOM. */
sdx_value_t *sdx_error_value(sdx_error_t code, const char *field, const char *message);
sdx_value_t *sdx_fault_value(const sdx_fault_t *f);

#endif
