/*  sdxl-gen make-tiny: write a small random-weight SDXL pipeline in diffusers
    layout, deterministically from a seed, so that a fresh clone has a model
    to run the fleet on (the README's main job) with nothing to download:

        sdxl-gen make-tiny DIR [--seed N] [--force]

    DIR gets model_index.json, unet/, vae/, text_encoder/, text_encoder_2/
    (config.json + float32 safetensors), tokenizer/ and tokenizer_2/ (the CLIP
    BPE files the engine ships, workers/sdxl/data) and scheduler/. The shapes
    are those of the golden data's tiny model (its README gives the
    configuration): ~14 MB, the same code paths as a real SDXL checkpoint.
    The files are byte-identical for a seed on every machine (see
    sdxl_random_model.h for how the values are drawn).

    The folder is written as DIR.tmp-PID and renamed into place, so a reader
    never sees half a model; a non-empty DIR is refused unless --force (then
    it is replaced). Prints DIR on success. Exit 2 for usage errors, 1 when
    writing fails. */
#include "sdx_torch.h"
#include "sdxl_gen.h"
#include "sdxl_gen_util.h"
#include "sdxl_random_model.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char s_usage[] = "usage: sdxl-gen make-tiny DIR [--seed N] [--force]\n";

static int s_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char sub[4096];
        rc = (size_t)snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= sizeof sub
                 ? -1
                 : s_remove_tree(sub);
    }
    closedir(d);
    return rc == 0 ? rmdir(path) : -1;
}

/* 1: a folder with entries, 0: absent or empty, -1: not a folder. */
static int s_dir_state(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return -1;
    DIR *d = opendir(path);
    if (!d)
        return 1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n > 0;
}

int sdxl_gen_make_tiny(int argc, char **argv)
{
    const char *dir = NULL;
    long seed = 1234;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(s_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--force")) {
            force = true;
        } else if (!strcmp(a, "--seed")) {
            if (i + 1 >= argc || !sdxl_gen_parse_long(argv[++i], 0, INT64_MAX, &seed)) {
                fprintf(stderr, "sdxl-gen make-tiny: --seed needs an integer >= 0\n");
                return 2;
            }
        } else if (a[0] == '-' || dir) {
            fprintf(stderr, "sdxl-gen make-tiny: unexpected argument '%s'\n%s", a, s_usage);
            return 2;
        } else {
            dir = a;
        }
    }
    if (!dir || !*dir) {
        fputs(s_usage, stderr);
        return 2;
    }
    int have = s_dir_state(dir);
    if (have < 0 || (have > 0 && !force)) {
        fprintf(stderr, "sdxl-gen make-tiny: %s %s\n", dir,
                have < 0 ? "exists and is not a folder"
                         : "exists and is not empty (--force replaces it)");
        return 2;
    }
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dir, (long)getpid()) >= sizeof tmp) {
        fprintf(stderr, "sdxl-gen make-tiny: %s: path too long\n", dir);
        return 2;
    }
    s_remove_tree(tmp);
    rmodel_opts_t o = {RMODEL_TINY, (uint64_t)seed, SDX_F32, NULL, true};
    if (rmodel_write(tmp, &o, true, NULL) != 0) {
        fprintf(stderr, "sdxl-gen make-tiny: %s\n", sdx_last_error());
        s_remove_tree(tmp);
        return 1;
    }
    if (s_remove_tree(dir) != 0 || rename(tmp, dir) != 0) {
        fprintf(stderr, "sdxl-gen make-tiny: %s: %s\n", dir, strerror(errno));
        s_remove_tree(tmp);
        return 1;
    }
    printf("%s\n", dir);
    return 0;
}
