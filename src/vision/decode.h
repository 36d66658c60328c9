// Image decoding for the vision path (issue #5): PNG, JPEG, WebP and GIF (first frame only) through Debian's
// libpng, libjpeg-turbo, libwebp and giflib, from bytes, files and `data:` URLs, with limits against hostile
// input. The result is RGB: alpha composited onto white as mistral_common does (Pillow's alpha_composite; the
// default) or dropped as transformers 5.17's convert_to_rgb does (image.convert("RGB"), checked on the reference
// host); palette and grey become RGB; EXIF orientation is ignored, as upstream (Pillow's open() never applies it
// and neither transformers nor mistral_common call exif_transpose). Depends on core, tokenizer (base64).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>

#include "vision/image.h"

namespace quatre::vision {

enum class AlphaMode : uint8_t {
  kCompositeOnWhite,  // mistral_common, the release's preprocessing (PROTOCOL.md §2.10)
  kDrop,              // transformers 5.17 PixtralImageProcessor(Fast): convert("RGB") keeps the colour channels
};

// The limits of decoding, and how alpha becomes RGB.
struct DecodeLimits {
  int64_t max_encoded_bytes = 20 << 20;  // the file / decoded base64
  int64_t max_side = 16384;              // width and height each
  int64_t max_pixels = 50'000'000;       // width * height: decompression bombs
  AlphaMode alpha = AlphaMode::kCompositeOnWhite;
};

// Decodes `bytes` (format sniffed from the magic bytes). Throws InvalidRequest naming `what` and the cause for
// unknown formats, corrupt or truncated data, zero or over-limit sizes.
RgbImage decode_image(std::string_view bytes, std::string_view what, const DecodeLimits& limits = {});
// `data:image/<fmt>;base64,<payload>` (or bare base64).
RgbImage decode_data_url(std::string_view url, std::string_view what, const DecodeLimits& limits = {});
// Reads a file (refusing one over the byte limit before reading it) and decodes it.
RgbImage decode_file(const std::filesystem::path& path, const DecodeLimits& limits = {});

// Pillow's alpha_composite of the image over opaque white, then RGB.
RgbImage composite_on_white(const RgbaImage& image);
RgbImage to_rgb(const RgbaImage& image, AlphaMode mode);

}  // namespace quatre::vision
