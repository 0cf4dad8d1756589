/*  sdx_curve.c - see sdx_curve.h. ZAP is RFC 27 (zeromq.org): a REP socket
    on inproc://zeromq.zap.01 that libzmq asks, per handshake, with
    [version, request id, domain, address, identity, mechanism,
    credentials...] and that answers [version, request id, status code,
    status text, user id, metadata]. */
#include "sdx_curve.h"

#include "sdx_log.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_FRAMES 8

struct sdx_zap {
    void *rep;
    char clients_dir[1024], workers_dir[1024];
    zcertstore_t *clients, *workers;
    uint64_t allowed, refused;
    /* a refused peer retries its handshake every few seconds: each key is
       logged once a minute, with how many refusals were not logged */
    struct {
        char key[41], domain[16];
        int64_t logged_ms;
        uint64_t quiet;
    } seen[32];
    unsigned nseen;
};

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Should this refusal be logged? *quiet: refusals of the key since the last line. */
static bool s_should_log(sdx_zap_t *z, const char *key, const char *domain, uint64_t *quiet)
{
    int64_t now = s_now_ms();
    unsigned cap = sizeof z->seen / sizeof z->seen[0];
    for (unsigned i = 0; i < z->nseen && i < cap; i++) {
        if (strcmp(z->seen[i].key, key) != 0 || strcmp(z->seen[i].domain, domain) != 0)
            continue;
        if (now - z->seen[i].logged_ms < 60000) {
            z->seen[i].quiet++;
            return false;
        }
        *quiet = z->seen[i].quiet;
        z->seen[i].quiet = 0;
        z->seen[i].logged_ms = now;
        return true;
    }
    unsigned k = z->nseen++ % cap;
    snprintf(z->seen[k].key, sizeof z->seen[k].key, "%s", key);
    snprintf(z->seen[k].domain, sizeof z->seen[k].domain, "%s", domain);
    z->seen[k].logged_ms = now;
    z->seen[k].quiet = 0;
    *quiet = 0;
    return true;
}

static int s_dir_ok(const char *dir, const char *what, char *err, size_t err_len)
{
    struct stat st;
    if (!dir || !*dir || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, err_len, "%s allow-list folder '%s': %s", what, dir ? dir : "",
                 dir && *dir ? "not a folder" : "not set");
        return -1;
    }
    return 0;
}

static int s_load(sdx_zap_t *z, char *err, size_t err_len)
{
    if (s_dir_ok(z->clients_dir, "clients", err, err_len) ||
        s_dir_ok(z->workers_dir, "workers", err, err_len))
        return -1;
    zcertstore_t *c = zcertstore_new(z->clients_dir), *w = zcertstore_new(z->workers_dir);
    if (!c || !w) {
        zcertstore_destroy(&c);
        zcertstore_destroy(&w);
        snprintf(err, err_len, "cannot read the allow-list folders");
        return -1;
    }
    zcertstore_destroy(&z->clients);
    zcertstore_destroy(&z->workers);
    z->clients = c;
    z->workers = w;
    return 0;
}

sdx_zap_t *sdx_zap_new(void *ctx, const char *clients_dir, const char *workers_dir, char *err,
                       size_t err_len)
{
    sdx_zap_t *z = calloc(1, sizeof *z);
    if (!z) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    snprintf(z->clients_dir, sizeof z->clients_dir, "%s", clients_dir ? clients_dir : "");
    snprintf(z->workers_dir, sizeof z->workers_dir, "%s", workers_dir ? workers_dir : "");
    if (s_load(z, err, err_len) != 0) {
        sdx_zap_destroy(&z);
        return NULL;
    }
    z->rep = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    if (!z->rep || zmq_setsockopt(z->rep, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(z->rep, ZAP_ENDPOINT) != 0) {
        snprintf(err, err_len, "ZAP handler %s: %s", ZAP_ENDPOINT, zmq_strerror(errno));
        sdx_zap_destroy(&z);
        return NULL;
    }
    return z;
}

void *sdx_zap_socket(sdx_zap_t *z)
{
    return z->rep;
}

/* One request: frames into f[] (at most ZAP_FRAMES kept). -1: nothing there. */
static int s_recv(void *rep, zmq_msg_t *f, int *n)
{
    *n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, rep, *n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            return *n == 0 ? -1 : 0;
        }
        more = zmq_msg_more(&m);
        if (*n < ZAP_FRAMES)
            f[(*n)++] = m;
        else
            zmq_msg_close(&m);
    }
    return 0;
}

static void s_reply(void *rep, const zmq_msg_t *reqid, const char *code, const char *text,
                    const char *user)
{
    zmq_send(rep, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(rep, zmq_msg_data((zmq_msg_t *)reqid), zmq_msg_size((zmq_msg_t *)reqid), ZMQ_SNDMORE);
    zmq_send(rep, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(rep, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(rep, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(rep, "", 0, 0);
}

static void s_text(const zmq_msg_t *m, char *out, size_t len)
{
    size_t n = zmq_msg_size((zmq_msg_t *)m);
    if (n >= len)
        n = len - 1;
    memcpy(out, zmq_msg_data((zmq_msg_t *)m), n);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e)
            out[i] = '?';
}

void sdx_zap_handle(sdx_zap_t *z)
{
    for (int budget = 0; budget < 64; budget++) {
        zmq_msg_t f[ZAP_FRAMES];
        int n = 0;
        if (s_recv(z->rep, f, &n) != 0)
            return;
        char domain[32] = "", addr[64] = "", mech[16] = "";
        if (n >= 6) {
            s_text(&f[2], domain, sizeof domain);
            s_text(&f[3], addr, sizeof addr);
            s_text(&f[5], mech, sizeof mech);
        }
        const char *code = "400", *why = "malformed ZAP request";
        char key[41] = "";
        if (n >= 7 && strcmp(mech, "CURVE") == 0 && zmq_msg_size(&f[6]) == 32) {
            zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
            zcertstore_t *store = strcmp(domain, "workers") == 0   ? z->workers
                                  : strcmp(domain, "clients") == 0 ? z->clients
                                                                   : NULL;
            if (!store)
                why = "no allow-list for this socket";
            else if (!zcertstore_lookup(store, key))
                why = "key not in the allow-list";
            else
                code = "200", why = "OK";
        } else if (n >= 6) {
            why = "only CURVE is accepted";
        }
        if (strcmp(code, "200") == 0) {
            z->allowed++;
            log_debug("curve: %s %s allowed (%s)", domain, key, addr);
        } else {
            z->refused++;
            uint64_t quiet = 0;
            if (s_should_log(z, key, domain, &quiet))
                log_warn("curve: refused a %s peer from %s, key %s: %s%s",
                         strcmp(domain, "workers") == 0 ? "worker" : "client", addr[0] ? addr : "?",
                         key[0] ? key : "(none)", why,
                         quiet ? " (and more refusals of it, not logged)" : "");
        }
        if (n >= 2)
            s_reply(z->rep, &f[1], code, why, strcmp(code, "200") == 0 ? key : "");
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
    }
}

int sdx_zap_reload(sdx_zap_t *z, char *err, size_t err_len)
{
    return s_load(z, err, err_len);
}

void sdx_zap_counts(const sdx_zap_t *z, uint64_t *allowed, uint64_t *refused)
{
    *allowed = z ? z->allowed : 0;
    *refused = z ? z->refused : 0;
}

void sdx_zap_destroy(sdx_zap_t **zp)
{
    if (!zp || !*zp)
        return;
    sdx_zap_t *z = *zp;
    if (z->rep)
        zmq_close(z->rep);
    zcertstore_destroy(&z->clients);
    zcertstore_destroy(&z->workers);
    free(z);
    *zp = NULL;
}

/* zcert_load reads path (public) and path_secret (secret) when there. */
static zcert_t *s_cert(const char *path, bool need_secret, char *err, size_t err_len)
{
    zcert_t *c = path && *path ? zcert_load(path) : NULL;
    if (!c) {
        snprintf(err, err_len, "cannot read the certificate '%s' (make one with sdxl-cli keygen)",
                 path ? path : "");
        return NULL;
    }
    static const uint8_t zero[32];
    if (need_secret && memcmp(zcert_secret_key(c), zero, 32) == 0) {
        snprintf(err, err_len, "certificate '%s' has no secret key (%s_secret is missing)", path,
                 path);
        zcert_destroy(&c);
        return NULL;
    }
    return c;
}

int sdx_curve_cert_check(const char *path, bool need_secret, char *err, size_t err_len)
{
    zcert_t *c = s_cert(path, need_secret, err, err_len);
    if (!c)
        return -1;
    zcert_destroy(&c);
    return 0;
}

int sdx_curve_server(void *sock, const char *cert_path, const char *role, char *err, size_t err_len)
{
    zcert_t *c = s_cert(cert_path, true, err, err_len);
    if (!c)
        return -1;
    int one = 1;
    int rc = zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
             zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, zcert_secret_key(c), 32) ||
             zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, role, strlen(role));
    zcert_destroy(&c);
    if (rc) {
        snprintf(err, err_len, "CURVE server options: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int sdx_curve_client(void *sock, const char *cert_path, const char *server_cert_path, char *err,
                     size_t err_len)
{
    zcert_t *own = s_cert(cert_path, true, err, err_len);
    if (!own)
        return -1;
    zcert_t *srv = s_cert(server_cert_path, false, err, err_len);
    if (!srv) {
        zcert_destroy(&own);
        return -1;
    }
    int rc = zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, zcert_public_key(srv), 32) ||
             zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, zcert_public_key(own), 32) ||
             zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, zcert_secret_key(own), 32);
    zcert_destroy(&own);
    zcert_destroy(&srv);
    if (rc) {
        snprintf(err, err_len, "CURVE client options: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int sdx_curve_keygen(const char *path, const char *name, char *err, size_t err_len)
{
    zcert_t *c = zcert_new();
    if (!c) {
        snprintf(err, err_len, "cannot make a key pair (libsodium)");
        return -1;
    }
    zcert_set_meta(c, "name", "%s", name && *name ? name : "sdxl-fleet");
    zcert_set_meta(c, "made-by", "sdxl-cli keygen");
    mode_t old = umask(077); /* the secret file is never readable by others, not even briefly */
    int rc = zcert_save(c, path);
    umask(old);
    zcert_destroy(&c);
    char secret[1100];
    snprintf(secret, sizeof secret, "%s_secret", path);
    if (rc != 0 || chmod(path, 0644) != 0) {
        snprintf(err, err_len, "cannot write %s / %s: %s", path, secret, strerror(errno));
        return -1;
    }
    return 0;
}
