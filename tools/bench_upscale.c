/*  bench_upscale.c - upscaler benchmark (not a test): a full-size RRDBNet
    (Real-ESRGAN x4plus shape: 64 features, 23 blocks, 32 growth; random
    weights, written once to a cache file) upscaling a WxH image 4x on this
    machine, once per tile size. Each run is a child process, so its peak RSS
    (wait4's ru_maxrss) is that tile size's alone; the table also gives the
    peak of a child that only loads the model, so the tile's own cost is the
    difference. See tools/bench-upscale. */
#include "sdx_safetensors.h"
#include "sdx_torch.h"
#include "sdx_upscale.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Write a random full-size x4 RRDBNet (BasicSR names) to path. */
static int s_make(const char *path, int feat, int blocks, int grow)
{
    enum { MAXT = 23 * 15 * 2 + 16 };
    char **names = calloc(MAXT, sizeof *names);
    sdx_tensor_t **ts = calloc(MAXT, sizeof *ts);
    size_t n = 0;
    sdx_generator_t *g = sdx_generator_new(1234);
    int rc = 0;
#define CONV(NAME, IN, OUT)                                                                    \
    do {                                                                                       \
        int64_t ws[4] = {(OUT), (IN), 3, 3}, bs[1] = {(OUT)};                                  \
        char *wn = malloc(96), *bn = malloc(96);                                               \
        snprintf(wn, 96, "%s.weight", NAME);                                                   \
        snprintf(bn, 96, "%s.bias", NAME);                                                     \
        sdx_tensor_t *w = NULL, *b = NULL;                                                     \
        rc |= sdx_randn(NULL, &w, g, ws, 4, SDX_F32, (sdx_device_t){SDX_CPU, 0});              \
        rc |= w ? sdx_mul_scalar_(w, 0.1 / (3.0 * (double)(IN))) : -1;                        \
        rc |= sdx_zeros(NULL, &b, bs, 1, SDX_F32, (sdx_device_t){SDX_CPU, 0});                 \
        names[n] = wn, ts[n++] = w;                                                            \
        names[n] = bn, ts[n++] = b;                                                            \
    } while (0)
    CONV("conv_first", 3, feat);
    for (int b = 0; b < blocks; b++)
        for (int k = 1; k <= 3; k++)
            for (int j = 1; j <= 5; j++) {
                char nm[64];
                snprintf(nm, sizeof nm, "body.%d.rdb%d.conv%d", b, k, j);
                CONV(nm, feat + (j - 1) * grow, j == 5 ? feat : grow);
            }
    CONV("conv_body", feat, feat);
    CONV("conv_up1", feat, feat);
    CONV("conv_up2", feat, feat);
    CONV("conv_hr", feat, feat);
    CONV("conv_last", feat, 3);
#undef CONV
    if (rc == 0)
        rc = sdx_safetensors_write(path, (const char *const *)names, ts, n, NULL);
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        sdx_tensor_free(&ts[i]);
    }
    free(names);
    free(ts);
    sdx_generator_free(&g);
    return rc;
}

/* One child: load; upscale with tile (unless tile < 0: load only). */
static void s_child(const char *path, int w, int h, int tile, int pad, int threads, int wfd)
{
    if (threads > 0)
        sdx_set_num_threads(threads);
    double t0 = s_now();
    sdx_rrdb_t *m = sdx_rrdb_load(path, SDX_F32, (sdx_device_t){SDX_CPU, 0});
    double load = s_now() - t0, run = 0;
    int ok = m != NULL;
    if (m && tile >= 0) {
        sdx_image_t in = {w, h, 3, malloc((size_t)w * h * 3)}, out = {0};
        for (size_t i = 0; i < (size_t)w * h * 3; i++)
            in.pixels[i] = (uint8_t)((i * 2654435761u) >> 24);
        sdx_upscale_opts_t o;
        sdx_upscale_opts_init(&o);
        o.tile = tile;
        o.pad = pad;
        t0 = s_now();
        ok = sdx_rrdb_upscale(m, &in, &o, &out) == 0 && out.width == 4 * w;
        run = s_now() - t0;
        if (!ok)
            fprintf(stderr, "upscale: %s\n", sdx_last_error());
        sdx_image_clear(&in);
        sdx_image_clear(&out);
    }
    sdx_rrdb_free(&m);
    double r[3] = {ok, load, run};
    if (write(wfd, r, sizeof r) != (ssize_t)sizeof r)
        _exit(3);
    _exit(0);
}

int main(int argc, char **argv)
{
    int w = 1024, h = 1024, threads = 0, pad = 10;
    int tiles[16] = {128, 256, 512}, ntiles = 3;
    const char *cache = "/tmp/sdxl-fleet-bench/rrdbnet_x4_full.safetensors";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc)
            w = h = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pad") && i + 1 < argc)
            pad = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc)
            cache = argv[++i];
        else if (!strcmp(argv[i], "--tiles") && i + 1 < argc) {
            ntiles = 0;
            for (char *t = strtok(argv[++i], ","); t && ntiles < 16; t = strtok(NULL, ","))
                tiles[ntiles++] = atoi(t);
        } else {
            fprintf(stderr, "usage: bench-upscale [--size N] [--tiles 128,256,512] [--pad N] "
                            "[--threads N] [--cache FILE]\n");
            return 2;
        }
    }
    struct stat sb;
    if (stat(cache, &sb) != 0) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", cache);
        char *sl = strrchr(dir, '/');
        if (sl) {
            *sl = '\0';
            mkdir(dir, 0755);
        }
        fprintf(stderr, "writing the random full-size RRDBNet to %s\n", cache);
        if (s_make(cache, 64, 23, 32) != 0) {
            fprintf(stderr, "cannot write %s: %s\n", cache, sdx_last_error());
            return 1;
        }
    }
    printf("RRDBNet x4 (64 feat, 23 blocks, 32 grow, random weights), %dx%d -> %dx%d, f32, "
           "CPU, threads %d, pad %d\n\n",
           w, h, 4 * w, 4 * h, threads ? threads : sdx_get_num_threads(), pad);
    printf("| tile | time (s) | Mpx out/s | peak RSS (MB) | RSS over load-only (MB) |\n");
    printf("|---|---|---|---|---|\n");
    double base_rss = 0;
    for (int k = -1; k < ntiles; k++) {
        int tile = k < 0 ? -1 : tiles[k];
        int p[2];
        if (pipe(p) != 0)
            return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            s_child(cache, w, h, tile, pad, threads, p[1]);
        }
        close(p[1]);
        double r[3] = {0};
        ssize_t got = read(p[0], r, sizeof r);
        close(p[0]);
        int status;
        struct rusage ru;
        wait4(pid, &status, 0, &ru);
        double rss = ru.ru_maxrss / 1024.0;
        if (got != (ssize_t)sizeof r || !r[0]) {
            printf("| %d | failed | | | |\n", tile);
            continue;
        }
        if (tile < 0) {
            base_rss = rss;
            printf("| (load only) | %.2f load | | %.0f | 0 |\n", r[1], rss);
        } else {
            printf("| %d%s | %.1f | %.3f | %.0f | %.0f |\n", tile, tile ? "" : " (whole)", r[2],
                   16.0 * w * h / 1e6 / r[2], rss, rss - base_rss);
        }
        fflush(stdout);
    }
    return 0;
}
