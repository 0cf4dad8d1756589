/*  sdx_img2img.c - img2img's initial latents and cut schedule (see
    sdx_img2img.h); the denoising loop itself is the pipeline's. */
#include "sdx_img2img.h"

int sdx_img2img_check(const sdx_vae_t *vae, const sdx_image_t *img, double strength, int want_w,
                      int want_h, int *w, int *h)
{
    if (!vae || !sdx_vae_has_encoder(vae))
        return sdx_set_error("init_image: this model's VAE has no encoder (img2img needs one)");
    if (!(strength > 0 && strength <= 1)) /* NaN fails too */
        return sdx_set_error("strength: must be in (0, 1] with an init image, got %g", strength);
    if (!img || !img->pixels || img->width < 1 || img->height < 1 ||
        (img->channels != 3 && img->channels != 4))
        return sdx_set_error("init_image: no pixels, or not 8-bit RGB/RGBA");
    if (img->width % 8 || img->height % 8)
        return sdx_set_error("init_image: %dx%d; width and height must be multiples of 8",
                             img->width, img->height);
    if ((want_w > 0 && want_w != img->width) || (want_h > 0 && want_h != img->height))
        return sdx_set_error("init_image: %dx%d does not match the requested %dx%d (leave "
                             "width/height 0 to take the image's size; it is not resized)",
                             img->width, img->height, want_w > 0 ? want_w : img->width,
                             want_h > 0 ? want_h : img->height);
    *w = img->width;
    *h = img->height;
    return 0;
}

int sdx_img2img_begin(sdx_scheduler_t *sch, double strength)
{
    return sdx_scheduler_strength_begin(sch, strength);
}

int sdx_img2img_latents(sdx_vae_t *vae, const sdx_weights_t *vae_weights, sdx_scheduler_t *sch,
                        sdx_generator_t *gen, const sdx_image_t *img, int batch, sdx_dtype_t dt,
                        sdx_device_t dev, sdx_tensor_t **latents)
{
    if (!sdx_vae_has_encoder(vae))
        return sdx_set_error("init_image: this model's VAE has no encoder");
    sdx_scope_t *S = sdx_scope_new();
    if (!S)
        return sdx_set_error("img2img: out of memory");
    sdx_vae_t *up = NULL; /* the transient f32 encoder, when upcast */
    sdx_tensor_t *x, *mean, *std, *eps, *z, *noise, *out;
    int64_t shape[4];
    if (vae_weights && sdx_vae_config(vae)->force_upcast && sdx_vae_dtype(vae) != SDX_F32) {
        up = sdx_vae_new_f32(sdx_vae_config(vae), vae_weights, true);
        if (!up)
            goto fail;
        *sdx_vae_options(up) = *sdx_vae_options(vae);
    }
    const sdx_vae_t *enc = up ? up : vae;
    /* image.to(device, dtype) first, as diffusers does; the VAE converts to
       its own dtype (f32 when upcast) on entry */
    SDX_TRY(sdx_image_to_tensor(S, &x, img, dt, dev));
    SDX_TRY(sdx_vae_encode(enc, S, &mean, NULL, &std, x));
    sdx_vae_free(&up);
    /* latent_dist.sample(generator): draw 1, in the distribution's dtype */
    sdx_tensor_shape(mean, shape);
    SDX_TRY(sdx_randn(S, &eps, gen, shape, 4, sdx_tensor_dtype(mean), sdx_vae_device(vae)));
    SDX_TRY(sdx_mul(S, &z, std, eps));
    SDX_TRY(sdx_add(S, &z, mean, z));
    SDX_TRY(sdx_to(S, &z, z, dt, dev));
    SDX_TRY(sdx_vae_scale_latents(vae, S, &z, z));
    if (batch > 1) {
        int64_t reps[4] = {batch, 1, 1, 1};
        SDX_TRY(sdx_repeat(S, &z, z, reps, 4));
    }
    /* the noise: draw 2, [B, C, h, w] in the denoiser's dtype */
    shape[0] = batch;
    SDX_TRY(sdx_randn(S, &noise, gen, shape, 4, dt, dev));
    SDX_TRY(sdx_scheduler_add_noise(sch, S, &out, z, noise, sdx_scheduler_begin_index(sch)));
    SDX_TRY(sdx_scope_keep(S, out));
    sdx_scope_free(&S);
    *latents = out;
    return 0;
fail:
    sdx_vae_free(&up);
    sdx_scope_free(&S);
    return -1;
}
