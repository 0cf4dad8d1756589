/*  replay.c - run every file of the given folders (the seed
    corpus and the regressions folder) through the fuzz target, without
    libFuzzer. Built and run always, so a fixed crash stays fixed; run it
    under ASan (the sanitizer build) to catch out-of-bounds reads. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int s_replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open %s\n", dir);
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[4096];
        struct stat sb;
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        FILE *f = fopen(p, "rb");
        uint8_t *buf = malloc((size_t)sb.st_size + 1);
        size_t len = f && buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
        if (f)
            fclose(f);
        if (!buf || len != (size_t)sb.st_size) {
            fprintf(stderr, "replay: cannot read %s\n", p);
            free(buf);
            closedir(d);
            return -1;
        }
        /* An exact-size copy, so ASan sees reads one past the end. */
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        printf("ok   %s (%zu bytes)\n", p, len);
        n++;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    int total = 0;
    for (int i = 1; i < argc; i++) {
        int n = s_replay_dir(argv[i]);
        if (n < 0)
            return 1;
        total += n;
    }
    printf("%d inputs replayed, 0 failed\n", total);
    return total > 0 ? 0 : 77;
}
