/*  nets_util.c - helpers of the network tests (see nets_util.h). */
#include "nets_util.h"

#include "sdx_safetensors.h"

#include <stdio.h>
#include <string.h>

sdx_weights_t *nets_weights(const char *rel, sdx_dtype_t dt)
{
    sdx_safetensors_t *st = sdx_test_open(rel);
    if (!st)
        return NULL;
    sdx_weights_t *w = sdx_weights_new();
    for (size_t i = 0; w && i < sdx_safetensors_count(st); i++) {
        const sdx_st_tensor_t *info = sdx_safetensors_at(st, i);
        sdx_tensor_t *t = NULL, *c = NULL;
        if (sdx_safetensors_tensor(NULL, &t, st, info) != 0)
            goto fail;
        if (dt != SDX_DTYPE_COUNT && dt != info->dtype) {
            int rc = sdx_to_dtype(NULL, &c, t, dt);
            sdx_tensor_free(&t);
            if (rc != 0)
                goto fail;
            t = c;
        }
        if (sdx_weights_put(w, info->name, t) != 0) {
            sdx_tensor_free(&t);
            goto fail;
        }
    }
    sdx_safetensors_close(&st);
    return w;
fail:
    fprintf(stderr, "nets_weights(%s): %s\n", rel, sdx_last_error());
    sdx_weights_free(&w);
    sdx_safetensors_close(&st);
    return NULL;
}

sdx_weights_t *nets_weights_cast(const sdx_weights_t *w, sdx_dtype_t dt)
{
    sdx_weights_t *o = sdx_weights_new();
    for (size_t i = 0; o && i < sdx_weights_count(w); i++) {
        sdx_tensor_t *t = NULL;
        if (sdx_to_dtype(NULL, &t, sdx_weights_tensor_at(w, i), dt) != 0 ||
            sdx_weights_put(o, sdx_weights_name_at(w, i), t) != 0) {
            sdx_tensor_free(&t);
            sdx_weights_free(&o);
        }
    }
    return o;
}

sdx_weights_t *nets_weights_edit(const sdx_weights_t *w, const char *drop, const char *replace_name,
                                 sdx_tensor_t *replace)
{
    sdx_weights_t *o = sdx_weights_new();
    for (size_t i = 0; o && i < sdx_weights_count(w); i++) {
        const char *name = sdx_weights_name_at(w, i);
        sdx_tensor_t *t = NULL;
        if (drop && strcmp(name, drop) == 0)
            continue;
        if (sdx_alias(NULL, &t, sdx_weights_tensor_at(w, i)) != 0 ||
            sdx_weights_put(o, name, t) != 0) {
            sdx_tensor_free(&t);
            sdx_weights_free(&o);
        }
    }
    if (o && replace_name && replace) {
        sdx_tensor_t *t = NULL;
        if (sdx_alias(NULL, &t, replace) != 0 || sdx_weights_put(o, replace_name, t) != 0) {
            sdx_tensor_free(&t);
            sdx_weights_free(&o);
        }
    }
    return o;
}

int nets_unet_config(sdx_unet_config_t *c, const char *rel_dir, bool refiner)
{
    char rel[512];
    sdx_unet_config_sdxl(c, refiner);
    snprintf(rel, sizeof rel, "%s/config.json", rel_dir);
    return sdx_unet_config_read(c, sdx_test_path(rel));
}

int nets_vae_config(sdx_vae_config_t *c, const char *rel_dir)
{
    char rel[512];
    sdx_vae_config_sdxl(c);
    snprintf(rel, sizeof rel, "%s/config.json", rel_dir);
    return sdx_vae_config_read(c, sdx_test_path(rel));
}

bool nets_missing_kernel(const char *err)
{
    return err &&
           (strstr(err, "not implemented for") || strstr(err, "Half") || strstr(err, "BFloat16"));
}

bool nets_finite_shape(const sdx_tensor_t *t, const int64_t *shape, int ndim)
{
    bool finite = false;
    if (!t || sdx_tensor_ndim(t) != ndim)
        return false;
    for (int i = 0; i < ndim; i++)
        if (sdx_tensor_size(t, i) != shape[i])
            return false;
    return sdx_isfinite_all(t, &finite) == 0 && finite;
}
