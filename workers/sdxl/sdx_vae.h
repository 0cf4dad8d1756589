/*  sdx_vae.h - AutoencoderKL (diffusers 0.27.2 semantics) as SDXL uses it:
    decode latents to images, encode images to the latent distribution.

    Scaling: sdx_vae_decode() takes latents ALREADY divided by the scaling
    factor, exactly like diffusers' vae.decode(z); sdx_vae_decode_latents()
    does the division (and the shift, 0 for SDXL) for you. sdx_vae_encode()
    returns the unscaled distribution (mean, logvar, std), like
    vae.encode(x).latent_dist; multiply a sample by scaling_factor yourself
    (or use sdx_vae_scale_latents()).

    force_upcast (the SDXL VAE overflows in float16): when the weights are
    f16 and cfg->force_upcast is set, sdx_vae_new() keeps f32 copies of the
    weights and the VAE computes in f32 (inputs are converted on entry, the
    outputs come back in f32): what diffusers' pipelines do with upcast_vae().
    bf16 weights are not upcast (bf16 has f32's range), as in diffusers.
    The copies cost 4 bytes per parameter (~335 MB for the SDXL VAE); load
    the VAE in f32 to avoid holding both.

    Not yet: tiled decode/encode for very large images.
*/
#ifndef SDX_VAE_H
#define SDX_VAE_H

#include "sdx_model.h"
#include "sdx_nn.h"
#include "sdx_torch.h"

typedef struct sdx_vae sdx_vae_t;

/* Build over borrowed weights (diffusers names, one dtype and device). The
   decoder (post_quant_conv, decoder.*) is required; the encoder (encoder.*,
   quant_conv) is bound when encoder.conv_in.weight is present. On the first
   missing or mis-shaped weight returns NULL with the name in
   sdx_last_error(). The weights must outlive the VAE unless it upcast them
   all (sdx_vae_dtype() != their dtype). Caller frees with sdx_vae_free(). */
sdx_vae_t *sdx_vae_new(const sdx_vae_config_t *cfg, const sdx_weights_t *w);
/* Same, and with force_f32 the VAE computes in f32 whatever its f16/bf16
   weights and force_upcast say (f32 copies as above; outputs in f32);
   false is exactly sdx_vae_new(). */
sdx_vae_t *sdx_vae_new_f32(const sdx_vae_config_t *cfg, const sdx_weights_t *w, bool force_f32);
void sdx_vae_free(sdx_vae_t **v);

/* Run options (fused SDPA, attention chunking, channels-last). Borrowed,
   mutable between calls. */
sdx_nn_ctx_t *sdx_vae_options(sdx_vae_t *v);
/* Decode a batch one sample at a time (diffusers' enable_slicing) to bound
   memory; default off. */
void sdx_vae_set_slicing(sdx_vae_t *v, bool on);
const sdx_vae_config_t *sdx_vae_config(const sdx_vae_t *v);
/* The dtype the VAE computes in (f32 after an upcast) and its device. */
sdx_dtype_t sdx_vae_dtype(const sdx_vae_t *v);
sdx_device_t sdx_vae_device(const sdx_vae_t *v);
bool sdx_vae_has_encoder(const sdx_vae_t *v);

/* z [B, latent_channels, h, w] already divided by the scaling factor ->
   image [B, out_channels, 8h, 8w] (for 4 levels), raw decoder output
   (roughly [-1, 1], not clamped). Output in sdx_vae_dtype(); ownership per
   the shim convention (S, or the caller if S is NULL). */
int sdx_vae_decode(const sdx_vae_t *v, sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *z);
/* Same from the denoiser's latents: z = latents / scaling_factor + shift_factor. */
int sdx_vae_decode_latents(const sdx_vae_t *v, sdx_scope_t *S, sdx_tensor_t **out,
                           const sdx_tensor_t *latents);

/* image [B, in_channels, H, W] in [-1, 1] -> the latent distribution
   [B, latent_channels, H/8, W/8]: mean, logvar (clamped to [-30, 20]) and
   std = exp(logvar / 2). Any output pointer may be NULL (not wanted). */
int sdx_vae_encode(const sdx_vae_t *v, sdx_scope_t *S, sdx_tensor_t **mean, sdx_tensor_t **logvar,
                   sdx_tensor_t **std, const sdx_tensor_t *image);
/* (x - shift_factor) * scaling_factor: a distribution sample or mean as the
   denoiser's latents. */
int sdx_vae_scale_latents(const sdx_vae_t *v, sdx_scope_t *S, sdx_tensor_t **out,
                          const sdx_tensor_t *x);

#endif
