// Image decoding for the vision path (issue #5): PNG, JPEG, WebP and GIF (first frame only) through Debian's
// libpng, libjpeg-turbo, libwebp and giflib, from bytes, files and `data:` URLs, with limits against hostile
// input. The result is RGB with alpha composited onto white as transformers' convert_to_rgb does (Pillow
// alpha_composite); palette and grey become RGB; EXIF orientation is ignored, as upstream (Pillow's open()
// never applies it and neither transformers nor mistral_common call exif_transpose). Depends on core.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>

#include "vision/image.h"

namespace quatre::vision {

struct DecodeLimits {
  int64_t max_encoded_bytes = 20 << 20;  // the file / decoded base64
  int64_t max_side = 16384;              // width and height each
  int64_t max_pixels = 50'000'000;       // width * height: decompression bombs
};

// Decodes `bytes` (format sniffed from the magic bytes). Throws InvalidRequest naming `what` and the cause for
// unknown formats, corrupt or truncated data, zero or over-limit sizes.
RgbImage decode_image(std::string_view bytes, std::string_view what, const DecodeLimits& limits = {});
// `data:image/<fmt>;base64,<payload>` (or bare base64).
RgbImage decode_data_url(std::string_view url, std::string_view what, const DecodeLimits& limits = {});
// Reads a file (refusing one over the byte limit before reading it) and decodes it.
RgbImage decode_file(const std::filesystem::path& path, const DecodeLimits& limits = {});

// Pillow's alpha_composite of the image over opaque white, then RGB (what transformers' convert_to_rgb does).
RgbImage composite_on_white(const RgbaImage& image);

}  // namespace quatre::vision
