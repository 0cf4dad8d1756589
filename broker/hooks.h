/*  hooks.h - where schema validation and the C# dialect plug into the
    broker's request path. broker.c calls these at fixed points:

      frame -> decode -> hooks_prepare()      DIALECT PREPARE HOOK
            -> sdx_envelope_parse()
            -> hooks_validate()                VALIDATION HOOK
            -> route / queue / dispatch
      reply tree -> hooks_reply() -> encode    REPLY DIALECT HOOK

    Each request carries a hook_state_t from prepare to its final reply;
    hooks_request_done() releases it. The default implementation (hooks.c)
    passes everything through unchanged: the schema/C# work fills it in.
*/
#ifndef BROKER_HOOKS_H
#define BROKER_HOOKS_H

#include "sdx_codec.h"
#include "sdx_envelope.h"
#include "sdx_errors.h"
#include "sdx_value.h"

#include <stdbool.h>

typedef struct {
    int dialect; /* 0 = native; other values belong to the dialect code */
    void *data;  /* per-request dialect state, owned by the hooks */
} hook_state_t;

typedef struct {
    const char *schemas_dir; /* broker config `schemas_dir` ("" = default) */
    bool validate;           /* broker config `validate` */
    int64_t max_frame_bytes; /* e.g. a cap for decompressed payloads */
    /* Deployment roots and limits for the semantic checks (broker options
       models_root ... max_pixels); "" / 0 = not set in the config. */
    const char *models_root, *loras_root, *vaes_root, *controlnets_root, *embeddings_root,
        *upscalers_root, *outputs_root;
    int64_t max_image_bytes, max_pixels;
} hook_config_t;

/* Once at start-up (after the action table and catalogue are loaded).
   0, or -1 with err: the broker refuses to start. */
int hooks_init(const hook_config_t *cfg, char *err, size_t err_len);
void hooks_shutdown(void);

/* DIALECT PREPARE HOOK: right after decoding, before the envelope parser.
   May replace *root (e.g. unwrap LZ4, array-encoded envelopes, rename C#
   keys). 0, or -1 with fault filled (the broker answers it). */
int hooks_prepare(sdx_value_t **root, sdx_encoding_t enc, hook_state_t *st, sdx_fault_t *fault);

/* VALIDATION HOOK: after the envelope is parsed, before routing. Has the
   decoded tree (env->root, env->data may be rewritten in place through
   env->root), the encoding (env->encoding) and the dialect state. Returns 0,
   or -1 with fault filled: invalid_request {field, message} for a bad
   field. */
int hooks_validate(sdx_envelope_t *env, hook_state_t *st, sdx_fault_t *fault);

/* The validation hook's check on a data map alone, for requests the broker
   makes itself (orchestrator batch items at creation): C# mapping when
   csharp, schema validation and defaults. *data may be replaced. 0, or -1
   with fault (field in the dialect's names). */
int hooks_check_data(const char *message_type, bool csharp, sdx_value_t **data,
                     sdx_fault_t *fault);

/* REPLY DIALECT HOOK: the final reply (and progress messages) to a client
   before encoding. Return NULL to send `reply` unchanged, or a new tree
   (the broker sends and destroys it; `reply` itself stays the caller's). */
sdx_value_t *hooks_reply(const sdx_value_t *reply, sdx_encoding_t enc, const hook_state_t *st);

/* A frame that could not be decoded: when it can still be recognised as
   C# (sdx_csharp_sniff), st is set so that the error is answered in the C#
   shape (with the RequestId, when it could be read). Release st with
   hooks_request_done. */
void hooks_undecodable(const void *buf, size_t len, hook_state_t *st);

/* Release per-request state. */
void hooks_request_done(hook_state_t *st);

#endif
