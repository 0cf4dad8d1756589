/*  domain_schema.c - see domain_schema.h. */
#include "domain_schema.h"

#include <stdio.h>
#include <string.h>

int domain_schema_load(domain_schema_t *ds, const char *dir, const char *const *need_types,
                       const char *const *roots, char *err, size_t err_len)
{
    memset(ds, 0, sizeof *ds);
    char serr[512];
    bool named = dir && *dir;
    ds->set = named ? sdx_schema_set_load(dir, serr, sizeof serr)
                    : sdx_schema_set_load_default(serr, sizeof serr);
    if (!ds->set) {
        snprintf(err, err_len, "schemas%s: %s", named ? " (--schemas-dir)" : "", serr);
        return -1;
    }
    for (const char *const *t = need_types; t && *t; t++) {
        if (!sdx_schema_set_for(ds->set, *t)) {
            snprintf(err, err_len, "schemas%s: no schema for %s", named ? " (--schemas-dir)" : "",
                     *t);
            return -1;
        }
    }
    ds->sem = sdx_semantic_new();
    if (!ds->sem) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (const char *const *r = roots; r && r[0] && r[1]; r += 2) {
        if (r[1][0] && sdx_semantic_set_root(ds->sem, r[0], r[1]) != 0) {
            snprintf(err, err_len, "cannot resolve the %s root %s", r[0], r[1]);
            return -1;
        }
    }
    return 0;
}

void domain_schema_fini(domain_schema_t *ds)
{
    sdx_schema_set_destroy(&ds->set);
    sdx_semantic_destroy(&ds->sem);
}

int domain_schema_check(sdx_job_t *job, const domain_schema_t *ds, sdx_value_t **data_p)
{
    sdx_schema_error_t e;
    int rc = sdx_schema_check_request(ds->set, ds->sem, sdx_job_message_type(job), data_p, &e);
    if (rc == 1)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "no request schema for %s in the schemas folder",
                            sdx_job_message_type(job));
    if (rc != 0)
        return sdx_job_fail(job, strcmp(e.rule, "internal") == 0 ? SDX_ERR_INTERNAL : SDX_ERR_INVALID_REQUEST,
                            e.field[0] ? e.field : NULL, "%s", e.message);
    return 0;
}

int domain_schema_check_like(sdx_job_t *job, const domain_schema_t *ds, const char *like_type,
                             const char *const *keys, const char *const *required,
                             sdx_value_t **data_p)
{
    const sdx_value_t *like = sdx_schema_set_for(ds->set, like_type);
    const sdx_value_t *props = sdx_map_get(like, "properties");
    if (!props)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL,
                            "no request schema for %s in the schemas folder", like_type);
    /* {type: object, additionalProperties: false, required, properties: the keys'} */
    sdx_value_t *schema = sdx_value_map_new(), *mine = sdx_value_map_new(),
                *req = sdx_value_array_new();
    bool oom = !schema || !mine || !req;
    for (const char *const *k = keys; !oom && *k; k++) {
        const sdx_value_t *sub = sdx_map_get(props, *k);
        if (!sub) {
            sdx_value_destroy(&schema);
            sdx_value_destroy(&mine);
            sdx_value_destroy(&req);
            return sdx_job_fail(job, SDX_ERR_INTERNAL, *k,
                                "%s: the request schema of %s has no such field (check the "
                                "schemas folder)",
                                *k, like_type);
        }
        sdx_value_t *c = sdx_value_clone(sub);
        oom = !c || sdx_map_set(mine, *k, c) != 0;
    }
    for (const char *const *r = required; !oom && r && *r; r++) {
        sdx_value_t *name = sdx_value_str_new(*r);
        oom = !name || sdx_array_push(req, name) != 0;
    }
    if (!oom) {
        /* sdx_map_set owns what it is given, also when it fails */
        int bad = sdx_map_set(schema, "required", req);
        req = NULL;
        bad |= sdx_map_set(schema, "properties", mine);
        mine = NULL;
        bad |= sdx_map_set_str(schema, "type", "object");
        bad |= sdx_map_set_bool(schema, "additionalProperties", false);
        oom = bad != 0;
    }
    sdx_value_destroy(&mine);
    sdx_value_destroy(&req);
    if (oom) {
        sdx_value_destroy(&schema);
        return sdx_job_fail(job, SDX_ERR_OUT_OF_MEMORY, NULL, "out of host memory");
    }
    sdx_schema_error_t e;
    int rc = sdx_schema_validate(schema, data_p, ds->sem, &e);
    sdx_value_destroy(&schema);
    if (rc != 0)
        return sdx_job_fail(
            job, strcmp(e.rule, "internal") == 0 ? SDX_ERR_INTERNAL : SDX_ERR_INVALID_REQUEST,
            e.field[0] ? e.field : NULL, "%s", e.message);
    return 0;
}
