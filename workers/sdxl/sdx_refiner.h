/*  sdx_refiner.h - the SDXL ensemble of experts (base + refiner) around the
    pipeline's loop, as diffusers 0.27.2 does it:

    - StableDiffusionXLPipeline(denoising_end=f): the base runs only the
      timesteps >= round(1000 - f * 1000) and hands its latents over;
    - StableDiffusionXLImg2ImgPipeline(image=latents, denoising_start=f):
      the refiner takes 4-channel latents as they are (no VAE encode, no
      add_noise) and runs the timesteps < the cut, with time ids
      [H, W, 0, 0, aesthetic_score] (the pipeline's s_time_ids);
    - a refiner checkpoint that is a UNet only takes text_encoder_2,
      tokenizer_2, the VAE and the scheduler config of a base model.

    Not here: the loop (sdx_pipeline.c), the cut tables (sdx_scheduler.c). */
#ifndef SDX_REFINER_H
#define SDX_REFINER_H

#include "sdx_model.h"
#include "sdx_scheduler.h"
#include "sdxl.h"

/* Fill what m lacks (te2 and its config and tokenizer, VAE and its config,
   scheduler config) from the model at base_path, loaded for those parts
   only; the weights move into m (m owns them). base_path NULL or nothing
   missing: no-op. 0, or -1 with sdx_last_error(). */
int sdx_refiner_complete(sdx_model_t *m, const char *base_path);

/* Refuse, naming the field, what the handoff cannot run: denoising_end or
   denoising_start outside {0} U (0, 1), init_latents without
   denoising_start (or the reverse), init_latents with init_image, latents
   whose shape is not [batch, channels, height/8, width/8]. 0 or -1. */
int sdx_refiner_check(const sdxl_gen_params_t *p, int channels, int width, int height);

/* After set_timesteps (and img2img's begin): with denoising_start set the
   begin index; *end = the index the loop stops before (the table's length,
   or the denoising_end count). 0, or -1 when a fraction leaves no step. */
int sdx_refiner_schedule(sdx_scheduler_t *sch, const sdxl_gen_params_t *p, int *end);

/* The start latents: a new copy of given in dt on dev, caller-owned
   (sdx_tensor_free). 0 or -1. */
int sdx_refiner_latents(const sdx_tensor_t *given, sdx_dtype_t dt, sdx_device_t dev,
                        sdx_tensor_t **out);

#endif
