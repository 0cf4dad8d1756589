/*  sdx_lora.h - LoRA adapters: read a LoRA file against a loaded model, and
    fuse sets of them into the model's weights (and take them out again).

    Formats read (each key classified on its own, so mixed files work):
      kohya / sd-scripts SDXL   lora_unet_<SGM module path, '.' -> '_'>,
                                lora_te1_<text_encoder module>, lora_te2_<text_encoder_2
                                module>, each with .lora_down.weight, .lora_up.weight and
                                an optional .alpha
      diffusers / PEFT          unet.<module>, text_encoder.<module>, text_encoder_2.<module>
                                with .lora.down/.lora.up, .lora_linear_layer.down/up or
                                .lora_A/.lora_B (.weight), optional .alpha; and diffusers'
                                older attention-processor names (attn1.processor.to_q_lora.down)
    Linear targets ([out, in] weights) and convolutions ([out, in, kh, kw]:
    down a kh x kw conv, up a 1x1 conv) are fused as
        W += weight * (alpha / rank) * up @ down        (alpha defaults to rank)
    in float32, then cast back to the model's dtype. LyCORIS algorithms
    (LoHa hada_*, LoKr lokr_*, CP-decomposed LoCon lora_mid, OFT, IA3,
    full diffs) and DoRA are refused with the format named.

    Restoring is exact: the first time a weight is touched its original
    tensor is copied aside (to host memory, also for CUDA models, so the
    device keeps its memory for activations) and every later fusion
    recomputes from that copy; taking a LoRA out copies the original back,
    bit for bit. Nothing is ever re-read from the checkpoint.

    Not for: the VAE (no LoRA touches it), unfused (runtime) adapters,
    request handling or caching of LoRA files by name (the worker's job).
*/
#ifndef SDX_LORA_H
#define SDX_LORA_H

#include "sdx_model.h"
#include "sdx_torch.h"

#include <stdbool.h>
#include <stddef.h>

/* One adapter of a set: a file and the weight its delta is multiplied by
   (diffusers' adapter_weights / A1111's <lora:name:weight>). */
typedef struct {
    const char *path;
    double weight;
} sdx_lora_spec_t;

/* ---------------------------------------------------------------- one file */

/* A LoRA file read and checked against a model: every module maps to an
   existing weight of a loaded component, with shapes that fit it. */
typedef struct sdx_lora sdx_lora_t;

/* Read `path` and check it against `m`. Modules of components the model
   did not load (the UNet of a text-only engine, text_encoder of a refiner)
   are dropped and counted (sdx_lora_skipped). NULL on failure with a
   one-line reason naming the file and the key ("x.safetensors: LyCORIS LoHa
   (key '...hada_w1_a'), only LoRA (lora_down/lora_up) is supported",
   "...: key 'lora_unet_foo.lora_down.weight' matches no module of the
   model", "...: 'M' has lora_down but no lora_up", "...: 'M': lora_up
   [8, 4] does not fit ..."). The adapter's tensors are float32 copies on
   the model's device; the file is closed before returning. Caller frees. */
sdx_lora_t *sdx_lora_load(const char *path, const sdx_model_t *m);
void sdx_lora_free(sdx_lora_t **l);
/* "kohya", "diffusers", "peft" or "mixed". Static string. */
const char *sdx_lora_format(const sdx_lora_t *l);
/* Target weights the adapter changes (after dropping skipped ones). */
size_t sdx_lora_count(const sdx_lora_t *l);
/* Modules dropped because their component is not loaded. */
size_t sdx_lora_skipped(const sdx_lora_t *l);

/* ---------------------------------------------------------------- fused sets */

/* What is fused into one model: the set, and the originals of every weight
   it touched. Borrows the model, which must outlive it. */
typedef struct sdx_lora_state sdx_lora_state_t;

sdx_lora_state_t *sdx_lora_state_new(sdx_model_t *m);
/* Frees the state WITHOUT restoring the weights (for an engine that frees
   its model next); call sdx_lora_state_set(s, NULL, 0) first to restore. */
void sdx_lora_state_free(sdx_lora_state_t **s);

/* Make exactly specs[0..n-1] fused into the model (n == 0: none). A set
   equal to the current one (same paths in the same order, same weights,
   files unchanged on disk) is a no-op. Every file is read and checked
   before any weight changes: a bad file returns -1 with the reason and
   leaves the model and the current set as they were. Then weights the new
   set no longer touches get their originals back and every weight it
   touches is recomputed from its original:
       W = cast(float32(W0) + sum_i weight_i * alpha_i/rank_i * up_i @ down_i).
   If that fails midway (out of memory), every touched weight is restored,
   the state becomes the empty set and -1 is returned. */
int sdx_lora_state_set(sdx_lora_state_t *s, const sdx_lora_spec_t *specs, int n);
/* The set now fused (borrowed, valid until the next set call); *n its size. */
const sdx_lora_spec_t *sdx_lora_state_current(const sdx_lora_state_t *s, int *n);
/* Weights currently holding a fused delta (the originals kept aside). */
size_t sdx_lora_state_touched(const sdx_lora_state_t *s);

#endif
