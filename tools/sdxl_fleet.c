/*  sdxl_fleet.c - sdxl-fleet, the fleet supervisor: one master process that
    starts the broker and the workers a fleet file (deploy/fleet.yaml) names,
    restarts the ones that die (exponential back-off) and stops them in order,
    in the style of nginx's master process.

    sdxl-fleet up [--config FILE] [--foreground]   run the master (foreground)
    sdxl-fleet down | reload | status              signal / ask a running master
    sdxl-fleet --check-config [--config FILE]      validate the file: 0, or 2

    The master reads only the keys it needs: broker.frontend/backend/events/
    config, and each `workers:` entry's domain, gpu and count. The workers read
    their own options from the same file (sdxl-worker --config FILE --domain D).
    Signal handlers only set flags; the loop reaps with waitpid(WNOHANG).
    State (children, pids, restarts) goes to a JSON file next to the pid file,
    which `status` reads.

    Not for: daemonizing (run it under systemd or a shell), remote hosts, or
    checking the workers' own options (sdxl-worker does that at start and exits
    2, which the master does not restart).
*/
#include "sdx_clock.h"
#include "sdx_log.h"

#include <cjson/cJSON.h>
#include <yaml.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FLEET_EP_MAX 512
#define FLEET_NAME_MAX 96
#define FLEET_COUNT_MAX 64
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
#define BACKOFF_RESET_MS 60000

/* ------------------------------------------------------------ the file */

typedef struct {
    char domain[64];
    int gpu; /* -1: none */
    int count;
    int line;
} fleet_entry_t;

typedef struct {
    char frontend[FLEET_EP_MAX];
    char backend[FLEET_EP_MAX];
    char events[FLEET_EP_MAX];
    char broker_config[FLEET_EP_MAX]; /* "" : none */
    fleet_entry_t *entries;           /* owned */
    size_t nentries;
} fleet_conf_t;

static void s_conf_free(fleet_conf_t *c)
{
    free(c->entries);
    memset(c, 0, sizeof *c);
}

static int s_line(const yaml_node_t *n)
{
    return n ? (int)n->start_mark.line + 1 : 1;
}

static const char *s_scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static bool s_is_null(const yaml_node_t *n)
{
    const char *s = s_scalar(n);
    return s && (!*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0);
}

static int s_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = s && *s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static bool s_domain_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return false;
    return true;
}

/* err is "file:line: reason". */
#define FAIL(node, ...)                                                                            \
    do {                                                                                           \
        int n_ = snprintf(err, err_len, "%s:%d: ", path, s_line(node));                            \
        if (n_ > 0 && (size_t)n_ < err_len)                                                        \
            snprintf(err + n_, err_len - (size_t)n_, __VA_ARGS__);                                 \
        goto fail;                                                                                 \
    } while (0)

/* The fleet file from p (input already set; path names it in errors). */
static int s_conf_parse(fleet_conf_t *c, yaml_parser_t *pp, const char *path, char *err,
                        size_t err_len)
{
    memset(c, 0, sizeof *c);
    snprintf(c->frontend, sizeof c->frontend, "tcp://127.0.0.1:5555");
    snprintf(c->backend, sizeof c->backend, "tcp://127.0.0.1:5556");
    snprintf(c->events, sizeof c->events, "tcp://127.0.0.1:5557");
    yaml_document_t doc;
    bool have_doc = false;
    if (!yaml_parser_load(pp, &doc)) {
        snprintf(err, err_len, "%s:%d: %s%s%s", path, (int)pp->problem_mark.line + 1,
                 pp->problem ? pp->problem : "YAML error", pp->context ? " " : "",
                 pp->context ? pp->context : "");
        s_conf_free(c);
        return -1;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root)
        FAIL(root, "empty file: wants a mapping with broker:, worker:, workers:");
    if (root->type != YAML_MAPPING_NODE)
        FAIL(root, "the top level is not a mapping (broker:, worker:, workers:)");
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = yaml_document_get_node(&doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
        const char *key = s_scalar(k);
        if (!key)
            FAIL(k, "a key that is not a scalar");
        if (strcmp(key, "broker") == 0) {
            if (s_is_null(v))
                continue;
            if (v->type != YAML_MAPPING_NODE)
                FAIL(v, "broker: wants a mapping (frontend, backend, events, config)");
            for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top;
                 q++) {
                yaml_node_t *bk = yaml_document_get_node(&doc, q->key);
                yaml_node_t *bv = yaml_document_get_node(&doc, q->value);
                const char *bkey = s_scalar(bk), *bval = s_scalar(bv);
                char *dst = NULL;
                if (bkey && strcmp(bkey, "frontend") == 0)
                    dst = c->frontend;
                else if (bkey && strcmp(bkey, "backend") == 0)
                    dst = c->backend;
                else if (bkey && strcmp(bkey, "events") == 0)
                    dst = c->events;
                else if (bkey && strcmp(bkey, "config") == 0)
                    dst = c->broker_config;
                else
                    FAIL(bk, "broker: unknown key '%s' (frontend, backend, events, config)",
                         bkey ? bkey : "?");
                if (!bval || strlen(bval) >= FLEET_EP_MAX)
                    FAIL(bv, "broker.%s wants a string (under %d bytes)", bkey, FLEET_EP_MAX);
                if (dst != c->broker_config && !*bval)
                    FAIL(bv, "broker.%s is empty", bkey);
                snprintf(dst, FLEET_EP_MAX, "%s", bval);
            }
        } else if (strcmp(key, "worker") == 0) {
            if (!s_is_null(v) && v->type != YAML_MAPPING_NODE)
                FAIL(v, "worker: wants a mapping of defaults for every worker");
        } else if (strcmp(key, "workers") == 0) {
            if (s_is_null(v))
                continue;
            if (v->type != YAML_SEQUENCE_NODE)
                FAIL(v, "workers: wants a list of entries (- domain: D)");
            size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
            free(c->entries);
            c->entries = calloc(n ? n : 1, sizeof *c->entries);
            c->nentries = 0;
            if (!c->entries)
                FAIL(v, "out of memory");
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                yaml_node_t *e = yaml_document_get_node(&doc, *it);
                if (e->type != YAML_MAPPING_NODE)
                    FAIL(e, "a workers: entry is not a mapping (- domain: D)");
                fleet_entry_t *fe = &c->entries[c->nentries];
                fe->gpu = -1;
                fe->count = 1;
                fe->line = s_line(e);
                for (yaml_node_pair_t *q = e->data.mapping.pairs.start;
                     q < e->data.mapping.pairs.top; q++) {
                    yaml_node_t *ek = yaml_document_get_node(&doc, q->key);
                    yaml_node_t *ev = yaml_document_get_node(&doc, q->value);
                    const char *ekey = s_scalar(ek), *eval = s_scalar(ev);
                    if (!ekey)
                        FAIL(ek, "a key that is not a scalar");
                    if (strcmp(ekey, "domain") == 0) {
                        if (!eval || strlen(eval) >= sizeof fe->domain || !s_domain_ok(eval))
                            FAIL(ev, "domain wants a name of a-z, 0-9, '_', '-'");
                        snprintf(fe->domain, sizeof fe->domain, "%s", eval);
                    } else if (strcmp(ekey, "gpu") == 0) {
                        if (s_int(eval, 0, 1023, &fe->gpu) != 0)
                            FAIL(ev, "gpu wants a GPU index 0..1023, not '%s'",
                                 eval ? eval : "(not a scalar)");
                    } else if (strcmp(ekey, "count") == 0) {
                        if (s_int(eval, 0, FLEET_COUNT_MAX, &fe->count) != 0)
                            FAIL(ev, "count wants 0..%d workers, not '%s'", FLEET_COUNT_MAX,
                                 eval ? eval : "(not a scalar)");
                    }
                }
                if (!fe->domain[0])
                    FAIL(e, "a workers: entry without domain:");
                for (size_t j = 0; j < c->nentries; j++)
                    if (strcmp(c->entries[j].domain, fe->domain) == 0 &&
                        c->entries[j].gpu == fe->gpu)
                        FAIL(e,
                             "a second entry for domain %s%s (line %d): use count: N, or "
                             "another gpu",
                             fe->domain, fe->gpu >= 0 ? " on that gpu" : "", c->entries[j].line);
                c->nentries++;
            }
        } else {
            FAIL(k, "unknown key '%s' (broker, worker, workers)", key);
        }
    }
    yaml_document_delete(&doc);
    return 0;
fail:
    if (have_doc)
        yaml_document_delete(&doc);
    s_conf_free(c);
    return -1;
}
#undef FAIL

static int s_conf_load(fleet_conf_t *c, const char *path, char *err, size_t err_len)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s:0: %s", path, strerror(errno));
        return -1;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        fclose(f);
        snprintf(err, err_len, "%s:0: cannot initialise the YAML parser", path);
        return -1;
    }
    yaml_parser_set_input_file(&p, f);
    int rc = s_conf_parse(c, &p, path, err, err_len);
    yaml_parser_delete(&p);
    fclose(f);
    return rc;
}

/* --check-config on text in memory, for the fuzz target
   (tests/fuzz/fuzz_config.c, which builds this file with
   -Dmain=sdxl_fleet_main): 0, or -1 with "name:line: reason" in err. */
int sdxl_fleet_check_text(const char *text, size_t len, const char *name, char *err,
                          size_t err_len);
int sdxl_fleet_check_text(const char *text, size_t len, const char *name, char *err,
                          size_t err_len)
{
    fleet_conf_t c;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        snprintf(err, err_len, "%s:0: cannot initialise the YAML parser", name);
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = s_conf_parse(&c, &p, name, err, err_len);
    yaml_parser_delete(&p);
    s_conf_free(&c);
    return rc;
}

/* --------------------------------------------------------- the children */

typedef enum { ST_RUNNING, ST_BACKOFF, ST_GIVEN_UP, ST_STOPPING, ST_STOPPED } child_state_t;

static const char *const s_state_names[] = {"running", "backoff", "given_up", "stopping",
                                            "stopped"};

typedef struct {
    char name[FLEET_NAME_MAX]; /* "broker", or the worker's --id: D[-gpuN]-K */
    bool is_broker;
    char domain[64];
    int gpu;
    child_state_t state;
    pid_t pid;            /* 0: not running */
    int64_t started_mono; /* ms */
    int64_t started_unix; /* ms */
    int restarts;
    int backoff_ms;
    int64_t restart_at; /* mono ms, ST_BACKOFF */
    int64_t kill_at;    /* mono ms, ST_STOPPING: SIGKILL then; 0: none */
    bool remove;        /* drop from the table once reaped (reload) */
    char last_exit[64]; /* "code 1", "signal 9", "" */
} child_t;

typedef struct {
    char config_path[PATH_MAX]; /* absolute */
    char pid_file[PATH_MAX];
    char state_file[PATH_MAX + 16];
    char bin_dir[PATH_MAX]; /* --bin-dir, "" : beside our executable, else PATH */
    char log_dir[PATH_MAX]; /* --log-dir, "" : children write to our stdout/stderr */
    int grace_ms;
    fleet_conf_t conf;
    child_t *kids; /* owned */
    size_t nkids, cap;
    bool dirty;
    int64_t started_unix;
} master_t;

static volatile sig_atomic_t s_got_chld, s_got_term, s_got_hup;

static void s_on_chld(int sig)
{
    (void)sig;
    s_got_chld = 1;
}

static void s_on_term(int sig)
{
    (void)sig;
    s_got_term++;
}

static void s_on_hup(int sig)
{
    (void)sig;
    s_got_hup = 1;
}

/* The binary NAME ("sdxl-broker") in DIR (--bin-dir), beside our executable,
   in ../SUBDIR of it (the build tree), else just NAME (execvp: PATH). */
static void s_find_bin(const master_t *m, const char *name, const char *subdir, char *out,
                       size_t len)
{
    if (m->bin_dir[0]) {
        snprintf(out, len, "%s/%s", m->bin_dir, name);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(out, len, "%s/%s", self, name);
            if (access(out, X_OK) == 0)
                return;
            char up[PATH_MAX + 160];
            snprintf(up, sizeof up, "%s/../%s/%s", self, subdir, name);
            if (access(up, X_OK) == 0) {
                char real[PATH_MAX];
                const char *use = realpath(up, real) ? real : up;
                size_t ul = strlen(use);
                if (ul < len) {
                    memcpy(out, use, ul + 1);
                    return;
                }
            }
        }
    }
    snprintf(out, len, "%s", name);
}

static int s_spawn(master_t *m, child_t *k)
{
    char bin[PATH_MAX + 64];
    char gpu[16], *argv[16];
    int a = 0;
    if (k->is_broker) {
        s_find_bin(m, "sdxl-broker", "broker", bin, sizeof bin);
        argv[a++] = bin;
        argv[a++] = "--frontend";
        argv[a++] = m->conf.frontend;
        argv[a++] = "--backend";
        argv[a++] = m->conf.backend;
        argv[a++] = "--events";
        argv[a++] = m->conf.events;
        if (m->conf.broker_config[0]) {
            argv[a++] = "--config";
            argv[a++] = m->conf.broker_config;
        }
    } else {
        s_find_bin(m, "sdxl-worker", "workers", bin, sizeof bin);
        argv[a++] = bin;
        argv[a++] = "--config";
        argv[a++] = m->config_path;
        argv[a++] = "--domain";
        argv[a++] = k->domain;
        if (k->gpu >= 0) {
            snprintf(gpu, sizeof gpu, "%d", k->gpu);
            argv[a++] = "--gpu";
            argv[a++] = gpu;
        }
        argv[a++] = "--id";
        argv[a++] = k->name;
    }
    argv[a] = NULL;
    /* Opened before the fork so that a bad folder is logged here, once. */
    int logfd = -1;
    if (m->log_dir[0]) {
        char lp[PATH_MAX + FLEET_NAME_MAX + 8];
        snprintf(lp, sizeof lp, "%s/%s.log", m->log_dir, k->name);
        logfd = open(lp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (logfd < 0)
            log_warn("%s: %s: %s (its output stays on ours)", k->name, lp, strerror(errno));
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        log_error("%s: fork: %s", k->name, strerror(errno));
        if (logfd >= 0)
            close(logfd);
        return -1;
    }
    if (pid == 0) {
        if (logfd >= 0) { /* dup2 clears O_CLOEXEC on the copies */
            dup2(logfd, STDOUT_FILENO);
            dup2(logfd, STDERR_FILENO);
        }
        /* The child: default signals, unblocked; TERM when the master dies. */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(SIGCHLD, &dfl, NULL);
        sigaction(SIGTERM, &dfl, NULL);
        sigaction(SIGINT, &dfl, NULL);
        sigaction(SIGHUP, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0); /* a terminal's ^C goes to the master, which stops us in order */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        execvp(bin, argv);
        fprintf(stderr, "sdxl-fleet: %s: exec %s: %s\n", k->name, bin, strerror(errno));
        _exit(127);
    }
    if (logfd >= 0)
        close(logfd);
    k->pid = pid;
    k->state = ST_RUNNING;
    k->started_mono = sdx_clock_mono_ms();
    k->started_unix = sdx_clock_unix_ms();
    k->kill_at = 0;
    m->dirty = true;
    log_info("%s started: pid %d (%s)", k->name, (int)pid, bin);
    return 0;
}

static child_t *s_kid_add(master_t *m, const char *name, bool is_broker, const char *domain,
                          int gpu)
{
    if (m->nkids == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        child_t *k = realloc(m->kids, cap * sizeof *k);
        if (!k) {
            log_error("out of memory");
            return NULL;
        }
        m->kids = k;
        m->cap = cap;
    }
    child_t *k = &m->kids[m->nkids++];
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", name);
    snprintf(k->domain, sizeof k->domain, "%s", domain);
    k->is_broker = is_broker;
    k->gpu = gpu;
    k->backoff_ms = BACKOFF_MIN_MS;
    k->state = ST_STOPPED;
    m->dirty = true;
    return k;
}

static child_t *s_kid_find(master_t *m, const char *name)
{
    for (size_t i = 0; i < m->nkids; i++)
        if (strcmp(m->kids[i].name, name) == 0)
            return &m->kids[i];
    return NULL;
}

static void s_worker_name(const fleet_entry_t *e, int k, char *out, size_t len)
{
    if (e->gpu >= 0)
        snprintf(out, len, "%s-gpu%d-%d", e->domain, e->gpu, k);
    else
        snprintf(out, len, "%s-%d", e->domain, k);
}

static void s_stop_kid(master_t *m, child_t *k, int64_t now)
{
    if (k->pid > 0) {
        kill(k->pid, SIGTERM);
        k->state = ST_STOPPING;
        k->kill_at = now + m->grace_ms;
    } else {
        k->state = ST_STOPPED;
    }
    m->dirty = true;
}

/* Make the worker table match the file: start the missing, stop the extra
   (with retry_given_up, on reload, a given-up one that is still wanted
   gets another try). */
static void s_sync_workers(master_t *m, bool retry_given_up)
{
    int64_t now = sdx_clock_mono_ms();
    for (size_t i = 0; i < m->nkids; i++) {
        child_t *k = &m->kids[i];
        if (k->is_broker)
            continue;
        bool wanted = false;
        for (size_t e = 0; e < m->conf.nentries && !wanted; e++)
            for (int c = 1; c <= m->conf.entries[e].count && !wanted; c++) {
                char name[FLEET_NAME_MAX];
                s_worker_name(&m->conf.entries[e], c, name, sizeof name);
                wanted = strcmp(name, k->name) == 0;
            }
        if (!wanted && !k->remove) {
            log_info("%s: no longer in the file: stopping it", k->name);
            k->remove = true;
            s_stop_kid(m, k, now);
        }
    }
    for (size_t e = 0; e < m->conf.nentries; e++) {
        const fleet_entry_t *fe = &m->conf.entries[e];
        for (int c = 1; c <= fe->count; c++) {
            char name[FLEET_NAME_MAX];
            s_worker_name(fe, c, name, sizeof name);
            child_t *k = s_kid_find(m, name);
            if (k && k->remove)
                continue; /* still stopping: started again once reaped */
            if (!k && !(k = s_kid_add(m, name, false, fe->domain, fe->gpu)))
                continue;
            if (k->state == ST_GIVEN_UP && retry_given_up) {
                log_info("%s: gave up on it before; trying again with the new file", k->name);
                k->backoff_ms = BACKOFF_MIN_MS;
                k->state = ST_STOPPED;
            }
            if (k->state == ST_STOPPED)
                s_spawn(m, k);
        }
    }
}

static void s_compact(master_t *m)
{
    size_t j = 0;
    for (size_t i = 0; i < m->nkids; i++) {
        if (m->kids[i].remove && m->kids[i].pid == 0) {
            m->dirty = true;
            continue;
        }
        if (j != i)
            m->kids[j] = m->kids[i];
        j++;
    }
    m->nkids = j;
}

static void s_reap(master_t *m, bool stopping)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        child_t *k = NULL;
        for (size_t i = 0; i < m->nkids && !k; i++)
            if (m->kids[i].pid == pid)
                k = &m->kids[i];
        if (!k)
            continue;
        int64_t now = sdx_clock_mono_ms();
        int64_t up = now - k->started_mono;
        if (WIFEXITED(st))
            snprintf(k->last_exit, sizeof k->last_exit, "code %d", WEXITSTATUS(st));
        else if (WIFSIGNALED(st))
            snprintf(k->last_exit, sizeof k->last_exit, "signal %d", WTERMSIG(st));
        else
            snprintf(k->last_exit, sizeof k->last_exit, "status %d", st);
        k->pid = 0;
        m->dirty = true;
        bool expected = stopping || k->state == ST_STOPPING;
        if (expected) {
            log_info("%s (pid %d) exited with %s after %.1f s", k->name, (int)pid, k->last_exit,
                     up / 1000.0);
            k->state = ST_STOPPED;
            continue;
        }
        if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
            log_error("%s (pid %d) exited with code 2 (configuration error) after %.1f s: "
                      "given up, not restarting it (fix the file and reload)",
                      k->name, (int)pid, up / 1000.0);
            k->state = ST_GIVEN_UP;
            continue;
        }
        if (up >= BACKOFF_RESET_MS)
            k->backoff_ms = BACKOFF_MIN_MS;
        log_warn("%s (pid %d) exited with %s after %.1f s: restarting in %d ms", k->name, (int)pid,
                 k->last_exit, up / 1000.0, k->backoff_ms);
        k->state = ST_BACKOFF;
        k->restart_at = now + k->backoff_ms;
        k->backoff_ms = k->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : k->backoff_ms * 2;
    }
}

/* The state file: written to a temp file and renamed over (status never
   reads half a file). */
static void s_write_state(master_t *m)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    if (!root || !arr) {
        cJSON_Delete(root);
        cJSON_Delete(arr);
        return;
    }
    cJSON_AddNumberToObject(root, "master_pid", (double)getpid());
    cJSON_AddStringToObject(root, "config", m->config_path);
    cJSON_AddNumberToObject(root, "started_unix_ms", (double)m->started_unix);
    cJSON_AddItemToObject(root, "children", arr);
    for (size_t i = 0; i < m->nkids; i++) {
        const child_t *k = &m->kids[i];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            continue;
        cJSON_AddStringToObject(o, "name", k->name);
        cJSON_AddStringToObject(o, "role", k->is_broker ? "broker" : "worker");
        if (!k->is_broker)
            cJSON_AddStringToObject(o, "domain", k->domain);
        if (k->gpu >= 0)
            cJSON_AddNumberToObject(o, "gpu", k->gpu);
        cJSON_AddNumberToObject(o, "pid", k->pid);
        cJSON_AddStringToObject(o, "state", s_state_names[k->state]);
        cJSON_AddNumberToObject(o, "started_unix_ms", (double)k->started_unix);
        cJSON_AddNumberToObject(o, "restarts", k->restarts);
        cJSON_AddStringToObject(o, "last_exit", k->last_exit);
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text)
        return;
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp", m->state_file);
    FILE *f = fopen(tmp, "w");
    if (f) {
        bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        ok = fclose(f) == 0 && ok;
        if (!ok || rename(tmp, m->state_file) != 0) {
            log_warn("state file %s: %s", m->state_file, strerror(errno));
            unlink(tmp);
        }
    } else {
        log_warn("state file %s: %s", tmp, strerror(errno));
    }
    free(text);
    m->dirty = false;
}

static size_t s_live(const master_t *m, bool workers)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nkids; i++)
        if (m->kids[i].pid > 0 && m->kids[i].is_broker != workers)
            n++;
    return n;
}

static void s_kill_all(master_t *m, bool workers, int sig)
{
    for (size_t i = 0; i < m->nkids; i++)
        if (m->kids[i].pid > 0 && m->kids[i].is_broker != workers)
            kill(m->kids[i].pid, sig);
}

static void s_reload(master_t *m)
{
    fleet_conf_t nc;
    char err[1024];
    if (s_conf_load(&nc, m->config_path, err, sizeof err) != 0) {
        log_error("reload: %s: keeping the running configuration", err);
        return;
    }
    if (strcmp(nc.frontend, m->conf.frontend) != 0 || strcmp(nc.backend, m->conf.backend) != 0 ||
        strcmp(nc.events, m->conf.events) != 0 ||
        strcmp(nc.broker_config, m->conf.broker_config) != 0)
        log_warn("reload: the broker's endpoints or config file changed: they apply when the "
                 "broker restarts (sdxl-fleet down, then up)");
    /* keep the endpoints the running broker has; take the worker entries */
    free(m->conf.entries);
    m->conf.entries = nc.entries;
    m->conf.nentries = nc.nentries;
    nc.entries = NULL;
    s_conf_free(&nc);
    child_t *b = s_kid_find(m, "broker");
    if (b && b->pid > 0) {
        log_info("reload: SIGHUP to the broker (pid %d)", (int)b->pid);
        kill(b->pid, SIGHUP);
    }
    s_sync_workers(m, true);
    log_info("reload: %s: %zu worker entr%s", m->config_path, m->conf.nentries,
             m->conf.nentries == 1 ? "y" : "ies");
}

static int s_write_pid_file(const char *path)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    bool ok = fprintf(f, "%d\n", (int)getpid()) > 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* The master's pid from the pid file, if it names a live process; else 0. */
static pid_t s_read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int pid = 0;
    if (fscanf(f, "%d", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM))
        return 0;
    return pid;
}

static int s_up(master_t *m)
{
    char err[1024];
    if (s_conf_load(&m->conf, m->config_path, err, sizeof err) != 0) {
        log_error("%s", err);
        return 2;
    }
    pid_t other = s_read_pid(m->pid_file);
    if (other) {
        log_error("a master already runs: pid %d (pid file %s)", (int)other, m->pid_file);
        s_conf_free(&m->conf);
        return 1;
    }
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction sa = {.sa_handler = s_on_chld, .sa_flags = SA_NOCLDSTOP};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = s_on_term;
    sa.sa_flags = 0;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = s_on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (s_write_pid_file(m->pid_file) != 0) {
        log_error("pid file %s: %s", m->pid_file, strerror(errno));
        s_conf_free(&m->conf);
        return 1;
    }
    m->started_unix = sdx_clock_unix_ms();
    log_info("master pid %d: %s (pid file %s, grace %d ms)", (int)getpid(), m->config_path,
             m->pid_file, m->grace_ms);
    child_t *b = s_kid_add(m, "broker", true, "", -1);
    if (b)
        s_spawn(m, b);
    s_sync_workers(m, false);

    enum { RUN, STOP_WORKERS, STOP_BROKER } phase = RUN;
    int64_t deadline = 0;
    int terms_seen = 0;
    for (;;) {
        s_got_chld = 0;
        s_reap(m, phase != RUN);
        int64_t now = sdx_clock_mono_ms();
        if (s_got_term != terms_seen) {
            terms_seen = s_got_term;
            if (phase == RUN) {
                log_info("stopping: SIGTERM to %zu worker(s), then the broker (grace %d ms)",
                         s_live(m, true), m->grace_ms);
                for (size_t i = 0; i < m->nkids; i++)
                    if (m->kids[i].state == ST_BACKOFF) {
                        m->kids[i].state = ST_STOPPED;
                        m->dirty = true;
                    }
                s_kill_all(m, true, SIGTERM);
                phase = STOP_WORKERS;
                deadline = now + m->grace_ms;
            } else {
                log_warn("a second stop signal: SIGKILL to every child");
                s_kill_all(m, true, SIGKILL);
                s_kill_all(m, false, SIGKILL);
            }
        }
        if (phase == RUN && s_got_hup) {
            s_got_hup = 0;
            s_reload(m);
        }
        if (phase == STOP_WORKERS && (s_live(m, true) == 0 || now >= deadline)) {
            if (s_live(m, true)) {
                log_warn("grace over: SIGKILL to %zu worker(s)", s_live(m, true));
                s_kill_all(m, true, SIGKILL);
            }
            if (s_live(m, false))
                log_info("SIGTERM to the broker");
            s_kill_all(m, false, SIGTERM);
            phase = STOP_BROKER;
            deadline = now + m->grace_ms;
        }
        if (phase == STOP_BROKER && now >= deadline && s_live(m, false)) {
            log_warn("grace over: SIGKILL to the broker");
            s_kill_all(m, false, SIGKILL);
            deadline = now + 3600 * 1000;
        }
        int64_t wake = now + 1000;
        for (size_t i = 0; i < m->nkids; i++) {
            child_t *k = &m->kids[i];
            if (phase == RUN && k->state == ST_BACKOFF) {
                if (now >= k->restart_at) {
                    k->restarts++;
                    log_info("%s: restart %d", k->name, k->restarts);
                    if (s_spawn(m, k) != 0) {
                        k->state = ST_BACKOFF;
                        k->restart_at = now + k->backoff_ms;
                    }
                }
                if (k->state == ST_BACKOFF && k->restart_at < wake)
                    wake = k->restart_at;
            }
            if (k->state == ST_STOPPING && k->pid > 0 && k->kill_at) {
                if (now >= k->kill_at) {
                    log_warn("%s (pid %d): grace over: SIGKILL", k->name, (int)k->pid);
                    kill(k->pid, SIGKILL);
                    k->kill_at = 0;
                } else if (k->kill_at < wake) {
                    wake = k->kill_at;
                }
            }
        }
        if (phase == RUN) {
            s_compact(m);
            s_sync_workers(m, false); /* a worker removed, then wanted again while it stopped */
        }
        if (m->dirty)
            s_write_state(m);
        if (phase != RUN && s_live(m, true) == 0 && s_live(m, false) == 0)
            break;
        if (phase != RUN && deadline < wake)
            wake = deadline;
        if (s_got_chld || s_got_term != terms_seen || s_got_hup)
            continue;
        int64_t wait_ms = wake - sdx_clock_mono_ms();
        if (wait_ms < 0)
            wait_ms = 0;
        struct timespec ts = {.tv_sec = wait_ms / 1000, .tv_nsec = (wait_ms % 1000) * 1000000L};
        ppoll(NULL, 0, &ts, &old); /* signals are delivered only here */
    }
    log_info("stopped: every child exited");
    unlink(m->state_file);
    unlink(m->pid_file);
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(m->kids);
    m->kids = NULL;
    m->nkids = m->cap = 0;
    s_conf_free(&m->conf);
    return 0;
}

/* ------------------------------------------------------- the client side */

static int s_status(const master_t *m)
{
    pid_t pid = s_read_pid(m->pid_file);
    if (!pid) {
        printf("no master running (pid file %s)\n", m->pid_file);
        return 1;
    }
    printf("master pid %d (pid file %s)\n", (int)pid, m->pid_file);
    FILE *f = fopen(m->state_file, "r");
    if (!f) {
        printf("no state file yet (%s)\n", m->state_file);
        return 0;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    if (!buf)
        return 1;
    buf[len] = '\0';
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    const cJSON *kids = cJSON_GetObjectItemCaseSensitive(root, "children");
    if (!cJSON_IsArray(kids)) {
        printf("unreadable state file %s\n", m->state_file);
        cJSON_Delete(root);
        return 1;
    }
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (cJSON_IsString(cfg))
        printf("config %s\n", cfg->valuestring);
    printf("%-28s %8s %10s %8s  %-9s %s\n", "NAME", "PID", "UPTIME", "RESTARTS", "STATE",
           "LAST EXIT");
    int64_t now = sdx_clock_unix_ms();
    const cJSON *k;
    cJSON_ArrayForEach(k, kids)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(k, "name");
        const cJSON *kp = cJSON_GetObjectItemCaseSensitive(k, "pid");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(k, "state");
        const cJSON *su = cJSON_GetObjectItemCaseSensitive(k, "started_unix_ms");
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(k, "restarts");
        const cJSON *le = cJSON_GetObjectItemCaseSensitive(k, "last_exit");
        int p = cJSON_IsNumber(kp) ? kp->valueint : 0;
        char up[32] = "-";
        if (p > 0 && cJSON_IsNumber(su))
            snprintf(up, sizeof up, "%.0fs", (now - su->valuedouble) / 1000.0);
        printf("%-28s %8d %10s %8d  %-9s %s\n", cJSON_IsString(name) ? name->valuestring : "?", p,
               up, cJSON_IsNumber(rs) ? rs->valueint : 0,
               cJSON_IsString(st) ? st->valuestring : "?",
               cJSON_IsString(le) && le->valuestring[0] ? le->valuestring : "-");
    }
    cJSON_Delete(root);
    return 0;
}

static int s_signal_master(const master_t *m, int sig, bool wait_exit)
{
    pid_t pid = s_read_pid(m->pid_file);
    if (!pid) {
        fprintf(stderr, "sdxl-fleet: no master running (pid file %s)\n", m->pid_file);
        return 1;
    }
    if (kill(pid, sig) != 0) {
        fprintf(stderr, "sdxl-fleet: kill %d: %s\n", (int)pid, strerror(errno));
        return 1;
    }
    if (!wait_exit)
        return 0;
    /* The master removes its pid file as it exits (a zombie still answers
       kill 0, so the file is what tells). */
    int64_t end = sdx_clock_mono_ms() + 2LL * m->grace_ms + 10000;
    while (sdx_clock_mono_ms() < end) {
        if (access(m->pid_file, F_OK) != 0 || kill(pid, 0) != 0)
            return 0;
        usleep(50 * 1000);
    }
    fprintf(stderr, "sdxl-fleet: master pid %d still runs\n", (int)pid);
    return 1;
}

/* --------------------------------------------------------------- main */

static void s_usage(FILE *out)
{
    fprintf(out, "usage: sdxl-fleet up [--config FILE] [--foreground] [--bin-dir DIR] [--grace S]\n"
                 "                     [--log-dir DIR]\n"
                 "       sdxl-fleet down | reload | status [--pid-file FILE]\n"
                 "       sdxl-fleet --check-config [--config FILE]\n\n"
                 "Supervises a fleet on this host: the broker and the workers of FILE's\n"
                 "workers: entries (count: N each). up runs the master in the foreground\n"
                 "(systemd style); down (SIGTERM) stops workers, then the broker; reload\n"
                 "(SIGHUP) re-reads FILE, forwards SIGHUP to the broker and starts/stops\n"
                 "workers to match; status lists the children.\n\n"
                 "  --config FILE     the fleet file (default deploy/fleet.yaml)\n"
                 "  --pid-file FILE   default $XDG_RUNTIME_DIR/sdxl-fleet.pid, else\n"
                 "                    /tmp/sdxl-fleet-$UID.pid; the state file sits beside it\n"
                 "  --bin-dir DIR     where sdxl-broker and sdxl-worker are (default: beside\n"
                 "                    sdxl-fleet, the build tree, else PATH)\n"
                 "  --grace S         seconds a child gets after SIGTERM before SIGKILL (10)\n"
                 "  --log-dir DIR     each child's stdout and stderr go to DIR/NAME.log\n"
                 "                    (appended; DIR made when missing); default: the\n"
                 "                    master's own stdout and stderr\n"
                 "  --log-level L     error, warn, info (default) or debug\n"
                 "  --foreground      up stays in the foreground (the default; accepted)\n"
                 "  --check-config    validate FILE and exit: 0, or 2 with file:line: reason\n");
}

int main(int argc, char **argv)
{
    static master_t m;
    const char *config = "deploy/fleet.yaml", *pid_file = NULL, *cmd = NULL;
    bool check = false;
    int level = SDX_LOG_INFO;
    m.grace_ms = 10000;
    sdx_log_init("fleet", SDX_LOG_INFO);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            s_usage(stdout);
            return 0;
        } else if (strcmp(a, "--check-config") == 0) {
            check = true;
        } else if (strcmp(a, "--foreground") == 0) {
            /* the default */
        } else if (strcmp(a, "--config") == 0 && has_val) {
            config = argv[++i];
        } else if (strcmp(a, "--pid-file") == 0 && has_val) {
            pid_file = argv[++i];
        } else if (strcmp(a, "--bin-dir") == 0 && has_val) {
            snprintf(m.bin_dir, sizeof m.bin_dir, "%s", argv[++i]);
        } else if (strcmp(a, "--log-dir") == 0 && has_val) {
            snprintf(m.log_dir, sizeof m.log_dir, "%s", argv[++i]);
        } else if (strcmp(a, "--grace") == 0 && has_val) {
            char *end;
            double s = strtod(argv[++i], &end);
            if (*end || s < 0 || s > 3600) {
                fprintf(stderr, "sdxl-fleet: --grace wants seconds 0..3600\n");
                return 2;
            }
            m.grace_ms = (int)(s * 1000);
        } else if (strcmp(a, "--log-level") == 0 && has_val) {
            if ((level = sdx_log_level_parse(argv[++i])) < 0) {
                fprintf(stderr, "sdxl-fleet: --log-level: error, warn, info or debug\n");
                return 2;
            }
        } else if (a[0] != '-' && !cmd) {
            cmd = a;
        } else {
            fprintf(stderr, "sdxl-fleet: unknown or incomplete argument '%s'\n", a);
            s_usage(stderr);
            return 2;
        }
    }
    sdx_log_set_level((sdx_log_level_t)level);
    if (check) {
        fleet_conf_t c;
        char err[1024];
        if (s_conf_load(&c, config, err, sizeof err) != 0) {
            fprintf(stderr, "sdxl-fleet: %s\n", err);
            return 2;
        }
        int n = 0;
        for (size_t i = 0; i < c.nentries; i++)
            n += c.entries[i].count;
        printf("%s: ok: broker %s (backend %s, events %s%s%s), %zu worker entr%s, %d worker%s\n",
               config, c.frontend, c.backend, c.events, c.broker_config[0] ? ", config " : "",
               c.broker_config, c.nentries, c.nentries == 1 ? "y" : "ies", n, n == 1 ? "" : "s");
        s_conf_free(&c);
        return 0;
    }
    if (!cmd) {
        s_usage(stderr);
        return 2;
    }
    if (pid_file) {
        snprintf(m.pid_file, sizeof m.pid_file, "%s", pid_file);
    } else {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (xdg && *xdg)
            snprintf(m.pid_file, sizeof m.pid_file, "%s/sdxl-fleet.pid", xdg);
        else
            snprintf(m.pid_file, sizeof m.pid_file, "/tmp/sdxl-fleet-%u.pid", (unsigned)getuid());
    }
    size_t pl = strlen(m.pid_file);
    if (pl > 4 && strcmp(m.pid_file + pl - 4, ".pid") == 0)
        snprintf(m.state_file, sizeof m.state_file, "%.*s.state.json", (int)(pl - 4), m.pid_file);
    else
        snprintf(m.state_file, sizeof m.state_file, "%s.state.json", m.pid_file);
    if (strcmp(cmd, "up") == 0) {
        if (m.log_dir[0] && mkdir(m.log_dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "sdxl-fleet: --log-dir %s: %s\n", m.log_dir, strerror(errno));
            return 2;
        }
        if (!realpath(config, m.config_path)) {
            fprintf(stderr, "sdxl-fleet: %s:0: %s\n", config, strerror(errno));
            return 2;
        }
        return s_up(&m);
    }
    if (strcmp(cmd, "down") == 0 || strcmp(cmd, "stop") == 0)
        return s_signal_master(&m, SIGTERM, true);
    if (strcmp(cmd, "reload") == 0)
        return s_signal_master(&m, SIGHUP, false);
    if (strcmp(cmd, "status") == 0)
        return s_status(&m);
    fprintf(stderr, "sdxl-fleet: unknown command '%s' (up, down, reload, status)\n", cmd);
    return 2;
}
