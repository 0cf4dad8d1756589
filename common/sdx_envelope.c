/*  sdx_envelope.c - request envelope parsing, the action alias table
    (proto/actions.json) and reply construction. See sdx_envelope.h.

    Not for schema validation of `data` (sdx_schema) or the C# request shape
    (sdx_csharp): this file only finds out what is asked, by whom, how
    urgently, and how to answer.
*/
#include "sdx_envelope.h"

#include "sdx_log.h"

#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#ifndef SDX_SOURCE_ROOT
#define SDX_SOURCE_ROOT "."
#endif

/* ------------------------------------------------------------ action table */

typedef struct {
    char *worker_domain; /* NULL: any worker_type */
    char *action;
    char *message_type;
} s_action_row_t;

typedef struct {
    char *from, *to;
} s_pair_t;

static struct {
    s_action_row_t *rows;
    size_t nrows;
    s_pair_t *workers; /* PythonWorkerTypes name -> domain */
    size_t nworkers;
    s_pair_t *aliases; /* message type -> canonical */
    size_t naliases;
    char source[512];
    bool loaded;
} s_tab;

static pthread_mutex_t s_tab_lock = PTHREAD_MUTEX_INITIALIZER;
static bool s_tab_tried;

static void s_tab_free(void)
{
    for (size_t i = 0; i < s_tab.nrows; i++) {
        free(s_tab.rows[i].worker_domain);
        free(s_tab.rows[i].action);
        free(s_tab.rows[i].message_type);
    }
    for (size_t i = 0; i < s_tab.nworkers; i++) {
        free(s_tab.workers[i].from);
        free(s_tab.workers[i].to);
    }
    for (size_t i = 0; i < s_tab.naliases; i++) {
        free(s_tab.aliases[i].from);
        free(s_tab.aliases[i].to);
    }
    free(s_tab.rows);
    free(s_tab.workers);
    free(s_tab.aliases);
    memset(&s_tab, 0, sizeof s_tab);
}

static bool s_valid_type(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n >= SDX_TYPE_MAX || !strchr(t, '.') || t[0] == '.')
        return false;
    for (const char *p = t; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_' || *p == '.' ||
              *p == '-'))
            return false;
    return true;
}

int sdx_actions_load_text(const char *text, size_t len, char *err, size_t err_len)
{
    char derr[160];
    sdx_value_t *root = sdx_json_decode(text, len, derr, sizeof derr);
    if (!root || root->type != SDX_MAP) {
        snprintf(err, err_len, "actions table: %s", root ? "not a JSON object" : derr);
        sdx_value_destroy(&root);
        return -1;
    }
    const sdx_value_t *wt = sdx_map_get(root, "worker_types");
    const sdx_value_t *al = sdx_map_get(root, "message_type_aliases");
    const sdx_value_t *ac = sdx_map_get(root, "actions");
    if ((wt && wt->type != SDX_MAP) || (al && al->type != SDX_MAP) || !ac ||
        ac->type != SDX_ARRAY) {
        snprintf(err, err_len,
                 "actions table: needs \"actions\" (array), optional "
                 "\"worker_types\" and \"message_type_aliases\" (objects)");
        sdx_value_destroy(&root);
        return -1;
    }
    pthread_mutex_lock(&s_tab_lock);
    s_tab_free();
    size_t nw = sdx_map_len(wt), na = sdx_map_len(al), nr = sdx_array_len(ac);
    s_tab.workers = calloc(nw + 1, sizeof *s_tab.workers);
    s_tab.aliases = calloc(na + 1, sizeof *s_tab.aliases);
    s_tab.rows = calloc(nr + 1, sizeof *s_tab.rows);
    if (!s_tab.workers || !s_tab.aliases || !s_tab.rows)
        goto oom;
    for (size_t i = 0; i < nw; i++) {
        const sdx_kv_t *kv = &wt->u.map.items[i];
        if (kv->val->type != SDX_STR) {
            snprintf(err, err_len, "actions table: worker_types.%s is not a string", kv->key);
            goto fail;
        }
        s_tab.workers[i].from = strdup(kv->key);
        s_tab.workers[i].to = strdup(kv->val->u.str.ptr);
        s_tab.nworkers++;
        if (!s_tab.workers[i].from || !s_tab.workers[i].to)
            goto oom;
    }
    for (size_t i = 0; i < na; i++) {
        const sdx_kv_t *kv = &al->u.map.items[i];
        if (kv->val->type != SDX_STR || !s_valid_type(kv->val->u.str.ptr)) {
            snprintf(err, err_len, "actions table: message_type_aliases.%s is not a message type",
                     kv->key);
            goto fail;
        }
        s_tab.aliases[i].from = strdup(kv->key);
        s_tab.aliases[i].to = strdup(kv->val->u.str.ptr);
        s_tab.naliases++;
        if (!s_tab.aliases[i].from || !s_tab.aliases[i].to)
            goto oom;
    }
    for (size_t i = 0; i < nr; i++) {
        const sdx_value_t *row = sdx_array_at(ac, i);
        const char *a = sdx_map_str(row, "action", NULL);
        const char *mt = sdx_map_str(row, "message_type", NULL);
        const char *w = sdx_map_str(row, "worker_type", NULL);
        if (!a || !*a || !mt || !s_valid_type(mt)) {
            snprintf(err, err_len,
                     "actions table: row %zu needs \"action\" and a \"message_type\" "
                     "of the form domain.verb",
                     i);
            goto fail;
        }
        s_action_row_t *r = &s_tab.rows[s_tab.nrows++];
        r->action = strdup(a);
        r->message_type = strdup(mt);
        if (w) {
            /* stored as a domain so "DEVICE" and "device" rows mean the same */
            const char *d = NULL;
            for (size_t k = 0; k < s_tab.nworkers && !d; k++)
                if (strcasecmp(s_tab.workers[k].from, w) == 0 ||
                    strcmp(s_tab.workers[k].to, w) == 0)
                    d = s_tab.workers[k].to;
            r->worker_domain = strdup(d ? d : w);
            if (!r->worker_domain)
                goto oom;
        }
        if (!r->action || !r->message_type)
            goto oom;
    }
    s_tab.loaded = true;
    pthread_mutex_unlock(&s_tab_lock);
    sdx_value_destroy(&root);
    return 0;
oom:
    snprintf(err, err_len, "actions table: out of memory");
fail:
    s_tab_free();
    pthread_mutex_unlock(&s_tab_lock);
    sdx_value_destroy(&root);
    return -1;
}

int sdx_actions_load(const char *path, char *err, size_t err_len)
{
    size_t len;
    char *buf = sdx_codec_read_file(path, &len, err, err_len);
    if (!buf)
        return -1;
    char e2[256];
    int rc = sdx_actions_load_text(buf, len, e2, sizeof e2);
    free(buf);
    if (rc != 0) {
        snprintf(err, err_len, "%s: %s", path, e2);
        return -1;
    }
    pthread_mutex_lock(&s_tab_lock);
    snprintf(s_tab.source, sizeof s_tab.source, "%s", path);
    pthread_mutex_unlock(&s_tab_lock);
    return 0;
}

int sdx_actions_load_default(char *err, size_t err_len)
{
    const char *env = getenv("SDXL_ACTIONS_FILE");
    const char *candidates[] = {
        env && *env ? env : NULL,
        SDX_SOURCE_ROOT "/proto/actions.json",
        "/usr/local/share/sdxl-fleet/actions.json",
        "/usr/share/sdxl-fleet/actions.json",
    };
    char first[512] = "";
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        if (!candidates[i])
            continue;
        if (access(candidates[i], R_OK) != 0 && i > 0)
            continue;
        char e[512];
        if (sdx_actions_load(candidates[i], e, sizeof e) == 0)
            return 0;
        if (!first[0])
            snprintf(first, sizeof first, "%s", e);
        if (i == 0)
            break; /* an explicit file that fails is an error, not a fallback */
    }
    snprintf(err, err_len, "%s",
             first[0] ? first : "no actions.json found (set SDXL_ACTIONS_FILE)");
    return -1;
}

static void s_tab_ensure(void)
{
    if (s_tab.loaded || s_tab_tried)
        return;
    s_tab_tried = true;
    char err[512];
    if (sdx_actions_load_default(err, sizeof err) != 0)
        log_warn("action aliases unavailable (only message_type works): %s", err);
}

size_t sdx_actions_count(void)
{
    return s_tab.nrows;
}

const char *sdx_actions_source(void)
{
    return s_tab.source;
}

const char *sdx_actions_worker_domain(const char *worker_type)
{
    if (!worker_type)
        return NULL;
    s_tab_ensure();
    /* "PythonWorkerTypes.DEVICE" -> "DEVICE" */
    const char *dot = strrchr(worker_type, '.');
    if (dot)
        worker_type = dot + 1;
    for (size_t i = 0; i < s_tab.nworkers; i++)
        if (strcasecmp(s_tab.workers[i].from, worker_type) == 0 ||
            strcmp(s_tab.workers[i].to, worker_type) == 0)
            return s_tab.workers[i].to;
    return NULL;
}

const char *sdx_actions_canonical(const char *message_type)
{
    if (!message_type)
        return NULL;
    s_tab_ensure();
    for (size_t i = 0; i < s_tab.naliases; i++)
        if (strcmp(s_tab.aliases[i].from, message_type) == 0)
            return s_tab.aliases[i].to;
    return message_type;
}

/* "GenerateSDXL" -> "generate_sdxl"; "get-device-status" -> "get_device_status" */
static void s_snake(const char *in, char *out, size_t out_len)
{
    size_t o = 0;
    for (size_t i = 0; in[i] && o + 2 < out_len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '-' || c == ' ')
            c = '_';
        if (isupper(c)) {
            bool prev_low =
                i > 0 && (islower((unsigned char)in[i - 1]) || isdigit((unsigned char)in[i - 1]));
            bool next_low = in[i + 1] && islower((unsigned char)in[i + 1]) && i > 0 &&
                            isupper((unsigned char)in[i - 1]);
            if ((prev_low || next_low) && o > 0 && out[o - 1] != '_')
                out[o++] = '_';
            c = (unsigned char)tolower(c);
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
}

/* Find a row: exact action text first, then loosely (case, '_' ignored). */
static const s_action_row_t *s_find_row(const char *domain, bool want_domain_match,
                                        const char *action)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < s_tab.nrows; i++) {
            const s_action_row_t *r = &s_tab.rows[i];
            bool eq = pass == 0 ? strcmp(r->action, action) == 0
                                : sdx_key_equal_loose(r->action, action);
            if (!eq)
                continue;
            if (domain && r->worker_domain && strcmp(r->worker_domain, domain) != 0)
                continue;
            if (!domain && r->worker_domain)
                continue;
            if (want_domain_match) {
                size_t dl = strlen(domain);
                if (strncmp(r->message_type, domain, dl) != 0 || r->message_type[dl] != '.')
                    continue;
            }
            return r;
        }
    return NULL;
}

int sdx_actions_resolve(const char *worker_type, const char *action, char *out, size_t out_len)
{
    if (!action || !*action)
        return -1;
    s_tab_ensure();
    const char *domain = NULL;
    if (worker_type && *worker_type) {
        domain = sdx_actions_worker_domain(worker_type);
        if (!domain)
            return -1;
    }
    /* a dotted action is already a message type */
    if (strchr(action, '.')) {
        if (!s_valid_type(action))
            return -1;
        snprintf(out, out_len, "%s", sdx_actions_canonical(action));
        return 0;
    }
    const s_action_row_t *r = NULL;
    if (domain) {
        /* 1. a row for this worker_type, 2. a general row in the same domain,
           3. any general row (INFERENCE + batch_process -> processing.*) */
        for (size_t i = 0; i < s_tab.nrows && !r; i++)
            if (s_tab.rows[i].worker_domain && strcmp(s_tab.rows[i].worker_domain, domain) == 0 &&
                sdx_key_equal_loose(s_tab.rows[i].action, action))
                r = &s_tab.rows[i];
        if (!r)
            r = s_find_row(domain, true, action);
        if (!r)
            r = s_find_row(NULL, false, action);
        if (!r) {
            /* 4. generic rule: domain + "." + the action without the domain
               word: DEVICE + get_device_info -> device.get_info */
            char snake[SDX_TYPE_MAX], verb[SDX_TYPE_MAX] = "";
            s_snake(action, snake, sizeof snake);
            size_t vo = 0;
            for (char *tok = strtok(snake, "_"); tok; tok = strtok(NULL, "_")) {
                if (strcmp(tok, domain) == 0)
                    continue;
                int n = snprintf(verb + vo, sizeof verb - vo, "%s%s", vo ? "_" : "", tok);
                if (n < 0 || (size_t)n >= sizeof verb - vo)
                    return -1;
                vo += (size_t)n;
            }
            if (!vo)
                return -1;
            char mt[SDX_TYPE_MAX];
            if ((size_t)snprintf(mt, sizeof mt, "%s.%s", domain, verb) >= sizeof mt ||
                !s_valid_type(mt))
                return -1;
            snprintf(out, out_len, "%s", sdx_actions_canonical(mt));
            return 0;
        }
    } else {
        r = s_find_row(NULL, false, action);
    }
    if (!r)
        return -1;
    snprintf(out, out_len, "%s", sdx_actions_canonical(r->message_type));
    return 0;
}

/* ------------------------------------------------------------- envelope */

/* 12 hex digits, random per process, so ids differ across broker restarts. */
static char s_id_prefix[16];
static pthread_once_t s_id_once = PTHREAD_ONCE_INIT;
static atomic_uint_fast64_t s_id_counter;

static void s_init_prefix(void)
{
    uint8_t rnd[6];
    if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 24) ^ (uint64_t)(uintptr_t)&rnd;
        memcpy(rnd, &x, sizeof rnd);
    }
    for (int i = 0; i < 6; i++)
        snprintf(s_id_prefix + 2 * i, 3, "%02x", rnd[i]);
}

void sdx_envelope_new_id(char *out, size_t out_len)
{
    pthread_once(&s_id_once, s_init_prefix);
    uint64_t n = (uint64_t)atomic_fetch_add(&s_id_counter, 1) + 1;
    snprintf(out, out_len, "r-%s-%" PRIu64, s_id_prefix, n);
}

int sdx_priority_parse(const char *text)
{
    static const char *names[SDX_PRIO_COUNT] = {"low", "normal", "high", "critical"};
    if (!text)
        return -1;
    for (int i = 0; i < SDX_PRIO_COUNT; i++)
        if (strcasecmp(text, names[i]) == 0)
            return i;
    if (text[0] >= '0' && text[0] <= '3' && text[1] == '\0')
        return text[0] - '0';
    return -1;
}

const char *sdx_priority_name(sdx_priority_t p)
{
    static const char *names[SDX_PRIO_COUNT] = {"low", "normal", "high", "critical"};
    return (unsigned)p < SDX_PRIO_COUNT ? names[p] : "normal";
}

/* Keys that belong to the envelope, not to data (matched loosely). */
static const char *const s_env_keys[] = {
    "message_type", "type",       "action",    "worker_type",     "request_id", "data",
    "priority",     "timeout_ms", "timeout_s", "timeout_seconds", "session_id", "stream",
    "gpu",
};

static bool s_is_env_key(const char *k)
{
    for (size_t i = 0; i < sizeof s_env_keys / sizeof s_env_keys[0]; i++)
        if (sdx_key_equal_loose(k, s_env_keys[i]))
            return true;
    return false;
}

/* A short string field; false if present with the wrong type. */
static bool s_get_str(const sdx_value_t *root, const char *key, const sdx_value_t **out)
{
    const sdx_value_t *v = sdx_map_get_loose(root, key);
    *out = NULL;
    if (!v || v->type == SDX_NIL)
        return true;
    if (v->type != SDX_STR)
        return false;
    *out = v;
    return true;
}

static int s_parse_id(sdx_envelope_t *env, sdx_fault_t *fault)
{
    const sdx_value_t *v = sdx_map_get_loose(env->root, "request_id");
    if (!v || v->type == SDX_NIL || (v->type == SDX_STR && v->u.str.len == 0)) {
        sdx_envelope_new_id(env->request_id, sizeof env->request_id);
        env->request_id_generated = true;
        return 0;
    }
    if (v->type == SDX_INT) {
        /* the text form is only for the backend key and logs; the reply
           echoes the integer */
        snprintf(env->request_id, sizeof env->request_id, "%" PRId64, v->u.i);
        env->request_id_is_int = true;
        env->request_id_int = v->u.i;
        return 0;
    }
    if (v->type == SDX_STR && v->u.str.len <= SDX_MDP_MAX_ID &&
        strlen(v->u.str.ptr) == v->u.str.len) {
        memcpy(env->request_id, v->u.str.ptr, v->u.str.len + 1);
        return 0;
    }
    sdx_envelope_new_id(env->request_id, sizeof env->request_id);
    env->request_id_generated = true;
    sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, "request_id",
                  "request_id must be a string of 1..%d bytes (or an integer)", SDX_MDP_MAX_ID);
    return -1;
}

/* The seeds' workflow body: workflow_id + steps at the top level, or in
   data (where the C# dialect moves the fields beside the envelope keys). */
static bool s_is_adhoc_workflow(const sdx_value_t *root)
{
    const sdx_value_t *data = sdx_map_get_loose(root, "data");
    for (int i = 0; i < 2; i++) {
        const sdx_value_t *m = i ? data : root;
        const sdx_value_t *steps = sdx_map_get_loose(m, "steps");
        const sdx_value_t *wid = sdx_map_get_loose(m, "workflow_id");
        if (steps && steps->type == SDX_ARRAY && wid && wid->type == SDX_STR)
            return true;
    }
    return false;
}

static int s_parse_type(sdx_envelope_t *env, sdx_fault_t *fault)
{
    static const char *const keys[] = {"message_type", "type", "action", "worker_type"};
    const sdx_value_t *got[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4; i++)
        if (!s_get_str(env->root, keys[i], &got[i])) {
            sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, keys[i], "%s must be a string", keys[i]);
            return -1;
        }
    const sdx_value_t *mt = got[0], *ty = got[1], *ac = got[2], *wt = got[3];
    const sdx_value_t *named = mt ? mt : ty ? ty : ac;
    const char *field = mt ? "message_type" : ty ? "type" : "action";
    env->naming = mt ? SDX_NAMED_MESSAGE_TYPE : ty ? SDX_NAMED_TYPE : SDX_NAMED_ACTION;
    if (!named && s_is_adhoc_workflow(env->root)) {
        /* the seeds' workflow-level request: {workflow_id, steps: [{type,
           operation, parameters}]} with no message type is an ad-hoc
           processing.workflow_execute (its keys become the data) */
        snprintf(env->as_sent, sizeof env->as_sent, "workflow");
        snprintf(env->message_type, sizeof env->message_type, "processing.workflow_execute");
        snprintf(env->domain, sizeof env->domain, "processing");
        env->naming = SDX_NAMED_MESSAGE_TYPE;
        return 0;
    }
    if (!named || named->u.str.len == 0) {
        sdx_fault_set(
            fault, SDX_ERR_INVALID_REQUEST, "message_type",
            "missing message_type (or its aliases type / action, with optional worker_type)");
        return -1;
    }
    snprintf(env->as_sent, sizeof env->as_sent, "%s", named->u.str.ptr);
    if (named->u.str.len >= SDX_TYPE_MAX) {
        sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, field, "%s is longer than %d bytes", field,
                      SDX_TYPE_MAX - 1);
        return -1;
    }
    const char *wtype = (!mt && !ty && wt) ? wt->u.str.ptr : NULL;
    if (wtype)
        env->naming = SDX_NAMED_WORKER_ACTION;
    int rc;
    if (strchr(named->u.str.ptr, '.') && !wtype) {
        /* "PythonWorkerTypes"-free dotted name: canonical after aliases */
        if (!s_valid_type(named->u.str.ptr)) {
            sdx_fault_set(fault, SDX_ERR_UNKNOWN_MESSAGE_TYPE, field,
                          "\"%s\" is not a message type (expected domain.verb in lower case)",
                          named->u.str.ptr);
            return -1;
        }
        snprintf(env->message_type, sizeof env->message_type, "%s",
                 sdx_actions_canonical(named->u.str.ptr));
        rc = 0;
    } else {
        rc = sdx_actions_resolve(wtype, named->u.str.ptr, env->message_type,
                                 sizeof env->message_type);
    }
    if (rc != 0) {
        if (wtype && !sdx_actions_worker_domain(wtype))
            sdx_fault_set(fault, SDX_ERR_UNKNOWN_MESSAGE_TYPE, "worker_type",
                          "unknown worker_type \"%s\"", wtype);
        else
            sdx_fault_set(fault, SDX_ERR_UNKNOWN_MESSAGE_TYPE, field,
                          "unknown %s \"%s\"%s%s (see the catalogue in proto/PROTOCOL.md)", field,
                          named->u.str.ptr, wtype ? " for worker_type " : "", wtype ? wtype : "");
        return -1;
    }
    const char *dot = strchr(env->message_type, '.');
    size_t dl = (size_t)(dot - env->message_type);
    if (dl >= sizeof env->domain) {
        sdx_fault_set(fault, SDX_ERR_UNKNOWN_MESSAGE_TYPE, field, "domain of \"%s\" is too long",
                      env->message_type);
        return -1;
    }
    memcpy(env->domain, env->message_type, dl);
    env->domain[dl] = '\0';
    return 0;
}

static int s_parse_data(sdx_envelope_t *env, sdx_fault_t *fault)
{
    sdx_value_t *data = sdx_map_get_loose(env->root, "data");
    if (data && data->type == SDX_NIL) {
        data = NULL;
    } else if (data && data->type != SDX_MAP) {
        sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, "data", "data must be a map, not %s",
                      sdx_vtype_name(data->type));
        return -1;
    }
    if (!data) {
        /* flat request: the non-envelope keys move (not copied) into data */
        sdx_value_t *d = sdx_value_map_new();
        if (!d)
            goto oom;
        sdx_value_t *root = env->root;
        size_t n = root->u.map.len, keep = 0;
        d->u.map.items = malloc((n ? n : 1) * sizeof *d->u.map.items);
        if (!d->u.map.items) {
            sdx_value_destroy(&d);
            goto oom;
        }
        d->u.map.cap = n ? n : 1;
        for (size_t i = 0; i < n; i++) {
            sdx_kv_t kv = root->u.map.items[i];
            if (s_is_env_key(kv.key))
                root->u.map.items[keep++] = kv;
            else
                d->u.map.items[d->u.map.len++] = kv;
        }
        root->u.map.len = keep;
        sdx_map_del(root, "data");
        if (sdx_map_set(root, "data", d) != 0)
            goto oom;
        data = d;
    }
    env->data = data;
    return 0;
oom:
    sdx_fault_set(fault, SDX_ERR_INTERNAL, NULL, "out of memory");
    return -1;
}

static int s_parse_options(sdx_envelope_t *env, sdx_fault_t *fault)
{
    const sdx_value_t *root = env->root;
    const sdx_value_t *v = sdx_map_get_loose(root, "priority");
    env->priority = SDX_PRIO_NORMAL;
    if (v && v->type != SDX_NIL) {
        int p = -1;
        if (v->type == SDX_STR)
            p = sdx_priority_parse(v->u.str.ptr);
        else if (v->type == SDX_INT && v->u.i >= 0 && v->u.i <= 3)
            p = (int)v->u.i;
        if (p < 0) {
            sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, "priority",
                          "priority must be one of low, normal, high, critical");
            return -1;
        }
        env->priority = (sdx_priority_t)p;
    }
    double d;
    v = sdx_map_get_loose(root, "timeout_ms");
    const char *tfield = "timeout_ms";
    double scale = 1.0;
    if (!v) {
        v = sdx_map_get_loose(root, "timeout_s");
        if (!v)
            v = sdx_map_get_loose(root, "timeout_seconds");
        tfield = "timeout_s";
        scale = 1000.0;
    }
    if (v && v->type != SDX_NIL) {
        if (!sdx_value_as_double(v, &d) || !(d >= 0) || d * scale > 7.0 * 24 * 3600 * 1000) {
            sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, tfield,
                          "%s must be a number >= 0 (and at most 7 days)", tfield);
            return -1;
        }
        env->timeout_ms = (int64_t)(d * scale + 0.5);
    }
    const sdx_value_t *s;
    if (!s_get_str(root, "session_id", &s) ||
        (s && (s->u.str.len > SDX_MDP_MAX_ID || strlen(s->u.str.ptr) != s->u.str.len))) {
        sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, "session_id",
                      "session_id must be a string of at most %d bytes", SDX_MDP_MAX_ID);
        return -1;
    }
    if (s)
        memcpy(env->session_id, s->u.str.ptr, s->u.str.len + 1);
    v = sdx_map_get_loose(root, "stream");
    if (v && v->type != SDX_NIL) {
        if (v->type == SDX_BOOL)
            env->stream = v->u.b;
        else if (v->type == SDX_INT && (v->u.i == 0 || v->u.i == 1))
            env->stream = v->u.i == 1;
        else {
            sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, "stream", "stream must be true or false");
            return -1;
        }
    }
    /* routing hints: gpu and model */
    env->gpu = -1;
    const char *gfield = "data.gpu";
    v = sdx_map_get(env->data, "gpu");
    if (!v || v->type == SDX_NIL) {
        v = sdx_map_get_loose(root, "gpu"); /* an envelope key: loose like the others */
        gfield = "gpu";
    }
    if (v && v->type != SDX_NIL) {
        if (v->type != SDX_INT || v->u.i < -1 || v->u.i > 1024) {
            sdx_fault_set(fault, SDX_ERR_INVALID_REQUEST, gfield,
                          "gpu must be a device index (integer >= 0, -1 = any)");
            return -1;
        }
        env->gpu = (int)v->u.i;
    }
    static const char *const model_keys[] = {"model_name", "model"};
    for (size_t i = 0; i < 2 && !env->model; i++) {
        v = sdx_map_get(env->data, model_keys[i]);
        if (v && v->type == SDX_STR && v->u.str.len)
            env->model = v->u.str.ptr;
    }
    if (!env->model) {
        v = sdx_map_get(root, "model");
        if (v && v->type == SDX_STR && v->u.str.len)
            env->model = v->u.str.ptr;
    }
    return 0;
}

int sdx_envelope_parse(sdx_envelope_t *env, sdx_value_t **root, sdx_encoding_t enc,
                       sdx_fault_t *fault)
{
    memset(env, 0, sizeof *env);
    env->gpu = -1;
    env->priority = SDX_PRIO_NORMAL;
    env->encoding = enc;
    env->root = root ? *root : NULL;
    if (root)
        *root = NULL;
    sdx_fault_clear(fault);
    if (!env->root || env->root->type != SDX_MAP) {
        sdx_envelope_new_id(env->request_id, sizeof env->request_id);
        env->request_id_generated = true;
        sdx_fault_set(fault, SDX_ERR_UNSUPPORTED_ENCODING, NULL,
                      "a request is one frame holding a msgpack map or a JSON object, not %s",
                      env->root ? sdx_vtype_name(env->root->type) : "nothing");
        return -1;
    }
    s_tab_ensure();
    if (s_parse_id(env, fault) != 0)
        return -1;
    if (s_parse_type(env, fault) != 0)
        return -1;
    if (s_parse_data(env, fault) != 0)
        return -1;
    if (s_parse_options(env, fault) != 0)
        return -1;
    return 0;
}

void sdx_envelope_clear(sdx_envelope_t *env)
{
    if (!env)
        return;
    sdx_value_destroy(&env->root);
    memset(env, 0, sizeof *env);
    env->gpu = -1;
}

/* ---------------------------------------------------------------- replies */

sdx_value_t sdx_envelope_id_echo(const sdx_envelope_t *env)
{
    assert(env);
    sdx_value_t v = {.type = env->request_id_is_int ? SDX_INT : SDX_STR};
    if (env->request_id_is_int) {
        v.u.i = env->request_id_int;
    } else {
        v.u.str.ptr = (char *)env->request_id;
        v.u.str.len = strlen(env->request_id);
    }
    return v;
}

sdx_value_t *sdx_envelope_id_value(const sdx_envelope_t *env)
{
    assert(env);
    return env->request_id_is_int ? sdx_value_int_new(env->request_id_int)
                                  : sdx_value_str_new(env->request_id);
}

int sdx_reply_echo_id(sdx_value_t *reply, const sdx_envelope_t *env)
{
    assert(reply && env);
    sdx_value_t *id = sdx_envelope_id_value(env);
    return id ? sdx_map_set(reply, "request_id", id) : -1;
}

static sdx_value_t *s_reply_head(const char *request_id, const char *message_type, bool success)
{
    sdx_value_t *r = sdx_value_map_new();
    if (!r)
        return NULL;
    int rc = sdx_map_set(r, "request_id",
                         request_id ? sdx_value_str_new(request_id) : sdx_value_nil_new());
    rc |= sdx_map_set(r, "message_type",
                      message_type ? sdx_value_str_new(message_type) : sdx_value_nil_new());
    rc |= sdx_map_set_bool(r, "success", success);
    if (rc != 0)
        sdx_value_destroy(&r);
    return r;
}

/* Attach body under key and timing; consumes both in every case. */
static sdx_value_t *s_reply_finish(sdx_value_t *r, const char *key, sdx_value_t *body,
                                   sdx_value_t *timing)
{
    if (!r || !body) {
        sdx_value_destroy(&r);
        sdx_value_destroy(&body);
        sdx_value_destroy(&timing);
        return NULL;
    }
    if (sdx_map_set(r, key, body) != 0) {
        sdx_value_destroy(&timing);
        sdx_value_destroy(&r);
        return NULL;
    }
    if (timing && sdx_map_set(r, "timing", timing) != 0)
        sdx_value_destroy(&r);
    return r;
}

sdx_value_t *sdx_reply_ok(const char *request_id, const char *message_type, sdx_value_t *data,
                          sdx_value_t *timing)
{
    return s_reply_finish(s_reply_head(request_id, message_type, true), "data",
                          data ? data : sdx_value_map_new(), timing);
}

sdx_value_t *sdx_reply_error(const char *request_id, const char *message_type, sdx_value_t *error,
                             sdx_value_t *timing)
{
    return s_reply_finish(s_reply_head(request_id, message_type, false), "error",
                          error ? error : sdx_error_value(SDX_ERR_INTERNAL, NULL, NULL), timing);
}

sdx_value_t *sdx_reply_fault(const char *request_id, const char *message_type,
                             const sdx_fault_t *fault)
{
    return sdx_reply_error(request_id, message_type, sdx_fault_value(fault), NULL);
}
