/*  test_taesd.c - AutoencoderTiny's decoder (workers/sdxl/sdx_taesd.c)
    against diffusers on the golden tiny TAESD: ref/taesd.safetensors
    `decoded` = taesd.decode(latents).sample, CPU float32, rel L2 < 1e-4
    (the nets suite's tolerance). Also: a file that is no TAESD and a
    latents tensor of the wrong width are refused with a message, and a
    batch of 2 decodes each image as alone. */
#include "sdx_taesd.h"
#include "sdx_test.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    if (!sdx_test_golden())
        sdx_test_skip("no golden data");
    sdx_device_t cpu = {SDX_CPU, 0};
    sdx_taesd_t *t = sdx_taesd_load(sdx_test_path("taesd"), SDX_F32, cpu);
    sdx_test_check(t != NULL, "the golden TAESD folder loads (%s)", t ? "" : sdx_last_error());
    sdx_safetensors_t *ref = sdx_test_open("ref/taesd.safetensors");
    if (!t || !ref)
        return sdx_test_done();
    sdx_tensor_t *lat = sdx_test_get(ref, "latents"), *want = sdx_test_get(ref, "decoded");
    sdx_tensor_t *got = NULL;
    sdx_test_check(sdx_taesd_decode(t, NULL, &got, lat) == 0, "decode runs (%s)",
                   got ? "" : sdx_last_error());
    if (got)
        sdx_test_close(got, want, 1e-4, "taesd.decode(latents) vs diffusers");

    /* a batch of two: each image as alone */
    sdx_tensor_t *two[2] = {lat, lat}, *lat2 = NULL, *got2 = NULL, *first = NULL;
    if (sdx_cat(NULL, &lat2, two, 2, 0) == 0 && sdx_taesd_decode(t, NULL, &got2, lat2) == 0 &&
        sdx_narrow(NULL, &first, got2, 0, 1, 1) == 0)
        sdx_test_close(first, want, 1e-4, "the second image of a batch of 2");
    else
        sdx_test_check(false, "batch of 2: %s", sdx_last_error());

    /* wrong inputs */
    sdx_tensor_t *bad = NULL, *out = NULL;
    if (sdx_narrow(NULL, &bad, lat, 1, 0, 3) == 0)
        sdx_test_check(sdx_taesd_decode(t, NULL, &out, bad) != 0 &&
                           strstr(sdx_last_error(), "latents must be") != NULL,
                       "3-channel latents are refused (%s)", sdx_last_error());
    sdx_taesd_t *no = sdx_taesd_load(sdx_test_path("model/unet"), SDX_F32, cpu);
    sdx_test_check(!no && strstr(sdx_last_error(), "taesd:") != NULL,
                   "a UNet folder is no TAESD (%s)", sdx_last_error());

    sdx_tensor_free(&got);
    sdx_tensor_free(&lat2);
    sdx_tensor_free(&got2);
    sdx_tensor_free(&first);
    sdx_tensor_free(&bad);
    sdx_tensor_free(&out);
    sdx_tensor_free(&lat);
    sdx_tensor_free(&want);
    sdx_safetensors_close(&ref);
    sdx_taesd_free(&t);
    return sdx_test_done();
}
