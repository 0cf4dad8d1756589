/*  model_catalog.c - see model_catalog.h. The safetensors header is read
    here with cJSON (8-byte little-endian length, then the JSON) rather than
    through workers/sdxl/sdx_safetensors, so that the catalogue builds and
    works without libtorch; the engine, when built, only lends its
    architecture detector through the hook. */
#include "model_catalog.h"

#include "sdx_log.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The safetensors format caps the header at 100 MB. */
#define S_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Models of every kind may sit in subfolders ("sdxl/x", "custom/vae-model"),
   named by their path from the root; this deep at most. */
#define S_MAX_DEPTH 4

static const char *const s_kind_names[MODEL_KIND_COUNT] = {
    "checkpoints", "vae", "lora", "controlnet", "embeddings", "upscalers",
};

/* other spellings a request may use for a kind */
static const struct {
    const char *alias;
    model_kind_t kind;
} s_kind_aliases[] = {
    {"checkpoint", MODEL_CHECKPOINT},
    {"model", MODEL_CHECKPOINT},
    {"models", MODEL_CHECKPOINT},
    {"vaes", MODEL_VAE},
    {"loras", MODEL_LORA},
    {"controlnets", MODEL_CONTROLNET},
    {"embedding", MODEL_EMBEDDING},
    {"textual_inversion", MODEL_EMBEDDING},
    {"textual_inversions", MODEL_EMBEDDING},
    {"upscaler", MODEL_UPSCALER},
};

/* the singular, for messages ("no lora 'x'") */
static const char *const s_kind_one[MODEL_KIND_COUNT] = {
    "checkpoint", "vae", "lora", "controlnet", "embedding", "upscaler",
};

struct model_catalog {
    pthread_mutex_t mu;
    char roots[MODEL_KIND_COUNT][1024];
    char real_roots[MODEL_KIND_COUNT][PATH_MAX]; /* "" when missing */
    model_detect_fn detect;
    sqlite3 *db;
    char db_path[1024];
    model_entry_t *v; /* sorted by kind, name */
    size_t n;
    size_t skipped;
    int64_t hits, computed, rescans;
    double last_scan_ms;
    int64_t last_scan_at_ms;
};

const char *model_kind_name(model_kind_t k)
{
    return k >= 0 && k < MODEL_KIND_COUNT ? s_kind_names[k] : "unknown";
}

int model_kind_parse(const char *s)
{
    if (!s)
        return -1;
    for (int k = 0; k < MODEL_KIND_COUNT; k++)
        if (strcasecmp(s, s_kind_names[k]) == 0)
            return k;
    for (size_t i = 0; i < sizeof s_kind_aliases / sizeof s_kind_aliases[0]; i++)
        if (strcasecmp(s, s_kind_aliases[i].alias) == 0)
            return (int)s_kind_aliases[i].kind;
    return -1;
}

const char *model_name_problem(const char *name)
{
    if (!name || !*name)
        return "is empty";
    if (strlen(name) >= sizeof((model_entry_t *)0)->name)
        return "is too long";
    if (name[0] == '/')
        return "is an absolute path; give a catalogue name (model.list shows them)";
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c < 0x20 || *c == 0x7f || *c == '\\')
            return "contains a backslash or a control character";
    const char *p = name;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if ((len == 2 && p[0] == '.' && p[1] == '.') || (len == 1 && p[0] == '.'))
            return "has a '.' or '..' component; names stay inside the model roots";
        if (len == 0)
            return "has an empty path component";
        if (!slash)
            break;
        p = slash + 1;
    }
    return NULL;
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static bool s_ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcasecmp(s + n - m, suffix) == 0;
}

static bool s_is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool s_is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* real is root_real or below it */
static bool s_inside(const char *root_real, const char *real)
{
    size_t n = strlen(root_real);
    return strncmp(root_real, real, n) == 0 &&
           (real[n] == '\0' || real[n] == '/' || (n == 1 && root_real[0] == '/'));
}

/* ----------------------------------------------------------- the header */

typedef struct {
    int64_t tensors, params;
    struct {
        char name[16];
        int64_t params;
    } dt[16];
    int ndt;
    int conv_first_in; /* RRDBNet: in-channels of conv_first.weight, 0 absent */
    bool rdb;          /* a body.N.rdbM tensor */
} s_hdr_t;

/* The header length of the first 8 bytes, checked against the file's
   size; 0 with err when it is no safetensors length. */
static uint64_t s_header_len(const unsigned char lenb[8], uint64_t file_size, char *err,
                             size_t err_len)
{
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | lenb[i];
    if (n < 2 || n > S_MAX_HEADER || n > file_size - 8) {
        snprintf(err, err_len, "not a safetensors file (header length %llu for a %llu-byte file)",
                 (unsigned long long)n, (unsigned long long)file_size);
        return 0;
    }
    return n;
}

/* The header's JSON object (caller deletes); NULL with err. */
static cJSON *s_header_parse(const char *buf, size_t n, char *err, size_t err_len)
{
    cJSON *j = cJSON_ParseWithLength(buf, n);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        snprintf(err, err_len, "the safetensors header is not a JSON object");
        return NULL;
    }
    return j;
}

/* Read a safetensors header into a cJSON object (caller deletes). NULL with
   the reason in err. Reads 8 + N bytes, never the data. */
static cJSON *s_header_json(const char *path, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat sb;
    unsigned char lenb[8];
    cJSON *j = NULL;
    char *buf = NULL;
    if (fstat(fd, &sb) != 0 || sb.st_size < 8 || pread(fd, lenb, 8, 0) != 8) {
        snprintf(err, err_len, "not a safetensors file (shorter than its 8-byte header length)");
        goto done;
    }
    uint64_t n = s_header_len(lenb, (uint64_t)sb.st_size, err, err_len);
    if (!n)
        goto done;
    if (!(buf = malloc((size_t)n))) {
        snprintf(err, err_len, "out of memory for a %llu-byte header", (unsigned long long)n);
        goto done;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, (size_t)n - got, (off_t)(8 + got));
        if (r <= 0) {
            snprintf(err, err_len, "cannot read the header: %s", r ? strerror(errno) : "short");
            goto done;
        }
        got += (size_t)r;
    }
    j = s_header_parse(buf, (size_t)n, err, err_len);
done:
    free(buf);
    close(fd);
    return j;
}

/* Add the tensors of header j to *out. 0, or -1 with err (out unchanged). */
static int s_header_facts(const cJSON *j, s_hdr_t *out, char *err, size_t err_len)
{
    s_hdr_t hv = *out, *h = &hv; /* out changes only when the whole header reads */
    const cJSON *t;
    cJSON_ArrayForEach(t, j)
    {
        if (!t->string || strcmp(t->string, "__metadata__") == 0)
            continue;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(shape)) {
            snprintf(err, err_len, "tensor '%.80s' has no dtype or shape", t->string);
            return -1;
        }
        int64_t numel = 1;
        int d = 0, dim1 = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, shape)
        {
            double v = cJSON_IsNumber(s) ? s->valuedouble : -1;
            if (!(v >= 0 && v <= 9e15) || v != (double)(int64_t)v ||
                (numel && v && numel > INT64_MAX / (int64_t)v)) {
                snprintf(err, err_len, "tensor '%.80s' has a bad shape", t->string);
                return -1;
            }
            numel *= (int64_t)v;
            if (d++ == 1)
                dim1 = v < 1e6 ? (int)v : 0;
        }
        if (numel > INT64_MAX - h->params) {
            snprintf(err, err_len, "more than 2^63 parameters");
            return -1;
        }
        h->tensors++;
        h->params += numel;
        int i = 0;
        while (i < h->ndt && strcmp(h->dt[i].name, dt->valuestring) != 0)
            i++;
        if (i == h->ndt && h->ndt < 16) {
            snprintf(h->dt[i].name, sizeof h->dt[i].name, "%s", dt->valuestring);
            h->dt[i].params = 0;
            h->ndt++;
        }
        if (i < h->ndt)
            h->dt[i].params += numel;
        if (strcmp(t->string, "conv_first.weight") == 0)
            h->conv_first_in = dim1;
        if (strncmp(t->string, "body.", 5) == 0 && strstr(t->string, ".rdb"))
            h->rdb = true;
    }
    *out = hv;
    return 0;
}

/* Add one file's tensors to h. 0, or -1 with err. */
static int s_header_add(const char *path, s_hdr_t *h, char *err, size_t err_len)
{
    cJSON *j = s_header_json(path, err, err_len);
    if (!j)
        return -1;
    int rc = s_header_facts(j, h, err, err_len);
    cJSON_Delete(j);
    return rc;
}

static const char *s_main_dtype(const s_hdr_t *h)
{
    int best = -1;
    for (int i = 0; i < h->ndt; i++)
        if (best < 0 || h->dt[i].params > h->dt[best].params)
            best = i;
    return best >= 0 ? h->dt[best].name : "";
}

/* ----------------------------------------------------------- the cache */

static int s_db_open(model_catalog_t *c, const char *path, char *err, size_t err_len)
{
    const char *p = path && *path ? path : ":memory:";
    snprintf(c->db_path, sizeof c->db_path, "%s", p);
    if (sqlite3_open_v2(p, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "hash cache %s: %s", p,
                 c->db ? sqlite3_errmsg(c->db) : "out of memory");
        return -1;
    }
    sqlite3_busy_timeout(c->db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(c->db,
                     "CREATE TABLE IF NOT EXISTS model_hashes ("
                     " path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
                     " sha256 TEXT NOT NULL, hashed_at_ms INTEGER NOT NULL,"
                     " PRIMARY KEY (path, size, mtime_ns))",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_len, "hash cache %s: %s", p, msg ? msg : "cannot create the table");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* A cached hash for (real, size, mtime_ns) into hex; true when found. Lock held. */
static bool s_db_get(model_catalog_t *c, const char *real, int64_t size, int64_t mtime_ns,
                     char hex[65])
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (sqlite3_prepare_v2(c->db,
                           "SELECT sha256 FROM model_hashes WHERE path=?1 AND size=?2 AND "
                           "mtime_ns=?3",
                           -1, &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(st, 1, real, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, size);
    sqlite3_bind_int64(st, 3, mtime_ns);
    if (sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *s = sqlite3_column_text(st, 0);
        if (s && strlen((const char *)s) == 64) {
            memcpy(hex, s, 65);
            found = true;
        }
    }
    sqlite3_finalize(st);
    return found;
}

/* Store a hash (older rows of the path go). Lock held. */
static void s_db_put(model_catalog_t *c, const char *real, int64_t size, int64_t mtime_ns,
                     const char *hex)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(c->db, "DELETE FROM model_hashes WHERE path=?1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, real, -1, SQLITE_STATIC);
        sqlite3_step(st);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(c->db,
                           "INSERT OR REPLACE INTO model_hashes (path, size, mtime_ns, sha256, "
                           "hashed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &st, NULL) != SQLITE_OK ||
        (sqlite3_bind_text(st, 1, real, -1, SQLITE_STATIC), sqlite3_bind_int64(st, 2, size),
         sqlite3_bind_int64(st, 3, mtime_ns), sqlite3_bind_text(st, 4, hex, -1, SQLITE_STATIC),
         sqlite3_bind_int64(st, 5, s_now_ms()), sqlite3_step(st) != SQLITE_DONE))
        log_warn("model catalogue: cannot store a hash in %s: %s", c->db_path,
                 sqlite3_errmsg(c->db));
    sqlite3_finalize(st);
}

/* ----------------------------------------------------------- scanning */

typedef struct {
    model_entry_t *v;
    size_t n, cap;
    size_t skipped;
} s_list_t;

static model_entry_t *s_push(s_list_t *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        model_entry_t *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    model_entry_t *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    return e;
}

static const char *const s_weight_names[] = {
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.safetensors",
    "model.fp16.safetensors",
    NULL,
};

/* The weights file of a diffusers component folder: "" when none. */
static void s_component_file(const char *dir, char *out, size_t out_len)
{
    out[0] = '\0';
    for (int i = 0; s_weight_names[i]; i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/%s", dir, s_weight_names[i]);
        if (s_is_file(p)) {
            snprintf(out, out_len, "%s", s_weight_names[i]);
            return;
        }
    }
}

/* One weights file of a pipeline's component folder into e and h. */
static void s_add_file(const char *dir, const char *comp, const char *file, model_entry_t *e,
                       s_hdr_t *h)
{
    char p[PATH_MAX + 600];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    struct stat sb;
    if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode))
        return;
    e->size += sb.st_size;
    char err[256];
    if (s_header_add(p, h, err, sizeof err) != 0 && !e->error[0])
        snprintf(e->error, sizeof e->error, "%.60s/%.40s: %.200s", comp, file, err);
    e->files++;
}

/* Header facts and sizes of a diffusers pipeline: each component folder's
   weights file (the first of s_weight_names), else its shards. */
static void s_fill_pipeline(const char *abs, model_entry_t *e, s_hdr_t *h)
{
    DIR *d = opendir(abs);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char sub[PATH_MAX + 256], file[64];
        snprintf(sub, sizeof sub, "%s/%s", abs, de->d_name);
        if (!s_is_dir(sub))
            continue;
        s_component_file(sub, file, sizeof file);
        if (file[0]) {
            s_add_file(sub, de->d_name, file, e, h);
            continue;
        }
        /* no single weights file: shards (name-00001-of-00002.safetensors) */
        DIR *sd = opendir(sub);
        struct dirent *se;
        while (sd && (se = readdir(sd)))
            if (se->d_name[0] != '.' && s_ends_with_ci(se->d_name, ".safetensors"))
                s_add_file(sub, de->d_name, se->d_name, e, h);
        if (sd)
            closedir(sd);
    }
    closedir(d);
}

/* Detect, stat the hashed file, look its hash up. Lock held (the db). */
static void s_finish_entry(model_catalog_t *c, const char *root_real, model_entry_t *e,
                           const s_hdr_t *h)
{
    char abs[PATH_MAX + 1300];
    snprintf(abs, sizeof abs, "%s/%s", root_real, e->path);
    e->tensor_count = h->tensors;
    e->params = h->params;
    snprintf(e->dtype, sizeof e->dtype, "%s", s_main_dtype(h));
    const char *arch = NULL;
    char why[320] = "";
    if (c->detect && !e->error[0])
        arch = c->detect(abs, why, sizeof why);
    if (!arch && e->kind == MODEL_UPSCALER && h->conv_first_in && h->rdb) {
        int scale = h->conv_first_in == 3 ? 4 : h->conv_first_in == 12 ? 2 : 1;
        arch = "rrdbnet";
        snprintf(why, sizeof why, "RRDBNet (ESRGAN) upscaler x%d (conv_first takes %d channels)",
                 scale, h->conv_first_in);
    }
    if (!arch && !c->detect && !why[0])
        snprintf(why, sizeof why,
                 "no architecture detector in this worker (built without the "
                 "engine)");
    snprintf(e->architecture, sizeof e->architecture, "%s", arch ? arch : "unknown");
    snprintf(e->arch_detail, sizeof e->arch_detail, "%s", e->error[0] ? e->error : why);
    if (!e->hash_file[0])
        return;
    char hp[PATH_MAX + 1300], real[PATH_MAX];
    snprintf(hp, sizeof hp, "%s/%s", root_real, e->hash_file);
    struct stat sb;
    if (!realpath(hp, real) || stat(real, &sb) != 0)
        return;
    e->mtime = (int64_t)sb.st_mtim.tv_sec;
    int64_t mns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    if (s_db_get(c, real, (int64_t)sb.st_size, mns, e->sha256)) {
        memcpy(e->autov2, e->sha256, 10);
        e->autov2[10] = '\0';
        c->hits++;
    }
}

static bool s_is_other_root(const model_catalog_t *c, model_kind_t kind, const char *real)
{
    for (int k = 0; k < MODEL_KIND_COUNT; k++)
        if (k != (int)kind && c->real_roots[k][0] && strcmp(c->real_roots[k], real) == 0)
            return true;
    return false;
}

static void s_scan_dir(model_catalog_t *c, model_kind_t kind, const char *root_real,
                       const char *rel, int depth, s_list_t *l)
{
    char dir[PATH_MAX + 1100];
    snprintf(dir, sizeof dir, "%s%s%s", root_real, *rel ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) {
        log_warn("model catalogue: cannot read %s: %s", dir, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char relp[1024], abs[PATH_MAX + 1400], real[PATH_MAX];
        if (snprintf(relp, sizeof relp, "%s%s%s", rel, *rel ? "/" : "", de->d_name) >=
            (int)sizeof relp) {
            l->skipped++;
            continue;
        }
        snprintf(abs, sizeof abs, "%s/%s", root_real, relp);
        struct stat sb;
        if (!realpath(abs, real) || stat(real, &sb) != 0)
            continue; /* a dangling link */
        if (!s_inside(root_real, real)) {
            log_warn("model catalogue: %s leads outside its root %s (symlink): left out", abs,
                     root_real);
            l->skipped++;
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            if (s_is_other_root(c, kind, real))
                continue; /* models/lora is the lora root, not checkpoints */
            if (kind == MODEL_CHECKPOINT && s_ends_with_ci(de->d_name, ".config"))
                continue; /* a single file's companion configs */
            char probe[PATH_MAX + 1500], file[64];
            s_hdr_t h = {0};
            if (kind == MODEL_CHECKPOINT) {
                snprintf(probe, sizeof probe, "%s/model_index.json", real);
                bool pipe = s_is_file(probe);
                snprintf(probe, sizeof probe, "%s/unet", real);
                if (!pipe && !s_is_dir(probe)) {
                    /* a lone component (a UNet folder) is no checkpoint the
                       inference worker loads; other folders are looked into */
                    s_component_file(real, file, sizeof file);
                    snprintf(probe, sizeof probe,
                             "%s/diffusion_pytorch_model.safetensors.index.json", real);
                    if (file[0] || s_is_file(probe)) {
                        l->skipped++;
                        continue;
                    }
                    if (depth + 1 < S_MAX_DEPTH)
                        s_scan_dir(c, kind, root_real, relp, depth + 1, l);
                    continue;
                }
                model_entry_t *e = s_push(l);
                if (!e)
                    break;
                e->kind = kind;
                snprintf(e->name, sizeof e->name, "%s", relp);
                snprintf(e->path, sizeof e->path, "%s", relp);
                snprintf(e->format, sizeof e->format, "diffusers");
                s_component_file(probe, file, sizeof file);
                if (file[0])
                    snprintf(e->hash_file, sizeof e->hash_file, "%s/unet/%s", relp, file);
                s_fill_pipeline(real, e, &h);
                s_finish_entry(c, root_real, e, &h);
                continue;
            }
            /* a component folder (config.json + weights), or a folder of
               them: "custom/vae-model" as a user sorts them */
            s_component_file(real, file, sizeof file);
            if (!file[0]) {
                if (depth + 1 < S_MAX_DEPTH)
                    s_scan_dir(c, kind, root_real, relp, depth + 1, l);
                else
                    l->skipped++;
                continue;
            }
            model_entry_t *e = s_push(l);
            if (!e)
                break;
            e->kind = kind;
            snprintf(e->name, sizeof e->name, "%s", relp);
            snprintf(e->path, sizeof e->path, "%s", relp);
            snprintf(e->format, sizeof e->format, "component");
            snprintf(e->hash_file, sizeof e->hash_file, "%s/%s", relp, file);
            snprintf(probe, sizeof probe, "%s/%s", real, file);
            struct stat fb;
            if (stat(probe, &fb) == 0)
                e->size = fb.st_size;
            e->files = 1;
            if (s_header_add(probe, &h, e->error, sizeof e->error) != 0)
                log_warn("model catalogue: %s: %s", probe, e->error);
            s_finish_entry(c, root_real, e, &h);
            continue;
        }
        if (!S_ISREG(sb.st_mode) || !s_ends_with_ci(de->d_name, ".safetensors")) {
            if (S_ISREG(sb.st_mode) &&
                (s_ends_with_ci(de->d_name, ".ckpt") || s_ends_with_ci(de->d_name, ".pt") ||
                 s_ends_with_ci(de->d_name, ".pth") || s_ends_with_ci(de->d_name, ".bin")))
                l->skipped++; /* pickles are never loaded */
            continue;
        }
        model_entry_t *e = s_push(l);
        if (!e)
            break;
        e->kind = kind;
        snprintf(e->name, sizeof e->name, "%.*s", (int)(strlen(relp) - strlen(".safetensors")),
                 relp);
        snprintf(e->path, sizeof e->path, "%s", relp);
        snprintf(e->hash_file, sizeof e->hash_file, "%s", relp);
        snprintf(e->format, sizeof e->format, "single_file");
        e->size = sb.st_size;
        e->files = 1;
        s_hdr_t h = {0};
        if (s_header_add(real, &h, e->error, sizeof e->error) != 0)
            log_warn("model catalogue: %s: %s", abs, e->error);
        s_finish_entry(c, root_real, e, &h);
    }
    closedir(d);
}

static int s_cmp(const void *a, const void *b)
{
    const model_entry_t *x = a, *y = b;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    int r = strcmp(x->name, y->name);
    if (r)
        return r;
    /* a folder before a file of the same name: the inference worker tries
       <root>/<name> before <root>/<name>.safetensors */
    return (strcmp(x->format, "single_file") == 0) - (strcmp(y->format, "single_file") == 0);
}

/* Scan every root into l (sorted, one entry per kind and name). Lock held. */
static void s_scan_all(model_catalog_t *c, s_list_t *l)
{
    for (int k = 0; k < MODEL_KIND_COUNT; k++) {
        c->real_roots[k][0] = '\0';
        char real[PATH_MAX];
        if (c->roots[k][0] && realpath(c->roots[k], real) && s_is_dir(real))
            snprintf(c->real_roots[k], sizeof c->real_roots[k], "%s", real);
    }
    for (int k = 0; k < MODEL_KIND_COUNT; k++)
        if (c->real_roots[k][0])
            s_scan_dir(c, (model_kind_t)k, c->real_roots[k], "", 0, l);
    if (l->n)
        qsort(l->v, l->n, sizeof *l->v, s_cmp);
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (w && l->v[w - 1].kind == l->v[i].kind && strcmp(l->v[w - 1].name, l->v[i].name) == 0)
            continue;
        if (w != i)
            l->v[w] = l->v[i];
        w++;
    }
    l->n = w;
}

/* ----------------------------------------------------------- public */

model_catalog_t *model_catalog_new(const model_catalog_config_t *cfg, char *err, size_t err_len)
{
    model_catalog_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    for (int k = 0; k < MODEL_KIND_COUNT; k++)
        snprintf(c->roots[k], sizeof c->roots[k], "%s", cfg->roots[k] ? cfg->roots[k] : "");
    c->detect = cfg->detect;
    if (sodium_init() < 0) {
        snprintf(err, err_len, "libsodium cannot start");
        model_catalog_destroy(&c);
        return NULL;
    }
    if (s_db_open(c, cfg->db_path, err, err_len) != 0) {
        model_catalog_destroy(&c);
        return NULL;
    }
    if (model_catalog_rescan(c, NULL, err, err_len) != 0) {
        model_catalog_destroy(&c);
        return NULL;
    }
    c->rescans = 0; /* the first scan is no rescan */
    return c;
}

void model_catalog_destroy(model_catalog_t **c_p)
{
    model_catalog_t *c = c_p ? *c_p : NULL;
    if (!c)
        return;
    sqlite3_close(c->db);
    free(c->v);
    pthread_mutex_destroy(&c->mu);
    free(c);
    *c_p = NULL;
}

void model_scan_report_clear(model_scan_report_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_added; i++)
        free(r->added[i]);
    for (size_t i = 0; i < r->n_removed; i++)
        free(r->removed[i]);
    free(r->added);
    free(r->removed);
    memset(r, 0, sizeof *r);
}

/* The entry (kind, name) of v, sorted by s_cmp and deduplicated; NULL if absent. */
static const model_entry_t *s_lookup(const model_entry_t *v, size_t n, model_kind_t kind,
                                     const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = v[mid].kind != kind ? (v[mid].kind < kind ? -1 : 1) : strcmp(v[mid].name, name);
        if (r == 0)
            return &v[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Append "kind/name" of every entry of a that b lacks. -1 out of memory. */
static int s_diff(const model_entry_t *a, size_t na, const model_entry_t *b, size_t nb, char ***out,
                  size_t *n)
{
    for (size_t i = 0; i < na; i++) {
        if (s_lookup(b, nb, a[i].kind, a[i].name))
            continue;
        char **v = realloc(*out, (*n + 1) * sizeof *v);
        if (!v)
            return -1;
        *out = v;
        size_t len = strlen(a[i].name) + 16;
        if (!(v[*n] = malloc(len)))
            return -1;
        snprintf(v[*n], len, "%s/%s", model_kind_name(a[i].kind), a[i].name);
        (*n)++;
    }
    return 0;
}

int model_catalog_rescan(model_catalog_t *c, model_scan_report_t *report, char *err, size_t err_len)
{
    s_list_t l = {0};
    double t0 = s_mono_ms();
    pthread_mutex_lock(&c->mu);
    s_scan_all(c, &l);
    /* hashes known from before stay when the file did not change */
    for (size_t i = 0; i < l.n; i++) {
        model_entry_t *e = &l.v[i];
        const model_entry_t *o = s_lookup(c->v, c->n, e->kind, e->name);
        if (!e->sha256[0] && o && o->sha256[0] && o->size == e->size && o->mtime == e->mtime &&
            strcmp(o->hash_file, e->hash_file) == 0) {
            memcpy(e->sha256, o->sha256, sizeof e->sha256);
            memcpy(e->autov2, o->autov2, sizeof e->autov2);
        }
    }
    if (report) {
        memset(report, 0, sizeof *report);
        if (s_diff(l.v, l.n, c->v, c->n, &report->added, &report->n_added) != 0 ||
            s_diff(c->v, c->n, l.v, l.n, &report->removed, &report->n_removed) != 0) {
            pthread_mutex_unlock(&c->mu);
            model_scan_report_clear(report);
            free(l.v);
            snprintf(err, err_len, "out of memory");
            return -1;
        }
    }
    free(c->v);
    c->v = l.v;
    c->n = l.n;
    c->skipped = l.skipped;
    c->rescans++;
    c->last_scan_ms = s_mono_ms() - t0;
    c->last_scan_at_ms = s_now_ms();
    if (report) {
        report->total = c->n;
        report->scan_ms = c->last_scan_ms;
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

model_entry_t *model_catalog_list(model_catalog_t *c, int kind, size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&c->mu);
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++)
        m += kind < 0 || (int)c->v[i].kind == kind;
    model_entry_t *out = m ? malloc(m * sizeof *out) : NULL;
    if (out) {
        for (size_t i = 0; i < c->n; i++)
            if (kind < 0 || (int)c->v[i].kind == kind)
                out[(*n)++] = c->v[i];
    }
    pthread_mutex_unlock(&c->mu);
    return out;
}

size_t model_catalog_count(model_catalog_t *c, int kind)
{
    pthread_mutex_lock(&c->mu);
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++)
        m += kind < 0 || (int)c->v[i].kind == kind;
    pthread_mutex_unlock(&c->mu);
    return m;
}

/* Levenshtein distance ignoring case (names are < 256 bytes). */
static size_t s_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    size_t row[256];
    if (na > 255 || nb > 255)
        return 255;
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

/* err: "no lora 'x' in the catalogue; near: a, b" and what else helps. Lock held. */
static void s_not_found(const model_catalog_t *c, int kind, const char *name, char *err,
                        size_t err_len)
{
    enum { MAXN = 5 };
    const model_entry_t *near[MAXN];
    size_t dist[MAXN], nn = 0, in_kind = 0;
    size_t len = strlen(name), limit = len / 3 > 2 ? len / 3 : 2;
    const model_entry_t *other = NULL;
    for (size_t i = 0; i < c->n; i++) {
        const model_entry_t *e = &c->v[i];
        if (kind >= 0 && (int)e->kind != kind) {
            if (!other && strcmp(e->name, name) == 0)
                other = e;
            continue;
        }
        in_kind++;
        size_t d = s_distance(name, e->name);
        bool sub = strcasestr(e->name, name) || strcasestr(name, e->name);
        if (d > limit && !sub)
            continue;
        if (sub && d > limit)
            d = limit; /* a prefix or a part ranks after close spellings */
        size_t at = nn < MAXN ? nn++ : MAXN;
        if (at == MAXN) {
            if (d >= dist[MAXN - 1])
                continue;
            at = MAXN - 1;
        }
        while (at > 0 && dist[at - 1] > d) {
            near[at] = near[at - 1];
            dist[at] = dist[at - 1];
            at--;
        }
        near[at] = e;
        dist[at] = d;
    }
    const char *what = kind >= 0 ? s_kind_one[kind] : "model";
    size_t used = (size_t)snprintf(err, err_len, "no %s '%s' in the catalogue", what, name);
    if (used >= err_len)
        return;
    if (other)
        used += (size_t)snprintf(err + used, err_len - used, " ('%s' is a %s: give kind \"%s\")",
                                 name, s_kind_one[other->kind], model_kind_name(other->kind));
    if (used >= err_len)
        return;
    if (nn) {
        used += (size_t)snprintf(err + used, err_len - used, "; near: ");
        for (size_t i = 0; i < nn && used < err_len; i++)
            used +=
                (size_t)snprintf(err + used, err_len - used, "%s%s%s%s%s", i ? ", " : "",
                                 near[i]->name, kind < 0 ? " (" : "",
                                 kind < 0 ? s_kind_one[near[i]->kind] : "", kind < 0 ? ")" : "");
    } else if (in_kind == 0) {
        snprintf(err + used, err_len - used, "; it holds no %s%s (model.rescan after adding files)",
                 kind >= 0 ? model_kind_name(kind) : "models",
                 kind >= 0 && !c->real_roots[kind][0] ? ": its folder is missing" : "");
    } else {
        snprintf(err + used, err_len - used, "; nothing near it among %zu (model.list shows them)",
                 in_kind);
    }
}

model_status_t model_catalog_find(model_catalog_t *c, int kind, const char *name,
                                  model_entry_t *out, char *err, size_t err_len)
{
    const char *why = model_name_problem(name);
    if (why) {
        snprintf(err, err_len, "name '%.200s' %s", name ? name : "", why);
        return MODEL_BAD_NAME;
    }
    model_status_t rc = MODEL_NOT_FOUND;
    pthread_mutex_lock(&c->mu);
    const model_entry_t *hit = NULL;
    int kinds = 0;
    char list[128] = "";
    for (int k = 0; k < MODEL_KIND_COUNT; k++) {
        if (kind >= 0 && k != kind)
            continue;
        const model_entry_t *e = s_lookup(c->v, c->n, (model_kind_t)k, name);
        if (e) {
            size_t u = strlen(list);
            snprintf(list + u, sizeof list - u, "%s%s", kinds ? ", " : "",
                     model_kind_name(e->kind));
            hit = e;
            kinds++;
        }
    }
    if (kinds == 1) {
        *out = *hit;
        rc = MODEL_OK;
    } else if (kinds > 1) {
        snprintf(err, err_len, "'%s' is in several kinds (%s): give kind", name, list);
        rc = MODEL_AMBIGUOUS;
    } else {
        s_not_found(c, kind, name, err, err_len);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* Write e's hash into the catalogue's entry of the same file. Lock held. */
static void s_store(model_catalog_t *c, const model_entry_t *e)
{
    for (size_t i = 0; i < c->n; i++) {
        model_entry_t *x = &c->v[i];
        if (x->kind == e->kind && strcmp(x->name, e->name) == 0 &&
            strcmp(x->hash_file, e->hash_file) == 0) {
            memcpy(x->sha256, e->sha256, sizeof x->sha256);
            memcpy(x->autov2, e->autov2, sizeof x->autov2);
        }
    }
}

model_status_t model_catalog_hash(model_catalog_t *c, model_entry_t *e,
                                  bool (*progress)(void *ctx, int64_t done, int64_t total),
                                  void *ctx, bool *cached, char *err, size_t err_len)
{
    *cached = true;
    pthread_mutex_lock(&c->mu);
    const model_entry_t *cur = s_lookup(c->v, c->n, e->kind, e->name);
    if (cur && cur->sha256[0] && strcmp(cur->hash_file, e->hash_file) == 0) {
        memcpy(e->sha256, cur->sha256, sizeof e->sha256);
        memcpy(e->autov2, cur->autov2, sizeof e->autov2);
        pthread_mutex_unlock(&c->mu);
        return MODEL_OK;
    }
    char path[PATH_MAX + 1300];
    snprintf(path, sizeof path, "%s/%s", c->real_roots[e->kind], e->hash_file);
    bool rooted = c->real_roots[e->kind][0] != '\0';
    pthread_mutex_unlock(&c->mu);
    if (!e->hash_file[0]) {
        snprintf(err, err_len,
                 "%s '%s' has no single weights file to hash (a diffusers UNet "
                 "in shards?)",
                 s_kind_one[e->kind], e->name);
        return MODEL_FAILED;
    }
    char real[PATH_MAX];
    struct stat sb;
    if (!rooted || !realpath(path, real) || stat(real, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, err_len, "%s: %s (model.rescan if it was removed)", e->hash_file,
                 rooted ? strerror(errno) : "its root is gone");
        return MODEL_FAILED;
    }
    int64_t size = (int64_t)sb.st_size;
    int64_t mns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    pthread_mutex_lock(&c->mu);
    bool hit = s_db_get(c, real, size, mns, e->sha256);
    if (hit) {
        c->hits++;
        memcpy(e->autov2, e->sha256, 10);
        e->autov2[10] = '\0';
        s_store(c, e);
    }
    pthread_mutex_unlock(&c->mu);
    if (hit)
        return MODEL_OK;

    *cached = false;
    int fd = open(real, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "%s: %s", e->hash_file, strerror(errno));
        return MODEL_FAILED;
    }
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf) {
        close(fd);
        snprintf(err, err_len, "out of memory");
        return MODEL_FAILED;
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    int64_t done = 0, next = (int64_t)64 << 20;
    model_status_t rc = MODEL_OK;
    for (;;) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, err_len, "%s: %s", e->hash_file, strerror(errno));
            rc = MODEL_FAILED;
            break;
        }
        if (r == 0)
            break;
        crypto_hash_sha256_update(&st, buf, (unsigned long long)r);
        done += r;
        if (progress && done >= next) {
            next += (int64_t)64 << 20;
            if (!progress(ctx, done, size)) {
                snprintf(err, err_len, "cancelled");
                rc = MODEL_CANCELLED;
                break;
            }
        }
    }
    free(buf);
    struct stat after;
    bool same = fstat(fd, &after) == 0 && after.st_size == sb.st_size &&
                after.st_mtim.tv_sec == sb.st_mtim.tv_sec &&
                after.st_mtim.tv_nsec == sb.st_mtim.tv_nsec;
    close(fd);
    if (rc != MODEL_OK)
        return rc;
    if (!same || done != size) {
        snprintf(err, err_len, "%s changed while it was hashed; try again", e->hash_file);
        return MODEL_FAILED;
    }
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    for (size_t i = 0; i < sizeof h; i++)
        snprintf(e->sha256 + 2 * i, 3, "%02x", h[i]);
    memcpy(e->autov2, e->sha256, 10);
    e->autov2[10] = '\0';
    pthread_mutex_lock(&c->mu);
    s_db_put(c, real, size, mns, e->sha256);
    c->computed++;
    s_store(c, e);
    pthread_mutex_unlock(&c->mu);
    return MODEL_OK;
}

void model_kv_free(char **kv, size_t n)
{
    if (!kv)
        return;
    for (size_t i = 0; i < 2 * n; i++)
        free(kv[i]);
    free(kv);
}

/* The __metadata__ of header j as kv pairs (see model_catalog_metadata). */
static int s_metadata(const cJSON *j, size_t max_value, char ***kv, size_t *n, char *err,
                      size_t err_len)
{
    *kv = NULL;
    *n = 0;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "__metadata__");
    size_t cnt = cJSON_IsObject(m) ? (size_t)cJSON_GetArraySize(m) : 0;
    if (!cnt)
        return 0;
    char **v = calloc(2 * cnt, sizeof *v);
    if (!v) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, m)
    {
        if (i == cnt || !it->string)
            break;
        char *val = cJSON_IsString(it) ? strdup(it->valuestring) : cJSON_PrintUnformatted(it);
        char *key = strdup(it->string);
        if (!val || !key) {
            free(val);
            free(key);
            model_kv_free(v, cnt);
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        if (strlen(val) > max_value)
            val[max_value] = '\0';
        v[2 * i] = key;
        v[2 * i + 1] = val;
        i++;
    }
    *kv = v;
    *n = i;
    return 0;
}

int model_catalog_metadata(model_catalog_t *c, const model_entry_t *e, size_t max_value, char ***kv,
                           size_t *n, char *err, size_t err_len)
{
    *kv = NULL;
    *n = 0;
    pthread_mutex_lock(&c->mu);
    char path[PATH_MAX + 1300];
    snprintf(path, sizeof path, "%s/%s", c->real_roots[e->kind], e->hash_file);
    bool ok = c->real_roots[e->kind][0] && e->hash_file[0];
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        snprintf(err, err_len, "no weights file to read");
        return -1;
    }
    cJSON *j = s_header_json(path, err, err_len);
    if (!j)
        return -1;
    int rc = s_metadata(j, max_value, kv, n, err, err_len);
    cJSON_Delete(j);
    return rc;
}

int model_header_check(const void *file, size_t len, int64_t *tensors, size_t *n_meta, char *err,
                       size_t err_len)
{
    *tensors = 0;
    *n_meta = 0;
    if (len < 8) {
        snprintf(err, err_len, "not a safetensors file (shorter than its 8-byte header length)");
        return -1;
    }
    uint64_t n = s_header_len(file, (uint64_t)len, err, err_len);
    if (!n)
        return -1;
    cJSON *j = s_header_parse((const char *)file + 8, (size_t)n, err, err_len);
    if (!j)
        return -1;
    s_hdr_t h = {0};
    char **kv = NULL;
    int rc = s_header_facts(j, &h, err, err_len);
    if (rc == 0)
        rc = s_metadata(j, 64, &kv, n_meta, err, err_len);
    model_kv_free(kv, *n_meta);
    cJSON_Delete(j);
    *tensors = h.tensors;
    return rc;
}

void model_catalog_stats(model_catalog_t *c, model_catalog_stats_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&c->mu);
    for (int k = 0; k < MODEL_KIND_COUNT; k++) {
        snprintf(out->roots[k], sizeof out->roots[k], "%s", c->roots[k]);
        out->root_exists[k] = c->real_roots[k][0] != '\0';
    }
    for (size_t i = 0; i < c->n; i++)
        out->counts[c->v[i].kind]++;
    out->skipped = c->skipped;
    snprintf(out->db_path, sizeof out->db_path, "%s", c->db_path);
    out->hash_cache_hits = c->hits;
    out->hashes_computed = c->computed;
    out->rescans = c->rescans;
    out->last_scan_ms = c->last_scan_ms;
    out->last_scan_at_ms = c->last_scan_at_ms;
    pthread_mutex_unlock(&c->mu);
}
