// Pixtral preprocessing rules that need no reference host: the target size (mistral_common's rounding, MODEL.md
// §7.1 and PROTOCOL.md §2.10, including the 1541-px case), the token layout (§7.2), resampling invariants, and the
// encoder's refusal of sizes past its RoPE table.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
#include "io/model_config.h"
#include "vision/preprocess.h"
#include "vision/resample.h"

namespace quatre::vision::test {
namespace {

io::VisionConfig real() { return *io::preset("mistral-small-4").vision; }

TEST(Preprocess, TargetSizeFollowsTheRelease) {
  // MODEL.md §7.2: 1024x768 (w x h) -> 1036x784, 37 x 28 tokens
  const tokenizer::ImageGrid g = target_grid(1024, 768, real());
  EXPECT_EQ(g.resized_width_px, 1036);
  EXPECT_EQ(g.resized_height_px, 784);
  EXPECT_EQ(g.n_cols, 37);
  EXPECT_EQ(g.n_rows, 28);
  // 1541 px: transformers' ceil would give 1568 (112 patches, past the 110-entry RoPE table); the release's
  // round-half-even gives 1540
  const tokenizer::ImageGrid edge = target_grid(1541, 1541, real());
  EXPECT_EQ(edge.resized_width_px, 1540);
  EXPECT_EQ(edge.resized_height_px, 1540);
  // tiny images still become one 28 px cell; an elongated one keeps at least one row
  EXPECT_EQ(target_grid(4, 4, real()).resized_width_px, 28);
  const tokenizer::ImageGrid thin = target_grid(10000, 3, real());
  EXPECT_EQ(thin.resized_width_px, 1540);
  EXPECT_EQ(thin.resized_height_px, 28);
}

TEST(Preprocess, TokenLayout) {
  const io::VisionConfig c = real();
  const std::vector<int32_t> ids = image_token_ids({.n_cols = 3, .n_rows = 2, .resized_width_px = 84, .resized_height_px = 56}, c);
  EXPECT_EQ(ids, (std::vector<int32_t>{10, 10, 10, 12, 10, 10, 10, 13}));
  EXPECT_EQ(image_token_ids({.n_cols = 1, .n_rows = 1, .resized_width_px = 28, .resized_height_px = 28}, c),
            (std::vector<int32_t>{10, 13}));
}

TEST(Preprocess, ResampleInvariants) {
  RgbImage flat{.width = 37, .height = 23, .rgb = std::vector<uint8_t>(37 * 23 * 3, 0)};
  for (size_t i = 0; i < flat.rgb.size(); ++i) flat.rgb[i] = static_cast<uint8_t>(i % 3 == 0 ? 200 : i % 3 == 1 ? 17 : 99);
  for (auto [w, h] : {std::pair<int64_t, int64_t>{28, 28}, {112, 56}, {5, 90}, {37, 23}}) {
    const RgbImage out = resize_bicubic(flat, w, h);  // a constant image stays constant, up or down
    ASSERT_EQ(out.rgb.size(), static_cast<size_t>(w * h * 3));
    for (size_t i = 0; i < out.rgb.size(); ++i) ASSERT_EQ(out.rgb[i], flat.rgb[i % 3]) << w << "x" << h << " at " << i;
  }
  RgbImage ramp = flat;
  for (size_t i = 0; i < ramp.rgb.size(); ++i) ramp.rgb[i] = static_cast<uint8_t>(i * 7);
  EXPECT_EQ(resize_bicubic(ramp, 37, 23).rgb, ramp.rgb);  // same size: untouched
}

TEST(Preprocess, NormalizeUsesClipConstants) {
  const RgbImage px{.width = 1, .height = 1, .rgb = {0, 255, 128}};
  const PixelValues p = normalize(px);
  EXPECT_FLOAT_EQ(p.chw[0], (0.0f - 0.48145466f) / 0.26862954f);
  EXPECT_FLOAT_EQ(p.chw[1], (1.0f - 0.4578275f) / 0.26130258f);
  EXPECT_FLOAT_EQ(p.chw[2], (128.0f / 255.0f - 0.40821073f) / 0.27577711f);
}

}  // namespace
}  // namespace quatre::vision::test
