/*  test_canny.c - sdx_canny (the ControlNet canny preprocessor) against
    expectations worked out by hand from the rules in sdx_canny.h:

    - A square of value v on black, columns and rows 10..21 of 32x32. On a
      middle row the Sobel x response is 4v on both sides of each vertical
      boundary (columns 9|10 and 21|22), 0 elsewhere, dy 0; so the magnitude
      (L1) is 4v there. Non-maximum suppression keeps a pixel above its left
      neighbour and not below its right one: on the left boundary column 9
      (0 < 4v, 4v >= 4v) and not 10 (4v > 4v fails); on the right boundary
      column 21 (left neighbour 20 has 0) and not 22. Rows the same way: 9
      and 21. So a middle row has edges at exactly columns 9 and 21.
    - Thresholds (low 100, high 200): v = 20 gives 80, below low: nothing;
      v = 60 gives 240: the square's outline. At an inner corner (10,10) the
      Sobel responses are 3v each way, so the L1 magnitude is 6v: v = 30 has
      sides at 120 (weak) and corners at 180 (below high): no seed, nothing;
      v = 40 has weak sides (160) but strong corners (240), and hysteresis
      carries the whole outline from them; with L2 those corners are
      sqrt(18) v = 170: nothing.
    - Hysteresis joins: a bar whose left half is 60 and right half 30 has a
      top edge that is strong on the left and weak on the right; the weak
      part touches the strong part, so the whole top edge is kept; the same
      30 half alone has none.
    - Colour: a boundary in the red channel only is found as in grey (OpenCV
      takes the strongest channel's gradient).
    - sigma > 0 blurs first: the edge stays within one pixel of the boundary,
      and a single-pixel speck that makes an edge unblurred no longer does.
    - Bad thresholds are refused. */
#include "sdx_canny.h"
#include "sdx_test.h"

#include <stdlib.h>
#include <string.h>

#define W 32
#define H 32

static void s_img(sdx_image_t *img, int w, int h)
{
    img->width = w, img->height = h, img->channels = 3;
    img->pixels = calloc((size_t)w * h, 3);
}

static void s_fill(sdx_image_t *img, int x0, int y0, int x1, int y1, int r, int g, int b)
{
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
            p[0] = (uint8_t)r, p[1] = (uint8_t)g, p[2] = (uint8_t)b;
        }
}

static bool s_on(const sdx_image_t *e, int x, int y)
{
    return e->pixels[((size_t)y * e->width + x) * 3] == 255;
}

static int s_count(const sdx_image_t *e)
{
    int n = 0;
    for (int y = 0; y < e->height; y++)
        for (int x = 0; x < e->width; x++)
            n += s_on(e, x, y);
    return n;
}

/* The columns with an edge on row y, as a bit set. */
static unsigned s_row(const sdx_image_t *e, int y)
{
    unsigned m = 0;
    for (int x = 0; x < e->width && x < 32; x++)
        if (s_on(e, x, y))
            m |= 1u << x;
    return m;
}

static unsigned s_col(const sdx_image_t *e, int x)
{
    unsigned m = 0;
    for (int y = 0; y < e->height && y < 32; y++)
        if (s_on(e, x, y))
            m |= 1u << y;
    return m;
}

static int s_square(int v, const sdx_canny_params_t *p, sdx_image_t *edges)
{
    sdx_image_t img;
    s_img(&img, W, H);
    s_fill(&img, 10, 10, 21, 21, v, v, v);
    int rc = sdx_canny(&img, p, edges);
    sdx_image_clear(&img);
    return rc;
}

int main(void)
{
    sdx_canny_params_t p;
    sdx_canny_params_init(&p);
    sdx_test_check(p.low == 100 && p.high == 200 && p.sigma == 0 && !p.l2,
                   "defaults: low 100, high 200, no blur, L1 (the annotator's)");
    sdx_image_t e;

    /* the square's outline */
    if (sdx_test_check(s_square(60, &p, &e) == 0, "canny of a 60-grey square")) {
        bool rows = true, cols = true;
        for (int y = 12; y <= 19; y++)
            rows = rows && s_row(&e, y) == ((1u << 9) | (1u << 21));
        for (int x = 12; x <= 19; x++)
            cols = cols && s_col(&e, x) == ((1u << 9) | (1u << 21));
        sdx_test_check(rows, "middle rows: edges at exactly columns 9 and 21 (row 15: %#x)",
                       s_row(&e, 15));
        sdx_test_check(cols, "middle columns: edges at exactly rows 9 and 21 (column 15: %#x)",
                       s_col(&e, 15));
        bool inside = true, outside = true;
        for (int y = 11; y <= 19; y++)
            for (int x = 11; x <= 19; x++)
                inside = inside && !s_on(&e, x, y);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                if (x < 8 || x > 22 || y < 8 || y > 22)
                    outside = outside && !s_on(&e, x, y);
        sdx_test_check(inside && outside, "nothing inside the square or away from it");
        sdx_test_check(e.width == W && e.height == H && e.channels == 3 &&
                           e.pixels[((size_t)15 * W + 9) * 3 + 1] == 255 &&
                           e.pixels[((size_t)15 * W + 9) * 3 + 2] == 255,
                       "the map is an RGB image, 255 on edges in every channel");
        sdx_image_clear(&e);
    }

    /* thresholds */
    s_square(20, &p, &e);
    sdx_test_check(s_count(&e) == 0, "v 20 (magnitude 80 < low 100): no edges (%d)", s_count(&e));
    sdx_image_clear(&e);
    s_square(30, &p, &e);
    sdx_test_check(s_count(&e) == 0,
                   "v 30 (sides 120, between low and high; corners 6v = 180, below high): no "
                   "seed, no edges (%d)",
                   s_count(&e));
    sdx_image_clear(&e);
    s_square(40, &p, &e);
    sdx_test_check(s_row(&e, 15) == ((1u << 9) | (1u << 21)),
                   "v 40: the sides are weak (160) but an inner corner's L1 magnitude is 6v = "
                   "240: hysteresis carries the outline from the corners (row 15: %#x)",
                   s_row(&e, 15));
    sdx_image_clear(&e);
    sdx_canny_params_t l2 = p;
    l2.l2 = true;
    s_square(40, &l2, &e);
    sdx_test_check(s_count(&e) == 0,
                   "v 40 with the L2 magnitude: corners sqrt(18) v = 170 < 200, no edges (%d)",
                   s_count(&e));
    sdx_image_clear(&e);
    sdx_canny_params_t lo = p;
    lo.high = 150;
    s_square(30, &lo, &e);
    sdx_test_check(s_row(&e, 15) == ((1u << 9) | (1u << 21)),
                   "v 30 with high 150: the outline again (row 15: %#x)", s_row(&e, 15));
    sdx_image_clear(&e);

    /* hysteresis joins weak to strong */
    {
        sdx_image_t img;
        s_img(&img, W, H);
        s_fill(&img, 4, 12, 15, 19, 60, 60, 60);  /* strong half */
        s_fill(&img, 16, 12, 27, 19, 30, 30, 30); /* weak half, touching it */
        if (sdx_test_check(sdx_canny(&img, &p, &e) == 0, "canny of a 60|30 bar")) {
            bool top = true; /* at the junction (columns 15-16) the edge bends to row 12 */
            for (int x = 6; x <= 25; x++)
                top = top && (x == 15 || x == 16 ? s_on(&e, x, 12) : s_on(&e, x, 11));
            sdx_test_check(top, "its top edge (row 11) runs across both halves: the weak part "
                                "joins the strong one (row 11: %#x)",
                           s_row(&e, 11));
            sdx_image_clear(&e);
        }
        s_fill(&img, 4, 12, 15, 19, 0, 0, 0); /* the weak half alone */
        sdx_canny(&img, &p, &e);
        sdx_test_check(s_count(&e) == 0, "the 30 half alone has no edges (%d)", s_count(&e));
        sdx_image_clear(&e);
        sdx_image_clear(&img);
    }

    /* colour: the strongest channel decides */
    {
        sdx_image_t img;
        s_img(&img, W, H);
        s_fill(&img, 10, 10, 21, 21, 60, 0, 0);
        sdx_canny(&img, &p, &e);
        sdx_test_check(s_row(&e, 15) == ((1u << 9) | (1u << 21)),
                       "a boundary in the red channel only: the same outline (row 15: %#x)",
                       s_row(&e, 15));
        sdx_image_clear(&e);
        sdx_image_clear(&img);
    }

    /* blur */
    {
        sdx_canny_params_t b = p;
        b.sigma = 1.4;
        b.low = 20, b.high = 60;
        s_square(200, &b, &e);
        bool near = true, found = true;
        for (int y = 12; y <= 19; y++) {
            unsigned r = s_row(&e, y);
            found = found && (r & (7u << 8)) && (r & (7u << 20));
            near = near && !(r & ~((7u << 8) | (7u << 20)));
        }
        sdx_test_check(found && near,
                       "sigma 1.4: on the middle rows the edges stay within a pixel of the "
                       "boundary (row 15: %#x)",
                       s_row(&e, 15));
        sdx_image_clear(&e);
        sdx_image_t img;
        s_img(&img, W, H);
        s_fill(&img, 16, 16, 16, 16, 120, 120, 120); /* a one-pixel speck */
        sdx_canny(&img, &p, &e);
        int plain = s_count(&e);
        sdx_image_clear(&e);
        b = p;
        b.sigma = 1.4;
        sdx_canny(&img, &b, &e);
        sdx_test_check(plain > 0 && s_count(&e) == 0,
                       "a one-pixel speck of 120 makes %d edge pixels unblurred, none with sigma "
                       "1.4 (%d)",
                       plain, s_count(&e));
        sdx_image_clear(&e);
        sdx_image_clear(&img);
    }

    /* refusals */
    {
        sdx_canny_params_t bad = p;
        bad.low = 300;
        sdx_test_check(s_square(60, &bad, &e) != 0 && e.pixels == NULL,
                       "low above high is refused (%s)", sdx_last_error());
        bad = p;
        bad.sigma = -1;
        sdx_test_check(s_square(60, &bad, &e) != 0, "a negative sigma is refused");
        sdx_image_t grey = {.width = 4, .height = 4, .channels = 1, .pixels = calloc(16, 1)};
        sdx_test_check(sdx_canny(&grey, &p, &e) != 0, "a one-channel image is refused");
        sdx_image_clear(&grey);
    }
    return sdx_test_done();
}
