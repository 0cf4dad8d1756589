/*  bench-engine-bin: the engine benchmark, and the random-weight SDXL maker.

      bench-engine-bin [bench options]          measure one model, print one table
      bench-engine-bin make-random DIR [...]    write a diffusers folder with the
                                                real SDXL base configs and random weights
      bench-engine-bin list-shapes MODEL_DIR    the tensor names and shapes this file
                                                derives from a folder's configs
      bench-engine-bin check-shapes MODEL_DIR   the same against the folder's weights
                                                (exit 0 when identical)

    The benchmark loads a model through sdxl.h (load time, RSS), then measures
    the pieces directly through sdx_clip/sdx_prompt/sdx_unet/sdx_vae (text
    encoding per prompt for each encoder, ms per UNet step with a CFG batch of
    2, VAE decode) and a whole sdxl_generate() run, and prints one table.
    The baseline measured in the same run is a square at::matmul through the
    shim, in the model's dtype on its device: the UNet's and the VAE decoder's
    achieved GFLOP/s (FLOPs counted from the config: every conv, linear and
    attention product) are printed as a fraction of it, so figures from
    different machines compare as "how much of this machine's GEMM speed the
    network gets".

    The random model (sdxl_random_model.c, shared with sdxl-gen make-tiny)
    lets anyone measure full-size speed without downloading weights: the real
    SDXL base configs, every tensor name and shape derived from them, weights
    seeded N(0, 1/fan_in) as windows into shared random pools. The same
    derivation counts the FLOPs. Not for quality: the images are noise.
*/
#include "sdxl.h"

#include "sdx_clip.h"
#include "sdx_model.h"
#include "sdx_nn.h"
#include "sdx_prompt.h"
#include "sdx_safetensors.h"
#include "sdx_taesd.h"
#include "sdx_tokenizer.h"
#include "sdx_torch.h"
#include "sdx_unet.h"
#include "sdx_vae.h"
#include "sdxl_random_model.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_DEFAULT_GOLDEN "/work/shared/golden/model"
#define S_DEFAULT_CACHE "/tmp/sdxl-fleet-bench/random-sdxl"

/* ================================================================ helpers */

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void s_die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void s_die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench-engine: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* Memory of this process from /proc/self/status, in MiB. */
typedef struct {
    double rss, hwm, anon, file;
} s_mem_t;

static void s_mem_read(s_mem_t *m)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            m->hwm = ru.ru_maxrss / 1024.0;
        return;
    }
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
        {"VmRSS:", offsetof(s_mem_t, rss)},
        {"VmHWM:", offsetof(s_mem_t, hwm)},
        {"RssAnon:", offsetof(s_mem_t, anon)},
        {"RssFile:", offsetof(s_mem_t, file)},
    };
    char line[256];
    while (fgets(line, sizeof line, f)) {
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            size_t n = strlen(keys[i].key);
            if (strncmp(line, keys[i].key, n) == 0)
                *(double *)((char *)m + keys[i].off) = strtod(line + n, NULL) / 1024.0;
        }
    }
    fclose(f);
}

static int s_sync(sdx_device_t dev)
{
    return dev.type == SDX_CUDA ? sdx_cuda_synchronize(dev.index) : 0;
}

static int s_dtype_parse(const char *text, sdx_dtype_t *dt)
{
    static const struct {
        const char *name;
        sdx_dtype_t dt;
    } t[] = {{"fp32", SDX_F32}, {"f32", SDX_F32},     {"float32", SDX_F32}, {"fp16", SDX_F16},
             {"f16", SDX_F16},  {"float16", SDX_F16}, {"bf16", SDX_BF16},   {"bfloat16", SDX_BF16}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(text, t[i].name) == 0) {
            *dt = t[i].dt;
            return 0;
        }
    return -1;
}

/* Write (or find already written) the random SDXL base folder `dir`.
   --tokenizers DIR: a folder holding tokenizer/ and tokenizer_2/ to link
   (default: the engine's built-in CLIP files are written). */
static int s_cmd_make_random(int argc, char **argv)
{
    const char *dir = NULL, *tokenizers = NULL;
    uint64_t seed = 0;
    sdx_dtype_t dt = SDX_F32;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--weights-dtype") && i + 1 < argc) {
            if (s_dtype_parse(argv[++i], &dt) != 0)
                s_die_usage("--weights-dtype: fp32, fp16 or bf16");
        } else if (!strcmp(argv[i], "--tokenizers") && i + 1 < argc)
            tokenizers = argv[++i];
        else if (!strcmp(argv[i], "--force"))
            force = true;
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else
            s_die_usage("usage: bench-engine-bin make-random DIR [--seed N] [--weights-dtype "
                        "fp32|fp16|bf16] [--tokenizers DIR] [--force]");
    }
    if (!dir)
        s_die_usage("make-random: no DIR");
    rmodel_opts_t ro = {RMODEL_SDXL_BASE, seed, dt, tokenizers, false};
    bool cached = false;
    if (rmodel_write(dir, &ro, force, &cached) != 0) {
        fprintf(stderr, "bench-engine: make-random: %s\n", sdx_last_error());
        return 1;
    }
    if (cached)
        fprintf(stderr, "bench-engine: using the random SDXL in %s (cached)\n", dir);
    return 0;
}

/* list-shapes MODEL_DIR: what sdxl_random_model derives from a folder's configs. */
static int s_cmd_list_shapes(int argc, char **argv)
{
    if (argc != 2)
        s_die_usage("usage: bench-engine-bin list-shapes MODEL_DIR");
    if (rmodel_list_shapes(argv[1], stdout) != 0) {
        fprintf(stderr, "bench-engine: %s\n", sdx_last_error());
        return 1;
    }
    return 0;
}

/* check-shapes MODEL_DIR: the derived names and shapes against the folder's
   safetensors headers, both ways. Exit 0 when they are the same set. The
   self-test of the maker: run on the tiny golden model it checks the
   topology rules on a folder that diffusers/transformers wrote. */
static int s_cmd_check_shapes(int argc, char **argv)
{
    if (argc != 2)
        s_die_usage("usage: bench-engine-bin check-shapes MODEL_DIR");
    int bad = rmodel_check_shapes(argv[1], stdout);
    if (bad < 0)
        fprintf(stderr, "bench-engine: %s\n", sdx_last_error());
    return bad != 0;
}

/* ================================================================ benchmark */

typedef struct {
    const char *model, *cache, *prompt, *tokenizers;
    bool random_sdxl, tiny;
    int width, height, steps, threads, warmup, repeat;
    sdx_dtype_t dtype;
    sdx_device_t device;
    bool compare_attn, no_e2e, verbose;
    int channels_last; /* -1 auto (CUDA on, CPU off), 0 off, 1 on */
    uint64_t seed;
} s_opts_t;

/* One measured figure: mean and minimum over the timed repeats. */
typedef struct {
    double mean, min;
    int n;
    bool ok;
} s_time_t;

static void s_time_add(s_time_t *t, double ms)
{
    t->mean = (t->mean * t->n + ms) / (t->n + 1);
    t->min = t->n == 0 || ms < t->min ? ms : t->min;
    t->n++;
    t->ok = true;
}

/* GFLOP/s of an n x n x n at::matmul through the shim: the best single call
   of those made in min_ms (the best, not the mean, so that other processes on
   a shared machine disturb it less). */
static int s_matmul_baseline(sdx_dtype_t dt, sdx_device_t dev, int64_t n, double min_ms,
                             double *gflops)
{
    int rc = -1;
    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *g = sdx_generator_new(1);
    int64_t shape[2] = {n, n};
    sdx_tensor_t *a, *b, *c;
    if (!S || !g)
        goto fail;
    SDX_TRY(sdx_randn(S, &a, g, shape, 2, dt, dev));
    SDX_TRY(sdx_randn(S, &b, g, shape, 2, dt, dev));
    SDX_TRY(sdx_matmul(NULL, &c, a, b)); /* warm-up: BLAS threads, allocator */
    sdx_tensor_free(&c);
    SDX_TRY(s_sync(dev));
    int reps = 0;
    double t0 = s_now_ms(), best = 0;
    while (reps < 3 || s_now_ms() - t0 < min_ms) {
        double t1 = s_now_ms();
        SDX_TRY(sdx_matmul(NULL, &c, a, b));
        sdx_tensor_free(&c);
        SDX_TRY(s_sync(dev));
        double ms = s_now_ms() - t1;
        best = reps == 0 || ms < best ? ms : best;
        reps++;
    }
    *gflops = 2.0 * n * n * n / (best / 1e3) / 1e9;
    rc = 0;
fail:
    sdx_generator_free(&g);
    sdx_scope_free(&S);
    return rc;
}

/* Read every weight once (an all-finite check): a model whose weights are
   mmap'd borrows the file's pages, and without this the first UNet step
   would time the page-ins, not the network. */
static int s_touch_weights(const sdx_model_t *m, bool *finite)
{
    const sdx_weights_t *ws[4] = {m->unet, m->vae, m->te1, m->te2};
    *finite = true;
    for (int k = 0; k < 4; k++) {
        for (size_t i = 0; ws[k] && i < sdx_weights_count(ws[k]); i++) {
            bool fin = false;
            if (sdx_isfinite_all(sdx_weights_tensor_at(ws[k], i), &fin) != 0)
                return -1;
            *finite = *finite && fin;
        }
    }
    return 0;
}

/* Text encoding of one prompt by one encoder (SDXL's request: penultimate
   hidden state, plus the pooled/projected output for text_encoder_2). */
static int s_encode_one(const sdx_clip_t *c, const sdx_tokenizer_t *tok, const char *prompt,
                        bool pooled, sdx_device_t dev, double *ms)
{
    int64_t ids[SDX_CLIP_MAX_LENGTH];
    int64_t shape[2] = {1, SDX_CLIP_MAX_LENGTH};
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *t;
    if (!S)
        return sdx_set_error("out of memory");
    double t0 = s_now_ms();
    SDX_TRY(sdx_tokenizer_encode(tok, prompt, ids, SDX_CLIP_MAX_LENGTH, NULL, NULL));
    SDX_TRY(sdx_from_host(S, &t, ids, SDX_I64, shape, 2));
    sdx_clip_request_t req = {.hidden = {-2}, .n_hidden = 1, .pooled = pooled};
    sdx_clip_output_t out;
    SDX_TRY(sdx_clip_forward(c, S, t, &req, &out));
    SDX_TRY(s_sync(dev));
    *ms = s_now_ms() - t0;
    sdx_scope_free(&S);
    return 0;
fail:
    sdx_scope_free(&S);
    return -1;
}

/* Everything the table shows. */
typedef struct {
    char model_desc[SDX_PATH_MAX + 128];
    double matmul_gflops, matmul_before, matmul_after;
    int64_t matmul_n;
    bool matmul_ok;
    char matmul_err[160];
    double load_ms, touch_ms;
    bool weights_finite;
    s_mem_t mem_before, mem_load, mem_touch, mem_end;
    sdx_cuda_memory_t cuda_load, cuda_end;
    s_time_t te1, te2, prompt, unet, unet_manual, vae;
    s_time_t taesd;        /* a live preview: TAESD decode of one image's latents */
    sdx_dtype_t dtype;     /* the UNet's, as the pieces ran */
    char taesd_err[200];   /* why it was not measured, "" if it was */
    double unet_flops, vae_flops, te1_flops, te2_flops; /* per call as measured */
    int64_t params[4];
    bool e2e_ok;
    sdxl_result_t e2e;
    bool finite;
    int lat_h, lat_w;
    char error[512]; /* the first failure, "" if none */
} s_report_t;

static void s_engine_log(int level, const char *msg, void *ud)
{
    const s_opts_t *o = ud;
    if (o->verbose || level == 0)
        fprintf(stderr, "engine: %s\n", msg);
}

/* FLOPs and parameter counts of what is timed, from the configs: UNet for
   the CFG batch of 2, VAE decoder for one image, each encoder for one prompt. */
static void s_count(const s_opts_t *o, const sdx_model_t *m, s_report_t *r)
{
    rmodel_specs_t sp = {0};
    r->lat_h = o->height / 8;
    r->lat_w = o->width / 8;
    rmodel_unet_specs(&sp, &m->unet_cfg, r->lat_h, r->lat_w, SDX_CLIP_MAX_LENGTH);
    r->unet_flops = 2 * rmodel_flops(&sp, NULL);
    r->params[0] = rmodel_params(&sp);
    sp.n = 0;
    rmodel_vae_specs(&sp, &m->vae_cfg, o->height, o->width);
    static const char *dec[] = {"post_quant_conv", "decoder.", NULL};
    r->vae_flops = rmodel_flops(&sp, dec);
    r->params[1] = rmodel_params(&sp);
    sp.n = 0;
    if (m->te1) {
        rmodel_clip_specs(&sp, &m->te1_cfg, SDX_CLIP_MAX_LENGTH);
        r->te1_flops = rmodel_flops(&sp, NULL);
        r->params[2] = rmodel_params(&sp);
        sp.n = 0;
    }
    rmodel_clip_specs(&sp, &m->te2_cfg, SDX_CLIP_MAX_LENGTH);
    r->te2_flops = rmodel_flops(&sp, NULL);
    r->params[3] = rmodel_params(&sp);
    free(sp.v);
}

static int s_bench_pieces(const s_opts_t *o, sdxl_engine_t *e, s_report_t *r)
{
    const sdx_model_t *m = sdxl_engine_model(e);
    sdx_unet_t *unet = NULL;
    sdx_vae_t *vae = NULL;
    sdx_clip_t *te1 = NULL, *te2 = NULL;
    sdx_tokenizer_t *tok1 = NULL, *tok2 = NULL;
    sdx_scope_t *S = NULL;
    sdx_generator_t *g = NULL;
    sdx_prompt_embeds_t pe = {0};
    int rc = -1;
    const sdx_device_t dev = o->device;

    unet = sdx_unet_new(&m->unet_cfg, m->unet);
    vae = unet ? sdx_vae_new(&m->vae_cfg, m->vae) : NULL;
    te2 = vae ? sdx_clip_new(&m->te2_cfg, m->te2, "text_encoder_2") : NULL;
    if (!te2)
        goto fail;
    /* the same memory format as the engine (sdxl_engine_new's auto rule) */
    bool cl = o->channels_last < 0 ? dev.type == SDX_CUDA : o->channels_last == 1;
    sdx_unet_options(unet)->channels_last = cl;
    sdx_vae_options(vae)->channels_last = cl;
    if (m->te1 && !(te1 = sdx_clip_new(&m->te1_cfg, m->te1, "text_encoder")))
        goto fail;
    if (te1 && !(tok1 = sdx_tokenizer_load(m->tokenizer_dir)))
        goto fail;
    if (!(tok2 = sdx_tokenizer_load(m->tokenizer2_dir)))
        goto fail;

    /* ---- text encoders, one prompt at a time */
    for (int i = 0; i < o->warmup + o->repeat; i++) {
        double ms;
        if (te1) {
            SDX_TRY(s_encode_one(te1, tok1, o->prompt, false, dev, &ms));
            if (i >= o->warmup)
                s_time_add(&r->te1, ms);
        }
        SDX_TRY(s_encode_one(te2, tok2, o->prompt, true, dev, &ms));
        if (i >= o->warmup)
            s_time_add(&r->te2, ms);
    }
    sdx_text_encoders_t tx = {te1, tok1, te2, tok2};
    sdx_prompt_params_t pp;
    sdx_prompt_params_init(&pp);
    const char *prompts[1] = {o->prompt};
    pp.prompt = prompts;
    pp.force_zeros_for_empty_prompt = m->force_zeros_for_empty_prompt;
    for (int i = 0; i < o->warmup + o->repeat; i++) {
        sdx_prompt_embeds_free(&pe);
        double t0 = s_now_ms();
        SDX_TRY(sdx_prompt_encode(&tx, &pp, &pe));
        SDX_TRY(s_sync(dev));
        if (i >= o->warmup)
            s_time_add(&r->prompt, s_now_ms() - t0);
    }

    /* ---- UNet: one denoising call with the CFG batch [negative, positive] */
    S = sdx_scope_new();
    g = sdx_generator_new(o->seed);
    if (!S || !g)
        goto fail;
    const int h = o->height / 8, w = o->width / 8;
    const sdx_dtype_t udt = sdx_unet_dtype(unet);
    r->dtype = udt;
    sdx_tensor_t *x, *t, *ehs, *txt, *ids, *out;
    int64_t xs[4] = {2, m->unet_cfg.in_channels, h, w};
    SDX_TRY(sdx_randn(S, &x, g, xs, 4, udt, dev));
    SDX_TRY(sdx_scalar_tensor(S, &t, 999.0, SDX_F32, dev));
    sdx_tensor_t *pair[2] = {pe.negative_prompt_embeds, pe.prompt_embeds};
    SDX_TRY(sdx_cat(S, &ehs, pair, 2, 0));
    sdx_tensor_t *pool[2] = {pe.negative_pooled_prompt_embeds, pe.pooled_prompt_embeds};
    SDX_TRY(sdx_cat(S, &txt, pool, 2, 0));
    int n_ids = m->arch == SDX_ARCH_SDXL_REFINER ? 5 : 6;
    float tid[2][6];
    for (int b = 0; b < 2; b++) {
        float base[6] = {(float)o->height, (float)o->width, 0, 0,
                         (float)o->height, (float)o->width};
        float refiner[5] = {(float)o->height, (float)o->width, 0, 0, 6.0f};
        memcpy(tid[b], n_ids == 6 ? base : refiner, n_ids * sizeof(float));
    }
    float tid_packed[12];
    for (int b = 0; b < 2; b++)
        memcpy(tid_packed + b * n_ids, tid[b], n_ids * sizeof(float));
    int64_t ts[2] = {2, n_ids};
    SDX_TRY(sdx_from_host(S, &ids, tid_packed, SDX_F32, ts, 2));
    SDX_TRY(sdx_to_device(S, &ids, ids, dev));
    const int unet_calls = o->steps > o->repeat ? o->steps : o->repeat;
    for (int i = 0; i < o->warmup + unet_calls; i++) {
        double t0 = s_now_ms();
        SDX_TRY(sdx_unet_forward(unet, NULL, &out, x, t, ehs, txt, ids, NULL, 0, NULL));
        SDX_TRY(s_sync(dev));
        double ms = s_now_ms() - t0;
        if (i == 0) {
            bool fin = false;
            SDX_TRY(sdx_isfinite_all(out, &fin));
            r->finite = fin;
        }
        sdx_tensor_free(&out);
        if (i >= o->warmup)
            s_time_add(&r->unet, ms);
        if (o->verbose)
            fprintf(stderr, "bench-engine: unet call %d: %.1f ms\n", i + 1, ms);
    }
    if (o->compare_attn) {
        sdx_sdpa_force_manual(true);
        for (int i = 0; i < (o->warmup ? 1 : 0) + 1; i++) {
            double t0 = s_now_ms();
            int frc = sdx_unet_forward(unet, NULL, &out, x, t, ehs, txt, ids, NULL, 0, NULL);
            if (frc == 0)
                frc = s_sync(dev);
            double ms = s_now_ms() - t0;
            sdx_tensor_free(&out);
            if (frc != 0) {
                sdx_sdpa_force_manual(false);
                goto fail;
            }
            if (i == (o->warmup ? 1 : 0))
                s_time_add(&r->unet_manual, ms);
        }
        sdx_sdpa_force_manual(false);
    }

    /* ---- VAE decode of one image */
    sdx_tensor_t *z, *img;
    int64_t zs[4] = {1, m->vae_cfg.latent_channels, h, w};
    SDX_TRY(sdx_randn(S, &z, g, zs, 4, udt, dev));
    for (int i = 0; i < o->warmup + o->repeat; i++) {
        double t0 = s_now_ms();
        SDX_TRY(sdx_vae_decode_latents(vae, NULL, &img, z));
        SDX_TRY(s_sync(dev));
        double ms = s_now_ms() - t0;
        sdx_tensor_free(&img);
        if (i >= o->warmup)
            s_time_add(&r->vae, ms);
    }

    rc = 0;
fail:
    if (rc != 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", sdx_last_error());
        sdx_set_error("%s", why);
    }
    sdx_prompt_embeds_free(&pe);
    sdx_generator_free(&g);
    sdx_scope_free(&S);
    sdx_tokenizer_destroy(&tok1);
    sdx_tokenizer_destroy(&tok2);
    sdx_clip_destroy(&te1);
    sdx_clip_destroy(&te2);
    sdx_vae_free(&vae);
    sdx_unet_free(&unet);
    return rc;
}

/* A TAESD of the released taesdxl shape (the lone-file defaults of
   sdx_taesd.c: 64 channels, blocks 3, 3, 3, 1, 4 latent channels, RGB out)
   with random weights, written once to `path` (its layer numbering is
   sdx_taesd.c's: conv_in 0, a relu, the blocks, an upsample and a bias-free
   conv per level but the last, which ends with the conv to RGB). */
static int s_random_taesd(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0)
        return 0;
    sdx_scope_t *S = sdx_scope_new();
    sdx_generator_t *g = sdx_generator_new(7);
    enum { S_MAX = 96 }; /* 67 tensors: conv_in 2, 10 blocks x 6, 3 upsample convs, out 2 */
    const char *names[S_MAX];
    char store[S_MAX][64];
    sdx_tensor_t *ts[S_MAX];
    int n = 0, rc = -1;
    const int nb[4] = {3, 3, 3, 1};
#define S_ADD(shape_, nd_, fmt_, ...)                                                              \
    do {                                                                                           \
        int64_t sh_[4] = shape_;                                                                   \
        if (n == S_MAX)                                                                            \
            goto out;                                                                              \
        snprintf(store[n], sizeof store[n], fmt_, __VA_ARGS__);                                    \
        names[n] = store[n];                                                                       \
        if (sdx_randn(S, &ts[n], g, sh_, nd_, SDX_F32, (sdx_device_t){SDX_CPU, 0}) != 0 ||       \
            sdx_mul_scalar(S, &ts[n], ts[n], 0.05) != 0)                                           \
            goto out;                                                                              \
        n++;                                                                                       \
    } while (0)
#define S4(a, b, c, d) {a, b, c, d}
    if (!S || !g)
        goto out;
    S_ADD(S4(64, 4, 3, 3), 4, "decoder.layers.%d.weight", 0);
    S_ADD(S4(64, 0, 0, 0), 1, "decoder.layers.%d.bias", 0);
    int k = 2;
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < nb[i]; j++, k++)
            for (int c = 0; c <= 4; c += 2) {
                S_ADD(S4(64, 64, 3, 3), 4, "decoder.layers.%d.conv.%d.weight", k, c);
                S_ADD(S4(64, 0, 0, 0), 1, "decoder.layers.%d.conv.%d.bias", k, c);
            }
        if (i < 3) {
            k++; /* the upsample */
            S_ADD(S4(64, 64, 3, 3), 4, "decoder.layers.%d.weight", k);
        } else {
            S_ADD(S4(3, 64, 3, 3), 4, "decoder.layers.%d.weight", k);
            S_ADD(S4(3, 0, 0, 0), 1, "decoder.layers.%d.bias", k);
        }
        k++;
    }
#undef S_ADD
#undef S4
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        mkdir(dir, 0755);
    }
    rc = sdx_safetensors_write(path, names, ts, n, NULL);
out:
    sdx_generator_free(&g);
    sdx_scope_free(&S);
    return rc;
}

/* The live preview's cost: a full-size random TAESD decoding one image's
   latents at the benchmark's size, in the UNet's dtype on its device. */
static void s_bench_taesd(const s_opts_t *o, sdx_dtype_t dt, s_report_t *r)
{
    const char *path = "/tmp/sdxl-fleet-bench/taesdxl-random.safetensors";
    sdx_taesd_t *t = NULL;
    sdx_scope_t *S = NULL;
    sdx_generator_t *g = NULL;
    if (s_random_taesd(path) != 0 || !(t = sdx_taesd_load(path, dt, o->device)) ||
        !(S = sdx_scope_new()) || !(g = sdx_generator_new(o->seed))) {
        snprintf(r->taesd_err, sizeof r->taesd_err, "%s", sdx_last_error());
        goto out;
    }
    sdx_tensor_t *z = NULL;
    int64_t zs[4] = {1, 4, o->height / 8, o->width / 8};
    if (sdx_randn(S, &z, g, zs, 4, dt, o->device) != 0) {
        snprintf(r->taesd_err, sizeof r->taesd_err, "%s", sdx_last_error());
        goto out;
    }
    for (int i = 0; i < o->warmup + o->repeat; i++) {
        sdx_tensor_t *img = NULL;
        double t0 = s_now_ms();
        if (sdx_taesd_decode(t, NULL, &img, z) != 0 || s_sync(o->device) != 0) {
            snprintf(r->taesd_err, sizeof r->taesd_err, "%s", sdx_last_error());
            sdx_tensor_free(&img);
            goto out;
        }
        double ms = s_now_ms() - t0;
        sdx_tensor_free(&img);
        if (i >= o->warmup)
            s_time_add(&r->taesd, ms);
    }
out:
    sdx_generator_free(&g);
    sdx_scope_free(&S);
    sdx_taesd_free(&t);
}

/* ---------------------------------------------------------------- table */

static void s_fmt_mb(char *buf, size_t n, double mb)
{
    if (mb >= 1024)
        snprintf(buf, n, "%.2f GiB", mb / 1024);
    else
        snprintf(buf, n, "%.0f MiB", mb);
}

static void s_row(const char *what, const char *value, const char *note)
{
    printf("  %-34s %16s   %s\n", what, value, note ? note : "");
}

static void s_row_time(const char *what, const s_time_t *t, const char *note)
{
    char v[64];
    if (!t->ok)
        snprintf(v, sizeof v, "n/a");
    else
        snprintf(v, sizeof v, "%.1f ms", t->mean);
    char n2[320];
    if (t->ok && t->n > 1)
        snprintf(n2, sizeof n2, "min %.1f ms over %d; %s", t->min, t->n, note ? note : "");
    else
        snprintf(n2, sizeof n2, "%s", note ? note : "");
    s_row(what, v, n2);
}

static void s_print(const s_opts_t *o, const s_report_t *r)
{
    char v[64], n[320], a[64], b[64];
    printf("\nbench-engine: %s\n", r->model_desc);
    printf("  device %s%s%d, dtype %s, %d CPU threads, libtorch %s; %dx%d (latents %dx%d), "
           "steps %d, warm-up %d, repeats %d\n",
           o->device.type == SDX_CUDA ? "cuda" : "cpu", o->device.type == SDX_CUDA ? ":" : "",
           o->device.type == SDX_CUDA ? o->device.index : 0, sdx_dtype_name(o->dtype),
           sdx_get_num_threads(), sdx_torch_version(), o->width, o->height, r->lat_w, r->lat_h,
           o->steps, o->warmup, o->repeat);
    printf("  params: unet %.1f M, vae %.1f M, text_encoder %.1f M, text_encoder_2 %.1f M\n\n",
           r->params[0] / 1e6, r->params[1] / 1e6, r->params[2] / 1e6, r->params[3] / 1e6);
    printf("  %-34s %16s   %s\n", "measure", "value", "ratio / note");
    printf("  %-34s %16s   %s\n", "----------------------------------", "----------------",
           "---------------------------------------------");
    double base = r->matmul_ok ? r->matmul_gflops : 0;
    if (r->matmul_ok) {
        snprintf(v, sizeof v, "%.1f GFLOP/s", base);
        snprintf(n, sizeof n,
                 "BASELINE = 1.00: at::matmul %lld^3 %s, best call (before load %.1f, after "
                 "run %.1f)",
                 (long long)r->matmul_n, sdx_dtype_name(o->dtype), r->matmul_before,
                 r->matmul_after);
        s_row("matmul baseline", v, n);
    } else {
        s_row("matmul baseline", "n/a", r->matmul_err);
    }
    snprintf(v, sizeof v, "%.0f ms", r->load_ms);
    s_row("model load (sdxl_engine_new)", v,
          r->mem_load.file > 256 ? "weights mmap'd: pages are read on first use" : NULL);
    s_fmt_mb(v, sizeof v, r->mem_load.rss);
    s_fmt_mb(a, sizeof a, r->mem_load.anon);
    s_fmt_mb(b, sizeof b, r->mem_load.file);
    snprintf(n, sizeof n, "anon %s + file-backed %s; before load %.0f MiB", a, b,
             r->mem_before.rss);
    s_row("RSS after load", v, n);
    s_fmt_mb(v, sizeof v, r->mem_load.hwm);
    s_row("peak RSS (VmHWM) after load", v, NULL);
    snprintf(v, sizeof v, "%.0f ms", r->touch_ms);
    s_fmt_mb(a, sizeof a, r->mem_touch.rss);
    s_fmt_mb(b, sizeof b, r->mem_touch.file);
    snprintf(n, sizeof n, "every weight read once (finite: %s); RSS now %s, file-backed %s",
             r->weights_finite ? "yes" : "NO", a, b);
    s_row("weights first read (page-in)", v, n);

    double step = r->unet.ok ? r->unet.mean : 0;
    n[0] = 0;
    if (r->te1.ok)
        snprintf(n, sizeof n, "%.3f GFLOP -> %.1f GFLOP/s", r->te1_flops / 1e9,
                 r->te1_flops / r->te1.mean / 1e6);
    s_row_time("text_encoder (CLIP-L) / prompt", &r->te1, n);
    n[0] = 0;
    if (r->te2.ok)
        snprintf(n, sizeof n, "%.3f GFLOP -> %.1f GFLOP/s", r->te2_flops / 1e9,
                 r->te2_flops / r->te2.mean / 1e6);
    s_row_time("text_encoder_2 (bigG) / prompt", &r->te2, n);
    n[0] = 0;
    if (r->prompt.ok && step > 0)
        snprintf(n, sizeof n, "= %.3f x UNet step", r->prompt.mean / step);
    s_row_time("encode_prompt (both, + CFG zeros)", &r->prompt, n);
    n[0] = 0;
    if (r->unet.ok) {
        double gf = r->unet_flops / step / 1e6;
        snprintf(n, sizeof n, "%.1f GFLOP -> %.1f GFLOP/s = %.2f x baseline", r->unet_flops / 1e9,
                 gf, base > 0 ? gf / base : 0);
    }
    s_row_time("UNet step (CFG batch 2)", &r->unet, n);
    if (r->unet_manual.ok) {
        snprintf(n, sizeof n, "= %.2f x the fused-SDPA step%s", r->unet_manual.mean / step,
                 strncmp(sdx_torch_version(), "1.", 2) == 0
                     ? " (libtorch < 2.0: both are the manual path)"
                     : "");
        s_row_time("UNet step, manual attention", &r->unet_manual, n);
    }
    n[0] = 0;
    if (r->vae.ok) {
        double gf = r->vae_flops / r->vae.mean / 1e6;
        snprintf(n, sizeof n, "%.1f GFLOP -> %.1f GFLOP/s = %.2f x baseline", r->vae_flops / 1e9,
                 gf, base > 0 ? gf / base : 0);
    }
    s_row_time("VAE decode (1 image)", &r->vae, n);
    n[0] = 0;
    if (r->taesd.ok && r->unet.ok)
        snprintf(n, sizeof n,
                 "random taesdxl shape; = %.3f x UNet step, %.3f x VAE decode; every 5 steps "
                 "adds %.1f%% to the loop",
                 r->taesd.mean / r->unet.mean, r->vae.ok ? r->taesd.mean / r->vae.mean : 0,
                 100.0 * r->taesd.mean / 5 / r->unet.mean);
    else if (r->taesd_err[0])
        snprintf(n, sizeof n, "%s", r->taesd_err);
    s_row_time("TAESD preview (1 image)", &r->taesd, n);
    if (r->e2e_ok) {
        snprintf(v, sizeof v, "%.1f ms", r->e2e.total_ms);
        snprintf(n, sizeof n,
                 "encode %.0f + denoise %.0f (%.0f/step) + decode %.0f ms; pieces predict %.0f",
                 r->e2e.encode_ms, r->e2e.denoise_ms,
                 r->e2e.steps_done ? r->e2e.denoise_ms / r->e2e.steps_done : 0, r->e2e.decode_ms,
                 r->prompt.mean + o->steps * step + r->vae.mean);
        s_row("end-to-end (sdxl_generate)", v, n);
    } else {
        s_row("end-to-end (sdxl_generate)", "n/a",
              o->no_e2e     ? "--no-e2e"
              : r->error[0] ? "not run or failed (see below)"
                            : "");
    }
    s_fmt_mb(v, sizeof v, r->mem_end.hwm);
    s_fmt_mb(a, sizeof a, r->mem_end.anon);
    s_fmt_mb(b, sizeof b, r->mem_end.file);
    snprintf(n, sizeof n, "now anon %s + file-backed (mmap'd weights) %s", a, b);
    s_row("peak RSS (VmHWM) after the run", v, n);
    if (o->device.type == SDX_CUDA) {
        snprintf(v, sizeof v, "%.0f MiB", r->cuda_end.peak_allocated / 1048576.0);
        snprintf(n, sizeof n, "after load: allocated %.0f MiB; peak reserved %.0f MiB",
                 r->cuda_load.allocated / 1048576.0, r->cuda_end.peak_reserved / 1048576.0);
        s_row("CUDA peak allocated", v, n);
    } else {
        s_row("CUDA memory", "n/a", "cpu run");
    }
    if (r->error[0])
        printf("\n  FAILED: %s%s\n", r->error,
               o->dtype == SDX_F16 && o->device.type == SDX_CPU
                   ? "\n  (libtorch's CPU kernels lack many float16 ops: use bf16 or fp32 on the "
                     "CPU, fp16 on CUDA)"
                   : "");
    printf("\n  UNet output finite: %s. FLOPs count every conv, linear and attention product "
           "(2 per multiply-add),\n  not norms or elementwise ops; \"x baseline\" is the "
           "network's GFLOP/s over the matmul's.\n",
           !r->unet.ok ? "n/a"
           : r->finite ? "yes"
                       : "NO");
}

/* ---------------------------------------------------------------- main */

/* A strict integer option in [lo, hi]; exits with usage 2 otherwise. */
static int s_int_opt(const char *name, const char *text, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi)
        s_die_usage("--%s: an integer in [%ld, %ld], not '%s'", name, lo, hi, text);
    return (int)v;
}

/* Subcommands of bench-engine-bin besides the benchmark itself. */
static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} s_commands[] = {
    {"make-random", s_cmd_make_random},
    {"list-shapes", s_cmd_list_shapes},
    {"check-shapes", s_cmd_check_shapes},
};

static const char s_usage[] =
    "usage: bench-engine-bin [--model PATH | --random-sdxl [--cache DIR] | --tiny]\n"
    "         [--width W] [--height H] [--steps N] [--dtype fp32|fp16|bf16]\n"
    "         [--device cpu|cuda:N] [--threads N] [--prompt TEXT] [--seed N]\n"
    "         [--warmup N] [--repeat N] [--compare-attn] [--no-e2e] [--verbose]\n"
    "         [--channels-last on|off|auto]\n"
    "       bench-engine-bin make-random DIR [--seed N] [--weights-dtype fp32|fp16|bf16]\n"
    "         [--tokenizers DIR] [--force]\n"
    "       bench-engine-bin list-shapes MODEL_DIR | check-shapes MODEL_DIR\n"
    "defaults: --tiny (" S_DEFAULT_GOLDEN "), 128x128 for tiny, 512x512 for --random-sdxl,\n"
    "  1 step, warm-up 1 and 3 repeats for models under 1 G UNet params, else 0 and 1.\n";

int main(int argc, char **argv)
{
    for (size_t i = 0; argc > 1 && i < sizeof s_commands / sizeof s_commands[0]; i++)
        if (strcmp(argv[1], s_commands[i].name) == 0)
            return s_commands[i].fn(argc - 1, argv + 1);

    s_opts_t o = {
        .cache = getenv("SDX_BENCH_CACHE"),
        .tokenizers = getenv("SDX_GOLDEN_MODEL"),
        .prompt = "a photograph of an astronaut riding a horse on the moon, detailed, 8k",
        .steps = 1,
        .warmup = -1,
        .repeat = -1,
        .dtype = SDX_F32,
        .device = {SDX_CPU, 0},
        .seed = 42,
        .channels_last = -1,
    };
    if (!o.cache)
        o.cache = S_DEFAULT_CACHE;
    if (!o.tokenizers)
        o.tokenizers = S_DEFAULT_GOLDEN;
    enum {
        O_MODEL = 256,
        O_RANDOM,
        O_TINY,
        O_CACHE,
        O_W,
        O_H,
        O_STEPS,
        O_DTYPE,
        O_DEVICE,
        O_THREADS,
        O_PROMPT,
        O_SEED,
        O_WARMUP,
        O_REPEAT,
        O_CMP,
        O_NOE2E,
        O_VERBOSE,
        O_CL,
        O_HELP
    };
    /* clang-format off */
    static const struct option lo[] = {
        {"model", required_argument, 0, O_MODEL},
        {"random-sdxl", no_argument, 0, O_RANDOM},
        {"tiny", no_argument, 0, O_TINY},
        {"cache", required_argument, 0, O_CACHE},
        {"width", required_argument, 0, O_W},
        {"height", required_argument, 0, O_H},
        {"steps", required_argument, 0, O_STEPS},
        {"dtype", required_argument, 0, O_DTYPE},
        {"device", required_argument, 0, O_DEVICE},
        {"threads", required_argument, 0, O_THREADS},
        {"prompt", required_argument, 0, O_PROMPT},
        {"seed", required_argument, 0, O_SEED},
        {"warmup", required_argument, 0, O_WARMUP},
        {"repeat", required_argument, 0, O_REPEAT},
        {"compare-attn", no_argument, 0, O_CMP},
        {"no-e2e", no_argument, 0, O_NOE2E},
        {"verbose", no_argument, 0, O_VERBOSE},
        {"channels-last", required_argument, 0, O_CL},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    /* clang-format on */
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case O_MODEL:
            o.model = optarg;
            break;
        case O_RANDOM:
            o.random_sdxl = true;
            break;
        case O_TINY:
            o.tiny = true;
            break;
        case O_CACHE:
            o.cache = optarg;
            break;
        case O_W:
            o.width = s_int_opt("width", optarg, 64, 16384);
            break;
        case O_H:
            o.height = s_int_opt("height", optarg, 64, 16384);
            break;
        case O_STEPS:
            o.steps = s_int_opt("steps", optarg, 1, 1000);
            break;
        case O_DTYPE:
            if (s_dtype_parse(optarg, &o.dtype) != 0)
                s_die_usage("--dtype: fp32, fp16 or bf16, not '%s'", optarg);
            break;
        case O_DEVICE:
            if (sdx_device_parse(optarg, &o.device) != 0)
                s_die_usage("--device: %s", sdx_last_error());
            break;
        case O_CL:
            if (!strcmp(optarg, "on"))
                o.channels_last = 1;
            else if (!strcmp(optarg, "off"))
                o.channels_last = 0;
            else if (!strcmp(optarg, "auto"))
                o.channels_last = -1;
            else
                s_die_usage("--channels-last: on, off or auto, not '%s'", optarg);
            break;
        case O_THREADS:
            o.threads = s_int_opt("threads", optarg, 0, 1024);
            break;
        case O_PROMPT:
            o.prompt = optarg;
            break;
        case O_SEED:
            o.seed = strtoull(optarg, NULL, 10);
            break;
        case O_WARMUP:
            o.warmup = s_int_opt("warmup", optarg, 0, 100);
            break;
        case O_REPEAT:
            o.repeat = s_int_opt("repeat", optarg, 1, 1000);
            break;
        case O_CMP:
            o.compare_attn = true;
            break;
        case O_NOE2E:
            o.no_e2e = true;
            break;
        case O_VERBOSE:
            o.verbose = true;
            break;
        case 'h':
        case O_HELP:
            fputs(s_usage, stdout);
            return 0;
        default:
            fputs(s_usage, stderr);
            return 2;
        }
    }
    if (optind < argc)
        s_die_usage("unexpected argument '%s'", argv[optind]);
    if ((o.model != NULL) + o.random_sdxl + o.tiny > 1)
        s_die_usage("give one of --model, --random-sdxl, --tiny");
    if (!o.model && !o.random_sdxl)
        o.tiny = true;
    int def = o.random_sdxl ? 512 : o.tiny ? 128 : 512;
    if (!o.width)
        o.width = o.height ? o.height : def;
    if (!o.height)
        o.height = o.width;
    if (o.width % 8 || o.height % 8 || o.width < 64 || o.height < 64 || o.steps < 1)
        s_die_usage("--width/--height: multiples of 8, at least 64; --steps >= 1");
    if (o.device.type == SDX_CUDA && o.device.index >= sdx_cuda_device_count())
        s_die_usage("--device cuda:%d: this libtorch sees %d CUDA device(s)", o.device.index,
                    sdx_cuda_device_count());
    if (o.threads > 0)
        sdx_set_num_threads(o.threads);

    s_report_t r;
    memset(&r, 0, sizeof r);
    char model_path[SDX_PATH_MAX];
    if (o.random_sdxl) {
        rmodel_opts_t ro = {RMODEL_SDXL_BASE, 0, SDX_F32, NULL, false};
        bool cached = false;
        if (rmodel_write(o.cache, &ro, false, &cached) != 0) {
            fprintf(stderr, "bench-engine: random SDXL: %s\n", sdx_last_error());
            return 1;
        }
        snprintf(model_path, sizeof model_path, "%s", o.cache);
        snprintf(r.model_desc, sizeof r.model_desc,
                 "random-weight SDXL base (real config.json shapes) in %s", o.cache);
    } else {
        snprintf(model_path, sizeof model_path, "%s", o.tiny ? o.tokenizers : o.model);
        snprintf(r.model_desc, sizeof r.model_desc, "%s%s", model_path,
                 o.tiny ? " (tiny golden model)" : "");
    }

    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    s_mem_read(&r.mem_before);

    /* baseline first, before the model takes the memory */
    r.matmul_n = o.device.type == SDX_CUDA ? 4096 : 1024;
    r.matmul_ok = s_matmul_baseline(o.dtype, o.device, r.matmul_n,
                                    o.device.type == SDX_CUDA ? 300 : 600, &r.matmul_before) == 0;
    if (!r.matmul_ok)
        snprintf(r.matmul_err, sizeof r.matmul_err, "%.150s", sdx_last_error());

    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.model_path = model_path;
    ep.dtype = o.dtype;
    ep.device = o.device;
    ep.threads = o.threads;
    ep.channels_last = o.channels_last;
    ep.log = s_engine_log;
    ep.log_ud = &o;
    if (o.device.type == SDX_CUDA)
        sdx_cuda_reset_peak(o.device.index);
    double t0 = s_now_ms();
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    if (!e) {
        fprintf(stderr, "bench-engine: load %s: %s\n", model_path, sdx_last_error());
        sdx_inference_guard_free(&guard);
        return 1;
    }
    if (o.device.type == SDX_CUDA)
        sdx_cuda_synchronize(o.device.index);
    r.load_ms = s_now_ms() - t0;
    s_mem_read(&r.mem_load);
    if (o.device.type == SDX_CUDA)
        sdx_cuda_memory(o.device.index, &r.cuda_load);

    const sdx_model_t *m = sdxl_engine_model(e);
    t0 = s_now_ms();
    if (s_touch_weights(m, &r.weights_finite) != 0 || s_sync(o.device) != 0) {
        fprintf(stderr, "bench-engine: reading the weights: %s\n", sdx_last_error());
        sdxl_engine_free(&e);
        sdx_inference_guard_free(&guard);
        return 1;
    }
    r.touch_ms = s_now_ms() - t0;
    s_mem_read(&r.mem_touch);
    bool big = sdx_weights_param_count(m->unet) > 1000000000;
    if (o.warmup < 0)
        o.warmup = big && o.device.type == SDX_CPU ? 0 : 1;
    if (o.repeat < 1)
        o.repeat = big ? 1 : 3;

    int rc = 0;
    s_count(&o, m, &r);
    if (s_bench_pieces(&o, e, &r) != 0) {
        snprintf(r.error, sizeof r.error, "%s", sdx_last_error());
        rc = 1;
    }
    if (rc == 0)
        s_bench_taesd(&o, r.dtype, &r);
    if (rc == 0 && !o.no_e2e) {
        sdxl_gen_params_t gp;
        sdxl_gen_params_init(&gp);
        gp.prompt = o.prompt;
        gp.width = o.width;
        gp.height = o.height;
        gp.steps = o.steps;
        gp.seed = o.seed;
        if (sdxl_generate(e, &gp, &r.e2e) == 0) {
            r.e2e_ok = true;
        } else {
            snprintf(r.error, sizeof r.error, "sdxl_generate: %s", sdx_last_error());
            rc = 1;
        }
    }
    s_mem_read(&r.mem_end);
    if (o.device.type == SDX_CUDA)
        sdx_cuda_memory(o.device.index, &r.cuda_end);
    if (r.matmul_ok)
        r.matmul_ok =
            s_matmul_baseline(o.dtype, o.device, r.matmul_n, o.device.type == SDX_CUDA ? 300 : 600,
                              &r.matmul_after) == 0;
    r.matmul_gflops = r.matmul_before > r.matmul_after ? r.matmul_before : r.matmul_after;
    s_print(&o, &r);
    if (r.e2e_ok)
        sdxl_result_clear(&r.e2e);
    sdxl_engine_free(&e);
    sdx_inference_guard_free(&guard);
    if (sdx_tensor_live_count() != 0) {
        fprintf(stderr, "bench-engine: %lld tensor handles still live at exit (a leak)\n",
                (long long)sdx_tensor_live_count());
        rc = rc ? rc : 1;
    }
    return rc;
}
