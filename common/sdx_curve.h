/*  sdx_curve.h - CurveZMQ for the fleet: key pairs as czmq certificates
    (zcert: NAME holds the public key, NAME_secret the secret one), the
    broker's ZAP handler with one allow-list per socket role, and the socket
    options of CURVE servers (the broker) and clients (workers, sdxl-cli).

    Why a ZAP handler of our own rather than czmq's zauth actor: zauth keeps
    one allow-list for every socket of a libzmq context, so a key allowed
    for a client could also register as a worker and be sent other clients'
    prompts. Here each server socket names its role in ZMQ_ZAP_DOMAIN
    ("clients" for the frontend and the events socket, "workers" for the
    backend) and the handler looks the peer's key up in that role's folder
    of public certificates, through czmq's zcertstore (which re-reads a
    folder that changed). The handler is one REP socket that the broker
    polls in its own loop: no thread. A refused peer never gets past the
    handshake, so it cannot send or receive anything; plaintext peers are
    refused by libzmq itself on a CURVE server socket.

    Not for: which sockets use it (broker.c, sdx_worker.c, sdxl_cli.c). */
#ifndef SDX_CURVE_H
#define SDX_CURVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sdx_zap sdx_zap_t;

/* Bind the ZAP handler in libzmq context ctx (before any CURVE server socket
   binds). clients_dir / workers_dir: folders of allowed public
   certificates (zcert files; "_secret" files in them are ignored). NULL +
   err when a folder is missing or the endpoint cannot be bound. */
sdx_zap_t *sdx_zap_new(void *ctx, const char *clients_dir, const char *workers_dir, char *err,
                       size_t err_len);
/* The socket to poll (ZMQ_POLLIN) and the call that answers what waits. */
void *sdx_zap_socket(sdx_zap_t *z);
void sdx_zap_handle(sdx_zap_t *z);
/* Re-read both folders now (SIGHUP): a removed key is refused from the
   next handshake on (connections already made stay up). 0 / -1 + err. */
int sdx_zap_reload(sdx_zap_t *z, char *err, size_t err_len);
/* Handshakes allowed and refused so far. */
void sdx_zap_counts(const sdx_zap_t *z, uint64_t *allowed, uint64_t *refused);
void sdx_zap_destroy(sdx_zap_t **z);

/* Make sock a CURVE server with the key pair in cert_path (and
   cert_path_secret) for `role` ("clients" or "workers"). 0 / -1 + err. */
int sdx_curve_server(void *sock, const char *cert_path, const char *role, char *err,
                     size_t err_len);
/* Make sock a CURVE client: its own key pair in cert_path (+ _secret) and
   the server's public certificate in server_cert_path. 0 / -1 + err. */
int sdx_curve_client(void *sock, const char *cert_path, const char *server_cert_path, char *err,
                     size_t err_len);

/* Is path a readable certificate (with its secret half when need_secret)?
   For start-up checks: 0 / -1 + err. */
int sdx_curve_cert_check(const char *path, bool need_secret, char *err, size_t err_len);

/* A new key pair saved as path (public, safe to copy into an allow-list)
   and path_secret (mode 0600), with `name` in its metadata. 0 / -1 + err. */
int sdx_curve_keygen(const char *path, const char *name, char *err, size_t err_len);

#endif
