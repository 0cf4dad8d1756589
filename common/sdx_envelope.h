/*  sdx_envelope.h - the request envelope: what every client request carries
    around its `data`, parsed from a decoded tree, and the reply built from it.

    Request (any encoding; keys also match loosely, "RequestId" == "request_id"):
        message_type  "domain.verb"; aliases: `type`; `action` (looked up in
                      proto/actions.json); `worker_type` + `action`
                      (PythonWorkerTypes names: DEVICE, MODEL, ...)
        request_id    string (or integer); generated when absent; always echoed
                      as sent (an integer comes back an integer)
        data          map; when absent, the top-level keys that are not
                      envelope keys form the data
        priority      low | normal | high | critical (or 0..3); default normal
        timeout_ms    integer >= 0 (0 = broker default); also timeout_s
        session_id    string, optional
        stream        bool, DEALER clients get `progress` messages
        gpu           integer hint (top level or data.gpu)
    Reply:
        {request_id, message_type, success, data | error{code, message,
         field?, retryable}, timing{...}}

    The action table is process-global, loaded once at start (read-only
    afterwards, so safe to share between threads once loaded).
*/
#ifndef SDX_ENVELOPE_H
#define SDX_ENVELOPE_H

#include "sdx_codec.h"
#include "sdx_errors.h"
#include "sdx_mdp.h"
#include "sdx_value.h"

#include <stdbool.h>
#include <stdint.h>

#define SDX_TYPE_MAX 96   /* message type length limit, incl. NUL */
#define SDX_DOMAIN_MAX 32 /* domain name length limit, incl. NUL */

typedef enum {
    SDX_PRIO_LOW = 0,
    SDX_PRIO_NORMAL = 1,
    SDX_PRIO_HIGH = 2,
    SDX_PRIO_CRITICAL = 3,
} sdx_priority_t;
#define SDX_PRIO_COUNT 4

/* How the request named its message type (the C# dialect hook and the reply
   hook use it to answer in kind). */
typedef enum {
    SDX_NAMED_MESSAGE_TYPE = 0, /* message_type (native) */
    SDX_NAMED_TYPE,             /* type */
    SDX_NAMED_ACTION,           /* action alone */
    SDX_NAMED_WORKER_ACTION,    /* worker_type + action (C# PythonWorkerTypes) */
} sdx_naming_t;

typedef struct {
    sdx_value_t *root;       /* owned: the whole decoded request */
    const sdx_value_t *data; /* borrowed from root: the data map, or NULL */
    sdx_encoding_t encoding; /* the client's encoding, used for the reply */
    sdx_naming_t naming;
    char message_type[SDX_TYPE_MAX];     /* canonical "domain.verb" */
    char domain[SDX_DOMAIN_MAX];         /* the part before the first '.' */
    char as_sent[SDX_TYPE_MAX];          /* the name as the client sent it */
    char request_id[SDX_MDP_MAX_ID + 1]; /* text form, for keys and logs */
    bool request_id_generated;
    bool request_id_is_int; /* the client sent an integer: echo request_id_int */
    int64_t request_id_int;
    char session_id[SDX_MDP_MAX_ID + 1]; /* "" if none */
    sdx_priority_t priority;
    int64_t timeout_ms; /* 0 = none given */
    bool stream;
    int gpu;           /* -1 = no hint */
    const char *model; /* borrowed from root: data.model_name / data.model / model; NULL */
} sdx_envelope_t;

/* ---- the action table (proto/actions.json) */

/* Load the table from a JSON file, replacing any loaded one. 0 / -1 + err. */
int sdx_actions_load(const char *path, char *err, size_t err_len);
/* Same, from JSON text in memory. */
int sdx_actions_load_text(const char *text, size_t len, char *err, size_t err_len);
/* Load from the first of: $SDXL_ACTIONS_FILE, <source root>/proto/actions.json,
   /usr/local/share/sdxl-fleet/actions.json, /usr/share/sdxl-fleet/actions.json.
   0 / -1 + err. sdx_envelope_parse calls it once if nothing was loaded. */
int sdx_actions_load_default(char *err, size_t err_len);
/* Number of action rows loaded (0 if none). */
size_t sdx_actions_count(void);
/* Path the table was loaded from ("" if from text or not loaded). */
const char *sdx_actions_source(void);
/* Resolve an action (and optional worker_type, e.g. "DEVICE" or "device")
   to a canonical message type in out. 0 on success, -1 if it cannot be
   resolved. */
int sdx_actions_resolve(const char *worker_type, const char *action, char *out, size_t out_len);
/* Canonical name of a message type: follows message_type_aliases
   ("device.get_status" -> "device.status"); returns its argument otherwise.
   Borrowed. */
const char *sdx_actions_canonical(const char *message_type);
/* Domain for a PythonWorkerTypes name ("DEVICE" -> "device"); NULL if unknown. */
const char *sdx_actions_worker_domain(const char *worker_type);

/* ---- envelope */

/* Parse a decoded request. Takes ownership of *root in all cases and
   clears it: the tree is kept in env->root even on failure (the caller may
   still look at it) and sdx_envelope_clear releases it.
   Returns 0, or -1 with fault filled (invalid_request / unknown_message_type
   / unsupported_encoding). env->request_id is set (given or generated) even
   on failure whenever possible, so the error reply can echo it. */
int sdx_envelope_parse(sdx_envelope_t *env, sdx_value_t **root, sdx_encoding_t enc,
                       sdx_fault_t *fault);
/* Release what env owns and reset it. */
void sdx_envelope_clear(sdx_envelope_t *env);

/* The request id as the client sent it, for echoing in replies and
   progress messages: an integer if the client sent one, otherwise the
   string in env->request_id. A view on the stack: it borrows env's
   request_id buffer, is never destroyed, and lives as long as env. */
sdx_value_t sdx_envelope_id_echo(const sdx_envelope_t *env);
/* The same as a new value; caller owns it and destroys it. NULL on OOM. */
sdx_value_t *sdx_envelope_id_value(const sdx_envelope_t *env);

/* Write a fresh request id ("r-<12 hex>-<counter>") into out. Thread-safe. */
void sdx_envelope_new_id(char *out, size_t out_len);

/* Parse "low|normal|high|critical" (case-insensitive) or "0".."3"; -1 if not. */
int sdx_priority_parse(const char *text);
const char *sdx_priority_name(sdx_priority_t p);

/* ---- replies (caller owns the result; NULL on OOM) */

/* {request_id, message_type, success:true, data, timing?}. Takes ownership
   of data (NULL gives {}) and timing (may be NULL). */
sdx_value_t *sdx_reply_ok(const char *request_id, const char *message_type, sdx_value_t *data,
                          sdx_value_t *timing);
/* {request_id, message_type, success:false, error{...}, timing?}. Takes
   ownership of error (from sdx_error_value) and timing (may be NULL).
   request_id/message_type may be NULL (written as nil). */
sdx_value_t *sdx_reply_error(const char *request_id, const char *message_type, sdx_value_t *error,
                             sdx_value_t *timing);
/* Put the client's request id, as sent (sdx_envelope_id_echo), into a
   reply built by the functions above. 0, or -1 on OOM. */
int sdx_reply_echo_id(sdx_value_t *reply, const sdx_envelope_t *env);
/* Shorthand: an error reply from a fault. */
sdx_value_t *sdx_reply_fault(const char *request_id, const char *message_type,
                             const sdx_fault_t *fault);

#endif
