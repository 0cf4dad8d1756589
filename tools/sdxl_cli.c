/*  sdxl_cli.c - `sdxl-cli`, the debugging client of the fleet.

        sdxl-cli [options] send TYPE [JSON|@FILE|-]
        sdxl-cli [options] status | workers | ping
        sdxl-cli [options] watch ID   (a request, session or batch id)
        sdxl-cli [options] cancel REQUEST_ID
        sdxl-cli [options] generate [JSON|@FILE|-] --out FILE

    A request is one frame (JSON by default, msgpack with --msgpack) to the
    broker's frontend ROUTER; the reply comes back in the same encoding and is
    printed as indented JSON (or as received with --raw). --stream uses a
    DEALER and asks for progress messages, printing one line per progress
    before the reply. `watch` subscribes to the broker's events PUB and
    prints the progress of one request, orchestrator session or batch
    until it is done. `generate` sends
    inference.generate with the given data (msgpack unless --json: the images
    come back as raw bytes), writes the images to FILE (FILE-0.png,
    FILE-1.png ... for several) and prints the reply with each image's bytes
    replaced by their size.

    Options may also follow the command (`sdxl-cli send device.list
    --msgpack`); `--` ends them. Floats print in their shortest round-trip
    form (4.76, not 4.7599999999999998).

    Exit codes: 0 success, 1 error reply (printed), 2 usage, 3 timeout (no
    reply in --timeout ms; also what an unreachable broker looks like).

    Not for: load generation (tools/bench_broker.c) or scripting of
    workflows (use a real client library).
*/
#include "sdx_codec.h"
#include "sdx_curve.h"
#include "sdx_value.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define EXIT_OK 0
#define EXIT_ERROR_REPLY 1
#define EXIT_USAGE 2
#define EXIT_TIMEOUT 3

typedef struct {
    const char *endpoint;
    const char *events;
    int timeout_ms;
    sdx_encoding_t enc;
    bool raw;
    bool stream;
    bool quiet;
    const char *priority;
    const char *request_id;
    const char *session_id;
    int64_t req_timeout_ms; /* timeout_ms field of the request (-1: not sent) */
    bool enc_given;         /* --json or --msgpack was given */
    const char *out;        /* generate: where the images go */
} s_opts_t;

static volatile sig_atomic_t s_interrupted = 0;

static void s_on_signal(int sig)
{
    (void)sig;
    s_interrupted = 1;
}

static int64_t s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------- pretty JSON */

static void s_json_str(FILE *f, const char *s, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

static void s_indent(FILE *f, int n)
{
    for (int i = 0; i < n; i++)
        fputs("  ", f);
}

/* The shortest %g text that reads back as the same double: 4.76, not
   4.7599999999999998 (15 digits round-trip most values; 17 always do). */
static void s_print_double(FILE *f, double d)
{
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* keep it a JSON number that still reads as a float */
    if (!strpbrk(buf, ".eEn"))
        strcat(buf, ".0");
    fputs(buf, f);
}

/* Indented JSON; binary shows as base64 (as the JSON encoding carries it). */
static void s_pretty(FILE *f, const sdx_value_t *v, int depth)
{
    switch (v->type) {
    case SDX_NIL:
        fputs("null", f);
        break;
    case SDX_BOOL:
        fputs(v->u.b ? "true" : "false", f);
        break;
    case SDX_INT:
        fprintf(f, "%" PRId64, v->u.i);
        break;
    case SDX_FLOAT:
        if (isfinite(v->u.f))
            s_print_double(f, v->u.f);
        else
            fputs("null", f);
        break;
    case SDX_STR:
        s_json_str(f, v->u.str.ptr, v->u.str.len);
        break;
    case SDX_BIN:
    case SDX_EXT: {
        const uint8_t *p = v->type == SDX_BIN ? v->u.bin.ptr : v->u.ext.ptr;
        size_t n = v->type == SDX_BIN ? v->u.bin.len : v->u.ext.len;
        char *b64 = sdx_base64_encode(p, n);
        if (b64)
            s_json_str(f, b64, strlen(b64));
        else
            fputs("null", f);
        free(b64);
        break;
    }
    case SDX_ARRAY:
        if (v->u.arr.len == 0) {
            fputs("[]", f);
            break;
        }
        fputs("[\n", f);
        for (size_t i = 0; i < v->u.arr.len; i++) {
            s_indent(f, depth + 1);
            s_pretty(f, v->u.arr.items[i], depth + 1);
            fputs(i + 1 < v->u.arr.len ? ",\n" : "\n", f);
        }
        s_indent(f, depth);
        fputc(']', f);
        break;
    case SDX_MAP:
        if (v->u.map.len == 0) {
            fputs("{}", f);
            break;
        }
        fputs("{\n", f);
        for (size_t i = 0; i < v->u.map.len; i++) {
            s_indent(f, depth + 1);
            s_json_str(f, v->u.map.items[i].key, v->u.map.items[i].key_len);
            fputs(": ", f);
            s_pretty(f, v->u.map.items[i].val, depth + 1);
            fputs(i + 1 < v->u.map.len ? ",\n" : "\n", f);
        }
        s_indent(f, depth);
        fputc('}', f);
        break;
    }
}

/* ---------------------------------------------------------------- input */

static char *s_read_all(FILE *f, size_t *len_out)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf) {
        buf[len] = '\0';
        *len_out = len;
    }
    return buf;
}

/* The data argument: inline JSON, @FILE or - (stdin). NULL arg: {}. */
static sdx_value_t *s_load_data(const char *arg)
{
    char err[256] = "";
    if (!arg)
        return sdx_value_map_new();
    char *text = NULL;
    size_t len = 0;
    if (strcmp(arg, "-") == 0 || arg[0] == '@') {
        FILE *f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
        if (!f) {
            fprintf(stderr, "sdxl-cli: %s: %s\n", arg + 1, strerror(errno));
            return NULL;
        }
        text = s_read_all(f, &len);
        if (f != stdin)
            fclose(f);
    } else {
        text = strdup(arg);
        len = text ? strlen(text) : 0;
    }
    if (!text) {
        fprintf(stderr, "sdxl-cli: out of memory\n");
        return NULL;
    }
    sdx_value_t *v = sdx_json_decode(text, len, err, sizeof err);
    free(text);
    if (!v) {
        fprintf(stderr, "sdxl-cli: data is not valid JSON: %s\n", err);
        return NULL;
    }
    if (v->type != SDX_MAP) {
        fprintf(stderr, "sdxl-cli: data must be a JSON object\n");
        sdx_value_destroy(&v);
    }
    return v;
}

/* ------------------------------------------------------------- requests */

/* CURVE (--curve-cert and --curve-broker-key), NULL: plaintext */
static const char *s_curve_cert, *s_curve_broker;

static void *s_socket(void *ctx, int type, const char *ep)
{
    void *s = zmq_socket(ctx, type);
    if (!s)
        return NULL;
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    char err[600];
    if (s_curve_cert && sdx_curve_client(s, s_curve_cert, s_curve_broker, err, sizeof err) != 0) {
        fprintf(stderr, "sdxl-cli: curve: %s\n", err);
        zmq_close(s);
        return NULL;
    }
    if (zmq_connect(s, ep) != 0) {
        fprintf(stderr, "sdxl-cli: cannot connect to %s: %s\n", ep, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

static void s_print_progress(const sdx_value_t *m)
{
    const sdx_value_t *d = sdx_map_get(m, "data");
    if (!d || d->type != SDX_MAP)
        d = m;
    int64_t step = sdx_map_int(d, "step", 0), total = sdx_map_int(d, "total", 0);
    const char *msg = sdx_map_str(d, "message", "");
    const char *rid = sdx_map_str(m, "request_id", "");
    double rate = 0;
    const sdx_value_t *rv = sdx_map_get(d, "it_per_s");
    if (rv && sdx_value_as_double(rv, &rate) && rate > 0 && total > 0)
        printf("progress %s %" PRId64 "/%" PRId64 " (%.0f%%)%s%s %.2f it/s\n", rid, step, total,
               100.0 * (double)step / (double)total, *msg ? " " : "", msg, rate);
    else if (total > 0)
        printf("progress %s %" PRId64 "/%" PRId64 " (%.0f%%)%s%s\n", rid, step, total,
               100.0 * (double)step / (double)total, *msg ? " " : "", msg);
    else
        printf("progress %s %" PRId64 "%s%s\n", rid, step, *msg ? " " : "", msg);
    fflush(stdout);
}

/* generate: the path of image i of n for --out FILE: FILE itself for one
   image, FILE-i.EXT (EXT from FILE, else png) for several. */
static void s_image_path(char *buf, size_t len, const char *out, size_t i, size_t n)
{
    if (n == 1) {
        snprintf(buf, len, "%s", out);
        return;
    }
    const char *slash = strrchr(out, '/'), *dot = strrchr(out, '.');
    if (!dot || (slash && dot < slash))
        snprintf(buf, len, "%s-%zu.png", out, i);
    else
        snprintf(buf, len, "%.*s-%zu%s", (int)(dot - out), out, i, dot);
}

/* generate: write every data.images[i].image (bin, or base64 text in a JSON
   reply) under o->out and put "<N bytes>" in its place, so the printed reply
   stays readable. Returns 0, or -1 after saying what failed. */
static int s_save_images(const s_opts_t *o, sdx_value_t *reply)
{
    sdx_value_t *images = sdx_map_get_path(reply, "data.images");
    size_t n = sdx_array_len(images);
    if (n == 0) {
        fprintf(stderr, "sdxl-cli: the reply holds no images\n");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        sdx_value_t *img = sdx_array_at(images, i);
        sdx_value_t *v = sdx_map_get(img, "image");
        uint8_t *decoded = NULL;
        const uint8_t *bytes = NULL;
        size_t len = 0;
        if (v && v->type == SDX_BIN) {
            bytes = v->u.bin.ptr;
            len = v->u.bin.len;
        } else if (v && v->type == SDX_STR &&
                   sdx_base64_decode(v->u.str.ptr, v->u.str.len, &decoded, &len) == 0) {
            bytes = decoded;
        } else {
            fprintf(stderr, "sdxl-cli: data.images[%zu].image is not image bytes\n", i);
            return -1;
        }
        char path[4096];
        s_image_path(path, sizeof path, o->out, i, n);
        FILE *f = fopen(path, "wb");
        bool ok = f && fwrite(bytes, 1, len, f) == len;
        if (f && fclose(f) != 0)
            ok = false;
        free(decoded);
        if (!ok) {
            fprintf(stderr, "sdxl-cli: cannot write %s: %s\n", path, strerror(errno));
            return -1;
        }
        fprintf(stderr, "sdxl-cli: wrote %s (%zu bytes)\n", path, len);
        char note[64];
        snprintf(note, sizeof note, "<%zu bytes>", len);
        sdx_map_set_str(img, "image", note);
    }
    return 0;
}

/* Print a final reply; returns the exit code it stands for. */
static int s_print_reply(const s_opts_t *o, const void *buf, size_t len)
{
    char err[256] = "";
    sdx_encoding_t enc = sdx_codec_detect(buf, len);
    sdx_value_t *v = sdx_codec_decode(buf, len, enc, err, sizeof err);
    int save_rc = 0;
    if (v && o->out && sdx_map_bool(v, "success", false))
        save_rc = s_save_images(o, v);
    if (o->raw) {
        fwrite(buf, 1, len, stdout);
        if (enc == SDX_ENC_JSON)
            fputc('\n', stdout);
    } else if (v) {
        s_pretty(stdout, v, 0);
        fputc('\n', stdout);
    }
    fflush(stdout);
    if (!v) {
        fprintf(stderr, "sdxl-cli: undecodable reply (%zu bytes): %s\n", len, err);
        return EXIT_ERROR_REPLY;
    }
    int rc = EXIT_OK;
    if (!sdx_map_bool(v, "success", false)) {
        const sdx_value_t *e = sdx_map_get(v, "error");
        fprintf(stderr, "sdxl-cli: error %s: %s\n", sdx_map_str(e, "code", "?"),
                sdx_map_str(e, "message", ""));
        rc = EXIT_ERROR_REPLY;
    } else if (save_rc != 0) {
        rc = EXIT_ERROR_REPLY;
    }
    sdx_value_destroy(&v);
    return rc;
}

static int s_request(const s_opts_t *o, const char *type, sdx_value_t *data)
{
    sdx_value_t *req = sdx_value_map_new();
    if (!req) {
        sdx_value_destroy(&data);
        return EXIT_ERROR_REPLY;
    }
    sdx_map_set_str(req, "message_type", type);
    char rid[96];
    if (o->request_id)
        snprintf(rid, sizeof rid, "%s", o->request_id);
    else
        snprintf(rid, sizeof rid, "cli-%d-%" PRId64, (int)getpid(), s_mono_ms());
    sdx_map_set_str(req, "request_id", rid);
    sdx_map_set(req, "data", data);
    if (o->priority)
        sdx_map_set_str(req, "priority", o->priority);
    if (o->req_timeout_ms >= 0)
        sdx_map_set_int(req, "timeout_ms", o->req_timeout_ms);
    if (o->session_id)
        sdx_map_set_str(req, "session_id", o->session_id);
    if (o->stream)
        sdx_map_set_bool(req, "stream", true);
    uint8_t *frame = NULL;
    size_t flen = 0;
    int enc_rc = sdx_codec_encode(req, o->enc, &frame, &flen);
    sdx_value_destroy(&req);
    if (enc_rc != 0) {
        fprintf(stderr, "sdxl-cli: cannot encode the request\n");
        return EXIT_ERROR_REPLY;
    }

    void *ctx = zmq_ctx_new();
    /* REQ for a plain round trip; a DEALER when progress messages may come
       before the reply. The DEALER sends the bare request frame (no empty
       delimiter): the broker streams only to clients framed that way. */
    void *s = s_socket(ctx, o->stream ? ZMQ_DEALER : ZMQ_REQ, o->endpoint);
    int rc = EXIT_TIMEOUT;
    if (!s) {
        rc = EXIT_USAGE;
        goto done;
    }
    if (zmq_send(s, frame, flen, 0) < 0) {
        fprintf(stderr, "sdxl-cli: send: %s\n", zmq_strerror(errno));
        goto done;
    }
    int64_t deadline = s_mono_ms() + o->timeout_ms;
    for (;;) {
        int64_t left = deadline - s_mono_ms();
        if (left <= 0 || s_interrupted)
            break;
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, (long)left) <= 0)
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            continue;
        }
        if (zmq_msg_size(&m) == 0 && zmq_msg_more(&m)) { /* DEALER: delimiter */
            zmq_msg_close(&m);
            continue;
        }
        const void *buf = zmq_msg_data(&m);
        size_t len = zmq_msg_size(&m);
        char err[128];
        sdx_value_t *v = sdx_codec_decode(buf, len, sdx_codec_detect(buf, len), err, sizeof err);
        const char *mt = v ? sdx_map_str(v, "message_type", "") : "";
        if (v && strcmp(mt, "progress") == 0) {
            if (o->raw) {
                fwrite(buf, 1, len, stdout);
                fputc('\n', stdout);
                fflush(stdout);
            } else if (!o->quiet) {
                s_print_progress(v);
            }
            sdx_value_destroy(&v);
            zmq_msg_close(&m);
            deadline = s_mono_ms() + o->timeout_ms; /* progress proves life */
            continue;
        }
        sdx_value_destroy(&v);
        rc = s_print_reply(o, buf, len);
        zmq_msg_close(&m);
        goto done;
    }
    if (s_interrupted)
        fprintf(stderr, "sdxl-cli: interrupted while waiting for %s\n", rid);
    else
        fprintf(stderr,
                "sdxl-cli: timeout: no reply to %s (%s) from %s within %d ms (--timeout MS "
                "waits longer; a request the broker took keeps running: sdxl-cli cancel %s "
                "stops it)\n",
                rid, type, o->endpoint, o->timeout_ms, rid);
done:
    free(frame);
    if (s)
        zmq_close(s);
    zmq_ctx_term(ctx);
    return rc;
}

/* ---------------------------------------------------------------- watch */

/* Events are [topic][body] (or a single body frame). A body names its
   request in request_id (top level or in data); progress events carry
   step/total; a final event carries success or names itself done. */
static bool s_event_is_final(const sdx_value_t *v, const char *topic)
{
    const char *ev = sdx_map_str(v, "event", sdx_map_str(v, "type", ""));
    const char *mt = sdx_map_str(v, "message_type", "");
    static const char *const finals[] = {
        "reply",   "done",      "completed",    "complete",          "finished",       "failed",
        "timeout", "cancelled", "request.done", "request.completed", "request.failed", NULL};
    (void)topic; /* the topic names the object (request.<id>), the body's event what happened */
    for (const char *const *f = finals; *f; f++) {
        size_t fl = strlen(*f), el = strlen(ev);
        if (strcmp(ev, *f) == 0 ||
            (el > fl && ev[el - fl - 1] == '.' && strcmp(ev + el - fl, *f) == 0))
            return true;
    }
    return sdx_map_get(v, "success") != NULL && strcmp(mt, "progress") != 0;
}

static int s_watch(const s_opts_t *o, const char *rid)
{
    void *ctx = zmq_ctx_new();
    void *s = s_socket(ctx, ZMQ_SUB, o->events);
    int rc = EXIT_TIMEOUT;
    if (!s) {
        rc = EXIT_USAGE;
        goto done;
    }
    zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
    if (!o->quiet)
        fprintf(stderr, "sdxl-cli: watching %s on %s\n", rid, o->events);
    int64_t deadline = s_mono_ms() + o->timeout_ms;
    while (!s_interrupted) {
        int64_t left = deadline - s_mono_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, (long)left) <= 0)
            continue;
        char topic[256] = "";
        zmq_msg_t m;
        zmq_msg_init(&m);
        int n = zmq_msg_recv(&m, s, 0);
        if (n >= 0 && zmq_msg_more(&m)) { /* topic frame, then the body */
            snprintf(topic, sizeof topic, "%.*s", (int)zmq_msg_size(&m),
                     (const char *)zmq_msg_data(&m));
            zmq_msg_close(&m);
            zmq_msg_init(&m);
            n = zmq_msg_recv(&m, s, 0);
            while (n >= 0 && zmq_msg_more(&m)) { /* keep the last frame as body */
                zmq_msg_close(&m);
                zmq_msg_init(&m);
                n = zmq_msg_recv(&m, s, 0);
            }
        }
        if (n < 0) {
            zmq_msg_close(&m);
            continue;
        }
        char err[128];
        const void *buf = zmq_msg_data(&m);
        size_t len = zmq_msg_size(&m);
        sdx_value_t *v = sdx_codec_decode(buf, len, sdx_codec_detect(buf, len), err, sizeof err);
        const char *erid = v ? sdx_map_str(v, "request_id", NULL) : NULL;
        if (v && !erid)
            erid = sdx_map_str(sdx_map_get(v, "data"), "request_id", NULL);
        /* a session or batch of the orchestrator: its own events only (not
           its steps' request.* events, which carry session_id too) */
        const char *oid = v ? sdx_map_str(v, "batch_id", NULL) : NULL;
        if (v && !oid && strncmp(topic, "session.", 8) == 0)
            oid = sdx_map_str(v, "session_id", NULL);
        if (oid)
            erid = oid;
        if (!v || !erid || strcmp(erid, rid) != 0) {
            sdx_value_destroy(&v);
            zmq_msg_close(&m);
            continue;
        }
        deadline = s_mono_ms() + o->timeout_ms;
        bool final = s_event_is_final(v, topic);
        if (o->raw) {
            fwrite(buf, 1, len, stdout);
            fputc('\n', stdout);
        } else if (!final) {
            s_print_progress(v);
        } else {
            s_pretty(stdout, v, 0);
            fputc('\n', stdout);
        }
        fflush(stdout);
        if (final) {
            /* a request's "done" carries outcome "ok" or the error code */
            const sdx_value_t *succ = sdx_map_get(v, "success");
            const char *outcome = sdx_map_str(v, "outcome", "ok");
            const char *ev = sdx_map_str(v, "event", "");
            rc = ((succ && succ->type == SDX_BOOL && !succ->u.b) || strcmp(outcome, "ok") != 0 ||
                  strcmp(ev, "failed") == 0 || strcmp(ev, "cancelled") == 0)
                     ? EXIT_ERROR_REPLY
                     : EXIT_OK;
            sdx_value_destroy(&v);
            zmq_msg_close(&m);
            goto done;
        }
        sdx_value_destroy(&v);
        zmq_msg_close(&m);
    }
    fprintf(stderr, "sdxl-cli: watch %s: %s\n", rid,
            s_interrupted ? "interrupted" : "no event within the timeout");
done:
    if (s)
        zmq_close(s);
    zmq_ctx_term(ctx);
    return rc;
}

/* ----------------------------------------------------------------- main */

static void s_usage(FILE *f)
{
    fprintf(f, "usage: sdxl-cli [options] send TYPE [JSON|@FILE|-]   send one request (data)\n"
               "       sdxl-cli [options] status                     system.status\n"
               "       sdxl-cli [options] workers                    system.workers\n"
               "       sdxl-cli [options] ping                       system.ping\n"
               "       sdxl-cli [options] watch ID       progress of a request, session or batch (events PUB)\n"
               "       sdxl-cli [options] cancel REQUEST_ID          system.cancel\n"
               "       sdxl-cli [options] generate [JSON|@FILE|-] --out FILE\n"
               "                                 inference.generate; images to FILE (FILE-N.EXT)\n"
               "       sdxl-cli keygen FILE [NAME]  a CURVE key pair: FILE (public: copy it into\n"
               "                                 the broker's allow-list) and FILE_secret\n"
               "options:\n"
               "  --endpoint EP         broker frontend (default $SDXL_ENDPOINT or\n"
               "                        tcp://127.0.0.1:5555)\n"
               "  --events-endpoint EP  broker events PUB (default $SDXL_EVENTS_ENDPOINT or\n"
               "                        tcp://127.0.0.1:5557)\n"
               "  --timeout MS          wait this long for the reply / next event (default 30000)\n"
               "  --json | --msgpack    request encoding (default json, msgpack for generate);\n"
               "                        replies come back in it\n"
               "  --out FILE            generate: where the images go\n"
               "  --raw                 print the reply frame as received\n"
               "  --stream              DEALER + stream:true: print progress lines as they come\n"
               "  --priority P          low|normal|high|critical\n"
               "  --request-timeout MS  timeout_ms field of the request\n"
               "  --request-id ID       request_id to send (default: made up)\n"
               "  --session ID          session_id to send\n"
               "  --curve-cert FILE     CURVE: this client's key pair (sdxl-cli keygen)\n"
               "  --curve-broker-key F  CURVE: the broker's public certificate\n"
               "  -q, --quiet           no progress lines\n"
               "options may come before or after the command; -- ends them\n"
               "exit: 0 success, 1 error reply, 2 usage, 3 timeout\n");
}

int main(int argc, char **argv)
{
    s_opts_t o = {
        .endpoint = getenv("SDXL_ENDPOINT") ? getenv("SDXL_ENDPOINT") : "tcp://127.0.0.1:5555",
        .events = getenv("SDXL_EVENTS_ENDPOINT") ? getenv("SDXL_EVENTS_ENDPOINT")
                                                 : "tcp://127.0.0.1:5557",
        .timeout_ms = 30000,
        .enc = SDX_ENC_JSON,
        .req_timeout_ms = -1,
    };
    enum {
        O_EVENTS = 256,
        O_JSON,
        O_MSGPACK,
        O_RAW,
        O_STREAM,
        O_PRIO,
        O_RTMO,
        O_RID,
        O_SESS,
        O_OUT,
        O_CCERT,
        O_CBROKER
    };
    static const struct option longopts[] = {
        {"endpoint", required_argument, NULL, 'e'},
        {"events-endpoint", required_argument, NULL, O_EVENTS},
        {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, O_JSON},
        {"msgpack", no_argument, NULL, O_MSGPACK},
        {"raw", no_argument, NULL, O_RAW},
        {"stream", no_argument, NULL, O_STREAM},
        {"priority", required_argument, NULL, O_PRIO},
        {"request-timeout", required_argument, NULL, O_RTMO},
        {"request-id", required_argument, NULL, O_RID},
        {"session", required_argument, NULL, O_SESS},
        {"out", required_argument, NULL, O_OUT},
        {"curve-cert", required_argument, NULL, O_CCERT},
        {"curve-broker-key", required_argument, NULL, O_CBROKER},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    char *end;
    /* Options may come before or after the command ("send device.list
       --msgpack"): a leading '-' in the option string hands every
       non-option back in order (as 1), whatever POSIXLY_CORRECT says; "--"
       ends the options (for a JSON argument that starts with '-'). */
    char *pos[argc + 1]; /* argc is small and > 0 */
    int npos = 0;
    while ((ch = getopt_long(argc, argv, "-e:t:qh", longopts, NULL)) != -1) {
        switch (ch) {
        case 1:
            pos[npos++] = optarg;
            break;
        case 'e':
            o.endpoint = optarg;
            break;
        case O_EVENTS:
            o.events = optarg;
            break;
        case 't':
            o.timeout_ms = (int)strtol(optarg, &end, 10);
            if (*end || o.timeout_ms <= 0) {
                fprintf(stderr, "sdxl-cli: --timeout wants milliseconds > 0\n");
                return EXIT_USAGE;
            }
            break;
        case O_JSON:
            o.enc = SDX_ENC_JSON;
            o.enc_given = true;
            break;
        case O_MSGPACK:
            o.enc = SDX_ENC_MSGPACK;
            o.enc_given = true;
            break;
        case O_OUT:
            o.out = optarg;
            break;
        case O_CCERT:
            s_curve_cert = optarg;
            break;
        case O_CBROKER:
            s_curve_broker = optarg;
            break;
        case O_RAW:
            o.raw = true;
            break;
        case O_STREAM:
            o.stream = true;
            break;
        case O_PRIO:
            o.priority = optarg;
            break;
        case O_RTMO:
            o.req_timeout_ms = strtoll(optarg, &end, 10);
            if (*end || o.req_timeout_ms < 0) {
                fprintf(stderr, "sdxl-cli: --request-timeout wants milliseconds >= 0\n");
                return EXIT_USAGE;
            }
            break;
        case O_RID:
            o.request_id = optarg;
            break;
        case O_SESS:
            o.session_id = optarg;
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'h':
            s_usage(stdout);
            return EXIT_OK;
        default:
            s_usage(stderr);
            return EXIT_USAGE;
        }
    }
    while (optind < argc)
        pos[npos++] = argv[optind++];
    if (npos == 0) {
        s_usage(stderr);
        return EXIT_USAGE;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    const char *cmd = pos[0];
    int nargs = npos - 1;
    char **args = pos + 1;
    static const struct {
        const char *cmd;
        const char *type;
    } shortcuts[] = {
        {"status", "system.status"},
        {"workers", "system.workers"},
        {"ping", "system.ping"},
    };
    if (!s_curve_cert != !s_curve_broker) {
        fprintf(stderr, "sdxl-cli: CURVE needs both --curve-cert and --curve-broker-key\n");
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "keygen") == 0) {
        if (nargs < 1 || nargs > 2) {
            fprintf(stderr, "sdxl-cli: keygen FILE [NAME]\n");
            return EXIT_USAGE;
        }
        char err[600];
        if (sdx_curve_keygen(args[0], nargs > 1 ? args[1] : args[0], err, sizeof err) != 0) {
            fprintf(stderr, "sdxl-cli: keygen: %s\n", err);
            return EXIT_ERROR_REPLY;
        }
        if (!o.quiet)
            fprintf(stderr, "sdxl-cli: wrote %s (public) and %s_secret (keep it private)\n",
                    args[0], args[0]);
        return EXIT_OK;
    }
    if (o.out && strcmp(cmd, "generate") != 0) {
        fprintf(stderr, "sdxl-cli: --out is for generate\n");
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "cancel") == 0) { /* system.cancel {request_id} */
        if (nargs != 1) {
            s_usage(stderr);
            return EXIT_USAGE;
        }
        sdx_value_t *data = sdx_value_map_new();
        if (!data)
            return EXIT_ERROR_REPLY;
        /* the id as the request was sent: an integer id is cancelled by
           its text form too (the broker keys requests by it) */
        sdx_map_set_str(data, "request_id", args[0]);
        return s_request(&o, "system.cancel", data);
    }
    for (size_t i = 0; i < sizeof shortcuts / sizeof shortcuts[0]; i++) {
        if (strcmp(cmd, shortcuts[i].cmd) == 0) {
            if (nargs > 1) {
                s_usage(stderr);
                return EXIT_USAGE;
            }
            sdx_value_t *data = s_load_data(nargs ? args[0] : NULL);
            if (!data)
                return EXIT_USAGE;
            return s_request(&o, shortcuts[i].type, data);
        }
    }
    if (strcmp(cmd, "send") == 0) {
        if (nargs < 1 || nargs > 2) {
            s_usage(stderr);
            return EXIT_USAGE;
        }
        sdx_value_t *data = s_load_data(nargs == 2 ? args[1] : NULL);
        if (!data)
            return EXIT_USAGE;
        return s_request(&o, args[0], data);
    }
    if (strcmp(cmd, "generate") == 0) {
        if (nargs > 1 || !o.out || !*o.out) {
            fprintf(stderr, "sdxl-cli: generate wants --out FILE and at most one data argument\n");
            s_usage(stderr);
            return EXIT_USAGE;
        }
        if (!o.enc_given)
            o.enc = SDX_ENC_MSGPACK;
        sdx_value_t *data = s_load_data(nargs ? args[0] : NULL);
        if (!data)
            return EXIT_USAGE;
        return s_request(&o, "inference.generate", data);
    }
    if (strcmp(cmd, "watch") == 0) {
        if (nargs != 1) {
            s_usage(stderr);
            return EXIT_USAGE;
        }
        return s_watch(&o, args[0]);
    }
    fprintf(stderr, "sdxl-cli: unknown command '%s'\n", cmd);
    s_usage(stderr);
    return EXIT_USAGE;
}
