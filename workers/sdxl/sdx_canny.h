/*  sdx_canny.h - the Canny edge detector of the ControlNet `canny`
    preprocessor, in C on 8-bit images (no libtorch).

    It follows OpenCV's cv::Canny as the ControlNet annotator calls it
    (cv2.Canny(image, low, high) on the RGB image already resized to the
    output size), so that the thresholds users know mean the same here:
      1. optional Gaussian blur (sigma > 0; the annotator has none: 0);
      2. 3x3 Sobel per channel with replicated borders, and per pixel the
         channel whose gradient is strongest (OpenCV's rule for colour input);
      3. magnitude |dx| + |dy| (L1, OpenCV's default; l2 for sqrt(dx^2+dy^2));
      4. non-maximum suppression along the gradient, quantised to 0/45/90/135
         degrees with tan(22.5), ties broken as OpenCV breaks them (a pixel
         is kept if it is above its first neighbour and not below its second);
      5. hysteresis: pixels above `high` start edges, pixels above `low` that
         touch an edge (8-neighbourhood) join it.
    The output is the edge map as an RGB image (255 on edges, 0 elsewhere),
    what the annotator hands to the ControlNet.
*/
#ifndef SDX_CANNY_H
#define SDX_CANNY_H

#include "sdx_image.h"

#include <stdbool.h>

typedef struct {
    double low, high; /* hysteresis thresholds on the gradient magnitude, 0 <= low <= high */
    double sigma;     /* Gaussian blur before the gradients; 0: none */
    bool l2;          /* sqrt(dx^2 + dy^2) instead of |dx| + |dy| */
} sdx_canny_params_t;

/* low 100, high 200, sigma 0, L1: the ControlNet annotator's defaults. */
void sdx_canny_params_init(sdx_canny_params_t *p);

/* Edges of `in` (RGB or RGBA, 8-bit; alpha ignored) into `out`, an RGB image
   of the same size (out is cleared first; the caller clears it). 0, or -1
   with sdx_last_error() (bad thresholds, out of memory). */
int sdx_canny(const sdx_image_t *in, const sdx_canny_params_t *p, sdx_image_t *out);

#endif
