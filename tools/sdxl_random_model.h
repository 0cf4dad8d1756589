/*  sdxl_random_model.h - random-weight SDXL pipelines in diffusers layout,
    for the tools that need a model nobody has to download:

      - sdxl-gen make-tiny: the tiny preset (the golden data's configuration,
        ~14 MB), the default model of the README's main job;
      - bench-engine make-random: the real SDXL base 1.0 configs (2.6 G
        parameters), for full-size speed figures.

    Every tensor name and shape is derived from the folder's config.json
    files by the topology rules of diffusers' UNet2DConditionModel and
    AutoencoderKL and transformers' CLIPTextModel[WithProjection]; the same
    derivation counts FLOPs for bench-engine. `rmodel_check_shapes` is its
    self-test: on the golden tiny model (written by diffusers) it must find
    every tensor with its shape, and nothing more. Not for quality: the
    images are noise. */
#ifndef SDXL_RANDOM_MODEL_H
#define SDXL_RANDOM_MODEL_H

#include "sdx_model.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define RMODEL_NAME_MAX 192

/* ---------------------------------------------------------------- tensor specs */

/* How a tensor is initialised; RMODEL_FLOPS_ONLY marks an entry that only
   carries the FLOPs of an attention product (no tensor). */
typedef enum { RMODEL_RAND, RMODEL_ONES, RMODEL_ZEROS, RMODEL_FLOPS_ONLY } rmodel_init_t;

typedef struct {
    char name[RMODEL_NAME_MAX];
    int ndim;
    int64_t shape[4];
    rmodel_init_t init;
    double std;   /* RMODEL_RAND */
    double flops; /* per sample: 2 * numel * positions for a conv/linear weight */
} rmodel_spec_t;

typedef struct {
    rmodel_spec_t *v;
    size_t n, cap;
    bool oom; /* an append failed: the list is incomplete */
} rmodel_specs_t;

/* Append the tensors of a UNet at latent size h x w with ctx_len text
   tokens, a VAE for an H x W image, a text encoder on len tokens. */
void rmodel_unet_specs(rmodel_specs_t *sp, const sdx_unet_config_t *c, int64_t h, int64_t w,
                       double ctx_len);
void rmodel_vae_specs(rmodel_specs_t *sp, const sdx_vae_config_t *c, int64_t H, int64_t W);
void rmodel_clip_specs(rmodel_specs_t *sp, const sdx_clip_config_t *c, double len);
/* FLOPs per sample of the entries whose name starts with one of `prefixes`
   (NULL-terminated; NULL: all), and the parameter count. */
double rmodel_flops(const rmodel_specs_t *sp, const char *const *prefixes);
int64_t rmodel_params(const rmodel_specs_t *sp);

/* ---------------------------------------------------------------- folders */

typedef enum {
    RMODEL_TINY,      /* the configuration of ../shared/golden/model */
    RMODEL_SDXL_BASE, /* stabilityai/stable-diffusion-xl-base-1.0's configs */
} rmodel_preset_t;

typedef struct {
    rmodel_preset_t preset;
    uint64_t seed;
    sdx_dtype_t dtype; /* of the written weights */
    /* A folder holding tokenizer/ and tokenizer_2/ to symlink; NULL writes
       the CLIP BPE files the engine ships (workers/sdxl/data) instead. */
    const char *tokenizers;
    bool quiet; /* no progress lines on stderr */
} rmodel_opts_t;

/* Write the pipeline into `dir` (created if missing; existing files are
   overwritten). A `.complete` stamp naming preset, seed and dtype is written
   last; when `dir` already holds the same stamp and !force nothing is
   written and *cached (if given) is set. Weights:
     - tiny: each tensor from its own SplitMix64 stream keyed by the seed
       and its name, uniform with the spec's standard deviation, so the files
       are byte-identical on every machine and libtorch;
     - base: windows into a few seeded libtorch randn pools (a full-size
       f32 UNet is 10 GB; the pools are the size of the largest tensor per
       scale), so tensors are not independent, which changes nothing for
       speed.
   Returns 0, or -1 with sdx_last_error(). */
int rmodel_write(const char *dir, const rmodel_opts_t *o, bool force, bool *cached);

/* "unet down_blocks.0.resnets.0.conv1.weight [16, 16, 3, 3]" per derived
   tensor of the folder's configs, to out. 0 or -1 with sdx_last_error(). */
int rmodel_list_shapes(const char *dir, FILE *out);
/* The derived names and shapes against the folder's safetensors headers,
   both ways; one summary line per component (and the first mismatches) to
   out. Returns the number of components that differ, or -1 with
   sdx_last_error(). */
int rmodel_check_shapes(const char *dir, FILE *out);

#endif
