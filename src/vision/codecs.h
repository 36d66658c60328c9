// The four codecs behind decode_image (one file each), all returning RGBA. Internal to src/vision.
#pragma once

#include <string>
#include <string_view>

#include "vision/decode.h"
#include "vision/image.h"

namespace quatre::vision::detail {

RgbaImage decode_png(std::string_view bytes, const std::string& what, const DecodeLimits& limits);
RgbaImage decode_jpeg(std::string_view bytes, const std::string& what, const DecodeLimits& limits);
RgbaImage decode_webp(std::string_view bytes, const std::string& what, const DecodeLimits& limits);
RgbaImage decode_gif(std::string_view bytes, const std::string& what, const DecodeLimits& limits);

// Throws InvalidRequest unless 0 < width, height <= max_side and width * height <= max_pixels.
void check_dimensions(int64_t width, int64_t height, const std::string& what, const DecodeLimits& limits);

}  // namespace quatre::vision::detail
