// Image sizes from PNG/JPEG/GIF/WebP headers, base64 and data URLs (PROTOCOL §2.3, §2.10). Headers are
// written byte by byte from the format specifications, independently of the parser.
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/image_size.h"

namespace quatre::tokenizer {
namespace {

std::string bytes(std::initializer_list<int> list) {
  std::string s;
  for (int b : list) s += static_cast<char>(b);
  return s;
}

std::string b64(std::string_view in) {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = static_cast<unsigned char>(in[i]) << 16 | static_cast<unsigned char>(in[i + 1]) << 8 |
                       static_cast<unsigned char>(in[i + 2]);
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], kB64[(v >> 6) & 63], kB64[v & 63]};
  }
  if (i + 1 == in.size()) {
    const uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t v = static_cast<unsigned char>(in[i]) << 16 | static_cast<unsigned char>(in[i + 1]) << 8;
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], kB64[(v >> 6) & 63], '='};
  }
  return out;
}

// Signature, IHDR length 13, "IHDR", width 800, height 600 (big-endian), then the rest of IHDR.
const std::string kPng800x600 = bytes({0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                       0, 0, 0x03, 0x20, 0, 0, 0x02, 0x58, 8, 2, 0, 0, 0});
// SOI, APP0 (JFIF, 16 bytes), DQT stub (4 bytes), SOF2 progressive: P=8, height 480, width 640.
const std::string kJpeg640x480 = bytes({0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1,
                                        0, 0, 0xFF, 0xDB, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xC2, 0x00, 0x11, 0x08, 0x01,
                                        0xE0, 0x02, 0x80, 0x03, 0x01, 0x22, 0x00});
// GIF89a, logical screen 300 x 200 (little-endian).
const std::string kGif300x200 = bytes({'G', 'I', 'F', '8', '9', 'a', 0x2C, 0x01, 0xC8, 0x00, 0xF7, 0, 0});

std::string riff_webp(std::string_view chunk, std::string payload) {
  std::string s = "RIFF" + bytes({0x20, 0, 0, 0}) + "WEBP" + std::string(chunk) + bytes({0x10, 0, 0, 0}) + payload;
  s.resize(40, '\0');
  return s;
}

TEST(ImageSize, HeadersOfEachFormat) {
  EXPECT_EQ(image_size_from_bytes(kPng800x600, "png"), (ImageSize{800, 600}));
  EXPECT_EQ(image_size_from_bytes(kJpeg640x480, "jpeg"), (ImageSize{640, 480}));
  EXPECT_EQ(image_size_from_bytes(kGif300x200, "gif"), (ImageSize{300, 200}));
  // VP8 (lossy): frame tag (3), start code 9D 01 2A, 14-bit width 1000 and height 750.
  EXPECT_EQ(image_size_from_bytes(riff_webp("VP8 ", bytes({0, 0, 0, 0x9D, 0x01, 0x2A, 0xE8, 0x03, 0xEE, 0x02})), "webp"),
            (ImageSize{1000, 750}));
  // VP8L: signature 0x2F, then width-1 (14 bits) and height-1 (14 bits), little-endian: 100 x 50.
  const uint32_t bits = (100 - 1) | (50 - 1) << 14;
  EXPECT_EQ(image_size_from_bytes(riff_webp("VP8L", bytes({0x2F, static_cast<int>(bits & 0xFF), static_cast<int>((bits >> 8) & 0xFF),
                                                                static_cast<int>((bits >> 16) & 0xFF), static_cast<int>(bits >> 24)})),
                                  "webp"),
            (ImageSize{100, 50}));
  // VP8X: flags (4), canvas width-1 and height-1 as 24-bit little-endian: 4000 x 3000.
  EXPECT_EQ(image_size_from_bytes(riff_webp("VP8X", bytes({0, 0, 0, 0, 0x9F, 0x0F, 0x00, 0xB7, 0x0B, 0x00})), "webp"),
            (ImageSize{4000, 3000}));
}

TEST(ImageSize, RejectsUnknownTruncatedAndEmpty) {
  for (const std::string& bad : {std::string("BM\x36\x00\x00\x00", 6), kPng800x600.substr(0, 20), kJpeg640x480.substr(0, 28),
                                 kGif300x200.substr(0, 8), std::string(), riff_webp("VP8 ", "xxxxxxxx"),
                                 riff_webp("ABCD", "")}) {
    EXPECT_THROW(image_size_from_bytes(bad, "img"), InvalidRequest);
  }
  std::string zero = kGif300x200;
  zero[6] = zero[7] = 0;
  try {
    image_size_from_bytes(zero, "messages[0].content[1]");
    FAIL() << "no exception";
  } catch (const InvalidRequest& e) {
    EXPECT_STREQ(e.what(), "messages[0].content[1]: image has an empty size 0x200");
  }
}

TEST(ImageSize, Base64) {
  EXPECT_EQ(base64_decode("QUJD", "x"), "ABC");
  EXPECT_EQ(base64_decode("QUI=", "x"), "AB");
  EXPECT_EQ(base64_decode("QUI", "x"), "AB");  // padding optional
  EXPECT_EQ(base64_decode("QU JD\nRA==", "x"), "ABCD");
  EXPECT_EQ(base64_decode(b64(kJpeg640x480), "x"), kJpeg640x480);
  EXPECT_EQ(base64_decode("-_-_", "x"), base64_decode("+/+/", "x"));
  EXPECT_THROW(base64_decode("QU*D", "x"), InvalidRequest);
  EXPECT_THROW(base64_decode("QU==QUJD", "x"), InvalidRequest);
}

TEST(ImageSize, ChunkSources) {
  const auto size_of = [](std::string source) {
    return image_size_of_chunk(ImageChunk{.source = std::move(source), .size = std::nullopt}, "messages[1].content[0]");
  };
  EXPECT_EQ(size_of("data:image/png;base64," + b64(kPng800x600)), (ImageSize{800, 600}));
  EXPECT_EQ(size_of("data:image/jpeg;base64," + b64(kJpeg640x480)), (ImageSize{640, 480}));
  EXPECT_EQ(size_of(b64(kGif300x200)), (ImageSize{300, 200}));  // bare base64 ({"type": "image"})
  EXPECT_EQ(image_size_of_chunk(ImageChunk{.source = "https://x", .size = ImageSize{3, 4}}, "c"), (ImageSize{3, 4}));
  for (const char* refused : {"https://example.com/cat.png", "http://x/y.jpg", "file:///etc/passwd", "data:text/plain;base64,QUJD",
                              "data:image/png;base64"}) {
    try {
      size_of(refused);
      FAIL() << "accepted " << refused;
    } catch (const InvalidRequest& e) {
      EXPECT_TRUE(std::string(e.what()).starts_with("messages[1].content[0]: ")) << e.what();
    }
  }
}

}  // namespace
}  // namespace quatre::tokenizer
