/*  test_schema.c - the schema-driven validator (common/sdx_schema.c) and the
    semantic checks (common/sdx_semantic.c), run directly on message trees:
    loading schemas/, the example, defaults, aliases, every bad request of
    bad_requests.json (native part), path confinement with real symlinks,
    images, and the reply schemas against replies built by sdx_envelope. */
#include "schema_test_util.h"

#include "sdx_envelope.h"
#include "sdx_schema.h"
#include "sdx_semantic.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static sdx_schema_set_t *g_set;

static sdx_value_t *s_validate_text(const char *text, const sdx_semantic_t *sem, int *rc,
                                    sdx_schema_error_t *err)
{
    sdx_value_t *v = t_json(text);
    if (!v) {
        *rc = -2;
        return NULL;
    }
    *rc = sdx_schema_check_request(g_set, sem, "inference.generate", &v, err);
    return v;
}

static void test_load(void)
{
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/schemas", t_source_root());
    g_set = sdx_schema_set_load(path, err, sizeof err);
    t_check(g_set != NULL, "load schemas/ (%s)", g_set ? "ok" : err);
    if (!g_set)
        return;
    t_check(sdx_schema_set_size(g_set) >= 6, "schemas/ has the request, C# and reply schemas (%zu)",
            sdx_schema_set_size(g_set));
    t_check(sdx_schema_set_for(g_set, "inference.generate") != NULL,
            "inference.generate has a schema");
    t_check(sdx_schema_set_for(g_set, "inference.generate") ==
                sdx_schema_set_get(g_set, "prompt_submission_schema.json"),
            "inference.generate -> prompt_submission_schema.json");
    t_check(sdx_schema_set_csharp_for(g_set, "inference.generate") != NULL,
            "inference.generate has a C# mapping");
    t_check(sdx_schema_set_for(g_set, "device.status") == NULL, "device.status has no schema");
    sdx_value_t *v = t_json("{}");
    sdx_schema_error_t e;
    t_check(sdx_schema_check_request(g_set, NULL, "device.status", &v, &e) == 1,
            "a type without schema is not checked");
    sdx_value_destroy(&v);

    /* a schema using a keyword outside the subset must not load */
    char dir[] = "/tmp/sdx-schema-test-XXXXXX";
    if (mkdtemp(dir)) {
        snprintf(path, sizeof path, "%s/bad.json", dir);
        FILE *f = fopen(path, "w");
        fputs("{\"$schema\":\"x\",\"type\":\"object\",\"properties\":{\"a\":{\"oneOf\":[]}}}", f);
        fclose(f);
        sdx_schema_set_t *bad = sdx_schema_set_load(dir, err, sizeof err);
        t_check(bad == NULL && strstr(err, "oneOf"), "unsupported keyword refuses to load (%s)",
                err);
        sdx_schema_set_destroy(&bad);
        unlink(path);
        snprintf(path, sizeof path, "%s/broken.json", dir);
        f = fopen(path, "w");
        fputs("{\"type\":", f);
        fclose(f);
        bad = sdx_schema_set_load(dir, err, sizeof err);
        t_check(bad == NULL, "broken JSON schema refuses to load (%s)", err);
        unlink(path);
        rmdir(dir);
    }
}

static void test_example_and_defaults(void)
{
    size_t len;
    char *text = t_read("schemas/example_prompt.json", &len);
    t_check(text != NULL, "read schemas/example_prompt.json");
    if (!text)
        return;
    sdx_schema_error_t e;
    int rc;
    sdx_value_t *v = s_validate_text(text, NULL, &rc, &e);
    sdx_value_t *orig = t_json(text);
    free(text);
    t_check(rc == 0, "example_prompt.json is valid (%s: %s)", e.field, e.message);
    t_check(sdx_value_equal(v, orig), "example_prompt.json is complete: validation adds nothing");
    t_check(strcmp(sdx_map_str(v, "model_name", ""), "cyberrealisticPony_v125") == 0,
            "example uses cyberrealisticPony_v125");
    t_check(sdx_array_len(sdx_map_get_path(v, "lora.models")) == 1, "example has a LoRA");
    sdx_value_destroy(&v);
    sdx_value_destroy(&orig);

    v = s_validate_text("{\"prompt\":\"a cat\"}", NULL, &rc, &e);
    t_check(rc == 0, "minimal request is valid");
    struct {
        const char *path;
        const char *want; /* JSON of the expected default */
    } d[] = {
        {"negative_prompt", "\"\""},
        {"model_name", "\"sd_xl_base_1.0\""},
        {"refiner_model", "null"},
        {"vae_model", "null"},
        {"scheduler", "\"EulerDiscreteScheduler\""},
        {"use_karras_sigmas", "false"},
        {"hyperparameters.num_inference_steps", "30"},
        {"hyperparameters.guidance_scale", "7.5"},
        {"hyperparameters.seed", "-1"},
        {"dimensions.width", "1024"},
        {"dimensions.height", "1024"},
        {"lora.models", "[]"},
        {"controlnet", "[]"},
        {"prompt_attention", "\"none\""},
        {"precision.dtype", "\"fp16\""},
        {"precision.vae_tiling", "false"},
        {"output.format", "\"png\""},
        {"output.quality", "95"},
        {"output.upscale", "null"},
        {"batch.size", "1"},
        {"metadata.priority", "\"normal\""},
        {"metadata.timeout", "300"},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        /* read through the list: the path helper does not index arrays */
        sdx_value_t *want = t_json(d[i].want);
        const sdx_value_t *got = sdx_map_get_path(v, d[i].path);
        t_check(got && want && sdx_value_equal(got, want), "default %s = %s", d[i].path, d[i].want);
        sdx_value_destroy(&want);
    }
    sdx_value_destroy(&v);

    /* integral floats become integers where the schema says integer */
    v = s_validate_text("{\"prompt\":\"x\",\"hyperparameters\":{\"num_inference_steps\":30.0}}",
                        NULL, &rc, &e);
    const sdx_value_t *steps = sdx_map_get_path(v, "hyperparameters.num_inference_steps");
    t_check(rc == 0 && steps && steps->type == SDX_INT && steps->u.i == 30,
            "30.0 steps becomes integer 30");
    sdx_value_destroy(&v);
}

static void test_aliases(void)
{
    struct {
        const char *sent, *want;
        int karras;
    } a[] = {
        {"dpm++_2m", "DPMSolverMultistepScheduler", 0},
        {"DPMSolverMultistep", "DPMSolverMultistepScheduler", 0},
        {"dpmsolvermultistepscheduler", "DPMSolverMultistepScheduler", 0},
        {"euler_a", "EulerAncestralDiscreteScheduler", 0},
        {"Euler a", "EulerAncestralDiscreteScheduler", 0},
        {"Euler", "EulerDiscreteScheduler", 0},
        {"DPM++ 2M Karras", "DPMSolverMultistepScheduler", 1},
        {"dpm++_2m_karras", "DPMSolverMultistepScheduler", 1},
        {"DPM++ 2S Karras", "DPMSolverSinglestepScheduler", 1},
        {"UniPC", "UniPCMultistepScheduler", 0},
        {"LCM", "LCMScheduler", 0},
        {"DDIM", "DDIMScheduler", 0},
        {"PLMS", "PNDMScheduler", 0},
    };
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "{\"prompt\":\"x\",\"scheduler\":\"%s\"}", a[i].sent);
        sdx_schema_error_t e;
        int rc;
        sdx_value_t *v = s_validate_text(text, NULL, &rc, &e);
        t_check(rc == 0 && strcmp(sdx_map_str(v, "scheduler", ""), a[i].want) == 0 &&
                    sdx_map_bool(v, "use_karras_sigmas", false) == (a[i].karras != 0),
                "scheduler alias '%s' -> %s%s", a[i].sent, a[i].want,
                a[i].karras ? " + karras" : "");
        sdx_value_destroy(&v);
    }
    /* every scheduler the schema offers is accepted as is; at least 10 */
    const sdx_value_t *en = sdx_map_get_path(sdx_schema_set_for(g_set, "inference.generate"),
                                             "properties.scheduler.enum");
    t_check(sdx_array_len(en) >= 10, "the schema offers %zu schedulers (>= 10)", sdx_array_len(en));
    size_t ok = 0;
    for (size_t i = 0; i < sdx_array_len(en); i++) {
        char text[256];
        snprintf(text, sizeof text, "{\"prompt\":\"x\",\"scheduler\":\"%s\"}",
                 sdx_array_at(en, i)->u.str.ptr);
        sdx_schema_error_t e;
        int rc;
        sdx_value_t *v = s_validate_text(text, NULL, &rc, &e);
        ok += rc == 0;
        sdx_value_destroy(&v);
    }
    t_check(ok == sdx_array_len(en), "all %zu schedulers accepted", ok);

    sdx_schema_error_t e;
    int rc;
    sdx_value_t *v = s_validate_text("{\"prompt\":\"x\",\"output\":{\"format\":\"JPG\"},"
                                     "\"precision\":{\"dtype\":\"float16\"}}",
                                     NULL, &rc, &e);
    t_check(rc == 0 && strcmp(sdx_map_str(sdx_map_get(v, "output"), "format", ""), "jpeg") == 0,
            "format JPG -> jpeg");
    t_check(rc == 0 && strcmp(sdx_map_str(sdx_map_get(v, "precision"), "dtype", ""), "fp16") == 0,
            "dtype float16 -> fp16");
    sdx_value_destroy(&v);
}

/* Every scheduler value, alias and alias set, sent with 0..N sibling fields
   around it, so that the alias set's insertion (use_karras_sigmas) meets the
   request map at every fill level, exactly full included. The validator once
   wrote through a slot pointer into the map after that insertion had moved
   it (realloc): ASan and valgrind catch any such write here. The tree that
   comes back must be whole: every key a string, the scheduler canonical. */
static bool s_tree_sane(const sdx_value_t *v, int depth)
{
    if (!v || depth > 64)
        return false;
    if (v->type == SDX_MAP) {
        for (size_t i = 0; i < v->u.map.len; i++)
            if (!v->u.map.items[i].key || !s_tree_sane(v->u.map.items[i].val, depth + 1))
                return false;
    } else if (v->type == SDX_ARRAY) {
        for (size_t i = 0; i < v->u.arr.len; i++)
            if (!s_tree_sane(v->u.arr.items[i], depth + 1))
                return false;
    }
    return true;
}

static void test_alias_fill_levels(void)
{
    const sdx_value_t *sch = sdx_map_get_path(sdx_schema_set_for(g_set, "inference.generate"),
                                              "properties.scheduler");
    const sdx_value_t *en = sdx_map_get(sch, "enum");
    const sdx_value_t *al = sdx_map_get(sch, "x-aliases");
    const sdx_value_t *sets = sdx_map_get(sch, "x-alias-sets");
    t_check(sdx_map_len(sets) >= 5, "the schema has %zu alias sets (>= 5)", sdx_map_len(sets));
    /* valid siblings, before and after "scheduler" in the schema's order */
    static const char *sib[] = {
        "\"negative_prompt\":\"n\"", "\"refiner_model\":null",   "\"hyperparameters\":{}",
        "\"dimensions\":{}",          "\"lora\":{}",               "\"controlnet\":[]",
        "\"textual_inversions\":[]",   "\"clip_skip\":0",           "\"precision\":{}",
        "\"init_image\":null",         "\"output\":{}",             "\"batch\":{}",
        "\"metadata\":{}",             "\"prompt_attention\":\"none\"",
    };
    const size_t nsib = sizeof sib / sizeof sib[0];
    size_t runs = 0, good = 0;
    const sdx_value_t *lists[3] = {en, al, sets};
    for (int l = 0; l < 3; l++) {
        const sdx_value_t *list = lists[l];
        size_t n = list->type == SDX_MAP ? list->u.map.len : sdx_array_len(list);
        for (size_t i = 0; i < n; i++) {
            const char *name =
                list->type == SDX_MAP ? list->u.map.items[i].key : sdx_array_at(list, i)->u.str.ptr;
            bool karras = sdx_map_get(sets, name) != NULL;
            for (size_t k = 0; k <= nsib; k++) {
                char text[2048];
                size_t used = (size_t)snprintf(text, sizeof text, "{\"prompt\":\"x\"");
                for (size_t j = 0; j < k; j++)
                    used += (size_t)snprintf(text + used, sizeof text - used, ",%s", sib[j]);
                snprintf(text + used, sizeof text - used, ",\"scheduler\":\"%s\"}", name);
                sdx_schema_error_t e;
                int rc;
                sdx_value_t *v = s_validate_text(text, NULL, &rc, &e);
                const char *got = sdx_map_str(v, "scheduler", "");
                bool canon = false;
                for (size_t c = 0; c < sdx_array_len(en); c++)
                    canon = canon || strcmp(sdx_array_at(en, c)->u.str.ptr, got) == 0;
                bool ok = rc == 0 && s_tree_sane(v, 0) && canon &&
                          (!karras || sdx_map_bool(v, "use_karras_sigmas", false));
                if (!ok)
                    t_check(false, "scheduler '%s' with %zu siblings: rc %d, got '%s' (%s: %s)",
                            name, k, rc, got, e.field, e.message);
                good += ok;
                runs++;
                sdx_value_destroy(&v);
            }
        }
    }
    t_check(good == runs && runs > 500, "%zu of %zu scheduler names x fill levels validate whole",
            good, runs);
}

static void test_messages(void)
{
    sdx_schema_error_t e;
    int rc;
    sdx_value_t *v = s_validate_text(
        "{\"prompt\":\"x\",\"hyperparameters\":{\"guidance_scale\":45}}", NULL, &rc, &e);
    t_check(rc == -1 && strcmp(e.field, "hyperparameters.guidance_scale") == 0 &&
                strcmp(e.message, "must be <= 30, got 45") == 0,
            "guidance 45: field %s, message '%s'", e.field, e.message);
    sdx_value_destroy(&v);
    v = s_validate_text("{\"prompt\":\"x\",\"scheduler\":\"warp9\"}", NULL, &rc, &e);
    t_check(rc == -1 && strstr(e.message, "'warp9'") &&
                strstr(e.message, "DPMSolverMultistepScheduler") &&
                strstr(e.message, "EulerAncestralDiscreteScheduler"),
            "unknown scheduler lists the valid ones: %s", e.message);
    sdx_value_destroy(&v);
    v = s_validate_text("{\"prompt\":\"x\",\"bogus\":1}", NULL, &rc, &e);
    t_check(rc == -1 && strstr(e.message, "negative_prompt"),
            "unknown field lists the accepted ones: %s", e.message);
    sdx_value_destroy(&v);
}

/* Run every native case of bad_requests.json. */
static void test_bad_requests(const sdx_semantic_t *sem_1m)
{
    size_t len;
    char *text = t_read("tests/schema/bad_requests.json", &len);
    char err[256];
    sdx_value_t *all = text ? sdx_json_decode(text, len, err, sizeof err) : NULL;
    free(text);
    t_check(all != NULL, "read tests/schema/bad_requests.json");
    const sdx_value_t *cases = sdx_map_get(all, "native");
    size_t n = sdx_array_len(cases), good = 0;
    for (size_t i = 0; i < n; i++) {
        const sdx_value_t *c = sdx_array_at(cases, i);
        sdx_value_t *data = sdx_value_clone(sdx_map_get(c, "data"));
        t_expand(&data);
        const char *needs = sdx_map_str(c, "needs", NULL);
        sdx_schema_error_t e;
        int rc =
            sdx_schema_check_request(g_set, needs ? sem_1m : NULL, "inference.generate", &data, &e);
        const char *wf = sdx_map_str(c, "field", ""), *wr = sdx_map_str(c, "rule", "");
        bool ok = rc == -1 && strcmp(e.field, wf) == 0 && strcmp(e.rule, wr) == 0 && e.message[0];
        good += ok;
        t_check(ok, "bad #%zu %s -> %s [%s]: got rc %d, %s [%s] %s", i, sdx_map_str(c, "name", ""),
                wf, wr, rc, e.field, e.rule, e.message);
        sdx_value_destroy(&data);
    }
    t_check(n >= 60, "at least 60 bad native requests (%zu, %zu rejected as expected)", n, good);
    sdx_value_destroy(&all);
}

static void s_mkdir(const char *base, const char *rel)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    mkdir(p, 0755);
}

static void test_semantic(void)
{
    char dir[] = "/tmp/sdx-sem-test-XXXXXX";
    if (!mkdtemp(dir)) {
        t_check(0, "mkdtemp");
        return;
    }
    s_mkdir(dir, "models");
    s_mkdir(dir, "models/sdxl");
    s_mkdir(dir, "loras");
    s_mkdir(dir, "outputs");
    char p[4096], p2[4096];
    snprintf(p, sizeof p, "%s/loras/evil", dir);
    t_check(symlink("/etc", p) == 0, "symlink loras/evil -> /etc");
    snprintf(p, sizeof p, "%s/loras/inside", dir);
    snprintf(p2, sizeof p2, "%s/models/sdxl", dir);
    t_check(symlink(p2, p) != 0 || 1, "symlink loras/inside -> models/sdxl");
    snprintf(p, sizeof p, "%s/loras/good.safetensors", dir);
    FILE *f = fopen(p, "w");
    if (f)
        fclose(f);

    sdx_semantic_t *sem = sdx_semantic_new();
    char r[4096];
    snprintf(r, sizeof r, "%s/models", dir);
    t_check(sdx_semantic_set_root(sem, "models", r) == 0, "set models root");
    snprintf(r, sizeof r, "%s/loras", dir);
    t_check(sdx_semantic_set_root(sem, "loras", r) == 0, "set loras root");
    snprintf(r, sizeof r, "%s/outputs", dir);
    t_check(sdx_semantic_set_root(sem, "outputs", r) == 0, "set outputs root");
    t_check(sdx_semantic_set_root(sem, "vaes", "/nonexistent/vaes") == -1, "missing root refused");

    char msg[512];
    struct {
        const char *kind, *name;
        int ok;
    } c[] = {
        {"loras", "good.safetensors", 1},
        {"loras", "not_there_yet", 1},
        {"loras", "sub/dir/new", 1},
        {"loras", "evil/passwd", 0},
        {"loras", "evil/not_there", 0},
        {"loras", "evil", 0},
        {"loras", "inside/x", 0}, /* another root is still outside this one */
        {"loras", "../models/sdxl", 0},
        {"loras", "/etc/passwd", 0},
        {"models", "sdxl", 1},
        {"models", "stabilityai/sdxl-refiner", 1},
        {"outputs", "outputs/", 1},
        {"outputs", "a/b/c.png", 1},
        {"outputs", "../x.png", 0},
        {"vaes", "vae", 1},
        {"vaes", "/abs/vae", 0},
        {"vaes", "a/../../b", 0},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        msg[0] = '\0';
        int rc = sdx_semantic_check_path(sem, c[i].kind, c[i].name, msg, sizeof msg);
        t_check((rc == 0) == (c[i].ok != 0), "path %s '%s' %s (%s)", c[i].kind, c[i].name,
                c[i].ok ? "accepted" : "refused", msg);
    }
    /* an absolute path inside the root is fine */
    snprintf(p, sizeof p, "%s/loras/good.safetensors", dir);
    t_check(sdx_semantic_check_path(sem, "loras", p, msg, sizeof msg) == 0,
            "absolute path inside the root accepted");
    /* through the validator: the symlink escape is reported on the field */
    sdx_value_t *v =
        t_json("{\"prompt\":\"x\",\"lora\":{\"models\":[{\"name\":\"evil/shadow\"}]}}");
    sdx_schema_error_t e;
    int rc = sdx_schema_check_request(g_set, sem, "inference.generate", &v, &e);
    t_check(rc == -1 && strcmp(e.field, "lora.models[0].name") == 0 && strstr(e.message, "symlink"),
            "validator reports symlink escape: %s %s", e.field, e.message);
    sdx_value_destroy(&v);

    /* images: base64 -> bin, data URI, limits */
    v = t_json("{\"prompt\":\"x\",\"init_image\":\"data:image/png;base64,iVBORw0KGgo=\"}");
    rc = sdx_schema_check_request(g_set, sem, "inference.generate", &v, &e);
    const sdx_value_t *img = sdx_map_get(v, "init_image");
    t_check(rc == 0 && img && img->type == SDX_BIN && img->u.bin.len == 8 &&
                memcmp(img->u.bin.ptr, "\x89PNG\r\n\x1a\n", 8) == 0,
            "data: URI image decoded to 8 bytes of bin");
    sdx_value_destroy(&v);
    sdx_semantic_set_max_image_bytes(sem, 4);
    v = t_json("{\"prompt\":\"x\",\"init_image\":\"iVBORw0KGgo=\"}");
    rc = sdx_schema_check_request(g_set, sem, "inference.generate", &v, &e);
    t_check(rc == -1 && strcmp(e.field, "init_image") == 0 && strstr(e.message, "over the limit"),
            "image over the configured limit: %s", e.message);
    sdx_value_destroy(&v);
    /* pixels: configured limit below the schema's */
    sdx_semantic_set_max_pixels(sem, 1024 * 1024);
    v = t_json("{\"prompt\":\"x\",\"dimensions\":{\"width\":1024,\"height\":1032}}");
    rc = sdx_schema_check_request(g_set, sem, "inference.generate", &v, &e);
    t_check(rc == -1 && strcmp(e.field, "dimensions") == 0 && strstr(e.message, "1048576"),
            "pixels over the configured limit: %s", e.message);
    sdx_value_destroy(&v);
    sdx_semantic_destroy(&sem);
    t_check(sem == NULL, "destroy clears the pointer");

    snprintf(p, sizeof p, "rm -rf '%s'", dir);
    if (system(p) != 0)
        printf("warning: could not remove %s\n", dir);
}

static void test_reply_schemas(void)
{
    const sdx_value_t *ok_schema = sdx_schema_set_get(g_set, "generation_reply_schema.json");
    const sdx_value_t *err_schema = sdx_schema_set_get(g_set, "error_reply_schema.json");
    t_check(ok_schema && err_schema, "reply schemas present");
    if (!ok_schema || !err_schema)
        return;
    sdx_value_t *data = t_json("{\"images\":[{\"format\":\"png\",\"width\":1024,\"height\":1024,"
                               "\"seed\":42}],\"model_name\":\"m\"}");
    sdx_value_t *img = sdx_array_at(sdx_map_get(data, "images"), 0);
    sdx_map_set(img, "image", sdx_value_bin_new("\x89PNG", 4));
    sdx_value_t *reply = sdx_reply_ok("r-1", "inference.generate", data, NULL);
    sdx_schema_error_t e;
    t_check(reply && sdx_schema_validate(ok_schema, &reply, NULL, &e) == 0,
            "sdx_reply_ok matches generation_reply_schema.json (%s %s)", e.field, e.message);
    sdx_value_destroy(&reply);
    sdx_value_t *ev = sdx_error_value(SDX_ERR_INVALID_REQUEST, "hyperparameters.guidance_scale",
                                      "must be <= 30, got 45");
    reply = sdx_reply_error("r-2", "inference.generate", ev, NULL);
    t_check(reply && sdx_schema_validate(err_schema, &reply, NULL, &e) == 0,
            "sdx_reply_error matches error_reply_schema.json (%s %s)", e.field, e.message);
    sdx_value_destroy(&reply);
}

/* $SDXL_SCHEMAS_DIR set to a missing folder is an error naming it, not a
   silent fallback to the source tree's schemas. */
static void test_schemas_dir_env(void)
{
    const char *old = getenv("SDXL_SCHEMAS_DIR");
    char *saved = old ? strdup(old) : NULL;
    char err[512] = "";
    setenv("SDXL_SCHEMAS_DIR", "/nonexistent/sdxl-schemas", 1);
    sdx_schema_set_t *s = sdx_schema_set_load_default(err, sizeof err);
    t_check(s == NULL && strstr(err, "SDXL_SCHEMAS_DIR") &&
                strstr(err, "/nonexistent/sdxl-schemas"),
            "missing $SDXL_SCHEMAS_DIR refused with a clear message (%s)", err);
    sdx_schema_set_destroy(&s);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/schemas", t_source_root());
    setenv("SDXL_SCHEMAS_DIR", dir, 1);
    s = sdx_schema_set_load_default(err, sizeof err);
    t_check(s != NULL && sdx_schema_set_size(s) > 0, "an existing $SDXL_SCHEMAS_DIR loads");
    sdx_schema_set_destroy(&s);
    if (saved)
        setenv("SDXL_SCHEMAS_DIR", saved, 1);
    else
        unsetenv("SDXL_SCHEMAS_DIR");
    free(saved);
}

int main(int argc, char **argv)
{
    t_verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    test_load();
    if (!g_set)
        return t_finish();
    test_example_and_defaults();
    test_aliases();
    test_alias_fill_levels();
    test_messages();
    sdx_semantic_t *sem_1m = sdx_semantic_new();
    sdx_semantic_set_max_image_bytes(sem_1m, 1024 * 1024);
    test_bad_requests(sem_1m);
    sdx_semantic_destroy(&sem_1m);
    test_semantic();
    test_reply_schemas();
    test_schemas_dir_env();
    sdx_schema_set_destroy(&g_set);
    return t_finish();
}
