/*  sdxl-gen schedule: print a scheduler's tables as diffusers would build
    them, for checking a configuration without a model or a GPU:

        sdxl-gen schedule --scheduler NAME --steps N [--karras] [--config FILE]
        -> {"timesteps": [...], "sigmas": [...], "init_noise_sigma": x}

    NAME is a diffusers class name, its short form or a name users know
    (`--list` prints them). FILE is a diffusers scheduler_config.json laid
    over the SDXL defaults. Timesteps print as integers for the schedulers
    diffusers keeps in int64, sigmas as float32 values (shortest form that
    reads back exactly); schedulers without sigmas print []. Errors: one
    line on stderr, exit 2. Not for generation: see `sdxl-gen generate`. */
#include "sdx_scheduler.h"
#include "sdxl_gen.h"
#include "sdxl_gen_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_usage[] =
    "usage: sdxl-gen schedule --scheduler NAME --steps N [--karras] [--config FILE]\n"
    "       sdxl-gen schedule --list\n";

static int s_fail(const char *what, const char *detail)
{
    fprintf(stderr, "sdxl-gen schedule: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 2;
}

/* float32 value in the shortest decimal form that reads back to it */
static void s_print_f32(float v)
{
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v)
            break;
    }
    /* JSON has no inf/nan; diffusers' tables never hold them */
    if (strstr(buf, "inf") || strstr(buf, "nan"))
        snprintf(buf, sizeof buf, "null");
    fputs(buf, stdout);
}

int sdxl_gen_schedule(int argc, char **argv)
{
    const char *name = NULL, *config = NULL;
    long steps = -1;
    int karras = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(s_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--list")) {
            fputs(sdx_scheduler_names(), stdout);
            return 0;
        } else if (!strcmp(a, "--karras")) {
            karras = 1;
        } else if (!strcmp(a, "--scheduler") || !strcmp(a, "--steps") || !strcmp(a, "--config")) {
            if (i + 1 >= argc)
                return s_fail(a, "missing value");
            const char *v = argv[++i];
            if (!strcmp(a, "--scheduler")) {
                name = v;
            } else if (!strcmp(a, "--config")) {
                config = v;
            } else {
                if (!sdxl_gen_parse_long(v, 1, 100000, &steps))
                    return s_fail("--steps must be a positive integer", v);
            }
        } else {
            return s_fail("unknown argument", a);
        }
    }
    if (!name)
        return s_fail("--scheduler NAME is required (see --list)", NULL);
    if (steps < 0)
        return s_fail("--steps N is required", NULL);

    sdx_scheduler_opts_t opts;
    sdx_scheduler_opts_init(&opts);
    opts.config_path = config;
    opts.karras = karras;
    sdx_scheduler_t *sch = sdx_scheduler_new(name, &opts);
    if (!sch)
        return s_fail(sdx_last_error(), NULL);
    if (sdx_scheduler_set_timesteps(sch, (int)steps) != 0) {
        int rc = s_fail(sdx_last_error(), NULL);
        sdx_scheduler_destroy(&sch);
        return rc;
    }
    bool is_int = sdx_scheduler_timesteps_are_int(sch);
    int n = sdx_scheduler_count(sch), ns = 0;
    const float *sg = sdx_scheduler_sigmas(sch, &ns);
    fputs("{\"timesteps\": [", stdout);
    for (int i = 0; i < n; i++) {
        if (i)
            fputs(", ", stdout);
        double t = sdx_scheduler_timestep(sch, i);
        if (is_int)
            printf("%lld", (long long)t);
        else
            s_print_f32((float)t);
    }
    fputs("], \"sigmas\": [", stdout);
    for (int i = 0; sg && i < ns; i++) {
        if (i)
            fputs(", ", stdout);
        s_print_f32(sg[i]);
    }
    fputs("], \"init_noise_sigma\": ", stdout);
    s_print_f32((float)sdx_scheduler_init_noise_sigma(sch));
    fputs("}\n", stdout);
    sdx_scheduler_destroy(&sch);
    if (fflush(stdout) != 0)
        return s_fail("write failed", strerror(errno));
    return 0;
}
