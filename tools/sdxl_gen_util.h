/*  sdxl_gen_util.h - small helpers the sdxl-gen subcommands share for
    reading their command lines. Not for anything a subcommand does after
    its arguments are read. */
#ifndef SDXL_GEN_UTIL_H
#define SDXL_GEN_UTIL_H

#include <stdbool.h>

/* Parse text as a whole base-10 integer in [lo, hi] into *out. False (and
   *out untouched) for empty text, trailing characters, overflow or a value
   out of range. */
bool sdxl_gen_parse_long(const char *text, long lo, long hi, long *out);

#endif
