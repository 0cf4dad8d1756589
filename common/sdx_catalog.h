/*  sdx_catalog.h - the message catalogue (proto/catalog.json) at run time:
    domains, who handles them (broker or worker), and their message types
    with implemented/planned status. The broker builds its routing table from
    it; proto/PROTOCOL.md's catalogue section is generated from it
    (sdx_catalog_write_markdown, `sdxl-broker --catalog-md`).
*/
#ifndef SDX_CATALOG_H
#define SDX_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct sdx_catalog sdx_catalog_t;

typedef struct {
    const char *name; /* "device" */
    bool by_broker;   /* handled_by: broker (else worker) */
    bool internal;    /* not for clients (the test domain) */
    int prefetch;     /* requests a worker may hold beyond its concurrency (0) */
    const char *description;
} sdx_catalog_domain_t;

typedef struct {
    const char *name;   /* "device.status" */
    const char *domain; /* "device" */
    bool implemented;   /* else planned */
    const char *description;
} sdx_catalog_msg_t;

/* Load from a file / JSON text / the default places ($SDXL_CATALOG_FILE,
   <source root>/proto/catalog.json, /usr/local/share/sdxl-fleet/catalog.json,
   /usr/share/sdxl-fleet/catalog.json). Caller owns the result and destroys it;
   NULL + err on failure. */
sdx_catalog_t *sdx_catalog_load(const char *path, char *err, size_t err_len);
sdx_catalog_t *sdx_catalog_load_text(const char *text, size_t len, char *err, size_t err_len);
sdx_catalog_t *sdx_catalog_load_default(char *err, size_t err_len);
void sdx_catalog_destroy(sdx_catalog_t **c);

/* Path it was loaded from ("" for text). Borrowed. */
const char *sdx_catalog_source(const sdx_catalog_t *c);

size_t sdx_catalog_domain_count(const sdx_catalog_t *c);
/* Borrowed rows, valid for the catalogue's life; NULL when out of range or absent. */
const sdx_catalog_domain_t *sdx_catalog_domain_at(const sdx_catalog_t *c, size_t i);
const sdx_catalog_domain_t *sdx_catalog_domain(const sdx_catalog_t *c, const char *name);
/* Index of a domain, -1 if absent. */
int sdx_catalog_domain_index(const sdx_catalog_t *c, const char *name);

size_t sdx_catalog_message_count(const sdx_catalog_t *c);
const sdx_catalog_msg_t *sdx_catalog_message_at(const sdx_catalog_t *c, size_t i);
const sdx_catalog_msg_t *sdx_catalog_find(const sdx_catalog_t *c, const char *message_type);

/* The catalogue as Markdown tables, one per domain (PROTOCOL.md section). */
void sdx_catalog_write_markdown(const sdx_catalog_t *c, FILE *out);

#endif
