/*  handler_postprocessing.c - the postprocessing domain: upscaling (RRDBNet
    upscalers from the upscalers root, Lanczos-3 when none is named or
    configured), encoding with A1111-compatible metadata (PNG/JPEG/WebP,
    workers/sdxl/sdx_imgcodec.h) and the workflow step that does both and
    saves the file under the outputs root (out_save.h).

      postprocessing.upscale   {image, factor?, model?, tile?}  -> PNG bytes
      postprocessing.encode    {image, format?, quality?, lossless?,
                                parameters? | metadata?}        -> encoded bytes, sha256
      postprocessing.finalize  {image, upscale?{factor, model}, format?, quality?,
                                lossless?, parameters?|metadata?, save_path?,
                                name?, return_image?}           -> path, sha256, bytes
      postprocessing.safety_check                               -> not_available (no model)

    `image` is PNG, JPEG or WebP bytes (msgpack bin, or base64 text from JSON
    clients). Upscaler names are the file stems under the upscalers root
    (RealESRGAN_x4plus for RealESRGAN_x4plus.safetensors); a name matches
    exactly, then ignoring case, then as the one stem that contains it
    ("ESRGAN"), and an unknown name is refused with the list of what is
    there. "lanczos" names the resampler. When the factor differs from the
    model's scale, the model's output is resized to the factor with Lanczos,
    as A1111 does.

    Without the engine (-Dengine=disabled) every operation answers
    not_available. Not for: VAE decoding (inference), the catalogue of model
    files (model.*). */
#include "sdx_worker.h"

#include "sdx_log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char upscalers_root[PATH_MAX]; /* "" : none configured */
    char outputs_root[PATH_MAX];
    int tile, pad, threads;
    void *engine; /* s_engine_t with the engine, NULL without */
} s_post_t;

static const sdx_option_t s_options[] = {
    {"upscalers-root", true, "DIR", "./upscalers", "SDXL_UPSCALERS_ROOT",
     "RRDBNet upscalers (.safetensors); missing: Lanczos only"},
    {"outputs-root", true, "DIR", "./outputs", "SDXL_OUTPUTS_ROOT",
     "where save_path writes (made when missing)"},
    {"tile", true, "N", "512", "SDXL_UPSCALE_TILE",
     "upscaler tile edge in input pixels, 0: whole image (0..8192)"},
    {"tile-pad", true, "N", "10", "SDXL_UPSCALE_TILE_PAD", "context around each tile (0..256)"},
    {"threads", true, "N", "0", "SDXL_THREADS", "libtorch CPU threads, 0: its default (0..1024)"},
    {NULL, false, NULL, NULL, NULL, NULL},
};

static s_post_t *s_state(sdx_worker_t *w)
{
    s_post_t *st = sdx_worker_domain_state(w);
    if (!st && (st = calloc(1, sizeof *st)))
        sdx_worker_set_domain_state(w, st);
    return st;
}

static int s_int(const char *v, int lo, int hi, int *out, char *err, size_t err_len)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (!*v || *end || errno || n < lo || n > hi) {
        snprintf(err, err_len, "must be an integer in %d..%d", lo, hi);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int s_option(sdx_worker_t *w, const char *key, const char *value, char *err, size_t err_len)
{
    s_post_t *st = s_state(w);
    if (!st) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (strcmp(key, "tile") == 0)
        return s_int(value, 0, 8192, &st->tile, err, err_len);
    if (strcmp(key, "tile-pad") == 0)
        return s_int(value, 0, 256, &st->pad, err, err_len);
    if (strcmp(key, "threads") == 0)
        return s_int(value, 0, 1024, &st->threads, err, err_len);
    char *dst = strcmp(key, "upscalers-root") == 0 ? st->upscalers_root : st->outputs_root;
    if (!*value || strlen(value) >= PATH_MAX) {
        snprintf(err, err_len, "must name a folder");
        return -1;
    }
    struct stat sb;
    if (dst == st->upscalers_root && (stat(value, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        log_info("postprocessing: upscalers root %s is not a folder: Lanczos only", value);
        dst[0] = '\0';
        return 0;
    }
    snprintf(dst, PATH_MAX, "%s", value);
    return 0;
}

#ifndef SDX_WITH_ENGINE

static void s_fini(sdx_worker_t *w)
{
    free(sdx_worker_domain_state(w));
    sdx_worker_set_domain_state(w, NULL);
}

const sdx_domain_t sdx_domain_postprocessing = {
    .name = "postprocessing",
    .capacity = 1, /* VAE decode runs on the device */
    .handlers = NULL,
    .planned_issue = "this sdxl-worker was built without the libtorch engine (-Dengine=disabled)",
    .options = s_options,
    .option = s_option,
    .fini = s_fini,
};

#else /* SDX_WITH_ENGINE */

#include "out_save.h"
#include "post_upscale.h"
#include "sdx_codec.h"
#include "sdx_imgcodec.h"
#include "sdx_torch.h"

#include <pthread.h>
#include <time.h>

typedef struct {
    pthread_mutex_t mu;
    post_upscaler_t *up;
    unsigned long encodes, saved;
} s_engine_t;

static double s_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int s_init(sdx_worker_t *w, char *err, size_t err_len)
{
    s_post_t *st = s_state(w);
    s_engine_t *e = st ? calloc(1, sizeof *e) : NULL;
    if (!e) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pthread_mutex_init(&e->mu, NULL);
    st->engine = e;
    sdx_device_t dev;
    if (sdx_device_parse(sdx_worker_device(w), &dev) != 0) {
        snprintf(err, err_len, "device %s: %s", sdx_worker_device(w), sdx_last_error());
        return -1;
    }
    if (!(e->up = post_upscaler_new(st->upscalers_root, dev, st->tile, st->pad))) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (st->threads > 0)
        sdx_set_num_threads(st->threads);
    if (out_mkdirs(st->outputs_root) != 0) {
        snprintf(err, err_len, "outputs root %s cannot be created: %s", st->outputs_root,
                 strerror(errno));
        return -1;
    }
    log_info("postprocessing on %s: upscalers %s, outputs %s, tile %d (+%d)",
             sdx_worker_device(w), st->upscalers_root[0] ? st->upscalers_root : "(none: Lanczos)",
             st->outputs_root, st->tile, st->pad);
    return 0;
}

static void s_fini(sdx_worker_t *w)
{
    s_post_t *st = sdx_worker_domain_state(w);
    if (!st)
        return;
    s_engine_t *e = st->engine;
    if (e) {
        post_upscaler_free(&e->up);
        pthread_mutex_destroy(&e->mu);
        free(e);
    }
    free(st);
    sdx_worker_set_domain_state(w, NULL);
}

static void s_status(sdx_worker_t *w, sdx_value_t *out)
{
    s_post_t *st = sdx_worker_domain_state(w);
    s_engine_t *e = st ? st->engine : NULL;
    if (!e)
        return;
    char loaded[PATH_MAX];
    unsigned long ups = 0;
    if (e->up)
        post_upscaler_stats(e->up, loaded, sizeof loaded, &ups);
    else
        loaded[0] = '\0';
    pthread_mutex_lock(&e->mu);
    sdx_map_set_str(out, "upscalers_root", st->upscalers_root);
    sdx_map_set_str(out, "outputs_root", st->outputs_root);
    sdx_map_set_str(out, "loaded_upscaler", loaded);
    sdx_map_set_int(out, "upscales", (int64_t)ups);
    sdx_map_set_int(out, "encodes", (int64_t)e->encodes);
    sdx_map_set_int(out, "saved", (int64_t)e->saved);
    pthread_mutex_unlock(&e->mu);
}

/* ---------------------------------------------------------------- inputs */

/* data.image (bin, or base64 text) decoded to RGB. 0, or -1 after fail. */
static int s_image_in(sdx_job_t *job, const sdx_value_t *data, sdx_image_t *img)
{
    const sdx_value_t *v = sdx_map_get(data, "image");
    const uint8_t *bytes = NULL;
    size_t len = 0;
    uint8_t *owned = NULL;
    if (v && v->type == SDX_BIN) {
        bytes = v->u.bin.ptr;
        len = v->u.bin.len;
    } else if (v && v->type == SDX_STR) {
        const char *s = v->u.str.ptr;
        const char *comma = strncmp(s, "data:", 5) == 0 ? strchr(s, ',') : NULL;
        if (comma)
            s = comma + 1;
        if (sdx_base64_decode(s, strlen(s), &owned, &len) != 0)
            return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "image", "image is not valid base64");
        bytes = owned;
    } else {
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "image",
                            "image is required: PNG, JPEG or WebP bytes (bin, or base64 text)");
    }
    int rc = sdx_image_decode(bytes, len, 0, img);
    free(owned);
    if (rc != 0)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "image", "%s", sdx_last_error());
    return 0;
}

static bool s_tile_progress(void *ctx, int done, int total)
{
    sdx_job_t *job = ctx;
    sdx_worker_progress(job, done, total, "upscaling");
    return !sdx_worker_cancelled(job);
}

/* post_upscale, its status as a job error (field: the request's). */
static int s_upscale(sdx_job_t *job, s_post_t *st, sdx_image_t *img, double factor,
                     const char *model, const char *field, char *method, size_t method_len)
{
    char err[1400];
    post_status_t rc = post_upscale(((s_engine_t *)st->engine)->up, img, factor, model,
                                    s_tile_progress, job, method, method_len, err, sizeof err);
    char mfield[64];
    snprintf(mfield, sizeof mfield, "%s%smodel", field, *field ? "." : "");
    switch (rc) {
    case POST_OK:
        return 0;
    case POST_NOT_FOUND:
        return sdx_job_fail(job, SDX_ERR_NOT_FOUND, mfield, "%s", err);
    case POST_BAD_REQUEST:
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST,
                            strstr(err, "factor") || strstr(err, "pixels") ? "factor" : mfield,
                            "%s", err);
    case POST_CANCELLED:
        return -1; /* the runtime answers cancelled / timeout */
    default:
        return sdx_job_fail(job, SDX_ERR_INTERNAL, NULL, "%s", err);
    }
}

/* The parameters text: data.parameters as given, else built from
   data.metadata (flat request names or A1111's). NULL if neither. */
static char *s_parameters(const sdx_value_t *data, int w, int h)
{
    const char *given = sdx_map_str(data, "parameters", NULL);
    if (given)
        return strdup(given);
    const sdx_value_t *m = sdx_map_get(data, "metadata");
    if (!m || m->type != SDX_MAP)
        return NULL;
    sdx_infotext_t it;
    sdx_infotext_init(&it);
    char sampler[96];
    it.prompt = sdx_map_str(m, "prompt", "");
    it.negative_prompt = sdx_map_str(m, "negative_prompt", NULL);
    it.steps = (int)sdx_map_int(m, "steps", sdx_map_int(m, "num_inference_steps", 0));
    it.sampler = sdx_map_str(m, "sampler", NULL);
    if (!it.sampler && sdx_map_str(m, "scheduler", NULL))
        it.sampler = sdx_a1111_sampler(sdx_map_str(m, "scheduler", NULL),
                                       sdx_map_bool(m, "use_karras_sigmas", false), sampler,
                                       sizeof sampler);
    it.cfg_scale = sdx_map_num(m, "cfg_scale", sdx_map_num(m, "guidance_scale", 0));
    it.seed = sdx_map_int(m, "seed", 0);
    it.width = (int)sdx_map_int(m, "width", w);
    it.height = (int)sdx_map_int(m, "height", h);
    it.model_hash = sdx_map_str(m, "model_hash", NULL);
    it.model_name = sdx_map_str(m, "model_name", sdx_map_str(m, "model", NULL));
    it.denoising_strength = sdx_map_num(m, "strength", -1);
    it.clip_skip = (int)sdx_map_int(m, "clip_skip", 0);
    return sdx_infotext_format(&it);
}

/* Encode per data.format/quality/lossless with the parameters text.
   0, or -1 after fail. */
static int s_encode(sdx_job_t *job, const sdx_value_t *data, const sdx_image_t *img,
                    int meta_w, int meta_h, uint8_t **buf, size_t *len, sdx_img_format_t *fmt)
{
    const char *fname = sdx_map_str(data, "format", "png");
    sdx_encode_opts_t o;
    sdx_encode_opts_init(&o);
    o.format = sdx_img_format_parse(fname);
    if (o.format == SDX_FMT_UNKNOWN)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "format",
                            "unknown format '%s'; accepted: png, jpeg, webp", fname);
    if (!sdx_img_format_available(o.format))
        return sdx_job_fail(job, SDX_ERR_NOT_AVAILABLE, "format",
                            "this worker was built without a %s encoder", fname);
    int64_t q = sdx_map_int(data, "quality", 95);
    if (q < 1 || q > 100)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "quality", "quality must be in 1..100");
    o.quality = (int)q;
    o.lossless = sdx_map_bool(data, "lossless", false);
    int side = sdx_img_format_max_side(o.format);
    if (img->width > side || img->height > side)
        return sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "format",
                            "%s holds at most %d pixels a side; the image is %dx%d", fname, side,
                            img->width, img->height);
    char *text = s_parameters(data, meta_w, meta_h);
    o.text = text;
    int rc = sdx_image_encode(img, &o, buf, len);
    free(text);
    if (rc != 0)
        return sdx_job_fail(job, SDX_ERR_INTERNAL, "format", "%s", sdx_last_error());
    *fmt = o.format;
    return 0;
}

static void s_put_image(sdx_value_t *reply, const uint8_t *buf, size_t len, sdx_img_format_t f,
                        const sdx_image_t *img)
{
    sdx_map_set(reply, "image", sdx_value_bin_new(buf, len));
    sdx_map_set_str(reply, "format", sdx_img_format_name(f));
    sdx_map_set_str(reply, "mime", sdx_img_format_mime(f));
    sdx_map_set_int(reply, "bytes", (int64_t)len);
    sdx_map_set_int(reply, "width", img->width);
    sdx_map_set_int(reply, "height", img->height);
}

/* ---------------------------------------------------------------- handlers */

static int s_h_upscale(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    double t0 = s_ms();
    s_post_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    sdx_image_t img = {0};
    if (s_image_in(job, data, &img) != 0)
        return -1;
    char method[PATH_MAX + 32];
    int w0 = img.width, h0 = img.height;
    if (s_upscale(job, st, &img, sdx_map_num(data, "factor", 0), sdx_map_str(data, "model", NULL),
                  "", method, sizeof method) != 0) {
        sdx_image_clear(&img);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    sdx_img_format_t f;
    int rc = s_encode(job, data, &img, img.width, img.height, &buf, &len, &f);
    if (rc == 0) {
        s_put_image(reply, buf, len, f, &img);
        sdx_map_set_str(reply, "method", method);
        sdx_map_set_float(reply, "factor", (double)img.width / w0);
        log_info("%s: upscaled %dx%d -> %dx%d (%s), %.0f ms", sdx_job_request_id(job), w0, h0,
                 img.width, img.height, method, s_ms() - t0);
    }
    free(buf);
    sdx_image_clear(&img);
    return rc;
}

static int s_h_encode(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    s_post_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    sdx_image_t img = {0};
    if (s_image_in(job, data, &img) != 0)
        return -1;
    uint8_t *buf = NULL;
    size_t len = 0;
    sdx_img_format_t f;
    int rc = s_encode(job, data, &img, img.width, img.height, &buf, &len, &f);
    if (rc == 0) {
        char hex[65];
        out_sha256_hex(buf, len, hex);
        s_put_image(reply, buf, len, f, &img);
        sdx_map_set_str(reply, "sha256", hex);
        pthread_mutex_lock(&((s_engine_t *)st->engine)->mu);
        ((s_engine_t *)st->engine)->encodes++;
        pthread_mutex_unlock(&((s_engine_t *)st->engine)->mu);
    }
    free(buf);
    sdx_image_clear(&img);
    return rc;
}

static int s_h_finalize(sdx_job_t *job, const sdx_value_t *data, sdx_value_t *reply)
{
    double t0 = s_ms();
    s_post_t *st = sdx_worker_domain_state(sdx_job_worker(job));
    s_engine_t *e = st->engine;
    sdx_image_t img = {0};
    if (s_image_in(job, data, &img) != 0)
        return -1;
    int w0 = img.width, h0 = img.height;
    const sdx_value_t *up = sdx_map_get(data, "upscale");
    char method[PATH_MAX + 32] = "";
    if (up && up->type == SDX_MAP &&
        s_upscale(job, st, &img, sdx_map_num(up, "factor", 0), sdx_map_str(up, "model", NULL),
                  "upscale", method, sizeof method) != 0) {
        sdx_image_clear(&img);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    sdx_img_format_t f;
    /* the parameters describe the generation: its size, not the upscaled one */
    int rc = s_encode(job, data, &img, w0, h0, &buf, &len, &f);
    char hex[65] = "";
    if (rc == 0)
        out_sha256_hex(buf, len, hex);
    const char *sp = sdx_map_str(data, "save_path", NULL);
    if (rc == 0 && sp && *sp) {
        char paths[1][PATH_MAX], err[512], ext[8];
        snprintf(ext, sizeof ext, ".%s", f == SDX_FMT_JPEG ? "jpg" : sdx_img_format_name(f));
        const char *base = sdx_map_str(data, "name", NULL);
        char dflt[96];
        if (!base) {
            snprintf(dflt, sizeof dflt, "%.16s-%.10s", sdx_job_request_id(job), hex);
            base = dflt;
        }
        if (out_save_paths(st->outputs_root, sp, base, ext, 1, paths, err, sizeof err) != 0)
            rc = sdx_job_fail(job, SDX_ERR_INVALID_REQUEST, "save_path", "%s", err);
        else if (out_save_atomic(paths[0], buf, len, err, sizeof err) != 0)
            rc = sdx_job_fail(job, sdx_error_for_errno(errno), "save_path", "%s", err);
        else {
            sdx_map_set_str(reply, "path", paths[0]);
            pthread_mutex_lock(&e->mu);
            e->saved++;
            pthread_mutex_unlock(&e->mu);
        }
    }
    if (rc == 0) {
        if (sdx_map_bool(data, "return_image", true))
            s_put_image(reply, buf, len, f, &img);
        else {
            sdx_map_set_str(reply, "format", sdx_img_format_name(f));
            sdx_map_set_int(reply, "bytes", (int64_t)len);
            sdx_map_set_int(reply, "width", img.width);
            sdx_map_set_int(reply, "height", img.height);
        }
        sdx_map_set_str(reply, "sha256", hex);
        if (method[0])
            sdx_map_set_str(reply, "upscale_method", method);
        sdx_map_set_float(reply, "finalize_ms", s_ms() - t0);
    }
    free(buf);
    sdx_image_clear(&img);
    return rc;
}

static const sdx_handler_t s_handlers[] = {
    {"postprocessing.upscale", s_h_upscale, 0, "upscale an image (RRDBNet, or Lanczos)"},
    {"postprocessing.encode", s_h_encode, 0, "PNG/JPEG/WebP bytes with A1111 metadata"},
    {"postprocessing.finalize", s_h_finalize, 0,
     "optional upscale, encode, atomic save under the outputs root, SHA-256"},
    {NULL, NULL, 0, NULL},
};

const sdx_domain_t sdx_domain_postprocessing = {
    .name = "postprocessing",
    .handlers = s_handlers,
    .planned_issue = "no safety classifier model is built into this worker",
    .options = s_options,
    .option = s_option,
    .init = s_init,
    .fini = s_fini,
    .status = s_status,
};

#endif /* SDX_WITH_ENGINE */
