// encode_prompt_images: decode -> preprocess -> VisionModel, for `quatre run --image`.
#include "cli/run_images.h"

#include <fmt/format.h>

#include "core/error.h"
#include "vision/decode.h"
#include "vision/preprocess.h"
#include "vision/vision_model.h"

namespace quatre::cli {

vision::VisionOptions vision_options(const model::TextModelOptions& text) {
  return {.bf16_attention_operands = text.attention_operands == model::AttentionOperands::kBf16};
}

std::unique_ptr<vision::VisionModel> load_vision_model(const io::Checkpoint& checkpoint, Device device,
                                                       vision::VisionOptions options) {
  if (!checkpoint.config().vision) return nullptr;
  return std::make_unique<vision::VisionModel>(checkpoint, make_backend(device), options);
}

PromptImages encode_prompt_images(const std::vector<std::string>& paths, const vision::VisionModel* model, std::string_view option) {
  PromptImages out;
  if (paths.empty()) return out;
  if (model == nullptr) throw InvalidRequest(fmt::format("{}: this model has no vision tower: it does not take images", option));
  const io::VisionConfig& vc = model->config();
  std::vector<vision::PixelValues> pixels;
  for (const std::string& path : paths) {
    vision::RgbImage image;
    try {
      image = vision::decode_file(path);
    } catch (const InvalidRequest& e) {
      if (option.empty()) throw;
      throw InvalidRequest(fmt::format("{}: {}", option, e.what()));
    }
    const tokenizer::ImageGrid grid = vision::target_grid(image.width, image.height, vc);
    pixels.push_back(vision::preprocess(image, vc));
    out.chunks.push_back({.source = path, .size = tokenizer::ImageSize{.width = grid.resized_width_px, .height = grid.resized_height_px}});
    out.token_ids.push_back(vision::image_token_ids(grid, vc));
  }
  out.features = model->image_features(pixels);
  return out;
}

PromptImages encode_prompt_images(const std::vector<std::string>& paths, const io::Checkpoint& checkpoint, Device device,
                                  vision::VisionOptions options) {
  if (paths.empty()) return {};
  if (!checkpoint.config().vision) throw InvalidRequest(fmt::format("--image: the model at {} has no vision tower", checkpoint.dir().string()));
  const std::unique_ptr<vision::VisionModel> model = load_vision_model(checkpoint, device, options);
  return encode_prompt_images(paths, model.get(), "--image");
}

std::string ChatImages::attach(const std::string& path) {
  if (!takes_images()) throw InvalidRequest("this model has no vision tower: it does not take images");
  if (!can_splice_) throw InvalidRequest("images are not supported on this device yet (the backend cannot splice image features); use --device cpu");
  if (!model_) model_ = load_vision_model(checkpoint_, device_, options_);
  auto it = encoded_.find(path);
  if (it == encoded_.end()) {
    PromptImages im = encode_prompt_images({path}, model_.get(), "");
    it = encoded_.emplace(path, Encoded{.size = *im.chunks[0].size, .features = std::move(im.features)}).first;
  }
  const int64_t cell = model_->config().patch_size * model_->config().spatial_merge_size;
  const tokenizer::ImageSize& sz = it->second.size;
  return fmt::format("resized to {}x{} px: {}x{} [IMG] tokens", sz.width, sz.height, sz.width / cell, sz.height / cell);
}

tokenizer::ImageSize ChatImages::size(const std::string& path) const {
  const auto it = encoded_.find(path);
  if (it == encoded_.end()) throw InvalidRequest(fmt::format("{}: image not attached", path));
  return it->second.size;
}

std::vector<float> ChatImages::features(const std::vector<tokenizer::PromptImage>& images) const {
  std::vector<float> out;
  for (const tokenizer::PromptImage& image : images) {
    const auto it = encoded_.find(image.source);
    if (it == encoded_.end()) throw InvalidRequest(fmt::format("{}: image not attached", image.source));
    out.insert(out.end(), it->second.features.begin(), it->second.features.end());
  }
  return out;
}

int32_t ChatImages::image_token_id() const {
  return checkpoint_.config().vision ? static_cast<int32_t>(checkpoint_.config().vision->image_token_id) : -1;
}

}  // namespace quatre::cli
