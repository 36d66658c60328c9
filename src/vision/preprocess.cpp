// Pixtral preprocessing: target size, resize, normalise; the token layout.
#include "vision/preprocess.h"

#include <array>

#include "vision/resample.h"

namespace quatre::vision {
namespace {

constexpr std::array<float, 3> kMean{0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> kStd{0.26862954f, 0.26130258f, 0.27577711f};

}  // namespace

tokenizer::ImageConfig image_config(const io::VisionConfig& c) {
  return {.image_patch_size = static_cast<int>(c.patch_size), .max_image_size = static_cast<int>(c.image_size),
          .spatial_merge_size = static_cast<int>(c.spatial_merge_size)};
}

tokenizer::ImageGrid target_grid(int64_t width, int64_t height, const io::VisionConfig& config) {
  return tokenizer::image_grid({.width = static_cast<int>(width), .height = static_cast<int>(height)}, image_config(config));
}

PixelValues normalize(const RgbImage& img) {
  PixelValues p{.height = img.height, .width = img.width, .chw = std::vector<float>(static_cast<size_t>(3 * img.height * img.width))};
  const float inv255 = 1.0f / 255.0f;
  const int64_t hw = img.height * img.width;
  for (int64_t i = 0; i < hw; ++i) {
    for (int c = 0; c < 3; ++c) {
      const float x = static_cast<float>(img.rgb[static_cast<size_t>(i * 3 + c)]) * inv255;
      p.chw[static_cast<size_t>(c * hw + i)] = (x - kMean[static_cast<size_t>(c)]) / kStd[static_cast<size_t>(c)];
    }
  }
  return p;
}

PixelValues preprocess(const RgbImage& image, const io::VisionConfig& config) {
  const tokenizer::ImageGrid g = target_grid(image.width, image.height, config);
  return normalize(resize_bicubic(image, g.resized_width_px, g.resized_height_px));
}

std::vector<int32_t> image_token_ids(const tokenizer::ImageGrid& grid, const io::VisionConfig& config) {
  std::vector<int32_t> ids;
  for (int r = 0; r < grid.n_rows; ++r) {
    ids.insert(ids.end(), static_cast<size_t>(grid.n_cols), static_cast<int32_t>(config.image_token_id));
    ids.push_back(static_cast<int32_t>(config.image_break_token_id));
  }
  ids.back() = static_cast<int32_t>(config.image_end_token_id);
  return ids;
}

}  // namespace quatre::vision
