/*  sdxl-gen generate: text-to-image from the command line through sdxl.h.
    Writes PNG(s) and optionally the final latents, prints one summary line
    naming every file written.
    Exit codes: 0 ok, 2 bad arguments / model or dtype that cannot be used /
    parameters the engine refuses (sdxl_result_t.input_error), 1 a failure
    while generating. */
#include "sdxl.h"
#include "sdxl_gen.h"
#include "sdxl_gen_util.h"

#include "sdx_imgcodec.h"
#include "sdx_safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_usage[] =
    "usage: sdxl-gen generate --model PATH [--config-dir DIR] [--tokenizer DIR --tokenizer-2 DIR]\n"
    "         --prompt TEXT [--negative TEXT] [--seed N] [--steps N] [--cfg F]\n"
    "         [--guidance-rescale F] [--width W --height H] [--scheduler NAME] [--karras]\n"
    "         [--clip-skip N] [--prediction-type epsilon|v_prediction] [--batch N]\n"
    "         [--dtype fp32|fp16|bf16] [--device cpu|cuda:N]\n"
    "         [--channels-last on|off|auto] [--vae-f32] [--vae PATH] [--threads N]\n"
    "         [--init-image FILE [--strength F]] [--out FILE.png]\n"
    "         [--latents-out FILE.safetensors] [--quiet]\n"
    "  --batch N writes FILE-0.png .. FILE-(N-1).png; --channels-last auto: on for CUDA\n"
    "  --init-image: img2img from a PNG/JPEG/WebP of the output size, --strength in (0, 1]\n"
    "  (default 0.3)\n";

static int s_bad(const char *fmt, const char *arg)
{
    fprintf(stderr, "sdxl-gen generate: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return 2;
}

static bool s_double(const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end)
        return false;
    *out = v;
    return true;
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

/* An init image file (PNG, JPEG or WebP) decoded to RGB; caller clears. */
static int s_read_image(const char *path, sdx_image_t *img)
{
    FILE *f = fopen(path, "rb");
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
        fprintf(stderr, "sdxl-gen generate: --init-image: cannot read %s: %s\n", path,
                strerror(e ? e : EIO));
        return -1;
    }
    int rc = sdx_image_decode(buf, (size_t)n, 0, img);
    free(buf);
    if (rc != 0)
        fprintf(stderr, "sdxl-gen generate: --init-image %s: %s\n", path, sdx_last_error());
    return rc;
}

int sdxl_gen_generate(int argc, char **argv)
{
    sdxl_engine_params_t ep;
    sdxl_gen_params_t gp;
    sdxl_engine_params_init(&ep);
    sdxl_gen_params_init(&gp);
    const char *out = "out.png", *latents_out = NULL, *init_path = NULL;
    sdx_image_t init = {0};
    bool quiet = false;
    char seed_dev[16];
    long v;
    double d;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(s_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--karras")) {
            gp.karras = 1;
            takes = false;
        } else if (!strcmp(a, "--quiet")) {
            quiet = true;
            takes = false;
        } else if (!strcmp(a, "--vae-f32")) {
            ep.vae_f32 = true;
            takes = false;
        } else if (!val) {
            return s_bad("%s needs a value", a);
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
        } else if (!strcmp(a, "--prompt")) {
            gp.prompt = val;
        } else if (!strcmp(a, "--negative")) {
            gp.negative_prompt = val;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-')
                return s_bad("--seed: not a non-negative integer: %s", val);
            gp.seed = s;
        } else if (!strcmp(a, "--steps")) {
            if (!sdxl_gen_parse_long(val, 1, 1000, &v))
                return s_bad("--steps: must be an integer in 1..1000, got %s", val);
            gp.steps = (int)v;
        } else if (!strcmp(a, "--cfg")) {
            if (!s_double(val, &d) || d < 0 || d > 100)
                return s_bad("--cfg: must be a number in [0, 100], got %s", val);
            gp.guidance_scale = d;
        } else if (!strcmp(a, "--guidance-rescale")) {
            if (!s_double(val, &d) || d < 0 || d > 1)
                return s_bad("--guidance-rescale: must be in [0, 1], got %s", val);
            gp.guidance_rescale = d;
        } else if (!strcmp(a, "--width") || !strcmp(a, "--height")) {
            if (!sdxl_gen_parse_long(val, 8, 8192, &v) || v % 8)
                return s_bad("--width/--height: must be a multiple of 8 in 8..8192, got %s", val);
            *(a[2] == 'w' ? &gp.width : &gp.height) = (int)v;
        } else if (!strcmp(a, "--scheduler")) {
            gp.scheduler = val;
        } else if (!strcmp(a, "--prediction-type")) {
            if (strcmp(val, "epsilon") != 0 && strcmp(val, "v_prediction") != 0)
                return s_bad("--prediction-type: must be epsilon or v_prediction, got %s", val);
            gp.prediction_type = val;
        } else if (!strcmp(a, "--clip-skip")) {
            if (!sdxl_gen_parse_long(val, 0, 10, &v))
                return s_bad("--clip-skip: must be an integer in 0..10, got %s", val);
            gp.clip_skip = (int)v;
        } else if (!strcmp(a, "--batch")) {
            if (!sdxl_gen_parse_long(val, 1, 64, &v))
                return s_bad("--batch: must be an integer in 1..64, got %s", val);
            gp.batch = (int)v;
        } else if (!strcmp(a, "--threads")) {
            if (!sdxl_gen_parse_long(val, 1, 1024, &v))
                return s_bad("--threads: must be a positive integer, got %s", val);
            ep.threads = (int)v;
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(val, "fp32"))
                ep.dtype = SDX_F32;
            else if (!strcmp(val, "fp16"))
                ep.dtype = SDX_F16;
            else if (!strcmp(val, "bf16"))
                ep.dtype = SDX_BF16;
            else
                return s_bad("--dtype: must be fp32, fp16 or bf16, got %s", val);
        } else if (!strcmp(a, "--device")) {
            if (sdx_device_parse(val, &ep.device) != 0)
                return s_bad("--device: must be cpu or cuda:N, got %s", val);
        } else if (!strcmp(a, "--channels-last")) {
            if (!strcmp(val, "on"))
                ep.channels_last = 1;
            else if (!strcmp(val, "off"))
                ep.channels_last = 0;
            else if (!strcmp(val, "auto"))
                ep.channels_last = -1;
            else
                return s_bad("--channels-last: must be on, off or auto, got %s", val);
        } else if (!strcmp(a, "--out")) {
            out = val;
        } else if (!strcmp(a, "--latents-out")) {
            latents_out = val;
        } else if (!strcmp(a, "--init-image")) {
            init_path = val;
        } else if (!strcmp(a, "--strength")) {
            if (!s_double(val, &d) || !(d > 0 && d <= 1))
                return s_bad("--strength: must be a number in (0, 1], got %s", val);
            gp.strength = d;
        } else {
            fputs(s_usage, stderr);
            return s_bad("unknown option %s", a);
        }
        if (takes)
            i++;
    }
    if (!ep.model_path)
        return s_bad("%s", "--model is required");
    if (!gp.prompt)
        return s_bad("%s", "--prompt is required");
    if (ep.device.type == SDX_CUDA && ep.device.index >= sdx_cuda_device_count())
        return s_bad("--device: cuda:%s is not available (this libtorch sees no such CUDA device)",
                     (snprintf(seed_dev, sizeof seed_dev, "%d", ep.device.index), seed_dev));
    char why[512];
    if (ep.dtype == SDX_F16 && ep.device.type == SDX_CPU &&
        !s_half_works(ep.device, why, sizeof why)) {
        fprintf(stderr,
                "sdxl-gen generate: --dtype fp16 on the CPU needs Half LayerNorm/matmul, which "
                "libtorch %s lacks on the CPU (%s); use --dtype bf16 or fp32, or a CUDA device\n",
                sdx_torch_version(), why);
        return 2;
    }

    if (init_path && s_read_image(init_path, &init) != 0)
        return 2;
    gp.init_image = init_path ? &init : NULL;
    ep.log = s_log;
    ep.log_ud = &quiet;
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    if (!e) {
        fprintf(stderr, "sdxl-gen generate: %s\n", sdx_last_error());
        sdx_image_clear(&init);
        return 2;
    }
    gp.progress = s_progress;
    gp.progress_ud = &quiet;
    sdxl_result_t r;
    if (sdxl_generate(e, &gp, &r) != 0) {
        fprintf(stderr, "sdxl-gen generate: %s\n", sdx_last_error());
        sdxl_engine_free(&e);
        sdx_image_clear(&init);
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
    const char *slash = strrchr(ep.model_path, '/');
    const char *mbase = slash && slash[1] ? slash + 1 : ep.model_path;
    size_t mlen = strlen(mbase);
    while (mlen > 1 && mbase[mlen - 1] == '/')
        mlen--;
    if (mlen > 12 && strcmp(mbase + mlen - 12, ".safetensors") == 0)
        mlen -= 12;
    snprintf(model_name, sizeof model_name, "%.*s", (int)mlen, mbase);
    char *text = sdxl_infotext(&gp, &r, model_name);
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
        printf("generated %d image(s) %dx%d -> %s  steps %d  encode %.0f ms  denoise %.0f ms "
               "(%.1f ms/step)  decode %.0f ms  total %.0f ms\n",
               r.count, r.count ? r.images[0].width : 0, r.count ? r.images[0].height : 0, written,
               r.steps_done, r.encode_ms, r.denoise_ms,
               r.steps_done ? r.denoise_ms / r.steps_done : 0.0, r.decode_ms, r.total_ms);
    free(text);
    sdxl_result_clear(&r);
    sdxl_engine_free(&e);
    sdx_image_clear(&init);
    return rc;
}
