// libFuzzer target: image header sniffing (PNG, JPEG, GIF, WebP) on raw bytes, and base64 decoding plus the
// data-URL path of image_size_of_chunk. InvalidRequest is the expected refusal; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/check.h"
#include "core/error.h"
#include "tokenizer/image_size.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace quatre;
  using namespace quatre::tokenizer;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const ImageSize s = image_size_from_bytes(bytes, "fuzz image");
    CHECK(s.width > 0 && s.height > 0) << s.width << "x" << s.height;
  } catch (const InvalidRequest&) {
  }
  try {
    (void)base64_decode(bytes, "fuzz base64");
  } catch (const InvalidRequest&) {
  }
  try {
    const ImageSize s = image_size_of_chunk(ImageChunk{.source = std::string(bytes), .size = std::nullopt}, "fuzz chunk");
    CHECK(s.width > 0 && s.height > 0) << s.width << "x" << s.height;
  } catch (const InvalidRequest&) {
  }
  return 0;
}
