// Test-only encoders (libpng, libjpeg, giflib, libwebp) to build valid and hostile image files in memory.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace quatre::vision::test {

// 8-bit (bit_depth 8) or 16-bit PNG of `channels` (1 grey, 3 RGB, 4 RGBA) samples per pixel, row-major;
// 16-bit samples are big-endian pairs in `samples`.
std::string encode_png(int width, int height, int channels, int bit_depth, const std::vector<uint8_t>& samples);
// Baseline JPEG of RGB (3) or CMYK (4, written with libjpeg's Adobe marker, i.e. inverted ink values) samples.
std::string encode_jpeg(int width, int height, int channels, const std::vector<uint8_t>& samples, int quality = 100);
// GIF with a palette; frames[i] holds width*height palette indices; `transparent` (or -1) for the first frame.
std::string encode_gif(int width, int height, const std::vector<std::array<uint8_t, 3>>& palette,
                       const std::vector<std::vector<uint8_t>>& frames, int transparent = -1);
std::string encode_webp_lossless(int width, int height, const std::vector<uint8_t>& rgba);

}  // namespace quatre::vision::test
