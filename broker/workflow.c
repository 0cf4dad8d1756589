/*  workflow.c - workflow definitions (see workflow.h): YAML files read with
    libyaml's event API into an sdx_value_t tree with a side table of line
    numbers, inline definitions from a request's tree, one validator for
    both (catalogue domains and operations, aliases, keys, references,
    cycles, models), input resolution for a step's request, and the reply
    tree of a definition.
    Not for: running workflows, sessions, dispatch (orch.c), the model
    catalogue (a callback), the message catalogue itself (sdx_catalog.c).
*/
#include "workflow.h"

#include "sdx_envelope.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#define WF_MAX_DEPTH 64       /* YAML nesting refused beyond this */
#define WF_MAX_FILE (4 << 20) /* a workflow file larger than this is refused */

/* ---------------------------------------------------------------- context */

/* Where a node of the raw tree was written: its line and its key's line. */
typedef struct {
    const sdx_value_t *v;
    int line, key_line;
} s_line_t;

typedef struct {
    const char *file; /* NULL: inline (errors name field paths) */
    s_line_t *lines;
    size_t nlines, cap;
    bool loose; /* keys match with sdx_key_equal_loose */
    const sdx_catalog_t *cat;
    wf_model_check_fn check;
    void *check_ud;
    int err_line;      /* line of the first error (files), 0 if none */
    char reason[1024]; /* the first error without its location */
    bool failed;
} s_ctx_t;

static int s_line_add(s_ctx_t *c, const sdx_value_t *v, int line, int key_line)
{
    if (c->nlines == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        s_line_t *p = realloc(c->lines, cap * sizeof *p);
        if (!p)
            return -1;
        c->lines = p;
        c->cap = cap;
    }
    c->lines[c->nlines++] = (s_line_t){v, line, key_line};
    return 0;
}

static int s_line_of(const s_ctx_t *c, const sdx_value_t *v, bool key)
{
    for (size_t i = 0; v && i < c->nlines; i++)
        if (c->lines[i].v == v)
            return key && c->lines[i].key_line ? c->lines[i].key_line : c->lines[i].line;
    return 0;
}

/* Record the first error: at (its line in files; with key, its key's
   line), path (the field, for inline definitions). Always returns -1. */
static int s_fail(s_ctx_t *c, const sdx_value_t *at, bool key, const char *path, const char *fmt,
                  ...)
{
    if (c->failed)
        return -1;
    c->failed = true;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->file) {
        c->err_line = s_line_of(c, at, key);
        if (c->err_line <= 0)
            c->err_line = 1;
        snprintf(c->reason, sizeof c->reason, "%s", msg);
    } else if (path && *path) {
        snprintf(c->reason, sizeof c->reason, "%s: %s", path, msg);
    } else {
        snprintf(c->reason, sizeof c->reason, "%s", msg);
    }
    return -1;
}

static void s_err_out(const s_ctx_t *c, char *err, size_t err_len)
{
    if (!err || !err_len)
        return;
    if (c->file)
        snprintf(err, err_len, "%s:%d: %s", c->file, c->err_line, c->reason);
    else
        snprintf(err, err_len, "%s", c->reason);
}

/* ---------------------------------------------------------------- YAML */

static bool s_all(const char *s, size_t n, const char *set)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr(set, s[i]))
            return false;
    return true;
}

/* A plain scalar as YAML 1.2's core schema reads it. */
static sdx_value_t *s_plain(const char *s, size_t n)
{
    if (n == 0 || (n == 1 && s[0] == '~') || !strcmp(s, "null") || !strcmp(s, "Null") ||
        !strcmp(s, "NULL"))
        return sdx_value_nil_new();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return sdx_value_bool_new(true);
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return sdx_value_bool_new(false);
    const char *d = s + (s[0] == '-' || s[0] == '+');
    size_t dn = n - (size_t)(d - s);
    if (s_all(d, dn, "0123456789") ||
        (dn > 2 && d == s && d[0] == '0' && d[1] == 'x' &&
         s_all(d + 2, dn - 2, "0123456789abcdefABCDEF")) ||
        (dn > 2 && d == s && d[0] == '0' && d[1] == 'o' && s_all(d + 2, dn - 2, "01234567"))) {
        int base = d[0] == '0' && d[1] == 'x' ? 16 : d[0] == '0' && d[1] == 'o' ? 8 : 10;
        errno = 0;
        long long v = strtoll(base == 10 ? s : s + 2, NULL, base);
        if (errno == 0)
            return sdx_value_int_new(v);
        return sdx_value_float_new(strtod(s, NULL));
    }
    if (!strcmp(d, ".inf") || !strcmp(d, ".Inf") || !strcmp(d, ".INF"))
        return sdx_value_float_new(s[0] == '-' ? -HUGE_VAL : HUGE_VAL);
    if (!strcmp(s, ".nan") || !strcmp(s, ".NaN") || !strcmp(s, ".NAN"))
        return sdx_value_float_new(strtod("nan", NULL));
    /* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
    size_t i = 0, digits = 0;
    while (i < dn && d[i] >= '0' && d[i] <= '9')
        i++, digits++;
    if (i < dn && d[i] == '.') {
        i++;
        while (i < dn && d[i] >= '0' && d[i] <= '9')
            i++, digits++;
    }
    if (digits > 0 && i < dn && (d[i] == 'e' || d[i] == 'E')) {
        size_t j = i + 1;
        if (j < dn && (d[j] == '-' || d[j] == '+'))
            j++;
        size_t e0 = j;
        while (j < dn && d[j] >= '0' && d[j] <= '9')
            j++;
        if (j > e0)
            i = j;
    }
    if (digits > 0 && i == dn)
        return sdx_value_float_new(strtod(s, NULL));
    return sdx_value_strn_new(s, n);
}

typedef struct {
    yaml_parser_t parser;
    s_ctx_t *c;
} s_yaml_t;

/* The next event, or -1 with the parser's error recorded. */
static int s_next(s_yaml_t *y, yaml_event_t *ev)
{
    if (yaml_parser_parse(&y->parser, ev))
        return 0;
    s_ctx_t *c = y->c;
    if (!c->failed) {
        c->failed = true;
        c->err_line = (int)y->parser.problem_mark.line + 1;
        snprintf(c->reason, sizeof c->reason, "YAML: %s%s%s",
                 y->parser.problem ? y->parser.problem : "syntax error",
                 y->parser.context ? " " : "", y->parser.context ? y->parser.context : "");
    }
    return -1;
}

static int s_yfail(s_yaml_t *y, int line, const char *fmt, const char *arg)
{
    s_ctx_t *c = y->c;
    if (!c->failed) {
        c->failed = true;
        c->err_line = line;
        snprintf(c->reason, sizeof c->reason, fmt, arg);
    }
    return -1;
}

/* Build the node that starts with *ev (consumed). NULL after an error. */
static sdx_value_t *s_ynode(s_yaml_t *y, yaml_event_t *ev, int key_line, int depth)
{
    int line = (int)ev->start_mark.line + 1;
    const yaml_char_t *anchor =
        ev->type == YAML_SCALAR_EVENT           ? ev->data.scalar.anchor
        : ev->type == YAML_SEQUENCE_START_EVENT ? ev->data.sequence_start.anchor
        : ev->type == YAML_MAPPING_START_EVENT  ? ev->data.mapping_start.anchor
        : ev->type == YAML_ALIAS_EVENT          ? ev->data.alias.anchor
                                                : NULL;
    if (anchor || ev->type == YAML_ALIAS_EVENT) {
        s_yfail(y, line,
                ev->type == YAML_ALIAS_EVENT
                    ? "alias *%s: anchors and aliases are not supported in workflow files"
                    : "anchor &%s: anchors and aliases are not supported in workflow files",
                anchor ? (const char *)anchor : "");
        yaml_event_delete(ev);
        return NULL;
    }
    if (depth > WF_MAX_DEPTH) {
        s_yfail(y, line, "nested deeper than %s levels", "64");
        yaml_event_delete(ev);
        return NULL;
    }
    sdx_value_t *v = NULL;
    if (ev->type == YAML_SCALAR_EVENT) {
        const char *s = (const char *)ev->data.scalar.value;
        size_t n = ev->data.scalar.length;
        const char *tag = (const char *)ev->data.scalar.tag;
        bool str =
            ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || (tag && !strcmp(tag, YAML_STR_TAG));
        v = str ? sdx_value_strn_new(s, n) : s_plain(s, n);
        yaml_event_delete(ev);
        if (!v) {
            s_yfail(y, line, "out of memory%s", "");
            return NULL;
        }
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        yaml_event_delete(ev);
        v = sdx_value_array_new();
        if (!v) {
            s_yfail(y, line, "out of memory%s", "");
            return NULL;
        }
        for (;;) {
            yaml_event_t cev;
            if (s_next(y, &cev) != 0)
                goto fail;
            if (cev.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&cev);
                break;
            }
            sdx_value_t *item = s_ynode(y, &cev, 0, depth + 1);
            if (!item)
                goto fail;
            if (sdx_array_push(v, item) != 0) {
                s_yfail(y, line, "out of memory%s", "");
                goto fail;
            }
        }
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        yaml_event_delete(ev);
        v = sdx_value_map_new();
        if (!v) {
            s_yfail(y, line, "out of memory%s", "");
            return NULL;
        }
        for (;;) {
            yaml_event_t kev;
            if (s_next(y, &kev) != 0)
                goto fail;
            if (kev.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&kev);
                break;
            }
            int kline = (int)kev.start_mark.line + 1;
            if (kev.type != YAML_SCALAR_EVENT) {
                yaml_event_delete(&kev);
                s_yfail(y, kline, "a map key must be text%s", "");
                goto fail;
            }
            char *key = strndup((const char *)kev.data.scalar.value, kev.data.scalar.length);
            yaml_event_delete(&kev);
            if (!key) {
                s_yfail(y, kline, "out of memory%s", "");
                goto fail;
            }
            if (sdx_map_get(v, key)) {
                s_yfail(y, kline, "duplicate key \"%s\"", key);
                free(key);
                goto fail;
            }
            yaml_event_t vev;
            sdx_value_t *val = NULL;
            if (s_next(y, &vev) == 0)
                val = s_ynode(y, &vev, kline, depth + 1);
            if (!val || sdx_map_set(v, key, val) != 0) {
                if (val)
                    s_yfail(y, kline, "out of memory%s", "");
                free(key);
                goto fail;
            }
            free(key);
        }
    } else {
        s_yfail(y, line, "unexpected YAML event%s", "");
        yaml_event_delete(ev);
        return NULL;
    }
    if (s_line_add(y->c, v, line, key_line) != 0) {
        s_yfail(y, line, "out of memory%s", "");
        goto fail;
    }
    return v;
fail:
    sdx_value_destroy(&v);
    return NULL;
}

/* One YAML document as a tree, lines in c. NULL after an error. */
static sdx_value_t *s_yaml_parse(s_ctx_t *c, const char *text, size_t len)
{
    s_yaml_t y = {.c = c};
    if (!yaml_parser_initialize(&y.parser)) {
        s_yfail(&y, 1, "out of memory%s", "");
        return NULL;
    }
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    sdx_value_t *root = NULL;
    yaml_event_t ev;
    if (s_next(&y, &ev) != 0)
        goto done;
    yaml_event_delete(&ev); /* STREAM_START */
    if (s_next(&y, &ev) != 0)
        goto done;
    if (ev.type != YAML_DOCUMENT_START_EVENT) {
        yaml_event_delete(&ev);
        s_yfail(&y, 1, "empty file: no workflow definition (id, steps)%s", "");
        goto done;
    }
    yaml_event_delete(&ev);
    if (s_next(&y, &ev) != 0)
        goto done;
    root = s_ynode(&y, &ev, 0, 0);
    if (!root)
        goto done;
    if (s_next(&y, &ev) != 0) /* DOCUMENT_END */
        goto bad;
    yaml_event_delete(&ev);
    if (s_next(&y, &ev) != 0)
        goto bad;
    if (ev.type != YAML_STREAM_END_EVENT) {
        int line = (int)ev.start_mark.line + 1;
        yaml_event_delete(&ev);
        s_yfail(&y, line, "one YAML document per file: a second one starts here%s", "");
        goto bad;
    }
    yaml_event_delete(&ev);
    goto done;
bad:
    sdx_value_destroy(&root);
done:
    yaml_parser_delete(&y.parser);
    return root;
}

/* ---------------------------------------------------------------- validation */

static const char *const s_top_keys[] = {"id",
                                         "name",
                                         "description",
                                         "steps",
                                         "resource_requirements",
                                         "estimated_duration_ms",
                                         "estimated_duration",
                                         "version",
                                         "workflow_id", /* inline only */
                                         NULL};
enum { K_ID, K_NAME, K_DESC, K_STEPS, K_RES, K_DUR_MS, K_DUR, K_VERSION, K_WFID, K_NTOP };

static const char *const s_step_keys[] = {
    "id",     "type",  "operation",  "parameters", "required_models",
    "inputs", "retry", "timeout_ms", NULL};
enum { S_ID, S_TYPE, S_OP, S_PARAMS, S_MODELS, S_INPUTS, S_RETRY, S_TIMEOUT, S_NKEYS };

static void s_join(char *out, size_t len, const char *const *names, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && o < len; i++) {
        int w = snprintf(out + o, len - o, "%s%s", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

/* Sort a map's keys into out[] by the allowed names; unknown or repeated
   keys fail. n_allowed limits the names (inline adds workflow_id). */
static int s_fields(s_ctx_t *c, const sdx_value_t *map, const char *path,
                    const char *const *allowed, size_t n_allowed, const sdx_value_t **out)
{
    for (size_t k = 0; k < n_allowed; k++)
        out[k] = NULL;
    for (size_t i = 0; i < map->u.map.len; i++) {
        const sdx_kv_t *kv = &map->u.map.items[i];
        size_t k = 0;
        while (k < n_allowed && strcmp(allowed[k], kv->key) != 0)
            k++;
        if (k == n_allowed && c->loose) {
            k = 0;
            while (k < n_allowed && !sdx_key_equal_loose(allowed[k], kv->key))
                k++;
        }
        char p[160];
        snprintf(p, sizeof p, "%s%s%s", path, *path ? "." : "", kv->key);
        if (k == n_allowed) {
            char list[512];
            s_join(list, sizeof list, allowed, n_allowed);
            return s_fail(c, kv->val, true, p, "unknown key \"%s\" (allowed: %s)", kv->key, list);
        }
        if (out[k])
            return s_fail(c, kv->val, true, p, "key \"%s\" given twice", allowed[k]);
        out[k] = kv->val;
    }
    return 0;
}

static bool s_id_ok(const char *s, size_t max, const char *chars)
{
    size_t n = strlen(s);
    return n >= 1 && n < max && strspn(s, chars) == n;
}

#define S_ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
#define S_STEP_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
#define S_SEG_CHARS S_STEP_CHARS

/* An optional string field: NULL when absent or nil; fails when not text. */
static int s_opt_str(s_ctx_t *c, const sdx_value_t *v, const char *path, const char **out)
{
    *out = NULL;
    if (!v || v->type == SDX_NIL)
        return 0;
    if (v->type != SDX_STR) /* inline errors start with the path already */
        return s_fail(c, v, false, path, "%s%smust be text, not %s", c->file ? path : "",
                      c->file ? " " : "", sdx_vtype_name(v->type));
    *out = v->u.str.ptr;
    return 0;
}

static int s_opt_int(s_ctx_t *c, const sdx_value_t *v, const char *path, int64_t lo, int64_t hi,
                     int64_t *out)
{
    if (!v || v->type == SDX_NIL)
        return 0;
    const char *what = c->file ? path : "", *sp = c->file ? " " : "";
    if (v->type == SDX_FLOAT && v->u.f >= -9.0e18 && v->u.f <= 9.0e18 &&
        v->u.f == (double)(int64_t)v->u.f) {
        *out = (int64_t)v->u.f;
    } else if (v->type != SDX_INT) {
        return s_fail(c, v, false, path, "%s%smust be an integer, not %s", what, sp,
                      sdx_vtype_name(v->type));
    } else {
        *out = v->u.i;
    }
    if (*out < lo || *out > hi) {
        if (hi == INT64_MAX)
            return s_fail(c, v, false, path, "%s%smust be >= %lld (got %lld)", what, sp,
                          (long long)lo, (long long)*out);
        return s_fail(c, v, false, path, "%s%smust be in %lld..%lld (got %lld)", what, sp,
                      (long long)lo, (long long)hi, (long long)*out);
    }
    return 0;
}

/* .NET TimeSpan text: [d.]hh:mm[:ss[.fffffff]]. 0, or -1. */
static int s_timespan_parse(const char *s, int64_t *ms)
{
    const char *p = s;
    long long f[4] = {0};
    int n = 0;
    int64_t days = 0;
    char *end;
    errno = 0;
    long long first = strtoll(p, &end, 10);
    if (end == p || first < 0 || errno)
        return -1;
    if (*end == '.') { /* days */
        days = first;
        p = end + 1;
    } else if (*end != ':') {
        return -1;
    }
    while (n < 3) {
        if (*p < '0' || *p > '9')
            return -1;
        f[n++] = strtoll(p, &end, 10);
        p = end;
        if (*p != ':')
            break;
        p++;
    }
    if (n < 2 || f[0] > 23 || f[1] > 59 || f[2] > 59)
        return -1;
    int64_t frac_ms = 0;
    if (*p == '.' && n == 3) {
        p++;
        int digits = 0;
        int64_t ticks = 0;
        while (*p >= '0' && *p <= '9' && digits < 7) {
            ticks = ticks * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0)
            return -1;
        while (digits++ < 7)
            ticks *= 10;
        frac_ms = ticks / 10000;
    }
    if (*p)
        return -1;
    if (days > 100000)
        return -1;
    *ms = ((days * 24 + f[0]) * 60 + f[1]) * 60000 + f[2] * 1000 + frac_ms;
    return 0;
}

static int s_add_domain(s_ctx_t *c, workflow_t *w, const char *d, const sdx_value_t *at,
                        const char *path)
{
    for (int i = 0; i < w->ndomains; i++)
        if (!strcmp(w->domains[i], d))
            return 0;
    if (w->ndomains == (int)(sizeof w->domains / sizeof w->domains[0]))
        return s_fail(c, at, false, path, "more than %d required domains",
                      (int)(sizeof w->domains / sizeof w->domains[0]));
    snprintf(w->domains[w->ndomains++], sizeof w->domains[0], "%s", d);
    return 0;
}

/* The domains a step may name (worker domains), as a list for errors. */
static void s_domain_list(const sdx_catalog_t *cat, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sdx_catalog_domain_count(cat) && o < len; i++) {
        const sdx_catalog_domain_t *d = sdx_catalog_domain_at(cat, i);
        if (d->by_broker)
            continue;
        int n = snprintf(out + o, len - o, "%s%s", o ? ", " : "", d->name);
        if (n < 0)
            break;
        o += (size_t)n;
    }
}

static void s_op_list(const sdx_catalog_t *cat, const char *domain, char *out, size_t len)
{
    size_t o = 0, dl = strlen(domain);
    out[0] = '\0';
    for (size_t i = 0; i < sdx_catalog_message_count(cat) && o < len; i++) {
        const sdx_catalog_msg_t *m = sdx_catalog_message_at(cat, i);
        if (strcmp(m->domain, domain) != 0 || strncmp(m->name, domain, dl) != 0 ||
            m->name[dl] != '.')
            continue;
        int n = snprintf(out + o, len - o, "%s%s", o ? ", " : "", m->name + dl + 1);
        if (n < 0)
            break;
        o += (size_t)n;
    }
}

/* "a.b[0].c" syntax: segments [A-Za-z0-9_-]+ each with [N]* after it; a
   path may also start with [N] (after a step id). */
static bool s_path_ok(const char *p, bool allow_lead_index)
{
    if (!*p)
        return true;
    bool first = true;
    for (;;) {
        size_t n = strspn(p, S_SEG_CHARS);
        if (n == 0 && !(first && allow_lead_index && *p == '['))
            return false;
        p += n;
        while (*p == '[') {
            p++;
            size_t d = strspn(p, "0123456789");
            if (d == 0 || d > 9 || p[d] != ']')
                return false;
            p += d + 1;
        }
        first = false;
        if (!*p)
            return true;
        if (*p != '.')
            return false;
        p++;
    }
}

static bool s_target_ok(const char *t)
{
    if (!strcmp(t, "*"))
        return true;
    for (;;) {
        size_t n = strspn(t, S_SEG_CHARS);
        if (n == 0)
            return false;
        t += n;
        if (!*t)
            return true;
        if (*t != '.')
            return false;
        t++;
    }
}

/* Parse "${config...}" / "${steps.<id>...}" into in (step, path owned). */
static int s_ref_parse(const char *ref, wf_input_t *in, char *why, size_t why_len)
{
    size_t n = strlen(ref);
    if (n < 4 || strncmp(ref, "${", 2) != 0 || ref[n - 1] != '}') {
        snprintf(why, why_len, "a reference is \"${config...}\" or \"${steps.<id>...}\"");
        return -1;
    }
    char inner[512];
    if (n - 3 >= sizeof inner) {
        snprintf(why, why_len, "reference too long");
        return -1;
    }
    memcpy(inner, ref + 2, n - 3);
    inner[n - 3] = '\0';
    const char *path = NULL;
    if (!strcmp(inner, "config")) {
        path = "";
    } else if (!strncmp(inner, "config.", 7)) {
        path = inner + 7;
        if (!*path || !s_path_ok(path, false)) {
            snprintf(why, why_len, "malformed path after config");
            return -1;
        }
    } else if (!strncmp(inner, "steps.", 6)) {
        const char *id = inner + 6;
        size_t il = strspn(id, S_STEP_CHARS);
        if (il == 0 || il >= WF_ID_MAX || (id[il] && id[il] != '.' && id[il] != '[')) {
            snprintf(why, why_len, "malformed step id after steps.");
            return -1;
        }
        path = id[il] == '.' ? id + il + 1 : id + il;
        if ((id[il] == '.' && !*path) || !s_path_ok(path, id[il] == '[')) {
            snprintf(why, why_len, "malformed path after steps.%.*s", (int)il, id);
            return -1;
        }
        in->step = strndup(id, il);
        if (!in->step) {
            snprintf(why, why_len, "out of memory");
            return -1;
        }
    } else {
        snprintf(why, why_len, "a reference starts with config or steps.<id>");
        return -1;
    }
    in->path = strdup(path);
    if (!in->path) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    return 0;
}

static void s_step_clear(wf_step_t *s)
{
    sdx_value_destroy(&s->parameters);
    for (size_t i = 0; i < s->nrequired; i++)
        free(s->required_models[i]);
    free(s->required_models);
    for (size_t i = 0; i < s->ninputs; i++) {
        free(s->inputs[i].target);
        free(s->inputs[i].ref);
        free(s->inputs[i].step);
        free(s->inputs[i].path);
    }
    free(s->inputs);
    memset(s, 0, sizeof *s);
}

static int s_oom(s_ctx_t *c, const sdx_value_t *at, const char *path)
{
    return s_fail(c, at, false, path, "out of memory");
}

/* One step (index i) of the raw tree into s. */
static int s_step(s_ctx_t *c, workflow_t *w, size_t i, const sdx_value_t *sv)
{
    wf_step_t *s = &w->steps[i];
    char path[96], p[160];
    snprintf(path, sizeof path, "steps[%zu]", i);
    s->line = c->file ? s_line_of(c, sv, false) : 0;
    if (!sv || sv->type != SDX_MAP)
        return s_fail(c, sv, false, path, "a step is a map (id, type, operation, ...), not %s",
                      sv ? sdx_vtype_name(sv->type) : "nothing");
    const sdx_value_t *f[S_NKEYS];
    if (s_fields(c, sv, path, s_step_keys, S_NKEYS, f) != 0)
        return -1;
    const char *id, *type, *op;
    snprintf(p, sizeof p, "%s.id", path);
    if (s_opt_str(c, f[S_ID], p, &id) != 0)
        return -1;
    if (id && !s_id_ok(id, WF_ID_MAX, S_STEP_CHARS))
        return s_fail(c, f[S_ID], false, p,
                      "step id \"%s\" must be 1 to %d of [A-Za-z0-9_-] (no dots: they separate "
                      "reference paths)",
                      id, WF_ID_MAX - 1);
    if (id)
        snprintf(s->id, sizeof s->id, "%s", id);
    else
        snprintf(s->id, sizeof s->id, "step%zu", i + 1);
    for (size_t k = 0; k < i; k++)
        if (!strcmp(w->steps[k].id, s->id)) {
            if (c->file)
                return s_fail(c, f[S_ID] ? f[S_ID] : sv, false, p,
                              "duplicate step id \"%s\" (also at line %d)", s->id,
                              w->steps[k].line);
            return s_fail(c, f[S_ID], false, p, "duplicate step id \"%s\" (also steps[%zu])", s->id,
                          k);
        }

    /* type: a worker domain of the catalogue */
    snprintf(p, sizeof p, "%s.type", path);
    if (s_opt_str(c, f[S_TYPE], p, &type) != 0)
        return -1;
    if (!type)
        return s_fail(c, sv, false, p, "step %s: type (the domain) is required", s->id);
    const sdx_catalog_domain_t *dom = sdx_catalog_domain(c->cat, type);
    if (!dom && c->loose && sdx_actions_worker_domain(type))
        dom = sdx_catalog_domain(c->cat, sdx_actions_worker_domain(type));
    if (!dom) {
        char list[512];
        s_domain_list(c->cat, list, sizeof list);
        return s_fail(c, f[S_TYPE], false, p, "step %s: unknown domain \"%s\" (domains: %s)", s->id,
                      type, list);
    }
    if (dom->by_broker)
        return s_fail(c, f[S_TYPE], false, p,
                      "step %s: domain \"%s\" is the broker's own; a workflow cannot call the "
                      "orchestrator (processing, system)",
                      s->id, dom->name);
    if (strlen(dom->name) >= sizeof s->type)
        return s_fail(c, f[S_TYPE], false, p, "step %s: domain name too long", s->id);
    snprintf(s->type, sizeof s->type, "%s", dom->name);

    /* operation: a message of that domain, aliases resolved */
    snprintf(p, sizeof p, "%s.operation", path);
    if (s_opt_str(c, f[S_OP], p, &op) != 0)
        return -1;
    if (!op || !*op)
        return s_fail(c, f[S_OP] ? f[S_OP] : sv, false, p,
                      "step %s: operation (the verb) is required", s->id);
    if (strlen(op) >= sizeof s->operation)
        return s_fail(c, f[S_OP], false, p, "step %s: operation too long", s->id);
    snprintf(s->operation, sizeof s->operation, "%s", op);
    size_t tl = strlen(s->type);
    const char *verb = !strncmp(op, s->type, tl) && op[tl] == '.' ? op + tl + 1 : op;
    char mt[SDX_TYPE_MAX];
    snprintf(mt, sizeof mt, "%s.%s", s->type, verb);
    const sdx_catalog_msg_t *msg = sdx_catalog_find(c->cat, sdx_actions_canonical(mt));
    if ((!msg || strcmp(msg->domain, s->type) != 0) && c->loose) {
        char r[SDX_TYPE_MAX];
        if (sdx_actions_resolve(s->type, verb, r, sizeof r) == 0)
            msg = sdx_catalog_find(c->cat, r);
    }
    if (!msg || strcmp(msg->domain, s->type) != 0) {
        char list[768];
        s_op_list(c->cat, s->type, list, sizeof list);
        return s_fail(c, f[S_OP], false, p,
                      "step %s: unknown operation \"%s\" of domain %s (operations: %s)", s->id, op,
                      s->type, list);
    }
    snprintf(s->message_type, sizeof s->message_type, "%s", msg->name);

    /* parameters: a map (absent or nil: {}) */
    snprintf(p, sizeof p, "%s.parameters", path);
    const sdx_value_t *pv = f[S_PARAMS];
    if (pv && pv->type != SDX_NIL && pv->type != SDX_MAP)
        return s_fail(c, pv, false, p, "step %s: parameters must be a map, not %s", s->id,
                      sdx_vtype_name(pv->type));
    s->parameters = pv && pv->type == SDX_MAP ? sdx_value_clone(pv) : sdx_value_map_new();
    if (!s->parameters)
        return s_oom(c, pv, p);

    /* required_models: names the model catalogue must know */
    snprintf(p, sizeof p, "%s.required_models", path);
    const sdx_value_t *mv = f[S_MODELS];
    if (mv && mv->type != SDX_NIL) {
        if (mv->type != SDX_ARRAY)
            return s_fail(c, mv, false, p, "step %s: required_models must be a list of names",
                          s->id);
        size_t nm = sdx_array_len(mv);
        s->required_models = calloc(nm ? nm : 1, sizeof *s->required_models);
        if (!s->required_models)
            return s_oom(c, mv, p);
        for (size_t k = 0; k < nm; k++) {
            const sdx_value_t *m = sdx_array_at(mv, k);
            char pk[192];
            snprintf(pk, sizeof pk, "%s[%zu]", p, k);
            if (m->type != SDX_STR || m->u.str.len == 0)
                return s_fail(c, m, false, pk, "step %s: a required model is a name", s->id);
            if (c->check && c->check(c->check_ud, m->u.str.ptr) == 0)
                return s_fail(c, m, false, pk,
                              "step %s: model \"%s\" is not in the model catalogue", s->id,
                              m->u.str.ptr);
            s->required_models[k] = strdup(m->u.str.ptr);
            if (!s->required_models[k])
                return s_oom(c, m, pk);
            s->nrequired++;
        }
    }

    /* inputs: target -> reference */
    snprintf(p, sizeof p, "%s.inputs", path);
    const sdx_value_t *iv = f[S_INPUTS];
    if (iv && iv->type != SDX_NIL) {
        if (iv->type != SDX_MAP)
            return s_fail(c, iv, false, p, "step %s: inputs must be a map of target: ${reference}",
                          s->id);
        size_t ni = sdx_map_len(iv);
        s->inputs = calloc(ni ? ni : 1, sizeof *s->inputs);
        if (!s->inputs)
            return s_oom(c, iv, p);
        for (size_t k = 0; k < ni; k++) {
            const sdx_kv_t *kv = &iv->u.map.items[k];
            char pk[256];
            snprintf(pk, sizeof pk, "%s.%s", p, kv->key);
            if (!s_target_ok(kv->key))
                return s_fail(c, kv->val, true, pk,
                              "step %s: input target \"%s\" must be \"*\" or a dotted path of "
                              "[A-Za-z0-9_-] names",
                              s->id, kv->key);
            if (kv->val->type != SDX_STR)
                return s_fail(c, kv->val, false, pk,
                              "step %s: input %s must be a reference text \"${...}\", not %s",
                              s->id, kv->key, sdx_vtype_name(kv->val->type));
            wf_input_t *in = &s->inputs[s->ninputs++];
            in->target = strdup(kv->key);
            in->ref = strdup(kv->val->u.str.ptr);
            if (!in->target || !in->ref)
                return s_oom(c, kv->val, pk);
            char why[128];
            if (s_ref_parse(in->ref, in, why, sizeof why) != 0)
                return s_fail(c, kv->val, false, pk,
                              "step %s: input %s: malformed reference %s: %s", s->id, kv->key,
                              in->ref, why);
        }
    }

    int64_t r = 0, t = 0;
    snprintf(p, sizeof p, "%s.retry", path);
    if (s_opt_int(c, f[S_RETRY], p, 0, 5, &r) != 0)
        return -1;
    snprintf(p, sizeof p, "%s.timeout_ms", path);
    if (s_opt_int(c, f[S_TIMEOUT], p, 0, INT64_MAX, &t) != 0)
        return -1;
    s->retry = (int)r;
    s->timeout_ms = t;
    return 0;
}

static int s_step_index(const workflow_t *w, const char *id)
{
    for (size_t i = 0; i < w->nsteps; i++)
        if (!strcmp(w->steps[i].id, id))
            return (int)i;
    return -1;
}

/* Depth-first search for a cycle through step references; writes
   "a -> b -> a" into out. 1 if found. */
static int s_cycle_dfs(const workflow_t *w, int u, char *color, int *stack, int depth, char *out,
                       size_t out_len)
{
    color[u] = 1;
    stack[depth] = u;
    const wf_step_t *s = &w->steps[u];
    for (size_t k = 0; k < s->ninputs; k++) {
        if (!s->inputs[k].step)
            continue;
        int v = s_step_index(w, s->inputs[k].step);
        if (v < 0 || v == u)
            continue;
        if (color[v] == 1) {
            size_t o = 0;
            int from = depth;
            while (from > 0 && stack[from] != v)
                from--;
            for (int d = from; d <= depth && o < out_len; d++) {
                int n = snprintf(out + o, out_len - o, "%s -> ", w->steps[stack[d]].id);
                if (n < 0)
                    break;
                o += (size_t)n;
            }
            if (o < out_len)
                snprintf(out + o, out_len - o, "%s", w->steps[v].id);
            return 1;
        }
        if (color[v] == 0 && s_cycle_dfs(w, v, color, stack, depth + 1, out, out_len))
            return 1;
    }
    color[u] = 2;
    return 0;
}

/* References: known step, not itself, no cycle, no forward reference. */
static int s_check_refs(s_ctx_t *c, const workflow_t *w, const sdx_value_t *steps_v)
{
    for (size_t i = 0; i < w->nsteps; i++) {
        const wf_step_t *s = &w->steps[i];
        for (size_t k = 0; k < s->ninputs; k++) {
            const wf_input_t *in = &s->inputs[k];
            if (!in->step)
                continue;
            const sdx_value_t *sv = sdx_array_at(steps_v, i);
            const sdx_value_t *iv = sdx_map_get(sdx_map_get_loose(sv, "inputs"), in->target);
            char p[192];
            snprintf(p, sizeof p, "steps[%zu].inputs.%s", i, in->target);
            int j = s_step_index(w, in->step);
            if (j < 0)
                return s_fail(c, iv, false, p,
                              "step %s: input %s: %s: no step \"%s\" in this workflow", s->id,
                              in->target, in->ref, in->step);
            if (j == (int)i)
                return s_fail(c, iv, false, p,
                              "step %s: input %s: %s: a step cannot refer to itself", s->id,
                              in->target, in->ref);
        }
    }
    char color[WF_MAX_STEPS] = {0};
    int stack[WF_MAX_STEPS];
    for (size_t i = 0; i < w->nsteps; i++) {
        char cyc[512];
        if (color[i] == 0 && s_cycle_dfs(w, (int)i, color, stack, 0, cyc, sizeof cyc))
            return s_fail(c, sdx_map_get_loose(sdx_array_at(steps_v, i), "inputs"), false, "steps",
                          "cycle in inputs: %s", cyc);
    }
    for (size_t i = 0; i < w->nsteps; i++) {
        const wf_step_t *s = &w->steps[i];
        for (size_t k = 0; k < s->ninputs; k++) {
            const wf_input_t *in = &s->inputs[k];
            if (!in->step)
                continue;
            int j = s_step_index(w, in->step);
            if (j > (int)i) {
                const sdx_value_t *sv = sdx_array_at(steps_v, i);
                const sdx_value_t *iv = sdx_map_get(sdx_map_get_loose(sv, "inputs"), in->target);
                char p[192];
                snprintf(p, sizeof p, "steps[%zu].inputs.%s", i, in->target);
                return s_fail(c, iv, false, p,
                              "step %s: input %s: %s: forward reference (step %s runs after %s; "
                              "a step can only use earlier steps)",
                              s->id, in->target, in->ref, in->step, s->id);
            }
        }
    }
    return 0;
}

static char *s_strdup_or(const char *s, const char *dflt)
{
    return strdup(s ? s : dflt);
}

/* The definition in root (a file's document or an inline tree). */
static workflow_t *s_build(s_ctx_t *c, const sdx_value_t *root, bool is_inline, int *id_line)
{
    if (!root || root->type != SDX_MAP) {
        s_fail(c, root, false, "", "a workflow is a map (id, steps, ...), not %s",
               root ? sdx_vtype_name(root->type) : "nothing");
        return NULL;
    }
    const sdx_value_t *f[K_NTOP];
    if (s_fields(c, root, "", s_top_keys, is_inline ? K_NTOP : K_NTOP - 1, f) != 0)
        return NULL;
    workflow_t *w = calloc(1, sizeof *w);
    if (!w) {
        s_oom(c, root, "");
        return NULL;
    }
    const char *id = NULL, *name = NULL, *desc = NULL;
    const char *idkey = "id";
    const sdx_value_t *idv = f[K_ID];
    if (is_inline && f[K_WFID] && f[K_WFID]->type != SDX_NIL) {
        idv = f[K_WFID];
        idkey = "workflow_id";
    }
    if (s_opt_str(c, idv, idkey, &id) != 0)
        goto fail;
    if (!id && !is_inline) {
        s_fail(c, root, false, "id", "id is required (the workflow's name, [A-Za-z0-9_.-])");
        goto fail;
    }
    if (!id)
        id = "adhoc";
    if (!s_id_ok(id, WF_ID_MAX, S_ID_CHARS)) {
        s_fail(c, idv, false, idkey, "workflow id \"%s\" must be 1 to %d of [A-Za-z0-9_.-]", id,
               WF_ID_MAX - 1);
        goto fail;
    }
    snprintf(w->id, sizeof w->id, "%s", id);
    if (id_line)
        *id_line = s_line_of(c, idv, false);
    if (s_opt_str(c, f[K_NAME], "name", &name) != 0 ||
        s_opt_str(c, f[K_DESC], "description", &desc) != 0)
        goto fail;
    w->name = s_strdup_or(name, w->id);
    w->description = s_strdup_or(desc, "");
    if (!w->name || !w->description) {
        s_oom(c, root, "");
        goto fail;
    }
    const sdx_value_t *ver = f[K_VERSION];
    if (ver && ver->type != SDX_STR && ver->type != SDX_INT && ver->type != SDX_FLOAT &&
        ver->type != SDX_NIL) {
        s_fail(c, ver, false, "version", "version must be text or a number");
        goto fail;
    }
    if (s_opt_int(c, f[K_DUR_MS], "estimated_duration_ms", 0, INT64_MAX,
                  &w->estimated_duration_ms) != 0)
        goto fail;
    if (!f[K_DUR_MS] && f[K_DUR] && f[K_DUR]->type != SDX_NIL) {
        if (f[K_DUR]->type != SDX_STR ||
            s_timespan_parse(f[K_DUR]->u.str.ptr, &w->estimated_duration_ms) != 0) {
            s_fail(c, f[K_DUR], false, "estimated_duration",
                   "estimated_duration must be a TimeSpan text \"hh:mm:ss\" or \"d.hh:mm:ss\"");
            goto fail;
        }
    }
    const sdx_value_t *res = f[K_RES];
    if (res && res->type != SDX_NIL && res->type != SDX_MAP) {
        s_fail(c, res, false, "resource_requirements", "resource_requirements must be a map");
        goto fail;
    }
    w->resource_requirements =
        res && res->type == SDX_MAP ? sdx_value_clone(res) : sdx_value_map_new();
    if (!w->resource_requirements) {
        s_oom(c, res, "resource_requirements");
        goto fail;
    }

    const sdx_value_t *steps = f[K_STEPS];
    if (!steps || steps->type == SDX_NIL) {
        s_fail(c, root, false, "steps", "steps is required (a list of steps)");
        goto fail;
    }
    if (steps->type != SDX_ARRAY || sdx_array_len(steps) == 0) {
        s_fail(c, steps, true, "steps", "steps must be a non-empty list of steps");
        goto fail;
    }
    size_t n = sdx_array_len(steps);
    if (n > WF_MAX_STEPS) {
        s_fail(c, steps, true, "steps", "%zu steps; at most %d", n, WF_MAX_STEPS);
        goto fail;
    }
    w->steps = calloc(n, sizeof *w->steps);
    if (!w->steps) {
        s_oom(c, steps, "steps");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        w->nsteps = i + 1;
        if (s_step(c, w, i, sdx_array_at(steps, i)) != 0)
            goto fail;
    }
    if (s_check_refs(c, w, steps) != 0)
        goto fail;

    for (size_t i = 0; i < n; i++)
        if (s_add_domain(c, w, w->steps[i].type, sdx_array_at(steps, i), "steps") != 0)
            goto fail;
    const sdx_value_t *rd = sdx_map_get_loose(w->resource_requirements, "domains");
    const sdx_value_t *rd_raw =
        res && res->type == SDX_MAP ? sdx_map_get_loose(res, "domains") : NULL;
    if (rd && rd->type != SDX_NIL) {
        if (rd->type != SDX_ARRAY) {
            s_fail(c, rd_raw, false, "resource_requirements.domains",
                   "resource_requirements.domains must be a list of domains");
            goto fail;
        }
        for (size_t i = 0; i < sdx_array_len(rd); i++) {
            const sdx_value_t *d = sdx_array_at(rd, i);
            const sdx_value_t *draw = sdx_array_at(rd_raw, i);
            char p[96];
            snprintf(p, sizeof p, "resource_requirements.domains[%zu]", i);
            if (d->type != SDX_STR || !sdx_catalog_domain(c->cat, d->u.str.ptr)) {
                char list[512];
                s_domain_list(c->cat, list, sizeof list);
                s_fail(c, draw, false, p, "unknown domain %s%s%s (domains: %s)",
                       d->type == SDX_STR ? "\"" : "",
                       d->type == SDX_STR ? d->u.str.ptr : "(not text)",
                       d->type == SDX_STR ? "\"" : "", list);
                goto fail;
            }
            if (s_add_domain(c, w, d->u.str.ptr, draw, p) != 0)
                goto fail;
        }
    }
    const sdx_value_t *gm = sdx_map_get_loose(w->resource_requirements, "gpu_memory_mb");
    if (gm && gm->type != SDX_NIL &&
        s_opt_int(c, res ? sdx_map_get_loose(res, "gpu_memory_mb") : gm,
                  "resource_requirements.gpu_memory_mb", 0, INT64_MAX, &w->gpu_memory_mb) != 0)
        goto fail;
    return w;
fail:
    wf_destroy(&w);
    return NULL;
}

/* ---------------------------------------------------------------- loading */

static workflow_t *s_load_text(const char *text, size_t len, const char *file,
                               const sdx_catalog_t *cat, wf_model_check_fn check, void *check_ud,
                               int *err_line, char *reason, size_t reason_len, int *id_line)
{
    s_ctx_t c = {.file = file ? file : "<text>", .cat = cat, .check = check, .check_ud = check_ud};
    workflow_t *w = NULL;
    if (!cat) {
        c.failed = true;
        c.err_line = 1;
        snprintf(c.reason, sizeof c.reason, "no message catalogue");
    } else {
        sdx_value_t *root = s_yaml_parse(&c, text, len);
        if (root)
            w = s_build(&c, root, false, id_line);
        sdx_value_destroy(&root);
    }
    if (w)
        snprintf(w->file, sizeof w->file, "%s", c.file);
    if (err_line)
        *err_line = c.err_line;
    if (reason && reason_len)
        snprintf(reason, reason_len, "%s", c.reason);
    free(c.lines);
    return w;
}

workflow_t *wf_load_text(const char *text, size_t len, const char *file, const sdx_catalog_t *cat,
                         wf_model_check_fn check, void *check_ud, char *err, size_t err_len)
{
    int line = 0;
    char reason[1024];
    workflow_t *w =
        s_load_text(text, len, file, cat, check, check_ud, &line, reason, sizeof reason, NULL);
    if (!w && err && err_len)
        snprintf(err, err_len, "%s:%d: %s", file ? file : "<text>", line, reason);
    return w;
}

/* A whole file in memory (NUL-terminated). NULL + reason. */
static char *s_read_file(const char *path, size_t *len, char *why, size_t why_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, why_len, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > WF_MAX_FILE + 8192) {
                snprintf(why, why_len, "larger than %d bytes", WF_MAX_FILE);
                goto fail;
            }
            char *p = realloc(buf, cap);
            if (!p) {
                snprintf(why, why_len, "out of memory");
                goto fail;
            }
            buf = p;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f)) {
        snprintf(why, why_len, "read error: %s", strerror(errno));
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

static workflow_t *s_load_file(const char *path, const sdx_catalog_t *cat, wf_model_check_fn check,
                               void *check_ud, int *err_line, char *reason, size_t reason_len,
                               int *id_line)
{
    size_t len = 0;
    char *text = s_read_file(path, &len, reason, reason_len);
    if (!text) {
        *err_line = 0;
        return NULL;
    }
    workflow_t *w =
        s_load_text(text, len, path, cat, check, check_ud, err_line, reason, reason_len, id_line);
    free(text);
    return w;
}

workflow_t *wf_load_file(const char *path, const sdx_catalog_t *cat, wf_model_check_fn check,
                         void *check_ud, char *err, size_t err_len)
{
    int line = 0;
    char reason[1024];
    workflow_t *w = s_load_file(path, cat, check, check_ud, &line, reason, sizeof reason, NULL);
    if (!w && err && err_len)
        snprintf(err, err_len, "%s:%d: %s", path, line, reason);
    return w;
}

workflow_t *wf_from_value(const sdx_value_t *v, const sdx_catalog_t *cat, wf_model_check_fn check,
                          void *check_ud, char *err, size_t err_len)
{
    s_ctx_t c = {.file = NULL, .loose = true, .cat = cat, .check = check, .check_ud = check_ud};
    if (!cat) {
        if (err && err_len)
            snprintf(err, err_len, "no message catalogue");
        return NULL;
    }
    workflow_t *w = s_build(&c, v, true, NULL);
    if (!w)
        s_err_out(&c, err, err_len);
    return w;
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int s_cmp_wf(const void *a, const void *b)
{
    return strcmp((*(workflow_t *const *)a)->id, (*(workflow_t *const *)b)->id);
}

static bool s_yaml_name(const char *n)
{
    size_t l = strlen(n);
    if (n[0] == '.')
        return false;
    return (l > 5 && !strcmp(n + l - 5, ".yaml")) || (l > 4 && !strcmp(n + l - 4, ".yml"));
}

int wf_load_dir(const char *dir, const sdx_catalog_t *cat, wf_model_check_fn check, void *check_ud,
                wf_report_fn report, void *report_ud, wf_set_t *out, char *err, size_t err_len)
{
    if (!out || out->n != 0) {
        if (err && err_len)
            snprintf(err, err_len, "wf_load_dir: the set must be empty");
        return -1;
    }
    DIR *d = opendir(dir);
    if (!d) {
        if (err && err_len)
            snprintf(err, err_len, "%s: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t nn = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!s_yaml_name(de->d_name))
            continue;
        if (nn == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **p = realloc(names, nc * sizeof *p);
            if (!p) {
                rc = -1;
                break;
            }
            names = p;
            cap = nc;
        }
        names[nn] = strdup(de->d_name);
        if (!names[nn]) {
            rc = -1;
            break;
        }
        nn++;
    }
    closedir(d);
    if (rc != 0) {
        if (err && err_len)
            snprintf(err, err_len, "%s: out of memory", dir);
        for (size_t i = 0; i < nn; i++)
            free(names[i]);
        free(names);
        return -1;
    }
    if (nn)
        qsort(names, nn, sizeof *names, s_cmp_str);

    workflow_t **items = calloc(nn ? nn : 1, sizeof *items);
    int refused = 0;
    size_t nw = 0;
    for (size_t i = 0; items && i < nn; i++) {
        char path[1024], reason[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        int line = 0, id_line = 0;
        workflow_t *w =
            s_load_file(path, cat, check, check_ud, &line, reason, sizeof reason, &id_line);
        if (w) {
            for (size_t k = 0; k < nw; k++)
                if (!strcmp(items[k]->id, w->id)) {
                    snprintf(reason, sizeof reason, "duplicate workflow id \"%s\" (also in %s)",
                             w->id, items[k]->file);
                    line = id_line ? id_line : 1;
                    wf_destroy(&w);
                    break;
                }
        }
        if (!w) {
            refused++;
            if (report)
                report(report_ud, path, line, reason);
            continue;
        }
        items[nw++] = w;
    }
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    if (!items) {
        if (err && err_len)
            snprintf(err, err_len, "%s: out of memory", dir);
        return -1;
    }
    if (nw)
        qsort(items, nw, sizeof *items, s_cmp_wf);
    out->items = items;
    out->n = nw;
    return refused;
}

/* ---------------------------------------------------------------- requests */

/* Walk "a.b[0].c" from root. NULL + why. */
static const sdx_value_t *s_walk(const sdx_value_t *root, const char *path, char *why,
                                 size_t why_len)
{
    const sdx_value_t *v = root;
    const char *p = path;
    char seen[512] = "";
    size_t sl = 0;
    while (*p) {
        size_t n = strspn(p, S_SEG_CHARS);
        if (n > 0) {
            char key[128];
            if (n >= sizeof key) {
                snprintf(why, why_len, "key too long");
                return NULL;
            }
            memcpy(key, p, n);
            key[n] = '\0';
            if (!v || v->type != SDX_MAP) {
                snprintf(why, why_len, "%s%sis not a map (%s), no key %s", seen, *seen ? " " : "",
                         v ? sdx_vtype_name(v->type) : "nothing", key);
                return NULL;
            }
            const sdx_value_t *next = sdx_map_get_loose(v, key);
            if (!next) {
                if (*seen)
                    snprintf(why, why_len, "no key %s in %s", key, seen);
                else
                    snprintf(why, why_len, "no key %s", key);
                return NULL;
            }
            v = next;
            sl += (size_t)snprintf(seen + sl, sl < sizeof seen ? sizeof seen - sl : 0, "%s%s",
                                   sl ? "." : "", key);
            if (sl >= sizeof seen)
                sl = sizeof seen - 1;
            p += n;
        }
        while (*p == '[') {
            char *end;
            unsigned long idx = strtoul(p + 1, &end, 10);
            if (!v || v->type != SDX_ARRAY) {
                snprintf(why, why_len, "%s is not a list (%s), no item [%lu]", *seen ? seen : "it",
                         v ? sdx_vtype_name(v->type) : "nothing", idx);
                return NULL;
            }
            if (idx >= sdx_array_len(v)) {
                snprintf(why, why_len, "%s has no item [%lu] (%zu items)", *seen ? seen : "it", idx,
                         sdx_array_len(v));
                return NULL;
            }
            v = sdx_array_at(v, idx);
            sl +=
                (size_t)snprintf(seen + sl, sl < sizeof seen ? sizeof seen - sl : 0, "[%lu]", idx);
            if (sl >= sizeof seen)
                sl = sizeof seen - 1;
            p = *end == ']' ? end + 1 : end;
        }
        if (*p == '.')
            p++;
        else if (*p) {
            snprintf(why, why_len, "malformed path");
            return NULL;
        }
    }
    return v;
}

/* Set a clone of v at the dotted target inside out, creating maps. */
/* A copy of v whose bins are moved out of v (v keeps empty bins): the heavy
   payloads of one step's reply travel on to the next without a copy. */
static sdx_value_t *s_steal(sdx_value_t *v)
{
    if (v->type == SDX_BIN) {
        sdx_value_t *b = sdx_value_bin_take(v->u.bin.ptr, v->u.bin.len);
        if (b) {
            v->u.bin.ptr = NULL;
            v->u.bin.len = 0;
        }
        return b;
    }
    if (v->type == SDX_MAP) {
        sdx_value_t *m = sdx_value_map_new();
        for (size_t i = 0; m && i < v->u.map.len; i++) {
            sdx_value_t *c = s_steal(v->u.map.items[i].val);
            if (!c || sdx_map_set(m, v->u.map.items[i].key, c) != 0) {
                sdx_value_destroy(&c);
                sdx_value_destroy(&m);
            }
        }
        return m;
    }
    if (v->type == SDX_ARRAY) {
        sdx_value_t *a = sdx_value_array_new();
        for (size_t i = 0; a && i < v->u.arr.len; i++) {
            sdx_value_t *c = s_steal(v->u.arr.items[i]);
            if (!c || sdx_array_push(a, c) != 0) {
                sdx_value_destroy(&c);
                sdx_value_destroy(&a);
            }
        }
        return a;
    }
    return sdx_value_clone(v);
}

static sdx_value_t *s_take_or_clone(const sdx_value_t *v, bool move)
{
    return move ? s_steal((sdx_value_t *)v) : sdx_value_clone(v);
}

static int s_set_path(sdx_value_t *out, const char *target, const sdx_value_t *v, bool move,
                      char *why, size_t why_len)
{
    sdx_value_t *m = out;
    const char *p = target;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char key[128];
        if (n == 0 || n >= sizeof key) {
            snprintf(why, why_len, "malformed target");
            return -1;
        }
        memcpy(key, p, n);
        key[n] = '\0';
        if (!dot) {
            sdx_value_t *c = s_take_or_clone(v, move);
            if (!c || sdx_map_set(m, key, c) != 0) {
                snprintf(why, why_len, "out of memory");
                return -1;
            }
            return 0;
        }
        sdx_value_t *next = sdx_map_get(m, key);
        if (!next || next->type == SDX_NIL) {
            next = sdx_value_map_new();
            if (!next || sdx_map_set(m, key, next) != 0) {
                snprintf(why, why_len, "out of memory");
                return -1;
            }
            next = sdx_map_get(m, key);
        } else if (next->type != SDX_MAP) {
            snprintf(why, why_len, "%.*s in parameters is %s, not a map", (int)(dot - target),
                     target, sdx_vtype_name(next->type));
            return -1;
        }
        m = next;
        p = dot + 1;
    }
}

/* "*": src's keys over dst's, recursively where both are maps (so that a
   configuration's hyperparameters keep a step's own hyperparameters.strength
   unless it sets one itself). */
static int s_merge(sdx_value_t *dst, const sdx_value_t *src, bool move)
{
    for (size_t i = 0; i < src->u.map.len; i++) {
        const sdx_kv_t *kv = &src->u.map.items[i];
        sdx_value_t *have = sdx_map_get(dst, kv->key);
        if (have && have->type == SDX_MAP && kv->val->type == SDX_MAP) {
            if (s_merge(have, kv->val, move) != 0)
                return -1;
            continue;
        }
        sdx_value_t *c = s_take_or_clone(kv->val, move);
        if (!c || sdx_map_set(dst, kv->key, c) != 0) {
            sdx_value_destroy(&c);
            return -1;
        }
    }
    return 0;
}

/* Do two inputs of s read overlapping parts of the same step's reply (one
   path a prefix of the other)? Those are copied, not moved. */
static bool s_shared(const wf_step_t *s, size_t k)
{
    const wf_input_t *a = &s->inputs[k];
    for (size_t j = 0; j < s->ninputs; j++) {
        const wf_input_t *b = &s->inputs[j];
        if (j == k || !b->step || strcmp(a->step, b->step) != 0)
            continue;
        size_t la = strlen(a->path), lb = strlen(b->path);
        size_t l = la < lb ? la : lb;
        if (strncmp(a->path, b->path, l) == 0 &&
            (la == lb || (la < lb ? (b->path[l] == '.' || b->path[l] == '[' || l == 0)
                                  : (a->path[l] == '.' || a->path[l] == '[' || l == 0))))
            return true;
    }
    return false;
}

sdx_value_t *wf_step_request(const wf_step_t *s, const sdx_value_t *config, wf_lookup_fn lookup,
                             void *ud, char *err, size_t err_len)
{
    return wf_step_request_move(s, config, lookup, ud, false, err, err_len);
}

sdx_value_t *wf_step_request_move(const wf_step_t *s, const sdx_value_t *config,
                                  wf_lookup_fn lookup, void *ud, bool move, char *err,
                                  size_t err_len)
{
    sdx_value_t *out = s->parameters && s->parameters->type == SDX_MAP
                           ? sdx_value_clone(s->parameters)
                           : sdx_value_map_new();
    if (!out) {
        if (err && err_len)
            snprintf(err, err_len, "steps.%s: out of memory", s->id);
        return NULL;
    }
    for (size_t k = 0; k < s->ninputs; k++) {
        const wf_input_t *in = &s->inputs[k];
        char why[640] = "";
        const sdx_value_t *root;
        if (in->step) {
            root = lookup ? lookup(ud, in->step) : NULL;
            if (!root)
                snprintf(why, sizeof why, "step %s has no reply data", in->step);
        } else {
            root = config;
            if (!root)
                snprintf(why, sizeof why, "no configuration was given");
        }
        const sdx_value_t *v = root ? s_walk(root, in->path, why, sizeof why) : NULL;
        /* moved: only out of an earlier step's reply, and only a part no
           other input of this step reads too */
        bool mv = move && in->step && !s_shared(s, k);
        if (v && !strcmp(in->target, "*")) {
            if (v->type != SDX_MAP) {
                snprintf(why, sizeof why, "\"*\" merges a map; this is %s",
                         sdx_vtype_name(v->type));
                v = NULL;
            } else if (s_merge(out, v, mv) != 0) {
                snprintf(why, sizeof why, "out of memory");
                v = NULL;
            }
        } else if (v && s_set_path(out, in->target, v, mv, why, sizeof why) != 0) {
            v = NULL;
        }
        if (!v) {
            if (err && err_len)
                snprintf(err, err_len, "steps.%s: input %s: %s: %s", s->id, in->target, in->ref,
                         why);
            sdx_value_destroy(&out);
            return NULL;
        }
    }
    return out;
}

/* ---------------------------------------------------------------- reply tree */

static void s_timespan(int64_t ms, char *out, size_t len)
{
    if (ms < 0)
        ms = 0;
    int64_t days = ms / 86400000, rest = ms % 86400000;
    int h = (int)(rest / 3600000), m = (int)(rest / 60000 % 60), s = (int)(rest / 1000 % 60);
    int frac = (int)(rest % 1000);
    int o = days ? snprintf(out, len, "%lld.%02d:%02d:%02d", (long long)days, h, m, s)
                 : snprintf(out, len, "%02d:%02d:%02d", h, m, s);
    if (frac && o > 0 && (size_t)o < len)
        snprintf(out + o, len - (size_t)o, ".%07d", frac * 10000);
}

static sdx_value_t *s_step_value(const wf_step_t *s)
{
    sdx_value_t *m = sdx_value_map_new(), *models = sdx_value_array_new(),
                *inputs = sdx_value_map_new(), *params = sdx_value_clone(s->parameters);
    int bad = !m || !models || !inputs || !params;
    for (size_t i = 0; !bad && i < s->nrequired; i++)
        bad = sdx_array_push(models, sdx_value_str_new(s->required_models[i])) != 0;
    for (size_t i = 0; !bad && i < s->ninputs; i++)
        bad = sdx_map_set_str(inputs, s->inputs[i].target, s->inputs[i].ref) != 0;
    if (bad) {
        sdx_value_destroy(&m);
        sdx_value_destroy(&models);
        sdx_value_destroy(&inputs);
        sdx_value_destroy(&params);
        return NULL;
    }
    bad |= sdx_map_set_str(m, "id", s->id);
    bad |= sdx_map_set_str(m, "type", s->type);
    bad |= sdx_map_set_str(m, "operation", s->operation);
    bad |= sdx_map_set_str(m, "message_type", s->message_type);
    bad |= sdx_map_set(m, "parameters", params);
    bad |= sdx_map_set(m, "required_models", models);
    bad |= sdx_map_set(m, "inputs", inputs);
    bad |= sdx_map_set_int(m, "retry", s->retry);
    bad |= sdx_map_set_int(m, "timeout_ms", s->timeout_ms);
    if (bad)
        sdx_value_destroy(&m);
    return m;
}

sdx_value_t *wf_to_value(const workflow_t *w)
{
    sdx_value_t *m = sdx_value_map_new(), *steps = sdx_value_array_new();
    sdx_value_t *res = sdx_value_clone(w->resource_requirements);
    int bad = !m || !steps || !res;
    for (size_t i = 0; !bad && i < w->nsteps; i++) {
        sdx_value_t *s = s_step_value(&w->steps[i]);
        bad = !s || sdx_array_push(steps, s) != 0;
    }
    if (bad) {
        sdx_value_destroy(&m);
        sdx_value_destroy(&steps);
        sdx_value_destroy(&res);
        return NULL;
    }
    char ts[48];
    s_timespan(w->estimated_duration_ms, ts, sizeof ts);
    bad |= sdx_map_set_str(m, "workflow_id", w->id);
    bad |= sdx_map_set_str(m, "name", w->name);
    bad |= sdx_map_set_str(m, "description", w->description);
    bad |= sdx_map_set(m, "steps", steps);
    bad |= sdx_map_set(m, "resource_requirements", res);
    bad |= sdx_map_set_str(m, "estimated_duration", ts);
    bad |= sdx_map_set_int(m, "estimated_duration_ms", w->estimated_duration_ms);
    bad |= sdx_map_set_str(m, "file", w->file);
    if (bad)
        sdx_value_destroy(&m);
    return m;
}

sdx_value_t *wf_to_definition(const workflow_t *w)
{
    sdx_value_t *v = wf_to_value(w);
    if (!v)
        return NULL;
    sdx_map_del(v, "file");
    sdx_map_del(v, "estimated_duration");
    sdx_value_t *steps = sdx_map_get(v, "steps");
    for (size_t i = 0; i < sdx_array_len(steps); i++)
        sdx_map_del(sdx_array_at(steps, i), "message_type");
    return v;
}

/* ---------------------------------------------------------------- copies, sets */

static char *s_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int s_step_copy(wf_step_t *d, const wf_step_t *s)
{
    *d = *s;
    d->parameters = NULL;
    d->required_models = NULL;
    d->inputs = NULL;
    d->nrequired = d->ninputs = 0;
    d->parameters = sdx_value_clone(s->parameters);
    if (!d->parameters)
        return -1;
    if (s->nrequired) {
        d->required_models = calloc(s->nrequired, sizeof *d->required_models);
        if (!d->required_models)
            return -1;
        for (size_t i = 0; i < s->nrequired; i++) {
            d->required_models[i] = strdup(s->required_models[i]);
            if (!d->required_models[i])
                return -1;
            d->nrequired++;
        }
    }
    if (s->ninputs) {
        d->inputs = calloc(s->ninputs, sizeof *d->inputs);
        if (!d->inputs)
            return -1;
        for (size_t i = 0; i < s->ninputs; i++) {
            wf_input_t *o = &d->inputs[i];
            const wf_input_t *in = &s->inputs[i];
            d->ninputs++;
            o->target = s_dup(in->target);
            o->ref = s_dup(in->ref);
            o->step = s_dup(in->step);
            o->path = s_dup(in->path);
            if (!o->target || !o->ref || !o->path || (in->step && !o->step))
                return -1;
        }
    }
    return 0;
}

workflow_t *wf_clone(const workflow_t *w)
{
    if (!w)
        return NULL;
    workflow_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    *c = *w;
    c->name = c->description = NULL;
    c->steps = NULL;
    c->nsteps = 0;
    c->resource_requirements = NULL;
    c->name = strdup(w->name ? w->name : w->id);
    c->description = strdup(w->description ? w->description : "");
    c->resource_requirements =
        w->resource_requirements ? sdx_value_clone(w->resource_requirements) : sdx_value_map_new();
    c->steps = calloc(w->nsteps ? w->nsteps : 1, sizeof *c->steps);
    if (!c->name || !c->description || !c->resource_requirements || !c->steps)
        goto fail;
    for (size_t i = 0; i < w->nsteps; i++) {
        c->nsteps = i + 1;
        if (s_step_copy(&c->steps[i], &w->steps[i]) != 0)
            goto fail;
    }
    return c;
fail:
    wf_destroy(&c);
    return NULL;
}

const workflow_t *wf_set_find(const wf_set_t *set, const char *id)
{
    if (!set || !id)
        return NULL;
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(set->items[mid]->id, id);
        if (c == 0)
            return set->items[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void wf_set_clear(wf_set_t *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        wf_destroy(&set->items[i]);
    free(set->items);
    set->items = NULL;
    set->n = 0;
}

void wf_destroy(workflow_t **pw)
{
    if (!pw || !*pw)
        return;
    workflow_t *w = *pw;
    for (size_t i = 0; i < w->nsteps; i++)
        s_step_clear(&w->steps[i]);
    free(w->steps);
    free(w->name);
    free(w->description);
    sdx_value_destroy(&w->resource_requirements);
    free(w);
    *pw = NULL;
}
