// `quatre run --image PATH`: the images of a prompt decoded, preprocessed and encoded by the checkpoint's vision
// tower, as the chat chunks the renderer lays out and the features spliced at their [IMG] tokens. Wiring only.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/checkpoint.h"
#include "tokenizer/chat_request.h"
#include "vision/vision_model.h"

namespace quatre::cli {

struct PromptImages {
  // One per image, in order; `size` is the preprocessed size (a multiple of 28 px within the model's maximum), so
  // the renderer lays out exactly the grid the encoder produces features for.
  std::vector<tokenizer::ImageChunk> chunks;
  std::vector<std::vector<int32_t>> token_ids;  // the [IMG]/[IMG_BREAK]/[IMG_END] layout of each image (raw prompts)
  std::vector<float> features;                  // [Σ [IMG] tokens, D]
};

// The checkpoint's vision tower with its weights dequantised once; null for a checkpoint without one.
std::unique_ptr<vision::VisionModel> load_vision_model(const io::Checkpoint& checkpoint);

// Throws InvalidRequest naming `option` for a model without a vision tower (`model` null) or an image file that
// cannot be read or decoded.
PromptImages encode_prompt_images(const std::vector<std::string>& paths, const vision::VisionModel* model, std::string_view option);
// The same, loading the checkpoint's tower (`quatre run --image`).
PromptImages encode_prompt_images(const std::vector<std::string>& paths, const io::Checkpoint& checkpoint);

}  // namespace quatre::cli
