/*  sdx_scheduler.c - the scheduler table, the alias table, configuration
    (class defaults < SDXL defaults < scheduler_config.json < alias
    overrides < caller JSON < the karras option; later wins, as applied in
    sdx_scheduler_new) and the public functions that dispatch to the
    families. Adding a scheduler is one row in s_classes (and its family
    code); adding a name users know is one row in s_aliases. */
#include "sdx_sched_impl.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The real SDXL base scheduler/scheduler_config.json (EulerDiscreteScheduler). */
static const char s_sdxl_defaults[] =
    "{\"num_train_timesteps\": 1000, \"beta_start\": 0.00085, \"beta_end\": 0.012,"
    " \"beta_schedule\": \"scaled_linear\", \"trained_betas\": null, \"clip_sample\": false,"
    " \"interpolation_type\": \"linear\", \"prediction_type\": \"epsilon\","
    " \"sample_max_value\": 1.0, \"set_alpha_to_one\": false, \"skip_prk_steps\": true,"
    " \"steps_offset\": 1, \"timestep_spacing\": \"leading\", \"use_karras_sigmas\": false}";

/* Keys every class knows. */
#define K_BETAS "num_train_timesteps beta_start beta_end beta_schedule trained_betas "
#define K_DPM_COMMON                                                                               \
    "solver_order prediction_type thresholding dynamic_thresholding_ratio sample_max_value "

/* clang-format off */
static const sdx_sched_class_t s_classes[] = {
    {"EulerDiscreteScheduler", NULL,
     K_BETAS "prediction_type interpolation_type use_karras_sigmas sigma_min sigma_max "
     "timestep_spacing timestep_type steps_offset rescale_betas_zero_snr",
     1, false, sdx_sched_euler_set_timesteps, sdx_sched_scale_sigma, sdx_sched_euler_step,
     sdx_sched_add_noise_sigma},
    {"EulerAncestralDiscreteScheduler", NULL,
     K_BETAS "prediction_type timestep_spacing steps_offset rescale_betas_zero_snr",
     1, false, sdx_sched_euler_a_set_timesteps, sdx_sched_scale_sigma, sdx_sched_euler_a_step,
     sdx_sched_add_noise_sigma},
    {"DPMSolverMultistepScheduler", NULL,
     K_BETAS K_DPM_COMMON "algorithm_type solver_type lower_order_final euler_at_final "
     "use_karras_sigmas use_lu_lambdas final_sigmas_type lambda_min_clipped variance_type "
     "timestep_spacing steps_offset rescale_betas_zero_snr",
     1, true, sdx_sched_dpm_set_timesteps, sdx_sched_scale_identity, sdx_sched_dpm_step,
     sdx_sched_add_noise_vp},
    {"DDIMScheduler", "{\"clip_sample\": true, \"set_alpha_to_one\": true, \"timestep_spacing\": \"leading\"}",
     K_BETAS "clip_sample set_alpha_to_one steps_offset prediction_type thresholding "
     "dynamic_thresholding_ratio clip_sample_range sample_max_value timestep_spacing "
     "rescale_betas_zero_snr",
     1, true, sdx_sched_ddim_set_timesteps, sdx_sched_scale_identity, sdx_sched_ddim_step,
     sdx_sched_add_noise_alpha},
    {"UniPCMultistepScheduler", "{\"solver_type\": \"bh2\"}",
     K_BETAS K_DPM_COMMON "predict_x0 solver_type lower_order_final disable_corrector solver_p "
     "use_karras_sigmas timestep_spacing steps_offset",
     1, true, sdx_sched_dpm_set_timesteps, sdx_sched_scale_identity, sdx_sched_unipc_step,
     sdx_sched_add_noise_vp},
    {"DDPMScheduler", "{\"clip_sample\": true, \"variance_type\": \"fixed_small\", \"timestep_spacing\": \"leading\"}",
     K_BETAS "variance_type clip_sample prediction_type thresholding dynamic_thresholding_ratio "
     "clip_sample_range sample_max_value timestep_spacing steps_offset rescale_betas_zero_snr",
     1, true, sdx_sched_ddim_set_timesteps, sdx_sched_scale_identity, sdx_sched_ddpm_step,
     sdx_sched_add_noise_alpha},
    {"PNDMScheduler", "{\"timestep_spacing\": \"leading\"}",
     K_BETAS "skip_prk_steps set_alpha_to_one prediction_type timestep_spacing steps_offset",
     1, true, sdx_sched_pndm_set_timesteps, sdx_sched_scale_identity, sdx_sched_pndm_step,
     sdx_sched_add_noise_alpha},
    {"LMSDiscreteScheduler", NULL,
     K_BETAS "use_karras_sigmas prediction_type timestep_spacing steps_offset",
     1, false, sdx_sched_lms_set_timesteps, sdx_sched_scale_sigma, sdx_sched_lms_step,
     sdx_sched_add_noise_sigma},
    {"HeunDiscreteScheduler", NULL,
     K_BETAS "prediction_type use_karras_sigmas clip_sample clip_sample_range timestep_spacing "
     "steps_offset",
     2, false, sdx_sched_heun_set_timesteps, sdx_sched_heun_scale, sdx_sched_heun_step,
     sdx_sched_add_noise_sigma},
    {"KDPM2DiscreteScheduler", NULL,
     K_BETAS "use_karras_sigmas prediction_type timestep_spacing steps_offset",
     2, false, sdx_sched_kdpm2_set_timesteps, sdx_sched_kdpm2_scale, sdx_sched_kdpm2_step,
     sdx_sched_add_noise_sigma},
    {"KDPM2AncestralDiscreteScheduler", NULL,
     K_BETAS "use_karras_sigmas prediction_type timestep_spacing steps_offset",
     2, false, sdx_sched_kdpm2a_set_timesteps, sdx_sched_kdpm2a_scale, sdx_sched_kdpm2a_step,
     sdx_sched_add_noise_sigma},
    {"DPMSolverSinglestepScheduler", "{\"lower_order_final\": false}",
     K_BETAS K_DPM_COMMON "algorithm_type solver_type lower_order_final use_karras_sigmas "
     "final_sigmas_type lambda_min_clipped variance_type",
     1, true, sdx_sched_dpmss_set_timesteps, sdx_sched_scale_identity, sdx_sched_dpmss_step,
     sdx_sched_add_noise_vp},
    {"DEISMultistepScheduler", "{\"algorithm_type\": \"deis\", \"solver_type\": \"logrho\"}",
     K_BETAS K_DPM_COMMON "algorithm_type solver_type lower_order_final use_karras_sigmas "
     "timestep_spacing steps_offset",
     1, true, sdx_sched_dpm_set_timesteps, sdx_sched_scale_identity, sdx_sched_deis_step,
     sdx_sched_add_noise_vp},
    {"LCMScheduler", "{\"set_alpha_to_one\": true, \"clip_sample\": false, \"timestep_spacing\": \"leading\"}",
     K_BETAS "original_inference_steps clip_sample clip_sample_range set_alpha_to_one "
     "steps_offset prediction_type thresholding dynamic_thresholding_ratio sample_max_value "
     "timestep_spacing timestep_scaling rescale_betas_zero_snr",
     1, true, sdx_sched_lcm_set_timesteps, sdx_sched_scale_identity, sdx_sched_lcm_step,
     sdx_sched_add_noise_alpha},
};
#define S_NCLASSES (sizeof s_classes / sizeof s_classes[0])

/* Names users know (A1111 and common spellings) -> class + config overrides. */
static const struct {
    const char *alias;
    const char *cls;
    const char *overrides;
} s_aliases[] = {
    {"Euler", "EulerDiscreteScheduler", NULL},
    {"Euler Karras", "EulerDiscreteScheduler", "{\"use_karras_sigmas\": true}"},
    {"euler_karras", "EulerDiscreteScheduler", "{\"use_karras_sigmas\": true}"},
    {"Euler a", "EulerAncestralDiscreteScheduler", NULL},
    {"euler_a", "EulerAncestralDiscreteScheduler", NULL},
    {"DPM++ 2M", "DPMSolverMultistepScheduler", "{\"algorithm_type\": \"dpmsolver++\", \"solver_order\": 2}"},
    {"dpmpp_2m", "DPMSolverMultistepScheduler", "{\"algorithm_type\": \"dpmsolver++\", \"solver_order\": 2}"},
    {"DPM++ 2M Karras", "DPMSolverMultistepScheduler",
     "{\"algorithm_type\": \"dpmsolver++\", \"solver_order\": 2, \"use_karras_sigmas\": true}"},
    {"dpmpp_2m_karras", "DPMSolverMultistepScheduler",
     "{\"algorithm_type\": \"dpmsolver++\", \"solver_order\": 2, \"use_karras_sigmas\": true}"},
    {"DPM++ 2M SDE", "DPMSolverMultistepScheduler",
     "{\"algorithm_type\": \"sde-dpmsolver++\", \"solver_order\": 2}"},
    {"DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler",
     "{\"algorithm_type\": \"sde-dpmsolver++\", \"solver_order\": 2, \"use_karras_sigmas\": true}"},
    {"dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler",
     "{\"algorithm_type\": \"sde-dpmsolver++\", \"solver_order\": 2, \"use_karras_sigmas\": true}"},
    {"DPM++ 2S", "DPMSolverSinglestepScheduler", NULL},
    {"DPM++ 2S Karras", "DPMSolverSinglestepScheduler", "{\"use_karras_sigmas\": true}"},
    {"DPM++ singlestep", "DPMSolverSinglestepScheduler", NULL},
    {"dpmpp_singlestep", "DPMSolverSinglestepScheduler", NULL},
    {"DPM2", "KDPM2DiscreteScheduler", NULL},
    {"DPM2 Karras", "KDPM2DiscreteScheduler", "{\"use_karras_sigmas\": true}"},
    {"DPM2 a", "KDPM2AncestralDiscreteScheduler", NULL},
    {"DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", "{\"use_karras_sigmas\": true}"},
    {"KDPM2", "KDPM2DiscreteScheduler", NULL},
    {"KDPM2 a", "KDPM2AncestralDiscreteScheduler", NULL},
    {"kdpm2_a", "KDPM2AncestralDiscreteScheduler", NULL},
    /* No "DPM++ SDE": A1111's is k-diffusion's dpmpp_sde (DPMSolverSDEScheduler,
       Brownian-tree noise), which is not implemented here. */
    {"Heun", "HeunDiscreteScheduler", NULL},
    {"Heun Karras", "HeunDiscreteScheduler", "{\"use_karras_sigmas\": true}"},
    {"LMS", "LMSDiscreteScheduler", NULL},
    {"LMS Karras", "LMSDiscreteScheduler", "{\"use_karras_sigmas\": true}"},
    {"DDIM", "DDIMScheduler", NULL},
    {"DDPM", "DDPMScheduler", NULL},
    {"PLMS", "PNDMScheduler", NULL},
    {"PNDM", "PNDMScheduler", NULL},
    {"UniPC", "UniPCMultistepScheduler", NULL},
    {"UniPC Karras", "UniPCMultistepScheduler", "{\"use_karras_sigmas\": true}"},
    {"DEIS", "DEISMultistepScheduler", NULL},
    {"LCM", "LCMScheduler", NULL},
};
/* clang-format on */
#define S_NALIASES (sizeof s_aliases / sizeof s_aliases[0])

/* ---------------------------------------------------------------- config keys */

typedef enum { K_INT, K_DOUBLE, K_BOOL, K_STR, K_BETAS_ARRAY, K_INT_LIST } s_ktype_t;

#define C_OFF(f) offsetof(sdx_sched_config_t, f)
static const struct {
    const char *key;
    s_ktype_t type;
    size_t off;
} s_keys[] = {
    {"num_train_timesteps", K_INT, C_OFF(num_train_timesteps)},
    {"beta_start", K_DOUBLE, C_OFF(beta_start)},
    {"beta_end", K_DOUBLE, C_OFF(beta_end)},
    {"beta_schedule", K_STR, C_OFF(beta_schedule)},
    {"trained_betas", K_BETAS_ARRAY, 0},
    {"prediction_type", K_STR, C_OFF(prediction_type)},
    {"timestep_spacing", K_STR, C_OFF(timestep_spacing)},
    {"steps_offset", K_INT, C_OFF(steps_offset)},
    {"clip_sample", K_BOOL, C_OFF(clip_sample)},
    {"clip_sample_range", K_DOUBLE, C_OFF(clip_sample_range)},
    {"set_alpha_to_one", K_BOOL, C_OFF(set_alpha_to_one)},
    {"skip_prk_steps", K_BOOL, C_OFF(skip_prk_steps)},
    {"thresholding", K_BOOL, C_OFF(thresholding)},
    {"dynamic_thresholding_ratio", K_DOUBLE, C_OFF(dynamic_thresholding_ratio)},
    {"sample_max_value", K_DOUBLE, C_OFF(sample_max_value)},
    {"rescale_betas_zero_snr", K_BOOL, C_OFF(rescale_betas_zero_snr)},
    {"interpolation_type", K_STR, C_OFF(interpolation_type)},
    {"use_karras_sigmas", K_BOOL, C_OFF(use_karras_sigmas)},
    {"sigma_min", K_DOUBLE, C_OFF(sigma_min)},
    {"sigma_max", K_DOUBLE, C_OFF(sigma_max)},
    {"timestep_type", K_STR, C_OFF(timestep_type)},
    {"variance_type", K_STR, C_OFF(variance_type)},
    {"solver_order", K_INT, C_OFF(solver_order)},
    {"algorithm_type", K_STR, C_OFF(algorithm_type)},
    {"solver_type", K_STR, C_OFF(solver_type)},
    {"lower_order_final", K_BOOL, C_OFF(lower_order_final)},
    {"euler_at_final", K_BOOL, C_OFF(euler_at_final)},
    {"use_lu_lambdas", K_BOOL, C_OFF(use_lu_lambdas)},
    {"final_sigmas_type", K_STR, C_OFF(final_sigmas_type)},
    {"lambda_min_clipped", K_DOUBLE, C_OFF(lambda_min_clipped)},
    {"predict_x0", K_BOOL, C_OFF(predict_x0)},
    {"disable_corrector", K_INT_LIST, 0},
    {"solver_p", K_STR, C_OFF(solver_p)},
    {"original_inference_steps", K_INT, C_OFF(original_inference_steps)},
    {"timestep_scaling", K_DOUBLE, C_OFF(timestep_scaling)},
};
#define S_NKEYS (sizeof s_keys / sizeof s_keys[0])

/* diffusers __init__ defaults shared by the classes (per-class differences
   are in the `defaults` column of s_classes). */
static void s_config_defaults(sdx_sched_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->num_train_timesteps = 1000;
    c->beta_start = 0.0001;
    c->beta_end = 0.02;
    strcpy(c->beta_schedule, "linear");
    strcpy(c->prediction_type, "epsilon");
    strcpy(c->timestep_spacing, "linspace");
    c->clip_sample_range = 1.0;
    c->dynamic_thresholding_ratio = 0.995;
    c->sample_max_value = 1.0;
    strcpy(c->interpolation_type, "linear");
    c->sigma_min = NAN;
    c->sigma_max = NAN;
    strcpy(c->timestep_type, "discrete");
    c->solver_order = 2;
    strcpy(c->algorithm_type, "dpmsolver++");
    strcpy(c->solver_type, "midpoint");
    c->lower_order_final = true;
    strcpy(c->final_sigmas_type, "zero");
    c->lambda_min_clipped = -INFINITY;
    c->predict_x0 = true;
    c->original_inference_steps = 50;
    c->timestep_scaling = 10.0;
}

static bool s_class_knows(const sdx_sched_class_t *cls, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = cls->keys; (p = strstr(p, key)) != NULL; p += n) {
        bool start = p == cls->keys || p[-1] == ' ';
        bool end = p[n] == '\0' || p[n] == ' ';
        if (start && end)
            return true;
    }
    return false;
}

static int s_set_key(sdx_sched_config_t *c, const char *cls, int k, const cJSON *v)
{
    char *base = (char *)c;
    const char *key = s_keys[k].key;
    switch (s_keys[k].type) {
    case K_INT:
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
            return sdx_set_error("scheduler %s: config '%s' must be an integer", cls, key);
        *(int *)(base + s_keys[k].off) = (int)v->valuedouble;
        return 0;
    case K_DOUBLE:
        if (cJSON_IsNull(v)) {
            *(double *)(base + s_keys[k].off) = NAN;
            return 0;
        }
        if (cJSON_IsString(v)) { /* Python's json writes -Infinity, see s_sanitize */
            const char *t = v->valuestring;
            double d = !strcmp(t, "-inf")  ? -INFINITY
                       : !strcmp(t, "inf") ? INFINITY
                       : !strcmp(t, "nan") ? NAN
                                           : 0.0;
            if (d == 0.0)
                return sdx_set_error("scheduler %s: config '%s' must be a number", cls, key);
            *(double *)(base + s_keys[k].off) = d;
            return 0;
        }
        if (!cJSON_IsNumber(v))
            return sdx_set_error("scheduler %s: config '%s' must be a number", cls, key);
        *(double *)(base + s_keys[k].off) = v->valuedouble;
        return 0;
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return sdx_set_error("scheduler %s: config '%s' must be true or false", cls, key);
        *(bool *)(base + s_keys[k].off) = cJSON_IsTrue(v);
        return 0;
    case K_STR: {
        char *dst = base + s_keys[k].off;
        if (cJSON_IsNull(v)) {
            dst[0] = '\0';
            return 0;
        }
        if (!cJSON_IsString(v) || strlen(v->valuestring) >= SDX_SCHED_STR)
            return sdx_set_error("scheduler %s: config '%s' must be a short string", cls, key);
        strcpy(dst, v->valuestring);
        return 0;
    }
    case K_BETAS_ARRAY: {
        free(c->trained_betas);
        c->trained_betas = NULL;
        c->n_trained_betas = 0;
        if (cJSON_IsNull(v))
            return 0;
        int n = cJSON_GetArraySize(v);
        if (!cJSON_IsArray(v) || n < 2 || n > SDX_SCHED_MAX_BETAS)
            return sdx_set_error("scheduler %s: config 'trained_betas' must be null or an array "
                                 "of 2..%d numbers",
                                 cls, SDX_SCHED_MAX_BETAS);
        c->trained_betas = malloc(sizeof(double) * (size_t)n);
        if (!c->trained_betas)
            return sdx_set_error("scheduler: out of memory");
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            if (!cJSON_IsNumber(e))
                return sdx_set_error("scheduler %s: trained_betas[%d] is not a number", cls, i);
            c->trained_betas[i++] = e->valuedouble;
        }
        c->n_trained_betas = n;
        return 0;
    }
    case K_INT_LIST: {
        c->n_disable_corrector = 0;
        if (cJSON_IsNull(v))
            return 0;
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > 64)
            return sdx_set_error("scheduler %s: config '%s' must be a list of integers", cls, key);
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            if (!cJSON_IsNumber(e))
                return sdx_set_error("scheduler %s: config '%s' must be a list of integers", cls,
                                     key);
            c->disable_corrector[c->n_disable_corrector++] = (int)e->valuedouble;
        }
        return 0;
    }
    }
    return 0;
}

/* Python's json module writes -Infinity, Infinity and NaN (diffusers saves
   lambda_min_clipped = -inf that way); cJSON rejects them. Rewrite those
   tokens outside strings as the strings "-inf", "inf", "nan". Caller frees. */
static char *s_sanitize(const char *text)
{
    static const struct {
        const char *tok, *rep;
    } subs[] = {{"-Infinity", "\"-inf\""}, {"Infinity", "\"inf\""}, {"NaN", "\"nan\""}};
    size_t n = strlen(text);
    char *out = malloc(n * 2 + 1), *o = out;
    if (!out)
        return NULL;
    bool in_str = false;
    for (const char *p = text; *p;) {
        if (in_str) {
            if (*p == '\\' && p[1]) {
                *o++ = *p++;
            } else if (*p == '"') {
                in_str = false;
            }
            *o++ = *p++;
            continue;
        }
        if (*p == '"') {
            in_str = true;
            *o++ = *p++;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof subs / sizeof subs[0]; k++) {
            size_t len = strlen(subs[k].tok);
            if (strncmp(p, subs[k].tok, len) == 0) {
                size_t rl = strlen(subs[k].rep);
                memcpy(o, subs[k].rep, rl);
                o += rl;
                p += len;
                break;
            }
        }
        if (k == sizeof subs / sizeof subs[0])
            *o++ = *p++;
    }
    *o = '\0';
    return out;
}

/* Lay a JSON object over the config; keys the class does not know are
   ignored, as diffusers' from_config does. `what` names the source. */
static int s_apply_json(sdx_sched_config_t *c, const sdx_sched_class_t *cls, const char *text,
                        const char *what)
{
    if (!text)
        return 0;
    char *clean = s_sanitize(text);
    if (!clean)
        return sdx_set_error("scheduler: out of memory");
    cJSON *root = cJSON_Parse(clean);
    free(clean);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sdx_set_error("scheduler %s: %s is not a JSON object", cls->name, what);
    }
    int rc = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        if (!item->string || item->string[0] == '_' || !s_class_knows(cls, item->string))
            continue;
        for (size_t k = 0; k < S_NKEYS; k++) {
            if (strcmp(s_keys[k].key, item->string) == 0) {
                if (s_set_key(c, cls->name, (int)k, item) != 0)
                    rc = -1;
                break;
            }
        }
        if (rc)
            break;
    }
    cJSON_Delete(root);
    return rc;
}

static char *s_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        sdx_set_error("scheduler config %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (16u << 20)) {
                sdx_set_error("scheduler config %s: file too large", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                sdx_set_error("scheduler: out of memory");
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, 4096, f);
        len += got;
        if (got < 4096)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* Validate the values a class's code relies on. */
static int s_validate(const sdx_scheduler_t *s)
{
    const sdx_sched_config_t *c = &s->cfg;
    const char *n = s->cls->name;
    if (!sdx_sched_is(c->prediction_type, "epsilon") &&
        !sdx_sched_is(c->prediction_type, "v_prediction") &&
        !sdx_sched_is(c->prediction_type, "sample"))
        return sdx_set_error("scheduler %s: prediction_type '%s' is not supported", n,
                             c->prediction_type);
    if (c->solver_order < 1 || c->solver_order > SDX_SCHED_MAX_ORDER)
        return sdx_set_error("scheduler %s: solver_order %d is not supported (1..3)", n,
                             c->solver_order);
    if (c->thresholding)
        return sdx_set_error("scheduler %s: thresholding is not supported (pixel-space models "
                             "only)",
                             n);
    if (c->solver_p[0])
        return sdx_set_error("scheduler %s: solver_p is not supported", n);
    return 0;
}

/* ---------------------------------------------------------------- lookup */

static const sdx_sched_class_t *s_find_class(const char *name)
{
    for (size_t i = 0; i < S_NCLASSES; i++) {
        const char *cn = s_classes[i].name;
        size_t len = strlen(cn) - strlen("Scheduler");
        if (strcasecmp(name, cn) == 0 || (strlen(name) == len && strncasecmp(name, cn, len) == 0))
            return &s_classes[i];
    }
    return NULL;
}

static char s_names_buf[8192];
static pthread_once_t s_names_once = PTHREAD_ONCE_INIT;

static void s_names_build(void)
{
    size_t off = 0;
    for (size_t i = 0; i < S_NALIASES && off < sizeof s_names_buf; i++)
        off += (size_t)snprintf(s_names_buf + off, sizeof s_names_buf - off, "%s -> %s%s%s\n",
                                s_aliases[i].alias, s_aliases[i].cls,
                                s_aliases[i].overrides ? " " : "",
                                s_aliases[i].overrides ? s_aliases[i].overrides : "");
    for (size_t i = 0; i < S_NCLASSES && off < sizeof s_names_buf; i++)
        off += (size_t)snprintf(s_names_buf + off, sizeof s_names_buf - off, "%s\n",
                                s_classes[i].name);
}

const char *sdx_scheduler_names(void)
{
    pthread_once(&s_names_once, s_names_build);
    return s_names_buf;
}

static void s_unknown_name(const char *name)
{
    char list[4096];
    size_t off = 0;
    for (size_t i = 0; i < S_NALIASES && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s'%s'", i ? ", " : "",
                                s_aliases[i].alias);
    for (size_t i = 0; i < S_NCLASSES && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, ", '%s'", s_classes[i].name);
    sdx_set_error("unknown scheduler '%s'; valid names (case-insensitive; class names also "
                  "without 'Scheduler'): %s",
                  name, list);
}

/* ---------------------------------------------------------------- public */

void sdx_scheduler_opts_init(sdx_scheduler_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->karras = -1;
}

sdx_scheduler_t *sdx_scheduler_new(const char *name, const sdx_scheduler_opts_t *opts)
{
    sdx_scheduler_opts_t dflt;
    if (!opts) {
        sdx_scheduler_opts_init(&dflt);
        opts = &dflt;
    }
    if (!name || !*name) {
        s_unknown_name("");
        return NULL;
    }
    const sdx_sched_class_t *cls = s_find_class(name);
    const char *overrides = NULL;
    if (!cls) {
        for (size_t i = 0; i < S_NALIASES; i++) {
            if (strcasecmp(name, s_aliases[i].alias) == 0) {
                cls = s_find_class(s_aliases[i].cls);
                overrides = s_aliases[i].overrides;
                break;
            }
        }
    }
    if (!cls) {
        s_unknown_name(name);
        return NULL;
    }
    sdx_scheduler_t *s = calloc(1, sizeof *s);
    if (!s) {
        sdx_set_error("scheduler: out of memory");
        return NULL;
    }
    s->cls = cls;
    s->eta = opts->eta;
    s->step_index = -1;
    s->begin_index = -1;
    s_config_defaults(&s->cfg);
    char *file = NULL;
    if (opts->config_path && !(file = s_read_file(opts->config_path)))
        goto fail;
    /* diffusers: the class's own defaults, then from_config(SDXL config),
       then the model's file, then this name's and the caller's overrides. */
    if (s_apply_json(&s->cfg, cls, cls->defaults, "class defaults") != 0 ||
        s_apply_json(&s->cfg, cls, s_sdxl_defaults, "SDXL defaults") != 0 ||
        s_apply_json(&s->cfg, cls, file, opts->config_path ? opts->config_path : "") != 0 ||
        s_apply_json(&s->cfg, cls, opts->model_config_json, "model config JSON") != 0 ||
        s_apply_json(&s->cfg, cls, overrides, "alias overrides") != 0 ||
        s_apply_json(&s->cfg, cls, opts->config_json, "config JSON") != 0)
        goto fail;
    free(file);
    file = NULL;
    if (opts->karras >= 0) {
        if (!s_class_knows(cls, "use_karras_sigmas")) {
            if (opts->karras) {
                sdx_set_error("scheduler %s has no Karras sigmas in diffusers 0.27.2", cls->name);
                goto fail;
            }
        } else {
            s->cfg.use_karras_sigmas = opts->karras != 0;
        }
    }
    if (s_validate(s) != 0)
        goto fail;
    /* Euler and DPM floor the last alphas_cumprod under zero-SNR rescaling */
    bool floor = sdx_sched_is(cls->name, "EulerDiscreteScheduler") ||
                 sdx_sched_is(cls->name, "EulerAncestralDiscreteScheduler") ||
                 sdx_sched_is(cls->name, "DPMSolverMultistepScheduler");
    if (sdx_sched_make_betas(s, floor) != 0)
        goto fail;
    return s;
fail:
    free(file);
    sdx_scheduler_destroy(&s);
    return NULL;
}

void sdx_scheduler_destroy(sdx_scheduler_t **sch)
{
    if (!sch || !*sch)
        return;
    sdx_scheduler_t *s = *sch;
    sdx_sched_reset_state(s);
    free(s->cfg.trained_betas);
    free(s->betas);
    free(s->alphas);
    free(s->alphas_cumprod);
    free(s->timesteps);
    free(s->sigmas);
    for (int i = 0; i < 4; i++)
        free(s->aux[i]);
    free(s->order_list);
    free(s);
    *sch = NULL;
}

int sdx_scheduler_class_count(void)
{
    return (int)S_NCLASSES;
}

int sdx_scheduler_class_at(int i, sdx_scheduler_class_info_t *out)
{
    if (i < 0 || (size_t)i >= S_NCLASSES)
        return -1;
    out->name = s_classes[i].name;
    out->keys = s_classes[i].keys;
    out->order = s_classes[i].order;
    out->int_timesteps = s_classes[i].int_timesteps;
    return 0;
}

bool sdx_scheduler_class_knows(const char *cls, const char *key)
{
    for (size_t i = 0; i < S_NCLASSES; i++)
        if (strcmp(s_classes[i].name, cls) == 0)
            return s_class_knows(&s_classes[i], key);
    return false;
}

int sdx_scheduler_alias_count(void)
{
    return (int)S_NALIASES;
}

int sdx_scheduler_alias_at(int i, const char **alias, const char **cls, const char **overrides)
{
    if (i < 0 || (size_t)i >= S_NALIASES)
        return -1;
    *alias = s_aliases[i].alias;
    *cls = s_aliases[i].cls;
    *overrides = s_aliases[i].overrides;
    return 0;
}

int sdx_scheduler_key_count(void)
{
    return (int)S_NKEYS;
}

int sdx_scheduler_key_at(int i, const char **key, const char **kind)
{
    static const char *const kinds[] = {
        [K_INT] = "integer",       [K_DOUBLE] = "number",       [K_BOOL] = "boolean",
        [K_STR] = "string",        [K_BETAS_ARRAY] = "number[]", [K_INT_LIST] = "integer[]",
    };
    if (i < 0 || (size_t)i >= S_NKEYS)
        return -1;
    *key = s_keys[i].key;
    *kind = kinds[s_keys[i].type];
    return 0;
}

int sdx_scheduler_model_json(char *buf, size_t cap, const char *pred, bool zero_terminal_snr)
{
    bool has_pred = pred && *pred;
    int k;
    if (!has_pred && !zero_terminal_snr)
        k = snprintf(buf, cap, "%s", "");
    else
        k = snprintf(buf, cap, "{%s%s%s%s%s}", has_pred ? "\"prediction_type\":\"" : "",
                     has_pred ? pred : "", has_pred ? "\"" : "",
                     has_pred && zero_terminal_snr ? "," : "",
                     zero_terminal_snr
                         ? "\"rescale_betas_zero_snr\":true,\"timestep_spacing\":\"trailing\""
                         : "");
    return k < 0 || (size_t)k >= cap ? -1 : 0;
}

const char *sdx_scheduler_class_name(const sdx_scheduler_t *sch)
{
    return sch->cls->name;
}

char *sdx_scheduler_config_json(const sdx_scheduler_t *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "_class_name", s->cls->name);
    const char *base = (const char *)&s->cfg;
    for (size_t k = 0; k < S_NKEYS; k++) {
        const char *key = s_keys[k].key;
        if (!s_class_knows(s->cls, key))
            continue;
        const void *p = base + s_keys[k].off;
        switch (s_keys[k].type) {
        case K_INT:
            cJSON_AddNumberToObject(o, key, *(const int *)p);
            break;
        case K_DOUBLE: {
            double d = *(const double *)p;
            if (isnan(d))
                cJSON_AddNullToObject(o, key);
            else if (isinf(d))
                cJSON_AddStringToObject(o, key, d < 0 ? "-inf" : "inf");
            else
                cJSON_AddNumberToObject(o, key, d);
            break;
        }
        case K_BOOL:
            cJSON_AddBoolToObject(o, key, *(const bool *)p);
            break;
        case K_STR:
            if (*(const char *)p)
                cJSON_AddStringToObject(o, key, (const char *)p);
            else
                cJSON_AddNullToObject(o, key);
            break;
        case K_BETAS_ARRAY:
            if (s->cfg.n_trained_betas)
                cJSON_AddItemToObject(
                    o, key, cJSON_CreateDoubleArray(s->cfg.trained_betas, s->cfg.n_trained_betas));
            else
                cJSON_AddNullToObject(o, key);
            break;
        case K_INT_LIST:
            cJSON_AddItemToObject(
                o, key, cJSON_CreateIntArray(s->cfg.disable_corrector, s->cfg.n_disable_corrector));
            break;
        }
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

int sdx_scheduler_set_timesteps(sdx_scheduler_t *s, int n)
{
    if (n < 1 || n > s->T)
        return sdx_set_error("scheduler %s: num_inference_steps %d out of range [1, %d]",
                             s->cls->name, n, s->T);
    sdx_sched_reset_state(s);
    for (int i = 0; i < 4; i++) {
        free(s->aux[i]);
        s->aux[i] = NULL;
    }
    s->n_aux = 0;
    free(s->order_list);
    s->order_list = NULL;
    s->requested_steps = n;
    s->num_inference_steps = n;
    s->init_noise_sigma = 1.0f;
    if (s->cls->set_timesteps(s, n) != 0) {
        sdx_sched_set_tables(s, NULL, 0, NULL, 0);
        return -1;
    }
    return 0;
}

int sdx_scheduler_count(const sdx_scheduler_t *s)
{
    return s->timesteps ? s->n_timesteps : 0;
}

double sdx_scheduler_timestep(const sdx_scheduler_t *s, int i)
{
    if (!s->timesteps || i < 0 || i >= s->n_timesteps)
        return NAN;
    return s->timesteps[i];
}

bool sdx_scheduler_timesteps_are_int(const sdx_scheduler_t *s)
{
    return s->cls->int_timesteps;
}

int sdx_scheduler_timestep_tensor(const sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                                  int i, sdx_device_t dev)
{
    if (!s->timesteps || i < 0 || i >= s->n_timesteps)
        return sdx_set_error("scheduler %s: timestep index %d out of range", s->cls->name, i);
    return sdx_scalar_tensor(S, out, s->timesteps[i], s->cls->int_timesteps ? SDX_I64 : SDX_F32,
                             dev);
}

const float *sdx_scheduler_sigmas(const sdx_scheduler_t *s, int *n)
{
    if (n)
        *n = s->sigmas ? s->n_sigmas : 0;
    return s->sigmas;
}

double sdx_scheduler_init_noise_sigma(const sdx_scheduler_t *s)
{
    return s->init_noise_sigma;
}

int sdx_scheduler_order(const sdx_scheduler_t *s)
{
    return s->cls->order;
}

int sdx_scheduler_num_inference_steps(const sdx_scheduler_t *s)
{
    return s->num_inference_steps;
}

int sdx_scheduler_set_begin_index(sdx_scheduler_t *s, int begin)
{
    if (!s->timesteps)
        return sdx_set_error("scheduler %s: set_timesteps was not called", s->cls->name);
    if (begin < 0 || begin >= s->n_timesteps)
        return sdx_set_error("scheduler %s: begin index %d out of range [0, %d)", s->cls->name,
                             begin, s->n_timesteps);
    s->begin_index = begin;
    return 0;
}

int sdx_scheduler_begin_index(const sdx_scheduler_t *s)
{
    return s->begin_index >= 0 ? s->begin_index : 0;
}

int sdx_scheduler_strength_begin(sdx_scheduler_t *s, double strength)
{
    if (!s->timesteps)
        return sdx_set_error("scheduler %s: set_timesteps was not called", s->cls->name);
    if (!(strength >= 0 && strength <= 1))
        return sdx_set_error("strength %g must be in [0, 1]", strength);
    int n = s->requested_steps;
    int init = (int)(n * strength);
    if (init > n)
        init = n;
    int t_start = n - init > 0 ? n - init : 0;
    int begin = t_start * s->cls->order;
    if (begin >= s->n_timesteps)
        return sdx_set_error("strength %g leaves no denoising step out of %d", strength, n);
    s->begin_index = begin;
    return begin;
}

static int s_cutoff(const sdx_scheduler_t *s, double frac)
{
    int T = s->cfg.num_train_timesteps;
    return (int)nearbyint((double)T - frac * (double)T); /* Python round() */
}

int sdx_scheduler_denoising_end_count(const sdx_scheduler_t *s, double denoising_end)
{
    if (!s->timesteps)
        return sdx_set_error("scheduler %s: set_timesteps was not called", s->cls->name);
    if (!(denoising_end > 0 && denoising_end < 1))
        return sdx_set_error("denoising_end %g must be in (0, 1)", denoising_end);
    int cut = s_cutoff(s, denoising_end), n = 0;
    for (int i = 0; i < s->n_timesteps; i++)
        n += s->timesteps[i] >= cut;
    if (n == 0)
        return sdx_set_error("denoising_end %g leaves no step", denoising_end);
    return n;
}

int sdx_scheduler_denoising_start_begin(sdx_scheduler_t *s, double denoising_start)
{
    if (!s->timesteps)
        return sdx_set_error("scheduler %s: set_timesteps was not called", s->cls->name);
    if (!(denoising_start > 0 && denoising_start < 1))
        return sdx_set_error("denoising_start %g must be in (0, 1)", denoising_start);
    int cut = s_cutoff(s, denoising_start), n = 0;
    for (int i = 0; i < s->n_timesteps; i++)
        n += s->timesteps[i] < cut;
    if (s->cls->order == 2 && n % 2 == 0)
        n++;
    if (n == 0 || n > s->n_timesteps)
        return sdx_set_error("denoising_start %g leaves no step", denoising_start);
    s->begin_index = s->n_timesteps - n;
    return s->begin_index;
}

int sdx_scheduler_scale_model_input(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                                    const sdx_tensor_t *sample, int i)
{
    if (!s->timesteps)
        return sdx_set_error("scheduler %s: set_timesteps was not called", s->cls->name);
    return s->cls->scale(s, S, out, sample, i);
}

int sdx_scheduler_step(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **prev,
                       const sdx_tensor_t *model_output, int i, const sdx_tensor_t *sample,
                       sdx_generator_t *gen)
{
    if (!s->timesteps)
        return sdx_set_error("scheduler %s: set_timesteps was not called", s->cls->name);
    if (i < 0 || i >= s->n_timesteps)
        return sdx_set_error("scheduler %s: step index %d out of range [0, %d)", s->cls->name, i,
                             s->n_timesteps);
    s->step_index = i;
    return s->cls->step(s, S, prev, model_output, i, sample, gen);
}

int sdx_scheduler_add_noise(sdx_scheduler_t *s, sdx_scope_t *S, sdx_tensor_t **out,
                            const sdx_tensor_t *original, const sdx_tensor_t *noise, int i)
{
    if (!s->timesteps)
        return sdx_set_error("scheduler %s: set_timesteps was not called", s->cls->name);
    return s->cls->add_noise(s, S, out, original, noise, i);
}

void sdx_scheduler_set_noise_hook(sdx_scheduler_t *s, sdx_scheduler_noise_fn fn, void *ctx)
{
    s->noise_fn = fn;
    s->noise_ctx = ctx;
}

int sdx_scheduler_draw_count(const sdx_scheduler_t *s)
{
    return s->draws;
}
