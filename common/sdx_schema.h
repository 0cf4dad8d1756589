/*  sdx_schema.h - request validation driven by the JSON Schema files in
    schemas/ (the single source of the rules; schemas/README.md documents the
    subset and the x- annotations).

    A schema set is the folder's *.json files, decoded once at start-up. A
    request schema names the message types it checks ("x-message-types");
    a C# mapping schema names the message types it maps ("x-csharp-for").
    Validation works on the decoded message tree (sdx_value.h), so msgpack
    and JSON requests go through the same code. It also canonicalises enum
    aliases ("dpm++_2m" -> "DPMSolverMultistepScheduler"), turns integral
    floats into integers where the schema says integer, and fills defaults
    in place. Semantic checks that JSON Schema cannot express are delegated
    to sdx_semantic.h at the places the schema annotates.

    Not for: the envelope (sdx_envelope), the C# dialect (sdx_csharp).
*/
#ifndef SDX_SCHEMA_H
#define SDX_SCHEMA_H

#include "sdx_semantic.h"
#include "sdx_value.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct sdx_schema_set sdx_schema_set_t;

/* The first failed rule of a request. */
typedef struct {
    char field[256];   /* dotted path, "lora.models[0].weight"; "" = the whole data */
    char rule[32];     /* the keyword that failed: "maximum", "type", "required", ... */
    char message[512]; /* "must be <= 30, got 45" */
} sdx_schema_error_t;

/* Load every *.json in `dir` that declares "$schema" (others, such as
   example_prompt.json, are skipped). Each must be valid JSON and use only the
   supported keywords (an unknown keyword is a load error, so a rule never
   silently stops being enforced). NULL on failure (reason logged and, if
   err is given, written there). Caller owns the result and destroys it. */
sdx_schema_set_t *sdx_schema_set_load(const char *dir, char *err, size_t err_len);
/* Load from $SDXL_SCHEMAS_DIR when it is set (a missing folder there is an
   error: no fallback), otherwise from the first folder that exists of
   <source root>/schemas, /usr/local/share/sdxl-fleet/schemas,
   /usr/share/sdxl-fleet/schemas. Same contract as sdx_schema_set_load. */
sdx_schema_set_t *sdx_schema_set_load_default(char *err, size_t err_len);
void sdx_schema_set_destroy(sdx_schema_set_t **self_p);

/* Number of files loaded. */
size_t sdx_schema_set_size(const sdx_schema_set_t *self);
/* Borrowed: the request schema for a message type, NULL if it has none. */
const sdx_value_t *sdx_schema_set_for(const sdx_schema_set_t *self, const char *message_type);
/* Borrowed: the C# mapping schema for a message type, NULL if none. */
const sdx_value_t *sdx_schema_set_csharp_for(const sdx_schema_set_t *self,
                                             const char *message_type);
/* Borrowed: the value of a top-level annotation ("x-envelope") in the first
   file (by name) that has it, NULL if none. */
const sdx_value_t *sdx_schema_set_annotation(const sdx_schema_set_t *self, const char *annotation);
/* Borrowed: a schema by file name ("error_reply_schema.json"), NULL if absent. */
const sdx_value_t *sdx_schema_set_get(const sdx_schema_set_t *self, const char *file_name);

/* Validate *data_p against `schema`, canonicalising and filling defaults in
   place (*data_p may be replaced, e.g. a base64 image by its bin). `sem` may
   be NULL (semantic checks then use their lexical forms and default limits).
   0 valid, -1 invalid (err filled). */
int sdx_schema_validate(const sdx_value_t *schema, sdx_value_t **data_p, const sdx_semantic_t *sem,
                        sdx_schema_error_t *err);

/* The broker's entry point: validate the data of a request of
   `message_type`. 1 = no schema for that type (nothing checked), 0 = valid,
   -1 = invalid (err filled). A missing data (*data_p NULL) is checked as an
   empty map, which is created. */
int sdx_schema_check_request(const sdx_schema_set_t *self, const sdx_semantic_t *sem,
                             const char *message_type, sdx_value_t **data_p,
                             sdx_schema_error_t *err);

#endif
