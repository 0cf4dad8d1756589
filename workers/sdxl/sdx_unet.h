/*  sdx_unet.h - UNet2DConditionModel as SDXL uses it (base and refiner).

    The topology comes entirely from an sdx_unet_config_t (diffusers
    config.json, or sdx_unet_config_sdxl() for single files): levels, channel
    counts, resnets per block, cross-attention levels, heads and transformer
    depth per level. The same code runs the tiny golden models and real SDXL.

    Supported: time embedding (sinusoidal + MLP), "text_time" added
    conditioning (pooled text embeds + sinusoidal time ids, any number of
    ids: 6 for the base, 5 for the refiner), DownBlock2D/CrossAttnDownBlock2D,
    UNetMidBlock2DCrossAttn, UpBlock2D/CrossAttnUpBlock2D, Transformer2DModel
    with linear or conv projection, ControlNet residuals, and the encoder
    half alone (sdx_unet_new_encoder: what ControlNetModel shares).
    Not supported (build fails with a message): time_cond_proj_dim (LCM
    distilled UNets), a mid block without cross-attention.
*/
#ifndef SDX_UNET_H
#define SDX_UNET_H

#include "sdx_model.h"
#include "sdx_nn.h"
#include "sdx_torch.h"

typedef struct sdx_unet sdx_unet_t;

/* Build a UNet over borrowed weights (diffusers names). Every parameter the
   config implies is looked up and its shape checked now; on the first
   problem returns NULL with e.g. "unet: missing weight
   'down_blocks.1.attentions.0.proj_in.weight'" in sdx_last_error().
   All weights must share one dtype and device: the network computes in it.
   The config is copied; the weights must outlive the UNet. Caller owns the
   result and frees it with sdx_unet_free(). */
sdx_unet_t *sdx_unet_new(const sdx_unet_config_t *cfg, const sdx_weights_t *w);
void sdx_unet_free(sdx_unet_t **u);

/* Run options (fused SDPA, attention chunking, channels-last). Borrowed,
   mutable between forwards (not during one). */
sdx_nn_ctx_t *sdx_unet_options(sdx_unet_t *u);
const sdx_unet_config_t *sdx_unet_config(const sdx_unet_t *u);
/* The dtype and device the UNet computes in (those of its weights). */
sdx_dtype_t sdx_unet_dtype(const sdx_unet_t *u);
sdx_device_t sdx_unet_device(const sdx_unet_t *u);
/* Number of ControlNet down residuals the UNet takes (= skip connections:
   1 + n_levels * layers_per_block + n_levels - 1). */
int sdx_unet_n_skips(const sdx_unet_t *u);

/* One UNet call (UNet2DConditionModel.forward(...).sample):
     sample                 [B, in_channels, H, W]
     timestep               0-d, [1] or [B]; any float or integer dtype
     encoder_hidden_states  [B, L, cross_attention_dim]
     text_embeds            [B, P] pooled text embeds   } P + N * addition_time_embed_dim
     time_ids               [B, N] (6 base, 5 refiner)  } = projection_class_embeddings_input_dim
     down_residuals         NULL, or n_down (= sdx_unet_n_skips) ControlNet
                            residuals added to the skip connections in order
     mid_residual           NULL, or the ControlNet residual added after the mid block
   Inputs are borrowed and converted to the UNet's dtype/device as needed.
   *out: [B, out_channels, H, W] in the UNet's dtype, owned as the shim
   convention says (by S, or by the caller if S is NULL). */
int sdx_unet_forward(const sdx_unet_t *u, sdx_scope_t *S, sdx_tensor_t **out,
                     const sdx_tensor_t *sample, const sdx_tensor_t *timestep,
                     const sdx_tensor_t *encoder_hidden_states, const sdx_tensor_t *text_embeds,
                     const sdx_tensor_t *time_ids, sdx_tensor_t *const *down_residuals, int n_down,
                     const sdx_tensor_t *mid_residual);

/* The encoder half of the UNet, which ControlNetModel shares with it (same
   diffusers names): time/add embeddings, conv_in, down blocks, mid block;
   no up path is bound or needed. `what` prefixes build errors ("controlnet";
   NULL: "unet-encoder"). Free with sdx_unet_free(). sdx_unet_forward()
   refuses an encoder-only UNet. */
sdx_unet_t *sdx_unet_new_encoder(const sdx_unet_config_t *cfg, const sdx_weights_t *w,
                                 const char *what);
/* Run the encoder half with the inputs of sdx_unet_forward(). `hint` (may be
   NULL) is added to conv_in's output (ControlNet's conditioning embedding,
   [B, block_out_channels[0], H, W]). skips_out[0..sdx_unet_n_skips()) gets
   the skip connections in diffusers' down_block_res_samples order and
   *mid_out the mid-block output; all owned per the shim convention (S, or
   the caller). max_skips is the room in skips_out. */
int sdx_unet_forward_encoder(const sdx_unet_t *u, sdx_scope_t *S, sdx_tensor_t **skips_out,
                             int max_skips, sdx_tensor_t **mid_out, const sdx_tensor_t *sample,
                             const sdx_tensor_t *timestep,
                             const sdx_tensor_t *encoder_hidden_states,
                             const sdx_tensor_t *text_embeds, const sdx_tensor_t *time_ids,
                             const sdx_tensor_t *hint);

/* Sinusoidal embedding of diffusers' get_timestep_embedding (computed in
   f32, max_period 10000, scale 1): t [N] (any dtype) -> [N, dim].
   Shared with ControlNet. */
int sdx_timestep_embedding(sdx_scope_t *S, sdx_tensor_t **out, const sdx_tensor_t *t, int dim,
                           bool flip_sin_to_cos, double freq_shift);

#endif
