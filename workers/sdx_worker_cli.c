/*  sdx_worker_cli.c - `sdxl-worker`'s command line: the runtime's flags and
    the domains' options (flag > --config key > environment > default), the
    --config file (flat keys, or a fleet file's `worker:` defaults and the
    domain's `workers:` entry), --help, GPU selection, and sdx_worker_main,
    which builds a worker object (sdx_worker.c) from all that and runs it
    until SIGTERM/SIGINT.

    Not for: the runtime itself (sdx_worker.c) or domain logic (handler_*.c).
*/
#include "sdx_curve.h"
#include "sdx_gpu.h"
#include "sdx_log.h"
#include "sdx_mdp.h"
#include "sdx_worker.h"
#include "sdx_worker_priv.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

/* The domains sdx_worker_main was given (NULL-terminated). */
static const sdx_domain_t *const *s_table;

static const sdx_domain_t *s_domain_at(size_t i)
{
    for (size_t k = 0; s_table && s_table[k]; k++)
        if (k == i)
            return s_table[k];
    return NULL;
}

static const sdx_domain_t *s_find_domain(const char *name)
{
    for (size_t k = 0; s_table && s_table[k]; k++)
        if (strcmp(s_table[k]->name, name) == 0)
            return s_table[k];
    return NULL;
}

/* ---------------------------------------------------------------- config */

/* Load a YAML document as an sdx_value tree (scalars as strings). */
static sdx_value_t *s_yaml_node(yaml_parser_t *p, yaml_event_t *first, int depth, char *err,
                                size_t err_len);

static sdx_value_t *s_yaml_collection(yaml_parser_t *p, bool is_map, int depth, char *err,
                                      size_t err_len)
{
    sdx_value_t *v = is_map ? sdx_value_map_new() : sdx_value_array_new();
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(p, &ev)) {
            snprintf(err, err_len, "yaml: %s at line %zu", p->problem ? p->problem : "error",
                     p->problem_mark.line + 1);
            sdx_value_destroy(&v);
            return NULL;
        }
        if (ev.type == (is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT)) {
            yaml_event_delete(&ev);
            return v;
        }
        if (is_map) {
            if (ev.type != YAML_SCALAR_EVENT) {
                snprintf(err, err_len, "yaml: non-scalar key at line %zu", ev.start_mark.line + 1);
                yaml_event_delete(&ev);
                sdx_value_destroy(&v);
                return NULL;
            }
            char *key = strdup((const char *)ev.data.scalar.value);
            yaml_event_delete(&ev);
            if (!yaml_parser_parse(p, &ev)) {
                free(key);
                snprintf(err, err_len, "yaml: %s", p->problem ? p->problem : "error");
                sdx_value_destroy(&v);
                return NULL;
            }
            sdx_value_t *val = s_yaml_node(p, &ev, depth + 1, err, err_len);
            if (!val || !key) {
                free(key);
                sdx_value_destroy(&val);
                sdx_value_destroy(&v);
                return NULL;
            }
            sdx_map_set(v, key, val);
            free(key);
        } else {
            sdx_value_t *val = s_yaml_node(p, &ev, depth + 1, err, err_len);
            if (!val) {
                sdx_value_destroy(&v);
                return NULL;
            }
            sdx_array_push(v, val);
        }
    }
}

static sdx_value_t *s_yaml_node(yaml_parser_t *p, yaml_event_t *ev, int depth, char *err,
                                size_t err_len)
{
    sdx_value_t *v = NULL;
    if (depth > 32) {
        snprintf(err, err_len, "yaml: nested too deeply");
    } else if (ev->type == YAML_SCALAR_EVENT) {
        v = sdx_value_strn_new((const char *)ev->data.scalar.value, ev->data.scalar.length);
    } else if (ev->type == YAML_MAPPING_START_EVENT || ev->type == YAML_SEQUENCE_START_EVENT) {
        bool is_map = ev->type == YAML_MAPPING_START_EVENT;
        yaml_event_delete(ev);
        return s_yaml_collection(p, is_map, depth, err, err_len);
    } else {
        snprintf(err, err_len, "yaml: unsupported node (aliases are not supported) at line %zu",
                 ev->start_mark.line + 1);
    }
    yaml_event_delete(ev);
    return v;
}

/* The first document's mapping from p (input already set); name stands for
   the file in errors. */
static sdx_value_t *s_yaml_parse(yaml_parser_t *p, const char *name, char *err, size_t err_len)
{
    sdx_value_t *root = NULL;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(p, &ev)) {
            snprintf(err, err_len, "%s: yaml: %s at line %zu", name,
                     p->problem ? p->problem : "error", p->problem_mark.line + 1);
            break;
        }
        if (ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (ev.type == YAML_MAPPING_START_EVENT) {
            root = s_yaml_node(p, &ev, 0, err, err_len);
            break;
        }
        yaml_event_delete(&ev);
    }
    if (!root && !err[0])
        snprintf(err, err_len, "%s: expected a YAML mapping", name);
    return root;
}

static sdx_value_t *s_yaml_load(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        fclose(f);
        snprintf(err, err_len, "%s: cannot initialise the YAML parser", path);
        return NULL;
    }
    yaml_parser_set_input_file(&p, f);
    sdx_value_t *root = s_yaml_parse(&p, path, err, err_len);
    yaml_parser_delete(&p);
    fclose(f);
    return root;
}

sdx_value_t *sdx_worker_yaml_parse(const char *text, size_t len, const char *name, char *err,
                                   size_t err_len)
{
    if (err_len)
        err[0] = '\0';
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        snprintf(err, err_len, "%s: cannot initialise the YAML parser", name);
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    sdx_value_t *root = s_yaml_parse(&p, name, err, err_len);
    yaml_parser_delete(&p);
    return root;
}

typedef struct {
    char domain[64];
    char broker[512];
    char id[96];
    char log_level[16];
    int gpu;
    int concurrency;
    int prefetch;
    int capacity; /* 0: unset; -2: an invalid config value */
    char curve_cert[512];       /* this worker's key pair (FILE + FILE_secret), "" : plaintext */
    char curve_broker_key[512]; /* the broker's public certificate */
} s_opts_t;

/* Config keys of the runtime's own options (the rest belong to domains). */
static const char *const s_runtime_keys[] = {
    "domain",    "broker",    "gpu",        "concurrency",      "prefetch", "capacity",
    "id",        "log_level", "curve_cert", "curve_broker_key", "count", NULL,
};

/* The --config file, kept while the options are resolved: the maps that
   hold this worker's keys, in the order they apply (a later one wins). */
typedef struct {
    const char *path;
    sdx_value_t *root;           /* owned */
    const sdx_value_t *layer[3]; /* flat keys, `worker:` defaults, our `workers:` entry */
    size_t nlayers;
    const sdx_value_t *entry; /* our `workers:` entry, NULL if none */
} s_config_t;

static void s_config_free(s_config_t *c)
{
    sdx_value_destroy(&c->root);
    memset(c, 0, sizeof *c);
}

/* Turn a bind endpoint from a broker config into one to connect to. */
static void s_connectable(const char *bind_ep, char *out, size_t len)
{
    const char *star = strstr(bind_ep, "://*:");
    const char *any = strstr(bind_ep, "://0.0.0.0:");
    if (star)
        snprintf(out, len, "%.*s://127.0.0.1:%s", (int)(star - bind_ep), bind_ep, star + 5);
    else if (any)
        snprintf(out, len, "%.*s://127.0.0.1:%s", (int)(any - bind_ep), bind_ep, any + 11);
    else
        snprintf(out, len, "%s", bind_ep);
}

static void s_opts_apply_map(s_opts_t *o, const sdx_value_t *m, bool set_domain)
{
    const char *s;
    if (set_domain && (s = sdx_map_str(m, "domain", NULL)))
        snprintf(o->domain, sizeof o->domain, "%s", s);
    if ((s = sdx_map_str(m, "broker", NULL)))
        snprintf(o->broker, sizeof o->broker, "%s", s);
    if ((s = sdx_map_str(m, "id", NULL)))
        snprintf(o->id, sizeof o->id, "%s", s);
    if ((s = sdx_map_str(m, "log_level", NULL)))
        snprintf(o->log_level, sizeof o->log_level, "%s", s);
    if ((s = sdx_map_str(m, "curve_cert", NULL)))
        snprintf(o->curve_cert, sizeof o->curve_cert, "%s", s);
    if ((s = sdx_map_str(m, "curve_broker_key", NULL)))
        snprintf(o->curve_broker_key, sizeof o->curve_broker_key, "%s", s);
    if ((s = sdx_map_str(m, "gpu", NULL)))
        o->gpu = atoi(s);
    if ((s = sdx_map_str(m, "concurrency", NULL)))
        o->concurrency = atoi(s);
    if ((s = sdx_map_str(m, "prefetch", NULL)))
        o->prefetch = atoi(s);
    if ((s = sdx_map_str(m, "capacity", NULL))) {
        char *end;
        long v = strtol(s, &end, 10);
        o->capacity = *s && !*end && v >= 1 && v <= SDX_MDP_MAX_CAPACITY ? (int)v : -2;
    }
}

/* The worker's config file: flat keys (domain, broker, gpu, concurrency, id,
   log_level, and the domain's option keys), or a fleet file
   (deploy/fleet.yaml): broker.backend gives the endpoint, `worker:` holds
   defaults, and the `workers:` entry with our domain (and gpu, when several)
   overrides them. Fills o with the runtime's options and c with the layers
   the domain's options are looked up in (c->root stays loaded). */
static void s_config_layers(s_config_t *c, s_opts_t *o, const char *domain_hint, int gpu_hint);

static int s_config_load(s_config_t *c, s_opts_t *o, const char *path, const char *domain_hint,
                         int gpu_hint, char *err, size_t err_len)
{
    memset(c, 0, sizeof *c);
    c->path = path;
    c->root = s_yaml_load(path, err, err_len);
    if (!c->root)
        return -1;
    s_config_layers(c, o, domain_hint, gpu_hint);
    return 0;
}

int sdx_worker_config_text(const char *text, size_t len, const char *name,
                           const char *domain_hint, int gpu_hint, char *err, size_t err_len)
{
    s_config_t c = {.path = name};
    s_opts_t o = {.gpu = -1, .concurrency = 0, .prefetch = -1};
    c.root = sdx_worker_yaml_parse(text, len, name, err, err_len);
    if (!c.root)
        return -1;
    s_config_layers(&c, &o, domain_hint, gpu_hint);
    int rc = o.capacity == -2 ? -1 : 0;
    if (rc)
        snprintf(err, err_len, "%s: capacity wants 1..%d", name, SDX_MDP_MAX_CAPACITY);
    s_config_free(&c);
    return rc;
}

/* Fill o and c's layers from c->root (see s_config_load). */
static void s_config_layers(s_config_t *c, s_opts_t *o, const char *domain_hint, int gpu_hint)
{
    const sdx_value_t *root = c->root;
    s_opts_apply_map(o, root, true);
    c->layer[c->nlayers++] = root;
    const sdx_value_t *broker = sdx_map_get(root, "broker");
    if (broker && broker->type == SDX_MAP) {
        const char *be = sdx_map_str(broker, "backend", NULL);
        if (be)
            s_connectable(be, o->broker, sizeof o->broker);
    }
    const sdx_value_t *defaults = sdx_map_get(root, "worker");
    if (defaults && defaults->type == SDX_MAP) {
        s_opts_apply_map(o, defaults, true);
        c->layer[c->nlayers++] = defaults;
    }
    const char *dom = domain_hint && *domain_hint ? domain_hint : o->domain;
    const sdx_value_t *list = sdx_map_get(root, "workers");
    for (size_t i = 0; dom && *dom && i < sdx_array_len(list); i++) {
        const sdx_value_t *e = sdx_array_at(list, i);
        if (!e || e->type != SDX_MAP || strcmp(sdx_map_str(e, "domain", ""), dom) != 0)
            continue;
        const char *g = sdx_map_str(e, "gpu", NULL);
        if (gpu_hint >= 0 && g && atoi(g) != gpu_hint)
            continue;
        s_opts_apply_map(o, e, true);
        c->layer[c->nlayers++] = e;
        c->entry = e;
        break;
    }
}

/* ------------------------------------------------------- domain options */

#define S_DOMAIN_OPT 256 /* getopt val of the first domain option */

/* The runtime's own flags; domain options are appended at run time. */
static const struct option s_longopts[] = {
    {"domain", required_argument, NULL, 'd'},
    {"broker", required_argument, NULL, 'b'},
    {"gpu", required_argument, NULL, 'g'},
    {"config", required_argument, NULL, 'c'},
    {"concurrency", required_argument, NULL, 'n'},
    {"prefetch", required_argument, NULL, 'p'},
    {"capacity", required_argument, NULL, 'C'},
    {"id", required_argument, NULL, 'i'},
    {"log-level", required_argument, NULL, 'l'},
    {"curve-cert", required_argument, NULL, 'K'},
    {"curve-broker-key", required_argument, NULL, 'B'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* A domain option given on the command line (the last one given wins). */
typedef struct {
    const char *name;
    const char *value; /* borrowed from argv, or "true" for a switch */
} s_flag_t;


static const sdx_option_t *s_domain_option(const sdx_domain_t *d, const char *name)
{
    for (const sdx_option_t *o = d ? d->options : NULL; o && o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

static size_t s_noptions(const sdx_domain_t *d)
{
    size_t n = 0;
    for (const sdx_option_t *o = d->options; o && o->name; o++)
        n++;
    return n;
}

/* getopt's table: the runtime's flags, then every domain's options (each
   name once). Caller frees. */
static struct option *s_longopts_build(void)
{
    size_t nrt = sizeof s_longopts / sizeof s_longopts[0] - 1;
    size_t total = nrt;
    const sdx_domain_t *d;
    for (size_t i = 0; (d = s_domain_at(i)); i++)
        total += s_noptions(d);
    struct option *lo = calloc(total + 1, sizeof *lo);
    if (!lo)
        return NULL;
    memcpy(lo, s_longopts, nrt * sizeof *lo);
    size_t n = nrt;
    for (size_t i = 0; (d = s_domain_at(i)); i++) {
        for (const sdx_option_t *o = d->options; o && o->name; o++) {
            int has_arg = o->has_value ? required_argument : no_argument;
            bool seen = false;
            for (size_t j = 0; j < n && !seen; j++) {
                if (strcmp(lo[j].name, o->name) != 0)
                    continue;
                /* programmer errors: a domain shadowing a runtime flag, or
                   two domains disagreeing on one option */
                assert(j >= nrt && "a domain option has the name of a runtime flag");
                assert(lo[j].has_arg == has_arg && "domains disagree on an option's has_value");
                seen = true;
            }
            if (!seen) {
                lo[n] = (struct option){o->name, has_arg, NULL, S_DOMAIN_OPT + (int)n};
                n++;
            }
        }
    }
    return lo;
}

/* "true"/"false" for a switch's config or environment text, NULL if neither. */
static const char *s_switch_value(const char *v)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return "true";
        if (strcasecmp(v, no[i]) == 0)
            return "false";
    }
    return NULL;
}

/* Where an option's value came from, for error messages:
   "--max-models 0", "max_models: 0 in FILE", "SDXL_MAX_MODELS=0",
   "--max-models 1 (the default)". */
static void s_option_origin(const sdx_option_t *o, const char *value, const char *from,
                            const char *config_path, char *out, size_t len)
{
    char key[96];
    sdx_worker_config_key(o->name, key, sizeof key);
    if (strcmp(from, "config") == 0)
        snprintf(out, len, "%s: %s in %s", key, value, config_path ? config_path : "--config");
    else if (strcmp(from, "env") == 0)
        snprintf(out, len, "%s=%s", o->env, value);
    else if (strcmp(from, "default") != 0)
        snprintf(out, len, "--%s%s%s", o->name, o->has_value ? " " : "", o->has_value ? value : "");
    else /* say how to set it */
        snprintf(out, len, "--%s%s%s (the default; set --%s, config key %s%s%s)", o->name,
                 o->has_value ? " " : "", o->has_value ? value : "", o->name, key,
                 o->env ? " or " : "", o->env ? o->env : "");
}

/* Resolve every option of the domain: flag > config > environment >
   default. value[i]/from[i] (parallel to d->options, zeroed by the caller)
   receive a malloc'd text and a static source name, NULL when unset. */
static int s_options_resolve(const sdx_domain_t *d, const s_flag_t *flags, size_t nflags,
                             const s_config_t *cfg, char **value, const char **from, char *err,
                             size_t err_len)
{
    size_t i = 0;
    for (const sdx_option_t *o = d->options; o && o->name; o++, i++) {
        const char *v = NULL, *src = NULL;
        for (size_t k = nflags; !v && k-- > 0;)
            if (strcmp(flags[k].name, o->name) == 0) {
                v = flags[k].value;
                src = "flag";
            }
        char key[96];
        sdx_worker_config_key(o->name, key, sizeof key);
        for (size_t l = cfg ? cfg->nlayers : 0; !v && l-- > 0;) {
            const sdx_value_t *c = sdx_map_get(cfg->layer[l], key);
            if (!c)
                continue;
            if (c->type != SDX_STR) {
                snprintf(err, err_len, "--config %s: %s wants a single value, not a %s", cfg->path,
                         key, c->type == SDX_MAP ? "map" : "list");
                return -1;
            }
            v = c->u.str.ptr;
            src = "config";
        }
        const char *e = !v && o->env ? getenv(o->env) : NULL;
        if (e && *e) {
            v = e;
            src = "env";
        }
        if (!v && o->dflt) {
            v = o->dflt;
            src = "default";
        }
        if (!v)
            continue;
        if (!o->has_value && strcmp(src, "flag") != 0) {
            const char *b = s_switch_value(v);
            if (!b) {
                char where[700];
                s_option_origin(o, v, src, cfg ? cfg->path : NULL, where, sizeof where);
                snprintf(err, err_len, "%s: a switch: true or false", where);
                return -1;
            }
            v = b;
        }
        if (!(value[i] = strdup(v))) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        from[i] = src;
    }
    return 0;
}

/* A config map's keys that neither the runtime nor the domain knows: a
   warning (a misspelt key would otherwise be silently ignored). */
static void s_config_warn_unknown(const sdx_value_t *m, const sdx_domain_t *d, const char *path)
{
    for (size_t i = 0; m && m->type == SDX_MAP && i < m->u.map.len; i++) {
        const char *key = m->u.map.items[i].key;
        if (m->u.map.items[i].val->type != SDX_STR)
            continue; /* a fleet file's broker:, worker:, workers: */
        bool known = false;
        for (const char *const *k = s_runtime_keys; *k && !known; k++)
            known = strcmp(*k, key) == 0;
        for (const sdx_option_t *o = d->options; o && o->name && !known; o++) {
            char ck[96];
            sdx_worker_config_key(o->name, ck, sizeof ck);
            known = strcmp(ck, key) == 0;
        }
        if (!known)
            fprintf(stderr,
                    "sdxl-worker: warning: --config %s: unknown key '%s' for the %s domain "
                    "(ignored; sdxl-worker --domain %s --help lists the keys)\n",
                    path, key, d->name, d->name);
    }
}

/* Every domain option given on the command line must be one of this
   domain's. */
static int s_flags_check(const sdx_domain_t *d, const s_flag_t *flags, size_t nflags, char *err,
                         size_t err_len)
{
    for (size_t k = 0; k < nflags; k++) {
        if (s_domain_option(d, flags[k].name))
            continue;
        char owners[256] = "";
        const sdx_domain_t *o;
        for (size_t i = 0; (o = s_domain_at(i)); i++)
            if (s_domain_option(o, flags[k].name))
                snprintf(owners + strlen(owners), sizeof owners - strlen(owners), "%s%s",
                         owners[0] ? ", " : "", o->name);
        snprintf(err, err_len, "--%s is not an option of the %s domain (it is one of: %s)",
                 flags[k].name, d->name, owners);
        return -1;
    }
    return 0;
}

static void s_usage(FILE *f)
{
    fprintf(
        f,
        "usage: sdxl-worker --domain NAME --broker ENDPOINT [--gpu N] [--config FILE]\n"
        "                   [--concurrency N] [--capacity N] [--prefetch N] [--id ID]\n"
        "                   [--log-level error|warn|info|debug]\n"
        "                   [domain options]\n"
        "  --domain       device, model, conditioning, scheduler, inference,\n"
        "                 postprocessing or test\n"
        "  --broker       the broker's backend, e.g. tcp://127.0.0.1:5556 or ipc:///run/sdxl/be\n"
        "                 (default tcp://127.0.0.1:5556)\n"
        "  --gpu N        serve on GPU N (host index, as nvidia-smi numbers them)\n"
        "  --config FILE  YAML: flat keys named like the flags ('-' written '_'), or a fleet\n"
        "                 file (deploy/fleet.yaml); flags override the file\n"
        "  --concurrency  requests run at once (job threads, default 1)\n"
        "  --capacity N   requests the broker keeps in flight here (READY capacity,\n"
        "                 1..1024; default: the domain's, device/scheduler/test 32, model 8,\n"
        "                 conditioning/inference/postprocessing 1; at least --concurrency)\n"
        "  --prefetch N   older form: capacity = --concurrency + N (0..64)\n"
        "  --id           worker id (default <domain>-<host>-<pid>)\n"
        "  --curve-cert FILE        CURVE: this worker's key pair (FILE and FILE_secret,\n"
        "                           sdxl-cli keygen); its FILE goes in the broker's workers\n"
        "                           allow-list\n"
        "  --curve-broker-key FILE  CURVE: the broker's public certificate (both or neither)\n");
}

/* The domain's options for --help. */
static void s_usage_domain(FILE *f, const sdx_domain_t *d)
{
    if (!d->options || !d->options[0].name)
        return;
    fprintf(f, "\noptions of the %s domain (flag > --config key > environment > default):\n",
            d->name);
    for (const sdx_option_t *o = d->options; o->name; o++) {
        char left[128], key[96];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->has_value ? " " : "",
                 o->has_value ? (o->metavar ? o->metavar : "VALUE") : "");
        sdx_worker_config_key(o->name, key, sizeof key);
        fprintf(f, "  %-22s %s\n", left, o->help ? o->help : "");
        fprintf(f, "  %-22s config key %s%s%s", "", key, o->env ? ", env " : "",
                o->env ? o->env : "");
        if (o->dflt)
            fprintf(f, ", default %s", o->dflt[0] ? o->dflt : "\"\" (none)");
        fputc('\n', f);
    }
}

/* Select --gpu N for this process: validate it and restrict CUDA to it. */
static int s_select_gpu(sdx_worker_t *w, char *err, size_t err_len)
{
    int n = sdx_worker_gpu_requested(w);
    if (n < 0) {
        sdx_worker_set_gpu(w, -1, "cpu", NULL);
        return 0;
    }
    sdx_gpu_t *g = sdx_gpu_new(false); /* NVML only: no cuInit in this process */
    if (!g) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int count = sdx_gpu_count(g);
    bool nvml = strcmp(sdx_gpu_backend(g), "nvml") == 0;
    char why[256];
    snprintf(why, sizeof why, "%s", sdx_gpu_error(g));
    if (!nvml)
        count = sdx_gpu_cuda_count_isolated();
    if (count <= 0 || n >= count) {
        if (count <= 0)
            snprintf(err, err_len, "--gpu %d: this host has no GPU (%s)", n,
                     why[0] ? why : "no devices");
        else
            snprintf(err, err_len, "--gpu %d: no such GPU, this host has %d (0..%d)", n, count,
                     count - 1);
        sdx_gpu_destroy(&g);
        return -1;
    }
    sdx_gpu_info_t info;
    char visible[128];
    if (nvml && sdx_gpu_query(g, n, &info) == 0 && info.uuid[0]) {
        snprintf(visible, sizeof visible, "%s", info.uuid);
    } else {
        /* CUDA order: pick the n-th of an existing restriction, if any */
        const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
        snprintf(visible, sizeof visible, "%d", n);
        if (cvd && *cvd) {
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s", cvd);
            char *save = NULL;
            int i = 0;
            for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save), i++)
                if (i == n)
                    snprintf(visible, sizeof visible, "%s", t);
        }
        info.name[0] = '\0';
    }
    setenv("CUDA_VISIBLE_DEVICES", visible, 1);
    sdx_worker_set_gpu(w, n, "cuda:0", info.name[0] ? info.name : NULL);
    log_info("using GPU %d%s%s (CUDA_VISIBLE_DEVICES=%s)", n, info.name[0] ? ": " : "", info.name,
             visible);
    if (nvml)
        sdx_worker_priv_set_gpu_probe(w, g); /* kept: status reports the GPU's memory */
    else
        sdx_gpu_destroy(&g);
    return 0;
}

/* The command line: the runtime's flags, and the domain options given. */
typedef struct {
    s_opts_t flags;
    const char *config;
    bool help;
    s_flag_t *dflags; /* malloc'd, argc entries at most */
    size_t ndflags;
} s_cmdline_t;

/* Parse argv. Returns -1 to go on, else the exit code (help: 0, error: 2). */
static int s_parse_args(int argc, char **argv, s_cmdline_t *cl)
{
    struct option *lo = s_longopts_build();
    cl->dflags = calloc((size_t)argc + 1, sizeof *cl->dflags);
    if (!lo || !cl->dflags) {
        free(lo);
        fprintf(stderr, "sdxl-worker: out of memory\n");
        return 1;
    }
    int rc = -1, ch;
    char *end;
    opterr = 0; /* our own messages below */
    while (rc < 0 && (ch = getopt_long(argc, argv, ":d:b:g:c:n:p:C:i:l:K:B:h", lo, NULL)) != -1) {
        s_opts_t *f = &cl->flags;
        switch (ch) {
        case 'd':
            snprintf(f->domain, sizeof f->domain, "%s", optarg);
            break;
        case 'b':
            snprintf(f->broker, sizeof f->broker, "%s", optarg);
            break;
        case 'g':
            f->gpu = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || f->gpu < 0) {
                fprintf(stderr, "sdxl-worker: --gpu wants a GPU index >= 0, not '%s'\n", optarg);
                rc = 2;
            }
            break;
        case 'c':
            cl->config = optarg;
            break;
        case 'p':
            f->prefetch = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || f->prefetch < 0 || f->prefetch > 64) {
                fprintf(stderr, "sdxl-worker: --prefetch wants 0..64, not '%s'\n", optarg);
                rc = 2;
            }
            break;
        case 'C':
            f->capacity = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || f->capacity < 1 || f->capacity > SDX_MDP_MAX_CAPACITY) {
                fprintf(stderr,
                        "sdxl-worker: --capacity wants 1..%d (requests in flight on this "
                        "worker), not '%s'\n",
                        SDX_MDP_MAX_CAPACITY, optarg);
                rc = 2;
            }
            break;
        case 'n':
            f->concurrency = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || f->concurrency < 1 || f->concurrency > 256) {
                fprintf(stderr, "sdxl-worker: --concurrency wants 1..256, not '%s'\n", optarg);
                rc = 2;
            }
            break;
        case 'i':
            snprintf(f->id, sizeof f->id, "%s", optarg);
            break;
        case 'l':
            snprintf(f->log_level, sizeof f->log_level, "%s", optarg);
            break;
        case 'K':
            snprintf(f->curve_cert, sizeof f->curve_cert, "%s", optarg);
            break;
        case 'B':
            snprintf(f->curve_broker_key, sizeof f->curve_broker_key, "%s", optarg);
            break;
        case 'h':
            cl->help = true;
            break;
        case ':':
            fprintf(stderr, "sdxl-worker: option '%s' needs a value\n", argv[optind - 1]);
            rc = 2;
            break;
        case '?':
            if (optopt)
                fprintf(stderr, "sdxl-worker: unknown option '-%c'", optopt);
            else
                fprintf(stderr, "sdxl-worker: unknown option '%.*s'",
                        (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
            fprintf(stderr, " (sdxl-worker --domain NAME --help lists the options)\n");
            rc = 2;
            break;
        default:
            if (ch >= S_DOMAIN_OPT) {
                const struct option *o = &lo[ch - S_DOMAIN_OPT];
                cl->dflags[cl->ndflags++] =
                    (s_flag_t){o->name, o->has_arg == no_argument ? "true" : optarg};
            } else {
                rc = 2;
            }
            break;
        }
    }
    free(lo);
    if (rc < 0 && optind < argc) {
        fprintf(stderr, "sdxl-worker: unexpected argument '%s'\n", argv[optind]);
        rc = 2;
    }
    if (rc < 0 && cl->help) {
        s_usage(stdout);
        const sdx_domain_t *d =
            cl->flags.domain[0] ? s_find_domain(cl->flags.domain) : NULL;
        if (d) {
            s_usage_domain(stdout, d);
        } else {
            for (size_t i = 0; (d = s_domain_at(i)); i++)
                s_usage_domain(stdout, d);
        }
        rc = 0;
    }
    return rc;
}

/* "device, model, ..." */
static void s_domain_names(char *out, size_t len)
{
    const sdx_domain_t *d;
    out[0] = '\0';
    for (size_t i = 0; (d = s_domain_at(i)); i++)
        snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? ", " : "", d->name);
}

/* Hand each resolved option to the domain's hook; every refused one is
   printed (one line each, so that one start shows them all). */
static int s_options_apply(sdx_worker_t *w, const sdx_domain_t *d, size_t nopts)
{
    int rc = 0;
    if (d->option)
        sdx_worker_priv_domain_touched(w);
    for (size_t i = 0; d->option && i < nopts; i++) {
        const char *from = NULL, *value = sdx_worker_priv_option(w, i, &from);
        if (!value)
            continue;
        char why[512] = "";
        if (d->option(w, d->options[i].name, value, why, sizeof why) == 0)
            continue;
        char where[700];
        s_option_origin(&d->options[i], value, from, sdx_worker_priv_config_path(w), where,
                        sizeof where);
        fprintf(stderr, "sdxl-worker: %s: %s\n", where, why[0] ? why : "refused");
        rc = -1;
    }
    return rc;
}

static sdx_worker_t *volatile s_running; /* the worker the signal handler stops */

static void s_on_signal(int sig)
{
    (void)sig;
    sdx_worker_stop(s_running);
}

int sdx_worker_main(const sdx_domain_t *const *domains, int argc, char **argv)
{
    s_table = domains;
    s_opts_t o = {.gpu = -1, .concurrency = 0, .prefetch = -1};
    s_cmdline_t cl = {.flags = {.gpu = -1, .concurrency = 0, .prefetch = -1}};
    s_config_t cfg = {0};
    char **opt_value = NULL;
    const char **opt_from = NULL;
    size_t nopts = 0;
    const sdx_domain_t *domain = NULL;
    sdx_worker_t *w = NULL;
    char err[1024] = "";
    int rc = s_parse_args(argc, argv, &cl);
    if (rc >= 0)
        goto out;
    rc = 2;
    const s_opts_t *flags = &cl.flags;
    if (cl.config &&
        s_config_load(&cfg, &o, cl.config, flags->domain, flags->gpu, err, sizeof err) != 0) {
        fprintf(stderr, "sdxl-worker: --config %s\n", err);
        goto out;
    }
    /* flags override the file */
    if (flags->domain[0])
        snprintf(o.domain, sizeof o.domain, "%s", flags->domain);
    if (flags->broker[0])
        snprintf(o.broker, sizeof o.broker, "%s", flags->broker);
    if (flags->id[0])
        snprintf(o.id, sizeof o.id, "%s", flags->id);
    if (flags->log_level[0])
        snprintf(o.log_level, sizeof o.log_level, "%s", flags->log_level);
    if (flags->gpu >= 0)
        o.gpu = flags->gpu;
    if (flags->concurrency > 0)
        o.concurrency = flags->concurrency;
    if (flags->prefetch >= 0)
        o.prefetch = flags->prefetch;
    if (flags->capacity > 0)
        o.capacity = flags->capacity;
    if (o.capacity == -2) {
        fprintf(stderr, "sdxl-worker: --config %s: capacity wants an integer 1..%d\n", cl.config,
                SDX_MDP_MAX_CAPACITY);
        goto out;
    }
    if (flags->curve_cert[0])
        snprintf(o.curve_cert, sizeof o.curve_cert, "%s", flags->curve_cert);
    if (flags->curve_broker_key[0])
        snprintf(o.curve_broker_key, sizeof o.curve_broker_key, "%s", flags->curve_broker_key);
    if (!o.curve_cert[0] != !o.curve_broker_key[0]) {
        fprintf(stderr, "sdxl-worker: CURVE needs both --curve-cert (this worker's key pair) and "
                        "--curve-broker-key (the broker's public certificate)\n");
        goto out;
    }
    if (o.curve_cert[0] && (sdx_curve_cert_check(o.curve_cert, true, err, sizeof err) != 0 ||
                            sdx_curve_cert_check(o.curve_broker_key, false, err, sizeof err) != 0)) {
        fprintf(stderr, "sdxl-worker: curve: %s\n", err);
        goto out;
    }
    if (!o.broker[0])
        snprintf(o.broker, sizeof o.broker, "tcp://127.0.0.1:5556");
    if (!o.domain[0]) {
        fprintf(stderr, "sdxl-worker: --domain is required\n");
        s_usage(stderr);
        goto out;
    }
    domain = s_find_domain(o.domain);
    if (!domain) {
        char names[256];
        s_domain_names(names, sizeof names);
        fprintf(stderr, "sdxl-worker: unknown domain '%s' (%s)\n", o.domain, names);
        goto out;
    }
    if (s_flags_check(domain, cl.dflags, cl.ndflags, err, sizeof err) != 0) {
        fprintf(stderr, "sdxl-worker: %s\n", err);
        goto out;
    }
    if (cfg.root) {
        if (cfg.entry)
            s_config_warn_unknown(cfg.entry, domain, cfg.path);
        else if (!sdx_map_get(cfg.root, "workers"))
            s_config_warn_unknown(cfg.root, domain, cfg.path); /* a flat file */
    }
    nopts = s_noptions(domain);
    opt_value = calloc(nopts + 1, sizeof *opt_value);
    opt_from = calloc(nopts + 1, sizeof *opt_from);
    if (!opt_value || !opt_from) {
        fprintf(stderr, "sdxl-worker: out of memory\n");
        goto out;
    }
    if (s_options_resolve(domain, cl.dflags, cl.ndflags, cfg.root ? &cfg : NULL, opt_value,
                          opt_from, err, sizeof err) != 0) {
        fprintf(stderr, "sdxl-worker: %s\n", err);
        goto out;
    }
    int level = SDX_LOG_INFO;
    if (o.log_level[0] && (level = sdx_log_level_parse(o.log_level)) < 0) {
        fprintf(stderr, "sdxl-worker: --log-level: error, warn, info or debug, not '%s'\n",
                o.log_level);
        goto out;
    }
    char ident[128];
    if (o.gpu >= 0)
        snprintf(ident, sizeof ident, "worker[%s:gpu%d]", domain->name, o.gpu);
    else
        snprintf(ident, sizeof ident, "worker[%s]", domain->name);
    sdx_log_init(ident, (sdx_log_level_t)level);

    sdx_worker_opts_t wo = {
        .domain = domain,
        .broker = o.broker,
        .id = o.id,
        .gpu = o.gpu,
        .concurrency = o.concurrency,
        .prefetch = o.prefetch,
        .capacity = o.capacity,
        .curve_cert = o.curve_cert,
        .curve_broker_key = o.curve_broker_key,
    };
    w = sdx_worker_new(&wo, err, sizeof err);
    if (!w) {
        fprintf(stderr, "sdxl-worker: %s\n", err);
        rc = 1;
        goto out;
    }
    sdx_worker_priv_adopt_options(w, nopts, opt_value, opt_from, cl.config);
    opt_value = NULL;
    opt_from = NULL;
    s_config_free(&cfg);
    if (s_select_gpu(w, err, sizeof err) != 0) {
        log_error("%s", err);
        fprintf(stderr, "sdxl-worker: %s\n", err);
        goto out;
    }
    /* from here on destroy runs fini, whatever happens (the hooks may set state) */
    if (s_options_apply(w, domain, nopts) != 0)
        goto out;
    if (sdx_worker_priv_init(w, err, sizeof err) != 0) {
        log_error("%s init: %s", domain->name, err);
        fprintf(stderr, "sdxl-worker: %s\n", err);
        goto out;
    }

    s_running = w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = sdx_worker_run(w);
    /* no stop may reach the worker once it is gone */
    sigaction(SIGTERM, &(struct sigaction){.sa_handler = SIG_DFL}, NULL);
    sigaction(SIGINT, &(struct sigaction){.sa_handler = SIG_DFL}, NULL);
    s_running = NULL;
out:
    s_config_free(&cfg);
    for (size_t i = 0; opt_value && i < nopts; i++)
        free(opt_value[i]);
    free(opt_value);
    free(opt_from);
    free(cl.dflags);
    sdx_worker_destroy(&w);
    return rc;
}
