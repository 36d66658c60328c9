// `quatre run --image PATH` and `quatre chat`'s /image: the images of a prompt decoded, preprocessed and encoded by
// the checkpoint's vision tower, as the chat chunks the renderer lays out and the features spliced at their [IMG]
// tokens; for the chat, each image once, when attached. Wiring only.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/checkpoint.h"
#include "model/text_model.h"
#include "tokenizer/chat_render.h"
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

// The tower's options that follow the text model's: --attention-operands (bf16 on CUDA by default).
vision::VisionOptions vision_options(const model::TextModelOptions& text);

// The checkpoint's vision tower on a backend of its own on `device` (the text model's: its features are spliced
// there); null for a checkpoint without one. The checkpoint must outlive it.
std::unique_ptr<vision::VisionModel> load_vision_model(const io::Checkpoint& checkpoint, Device device,
                                                       vision::VisionOptions options);

// Throws InvalidRequest naming `option` for a model without a vision tower (`model` null) or an image file that
// cannot be read or decoded.
PromptImages encode_prompt_images(const std::vector<std::string>& paths, const vision::VisionModel* model, std::string_view option);
// The same, loading the checkpoint's tower on `device` (`quatre run --image`).
PromptImages encode_prompt_images(const std::vector<std::string>& paths, const io::Checkpoint& checkpoint, Device device,
                                  vision::VisionOptions options);

// The images of a chat, encoded once each (by path) when attached and reused by every later turn's prompt. The
// tower is loaded on the first image.
class ChatImages {
 public:
  // can_splice: the backend's can_set_rows() (false: every image is refused with that reason); the tower runs on
  // `device` with `options`.
  ChatImages(const io::Checkpoint& checkpoint, bool can_splice, Device device, vision::VisionOptions options)
      : checkpoint_(checkpoint), can_splice_(can_splice), device_(device), options_(options) {}
  bool takes_images() const { return checkpoint_.config().vision.has_value(); }
  // Decodes and encodes the file (unless done before); "resized to WxH px: CxR [IMG] tokens". InvalidRequest naming
  // the file when it cannot be read or decoded, or when the model has no tower.
  std::string attach(const std::string& path);
  // The preprocessed size of an attached image (the renderer's ImageSizeResolver); InvalidRequest if not attached.
  tokenizer::ImageSize size(const std::string& path) const;
  // The features of a rendered prompt's images, in its order: [Σ [IMG] tokens, D].
  std::vector<float> features(const std::vector<tokenizer::PromptImage>& images) const;
  int32_t image_token_id() const;

 private:
  struct Encoded {
    tokenizer::ImageSize size;
    std::vector<float> features;
  };
  const io::Checkpoint& checkpoint_;
  bool can_splice_;
  Device device_;
  vision::VisionOptions options_;
  std::unique_ptr<vision::VisionModel> model_;
  std::unordered_map<std::string, Encoded> encoded_;
};

}  // namespace quatre::cli
