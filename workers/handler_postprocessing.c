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

static const char *const s_planned[] = {
    "postprocessing.upscale", "postprocessing.encode", "postprocessing.finalize",
    "postprocessing.safety_check", NULL,
};

const sdx_domain_t sdx_domain_postprocessing = {
    .name = "postprocessing",
    .handlers = NULL,
    .planned = s_planned,
    .planned_issue = "this sdxl-worker was built without the libtorch engine (-Dengine=disabled)",
    .options = s_options,
    .option = s_option,
    .fini = s_fini,
};

#else /* SDX_WITH_ENGINE */

#include "out_save.h"
#include "sdx_codec.h"
#include "sdx_imgcodec.h"
#include "sdx_torch.h"
#include "sdx_upscale.h"

#include <dirent.h>
#include <pthread.h>
#include <strings.h>
#include <time.h>

/* One loaded upscaler, reused while requests name the same file. */
typedef struct {
    pthread_mutex_t mu;
    char path[PATH_MAX];
    sdx_rrdb_t *model;
    sdx_device_t device;
    unsigned long upscales, encodes, saved;
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
    if (sdx_device_parse(sdx_worker_device(w), &e->device) != 0) {
        snprintf(err, err_len, "device %s: %s", sdx_worker_device(w), sdx_last_error());
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
        sdx_rrdb_free(&e->model);
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
    pthread_mutex_lock(&e->mu);
    sdx_map_set_str(out, "upscalers_root", st->upscalers_root);
    sdx_map_set_str(out, "outputs_root", st->outputs_root);
    sdx_map_set_str(out, "loaded_upscaler", e->path);
    sdx_map_set_int(out, "upscales", (int64_t)e->upscales);
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
            return sdx_job_fail(job, "invalid_request", "image", "image is not valid base64");
        bytes = owned;
    } else {
        return sdx_job_fail(job, "invalid_request", "image",
                            "image is required: PNG, JPEG or WebP bytes (bin, or base64 text)");
    }
    int rc = sdx_image_decode(bytes, len, 0, img);
    free(owned);
    if (rc != 0)
        return sdx_job_fail(job, "invalid_request", "image", "%s", sdx_last_error());
    return 0;
}

static bool s_has_ext(const char *name, const char *ext)
{
    size_t n = strlen(name), e = strlen(ext);
    return n > e && strcasecmp(name + n - e, ext) == 0;
}

/* Resolve an upscaler name to a file under the root (see the header). */
static int s_find_upscaler(sdx_job_t *job, const s_post_t *st, const char *name, double factor,
                           char *path, size_t path_len)
{
    const char *field = "upscale.model";
    if (!st->upscalers_root[0])
        return sdx_job_fail(job, "not_found", field,
                            "no upscalers root is configured on this worker (--upscalers-root); "
                            "use model \"lanczos\" or leave it out");
    DIR *d = opendir(st->upscalers_root);
    if (!d)
        return sdx_job_fail(job, "internal", field, "cannot read %s: %s", st->upscalers_root,
                            strerror(errno));
    char names[64][256];
    int n = 0, exact = -1, icase = -1, sub = -1, subs = 0, sub_factor = -1, sub_factors = 0;
    char xf[16];
    snprintf(xf, sizeof xf, "x%d", (int)(factor + 0.5));
    struct dirent *de;
    while ((de = readdir(d)) && n < 64) {
        if (de->d_name[0] == '.' || !s_has_ext(de->d_name, ".safetensors"))
            continue;
        snprintf(names[n], sizeof names[n], "%.*s", (int)(strlen(de->d_name) - 12), de->d_name);
        if (strcmp(names[n], name) == 0)
            exact = n;
        else if (strcasecmp(names[n], name) == 0)
            icase = n;
        else if (strcasestr(names[n], name)) {
            sub = n, subs++;
            if (factor > 0 && strcasestr(names[n], xf))
                sub_factor = n, sub_factors++;
        }
        n++;
    }
    closedir(d);
    int pick = exact >= 0 ? exact : icase >= 0 ? icase : subs == 1 ? sub
                                                : sub_factors == 1 ? sub_factor : -1;
    if (pick >= 0) {
        if (snprintf(path, path_len, "%s/%s.safetensors", st->upscalers_root, names[pick]) >=
            (int)path_len)
            return sdx_job_fail(job, "invalid_request", field, "upscaler path too long");
        return 0;
    }
    char list[1024] = "";
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
    return sdx_job_fail(job, "not_found", field, "upscaler '%s' %s in %s; there: %s%s", name,
                        subs > 1 ? "matches several files" : "is not", st->upscalers_root,
                        n ? list : "(none)", n ? ", or \"lanczos\"" : "; use \"lanczos\"");
}

static bool s_tile_progress(void *ctx, int done, int total)
{
    sdx_job_t *job = ctx;
    sdx_worker_progress(job, done, total, "upscaling");
    return !sdx_worker_cancelled(job);
}

/* Upscale img in place by factor with the named model (NULL/"": the default,
   Lanczos; "lanczos": Lanczos). Fills method/model_out. 0, or -1 after fail. */
static int s_upscale(sdx_job_t *job, s_post_t *st, sdx_image_t *img, double factor,
                     const char *model, char *method, size_t method_len)
{
    s_engine_t *e = st->engine;
    const char *field = "upscale.factor";
    if (factor <= 0)
        factor = 2;
    if (factor < 1 || factor > 8)
        return sdx_job_fail(job, "invalid_request", field, "factor must be in 1..8, got %g",
                            factor);
    int tw = (int)(img->width * factor + 0.5), th = (int)(img->height * factor + 0.5);
    if ((int64_t)tw * th > (int64_t)16384 * 16384)
        return sdx_job_fail(job, "invalid_request", field,
                            "%dx%d x%g is %dx%d, over 268 million pixels", img->width,
                            img->height, factor, tw, th);
    sdx_image_t out = {0};
    if (model && *model && strcasecmp(model, "lanczos") != 0) {
        char path[PATH_MAX];
        if (s_find_upscaler(job, st, model, factor, path, sizeof path) != 0)
            return -1;
        pthread_mutex_lock(&e->mu);
        if (!e->model || strcmp(e->path, path) != 0) {
            sdx_rrdb_free(&e->model);
            e->path[0] = '\0';
            e->model = sdx_rrdb_load(path, SDX_F32, e->device);
            if (!e->model) {
                pthread_mutex_unlock(&e->mu);
                return sdx_job_fail(job, "invalid_request", "upscale.model",
                                    "cannot load upscaler %s: %s", path, sdx_last_error());
            }
            snprintf(e->path, sizeof e->path, "%s", path);
        }
        sdx_upscale_opts_t o;
        sdx_upscale_opts_init(&o);
        o.tile = st->tile;
        o.pad = st->pad;
        o.progress = s_tile_progress;
        o.progress_ctx = job;
        int rc = sdx_rrdb_upscale(e->model, img, &o, &out);
        int scale = sdx_rrdb_config(e->model)->scale;
        e->upscales++;
        pthread_mutex_unlock(&e->mu);
        if (rc != 0) {
            if (sdx_worker_cancelled(job))
                return -1;
            return sdx_job_fail(job, "internal", NULL, "upscale: %s", sdx_last_error());
        }
        const char *slash = strrchr(path, '/');
        snprintf(method, method_len, "%.*s x%d", (int)(strlen(slash + 1) - 12), slash + 1, scale);
        sdx_image_clear(img);
        *img = out;
        if (img->width == tw && img->height == th)
            return 0;
        /* the model's scale is not the factor: resize its output, as A1111 */
        memset(&out, 0, sizeof out);
        snprintf(method + strlen(method), method_len - strlen(method), " + lanczos");
    } else {
        snprintf(method, method_len, "lanczos");
    }
    if (sdx_lanczos_resize(img, tw, th, &out) != 0)
        return sdx_job_fail(job, "internal", NULL, "resize: %s", sdx_last_error());
    sdx_image_clear(img);
    *img = out;
    return 0;
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
        return sdx_job_fail(job, "invalid_request", "format",
                            "unknown format '%s'; accepted: png, jpeg, webp", fname);
    if (!sdx_img_format_available(o.format))
        return sdx_job_fail(job, "not_available", "format",
                            "this worker was built without a %s encoder", fname);
    int64_t q = sdx_map_int(data, "quality", 95);
    if (q < 1 || q > 100)
        return sdx_job_fail(job, "invalid_request", "quality", "quality must be in 1..100");
    o.quality = (int)q;
    o.lossless = sdx_map_bool(data, "lossless", false);
    char *text = s_parameters(data, meta_w, meta_h);
    o.text = text;
    int rc = sdx_image_encode(img, &o, buf, len);
    free(text);
    if (rc != 0)
        return sdx_job_fail(job, "internal", "format", "%s", sdx_last_error());
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
                  method, sizeof method) != 0) {
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
                  method, sizeof method) != 0) {
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
            rc = sdx_job_fail(job, "invalid_request", "save_path", "%s", err);
        else if (out_save_atomic(paths[0], buf, len, err, sizeof err) != 0)
            rc = sdx_job_fail(job, "internal", "save_path", "%s", err);
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

static const char *const s_planned[] = {
    "postprocessing.safety_check",
    NULL,
};

const sdx_domain_t sdx_domain_postprocessing = {
    .name = "postprocessing",
    .handlers = s_handlers,
    .planned = s_planned,
    .planned_issue = "no safety classifier model is built into this worker",
    .options = s_options,
    .option = s_option,
    .init = s_init,
    .fini = s_fini,
    .status = s_status,
};

#endif /* SDX_WITH_ENGINE */
