// encode_prompt_images: decode -> preprocess -> VisionModel, for `quatre run --image`.
#include "cli/run_images.h"

#include <fmt/format.h>

#include "core/error.h"
#include "vision/decode.h"
#include "vision/preprocess.h"
#include "vision/vision_model.h"

namespace quatre::cli {

PromptImages encode_prompt_images(const std::vector<std::string>& paths, const io::Checkpoint& checkpoint) {
  PromptImages out;
  if (paths.empty()) return out;
  const auto& vc = checkpoint.config().vision;
  if (!vc) throw InvalidRequest(fmt::format("--image: the model at {} has no vision tower", checkpoint.dir().string()));
  std::vector<vision::PixelValues> pixels;
  for (const std::string& path : paths) {
    const vision::RgbImage image = vision::decode_file(path);
    const tokenizer::ImageGrid grid = vision::target_grid(image.width, image.height, *vc);
    pixels.push_back(vision::preprocess(image, *vc));
    out.chunks.push_back({.source = path, .size = tokenizer::ImageSize{.width = grid.resized_width_px, .height = grid.resized_height_px}});
    out.token_ids.push_back(vision::image_token_ids(grid, *vc));
  }
  const vision::VisionModel model(*vc, vision::VisionWeights::load(checkpoint));
  out.features = model.image_features(pixels);
  return out;
}

}  // namespace quatre::cli
