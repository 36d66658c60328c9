// Pillow's Image.resize(size, BICUBIC) on an 8-bit RGB image, bit for bit: a separable convolution with the
// bicubic kernel (a = -0.5, support 2) stretched by the downscale factor (antialiasing), coefficients normalised
// in double and rounded to 22-bit fixed point, the horizontal pass first into an 8-bit image, then the vertical
// pass (Pillow's libImaging/Resample.c; a pass whose size does not change is skipped). Depends on nothing.
#pragma once

#include <cstdint>

#include "vision/image.h"

namespace quatre::vision {

RgbImage resize_bicubic(const RgbImage& in, int64_t out_width, int64_t out_height);

}  // namespace quatre::vision
