/*  sdxl_gen_encode.c - `sdxl-gen encode`: run SDXL's prompt encoding
    (sdx_prompt_encode) on a model and print the shapes, norms and means of
    prompt_embeds, negative_prompt_embeds and the pooled pair as JSON. A
    debugging aid for the text side of a checkpoint; not used by serving.

      sdxl-gen encode --model PATH [--config-dir DIR] --prompt TEXT
                      [--prompt-2 TEXT] [--negative TEXT] [--negative-2 TEXT]
                      [--clip-skip N] [--num-images N] [--dtype f32|f16|bf16]
                      [--device cpu|cuda[:N]]
    Without --negative the negative prompt is None (zeros when the model's
    force_zeros_for_empty_prompt is set); --negative "" encodes "".
*/
#include "sdxl_gen.h"
#include "sdxl_gen_util.h"

#include "sdx_clip.h"
#include "sdx_model.h"
#include "sdx_prompt.h"
#include "sdx_tokenizer.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_usage(const char *why)
{
    fprintf(stderr,
            "sdxl-gen encode: %s\n"
            "usage: sdxl-gen encode --model PATH [--config-dir DIR] --prompt TEXT\n"
            "                       [--prompt-2 TEXT] [--negative TEXT] [--negative-2 TEXT]\n"
            "                       [--clip-skip N] [--num-images N] [--dtype f32|f16|bf16]\n"
            "                       [--device cpu|cuda[:N]]\n",
            why);
    return 2;
}

/* {"shape": [...], "dtype": "f32", "norm": ||t||, "mean": mean(t)} or null */
static cJSON *s_summary(const sdx_tensor_t *t)
{
    if (!t)
        return cJSON_CreateNull();
    int64_t shape[SDX_MAX_DIMS];
    int nd = sdx_tensor_shape(t, shape);
    int64_t n = sdx_tensor_numel(t);
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    cJSON *o = cJSON_CreateObject();
    cJSON *s = cJSON_AddArrayToObject(o, "shape");
    for (int i = 0; i < nd; i++)
        cJSON_AddItemToArray(s, cJSON_CreateNumber((double)shape[i]));
    cJSON_AddStringToObject(o, "dtype", sdx_dtype_name(sdx_tensor_dtype(t)));
    if (v && sdx_to_host(t, SDX_F64, v, (size_t)n * sizeof *v) == 0) {
        double ss = 0, sum = 0;
        for (int64_t i = 0; i < n; i++) {
            ss += v[i] * v[i];
            sum += v[i];
        }
        cJSON_AddNumberToObject(o, "norm", sqrt(ss));
        cJSON_AddNumberToObject(o, "mean", n ? sum / (double)n : 0);
    }
    free(v);
    return o;
}

int sdxl_gen_encode(int argc, char **argv)
{
    const char *model = NULL, *config_dir = NULL, *prompt = NULL, *prompt2 = NULL;
    const char *neg = NULL, *neg2 = NULL, *dtype = "f32", *device = "cpu";
    long clip_skip = 0, nipp = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage("help");
            return 0;
        }
        if (i + 1 >= argc)
            return s_usage(a[0] == '-' ? "option needs a value" : "unexpected argument");
        const char *v = argv[++i];
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--config-dir"))
            config_dir = v;
        else if (!strcmp(a, "--prompt"))
            prompt = v;
        else if (!strcmp(a, "--prompt-2"))
            prompt2 = v;
        else if (!strcmp(a, "--negative"))
            neg = v;
        else if (!strcmp(a, "--negative-2"))
            neg2 = v;
        else if (!strcmp(a, "--dtype"))
            dtype = v;
        else if (!strcmp(a, "--device"))
            device = v;
        else if (!strcmp(a, "--clip-skip")) {
            if (!sdxl_gen_parse_long(v, 0, 64, &clip_skip))
                return s_usage("--clip-skip needs an integer 0..64");
        } else if (!strcmp(a, "--num-images")) {
            if (!sdxl_gen_parse_long(v, 1, 64, &nipp))
                return s_usage("--num-images needs an integer 1..64");
        } else
            return s_usage("unknown option");
    }
    if (!model || !prompt)
        return s_usage("--model and --prompt are required");

    sdx_load_opts_t o;
    sdx_load_opts_init(&o);
    o.path = model;
    o.config_dir = config_dir;
    o.components = SDX_COMP_TE1 | SDX_COMP_TE2;
    o.dtype = SDX_DTYPE_COUNT;
    for (int d = 0; d < SDX_DTYPE_COUNT; d++)
        if (!strcmp(dtype, sdx_dtype_name((sdx_dtype_t)d)))
            o.dtype = (sdx_dtype_t)d;
    if (o.dtype != SDX_F32 && o.dtype != SDX_F16 && o.dtype != SDX_BF16)
        return s_usage("--dtype must be f32, f16 or bf16");
    if (sdx_device_parse(device, &o.device) != 0)
        return s_usage("--device must be cpu, cuda or cuda:N");

    int rc = 1;
    sdx_clip_t *te1 = NULL, *te2 = NULL;
    sdx_tokenizer_t *tok1 = NULL, *tok2 = NULL;
    sdx_prompt_embeds_t e = {0};
    cJSON *out = NULL;
    sdx_inference_guard_t *g = sdx_inference_guard_new();
    sdx_model_t *m = sdx_model_load(&o);
    if (!m)
        goto fail;
    if (!m->te2 || !m->tokenizer2_dir[0]) {
        sdx_set_error("%s: no text_encoder_2 / tokenizer_2 (give --config-dir for a single "
                      "file without them)",
                      model);
        goto fail;
    }
    if (m->te1 && !m->tokenizer_dir[0]) {
        sdx_set_error("%s: no tokenizer folder for text_encoder", model);
        goto fail;
    }
    if (m->te1 && (!(te1 = sdx_clip_new(&m->te1_cfg, m->te1, "text_encoder")) ||
                   !(tok1 = sdx_tokenizer_load(m->tokenizer_dir))))
        goto fail;
    if (!(te2 = sdx_clip_new(&m->te2_cfg, m->te2, "text_encoder_2")) ||
        !(tok2 = sdx_tokenizer_load(m->tokenizer2_dir)))
        goto fail;
    sdx_text_encoders_t te = {te1, tok1, te2, tok2};
    sdx_prompt_params_t p;
    sdx_prompt_params_init(&p);
    p.prompt = &prompt;
    p.prompt_2 = prompt2 ? &prompt2 : NULL;
    p.negative = neg ? &neg : NULL;
    p.negative_2 = neg2 ? &neg2 : NULL;
    p.clip_skip = (int)clip_skip;
    p.num_images_per_prompt = (int)nipp;
    p.force_zeros_for_empty_prompt = m->force_zeros_for_empty_prompt;
    if (sdx_prompt_encode(&te, &p, &e) != 0)
        goto fail;
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "model", model);
    cJSON_AddStringToObject(out, "layout",
                            m->layout == SDX_LAYOUT_SINGLE_FILE ? "single_file" : "diffusers");
    cJSON_AddStringToObject(out, "negative", neg ? "text" : "none");
    cJSON_AddBoolToObject(out, "force_zeros_for_empty_prompt", m->force_zeros_for_empty_prompt);
    cJSON_AddNumberToObject(out, "clip_skip", clip_skip);
    cJSON_AddBoolToObject(out, "truncated", e.truncated);
    cJSON_AddItemToObject(out, "prompt_embeds", s_summary(e.prompt_embeds));
    cJSON_AddItemToObject(out, "negative_prompt_embeds", s_summary(e.negative_prompt_embeds));
    cJSON_AddItemToObject(out, "pooled_prompt_embeds", s_summary(e.pooled_prompt_embeds));
    cJSON_AddItemToObject(out, "negative_pooled_prompt_embeds",
                          s_summary(e.negative_pooled_prompt_embeds));
    char *text = cJSON_Print(out);
    if (text) {
        printf("%s\n", text);
        free(text);
        rc = 0;
    }
    goto done;
fail:
    fprintf(stderr, "sdxl-gen encode: %s\n", sdx_last_error());
done:
    cJSON_Delete(out);
    sdx_prompt_embeds_free(&e);
    sdx_clip_destroy(&te1);
    sdx_clip_destroy(&te2);
    sdx_tokenizer_destroy(&tok1);
    sdx_tokenizer_destroy(&tok2);
    sdx_model_free(&m);
    sdx_inference_guard_free(&g);
    return rc;
}
