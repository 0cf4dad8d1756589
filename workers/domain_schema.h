/*  domain_schema.h - the request rules a worker re-checks its input with: the
    same schemas/ files and validator (common/sdx_schema) as the broker, found
    the same way (--schemas-dir, else the broker's default search), with the
    worker's own folders for x-path-root. A worker must not trust the wire,
    and it must not write a default or a range a second time in C: it asks
    this instead.

    Not for: what a domain does with the filled request (its handler). */
#ifndef DOMAIN_SCHEMA_H
#define DOMAIN_SCHEMA_H

#include "sdx_schema.h"
#include "sdx_semantic.h"
#include "sdx_worker.h"

#include <stddef.h>

typedef struct {
    sdx_schema_set_t *set; /* owned */
    sdx_semantic_t *sem;   /* owned: the roots for x-path-root */
} domain_schema_t;

/* Load the rules from dir ("" or NULL: the broker's default search; a named
   folder that is missing or does not load is an error, never a fallback),
   require a schema for each of need_types (NULL-terminated), and set the
   roots {kind, dir, kind, dir, ..., NULL} (a "" dir is skipped). 0, or -1
   with the reason in err (what a domain's init reports: exit 2). */
int domain_schema_load(domain_schema_t *ds, const char *dir, const char *const *need_types,
                       const char *const *roots, char *err, size_t err_len);
void domain_schema_fini(domain_schema_t *ds);

/* Check *data_p against the schema of the job's message type, filling its
   defaults in place (*data_p may be replaced). A refusal is answered
   invalid_request naming the field, as the broker would. 0, or -1 after
   sdx_job_fail. */
int domain_schema_check(sdx_job_t *job, const domain_schema_t *ds, sdx_value_t **data_p);

/* Check *data_p, the request of an operation that takes some top-level
   fields of another message type's request (inference.load_model takes
   model_name and precision of inference.generate), against those fields'
   rules in like_type's schema, filling their defaults from it: `keys`
   (NULL-terminated) are the fields accepted (another one is refused,
   rule additionalProperties), `required` (NULL-terminated, may be NULL)
   those that must be given. A refusal is answered invalid_request naming
   the field, as domain_schema_check does. 0, or -1 after sdx_job_fail. */
int domain_schema_check_like(sdx_job_t *job, const domain_schema_t *ds, const char *like_type,
                             const char *const *keys, const char *const *required,
                             sdx_value_t **data_p);

#endif
