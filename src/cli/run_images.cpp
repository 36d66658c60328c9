// encode_prompt_images: decode -> preprocess -> VisionModel, for `quatre run --image`.
#include "cli/run_images.h"

#include <fmt/format.h>

#include "core/error.h"
#include "vision/decode.h"
#include "vision/preprocess.h"
#include "vision/vision_model.h"

namespace quatre::cli {

std::unique_ptr<vision::VisionModel> load_vision_model(const io::Checkpoint& checkpoint) {
  const auto& vc = checkpoint.config().vision;
  if (!vc) return nullptr;
  return std::make_unique<vision::VisionModel>(*vc, vision::VisionWeights::load(checkpoint));
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

PromptImages encode_prompt_images(const std::vector<std::string>& paths, const io::Checkpoint& checkpoint) {
  if (paths.empty()) return {};
  if (!checkpoint.config().vision) throw InvalidRequest(fmt::format("--image: the model at {} has no vision tower", checkpoint.dir().string()));
  const std::unique_ptr<vision::VisionModel> model = load_vision_model(checkpoint);
  return encode_prompt_images(paths, model.get(), "--image");
}

}  // namespace quatre::cli
