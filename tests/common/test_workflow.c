/*  test_workflow.c - broker/workflow.c: the shipped definitions in
    deploy/workflows load; bad files are refused with file:line: reason (YAML
    errors, unknown domain / operation / key, cycles, forward references,
    missing models, duplicate step ids); aliases resolve; inline workflows in
    the seeds' shape and in C# PascalCase load; step inputs merge, set and
    index as documented; the reply tree, clones and directory loads. */
#include "sdx_catalog.h"
#include "sdx_codec.h"
#include "sdx_envelope.h"
#include "tcheck.h"
#include "workflow.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const sdx_catalog_t *s_cat;

static int s_no_models(void *ud, const char *name)
{
    (void)ud;
    return strcmp(name, "known_model") == 0 ? 1 : 0;
}

static int s_unknown_models(void *ud, const char *name)
{
    (void)ud;
    (void)name;
    return -1;
}

static workflow_t *s_text(const char *yaml, char *err, size_t len)
{
    return wf_load_text(yaml, strlen(yaml), "t.yaml", s_cat, s_no_models, NULL, err, len);
}

/* yaml is refused with an error that starts with "t.yaml:<line>:" and holds want. */
static void s_refused(const char *yaml, int line, const char *want)
{
    char err[1024] = "";
    workflow_t *w = s_text(yaml, err, sizeof err);
    CHECK(w == NULL);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "t.yaml:%d: ", line);
    bool ok = strncmp(err, prefix, strlen(prefix)) == 0 && strstr(err, want) != NULL;
    if (!ok)
        fprintf(stderr, "  got \"%s\", wanted \"%s...%s\"\n", err, prefix, want);
    CHECK(ok);
    wf_destroy(&w);
}

static const char *s_root(void)
{
    const char *r = getenv("SDXL_SOURCE_ROOT");
    return r ? r : ".";
}

static void t_shipped(void)
{
    char dir[1024], err[1024];
    snprintf(dir, sizeof dir, "%s/deploy/workflows", s_root());
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d)
        return;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".yaml") != 0)
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        workflow_t *w = wf_load_file(path, s_cat, s_unknown_models, NULL, err, sizeof err);
        if (!w)
            fprintf(stderr, "  %s\n", err);
        CHECK(w != NULL);
        wf_destroy(&w);
        n++;
    }
    closedir(d);
    CHECK(n >= 6);

    wf_set_t set = {0};
    int refused = wf_load_dir(dir, s_cat, NULL, NULL, NULL, NULL, &set, err, sizeof err);
    CHECK(refused == 0);
    CHECK(set.n == (size_t)n);
    const workflow_t *t = wf_set_find(&set, "sdxl_txt2img");
    CHECK(t != NULL);
    if (t) {
        CHECK(t->nsteps == 3);
        CHECK_STR(t->steps[0].message_type, "conditioning.encode_prompt");
        CHECK_STR(t->steps[1].message_type, "inference.denoise");
        CHECK_STR(t->steps[2].message_type, "postprocessing.finalize");
        CHECK(t->estimated_duration_ms == 20000);
        CHECK(t->gpu_memory_mb == 10000);
        CHECK(t->ndomains == 3);
        CHECK(t->steps[1].ninputs == 2);
        CHECK_STR(t->steps[1].inputs[1].step, "encode");
        CHECK_STR(t->steps[1].inputs[1].path, "tensors");
        CHECK_STR(t->steps[2].inputs[0].path, "images[0].image");
        CHECK_STR(sdx_map_str(t->steps[2].parameters, "format", NULL), "png");
        CHECK(t->steps[2].retry == 1);
        CHECK(t->steps[0].line > 0);
    }
    const workflow_t *h = wf_set_find(&set, "health_check");
    CHECK(h && h->nsteps == 2 && !strcmp(h->steps[0].message_type, "device.status"));
    CHECK(wf_set_find(&set, "nope") == NULL);
    for (size_t i = 1; i < set.n; i++)
        CHECK(strcmp(set.items[i - 1]->id, set.items[i]->id) < 0);
    wf_set_clear(&set);
    CHECK(set.n == 0 && set.items == NULL);
}

static void t_refused(void)
{
    /* bad YAML: the unclosed flow sequence */
    s_refused("id: x\nsteps: [\n  {type: device, operation: status}\n", 4, "YAML");
    s_refused("id: x\nsteps:\n  - type: device\n    operation: status\n   bad: indent\n", 5,
              "YAML");
    s_refused("id: x\n", 1, "steps is required");
    s_refused("name: x\nsteps:\n  - {type: device, operation: status}\n", 1, "id is required");
    s_refused("id: \"bad id!\"\nsteps:\n  - {type: device, operation: status}\n", 1,
              "workflow id \"bad id!\"");
    /* unknown domain: lists the domains */
    s_refused("id: x\nsteps:\n  - id: a\n    type: gpu\n    operation: status\n", 4,
              "step a: unknown domain \"gpu\" (domains: device, model");
    /* unknown operation: names it and lists the domain's operations */
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: explode\n", 5,
              "unknown operation \"explode\" of domain device (operations: ping, list, info, "
              "status");
    /* the orchestrator's own domains */
    s_refused("id: x\nsteps:\n  - id: a\n    type: processing\n    operation: workflow_execute\n",
              4, "cannot call the orchestrator");
    s_refused("id: x\nsteps:\n  - id: a\n    type: system\n    operation: ping\n", 4,
              "cannot call the orchestrator");
    /* unknown keys, top level and in a step */
    s_refused("id: x\nfoo: 1\nsteps:\n  - {type: device, operation: status}\n", 2,
              "unknown key \"foo\" (allowed: id, name");
    s_refused("id: x\nsteps:\n  - type: device\n    operation: status\n    colour: red\n", 5,
              "unknown key \"colour\"");
    /* duplicate step id */
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n"
              "  - id: a\n    type: model\n    operation: list\n",
              6, "duplicate step id \"a\" (also at line 3)");
    /* cycle a -> b -> a (b comes later: still reported as the cycle) */
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n"
              "    inputs: {x: \"${steps.b.y}\"}\n"
              "  - id: b\n    type: model\n    operation: list\n"
              "    inputs: {y: \"${steps.a.x}\"}\n",
              6, "cycle in inputs: a -> b -> a");
    /* forward reference (no cycle) */
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n"
              "    inputs:\n      x: ${steps.b.y}\n"
              "  - id: b\n    type: model\n    operation: list\n",
              7, "forward reference");
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n"
              "    inputs:\n      x: ${steps.a.y}\n",
              7, "refer to itself");
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n"
              "    inputs:\n      x: ${steps.zz.y}\n",
              7, "no step \"zz\"");
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n"
              "    inputs:\n      x: ${config..y}\n",
              7, "malformed reference");
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n"
              "    inputs:\n      x: config.y\n",
              7, "malformed reference");
    /* missing model per the callback */
    s_refused("id: x\nsteps:\n  - id: a\n    type: inference\n    operation: generate\n"
              "    required_models:\n      - known_model\n      - sdxl_nope\n",
              8, "step a: model \"sdxl_nope\" is not in the model catalogue");
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n    retry: 9\n",
              6, "retry must be in 0..5");
    s_refused("id: x\nsteps:\n  - id: a\n    type: device\n    operation: status\n"
              "    timeout_ms: -1\n",
              6, "timeout_ms must be >= 0");
    s_refused("id: x\nbase: &b {type: device}\nsteps:\n  - *b\n", 2, "anchors and aliases");
    s_refused("id: x\nsteps:\n  - {type: device, operation: status}\n---\nid: y\n", 4,
              "one YAML document per file");
    s_refused("id: x\nid: y\nsteps:\n  - {type: device, operation: status}\n", 2,
              "duplicate key \"id\"");
    s_refused("", 1, "empty file");
    s_refused("id: x\nestimated_duration: \"1:99:00\"\nsteps:\n  - {type: device, operation: "
              "status}\n",
              2, "TimeSpan");

    /* too many steps */
    char big[16384];
    size_t o = (size_t)snprintf(big, sizeof big, "id: x\nsteps:\n");
    for (int i = 0; i <= WF_MAX_STEPS; i++)
        o += (size_t)snprintf(big + o, sizeof big - o, "  - {type: device, operation: status}\n");
    s_refused(big, 2, "at most 64");
}

static void t_accepted(void)
{
    char err[1024];
    /* the alias resolves, the verb is kept as written */
    workflow_t *w = s_text("id: a.b-c_1\nsteps:\n  - type: device\n    operation: get_status\n"
                           "  - {type: model, operation: load_model, required_models: "
                           "[known_model]}\n",
                           err, sizeof err);
    CHECK(w != NULL);
    if (!w) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_STR(w->steps[0].message_type, "device.status");
    CHECK_STR(w->steps[0].operation, "get_status");
    CHECK_STR(w->steps[0].id, "step1");
    CHECK_STR(w->steps[1].message_type, "model.load"); /* planned: accepted */
    CHECK_STR(w->name, "a.b-c_1");
    CHECK_STR(w->description, "");
    CHECK(w->steps[0].line == 3);
    CHECK(w->steps[1].line == 5);
    CHECK(w->ndomains == 2);
    CHECK(w->steps[1].nrequired == 1);
    wf_destroy(&w);
    CHECK(w == NULL);

    /* scalars: plain ones are typed, quoted ones stay text */
    w = s_text("id: s\nsteps:\n  - type: test\n    operation: echo\n    parameters:\n"
               "      i: 42\n      f: 1.5\n      e: 1e3\n      b: true\n      n: null\n"
               "      t: ~\n      q: \"42\"\n      s: hello\n      neg: -7\n      h: 0x1f\n",
               err, sizeof err);
    CHECK(w != NULL);
    if (w) {
        const sdx_value_t *p = w->steps[0].parameters;
        CHECK(sdx_map_get(p, "i")->type == SDX_INT && sdx_map_int(p, "i", 0) == 42);
        CHECK(sdx_map_get(p, "f")->type == SDX_FLOAT && sdx_map_num(p, "f", 0) == 1.5);
        CHECK(sdx_map_get(p, "e")->type == SDX_FLOAT && sdx_map_num(p, "e", 0) == 1000.0);
        CHECK(sdx_map_get(p, "b")->type == SDX_BOOL && sdx_map_bool(p, "b", false));
        CHECK(sdx_map_get(p, "n")->type == SDX_NIL);
        CHECK(sdx_map_get(p, "t")->type == SDX_NIL);
        CHECK_STR(sdx_map_str(p, "q", NULL), "42");
        CHECK_STR(sdx_map_str(p, "s", NULL), "hello");
        CHECK(sdx_map_int(p, "neg", 0) == -7);
        CHECK(sdx_map_int(p, "h", 0) == 31);
    }
    wf_destroy(&w);
}

static sdx_value_t *s_json(const char *json)
{
    char err[256];
    sdx_value_t *v = sdx_json_decode(json, strlen(json), err, sizeof err);
    if (!v)
        fprintf(stderr, "  json: %s\n", err);
    return v;
}

static void t_inline(void)
{
    char err[1024];
    sdx_value_t *v = s_json("{\"workflow_id\": \"inference-workflow\", \"steps\": ["
                            "{\"type\": \"device\", \"operation\": \"get_status\"},"
                            "{\"type\": \"model\", \"operation\": \"load_model\"},"
                            "{\"type\": \"inference\", \"operation\": \"generate\"}]}");
    CHECK(v != NULL);
    workflow_t *w = wf_from_value(v, s_cat, NULL, NULL, err, sizeof err);
    CHECK(w != NULL);
    if (!w)
        fprintf(stderr, "  %s\n", err);
    if (w) {
        CHECK_STR(w->id, "inference-workflow");
        CHECK(w->nsteps == 3);
        CHECK_STR(w->steps[0].message_type, "device.status");
        CHECK_STR(w->steps[1].message_type, "model.load");
        CHECK_STR(w->steps[2].message_type, "inference.generate");
        CHECK(w->steps[0].line == 0);
        CHECK_STR(w->file, "");
    }
    wf_destroy(&w);
    sdx_value_destroy(&v);

    /* C# PascalCase */
    v = s_json("{\"WorkflowId\": \"cs-flow\", \"Steps\": ["
               "{\"Type\": \"device\", \"Operation\": \"get_status\"},"
               "{\"Type\": \"inference\", \"Operation\": \"generate\", \"Parameters\": "
               "{\"prompt\": \"a cat\"}, \"RequiredModels\": [\"m1\"]}]}");
    w = wf_from_value(v, s_cat, s_unknown_models, NULL, err, sizeof err);
    CHECK(w != NULL);
    if (!w)
        fprintf(stderr, "  %s\n", err);
    if (w) {
        CHECK_STR(w->id, "cs-flow");
        CHECK(w->nsteps == 2);
        CHECK_STR(sdx_map_str(w->steps[1].parameters, "prompt", NULL), "a cat");
        CHECK(w->steps[1].nrequired == 1);
    }
    wf_destroy(&w);
    sdx_value_destroy(&v);

    /* no id: adhoc; id accepted */
    v = s_json("{\"steps\": [{\"type\": \"device\", \"operation\": \"status\"}]}");
    w = wf_from_value(v, s_cat, NULL, NULL, err, sizeof err);
    CHECK(w && !strcmp(w->id, "adhoc"));
    wf_destroy(&w);
    sdx_value_destroy(&v);
    v = s_json(
        "{\"id\": \"given\", \"steps\": [{\"type\": \"device\", \"operation\": \"status\"}]}");
    w = wf_from_value(v, s_cat, NULL, NULL, err, sizeof err);
    CHECK(w && !strcmp(w->id, "given"));
    wf_destroy(&w);
    sdx_value_destroy(&v);

    /* errors name the field */
    v = s_json("{\"steps\": [{\"type\": \"device\", \"operation\": \"status\"},"
               "{\"type\": \"gpu\", \"operation\": \"x\"}]}");
    w = wf_from_value(v, s_cat, NULL, NULL, err, sizeof err);
    CHECK(w == NULL);
    CHECK(strncmp(err, "steps[1].type: ", 15) == 0 && strstr(err, "unknown domain \"gpu\""));
    sdx_value_destroy(&v);
    v = s_json("{\"steps\": [{\"type\": \"inference\", \"operation\": \"generate\", "
               "\"required_models\": [\"zz\"]}]}");
    w = wf_from_value(v, s_cat, s_no_models, NULL, err, sizeof err);
    CHECK(w == NULL);
    CHECK(strstr(err, "steps[0].required_models[0]: ") == err &&
          strstr(err, "model \"zz\" is not in the model catalogue"));
    sdx_value_destroy(&v);
    v = s_json("{\"Steps\": [{\"Type\": \"device\", \"Operation\": \"status\", \"Retry\": 9}]}");
    w = wf_from_value(v, s_cat, NULL, NULL, err, sizeof err);
    CHECK(w == NULL);
    CHECK_STR(err, "steps[0].retry: must be in 0..5 (got 9)"); /* canonical names */
    sdx_value_destroy(&v);
    v = s_json(
        "{\"steps\": [{\"type\": \"DEVICE\", \"operation\": \"get_device_status\"}],"
        "\"ResourceRequirements\": {\"GpuMemoryMb\": 4096}, \"EstimatedDuration\": \"00:01:00\"}");
    w = wf_from_value(v, s_cat, NULL, NULL, err, sizeof err);
    CHECK(w != NULL);
    if (!w)
        fprintf(stderr, "  %s\n", err);
    CHECK(w && !strcmp(w->steps[0].message_type, "device.status") && w->gpu_memory_mb == 4096 &&
          w->estimated_duration_ms == 60000);
    wf_destroy(&w);
    sdx_value_destroy(&v);
    v = s_json("{\"steps\": [{\"type\": \"device\", \"operation\": \"status\", \"Bogus\": 1}]}");
    w = wf_from_value(v, s_cat, NULL, NULL, err, sizeof err);
    CHECK(w == NULL && strstr(err, "steps[0].Bogus: unknown key"));
    sdx_value_destroy(&v);
}

typedef struct {
    const char *id[2];
    const sdx_value_t *data[2];
} s_replies_t;

static const sdx_value_t *s_lookup(void *ud, const char *id)
{
    s_replies_t *r = ud;
    for (int i = 0; i < 2; i++)
        if (r->id[i] && !strcmp(r->id[i], id))
            return r->data[i];
    return NULL;
}

static void t_request(void)
{
    char err[1024];
    workflow_t *w = s_text("id: r\nsteps:\n"
                           "  - {id: enc, type: conditioning, operation: encode_prompt}\n"
                           "  - {id: gen, type: inference, operation: generate}\n"
                           "  - id: fin\n    type: postprocessing\n    operation: finalize\n"
                           "    parameters: {format: png, prompt: mine, hyperparameters: {x: 1}}\n"
                           "    inputs:\n"
                           "      \"*\": ${config}\n"
                           "      embeddings: ${steps.enc.tensors}\n"
                           "      image: ${steps.gen.images[1].image}\n"
                           "      hyperparameters.seed: ${steps.gen.seed}\n"
                           "      meta.deep.w: ${config.dimensions.width}\n"
                           "      all: ${steps.gen}\n",
                           err, sizeof err);
    CHECK(w != NULL);
    if (!w) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    sdx_value_t *config = s_json("{\"prompt\": \"a cat\", \"steps\": 30, "
                                 "\"dimensions\": {\"width\": 1024}}");
    sdx_value_t *enc = s_json("{\"tensors\": {\"prompt_embeds\": {\"dtype\": \"float16\"}}}");
    sdx_value_t *gen = s_json("{\"seed\": 7, \"images\": [{\"image\": \"AAA\"}, "
                              "{\"image\": \"BBB\"}]}");
    s_replies_t r = {{"enc", "gen"}, {enc, gen}};
    const wf_step_t *fin = &w->steps[2];
    sdx_value_t *req = wf_step_request(fin, config, s_lookup, &r, err, sizeof err);
    CHECK(req != NULL);
    if (!req)
        fprintf(stderr, "  %s\n", err);
    if (req) {
        CHECK_STR(sdx_map_str(req, "format", NULL), "png");
        CHECK_STR(sdx_map_str(req, "prompt", NULL), "a cat"); /* the reference wins */
        CHECK(sdx_map_int(req, "steps", 0) == 30);
        CHECK_STR(sdx_map_str(req, "image", NULL), "BBB");
        CHECK(sdx_map_int(sdx_map_get(req, "hyperparameters"), "seed", 0) == 7);
        CHECK(sdx_map_int(sdx_map_get(req, "hyperparameters"), "x", 0) == 1);
        CHECK(sdx_map_int(sdx_map_get_path(req, "meta.deep"), "w", 0) == 1024);
        CHECK_STR(sdx_map_str(sdx_map_get_path(req, "embeddings.prompt_embeds"), "dtype", NULL),
                  "float16");
        CHECK(sdx_value_equal(sdx_map_get(req, "all"), gen));
        CHECK(sdx_map_get(req, "all") != gen); /* a clone */
    }
    sdx_value_destroy(&req);
    /* the caller's trees and the definition are untouched */
    CHECK(sdx_map_len(config) == 3);
    CHECK(sdx_map_len(fin->parameters) == 3);
    CHECK_STR(sdx_map_str(fin->parameters, "prompt", NULL), "mine");

    /* missing key, index out of range, no reply, no config */
    sdx_value_t *enc2 = s_json("{\"tensorz\": {}}");
    s_replies_t r2 = {{"enc", "gen"}, {enc2, gen}};
    req = wf_step_request(fin, config, s_lookup, &r2, err, sizeof err);
    CHECK(req == NULL);
    CHECK_STR(err, "steps.fin: input embeddings: ${steps.enc.tensors}: no key tensors");
    sdx_value_t *gen2 = s_json("{\"seed\": 7, \"images\": [{\"image\": \"AAA\"}]}");
    s_replies_t r3 = {{"enc", "gen"}, {enc, gen2}};
    req = wf_step_request(fin, config, s_lookup, &r3, err, sizeof err);
    CHECK(req == NULL && strstr(err, "steps.fin: input image: ${steps.gen.images[1].image}: "
                                     "images has no item [1] (1 items)"));
    s_replies_t r4 = {{"enc", NULL}, {enc, NULL}};
    req = wf_step_request(fin, config, s_lookup, &r4, err, sizeof err);
    CHECK(req == NULL && strstr(err, "step gen has no reply data"));
    req = wf_step_request(fin, NULL, s_lookup, &r, err, sizeof err);
    CHECK(req == NULL && strstr(err, "input *: ${config}: no configuration"));
    sdx_value_t *config2 = s_json("{\"prompt\": \"a\", \"dimensions\": {}}");
    req = wf_step_request(fin, config2, s_lookup, &r, err, sizeof err);
    CHECK(req == NULL && strstr(err, "${config.dimensions.width}: no key width in dimensions"));
    sdx_value_destroy(&req);
    sdx_value_destroy(&config2);
    sdx_value_destroy(&gen2);
    sdx_value_destroy(&enc2);

    /* wf_to_value: the DTO keys */
    sdx_value_t *tv = wf_to_value(w);
    CHECK(tv != NULL);
    if (tv) {
        static const char *keys[] = {"workflow_id",           "name",
                                     "description",           "steps",
                                     "resource_requirements", "estimated_duration",
                                     "estimated_duration_ms", "file"};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
            CHECK(sdx_map_get(tv, keys[i]) != NULL);
        CHECK_STR(sdx_map_str(tv, "workflow_id", NULL), "r");
        CHECK_STR(sdx_map_str(tv, "estimated_duration", NULL), "00:00:00");
        CHECK_STR(sdx_map_str(tv, "file", NULL), "t.yaml");
        const sdx_value_t *s2 = sdx_array_at(sdx_map_get(tv, "steps"), 2);
        static const char *skeys[] = {"id",           "type",       "operation",
                                      "message_type", "parameters", "required_models",
                                      "inputs",       "retry",      "timeout_ms"};
        for (size_t i = 0; i < sizeof skeys / sizeof *skeys; i++)
            CHECK(sdx_map_get(s2, skeys[i]) != NULL);
        CHECK_STR(sdx_map_str(sdx_map_get(s2, "inputs"), "image", NULL),
                  "${steps.gen.images[1].image}");
        CHECK_STR(sdx_map_str(s2, "message_type", NULL), "postprocessing.finalize");
    }
    sdx_value_destroy(&tv);

    /* wf_clone round trip */
    workflow_t *c = wf_clone(w);
    CHECK(c != NULL);
    sdx_value_t *a = wf_to_value(w), *b = wf_to_value(c);
    CHECK(a && b && sdx_value_equal(a, b));
    CHECK(c && c->steps != w->steps && c->steps[2].parameters != w->steps[2].parameters);
    sdx_value_destroy(&a);
    sdx_value_destroy(&b);
    wf_destroy(&c);

    /* wf_to_definition reads back (what a session stores) */
    sdx_value_t *def = wf_to_definition(w);
    char derr[512] = "";
    workflow_t *back = def ? wf_from_value(def, s_cat, NULL, NULL, derr, sizeof derr) : NULL;
    if (!back)
        fprintf(stderr, "  wf_to_definition -> wf_from_value: %s\n", derr);
    CHECK(back != NULL);
    a = wf_to_value(w);
    b = back ? wf_to_value(back) : NULL;
    if (b)
        sdx_map_set_str(b, "file", w->file); /* the one key a definition leaves out */
    CHECK(a && b && sdx_value_equal(a, b));
    sdx_value_destroy(&a);
    sdx_value_destroy(&b);
    sdx_value_destroy(&def);
    wf_destroy(&back);

    sdx_value_destroy(&config);
    sdx_value_destroy(&enc);
    sdx_value_destroy(&gen);
    wf_destroy(&w);
}

/* wf_step_request_move: bins read by one input move (the reply keeps an
   empty bin, the request has the very buffer); a part two inputs read is
   copied, and the configuration is never moved from. */
static void t_move(void)
{
    char err[1024];
    workflow_t *w = s_text("id: m\nsteps:\n"
                           "  - {id: a, type: test, operation: echo}\n"
                           "  - {id: b, type: test, operation: echo}\n"
                           "  - id: c\n    type: test\n    operation: echo\n"
                           "    inputs:\n"
                           "      one: ${steps.a.big}\n"
                           "      twice: ${steps.b.img}\n"
                           "      again: ${steps.b.img}\n"
                           "      conf: ${config.blob}\n",
                           err, sizeof err);
    CHECK(w != NULL);
    if (!w) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    uint8_t bytes[64];
    memset(bytes, 7, sizeof bytes);
    sdx_value_t *a = sdx_value_map_new(), *b = sdx_value_map_new(), *config = sdx_value_map_new();
    sdx_map_set(a, "big", sdx_value_bin_new(bytes, sizeof bytes));
    sdx_map_set(b, "img", sdx_value_bin_new(bytes, 16));
    sdx_map_set(config, "blob", sdx_value_bin_new(bytes, 8));
    const uint8_t *big_ptr = sdx_map_get(a, "big")->u.bin.ptr;
    s_replies_t r = {{"a", "b"}, {a, b}};
    sdx_value_t *req = wf_step_request_move(&w->steps[2], config, s_lookup, &r, true, err,
                                            sizeof err);
    CHECK(req != NULL);
    if (req) {
        const sdx_value_t *one = sdx_map_get(req, "one");
        CHECK(one && one->type == SDX_BIN && one->u.bin.len == 64 && one->u.bin.ptr == big_ptr);
        CHECK(sdx_map_get(a, "big")->u.bin.len == 0); /* moved out of the reply */
        CHECK(sdx_map_get(req, "twice")->u.bin.len == 16 &&
              sdx_map_get(req, "again")->u.bin.len == 16);
        CHECK(sdx_map_get(b, "img")->u.bin.len == 16); /* read twice: copied */
        CHECK(sdx_map_get(req, "conf")->u.bin.len == 8 &&
              sdx_map_get(config, "blob")->u.bin.len == 8); /* config: copied */
    }
    sdx_value_destroy(&req);
    sdx_value_destroy(&a);
    sdx_value_destroy(&b);
    sdx_value_destroy(&config);
    wf_destroy(&w);
}

static void t_durations(void)
{
    static const struct {
        const char *text;
        int64_t ms;
        const char *back;
    } cases[] = {
        {"00:00:20", 20000, "00:00:20"},        {"01:02:03", 3723000, "01:02:03"},
        {"1.02:00:00", 93600000, "1.02:00:00"}, {"00:00:01.5", 1500, "00:00:01.5000000"},
        {"00:10", 600000, "00:10:00"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char yaml[256], err[512];
        snprintf(yaml, sizeof yaml,
                 "id: d\nestimated_duration: \"%s\"\nsteps:\n  - {type: device, operation: "
                 "status}\n",
                 cases[i].text);
        workflow_t *w = s_text(yaml, err, sizeof err);
        CHECK(w && w->estimated_duration_ms == cases[i].ms);
        sdx_value_t *v = w ? wf_to_value(w) : NULL;
        CHECK_STR(sdx_map_str(v, "estimated_duration", NULL), cases[i].back);
        sdx_value_destroy(&v);
        wf_destroy(&w);
    }
}

typedef struct {
    int n;
    char files[8][256];
    int lines[8];
    char reasons[8][512];
} s_reports_t;

static void s_report(void *ud, const char *file, int line, const char *reason)
{
    s_reports_t *r = ud;
    if (r->n < 8) {
        snprintf(r->files[r->n], sizeof r->files[0], "%s", file);
        r->lines[r->n] = line;
        snprintf(r->reasons[r->n], sizeof r->reasons[0], "%s", reason);
    }
    r->n++;
}

static void s_write(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void t_dir(void)
{
    char dir[] = "/tmp/test_workflow_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    s_write(dir, "a.yaml", "id: one\nsteps:\n  - {type: device, operation: status}\n");
    s_write(dir, "b.yml", "id: two\nsteps:\n  - {type: model, operation: list}\n");
    s_write(dir, "c.yaml", "id: one\nsteps:\n  - {type: model, operation: list}\n");
    s_write(dir, "d.yaml", "id: three\nsteps:\n  - {type: nope, operation: list}\n");
    s_write(dir, "notes.txt", "not a workflow");
    s_reports_t rep = {0};
    wf_set_t set = {0};
    char err[512];
    int refused = wf_load_dir(dir, s_cat, NULL, NULL, s_report, &rep, &set, err, sizeof err);
    CHECK(refused == 2);
    CHECK(rep.n == 2);
    CHECK(set.n == 2);
    CHECK(wf_set_find(&set, "one") && strstr(wf_set_find(&set, "one")->file, "/a.yaml"));
    CHECK(wf_set_find(&set, "two") != NULL);
    CHECK(wf_set_find(&set, "three") == NULL);
    CHECK(strstr(rep.files[0], "/c.yaml") && rep.lines[0] == 1 &&
          strstr(rep.reasons[0], "duplicate workflow id \"one\""));
    CHECK(strstr(rep.files[1], "/d.yaml") && rep.lines[1] == 3 &&
          strstr(rep.reasons[1], "unknown domain \"nope\""));
    /* the set must be empty */
    CHECK(wf_load_dir(dir, s_cat, NULL, NULL, NULL, NULL, &set, err, sizeof err) == -1);
    wf_set_clear(&set);
    static const char *names[] = {"a.yaml", "b.yml", "c.yaml", "d.yaml", "notes.txt"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    CHECK(wf_load_dir("/nonexistent/dir", s_cat, NULL, NULL, NULL, NULL, &set, err, sizeof err) ==
          -1);
}

int main(void)
{
    char err[512];
    sdx_catalog_t *cat = sdx_catalog_load_default(err, sizeof err);
    CHECK(cat != NULL);
    if (!cat) {
        fprintf(stderr, "%s\n", err);
        return t_done();
    }
    CHECK(sdx_actions_load_default(err, sizeof err) == 0);
    s_cat = cat;
    t_shipped();
    t_refused();
    t_accepted();
    t_inline();
    t_request();
    t_move();
    t_durations();
    t_dir();
    sdx_catalog_destroy(&cat);
    return t_done();
}
