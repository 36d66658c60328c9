// Pixtral preprocessing (MODEL.md §7.1, PROTOCOL.md §2.10): the target size of an image (mistral_common's rule,
// the one the chat renderer lays out [IMG] tokens with: round-half-even below the maximum side, then up to a
// multiple of patch * merge px), Pillow's bicubic resize to it, rescale by 1/255 and CLIP normalisation, CHW
// float32; and the token layout of an image. Depends on core, io (VisionConfig), tokenizer (image_grid).
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"
#include "tokenizer/chat_render.h"
#include "vision/image.h"

namespace quatre::vision {

struct PixelValues {
  int64_t height = 0;  // h', a multiple of patch * merge
  int64_t width = 0;   // w'
  std::vector<float> chw;  // [3, h', w']: (v / 255 - mean_c) / std_c in float32
};

tokenizer::ImageConfig image_config(const io::VisionConfig& config);
tokenizer::ImageGrid target_grid(int64_t width, int64_t height, const io::VisionConfig& config);

// (v * float32(1/255) - mean_c) / std_c, per channel, of an already resized RGB image, as CHW.
PixelValues normalize(const RgbImage& resized);
PixelValues preprocess(const RgbImage& image, const io::VisionConfig& config);

// ([IMG] * cols + [IMG_BREAK]) * rows with the last token [IMG_END] (MODEL.md §7.2).
std::vector<int32_t> image_token_ids(const tokenizer::ImageGrid& grid, const io::VisionConfig& config);

}  // namespace quatre::vision
