/*  sdx_canny.c - Canny edges for the ControlNet `canny` preprocessor; the
    steps and the choices that keep it in step with OpenCV are in
    sdx_canny.h. Written here rather than linked: OpenCV is far too large a
    dependency for one 3x3 filter and a flood fill. */
#include "sdx_canny.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void sdx_canny_params_init(sdx_canny_params_t *p)
{
    p->low = 100;
    p->high = 200;
    p->sigma = 0;
    p->l2 = false;
}

static inline int s_clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Separable Gaussian blur of one float plane (replicated borders). */
static int s_blur(float *plane, int w, int h, double sigma)
{
    int r = (int)ceil(3 * sigma);
    if (r < 1)
        return 0;
    float *k = malloc(sizeof(float) * (size_t)(2 * r + 1));
    float *tmp = malloc(sizeof(float) * (size_t)w * (size_t)h);
    if (!k || !tmp) {
        free(k);
        free(tmp);
        return -1;
    }
    double sum = 0;
    for (int i = -r; i <= r; i++)
        sum += k[i + r] = (float)exp(-(double)(i * i) / (2 * sigma * sigma));
    for (int i = 0; i <= 2 * r; i++)
        k[i] = (float)(k[i] / sum);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float acc = 0;
            for (int i = -r; i <= r; i++)
                acc += k[i + r] * plane[(size_t)y * w + s_clampi(x + i, 0, w - 1)];
            tmp[(size_t)y * w + x] = acc;
        }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float acc = 0;
            for (int i = -r; i <= r; i++)
                acc += k[i + r] * tmp[(size_t)s_clampi(y + i, 0, h - 1) * w + x];
            plane[(size_t)y * w + x] = acc;
        }
    free(k);
    free(tmp);
    return 0;
}

int sdx_canny(const sdx_image_t *in, const sdx_canny_params_t *p, sdx_image_t *out)
{
    memset(out, 0, sizeof *out);
    if (!in || !in->pixels || in->width < 1 || in->height < 1 ||
        (in->channels != 3 && in->channels != 4))
        return sdx_set_error("canny: an RGB or RGBA image is needed");
    if (!(p->low >= 0 && p->high >= p->low) || !(p->sigma >= 0 && p->sigma <= 64))
        return sdx_set_error("canny: thresholds need 0 <= low <= high (got %g, %g) and sigma "
                             "0..64 (got %g)",
                             p->low, p->high, p->sigma);
    const int w = in->width, h = in->height, ch = in->channels;
    const size_t n = (size_t)w * (size_t)h;
    float *plane = malloc(sizeof(float) * n * 3);
    float *mag = calloc(n, sizeof(float));
    float *gx = malloc(sizeof(float) * n), *gy = malloc(sizeof(float) * n);
    uint8_t *map = calloc(n, 1); /* 0 none, 1 candidate (above low, a local maximum), 2 edge */
    int32_t *stack = malloc(sizeof(int32_t) * n);
    out->pixels = calloc(n, 3);
    int rc = -1;
    if (!plane || !mag || !gx || !gy || !map || !stack || !out->pixels) {
        sdx_set_error("canny: out of memory");
        goto done;
    }
    for (int c = 0; c < 3; c++) {
        float *pl = plane + (size_t)c * n;
        for (size_t i = 0; i < n; i++)
            pl[i] = in->pixels[i * (size_t)ch + (size_t)c];
        if (p->sigma > 0 && s_blur(pl, w, h, p->sigma) != 0) {
            sdx_set_error("canny: out of memory");
            goto done;
        }
    }
    /* 2-3: Sobel per channel, the strongest channel's gradient per pixel */
    for (int y = 0; y < h; y++) {
        int ym = s_clampi(y - 1, 0, h - 1), yp = s_clampi(y + 1, 0, h - 1);
        for (int x = 0; x < w; x++) {
            int xm = s_clampi(x - 1, 0, w - 1), xp = s_clampi(x + 1, 0, w - 1);
            float best = -1, bdx = 0, bdy = 0;
            for (int c = 0; c < 3; c++) {
                const float *pl = plane + (size_t)c * n;
#define P(yy, xx) pl[(size_t)(yy) * w + (xx)]
                float dx = (P(ym, xp) - P(ym, xm)) + 2 * (P(y, xp) - P(y, xm)) +
                           (P(yp, xp) - P(yp, xm));
                float dy = (P(yp, xm) - P(ym, xm)) + 2 * (P(yp, x) - P(ym, x)) +
                           (P(yp, xp) - P(ym, xp));
#undef P
                float m = p->l2 ? sqrtf(dx * dx + dy * dy) : fabsf(dx) + fabsf(dy);
                if (m > best) {
                    best = m;
                    bdx = dx;
                    bdy = dy;
                }
            }
            size_t i = (size_t)y * w + x;
            mag[i] = best;
            gx[i] = bdx;
            gy[i] = bdy;
        }
    }
    /* 4: non-maximum suppression; outside the image the magnitude is 0
       (OpenCV pads its magnitude rows with zeros) */
    const double tg22 = 0.4142135623730950488; /* tan(22.5 deg) */
    const double tg67 = 2.4142135623730950488; /* tan(67.5 deg) */
#define M(yy, xx)                                                                                  \
    ((yy) < 0 || (yy) >= h || (xx) < 0 || (xx) >= w ? 0.0f : mag[(size_t)(yy) * w + (xx)])
    size_t top = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            float m = mag[i];
            if (!(m > p->low))
                continue;
            double ax = fabs(gx[i]), ay = fabs(gy[i]);
            bool keep;
            if (ay < ax * tg22) /* horizontal gradient: left and right */
                keep = m > M(y, x - 1) && m >= M(y, x + 1);
            else if (ay > ax * tg67) /* vertical: above and below */
                keep = m > M(y - 1, x) && m >= M(y + 1, x);
            else { /* diagonal, by the gradient's quadrant */
                int s = (gx[i] < 0) != (gy[i] < 0) ? -1 : 1;
                keep = m > M(y - 1, x - s) && m > M(y + 1, x + s);
            }
            if (!keep)
                continue;
            map[i] = 1;
            if (m > p->high) {
                map[i] = 2;
                stack[top++] = (int32_t)i;
            }
        }
#undef M
    /* 5: hysteresis from the strong pixels */
    while (top) {
        size_t i = (size_t)stack[--top];
        int y = (int)(i / (size_t)w), x = (int)(i % (size_t)w);
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int yy = y + dy, xx = x + dx;
                if (yy < 0 || yy >= h || xx < 0 || xx >= w)
                    continue;
                size_t j = (size_t)yy * w + xx;
                if (map[j] == 1) {
                    map[j] = 2;
                    stack[top++] = (int32_t)j;
                }
            }
    }
    for (size_t i = 0; i < n; i++)
        if (map[i] == 2)
            memset(out->pixels + i * 3, 255, 3);
    out->width = w;
    out->height = h;
    out->channels = 3;
    rc = 0;
done:
    free(plane);
    free(mag);
    free(gx);
    free(gy);
    free(map);
    free(stack);
    if (rc != 0)
        sdx_image_clear(out);
    return rc;
}
