/*  test_lora.c - LoRA fusion (sdx_lora.c, sdxl_engine_set_loras) against
    diffusers.

    Checks, on the golden tiny model (CPU):
      - reading: the kohya file gives 268 target weights (UNet, text_encoder,
        text_encoder_2), the diffusers file 180; formats are named.
      - fused weights vs golden lora/lora_kohya_fused_weights_08 (diffusers'
        fuse_lora(lora_scale=0.8)): relative L2 <= 1e-6 per tensor (float32
        on both sides, only the summation order of up @ down differs), the
        touched set is exactly the file's, every other weight unchanged
        bit for bit.
      - pipeline parity (Euler, seed 42, the t2i_euler call) against
        ref/pipeline lora_kohya_08, lora_kohya_fused_08, lora_diffusers_08,
        lora_combined_08_05 with test_pipeline's tolerances: final latents
        relative L2 < 1e-3, image_np within 1/255 on >= 99.9% of values.
        Also on the single-file layout (kohya at 0.8).
      - un-fusing: the empty set restores every UNet/TE weight bit for bit
        (originals are kept, not recomputed), also in bf16.
      - switching sets: kohya -> diffusers -> combined -> kohya -> combined
        gives bit-identical latents for the repeated sets.
      - refusals (LyCORIS LoHa/LoKr, missing up, wrong shapes, a key matching
        no module, a non-LoRA key, an SD1.x LoRA, a missing file, a bad file
        after a good one in one set): a message naming the problem, and the
        model and the current set unchanged.
    Prints, without asserting, the time each set switch takes. */
#include "sdx_test.h"
#include "sdxl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *s_prompt = "a photo of an astronaut riding a horse, highly detailed";
static const char *s_negative = "blurry, low quality";
static char s_kohya[4096], s_diffusers[4096];

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static sdx_weights_t *s_comp(const sdx_model_t *m, const char *comp)
{
    return strcmp(comp, "unet") == 0             ? m->unet
           : strcmp(comp, "text_encoder") == 0   ? m->te1
           : strcmp(comp, "text_encoder_2") == 0 ? m->te2
                                                 : NULL;
}

static const char *const s_comps[3] = {"unet", "text_encoder", "text_encoder_2"};

/* Host copies of every UNet/TE weight, named "<component>.<name>". */
static sdx_weights_t *s_snapshot(const sdx_model_t *m)
{
    sdx_weights_t *snap = sdx_weights_new();
    for (int c = 0; snap && c < 3; c++) {
        const sdx_weights_t *w = s_comp(m, s_comps[c]);
        for (size_t i = 0; i < sdx_weights_count(w); i++) {
            char name[512];
            snprintf(name, sizeof name, "%s.%s", s_comps[c], sdx_weights_name_at(w, i));
            sdx_tensor_t *t = NULL;
            if (sdx_clone(NULL, &t, sdx_weights_tensor_at(w, i)) != 0 ||
                sdx_weights_put(snap, name, t) != 0) {
                sdx_tensor_free(&t);
                sdx_weights_free(&snap);
            }
        }
    }
    return snap;
}

/* Bitwise equality of two tensors (same dtype and shape). */
static bool s_bits_equal(const sdx_tensor_t *a, const sdx_tensor_t *b)
{
    if (sdx_tensor_dtype(a) != sdx_tensor_dtype(b) || sdx_tensor_numel(a) != sdx_tensor_numel(b))
        return false;
    size_t n = (size_t)sdx_tensor_numel(a) * sdx_dtype_size(sdx_tensor_dtype(a));
    unsigned char *x = malloc(n ? n : 1), *y = malloc(n ? n : 1);
    bool eq = x && y && sdx_to_host(a, sdx_tensor_dtype(a), x, n) == 0 &&
              sdx_to_host(b, sdx_tensor_dtype(b), y, n) == 0 && memcmp(x, y, n) == 0;
    free(x);
    free(y);
    return eq;
}

/* Weights of m that differ (bitwise) from snap; `skip` (may be NULL) names
   weights expected to differ ("unet.x.weight"), which are not counted. */
static size_t s_count_changed(const sdx_model_t *m, const sdx_weights_t *snap,
                              const sdx_weights_t *skip, char *example, size_t exlen)
{
    size_t changed = 0;
    for (size_t i = 0; i < sdx_weights_count(snap); i++) {
        const char *name = sdx_weights_name_at(snap, i);
        if (skip && sdx_weights_has(skip, name))
            continue;
        const char *dot = strchr(name, '.');
        char comp[32];
        snprintf(comp, sizeof comp, "%.*s", (int)(dot - name), name);
        sdx_tensor_t *w = sdx_weights_get(s_comp(m, comp), dot + 1);
        if (!w || !s_bits_equal(w, sdx_weights_tensor_at(snap, i))) {
            if (!changed && example)
                snprintf(example, exlen, "%s", name);
            changed++;
        }
    }
    return changed;
}


/* The t2i_euler call every LoRA reference used; latents (caller frees). */
static sdx_tensor_t *s_generate(sdxl_engine_t *e, const char *label, const char *ref)
{
    sdxl_gen_params_t gp;
    sdxl_gen_params_init(&gp);
    gp.prompt = s_prompt;
    gp.negative_prompt = s_negative;
    gp.steps = 5;
    gp.guidance_scale = 5.0;
    gp.seed = 42;
    gp.scheduler = "EulerDiscreteScheduler";
    gp.width = gp.height = 128;
    sdxl_result_t r;
    int rc = sdxl_generate(e, &gp, &r);
    if (!sdx_test_check(rc == 0, "%s: generate (%s)", label, rc ? sdx_last_error() : "ok"))
        return NULL;
    if (ref) {
        char rel[256], what[256];
        snprintf(rel, sizeof rel, "ref/pipeline/%s.safetensors", ref);
        sdx_safetensors_t *st = sdx_test_open(rel);
        sdx_tensor_t *ref_lat = sdx_test_get(st, "latents_final");
        sdx_tensor_t *ref_np = sdx_test_get(st, "image_np");
        snprintf(what, sizeof what, "%s vs %s: final latents", label, ref);
        sdx_test_close(r.latents, ref_lat, 1e-3, what);
        double frac = sdx_test_pixel_match(r.decoded, ref_np);
        sdx_test_check(frac >= 0.999,
                       "%s vs %s: image within 1/255 on %.4f%% of values (>= 99.9%%)", label, ref,
                       frac * 100);
        sdx_tensor_free(&ref_lat);
        sdx_tensor_free(&ref_np);
        sdx_safetensors_close(&st);
    }
    sdx_tensor_t *lat = r.latents;
    r.latents = NULL;
    sdxl_result_clear(&r);
    return lat;
}

/* Set and time a switch. */
static bool s_set(sdxl_engine_t *e, const sdxl_lora_t *l, int n, const char *label)
{
    double t0 = s_now_ms();
    int rc = sdxl_engine_set_loras(e, l, n);
    double ms = s_now_ms() - t0;
    printf("     time: switch to %-28s %8.2f ms\n", label, ms);
    return sdx_test_check(rc == 0, "set LoRAs: %s (%s)", label, rc ? sdx_last_error() : "ok");
}

/* ---------------------------------------------------------------- cases */

static void s_read_case(const sdx_model_t *m)
{
    sdx_lora_t *k = sdx_lora_load(s_kohya, m);
    if (sdx_test_check(k != NULL, "read kohya LoRA (%s)", k ? "ok" : sdx_last_error()))
        sdx_test_check(sdx_lora_count(k) == 268 && sdx_lora_skipped(k) == 0 &&
                           strcmp(sdx_lora_format(k), "kohya") == 0,
                       "kohya: 268 target weights, format %s (%zu, %zu skipped)",
                       sdx_lora_format(k), sdx_lora_count(k), sdx_lora_skipped(k));
    sdx_lora_free(&k);
    sdx_lora_t *d = sdx_lora_load(s_diffusers, m);
    if (sdx_test_check(d != NULL, "read diffusers LoRA (%s)", d ? "ok" : sdx_last_error()))
        sdx_test_check(sdx_lora_count(d) == 180 && strcmp(sdx_lora_format(d), "diffusers") == 0,
                       "diffusers: 180 target weights, format %s (%zu)", sdx_lora_format(d),
                       sdx_lora_count(d));
    sdx_lora_free(&d);
}

/* Fused weights vs diffusers' fuse_lora at 0.8; tol per tensor. */
static void s_fused_weights_case(const sdx_model_t *m, const sdx_weights_t *snap, double tol,
                                 const char *label)
{
    char err[512];
    sdx_weights_t *ref =
        sdx_test_weights("lora/lora_kohya_fused_weights_08.safetensors", SDX_F32, err, sizeof err);
    if (!sdx_test_check(ref != NULL, "%s: read the fused reference (%s)", label, ref ? "ok" : err))
        return;
    double worst = 0;
    size_t bad = 0, missing = 0;
    char worst_name[256] = "";
    for (size_t i = 0; i < sdx_weights_count(ref); i++) {
        const char *name = sdx_weights_name_at(ref, i);
        const char *dot = strchr(name, '.');
        char comp[32];
        snprintf(comp, sizeof comp, "%.*s", (int)(dot - name), name);
        sdx_tensor_t *w = sdx_weights_get(s_comp(m, comp), dot + 1);
        if (!w) {
            missing++;
            continue;
        }
        double e = sdx_test_rel_l2(w, sdx_weights_tensor_at(ref, i));
        if (!(e <= tol))
            bad++;
        if (!(e <= worst)) {
            worst = e;
            snprintf(worst_name, sizeof worst_name, "%s", name);
        }
    }
    sdx_test_check(bad == 0 && missing == 0 && sdx_weights_count(ref) == 268,
                   "%s: %zu fused weights within rel L2 %.0e of diffusers' (worst %.3e at %s; "
                   "%zu over, %zu missing)",
                   label, sdx_weights_count(ref), tol, worst, worst_name, bad, missing);
    char ex[256] = "";
    size_t others = s_count_changed(m, snap, ref, ex, sizeof ex);
    sdx_test_check(others == 0,
                   "%s: every weight outside the fused set unchanged bit for bit "
                   "(%zu changed%s%s)",
                   label, others, others ? ", e.g. " : "", ex);
    sdx_weights_free(&ref);
}

/* A small safetensors file of LoRA-like tensors in dir. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
} s_spec_t;

static int s_write(const char *path, const s_spec_t *specs, int n)
{
    sdx_scope_t *S = sdx_scope_new();
    sdx_tensor_t *ts[16];
    const char *names[16];
    int rc = -1;
    for (int i = 0; i < n && i < 16; i++) {
        names[i] = specs[i].name;
        double v =
            strcmp(strrchr(path, '/'), "/nan.safetensors") == 0 && i == 1 ? NAN : 0.01 * (i + 1);
        if (sdx_full(S, &ts[i], specs[i].shape, specs[i].ndim, v, SDX_F32,
                     (sdx_device_t){SDX_CPU, 0}) != 0)
            goto done;
    }
    rc = sdx_safetensors_write(path, names, ts, (size_t)n, NULL);
done:
    sdx_scope_free(&S);
    return rc;
}

/* golden/src_rel rewritten to dst with every key renamed by `rename` (a
   NULL result drops the tensor). */
typedef bool (*s_rename_fn)(const char *in, char *out, size_t outlen);

static int s_rewrite(const char *src_rel, const char *dst, s_rename_fn rename)
{
    char err[512];
    sdx_weights_t *w = sdx_test_weights(src_rel, SDX_DTYPE_COUNT, err, sizeof err);
    if (!w)
        return sdx_set_error("%s", err);
    size_t n = sdx_weights_count(w), k = 0;
    char **names = calloc(n, sizeof *names);
    sdx_tensor_t **ts = calloc(n, sizeof *ts);
    int rc = -1;
    for (size_t i = 0; names && ts && i < n; i++) {
        char buf[512];
        if (!rename(sdx_weights_name_at(w, i), buf, sizeof buf))
            continue;
        names[k] = strdup(buf);
        ts[k++] = sdx_weights_tensor_at(w, i);
    }
    if (names && ts)
        rc = sdx_safetensors_write(dst, (const char *const *)names, ts, k, NULL);
    for (size_t i = 0; names && i < k; i++)
        free(names[i]);
    free(names);
    free(ts);
    sdx_weights_free(&w);
    return rc;
}

static bool s_replace_suffix(const char *in, char *out, size_t outlen, const char *from,
                             const char *to)
{
    size_t n = strlen(in), f = strlen(from);
    if (n < f || strcmp(in + n - f, from) != 0)
        return false;
    snprintf(out, outlen, "%.*s%s", (int)(n - f), in, to);
    return true;
}

/* diffusers naming -> PEFT (lora_A / lora_B) */
static bool s_to_peft(const char *in, char *out, size_t outlen)
{
    return s_replace_suffix(in, out, outlen, ".lora.down.weight", ".lora_A.weight") ||
           s_replace_suffix(in, out, outlen, ".lora.up.weight", ".lora_B.weight") ||
           s_replace_suffix(in, out, outlen, ".lora_linear_layer.down.weight", ".lora_A.weight") ||
           s_replace_suffix(in, out, outlen, ".lora_linear_layer.up.weight", ".lora_B.weight");
}

/* diffusers naming -> diffusers' old attention-processor naming for the
   UNet (unet.M.attn1.to_q.lora.down.weight -> unet.M.attn1.processor.to_q_lora.down.weight) */
static bool s_to_attn_procs(const char *in, char *out, size_t outlen)
{
    static const char *const mods[] = {"to_q", "to_k", "to_v", "to_out.0"};
    static const char *const procs[] = {"to_q", "to_k", "to_v", "to_out"};
    static const char *const roles[] = {"down", "up"};
    for (int m = 0; m < 4; m++)
        for (int r = 0; r < 2; r++) {
            char from[64], to[64];
            snprintf(from, sizeof from, ".%s.lora.%s.weight", mods[m], roles[r]);
            snprintf(to, sizeof to, ".processor.%s_lora.%s.weight", procs[m], roles[r]);
            if (strncmp(in, "unet.", 5) == 0 && s_replace_suffix(in, out, outlen, from, to))
                return true;
        }
    snprintf(out, outlen, "%s", in);
    return true;
}

/* kohya without its .alpha tensors (alpha then defaults to the rank) */
static bool s_drop_alpha(const char *in, char *out, size_t outlen)
{
    if (strlen(in) > 6 && strcmp(in + strlen(in) - 6, ".alpha") == 0)
        return false;
    snprintf(out, outlen, "%s", in);
    return true;
}

/* Fusing `a` must give bit for bit the weights of fusing `b`. */
static void s_same_fusion_case(sdxl_engine_t *e, const sdxl_lora_t *a, const sdxl_lora_t *b,
                               const char *what)
{
    const sdx_model_t *m = sdxl_engine_model(e);
    char ref[256];
    snprintf(ref, sizeof ref, "%s (reference)", what);
    if (!s_set(e, b, 1, ref))
        return;
    sdx_weights_t *want = s_snapshot(m);
    if (s_set(e, a, 1, what)) {
        char ex[256] = "";
        size_t changed = s_count_changed(m, want, NULL, ex, sizeof ex);
        sdx_test_check(changed == 0, "%s: the same fused weights bit for bit (%zu differ%s%s)",
                       what, changed, changed ? ", e.g. " : "", ex);
    }
    sdx_weights_free(&want);
}

#define PI "lora_unet_input_blocks_4_1_proj_in" /* down_blocks.1.attentions.0.proj_in [24, 24] */

static void s_bad_files_case(sdxl_engine_t *e, const char *dir)
{
    const sdx_model_t *m = sdxl_engine_model(e);
    static const struct {
        const char *file, *expect;
        s_spec_t t[5];
        int n;
    } cases[] = {
        {"loha.safetensors",
         "LyCORIS LoHa",
         {{PI ".hada_w1_a", 2, {24, 4}},
          {PI ".hada_w1_b", 2, {4, 24}},
          {PI ".hada_w2_a", 2, {24, 4}},
          {PI ".hada_w2_b", 2, {4, 24}},
          {PI ".alpha", 0, {0}}},
         5},
        {"lokr.safetensors",
         "LyCORIS LoKr",
         {{PI ".lokr_w1", 2, {4, 4}}, {PI ".lokr_w2", 2, {6, 6}}, {PI ".alpha", 0, {0}}},
         3},
        {"missing_up.safetensors",
         "has lora_down but no lora_up",
         {{PI ".lora_down.weight", 2, {4, 24}}, {PI ".alpha", 0, {0}}},
         2},
        {"wrong_shape.safetensors",
         "do not fit",
         {{PI ".lora_down.weight", 2, {4, 23}}, {PI ".lora_up.weight", 2, {24, 4}}},
         2},
        {"no_module.safetensors",
         "matches no module",
         {{"lora_unet_input_blocks_4_1_proj_sideways.lora_down.weight", 2, {4, 24}},
          {"lora_unet_input_blocks_4_1_proj_sideways.lora_up.weight", 2, {24, 4}}},
         2},
        {"not_lora_key.safetensors",
         "is not a LoRA tensor",
         {{PI ".lora_down.weight", 2, {4, 24}},
          {PI ".lora_up.weight", 2, {24, 4}},
          {PI ".scale_of_things", 1, {4}}},
         3},
        {"nan.safetensors",
         "NaN or infinite",
         {{PI ".lora_down.weight", 2, {4, 24}}, {PI ".lora_up.weight", 2, {24, 4}}},
         2},
        {"sd15.safetensors",
         "SD1.x",
         {{"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", 2, {4, 768}},
          {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", 2, {768, 4}}},
         2},
    };
    /* the state every refusal must leave: kohya at 0.8 fused */
    sdxl_lora_t good = {s_kohya, 0.8};
    if (!s_set(e, &good, 1, "kohya 0.8 (before refusals)"))
        return;
    sdx_weights_t *before = s_snapshot(m);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, cases[i].file);
        int wrc = s_write(path, cases[i].t, cases[i].n);
        if (!sdx_test_check(wrc == 0, "write %s (%s)", cases[i].file,
                            wrc ? sdx_last_error() : "ok"))
            continue;
        sdxl_lora_t l = {path, 1.0};
        int rc = sdxl_engine_set_loras(e, &l, 1);
        sdx_test_check(rc != 0 && strstr(sdx_last_error(), cases[i].expect),
                       "%s refused, naming '%s': %s", cases[i].file, cases[i].expect,
                       sdx_last_error());
        /* the bad file after a good one in one set: refused as a whole */
        sdxl_lora_t two[2] = {{s_diffusers, 0.5}, {path, 1.0}};
        rc = sdxl_engine_set_loras(e, two, 2);
        sdx_test_check(rc != 0, "%s refused after a good file in one set", cases[i].file);
        unlink(path);
    }
    sdxl_lora_t none = {"/nonexistent/lora.safetensors", 1.0};
    int rc = sdxl_engine_set_loras(e, &none, 1);
    sdx_test_check(rc != 0 && strstr(sdx_last_error(), "/nonexistent/lora.safetensors"),
                   "a missing file refused, naming it: %s", sdx_last_error());
    char ex[256] = "";
    size_t changed = s_count_changed(m, before, NULL, ex, sizeof ex);
    int n = 0;
    const sdxl_lora_t *cur = sdxl_engine_loras(e, &n);
    sdx_test_check(changed == 0 && n == 1 && strcmp(cur[0].path, s_kohya) == 0 &&
                       cur[0].weight == 0.8,
                   "after the refusals the model is unchanged bit for bit (%zu changed%s%s) and "
                   "kohya 0.8 is still the set (%d)",
                   changed, changed ? ", e.g. " : "", ex, n);
    sdx_weights_free(&before);
}

static void s_bf16_case(const char *model)
{
    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.model_path = model;
    ep.dtype = SDX_BF16;
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    if (!sdx_test_check(e != NULL, "load bf16 (%s)", e ? "ok" : sdx_last_error()))
        return;
    const sdx_model_t *m = sdxl_engine_model(e);
    sdx_weights_t *snap = s_snapshot(m);
    sdxl_lora_t k = {s_kohya, 0.8};
    if (s_set(e, &k, 1, "kohya 0.8 (bf16 engine)")) {
        /* bf16(f32(W_bf16) + delta) vs f32 W + delta: the bf16 rounding of
           W and of the sum, ~2^-9 relative each */
        s_fused_weights_case(m, snap, 1e-2, "bf16");
        sdx_tensor_t *w = sdx_weights_get(m->unet, "down_blocks.1.attentions.0.proj_in.weight");
        sdx_test_check(w && sdx_tensor_dtype(w) == SDX_BF16, "bf16: fused weights stay bf16");
    }
    if (s_set(e, NULL, 0, "none (bf16 engine)")) {
        char ex[256] = "";
        size_t changed = s_count_changed(m, snap, NULL, ex, sizeof ex);
        sdx_test_check(changed == 0,
                       "bf16: un-fusing restores every weight bit for bit (%zu "
                       "changed%s%s)",
                       changed, changed ? ", e.g. " : "", ex);
    }
    sdx_weights_free(&snap);
    sdxl_engine_free(&e);
}

int main(void)
{
    char model[4096], single[4096];
    snprintf(model, sizeof model, "%s", sdx_test_path("model"));
    snprintf(single, sizeof single, "%s", sdx_test_path("model_single_file/tiny_sdxl.safetensors"));
    snprintf(s_kohya, sizeof s_kohya, "%s", sdx_test_path("lora/lora_kohya.safetensors"));
    snprintf(s_diffusers, sizeof s_diffusers, "%s",
             sdx_test_path("lora/lora_diffusers.safetensors"));
    if (access(s_kohya, R_OK) != 0 || access(s_diffusers, R_OK) != 0)
        sdx_test_skip("golden LoRA files missing");
    int64_t live0 = sdx_tensor_live_count();

    sdxl_engine_params_t ep;
    sdxl_engine_params_init(&ep);
    ep.model_path = model;
    sdxl_engine_t *e = sdxl_engine_new(&ep);
    if (!sdx_test_check(e != NULL, "load %s (%s)", model, e ? "ok" : sdx_last_error()))
        return sdx_test_done();
    const sdx_model_t *m = sdxl_engine_model(e);
    sdx_weights_t *orig = s_snapshot(m);
    sdx_test_check(orig != NULL, "snapshot of the original weights");
    s_read_case(m);

    const sdxl_lora_t kohya = {s_kohya, 0.8}, diff = {s_diffusers, 0.8};
    const sdxl_lora_t both[2] = {{s_kohya, 0.8}, {s_diffusers, 0.5}};
    sdx_tensor_t *lat_k1 = NULL, *lat_k2 = NULL, *lat_c1 = NULL, *lat_c2 = NULL;

    /* kohya at 0.8: weights, then images (runtime and fused references) */
    if (s_set(e, &kohya, 1, "kohya 0.8")) {
        s_fused_weights_case(m, orig, 1e-6, "kohya 0.8");
        lat_k1 = s_generate(e, "kohya 0.8", "lora_kohya_08");
        sdx_tensor_t *t = s_generate(e, "kohya 0.8", "lora_kohya_fused_08");
        sdx_tensor_free(&t);
    }
    s_set(e, &kohya, 1, "kohya 0.8 again (no-op)");
    int n = 0;
    sdxl_engine_loras(e, &n);
    sdx_test_check(n == 1, "the engine remembers the set (%d)", n);
    if (s_set(e, &diff, 1, "diffusers 0.8")) {
        sdx_tensor_t *t = s_generate(e, "diffusers 0.8", "lora_diffusers_08");
        sdx_tensor_free(&t);
    }
    if (s_set(e, both, 2, "kohya 0.8 + diffusers 0.5"))
        lat_c1 = s_generate(e, "kohya 0.8 + diffusers 0.5", "lora_combined_08_05");
    if (s_set(e, &kohya, 1, "kohya 0.8 (second time)"))
        lat_k2 = s_generate(e, "kohya 0.8 (second time)", NULL);
    if (s_set(e, both, 2, "combined (second time)"))
        lat_c2 = s_generate(e, "combined (second time)", NULL);
    sdx_test_check(lat_k1 && lat_k2 && s_bits_equal(lat_k1, lat_k2),
                   "switching back to kohya 0.8 gives bit-identical latents");
    sdx_test_check(lat_c1 && lat_c2 && s_bits_equal(lat_c1, lat_c2),
                   "switching back to the combined set gives bit-identical latents");
    sdx_tensor_free(&lat_k1);
    sdx_tensor_free(&lat_k2);
    sdx_tensor_free(&lat_c1);
    sdx_tensor_free(&lat_c2);

    /* other spellings of the same adapters */
    char dir[] = "/tmp/sdx_lora_test_XXXXXX";
    bool have_dir = sdx_test_check(mkdtemp(dir) != NULL, "temp folder");
    if (have_dir) {
        char peft[4200], noalpha[4200];
        snprintf(peft, sizeof peft, "%s/peft.safetensors", dir);
        snprintf(noalpha, sizeof noalpha, "%s/noalpha.safetensors", dir);
        if (sdx_test_check(s_rewrite("lora/lora_diffusers.safetensors", peft, s_to_peft) == 0,
                           "write the diffusers LoRA with PEFT names")) {
            sdxl_lora_t a = {peft, 0.8};
            s_same_fusion_case(e, &a, &diff, "PEFT lora_A/lora_B == diffusers lora.down/up");
            unlink(peft);
        }
        char procs[4200];
        snprintf(procs, sizeof procs, "%s/attn_procs.safetensors", dir);
        if (sdx_test_check(s_rewrite("lora/lora_diffusers.safetensors", procs, s_to_attn_procs) ==
                               0,
                           "write the diffusers LoRA with attention-processor names")) {
            sdx_safetensors_t *st = sdx_safetensors_open(procs);
            size_t renamed = 0;
            for (size_t i = 0; st && i < sdx_safetensors_count(st); i++)
                renamed += strstr(sdx_safetensors_at(st, i)->name, ".processor.") != NULL;
            sdx_safetensors_close(&st);
            sdx_test_check(renamed == 272, "attn-processor file: 272 UNet keys renamed (%zu)",
                           renamed);
            sdxl_lora_t a = {procs, 0.8};
            s_same_fusion_case(e, &a, &diff, "attn-processor names == diffusers lora.down/up");
            unlink(procs);
        }
        if (sdx_test_check(s_rewrite("lora/lora_kohya.safetensors", noalpha, s_drop_alpha) == 0,
                           "write the kohya LoRA without alphas")) {
            /* alpha 2 / rank 4 at 0.8 is the default alpha (= rank) at 0.4 */
            sdxl_lora_t a = {noalpha, 0.4};
            s_same_fusion_case(e, &a, &kohya, "kohya without alpha at 0.4 == kohya at 0.8");
            unlink(noalpha);
        }
    }

    /* un-fuse: the originals come back bit for bit */
    if (s_set(e, NULL, 0, "none")) {
        char ex[256] = "";
        size_t changed = s_count_changed(m, orig, NULL, ex, sizeof ex);
        sdx_test_check(changed == 0,
                       "un-fusing restores all %zu UNet/TE weights bit for bit "
                       "(%zu changed%s%s)",
                       sdx_weights_count(orig), changed, changed ? ", e.g. " : "", ex);
        sdx_tensor_t *t = s_generate(e, "no LoRA", "t2i_euler");
        /* the parity checks above can tell a LoRA's effect from none */
        sdx_safetensors_t *st = sdx_test_open("ref/pipeline/lora_kohya_08.safetensors");
        sdx_tensor_t *ref = sdx_test_get(st, "latents_final");
        double d = t && ref ? sdx_test_rel_l2(t, ref) : 0;
        sdx_test_check(d > 1e-2,
                       "no-LoRA latents are %.3e (rel L2) away from lora_kohya_08's "
                       "(> 1e-2: the tolerance discriminates)",
                       d);
        sdx_tensor_free(&ref);
        sdx_safetensors_close(&st);
        sdx_tensor_free(&t);
    }

    /* refusals leave everything as it was */
    if (have_dir) {
        s_bad_files_case(e, dir);
        rmdir(dir);
    }
    s_set(e, NULL, 0, "none (end)");
    sdx_weights_free(&orig);
    sdxl_engine_free(&e);

    /* the single-file layout names weights the same way */
    ep.model_path = single;
    ep.config_dir = model;
    e = sdxl_engine_new(&ep);
    if (sdx_test_check(e != NULL, "load %s (%s)", single, e ? "ok" : sdx_last_error())) {
        if (s_set(e, &kohya, 1, "kohya 0.8 (single file)")) {
            sdx_tensor_t *t = s_generate(e, "single-file kohya 0.8", "lora_kohya_08");
            sdx_tensor_free(&t);
        }
        sdxl_engine_free(&e); /* freed with the LoRA fused: no leak */
    }

    s_bf16_case(model);

    /* a text-only engine (the conditioning worker) fuses the text encoders'
       part and skips the UNet's */
    ep.model_path = model;
    ep.config_dir = NULL;
    ep.text_only = true;
    e = sdxl_engine_new(&ep);
    if (sdx_test_check(e != NULL, "load text-only (%s)", e ? "ok" : sdx_last_error())) {
        sdx_lora_t *l = sdx_lora_load(s_kohya, sdxl_engine_model(e));
        sdx_test_check(l && sdx_lora_count(l) == 66 && sdx_lora_skipped(l) == 202,
                       "text-only: kohya has 66 text-encoder targets, 202 UNet modules skipped "
                       "(%zu, %zu)",
                       sdx_lora_count(l), sdx_lora_skipped(l));
        sdx_lora_free(&l);
        if (s_set(e, &kohya, 1, "kohya 0.8 (text-only engine)")) {
            char err[512];
            sdx_weights_t *ref = sdx_test_weights("lora/lora_kohya_fused_weights_08.safetensors",
                                                  SDX_F32, err, sizeof err);
            const char *name = "text_model.encoder.layers.0.self_attn.q_proj.weight";
            char key[128];
            snprintf(key, sizeof key, "text_encoder_2.%s", name);
            sdx_tensor_t *w = sdx_weights_get(sdxl_engine_model(e)->te2, name);
            double d = ref && w ? sdx_test_rel_l2(w, sdx_weights_get(ref, key)) : INFINITY;
            sdx_test_check(d <= 1e-6, "text-only: text_encoder_2 q_proj fused (rel L2 %.2e)", d);
            sdx_weights_free(&ref);
        }
        sdxl_engine_free(&e);
    }

    sdx_test_check(sdx_tensor_live_count() == live0, "no tensor handles leaked (%lld live)",
                   (long long)(sdx_tensor_live_count() - live0));
    return sdx_test_done();
}
