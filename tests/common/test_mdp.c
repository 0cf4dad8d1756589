/*  test_mdp.c - SDXW01 framing over a real inproc ROUTER/DEALER pair:
    every command both ways, and malformed messages are consumed whole. */
#include "sdx_mdp.h"
#include "tcheck.h"

#include <zmq.h>

int main(void)
{
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "w1", 2);
    CHECK(zmq_bind(router, "inproc://mdp") == 0);
    CHECK(zmq_connect(dealer, "inproc://mdp") == 0);
    char err[160];
    sdx_mdp_msg_t m = {0};

    CHECK(sdx_mdp_recv(router, true, &m, true, err, sizeof err) == 1); /* nothing yet */

    sdx_value_t *ready = sdx_value_map_new();
    sdx_map_set_str(ready, "domain", "inference");
    sdx_map_set_int(ready, "concurrency", 2);
    CHECK(sdx_mdp_send(dealer, NULL, 0, SDX_MDP_READY, NULL, ready, false) == 0);
    CHECK(sdx_mdp_recv(router, true, &m, false, err, sizeof err) == 0);
    CHECK(m.cmd == SDX_MDP_READY && m.identity_len == 2 && memcmp(m.identity, "w1", 2) == 0);
    CHECK(m.request_id[0] == 0 && sdx_value_equal(m.body, ready));

    /* broker -> worker REQUEST with id and body */
    uint8_t ident[256];
    size_t ident_len = m.identity_len;
    memcpy(ident, m.identity, ident_len);
    CHECK(sdx_mdp_send(router, ident, ident_len, SDX_MDP_REQUEST, "req-1", ready, false) == 0);
    CHECK(sdx_mdp_recv(dealer, false, &m, false, err, sizeof err) == 0);
    CHECK(m.cmd == SDX_MDP_REQUEST && strcmp(m.request_id, "req-1") == 0 && m.body != NULL);

    /* CANCEL: id, no body; HEARTBEAT: neither */
    CHECK(sdx_mdp_send(router, ident, ident_len, SDX_MDP_CANCEL, "req-1", NULL, false) == 0);
    CHECK(sdx_mdp_recv(dealer, false, &m, false, err, sizeof err) == 0);
    CHECK(m.cmd == SDX_MDP_CANCEL && strcmp(m.request_id, "req-1") == 0 && m.body == NULL);
    CHECK(sdx_mdp_send(dealer, NULL, 0, SDX_MDP_HEARTBEAT, NULL, NULL, false) == 0);
    CHECK(sdx_mdp_recv(router, true, &m, false, err, sizeof err) == 0);
    CHECK(m.cmd == SDX_MDP_HEARTBEAT && m.body == NULL);

    /* raw body */
    CHECK(sdx_mdp_send_raw(dealer, NULL, 0, SDX_MDP_REPLY, "req-1", "\x81\xa7success\xc3", 10,
                           false) == 0);
    CHECK(sdx_mdp_recv(router, true, &m, false, err, sizeof err) == 0);
    CHECK(m.cmd == SDX_MDP_REPLY && sdx_map_bool(m.body, "success", false));

    /* malformed: wrong protocol, then a good message must still arrive */
    zmq_send(dealer, "", 0, ZMQ_SNDMORE);
    zmq_send(dealer, "MDPW01", 6, ZMQ_SNDMORE);
    zmq_send(dealer, "\x05", 1, 0);
    CHECK(sdx_mdp_recv(router, true, &m, false, err, sizeof err) == -1);
    CHECK(strstr(err, "protocol") != NULL);
    /* REPLY without id */
    zmq_send(dealer, "", 0, ZMQ_SNDMORE);
    zmq_send(dealer, "SDXW01", 6, ZMQ_SNDMORE);
    zmq_send(dealer, "\x03", 1, 0);
    CHECK(sdx_mdp_recv(router, true, &m, false, err, sizeof err) == -1);
    /* bad body */
    zmq_send(dealer, "", 0, ZMQ_SNDMORE);
    zmq_send(dealer, "SDXW01", 6, ZMQ_SNDMORE);
    zmq_send(dealer, "\x03", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "r", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "\xdd\xff", 2, ZMQ_SNDMORE);
    zmq_send(dealer, "extra", 5, 0);
    CHECK(sdx_mdp_recv(router, true, &m, false, err, sizeof err) == -1);
    CHECK(sdx_mdp_send(dealer, NULL, 0, SDX_MDP_DISCONNECT, NULL, NULL, false) == 0);
    CHECK(sdx_mdp_recv(router, true, &m, false, err, sizeof err) == 0 &&
          m.cmd == SDX_MDP_DISCONNECT);
    CHECK(strcmp(sdx_mdp_cmd_name(SDX_MDP_PROGRESS), "PROGRESS") == 0);

    sdx_mdp_msg_clear(&m);
    sdx_value_destroy(&ready);
    zmq_close(router);
    zmq_close(dealer);
    zmq_ctx_term(ctx);
    return t_done();
}
