// Renders a chat request into the v15 prompt (PROTOCOL §2.6, §2.8-2.11): first a layout of pieces (special
// tokens by name, text to encode, image token grids), then token ids through Tekken::encode per piece.
// Depends on the tokenizer's own headers only (no weights, no devices).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_request.h"
#include "tokenizer/image_size.h"
#include "tokenizer/tekken.h"

namespace quatre::tokenizer {

// What rendering needs from the tokenizer file besides the vocabulary.
struct RenderConfig {
  std::optional<ImageConfig> image;             // absent: the model takes no images
  std::vector<ModelSettingSpec> model_settings;  // "model_settings_builder"
  static RenderConfig from_tekken(const Tekken& tekken);
};

struct PromptPiece {
  enum class Kind { kSpecial, kText };
  Kind kind = Kind::kText;
  std::string text;  // the special token's name ("[INST]"), or text to encode
  bool operator==(const PromptPiece&) const = default;
};

// §2.10: the [IMG] grid of one image, and the size its pixels are resized to for the vision encoder.
struct ImageGrid {
  int n_cols = 0;  // [IMG] tokens per row
  int n_rows = 0;
  int resized_width_px = 0;  // n_cols * patch * merge
  int resized_height_px = 0;
  bool operator==(const ImageGrid&) const = default;
};
ImageGrid image_grid(ImageSize size, const ImageConfig& config);

struct PromptImage {
  std::string source;  // as the client sent it
  ImageSize size;
  ImageGrid grid;
};

struct PromptLayout {
  std::vector<PromptPiece> pieces;
  std::vector<PromptImage> images;  // in prompt order
};

struct RenderedPrompt {
  std::vector<TokenId> ids;
  std::string text;  // debugging form: special tokens by name, text as is ("<s>[INST]hi[/INST]")
  std::vector<PromptImage> images;
};

// §2.9: the [MODEL_SETTINGS] JSON (keys sorted) for the request's reasoning_effort, or nullopt when no field is
// set. Throws InvalidRequest with upstream's messages ("reasoning_effort should be one of ['none', 'high'],
// got low.").
std::optional<std::string> build_settings_json(const std::optional<std::string>& reasoning_effort,
                                               const std::vector<ModelSettingSpec>& builder);

// §2.8: the [AVAILABLE_TOOLS] JSON.
std::string tools_json(const std::vector<Tool>& tools);

// Validates nothing: the request comes from parse_chat_request or was validated by the caller.
// Normalizes (§2.5), builds settings (§2.9), lays out every message (§2.6), sizes images (§2.10).
PromptLayout layout_chat(const ChatRequest& request, const RenderConfig& config,
                         const ImageSizeResolver& resolve_size = image_size_of_chunk);

// Special pieces by name, text pieces as they are.
std::string layout_text(const PromptLayout& layout);

// Ids of a layout: specials looked up by name (LoadError when the file lacks one), each text piece encoded
// on its own.
RenderedPrompt encode_layout(const PromptLayout& layout, const Tekken& tekken);

// layout_chat + encode_layout.
RenderedPrompt render_chat(const ChatRequest& request, const Tekken& tekken,
                           const ImageSizeResolver& resolve_size = image_size_of_chunk);

}  // namespace quatre::tokenizer
