/*  sdx_csharp.h - the C# dialect: what the existing C# service (NetMQ +
    System.Text.Json or MessagePack-CSharp) puts on the wire, mapped onto the
    native envelope and the flat request, and replies mapped back.

    Two phases, because the message type is only known after the envelope:
    1. sdx_csharp_prepare(), right after decoding a frame and before the
       envelope parser: unwraps MessagePack-CSharp LZ4 (ext 99 Lz4Block,
       ext 98 Lz4BlockArray), turns an array-encoded ([Key(n)]) envelope
       into a map, renames the envelope keys to the native names
       (RequestId/requestId -> request_id, Action -> action, WorkerType ->
       worker_type, Data/Payload/Request -> data; every native envelope key
       under the one loose rule, so Type = type), turns integer enums into
       their names, msgpack timestamps (ext -1) and DateTimeOffset arrays
       into RFC 3339 strings, TimeSpans into numbers, a 16-byte Guid
       RequestId into its text (remembered, to echo the bytes). Unknown
       envelope and DTO properties are ignored and noted as warnings for the
       reply (the native dialect stays strict).
       A native request passes through untouched.
    2. sdx_csharp_map_data(), at the validation hook once the envelope gave
       the message type: maps a nested EnhancedSDXLRequest onto the flat
       request through the C# schema (schemas/csharp_enhanced_request.json:
       x-native, x-key-order, x-enum-order, x-native-select), or, for a flat
       C#-cased request, renames keys case-insensitively to the native
       schema's names. The result is then validated like a native request;
       sdx_csharp_check_request then fills x-random fields (a random seed in
       the C# int range).
    Replies: sdx_csharp_reply() makes the C#-shaped reply (PascalCase keys,
    RequestId, Success, Data, Error {Code, Message, Field}; images bin in
    msgpack and base64 text in JSON).

    All key names, key orders and enum orders come from schemas/; this file
    knows none of them. Not for: framing (REQ/DEALER is the broker's), the
    action -> message_type table (proto/actions.json, the envelope's).
*/
#ifndef SDX_CSHARP_H
#define SDX_CSHARP_H

#include "sdx_codec.h"
#include "sdx_schema.h"
#include "sdx_value.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum { SDX_DIALECT_NATIVE = 0, SDX_DIALECT_CSHARP = 1 } sdx_dialect_t;

/* At most this many warnings (unknown C# properties that were ignored) are
   kept per request; further ones are counted. */
#define SDX_CSHARP_MAX_WARNINGS 8

/* What phase 1 learnt about a request; the broker keeps it with the request
   to shape the reply. Plain data: `set` is borrowed (the broker's schema
   set outlives every request), nothing else points outside the struct. */
typedef struct {
    sdx_dialect_t dialect;
    bool lz4;           /* arrived LZ4-compressed (ext 99 / ext 98) */
    bool array_encoded; /* the envelope arrived as an array ([Key(n)] contract) */
    char action[64];    /* the action as sent ("generate_sdxl"), "" if none */
    char request_id[129];
    bool request_id_int; /* RequestId was an integer (request_id_i) */
    int64_t request_id_i;
    bool request_id_bin; /* RequestId was a 16-byte bin (NativeGuidResolver) */
    uint8_t request_id_bytes[16];
    char message_type[96]; /* resolved through proto/actions.json, "" if not */
    const sdx_schema_set_t *set; /* for error paths and the [Key(n)] reply order */
    int nwarnings, warnings_dropped;
    char warnings[SDX_CSHARP_MAX_WARNINGS][200];
} sdx_csharp_info_t;

/* Default cap on the uncompressed size of an LZ4 payload. */
#define SDX_CSHARP_MAX_LZ4_BYTES (64u * 1024u * 1024u)

/* Which dialect a decoded request is in: C# if it is LZ4-wrapped, an array
   (array-encoded envelope), or a map with an action / worker_type key (any
   casing) or a PascalCase top-level key. */
sdx_dialect_t sdx_csharp_detect(const sdx_value_t *root);

/* If *root_p is a MessagePack-CSharp LZ4 message (ext 99, or an array whose
   first item is ext 98 followed by bin chunks), decompress and decode it,
   replacing *root_p. max_len caps the uncompressed size (0: the default).
   1 unwrapped, 0 not compressed, -1 error (reason in err). */
int sdx_csharp_unwrap_lz4(sdx_value_t **root_p, size_t max_len, char *err, size_t err_len);

/* Phase 1 (see above), followed by phase 2 when the action resolves to a
   message type (through the envelope's action table): after it, *root_p is
   a native envelope (the action / worker_type keys kept as sent, so the
   envelope parser still sees an action) whose data is the flat request,
   ready for sdx_envelope_parse and validation. `set` supplies the C#
   descriptions; info is always filled. A native request is left untouched.
   0, or -1 with err: err->field is set (C# names) when one field is at
   fault, err->message names what was found and what is accepted. */
int sdx_csharp_prepare(const sdx_schema_set_t *set, sdx_value_t **root_p, size_t max_lz4_len,
                       sdx_csharp_info_t *info, sdx_schema_error_t *err);

/* Phase 2 alone (see above): rewrite *data_p (the request's data, C# dialect) for
   `message_type` into the native flat shape. *data_p may be replaced; a
   NULL *data_p is left NULL. 0, or -1 with err (field uses C# names). */
int sdx_csharp_map_data(const sdx_schema_set_t *set, const char *message_type, sdx_value_t **data_p,
                        sdx_schema_error_t *err);

/* Translate a native field path of a validation error ("lora.models[0].weight")
   into the C# request's names ("Conditioning.LoRAs[0].Weight") through the
   C# schema of `message_type`. Falls back to a PascalCase form of the
   native path. Writes into out (always NUL-terminated). */
void sdx_csharp_field_path(const sdx_schema_set_t *set, const char *message_type,
                           const char *native_path, char *out, size_t out_len);

/* The validation hook's one call: sdx_schema_check_request() on the data of
   a request of `message_type`, with err->field translated to the C# names
   when the request came in the C# dialect. 1 no schema, 0 valid, -1 invalid. */
int sdx_csharp_check_request(const sdx_schema_set_t *set, const sdx_semantic_t *sem,
                             const char *message_type, sdx_dialect_t dialect, sdx_value_t **data_p,
                             sdx_schema_error_t *err);

/* The C#-dialect form of a native reply ({request_id, success, data |
   error {code, message, field}, ...}): keys PascalCase at every level,
   Action added from info, bin turned into base64 text when enc is JSON,
   error fields in the C# names (whoever raised them), Warnings listed, the
   RequestId as sent (string, integer or 16-byte bin). A progress message
   ({message_type: "progress", step, total, elapsed_ms, ...}) becomes
   {RequestId, Type: "progress", Action, Progress {Step, Total, Elapsed,
   ...}}: no Success, so no client can take it for the final reply. When the
   request came as an array ([Key(n)] contract), the result is an array in
   the order of the schemas' x-reply annotation. Returns a new tree (caller
   owns), NULL on OOM. */
sdx_value_t *sdx_csharp_reply(const sdx_value_t *native_reply, sdx_encoding_t enc,
                              const sdx_csharp_info_t *info);

/* Recognise a frame that failed to decode as a C# one (JSON with a
   PascalCase "RequestId"/"Action" key, or msgpack that starts like an array
   contract or an LZ4 extension) and fill info (dialect, the RequestId text
   if it can be read). Returns the dialect. */
sdx_dialect_t sdx_csharp_sniff(const void *buf, size_t len, sdx_csharp_info_t *info);

/* snake_case / camelCase -> PascalCase ("request_id" -> "RequestId").
   false if the name did not fit in out (out then holds a cut, NUL-ended
   prefix that may end inside a UTF-8 sequence: use the name as it was). */
bool sdx_csharp_pascal(const char *in, char *out, size_t out_len);
/* PascalCase / camelCase -> snake_case ("TimeoutMs" -> "timeout_ms",
   "LoRAs" -> "loras"). false if it did not fit, as above. */
bool sdx_csharp_snake(const char *in, char *out, size_t out_len);

#endif
