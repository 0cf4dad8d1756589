/*  sdx_mdp.c - SDXW/1 framing over raw libzmq sockets (see sdx_mdp.h and
    proto/PROTOCOL.md). Used by the broker's backend ROUTER and the workers'
    DEALER. Not the client protocol: clients speak plain frames to the
    broker's frontend.
*/
#include "sdx_mdp.h"

#include "sdx_codec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

const char *sdx_mdp_cmd_name(sdx_mdp_cmd_t c)
{
    switch (c) {
    case SDX_MDP_READY:
        return "READY";
    case SDX_MDP_REQUEST:
        return "REQUEST";
    case SDX_MDP_REPLY:
        return "REPLY";
    case SDX_MDP_PROGRESS:
        return "PROGRESS";
    case SDX_MDP_HEARTBEAT:
        return "HEARTBEAT";
    case SDX_MDP_DISCONNECT:
        return "DISCONNECT";
    case SDX_MDP_CANCEL:
        return "CANCEL";
    }
    return "?";
}

static bool s_has_id(int cmd)
{
    return cmd == SDX_MDP_REQUEST || cmd == SDX_MDP_REPLY || cmd == SDX_MDP_PROGRESS ||
           cmd == SDX_MDP_CANCEL;
}

static bool s_known(int cmd)
{
    return cmd >= SDX_MDP_READY && cmd <= SDX_MDP_CANCEL;
}

void sdx_mdp_msg_clear(sdx_mdp_msg_t *m)
{
    if (!m)
        return;
    sdx_value_destroy(&m->body);
    m->identity_len = 0;
    m->cmd = 0;
    m->request_id[0] = '\0';
    m->bad_body = false;
}

static void s_free_buf(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Send one frame; `take` hands a malloc'd buffer to libzmq (no copy). */
static int s_send_frame(void *sock, const void *data, size_t len, int flags, bool take)
{
    zmq_msg_t m;
    if (take) {
        if (zmq_msg_init_data(&m, (void *)data, len, s_free_buf, NULL) != 0) {
            free((void *)data);
            return -1;
        }
    } else {
        if (zmq_msg_init_size(&m, len) != 0)
            return -1;
        if (len)
            memcpy(zmq_msg_data(&m), data, len);
    }
    if (zmq_msg_send(&m, sock, flags) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        errno = e;
        return -1;
    }
    return 0;
}

static int s_send(void *sock, const uint8_t *identity, size_t identity_len, sdx_mdp_cmd_t cmd,
                  const char *request_id, const void *body, size_t body_len, bool take,
                  bool has_body, bool dontwait)
{
    int dw = dontwait ? ZMQ_DONTWAIT : 0;
    int more = ZMQ_SNDMORE | dw;
    uint8_t c = (uint8_t)cmd;
    bool with_id = s_has_id(cmd);
    if (identity && s_send_frame(sock, identity, identity_len, more, false) != 0)
        goto fail;
    /* After the first frame the message is committed: the rest never blocks. */
    if (s_send_frame(sock, "", 0, more, false) != 0)
        goto fail;
    if (s_send_frame(sock, SDX_MDP_PROTOCOL, 6, more, false) != 0)
        goto fail;
    if (s_send_frame(sock, &c, 1, (with_id || has_body) ? more : dw, false) != 0)
        goto fail;
    if (with_id) {
        const char *id = request_id ? request_id : "";
        if (s_send_frame(sock, id, strlen(id), has_body ? more : dw, false) != 0)
            goto fail;
    }
    if (has_body) {
        int rc = s_send_frame(sock, body, body_len, dw, take);
        take = false;
        if (rc != 0)
            goto fail;
    }
    return 0;
fail:
    if (take)
        free((void *)body);
    return -1;
}

int sdx_mdp_send_raw(void *sock, const uint8_t *identity, size_t identity_len, sdx_mdp_cmd_t cmd,
                     const char *request_id, const void *body, size_t body_len, bool dontwait)
{
    return s_send(sock, identity, identity_len, cmd, request_id, body, body_len, false,
                  body != NULL, dontwait);
}

int sdx_mdp_send_take(void *sock, const uint8_t *identity, size_t identity_len, sdx_mdp_cmd_t cmd,
                      const char *request_id, uint8_t *body, size_t body_len, bool dontwait)
{
    return s_send(sock, identity, identity_len, cmd, request_id, body, body_len, true, body != NULL,
                  dontwait);
}

int sdx_mdp_send(void *sock, const uint8_t *identity, size_t identity_len, sdx_mdp_cmd_t cmd,
                 const char *request_id, const sdx_value_t *body, bool dontwait)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (body && sdx_msgpack_encode(body, &buf, &len) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return s_send(sock, identity, identity_len, cmd, request_id, buf, len, true, body != NULL,
                  dontwait);
}

int sdx_mdp_recv(void *sock, bool router, sdx_mdp_msg_t *out, bool dontwait, char *err,
                 size_t err_len)
{
    sdx_mdp_msg_clear(out);
    zmq_msg_t f;
    int index = 0;     /* frame index after the identity */
    int want_end = -1; /* index of the body/last frame once cmd is known */
    bool bad = false;
    bool have_id = false;
    if (err && err_len)
        err[0] = '\0';
    for (;;) {
        zmq_msg_init(&f);
        bool first = router ? !have_id : index == 0;
        int flags = first && dontwait ? ZMQ_DONTWAIT : 0;
        if (zmq_msg_recv(&f, sock, flags) < 0) {
            int e = errno;
            zmq_msg_close(&f);
            if (e == EAGAIN && first)
                return 1;
            errno = e;
            sdx_mdp_msg_clear(out);
            return -1;
        }
        const uint8_t *d = zmq_msg_data(&f);
        size_t n = zmq_msg_size(&f);
        int more = zmq_msg_more(&f);
        if (router && !have_id) {
            have_id = true;
            if (n > sizeof out->identity) {
                bad = true;
                snprintf(err, err_len, "identity too long");
            } else {
                memcpy(out->identity, d, n);
                out->identity_len = n;
            }
            zmq_msg_close(&f);
            if (!more) {
                bad = true;
                snprintf(err, err_len, "identity frame only");
                break;
            }
            continue;
        }
        if (!bad) {
            switch (index) {
            case 0:
                if (n != 0) {
                    bad = true;
                    snprintf(err, err_len, "missing empty delimiter frame");
                }
                break;
            case 1:
                if (n != 6 || memcmp(d, SDX_MDP_PROTOCOL, 6) != 0) {
                    bad = true;
                    snprintf(err, err_len, "protocol frame is not %s", SDX_MDP_PROTOCOL);
                }
                break;
            case 2:
                if (n != 1 || !s_known(d[0])) {
                    bad = true;
                    snprintf(err, err_len, "unknown command");
                } else {
                    out->cmd = (sdx_mdp_cmd_t)d[0];
                    want_end = s_has_id(d[0]) ? 4 : 3;
                }
                break;
            default:
                if (index == 3 && s_has_id(out->cmd)) {
                    if (n > SDX_MDP_MAX_ID) {
                        bad = true;
                        snprintf(err, err_len, "request id longer than %d bytes", SDX_MDP_MAX_ID);
                    } else if (memchr(d, '\0', n)) {
                        bad = true;
                        snprintf(err, err_len, "request id holds a NUL byte");
                    } else {
                        memcpy(out->request_id, d, n);
                        out->request_id[n] = '\0';
                    }
                } else if (index == want_end) {
                    char e2[160];
                    out->body = sdx_msgpack_decode(d, n, e2, sizeof e2);
                    if (!out->body) {
                        bad = out->bad_body = true;
                        snprintf(err, err_len, "%s body: %s", sdx_mdp_cmd_name(out->cmd), e2);
                    } else if (out->body->type != SDX_MAP) {
                        bad = out->bad_body = true;
                        snprintf(err, err_len, "%s body is not a map", sdx_mdp_cmd_name(out->cmd));
                    }
                } else {
                    bad = true;
                    snprintf(err, err_len, "too many frames");
                }
            }
        }
        zmq_msg_close(&f);
        index++;
        if (!more)
            break;
    }
    if (!bad && index < 3) {
        bad = true;
        snprintf(err, err_len, "short message (%d frames)", index);
    }
    if (!bad && s_has_id(out->cmd) && index < 4) {
        bad = true;
        snprintf(err, err_len, "%s without a request id", sdx_mdp_cmd_name(out->cmd));
    }
    if (!bad && out->cmd == SDX_MDP_READY && !out->body) {
        bad = true;
        snprintf(err, err_len, "READY without a body");
    }
    if (bad) {
        sdx_value_destroy(&out->body);
        /* only a bad body with everything else in order keeps cmd and id */
        out->bad_body = out->bad_body && index == want_end + 1 && out->request_id[0];
        return -1;
    }
    return 0;
}
