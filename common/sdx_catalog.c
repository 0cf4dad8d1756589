/*  sdx_catalog.c - proto/catalog.json loaded into flat arrays (see
    sdx_catalog.h). Read-only after load; lookups are linear over a few dozen
    rows and done once per request at most. */
#include "sdx_catalog.h"

#include "sdx_codec.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SDX_SOURCE_ROOT
#define SDX_SOURCE_ROOT "."
#endif

struct sdx_catalog {
    sdx_value_t *root; /* owns every string the rows point to */
    sdx_catalog_domain_t *domains;
    size_t ndomains;
    sdx_catalog_msg_t *msgs;
    size_t nmsgs;
    char source[512];
};

void sdx_catalog_destroy(sdx_catalog_t **cp)
{
    if (!cp || !*cp)
        return;
    sdx_catalog_t *c = *cp;
    sdx_value_destroy(&c->root);
    free(c->domains);
    free(c->msgs);
    free(c);
    *cp = NULL;
}

sdx_catalog_t *sdx_catalog_load_text(const char *text, size_t len, char *err, size_t err_len)
{
    char derr[160];
    sdx_catalog_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, err_len, "catalog: out of memory");
        return NULL;
    }
    c->root = sdx_json_decode(text, len, derr, sizeof derr);
    const sdx_value_t *doms = sdx_map_get(c->root, "domains");
    if (!c->root) {
        snprintf(err, err_len, "catalog: %s", derr);
        goto fail;
    }
    if (!doms || doms->type != SDX_MAP || doms->u.map.len == 0) {
        snprintf(err, err_len, "catalog: needs a non-empty \"domains\" object");
        goto fail;
    }
    size_t total = 0;
    for (size_t i = 0; i < doms->u.map.len; i++)
        total += sdx_map_len(sdx_map_get(doms->u.map.items[i].val, "messages"));
    c->domains = calloc(doms->u.map.len, sizeof *c->domains);
    c->msgs = calloc(total + 1, sizeof *c->msgs);
    if (!c->domains || !c->msgs) {
        snprintf(err, err_len, "catalog: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < doms->u.map.len; i++) {
        const sdx_kv_t *kv = &doms->u.map.items[i];
        const sdx_value_t *d = kv->val;
        const char *hb = sdx_map_str(d, "handled_by", NULL);
        if (d->type != SDX_MAP || !hb || (strcmp(hb, "broker") != 0 && strcmp(hb, "worker") != 0)) {
            snprintf(err, err_len, "catalog: domain \"%s\" needs handled_by broker|worker",
                     kv->key);
            goto fail;
        }
        if (strchr(kv->key, '.') || kv->key_len == 0 || kv->key_len >= 32) {
            snprintf(err, err_len, "catalog: bad domain name \"%s\"", kv->key);
            goto fail;
        }
        sdx_catalog_domain_t *row = &c->domains[c->ndomains++];
        row->name = kv->key;
        row->by_broker = strcmp(hb, "broker") == 0;
        row->internal = sdx_map_bool(d, "internal", false);
        row->description = sdx_map_str(d, "description", "");
        int64_t pf = sdx_map_int(d, "prefetch", 0);
        if (pf < 0 || pf > 64) {
            snprintf(err, err_len, "catalog: domain \"%s\": prefetch must be 0..64", kv->key);
            goto fail;
        }
        row->prefetch = (int)pf;
        const sdx_value_t *msgs = sdx_map_get(d, "messages");
        for (size_t k = 0; k < sdx_map_len(msgs); k++) {
            const sdx_kv_t *mk = &msgs->u.map.items[k];
            const char *st = sdx_map_str(mk->val, "status", NULL);
            if (strncmp(mk->key, kv->key, kv->key_len) != 0 || mk->key[kv->key_len] != '.' ||
                !mk->key[kv->key_len + 1]) {
                snprintf(err, err_len, "catalog: message \"%s\" is not in domain \"%s\"", mk->key,
                         kv->key);
                goto fail;
            }
            if (!st || (strcmp(st, "implemented") != 0 && strcmp(st, "planned") != 0)) {
                snprintf(err, err_len, "catalog: message \"%s\" needs status implemented|planned",
                         mk->key);
                goto fail;
            }
            sdx_catalog_msg_t *m = &c->msgs[c->nmsgs++];
            m->name = mk->key;
            m->domain = kv->key;
            m->implemented = strcmp(st, "implemented") == 0;
            m->description = sdx_map_str(mk->val, "description", "");
        }
    }
    return c;
fail:
    sdx_catalog_destroy(&c);
    return NULL;
}

sdx_catalog_t *sdx_catalog_load(const char *path, char *err, size_t err_len)
{
    size_t len;
    char *buf = sdx_codec_read_file(path, &len, err, err_len);
    if (!buf)
        return NULL;
    char e2[256];
    sdx_catalog_t *c = sdx_catalog_load_text(buf, len, e2, sizeof e2);
    free(buf);
    if (!c) {
        snprintf(err, err_len, "%s: %s", path, e2);
        return NULL;
    }
    snprintf(c->source, sizeof c->source, "%s", path);
    return c;
}

sdx_catalog_t *sdx_catalog_load_default(char *err, size_t err_len)
{
    const char *env = getenv("SDXL_CATALOG_FILE");
    if (env && *env)
        return sdx_catalog_load(env, err, err_len);
    const char *candidates[] = {
        SDX_SOURCE_ROOT "/proto/catalog.json",
        "/usr/local/share/sdxl-fleet/catalog.json",
        "/usr/share/sdxl-fleet/catalog.json",
    };
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (access(candidates[i], R_OK) == 0)
            return sdx_catalog_load(candidates[i], err, err_len);
    snprintf(err, err_len, "no catalog.json found (set SDXL_CATALOG_FILE or catalog_file)");
    return NULL;
}

const char *sdx_catalog_source(const sdx_catalog_t *c)
{
    return c ? c->source : "";
}

size_t sdx_catalog_domain_count(const sdx_catalog_t *c)
{
    return c ? c->ndomains : 0;
}

const sdx_catalog_domain_t *sdx_catalog_domain_at(const sdx_catalog_t *c, size_t i)
{
    return c && i < c->ndomains ? &c->domains[i] : NULL;
}

int sdx_catalog_domain_index(const sdx_catalog_t *c, const char *name)
{
    if (!c || !name)
        return -1;
    for (size_t i = 0; i < c->ndomains; i++)
        if (strcmp(c->domains[i].name, name) == 0)
            return (int)i;
    return -1;
}

const sdx_catalog_domain_t *sdx_catalog_domain(const sdx_catalog_t *c, const char *name)
{
    int i = sdx_catalog_domain_index(c, name);
    return i < 0 ? NULL : &c->domains[i];
}

size_t sdx_catalog_message_count(const sdx_catalog_t *c)
{
    return c ? c->nmsgs : 0;
}

const sdx_catalog_msg_t *sdx_catalog_message_at(const sdx_catalog_t *c, size_t i)
{
    return c && i < c->nmsgs ? &c->msgs[i] : NULL;
}

const sdx_catalog_msg_t *sdx_catalog_find(const sdx_catalog_t *c, const char *message_type)
{
    if (!c || !message_type)
        return NULL;
    for (size_t i = 0; i < c->nmsgs; i++)
        if (strcmp(c->msgs[i].name, message_type) == 0)
            return &c->msgs[i];
    return NULL;
}

void sdx_catalog_write_markdown(const sdx_catalog_t *c, FILE *out)
{
    fprintf(out, "<!-- generated from proto/catalog.json by `sdxl-broker --catalog-md`; "
                 "edit the JSON, not this section -->\n");
    for (size_t i = 0; i < c->ndomains; i++) {
        const sdx_catalog_domain_t *d = &c->domains[i];
        fprintf(out, "\n### %s%s\n\n%s. Handled by the %s.\n\n", d->name,
                d->internal ? " (internal)" : "", d->description,
                d->by_broker ? "broker" : "workers");
        fprintf(out, "| message_type | status | description |\n|---|---|---|\n");
        for (size_t k = 0; k < c->nmsgs; k++)
            if (c->msgs[k].domain == d->name)
                fprintf(out, "| `%s` | %s | %s |\n", c->msgs[k].name,
                        c->msgs[k].implemented ? "implemented" : "planned", c->msgs[k].description);
    }
}
