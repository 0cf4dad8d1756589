/*  fuzz_config.c - libFuzzer target for the YAML config readers: the first
    byte picks the reader, the rest is the file's text.
      % 3 == 0: common/sdx_config.c (the broker's and sdxl-gen's typed
                option tables) through sdx_config_load_yaml_text, on a table
                with every option type, ranges and nested (dotted) keys,
                then sdx_config_dump;
      % 3 == 1: the worker's --config reader (workers/sdx_worker.c):
                sdx_worker_yaml_parse, then sdx_worker_config_text (flat
                keys, `worker:` defaults, `workers:` entries) for a few
                domain / gpu hints;
      % 3 == 2: the fleet file (tools/sdxl_fleet.c, built here with
                -Dmain=sdxl_fleet_main): sdxl_fleet_check_text, what
                `sdxl-fleet --check-config` does.
    Errors are fine; crashes, leaks and unterminated error texts are not.
    Seeds: tests/fuzz/corpus/config (the deploy/ YAML files and variants),
    regressions: tests/fuzz/regressions/config. */
#include "sdx_config.h"
#include "sdx_value.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* workers/sdx_worker.h (its sdx_option_t is another type than
   sdx_config.h's, so the header cannot come in here) */
sdx_value_t *sdx_worker_yaml_parse(const char *text, size_t len, const char *name, char *err,
                                   size_t err_len);
int sdx_worker_config_text(const char *text, size_t len, const char *name,
                           const char *domain_hint, int gpu_hint, char *err, size_t err_len);
/* tools/sdxl_fleet.c */
int sdxl_fleet_check_text(const char *text, size_t len, const char *name, char *err,
                          size_t err_len);

typedef struct {
    char frontend[SDX_CONFIG_STR_MAX];
    char events[SDX_CONFIG_STR_MAX];
    int log_level;
    int64_t max_frame_bytes;
    int64_t heartbeat_ms;
    int64_t prefetch;
    int64_t any_int;
    bool validate;
    char nested[SDX_CONFIG_STR_MAX];
    int64_t deep;
} s_cfg_t;

#define OFF(f) offsetof(s_cfg_t, f)
static const sdx_option_t s_opts[] = {
    {"frontend", "--frontend", SDX_OPT_STR, "tcp://127.0.0.1:5555", "", OFF(frontend), 0, 0},
    {"events", "--events", SDX_OPT_STR, "", "", OFF(events), 0, 0},
    {"log_level", "--log-level", SDX_OPT_LEVEL, "info", "", OFF(log_level), 0, 0},
    {"max_frame_bytes", "--max-frame-bytes", SDX_OPT_SIZE, "16MiB", "", OFF(max_frame_bytes),
     1024, (int64_t)1 << 32},
    {"heartbeat_ms", "--heartbeat-ms", SDX_OPT_INT, "1000", "", OFF(heartbeat_ms), 50, 60000},
    {"prefetch", "--prefetch", SDX_OPT_INT, "-1", "", OFF(prefetch), -1, 64},
    {"any_int", "--any-int", SDX_OPT_INT, "0", "", OFF(any_int), 0, 0},
    {"validate", "--validate", SDX_OPT_BOOL, "true", "", OFF(validate), 0, 0},
    {"limits.path", "--limits-path", SDX_OPT_STR, "", "", OFF(nested), 0, 0},
    {"a.b.c.d.e.f.g", "--deep", SDX_OPT_SIZE, "1k", "", OFF(deep), 0, 0},
};
#define NOPTS (sizeof s_opts / sizeof s_opts[0])

static void s_check_err(const char *err, size_t len)
{
    if (!memchr(err, '\0', len)) {
        fprintf(stderr, "fuzz_config: an error text without its NUL\n");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *s_null;
    if (!s_null && !(s_null = fopen("/dev/null", "w")))
        abort();
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    char err[1024];
    memset(err, 0x55, sizeof err);
    switch (data[0] % 3) {
    case 0: {
        s_cfg_t cfg;
        memset(&cfg, 0, sizeof cfg);
        if (sdx_config_defaults(s_opts, NOPTS, &cfg, err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_config: defaults: %s\n", err);
            abort();
        }
        if (sdx_config_load_yaml_text(s_opts, NOPTS, &cfg, text, n, "fuzz.yaml", err,
                                      sizeof err) != 0)
            s_check_err(err, sizeof err);
        if (!memchr(cfg.frontend, '\0', sizeof cfg.frontend) ||
            !memchr(cfg.nested, '\0', sizeof cfg.nested))
            abort();
        sdx_config_dump(s_opts, NOPTS, &cfg, s_null);
        break;
    }
    case 1: {
        sdx_value_t *root = sdx_worker_yaml_parse(text, n, "worker.yaml", err, sizeof err);
        if (!root)
            s_check_err(err, sizeof err);
        sdx_value_destroy(&root);
        static const struct {
            const char *domain;
            int gpu;
        } hints[] = {{NULL, -1}, {"inference", -1}, {"inference", 1}, {"device", 0}};
        for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++)
            if (sdx_worker_config_text(text, n, "worker.yaml", hints[i].domain, hints[i].gpu, err,
                                       sizeof err) != 0)
                s_check_err(err, sizeof err);
        break;
    }
    default:
        if (sdxl_fleet_check_text(text, n, "fleet.yaml", err, sizeof err) != 0)
            s_check_err(err, sizeof err);
        break;
    }
    return 0;
}
