/*  test_sched_schema.c - the three scheduler tables held against each other:
    the schema's accepted set (schemas/prompt_submission_schema.json:
    scheduler enum, x-aliases, x-alias-sets), the C# integer enum
    (schemas/csharp_enhanced_request.json: Scheduler.Type x-enum-order and
    x-enum-unsupported) and the engine's class and alias tables
    (sdx_scheduler.c), and the scheduler worker's config rules
    (schemas/scheduler_config_schema.json) against the keys the engine
    parses. The broker accepts only what the engine runs, an alias
    means the same class (and Karras setting) in both, and the C# numbering
    stays the C# side's: a value the engine lacks keeps its number and is
    refused, it is never dropped from the order. Needs no golden data. */
#include "sdx_scheduler.h"
#include "sdx_test.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The C# side's enum, in its declaration order (PROTOCOL.md 6). */
static const char *const CSHARP_ENUM[] = {
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
    "LCMScheduler",
};
#define N_CSHARP (sizeof CSHARP_ENUM / sizeof CSHARP_ENUM[0])

static cJSON *s_load(const char *name)
{
    const char *root = getenv("SDXL_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/schemas/%s", root ? root : ".", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    cJSON *j = NULL;
    if (buf) {
        buf[got] = '\0';
        j = cJSON_Parse(buf);
    }
    free(buf);
    return j;
}

static bool s_in_array(const cJSON *arr, const char *s)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) if (cJSON_IsString(it) && strcmp(it->valuestring, s) == 0) return true;
    return false;
}

/* The engine's class for a name and its Karras setting; NULL if refused. */
static const char *s_engine(const char *name, int *karras)
{
    sdx_scheduler_t *s = sdx_scheduler_new(name, NULL);
    if (!s)
        return NULL;
    const char *cls = sdx_scheduler_class_name(s); /* static string */
    char *cfg = sdx_scheduler_config_json(s);
    cJSON *j = cfg ? cJSON_Parse(cfg) : NULL;
    *karras = cJSON_IsTrue(cJSON_GetObjectItem(j, "use_karras_sigmas"));
    cJSON_Delete(j);
    free(cfg);
    sdx_scheduler_destroy(&s);
    return cls;
}

int main(void)
{
    cJSON *flat = s_load("prompt_submission_schema.json");
    cJSON *cs = s_load("csharp_enhanced_request.json");
    sdx_test_check(flat && cs, "both schema files load");
    if (!flat || !cs)
        return sdx_test_done();
    const cJSON *sched = cJSON_GetObjectItem(cJSON_GetObjectItem(flat, "properties"), "scheduler");
    const cJSON *en = cJSON_GetObjectItem(sched, "enum");
    const cJSON *aliases = cJSON_GetObjectItem(sched, "x-aliases");
    const cJSON *sets = cJSON_GetObjectItem(sched, "x-alias-sets");
    const cJSON *type = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cs, "properties"), "Scheduler"),
                            "properties"),
        "Type");
    const cJSON *order = cJSON_GetObjectItem(type, "x-enum-order");
    const cJSON *unsupported = cJSON_GetObjectItem(type, "x-enum-unsupported");
    sdx_test_check(cJSON_IsArray(en) && cJSON_IsObject(aliases) && cJSON_IsArray(order),
                   "scheduler enum, x-aliases and Scheduler.Type x-enum-order present");

    /* 1. every accepted class is one the engine runs, under that name */
    const cJSON *it;
    int n_enum = 0;
    cJSON_ArrayForEach(it, en)
    {
        int k;
        const char *cls = s_engine(it->valuestring, &k);
        sdx_test_check(cls && strcmp(cls, it->valuestring) == 0,
                       "schema accepts %s: the engine runs it (%s)", it->valuestring,
                       cls ? cls : sdx_last_error());
        n_enum++;
    }

    /* 2. every engine class is accepted by the schema */
    const char *names = sdx_scheduler_names();
    int n_classes = 0;
    for (const char *p = names; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)len, p);
        char *arrow = strstr(line, " -> ");
        char cls[128] = "";
        if (arrow)
            sscanf(arrow + 4, "%127s", cls);
        else
            sscanf(line, "%127s", cls);
        if (cls[0] && strstr(cls, "Scheduler")) {
            sdx_test_check(s_in_array(en, cls), "engine class %s is in the schema's enum", cls);
            n_classes++;
        }
        p = nl ? nl + 1 : NULL;
    }
    sdx_test_check(n_classes > 0, "the engine lists its names (%d class mentions)", n_classes);

    /* 3. every schema alias: an accepted class; where the engine knows the
       name too, the same class and the same Karras setting */
    cJSON_ArrayForEach(it, aliases)
    {
        const char *target = it->valuestring;
        sdx_test_check(cJSON_IsString(it) && s_in_array(en, target),
                       "schema alias '%s' -> %s, an accepted class", it->string,
                       target ? target : "?");
        int ek = 0;
        const char *ecls = s_engine(it->string, &ek);
        if (!ecls)
            continue; /* a spelling only the schema knows: it sends the class */
        const cJSON *set = cJSON_GetObjectItem(sets, it->string);
        int sk = cJSON_IsTrue(cJSON_GetObjectItem(set, "use_karras_sigmas"));
        sdx_test_check(strcmp(ecls, target) == 0 && ek == sk,
                       "alias '%s': schema %s%s, engine %s%s", it->string, target,
                       sk ? " + karras" : "", ecls, ek ? " + karras" : "");
    }
    /* names the engine refuses on purpose are not smuggled in as aliases */
    const char *refused[] = {"DPM++ SDE", "DPM++ SDE Karras", "DPMSolverSDEScheduler",
                             "DPMSolverSDE"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int k;
        bool engine = s_engine(refused[i], &k) != NULL;
        bool schema = cJSON_GetObjectItem(aliases, refused[i]) || s_in_array(en, refused[i]);
        sdx_test_check(!engine && !schema, "'%s': refused by the engine and by the schema",
                       refused[i]);
    }

    /* 4. the C# integer order is the C# side's; each value is accepted (and
       run), or declared unsupported (and then refused by both) */
    sdx_test_check(cJSON_GetArraySize(order) == (int)N_CSHARP,
                   "x-enum-order has the C# enum's %zu values (%d)", N_CSHARP,
                   cJSON_GetArraySize(order));
    for (size_t i = 0; i < N_CSHARP; i++) {
        const cJSON *o = cJSON_GetArrayItem(order, (int)i);
        const char *name = cJSON_IsString(o) ? o->valuestring : "?";
        sdx_test_check(strcmp(name, CSHARP_ENUM[i]) == 0, "C# enum %zu is %s (schema: %s)", i,
                       CSHARP_ENUM[i], name);
        int k;
        bool engine = s_engine(name, &k) != NULL;
        if (cJSON_GetObjectItem(unsupported, name))
            sdx_test_check(!engine && !s_in_array(en, name),
                           "C# %zu %s: declared unsupported, refused by schema and engine", i,
                           name);
        else
            sdx_test_check(engine && s_in_array(en, name),
                           "C# %zu %s: accepted by the schema and run by the engine", i, name);
    }
    int n_unsup = cJSON_GetArraySize(unsupported);
    sdx_test_check(n_enum + 1 == (int)N_CSHARP && n_unsup >= 1,
                   "schema enum (%d) = C# enum (%zu) minus DPMSolverSDEScheduler", n_enum,
                   N_CSHARP);

    /* 5. the config rules name exactly the keys the engine parses, with the
       engine's JSON kind among the types allowed */
    cJSON *cfg = s_load("scheduler_config_schema.json");
    const cJSON *props = cJSON_GetObjectItem(cfg, "properties");
    sdx_test_check(cJSON_IsObject(props), "scheduler_config_schema.json has properties");
    for (int i = 0; i < sdx_scheduler_key_count(); i++) {
        const char *key, *kind;
        sdx_scheduler_key_at(i, &key, &kind);
        const cJSON *type = cJSON_GetObjectItem(cJSON_GetObjectItem(props, key), "type");
        char base[16];
        snprintf(base, sizeof base, "%s", kind);
        char *br = strchr(base, '[');
        if (br) /* "number[]": an array */
            snprintf(base, sizeof base, "array");
        bool ok = (cJSON_IsString(type) && strcmp(type->valuestring, base) == 0) ||
                  (cJSON_IsArray(type) && s_in_array(type, base));
        sdx_test_check(ok, "engine key %s (%s) has a rule of that type", key, kind);
    }
    cJSON_ArrayForEach(it, props)
    {
        bool known = false;
        for (int i = 0; i < sdx_scheduler_key_count() && !known; i++) {
            const char *key, *kind;
            sdx_scheduler_key_at(i, &key, &kind);
            known = strcmp(key, it->string) == 0;
        }
        sdx_test_check(known, "config rule %s is a key the engine parses", it->string);
    }
    cJSON_Delete(cfg);
    cJSON_Delete(flat);
    cJSON_Delete(cs);
    return sdx_test_done();
}
