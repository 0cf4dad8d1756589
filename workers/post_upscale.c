/*  post_upscale.c - see post_upscale.h. */
#include "post_upscale.h"

#include "sdx_upscale.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct post_upscaler {
    pthread_mutex_t mu;
    char root[PATH_MAX];
    char path[PATH_MAX]; /* of the loaded model, "" none */
    sdx_rrdb_t *model;
    sdx_device_t device;
    int tile, pad;
    unsigned long upscales;
};

post_upscaler_t *post_upscaler_new(const char *root, sdx_device_t dev, int tile, int pad)
{
    post_upscaler_t *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    pthread_mutex_init(&u->mu, NULL);
    snprintf(u->root, sizeof u->root, "%s", root ? root : "");
    u->device = dev;
    u->tile = tile;
    u->pad = pad;
    return u;
}

void post_upscaler_free(post_upscaler_t **up)
{
    if (!up || !*up)
        return;
    sdx_rrdb_free(&(*up)->model);
    pthread_mutex_destroy(&(*up)->mu);
    free(*up);
    *up = NULL;
}

const char *post_upscaler_root(const post_upscaler_t *u)
{
    return u ? u->root : "";
}

void post_upscaler_stats(post_upscaler_t *u, char *loaded, size_t loaded_len,
                         unsigned long *upscales)
{
    pthread_mutex_lock(&u->mu);
    snprintf(loaded, loaded_len, "%s", u->path);
    *upscales = u->upscales;
    pthread_mutex_unlock(&u->mu);
}

static bool s_has_ext(const char *name, const char *ext)
{
    size_t n = strlen(name), e = strlen(ext);
    return n > e && strcasecmp(name + n - e, ext) == 0;
}

static post_status_t s_find(const post_upscaler_t *u, const char *name, double factor, char *path,
                            size_t path_len, char *err, size_t err_len)
{
    if (!u->root[0]) {
        snprintf(err, err_len, "no upscalers root is configured on this worker "
                               "(--upscalers-root); use model \"lanczos\" or leave it out");
        return POST_NOT_FOUND;
    }
    /* an exact name first, whatever the folder holds */
    struct stat sb;
    if (strlen(name) < 256 && !strchr(name, '/') && name[0] != '.' &&
        snprintf(path, path_len, "%s/%s.safetensors", u->root, name) < (int)path_len &&
        stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
        return POST_OK;
    DIR *d = opendir(u->root);
    if (!d) {
        snprintf(err, err_len, "cannot read %s: %s", u->root, strerror(errno));
        return POST_FAILED;
    }
    char names[64][256];
    int n = 0, exact = -1, icase = -1, sub = -1, subs = 0, subf = -1, subfs = 0;
    char xf[16];
    snprintf(xf, sizeof xf, "x%d", (int)(factor + 0.5));
    struct dirent *de;
    while ((de = readdir(d)) && n < 64) {
        if (de->d_name[0] == '.' || !s_has_ext(de->d_name, ".safetensors") ||
            strlen(de->d_name) - 12 >= sizeof names[n])
            continue;
        snprintf(names[n], sizeof names[n], "%.*s", (int)(strlen(de->d_name) - 12), de->d_name);
        if (strcmp(names[n], name) == 0)
            exact = n;
        else if (strcasecmp(names[n], name) == 0)
            icase = n;
        else if (strcasestr(names[n], name)) {
            sub = n, subs++;
            if (factor > 0 && strcasestr(names[n], xf))
                subf = n, subfs++;
        }
        n++;
    }
    closedir(d);
    int pick = exact >= 0   ? exact
               : icase >= 0 ? icase
               : subs == 1  ? sub
               : subfs == 1 ? subf
                            : -1;
    if (pick >= 0) {
        if (snprintf(path, path_len, "%s/%s.safetensors", u->root, names[pick]) >= (int)path_len) {
            snprintf(err, err_len, "upscaler path too long");
            return POST_BAD_REQUEST;
        }
        return POST_OK;
    }
    char list[1024] = "";
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
    snprintf(err, err_len, "upscaler '%s' %s in %s; there: %s%s%s", name,
             subs > 1 ? "matches several files" : "is not", u->root, n ? list : "(none)",
             n == 64 ? " (and more: only 64 are compared)" : "",
             n ? ", or \"lanczos\"" : "; use \"lanczos\"");
    return POST_NOT_FOUND;
}

post_status_t post_upscale(post_upscaler_t *u, sdx_image_t *img, double factor, const char *model,
                           bool (*progress)(void *ctx, int done, int total), void *ctx,
                           char *method, size_t method_len, char *err, size_t err_len)
{
    if (factor == 0)
        factor = 2;
    if (!(factor >= 1 && factor <= 8)) { /* NaN fails too */
        snprintf(err, err_len, "factor must be in 1..8, got %g", factor);
        return POST_BAD_REQUEST;
    }
    int tw = (int)(img->width * factor + 0.5), th = (int)(img->height * factor + 0.5);
    if ((int64_t)tw * th > POST_MAX_PIXELS) {
        snprintf(err, err_len, "%dx%d x%g is %dx%d, over %lld million pixels", img->width,
                 img->height, factor, tw, th, (long long)(POST_MAX_PIXELS / 1000000));
        return POST_BAD_REQUEST;
    }
    sdx_image_t out = {0};
    method[0] = '\0';
    if (model && *model && strcasecmp(model, "lanczos") != 0) {
        char path[PATH_MAX];
        post_status_t st = s_find(u, model, factor, path, sizeof path, err, err_len);
        if (st != POST_OK)
            return st;
        pthread_mutex_lock(&u->mu);
        if (!u->model || strcmp(u->path, path) != 0) {
            sdx_rrdb_free(&u->model);
            u->path[0] = '\0';
            if (!(u->model = sdx_rrdb_load(path, SDX_F32, u->device))) {
                snprintf(err, err_len, "cannot load upscaler %s: %s", path, sdx_last_error());
                pthread_mutex_unlock(&u->mu);
                return POST_BAD_REQUEST;
            }
            snprintf(u->path, sizeof u->path, "%s", path);
        }
        sdx_upscale_opts_t o;
        sdx_upscale_opts_init(&o);
        o.tile = u->tile;
        o.pad = u->pad;
        o.progress = progress;
        o.progress_ctx = ctx;
        /* the model's own output comes before the resize to the factor:
           bound it too, not only the final size */
        int scale = sdx_rrdb_config(u->model)->scale;
        if ((int64_t)img->width * scale * img->height * scale > POST_MAX_PIXELS) {
            pthread_mutex_unlock(&u->mu);
            snprintf(err, err_len, "%dx%d through an x%d upscaler is over %lld million pixels "
                     "before resizing to x%g; use a smaller image or lanczos",
                     img->width, img->height, scale, (long long)(POST_MAX_PIXELS / 1000000),
                     factor);
            return POST_BAD_REQUEST;
        }
        int rc = sdx_rrdb_upscale(u->model, img, &o, &out);
        u->upscales++;
        if (rc != 0)
            snprintf(err, err_len, "upscale: %s", sdx_last_error());
        pthread_mutex_unlock(&u->mu);
        if (rc != 0)
            return strcmp(err, "upscale: cancelled") == 0 ? POST_CANCELLED : POST_FAILED;
        const char *slash = strrchr(path, '/');
        snprintf(method, method_len, "%.*s x%d", (int)(strlen(slash + 1) - 12), slash + 1, scale);
        sdx_image_clear(img);
        *img = out;
        if (img->width == tw && img->height == th)
            return POST_OK;
        memset(&out, 0, sizeof out);
        size_t ml = strlen(method);
        snprintf(method + ml, method_len - ml, " + lanczos");
    } else {
        snprintf(method, method_len, "lanczos");
    }
    if (sdx_lanczos_resize(img, tw, th, &out) != 0) {
        snprintf(err, err_len, "resize: %s", sdx_last_error());
        return POST_FAILED;
    }
    sdx_image_clear(img);
    *img = out;
    return POST_OK;
}
