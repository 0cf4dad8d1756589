/*  sdxl_gen.h - subcommands of sdxl-gen, the engine's command-line face.
    Each subcommand lives in tools/sdxl_gen_<name>.c and gets argv starting
    at its own name. Return codes: 0 success, 1 runtime failure, 2 usage or
    input error (one clear line on stderr). */
#ifndef SDXL_GEN_H
#define SDXL_GEN_H

int sdxl_gen_inspect(int argc, char **argv);
int sdxl_gen_tokenize(int argc, char **argv);
int sdxl_gen_schedule(int argc, char **argv);
int sdxl_gen_generate(int argc, char **argv);
int sdxl_gen_encode(int argc, char **argv);
int sdxl_gen_make_tiny(int argc, char **argv);

#endif
