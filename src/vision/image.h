// RgbImage: decoded pixels, 8-bit RGB, row-major HWC, the form every later vision step takes. Depends on nothing.
#pragma once

#include <cstdint>
#include <vector>

namespace quatre::vision {

struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> rgb;  // [height, width, 3]
};

// 8-bit RGBA, row-major HWC: what the codecs produce before alpha is composited away.
struct RgbaImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> rgba;  // [height, width, 4]
};

}  // namespace quatre::vision
