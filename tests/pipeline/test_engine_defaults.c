/*  test_engine_defaults - the engine's library defaults and hard limits
    against schemas/prompt_submission_schema.json, the one source of the
    request rules (issue 10). The worker and sdxl-gen pass every value from
    the schema-filled request; this test keeps sdxl_gen_params_init's
    defaults equal to the schema's (so a library user gets the fleet's image
    too) and the schema's ranges inside what sdxl_generate accepts (so a
    request the broker lets through is never an engine input error by size,
    steps or batch). Needs no golden data and no model.
    Not for: generation (test_pipeline.c, tests/integration). */
#include "sdx_schema.h"
#include "sdx_test.h"
#include "sdxl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A number of the filled request; NAN when absent. */
static double s_num(const sdx_value_t *req, const char *path)
{
    double d;
    const sdx_value_t *v = sdx_map_get_path(req, path);
    return v && sdx_value_as_double(v, &d) ? d : NAN;
}

/* A keyword of the schema of a field ("hyperparameters.num_inference_steps",
   "maximum"); NAN when absent. Walks "properties" along the dotted path. */
static double s_rule(const sdx_value_t *schema, const char *path, const char *keyword)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const sdx_value_t *node = schema;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); node && k;
         k = strtok_r(NULL, ".", &save))
        node = sdx_map_get(sdx_map_get(node, "properties"), k);
    double d;
    const sdx_value_t *v = node ? sdx_map_get(node, keyword) : NULL;
    return v && sdx_value_as_double(v, &d) ? d : NAN;
}

int main(void)
{
    char err[512];
    sdx_schema_set_t *set = sdx_schema_set_load_default(err, sizeof err);
    if (!sdx_test_check(set != NULL, "schemas load (%s)", set ? "ok" : err))
        return sdx_test_done();
    const sdx_value_t *schema = sdx_schema_set_for(set, "inference.generate");
    sdx_value_t *req = sdx_value_map_new();
    sdx_map_set_str(req, "prompt", "x");
    sdx_schema_error_t e;
    int rc = sdx_schema_check_request(set, NULL, "inference.generate", &req, &e);
    sdx_test_check(schema && rc == 0, "a bare prompt validates and is filled (%s)", e.message);

    sdxl_gen_params_t gp;
    sdxl_gen_params_init(&gp);
    static const struct {
        const char *path;
        const char *engine_field;
    } defaults[] = {
        {"hyperparameters.num_inference_steps", "steps"},
        {"hyperparameters.guidance_scale", "guidance_scale"},
        {"hyperparameters.guidance_rescale", "guidance_rescale"},
        {"batch.size", "batch"},
        {"clip_skip", "clip_skip"},
        {"hyperparameters.strength", "strength"},
    };
    double engine[] = {gp.steps,     gp.guidance_scale, gp.guidance_rescale,
                       gp.batch,     gp.clip_skip,      gp.strength};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        double want = s_num(req, defaults[i].path);
        sdx_test_check(want == engine[i], "engine default %s %g = the schema's %s default %g",
                       defaults[i].engine_field, engine[i], defaults[i].path, want);
    }
    const char *neg = sdx_map_str(req, "negative_prompt", NULL);
    sdx_test_check(neg && !*neg && gp.negative_prompt == NULL,
                   "negative prompt: the schema's \"\" is the engine's NULL (no negative prompt)");
    sdx_test_check(gp.width == 0 && gp.height == 0 && s_num(req, "dimensions.width") == 1024 &&
                       s_num(req, "dimensions.height") == 1024,
                   "size: engine 0 (the model's native size, 1024 for SDXL), schema 1024");

    /* the schema's ranges lie inside the engine's hard limits */
    static const struct {
        const char *path;
        double lo, hi; /* what sdxl_generate accepts */
    } ranges[] = {
        {"hyperparameters.num_inference_steps", 1, SDXL_MAX_STEPS},
        {"dimensions.width", 8, SDXL_MAX_SIDE},
        {"dimensions.height", 8, SDXL_MAX_SIDE},
        {"batch.size", 1, SDXL_MAX_BATCH},
        {"hyperparameters.guidance_rescale", 0, 1},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        double lo = s_rule(schema, ranges[i].path, "minimum");
        double hi = s_rule(schema, ranges[i].path, "maximum");
        sdx_test_check(lo >= ranges[i].lo && hi <= ranges[i].hi,
                       "schema %s %g..%g lies inside the engine's %g..%g", ranges[i].path, lo, hi,
                       ranges[i].lo, ranges[i].hi);
    }
    double m = s_rule(schema, "dimensions.width", "multipleOf");
    sdx_test_check(m > 0 && fmod(m, 8) == 0 &&
                       fmod(s_rule(schema, "dimensions.height", "multipleOf"), 8) == 0,
                   "schema sizes are multiples of 8 (multipleOf %g), as the engine needs", m);
    sdx_value_destroy(&req);
    sdx_schema_set_destroy(&set);
    return sdx_test_done();
}
