/*  test_sched_cli.c - `sdxl-gen schedule` end to end: runs the binary given
    as argv[1], parses its JSON and compares with the golden tables (DPM++
    2M Karras, Euler, DDIM for 25 steps), then checks the usage errors (one
    line on stderr, exit 2). Skips without golden data. */
#include "sdx_test.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *s_bin;

/* run `bin schedule ARGS`, capture stdout (and the exit code) */
static char *s_run(const char *args, int *rc)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' schedule %s 2>/dev/null", s_bin, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - 1 - len, p)) > 0)
        len += got;
    if (buf) {
        while (len > 0 && buf[len - 1] == '\n')
            len--;
        buf[len] = '\0';
    }
    int st = pclose(p);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static void s_compare(const char *golden, const char *args, int n, bool has_sigmas)
{
    int rc;
    char *out = s_run(args, &rc);
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    if (!sdx_test_check(rc == 0 && j, "schedule %s: exit 0 and JSON", args))
        goto done;
    sdx_test_check(cJSON_IsNumber(cJSON_GetObjectItem(j, "init_noise_sigma")),
                   "schedule %s: init_noise_sigma present", args);
    char rel[256], key[32];
    snprintf(rel, sizeof rel, "ref/schedulers/%s.safetensors", golden);
    sdx_safetensors_t *st = sdx_test_open(rel);
    static const char *what[2] = {"timesteps", "sigmas"};
    for (int w = 0; w < (has_sigmas ? 2 : 1); w++) {
        snprintf(key, sizeof key, "n%d.%s", n, what[w]);
        sdx_tensor_t *ref = sdx_test_get(st, key);
        const cJSON *arr = cJSON_GetObjectItem(j, what[w]);
        if (!ref || !cJSON_IsArray(arr)) {
            sdx_test_check(false, "schedule %s: %s present", args, what[w]);
            sdx_tensor_free(&ref);
            continue;
        }
        int64_t cnt = sdx_tensor_numel(ref);
        double *r = malloc(sizeof(double) * (size_t)cnt);
        sdx_to_host(ref, SDX_F64, r, sizeof(double) * (size_t)cnt);
        bool ok = cJSON_GetArraySize(arr) == cnt;
        for (int i = 0; ok && i < cnt; i++) {
            double v = cJSON_GetArrayItem(arr, i)->valuedouble;
            ok = (float)v == (float)r[i];
        }
        sdx_test_check(ok, "schedule %s: %s equal diffusers' (%lld values)", args, what[w],
                       (long long)cnt);
        free(r);
        sdx_tensor_free(&ref);
    }
    sdx_safetensors_close(&st);
done:
    cJSON_Delete(j);
    free(out);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        sdx_test_skip("usage: test_sched_cli PATH-TO-sdxl-gen");
    s_bin = argv[1];
    sdx_test_path("ref/schedulers/schedulers.json"); /* skips without golden data */
    s_compare("DPMSolverMultistepScheduler_karras", "--scheduler 'DPM++ 2M Karras' --steps 25", 25,
              true);
    s_compare("DPMSolverMultistepScheduler_karras",
              "--scheduler DPMSolverMultistep --karras "
              "--steps 4",
              4, true);
    s_compare("EulerDiscreteScheduler", "--scheduler EulerDiscreteScheduler --steps 25", 25, true);
    s_compare("EulerAncestralDiscreteScheduler", "--scheduler 'Euler a' --steps 4", 4, true);
    s_compare("DDIMScheduler", "--scheduler DDIM --steps 25", 25, false);
    s_compare("UniPCMultistepScheduler", "--scheduler UniPC --steps 25", 25, true);

    static const char *bad[] = {"--scheduler Nope --steps 4",
                                "--scheduler Euler",
                                "--scheduler Euler --steps 0",
                                "--steps 4",
                                "--scheduler 'Euler a' --steps 4 --karras",
                                "--scheduler Euler --steps 4 --config /nonexistent.json",
                                "--scheduler Euler --steps 4 --bogus"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        char *out = s_run(bad[i], &rc);
        sdx_test_check(rc == 2 && out && out[0] == '\0', "schedule %s: exit 2, nothing on stdout",
                       bad[i]);
        free(out);
    }
    /* a config file laid over the SDXL defaults */
    char path[] = "/tmp/sdx_cli_cfg_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        FILE *f = fdopen(fd, "w");
        fputs("{\"_class_name\": \"DDIMScheduler\", \"timestep_spacing\": \"linspace\", "
              "\"unknown\": true}",
              f);
        fclose(f);
        char args[256];
        snprintf(args, sizeof args, "--scheduler DDIM --steps 4 --config %s", path);
        int rc;
        char *out = s_run(args, &rc);
        /* np.linspace(0, 999, 4).round()[::-1] = 999 666 333 0 */
        sdx_test_check(rc == 0 && out && strstr(out, "[999, 666, 333, 0]"),
                       "schedule with --config: linspace spacing (%s)", out ? out : "");
        free(out);
        remove(path);
    }
    return sdx_test_done();
}
