/*  broker.h - the sdxl-broker: frontend ROUTER for clients, backend ROUTER
    for workers (SDXW01), events XPUB. One thread, one zmq_poll loop over
    raw libzmq sockets. See proto/PROTOCOL.md for the wire formats. */
#ifndef BROKER_BROKER_H
#define BROKER_BROKER_H

#include "sdx_config.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    char frontend[SDX_CONFIG_STR_MAX];
    char backend[SDX_CONFIG_STR_MAX];
    char events[SDX_CONFIG_STR_MAX];
    char metrics_endpoint[SDX_CONFIG_STR_MAX]; /* HTTP GET /metrics ("" off) */
    int log_level;
    int64_t max_frame_bytes;
    int64_t heartbeat_ms;
    int64_t liveness;
    int64_t default_timeout_ms;
    int64_t max_timeout_ms;
    int64_t max_retries;
    int64_t max_queue;
    int64_t max_requests;
    int64_t client_max_in_flight; /* per client connection, 0: no limit */
    int64_t client_max_rps;       /* per client connection, 0: no limit */
    int64_t cancel_grace_ms;
    int64_t no_worker_grace_ms;
    int64_t hwm;
    int64_t prefetch;
    bool events_enabled;
    bool log_requests;
    bool validate;
    char actions_file[SDX_CONFIG_STR_MAX];
    char catalog_file[SDX_CONFIG_STR_MAX];
    char schemas_dir[SDX_CONFIG_STR_MAX];
    char models_root[SDX_CONFIG_STR_MAX];
    char loras_root[SDX_CONFIG_STR_MAX];
    char vaes_root[SDX_CONFIG_STR_MAX];
    char controlnets_root[SDX_CONFIG_STR_MAX];
    char embeddings_root[SDX_CONFIG_STR_MAX];
    char upscalers_root[SDX_CONFIG_STR_MAX];
    char outputs_root[SDX_CONFIG_STR_MAX];
    int64_t max_image_bytes;
    int64_t max_pixels;
    char workflows_dir[SDX_CONFIG_STR_MAX];
    char state_db[SDX_CONFIG_STR_MAX];
    char batch_outputs[SDX_CONFIG_STR_MAX];
    int64_t step_timeout_ms;
    int64_t keep_finished;
    char curve_cert[SDX_CONFIG_STR_MAX];        /* the broker's key pair; "" : CURVE off */
    char curve_clients_dir[SDX_CONFIG_STR_MAX]; /* allowed client public keys */
    char curve_workers_dir[SDX_CONFIG_STR_MAX]; /* allowed worker public keys */
} broker_config_t;

/* Set from a SIGHUP handler: the broker re-reads its workflow files. */
extern volatile sig_atomic_t broker_reload_requested;

/* The option table (defaults, YAML keys, flags) for broker_config_t. */
extern const sdx_option_t broker_options[];
extern const size_t broker_options_count;

typedef struct broker broker_t;

/* Build a broker: loads the action table and catalogue, binds the sockets.
   NULL + err on failure. Caller owns the result. */
broker_t *broker_new(const broker_config_t *cfg, char *err, size_t err_len);
/* Serve until *stop becomes non-zero (set from a signal handler), then
   answer what is pending with shutting_down and tell workers DISCONNECT.
   0 on a clean stop, -1 on a fatal socket error. */
int broker_run(broker_t *b, volatile sig_atomic_t *stop);
void broker_destroy(broker_t **b);

#endif
