// Image decoding: every format and pixel layout to RGB, and hostile input (truncated, corrupt, zero-size, huge
// declared sizes, over-limit bytes, bad base64) refused with an InvalidRequest that says what is wrong.
#include <gtest/gtest.h>
#include <zlib.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "image_encoders.h"
#include "vision/decode.h"

namespace quatre::vision::test {
namespace {

std::vector<uint8_t> pattern(int w, int h, int channels) {
  std::vector<uint8_t> s(static_cast<size_t>(w * h * channels));
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>((i * 37 + i / 7) & 255);
  return s;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const InvalidRequest& e) {
    return e.what();
  }
  return "(no error)";
}

std::string base64(const std::string& bytes) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += k[(v >> s) & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    for (int s = 18; s >= 6; s -= 6) out += k[(v >> s) & 63];
    out += "=";
  }
  return out;
}

// A PNG whose IHDR declares width x height (valid CRC), followed by nothing useful.
std::string png_declaring(uint32_t width, uint32_t height) {
  std::string png = encode_png(2, 2, 3, 8, pattern(2, 2, 3));
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) png[at + static_cast<size_t>(i)] = static_cast<char>((v >> (24 - 8 * i)) & 255);
  };
  put32(16, width);
  put32(20, height);
  put32(29, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17)));
  return png;
}

TEST(Decode, PngRgbIsExact) {
  const std::vector<uint8_t> s = pattern(5, 3, 3);
  const RgbImage img = decode_image(encode_png(5, 3, 3, 8, s), "t");
  EXPECT_EQ(img.width, 5);
  EXPECT_EQ(img.height, 3);
  EXPECT_EQ(img.rgb, s);
}

TEST(Decode, PngGreyBecomesRgb) {
  const std::vector<uint8_t> s = pattern(4, 4, 1);
  const RgbImage img = decode_image(encode_png(4, 4, 1, 8, s), "t");
  for (size_t i = 0; i < s.size(); ++i) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.rgb[i * 3 + static_cast<size_t>(c)], s[i]);
  }
}

TEST(Decode, Png16BitKeepsTheHighByte) {
  std::vector<uint8_t> s;
  const std::vector<uint8_t> v = pattern(3, 2, 3);
  for (uint8_t x : v) {
    s.push_back(x);
    s.push_back(static_cast<uint8_t>(255 - x));  // low byte: dropped
  }
  EXPECT_EQ(decode_image(encode_png(3, 2, 3, 16, s), "t").rgb, v);
}

TEST(Decode, AlphaCompositedOnWhiteOrDropped) {
  // (r, g, b, a): opaque, transparent, half
  const std::vector<uint8_t> s = {10, 20, 30, 255, 10, 20, 30, 0, 0, 100, 200, 128};
  const std::string png = encode_png(3, 1, 4, 8, s);
  const RgbImage white = decode_image(png, "t");
  // Pillow alpha_composite over white: 255 + (v - 255) * a / 255 in its fixed point
  EXPECT_EQ(white.rgb, (std::vector<uint8_t>{10, 20, 30, 255, 255, 255, 127, 177, 227}));
  DecodeLimits drop;
  drop.alpha = AlphaMode::kDrop;
  EXPECT_EQ(decode_image(png, "t", drop).rgb, (std::vector<uint8_t>{10, 20, 30, 10, 20, 30, 0, 100, 200}));
}

TEST(Decode, JpegRgbRoundTripsClosely) {
  std::vector<uint8_t> s(8 * 8 * 3);
  for (size_t i = 0; i < s.size(); i += 3) {
    s[i] = 200;
    s[i + 1] = 100;
    s[i + 2] = 50;
  }
  const RgbImage img = decode_image(encode_jpeg(8, 8, 3, s), "t");
  ASSERT_EQ(img.rgb.size(), s.size());
  for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(img.rgb[i], s[i], 2) << i;
}

TEST(Decode, CmykJpegIsConverted) {
  // Adobe CMYK stores 255 - ink: (155, 255, 255, 255) is 100 cyan, no black -> (155, 255, 255);
  // (255, 255, 255, 55) is 200 black -> 55 everywhere.
  for (const auto& [sample, want] : {std::pair<std::array<uint8_t, 4>, std::array<int, 3>>{{155, 255, 255, 255}, {155, 255, 255}},
                                     {{255, 255, 255, 55}, {55, 55, 55}}}) {
    std::vector<uint8_t> s;
    for (int i = 0; i < 64; ++i) s.insert(s.end(), sample.begin(), sample.end());
    const RgbImage img = decode_image(encode_jpeg(8, 8, 4, s), "t");
    for (size_t i = 0; i < img.rgb.size(); ++i) EXPECT_NEAR(img.rgb[i], want[i % 3], 2) << i;
  }
}

TEST(Decode, GifFirstFrameWithTransparency) {
  const std::vector<std::array<uint8_t, 3>> palette = {{{0, 0, 0}}, {{255, 0, 0}}, {{0, 255, 0}}, {{0, 0, 255}}};
  const std::vector<uint8_t> first = {1, 2, 3, 0}, second = {3, 3, 3, 3};
  const std::string gif = encode_gif(2, 2, palette, {first, second}, /*transparent=*/0);
  const RgbImage img = decode_image(gif, "t");  // index 0 transparent -> white
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255}));
}

TEST(Decode, WebpLosslessIsExact) {
  const std::vector<uint8_t> rgba = {1, 2, 3, 255, 40, 50, 60, 255, 70, 80, 90, 255, 200, 210, 220, 255};
  const RgbImage img = decode_image(encode_webp_lossless(2, 2, rgba), "t");
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{1, 2, 3, 40, 50, 60, 70, 80, 90, 200, 210, 220}));
}

TEST(Decode, DataUrl) {
  const std::vector<uint8_t> s = pattern(2, 3, 3);
  const std::string url = "data:image/png;base64," + base64(encode_png(2, 3, 3, 8, s));
  EXPECT_EQ(decode_data_url(url, "image_url").rgb, s);
  EXPECT_NE(error_of([&] { decode_data_url("data:image/png;base64,@@@@", "image_url"); }).find("image_url"), std::string::npos);
  EXPECT_NE(error_of([&] { decode_data_url("data:image/png,abcd", "image_url"); }).find("base64"), std::string::npos);
}

TEST(Decode, HostileInputIsRefusedClearly) {
  const std::string png = encode_png(16, 16, 3, 8, pattern(16, 16, 3));
  const std::string jpeg = encode_jpeg(16, 16, 3, pattern(16, 16, 3), 90);
  const std::string gif = encode_gif(4, 4, {{{0, 0, 0}}, {{1, 1, 1}}}, {std::vector<uint8_t>(16, 1)});
  const std::string webp = encode_webp_lossless(4, 4, std::vector<uint8_t>(64, 200));
  struct Case {
    std::string name, bytes, expect;
  };
  const std::vector<Case> cases = {
      {"empty", "", "empty image data"},
      {"unknown", "hello world, not an image", "not a PNG, JPEG, WebP or GIF"},
      {"png truncated", png.substr(0, png.size() / 2), "cannot decode the PNG"},
      {"png header only", png.substr(0, 8), "cannot decode the PNG"},
      {"png bomb", png_declaring(10000, 10000), "decompression bomb"},
      {"png huge side", png_declaring(100000, 1), "per side"},
      {"png zero width", png_declaring(0, 5), "PNG"},
      {"jpeg truncated", jpeg.substr(0, jpeg.size() / 2), "cannot decode the JPEG"},
      {"jpeg header only", jpeg.substr(0, 3), "cannot decode the JPEG"},
      {"gif truncated", gif.substr(0, gif.size() - 6), "GIF"},
      {"gif header only", gif.substr(0, 6), "cannot decode the GIF"},
      {"webp truncated", webp.substr(0, webp.size() / 2), "WebP"},
      {"webp header only", webp.substr(0, 12), "cannot decode the WebP"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of([&] { decode_image(c.bytes, "img.x"); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find("img.x"), std::string::npos) << c.name << ": " << msg;
  }
}

TEST(Decode, LimitsAreEnforced) {
  const std::string png = encode_png(20, 10, 3, 8, pattern(20, 10, 3));
  DecodeLimits bytes;
  bytes.max_encoded_bytes = 10;
  EXPECT_NE(error_of([&] { decode_image(png, "t", bytes); }).find("over the limit of 10"), std::string::npos);
  DecodeLimits side;
  side.max_side = 16;
  EXPECT_NE(error_of([&] { decode_image(png, "t", side); }).find("per side"), std::string::npos);
  DecodeLimits pixels;
  pixels.max_pixels = 199;
  EXPECT_NE(error_of([&] { decode_image(png, "t", pixels); }).find("decompression bomb"), std::string::npos);
  const std::string jpeg = encode_jpeg(20, 10, 3, pattern(20, 10, 3));
  EXPECT_NE(error_of([&] { decode_image(jpeg, "t", pixels); }).find("decompression bomb"), std::string::npos);
  EXPECT_NE(error_of([&] { decode_file("/nonexistent/image.png"); }).find("cannot read"), std::string::npos);
}

}  // namespace
}  // namespace quatre::vision::test
