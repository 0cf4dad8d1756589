/*  sdxl-gen generate: text-to-image from the command line through sdxl.h.
    Writes PNG(s) and optionally the final latents, prints one summary line
    naming every file written.

    The generation options are the fields of an inference.generate request:
    they are put into one (s_fields), checked and completed against
    schemas/prompt_submission_schema.json by the validator the broker and the
    inference worker use (common/sdx_schema), and the engine gets every value
    from the filled request. So a default or a range is the schema's, and one
    request gives one image through sdxl-gen or the fleet. The schemas folder
    is found as the broker finds it (--schemas-dir, else $SDXL_SCHEMAS_DIR,
    <source>/schemas, <datadir>/sdxl-fleet/schemas).

    Exit codes: 0 ok, 2 bad arguments (the schema's refusals included) /
    model or dtype that cannot be used / parameters the engine refuses
    (sdxl_result_t.input_error), 1 a failure while generating. */
#include "sdxl.h"
#include "sdx_upscale.h"
#include "sdxl_gen.h"
#include "sdxl_gen_util.h"

#include "sdx_imgcodec.h"
#include "sdx_log.h"
#include "sdx_safetensors.h"
#include "sdx_schema.h"
#include "sdx_taesd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static const char s_usage[] =
    "usage: sdxl-gen generate --model PATH [--config-dir DIR] [--tokenizer DIR --tokenizer-2 DIR]\n"
    "         --prompt TEXT [--negative TEXT] [--seed N] [--steps N] [--cfg F]\n"
    "         [--guidance-rescale F] [--width W --height H] [--scheduler NAME] [--karras]\n"
    "         [--clip-skip N] [--prompt-attention none|a1111]\n"
    "         [--prediction-type epsilon|v_prediction] [--batch N]\n"
    "         [--dtype fp32|fp16|bf16] [--device cpu|cuda:N]\n"
    "         [--channels-last on|off|auto] [--vae-f32] [--vae PATH] [--threads N]\n"
    "         [--out FILE.png]\n"
    "         [--latents-out FILE.safetensors] [--schemas-dir DIR] [--quiet]\n"
    "         [--init-image FILE [--strength F]]\n"
    "         [--refiner PATH [--refiner-switch F] [--aesthetic-score F]\n"
    "          [--negative-aesthetic-score F]]\n"
    "         [--preview-every N --preview-decoder PATH [--preview-dir DIR]]\n"
    "  --batch N writes FILE-0.png .. FILE-(N-1).png; --channels-last auto: on for CUDA\n"
    "  defaults and ranges are those of an inference.generate request\n"
    "  (schemas/prompt_submission_schema.json): --seed -1 (the default) draws one,\n"
    "  --dtype fp16 (the default) runs fp32 on the CPU, as the inference worker does\n"
    "  --init-image: img2img from a PNG/JPEG/WebP (the request's init_image), resized to\n"
    "  --width x --height with Lanczos when its size differs, as the worker does\n"
    "  --refiner: the ensemble of experts (the request's refiner_model): the base runs to\n"
    "  --refiner-switch (0.8), the refiner checkpoint the rest; a refiner that is a UNet\n"
    "  alone takes text_encoder_2, the VAE and the scheduler config of --model\n"
    "  --preview-every N: live previews (the request's output.preview.every): every N steps\n"
    "  but the last, the latents through the TAESD --preview-decoder, written as\n"
    "  DIR/preview-SSS.jpg (--preview-dir, default .); the image is the same without them\n";

/* The options that are request fields: each goes to its place in an
   inference.generate request (kind 'i' integer, 'n' number, 's' text,
   'b' a switch that sets true). */
static const struct {
    const char *flag;
    const char *path;
    char kind;
} s_fields[] = {
    {"--prompt", "prompt", 's'},
    {"--negative", "negative_prompt", 's'},
    {"--seed", "hyperparameters.seed", 'i'},
    {"--steps", "hyperparameters.num_inference_steps", 'i'},
    {"--cfg", "hyperparameters.guidance_scale", 'n'},
    {"--guidance-rescale", "hyperparameters.guidance_rescale", 'n'},
    {"--width", "dimensions.width", 'i'},
    {"--height", "dimensions.height", 'i'},
    {"--scheduler", "scheduler", 's'},
    {"--karras", "use_karras_sigmas", 'b'},
    {"--clip-skip", "clip_skip", 'i'},
    {"--prompt-attention", "prompt_attention", 's'},
    {"--prediction-type", "prediction_type", 's'},
    {"--batch", "batch.size", 'i'},
    {"--dtype", "precision.dtype", 's'},
    {"--strength", "hyperparameters.strength", 'n'},
    {"--refiner-switch", "refiner.switch_at", 'n'},
    {"--aesthetic-score", "refiner.aesthetic_score", 'n'},
    {"--negative-aesthetic-score", "refiner.negative_aesthetic_score", 'n'},
    {"--preview-every", "output.preview.every", 'i'},
};

/* --refiner: the checkpoint and the filled request's refiner fields */
typedef struct {
    const char *path; /* NULL: no refiner */
    double switch_at, aesthetic_score, negative_aesthetic_score;
} s_refiner_t;
#define S_NFIELDS (sizeof s_fields / sizeof s_fields[0])

/* --preview-every: where the engine's previews go */
typedef struct {
    const char *dir;
    sdx_encode_opts_t opts;
    const char *ext;
    int written;
    char error[512];
} s_previews_t;

static int s_write_bytes(const char *path, const void *buf, size_t len);

static void s_on_preview(int step, int total, const sdx_image_t *img, void *ud)
{
    (void)total;
    s_previews_t *pv = ud;
    uint8_t *data = NULL;
    size_t len = 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/preview-%03d.%s", pv->dir, step, pv->ext);
    if (sdx_image_encode(img, &pv->opts, &data, &len) != 0)
        snprintf(pv->error, sizeof pv->error, "preview %d: %s", step, sdx_last_error());
    else if (s_write_bytes(path, data, len) != 0)
        snprintf(pv->error, sizeof pv->error, "cannot write %.400s: %s", path, strerror(errno));
    else
        pv->written++;
    free(data);
}

/* The options sdxl_gen_generate takes besides the request fields (kept in
   step with its parser below: an unknown one is named as such, not as an
   option that lacks its value). */
static bool s_known_option(const char *a)
{
    static const char *const known[] = {
        "--model", "--config-dir", "--vae", "--tokenizer", "--tokenizer-2", "--schemas-dir",
        "--threads", "--device", "--channels-last", "--out", "--latents-out", "--init-image",
        "--refiner", "--preview-decoder", "--preview-dir", NULL};
    for (size_t i = 0; i < S_NFIELDS; i++)
        if (strcmp(s_fields[i].flag, a) == 0)
            return true;
    for (int i = 0; known[i]; i++)
        if (strcmp(known[i], a) == 0)
            return true;
    return false;
}

static int s_bad(const char *fmt, const char *arg)
{
    fprintf(stderr, "sdxl-gen generate: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return 2;
}

/* The option's text as the value of its kind: an integer stays exact (a
   seed), other numbers are floats (the schema says whether that is right).
   NULL when the text is no number. Caller owns the result. */
static sdx_value_t *s_value(char kind, const char *text)
{
    if (kind == 's')
        return sdx_value_str_new(text);
    if (kind == 'b')
        return sdx_value_bool_new(true);
    char *end;
    errno = 0;
    long long i = strtoll(text, &end, 10);
    if (!errno && end != text && !*end)
        return sdx_value_int_new(i);
    errno = 0;
    double d = strtod(text, &end);
    if (errno || end == text || *end)
        return NULL;
    return sdx_value_float_new(d);
}

/* Put val at the dotted path of the request (maps made on the way). Takes
   val, also on failure. 0, or -1 (out of memory). */
static int s_put(sdx_value_t *req, const char *path, sdx_value_t *val)
{
    const char *dot;
    while (val && (dot = strchr(path, '.'))) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(dot - path), path);
        sdx_value_t *sub = sdx_map_get(req, key);
        if (!sub) {
            sub = sdx_value_map_new(); /* sdx_map_set owns it, also when it fails */
            if (!sub || sdx_map_set(req, key, sub) != 0) {
                sdx_value_destroy(&val);
                return -1;
            }
        }
        req = sub;
        path = dot + 1;
    }
    return val ? sdx_map_set(req, path, val) : -1; /* sdx_map_set owns val */
}

/* The option that sets a request field, or the field itself. */
static const char *s_flag_of(const char *path)
{
    for (size_t i = 0; i < S_NFIELDS; i++)
        if (strcmp(s_fields[i].path, path) == 0)
            return s_fields[i].flag;
    return path;
}

/* A field of the filled request (present: the schema gives it a default). */
static const sdx_value_t *s_get(const sdx_value_t *req, const char *path, sdx_vtype_t type)
{
    const sdx_value_t *v = sdx_map_get_path(req, path);
    if (v && (v->type == type || (type == SDX_FLOAT && v->type == SDX_INT)))
        return v;
    fprintf(stderr, "sdxl-gen generate: %s: the request schema gives it no %s default\n", path,
            sdx_vtype_name(type));
    return NULL;
}

static void s_progress(int step, int total, double elapsed, void *ud)
{
    if (*(bool *)ud)
        return;
    fprintf(stderr, "\rstep %d/%d  %.1fs", step, total, elapsed);
    if (step == total)
        fprintf(stderr, "\n");
}

/* The engine's log: warnings (skipped keys, truncated prompts) only, even
   with --quiet; errors are the one line main() prints. */
static void s_log(int level, const char *msg, void *ud)
{
    (void)ud;
    if (level == 1)
        fprintf(stderr, "sdxl-gen: warning: %s\n", msg);
}

/* Whether this libtorch runs the f16 ops the engine needs (LayerNorm and a
   matmul) on dev: libtorch 1.13's CPU kernels have no Half LayerNorm or
   addmm, so an f16 CPU run would only fail at the first text encoder. */
static bool s_half_works(sdx_device_t dev, char *why, size_t why_len)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *x, *w, *y;
    int64_t shape[2] = {2, 8};
    bool ok = S && sdx_ones(S, &x, shape, 2, SDX_F16, dev) == 0 &&
              sdx_ones(S, &w, shape, 2, SDX_F16, dev) == 0 &&
              sdx_layer_norm(S, &y, x, NULL, NULL, 1e-5) == 0 && sdx_linear(S, &y, x, w, NULL) == 0;
    if (!ok)
        snprintf(why, why_len, "%s", sdx_last_error());
    sdx_scope_free(&S);
    return ok;
}

/* "out.png" + index -> "out-1.png" for batches. */
static void s_indexed(char *buf, size_t len, const char *path, int i, int n)
{
    if (n == 1) {
        snprintf(buf, len, "%s", path);
        return;
    }
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/'))
        dot = path + strlen(path);
    snprintf(buf, len, "%.*s-%d%s", (int)(dot - path), path, i, dot);
}


/* Write len bytes to path. 0, or -1 with errno. */
static int s_write_bytes(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(buf, 1, len, f);
    int e = errno;
    if (fclose(f) != 0 || n != len) {
        errno = n != len ? e : errno;
        return -1;
    }
    return 0;
}

static int s_generate(sdxl_engine_params_t *ep_in, sdxl_gen_params_t *gp_in,
                      const s_refiner_t *rf, const char *out, const char *latents_out,
                      bool quiet);

/* --init-image FILE: its bytes as the request's init_image (bin), checked by
   the schema like a client's. 0, or 2 (reason printed). */
static int s_put_file(sdx_value_t *req, const char *path, const char *file)
{
    FILE *f = fopen(file, "rb");
    uint8_t *buf = NULL;
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n)) && fread(buf, 1, (size_t)n, f) != (size_t)n)
        n = -1;
    int e = errno;
    if (f)
        fclose(f);
    if (!buf || n <= 0) {
        free(buf);
        fprintf(stderr, "sdxl-gen generate: --init-image: cannot read %s: %s\n", file,
                strerror(e ? e : EIO));
        return 2;
    }
    sdx_value_t *bin = sdx_value_bin_take(buf, (size_t)n);
    if (!bin) {
        free(buf);
        return s_bad("%s", "out of memory");
    }
    return s_put(req, path, bin) == 0 ? 0 : s_bad("%s", "out of memory");
}

/* The request's seed, or a drawn one for -1 (the schema's "pick one"),
   below 2^53 like the inference worker's. */
static uint64_t s_seed(int64_t seed)
{
    if (seed >= 0)
        return (uint64_t)seed;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        rnd = (uint64_t)time(NULL) * 2654435761u;
    return rnd & 9007199254740991ULL;
}

/* The filled request -> gp and the dtype name. 0, or 2 (reason printed). */
static int s_from_request(const sdx_value_t *req, sdxl_gen_params_t *gp, const char **dtype)
{
    const sdx_value_t *prompt = s_get(req, "prompt", SDX_STR);
    const sdx_value_t *neg = s_get(req, "negative_prompt", SDX_STR);
    const sdx_value_t *sched = s_get(req, "scheduler", SDX_STR);
    const sdx_value_t *karras = s_get(req, "use_karras_sigmas", SDX_BOOL);
    const sdx_value_t *steps = s_get(req, "hyperparameters.num_inference_steps", SDX_INT);
    const sdx_value_t *cfg = s_get(req, "hyperparameters.guidance_scale", SDX_FLOAT);
    const sdx_value_t *rescale = s_get(req, "hyperparameters.guidance_rescale", SDX_FLOAT);
    const sdx_value_t *seed = s_get(req, "hyperparameters.seed", SDX_INT);
    const sdx_value_t *w = s_get(req, "dimensions.width", SDX_INT);
    const sdx_value_t *h = s_get(req, "dimensions.height", SDX_INT);
    const sdx_value_t *clip_skip = s_get(req, "clip_skip", SDX_INT);
    const sdx_value_t *batch = s_get(req, "batch.size", SDX_INT);
    const sdx_value_t *dt = s_get(req, "precision.dtype", SDX_STR);
    if (!prompt || !neg || !sched || !karras || !steps || !cfg || !rescale || !seed || !w || !h ||
        !clip_skip || !batch || !dt)
        return 2;
    gp->prompt = prompt->u.str.ptr;
    /* "" (the schema's default) is no negative prompt, as in the worker */
    gp->negative_prompt = neg->u.str.len ? neg->u.str.ptr : NULL;
    gp->scheduler = sched->u.str.ptr;
    gp->karras = karras->u.b ? 1 : -1; /* false: the scheduler config's choice */
    gp->steps = (int)steps->u.i;
    sdx_value_as_double(cfg, &gp->guidance_scale);
    sdx_value_as_double(rescale, &gp->guidance_rescale);
    gp->seed = s_seed(seed->u.i);
    gp->width = (int)w->u.i;
    gp->height = (int)h->u.i;
    gp->clip_skip = (int)clip_skip->u.i;
    gp->batch = (int)batch->u.i;
    gp->prediction_type = sdx_map_str(req, "prediction_type", NULL);
    gp->prompt_attention = sdx_map_str(req, "prompt_attention", NULL);
    const sdx_value_t *strength = s_get(req, "hyperparameters.strength", SDX_FLOAT);
    if (strength)
        sdx_value_as_double(strength, &gp->strength);
    *dtype = dt->u.str.ptr;
    return 0;
}

int sdxl_gen_generate(int argc, char **argv)
{
    sdxl_engine_params_t ep;
    sdxl_gen_params_t gp;
    sdxl_engine_params_init(&ep);
    sdxl_gen_params_init(&gp);
    const char *out = "out.png", *latents_out = NULL, *schemas_dir = NULL;
    const char *preview_decoder = NULL;
    s_previews_t pv = {.dir = "."};
    sdx_taesd_t *taesd = NULL;
    bool quiet = false, dtype_given = false;
    s_refiner_t rf = {0};
    char seed_dev[16];
    long v;
    /* the validator's own log: warnings and errors only (the load line is
       not news to a command-line user) */
    sdx_log_init("sdxl-gen", SDX_LOG_WARN);
    sdx_value_t *req = sdx_value_map_new();
    if (!req)
        return s_bad("%s", "out of memory");

    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        size_t f = 0;
        while (f < S_NFIELDS && strcmp(s_fields[f].flag, a) != 0)
            f++;
        bool takes = f == S_NFIELDS || s_fields[f].kind != 'b';
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(s_usage, stdout);
            sdx_value_destroy(&req);
            return 0;
        } else if (!strcmp(a, "--quiet")) {
            quiet = true;
            takes = false;
        } else if (!strcmp(a, "--vae-f32")) {
            ep.vae_f32 = true;
            takes = false;
        } else if (takes && !val) {
            rc = s_known_option(a) ? s_bad("%s needs a value", a)
                                   : (fputs(s_usage, stderr), s_bad("unknown option %s", a));
        } else if (f < S_NFIELDS) {
            sdx_value_t *fv = s_value(s_fields[f].kind, val);
            if (!fv)
                rc = s_bad("%s: not a number", a);
            else if (s_put(req, s_fields[f].path, fv) != 0)
                rc = s_bad("%s", "out of memory");
            dtype_given = dtype_given || !strcmp(a, "--dtype");
        } else if (!strcmp(a, "--model")) {
            ep.model_path = val;
        } else if (!strcmp(a, "--config-dir")) {
            ep.config_dir = val;
        } else if (!strcmp(a, "--vae")) {
            ep.vae_path = val;
        } else if (!strcmp(a, "--tokenizer")) {
            ep.tokenizer_dir = val;
        } else if (!strcmp(a, "--tokenizer-2")) {
            ep.tokenizer2_dir = val;
        } else if (!strcmp(a, "--schemas-dir")) {
            schemas_dir = val;
        } else if (!strcmp(a, "--threads")) {
            if (!sdxl_gen_parse_long(val, 1, 1024, &v))
                rc = s_bad("--threads: must be a positive integer, got %s", val);
            else
                ep.threads = (int)v;
        } else if (!strcmp(a, "--device")) {
            if (sdx_device_parse(val, &ep.device) != 0)
                rc = s_bad("--device: must be cpu or cuda:N, got %s", val);
        } else if (!strcmp(a, "--channels-last")) {
            if (!strcmp(val, "on"))
                ep.channels_last = 1;
            else if (!strcmp(val, "off"))
                ep.channels_last = 0;
            else if (!strcmp(val, "auto"))
                ep.channels_last = -1;
            else
                rc = s_bad("--channels-last: must be on, off or auto, got %s", val);
        } else if (!strcmp(a, "--out")) {
            out = val;
        } else if (!strcmp(a, "--latents-out")) {
            latents_out = val;
        } else if (!strcmp(a, "--init-image")) {
            rc = s_put_file(req, "init_image", val);
        } else if (!strcmp(a, "--refiner")) {
            rf.path = val;
        } else if (!strcmp(a, "--preview-decoder")) {
            preview_decoder = val;
        } else if (!strcmp(a, "--preview-dir")) {
            pv.dir = val;
        } else {
            fputs(s_usage, stderr);
            rc = s_bad("unknown option %s", a);
        }
        if (takes)
            i++;
    }
    if (rc == 0 && !ep.model_path)
        rc = s_bad("%s", "--model is required");
    if (rc == 0 && !sdx_map_get(req, "prompt"))
        rc = s_bad("%s", "--prompt is required");

    /* the request rules: the schema fills the defaults and checks every
       range, exactly as for a request through the broker */
    char serr[512];
    sdx_schema_set_t *schemas = NULL;
    if (rc == 0) {
        schemas = schemas_dir ? sdx_schema_set_load(schemas_dir, serr, sizeof serr)
                              : sdx_schema_set_load_default(serr, sizeof serr);
        if (!schemas) {
            fprintf(stderr, "sdxl-gen generate: schemas%s: %s\n",
                    schemas_dir ? " (--schemas-dir)" : "", serr);
            rc = 2;
        }
    }
    sdx_schema_error_t se;
    int vrc =
        rc == 0 ? sdx_schema_check_request(schemas, NULL, "inference.generate", &req, &se) : 0;
    if (rc == 0 && vrc != 0) {
        if (vrc == 1)
            fprintf(stderr, "sdxl-gen generate: the schemas folder has no inference.generate "
                            "schema\n");
        else
            fprintf(stderr, "sdxl-gen generate: %s: %s\n",
                    se.field[0] ? s_flag_of(se.field) : "request", se.message);
        rc = 2;
    }
    const char *dtype = NULL;
    if (rc == 0)
        rc = s_from_request(req, &gp, &dtype);
    if (rc == 0 && rf.path) {
        const sdx_value_t *sw = s_get(req, "refiner.switch_at", SDX_FLOAT);
        const sdx_value_t *as = s_get(req, "refiner.aesthetic_score", SDX_FLOAT);
        const sdx_value_t *ns = s_get(req, "refiner.negative_aesthetic_score", SDX_FLOAT);
        if (!sw || !as || !ns)
            rc = 2;
        else {
            sdx_value_as_double(sw, &rf.switch_at);
            sdx_value_as_double(as, &rf.aesthetic_score);
            sdx_value_as_double(ns, &rf.negative_aesthetic_score);
        }
    }
    if (rc == 0) {
        ep.dtype = !strcmp(dtype, "fp16") ? SDX_F16 : !strcmp(dtype, "bf16") ? SDX_BF16 : SDX_F32;
        /* fp16, the schema's default, is for GPUs: on the CPU the default runs
           fp32, as the inference worker runs it (an explicit --dtype fp16 is
           tried below) */
        if (ep.dtype == SDX_F16 && !dtype_given && ep.device.type == SDX_CPU)
            ep.dtype = SDX_F32;
    }
    if (rc == 0 && ep.device.type == SDX_CUDA && ep.device.index >= sdx_cuda_device_count())
        rc = s_bad("--device: cuda:%s is not available (this libtorch sees no such CUDA device)",
                   (snprintf(seed_dev, sizeof seed_dev, "%d", ep.device.index), seed_dev));
    char why[512];
    if (rc == 0 && ep.dtype == SDX_F16 && ep.device.type == SDX_CPU &&
        !s_half_works(ep.device, why, sizeof why)) {
        fprintf(stderr,
                "sdxl-gen generate: --dtype fp16 on the CPU needs Half LayerNorm/matmul, which "
                "libtorch %s lacks on the CPU (%s); use --dtype bf16 or fp32, or a CUDA device\n",
                sdx_torch_version(), why);
        rc = 2;
    }
    sdx_image_t init = {0};
    const sdx_value_t *iv = sdx_map_get(req, "init_image");
    if (rc == 0 && iv && iv->type == SDX_BIN) {
        if (sdx_image_decode_fit(iv->u.bin.ptr, iv->u.bin.len, gp.width, gp.height, &init) != 0)
            rc = s_bad("--init-image: %s", sdx_last_error());
        else
            gp.init_image = &init;
    }
    const sdx_value_t *pvr = sdx_map_get_path(req, "output.preview");
    if (rc == 0 && pvr && pvr->type == SDX_MAP) {
        const sdx_value_t *every = s_get(req, "output.preview.every", SDX_INT);
        const sdx_value_t *fmt = s_get(req, "output.preview.format", SDX_STR);
        const sdx_value_t *q = s_get(req, "output.preview.quality", SDX_INT);
        if (!every || !fmt || !q)
            rc = 2;
        else if (!preview_decoder)
            rc = s_bad("%s", "--preview-every needs --preview-decoder PATH (a TAESD folder or "
                             "file)");
        else if (access(pv.dir, W_OK) != 0)
            rc = s_bad("--preview-dir: %s is not a writable folder", pv.dir);
        else if (!(taesd = sdx_taesd_load(preview_decoder,
                                          ep.device.type == SDX_CUDA ? SDX_F16 : SDX_F32,
                                          ep.device)))
            rc = s_bad("--preview-decoder: %s", sdx_last_error());
        else {
            sdx_encode_opts_init(&pv.opts);
            pv.opts.format = sdx_img_format_parse(fmt->u.str.ptr);
            pv.opts.quality = (int)q->u.i;
            pv.ext = pv.opts.format == SDX_FMT_JPEG ? "jpg" : fmt->u.str.ptr;
            gp.preview_decoder = taesd;
            gp.preview_every = (int)every->u.i;
            gp.preview = s_on_preview;
            gp.preview_ud = &pv;
        }
    } else if (rc == 0 && preview_decoder) {
        rc = s_bad("%s", "--preview-decoder is for --preview-every N");
    }
    if (rc == 0)
        rc = s_generate(&ep, &gp, &rf, out, latents_out, quiet);
    if (rc == 0 && taesd && !quiet)
        printf("previews: %d written to %s\n", pv.written, pv.dir);
    if (rc == 0 && pv.error[0]) {
        fprintf(stderr, "sdxl-gen generate: %s\n", pv.error);
        rc = 1;
    }
    sdx_taesd_free(&taesd);
    sdx_image_clear(&init);
    sdx_schema_set_destroy(&schemas);
    sdx_value_destroy(&req);
    return rc;
}

/* Load, generate, write the files and the summary line. gp's strings
   borrow from the caller's request. */
/* The checkpoint's name as the worker names it: the file or folder name
   without .safetensors. */
static void s_model_name(const char *path, char *out, size_t len)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash && slash[1] ? slash + 1 : path;
    size_t n = strlen(base);
    while (n > 1 && base[n - 1] == '/')
        n--;
    if (n > 12 && strncmp(base + n - 12, ".safetensors", 12) == 0)
        n -= 12;
    snprintf(out, len, "%.*s", (int)n, base);
}

static int s_generate(sdxl_engine_params_t *ep_in, sdxl_gen_params_t *gp_in,
                      const s_refiner_t *rf, const char *out, const char *latents_out,
                      bool quiet)
{
    sdxl_engine_params_t ep = *ep_in;
    sdxl_gen_params_t gp = *gp_in;
    ep.log = s_log;
    ep.log_ud = &quiet;
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    if (!e) {
        fprintf(stderr, "sdxl-gen generate: %s\n", sdx_last_error());
        return 2;
    }
    gp.progress = s_progress;
    gp.progress_ud = &quiet;
    if (rf->path) { /* the base's part: latents for the refiner, no decode */
        gp.denoising_end = rf->switch_at;
        gp.decode = false;
    }
    sdxl_result_t r;
    int grc = sdxl_generate(e, &gp, &r);
    if (grc == 0 && rf->path) {
        sdxl_engine_free(&e); /* the refiner's turn: one engine in memory at a time */
        sdxl_engine_params_t rp = ep;
        rp.model_path = rf->path;
        rp.config_dir = NULL;
        rp.components_path = ep.model_path; /* what a UNet-only refiner lacks */
        sdxl_result_t r2;
        e = sdxl_engine_new(&rp);
        grc = e ? sdxl_refine(e, &gp, &r, rf->aesthetic_score, rf->negative_aesthetic_score, &r2)
                : -1;
        sdxl_result_clear(&r);
        if (grc == 0)
            r = r2;
        else
            r.input_error = !e || r2.input_error;
    }
    if (grc != 0) {
        fprintf(stderr, "sdxl-gen generate: %s\n", sdx_last_error());
        sdxl_engine_free(&e);
        return r.input_error ? 2 : 1;
    }
    int rc = 0;
    char seed_text[32], steps_text[16];
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)gp.seed);
    snprintf(steps_text, sizeof steps_text, "%d", gp.steps);
    const char *meta[] = {"prompt", gp.prompt, "seed", seed_text, "steps", steps_text,
                          "software", "sdxl-fleet", NULL};
    /* A1111's parameters text, Model: the checkpoint's name (the file or
       folder name without .safetensors), as the inference worker writes it */
    char model_name[256];
    s_model_name(ep.model_path, model_name, sizeof model_name);
    /* Model hash: AutoV2 of a single file (a folder has none), as the worker */
    char autov2[11] = "";
    if (sdxl_model_autov2(ep.model_path, autov2) != 0)
        autov2[0] = '\0';
    char extra[400] = "";
    if (rf->path) {
        char rname[256];
        s_model_name(rf->path, rname, sizeof rname);
        sdxl_infotext_refiner(rname, rf->switch_at, extra, sizeof extra);
    }
    char *text = sdxl_infotext(&gp, &r, model_name, autov2, extra);
    sdx_encode_opts_t eo;
    sdx_encode_opts_init(&eo);
    eo.text = text;
    eo.png_extra = meta;
    /* the summary names what was written: out, or out-0 .. out-(N-1) */
    char written[1024] = "";
    size_t wl = 0;
    for (int i = 0; i < r.count && rc == 0; i++) {
        char path[4096];
        s_indexed(path, sizeof path, out, i, r.count);
        uint8_t *png = NULL;
        size_t png_len = 0;
        if (sdx_image_encode(&r.images[i], &eo, &png, &png_len) != 0) {
            fprintf(stderr, "sdxl-gen generate: %s\n", sdx_last_error());
            rc = 1;
        } else if (s_write_bytes(path, png, png_len) != 0) {
            fprintf(stderr, "sdxl-gen generate: cannot write %s: %s\n", path, strerror(errno));
            rc = 1;
        } else if (wl < sizeof written) {
            int k = snprintf(written + wl, sizeof written - wl, "%s%s", i ? ", " : "", path);
            wl += k > 0 ? (size_t)k : 0;
        }
        free(png);
    }
    if (wl >= sizeof written) { /* too many names for one line: first .. last */
        char first[2048], last[2048];
        s_indexed(first, sizeof first, out, 0, r.count);
        s_indexed(last, sizeof last, out, r.count - 1, r.count);
        snprintf(written, sizeof written, "%.480s .. %.480s", first, last);
    }
    if (rc == 0 && latents_out) {
        const char *names[] = {"latents"};
        sdx_tensor_t *ts[] = {r.latents};
        if (sdx_safetensors_write(latents_out, names, ts, 1, NULL) != 0) {
            fprintf(stderr, "sdxl-gen generate: %s\n", sdx_last_error());
            rc = 1;
        }
    }
    if (rc == 0)
        printf("generated %d image(s) %dx%d -> %s  seed %llu  steps %d  encode %.0f ms  "
               "denoise %.0f ms (%.1f ms/step)  decode %.0f ms  total %.0f ms\n",
               r.count, r.count ? r.images[0].width : 0, r.count ? r.images[0].height : 0, written,
               (unsigned long long)gp.seed, r.steps_done, r.encode_ms, r.denoise_ms,
               r.steps_done ? r.denoise_ms / r.steps_done : 0.0, r.decode_ms, r.total_ms);
    free(text);
    sdxl_result_clear(&r);
    sdxl_engine_free(&e);
    return rc;
}
