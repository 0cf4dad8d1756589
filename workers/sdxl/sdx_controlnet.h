/*  sdx_controlnet.h - diffusers' ControlNetModel (SDXL) and how the pipeline
    applies it (StableDiffusionXLControlNetPipeline, diffusers 0.27.2).

    The network is the UNet's encoder half (sdx_unet_new_encoder, same
    weight names) plus its own parts: controlnet_cond_embedding (conv_in,
    2 * (n - 1) convolutions every second one strided, conv_out; silu
    between), one 1x1 zero conv per skip (controlnet_down_blocks.k) and one
    for the mid block (controlnet_mid_block). Its residuals are scaled by
    the conditioning scale (guess_mode off: the same scale for every one)
    and added to the UNet's skips and mid output.
    Loaded from a diffusers ControlNet folder (config.json +
    diffusion_pytorch_model[.fp16].safetensors) or a lone .safetensors in
    diffusers naming (config.json beside it if there is one, else the base
    UNet's config with diffusers' default conditioning channels).
    Not supported: SGM/A1111-named ControlNets (control_model.*), T2I
    adapters, ControlNet-LoRA, guess mode, global_pool_conditions, bgr
    channel order (all refused at load with a message).
*/
#ifndef SDX_CONTROLNET_H
#define SDX_CONTROLNET_H

#include "sdx_image.h"
#include "sdx_model.h"
#include "sdx_torch.h"
#include "sdx_unet.h"

typedef struct sdx_controlnet sdx_controlnet_t;

/* Load a ControlNet (see above) in dtype dt on dev. `base` is the UNet it
   will steer: the ControlNet must match its config (channels, levels,
   cross_attention_dim, pooled width), checked here. NULL on failure with
   "controlnet: <path>: ..." in sdx_last_error(). Caller owns the result and
   frees it with sdx_controlnet_free(). */
sdx_controlnet_t *sdx_controlnet_load(const char *path, const sdx_unet_config_t *base,
                                      sdx_dtype_t dt, sdx_device_t dev);
void sdx_controlnet_free(sdx_controlnet_t **c);
/* The path it was loaded from (borrowed). */
const char *sdx_controlnet_path(const sdx_controlnet_t *c);
/* Number of down residuals it gives (= the UNet's skips). */
int sdx_controlnet_n_down(const sdx_controlnet_t *c);

/* ControlNetModel.forward(..., conditioning_scale=scale, guess_mode=False):
   cond is the control image [B, 3, 8h, 8w] in [0, 1] (the latents are
   [B, 4, h, w]); the other inputs are those of sdx_unet_forward().
   down_out[0..n_down) and *mid_out get the scaled residuals, owned per the
   shim convention (S, or the caller). max_down is the room in down_out. */
int sdx_controlnet_forward(const sdx_controlnet_t *c, sdx_scope_t *S, sdx_tensor_t **down_out,
                           int max_down, sdx_tensor_t **mid_out, const sdx_tensor_t *sample,
                           const sdx_tensor_t *timestep, const sdx_tensor_t *encoder_hidden_states,
                           const sdx_tensor_t *text_embeds, const sdx_tensor_t *time_ids,
                           const sdx_tensor_t *cond, double scale);

/* An RGB(A) control image as the ControlNet pipeline's control image
   processor makes it (VaeImageProcessor(do_convert_rgb=True,
   do_normalize=False)): resized to w x h when its size differs (Lanczos-3,
   sdx_lanczos_resize: the project's stand-in for PIL's LANCZOS), alpha
   dropped, /255 -> [1, 3, h, w] in [0, 1], in dt on dev. */
int sdx_controlnet_image(sdx_scope_t *S, sdx_tensor_t **out, const sdx_image_t *img, int w, int h,
                         sdx_dtype_t dt, sdx_device_t dev);

/* diffusers' controlnet_keep for step i of n: 0 outside [start, end]
   (i/n < start or (i+1)/n > end), else 1. */
double sdx_controlnet_keep(int i, int n, double start, double end);

/* MultiControlNetModel: the residuals of nets[0..n) (each with its control
   image conds[k] and scale scales[k]; a net whose scale is 0 is skipped,
   as its residuals would be zeros) summed into down_out[0..n_down) and
   *mid_out, owned by S. *any is false (and nothing is set) when every
   scale was 0. The nets must give the same number of residuals. */
int sdx_controlnet_apply(sdx_controlnet_t *const *nets, sdx_tensor_t *const *conds,
                         const double *scales, int n, sdx_scope_t *S, sdx_tensor_t **down_out,
                         int max_down, int *n_down, sdx_tensor_t **mid_out, bool *any,
                         const sdx_tensor_t *sample, const sdx_tensor_t *timestep,
                         const sdx_tensor_t *encoder_hidden_states, const sdx_tensor_t *text_embeds,
                         const sdx_tensor_t *time_ids);

#endif
