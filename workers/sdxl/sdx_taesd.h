/*  sdx_taesd.h - the decoder of diffusers' AutoencoderTiny (TAESD, 0.27.2
    DecoderTiny), for live previews of the denoising loop: it turns the
    loop's latents into an RGB image in a few milliseconds, where the SDXL
    VAE takes most of a second.

    Topology, from config.json (decoder_block_out_channels C[i],
    num_decoder_blocks N[i], latent_channels, out_channels,
    upsampling_scaling_factor): tanh(x / 3) * 3, conv 3x3 latent -> C[0],
    relu; per level i: N[i] AutoencoderTinyBlocks (conv-relu-conv-relu-conv
    plus a skip, 1x1 without bias when the widths differ, then relu); then,
    but for the last level, a nearest upsample and a 3x3 conv without bias;
    the last level ends with a 3x3 conv with bias to out_channels. The
    output is mapped x * 2 - 1, about [-1, 1] like the VAE's. Weight names
    are diffusers' (decoder.layers.K...). TAESD for SDXL ("taesdxl") takes
    the loop's latents as they are (scaling_factor 1.0).

    Loaded from a diffusers folder (config.json +
    diffusion_pytorch_model.safetensors) or a lone .safetensors (then the
    released taesd/taesdxl config: 64 channels, blocks 3, 3, 3, 1). The
    encoder is not built (previews only decode).
*/
#ifndef SDX_TAESD_H
#define SDX_TAESD_H

#include "sdx_torch.h"

typedef struct sdx_taesd sdx_taesd_t;

/* NULL on failure with "taesd: <path>: ..." in sdx_last_error(). */
sdx_taesd_t *sdx_taesd_load(const char *path, sdx_dtype_t dt, sdx_device_t dev);
void sdx_taesd_free(sdx_taesd_t **t);
const char *sdx_taesd_path(const sdx_taesd_t *t);

/* latents [B, latent_channels, h, w] (any dtype/device: converted) ->
   [B, out_channels, h * f^3, w * f^3] in about [-1, 1], in the decoder's
   dtype, owned per the shim convention. */
int sdx_taesd_decode(const sdx_taesd_t *t, sdx_scope_t *S, sdx_tensor_t **out,
                     const sdx_tensor_t *latents);

#endif
