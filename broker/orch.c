/*  orch.c - see orch.h. Sessions (a workflow run step by step) and batches
    (many generations, in sub-batches over the inference workers), their
    state in memory and in SQLite, and the processing.* operations.

    Persistence: one SQLite file in WAL mode (synchronous=NORMAL: a killed
    process loses nothing that was committed; only a power cut can take the
    last commits). Every state change is one small transaction, written
    before the change is announced; step results and batch outputs are files
    next to it (results/<session>/<step>.msgpack, <outputs>/batches/<batch>/),
    written atomically before the row that names them. On start the rows are
    read back: running sessions resume at their first unfinished step,
    running batches at their unfinished items, and nothing finished is redone.

    Sessions: queued -> running -> (paused <-> running) -> completed | failed
    | cancelled. Pause takes effect between steps; cancel also cancels the
    step on its worker. Batches: created -> running -> completed | failed |
    cancelled; an item that fails is tried once more, then marked failed.
*/
#include "orch.h"

#include "idmap.h"
#include "workflow.h"

#include "out_save.h"
#include "sdx_clock.h"
#include "sdx_codec.h"
#include "sdx_envelope.h"
#include "sdx_log.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ID_MAX 48
#define KEY_LEN 160
#define SCHEMA_VERSION 1
#define ITEM_TRIES 2 /* a failed batch item is tried once more */
#define MAX_ITEMS 100000
#define MAX_REFUSED 64
#define INLINE_RESULT_MAX (64 * 1024) /* step results up to this size live in their row */

/* ------------------------------------------------------------------ types */

typedef enum { SS_QUEUED, SS_RUNNING, SS_PAUSED, SS_COMPLETED, SS_FAILED, SS_CANCELLED } sstate_t;
static const char *const s_sstate[] = {"queued",    "running", "paused",
                                       "completed", "failed",  "cancelled"};
typedef enum { PS_PENDING, PS_RUNNING, PS_COMPLETED, PS_FAILED, PS_CANCELLED } pstate_t;
static const char *const s_pstate[] = {"pending", "running", "completed", "failed", "cancelled"};
typedef enum { BS_CREATED, BS_RUNNING, BS_COMPLETED, BS_FAILED, BS_CANCELLED } bstate_t;
static const char *const s_bstate[] = {"created", "running", "completed", "failed", "cancelled"};

typedef struct {
    pstate_t state;
    int attempts;
    char worker[128];
    int64_t started_ms, finished_ms;
    sdx_value_t *result; /* reply data (owned); NULL once only on disk */
    char result_path[PATH_MAX]; /* a result over INLINE_RESULT_MAX is a file */
    bool result_inline;         /* ... else it is in its row (small: kept in memory) */
    sdx_value_t *error;         /* owned */
    uint64_t token;     /* of the request in flight, 0 none */
    char key[KEY_LEN];
    int64_t progress_step, progress_total;
} srun_t;

typedef struct session {
    char id[ID_MAX];
    workflow_t *wf; /* owned copy: a reload does not change a running session */
    sdx_value_t *config;
    sstate_t state;
    size_t current; /* next (or running) step */
    srun_t *steps;
    bool pause_req;
    int priority;
    int64_t timeout_ms;
    sdx_value_t *error; /* aggregated, owned */
    char request_id[ID_MAX * 2];
    int64_t created_ms, started_ms, finished_ms;
    char waiting_for[32]; /* a domain with no live worker: the next step waits */
    bool in_work;         /* in orch_t.work: advanced at the next tick */
    struct session *next;
} session_t;

typedef struct {
    int total_images, preferred, max_size, max_parallel;
    bool dynamic, parallel;
    double threshold;
} bconf_t;

typedef struct {
    pstate_t state;
    int attempts; /* tries that ended (or the one running) */
    int runs;     /* dispatches, restarts included */
    int sub;      /* sub-batch, -1 none yet */
    char worker[128];
    int64_t started_ms, finished_ms;
    sdx_value_t *request; /* owned */
    sdx_value_t *outputs; /* owned: [{path, sha256, bytes, ...}] */
    sdx_value_t *error;   /* owned */
    uint64_t token;
    char key[KEY_LEN];
} bitem_t;

typedef struct {
    int size, running, done;
    int64_t started_ms, finished_ms;
    double mem_fraction; /* what the sizing saw, -1 none */
} bsub_t;

typedef struct batch {
    char id[ID_MAX];
    char name[128];
    char message_type[96];
    bconf_t conf;
    bstate_t state;
    bitem_t *items;
    size_t n;
    int done, failed, running;
    bsub_t *subs;
    size_t nsubs, subs_cap;
    int subs_running;
    int priority;
    int64_t timeout_ms;
    char request_id[ID_MAX * 2];
    int64_t created_ms, started_ms, finished_ms;
    int64_t images;
    char waiting_for[32]; /* the items' domain has no live worker: they wait */
    size_t cursor;        /* no pending item below this index */
    bool in_work;
    bool dir_made;        /* its outputs folder exists */
    struct batch *next;
} batch_t;

typedef enum { OP_STEP, OP_ITEM } opkind_t;
typedef struct op {
    uint64_t token; /* the idmap key */
    opkind_t kind;
    char owner[ID_MAX];
    size_t idx;
} op_t;

typedef struct res {
    uint64_t token;
    bool ok;
    sdx_value_t *data, *error;
    char worker[128];
    bool progress;
    int64_t step, total;
    struct res *next;
} res_t;

typedef struct {
    char file[PATH_MAX];
    int line;
    char reason[384];
} refused_t;

typedef struct ev {
    char topic[ID_MAX + 16];
    sdx_value_t *body;
    struct ev *next;
} ev_t;

struct orch {
    orch_host_t host;
    const sdx_catalog_t *cat;
    /* 1 KiB each: room under PATH_MAX for the names made below them */
    char workflows_dir[1024], state_db[1024], state_dir[1024], outputs_dir[1024], models_root[1024];
    int64_t step_timeout_ms, keep_finished;
    sqlite3 *db;
    wf_set_t wfs;
    refused_t refused[MAX_REFUSED];
    int nrefused;
    session_t *sessions; /* newest first */
    batch_t *batches;
    idmap_t ops;
    uint64_t next_token;
    res_t *rq_head, *rq_tail;
    bool stopping;
    /* what the next tick advances (sessions and batches whose state changed
       or that wait for a worker): a tick costs what changed, not what is
       stored */
    struct work {
        bool batch;
        void *p; /* NULL once removed */
    } * work;
    size_t nwork, work_cap;
    int64_t finished_s, finished_b; /* finished sessions / batches in memory (pruning) */
    unsigned prunes;
    bool in_tx;
    ev_t *ev_head, *ev_tail; /* events of the open transaction */
};

/* --------------------------------------------------------------- helpers */

static void s_new_id(char *out, size_t len, char prefix)
{
    uint8_t r[6];
    randombytes_buf(r, sizeof r);
    snprintf(out, len, "%c-%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2], r[3], r[4], r[5]);
}

/* RFC 3339 UTC with milliseconds; "" for 0. */
static void s_iso(int64_t ms, char out[48])
{
    out[0] = '\0';
    if (ms <= 0)
        return;
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 48, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static void s_set_time(sdx_value_t *m, const char *key_at, const char *key_ms, int64_t ms)
{
    if (ms <= 0) {
        sdx_map_set(m, key_at, sdx_value_nil_new());
        return;
    }
    char iso[48];
    s_iso(ms, iso);
    sdx_map_set_str(m, key_at, iso);
    sdx_map_set_int(m, key_ms, ms);
}

static sdx_value_t *s_clone_or_nil(const sdx_value_t *v)
{
    return v ? sdx_value_clone(v) : sdx_value_nil_new();
}

/* A copy with every bin longer than 256 bytes replaced by {bin_bytes: n}:
   what lists and summaries show of step results. */
static sdx_value_t *s_summary(const sdx_value_t *v)
{
    if (!v)
        return sdx_value_nil_new();
    if (v->type == SDX_BIN && v->u.bin.len > 256) {
        sdx_value_t *m = sdx_value_map_new();
        if (m)
            sdx_map_set_int(m, "bin_bytes", (int64_t)v->u.bin.len);
        return m;
    }
    if (v->type == SDX_MAP) {
        sdx_value_t *m = sdx_value_map_new();
        for (size_t i = 0; m && i < v->u.map.len; i++)
            sdx_map_set(m, v->u.map.items[i].key, s_summary(v->u.map.items[i].val));
        return m;
    }
    if (v->type == SDX_ARRAY) {
        sdx_value_t *a = sdx_value_array_new();
        for (size_t i = 0; a && i < v->u.arr.len; i++)
            sdx_array_push(a, s_summary(v->u.arr.items[i]));
        return a;
    }
    return sdx_value_clone(v);
}

static int s_state_parse(const char *s, const char *const *names, int n)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* Loose key read: data.key, then the C# PascalCase / camelCase forms. */
static const sdx_value_t *s_get(const sdx_value_t *data, const char *key)
{
    return data && data->type == SDX_MAP ? sdx_map_get_loose(data, key) : NULL;
}

static const char *s_get_str(const sdx_value_t *data, const char *key)
{
    const sdx_value_t *v = s_get(data, key);
    return v && v->type == SDX_STR ? v->u.str.ptr : NULL;
}

static int64_t s_get_int(const sdx_value_t *data, const char *key, int64_t dflt)
{
    const sdx_value_t *v = s_get(data, key);
    double d;
    if (v && sdx_value_as_double(v, &d))
        return (int64_t)d;
    return dflt;
}

static bool s_get_bool(const sdx_value_t *data, const char *key, bool dflt)
{
    const sdx_value_t *v = s_get(data, key);
    return v && v->type == SDX_BOOL ? v->u.b : dflt;
}

/* Events wait for the transaction that holds their change (s_tx_end):
   nothing is announced that a crash could take back. */
static void s_publish(orch_t *o, const char *kind, const char *id, sdx_value_t *body)
{
    if (!body || !o->host.publish) {
        sdx_value_destroy(&body);
        return;
    }
    sdx_map_set_int(body, "ts_ms", sdx_clock_unix_ms());
    ev_t *e = malloc(sizeof *e);
    if (!e) {
        sdx_value_destroy(&body);
        return;
    }
    snprintf(e->topic, sizeof e->topic, "%s.%s", kind, id);
    e->body = body;
    e->next = NULL;
    if (o->ev_tail)
        o->ev_tail->next = e;
    else
        o->ev_head = e;
    o->ev_tail = e;
}

static void s_flush_events(orch_t *o)
{
    while (o->ev_head) {
        ev_t *e = o->ev_head;
        o->ev_head = e->next;
        o->host.publish(o->host.ctx, e->topic, e->body);
        sdx_value_destroy(&e->body);
        free(e);
    }
    o->ev_tail = NULL;
}

static int s_exec(orch_t *o, const char *sql);

/* One transaction per orchestrator call (a request, a tick): every change
   of a poll round is one commit, then its events go out. */
static void s_tx_begin(orch_t *o)
{
    if (o->db && !o->in_tx && s_exec(o, "BEGIN") == 0)
        o->in_tx = true;
}

static void s_tx_end(orch_t *o)
{
    if (o->in_tx) {
        o->in_tx = false;
        if (s_exec(o, "COMMIT") != 0)
            s_exec(o, "ROLLBACK");
    }
    s_flush_events(o);
}

/* ------------------------------------------------------------- database */

static int s_exec(orch_t *o, const char *sql)
{
    char *e = NULL;
    if (sqlite3_exec(o->db, sql, NULL, NULL, &e) != SQLITE_OK) {
        log_error("state database: %s (%.60s...)", e ? e : "?", sql);
        sqlite3_free(e);
        return -1;
    }
    return 0;
}

static sqlite3_stmt *s_prep(orch_t *o, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(o->db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("state database: %s", sqlite3_errmsg(o->db));
        return NULL;
    }
    return st;
}

static int s_step(orch_t *o, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        log_error("state database: %s", sqlite3_errmsg(o->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

static void s_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s && *s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static void s_bind_value(sqlite3_stmt *st, int i, const sdx_value_t *v)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (v && sdx_msgpack_encode(v, &buf, &len) == 0)
        sqlite3_bind_blob(st, i, buf, (int)len, free);
    else
        sqlite3_bind_null(st, i);
}

static sdx_value_t *s_col_value(sqlite3_stmt *st, int i)
{
    const void *b = sqlite3_column_blob(st, i);
    int n = sqlite3_column_bytes(st, i);
    if (!b || n <= 0)
        return NULL;
    char err[128];
    return sdx_codec_decode(b, (size_t)n, SDX_ENC_MSGPACK, err, sizeof err);
}

static const char *s_col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

static const char *const s_schema_v1[] = {
    "CREATE TABLE IF NOT EXISTS sessions("
    " id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, workflow BLOB NOT NULL, config BLOB,"
    " status TEXT NOT NULL, current_step INTEGER NOT NULL, total_steps INTEGER NOT NULL,"
    " priority INTEGER NOT NULL, timeout_ms INTEGER NOT NULL, pause_req INTEGER NOT NULL,"
    " error BLOB, request_id TEXT, created_ms INTEGER NOT NULL, started_ms INTEGER,"
    " finished_ms INTEGER)",
    "CREATE TABLE IF NOT EXISTS session_steps("
    " session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, idx INTEGER NOT NULL,"
    " status TEXT NOT NULL, attempts INTEGER NOT NULL, worker TEXT, started_ms INTEGER,"
    " finished_ms INTEGER, result_path TEXT, result BLOB, error BLOB,"
    " PRIMARY KEY(session_id, idx))",
    "CREATE TABLE IF NOT EXISTS batches("
    " id TEXT PRIMARY KEY, name TEXT, message_type TEXT NOT NULL, config BLOB NOT NULL,"
    " status TEXT NOT NULL, total INTEGER NOT NULL, priority INTEGER NOT NULL,"
    " timeout_ms INTEGER NOT NULL, request_id TEXT, created_ms INTEGER NOT NULL,"
    " started_ms INTEGER, finished_ms INTEGER)",
    "CREATE TABLE IF NOT EXISTS batch_items("
    " batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE, idx INTEGER NOT NULL,"
    " request BLOB NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,"
    " runs INTEGER NOT NULL, sub_batch INTEGER, worker TEXT, started_ms INTEGER,"
    " finished_ms INTEGER, outputs BLOB, error BLOB, PRIMARY KEY(batch_id, idx))",
    "CREATE TABLE IF NOT EXISTS journal("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL,"
    " ref TEXT, request_id TEXT, detail TEXT)",
    "CREATE INDEX IF NOT EXISTS sessions_by_time ON sessions(created_ms)",
    "CREATE INDEX IF NOT EXISTS batches_by_time ON batches(created_ms)",
    NULL,
};

/* Versioned migrations: meta.schema_version says which ran. A file from a
   newer broker is refused rather than misread. */
static int s_db_open(orch_t *o, char *err, size_t err_len)
{
    const char *path = o->state_db[0] ? o->state_db : ":memory:";
    if (sqlite3_open_v2(path, &o->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, err_len, "cannot open the state database %s: %s", path,
                 o->db ? sqlite3_errmsg(o->db) : "out of memory");
        return -1;
    }
    sqlite3_busy_timeout(o->db, 2000);
    /* The broker owns its state file: it takes SQLite's exclusive lock now
       and keeps it (locking_mode=EXCLUSIVE, WAL index in its own memory), so a
       second broker on the same file, or a sqlite3 shell left in a
       transaction, is found here, at start, and named - rather than each write
       stalling the event loop for the busy timeout and then being dropped.
       To look inside while a broker runs, copy the file or ask the broker
       (processing.sessions_list, processing.batch_get). */
    if (o->state_db[0] &&
        (s_exec(o, "PRAGMA locking_mode=EXCLUSIVE") || s_exec(o, "BEGIN EXCLUSIVE"))) {
        snprintf(err, err_len,
                 "state database %s is locked by another process (another broker on the same "
                 "file, or an open sqlite3 shell?): %s",
                 path, sqlite3_errmsg(o->db));
        return -1;
    }
    if (o->state_db[0])
        s_exec(o, "COMMIT");
    if (s_exec(o, "PRAGMA journal_mode=WAL") || s_exec(o, "PRAGMA synchronous=NORMAL") ||
        s_exec(o, "PRAGMA foreign_keys=ON") ||
        s_exec(o, "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")) {
        snprintf(err, err_len, "state database %s: %s", path, sqlite3_errmsg(o->db));
        return -1;
    }
    int version = 0;
    sqlite3_stmt *st = s_prep(o, "SELECT value FROM meta WHERE key='schema_version'");
    if (st && sqlite3_step(st) == SQLITE_ROW)
        version = atoi(s_col_text(st, 0));
    sqlite3_finalize(st);
    if (version > SCHEMA_VERSION) {
        snprintf(err, err_len,
                 "state database %s has schema version %d; this broker knows up to %d (a newer "
                 "broker wrote it)",
                 path, version, SCHEMA_VERSION);
        return -1;
    }
    if (version < 1) {
        s_exec(o, "BEGIN");
        for (size_t i = 0; s_schema_v1[i]; i++)
            if (s_exec(o, s_schema_v1[i]) != 0) {
                s_exec(o, "ROLLBACK");
                snprintf(err, err_len, "state database %s: migration to version 1 failed", path);
                return -1;
            }
        s_exec(o, "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', '1')");
        if (s_exec(o, "COMMIT") != 0) {
            snprintf(err, err_len, "state database %s: %s", path, sqlite3_errmsg(o->db));
            return -1;
        }
        log_info("state database %s: schema version 1 created", path);
    }
    return 0;
}

static void s_journal(orch_t *o, const char *kind, const char *ref, const char *request_id,
                      const char *detail)
{
    sqlite3_stmt *st = s_prep(o, "INSERT INTO journal(ts_ms, kind, ref, request_id, detail) "
                                 "VALUES(?,?,?,?,?)");
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, sdx_clock_unix_ms());
    s_bind_text(st, 2, kind);
    s_bind_text(st, 3, ref);
    s_bind_text(st, 4, request_id);
    s_bind_text(st, 5, detail);
    s_step(o, st);
}

static void s_db_session(orch_t *o, const session_t *s, bool insert)
{
    sqlite3_stmt *st;
    if (insert) {
        st = s_prep(o, "INSERT INTO sessions(id, workflow_id, workflow, config, status, "
                       "current_step, total_steps, priority, timeout_ms, pause_req, error, "
                       "request_id, created_ms, started_ms, finished_ms) "
                       "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)");
        if (!st)
            return;
        sdx_value_t *wv = wf_to_definition(s->wf);
        s_bind_value(st, 3, wv);
        sdx_value_destroy(&wv);
        s_bind_value(st, 4, s->config);
    } else {
        st = s_prep(o, "UPDATE sessions SET status=?5, current_step=?6, pause_req=?10, "
                       "error=?11, started_ms=?14, finished_ms=?15 WHERE id=?1");
        if (!st)
            return;
    }
    s_bind_text(st, 1, s->id);
    s_bind_text(st, 2, s->wf->id);
    s_bind_text(st, 5, s_sstate[s->state]);
    sqlite3_bind_int64(st, 6, (int64_t)s->current);
    sqlite3_bind_int64(st, 7, (int64_t)s->wf->nsteps);
    sqlite3_bind_int(st, 8, s->priority);
    sqlite3_bind_int64(st, 9, s->timeout_ms);
    sqlite3_bind_int(st, 10, s->pause_req);
    s_bind_value(st, 11, s->error);
    s_bind_text(st, 12, s->request_id);
    sqlite3_bind_int64(st, 13, s->created_ms);
    sqlite3_bind_int64(st, 14, s->started_ms);
    sqlite3_bind_int64(st, 15, s->finished_ms);
    s_step(o, st);
}

/* blob: the msgpack of an inline result (taken), NULL for none. */
static void s_db_step_blob(orch_t *o, const session_t *s, size_t i, uint8_t *blob, size_t blen)
{
    const srun_t *r = &s->steps[i];
    sqlite3_stmt *st = s_prep(o, "INSERT OR REPLACE INTO session_steps(session_id, idx, status, "
                                 "attempts, worker, started_ms, finished_ms, result_path, error, "
                                 "result) VALUES(?,?,?,?,?,?,?,?,?,?)");
    if (!st) {
        free(blob);
        return;
    }
    if (blob)
        sqlite3_bind_blob(st, 10, blob, (int)blen, free);
    else
        sqlite3_bind_null(st, 10);
    if (!st)
        return;
    s_bind_text(st, 1, s->id);
    sqlite3_bind_int64(st, 2, (int64_t)i);
    s_bind_text(st, 3, s_pstate[r->state]);
    sqlite3_bind_int(st, 4, r->attempts);
    s_bind_text(st, 5, r->worker);
    sqlite3_bind_int64(st, 6, r->started_ms);
    sqlite3_bind_int64(st, 7, r->finished_ms);
    s_bind_text(st, 8, r->result_path);
    s_bind_value(st, 9, r->error);
    s_step(o, st);
}

static void s_db_step(orch_t *o, const session_t *s, size_t i)
{
    s_db_step_blob(o, s, i, NULL, 0);
}

static sdx_value_t *s_bconf_value(const bconf_t *c)
{
    sdx_value_t *m = sdx_value_map_new();
    if (!m)
        return NULL;
    sdx_map_set_int(m, "total_images", c->total_images);
    sdx_map_set_int(m, "preferred_batch_size", c->preferred);
    sdx_map_set_int(m, "max_batch_size", c->max_size);
    sdx_map_set_bool(m, "enable_dynamic_sizing", c->dynamic);
    sdx_map_set_float(m, "memory_threshold", c->threshold);
    sdx_map_set_bool(m, "parallel_processing", c->parallel);
    sdx_map_set_int(m, "max_parallel_batches", c->max_parallel);
    return m;
}

static void s_db_batch(orch_t *o, const batch_t *b, bool insert)
{
    sqlite3_stmt *st;
    if (insert)
        st = s_prep(o, "INSERT INTO batches(id, name, message_type, config, status, total, "
                       "priority, timeout_ms, request_id, created_ms, started_ms, finished_ms) "
                       "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)");
    else
        st = s_prep(o, "UPDATE batches SET status=?5, started_ms=?11, finished_ms=?12 WHERE id=?1");
    if (!st)
        return;
    s_bind_text(st, 1, b->id);
    s_bind_text(st, 2, b->name);
    s_bind_text(st, 3, b->message_type);
    sdx_value_t *cv = insert ? s_bconf_value(&b->conf) : NULL;
    if (insert)
        s_bind_value(st, 4, cv);
    sdx_value_destroy(&cv);
    s_bind_text(st, 5, s_bstate[b->state]);
    sqlite3_bind_int64(st, 6, (int64_t)b->n);
    sqlite3_bind_int(st, 7, b->priority);
    sqlite3_bind_int64(st, 8, b->timeout_ms);
    s_bind_text(st, 9, b->request_id);
    sqlite3_bind_int64(st, 10, b->created_ms);
    sqlite3_bind_int64(st, 11, b->started_ms);
    sqlite3_bind_int64(st, 12, b->finished_ms);
    s_step(o, st);
}

static void s_db_item(orch_t *o, const batch_t *b, size_t i, bool insert)
{
    const bitem_t *it = &b->items[i];
    sqlite3_stmt *st;
    if (insert)
        st = s_prep(o, "INSERT INTO batch_items(batch_id, idx, request, status, attempts, runs, "
                       "sub_batch, worker, started_ms, finished_ms, outputs, error) "
                       "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)");
    else
        st = s_prep(o, "UPDATE batch_items SET status=?4, attempts=?5, runs=?6, sub_batch=?7, "
                       "worker=?8, started_ms=?9, finished_ms=?10, outputs=?11, error=?12 "
                       "WHERE batch_id=?1 AND idx=?2");
    if (!st)
        return;
    s_bind_text(st, 1, b->id);
    sqlite3_bind_int64(st, 2, (int64_t)i);
    if (insert)
        s_bind_value(st, 3, it->request);
    s_bind_text(st, 4, s_pstate[it->state]);
    sqlite3_bind_int(st, 5, it->attempts);
    sqlite3_bind_int(st, 6, it->runs);
    sqlite3_bind_int(st, 7, it->sub);
    s_bind_text(st, 8, it->worker);
    sqlite3_bind_int64(st, 9, it->started_ms);
    sqlite3_bind_int64(st, 10, it->finished_ms);
    s_bind_value(st, 11, it->outputs);
    s_bind_value(st, 12, it->error);
    s_step(o, st);
}

/* ----------------------------------------------------------- objects */

static session_t *s_session_find(const orch_t *o, const char *id)
{
    for (session_t *s = o->sessions; id && s; s = s->next)
        if (strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

static batch_t *s_batch_find(const orch_t *o, const char *id)
{
    for (batch_t *b = o->batches; id && b; b = b->next)
        if (strcmp(b->id, id) == 0)
            return b;
    return NULL;
}

static void s_session_free(session_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->wf && i < s->wf->nsteps; i++) {
        sdx_value_destroy(&s->steps[i].result);
        sdx_value_destroy(&s->steps[i].error);
    }
    free(s->steps);
    wf_destroy(&s->wf);
    sdx_value_destroy(&s->config);
    sdx_value_destroy(&s->error);
    free(s);
}

static void s_batch_free(batch_t *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++) {
        sdx_value_destroy(&b->items[i].request);
        sdx_value_destroy(&b->items[i].outputs);
        sdx_value_destroy(&b->items[i].error);
    }
    free(b->items);
    free(b->subs);
    free(b);
}

static bool s_session_finished(const session_t *s)
{
    return s->state == SS_COMPLETED || s->state == SS_FAILED || s->state == SS_CANCELLED;
}

static bool s_batch_finished(const batch_t *b)
{
    return b->state == BS_COMPLETED || b->state == BS_FAILED || b->state == BS_CANCELLED;
}

/* rm -r of a results folder we made (plain files in one level). */
static void s_rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[PATH_MAX + 300];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static uint64_t s_op_new(orch_t *o, opkind_t kind, const char *owner, size_t idx)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return 0;
    op->token = ++o->next_token;
    op->kind = kind;
    snprintf(op->owner, sizeof op->owner, "%s", owner);
    op->idx = idx;
    if (idmap_put(&o->ops, &op->token, sizeof op->token, op) != 0) {
        free(op);
        return 0;
    }
    return op->token;
}

static void s_op_drop(orch_t *o, uint64_t token)
{
    free(idmap_del(&o->ops, &token, sizeof token));
}

/* Write v as msgpack to path, atomically. */
static int s_write_value(const char *path, const sdx_value_t *v)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (sdx_msgpack_encode(v, &buf, &len) != 0)
        return -1;
    char err[256];
    int rc = out_save_atomic_ex(path, buf, len, false, err, sizeof err);
    if (rc != 0)
        log_error("cannot write %s: %s", path, err);
    free(buf);
    return rc;
}

static sdx_value_t *s_read_value(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
    sdx_value_t *v = NULL;
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        char err[128];
        v = sdx_codec_decode(buf, (size_t)n, SDX_ENC_MSGPACK, err, sizeof err);
    }
    free(buf);
    fclose(f);
    return v;
}

static void s_work(orch_t *o, bool batch, void *p)
{
    bool *flag = batch ? &((batch_t *)p)->in_work : &((session_t *)p)->in_work;
    if (*flag)
        return;
    if (o->nwork == o->work_cap) {
        size_t cap = o->work_cap ? o->work_cap * 2 : 32;
        struct work *nw = realloc(o->work, cap * sizeof *nw);
        if (!nw)
            return;
        o->work = nw;
        o->work_cap = cap;
    }
    o->work[o->nwork++] = (struct work){batch, p};
    *flag = true;
}

static void s_unwork(orch_t *o, const void *p)
{
    for (size_t i = 0; i < o->nwork; i++)
        if (o->work[i].p == p)
            o->work[i].p = NULL;
}

/* Work waits (without using up a try) while its domain has no live worker:
   after a broker restart the workers come back within a heartbeat or two,
   and a fleet that lost every worker of a domain keeps the work until one
   comes. Returns true when it must wait (and notes the domain). */
static bool s_must_wait(orch_t *o, const char *message_type, char *waiting_for, size_t len)
{
    char dom[32];
    const char *dot = strchr(message_type, '.');
    snprintf(dom, sizeof dom, "%.*s", dot ? (int)(dot - message_type) : 0, message_type);
    if (o->host.workers(o->host.ctx, dom) != 0) { /* -1: not a domain: the submit says so */
        waiting_for[0] = '\0';
        return false;
    }
    if (!waiting_for[0])
        log_info("no %s worker: work for it waits until one registers", dom);
    snprintf(waiting_for, len, "%s", dom);
    return true;
}

/* ---------------------------------------------------------- sessions */

static void s_session_event(orch_t *o, const session_t *s, const char *event, size_t step)
{
    sdx_value_t *b = sdx_value_map_new();
    if (!b)
        return;
    sdx_map_set_str(b, "event", event);
    sdx_map_set_str(b, "session_id", s->id);
    sdx_map_set_str(b, "workflow_id", s->wf->id);
    sdx_map_set_str(b, "status", s_sstate[s->state]);
    sdx_map_set_int(b, "current_step", (int64_t)s->current);
    sdx_map_set_int(b, "total_steps", (int64_t)s->wf->nsteps);
    if (step < s->wf->nsteps) {
        const srun_t *r = &s->steps[step];
        sdx_map_set_int(b, "step", (int64_t)step);
        sdx_map_set_str(b, "step_id", s->wf->steps[step].id);
        sdx_map_set_str(b, "message_type", s->wf->steps[step].message_type);
        sdx_map_set_str(b, "step_status", s_pstate[r->state]);
        if (r->worker[0])
            sdx_map_set_str(b, "worker", r->worker);
        if (r->finished_ms && r->started_ms)
            sdx_map_set_int(b, "duration_ms", r->finished_ms - r->started_ms);
        if (r->error)
            sdx_map_set(b, "error", sdx_value_clone(r->error));
    }
    if (s->error && s_session_finished(s))
        sdx_map_set(b, "error", sdx_value_clone(s->error));
    s_publish(o, "session", s->id, b);
}

static void s_session_set(orch_t *o, session_t *s, sstate_t st)
{
    s->state = st;
    if (st == SS_RUNNING && !s->started_ms)
        s->started_ms = sdx_clock_unix_ms();
    if (s_session_finished(s)) {
        s->finished_ms = sdx_clock_unix_ms();
        s->pause_req = false;
        /* results stay on disk; memory keeps only what is running */
        for (size_t i = 0; o->state_dir[0] && i < s->wf->nsteps; i++)
            if (s->steps[i].result_path[0] && !s->steps[i].result_inline)
                sdx_value_destroy(&s->steps[i].result);
    }
    if (s_session_finished(s))
        o->finished_s++;
    s_db_session(o, s, false);
    s_session_event(o, s, st == SS_RUNNING ? "running" : s_sstate[st], (size_t)-1);
    s_work(o, false, s);
}

/* The step's reply data for later steps' inputs (loaded back from its file
   after a restart). */
/* A finished step's result back in memory: from its file, or its row. */
static sdx_value_t *s_result(orch_t *o, session_t *s, size_t i)
{
    srun_t *r = &s->steps[i];
    if (r->result || r->state != PS_COMPLETED)
        return r->result;
    if (r->result_path[0]) {
        r->result = s_read_value(r->result_path);
    } else if (r->result_inline) {
        sqlite3_stmt *st =
            s_prep(o, "SELECT result FROM session_steps WHERE session_id=? AND idx=?");
        if (st) {
            s_bind_text(st, 1, s->id);
            sqlite3_bind_int64(st, 2, (int64_t)i);
            if (sqlite3_step(st) == SQLITE_ROW)
                r->result = s_col_value(st, 0);
            sqlite3_finalize(st);
        }
    }
    return r->result;
}

typedef struct {
    orch_t *o;
    session_t *s;
} lookup_t;

static const sdx_value_t *s_step_data(void *ud, const char *step_id)
{
    lookup_t *l = ud;
    for (size_t i = 0; i < l->s->wf->nsteps; i++)
        if (strcmp(l->s->wf->steps[i].id, step_id) == 0)
            return s_result(l->o, l->s, i);
    return NULL;
}

/* The session fails at step i: the domain's error, with which step and
   which worker, becomes the session's error. */
static void s_session_fail(orch_t *o, session_t *s, size_t i, const char *code, const char *field,
                           const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void s_session_fail(orch_t *o, session_t *s, size_t i, const char *code, const char *field,
                           const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sdx_value_destroy(&s->error);
    s->error = sdx_value_map_new();
    if (s->error) {
        sdx_map_set_str(s->error, "code", code);
        sdx_map_set_str(s->error, "message", msg);
        if (field && *field)
            sdx_map_set_str(s->error, "field", field);
        if (i < s->wf->nsteps) {
            sdx_map_set_int(s->error, "step", (int64_t)i);
            sdx_map_set_str(s->error, "step_id", s->wf->steps[i].id);
            sdx_map_set_str(s->error, "message_type", s->wf->steps[i].message_type);
            if (s->steps[i].worker[0])
                sdx_map_set_str(s->error, "worker", s->steps[i].worker);
            if (s->steps[i].error)
                sdx_map_set(s->error, "domain_error", sdx_value_clone(s->steps[i].error));
        }
    }
    log_info("session %s (%s) failed: %s", s->id, s->wf->id, msg);
    s_journal(o, "session.failed", s->id, NULL, msg);
    s_session_set(o, s, SS_FAILED);
}

/* Send step s->current. */
static void s_session_submit(orch_t *o, session_t *s)
{
    size_t i = s->current;
    const wf_step_t *ws = &s->wf->steps[i];
    srun_t *r = &s->steps[i];
    if (s_must_wait(o, ws->message_type, s->waiting_for, sizeof s->waiting_for)) {
        s_work(o, false, s); /* looked at again next tick */
        return;
    }
    char err[512];
    /* the tensors and images of earlier replies move into this request (no
       copy); those replies are stored, so they are re-read when wanted again */
    lookup_t lk = {o, s};
    bool stored = true; /* move only when every reply it reads can be re-read */
    for (size_t k = 0; k < ws->ninputs; k++)
        for (size_t j = 0; ws->inputs[k].step && j < s->wf->nsteps; j++)
            if (strcmp(s->wf->steps[j].id, ws->inputs[k].step) == 0 &&
                !s->steps[j].result_path[0] && !s->steps[j].result_inline)
                stored = false;
    sdx_value_t *data =
        wf_step_request_move(ws, s->config, s_step_data, &lk, stored, err, sizeof err);
    for (size_t k = 0; k < ws->ninputs; k++)
        for (size_t j = 0; ws->inputs[k].step && j < s->wf->nsteps; j++)
            if (strcmp(s->wf->steps[j].id, ws->inputs[k].step) == 0 &&
                (s->steps[j].result_path[0] || s->steps[j].result_inline))
                sdx_value_destroy(&s->steps[j].result);
    if (!data) {
        r->state = PS_FAILED;
        r->finished_ms = sdx_clock_unix_ms();
        r->error = sdx_error_value(SDX_ERR_INVALID_REQUEST, "inputs", err);
        s_db_step(o, s, i);
        s_session_fail(o, s, i, "invalid_request", "inputs", "step %zu (%s): %s", i + 1, ws->id,
                       err);
        return;
    }
    uint64_t tok = s_op_new(o, OP_STEP, s->id, i);
    char rid[ID_MAX + 80];
    snprintf(rid, sizeof rid, "%s.%s.%d", s->id, ws->id, r->attempts + 1);
    int64_t timeout = ws->timeout_ms > 0 ? ws->timeout_ms : s->timeout_ms;
    sdx_fault_t f;
    sdx_fault_clear(&f);
    r->attempts++;
    r->started_ms = sdx_clock_unix_ms();
    r->finished_ms = 0;
    r->worker[0] = '\0';
    r->progress_step = r->progress_total = 0;
    sdx_value_destroy(&r->error);
    if (!tok || o->host.submit(o->host.ctx, tok, ws->message_type, rid, s->id, data, s->priority,
                               timeout, r->key, sizeof r->key, &f) != 0) {
        if (tok)
            s_op_drop(o, tok);
        if (!tok)
            sdx_fault_set(&f, SDX_ERR_INTERNAL, NULL, "out of memory");
        r->state = PS_FAILED;
        r->finished_ms = sdx_clock_unix_ms();
        r->error = sdx_fault_value(&f);
        s_db_step(o, s, i);
        s_session_fail(o, s, i, sdx_error_name(f.code), f.field,
                       "step %zu (%s, %s) was refused: %s", i + 1, ws->id, ws->message_type,
                       f.message);
        return;
    }
    r->token = tok;
    r->state = PS_RUNNING;
    s_db_step(o, s, i);
    s_session_event(o, s, "step_started", i);
}

/* Move a running session on: next step, pause point, or the end. */
static void s_session_advance(orch_t *o, session_t *s)
{
    if (s->state != SS_RUNNING)
        return;
    if (s->current < s->wf->nsteps && s->steps[s->current].state == PS_RUNNING)
        return;
    if (s->current >= s->wf->nsteps) {
        s_journal(o, "session.completed", s->id, NULL, NULL);
        s_session_set(o, s, SS_COMPLETED);
        return;
    }
    if (s->pause_req) {
        s->pause_req = false;
        s_session_set(o, s, SS_PAUSED);
        return;
    }
    s_session_submit(o, s);
}

static void s_session_result(orch_t *o, session_t *s, size_t i, res_t *res)
{
    srun_t *r = &s->steps[i];
    const wf_step_t *ws = &s->wf->steps[i];
    r->token = 0;
    r->key[0] = '\0';
    r->finished_ms = sdx_clock_unix_ms();
    snprintf(r->worker, sizeof r->worker, "%s", res->worker);
    if (res->ok) {
        r->state = PS_COMPLETED;
        r->result = res->data ? res->data : sdx_value_map_new();
        res->data = NULL;
        /* small results in the row, large ones (tensors, images) in a file */
        uint8_t *blob = NULL;
        size_t blen = 0;
        if (r->result && sdx_msgpack_encode(r->result, &blob, &blen) == 0 &&
            blen > INLINE_RESULT_MAX && o->state_dir[0]) {
            char dir[1200], err[256];
            snprintf(dir, sizeof dir, "%s/results/%s", o->state_dir, s->id);
            snprintf(r->result_path, sizeof r->result_path, "%s/%zu.msgpack", dir, i);
            if (out_mkdirs(dir) != 0 ||
                out_save_atomic_ex(r->result_path, blob, blen, false, err, sizeof err) != 0) {
                log_error("session %s: cannot write %s: %s", s->id, r->result_path,
                          errno ? strerror(errno) : err);
                r->result_path[0] = '\0';
            }
            free(blob);
            blob = NULL;
        }
        r->result_inline = blob != NULL;
        s_db_step_blob(o, s, i, blob, blen);
        s->current = i + 1;
        s_db_session(o, s, false);
        s_session_event(o, s, "step_finished", i);
        s_session_advance(o, s);
        return;
    }
    const char *code = sdx_map_str(res->error, "code", "internal");
    r->error = res->error ? sdx_value_clone(res->error) : NULL;
    if (strcmp(code, "cancelled") != 0 && r->attempts <= ws->retry) {
        log_info("session %s step %s failed (%s), retrying (%d of %d)", s->id, ws->id, code,
                 r->attempts, ws->retry + 1);
        s_session_event(o, s, "step_retry", i);
        s_session_submit(o, s);
        return;
    }
    r->state = strcmp(code, "cancelled") == 0 ? PS_CANCELLED : PS_FAILED;
    s_db_step(o, s, i);
    s_session_event(o, s, "step_finished", i);
    s_session_fail(o, s, i, code, sdx_map_str(res->error, "field", NULL),
                   "step %zu of %zu (%s: %s) failed on %s: %s", i + 1, s->wf->nsteps, ws->id,
                   ws->message_type, r->worker[0] ? r->worker : "no worker",
                   sdx_map_str(res->error, "message", "(no message)"));
}

/* ------------------------------------------------------------ batches */

static void s_batch_event(orch_t *o, const batch_t *b, const char *event, size_t item)
{
    sdx_value_t *v = sdx_value_map_new();
    if (!v)
        return;
    sdx_map_set_str(v, "event", event);
    sdx_map_set_str(v, "batch_id", b->id);
    sdx_map_set_str(v, "status", s_bstate[b->state]);
    sdx_map_set_int(v, "total", (int64_t)b->n);
    sdx_map_set_int(v, "done", b->done);
    sdx_map_set_int(v, "failed", b->failed);
    sdx_map_set_int(v, "running", b->running);
    if (item < b->n) {
        const bitem_t *it = &b->items[item];
        sdx_map_set_int(v, "item", (int64_t)item);
        sdx_map_set_str(v, "item_status", s_pstate[it->state]);
        sdx_map_set_int(v, "attempts", it->attempts);
        if (it->worker[0])
            sdx_map_set_str(v, "worker", it->worker);
        if (it->error)
            sdx_map_set(v, "error", sdx_value_clone(it->error));
    }
    s_publish(o, "batch", b->id, v);
}

static void s_batch_set(orch_t *o, batch_t *b, bstate_t st)
{
    b->state = st;
    if (st == BS_RUNNING && !b->started_ms)
        b->started_ms = sdx_clock_unix_ms();
    if (s_batch_finished(b)) {
        b->finished_ms = sdx_clock_unix_ms();
        o->finished_b++;
    }
    s_db_batch(o, b, false);
    s_batch_event(o, b, s_bstate[st], (size_t)-1);
    s_work(o, true, b);
}

/* Sub-batch size: the preferred size, or with dynamic sizing what the
   memory the device workers report leaves below the threshold: at or above
   it 1, below it the preferred size plus the headroom's share of the rest
   up to max_batch_size. */
static int s_sub_size(orch_t *o, const batch_t *b, double *frac_out)
{
    const bconf_t *c = &b->conf;
    int size = c->preferred;
    double frac = -1;
    if (c->dynamic && o->host.memory) {
        int64_t fr = -1, tot = -1;
        o->host.memory(o->host.ctx, &fr, &tot, &frac);
        if (frac >= 0) {
            if (frac >= c->threshold)
                size = 1;
            else
                size = c->preferred + (int)floor((c->max_size - c->preferred) *
                                                 (c->threshold - frac) / c->threshold);
        }
    }
    *frac_out = frac;
    return size < 1 ? 1 : size > c->max_size ? c->max_size : size;
}

static void s_item_submit(orch_t *o, batch_t *b, size_t i)
{
    bitem_t *it = &b->items[i];
    uint64_t tok = s_op_new(o, OP_ITEM, b->id, i);
    char rid[ID_MAX + 40];
    snprintf(rid, sizeof rid, "%s.%zu.%d", b->id, i, it->runs + 1);
    sdx_fault_t f;
    sdx_fault_clear(&f);
    sdx_value_t *data = sdx_value_clone(it->request);
    it->attempts++;
    it->runs++;
    it->started_ms = sdx_clock_unix_ms();
    it->worker[0] = '\0';
    sdx_value_destroy(&it->error);
    it->state = PS_RUNNING;
    b->running++;
    if (!tok || !data ||
        o->host.submit(o->host.ctx, tok, b->message_type, rid, NULL, data, b->priority,
                       b->timeout_ms, it->key, sizeof it->key, &f) != 0) {
        if (tok)
            s_op_drop(o, tok);
        if (!tok || !data)
            sdx_fault_set(&f, SDX_ERR_INTERNAL, NULL, "out of memory");
        /* refused at once (no worker, invalid item): the same path as a
           failed reply, queued so that the batch loop is not re-entered */
        res_t *r = calloc(1, sizeof *r);
        if (r) {
            r->token = s_op_new(o, OP_ITEM, b->id, i);
            r->error = sdx_fault_value(&f);
            it->token = r->token;
            if (o->rq_tail)
                o->rq_tail->next = r;
            else
                o->rq_head = r;
            o->rq_tail = r;
        }
        s_db_item(o, b, i, false);
        return;
    }
    it->token = tok;
    s_db_item(o, b, i, false);
}

/* Fill the free sub-batch slots with pending items. */
static void s_batch_advance(orch_t *o, batch_t *b)
{
    if (b->state != BS_RUNNING)
        return;
    if ((size_t)(b->done + b->failed) == b->n) {
        s_journal(o, "batch.finished", b->id, NULL, NULL);
        s_batch_set(o, b, b->done == 0 && b->n > 0 ? BS_FAILED : BS_COMPLETED);
        return;
    }
    if (s_must_wait(o, b->message_type, b->waiting_for, sizeof b->waiting_for)) {
        s_work(o, true, b);
        return;
    }
    int slots = b->conf.parallel ? b->conf.max_parallel : 1;
    size_t next = b->cursor;
    while (b->subs_running < slots) {
        while (next < b->n && (b->items[next].state != PS_PENDING))
            next++;
        if (next >= b->n)
            break;
        double frac;
        int size = s_sub_size(o, b, &frac);
        if (b->nsubs == b->subs_cap) {
            size_t cap = b->subs_cap ? b->subs_cap * 2 : 8;
            bsub_t *ns = realloc(b->subs, cap * sizeof *ns);
            if (!ns)
                return;
            b->subs = ns;
            b->subs_cap = cap;
        }
        int si = (int)b->nsubs++;
        bsub_t *sb = &b->subs[si];
        memset(sb, 0, sizeof *sb);
        sb->size = 0;
        sb->started_ms = sdx_clock_unix_ms();
        sb->mem_fraction = frac;
        b->subs_running++;
        for (; next < b->n && sb->size < size; next++) {
            if (b->items[next].state != PS_PENDING)
                continue;
            b->cursor = next + 1;
            b->items[next].sub = si;
            sb->size++;
            sb->running++;
            s_item_submit(o, b, next);
            if (b->state != BS_RUNNING)
                return;
        }
    }
}

/* Save the images of an item's reply as files and return their list; other
   replies are kept as one msgpack file. */
static sdx_value_t *s_item_outputs(orch_t *o, batch_t *b, size_t i, const sdx_value_t *data)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/batches/%s", o->outputs_dir, b->id);
    sdx_value_t *list = sdx_value_array_new();
    if (list && !b->dir_made && out_mkdirs(dir) == 0)
        b->dir_made = true;
    if (!list || !b->dir_made) {
        if (list)
            log_error("batch %s: cannot make %s: %s", b->id, dir, strerror(errno));
        sdx_value_destroy(&list);
        return NULL;
    }
    const sdx_value_t *images = sdx_map_get(data, "images");
    size_t n = sdx_array_len(images);
    for (size_t k = 0; k < n; k++) {
        const sdx_value_t *im = sdx_array_at(images, k);
        const sdx_value_t *bin = sdx_map_get(im, "image");
        if (!bin || bin->type != SDX_BIN)
            continue;
        const char *fmt = sdx_map_str(im, "format", sdx_map_str(data, "format", "png"));
        char path[PATH_MAX + 64], err[256], hex[65];
        if (n > 1)
            snprintf(path, sizeof path, "%s/%05zu-%zu.%s", dir, i, k, fmt);
        else
            snprintf(path, sizeof path, "%s/%05zu.%s", dir, i, fmt);
        if (out_save_atomic(path, bin->u.bin.ptr, bin->u.bin.len, err, sizeof err) != 0) {
            log_error("batch %s item %zu: %s", b->id, i, err);
            sdx_value_destroy(&list);
            return NULL;
        }
        out_sha256_hex(bin->u.bin.ptr, bin->u.bin.len, hex);
        sdx_value_t *e = sdx_value_map_new();
        if (!e)
            continue;
        sdx_map_set_str(e, "path", path);
        sdx_map_set_str(e, "sha256", hex);
        sdx_map_set_int(e, "bytes", (int64_t)bin->u.bin.len);
        sdx_map_set_str(e, "format", fmt);
        sdx_map_set_int(e, "width", sdx_map_int(im, "width", 0));
        sdx_map_set_int(e, "height", sdx_map_int(im, "height", 0));
        sdx_map_set_int(e, "seed", sdx_map_int(im, "seed", sdx_map_int(data, "seed", -1)));
        sdx_array_push(list, e);
    }
    if (sdx_array_len(list) == 0) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%05zu.msgpack", dir, i);
        sdx_value_t empty = {.type = SDX_MAP};
        if (s_write_value(path, data ? data : &empty) == 0) {
            sdx_value_t *e = sdx_value_map_new();
            if (e) {
                sdx_map_set_str(e, "path", path);
                sdx_map_set_str(e, "format", "msgpack");
                sdx_array_push(list, e);
            }
        }
    }
    return list;
}

static void s_sub_item_done(batch_t *b, const bitem_t *it)
{
    if (it->sub < 0 || (size_t)it->sub >= b->nsubs)
        return;
    bsub_t *sb = &b->subs[it->sub];
    sb->running--;
    sb->done++;
    if (sb->running <= 0) {
        sb->finished_ms = sdx_clock_unix_ms();
        b->subs_running--;
    }
}

static void s_batch_result(orch_t *o, batch_t *b, size_t i, res_t *res)
{
    bitem_t *it = &b->items[i];
    it->token = 0;
    it->key[0] = '\0';
    b->running--;
    snprintf(it->worker, sizeof it->worker, "%s", res->worker);
    if (res->ok) {
        sdx_value_t *outs = s_item_outputs(o, b, i, res->data);
        if (outs) {
            it->state = PS_COMPLETED;
            it->finished_ms = sdx_clock_unix_ms();
            it->outputs = outs;
            b->done++;
            b->images += (int64_t)sdx_array_len(outs);
            s_db_item(o, b, i, false);
            s_sub_item_done(b, it);
            s_batch_event(o, b, "item_done", i);
            s_batch_advance(o, b);
            return;
        }
        sdx_value_destroy(&it->error);
        it->error = sdx_error_value(SDX_ERR_INTERNAL, NULL,
                                    "the broker could not write the item's outputs");
    } else {
        sdx_value_destroy(&it->error);
        it->error = res->error ? sdx_value_clone(res->error) : NULL;
    }
    const char *code = sdx_map_str(it->error, "code", "internal");
    if (b->state == BS_RUNNING && strcmp(code, "cancelled") != 0 && it->attempts < ITEM_TRIES) {
        log_info("batch %s item %zu failed (%s): trying it once more", b->id, i, code);
        it->state = PS_PENDING;
        s_item_submit(o, b, i);
        return;
    }
    it->state = strcmp(code, "cancelled") == 0 ? PS_CANCELLED : PS_FAILED;
    it->finished_ms = sdx_clock_unix_ms();
    b->failed++;
    s_db_item(o, b, i, false);
    s_sub_item_done(b, it);
    s_batch_event(o, b, "item_failed", i);
    s_batch_advance(o, b);
}

/* ------------------------------------------------------- result queue */

void orch_result(orch_t *o, uint64_t token, bool ok, sdx_value_t *data, const sdx_value_t *error,
                 const char *worker)
{
    res_t *r = calloc(1, sizeof *r);
    if (!r) {
        sdx_value_destroy(&data);
        return;
    }
    r->token = token;
    r->ok = ok;
    r->data = data;
    r->error = error ? sdx_value_clone(error) : NULL;
    snprintf(r->worker, sizeof r->worker, "%s", worker ? worker : "");
    if (o->rq_tail)
        o->rq_tail->next = r;
    else
        o->rq_head = r;
    o->rq_tail = r;
}

void orch_progress(orch_t *o, uint64_t token, int64_t step, int64_t total)
{
    op_t *op = idmap_get(&o->ops, &token, sizeof token);
    if (!op || op->kind != OP_STEP)
        return;
    session_t *s = s_session_find(o, op->owner);
    if (!s || op->idx >= s->wf->nsteps || s->steps[op->idx].token != token)
        return;
    s->steps[op->idx].progress_step = step;
    s->steps[op->idx].progress_total = total;
    sdx_value_t *b = sdx_value_map_new();
    if (!b)
        return;
    sdx_map_set_str(b, "event", "progress");
    sdx_map_set_str(b, "session_id", s->id);
    sdx_map_set_int(b, "step", (int64_t)op->idx);
    sdx_map_set_str(b, "step_id", s->wf->steps[op->idx].id);
    sdx_map_set_int(b, "progress_step", step);
    sdx_map_set_int(b, "progress_total", total);
    s_publish(o, "session", s->id, b);
    /* progress changes nothing durable: out now, not at the next tick's
       commit (up to a heartbeat later); inside a transaction it keeps its
       place behind that transaction's events */
    if (!o->in_tx)
        s_flush_events(o);
}

static void s_handle_result(orch_t *o, res_t *r)
{
    op_t *op = idmap_del(&o->ops, &r->token, sizeof r->token);
    if (!op)
        return;
    const char *code = r->ok ? NULL : sdx_map_str(r->error, "code", "internal");
    if (o->stopping && code && strcmp(code, "shutting_down") == 0) {
        free(op); /* stays as stored: resumes at the next start */
        return;
    }
    if (op->kind == OP_STEP) {
        session_t *s = s_session_find(o, op->owner);
        if (s && op->idx < s->wf->nsteps && s->steps[op->idx].token == r->token)
            s_session_result(o, s, op->idx, r);
    } else {
        batch_t *b = s_batch_find(o, op->owner);
        if (b && op->idx < b->n && b->items[op->idx].token == r->token)
            s_batch_result(o, b, op->idx, r);
    }
    free(op);
}

static void s_prune(orch_t *o);

int64_t orch_tick(orch_t *o)
{
    if (!o->rq_head && !o->nwork)
        return -1;
    s_tx_begin(o);
    for (int guard = 0; guard < 100000 && o->rq_head; guard++) {
        res_t *r = o->rq_head;
        o->rq_head = r->next;
        if (!o->rq_head)
            o->rq_tail = NULL;
        s_handle_result(o, r);
        sdx_value_destroy(&r->data);
        sdx_value_destroy(&r->error);
        free(r);
    }
    if (o->nwork && !o->stopping) {
        /* this tick's list; what it adds (or what still waits) is the next's */
        struct work *list = o->work;
        size_t n = o->nwork;
        o->work = NULL;
        o->nwork = o->work_cap = 0;
        for (size_t i = 0; i < n; i++) {
            if (!list[i].p)
                continue;
            if (list[i].batch) {
                batch_t *b = list[i].p;
                b->in_work = false;
                s_batch_advance(o, b);
            } else {
                session_t *s = list[i].p;
                s->in_work = false;
                if (s->state == SS_QUEUED)
                    s_session_set(o, s, SS_RUNNING);
                s_session_advance(o, s);
            }
        }
        free(list);
        if (o->finished_s > o->keep_finished || o->finished_b > o->keep_finished)
            s_prune(o);
    }
    s_tx_end(o);
    return o->rq_head ? 0 : -1;
}

void orch_stopping(orch_t *o)
{
    o->stopping = true;
}

/* -------------------------------------------------------- delete, prune */

static void s_session_remove(orch_t *o, session_t *s)
{
    sqlite3_stmt *st = s_prep(o, "DELETE FROM sessions WHERE id=?");
    if (st) {
        s_bind_text(st, 1, s->id);
        s_step(o, st);
    }
    if (o->state_dir[0]) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/results/%s", o->state_dir, s->id);
        s_rm_dir(dir);
    }
    for (session_t **p = &o->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    if (s_session_finished(s) && o->finished_s > 0)
        o->finished_s--;
    s_unwork(o, s);
    s_session_free(s);
}

static void s_batch_remove(orch_t *o, batch_t *b, bool files)
{
    sqlite3_stmt *st = s_prep(o, "DELETE FROM batches WHERE id=?");
    if (st) {
        s_bind_text(st, 1, b->id);
        s_step(o, st);
    }
    if (files) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/batches/%s", o->outputs_dir, b->id);
        s_rm_dir(dir);
    }
    for (batch_t **p = &o->batches; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    if (s_batch_finished(b) && o->finished_b > 0)
        o->finished_b--;
    s_unwork(o, b);
    s_batch_free(b);
}

/* Keep at most keep_finished finished sessions and batches (the oldest go;
   a batch's image files stay: they are the user's outputs), and the last
   100000 journal rows. */
static void s_prune(orch_t *o)
{
    if (++o->prunes % 256 == 0)
        s_exec(o, "DELETE FROM journal WHERE seq <= (SELECT max(seq) - 100000 FROM journal)");
    int64_t n = 0;
    for (session_t *s = o->sessions, *next; s; s = next) {
        next = s->next;
        if (s_session_finished(s) && ++n > o->keep_finished)
            s_session_remove(o, s);
    }
    n = 0;
    for (batch_t *b = o->batches, *next; b; b = next) {
        next = b->next;
        if (s_batch_finished(b) && ++n > o->keep_finished)
            s_batch_remove(o, b, false);
    }
}

/* ------------------------------------------------------------ loading */

static int s_model_check(void *ud, const char *name)
{
    orch_t *o = ud;
    if (!o->models_root[0])
        return -1;
    char p[PATH_MAX + 300];
    struct stat sb;
    static const char *const ext[] = {"", ".safetensors", ".ckpt", ".bin"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        snprintf(p, sizeof p, "%s/%s%s", o->models_root, name, ext[i]);
        if (stat(p, &sb) == 0)
            return 1;
    }
    return 0;
}

static void s_refused(void *ud, const char *file, int line, const char *reason)
{
    orch_t *o = ud;
    log_warn("workflow %s:%d refused: %s (the last good definition stays)", file, line, reason);
    if (o->nrefused >= MAX_REFUSED)
        return;
    refused_t *r = &o->refused[o->nrefused++];
    snprintf(r->file, sizeof r->file, "%s", file);
    r->line = line;
    snprintf(r->reason, sizeof r->reason, "%s", reason);
}

int orch_reload(orch_t *o)
{
    if (!o->workflows_dir[0])
        return 0;
    wf_set_t fresh = {0};
    char err[512];
    o->nrefused = 0;
    int bad = wf_load_dir(o->workflows_dir, o->cat, s_model_check, o, s_refused, o, &fresh, err,
                          sizeof err);
    if (bad < 0) {
        log_error("workflows %s: %s (keeping the %zu loaded)", o->workflows_dir, err, o->wfs.n);
        wf_set_clear(&fresh);
        s_refused(o, o->workflows_dir, 0, err);
        return 1;
    }
    /* a refused file keeps the last good definition of its id: carry over
       every old definition whose id the new set lacks and whose file was
       refused this time */
    for (size_t i = 0; i < o->wfs.n; i++) {
        workflow_t *old = o->wfs.items[i];
        if (wf_set_find(&fresh, old->id))
            continue;
        bool refused = false;
        for (int k = 0; k < o->nrefused; k++)
            if (strcmp(o->refused[k].file, old->file) == 0)
                refused = true;
        if (!refused)
            continue;
        workflow_t **items = realloc(fresh.items, (fresh.n + 1) * sizeof *items);
        if (!items)
            break;
        fresh.items = items;
        fresh.items[fresh.n++] = old;
        o->wfs.items[i] = NULL;
    }
    wf_set_clear(&o->wfs);
    o->wfs = fresh;
    /* keep the set sorted for wf_set_find */
    for (size_t i = 1; i < o->wfs.n; i++)
        for (size_t k = i; k > 0 && strcmp(o->wfs.items[k - 1]->id, o->wfs.items[k]->id) > 0; k--) {
            workflow_t *t = o->wfs.items[k];
            o->wfs.items[k] = o->wfs.items[k - 1];
            o->wfs.items[k - 1] = t;
        }
    log_info("workflows: %zu loaded from %s, %d refused", o->wfs.n, o->workflows_dir, bad);
    return bad;
}

static void s_load_sessions(orch_t *o)
{
    sqlite3_stmt *st = s_prep(o, "SELECT id, workflow, config, status, current_step, priority, "
                                 "timeout_ms, pause_req, error, request_id, created_ms, "
                                 "started_ms, finished_ms FROM sessions ORDER BY created_ms");
    if (!st)
        return;
    int resumed = 0, n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        session_t *s = calloc(1, sizeof *s);
        if (!s)
            break;
        snprintf(s->id, sizeof s->id, "%s", s_col_text(st, 0));
        sdx_value_t *wv = s_col_value(st, 1);
        char err[512] = "";
        s->wf = wv ? wf_from_value(wv, o->cat, NULL, NULL, err, sizeof err) : NULL;
        sdx_value_destroy(&wv);
        if (!s->wf) {
            log_error("session %s: its stored workflow no longer loads (%s): left out", s->id, err);
            free(s);
            continue;
        }
        s->config = s_col_value(st, 2);
        int state = s_state_parse(s_col_text(st, 3), s_sstate, 6);
        s->state = state < 0 ? SS_FAILED : (sstate_t)state;
        s->current = (size_t)sqlite3_column_int64(st, 4);
        s->priority = sqlite3_column_int(st, 5);
        s->timeout_ms = sqlite3_column_int64(st, 6);
        s->pause_req = sqlite3_column_int(st, 7) != 0;
        s->error = s_col_value(st, 8);
        snprintf(s->request_id, sizeof s->request_id, "%s", s_col_text(st, 9));
        s->created_ms = sqlite3_column_int64(st, 10);
        s->started_ms = sqlite3_column_int64(st, 11);
        s->finished_ms = sqlite3_column_int64(st, 12);
        s->steps = calloc(s->wf->nsteps ? s->wf->nsteps : 1, sizeof *s->steps);
        if (!s->steps) {
            s_session_free(s);
            break;
        }
        sqlite3_stmt *ss = s_prep(o, "SELECT idx, status, attempts, worker, started_ms, "
                                     "finished_ms, result_path, error, result FROM session_steps "
                                     "WHERE session_id=? ORDER BY idx");
        if (ss) {
            s_bind_text(ss, 1, s->id);
            while (sqlite3_step(ss) == SQLITE_ROW) {
                size_t i = (size_t)sqlite3_column_int64(ss, 0);
                if (i >= s->wf->nsteps)
                    continue;
                srun_t *r = &s->steps[i];
                int ps = s_state_parse(s_col_text(ss, 1), s_pstate, 5);
                r->state = ps < 0 ? PS_PENDING : (pstate_t)ps;
                r->attempts = sqlite3_column_int(ss, 2);
                snprintf(r->worker, sizeof r->worker, "%s", s_col_text(ss, 3));
                r->started_ms = sqlite3_column_int64(ss, 4);
                r->finished_ms = sqlite3_column_int64(ss, 5);
                snprintf(r->result_path, sizeof r->result_path, "%s", s_col_text(ss, 6));
                r->result = s_col_value(ss, 8);
                r->result_inline = r->result != NULL;
                r->error = s_col_value(ss, 7);
                /* a step that was running when the broker went runs again */
                if (r->state == PS_RUNNING) {
                    r->state = PS_PENDING;
                    r->attempts = r->attempts > 0 ? r->attempts - 1 : 0;
                }
            }
            sqlite3_finalize(ss);
        }
        if (s->state == SS_RUNNING || s->state == SS_QUEUED) {
            resumed++;
            s_journal(o, "session.resumed", s->id, NULL, "broker restart");
        }
        s->next = o->sessions;
        o->sessions = s;
        n++;
    }
    sqlite3_finalize(st);
    if (n)
        log_info("state: %d session(s) loaded, %d resume", n, resumed);
}

static void s_load_batches(orch_t *o)
{
    sqlite3_stmt *st = s_prep(o, "SELECT id, name, message_type, config, status, total, priority, "
                                 "timeout_ms, request_id, created_ms, started_ms, finished_ms "
                                 "FROM batches ORDER BY created_ms");
    if (!st)
        return;
    int n = 0, resumed = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        batch_t *b = calloc(1, sizeof *b);
        if (!b)
            break;
        snprintf(b->id, sizeof b->id, "%s", s_col_text(st, 0));
        snprintf(b->name, sizeof b->name, "%s", s_col_text(st, 1));
        snprintf(b->message_type, sizeof b->message_type, "%s", s_col_text(st, 2));
        sdx_value_t *cv = s_col_value(st, 3);
        b->conf.total_images = (int)sdx_map_int(cv, "total_images", 1);
        b->conf.preferred = (int)sdx_map_int(cv, "preferred_batch_size", 1);
        b->conf.max_size = (int)sdx_map_int(cv, "max_batch_size", 4);
        b->conf.dynamic = sdx_map_bool(cv, "enable_dynamic_sizing", true);
        b->conf.threshold = sdx_map_num(cv, "memory_threshold", 0.8);
        b->conf.parallel = sdx_map_bool(cv, "parallel_processing", false);
        b->conf.max_parallel = (int)sdx_map_int(cv, "max_parallel_batches", 2);
        sdx_value_destroy(&cv);
        int bs = s_state_parse(s_col_text(st, 4), s_bstate, 5);
        b->state = bs < 0 ? BS_FAILED : (bstate_t)bs;
        size_t total = (size_t)sqlite3_column_int64(st, 5);
        b->priority = sqlite3_column_int(st, 6);
        b->timeout_ms = sqlite3_column_int64(st, 7);
        snprintf(b->request_id, sizeof b->request_id, "%s", s_col_text(st, 8));
        b->created_ms = sqlite3_column_int64(st, 9);
        b->started_ms = sqlite3_column_int64(st, 10);
        b->finished_ms = sqlite3_column_int64(st, 11);
        b->items = calloc(total ? total : 1, sizeof *b->items);
        if (!b->items) {
            free(b);
            break;
        }
        b->n = total;
        for (size_t i = 0; i < total; i++)
            b->items[i].sub = -1;
        sqlite3_stmt *is = s_prep(o, "SELECT idx, request, status, attempts, runs, sub_batch, "
                                     "worker, started_ms, finished_ms, outputs, error "
                                     "FROM batch_items WHERE batch_id=? ORDER BY idx");
        if (is) {
            s_bind_text(is, 1, b->id);
            while (sqlite3_step(is) == SQLITE_ROW) {
                size_t i = (size_t)sqlite3_column_int64(is, 0);
                if (i >= total)
                    continue;
                bitem_t *it = &b->items[i];
                it->request = s_col_value(is, 1);
                int ps = s_state_parse(s_col_text(is, 2), s_pstate, 5);
                it->state = ps < 0 ? PS_PENDING : (pstate_t)ps;
                it->attempts = sqlite3_column_int(is, 3);
                it->runs = sqlite3_column_int(is, 4);
                snprintf(it->worker, sizeof it->worker, "%s", s_col_text(is, 6));
                it->started_ms = sqlite3_column_int64(is, 7);
                it->finished_ms = sqlite3_column_int64(is, 8);
                it->outputs = s_col_value(is, 9);
                it->error = s_col_value(is, 10);
                if (it->state == PS_RUNNING) { /* in flight when the broker went */
                    it->state = PS_PENDING;
                    it->attempts = it->attempts > 0 ? it->attempts - 1 : 0;
                }
                if (it->state == PS_COMPLETED) {
                    b->done++;
                    b->images += (int64_t)sdx_array_len(it->outputs);
                } else if (it->state == PS_FAILED || it->state == PS_CANCELLED) {
                    b->failed++;
                }
            }
            sqlite3_finalize(is);
        }
        for (size_t i = 0; i < total; i++)
            if (!b->items[i].request) { /* a row that never got written: the batch is broken */
                b->items[i].request = sdx_value_map_new();
                b->items[i].state = PS_FAILED;
                b->items[i].error = sdx_error_value(SDX_ERR_INTERNAL, NULL,
                                                    "the item's row is missing from the state "
                                                    "database");
                b->failed++;
            }
        if (b->state == BS_RUNNING) {
            resumed++;
            s_journal(o, "batch.resumed", b->id, NULL, "broker restart");
        }
        b->next = o->batches;
        o->batches = b;
        n++;
    }
    sqlite3_finalize(st);
    if (n)
        log_info("state: %d batch(es) loaded, %d resume", n, resumed);
}

orch_t *orch_new(const orch_config_t *cfg, const orch_host_t *host, char *err, size_t err_len)
{
    orch_t *o = calloc(1, sizeof *o);
    if (!o) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    o->host = *host;
    o->cat = cfg->cat;
    idmap_init(&o->ops);
    snprintf(o->workflows_dir, sizeof o->workflows_dir, "%s",
             cfg->workflows_dir ? cfg->workflows_dir : "");
    snprintf(o->state_db, sizeof o->state_db, "%s", cfg->state_db ? cfg->state_db : "");
    snprintf(o->models_root, sizeof o->models_root, "%s", cfg->models_root ? cfg->models_root : "");
    o->step_timeout_ms = cfg->step_timeout_ms > 0 ? cfg->step_timeout_ms : 600000;
    o->keep_finished = cfg->keep_finished > 0 ? cfg->keep_finished : 1000;
    if (o->state_db[0]) {
        snprintf(o->state_dir, sizeof o->state_dir, "%s", o->state_db);
        char *slash = strrchr(o->state_dir, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(o->state_dir, sizeof o->state_dir, ".");
        if (out_mkdirs(o->state_dir) != 0) {
            snprintf(err, err_len, "cannot make the state folder %s: %s", o->state_dir,
                     strerror(errno));
            orch_destroy(&o);
            return NULL;
        }
    }
    if (cfg->outputs_dir && cfg->outputs_dir[0])
        snprintf(o->outputs_dir, sizeof o->outputs_dir, "%s", cfg->outputs_dir);
    else if (o->state_dir[0])
        snprintf(o->outputs_dir, sizeof o->outputs_dir, "%.1000s/outputs", o->state_dir);
    else
        snprintf(o->outputs_dir, sizeof o->outputs_dir, "%s/sdxl-broker-%d/outputs",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    if (s_db_open(o, err, err_len) != 0) {
        orch_destroy(&o);
        return NULL;
    }
    orch_reload(o);
    s_load_sessions(o);
    s_load_batches(o);
    for (session_t *s = o->sessions; s; s = s->next)
        if (s_session_finished(s))
            o->finished_s++;
        else
            s_work(o, false, s);
    for (batch_t *b = o->batches; b; b = b->next)
        if (s_batch_finished(b))
            o->finished_b++;
        else
            s_work(o, true, b);
    return o;
}

void orch_destroy(orch_t **op)
{
    if (!op || !*op)
        return;
    orch_t *o = *op;
    while (o->sessions) {
        session_t *s = o->sessions;
        o->sessions = s->next;
        s_session_free(s);
    }
    while (o->batches) {
        batch_t *b = o->batches;
        o->batches = b->next;
        s_batch_free(b);
    }
    while (o->rq_head) {
        res_t *r = o->rq_head;
        o->rq_head = r->next;
        sdx_value_destroy(&r->data);
        sdx_value_destroy(&r->error);
        free(r);
    }
    while (o->ev_head) {
        ev_t *e = o->ev_head;
        o->ev_head = e->next;
        sdx_value_destroy(&e->body);
        free(e);
    }
    for (size_t i = 0; i < o->ops.cap; i++)
        if (o->ops.slots[i].hash >= 2)
            free(o->ops.slots[i].val);
    idmap_free(&o->ops);
    wf_set_clear(&o->wfs);
    free(o->work);
    if (o->db)
        sqlite3_close(o->db);
    free(o);
    *op = NULL;
}

/* ----------------------------------------------------------- replies */

static sdx_value_t *s_wf_value(const workflow_t *w, const orch_req_t *rq)
{
    sdx_value_t *v = wf_to_value(w);
    /* a .NET TimeSpan: "hh:mm:ss" for System.Text.Json, ticks (100 ns) for
       MessagePack-CSharp */
    if (v && rq->csharp && rq->msgpack)
        sdx_map_set_int(v, "estimated_duration", w->estimated_duration_ms * 10000);
    return v;
}

static void s_page(const sdx_value_t *data, int64_t *offset, int64_t *limit)
{
    *offset = s_get_int(data, "offset", 0);
    *limit = s_get_int(data, "limit", 50);
    if (*offset < 0)
        *offset = 0;
    if (*limit < 1)
        *limit = 1;
    if (*limit > 1000)
        *limit = 1000;
}

/* results: none | summary (default; bins shown as their size) | last (the
   last finished step in full) | all */
static sdx_value_t *s_session_value(orch_t *o, session_t *s, const char *results, bool brief)
{
    sdx_value_t *v = sdx_value_map_new();
    if (!v)
        return NULL;
    sdx_map_set_str(v, "session_id", s->id);
    sdx_map_set_str(v, "workflow_id", s->wf->id);
    sdx_map_set_str(v, "workflow_name", s->wf->name);
    sdx_map_set_str(v, "status", s_sstate[s->state]);
    sdx_map_set_int(v, "current_step", (int64_t)s->current);
    sdx_map_set_int(v, "total_steps", (int64_t)s->wf->nsteps);
    if (s->current < s->wf->nsteps && !s_session_finished(s))
        sdx_map_set_str(v, "current_step_id", s->wf->steps[s->current].id);
    sdx_map_set_bool(v, "pause_requested", s->pause_req);
    if (s->waiting_for[0] && s->state == SS_RUNNING)
        sdx_map_set_str(v, "waiting_for", s->waiting_for);
    sdx_map_set_str(v, "priority", sdx_priority_name((sdx_priority_t)s->priority));
    s_set_time(v, "created_at", "created_ms", s->created_ms);
    s_set_time(v, "started_at", "started_ms", s->started_ms);
    s_set_time(v, "finished_at", "finished_ms", s->finished_ms);
    if (s->started_ms)
        sdx_map_set_int(v, "duration_ms",
                        (s->finished_ms ? s->finished_ms : sdx_clock_unix_ms()) - s->started_ms);
    sdx_map_set(v, "error", s_clone_or_nil(s->error));
    if (brief)
        return v;
    sdx_map_set(v, "configuration", s->config ? sdx_value_clone(s->config) : sdx_value_map_new());
    sdx_value_t *doms = sdx_value_array_new(), *workers = sdx_value_array_new();
    for (int i = 0; doms && i < s->wf->ndomains; i++)
        sdx_array_push(doms, sdx_value_str_new(s->wf->domains[i]));
    sdx_value_t *steps = sdx_value_array_new();
    size_t last = (size_t)-1;
    for (size_t i = 0; i < s->wf->nsteps; i++)
        if (s->steps[i].state == PS_COMPLETED)
            last = i;
    for (size_t i = 0; steps && i < s->wf->nsteps; i++) {
        const wf_step_t *ws = &s->wf->steps[i];
        srun_t *r = &s->steps[i];
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            break;
        sdx_map_set_int(m, "index", (int64_t)i);
        sdx_map_set_str(m, "step_id", ws->id);
        sdx_map_set_str(m, "type", ws->type);
        sdx_map_set_str(m, "operation", ws->operation);
        sdx_map_set_str(m, "message_type", ws->message_type);
        sdx_map_set_str(m, "status", s_pstate[r->state]);
        sdx_map_set_int(m, "attempts", r->attempts);
        sdx_map_set_str(m, "worker", r->worker);
        s_set_time(m, "started_at", "started_ms", r->started_ms);
        s_set_time(m, "finished_at", "finished_ms", r->finished_ms);
        if (r->started_ms && r->finished_ms)
            sdx_map_set_int(m, "duration_ms", r->finished_ms - r->started_ms);
        if (r->state == PS_RUNNING && r->progress_total > 0) {
            sdx_value_t *p = sdx_value_map_new();
            if (p) {
                sdx_map_set_int(p, "step", r->progress_step);
                sdx_map_set_int(p, "total", r->progress_total);
                sdx_map_set(m, "progress", p);
            }
        }
        sdx_map_set(m, "error", s_clone_or_nil(r->error));
        if (r->result_path[0])
            sdx_map_set_str(m, "result_path", r->result_path);
        if (r->state == PS_COMPLETED && strcmp(results, "none") != 0) {
            bool full = strcmp(results, "all") == 0 || (strcmp(results, "last") == 0 && i == last);
            bool loaded = !r->result;
            s_result(o, s, i);
            sdx_map_set(m, "result", full ? s_clone_or_nil(r->result) : s_summary(r->result));
            if (loaded && s_session_finished(s))
                sdx_value_destroy(&r->result);
        }
        if (r->worker[0] && workers) {
            bool seen = false;
            for (size_t k = 0; k < sdx_array_len(workers); k++)
                if (strcmp(sdx_array_at(workers, k)->u.str.ptr, r->worker) == 0)
                    seen = true;
            if (!seen)
                sdx_array_push(workers, sdx_value_str_new(r->worker));
        }
        sdx_array_push(steps, m);
    }
    if (doms)
        sdx_map_set(v, "domains", doms);
    if (workers)
        sdx_map_set(v, "workers", workers);
    if (steps)
        sdx_map_set(v, "steps", steps);
    (void)o;
    return v;
}

static sdx_value_t *s_batch_value(const batch_t *b, bool brief, int64_t ioff, int64_t ilim)
{
    sdx_value_t *v = sdx_value_map_new();
    if (!v)
        return NULL;
    int64_t now = sdx_clock_unix_ms();
    sdx_map_set_str(v, "batch_id", b->id);
    sdx_map_set_str(v, "name", b->name);
    sdx_map_set_str(v, "status", s_bstate[b->state]);
    sdx_map_set_str(v, "message_type", b->message_type);
    sdx_map_set(v, "configuration", s_bconf_value(&b->conf));
    sdx_map_set_int(v, "total_items", (int64_t)b->n);
    sdx_map_set_int(v, "completed_items", b->done);
    sdx_map_set_int(v, "failed_items", b->failed);
    sdx_map_set_int(v, "running_items", b->running);
    sdx_map_set_int(v, "pending_items", (int64_t)b->n - b->done - b->failed - b->running);
    sdx_map_set_int(v, "images", b->images);
    if (b->waiting_for[0] && b->state == BS_RUNNING)
        sdx_map_set_str(v, "waiting_for", b->waiting_for);
    double elapsed =
        b->started_ms ? (double)((b->finished_ms ? b->finished_ms : now) - b->started_ms) / 1000.0
                      : 0;
    double ips = elapsed > 0 ? (double)b->images / elapsed : 0;
    double per_item = b->done > 0 ? elapsed / b->done : 0;
    sdx_map_set_float(v, "images_per_second", ips);
    int64_t left = (int64_t)b->n - b->done - b->failed;
    if (b->state == BS_RUNNING && b->done > 0)
        sdx_map_set_float(v, "eta_s", per_item * (double)left);
    else
        sdx_map_set(v, "eta_s", sdx_value_nil_new());
    sdx_map_set_float(v, "progress", b->n ? (double)(b->done + b->failed) / (double)b->n : 1.0);
    sdx_map_set_str(v, "priority", sdx_priority_name((sdx_priority_t)b->priority));
    s_set_time(v, "created_at", "created_ms", b->created_ms);
    s_set_time(v, "started_at", "started_ms", b->started_ms);
    s_set_time(v, "finished_at", "finished_ms", b->finished_ms);
    if (brief)
        return v;
    sdx_value_t *subs = sdx_value_array_new();
    for (size_t i = 0; subs && i < b->nsubs; i++) {
        const bsub_t *sb = &b->subs[i];
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            break;
        sdx_map_set_int(m, "index", (int64_t)i);
        sdx_map_set_int(m, "size", sb->size);
        sdx_map_set_int(m, "finished_items", sb->done);
        sdx_map_set_int(m, "running_items", sb->running);
        if (sb->mem_fraction >= 0)
            sdx_map_set_float(m, "memory_used_fraction", sb->mem_fraction);
        s_set_time(m, "started_at", "started_ms", sb->started_ms);
        s_set_time(m, "finished_at", "finished_ms", sb->finished_ms);
        sdx_array_push(subs, m);
    }
    if (subs)
        sdx_map_set(v, "sub_batches", subs);
    sdx_value_t *items = sdx_value_array_new();
    for (size_t i = (size_t)ioff; items && i < b->n && (int64_t)(i - (size_t)ioff) < ilim; i++) {
        const bitem_t *it = &b->items[i];
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            break;
        sdx_map_set_int(m, "index", (int64_t)i);
        sdx_map_set_str(m, "status", s_pstate[it->state]);
        sdx_map_set_int(m, "attempts", it->attempts);
        sdx_map_set_int(m, "runs", it->runs);
        sdx_map_set_int(m, "sub_batch", it->sub);
        sdx_map_set_str(m, "worker", it->worker);
        if (it->started_ms && it->finished_ms)
            sdx_map_set_int(m, "duration_ms", it->finished_ms - it->started_ms);
        sdx_map_set(m, "outputs",
                    it->outputs ? sdx_value_clone(it->outputs) : sdx_value_array_new());
        sdx_map_set(m, "error", s_clone_or_nil(it->error));
        sdx_array_push(items, m);
    }
    if (items) {
        sdx_map_set(v, "items", items);
        sdx_map_set_int(v, "items_offset", ioff);
    }
    return v;
}

/* ------------------------------------------------------------ handlers */

static const workflow_t *s_wf_lookup(orch_t *o, const char *id, sdx_fault_t *f, const char *field)
{
    const workflow_t *w = id ? wf_set_find(&o->wfs, id) : NULL;
    if (w)
        return w;
    char list[320] = "";
    size_t off = 0;
    for (size_t i = 0; i < o->wfs.n && off < sizeof list - 70; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "",
                                o->wfs.items[i]->id);
    if (!id)
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, field, "%s is required (workflows: %s)", field,
                      off ? list : "none loaded");
    else
        sdx_fault_set(f, SDX_ERR_NOT_FOUND, field, "no workflow \"%s\" (workflows: %s)", id,
                      off ? list : "none loaded");
    return NULL;
}

static sdx_value_t *s_h_workflows_list(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                       sdx_fault_t *f)
{
    int64_t off, lim;
    s_page(data, &off, &lim);
    sdx_value_t *v = sdx_value_map_new(), *list = sdx_value_array_new(),
                *ref = sdx_value_array_new();
    if (!v || !list || !ref) {
        sdx_value_destroy(&v);
        sdx_value_destroy(&list);
        sdx_value_destroy(&ref);
        return NULL;
    }
    for (size_t i = (size_t)off; i < o->wfs.n && (int64_t)(i - (size_t)off) < lim; i++)
        sdx_array_push(list, s_wf_value(o->wfs.items[i], rq));
    for (int i = 0; i < o->nrefused; i++) {
        sdx_value_t *m = sdx_value_map_new();
        if (!m)
            break;
        sdx_map_set_str(m, "file", o->refused[i].file);
        sdx_map_set_int(m, "line", o->refused[i].line);
        sdx_map_set_str(m, "reason", o->refused[i].reason);
        sdx_array_push(ref, m);
    }
    sdx_map_set(v, "workflows", list);
    sdx_map_set_int(v, "count", (int64_t)sdx_array_len(list));
    sdx_map_set_int(v, "total", (int64_t)o->wfs.n);
    sdx_map_set_int(v, "offset", off);
    sdx_map_set(v, "refused", ref);
    sdx_map_set_str(v, "workflows_dir", o->workflows_dir);
    (void)f;
    return v;
}

static sdx_value_t *s_h_workflow_get(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                     sdx_fault_t *f)
{
    const workflow_t *w = s_wf_lookup(o, s_get_str(data, "workflow_id"), f, "workflow_id");
    return w ? s_wf_value(w, rq) : NULL;
}

/* Can the fleet run w now? Domains with live workers, and the GPU memory
   the device workers report. NULL, or a note (GPU memory not checked). */
static int s_requirements(orch_t *o, const workflow_t *w, sdx_fault_t *f, char *note,
                          size_t note_len)
{
    note[0] = '\0';
    char missing[256] = "";
    size_t off = 0;
    for (int i = 0; i < w->ndomains; i++)
        if (o->host.workers(o->host.ctx, w->domains[i]) <= 0 && off < sizeof missing - 40)
            off += (size_t)snprintf(missing + off, sizeof missing - off, "%s%s", off ? ", " : "",
                                    w->domains[i]);
    if (off) {
        sdx_fault_set(f, SDX_ERR_NO_WORKER, NULL,
                      "workflow %s needs workers of domains %s; none is registered (system.workers "
                      "lists the fleet)",
                      w->id, missing);
        return -1;
    }
    if (w->gpu_memory_mb > 0) {
        int64_t fr = -1, tot = -1;
        double frac = -1;
        o->host.memory(o->host.ctx, &fr, &tot, &frac);
        if (fr < 0)
            snprintf(note, note_len,
                     "gpu_memory_mb %" PRId64 " not checked: no device worker reports a GPU",
                     w->gpu_memory_mb);
        else if (fr < w->gpu_memory_mb * 1024 * 1024) {
            sdx_fault_set(f, SDX_ERR_OUT_OF_MEMORY, NULL,
                          "workflow %s needs %" PRId64 " MiB of free GPU memory; the most free on "
                          "any GPU the device workers report is %" PRId64 " MiB",
                          w->id, w->gpu_memory_mb, fr / (1024 * 1024));
            return -1;
        }
    }
    return 0;
}

static sdx_value_t *s_h_workflow_execute(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                         sdx_fault_t *f)
{
    const sdx_value_t *steps = s_get(data, "steps");
    workflow_t *w = NULL;
    char err[512];
    if (steps) {
        w = wf_from_value(data, o->cat, s_model_check, o, err, sizeof err);
        if (!w) {
            sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "steps", "%s", err);
            return NULL;
        }
    } else {
        const workflow_t *def = s_wf_lookup(o, s_get_str(data, "workflow_id"), f, "workflow_id");
        if (!def)
            return NULL;
        w = wf_clone(def);
        if (!w)
            return NULL;
    }
    char note[256];
    if (s_requirements(o, w, f, note, sizeof note) != 0) {
        wf_destroy(&w);
        return NULL;
    }
    const sdx_value_t *conf = s_get(data, "parameters");
    if (!conf)
        conf = s_get(data, "configuration");
    if (!conf)
        conf = s_get(data, "config");
    if (conf && conf->type != SDX_MAP) {
        wf_destroy(&w);
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "parameters",
                      "parameters (the workflow's configuration) must be a map, not %s",
                      sdx_vtype_name(conf->type));
        return NULL;
    }
    session_t *s = calloc(1, sizeof *s);
    if (!s || !(s->steps = calloc(w->nsteps ? w->nsteps : 1, sizeof *s->steps))) {
        free(s);
        wf_destroy(&w);
        return NULL;
    }
    s_new_id(s->id, sizeof s->id, 's');
    s->wf = w;
    s->config = conf ? sdx_value_clone(conf) : sdx_value_map_new();
    s->priority = rq->priority;
    int64_t t = s_get_int(data, "step_timeout_ms", rq->timeout_ms);
    s->timeout_ms = t > 0 ? t : o->step_timeout_ms;
    snprintf(s->request_id, sizeof s->request_id, "%s", rq->request_id ? rq->request_id : "");
    s->created_ms = sdx_clock_unix_ms();
    bool paused = s_get_bool(data, "start_paused", false);
    s->state = paused ? SS_PAUSED : SS_QUEUED;
    s_db_session(o, s, true);
    for (size_t i = 0; i < w->nsteps; i++)
        s_db_step(o, s, i);
    s_journal(o, "session.created", s->id, rq->request_id, w->id);
    s->next = o->sessions;
    o->sessions = s;
    s_work(o, false, s);
    s_session_event(o, s, s_sstate[s->state], (size_t)-1);
    log_info("session %s: workflow %s (%zu steps) %s", s->id, w->id, w->nsteps,
             paused ? "created paused" : "queued");
    sdx_value_t *v = s_session_value(o, s, "none", false);
    if (v && note[0])
        sdx_map_set_str(v, "note", note);
    return v;
}

static sdx_value_t *s_h_sessions_list(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                      sdx_fault_t *f)
{
    int64_t off, lim;
    s_page(data, &off, &lim);
    const char *status = s_get_str(data, "status");
    const char *wid = s_get_str(data, "workflow_id");
    int64_t since = s_get_int(data, "since_ms", 0), until = s_get_int(data, "until_ms", 0);
    if (status && s_state_parse(status, s_sstate, 6) < 0) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "status",
                      "status \"%s\" is not one of queued, running, paused, completed, failed, "
                      "cancelled",
                      status);
        return NULL;
    }
    sdx_value_t *v = sdx_value_map_new(), *list = sdx_value_array_new();
    if (!v || !list) {
        sdx_value_destroy(&v);
        sdx_value_destroy(&list);
        return NULL;
    }
    int64_t matched = 0;
    for (session_t *s = o->sessions; s; s = s->next) {
        if ((status && strcmp(status, s_sstate[s->state]) != 0) ||
            (wid && strcmp(wid, s->wf->id) != 0) || (since && s->created_ms < since) ||
            (until && s->created_ms > until))
            continue;
        if (matched++ >= off && (int64_t)sdx_array_len(list) < lim)
            sdx_array_push(list, s_session_value(o, s, "none", true));
    }
    sdx_map_set(v, "sessions", list);
    sdx_map_set_int(v, "count", (int64_t)sdx_array_len(list));
    sdx_map_set_int(v, "total", matched);
    sdx_map_set_int(v, "offset", off);
    (void)rq;
    return v;
}

static session_t *s_session_arg(orch_t *o, const sdx_value_t *data, sdx_fault_t *f)
{
    const char *id = s_get_str(data, "session_id");
    if (!id) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "session_id",
                      "session_id is required (processing.sessions_list lists them)");
        return NULL;
    }
    session_t *s = s_session_find(o, id);
    if (!s)
        sdx_fault_set(f, SDX_ERR_NOT_FOUND, "session_id", "no session \"%s\"", id);
    return s;
}

static sdx_value_t *s_h_session_get(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                    sdx_fault_t *f)
{
    session_t *s = s_session_arg(o, data, f);
    if (!s)
        return NULL;
    const char *results = s_get_str(data, "results");
    if (!results)
        results = "summary";
    if (strcmp(results, "none") && strcmp(results, "summary") && strcmp(results, "last") &&
        strcmp(results, "all")) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "results",
                      "results \"%s\" is not one of none, summary, last, all", results);
        return NULL;
    }
    (void)rq;
    return s_session_value(o, s, results, false);
}

static sdx_value_t *s_h_session_control(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                        sdx_fault_t *f)
{
    session_t *s = s_session_arg(o, data, f);
    if (!s)
        return NULL;
    const char *c = s_get_str(data, "control");
    if (!c)
        c = s_get_str(data, "command");
    if (!c)
        c = s_get_str(data, "operation");
    if (!c)
        c = s_get_str(data, "action");
    if (!c || (strcasecmp(c, "pause") && strcasecmp(c, "resume") && strcasecmp(c, "cancel"))) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "control",
                      "control must be pause, resume or cancel%s%s%s", c ? " (got \"" : "",
                      c ? c : "", c ? "\")" : "");
        return NULL;
    }
    if (s_session_finished(s)) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "control",
                      "session %s is %s: it cannot %s any more", s->id, s_sstate[s->state], c);
        return NULL;
    }
    const char *before = s_sstate[s->state];
    if (!strcasecmp(c, "pause")) {
        if (s->state == SS_QUEUED)
            s_session_set(o, s, SS_PAUSED);
        else if (s->state == SS_RUNNING) {
            s->pause_req = true; /* takes effect when the running step ends */
            s_db_session(o, s, false);
            s_session_event(o, s, "pause_requested", (size_t)-1);
            if (s->current >= s->wf->nsteps || s->steps[s->current].state != PS_RUNNING)
                s_session_advance(o, s);
        }
    } else if (!strcasecmp(c, "resume")) {
        s->pause_req = false;
        if (s->state == SS_PAUSED) {
            s_session_set(o, s, SS_RUNNING);
            s_session_advance(o, s);
        } else
            s_db_session(o, s, false);
    } else {
        srun_t *r = s->current < s->wf->nsteps ? &s->steps[s->current] : NULL;
        if (r && r->state == PS_RUNNING) {
            char why[160];
            snprintf(why, sizeof why, "session %s cancelled by processing.session_control", s->id);
            if (r->key[0])
                o->host.cancel(o->host.ctx, r->key, why);
            r->state = PS_CANCELLED;
            r->token = 0; /* its reply (cancelled) is not waited for */
            r->finished_ms = sdx_clock_unix_ms();
            r->error = sdx_error_value(SDX_ERR_CANCELLED, NULL, why);
            s_db_step(o, s, s->current);
        }
        for (size_t i = s->current + (r ? 1 : 0); i < s->wf->nsteps; i++)
            if (s->steps[i].state == PS_PENDING) {
                s->steps[i].state = PS_CANCELLED;
                s_db_step(o, s, i);
            }
        sdx_value_destroy(&s->error);
        s->error = sdx_error_value(SDX_ERR_CANCELLED, NULL, "cancelled by session_control");
        s_session_set(o, s, SS_CANCELLED);
    }
    s_journal(o, "session.control", s->id, rq->request_id, c);
    sdx_value_t *v = s_session_value(o, s, "none", true);
    if (v) {
        sdx_map_set_str(v, "control", c);
        sdx_map_set_str(v, "previous_status", before);
    }
    return v;
}

static sdx_value_t *s_h_session_delete(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                       sdx_fault_t *f)
{
    session_t *s = s_session_arg(o, data, f);
    if (!s)
        return NULL;
    if (!s_session_finished(s)) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "session_id",
                      "session %s is %s: cancel it first (processing.session_control "
                      "{control: cancel}), then delete it",
                      s->id, s_sstate[s->state]);
        return NULL;
    }
    sdx_value_t *v = sdx_value_map_new();
    if (!v)
        return NULL;
    sdx_map_set_str(v, "session_id", s->id);
    sdx_map_set_bool(v, "deleted", true);
    s_journal(o, "session.deleted", s->id, rq->request_id, NULL);
    s_session_remove(o, s);
    return v;
}

/* ------------------------------------------------------------ batches */

static int s_conf_int(const sdx_value_t *src, const char *key, int dflt, int lo, int hi, int *out,
                      sdx_fault_t *f)
{
    const sdx_value_t *v = s_get(src, key);
    if (!v || v->type == SDX_NIL) {
        *out = dflt;
        return 0;
    }
    if (v->type != SDX_INT || v->u.i < lo || v->u.i > hi) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, key, "%s must be an integer %d..%d", key, lo, hi);
        return -1;
    }
    *out = (int)v->u.i;
    return 0;
}

static int s_conf_bool(const sdx_value_t *src, const char *key, bool dflt, bool *out,
                       sdx_fault_t *f)
{
    const sdx_value_t *v = s_get(src, key);
    if (!v || v->type == SDX_NIL) {
        *out = dflt;
        return 0;
    }
    if (v->type != SDX_BOOL) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, key, "%s must be true or false", key);
        return -1;
    }
    *out = v->u.b;
    return 0;
}

/* The BatchConfiguration: in data.configuration (or batch_config, the seed's
   name), else at the top level of data. */
static int s_bconf_parse(const sdx_value_t *data, int nitems, bconf_t *c, sdx_fault_t *f)
{
    const sdx_value_t *src = s_get(data, "configuration");
    if (!src)
        src = s_get(data, "batch_config");
    if (!src)
        src = s_get(data, "batch_configuration");
    if (src && src->type != SDX_MAP) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "configuration",
                      "configuration must be a map (BatchConfiguration)");
        return -1;
    }
    if (!src)
        src = data;
    if (s_conf_int(src, "total_images", nitems > 0 ? nitems : 1, 1, MAX_ITEMS, &c->total_images,
                   f) ||
        s_conf_int(src, "preferred_batch_size", 1, 1, 64, &c->preferred, f) ||
        s_conf_int(src, "max_batch_size", c->preferred > 4 ? c->preferred : 4, 1, 64, &c->max_size,
                   f) ||
        s_conf_bool(src, "enable_dynamic_sizing", true, &c->dynamic, f) ||
        s_conf_bool(src, "parallel_processing", false, &c->parallel, f) ||
        s_conf_int(src, "max_parallel_batches", 2, 1, 64, &c->max_parallel, f))
        return -1;
    const sdx_value_t *th = s_get(src, "memory_threshold");
    c->threshold = 0.8;
    if (th && th->type != SDX_NIL &&
        (!sdx_value_as_double(th, &c->threshold) || c->threshold <= 0 || c->threshold > 1)) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "memory_threshold",
                      "memory_threshold must be a number in (0, 1] (the used fraction of memory "
                      "above which sub-batches shrink to 1)");
        return -1;
    }
    if (c->max_size < c->preferred) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "max_batch_size",
                      "max_batch_size %d is below preferred_batch_size %d", c->max_size,
                      c->preferred);
        return -1;
    }
    if (nitems > 0 && c->total_images != nitems) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "total_images",
                      "total_images is %d but items holds %d requests (give one request with "
                      "total_images, or the list of items)",
                      c->total_images, nitems);
        return -1;
    }
    return 0;
}

static batch_t *s_batch_create(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                               sdx_fault_t *f)
{
    const sdx_value_t *items = s_get(data, "items");
    const char *ikey = "items";
    if (!items) {
        items = s_get(data, "generation_params");
        ikey = "generation_params";
    }
    const sdx_value_t *one = s_get(data, "request");
    if (items && items->type != SDX_ARRAY) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, ikey, "%s must be an array of requests", ikey);
        return NULL;
    }
    if (!items && (!one || one->type != SDX_MAP)) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "items",
                      "a batch needs items (an array of generation requests) or request (one "
                      "request) with total_images");
        return NULL;
    }
    size_t nitems = sdx_array_len(items);
    if (items && (nitems == 0 || nitems > MAX_ITEMS)) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, ikey, "%s must hold 1..%d requests", ikey,
                      MAX_ITEMS);
        return NULL;
    }
    bconf_t conf;
    if (s_bconf_parse(data, (int)nitems, &conf, f) != 0)
        return NULL;
    const char *mt = s_get_str(data, "item_type");
    if (!mt)
        mt = "inference.generate";
    mt = sdx_actions_canonical(mt);
    const sdx_catalog_msg_t *cm = sdx_catalog_find(o->cat, mt);
    const sdx_catalog_domain_t *cd = cm ? sdx_catalog_domain(o->cat, cm->domain) : NULL;
    if (!cm || !cd || cd->by_broker) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "item_type",
                      "item_type \"%s\" is not a message type a worker serves (default "
                      "inference.generate)",
                      mt);
        return NULL;
    }
    batch_t *b = calloc(1, sizeof *b);
    if (!b || !(b->items = calloc((size_t)conf.total_images, sizeof *b->items))) {
        free(b);
        return NULL;
    }
    b->n = (size_t)conf.total_images;
    b->conf = conf;
    snprintf(b->message_type, sizeof b->message_type, "%s", mt);
    snprintf(b->name, sizeof b->name, "%s", s_get_str(data, "name") ? s_get_str(data, "name") : "");
    for (size_t i = 0; i < b->n; i++) {
        bitem_t *it = &b->items[i];
        it->sub = -1;
        const sdx_value_t *src = items ? sdx_array_at(items, i) : one;
        if (!src || src->type != SDX_MAP) {
            sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, ikey, "%s[%zu] must be a map (a request)",
                          ikey, i);
            s_batch_free(b);
            return NULL;
        }
        it->request = sdx_value_clone(src);
        sdx_fault_t e;
        sdx_fault_clear(&e);
        if (!it->request ||
            (o->host.check && o->host.check(o->host.ctx, mt, rq->csharp, &it->request, &e) != 0)) {
            char field[320];
            snprintf(field, sizeof field, "%s%s[%zu]%s%s", items ? ikey : "request", "", i,
                     e.field[0] ? "." : "", e.field);
            if (!items)
                snprintf(field, sizeof field, "request%s%s", e.field[0] ? "." : "", e.field);
            sdx_fault_set(f, e.code ? e.code : SDX_ERR_INTERNAL, field, "%s: %s", field,
                          e.message[0] ? e.message : "out of memory");
            s_batch_free(b);
            return NULL;
        }
        /* one request times total_images: consecutive seeds when one is given */
        sdx_value_t *seed = items ? NULL : sdx_map_get_path(it->request, "hyperparameters.seed");
        if (seed && seed->type == SDX_INT && seed->u.i >= 0)
            seed->u.i += (int64_t)i;
    }
    s_new_id(b->id, sizeof b->id, 'b');
    b->priority = rq->priority;
    int64_t t = s_get_int(data, "item_timeout_ms", rq->timeout_ms);
    b->timeout_ms = t > 0 ? t : o->step_timeout_ms;
    snprintf(b->request_id, sizeof b->request_id, "%s", rq->request_id ? rq->request_id : "");
    b->created_ms = sdx_clock_unix_ms();
    b->state = BS_CREATED;
    s_db_batch(o, b, true); /* in the request's transaction (orch_request) */
    for (size_t i = 0; i < b->n; i++)
        s_db_item(o, b, i, true);
    s_journal(o, "batch.created", b->id, rq->request_id, mt);
    b->next = o->batches;
    o->batches = b;
    log_info("batch %s: %zu %s item(s), sub-batches of %d..%d%s", b->id, b->n, mt, 1, conf.max_size,
             conf.parallel ? ", parallel" : "");
    return b;
}

static batch_t *s_batch_arg(orch_t *o, const sdx_value_t *data, sdx_fault_t *f)
{
    const char *id = s_get_str(data, "batch_id");
    if (!id) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "batch_id",
                      "batch_id is required (processing.batches_list lists them)");
        return NULL;
    }
    batch_t *b = s_batch_find(o, id);
    if (!b)
        sdx_fault_set(f, SDX_ERR_NOT_FOUND, "batch_id", "no batch \"%s\"", id);
    return b;
}

static int s_batch_start(orch_t *o, batch_t *b, const orch_req_t *rq, sdx_fault_t *f)
{
    if (b->state != BS_CREATED) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "batch_id",
                      "batch %s is %s: only a created batch can be executed", b->id,
                      s_bstate[b->state]);
        return -1;
    }
    const char *dot = strchr(b->message_type, '.');
    char dom[64];
    snprintf(dom, sizeof dom, "%.*s", dot ? (int)(dot - b->message_type) : 0, b->message_type);
    if (o->host.workers(o->host.ctx, dom) <= 0) {
        sdx_fault_set(f, SDX_ERR_NO_WORKER, NULL, "batch %s needs %s workers; none is registered",
                      b->id, dom);
        return -1;
    }
    s_journal(o, "batch.execute", b->id, rq->request_id, NULL);
    s_batch_set(o, b, BS_RUNNING);
    return 0;
}

static sdx_value_t *s_h_batch_create(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                     sdx_fault_t *f)
{
    batch_t *b = s_batch_create(o, data, rq, f);
    if (!b)
        return NULL;
    if (s_get_bool(data, "execute", false) && s_batch_start(o, b, rq, f) != 0)
        return NULL; /* the batch stays, created */
    return s_batch_value(b, false, 0, 0);
}

/* The seeds' INFERENCE batch_process: create and execute at once. */
static sdx_value_t *s_h_batch_process(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                      sdx_fault_t *f)
{
    batch_t *b = s_batch_create(o, data, rq, f);
    if (!b || s_batch_start(o, b, rq, f) != 0)
        return NULL;
    return s_batch_value(b, false, 0, 0);
}

static sdx_value_t *s_h_batch_execute(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                      sdx_fault_t *f)
{
    batch_t *b = s_batch_arg(o, data, f);
    if (!b || s_batch_start(o, b, rq, f) != 0)
        return NULL;
    return s_batch_value(b, true, 0, 0);
}

static sdx_value_t *s_h_batches_list(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                     sdx_fault_t *f)
{
    int64_t off, lim;
    s_page(data, &off, &lim);
    const char *status = s_get_str(data, "status");
    int64_t since = s_get_int(data, "since_ms", 0), until = s_get_int(data, "until_ms", 0);
    if (status && s_state_parse(status, s_bstate, 5) < 0) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "status",
                      "status \"%s\" is not one of created, running, completed, failed, cancelled",
                      status);
        return NULL;
    }
    sdx_value_t *v = sdx_value_map_new(), *list = sdx_value_array_new();
    if (!v || !list) {
        sdx_value_destroy(&v);
        sdx_value_destroy(&list);
        return NULL;
    }
    int64_t matched = 0;
    for (batch_t *b = o->batches; b; b = b->next) {
        if ((status && strcmp(status, s_bstate[b->state]) != 0) ||
            (since && b->created_ms < since) || (until && b->created_ms > until))
            continue;
        if (matched++ >= off && (int64_t)sdx_array_len(list) < lim)
            sdx_array_push(list, s_batch_value(b, true, 0, 0));
    }
    sdx_map_set(v, "batches", list);
    sdx_map_set_int(v, "count", (int64_t)sdx_array_len(list));
    sdx_map_set_int(v, "total", matched);
    sdx_map_set_int(v, "offset", off);
    (void)rq;
    return v;
}

static sdx_value_t *s_h_batch_get(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                  sdx_fault_t *f)
{
    batch_t *b = s_batch_arg(o, data, f);
    if (!b)
        return NULL;
    int64_t ioff = s_get_int(data, "items_offset", 0), ilim = s_get_int(data, "items_limit", 1000);
    if (!s_get_bool(data, "items", true))
        ilim = 0;
    (void)rq;
    return s_batch_value(b, false, ioff < 0 ? 0 : ioff, ilim < 0 ? 0 : ilim);
}

static sdx_value_t *s_h_batch_delete(orch_t *o, const sdx_value_t *data, const orch_req_t *rq,
                                     sdx_fault_t *f)
{
    batch_t *b = s_batch_arg(o, data, f);
    if (!b)
        return NULL;
    bool cancel = s_get_bool(data, "cancel", false);
    if (b->state == BS_RUNNING && !cancel) {
        sdx_fault_set(f, SDX_ERR_INVALID_REQUEST, "batch_id",
                      "batch %s is running (%d of %zu items finished): send cancel: true to stop "
                      "its items and delete it",
                      b->id, b->done + b->failed, b->n);
        return NULL;
    }
    int cancelled = 0;
    for (size_t i = 0; i < b->n; i++) {
        bitem_t *it = &b->items[i];
        if (it->state == PS_RUNNING && it->key[0]) {
            o->host.cancel(o->host.ctx, it->key, "its batch was deleted");
            cancelled++;
        }
    }
    bool files = s_get_bool(data, "delete_outputs", false);
    sdx_value_t *v = sdx_value_map_new();
    if (!v)
        return NULL;
    sdx_map_set_str(v, "batch_id", b->id);
    sdx_map_set_bool(v, "deleted", true);
    sdx_map_set_int(v, "cancelled_items", cancelled);
    sdx_map_set_bool(v, "outputs_deleted", files);
    s_journal(o, "batch.deleted", b->id, rq->request_id, cancel ? "cancel" : NULL);
    if (b->state == BS_RUNNING) {
        b->state = BS_CANCELLED;
        o->finished_b++;
        s_batch_event(o, b, "cancelled", (size_t)-1);
    }
    s_batch_remove(o, b, files);
    return v;
}

/* ------------------------------------------------------------ dispatch */

typedef sdx_value_t *(*handler_fn)(orch_t *, const sdx_value_t *, const orch_req_t *,
                                   sdx_fault_t *);
static const struct {
    const char *type;
    handler_fn fn;
} s_handlers[] = {
    {"processing.workflows_list", s_h_workflows_list},
    {"processing.workflow_get", s_h_workflow_get},
    {"processing.workflow_execute", s_h_workflow_execute},
    {"processing.sessions_list", s_h_sessions_list},
    {"processing.session_get", s_h_session_get},
    {"processing.session_control", s_h_session_control},
    {"processing.session_delete", s_h_session_delete},
    {"processing.batches_list", s_h_batches_list},
    {"processing.batch_get", s_h_batch_get},
    {"processing.batch_create", s_h_batch_create},
    {"processing.batch_execute", s_h_batch_execute},
    {"processing.batch_delete", s_h_batch_delete},
    {"processing.batch_process", s_h_batch_process},
};

bool orch_handles(const char *message_type)
{
    for (size_t i = 0; i < sizeof s_handlers / sizeof s_handlers[0]; i++)
        if (strcmp(s_handlers[i].type, message_type) == 0)
            return true;
    return false;
}

sdx_value_t *orch_request(orch_t *o, const char *message_type, const sdx_value_t *data,
                          const orch_req_t *rq, sdx_fault_t *f)
{
    for (size_t i = 0; i < sizeof s_handlers / sizeof s_handlers[0]; i++)
        if (strcmp(s_handlers[i].type, message_type) == 0) {
            s_tx_begin(o);
            sdx_value_t *v = s_handlers[i].fn(o, data, rq, f);
            s_tx_end(o);
            if (!v && f->code == SDX_ERR_NONE)
                sdx_fault_set(f, SDX_ERR_INTERNAL, NULL, "out of memory");
            return v;
        }
    sdx_fault_set(f, SDX_ERR_UNKNOWN_MESSAGE_TYPE, "message_type", "unknown message type %s",
                  message_type);
    return NULL;
}

sdx_value_t *orch_status(orch_t *o)
{
    sdx_value_t *v = sdx_value_map_new(), *ss = sdx_value_map_new(), *bs = sdx_value_map_new();
    if (!v || !ss || !bs) {
        sdx_value_destroy(&v);
        sdx_value_destroy(&ss);
        sdx_value_destroy(&bs);
        return NULL;
    }
    int64_t sc[6] = {0}, bc[5] = {0}, items_running = 0, items_pending = 0;
    for (session_t *s = o->sessions; s; s = s->next)
        sc[s->state]++;
    for (batch_t *b = o->batches; b; b = b->next) {
        bc[b->state]++;
        items_running += b->running;
        if (b->state == BS_RUNNING)
            items_pending += (int64_t)b->n - b->done - b->failed - b->running;
    }
    for (int i = 0; i < 6; i++)
        sdx_map_set_int(ss, s_sstate[i], sc[i]);
    for (int i = 0; i < 5; i++)
        sdx_map_set_int(bs, s_bstate[i], bc[i]);
    sdx_map_set(v, "sessions", ss);
    sdx_map_set(v, "batches", bs);
    sdx_map_set_int(v, "batch_items_running", items_running);
    sdx_map_set_int(v, "batch_items_pending", items_pending);
    sdx_map_set_int(v, "workflows", (int64_t)o->wfs.n);
    sdx_map_set_int(v, "workflows_refused", o->nrefused);
    sdx_map_set_int(v, "internal_requests", (int64_t)idmap_len(&o->ops));
    sdx_map_set_str(v, "state_db", o->state_db[0] ? o->state_db : ":memory:");
    sdx_map_set_str(v, "outputs_dir", o->outputs_dir);
    return v;
}
