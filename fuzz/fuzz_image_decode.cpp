// libFuzzer target: image decoding (vision::decode_image: PNG, JPEG, WebP, GIF sniffed from the magic bytes) on
// raw bytes, under limits small enough to keep each run fast. InvalidRequest is the expected refusal (unknown
// format, corrupt or truncated data, over-limit sizes); anything else is a finding. A decoded image is within the
// limits and holds exactly width * height RGB pixels.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/check.h"
#include "core/error.h"
#include "vision/decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace quatre;
  vision::DecodeLimits limits;
  limits.max_side = 2048;
  limits.max_pixels = 1 << 20;
  for (const vision::AlphaMode alpha : {vision::AlphaMode::kCompositeOnWhite, vision::AlphaMode::kDrop}) {
    limits.alpha = alpha;
    try {
      const vision::RgbImage image = vision::decode_image(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz image", limits);
      CHECK(image.width > 0 && image.height > 0 && image.width <= limits.max_side && image.height <= limits.max_side)
          << image.width << "x" << image.height;
      CHECK(image.width * image.height <= limits.max_pixels) << image.width << "x" << image.height;
      CHECK(static_cast<int64_t>(image.rgb.size()) == image.width * image.height * 3) << image.rgb.size();
    } catch (const InvalidRequest&) {
    }
  }
  return 0;
}
