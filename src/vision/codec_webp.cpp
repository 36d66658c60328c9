// WebP through libwebp: still images with WebPDecodeRGBA; animated ones through WebPAnimDecoder, first frame only
// (its canvas, as Pillow's first frame).
#include <webp/decode.h>
#include <webp/demux.h>

#include <cstring>

#include <fmt/format.h>

#include "core/error.h"
#include "vision/codecs.h"

namespace quatre::vision::detail {
namespace {

RgbaImage first_frame(const WebPData& data, const std::string& what, const DecodeLimits& limits) {
  WebPAnimDecoderOptions options;
  WebPAnimDecoderOptionsInit(&options);
  options.color_mode = MODE_RGBA;
  options.use_threads = 0;
  WebPAnimDecoder* dec = WebPAnimDecoderNew(&data, &options);
  if (dec == nullptr) throw InvalidRequest(fmt::format("{}: cannot decode the animated WebP", what));
  WebPAnimInfo info;
  uint8_t* pixels = nullptr;
  int timestamp = 0;
  RgbaImage out;
  try {
    if (!WebPAnimDecoderGetInfo(dec, &info)) throw InvalidRequest(fmt::format("{}: cannot read the animated WebP", what));
    check_dimensions(info.canvas_width, info.canvas_height, what, limits);
    if (!WebPAnimDecoderGetNext(dec, &pixels, &timestamp)) {
      throw InvalidRequest(fmt::format("{}: cannot decode the first frame of the animated WebP", what));
    }
    out.width = info.canvas_width;
    out.height = info.canvas_height;
    out.rgba.assign(pixels, pixels + out.width * out.height * 4);
  } catch (...) {
    WebPAnimDecoderDelete(dec);
    throw;
  }
  WebPAnimDecoderDelete(dec);
  return out;
}

}  // namespace

RgbaImage decode_webp(std::string_view bytes, const std::string& what, const DecodeLimits& limits) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(data, bytes.size(), &features) != VP8_STATUS_OK) {
    throw InvalidRequest(fmt::format("{}: cannot decode the WebP: corrupt or truncated header", what));
  }
  check_dimensions(features.width, features.height, what, limits);
  if (features.has_animation) return first_frame(WebPData{data, bytes.size()}, what, limits);
  RgbaImage out;
  out.width = features.width;
  out.height = features.height;
  out.rgba.resize(static_cast<size_t>(out.width * out.height * 4));
  if (WebPDecodeRGBAInto(data, bytes.size(), out.rgba.data(), out.rgba.size(), static_cast<int>(out.width * 4)) == nullptr) {
    throw InvalidRequest(fmt::format("{}: cannot decode the WebP: corrupt or truncated data", what));
  }
  return out;
}

}  // namespace quatre::vision::detail
