/*  sdx_mdp.h - the broker <-> worker protocol (SDXW/1), modelled on ZeroMQ's
    Majordomo (MDP, RFC 7/18). proto/PROTOCOL.md is the normative text; this
    file is its one implementation, used by both the broker (ROUTER) and the
    workers (DEALER).

    Frames as a worker's DEALER sends them (the broker's ROUTER sees an extra
    identity frame in front; the broker sends the same frames behind the
    worker's identity):

        frame 0: ""                  empty delimiter (as in MDP)
        frame 1: "SDXW01"            protocol + version
        frame 2: command             one byte, sdx_mdp_cmd_t
        frame 3: request id          REQUEST, REPLY, PROGRESS, CANCEL only
        frame 4: body                msgpack map; READY, REQUEST, REPLY, PROGRESS,
                                     and optionally HEARTBEAT

    Bodies:
      READY     {worker_id, domain, gpu (int, -1 = CPU), capabilities [str],
                 concurrency (int >= 1), capacity (int 1..SDX_MDP_MAX_CAPACITY:
                 requests the broker may keep in flight on it), models [str],
                 pid, host, version[, prefetch]}
      REQUEST   the normalised request: {message_type, request_id, data,
                 priority, timeout_ms, deadline_ms (unix ms, 0 none), attempt,
                 stream (bool)}
      REPLY     {success (bool), data (map) | error {code, message, field?},
                 timing {worker_ms, ...}}
      PROGRESS  {step, total, elapsed_ms, message?, preview? (bin)}
      HEARTBEAT optional {in_flight, models [str]} (worker -> broker)
      CANCEL    (broker -> worker) no body: stop request `request id` soon,
                 the worker still sends a REPLY (error "cancelled")
      DISCONNECT no body, either direction
*/
#ifndef SDX_MDP_H
#define SDX_MDP_H

#include "sdx_value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SDX_MDP_PROTOCOL "SDXW01"
#define SDX_MDP_HEARTBEAT_MS 1000 /* both directions */
#define SDX_MDP_LIVENESS 3        /* a peer is dead after 3 missed heartbeats */
#define SDX_MDP_MAX_ID 128        /* request id / identity length limit */
#define SDX_MDP_MAX_CAPACITY 1024 /* READY capacity: most requests in flight on one worker */

typedef enum {
    SDX_MDP_READY = 0x01,
    SDX_MDP_REQUEST = 0x02,
    SDX_MDP_REPLY = 0x03,
    SDX_MDP_PROGRESS = 0x04,
    SDX_MDP_HEARTBEAT = 0x05,
    SDX_MDP_DISCONNECT = 0x06,
    SDX_MDP_CANCEL = 0x07,
} sdx_mdp_cmd_t;

const char *sdx_mdp_cmd_name(sdx_mdp_cmd_t c); /* "READY", ...; "?" if unknown */

/* A received SDXW message, decoded. Owns body. */
typedef struct {
    uint8_t identity[256]; /* ROUTER side only: the peer's routing id */
    size_t identity_len;
    sdx_mdp_cmd_t cmd;
    char request_id[SDX_MDP_MAX_ID + 1]; /* "" when the command has none */
    sdx_value_t *body;                   /* NULL when absent */
    /* sdx_mdp_recv failed on the body alone: cmd and request_id are still
       filled in, so the receiver can answer that request instead of leaving
       it to its deadline. */
    bool bad_body;
} sdx_mdp_msg_t;

/* Free the body and reset the message. */
void sdx_mdp_msg_clear(sdx_mdp_msg_t *m);

/* Send one message. `sock` is a raw libzmq socket (void *). With a ROUTER
   socket pass the peer's identity; with a DEALER pass identity NULL.
   request_id may be NULL for commands without one; body may be NULL.
   Returns 0, or -1 with errno set by libzmq. Non-blocking sockets are not
   assumed: it uses ZMQ_DONTWAIT only if dontwait is true. */
int sdx_mdp_send(void *sock, const uint8_t *identity, size_t identity_len, sdx_mdp_cmd_t cmd,
                 const char *request_id, const sdx_value_t *body, bool dontwait);

/* Same, with a body that is already msgpack-encoded (no re-encode). */
int sdx_mdp_send_raw(void *sock, const uint8_t *identity, size_t identity_len, sdx_mdp_cmd_t cmd,
                     const char *request_id, const void *body, size_t body_len, bool dontwait);

/* Same, handing a malloc'd, already msgpack-encoded body to libzmq (no
   copy): ownership of body passes to this call in every case (freed on
   failure). body may be NULL for commands without one. */
int sdx_mdp_send_take(void *sock, const uint8_t *identity, size_t identity_len, sdx_mdp_cmd_t cmd,
                      const char *request_id, uint8_t *body, size_t body_len, bool dontwait);

/* Receive and decode one message (blocking unless dontwait). router: the
   socket is a ROUTER and frame 0 is the identity. Returns 0 on success, 1 if
   dontwait and nothing was there, -1 on a malformed message (all its frames
   are consumed; reason in err) or a socket error. */
int sdx_mdp_recv(void *sock, bool router, sdx_mdp_msg_t *out, bool dontwait, char *err,
                 size_t err_len);

#endif
