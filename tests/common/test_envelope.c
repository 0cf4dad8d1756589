/*  test_envelope.c - envelope parsing: message_type and its aliases (type,
    action, worker_type + action through proto/actions.json), request ids,
    priorities, timeouts, hints, flat data, errors, and reply shapes. */
#include "sdx_envelope.h"
#include "tcheck.h"

#include <stdlib.h>

static int s_parse_json(sdx_envelope_t *env, const char *json, sdx_fault_t *f)
{
    char err[160];
    sdx_value_t *root = sdx_json_decode(json, strlen(json), err, sizeof err);
    if (!root) {
        fprintf(stderr, "bad test JSON: %s: %s\n", json, err);
        return -2;
    }
    return sdx_envelope_parse(env, &root, SDX_ENC_JSON, f);
}

static void s_type(const char *json, const char *want_type, const char *want_domain)
{
    sdx_envelope_t env;
    sdx_fault_t f;
    int rc = s_parse_json(&env, json, &f);
    if (rc != 0)
        fprintf(stderr, "  %s -> %s\n", json, f.message);
    CHECK(rc == 0);
    CHECK_STR(env.message_type, want_type);
    if (want_domain)
        CHECK_STR(env.domain, want_domain);
    sdx_envelope_clear(&env);
}

static void s_fails(const char *json, sdx_error_t code, const char *field)
{
    sdx_envelope_t env;
    sdx_fault_t f;
    int rc = s_parse_json(&env, json, &f);
    CHECK(rc == -1);
    CHECK(f.code == code);
    if (field)
        CHECK_STR(f.field, field);
    if (rc != -1 || f.code != code)
        fprintf(stderr, "  %s -> rc %d code %s (%s)\n", json, rc, sdx_error_name(f.code),
                f.message);
    CHECK(env.request_id[0] != '\0'); /* always something to echo */
    sdx_envelope_clear(&env);
}

/* A reply echoes request_id as the client sent it: 12345 stays an
   integer, "12345" stays a string; the text form is only for keys. */
static void s_id_echo(void)
{
    sdx_envelope_t env;
    sdx_fault_t f;
    uint8_t *buf;
    size_t len;

    /* JSON, integer */
    CHECK(s_parse_json(&env, "{\"message_type\":\"test.echo\",\"request_id\":12345}", &f) == 0);
    CHECK_STR(env.request_id, "12345");
    CHECK(env.request_id_is_int && env.request_id_int == 12345 && !env.request_id_generated);
    sdx_value_t v = sdx_envelope_id_echo(&env);
    CHECK(v.type == SDX_INT && v.u.i == 12345);
    sdx_value_t *r = sdx_reply_ok(env.request_id, env.message_type, NULL, NULL);
    CHECK(r && sdx_reply_echo_id(r, &env) == 0);
    CHECK(sdx_map_get(r, "request_id")->type == SDX_INT);
    CHECK(sdx_map_int(r, "request_id", 0) == 12345);
    CHECK(sdx_json_encode(r, &buf, &len) == 0);
    CHECK(memmem(buf, len, "\"request_id\":12345", 18) != NULL);
    free(buf);
    sdx_value_destroy(&r);
    sdx_envelope_clear(&env);

    /* JSON, string of digits stays a string */
    CHECK(s_parse_json(&env, "{\"message_type\":\"test.echo\",\"request_id\":\"12345\"}", &f) == 0);
    CHECK(!env.request_id_is_int);
    r = sdx_envelope_id_value(&env);
    CHECK(r && r->type == SDX_STR && strcmp(r->u.str.ptr, "12345") == 0);
    sdx_value_destroy(&r);
    sdx_envelope_clear(&env);

    /* C# spelling, integer */
    CHECK(s_parse_json(&env, "{\"Action\":\"generate_sdxl\",\"RequestId\":7}", &f) == 0);
    v = sdx_envelope_id_echo(&env);
    CHECK(v.type == SDX_INT && v.u.i == 7);
    CHECK_STR(env.request_id, "7");
    sdx_envelope_clear(&env);

    /* msgpack, negative integer; the error reply echoes it too */
    sdx_value_t *req = sdx_value_map_new();
    sdx_map_set_str(req, "message_type", "test.echo");
    sdx_map_set_int(req, "request_id", -42);
    sdx_map_set_str(req, "priority", "asap");
    CHECK(sdx_msgpack_encode(req, &buf, &len) == 0);
    sdx_value_destroy(&req);
    char err[128];
    req = sdx_msgpack_decode(buf, len, err, sizeof err);
    free(buf);
    CHECK(req != NULL);
    CHECK(sdx_envelope_parse(&env, &req, SDX_ENC_MSGPACK, &f) == -1);
    CHECK(env.request_id_is_int && env.request_id_int == -42);
    r = sdx_reply_fault(env.request_id, env.message_type, &f);
    CHECK(r && sdx_reply_echo_id(r, &env) == 0);
    CHECK(sdx_msgpack_encode(r, &buf, &len) == 0);
    sdx_value_destroy(&r);
    r = sdx_msgpack_decode(buf, len, err, sizeof err);
    free(buf);
    CHECK(r && sdx_map_get(r, "request_id") && sdx_map_get(r, "request_id")->type == SDX_INT &&
          sdx_map_int(r, "request_id", 0) == -42);
    sdx_value_destroy(&r);
    sdx_envelope_clear(&env);
}

int main(void)
{
    char err[512];
    CHECK(sdx_actions_load_default(err, sizeof err) == 0);
    CHECK(sdx_actions_count() > 10);

    /* canonical names and aliases */
    s_type("{\"message_type\":\"inference.generate\"}", "inference.generate", "inference");
    s_type("{\"type\":\"device.list\"}", "device.list", "device");
    s_type("{\"MessageType\":\"system.ping\"}", "system.ping", "system");
    s_type("{\"action\":\"generate\"}", "inference.generate", "inference");
    s_type("{\"action\":\"generate_sdxl\"}", "inference.generate", "inference");
    s_type("{\"action\":\"GenerateSDXL\"}", "inference.generate", "inference");
    s_type("{\"Action\":\"get_device_status\"}", "device.status", "device");
    s_type("{\"action\":\"load_model\"}", "model.load", "model");
    s_type("{\"action\":\"batch_process\"}", "processing.batch_process", "processing");
    s_type("{\"action\":\"inference.generate\"}", "inference.generate", NULL);
    s_type("{\"message_type\":\"device.get_status\"}", "device.status", NULL); /* alias row */
    /* worker_type + action (C# PythonWorkerTypes) */
    s_type("{\"worker_type\":\"DEVICE\",\"action\":\"get_device_status\"}", "device.status",
           "device");
    s_type("{\"WorkerType\":\"PythonWorkerTypes.MODEL\",\"Action\":\"load_model\"}", "model.load",
           NULL);
    s_type("{\"worker_type\":\"INFERENCE\",\"action\":\"batch_process\"}",
           "processing.batch_process", NULL);
    s_type("{\"worker_type\":\"PROCESSING\",\"action\":\"get_workflows\"}",
           "processing.workflows_list", NULL);
    s_type("{\"WorkerType\":\"PROCESSING\",\"Action\":\"delete_batch\"}",
           "processing.batch_delete", NULL);
    s_type("{\"action\":\"GetProcessingSessionAsync\"}", "processing.session_get", NULL);
    /* the seeds' workflow-level body names no type: an ad-hoc workflow */
    s_type("{\"workflow_id\":\"w\",\"steps\":[{\"type\":\"device\"}]}",
           "processing.workflow_execute", "processing");
    s_type("{\"worker_type\":\"INFERENCE\",\"action\":\"GenerateSDXL\"}", "inference.generate",
           NULL);
    /* the rule gives device.get_memory; message_type_aliases make it the
       catalogued device.memory (no worker answers device.get_memory) */
    s_type("{\"worker_type\":\"DEVICE\",\"action\":\"get_device_memory\"}", "device.memory",
           NULL);
    s_type("{\"worker_type\":\"SCHEDULER\",\"action\":\"list\"}", "scheduler.list", NULL);
    s_type("{\"worker_type\":\"POSTPROCESSING\",\"action\":\"upscale\"}", "postprocessing.upscale",
           NULL);
    s_type("{\"worker_type\":\"CONDITIONING\",\"action\":\"encode_prompt\"}",
           "conditioning.encode_prompt", NULL);
    s_type("{\"worker_type\":\"PROCESSING\",\"action\":\"execute_workflow\"}",
           "processing.workflow_execute", NULL);
    /* message_type wins over action */
    s_type("{\"message_type\":\"test.echo\",\"action\":\"generate\"}", "test.echo", "test");
    char out[96];
    CHECK(sdx_actions_resolve("DEVICE", "get_device_status", out, sizeof out) == 0);
    CHECK_STR(out, "device.status");
    CHECK(sdx_actions_resolve(NULL, "no_such_action", out, sizeof out) == -1);
    CHECK_STR(sdx_actions_worker_domain("PythonWorkerTypes.POSTPROCESSING"), "postprocessing");
    CHECK(sdx_actions_worker_domain("GPU") == NULL);

    /* failures */
    s_fails("{}", SDX_ERR_INVALID_REQUEST, "message_type");
    s_fails("{\"message_type\":5}", SDX_ERR_INVALID_REQUEST, "message_type");
    s_fails("{\"action\":\"fly_to_moon\"}", SDX_ERR_UNKNOWN_MESSAGE_TYPE, "action");
    s_fails("{\"worker_type\":\"GPU\",\"action\":\"x\"}", SDX_ERR_UNKNOWN_MESSAGE_TYPE,
            "worker_type");
    s_fails("{\"message_type\":\"Bad.Type\"}", SDX_ERR_UNKNOWN_MESSAGE_TYPE, "message_type");
    s_fails("{\"message_type\":\"a.b\",\"priority\":\"asap\"}", SDX_ERR_INVALID_REQUEST,
            "priority");
    s_fails("{\"message_type\":\"a.b\",\"priority\":7}", SDX_ERR_INVALID_REQUEST, "priority");
    /* no undocumented aliases: "urgent" is not a priority */
    s_fails("{\"message_type\":\"a.b\",\"priority\":\"urgent\"}", SDX_ERR_INVALID_REQUEST,
            "priority");
    s_fails("{\"message_type\":\"a.b\",\"timeout_ms\":-1}", SDX_ERR_INVALID_REQUEST, "timeout_ms");
    s_fails("{\"message_type\":\"a.b\",\"timeout_ms\":\"soon\"}", SDX_ERR_INVALID_REQUEST,
            "timeout_ms");
    s_fails("{\"message_type\":\"a.b\",\"data\":[1]}", SDX_ERR_INVALID_REQUEST, "data");
    s_fails("{\"message_type\":\"a.b\",\"stream\":\"yes\"}", SDX_ERR_INVALID_REQUEST, "stream");
    s_fails("{\"message_type\":\"a.b\",\"data\":{},\"gpu\":\"0\"}", SDX_ERR_INVALID_REQUEST, "gpu");
    s_fails("{\"message_type\":\"a.b\",\"data\":{\"gpu\":-3}}", SDX_ERR_INVALID_REQUEST,
            "data.gpu");
    s_fails("{\"message_type\":\"a.b\",\"request_id\":[1]}", SDX_ERR_INVALID_REQUEST, "request_id");
    char longid[300] = "{\"message_type\":\"a.b\",\"request_id\":\"";
    memset(longid + strlen(longid), 'x', 200);
    strcat(longid, "\"}");
    s_fails(longid, SDX_ERR_INVALID_REQUEST, "request_id");
    {
        /* a non-map top level */
        sdx_envelope_t env;
        sdx_fault_t f;
        sdx_value_t *arr = sdx_value_array_new();
        CHECK(sdx_envelope_parse(&env, &arr, SDX_ENC_MSGPACK, &f) == -1 && arr == NULL);
        CHECK(f.code == SDX_ERR_UNSUPPORTED_ENCODING);
        sdx_envelope_clear(&env);
    }

    /* fields */
    sdx_envelope_t env;
    sdx_fault_t f;
    CHECK(
        s_parse_json(&env,
                     "{\"message_type\":\"inference.generate\",\"request_id\":\"abc\","
                     "\"priority\":\"HIGH\",\"timeout_ms\":1500,\"session_id\":\"s1\","
                     "\"stream\":true,\"data\":{\"prompt\":\"p\",\"gpu\":1,\"model_name\":\"m1\"}}",
                     &f) == 0);
    CHECK_STR(env.request_id, "abc");
    CHECK(!env.request_id_generated);
    CHECK(env.priority == SDX_PRIO_HIGH && env.timeout_ms == 1500 && env.stream && env.gpu == 1);
    CHECK_STR(env.session_id, "s1");
    CHECK_STR(env.model, "m1");
    CHECK_STR(sdx_map_str(env.data, "prompt", NULL), "p");
    CHECK(env.naming == SDX_NAMED_MESSAGE_TYPE && env.encoding == SDX_ENC_JSON);
    sdx_envelope_clear(&env);

    CHECK(s_parse_json(&env,
                       "{\"Action\":\"generate_sdxl\",\"RequestId\":\"R1\",\"Priority\":3,"
                       "\"timeout_s\":2.5,\"model\":\"top\",\"gpu\":0}",
                       &f) == 0);
    CHECK_STR(env.request_id, "R1");
    CHECK(env.priority == SDX_PRIO_CRITICAL && env.timeout_ms == 2500 && env.gpu == 0);
    CHECK_STR(env.model, "top"); /* flat request: model went into data */
    CHECK_STR(env.as_sent, "generate_sdxl");
    CHECK(env.naming == SDX_NAMED_ACTION);
    sdx_envelope_clear(&env);

    /* every envelope key matches loosely, gpu too (it stays out of data) */
    CHECK(s_parse_json(&env, "{\"TYPE\":\"device.status\",\"GPU\":2,\"Session_Id\":\"s\"}",
                       &f) == 0);
    CHECK_STR(env.message_type, "device.status");
    CHECK(env.gpu == 2 && !sdx_map_get_loose(env.data, "gpu"));
    CHECK_STR(env.session_id, "s");
    sdx_envelope_clear(&env);

    /* generated ids are unique; flat keys become data */
    CHECK(s_parse_json(&env, "{\"message_type\":\"test.echo\",\"prompt\":\"x\",\"steps\":4}", &f) ==
          0);
    CHECK(env.request_id_generated && strncmp(env.request_id, "r-", 2) == 0);
    CHECK_STR(sdx_map_str(env.data, "prompt", NULL), "x");
    CHECK(sdx_map_int(env.data, "steps", 0) == 4);
    CHECK(sdx_map_get(env.root, "prompt") == NULL);
    char first[160];
    snprintf(first, sizeof first, "%s", env.request_id);
    sdx_envelope_clear(&env);
    CHECK(s_parse_json(&env, "{\"message_type\":\"test.echo\"}", &f) == 0);
    CHECK(strcmp(first, env.request_id) != 0);
    CHECK(env.priority == SDX_PRIO_NORMAL && env.timeout_ms == 0 && !env.stream && env.gpu == -1);
    sdx_envelope_clear(&env);

    CHECK(sdx_priority_parse("critical") == SDX_PRIO_CRITICAL && sdx_priority_parse("Low") == 0 &&
          sdx_priority_parse("2") == 2 && sdx_priority_parse("x") == -1 &&
          sdx_priority_parse("urgent") == -1);
    CHECK_STR(sdx_priority_name(SDX_PRIO_HIGH), "high");

    /* replies */
    sdx_value_t *data = sdx_value_map_new();
    sdx_map_set_int(data, "n", 1);
    sdx_value_t *r = sdx_reply_ok("id1", "test.echo", data, NULL);
    CHECK(r && sdx_map_bool(r, "success", false) &&
          sdx_map_int(sdx_map_get(r, "data"), "n", 0) == 1);
    CHECK_STR(sdx_map_str(r, "request_id", NULL), "id1");
    sdx_value_destroy(&r);
    sdx_fault_set(&f, SDX_ERR_INVALID_REQUEST, "data.width", "width must be a multiple of 8");
    r = sdx_reply_fault("id2", "inference.generate", &f);
    const sdx_value_t *e = sdx_map_get(r, "error");
    CHECK(r && !sdx_map_bool(r, "success", true));
    CHECK_STR(sdx_map_str(e, "code", NULL), "invalid_request");
    CHECK_STR(sdx_map_str(e, "field", NULL), "data.width");
    CHECK(sdx_map_get(e, "retryable") != NULL);
    sdx_value_destroy(&r);
    s_id_echo();
    r = sdx_reply_error(NULL, NULL, sdx_error_value(SDX_ERR_TIMEOUT, NULL, NULL), NULL);
    CHECK(r && sdx_map_get(r, "request_id")->type == SDX_NIL);
    CHECK(strlen(sdx_map_str(sdx_map_get(r, "error"), "message", "")) > 10); /* advice by default */
    sdx_value_destroy(&r);
    return t_done();
}
