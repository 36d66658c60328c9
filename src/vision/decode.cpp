// decode_image: format sniffing, the limits, data URLs, files, and the white compositing of alpha.
#include "vision/decode.h"

#include <algorithm>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "core/error.h"
#include "tokenizer/image_size.h"
#include "vision/codecs.h"

namespace quatre::vision {
namespace detail {

void check_dimensions(int64_t width, int64_t height, const std::string& what, const DecodeLimits& limits) {
  if (width <= 0 || height <= 0) throw InvalidRequest(fmt::format("{}: image has zero size ({}x{})", what, width, height));
  if (width > limits.max_side || height > limits.max_side) {
    throw InvalidRequest(fmt::format("{}: image is {}x{} pixels, over the limit of {} per side", what, width, height, limits.max_side));
  }
  if (width * height > limits.max_pixels) {
    throw InvalidRequest(fmt::format("{}: image is {}x{} = {} pixels, over the limit of {} (decompression bomb?)", what,
                                     width, height, width * height, limits.max_pixels));
  }
}

}  // namespace detail

namespace {

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

RgbImage decode_image(std::string_view bytes, std::string_view what_view, const DecodeLimits& limits) {
  const std::string what(what_view);
  if (bytes.empty()) throw InvalidRequest(fmt::format("{}: empty image data", what));
  if (static_cast<int64_t>(bytes.size()) > limits.max_encoded_bytes) {
    throw InvalidRequest(fmt::format("{}: image data is {} bytes, over the limit of {}", what, bytes.size(), limits.max_encoded_bytes));
  }
  RgbaImage rgba;
  if (starts_with(bytes, "\x89PNG\r\n\x1a\n")) {
    rgba = detail::decode_png(bytes, what, limits);
  } else if (starts_with(bytes, "\xff\xd8\xff")) {
    rgba = detail::decode_jpeg(bytes, what, limits);
  } else if (starts_with(bytes, "GIF87a") || starts_with(bytes, "GIF89a")) {
    rgba = detail::decode_gif(bytes, what, limits);
  } else if (bytes.size() >= 12 && starts_with(bytes, "RIFF") && bytes.substr(8, 4) == "WEBP") {
    rgba = detail::decode_webp(bytes, what, limits);
  } else {
    throw InvalidRequest(fmt::format("{}: not a PNG, JPEG, WebP or GIF image", what));
  }
  return to_rgb(rgba, limits.alpha);
}

RgbImage to_rgb(const RgbaImage& image, AlphaMode mode) {
  if (mode == AlphaMode::kCompositeOnWhite) return composite_on_white(image);
  RgbImage out{.width = image.width, .height = image.height, .rgb = std::vector<uint8_t>(image.rgba.size() / 4 * 3)};
  for (size_t i = 0; i < out.rgb.size() / 3; ++i) std::copy_n(&image.rgba[i * 4], 3, &out.rgb[i * 3]);
  return out;
}

RgbImage decode_data_url(std::string_view url, std::string_view what, const DecodeLimits& limits) {
  std::string_view payload = url;
  if (starts_with(url, "data:")) {
    const size_t comma = url.find(',');
    if (comma == std::string_view::npos || url.substr(0, comma).find(";base64") == std::string_view::npos) {
      throw InvalidRequest(fmt::format("{}: a data URL must look like data:image/<format>;base64,<data>", what));
    }
    payload = url.substr(comma + 1);
  }
  // base64 is 4/3 of the bytes: refuse before decoding anything far too large
  if (static_cast<int64_t>(payload.size()) / 4 * 3 > limits.max_encoded_bytes + 3) {
    throw InvalidRequest(fmt::format("{}: image data is over the limit of {} bytes", what, limits.max_encoded_bytes));
  }
  return decode_image(tokenizer::base64_decode(payload, what), what, limits);
}

RgbImage decode_file(const std::filesystem::path& path, const DecodeLimits& limits) {
  const std::string what = path.string();
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw InvalidRequest(fmt::format("{}: cannot read the image: {}", what, ec.message()));
  if (static_cast<int64_t>(size) > limits.max_encoded_bytes) {
    throw InvalidRequest(fmt::format("{}: image file is {} bytes, over the limit of {}", what, size, limits.max_encoded_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::string bytes(size, '\0');
  if (!in || !in.read(bytes.data(), static_cast<std::streamsize>(size))) {
    throw InvalidRequest(fmt::format("{}: cannot read the image", what));
  }
  return decode_image(bytes, what, limits);
}

// Pillow's AlphaComposite.c for src over an opaque white dst (dst alpha 255): with blend = 255 * (255 - a),
// outa255 = a * 255 + blend = 255 * 255, coef1 = a * 255 * 255 * 128 / outa255 = a * 128, coef2 = 255 * 128 - coef1,
// out = SHIFTFORDIV255(src * coef1 + 255 * coef2 + (0x80 << 7)) >> 7, SHIFTFORDIV255(x) = ((x >> 8) + x) >> 8.
RgbImage composite_on_white(const RgbaImage& image) {
  RgbImage out{.width = image.width, .height = image.height, .rgb = {}};
  const size_t n = static_cast<size_t>(image.width * image.height);
  out.rgb.resize(n * 3);
  constexpr uint32_t kPrecision = 7;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &image.rgba[i * 4];
    const uint32_t a = p[3];
    for (int c = 0; c < 3; ++c) {
      if (a == 255) {
        out.rgb[i * 3 + c] = p[c];
        continue;
      }
      const uint32_t coef1 = a * 255u * 255u * (1u << kPrecision) / (255u * 255u);
      const uint32_t coef2 = 255u * (1u << kPrecision) - coef1;
      const uint32_t tmp = p[c] * coef1 + 255u * coef2 + (0x80u << kPrecision);
      out.rgb[i * 3 + c] = static_cast<uint8_t>((((tmp >> 8) + tmp) >> 8) >> kPrecision);
    }
  }
  return out;
}

}  // namespace quatre::vision
