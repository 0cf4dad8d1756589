/*  nets_util.h - helpers of the network tests: weights from a golden
    safetensors file (optionally converted), configs from golden config.json,
    copies of a weight set with one entry dropped or replaced, the golden
    model through sdx_model_load in both layouts. */
#ifndef NETS_UTIL_H
#define NETS_UTIL_H

#include "sdx_model.h"
#include "sdx_test.h"
#include "sdx_torch.h"

/* Every tensor of golden/rel, converted to dt (SDX_DTYPE_COUNT: as stored).
   Skips the test (77) if the file is absent; NULL on failure. */
sdx_weights_t *nets_weights(const char *rel, sdx_dtype_t dt);
/* A new set holding aliases of every tensor of w converted to dt. */
sdx_weights_t *nets_weights_cast(const sdx_weights_t *w, sdx_dtype_t dt);
/* A copy of w (aliases) without `drop` and with `replace` (if non-NULL)
   stored under the name `replace_name`. */
sdx_weights_t *nets_weights_edit(const sdx_weights_t *w, const char *drop, const char *replace_name,
                                 sdx_tensor_t *replace);
/* Defaults then golden/rel_dir/config.json. */
int nets_unet_config(sdx_unet_config_t *c, const char *rel_dir, bool refiner);
int nets_vae_config(sdx_vae_config_t *c, const char *rel_dir);
/* Layouts of the golden model that nets_model_load reads: 0 = the
   diffusers folder golden/model, 1 = the single file
   golden/model_single_file/tiny_sdxl.safetensors with config_dir
   golden/model. */
#define NETS_LAYOUTS 2
/* sdx_model_load of one layout with only `components` (SDX_COMP_UNET and/or
   SDX_COMP_VAE), counted as the check "sdx_model_load <label>"; *label is
   the layout's golden path (static). NULL if loading failed or a requested
   network is missing. Caller frees the model. */
sdx_model_t *nets_model_load(int layout, unsigned components, const char **label);
/* Is this error a missing CPU kernel of the dtype (then skip that part)? */
bool nets_missing_kernel(const char *err);
/* True if every value is finite and the shape is `shape`. */
bool nets_finite_shape(const sdx_tensor_t *t, const int64_t *shape, int ndim);

#endif
