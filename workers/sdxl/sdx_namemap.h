/*  sdx_namemap.h - single-file (SGM / A1111) checkpoint keys to diffusers
    names, driven by the static tables of sdx_namemap.c.

    A single file holds every component under one prefix each:
      model.diffusion_model.*                         UNet (SGM openaimodel names)
      first_stage_model.*                             VAE  (ldm autoencoder names)
      conditioner.embedders.N.transformer.*           CLIP-L, HF names (text_encoder)
      conditioner.embedders.N.model.*                 OpenCLIP bigG (text_encoder_2)
    Keys of text_encoder_2 may map to several diffusers tensors (the fused
    attn.in_proj_weight splits into q/k/v) or need a reshape; the targets say
    how. Everything here is pure string work: no tensors, no files.
*/
#ifndef SDX_NAMEMAP_H
#define SDX_NAMEMAP_H

#include <stdbool.h>
#include <stddef.h>

#define SDX_NM_NAME_MAX 256

typedef enum { SDX_NM_UNET = 0, SDX_NM_VAE, SDX_NM_TE1, SDX_NM_TE2, SDX_NM_NCOMP } sdx_nm_comp_t;

typedef enum {
    SDX_NM_COPY = 0,          /* same values and shape */
    SDX_NM_ROWS,              /* rows [part*n/parts, (part+1)*n/parts) of dim 0 */
    SDX_NM_TRANSPOSE,         /* 2-D transpose (OpenCLIP text_projection [H,P] -> [P,H]) */
    SDX_NM_CONV1X1_TO_LINEAR, /* [O,I,1,1] -> [O,I] (ldm VAE attention); 2-D kept */
} sdx_nm_op_t;

typedef struct {
    sdx_nm_comp_t comp;
    char name[SDX_NM_NAME_MAX]; /* diffusers name inside the component */
    sdx_nm_op_t op;
    int part, parts; /* SDX_NM_ROWS only */
} sdx_nm_target_t;

/* What the index arithmetic needs to know of the model. */
typedef struct {
    int unet_layers_per_block; /* 2 for SDXL */
    int vae_n_levels;          /* 4 for SDXL: ldm numbers decoder levels bottom-up */
} sdx_nm_geom_t;

/* Diffusers component names: "unet", "vae", "text_encoder", "text_encoder_2". */
const char *sdx_nm_comp_name(sdx_nm_comp_t c);

/* The component a single-file key belongs to, and (in *rest, borrowed from
   key) the part after the component prefix. -1 if the key belongs to none
   (such keys are not model weights: EMA copies, sigmas, ...). */
int sdx_namemap_component(const char *key, const char **rest);

/* Map one single-file key to its diffusers targets (at most 3).
   Returns the number of targets; 0 for a key that is known but not a weight
   (position_ids, logit_scale); -1 with sdx_last_error() for a key inside a
   component that no table row knows ("unknown key 'model.diffusion_model.x'"). */
int sdx_namemap_single_file(const char *key, const sdx_nm_geom_t *g, sdx_nm_target_t *out);

/* Per-component forms, for keys without their single-file prefix (e.g. for
   LoRA files that name modules by SGM paths: "input_blocks.4.1.proj_in").
   They map module paths as well as full tensor names. Return as above. */
int sdx_namemap_unet(const char *sgm, int layers_per_block, sdx_nm_target_t *out);
int sdx_namemap_vae(const char *ldm, int n_levels, sdx_nm_target_t *out);
int sdx_namemap_te1(const char *hf, sdx_nm_target_t *out);
int sdx_namemap_te2(const char *openclip, sdx_nm_target_t *out);

#endif
