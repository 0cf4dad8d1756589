/*  test_unet_shapes.c - the REAL SDXL base / refiner UNet sizes through the
    same code as the tiny golden models: sdx_unet_new() with the SDXL default
    config over zero-storage (broadcast) tensors of the shapes listed by
    gen_unet_shapes.py (whose base total is checked against the published
    parameter count), then one small forward (batch 1, 8x8 latents) to show
    the real channel counts, heads and depths flow through.

    usage: test_nets_unet_shapes SHAPES.txt base|refiner */
#include "nets_util.h"
#include "sdx_unet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sdx_weights_t *s_read_shapes(const char *path, int64_t *nparams)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return NULL;
    }
    sdx_weights_t *w = sdx_weights_new();
    char line[1024];
    *nparams = 0;
    sdx_tensor_t *one = NULL;
    /* every weight is a view of one 0-d tensor: no memory per weight */
    if (sdx_scalar_tensor(NULL, &one, 1e-3, SDX_F32, (sdx_device_t){SDX_CPU, 0}) != 0)
        goto fail;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char *save = NULL, *name = strtok_r(line, " \n", &save), *tok;
        int64_t shape[SDX_MAX_DIMS], n = 1;
        int nd = 0;
        while ((tok = strtok_r(NULL, " \n", &save)) && nd < SDX_MAX_DIMS) {
            shape[nd] = strtoll(tok, NULL, 10);
            n *= shape[nd++];
        }
        sdx_tensor_t *t = NULL;
        if (sdx_expand(NULL, &t, one, shape, nd) != 0 || sdx_weights_put(w, name, t) != 0) {
            sdx_tensor_free(&t);
            goto fail;
        }
        *nparams += n;
    }
    sdx_tensor_free(&one);
    fclose(f);
    return w;
fail:
    fprintf(stderr, "%s: %s\n", path, sdx_last_error());
    sdx_tensor_free(&one);
    sdx_weights_free(&w);
    fclose(f);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SHAPES.txt base|refiner\n", argv[0]);
        return 1;
    }
    bool refiner = strcmp(argv[2], "refiner") == 0;
    sdx_set_num_threads(2);
    sdx_inference_guard_t *guard = sdx_inference_guard_new();
    int64_t nparams = 0;
    sdx_weights_t *w = s_read_shapes(argv[1], &nparams);
    if (!sdx_test_check(w != NULL, "%s shapes read (%lld parameters)", argv[2], (long long)nparams))
        return sdx_test_done();
    sdx_unet_config_t cfg;
    sdx_unet_config_sdxl(&cfg, refiner);
    sdx_unet_t *u = sdx_unet_new(&cfg, w);
    if (sdx_test_check(u != NULL, "SDXL %s UNet builds over real-size weights (%s)", argv[2],
                       u ? "ok" : sdx_last_error())) {
        sdx_test_check(sdx_unet_n_skips(u) == (refiner ? 12 : 9), "%d skip connections",
                       sdx_unet_n_skips(u));
        /* the tensors are borrowed, not copied: the weight count is unchanged */
        sdx_test_check(sdx_weights_param_count(w) == nparams, "%lld parameters",
                       (long long)sdx_weights_param_count(w));

        sdx_scope_t *S = sdx_scope_new();
        sdx_generator_t *g = sdx_generator_new(1);
        sdx_device_t cpu = {SDX_CPU, 0};
        sdx_tensor_t *x, *ehs, *te, *ids, *t, *o = NULL;
        int nids = refiner ? 5 : 6;
        int64_t xs[4] = {1, 4, 8, 8}, es[3] = {1, 77, cfg.cross_attention_dim};
        int64_t ts[2] = {1, cfg.projection_class_embeddings_input_dim -
                                nids * cfg.addition_time_embed_dim};
        int64_t is[2] = {1, nids};
        float idv[6] = {1024, 1024, 0, 0, 1024, 1024};
        if (refiner)
            idv[4] = 6.0f;
        sdx_randn(S, &x, g, xs, 4, SDX_F32, cpu);
        sdx_randn(S, &ehs, g, es, 3, SDX_F32, cpu);
        sdx_randn(S, &te, g, ts, 2, SDX_F32, cpu);
        sdx_from_host(S, &ids, idv, SDX_F32, is, 2);
        sdx_scalar_tensor(S, &t, 999, SDX_I64, cpu);
        int rc = sdx_unet_forward(u, S, &o, x, t, ehs, te, ids, NULL, 0, NULL);
        if (sdx_test_check(rc == 0, "forward at real size, 8x8 latents (%s)",
                           rc ? sdx_last_error() : "ok"))
            sdx_test_check(nets_finite_shape(o, xs, 4), "finite [1,4,8,8] output");
        sdx_generator_free(&g);
        sdx_scope_free(&S);
    }
    sdx_unet_free(&u);
    sdx_weights_free(&w);
    sdx_inference_guard_free(&guard);
    return sdx_test_done();
}
