/*  sdx_clip.h - CLIP text encoders: transformers' CLIPTextModel (SDXL's
    text_encoder, CLIP ViT-L, quick_gelu) and CLIPTextModelWithProjection
    (text_encoder_2, OpenCLIP bigG, gelu, text_projection without bias).

    Pre-LN transformer with a causal mask and no attention mask (SDXL passes
    none). hidden_states[0] is the embeddings' output, hidden_states[i] the
    output of layer i, with NO final layer norm; last_hidden_state is
    final_layer_norm(hidden_states[L]). pooler_output is last_hidden_state at
    the pooling position: argmax(input_ids) when the config's eos_token_id is
    2 (transformers' legacy rule, used by the real SDXL configs: an added
    token with id > 49407, e.g. textual inversion, wins over EOS), otherwise
    the first position holding eos_token_id.

    Weights are addressed by their transformers names
    ("text_model.encoder.layers.0.self_attn.q_proj.weight", ...,
    "text_projection.weight"); computing happens in the weights' dtype on
    their device. Not for tokenizing (sdx_tokenizer.h) or SDXL's prompt
    logic (sdx_prompt.h).
*/
#ifndef SDX_CLIP_H
#define SDX_CLIP_H

#include "sdx_model.h"
#include "sdx_torch.h"

#include <stdbool.h>

#define SDX_CLIP_MAX_LAYERS 64
#define SDX_CLIP_MAX_REQ 4

/* A text encoder bound to its weights. */
typedef struct sdx_clip sdx_clip_t;

/* Bind cfg + weights: every parameter is looked up and its shape checked
   now, so a forward cannot fail on a missing weight. The weights are
   borrowed and must outlive the encoder (the config is copied). All
   parameters must share one dtype and device. NULL on failure with e.g.
   "text_encoder_2: missing weight 'text_projection.weight'" in
   sdx_last_error(). `what` names the encoder in messages. Caller owns the
   result. */
sdx_clip_t *sdx_clip_new(const sdx_clip_config_t *cfg, const sdx_weights_t *w, const char *what);
void sdx_clip_destroy(sdx_clip_t **c);

const sdx_clip_config_t *sdx_clip_config(const sdx_clip_t *c);
sdx_dtype_t sdx_clip_dtype(const sdx_clip_t *c);
sdx_device_t sdx_clip_device(const sdx_clip_t *c);

/* What a forward should return. Layers past the last one needed are not
   run (SDXL's text_encoder stops at the penultimate layer). */
typedef struct {
    /* hidden_states indices, Python style: 0 = embeddings, i = layer i,
       negative from the end (-1 = last layer, -2 = penultimate, SDXL's
       choice; -(clip_skip + 2) with clip_skip). */
    int hidden[SDX_CLIP_MAX_REQ];
    int n_hidden;
    bool all_hidden;        /* every hidden state (num_hidden_layers + 1) */
    bool last_hidden_state; /* final_layer_norm(hidden_states[-1]) */
    bool pooled;            /* pooler_output, and text_embeds if projected */
} sdx_clip_request_t;

/* Results; fields not requested are NULL. Shapes: hidden states [B, T, H],
   pooler_output [B, H], text_embeds [B, projection_dim]. Owned by the scope
   S given to sdx_clip_forward, or by the caller (sdx_tensor_free each, or
   sdx_clip_output_free) when S is NULL. */
typedef struct {
    sdx_tensor_t *hidden[SDX_CLIP_MAX_REQ];
    sdx_tensor_t *all_hidden[SDX_CLIP_MAX_LAYERS + 1];
    int n_all_hidden;
    sdx_tensor_t *last_hidden_state;
    sdx_tensor_t *pooler_output;
    sdx_tensor_t *text_embeds;
} sdx_clip_output_t;

/* Run the encoder on input_ids [B, T] (T <= max_position_embeddings; any
   integer dtype, any device: moved to the weights' device). Fills *out
   (zeroed first). 0 or -1 with sdx_last_error(); on failure nothing is
   left allocated. */
int sdx_clip_forward(const sdx_clip_t *c, sdx_scope_t *S, const sdx_tensor_t *input_ids,
                     const sdx_clip_request_t *req, sdx_clip_output_t *out);

/* Free every caller-owned tensor of an output (S was NULL) and zero it. */
void sdx_clip_output_free(sdx_clip_output_t *out);

#endif
