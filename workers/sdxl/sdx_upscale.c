/*  sdx_upscale.c - RRDBNet (BasicSR semantics), tiled upscaling, Lanczos-3.
    See sdx_upscale.h. */
#include "sdx_upscale.h"

#include "sdx_imgcodec.h"

#include "sdx_model.h"
#include "sdx_nn.h"
#include "sdx_safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define S_MAX_BLOCKS 64

typedef struct {
    sdx_tensor_t *w, *b; /* borrowed from the weights */
} s_conv_t;

typedef struct {
    s_conv_t conv[5];
} s_rdb_t;

struct sdx_rrdb {
    sdx_rrdb_config_t cfg;
    sdx_weights_t *w;
    sdx_dtype_t dtype;
    sdx_device_t device;
    s_conv_t first, body, up1, up2, hr, last;
    s_rdb_t (*rdb)[3]; /* num_block x 3 */
};

static const char *const s_prefixes[] = {"params_ema.", "params.", "module.", NULL};

static const char *s_strip(const char *name)
{
    for (int i = 0; s_prefixes[i]; i++) {
        size_t n = strlen(s_prefixes[i]);
        if (strncmp(name, s_prefixes[i], n) == 0)
            return name + n;
    }
    return name;
}

static int s_bind(sdx_rrdb_t *m, s_conv_t *c, const char *name, int64_t in, int64_t out)
{
    char wn[96], bn[96];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    c->w = sdx_weights_get(m->w, wn);
    c->b = sdx_weights_get(m->w, bn);
    if (!c->w || !c->b)
        return sdx_set_error("rrdbnet: missing weight '%s'", c->w ? bn : wn);
    int64_t sh[SDX_MAX_DIMS];
    if (sdx_tensor_ndim(c->w) != 4 || sdx_tensor_shape(c->w, sh) < 0 ||
        (in >= 0 && sh[1] != in) || (out >= 0 && sh[0] != out) || sh[2] != 3 || sh[3] != 3)
        return sdx_set_error("rrdbnet: weight '%s' has shape [%lld,%lld,%lld,%lld], expected "
                             "[%lld,%lld,3,3]",
                             wn, (long long)sh[0], (long long)sh[1], (long long)sh[2],
                             (long long)sh[3], (long long)out, (long long)in);
    return 0;
}

static int64_t s_dim(const sdx_weights_t *w, const char *name, int d)
{
    sdx_tensor_t *t = sdx_weights_get(w, name);
    return t && sdx_tensor_ndim(t) > d ? sdx_tensor_size(t, d) : -1;
}

sdx_rrdb_t *sdx_rrdb_load(const char *path, sdx_dtype_t dt, sdx_device_t dev)
{
    size_t plen = strlen(path);
    if (plen >= 4 && (strcmp(path + plen - 4, ".pth") == 0 || strcmp(path + plen - 3, ".pt") == 0)) {
        sdx_set_error("%s: pickled checkpoints are not loaded (a pickle can run code); convert it "
                      "to .safetensors first",
                      path);
        return NULL;
    }
    sdx_safetensors_t *st = sdx_safetensors_open(path);
    if (!st)
        return NULL;
    sdx_rrdb_t *m = calloc(1, sizeof *m);
    if (!m || !(m->w = sdx_weights_new())) {
        sdx_set_error("out of memory");
        goto fail;
    }
    m->dtype = dt;
    m->device = dev;
    for (size_t i = 0; i < sdx_safetensors_count(st); i++) {
        const sdx_st_tensor_t *info = sdx_safetensors_at(st, i);
        sdx_tensor_t *t = NULL, *c = NULL;
        if (sdx_safetensors_tensor(NULL, &t, st, info) != 0)
            goto fail;
        int rc = sdx_to(NULL, &c, t, dt, dev);
        sdx_tensor_free(&t);
        if (rc != 0 || sdx_weights_put(m->w, s_strip(info->name), c) != 0)
            goto fail;
    }
    sdx_safetensors_close(&st);

    sdx_rrdb_config_t *cfg = &m->cfg;
    int64_t in = s_dim(m->w, "conv_first.weight", 1);
    cfg->num_feat = (int)s_dim(m->w, "conv_first.weight", 0);
    cfg->num_grow_ch = (int)s_dim(m->w, "body.0.rdb1.conv1.weight", 0);
    cfg->num_out_ch = (int)s_dim(m->w, "conv_last.weight", 0);
    if (cfg->num_feat <= 0 || cfg->num_grow_ch <= 0 || cfg->num_out_ch <= 0) {
        sdx_set_error("%s: not a BasicSR RRDBNet (needs conv_first, body.0.rdb1.conv1, conv_last;%s)",
                      path,
                      sdx_weights_has(m->w, "model.0.weight")
                          ? " this looks like the old ESRGAN layout 'model.N.*', not supported"
                          : " none found");
        goto fail;
    }
    /* conv_first sees 3, 12 or 48 channels: scale 4, 2 (unshuffle 2), 1 (unshuffle 4) */
    if (in % 16 == 0 && in / 16 <= 4) {
        cfg->scale = 1;
        cfg->num_in_ch = (int)(in / 16);
    } else if (in % 4 == 0 && in / 4 <= 4 && in != 4) {
        cfg->scale = 2;
        cfg->num_in_ch = (int)(in / 4);
    } else {
        cfg->scale = 4;
        cfg->num_in_ch = (int)in;
    }
    while (cfg->num_block < S_MAX_BLOCKS) {
        char n[64];
        snprintf(n, sizeof n, "body.%d.rdb1.conv1.weight", cfg->num_block);
        if (!sdx_weights_has(m->w, n))
            break;
        cfg->num_block++;
    }
    m->rdb = calloc((size_t)cfg->num_block, sizeof *m->rdb);
    if (!m->rdb) {
        sdx_set_error("out of memory");
        goto fail;
    }
    int64_t f = cfg->num_feat, g = cfg->num_grow_ch;
    if (s_bind(m, &m->first, "conv_first", in, f) || s_bind(m, &m->body, "conv_body", f, f) ||
        s_bind(m, &m->up1, "conv_up1", f, f) || s_bind(m, &m->up2, "conv_up2", f, f) ||
        s_bind(m, &m->hr, "conv_hr", f, f) ||
        s_bind(m, &m->last, "conv_last", f, cfg->num_out_ch))
        goto fail;
    for (int b = 0; b < cfg->num_block; b++)
        for (int k = 0; k < 3; k++)
            for (int j = 0; j < 5; j++) {
                char n[64];
                snprintf(n, sizeof n, "body.%d.rdb%d.conv%d", b, k + 1, j + 1);
                if (s_bind(m, &m->rdb[b][k].conv[j], n, f + j * g, j == 4 ? f : g))
                    goto fail;
            }
    return m;
fail:
    sdx_safetensors_close(&st);
    sdx_rrdb_free(&m);
    return NULL;
}

void sdx_rrdb_free(sdx_rrdb_t **mp)
{
    if (!mp || !*mp)
        return;
    sdx_weights_free(&(*mp)->w);
    free((*mp)->rdb);
    free(*mp);
    *mp = NULL;
}

const sdx_rrdb_config_t *sdx_rrdb_config(const sdx_rrdb_t *m)
{
    return m ? &m->cfg : NULL;
}

static int s_conv(sdx_scope_t *S, sdx_tensor_t **out, const s_conv_t *c, const sdx_tensor_t *x)
{
    return sdx_conv2d(S, out, x, c->w, c->b, 1, 1, 1, 1, 1);
}

/* ResidualDenseBlock: x5 * 0.2 + x, every conv but the last followed by
   leaky_relu(0.2) and fed the concatenation of all earlier outputs. */
static int s_rdb(sdx_scope_t *S, sdx_tensor_t **out, const s_rdb_t *r, sdx_tensor_t *x)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *parts[5] = {x}, *cat = x, *h = NULL;
    if (!T)
        return sdx_set_error("out of memory");
    for (int j = 0; j < 4; j++) {
        if (j > 0)
            SDX_TRY(sdx_cat(T, &cat, parts, j + 1, 1));
        SDX_TRY(s_conv(T, &h, &r->conv[j], cat));
        SDX_TRY(sdx_leaky_relu(T, &parts[j + 1], h, 0.2));
    }
    SDX_TRY(sdx_cat(T, &cat, parts, 5, 1));
    SDX_TRY(s_conv(T, &h, &r->conv[4], cat));
    SDX_TRY(sdx_add_scaled(T, &h, x, h, 0.2));
    SDX_TRY(sdx_nn_finish(T, S, out, h));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

int sdx_rrdb_forward(const sdx_rrdb_t *m, sdx_scope_t *S, sdx_tensor_t **out,
                     const sdx_tensor_t *x)
{
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *feat = NULL, *h = NULL, *in = NULL;
    if (!T)
        return sdx_set_error("out of memory");
    SDX_TRY(sdx_to(T, &in, x, m->dtype, m->device));
    if (m->cfg.scale < 4)
        SDX_TRY(sdx_pixel_unshuffle(T, &in, in, 4 / m->cfg.scale));
    SDX_TRY(s_conv(T, &feat, &m->first, in));
    /* RRDB blocks: three dense blocks, then * 0.2 + the block's input. Only
       the current block's input stays alive (a block's output is owned here
       and the previous one freed), so memory does not grow with num_block. */
    sdx_tensor_t *cur = NULL; /* caller-owned block output; NULL: feat */
    for (int b = 0; b < m->cfg.num_block; b++) {
        sdx_scope_t *B = sdx_scope_new();
        const sdx_tensor_t *bin = cur ? cur : feat;
        sdx_tensor_t *r = (sdx_tensor_t *)bin, *next = NULL;
        int rc = B ? 0 : -1;
        for (int k = 0; k < 3 && rc == 0; k++)
            rc = s_rdb(B, &r, &m->rdb[b][k], r);
        if (rc == 0)
            rc = sdx_add_scaled(NULL, &next, bin, r, 0.2);
        sdx_scope_free(&B);
        sdx_tensor_free(&cur);
        if (rc != 0)
            goto fail;
        cur = next;
    }
    h = cur ? cur : feat;
    if (cur && sdx_scope_adopt(T, cur) != 0) {
        sdx_tensor_free(&cur);
        goto fail;
    }
    SDX_TRY(s_conv(T, &h, &m->body, h));
    SDX_TRY(sdx_add(T, &feat, feat, h));
    int64_t H = sdx_tensor_size(feat, 2), W = sdx_tensor_size(feat, 3);
    SDX_TRY(sdx_interpolate_nearest(T, &h, feat, H * 2, W * 2));
    SDX_TRY(s_conv(T, &h, &m->up1, h));
    SDX_TRY(sdx_leaky_relu(T, &h, h, 0.2));
    SDX_TRY(sdx_interpolate_nearest(T, &h, h, H * 4, W * 4));
    SDX_TRY(s_conv(T, &h, &m->up2, h));
    SDX_TRY(sdx_leaky_relu(T, &h, h, 0.2));
    SDX_TRY(s_conv(T, &h, &m->hr, h));
    SDX_TRY(sdx_leaky_relu(T, &h, h, 0.2));
    SDX_TRY(s_conv(T, &h, &m->last, h));
    SDX_TRY(sdx_nn_finish(T, S, out, h));
    sdx_scope_free(&T);
    return 0;
fail:
    sdx_scope_free(&T);
    return -1;
}

void sdx_upscale_opts_init(sdx_upscale_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->tile = 512;
    o->pad = 10;
}

static int s_clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* One tile: input region [x0,x1) x [y0,y1) with up to `pad` pixels of
   context, clipped to the image (so the image border meets the network's
   zero padding exactly as a whole-image run does), grown on the right and
   bottom to the multiple the unshuffle needs (replicated pixels), run, and
   the region's own output copied into out. */
static int s_tile(const sdx_rrdb_t *m, const sdx_image_t *in, int x0, int y0, int x1, int y1,
                  int pad, sdx_image_t *out, float *buf)
{
    const int sc = m->cfg.scale, mult = 4 / sc > 1 ? 4 / sc : 1;
    int px0 = x0 - pad > 0 ? x0 - pad : 0, py0 = y0 - pad > 0 ? y0 - pad : 0;
    int px1 = x1 + pad < in->width ? x1 + pad : in->width;
    int py1 = y1 + pad < in->height ? y1 + pad : in->height;
    int pw = (px1 - px0 + mult - 1) / mult * mult, ph = (py1 - py0 + mult - 1) / mult * mult;
    const int c = in->channels;
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < ph; y++) {
            int sy = s_clampi(py0 + y, 0, in->height - 1);
            const uint8_t *row = in->pixels + (size_t)sy * in->width * c;
            float *dst = buf + ((size_t)ch * ph + y) * pw;
            for (int x = 0; x < pw; x++)
                dst[x] = (float)row[(size_t)s_clampi(px0 + x, 0, in->width - 1) * c + ch] / 255.0f;
        }
    sdx_scope_t *T = sdx_scope_new();
    sdx_tensor_t *t = NULL, *y = NULL;
    float *res = NULL;
    if (!T)
        return sdx_set_error("out of memory");
    int64_t shape[4] = {1, 3, ph, pw};
    SDX_TRY(sdx_from_host(T, &t, buf, SDX_F32, shape, 4));
    SDX_TRY(sdx_rrdb_forward(m, T, &y, t));
    SDX_TRY(sdx_clamp(T, &y, y, 0.0, 1.0));
    const int oh = ph * sc, ow = pw * sc;
    res = malloc((size_t)3 * oh * ow * sizeof *res);
    if (!res) {
        sdx_set_error("out of memory");
        goto fail;
    }
    SDX_TRY(sdx_to_host(y, SDX_F32, res, (size_t)3 * oh * ow * sizeof *res));
    for (int yy = y0 * sc; yy < y1 * sc; yy++) {
        int ty = yy - py0 * sc;
        uint8_t *drow = out->pixels + (size_t)yy * out->width * 3;
        for (int xx = x0 * sc; xx < x1 * sc; xx++) {
            int tx = xx - px0 * sc;
            for (int ch = 0; ch < 3; ch++)
                drow[(size_t)xx * 3 + ch] =
                    (uint8_t)lrintf(res[((size_t)ch * oh + ty) * ow + tx] * 255.0f);
        }
    }
    free(res);
    sdx_scope_free(&T);
    return 0;
fail:
    free(res);
    sdx_scope_free(&T);
    return -1;
}

int sdx_rrdb_upscale(const sdx_rrdb_t *m, const sdx_image_t *in, const sdx_upscale_opts_t *o,
                     sdx_image_t *out)
{
    memset(out, 0, sizeof *out);
    if (!m || !in || !in->pixels || in->width <= 0 || in->height <= 0 ||
        (in->channels != 3 && in->channels != 4))
        return sdx_set_error("upscale: needs an RGB or RGBA image");
    if (m->cfg.num_in_ch != 3 || m->cfg.num_out_ch != 3)
        return sdx_set_error("upscale: the model maps %d to %d channels; only RGB models are used",
                             m->cfg.num_in_ch, m->cfg.num_out_ch);
    sdx_upscale_opts_t d;
    if (!o) {
        sdx_upscale_opts_init(&d);
        o = &d;
    }
    const int sc = m->cfg.scale;
    if ((int64_t)in->width * sc > 65535 || (int64_t)in->height * sc > 65535)
        return sdx_set_error("upscale: %dx%d x%d is larger than 65535 pixels on a side", in->width,
                             in->height, sc);
    int tile = o->tile > 0 ? o->tile : (in->width > in->height ? in->width : in->height);
    int pad = o->tile > 0 && o->pad > 0 ? o->pad : 0;
    out->width = in->width * sc;
    out->height = in->height * sc;
    out->channels = 3;
    out->pixels = malloc((size_t)out->width * out->height * 3);
    int tp = tile + 2 * pad + 4;
    float *buf = malloc((size_t)3 * tp * tp * sizeof *buf);
    if (!out->pixels || !buf) {
        free(buf);
        sdx_image_clear(out);
        return sdx_set_error("out of memory");
    }
    int nx = (in->width + tile - 1) / tile, ny = (in->height + tile - 1) / tile;
    for (int ty = 0; ty < ny; ty++)
        for (int tx = 0; tx < nx; tx++) {
            int x0 = tx * tile, y0 = ty * tile;
            int x1 = x0 + tile < in->width ? x0 + tile : in->width;
            int y1 = y0 + tile < in->height ? y0 + tile : in->height;
            if (s_tile(m, in, x0, y0, x1, y1, pad, out, buf) != 0 ||
                (o->progress && !o->progress(o->progress_ctx, ty * nx + tx + 1, nx * ny) &&
                 sdx_set_error("cancelled"))) {
                free(buf);
                sdx_image_clear(out);
                return -1;
            }
        }
    free(buf);
    return 0;
}

/* ---------------------------------------------------------------- Lanczos */

static double s_lanczos3(double x)
{
    if (x == 0.0)
        return 1.0;
    if (x <= -3.0 || x >= 3.0)
        return 0.0;
    double px = M_PI * x;
    return 3.0 * sin(px) * sin(px / 3.0) / (px * px);
}

typedef struct {
    int first, n;  /* source taps [first, first+n) */
    float *w;      /* n weights, normalised */
} s_taps_t;

static s_taps_t *s_plan(int in, int out, int *maxn)
{
    double scale = (double)in / out, support = 3.0 * (scale > 1.0 ? scale : 1.0);
    double fscale = scale > 1.0 ? 1.0 / scale : 1.0;
    s_taps_t *t = calloc((size_t)out, sizeof *t);
    if (!t)
        return NULL;
    *maxn = 0;
    for (int i = 0; i < out; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)floor(center - support), hi = (int)ceil(center + support);
        lo = lo < 0 ? 0 : lo;
        hi = hi > in ? in : hi;
        t[i].first = lo;
        t[i].n = hi - lo;
        t[i].w = malloc((size_t)(t[i].n > 0 ? t[i].n : 1) * sizeof(float));
        if (!t[i].w) {
            for (int k = 0; k < i; k++)
                free(t[k].w);
            free(t);
            return NULL;
        }
        double sum = 0;
        for (int k = 0; k < t[i].n; k++) {
            double w = s_lanczos3((lo + k + 0.5 - center) * fscale);
            t[i].w[k] = (float)w;
            sum += w;
        }
        for (int k = 0; k < t[i].n && sum != 0.0; k++)
            t[i].w[k] = (float)(t[i].w[k] / sum);
        if (t[i].n > *maxn)
            *maxn = t[i].n;
    }
    return t;
}

static void s_plan_free(s_taps_t *t, int n)
{
    for (int i = 0; t && i < n; i++)
        free(t[i].w);
    free(t);
}

int sdx_lanczos_resize(const sdx_image_t *in, int out_w, int out_h, sdx_image_t *out)
{
    memset(out, 0, sizeof *out);
    if (!in || !in->pixels || in->width <= 0 || in->height <= 0 || out_w <= 0 || out_h <= 0 ||
        out_w > 65535 || out_h > 65535 || (in->channels != 3 && in->channels != 4))
        return sdx_set_error("resize: bad image or size %dx%d", out_w, out_h);
    const int c = in->channels;
    int mx, my;
    s_taps_t *tx = s_plan(in->width, out_w, &mx), *ty = s_plan(in->height, out_h, &my);
    float *mid = malloc((size_t)out_w * in->height * c * sizeof *mid);
    out->pixels = malloc((size_t)out_w * out_h * c);
    if (!tx || !ty || !mid || !out->pixels) {
        s_plan_free(tx, out_w);
        s_plan_free(ty, out_h);
        free(mid);
        sdx_image_clear(out);
        return sdx_set_error("out of memory");
    }
    out->width = out_w;
    out->height = out_h;
    out->channels = c;
    for (int y = 0; y < in->height; y++) { /* horizontal pass, into floats */
        const uint8_t *row = in->pixels + (size_t)y * in->width * c;
        float *m = mid + (size_t)y * out_w * c;
        for (int x = 0; x < out_w; x++)
            for (int ch = 0; ch < c; ch++) {
                float acc = 0;
                for (int k = 0; k < tx[x].n; k++)
                    acc += tx[x].w[k] * row[(size_t)(tx[x].first + k) * c + ch];
                m[(size_t)x * c + ch] = acc;
            }
    }
    for (int y = 0; y < out_h; y++) { /* vertical pass, rounded and clamped */
        uint8_t *drow = out->pixels + (size_t)y * out_w * c;
        for (int x = 0; x < out_w * c; x++) {
            float acc = 0;
            for (int k = 0; k < ty[y].n; k++)
                acc += ty[y].w[k] * mid[(size_t)(ty[y].first + k) * out_w * c + x];
            long v = lrintf(acc);
            drow[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    s_plan_free(tx, out_w);
    s_plan_free(ty, out_h);
    free(mid);
    return 0;
}

int sdx_image_decode_fit(const void *data, size_t len, int w, int h, sdx_image_t *out)
{
    memset(out, 0, sizeof *out);
    sdx_image_t dec = {0};
    if (sdx_image_decode(data, len, (uint64_t)8192 * 8192, &dec) != 0)
        return -1;
    if (dec.width == w && dec.height == h) {
        *out = dec;
        return 0;
    }
    int rc = sdx_lanczos_resize(&dec, w, h, out);
    sdx_image_clear(&dec);
    return rc;
}
