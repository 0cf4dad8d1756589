/*  sdxl-gen: the engine without the fleet. Runs model inspection, tokenizing,
    scheduler tables and whole generations from the command line, so the
    engine can be built and checked alone (e.g. on a GPU machine without the
    ZeroMQ packages). Not for serving: that is sdxl-worker's job. */
#include "sdxl_gen.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
} s_command_t;

static const s_command_t s_commands[] = {
    {"inspect", sdxl_gen_inspect, "inspect PATH [--config-dir DIR]   model format, architecture, tensors (JSON)"},
    {"tokenize", sdxl_gen_tokenize, "tokenize --tokenizer DIR [--pad-id N] TEXT   CLIP token ids (JSON)"},
    {"encode", sdxl_gen_encode, "encode --model PATH --prompt TEXT  SDXL prompt embeddings summary"},
    {"schedule", sdxl_gen_schedule, "schedule --scheduler NAME --steps N [--karras] [--config FILE]"},
    {"generate", sdxl_gen_generate, "generate --model PATH --prompt TEXT [...]   text-to-image"},
    {"make-tiny", sdxl_gen_make_tiny, "make-tiny DIR [--seed N] [--force]   a small random-weight SDXL model"},
};

static void s_usage(FILE *f)
{
    fprintf(f, "usage: sdxl-gen COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof s_commands / sizeof s_commands[0]; i++)
        fprintf(f, "  %s\n", s_commands[i].usage);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        s_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof s_commands / sizeof s_commands[0]; i++) {
        if (strcmp(argv[1], s_commands[i].name) == 0)
            return s_commands[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "sdxl-gen: unknown command '%s'\n", argv[1]);
    s_usage(stderr);
    return 2;
}
