/*  handler_scheduler.c - the scheduler domain: the engine's scheduler family
    (workers/sdxl/schedulers/sdx_scheduler.h) as a catalogue and a calculator.

      scheduler.list                                  -> every scheduler, its
                                                         parameters, defaults, aliases
      scheduler.info      {scheduler, ...}            -> one of them, resolved
      scheduler.timesteps {scheduler, num_inference_steps?, strength?,
                           use_karras_sigmas?, prediction_type?, config?}
                                                      -> timesteps, sigmas
      scheduler.validate  {same as timesteps}         -> valid, resolved config
      scheduler.step                                  -> not_available

    Where each fact comes from (nothing is written down twice):
    - which schedulers exist, their config keys, aliases with overrides and
      defaults: the engine's tables (a default-built scheduler's config);
    - the request fields' rules (names and aliases the generation request
      accepts, steps and strength ranges, prediction_type): the `scheduler`,
      `use_karras_sigmas`, `prediction_type` and `hyperparameters` members of
      the generation schema (the one for inference.generate), assembled at
      start-up into this domain's request schema;
    - the config keys' types and allowed values: schemas/
      scheduler_config_schema.json.
    A request resolves as inference.generate's does: the schema canonicalises
    the name (an alias may set use_karras_sigmas), then sdx_scheduler_new,
    sdx_scheduler_set_timesteps and sdx_scheduler_strength_begin run with the
    options the pipeline passes (sdx_scheduler_model_json for prediction_type).
    A name only the engine knows ("DPM++ 2M SDE Karras") is served too, and
    flagged accepted_by_generate: false.

    Not for: stepping tensors. The denoising loop runs inside the inference
    worker; a round trip per step would cost more than the step.
    Without the engine (-Dengine=disabled) every operation answers
    not_available. */
#include "sdx_worker.h"

#ifndef SDX_WITH_ENGINE

const sdx_domain_t sdx_domain_scheduler = {
    .name = "scheduler",
    .capacity = 32,
    .handlers = NULL,
    .planned_issue = "this sdxl-worker was built without the libtorch engine (-Dengine=disabled)",
};

#else /* SDX_WITH_ENGINE */

#include "sdx_codec.h"
#include "sdx_log.h"
#include "sdx_scheduler.h"
#include "sdx_schema.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_GEN_TYPE "inference.generate"
#define S_CONFIG_FILE "scheduler_config_schema.json"

typedef struct {
    sdx_schema_set_t *schemas;
    char schemas_dir[4096]; /* "" : the default search */
    /* Owned: the request schema assembled from the generation schema and the
       config schema (see the file comment). */
    sdx_value_t *request;
    /* Borrowed from schemas: the generation schema's scheduler member and
       the config schema's properties. */
    const sdx_value_t *sched_member;
    const sdx_value_t *config_props;
    /* Owned: scheduler.list's reply, built once at init (it depends on the
       engine's tables and the schemas alone; building it means making every
       scheduler, ~1 ms, which made this worker the fleet's bottleneck under
       tools/bench-load). */
    sdx_value_t *list;
} s_sched_t;

static const sdx_option_t s_options[] = {
    {"schemas-dir", true, "DIR", NULL, "SDXL_SCHEMAS_DIR",
     "request schemas (default: the broker's search: <source>/schemas, /usr/share/...)"},
    {NULL, false, NULL, NULL, NULL, NULL},
};

static s_sched_t *s_state(sdx_worker_t *w)
{
    s_sched_t *st = sdx_worker_domain_state(w);
    if (!st && (st = calloc(1, sizeof *st)))
        sdx_worker_set_domain_state(w, st);
    return st;
}

static int s_option(sdx_worker_t *w, const char *key, const char *value, char *err, size_t err_len)
{
    s_sched_t *st = s_state(w);
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (strcmp(key, "schemas-dir") == 0) {
        if (strlen(value) >= sizeof st->schemas_dir) {
            snprintf(err, err_len, "path too long");
            return -1;
        }
        snprintf(st->schemas_dir, sizeof st->schemas_dir, "%s", value);
    }
    return 0;
}

/* A copy of schema node `v` (may be NULL: then an empty map) without the
   keys in `drop` (NULL-terminated). NULL on OOM. */
static sdx_value_t *s_clone_without(const sdx_value_t *v, const char *const *drop)
{
    sdx_value_t *c = v ? sdx_value_clone(v) : sdx_value_map_new();
    for (; c && drop && *drop; drop++)
        sdx_map_del(c, *drop);
    return c;
}

/* Set key to val, which may be NULL (OOM): then -1 and nothing is set. */
static int s_set(sdx_value_t *map, const char *key, sdx_value_t *val)
{
    return val ? sdx_map_set(map, key, val) : -1;
}

/* The domain's request schema: the generation schema's scheduler fields
   (flat: num_inference_steps and strength from its hyperparameters) and the
   config schema as `config`. strength keeps no default: absent means
   txt2img. */
static sdx_value_t *s_build_request(const sdx_value_t *gen, const sdx_value_t *config)
{
    static const char *const no_default[] = {"default", NULL};
    const sdx_value_t *props = sdx_map_get(gen, "properties");
    const sdx_value_t *hp = sdx_map_get(sdx_map_get(props, "hyperparameters"), "properties");
    sdx_value_t *req = sdx_value_map_new();
    sdx_value_t *p = sdx_value_map_new();
    if (!req || !p) {
        sdx_value_destroy(&req);
        sdx_value_destroy(&p);
        return NULL;
    }
    int rc = sdx_map_set_str(req, "type", "object");
    rc |= s_set(req, "additionalProperties", sdx_value_bool_new(false));
    rc |= s_set(p, "scheduler", s_clone_without(sdx_map_get(props, "scheduler"), NULL));
    rc |= s_set(p, "use_karras_sigmas",
                s_clone_without(sdx_map_get(props, "use_karras_sigmas"), NULL));
    rc |= s_set(p, "prediction_type", s_clone_without(sdx_map_get(props, "prediction_type"), NULL));
    rc |= s_set(p, "num_inference_steps",
                s_clone_without(sdx_map_get(hp, "num_inference_steps"), NULL));
    rc |= s_set(p, "strength", s_clone_without(sdx_map_get(hp, "strength"), no_default));
    rc |= s_set(p, "config", s_clone_without(config, NULL));
    rc |= sdx_map_set(req, "properties", p);
    if (rc != 0)
        sdx_value_destroy(&req);
    return req;
}

static int s_build_list(const s_sched_t *st, sdx_value_t *reply, char *why, size_t why_len);

static int s_init(sdx_worker_t *w, char *err, size_t err_len)
{
    s_sched_t *st = s_state(w);
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    st->schemas = st->schemas_dir[0] ? sdx_schema_set_load(st->schemas_dir, err, err_len)
                                     : sdx_schema_set_load_default(err, err_len);
    if (!st->schemas)
        return -1;
    const sdx_value_t *gen = sdx_schema_set_for(st->schemas, S_GEN_TYPE);
    const sdx_value_t *cfg = sdx_schema_set_get(st->schemas, S_CONFIG_FILE);
    st->sched_member = sdx_map_get(sdx_map_get(gen, "properties"), "scheduler");
    st->config_props = sdx_map_get(cfg, "properties");
    if (!st->sched_member || !st->config_props) {
        snprintf(err, err_len, "the schemas lack %s",
                 !st->sched_member ? "the scheduler field of " S_GEN_TYPE : S_CONFIG_FILE);
        return -1;
    }
    if (!(st->request = s_build_request(gen, cfg))) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (!(st->list = sdx_value_map_new()) || s_build_list(st, st->list, err, err_len) != 0) {
        if (!st->list)
            snprintf(err, err_len, "out of memory");
        return -1;
    }
    log_info("scheduler: %d schedulers, %d engine aliases", sdx_scheduler_class_count(),
             sdx_scheduler_alias_count());
    return 0;
}

static void s_fini(sdx_worker_t *w)
{
    s_sched_t *st = sdx_worker_domain_state(w);
    if (!st)
        return;
    sdx_value_destroy(&st->request);
    sdx_value_destroy(&st->list);
    sdx_schema_set_destroy(&st->schemas);
    free(st);
    sdx_worker_set_domain_state(w, NULL);
}

/* ---------------------------------------------------------------- helpers */

/* Compare names as the schema does: ignoring case, ' ', '_' and '-'. */
static void s_fold(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && n + 1 < cap; s++)
        if (*s != ' ' && *s != '_' && *s != '-')
            out[n++] = (char)tolower((unsigned char)*s);
    out[n] = '\0';
}

static bool s_name_eq(const char *a, const char *b)
{
    char fa[128], fb[128];
    s_fold(a, fa, sizeof fa);
    s_fold(b, fb, sizeof fb);
    return strcmp(fa, fb) == 0;
}

/* Levenshtein distance of the folded names (short strings). */
static int s_distance(const char *a, const char *b)
{
    char fa[64], fb[64];
    s_fold(a, fa, sizeof fa);
    s_fold(b, fb, sizeof fb);
    size_t la = strlen(fa), lb = strlen(fb);
    int row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (fa[i - 1] != fb[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

typedef struct {
    const char *name;
    int dist;
} s_cand_t;

static void s_consider(s_cand_t *best, const char *asked, const char *name)
{
    int d = s_distance(asked, name);
    char fa[64], fn[64];
    s_fold(asked, fa, sizeof fa);
    s_fold(name, fn, sizeof fn);
    if (fa[0] && strstr(fn, fa))
        d = d < 2 ? d : 2; /* a part of the name ("karras", "dpm") counts as near */
    for (int k = 0; k < 5; k++) {
        if (best[k].name && s_name_eq(best[k].name, name))
            return;
        if (!best[k].name || d < best[k].dist) {
            for (int m = 4; m > k; m--)
                best[m] = best[m - 1];
            best[k] = (s_cand_t){name, d};
            return;
        }
    }
}

/* Fail with an unknown-name error listing up to five near names. */
static int s_unknown(sdx_job_t *job, const s_sched_t *st, const char *asked)
{
    s_cand_t best[5] = {{0}};
    const sdx_value_t *en = sdx_map_get(st->sched_member, "enum");
    for (size_t i = 0; i < sdx_array_len(en); i++)
        if (sdx_array_at(en, i)->type == SDX_STR)
            s_consider(best, asked, sdx_array_at(en, i)->u.str.ptr);
    const sdx_value_t *al = sdx_map_get(st->sched_member, "x-aliases");
    for (size_t i = 0; al && al->type == SDX_MAP && i < al->u.map.len; i++)
        s_consider(best, asked, al->u.map.items[i].key);
    for (int i = 0; i < sdx_scheduler_alias_count(); i++) {
        const char *a, *c, *o;
        sdx_scheduler_alias_at(i, &a, &c, &o);
        s_consider(best, asked, a);
    }
    char near[512] = "";
    size_t off = 0;
    int limit = (int)strlen(asked) / 2 + 2;
    for (int k = 0; k < 5 && best[k].name && off < sizeof near; k++)
        if (best[k].dist <= limit)
            off += (size_t)snprintf(near + off, sizeof near - off, "%s'%s'", off ? ", " : "",
                                    best[k].name);
    return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "scheduler",
                        "unknown scheduler '%s'%s%s%s; scheduler.list lists every name", asked,
                        near[0] ? " (near: " : "", near, near[0] ? ")" : "");
}

/* A JSON text from the engine as a value; nil when it is not JSON (the
   engine writes it, so only on OOM), NULL only when even nil cannot be had. */
static sdx_value_t *s_json_value(const char *text)
{
    char err[128];
    sdx_value_t *v = text ? sdx_json_decode(text, strlen(text), err, sizeof err) : NULL;
    return v ? v : sdx_value_nil_new();
}

/* Copy rule keywords of a schema property into a parameter description. */
static void s_copy_rules(sdx_value_t *param, const sdx_value_t *rule)
{
    static const char *const keys[] = {
        "enum",     "minimum",  "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minItems", "maxItems", "pattern", "description"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const sdx_value_t *v = sdx_map_get(rule, keys[k]);
        if (v)
            sdx_map_set(param, keys[k], sdx_value_clone(v));
    }
}

/* One class as scheduler.list and scheduler.info describe it: order,
   timestep dtype, sigma options, parameters (engine keys, defaults from a
   default-built scheduler, rules from the config schema), aliases (the
   schema's and the engine's). 0, or -1 with sdx_last_error(). */
static int s_describe(const s_sched_t *st, const sdx_scheduler_class_info_t *ci, sdx_value_t *out)
{
    sdx_scheduler_t *sch = sdx_scheduler_new(ci->name, NULL);
    if (!sch)
        return -1;
    char *cfg_text = sdx_scheduler_config_json(sch);
    sdx_value_t *cfg = s_json_value(cfg_text);
    free(cfg_text);
    int dflt_steps = (int)sdx_map_int(
        sdx_map_get(sdx_map_get(st->request, "properties"), "num_inference_steps"), "default", 30);
    bool sigmas = false;
    if (sdx_scheduler_set_timesteps(sch, dflt_steps) == 0) {
        int n = 0;
        sigmas = sdx_scheduler_sigmas(sch, &n) != NULL && n > 0;
    }
    sdx_map_set_str(out, "name", ci->name);
    sdx_map_set_int(out, "order", ci->order);
    sdx_map_set_str(out, "timesteps_dtype", ci->int_timesteps ? "int64" : "float32");
    sdx_map_set_bool(out, "has_sigmas", sigmas);
    sdx_map_set_float(out, "init_noise_sigma", sdx_scheduler_init_noise_sigma(sch));
    sdx_scheduler_destroy(&sch);
    /* the sigma schedules diffusers offers, as keys the class knows */
    sdx_value_t *so = sdx_value_map_new();
    sdx_map_set_bool(so, "karras", sdx_scheduler_class_knows(ci->name, "use_karras_sigmas"));
    sdx_map_set_bool(so, "exponential",
                     sdx_scheduler_class_knows(ci->name, "use_exponential_sigmas"));
    sdx_map_set_bool(so, "beta", sdx_scheduler_class_knows(ci->name, "use_beta_sigmas"));
    sdx_map_set(out, "sigma_options", so);

    sdx_value_t *params = sdx_value_array_new();
    for (int k = 0; k < sdx_scheduler_key_count(); k++) {
        const char *key, *kind;
        sdx_scheduler_key_at(k, &key, &kind);
        if (!sdx_scheduler_class_knows(ci->name, key))
            continue;
        const sdx_value_t *rule = sdx_map_get(st->config_props, key);
        sdx_value_t *p = sdx_value_map_new();
        sdx_map_set_str(p, "name", key);
        const sdx_value_t *type = sdx_map_get(rule, "type");
        sdx_map_set(p, "type", type ? sdx_value_clone(type) : sdx_value_str_new(kind));
        const sdx_value_t *d = sdx_map_get(cfg, key);
        sdx_map_set(p, "default", d ? sdx_value_clone(d) : sdx_value_nil_new());
        s_copy_rules(p, rule);
        sdx_array_push(params, p);
    }
    sdx_map_set(out, "parameters", params);
    if (cfg)
        sdx_map_del(cfg, "_class_name");
    sdx_map_set(out, "defaults", cfg ? cfg : sdx_value_map_new());

    sdx_value_t *aliases = sdx_value_array_new();
    const sdx_value_t *al = sdx_map_get(st->sched_member, "x-aliases");
    const sdx_value_t *sets = sdx_map_get(st->sched_member, "x-alias-sets");
    for (size_t i = 0; al && al->type == SDX_MAP && i < al->u.map.len; i++) {
        const sdx_value_t *tgt = al->u.map.items[i].val;
        if (tgt->type != SDX_STR || strcmp(tgt->u.str.ptr, ci->name) != 0)
            continue;
        const char *name = al->u.map.items[i].key;
        sdx_value_t *a = sdx_value_map_new();
        sdx_map_set_str(a, "name", name);
        const sdx_value_t *s = sdx_map_get(sets, name);
        if (s)
            sdx_map_set(a, "sets", sdx_value_clone(s));
        sdx_map_set_bool(a, "accepted_by_generate", true);
        for (int e = 0; e < sdx_scheduler_alias_count(); e++) {
            const char *an, *ac, *ao;
            sdx_scheduler_alias_at(e, &an, &ac, &ao);
            if (s_name_eq(an, name) && ao)
                sdx_map_set(a, "engine_overrides", s_json_value(ao));
        }
        sdx_array_push(aliases, a);
    }
    for (int e = 0; e < sdx_scheduler_alias_count(); e++) {
        const char *an, *ac, *ao;
        sdx_scheduler_alias_at(e, &an, &ac, &ao);
        if (strcmp(ac, ci->name) != 0)
            continue;
        bool listed = false;
        for (size_t i = 0; al && al->type == SDX_MAP && i < al->u.map.len && !listed; i++)
            listed = s_name_eq(al->u.map.items[i].key, an);
        if (listed)
            continue;
        sdx_value_t *a = sdx_value_map_new();
        sdx_map_set_str(a, "name", an);
        if (ao)
            sdx_map_set(a, "engine_overrides", s_json_value(ao));
        sdx_map_set_bool(a, "accepted_by_generate", false);
        sdx_array_push(aliases, a);
    }
    sdx_map_set(out, "aliases", aliases);
    return 0;
}

/* ---------------------------------------------------------------- resolve */

typedef struct {
    sdx_value_t *data;    /* owned: the request, validated, defaults filled */
    const char *name;     /* the name handed to the engine (borrowed from data) */
    bool generate_name;   /* the generation schema accepts the name */
    sdx_scheduler_t *sch; /* owned */
    char ignored[512];    /* config keys this class does not know */
} s_req_t;

static void s_req_clear(s_req_t *r)
{
    sdx_scheduler_destroy(&r->sch);
    sdx_value_destroy(&r->data);
}

/* A message of the engine's, to the request field it is about. */
static const char *s_engine_field(const s_req_t *r, const char *msg, char *buf, size_t cap)
{
    const sdx_value_t *cfg = sdx_map_get(r->data, "config");
    for (size_t i = 0; cfg && cfg->type == SDX_MAP && i < cfg->u.map.len; i++) {
        if (strstr(msg, cfg->u.map.items[i].key)) {
            snprintf(buf, cap, "config.%s", cfg->u.map.items[i].key);
            return buf;
        }
    }
    if (strstr(msg, "Karras"))
        return "use_karras_sigmas";
    if (strstr(msg, "prediction_type"))
        return "prediction_type";
    return cfg ? "config" : "scheduler";
}

/* A scheduler_config.json as diffusers saves it carries "_class_name" and
   "_diffusers_version": metadata, which from_config ignores; so do we. */
static void s_strip_meta(sdx_value_t *data)
{
    sdx_value_t *cfg = sdx_map_get(data, "config");
    for (size_t i = cfg && cfg->type == SDX_MAP ? cfg->u.map.len : 0; i-- > 0;) {
        char key[128];
        snprintf(key, sizeof key, "%s", cfg->u.map.items[i].key);
        if (key[0] == '_')
            sdx_map_del(cfg, key);
    }
}

/* Validate the request, resolve the scheduler as inference.generate would
   and (want_steps) build its tables. 0, or -1 after sdx_job_fail. */
static int s_resolve(sdx_job_t *job, const s_sched_t *st, const sdx_value_t *data, bool want_steps,
                     s_req_t *r)
{
    memset(r, 0, sizeof *r);
    const sdx_value_t *name = sdx_map_get(data, "scheduler");
    if (!name)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "scheduler",
                            "scheduler is required: a class name or an alias (scheduler.list)");
    if (name->type != SDX_STR || name->u.str.len == 0 || name->u.str.len > 128)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "scheduler",
                            "scheduler must be a non-empty string of at most 128 bytes");
    if (!(r->data = sdx_value_clone(data)))
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "out of memory");
    s_strip_meta(r->data);
    sdx_schema_error_t e;
    r->generate_name = true;
    if (sdx_schema_validate(st->request, &r->data, NULL, &e) != 0) {
        if (strcmp(e.field, "scheduler") != 0)
            goto invalid;
        /* not a name the generation request takes: perhaps one of the
           engine's own; the other fields are checked without it */
        sdx_scheduler_t *probe = sdx_scheduler_new(name->u.str.ptr, NULL);
        if (!probe)
            return s_unknown(job, st, name->u.str.ptr);
        sdx_scheduler_destroy(&probe);
        r->generate_name = false;
        sdx_value_destroy(&r->data);
        if (!(r->data = sdx_value_clone(data)))
            return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "out of memory");
        s_strip_meta(r->data);
        sdx_value_t *raw = sdx_map_take(r->data, "scheduler");
        int rc = sdx_schema_validate(st->request, &r->data, NULL, &e);
        if (rc == 0 && sdx_map_set(r->data, "scheduler", raw) != 0)
            return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "out of memory");
        if (rc != 0) {
            sdx_value_destroy(&raw);
            goto invalid;
        }
    }
    r->name = sdx_map_str(r->data, "scheduler", NULL);

    /* the options the pipeline passes for the same request */
    sdx_scheduler_opts_t so;
    sdx_scheduler_opts_init(&so);
    so.karras = sdx_map_bool(r->data, "use_karras_sigmas", false) ? 1 : -1;
    char pjson[160];
    if (sdx_scheduler_model_json(pjson, sizeof pjson, sdx_map_str(r->data, "prediction_type", NULL),
                                 false) != 0)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "prediction_type", "too long");
    so.config_json = pjson[0] ? pjson : NULL;
    uint8_t *cfg_text = NULL;
    size_t cfg_len = 0;
    const sdx_value_t *cfg = sdx_map_get(r->data, "config");
    if (cfg && sdx_json_encode(cfg, &cfg_text, &cfg_len) != 0)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "out of memory");
    so.model_config_json = (const char *)cfg_text;
    r->sch = sdx_scheduler_new(r->name, &so);
    free(cfg_text);
    char fbuf[96];
    if (!r->sch)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST,
                            s_engine_field(r, sdx_last_error(), fbuf, sizeof fbuf), "%s",
                            sdx_last_error());
    const char *cls = sdx_scheduler_class_name(r->sch);
    size_t off = 0;
    for (size_t i = 0; cfg && cfg->type == SDX_MAP && i < cfg->u.map.len; i++)
        if (!sdx_scheduler_class_knows(cls, cfg->u.map.items[i].key) && off < sizeof r->ignored)
            off += (size_t)snprintf(r->ignored + off, sizeof r->ignored - off, "%s%s",
                                    off ? " " : "", cfg->u.map.items[i].key);
    if (!want_steps)
        return 0;
    int steps = (int)sdx_map_int(r->data, "num_inference_steps", 0);
    /* the families check part of the config when they build the tables */
    if (sdx_scheduler_set_timesteps(r->sch, steps) != 0) {
        const char *msg = sdx_last_error();
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST,
                            strstr(msg, "num_inference_steps")
                                ? "num_inference_steps"
                                : s_engine_field(r, msg, fbuf, sizeof fbuf),
                            "%s", msg);
    }
    const sdx_value_t *strength = sdx_map_get(r->data, "strength");
    double sv = 0;
    if (strength && sdx_value_as_double(strength, &sv) &&
        sdx_scheduler_strength_begin(r->sch, sv) < 0)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "strength", "%s", sdx_last_error());
    return 0;
invalid:
    return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, e.field[0] ? e.field : NULL, "%s (%s)", e.message,
                        e.rule);
}

/* The resolved configuration as a value. */
static void s_put_config(sdx_value_t *reply, const s_req_t *r)
{
    char *text = sdx_scheduler_config_json(r->sch);
    sdx_value_t *cfg = s_json_value(text);
    free(text);
    if (cfg)
        sdx_map_del(cfg, "_class_name");
    sdx_map_set(reply, "config", cfg ? cfg : sdx_value_map_new());
}

static void s_put_ignored(sdx_value_t *reply, const s_req_t *r)
{
    sdx_value_t *arr = sdx_value_array_new();
    char buf[sizeof r->ignored];
    snprintf(buf, sizeof buf, "%s", r->ignored);
    char *save = NULL;
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
        sdx_array_push(arr, sdx_value_str_new(t));
    sdx_map_set(reply, "ignored_config", arr);
}

/* ---------------------------------------------------------------- handlers */

/* scheduler.list's reply into `reply` (s_init keeps it in st->list).
   0, or -1 with why. */
static int s_build_list(const s_sched_t *st, sdx_value_t *reply, char *why, size_t why_len)
{
    sdx_value_t *arr = sdx_value_array_new();
    if (!arr) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    for (int i = 0; i < sdx_scheduler_class_count(); i++) {
        sdx_scheduler_class_info_t ci;
        sdx_scheduler_class_at(i, &ci);
        sdx_value_t *one = sdx_value_map_new();
        if (!one || s_describe(st, &ci, one) != 0) {
            sdx_value_destroy(&one);
            sdx_value_destroy(&arr);
            snprintf(why, why_len, "scheduler %s: %s", ci.name, sdx_last_error());
            return -1;
        }
        sdx_array_push(arr, one);
    }
    sdx_map_set(reply, "schedulers", arr);
    sdx_map_set_int(reply, "count", sdx_scheduler_class_count());
    const sdx_value_t *d = sdx_map_get(st->sched_member, "default");
    sdx_map_set(reply, "default", d ? sdx_value_clone(d) : sdx_value_nil_new());
    /* the request fields' rules, as the schema gives them */
    sdx_value_t *fields = s_clone_without(sdx_map_get(st->request, "properties"), NULL);
    sdx_map_del(fields, "config");
    sdx_map_del(fields, "scheduler");
    sdx_map_set(reply, "request_fields", fields);
    return 0;
}

static int s_h_list(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    (void)data;
    const s_sched_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    static const char *const keys[] = {"schedulers", "count", "default", "request_fields"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        sdx_value_t *v = sdx_value_clone(sdx_map_get(st->list, keys[i]));
        if (!v || sdx_map_set(reply, keys[i], v) != 0)
            return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "out of memory");
    }
    return 0;
}

static int s_h_info(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    const s_sched_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    s_req_t r;
    if (s_resolve(job, st, data, false, &r) != 0) {
        s_req_clear(&r);
        return -1;
    }
    sdx_scheduler_class_info_t ci = {0};
    for (int i = 0; i < sdx_scheduler_class_count(); i++) {
        sdx_scheduler_class_at(i, &ci);
        if (strcmp(ci.name, sdx_scheduler_class_name(r.sch)) == 0)
            break;
    }
    int rc = s_describe(st, &ci, reply);
    if (rc == 0) {
        sdx_map_set_str(reply, "asked", sdx_map_str(data, "scheduler", ""));
        sdx_map_set_bool(reply, "accepted_by_generate", r.generate_name);
        s_put_config(reply, &r);
        s_put_ignored(reply, &r);
    } else {
        rc = sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "%s", sdx_last_error());
    }
    s_req_clear(&r);
    return rc;
}

static int s_h_timesteps(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    const s_sched_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    s_req_t r;
    if (s_resolve(job, st, data, true, &r) != 0) {
        s_req_clear(&r);
        return -1;
    }
    const sdx_scheduler_t *s = r.sch;
    int n = sdx_scheduler_count(s), begin = sdx_scheduler_begin_index(s);
    bool ints = sdx_scheduler_timesteps_are_int(s);
    sdx_value_t *ts = sdx_value_array_new();
    for (int i = 0; i < n; i++)
        sdx_array_push(ts, ints ? sdx_value_int_new((int64_t)sdx_scheduler_timestep(s, i))
                                : sdx_value_float_new(sdx_scheduler_timestep(s, i)));
    int ns = 0;
    const float *sg = sdx_scheduler_sigmas(s, &ns);
    sdx_value_t *sv = sg ? sdx_value_array_new() : sdx_value_nil_new();
    for (int i = 0; sg && i < ns; i++)
        sdx_array_push(sv, sdx_value_float_new((double)sg[i]));
    sdx_map_set_str(reply, "scheduler", sdx_scheduler_class_name(s));
    sdx_map_set_str(reply, "asked", sdx_map_str(data, "scheduler", ""));
    sdx_map_set_bool(reply, "accepted_by_generate", r.generate_name);
    sdx_map_set_int(reply, "num_inference_steps", sdx_scheduler_num_inference_steps(s));
    sdx_map_set_str(reply, "timesteps_dtype", ints ? "int64" : "float32");
    sdx_map_set(reply, "timesteps", ts);
    sdx_map_set(reply, "sigmas", sv);
    sdx_map_set_float(reply, "init_noise_sigma", sdx_scheduler_init_noise_sigma(s));
    sdx_map_set_int(reply, "order", sdx_scheduler_order(s));
    sdx_map_set_int(reply, "begin_index", begin);
    sdx_map_set_int(reply, "model_calls", n - begin);
    const sdx_value_t *strength = sdx_map_get(r.data, "strength");
    if (strength)
        sdx_map_set(reply, "strength", sdx_value_clone(strength));
    s_put_config(reply, &r);
    s_req_clear(&r);
    return 0;
}

static int s_h_validate(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    const s_sched_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    s_req_t r;
    if (s_resolve(job, st, data, true, &r) != 0) {
        s_req_clear(&r);
        return -1;
    }
    sdx_map_set_bool(reply, "valid", true);
    sdx_map_set_str(reply, "scheduler", sdx_scheduler_class_name(r.sch));
    sdx_map_set_str(reply, "asked", sdx_map_str(data, "scheduler", ""));
    sdx_map_set_bool(reply, "accepted_by_generate", r.generate_name);
    sdx_map_set_int(reply, "num_inference_steps", sdx_scheduler_num_inference_steps(r.sch));
    sdx_map_set_int(reply, "model_calls",
                    sdx_scheduler_count(r.sch) - sdx_scheduler_begin_index(r.sch));
    s_put_config(reply, &r);
    s_put_ignored(reply, &r);
    s_req_clear(&r);
    return 0;
}

static const sdx_handler_t s_handlers[] = {
    {"scheduler.list", s_h_list, 0, "every scheduler: parameters, defaults, aliases"},
    {"scheduler.info", s_h_info, 0, "one scheduler by name or alias, resolved"},
    {"scheduler.timesteps", s_h_timesteps, 0, "timesteps and sigmas as the inference loop uses"},
    {"scheduler.validate", s_h_validate, 0, "check a scheduler config and step count"},
    {NULL, NULL, 0, NULL},
};

const sdx_domain_t sdx_domain_scheduler = {
    .name = "scheduler",
    .capacity = 32, /* timesteps/sigmas are cheap CPU work */
    .handlers = s_handlers,
    .planned_issue = "one step on tensors is not served: the denoising loop steps "
                     "inside the inference worker (a round trip per step would cost more than "
                     "the step; PROTOCOL.md, scheduler)",
    .options = s_options,
    .option = s_option,
    .init = s_init,
    .fini = s_fini,
};

#endif /* SDX_WITH_ENGINE */
