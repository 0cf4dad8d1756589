/*  test_csharp.c - the C# dialect (common/sdx_csharp.c) on message trees:
    the 17 fields of the seed's EnhancedSDXLRequest mapping, one check each;
    the same request as PascalCase JSON, camelCase JSON (System.Text.Json web
    defaults), string-keyed msgpack, array-encoded [Key(n)] msgpack with
    integer enums and bin images, LZ4 ext 99 and ext 98, all giving the same
    flat request as the native one; timestamps; the envelope forms; the bad
    C# requests of bad_requests.json; bad wire forms; and the replies. */
#include "schema_test_util.h"

#include "sdx_csharp.h"
#include "sdx_envelope.h"
#include "sdx_schema.h"

#include <ctype.h>
#include <lz4.h>

static sdx_schema_set_t *g_set;

static const char *GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
static const uint8_t PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* The native request the seed's C# example means. */
static const char *NATIVE =
    "{\"prompt\":\"A majestic dragon soaring over a medieval castle\","
    "\"negative_prompt\":\"blurry, low quality\","
    "\"model_name\":\"cyberrealisticPony_v125\",\"refiner_model\":\"stabilityai/sdxl-refiner\","
    "\"vae_model\":\"custom/vae-model\",\"scheduler\":\"DPMSolverMultistepScheduler\","
    "\"hyperparameters\":{\"num_inference_steps\":25,\"guidance_scale\":7.5,\"seed\":42},"
    "\"dimensions\":{\"width\":1024,\"height\":1024},"
    "\"lora\":{\"models\":[{\"name\":\"dragon_detail_lora\",\"weight\":0.8}]},"
    "\"controlnet\":[{\"model\":\"canny_controlnet\",\"image\":\"iVBORw0KGgo=\","
    "\"conditioning_scale\":1.0}],"
    "\"output\":{\"format\":\"png\",\"quality\":95,\"save_path\":\"outputs/\","
    "\"upscale\":{\"factor\":2.0,\"model\":\"ESRGAN\"}}}";

/* prepare + envelope parse + validation, as the broker runs them. Takes
   root; returns the validated data (caller owns) or NULL with err. */
static sdx_value_t *s_pipeline(sdx_value_t *root, sdx_csharp_info_t *info, sdx_schema_error_t *err,
                               char *mt_out)
{
    memset(err, 0, sizeof *err);
    if (sdx_csharp_prepare(g_set, &root, 0, info, err) != 0) {
        sdx_value_destroy(&root);
        return NULL;
    }
    sdx_envelope_t env;
    sdx_fault_t fault;
    if (sdx_envelope_parse(&env, &root, SDX_ENC_MSGPACK, &fault) != 0) {
        snprintf(err->field, sizeof err->field, "%s", fault.field);
        snprintf(err->rule, sizeof err->rule, "envelope");
        snprintf(err->message, sizeof err->message, "%s", fault.message);
        sdx_envelope_clear(&env);
        return NULL;
    }
    if (mt_out)
        snprintf(mt_out, 96, "%s", env.message_type);
    sdx_value_t *data = sdx_map_take(env.root, "data");
    sdx_envelope_clear(&env);
    int rc = sdx_csharp_check_request(g_set, NULL, "inference.generate", info->dialect, &data, err);
    if (rc != 0) {
        sdx_value_destroy(&data);
        return NULL;
    }
    return data;
}

static sdx_value_t *s_example(void)
{
    const sdx_value_t *cs = sdx_schema_set_csharp_for(g_set, "inference.generate");
    return sdx_value_clone(sdx_array_at(sdx_map_get(cs, "examples"), 0));
}

static sdx_value_t *s_wrap(sdx_value_t *data, const char *action)
{
    sdx_value_t *env = sdx_value_map_new();
    sdx_map_set_str(env, "Action", action);
    sdx_map_set_str(env, "RequestId", GUID);
    sdx_map_set(env, "Data", data);
    return env;
}

/* Rewrite map keys to camelCase, as System.Text.Json web defaults do. */
static void s_camel(sdx_value_t *v)
{
    if (v->type == SDX_ARRAY)
        for (size_t i = 0; i < v->u.arr.len; i++)
            s_camel(v->u.arr.items[i]);
    if (v->type != SDX_MAP)
        return;
    for (size_t i = 0; i < v->u.map.len; i++) {
        v->u.map.items[i].key[0] = (char)tolower((unsigned char)v->u.map.items[i].key[0]);
        s_camel(v->u.map.items[i].val);
    }
}

/* Replace every "$png" string by the PNG signature as bin. */
static void s_bins(sdx_value_t **slot)
{
    sdx_value_t *v = *slot;
    if (v->type == SDX_STR && strcmp(v->u.str.ptr, "$png") == 0) {
        sdx_value_destroy(slot);
        *slot = sdx_value_bin_new(PNG_SIG, sizeof PNG_SIG);
    } else if (v->type == SDX_ARRAY) {
        for (size_t i = 0; i < v->u.arr.len; i++)
            s_bins(&v->u.arr.items[i]);
    } else if (v->type == SDX_MAP) {
        for (size_t i = 0; i < v->u.map.len; i++)
            s_bins(&v->u.map.items[i].val);
    }
}

/* Through msgpack bytes and back, as the wire would carry it. */
static sdx_value_t *s_wire(const sdx_value_t *v)
{
    uint8_t *buf;
    size_t len;
    char err[200];
    if (sdx_msgpack_encode(v, &buf, &len) != 0)
        return NULL;
    sdx_value_t *out = sdx_msgpack_decode(buf, len, err, sizeof err);
    free(buf);
    return out;
}

/* MessagePack-CSharp Lz4Block: ext 99 { int32 length (d2), LZ4 block }. */
static sdx_value_t *s_lz4_block(const sdx_value_t *v)
{
    uint8_t *raw;
    size_t len;
    if (sdx_msgpack_encode(v, &raw, &len) != 0)
        return NULL;
    int cap = LZ4_compressBound((int)len);
    uint8_t *ext = malloc(5 + (size_t)cap);
    ext[0] = 0xd2;
    ext[1] = (uint8_t)(len >> 24);
    ext[2] = (uint8_t)(len >> 16);
    ext[3] = (uint8_t)(len >> 8);
    ext[4] = (uint8_t)len;
    int n = LZ4_compress_default((const char *)raw, (char *)ext + 5, (int)len, cap);
    sdx_value_t *out = sdx_value_ext_new(99, ext, 5 + (size_t)n);
    free(raw);
    free(ext);
    return out;
}

/* MessagePack-CSharp Lz4BlockArray: [ext 98 {int32 len per chunk}, bin...],
   cut into chunks of `chunk` bytes. */
static sdx_value_t *s_lz4_block_array(const sdx_value_t *v, size_t chunk)
{
    uint8_t *raw;
    size_t len;
    if (sdx_msgpack_encode(v, &raw, &len) != 0)
        return NULL;
    size_t nch = (len + chunk - 1) / chunk;
    uint8_t *hdr = malloc(5 * nch);
    sdx_value_t *arr = sdx_value_array_new();
    sdx_array_push(arr, sdx_value_nil_new()); /* replaced below */
    for (size_t i = 0; i < nch; i++) {
        size_t n = i + 1 < nch ? chunk : len - chunk * i;
        hdr[5 * i] = 0xd2;
        hdr[5 * i + 1] = (uint8_t)(n >> 24);
        hdr[5 * i + 2] = (uint8_t)(n >> 16);
        hdr[5 * i + 3] = (uint8_t)(n >> 8);
        hdr[5 * i + 4] = (uint8_t)n;
        int cap = LZ4_compressBound((int)n);
        char *c = malloc((size_t)cap);
        int m = LZ4_compress_default((const char *)raw + chunk * i, c, (int)n, cap);
        sdx_array_push(arr, sdx_value_bin_new(c, (size_t)m));
        free(c);
    }
    sdx_value_destroy(&arr->u.arr.items[0]);
    arr->u.arr.items[0] = sdx_value_ext_new(98, hdr, 5 * nch);
    free(hdr);
    free(raw);
    return arr;
}

static sdx_value_t *g_native; /* the validated native request */

static void s_expect_same(sdx_value_t *root, const char *what)
{
    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    char mt[96] = "";
    sdx_value_t *flat = s_pipeline(root, &info, &e, mt);
    t_check(flat && sdx_value_equal(flat, g_native), "%s -> same flat request as native (%s %s %s)",
            what, e.field, e.rule, e.message);
    t_check(info.dialect == SDX_DIALECT_CSHARP && strcmp(mt, "inference.generate") == 0,
            "%s: C# dialect, inference.generate (got %s)", what, mt);
    if (flat && !sdx_value_equal(flat, g_native) && t_verbose) {
        uint8_t *a, *b;
        size_t la, lb;
        sdx_json_encode(flat, &a, &la);
        sdx_json_encode(g_native, &b, &lb);
        printf("  got  %s\n  want %s\n", a, b);
        free(a);
        free(b);
    }
    sdx_value_destroy(&flat);
}

static void s_seed_fields(const sdx_value_t *node, int *seen);

static void test_fields(void)
{
    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    sdx_value_t *flat = s_pipeline(s_wrap(s_example(), "generate_sdxl"), &info, &e, NULL);
    t_check(flat != NULL, "seed example maps and validates (%s %s)", e.field, e.message);
    if (!flat)
        return;
    t_check(strcmp(info.request_id, GUID) == 0 && strcmp(info.action, "generate_sdxl") == 0,
            "info keeps RequestId (Guid) and Action");
    struct {
        int n;
        const char *cs, *path, *want;
    } f[] = {
        {1, "Model.Base", "model_name", "\"cyberrealisticPony_v125\""},
        {2, "Model.Refiner (missing in the seed)", "refiner_model", "\"stabilityai/sdxl-refiner\""},
        {3, "Model.Vae (missing in the seed)", "vae_model", "\"custom/vae-model\""},
        {4, "Scheduler.Type", "scheduler", "\"DPMSolverMultistepScheduler\""},
        {5, "Scheduler.Steps", "hyperparameters.num_inference_steps", "25"},
        {6, "Hyperparameters.GuidanceScale", "hyperparameters.guidance_scale", "7.5"},
        {7, "Hyperparameters.Width", "dimensions.width", "1024"},
        {8, "Hyperparameters.Height", "dimensions.height", "1024"},
        {9, "Hyperparameters.Seed", "hyperparameters.seed", "42"},
        {10, "Conditioning.Prompt", "prompt",
         "\"A majestic dragon soaring over a medieval castle\""},
        {11, "Conditioning.NegativePrompt", "negative_prompt", "\"blurry, low quality\""},
        {12, "Conditioning.LoRAs (partial in the seed)", "lora.models",
         "[{\"name\":\"dragon_detail_lora\",\"weight\":0.8}]"},
        {13, "Conditioning.ControlNets (partial in the seed)", "controlnet",
         "[{\"model\":\"canny_controlnet\",\"image\":\"$png\",\"conditioning_scale\":1.0,"
         "\"preprocessor\":\"none\",\"guidance_start\":0.0,\"guidance_end\":1.0,"
         "\"canny\":{\"low_threshold\":100,\"high_threshold\":200,\"blur_sigma\":0}}]"},
        {14, "Output.Format", "output.format", "\"png\""},
        {15, "Output.Quality", "output.quality", "95"},
        {16, "Output.SavePath", "output.save_path", "\"outputs/\""},
        {17, "PostProcessing Upscale (partial in the seed)", "output.upscale",
         "{\"factor\":2.0,\"model\":\"ESRGAN\"}"},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        sdx_value_t *want = t_json(f[i].want);
        s_bins(&want);
        const sdx_value_t *got = sdx_map_get_path(flat, f[i].path);
        t_check(got && want && sdx_value_equal(got, want), "seed field %2d: %s -> %s", f[i].n,
                f[i].cs, f[i].path);
        sdx_value_destroy(&want);
    }
    sdx_value_destroy(&flat);
    /* every seed field is annotated in the C# schema (x-seed-field 1..17) */
    int seen[18] = {0};
    s_seed_fields(sdx_schema_set_csharp_for(g_set, "inference.generate"), seen);
    int all = 1;
    for (int i = 1; i <= 17; i++)
        all = all && seen[i] == 1;
    t_check(all && !seen[0], "csharp_enhanced_request.json marks the 17 seed fields once each");
}

/* Count x-seed-field annotations (seen[0] counts out-of-range numbers). */
static void s_seed_fields(const sdx_value_t *node, int *seen)
{
    if (!node || node->type != SDX_MAP)
        return;
    const sdx_value_t *n = sdx_map_get(node, "x-seed-field");
    if (n)
        seen[n->type == SDX_INT && n->u.i >= 1 && n->u.i <= 17 ? n->u.i : 0]++;
    const sdx_value_t *props = sdx_map_get(node, "properties");
    for (size_t i = 0; props && i < props->u.map.len; i++)
        s_seed_fields(props->u.map.items[i].val, seen);
    s_seed_fields(sdx_map_get(node, "items"), seen);
}

static void test_equivalence(void)
{
    g_native = t_json(NATIVE);
    sdx_schema_error_t e;
    int rc = sdx_schema_check_request(g_set, NULL, "inference.generate", &g_native, &e);
    t_check(rc == 0, "native equivalent validates (%s %s)", e.field, e.message);

    s_expect_same(s_wrap(s_example(), "generate_sdxl"), "PascalCase JSON tree");

    sdx_value_t *d = s_example();
    s_camel(d);
    sdx_value_t *env = t_json("{\"action\":\"generate_sdxl\",\"requestId\":\"3f2504e0-4f89-11d3-"
                              "9a0c-0305e82c3301\"}");
    sdx_map_set(env, "data", d);
    s_expect_same(env, "camelCase (System.Text.Json web defaults)");

    /* string-keyed msgpack (contractless / [Key("x")]) */
    sdx_value_t *w = s_wrap(s_example(), "GenerateSDXL");
    s_expect_same(s_wire(w), "string-keyed msgpack, action GenerateSDXL");
    sdx_value_destroy(&w);

    /* the request's fields beside Action, no Data */
    sdx_value_t *flat_env = s_example();
    sdx_map_set_str(flat_env, "Action", "generate");
    s_expect_same(flat_env, "fields beside Action (no Data)");

    /* worker_type + action, worker type as the PythonWorkerTypes integer */
    w = s_wrap(s_example(), "generate");
    sdx_map_set_int(w, "WorkerType", 2);
    s_expect_same(s_wire(w), "WorkerType 2 (INFERENCE) + action generate");
    sdx_value_destroy(&w);

    /* [Key(n)] contracts: everything array-encoded, enums as integers,
       image as bin */
    const char *arr =
        "[\"3f2504e0-4f89-11d3-9a0c-0305e82c3301\",\"generate_sdxl\",["
        "[\"cyberrealisticPony_v125\",\"stabilityai/sdxl-refiner\",\"custom/vae-model\"],"
        "[9,25],[7.5,1024,1024,42],"
        "[\"A majestic dragon soaring over a medieval castle\",\"blurry, low quality\","
        "[[\"dragon_detail_lora\",0.8]],[[\"canny_controlnet\",\"$png\",1.0]]],"
        "[0,95,\"outputs/\"],[[0,2.0,\"ESRGAN\"]]]]";
    sdx_value_t *a = t_json(arr);
    s_bins(&a);
    s_expect_same(s_wire(a), "array-encoded [Key(n)] msgpack, integer enums, bin image");

    sdx_value_t *lz = s_lz4_block(a);
    s_expect_same(s_wire(lz), "LZ4 Lz4Block (ext 99)");
    sdx_value_destroy(&lz);
    w = s_wrap(s_example(), "generate_sdxl");
    lz = s_lz4_block_array(w, 100);
    t_check(sdx_array_len(lz) > 3, "Lz4BlockArray has several chunks (%zu)", sdx_array_len(lz) - 1);
    s_expect_same(s_wire(lz), "LZ4 Lz4BlockArray (ext 98, 100-byte chunks)");
    sdx_value_destroy(&lz);
    sdx_value_destroy(&w);
    sdx_value_destroy(&a);

    /* the JSON text itself, as System.Text.Json writes it */
    uint8_t *txt;
    size_t len;
    w = s_wrap(s_example(), "generate_sdxl");
    sdx_json_encode(w, &txt, &len);
    char err[200];
    s_expect_same(sdx_json_decode(txt, len, err, sizeof err), "PascalCase JSON text");
    free(txt);
    sdx_value_destroy(&w);
}

static void test_timestamps(void)
{
    /* 2026-11-23T05:00:00Z = 1795410000 */
    const int64_t sec = 1795410000;
    uint8_t t32[4] = {(uint8_t)(sec >> 24), (uint8_t)(sec >> 16), (uint8_t)(sec >> 8),
                      (uint8_t)sec};
    uint64_t u64 = ((uint64_t)500000000 << 34) | (uint64_t)sec;
    uint8_t t64[8];
    for (int i = 0; i < 8; i++)
        t64[i] = (uint8_t)(u64 >> (56 - 8 * i));
    uint8_t t96[12] = {0, 0, 0, 7};
    for (int i = 0; i < 8; i++)
        t96[4 + i] = (uint8_t)((uint64_t)sec >> (56 - 8 * i));
    struct {
        const uint8_t *b;
        size_t n;
        const char *want;
    } c[] = {
        {t32, 4, "2026-11-23T05:00:00Z"},
        {t64, 8, "2026-11-23T05:00:00.500000000Z"},
        {t96, 12, "2026-11-23T05:00:00.000000007Z"},
    };
    for (size_t i = 0; i < 3; i++) {
        sdx_value_t *d = s_example();
        sdx_value_t *meta = sdx_value_map_new();
        sdx_map_set(meta, "CreatedAt", sdx_value_ext_new(-1, c[i].b, c[i].n));
        sdx_map_set(d, "Metadata", meta);
        sdx_value_t *env = s_wrap(d, "generate_sdxl");
        sdx_map_set(env, "Timestamp", sdx_value_ext_new(-1, c[i].b, c[i].n));
        sdx_csharp_info_t info;
        sdx_schema_error_t e;
        sdx_value_t *flat = s_pipeline(env, &info, &e, NULL);
        const char *got = sdx_map_str(sdx_map_get(flat, "metadata"), "created_at", "");
        t_check(flat && strcmp(got, c[i].want) == 0,
                "timestamp ext -1 (%zu bytes) -> %s (got %s%s)", c[i].n, c[i].want, got,
                flat ? "" : e.message);
        sdx_value_destroy(&flat);
    }
}

static void test_bad(void)
{
    size_t len;
    char *text = t_read("tests/schema/bad_requests.json", &len);
    char err[256];
    sdx_value_t *all = text ? sdx_json_decode(text, len, err, sizeof err) : NULL;
    free(text);
    const sdx_value_t *cases = sdx_map_get(all, "csharp");
    t_check(sdx_array_len(cases) > 10, "bad C# requests present (%zu)", sdx_array_len(cases));
    for (size_t i = 0; i < sdx_array_len(cases); i++) {
        const sdx_value_t *c = sdx_array_at(cases, i);
        sdx_value_t *req = sdx_value_clone(sdx_map_get(c, "request"));
        t_expand(&req);
        sdx_csharp_info_t info;
        sdx_schema_error_t e;
        sdx_value_t *flat = s_pipeline(req, &info, &e, NULL);
        const char *wf = sdx_map_str(c, "field", ""), *wr = sdx_map_str(c, "rule", "");
        t_check(!flat && strcmp(e.field, wf) == 0 && strcmp(e.rule, wr) == 0 && e.message[0],
                "bad C# #%zu %s -> %s [%s]: got %s [%s] %s", i, sdx_map_str(c, "name", ""), wf, wr,
                e.field, e.rule, e.message);
        sdx_value_destroy(&flat);
    }
    sdx_value_destroy(&all);

    /* wire-level faults: each a clear message naming what was found */
    typedef struct {
        const char *name;
        sdx_value_t *root;
        const char *needle;
    } wire_t;
    wire_t w[12];
    size_t n = 0;
    sdx_value_t *ext5 = s_wrap(s_example(), "generate_sdxl");
    sdx_map_set(sdx_map_get(ext5, "Data"), "Extra", sdx_value_ext_new(5, "ab", 2));
    w[n++] = (wire_t){"unknown ext type 5", ext5, "extension type 5"};
    w[n++] = (wire_t){"ext 99 corrupt block",
                      sdx_value_ext_new(99, "\xd2\x00\x00\x01\x00\xff\xff\xff", 8), "corrupt"};
    w[n++] = (wire_t){"ext 99 absurd length", sdx_value_ext_new(99, "\xd2\x7f\x00\x00\x00\x10", 6),
                      "over the limit"};
    w[n++] =
        (wire_t){"ext 99 without length", sdx_value_ext_new(99, "\xa1x", 2), "uncompressed length"};
    sdx_value_t *a98 = sdx_value_array_new();
    sdx_array_push(a98, sdx_value_ext_new(98, "\xd2\x00\x00\x00\x04", 5));
    sdx_array_push(a98, sdx_value_str_new("nope"));
    w[n++] = (wire_t){"ext 98 chunk not bin", a98, "must be bin"};
    sdx_value_t *a98b = sdx_value_array_new();
    sdx_array_push(a98b, sdx_value_ext_new(98, "\xd2\x00\x00\x00\x04\xd2\x00\x00\x00\x04", 10));
    sdx_array_push(a98b, sdx_value_bin_new("\x40zzzz", 5));
    w[n++] = (wire_t){"ext 98 more lengths than chunks", a98b, "more lengths"};
    w[n++] = (wire_t){"envelope array too long",
                      t_json("[\"id\",\"generate\",{},\"INFERENCE\",null,null,null,null,null,"
                             "null,null,null,1]"),
                      "declared [Key(n)] order"};
    w[n++] = (wire_t){"envelope array with an integer Action", t_json("[1, 2]"),
                      "array-encoded envelope [RequestId, Action"};
    for (size_t i = 0; i < n; i++) {
        sdx_csharp_info_t info;
        sdx_schema_error_t e;
        sdx_value_t *flat = s_pipeline(w[i].root, &info, &e, NULL);
        t_check(!flat && strstr(e.message, w[i].needle), "wire fault %s: %s", w[i].name, e.message);
        sdx_value_destroy(&flat);
    }
}

static void test_detect_and_native(void)
{
    sdx_value_t *v =
        t_json("{\"message_type\":\"inference.generate\",\"data\":{\"prompt\":\"x\"}}");
    t_check(sdx_csharp_detect(v) == SDX_DIALECT_NATIVE, "native request detected as native");
    sdx_value_t *copy = sdx_value_clone(v);
    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    t_check(sdx_csharp_prepare(g_set, &v, 0, &info, &e) == 0 && sdx_value_equal(v, copy),
            "prepare leaves a native request untouched");
    sdx_value_destroy(&v);
    sdx_value_destroy(&copy);
    v = t_json("{\"Action\":\"generate\"}");
    t_check(sdx_csharp_detect(v) == SDX_DIALECT_CSHARP, "Action -> C#");
    sdx_value_destroy(&v);
    v = t_json("{\"worker_type\":\"DEVICE\",\"action\":\"get_device_status\"}");
    t_check(sdx_csharp_detect(v) == SDX_DIALECT_CSHARP, "worker_type -> C#");
    sdx_value_destroy(&v);
    v = t_json("{\"RequestId\":\"x\",\"MessageType\":\"device.status\"}");
    t_check(sdx_csharp_detect(v) == SDX_DIALECT_CSHARP, "PascalCase keys -> C#");
    sdx_value_destroy(&v);

    /* a flat request in C# casing: keys matched case-insensitively */
    v = t_json("{\"Action\":\"generate\",\"Data\":{\"Prompt\":\"x\",\"Hyperparameters\":"
               "{\"GuidanceScale\":5,\"num_inference_steps\":20},\"guidanceRescale\":1}}");
    sdx_value_t *flat = s_pipeline(v, &info, &e, NULL);
    t_check(flat && !sdx_map_get(flat, "guidanceRescale") && info.nwarnings == 1 &&
                strstr(info.warnings[0], "guidanceRescale") &&
                strstr(info.warnings[0], "unknown field ignored"),
            "flat C#-cased request: unknown top-level guidanceRescale dropped, in Warnings (%s)",
            info.nwarnings ? info.warnings[0] : e.message);
    sdx_value_destroy(&flat);
    v = t_json("{\"Action\":\"generate\",\"Data\":{\"Prompt\":\"x\",\"Hyperparameters\":"
               "{\"GuidanceScale\":5,\"num_inference_steps\":20},\"clipSkip\":1}}");
    flat = s_pipeline(v, &info, &e, NULL);
    t_check(flat && sdx_map_num(sdx_map_get(flat, "hyperparameters"), "guidance_scale", 0) == 5 &&
                sdx_map_int(flat, "clip_skip", 0) == 1,
            "flat C#-cased request: GuidanceScale, clipSkip -> guidance_scale, clip_skip (%s)",
            e.message);
    sdx_value_destroy(&flat);
    /* no schema for the type: keys snake_cased */
    v = t_json("{\"Action\":\"get_device_status\",\"Data\":{\"DeviceId\":0}}");
    t_check(sdx_csharp_prepare(g_set, &v, 0, &info, &e) == 0 &&
                sdx_map_get_path(v, "data.device_id") &&
                strcmp(info.message_type, "device.status") == 0,
            "get_device_status -> device.status, DeviceId -> device_id");
    sdx_value_destroy(&v);
}

/* prepare + envelope parse only; 0 with env filled (caller clears it). */
static int s_envelope(sdx_value_t *root, sdx_envelope_t *env, char *why, size_t why_len)
{
    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    memset(env, 0, sizeof *env);
    if (sdx_csharp_prepare(g_set, &root, 0, &info, &e) != 0) {
        snprintf(why, why_len, "%.200s: %.600s", e.field, e.message);
        sdx_value_destroy(&root);
        return -1;
    }
    sdx_fault_t f;
    if (sdx_envelope_parse(env, &root, SDX_ENC_MSGPACK, &f) != 0) {
        snprintf(why, why_len, "%.100s: %.600s", f.field, f.message);
        sdx_envelope_clear(env);
        return -1;
    }
    why[0] = '\0';
    return 0;
}

/* Stream, Gpu and MessageType are C# envelope keys (map and [Key(n)] forms),
   appended after the older keys so their array positions do not move. */
static void test_envelope_keys(void)
{
    sdx_envelope_t env;
    char why[1024];
    sdx_value_t *v = s_wrap(s_example(), "generate_sdxl");
    sdx_map_set_bool(v, "Stream", true);
    sdx_map_set_int(v, "Gpu", 1);
    t_check(s_envelope(v, &env, why, sizeof why) == 0 && env.stream && env.gpu == 1 &&
                strcmp(env.message_type, "inference.generate") == 0,
            "C# Stream + Gpu accepted in an envelope with Data (%s)", why);
    sdx_envelope_clear(&env);

    v = t_json("{\"MessageType\":\"device.status\",\"RequestId\":7,\"Data\":{}}");
    t_check(s_envelope(v, &env, why, sizeof why) == 0 &&
                strcmp(env.message_type, "device.status") == 0 && env.request_id_is_int &&
                env.request_id_int == 7,
            "C# MessageType names the message type; RequestId 7 kept an integer (%s)", why);
    sdx_envelope_clear(&env);

    v = t_json("{\"messageType\":\"inference.generate\",\"action\":\"get_device_status\","
               "\"stream\":false,\"gpu\":0,\"data\":{\"prompt\":\"x\"}}");
    t_check(s_envelope(v, &env, why, sizeof why) == 0 &&
                strcmp(env.message_type, "inference.generate") == 0 && !env.stream && env.gpu == 0,
            "camelCase messageType wins over action; gpu 0 kept (%s)", why);
    sdx_envelope_clear(&env);

    v = t_json("{\"Action\":\"generate\",\"Gpu\":\"zero\",\"Data\":{\"Prompt\":\"x\"}}");
    t_check(s_envelope(v, &env, why, sizeof why) == -1 && strstr(why, "gpu") != NULL,
            "a non-integer Gpu is refused (%s)", why);
    sdx_envelope_clear(&env);

    /* [Key(n)]: RequestId, Action, Data, WorkerType, Timestamp, Priority,
       TimeoutMs, SessionId, Stream, Gpu, MessageType */
    v = sdx_value_array_new();
    sdx_array_push(v, sdx_value_str_new(GUID));
    sdx_array_push(v, sdx_value_str_new("generate_sdxl"));
    sdx_array_push(v, s_example());
    for (int i = 0; i < 2; i++)
        sdx_array_push(v, sdx_value_nil_new());
    sdx_array_push(v, sdx_value_str_new("high"));
    sdx_array_push(v, sdx_value_int_new(1500));
    sdx_array_push(v, sdx_value_str_new("s-1"));
    sdx_array_push(v, sdx_value_bool_new(true));
    sdx_array_push(v, sdx_value_int_new(2));
    t_check(s_envelope(v, &env, why, sizeof why) == 0 && env.stream && env.gpu == 2 &&
                env.priority == SDX_PRIO_HIGH && env.timeout_ms == 1500 &&
                strcmp(env.session_id, "s-1") == 0 && strcmp(env.request_id, GUID) == 0 &&
                strcmp(env.message_type, "inference.generate") == 0,
            "array-encoded envelope: Stream at 8, Gpu at 9, older positions unchanged (%s)", why);
    sdx_envelope_clear(&env);

    v = t_json("[null, null, {}, null, null, null, null, null, null, null, \"device.status\"]");
    t_check(s_envelope(v, &env, why, sizeof why) == 0 &&
                strcmp(env.message_type, "device.status") == 0,
            "array-encoded envelope: MessageType at 10 (%s)", why);
    sdx_envelope_clear(&env);

    /* unknown envelope keys: accepted, named in Warnings with the known ones */
    v = t_json("{\"Action\":\"generate\",\"Data\":{\"Prompt\":\"x\"},\"Colour\":\"blue\"}");
    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    int prc = sdx_csharp_prepare(g_set, &v, 0, &info, &e); /* before the message reads info */
    t_check(prc == 0 && info.nwarnings == 1 &&
                strstr(info.warnings[0], "'Colour' ignored") &&
                strstr(info.warnings[0], "Stream") && strstr(info.warnings[0], "Gpu") &&
                strstr(info.warnings[0], "MessageType"),
            "an unknown envelope field is a warning listing Stream, Gpu, MessageType (%s)",
            info.nwarnings ? info.warnings[0] : e.message);
    sdx_value_destroy(&v);

    /* every native envelope key under the one loose rule: Type, TYPE, type */
    const char *types[] = {"Type", "TYPE", "type", "Message_Type", "SESSION_ID"};
    for (size_t i = 0; i < 4; i++) {
        char text[200];
        snprintf(text, sizeof text,
                 "{\"%s\":\"device.status\",\"RequestId\":\"t-%zu\",\"Data\":{}}", types[i],
                 i);
        v = t_json(text);
        t_check(s_envelope(v, &env, why, sizeof why) == 0 &&
                    strcmp(env.message_type, "device.status") == 0,
                "envelope key '%s' names the message type (%s)", types[i], why);
        sdx_envelope_clear(&env);
    }
    v = t_json("{\"Action\":\"generate\",\"SESSION_ID\":\"s-9\",\"Timeout_S\":7,"
               "\"Data\":{\"Prompt\":\"x\"}}");
    t_check(s_envelope(v, &env, why, sizeof why) == 0 && strcmp(env.session_id, "s-9") == 0 &&
                env.timeout_ms == 7000,
            "SESSION_ID and Timeout_S matched loosely (%s)", why);
    sdx_envelope_clear(&env);
}

static void test_paths(void)
{
    struct {
        const char *native, *cs;
    } p[] = {
        {"hyperparameters.guidance_scale", "Hyperparameters.GuidanceScale"},
        {"lora.models[2].weight", "Conditioning.LoRAs[2].Weight"},
        {"controlnet[1].image", "Conditioning.ControlNets[1].ConditioningImage"},
        {"output.upscale.factor", "PostProcessing.Factor"},
        {"prompt", "Conditioning.Prompt"},
        {"dimensions", "Dimensions"},
        {"batch.size", "Hyperparameters.BatchSize"},
        {"textual_inversions[0].token", "Conditioning.TextualInversions[0].Token"},
    };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        char out[256];
        sdx_csharp_field_path(g_set, "inference.generate", p[i].native, out, sizeof out);
        t_check(strcmp(out, p[i].cs) == 0, "error field %s -> %s (got %s)", p[i].native, p[i].cs,
                out);
    }
    char out[64];
    sdx_csharp_snake("TimeoutMs", out, sizeof out);
    t_check(strcmp(out, "timeout_ms") == 0, "snake TimeoutMs");
    sdx_csharp_snake("requestId", out, sizeof out);
    t_check(strcmp(out, "request_id") == 0, "snake requestId");
    sdx_csharp_pascal("num_inference_steps", out, sizeof out);
    t_check(strcmp(out, "NumInferenceSteps") == 0, "pascal num_inference_steps");
}

static void test_replies(void)
{
    sdx_csharp_info_t info = {.dialect = SDX_DIALECT_CSHARP};
    snprintf(info.action, sizeof info.action, "generate_sdxl");
    snprintf(info.request_id, sizeof info.request_id, "%s", GUID);
    sdx_value_t *data = t_json("{\"images\":[{\"format\":\"png\",\"width\":1024,\"height\":1024,"
                               "\"seed\":42}],\"model_name\":\"m\"}");
    sdx_map_set(sdx_array_at(sdx_map_get(data, "images"), 0), "image",
                sdx_value_bin_new(PNG_SIG, sizeof PNG_SIG));
    sdx_value_t *timing = t_json("{\"worker_ms\":12,\"queue_ms\":1}");
    sdx_value_t *native = sdx_reply_ok(GUID, "inference.generate", data, timing);
    const sdx_value_t *ok_schema = sdx_schema_set_get(g_set, "csharp_generation_reply_schema.json");
    const sdx_value_t *err_schema = sdx_schema_set_get(g_set, "csharp_error_reply_schema.json");
    sdx_schema_error_t e;

    sdx_value_t *j = sdx_csharp_reply(native, SDX_ENC_JSON, &info);
    const sdx_value_t *img = sdx_map_get_path(j, "Data.Images");
    img = sdx_map_get(sdx_array_at(img, 0), "Image");
    t_check(j && sdx_schema_validate(ok_schema, &j, NULL, &e) == 0,
            "JSON reply matches csharp_generation_reply_schema.json (%s %s)", e.field, e.message);
    t_check(img && img->type == SDX_STR && strcmp(img->u.str.ptr, "iVBORw0KGgo=") == 0,
            "JSON reply: image as base64 text");
    t_check(strcmp(sdx_map_str(j, "RequestId", ""), GUID) == 0 && sdx_map_bool(j, "Success", 0) &&
                strcmp(sdx_map_str(j, "Action", ""), "generate_sdxl") == 0 &&
                !sdx_map_get(j, "MessageType") && sdx_map_get_path(j, "Timing.WorkerMs"),
            "JSON reply: RequestId, Success, Action, Timing.WorkerMs");
    sdx_value_destroy(&j);

    sdx_value_t *m = sdx_csharp_reply(native, SDX_ENC_MSGPACK, &info);
    img = sdx_map_get(sdx_array_at(sdx_map_get_path(m, "Data.Images"), 0), "Image");
    t_check(img && img->type == SDX_BIN && img->u.bin.len == 8, "msgpack reply: image as bin");
    t_check(m && sdx_schema_validate(ok_schema, &m, NULL, &e) == 0,
            "msgpack reply matches csharp_generation_reply_schema.json");
    sdx_value_destroy(&m);
    sdx_value_destroy(&native);

    sdx_value_t *ev = sdx_error_value(SDX_ERR_INVALID_REQUEST, "Hyperparameters.GuidanceScale",
                                      "must be <= 30, got 45");
    native = sdx_reply_error(GUID, "inference.generate", ev, NULL);
    sdx_value_t *r = sdx_csharp_reply(native, SDX_ENC_JSON, &info);
    t_check(r && sdx_schema_validate(err_schema, &r, NULL, &e) == 0,
            "error reply matches csharp_error_reply_schema.json (%s %s)", e.field, e.message);
    t_check(strcmp(sdx_map_str(sdx_map_get(r, "Error"), "Code", ""), "invalid_request") == 0 &&
                strcmp(sdx_map_str(sdx_map_get(r, "Error"), "Field", ""),
                       "Hyperparameters.GuidanceScale") == 0 &&
                !sdx_map_bool(r, "Success", 1),
            "error reply: Success false, Error {Code, Message, Field}");
    sdx_value_destroy(&r);
    sdx_value_destroy(&native);
}

/* Hostile bytes: random flips and truncations of real C# messages (plain,
   array-encoded, LZ4) through decode + prepare + envelope + validation must
   never crash (run under ASan/UBSan in CI) and always give an answer. */
static void test_mutations(void)
{
    sdx_value_t *forms[3];
    forms[0] = s_wrap(s_example(), "generate_sdxl");
    forms[1] = t_json("[\"id\",\"generate_sdxl\",[[\"m\",null,null],[9,25],[7.5,1024,1024,42],"
                      "[\"p\",\"n\",[[\"l\",0.8]],[[\"c\",\"iVBORw0KGgo=\",1.0]]],[0,95,\"o/\"],"
                      "[[0,2.0,\"E\"]]]]");
    forms[2] = s_lz4_block(forms[0]);
    uint32_t seed = 12345;
    size_t runs = 0, answered = 0;
    for (int f = 0; f < 3; f++) {
        uint8_t *buf;
        size_t len;
        if (sdx_msgpack_encode(forms[f], &buf, &len) != 0)
            continue;
        uint8_t *m = malloc(len);
        for (int i = 0; i < 1500; i++) {
            memcpy(m, buf, len);
            size_t n = len;
            int flips = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 4;
            for (int k = 0; k < flips; k++) {
                seed = seed * 1103515245u + 12345u;
                m[(seed >> 8) % len] ^= (uint8_t)(1u << ((seed >> 4) & 7));
            }
            if (i % 5 == 0)
                n = (seed >> 3) % len;
            char err[200];
            sdx_value_t *root = sdx_msgpack_decode(m, n, err, sizeof err);
            runs++;
            if (!root) {
                /* what the broker does with an undecodable frame */
                sdx_csharp_info_t sniffed;
                sdx_csharp_sniff(m, n, &sniffed);
                answered++;
                continue;
            }
            sdx_csharp_info_t info;
            sdx_schema_error_t e;
            sdx_value_t *flat = s_pipeline(root, &info, &e, NULL);
            answered += flat != NULL || e.message[0] != '\0';
            sdx_value_destroy(&flat);
        }
        free(m);
        free(buf);
    }
    for (int f = 0; f < 3; f++)
        sdx_value_destroy(&forms[f]);
    t_check(runs == 4500 && answered == runs,
            "%zu mutated C# messages: each valid or refused with a reason (%zu)", runs, answered);
}

/* Every scheduler alias (and alias set) through the C# mapping, with 0..N
   other sections beside it, so the native map meets the alias set's
   insertion at every fill level (the validator once wrote through a stale
   slot there; this file also runs under valgrind). */
static void test_scheduler_aliases(void)
{
    const sdx_value_t *sch = sdx_map_get_path(sdx_schema_set_for(g_set, "inference.generate"),
                                              "properties.scheduler");
    const sdx_value_t *al = sdx_map_get(sch, "x-aliases");
    const sdx_value_t *sets = sdx_map_get(sch, "x-alias-sets");
    static const char *sec[] = {
        "\"Hyperparameters\":{\"GuidanceScale\":5,\"Width\":512,\"Seed\":7}",
        "\"Output\":{\"Format\":\"PNG\"}",
        "\"Model\":{\"Base\":\"m\",\"Vae\":\"v\"}",
    };
    size_t runs = 0, good = 0;
    for (int l = 0; l < 2; l++) {
        const sdx_value_t *list = l ? sets : al;
        for (size_t i = 0; list && i < list->u.map.len; i++) {
            const char *name = list->u.map.items[i].key;
            bool karras = sdx_map_get(sets, name) != NULL;
            for (unsigned k = 0; k < 16; k++) { /* bit 3: a negative prompt */
                char text[1024];
                size_t used = (size_t)snprintf(text, sizeof text,
                                               "{\"Conditioning\":{\"Prompt\":\"x\"%s},"
                                               "\"Scheduler\":{\"Type\":\"%s\",\"Steps\":4}",
                                               k & 8 ? ",\"NegativePrompt\":\"n\"" : "", name);
                for (unsigned j = 0; j < 3; j++)
                    if (k & (1u << j))
                        used += (size_t)snprintf(text + used, sizeof text - used, ",%s", sec[j]);
                snprintf(text + used, sizeof text - used, "}");
                sdx_value_t *data = t_json(text);
                sdx_csharp_info_t info;
                sdx_schema_error_t e;
                sdx_value_t *v = data ? s_pipeline(s_wrap(data, "generate_sdxl"), &info, &e, NULL)
                                      : NULL;
                bool ok = v && strstr(sdx_map_str(v, "scheduler", ""), "Scheduler") &&
                          (!karras || sdx_map_bool(v, "use_karras_sigmas", false));
                if (!ok)
                    t_check(false, "C# Scheduler.Type '%s' with sections %#x: %s (%s: %s)", name,
                            k, sdx_map_str(v, "scheduler", "-"), e.field, e.message);
                good += ok;
                runs++;
                sdx_value_destroy(&v);
            }
        }
    }
    t_check(good == runs && runs > 100, "%zu of %zu C# scheduler aliases x sections map whole",
            good, runs);
}

/* Real DTOs have more properties than ours: in the C# dialect unknown
   properties are ignored and listed in Warnings (the reply carries them);
   the native dialect stays strict. */
static void test_lenient(void)
{
    sdx_value_t *data = s_example();
    sdx_map_set_str(sdx_map_get(data, "Conditioning"), "Styles", "noir");
    sdx_map_set_int(data, "CorrelationHint", 3);
    sdx_value_t *root = s_wrap(data, "generate_sdxl");
    sdx_map_set_str(root, "TraceParent", "00-ab-cd-01");
    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    sdx_value_t *flat = s_pipeline(root, &info, &e, NULL);
    bool styles = false, hint = false, trace = false;
    for (int i = 0; i < info.nwarnings; i++) {
        styles = styles || strstr(info.warnings[i], "Conditioning.Styles");
        hint = hint || strstr(info.warnings[i], "CorrelationHint");
        trace = trace || strstr(info.warnings[i], "TraceParent");
    }
    t_check(flat && info.nwarnings == 3 && styles && hint && trace,
            "unknown DTO and envelope properties accepted, 3 warnings (%d: %s)", info.nwarnings,
            flat ? "" : e.message);
    sdx_value_destroy(&flat);

    sdx_value_t *native = sdx_reply_ok(GUID, "inference.generate", t_json("{\"images\":[]}"), NULL);
    sdx_value_t *reply = sdx_csharp_reply(native, SDX_ENC_JSON, &info);
    t_check(reply && sdx_array_len(sdx_map_get(reply, "Warnings")) == 3,
            "the reply lists the 3 warnings under Warnings");
    sdx_value_destroy(&reply);
    sdx_value_destroy(&native);

    sdx_value_t *d = t_json("{\"prompt\":\"x\",\"colour\":1}");
    int rc = sdx_csharp_check_request(g_set, NULL, "inference.generate", SDX_DIALECT_NATIVE, &d, &e);
    t_check(rc == -1 && strcmp(e.field, "colour") == 0,
            "native dialect stays strict: unknown field refused (%s)", e.field);
    sdx_value_destroy(&d);
}

/* .NET wire forms: DateTimeOffset ([timestamp, int16 offset]), TimeSpan (STJ
   text, msgpack ticks), decimal as a string, Guid as 16 bytes. */
static const uint8_t GUID_BYTES[16] = {0xe0, 0x04, 0x25, 0x3f, 0x89, 0x4f, 0xd3, 0x11,
                                       0x9a, 0x0c, 0x03, 0x05, 0xe8, 0x2c, 0x33, 0x01};

static void test_dotnet_types(void)
{
    /* 2026-11-23T06:00:00 local, offset +60 min */
    uint8_t ts[4] = {0x6a, 0x22, 0xa2, 0x60};
    sdx_value_t *dto = sdx_value_array_new();
    sdx_array_push(dto, sdx_value_ext_new(-1, ts, 4));
    sdx_array_push(dto, sdx_value_int_new(60));
    sdx_value_t *data = s_example();
    sdx_value_t *meta = sdx_value_map_new();
    sdx_map_set(meta, "CreatedAt", sdx_value_clone(dto));
    sdx_map_set_str(meta, "Timeout", "00:05:00");
    sdx_map_set(data, "Metadata", meta);
    sdx_map_set_str(sdx_map_get(data, "Hyperparameters"), "GuidanceScale", "7.5");
    sdx_value_t *lora = sdx_array_at(sdx_map_get_path(data, "Conditioning.LoRAs"), 0);
    sdx_map_set_str(lora, "Weight", "0.8");
    sdx_value_t *root = s_wrap(data, "generate_sdxl");
    sdx_map_set(root, "Timestamp", dto);
    sdx_map_set(root, "RequestId", sdx_value_bin_new(GUID_BYTES, 16));
    sdx_map_set_str(root, "Timeout", "00:01:30");

    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    t_check(sdx_csharp_prepare(g_set, &root, 0, &info, &e) == 0, "prepare .NET forms (%s %s)",
            e.field, e.message);
    const char *stamp = sdx_map_str(root, "timestamp", "");
    t_check(strcmp(stamp, "2026-06-11T06:00:00+01:00") == 0 ||
                strstr(stamp, "+01:00") != NULL,
            "DateTimeOffset [timestamp, 60] -> RFC 3339 with +01:00 (%s)", stamp);
    t_check(sdx_map_int(root, "timeout_ms", 0) == 90000,
            "Timeout TimeSpan \"00:01:30\" -> timeout_ms 90000 (%lld)",
            (long long)sdx_map_int(root, "timeout_ms", 0));
    t_check(info.request_id_bin && strcmp(info.request_id, GUID) == 0 &&
                strcmp(sdx_map_str(root, "request_id", ""), GUID) == 0,
            "Guid as 16 bytes -> its text for the fleet (%s)", info.request_id);
    const sdx_value_t *d = sdx_map_get(root, "data");
    t_check(sdx_map_num(sdx_map_get(d, "hyperparameters"), "guidance_scale", 0) == 7.5,
            "decimal \"7.5\" -> 7.5");
    t_check(sdx_map_num(sdx_array_at(sdx_map_get_path(d, "lora.models"), 0), "weight", 0) == 0.8,
            "decimal \"0.8\" (LoRA weight) -> 0.8");
    t_check(sdx_map_num(sdx_map_get(d, "metadata"), "timeout", 0) == 300,
            "Metadata.Timeout \"00:05:00\" -> 300 s");
    t_check(strstr(sdx_map_str(sdx_map_get(d, "metadata"), "created_at", ""), "+01:00") != NULL,
            "Metadata.CreatedAt DateTimeOffset -> text with offset");

    sdx_value_t *native = sdx_reply_ok(GUID, "inference.generate", NULL, NULL);
    sdx_value_t *r = sdx_csharp_reply(native, SDX_ENC_MSGPACK, &info);
    const sdx_value_t *rid = sdx_map_get(r, "RequestId");
    t_check(rid && rid->type == SDX_BIN && rid->u.bin.len == 16 &&
                memcmp(rid->u.bin.ptr, GUID_BYTES, 16) == 0,
            "the reply echoes the Guid's 16 bytes as sent");
    sdx_value_destroy(&r);
    sdx_value_destroy(&native);
    sdx_value_destroy(&root);

    /* Metadata.Timeout: seconds, or ticks from 10^7 (1 s) on */
    const long long mt[][2] = {{300, 300}, {3000000000LL, 300}, {10000000, 1}};
    for (size_t i = 0; i < 3; i++) {
        sdx_value_t *dd = s_example();
        sdx_value_t *m = sdx_value_map_new();
        sdx_map_set_int(m, "Timeout", mt[i][0]);
        sdx_map_set(dd, "Metadata", m);
        sdx_value_t *fl = s_pipeline(s_wrap(dd, "generate_sdxl"), &info, &e, NULL);
        t_check(fl && sdx_map_num(sdx_map_get(fl, "metadata"), "timeout", 0) == (double)mt[i][1],
                "Metadata.Timeout %lld -> %lld s", mt[i][0], mt[i][1]);
        sdx_value_destroy(&fl);
    }

    /* msgpack ticks */
    root = t_json("{\"Action\":\"generate\",\"Timeout\":3000000000,\"Data\":{\"Prompt\":\"x\"}}");
    t_check(sdx_csharp_prepare(g_set, &root, 0, &info, &e) == 0 &&
                sdx_map_int(root, "timeout_ms", 0) == 300000,
            "Timeout as int64 ticks 3e9 -> 300000 ms");
    sdx_value_destroy(&root);
    root = t_json("{\"Action\":\"generate\",\"Timeout\":\"five minutes\",\"Data\":{\"Prompt\":\"x\"}}");
    t_check(sdx_csharp_prepare(g_set, &root, 0, &info, &e) == -1 &&
                strcmp(e.field, "Timeout") == 0 && strstr(e.message, "TimeSpan"),
            "a bad TimeSpan is refused naming Timeout (%s: %s)", e.field, e.message);
    sdx_value_destroy(&root);
    root = t_json("{\"Action\":\"generate\",\"Timeout\":\"1.02:03:04.5\",\"Data\":{\"Prompt\":\"x\"}}");
    t_check(sdx_csharp_prepare(g_set, &root, 0, &info, &e) == 0 &&
                sdx_map_int(root, "timeout_ms", 0) == 93784500,
            "TimeSpan d.hh:mm:ss.f -> ms (%lld)", (long long)sdx_map_int(root, "timeout_ms", 0));
    sdx_value_destroy(&root);
}

/* [Key(n)] clients get arrays back, in the schema's x-reply order; errors
   for array envelopes carry the RequestId. */
static void test_array_replies(void)
{
    const sdx_value_t *xr = sdx_schema_set_annotation(g_set, "x-reply");
    const sdx_value_t *order = sdx_map_get(xr, "x-key-order");
    t_check(order && sdx_array_len(order) >= 9, "x-reply declares the reply key order");
    size_t i_rid = 99, i_ok = 99, i_data = 99, i_err = 99, i_type = 99, i_prog = 99;
    for (size_t i = 0; i < sdx_array_len(order); i++) {
        const char *k = sdx_array_at(order, i)->u.str.ptr;
        if (!strcmp(k, "RequestId")) i_rid = i;
        if (!strcmp(k, "Success")) i_ok = i;
        if (!strcmp(k, "Data")) i_data = i;
        if (!strcmp(k, "Error")) i_err = i;
        if (!strcmp(k, "Type")) i_type = i;
        if (!strcmp(k, "Progress")) i_prog = i;
    }
    /* a request whose envelope fails after the array stage */
    sdx_value_t *v = t_json("[\"arr-7\", \"generate_sdxl\", [[\"m\"], [9, 25], [45.0], [\"p\"]]]");
    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    sdx_value_t *flat = s_pipeline(v, &info, &e, NULL);
    t_check(!flat && info.array_encoded && strcmp(info.request_id, "arr-7") == 0 &&
                strcmp(e.field, "Hyperparameters.GuidanceScale") == 0,
            "array request: error on GuidanceScale, RequestId kept (%s; %s %s)", info.request_id,
            e.field, e.message);
    sdx_value_t *ev = sdx_error_value(SDX_ERR_INVALID_REQUEST, e.field, e.message);
    sdx_value_t *native = sdx_reply_error(NULL, NULL, ev, NULL);
    sdx_value_t *r = sdx_csharp_reply(native, SDX_ENC_MSGPACK, &info);
    const sdx_value_t *rid = sdx_array_at(r, i_rid), *ok = sdx_array_at(r, i_ok);
    const sdx_value_t *err = sdx_array_at(r, i_err);
    t_check(r && r->type == SDX_ARRAY && rid && rid->type == SDX_STR &&
                strcmp(rid->u.str.ptr, "arr-7") == 0 && ok && ok->type == SDX_BOOL && !ok->u.b,
            "error reply is an array: [RequestId \"arr-7\", Success false, ...]");
    t_check(err && err->type == SDX_ARRAY && sdx_array_len(err) == 4 &&
                sdx_array_at(err, 0)->type == SDX_STR &&
                strcmp(sdx_array_at(err, 0)->u.str.ptr, "invalid_request") == 0 &&
                strcmp(sdx_array_at(err, 2)->u.str.ptr, "Hyperparameters.GuidanceScale") == 0,
            "Error is [Code, Message, Field, Retryable]");
    sdx_value_destroy(&r);
    sdx_value_destroy(&native);

    /* a wire fault in an array envelope (integer Action) still names the id */
    v = t_json("[\"arr-8\", 5]");
    t_check(sdx_csharp_prepare(g_set, &v, 0, &info, &e) == -1 &&
                strcmp(info.request_id, "arr-8") == 0,
            "array envelope refused before mapping: RequestId still known (%s)", info.request_id);
    sdx_value_destroy(&v);
    v = t_json("[42, 5]");
    t_check(sdx_csharp_prepare(g_set, &v, 0, &info, &e) == -1 && info.request_id_int &&
                info.request_id_i == 42,
            "array envelope: an integer RequestId is kept an integer");
    native = sdx_reply_error(NULL, NULL, sdx_error_value(SDX_ERR_INVALID_REQUEST, NULL, "x"), NULL);
    r = sdx_csharp_reply(native, SDX_ENC_MSGPACK, &info);
    rid = sdx_array_at(r, i_rid);
    t_check(rid && rid->type == SDX_INT && rid->u.i == 42, "... and echoed as 42");
    sdx_value_destroy(&r);
    sdx_value_destroy(&native);
    sdx_value_destroy(&v);

    /* success: Data for inference.generate in its order, images too */
    memset(&info, 0, sizeof info);
    info.dialect = SDX_DIALECT_CSHARP;
    info.array_encoded = true;
    info.set = g_set;
    snprintf(info.message_type, sizeof info.message_type, "inference.generate");
    snprintf(info.action, sizeof info.action, "generate_sdxl");
    sdx_value_t *data = t_json("{\"images\":[{\"format\":\"png\",\"width\":64,\"height\":64,"
                               "\"seed\":42}],\"seed\":42}");
    sdx_map_set(sdx_array_at(sdx_map_get(data, "images"), 0), "image",
                sdx_value_bin_new(PNG_SIG, sizeof PNG_SIG));
    native = sdx_reply_ok("rid-9", "inference.generate", data, t_json("{\"total_ms\":1.5}"));
    r = sdx_csharp_reply(native, SDX_ENC_MSGPACK, &info);
    const sdx_value_t *dv = sdx_array_at(r, i_data);
    const sdx_value_t *img0 = sdx_array_at(sdx_array_at(dv, 0), 0);
    t_check(r && r->type == SDX_ARRAY && sdx_array_at(r, i_ok)->type == SDX_BOOL &&
                sdx_array_at(r, i_ok)->u.b && dv && dv->type == SDX_ARRAY &&
                sdx_array_at(dv, 1)->type == SDX_INT && sdx_array_at(dv, 1)->u.i == 42,
            "success reply: [RequestId, true, Action, [Images, Seed 42, ...]]");
    t_check(img0 && img0->type == SDX_ARRAY && sdx_array_at(img0, 0)->type == SDX_BIN &&
                strcmp(sdx_array_at(img0, 1)->u.str.ptr, "png") == 0,
            "each image is [Image (bin), Format, Width, Height, Seed, SavePath]");
    sdx_value_destroy(&r);
    sdx_value_destroy(&native);

    /* progress in the array contract */
    native = t_json("{\"request_id\":\"rid-9\",\"message_type\":\"progress\",\"request_type\":"
                    "\"inference.generate\",\"step\":2,\"total\":4,\"elapsed_ms\":12.5,"
                    "\"message\":\"denoising\"}");
    r = sdx_csharp_reply(native, SDX_ENC_MSGPACK, &info);
    const sdx_value_t *pg = sdx_array_at(r, i_prog);
    t_check(r && r->type == SDX_ARRAY && sdx_array_at(r, i_ok)->type == SDX_NIL &&
                sdx_array_at(r, i_type)->type == SDX_STR &&
                strcmp(sdx_array_at(r, i_type)->u.str.ptr, "progress") == 0 && pg &&
                pg->type == SDX_ARRAY && sdx_array_at(pg, 0)->u.i == 2 &&
                sdx_array_at(pg, 1)->u.i == 4,
            "progress array: Success nil, Type \"progress\", Progress [Step 2, Total 4, ...]");
    sdx_value_destroy(&r);
    sdx_value_destroy(&native);
}

/* Progress never looks like a final reply. */
static void test_progress(void)
{
    sdx_csharp_info_t info = {.dialect = SDX_DIALECT_CSHARP, .set = NULL};
    info.set = g_set;
    snprintf(info.action, sizeof info.action, "generate_sdxl");
    sdx_value_t *native =
        t_json("{\"request_id\":\"p-1\",\"message_type\":\"progress\",\"request_type\":"
               "\"inference.generate\",\"step\":1,\"total\":20,\"elapsed_ms\":40.5,"
               "\"message\":\"denoising\"}");
    sdx_value_t *r = sdx_csharp_reply(native, SDX_ENC_JSON, &info);
    const sdx_value_t *p = sdx_map_get(r, "Progress");
    t_check(r && !sdx_map_get(r, "Success") && !sdx_map_get(r, "Data") &&
                !sdx_map_get(r, "MessageType") &&
                strcmp(sdx_map_str(r, "Type", ""), "progress") == 0 &&
                strcmp(sdx_map_str(r, "RequestId", ""), "p-1") == 0,
            "progress: Type \"progress\", RequestId, no Success, no Data");
    const sdx_value_t *ps = sdx_schema_set_get(g_set, "csharp_progress_schema.json");
    sdx_schema_error_t e;
    t_check(ps && r && sdx_schema_validate(ps, &r, NULL, &e) == 0,
            "progress matches csharp_progress_schema.json (%s %s)", ps ? e.field : "",
            ps ? e.message : "missing");
    p = sdx_map_get(r, "Progress");
    t_check(p && sdx_map_int(p, "Step", 0) == 1 && sdx_map_int(p, "Total", 0) == 20 &&
                sdx_map_num(p, "Elapsed", 0) == 40.5 &&
                strcmp(sdx_map_str(p, "Message", ""), "denoising") == 0,
            "progress: Progress {Step 1, Total 20, Elapsed 40.5, Message}");
    sdx_value_destroy(&r);
    sdx_value_destroy(&native);
}

/* Every error's field in the C# names, whoever raised it. */
static void test_error_fields(void)
{
    sdx_csharp_info_t info = {.dialect = SDX_DIALECT_CSHARP};
    info.set = g_set;
    snprintf(info.message_type, sizeof info.message_type, "inference.generate");
    struct {
        const char *native, *cs;
    } f[] = {{"refiner_model", "Model.Refiner"},
             {"output.format", "Output.Format"},
             {"lora.models", "Conditioning.LoRAs"},
             {"request_id", "RequestId"},
             {"Hyperparameters.GuidanceScale", "Hyperparameters.GuidanceScale"}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        sdx_value_t *native = sdx_reply_error(
            "x", "inference.generate",
            sdx_error_value(SDX_ERR_NOT_AVAILABLE, f[i].native, "not available"), NULL);
        sdx_value_t *r = sdx_csharp_reply(native, SDX_ENC_JSON, &info);
        const char *got = sdx_map_str(sdx_map_get(r, "Error"), "Field", "");
        t_check(strcmp(got, f[i].cs) == 0, "worker error field %s -> %s (got %s)", f[i].native,
                f[i].cs, got);
        sdx_value_destroy(&r);
        sdx_value_destroy(&native);
    }
}

/* Random seeds fit a C# int; explicit ones are kept. */
static void test_seeds(void)
{
    int in_range = 0, runs = 40;
    int64_t first = -2;
    bool differ = false;
    for (int i = 0; i < runs; i++) {
        sdx_value_t *data = s_example();
        if (i % 2)
            sdx_map_del(sdx_map_get(data, "Hyperparameters"), "Seed");
        else
            sdx_map_set_int(sdx_map_get(data, "Hyperparameters"), "Seed", -1);
        sdx_csharp_info_t info;
        sdx_schema_error_t e;
        sdx_value_t *flat = s_pipeline(s_wrap(data, "generate_sdxl"), &info, &e, NULL);
        int64_t seed = sdx_map_int(sdx_map_get(flat, "hyperparameters"), "seed", -5);
        in_range += seed >= 0 && seed <= 2147483647;
        if (first == -2)
            first = seed;
        differ = differ || seed != first;
        sdx_value_destroy(&flat);
    }
    t_check(in_range == runs && differ,
            "random seeds (Seed omitted or -1) drawn in 0..2^31-1 (%d of %d), not all equal",
            in_range, runs);
    sdx_value_t *data = s_example();
    sdx_map_set_int(sdx_map_get(data, "Hyperparameters"), "Seed", 4410642167912832LL);
    sdx_csharp_info_t info;
    sdx_schema_error_t e;
    sdx_value_t *flat = s_pipeline(s_wrap(data, "generate_sdxl"), &info, &e, NULL);
    t_check(sdx_map_int(sdx_map_get(flat, "hyperparameters"), "seed", 0) == 4410642167912832LL,
            "an explicit seed is honoured as given");
    sdx_value_destroy(&flat);
    sdx_value_t *d = t_json("{\"prompt\":\"x\"}");
    sdx_csharp_check_request(g_set, NULL, "inference.generate", SDX_DIALECT_NATIVE, &d, &e);
    t_check(sdx_map_int(sdx_map_get(d, "hyperparameters"), "seed", 0) == -1,
            "native requests keep seed -1 (the worker draws it)");
    sdx_value_destroy(&d);
}

/* DPMSolverSDEScheduler (11) keeps its C# number but is refused clearly;
   12 and up do not shift. */
static void test_scheduler_enum(void)
{
    struct {
        int type;
        const char *want;
    } c[] = {{10, "DPMSolverSinglestepScheduler"}, {12, "UniPCMultistepScheduler"},
             {14, "LCMScheduler"}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        sdx_value_t *data = s_example();
        sdx_map_set_int(sdx_map_get(data, "Scheduler"), "Type", c[i].type);
        sdx_csharp_info_t info;
        sdx_schema_error_t e;
        sdx_value_t *flat = s_pipeline(s_wrap(data, "generate_sdxl"), &info, &e, NULL);
        t_check(flat && strcmp(sdx_map_str(flat, "scheduler", ""), c[i].want) == 0,
                "Scheduler.Type %d -> %s (%s)", c[i].type, c[i].want, flat ? "" : e.message);
        sdx_value_destroy(&flat);
    }
    const char *sde[] = {"11", "\"DPMSolverSDEScheduler\"", "\"DPMSolverSDE\""};
    for (size_t i = 0; i < 3; i++) {
        char text[300];
        snprintf(text, sizeof text,
                 "{\"Action\":\"generate_sdxl\",\"Data\":{\"Scheduler\":{\"Type\":%s},"
                 "\"Conditioning\":{\"Prompt\":\"x\"}}}",
                 sde[i]);
        sdx_csharp_info_t info;
        sdx_schema_error_t e;
        sdx_value_t *flat = s_pipeline(t_json(text), &info, &e, NULL);
        t_check(!flat && strcmp(e.field, "Scheduler.Type") == 0 &&
                    strstr(e.message, "not supported") && strstr(e.message, "12=UniPCMultistep,"),
                "Scheduler.Type %s refused as not supported (%s: %s)", sde[i], e.field, e.message);
        sdx_value_destroy(&flat);
    }
}

/* Undecodable frames that still look like C#; a UTF-8 BOM before JSON. */
static void test_sniff_and_bom(void)
{
    sdx_csharp_info_t info;
    const char *j = "\xef\xbb\xbf{\"RequestId\": \"bad-1\", \"Action\": \"generate\", \"Data\": {";
    t_check(sdx_csharp_sniff(j, strlen(j), &info) == SDX_DIALECT_CSHARP &&
                strcmp(info.request_id, "bad-1") == 0,
            "truncated C# JSON (with BOM) recognised, RequestId read (%s)", info.request_id);
    const char *jn = "{\"message_type\": \"device.status\", ";
    t_check(sdx_csharp_sniff(jn, strlen(jn), &info) == SDX_DIALECT_NATIVE,
            "truncated native JSON stays native");
    const uint8_t mp[] = {0x93, 0xa5, 'b', 'a', 'd', '-', '2', 0xad, 'g', 'e'};
    t_check(sdx_csharp_sniff(mp, sizeof mp, &info) == SDX_DIALECT_CSHARP && info.array_encoded &&
                strcmp(info.request_id, "bad-2") == 0,
            "truncated [Key(n)] msgpack recognised, RequestId read (%s)", info.request_id);
    /* every truncation of a C# JSON frame: sniffed without reading past it */
    const char *full = "\xef\xbb\xbf{\"RequestId\" : \"t-9\", \"Action\": \"generate\", "
                       "\"Data\": {\"Prompt\": \"x\"}}";
    size_t flen = strlen(full), ids = 0;
    for (size_t n = 0; n < flen; n++) {
        char *cut = malloc(n ? n : 1);
        memcpy(cut, full, n);
        if (sdx_csharp_sniff(cut, n, &info) == SDX_DIALECT_CSHARP &&
            strcmp(info.request_id, "t-9") == 0)
            ids++;
        free(cut);
    }
    t_check(ids > flen / 2, "truncated C# JSON: RequestId read from %zu of %zu cuts", ids, flen);
    const char *bom = "\xef\xbb\xbf{\"Action\":\"ping\"}";
    char err[200];
    t_check(sdx_codec_detect(bom, strlen(bom)) == SDX_ENC_JSON, "a BOM before JSON: JSON");
    sdx_value_t *v = sdx_json_decode(bom, strlen(bom), err, sizeof err);
    t_check(v && strcmp(sdx_map_str(v, "Action", ""), "ping") == 0, "JSON after a BOM decodes");
    sdx_value_destroy(&v);
}

int main(int argc, char **argv)
{
    t_verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/schemas", t_source_root());
    g_set = sdx_schema_set_load(path, err, sizeof err);
    t_check(g_set != NULL, "load schemas (%s)", g_set ? "ok" : err);
    snprintf(path, sizeof path, "%s/proto/actions.json", t_source_root());
    t_check(sdx_actions_load(path, err, sizeof err) == 0, "load proto/actions.json");
    if (!g_set)
        return t_finish();
    test_fields();
    test_equivalence();
    test_timestamps();
    test_bad();
    test_detect_and_native();
    test_paths();
    test_envelope_keys();
    test_replies();
    test_mutations();
    test_scheduler_aliases();
    test_lenient();
    test_dotnet_types();
    test_array_replies();
    test_progress();
    test_error_fields();
    test_seeds();
    test_scheduler_enum();
    test_sniff_and_bom();
    sdx_value_destroy(&g_native);
    sdx_schema_set_destroy(&g_set);
    return t_finish();
}
