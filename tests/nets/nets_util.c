/*  nets_util.c - helpers of the network tests (see nets_util.h). */
#include "nets_util.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

sdx_weights_t *nets_weights(const char *rel, sdx_dtype_t dt)
{
    char err[512];
    sdx_weights_t *w = sdx_test_weights(rel, dt, err, sizeof err);
    if (!w && err[0])
        fprintf(stderr, "nets_weights(%s): %s\n", rel, err);
    return w;
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

sdx_model_t *nets_model_load(int layout, unsigned components, const char **label)
{
    static const char *const paths[NETS_LAYOUTS] = {"model",
                                                    "model_single_file/tiny_sdxl.safetensors"};
    assert(layout >= 0 && layout < NETS_LAYOUTS);
    char path[4096], cdir[4096];
    snprintf(path, sizeof path, "%s", sdx_test_path(paths[layout]));
    snprintf(cdir, sizeof cdir, "%s", sdx_test_path("model"));
    sdx_load_opts_t o;
    sdx_load_opts_init(&o);
    o.path = path;
    o.config_dir = layout == 1 ? cdir : NULL;
    o.components = components;
    sdx_model_t *m = sdx_model_load(&o);
    bool have = m && (!(components & SDX_COMP_UNET) || m->unet) &&
                (!(components & SDX_COMP_VAE) || m->vae);
    *label = paths[layout];
    if (!sdx_test_check(have, "sdx_model_load %s (%s)", paths[layout],
                        m ? "ok" : sdx_last_error())) {
        sdx_model_free(&m);
        return NULL;
    }
    return m;
}
