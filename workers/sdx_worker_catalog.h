/*  sdx_worker_catalog.h - proto/catalog.json as the worker runtime sees it:
    a table generated at build time (tools/gen_catalog_c.py), so that what a
    worker calls planned, and the summary of a message type it serves, are
    the catalogue's. The broker reads the same file at run time
    (common/sdx_catalog.h).
*/
#ifndef SDX_WORKER_CATALOG_H
#define SDX_WORKER_CATALOG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *message_type; /* "device.list"; NULL ends the table */
    const char *domain;
    bool planned;            /* status "planned": not built anywhere yet */
    const char *description; /* the catalogue's one line */
} sdx_catalog_row_t;

extern const sdx_catalog_row_t sdx_worker_catalog[];

#endif
