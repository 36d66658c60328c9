// The v15 prompt grammar (PROTOCOL §2.6), tools JSON (§2.8), model settings (§2.9) and image token grids
// (§2.10). Depends on the tokenizer's own headers only.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "tokenizer/chat_normalize.h"
#include "tokenizer/chat_render.h"

namespace quatre::tokenizer {

RenderConfig RenderConfig::from_tekken(const Tekken& tekken) {
  return RenderConfig{.image = tekken.image_config(), .model_settings = tekken.model_settings()};
}

ImageGrid image_grid(ImageSize size, const ImageConfig& config) {
  const int cell = config.image_patch_size * config.spatial_merge_size;  // 28 px per [IMG] for Small 4
  double w = size.width, h = size.height;
  const double ratio = std::max(h / config.max_image_size, w / config.max_image_size);
  if (ratio > 1) {
    // Python's round(): half to even, on the exact double (the default FE_TONEAREST mode of nearbyint).
    w = std::nearbyint(w / ratio);
    h = std::nearbyint(h / ratio);
  }
  const int n_cols = (static_cast<int>(w) - 1) / cell + 1;
  const int n_rows = (static_cast<int>(h) - 1) / cell + 1;
  return ImageGrid{.n_cols = n_cols, .n_rows = n_rows, .resized_width_px = n_cols * cell,
                   .resized_height_px = n_rows * cell};
}

std::optional<std::string> build_settings_json(const std::optional<std::string>& reasoning_effort,
                                               const std::vector<ModelSettingSpec>& builder) {
  JsonValue settings = JsonValue::object();
  for (const ModelSettingSpec& spec : builder) {
    // Only reasoning_effort has a request field; builder entries for other settings (a newer file's
    // json_schema) are not rendered for Small 4 (§2.9).
    if (spec.name != "reasoning_effort") continue;
    std::optional<std::string> value = reasoning_effort;
    if (!value) {
      if (!spec.accepts_none) throw InvalidRequest(fmt::format("{} should be set for this model.", spec.name));
      value = spec.default_value;
      if (!value) continue;  // stays unset
    }
    if (spec.values.empty()) throw InvalidRequest(fmt::format("{} not supported for this model.", spec.name));
    if (std::find(spec.values.begin(), spec.values.end(), *value) == spec.values.end()) {
      std::vector<std::string> quoted;
      for (const std::string& v : spec.values) quoted.push_back("'" + v + "'");
      throw InvalidRequest(fmt::format("{} should be one of [{}], got {}.", spec.name, fmt::join(quoted, ", "), *value));
    }
    settings.set(spec.name, JsonValue::string(*value));
  }
  if (settings.as_object().empty()) return std::nullopt;
  return dump_json(settings, {.sort_keys = true});
}

std::string tools_json(const std::vector<Tool>& tools) {
  JsonValue list = JsonValue::array();
  for (const Tool& tool : tools) {
    JsonValue function = JsonValue::object({{"name", JsonValue::string(tool.name)},
                                            {"description", JsonValue::string(tool.description)},
                                            {"parameters", tool.parameters}});
    list.as_array().push_back(
        JsonValue::object({{"type", JsonValue::string("function")}, {"function", std::move(function)}}));
  }
  return dump_json(list);
}

namespace {

class LayoutBuilder {
 public:
  explicit LayoutBuilder(const RenderConfig& config) : config_(config) {}

  void special(std::string_view name) { layout_.pieces.push_back({PromptPiece::Kind::kSpecial, std::string(name)}); }
  void text(std::string_view s) {
    if (!s.empty()) layout_.pieces.push_back({PromptPiece::Kind::kText, std::string(s)});
  }

  // [IMG]*cols [IMG_BREAK] per row, the very last token replaced by [IMG_END].
  void image(const ImageChunk& chunk) {
    require_size(chunk);
    const ImageGrid grid = image_grid(*chunk.size, *config_.image);
    for (int r = 0; r < grid.n_rows; ++r) {
      for (int c = 0; c < grid.n_cols; ++c) special("[IMG]");
      special(r + 1 == grid.n_rows ? "[IMG_END]" : "[IMG_BREAK]");
    }
    layout_.images.push_back(PromptImage{.source = chunk.source, .size = *chunk.size, .grid = grid});
  }

  void chunk(const Chunk& c) {
    if (const auto* t = std::get_if<TextChunk>(&c)) {
      text(t->text);
    } else if (const auto* img = std::get_if<ImageChunk>(&c)) {
      image(*img);
    } else {
      const auto& think = std::get<ThinkChunk>(c);
      special("[THINK]");
      text(think.thinking);
      if (think.closed) special("[/THINK]");
    }
  }

  void chunks(const std::vector<Chunk>& cs) {
    for (const Chunk& c : cs) chunk(c);
  }

  void content(const Content& c) {
    if (const auto* s = std::get_if<std::string>(&c)) {
      text(*s);
    } else {
      chunks(std::get<std::vector<Chunk>>(c));
    }
  }

  PromptLayout take() { return std::move(layout_); }

 private:
  static void require_size(const ImageChunk& chunk) {
    if (!chunk.size) throw InvalidRequest(fmt::format("image '{:.40}' has no known size", chunk.source));
  }

  const RenderConfig& config_;
  PromptLayout layout_;
};

// User content: when the chunks are [text..., image] (>= 2 chunks, the last an image, all others text), the
// image moves to the front (§2.6).
std::vector<Chunk> user_chunk_order(const std::vector<Chunk>& cs) {
  if (cs.size() < 2 || !std::holds_alternative<ImageChunk>(cs.back())) return cs;
  for (size_t i = 0; i + 1 < cs.size(); ++i) {
    if (!std::holds_alternative<TextChunk>(cs[i])) return cs;
  }
  std::vector<Chunk> out{cs.back()};
  out.insert(out.end(), cs.begin(), cs.end() - 1);
  return out;
}

// Python's str.rstrip(" "): only U+0020.
std::string_view rstrip_spaces(std::string_view s) {
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// Fills in every image's size (before normalization, so errors name the client's message and chunk).
std::vector<Message> with_image_sizes(const std::vector<Message>& messages, const RenderConfig& config,
                                      const ImageSizeResolver& resolve_size) {
  std::vector<Message> out = messages;
  for (size_t i = 0; i < out.size(); ++i) {
    auto* cs = std::get_if<std::vector<Chunk>>(&out[i].content);
    if (cs == nullptr) continue;
    for (size_t j = 0; j < cs->size(); ++j) {
      auto* img = std::get_if<ImageChunk>(&(*cs)[j]);
      if (img == nullptr) continue;
      const std::string what = fmt::format("messages[{}].content[{}]", i, j);
      if (!config.image) throw InvalidRequest(what + ": this model does not accept images");
      img->size = resolve_size(*img, what);
    }
  }
  return out;
}

}  // namespace

PromptLayout layout_chat(const ChatRequest& request, const RenderConfig& config, const ImageSizeResolver& resolve_size) {
  const std::optional<std::string> settings = build_settings_json(request.reasoning_effort, config.model_settings);
  const std::vector<Message> messages = normalize_messages(with_image_sizes(request.messages, config, resolve_size));
  const auto first_user = std::find_if(messages.begin(), messages.end(),
                                       [](const Message& m) { return m.role == Role::kUser; });

  LayoutBuilder out(config);
  out.special("<s>");
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    const bool is_last = i + 1 == messages.size();
    switch (m.role) {
      case Role::kSystem:
        out.special("[SYSTEM_PROMPT]");
        out.content(m.content);
        out.special("[/SYSTEM_PROMPT]");
        break;
      case Role::kUser:
        if (messages.begin() + static_cast<std::ptrdiff_t>(i) == first_user) {
          if (!request.tools.empty()) {
            out.special("[AVAILABLE_TOOLS]");
            out.text(tools_json(request.tools));
            out.special("[/AVAILABLE_TOOLS]");
          }
          if (settings) {
            out.special("[MODEL_SETTINGS]");
            out.text(*settings);
            out.special("[/MODEL_SETTINGS]");
          }
        }
        out.special("[INST]");
        if (const auto* cs = std::get_if<std::vector<Chunk>>(&m.content)) {
          out.chunks(user_chunk_order(*cs));
        } else {
          out.content(m.content);
        }
        out.special("[/INST]");
        break;
      case Role::kAssistant:
        if (const auto* s = std::get_if<std::string>(&m.content)) {
          out.text(rstrip_spaces(*s));
        } else {
          out.content(m.content);
        }
        for (const ToolCall& call : m.tool_calls) {
          out.special("[TOOL_CALLS]");
          out.text(call.name);
          out.special("[ARGS]");
          out.text(call.arguments);
        }
        if (!(is_last && (m.prefix || request.continue_final_message))) out.special("</s>");
        break;
      case Role::kTool:
        out.special("[TOOL_RESULTS]");
        out.content(m.content);
        out.special("[/TOOL_RESULTS]");
        break;
    }
  }
  return out.take();
}

std::string layout_text(const PromptLayout& layout) {
  std::string s;
  for (const PromptPiece& p : layout.pieces) s += p.text;
  return s;
}

RenderedPrompt encode_layout(const PromptLayout& layout, const Tekken& tekken) {
  RenderedPrompt out;
  for (const PromptPiece& p : layout.pieces) {
    if (p.kind == PromptPiece::Kind::kSpecial) {
      out.ids.push_back(tekken.require_special(p.text));
    } else {
      tekken.encode_into(p.text, out.ids);
    }
  }
  out.text = layout_text(layout);
  out.images = layout.images;
  return out;
}

RenderedPrompt render_chat(const ChatRequest& request, const Tekken& tekken, const ImageSizeResolver& resolve_size) {
  return encode_layout(layout_chat(request, RenderConfig::from_tekken(tekken), resolve_size), tekken);
}

}  // namespace quatre::tokenizer
