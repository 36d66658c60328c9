// The deterministic test images of tools/reference/goldens_vision.py (`synthetic_image`, `mix`), ported exactly:
// a gradient plus hashed noise, alpha 0 in the first 3 columns and 255 in the last 3 for RGBA.
#pragma once

#include <cstdint>

#include "vision/image.h"

namespace quatre::vision::test {

inline uint32_t mix(uint64_t x, uint64_t y, uint64_t c, uint64_t seed) {
  uint64_t h = ((x * 2654435761u) ^ (y * 2246822519u) ^ ((c + 1) * 3266489917u) ^ (seed * 668265263u)) & 0xFFFFFFFFu;
  h ^= h >> 15;
  h = (h * 2246822519u) & 0xFFFFFFFFu;
  h ^= h >> 13;
  return static_cast<uint32_t>(h);
}

inline RgbaImage synthetic_image(int64_t h, int64_t w, int channels, uint64_t seed, uint64_t* pixel_sum = nullptr) {
  RgbaImage img{.width = w, .height = h, .rgba = std::vector<uint8_t>(static_cast<size_t>(w * h * 4))};
  uint64_t sum = 0;
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      uint8_t* p = &img.rgba[static_cast<size_t>((y * w + x) * 4)];
      for (int c = 0; c < 3; ++c) {
        p[c] = static_cast<uint8_t>((x * 5 + y * 3 + c * 60 + (mix(static_cast<uint64_t>(x), static_cast<uint64_t>(y), static_cast<uint64_t>(c), seed) & 63)) & 255);
        sum += p[c];
      }
      p[3] = 255;
      if (channels == 4) {
        p[3] = x < 3 ? 0 : x >= w - 3 ? 255 : static_cast<uint8_t>((x * 9 + y * 5 + (mix(static_cast<uint64_t>(x), static_cast<uint64_t>(y), 3, seed) & 31)) & 255);
        sum += p[3];
      }
    }
  }
  if (pixel_sum != nullptr) *pixel_sum = sum;
  return img;
}

}  // namespace quatre::vision::test
