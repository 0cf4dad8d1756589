/*  sdx_img2img.h - the start of an image-to-image run: what diffusers 0.27.2
    StableDiffusionXLImg2ImgPipeline does before its denoising loop.

    - preprocess: VaeImageProcessor.preprocess of an image that already has
      the output size: 8-bit RGB / 255 * 2 - 1, NCHW (no resize here: an
      image whose size differs from the request is refused, see
      sdx_img2img_check);
    - get_timesteps(steps, strength): t_start = steps - min(int(steps *
      strength), steps), the loop starts at index t_start * order (set as
      the scheduler's begin index);
    - prepare_latents: vae.encode(image).latent_dist.sample(generator) (the
      generator's FIRST draw, shape [1, C, h, w], in the VAE's dtype),
      .to(dtype) * scaling_factor, repeated for the batch, then noise =
      randn([B, C, h, w], generator) (the second draw) and
      scheduler.add_noise(init, noise, timesteps[t_start * order]).

    At strength 1 diffusers runs every step but still starts from
    add_noise(init, noise, timesteps[0]) (for Euler: init + sigma_max *
    noise), not from noise * init_noise_sigma as txt2img does: the image
    keeps a (small) say. Not here: denoising_start (refiner hand-off with
    latents instead of an image), masks (inpainting). */
#ifndef SDX_IMG2IMG_H
#define SDX_IMG2IMG_H

#include "sdx_image.h"
#include "sdx_scheduler.h"
#include "sdx_torch.h"
#include "sdx_vae.h"

/* Refuse what img2img cannot run, with the field named: a VAE without an
   encoder, strength outside (0, 1] (NaN included), an image without pixels
   or not RGB/RGBA, a size that is not a multiple of 8, or a size other than
   the requested want_w x want_h (0: take the image's). On success *w, *h =
   the output size (the image's). 0, or -1 with sdx_last_error(). */
int sdx_img2img_check(const sdx_vae_t *vae, const sdx_image_t *img, double strength, int want_w,
                      int want_h, int *w, int *h);

/* get_timesteps: set sch's begin index for strength (after set_timesteps)
   and return it; -1 with sdx_last_error() when strength leaves no step
   (int(steps * strength) == 0). */
int sdx_img2img_begin(sdx_scheduler_t *sch, double strength);

/* prepare_latents for img (checked with sdx_img2img_check) and a batch of
   `batch`: encode with vae (its encoder is required), sample the posterior
   and draw the noise from gen in diffusers' order, noise to the level of the
   scheduler's begin index (call sdx_img2img_begin first).
   Upcast: diffusers encodes in float32 whenever the VAE config says
   force_upcast, whatever the dtype (bf16 included, unlike decode, which
   upcasts f16 only). When vae computes in another dtype and its config says
   force_upcast, a transient f32 VAE over vae_weights (vae's own weights,
   borrowed) does the encoding, as diffusers' vae.to(float32) ... .to(dtype)
   does; vae_weights NULL: encode with vae as it is.
   *latents [batch, C, H/8, W/8] in dt on dev, new and owned by the caller
   (sdx_tensor_free). 0, or -1 with sdx_last_error(). */
int sdx_img2img_latents(sdx_vae_t *vae, const sdx_weights_t *vae_weights, sdx_scheduler_t *sch,
                        sdx_generator_t *gen, const sdx_image_t *img, int batch, sdx_dtype_t dt,
                        sdx_device_t dev, sdx_tensor_t **latents);

#endif
