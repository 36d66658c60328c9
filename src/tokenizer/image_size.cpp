// Image pixel size from PNG/JPEG/GIF/WebP headers, base64 and data-URL handling (PROTOCOL §2.3, §2.10).
// Depends on core and chat_request only; never decodes pixels.
#include <algorithm>
#include <cstdint>

#include <fmt/format.h>

#include "core/error.h"
#include "tokenizer/image_size.h"

namespace quatre::tokenizer {
namespace {

[[noreturn]] void fail(std::string_view what, std::string_view problem) {
  throw InvalidRequest(fmt::format("{}: {}", what, problem));
}

uint32_t byte_at(std::string_view b, size_t i) { return static_cast<unsigned char>(b[i]); }
uint32_t be16(std::string_view b, size_t i) { return byte_at(b, i) << 8 | byte_at(b, i + 1); }
uint32_t le16(std::string_view b, size_t i) { return byte_at(b, i) | byte_at(b, i + 1) << 8; }
uint32_t le24(std::string_view b, size_t i) { return le16(b, i) | byte_at(b, i + 2) << 16; }
uint32_t be32(std::string_view b, size_t i) { return be16(b, i) << 16 | be16(b, i + 2); }
uint32_t le32(std::string_view b, size_t i) { return le16(b, i) | le16(b, i + 2) << 16; }

ImageSize png_size(std::string_view b, std::string_view what) {
  if (b.size() < 24 || b.substr(12, 4) != "IHDR") fail(what, "truncated or corrupt PNG header");
  return {static_cast<int>(be32(b, 16)), static_cast<int>(be32(b, 20))};
}

ImageSize gif_size(std::string_view b, std::string_view what) {
  if (b.size() < 10) fail(what, "truncated GIF header");
  return {static_cast<int>(le16(b, 6)), static_cast<int>(le16(b, 8))};  // logical screen size, as PIL reports
}

// Walks the marker segments up to the first start-of-frame marker, which holds the frame's size.
ImageSize jpeg_size(std::string_view b, std::string_view what) {
  size_t i = 2;  // after SOI (FF D8)
  while (true) {
    while (i < b.size() && byte_at(b, i) != 0xFF) ++i;  // tolerate garbage between segments, as decoders do
    while (i < b.size() && byte_at(b, i) == 0xFF) ++i;  // fill bytes
    if (i >= b.size()) break;
    const uint32_t marker = byte_at(b, i++);
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length field
    if (marker == 0xD9 || marker == 0xDA) break;                          // EOI / SOS before any frame
    if (i + 2 > b.size()) break;
    const uint32_t length = be16(b, i);
    if (length < 2) break;
    const bool is_sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (is_sof) {
      if (i + 7 > b.size()) break;
      return {static_cast<int>(be16(b, i + 5)), static_cast<int>(be16(b, i + 3))};  // P, Y(height), X(width)
    }
    i += length;
  }
  fail(what, "JPEG data without a readable frame header (SOF marker)");
}

ImageSize webp_size(std::string_view b, std::string_view what) {
  if (b.size() < 30) fail(what, "truncated WebP header");
  const std::string_view chunk = b.substr(12, 4);
  if (chunk == "VP8 ") {
    if (byte_at(b, 23) != 0x9D || byte_at(b, 24) != 0x01 || byte_at(b, 25) != 0x2A) {
      fail(what, "corrupt WebP (VP8) frame header");
    }
    return {static_cast<int>(le16(b, 26) & 0x3FFF), static_cast<int>(le16(b, 28) & 0x3FFF)};
  }
  if (chunk == "VP8L") {
    if (byte_at(b, 20) != 0x2F) fail(what, "corrupt WebP (VP8L) header");
    const uint32_t bits = le32(b, 21);
    return {static_cast<int>((bits & 0x3FFF) + 1), static_cast<int>(((bits >> 14) & 0x3FFF) + 1)};
  }
  if (chunk == "VP8X") return {static_cast<int>(le24(b, 24) + 1), static_cast<int>(le24(b, 27) + 1)};
  fail(what, fmt::format("unknown WebP chunk \"{}\"", chunk));
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

}  // namespace

std::string base64_decode(std::string_view text, std::string_view what) {
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t acc = 0;
  int n_bits = 0;
  bool seen_padding = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      seen_padding = true;
      continue;
    }
    const int v = base64_value(c);
    if (v < 0 || seen_padding) {
      fail(what, fmt::format("invalid base64: unexpected character '{}' at offset {}", c, i));
    }
    acc = (acc << 6 | static_cast<uint32_t>(v)) & 0xFFFFFF;
    n_bits += 6;
    if (n_bits >= 8) {
      n_bits -= 8;
      out += static_cast<char>((acc >> n_bits) & 0xFF);
    }
  }
  return out;
}

ImageSize image_size_from_bytes(std::string_view b, std::string_view what) {
  ImageSize size;
  if (b.substr(0, 8) == "\x89PNG\r\n\x1a\n") {
    size = png_size(b, what);
  } else if (b.size() >= 3 && byte_at(b, 0) == 0xFF && byte_at(b, 1) == 0xD8 && byte_at(b, 2) == 0xFF) {
    size = jpeg_size(b, what);
  } else if (b.substr(0, 6) == "GIF87a" || b.substr(0, 6) == "GIF89a") {
    size = gif_size(b, what);
  } else if (b.size() >= 12 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP") {
    size = webp_size(b, what);
  } else {
    fail(what, "unsupported image format; expected PNG, JPEG, GIF or WebP data");
  }
  if (size.width <= 0 || size.height <= 0) {
    fail(what, fmt::format("image has an empty size {}x{}", size.width, size.height));
  }
  return size;
}

ImageSize image_size_of_chunk(const ImageChunk& chunk, std::string_view what) {
  if (chunk.size) return *chunk.size;
  const std::string_view src = chunk.source;
  if (src.starts_with("http://") || src.starts_with("https://")) {
    fail(what, "image URLs are not supported yet; send the image inline as a data:image/...;base64 URL");
  }
  if (src.starts_with("file:")) fail(what, "file:// image URLs are disabled");
  std::string_view payload = src;
  if (src.starts_with("data:")) {
    const size_t comma = src.find(',');
    if (!src.starts_with("data:image/") || comma == std::string_view::npos) {
      fail(what, fmt::format("unsupported data URL \"{}...\"; expected data:image/<format>;base64,<data>",
                             src.substr(0, std::min<size_t>(src.size(), 30))));
    }
    payload = src.substr(comma + 1);
  }
  return image_size_from_bytes(base64_decode(payload, what), what);
}

}  // namespace quatre::tokenizer
