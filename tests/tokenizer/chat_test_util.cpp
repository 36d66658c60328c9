// The synthetic byte-level Tekken of the chat tests (see chat_test_util.h).
#include "chat_test_util.h"

#include <fmt/format.h>

namespace quatre::tokenizer::chat_testing {

const std::vector<std::pair<int, std::string>>& special_names() {
  static const std::vector<std::pair<int, std::string>> names = {
      {0, "<unk>"}, {1, "<s>"}, {2, "</s>"}, {3, "[INST]"}, {4, "[/INST]"}, {5, "[AVAILABLE_TOOLS]"},
      {6, "[/AVAILABLE_TOOLS]"}, {7, "[TOOL_RESULTS]"}, {8, "[/TOOL_RESULTS]"}, {9, "[TOOL_CALLS]"}, {10, "[IMG]"},
      {11, "<pad>"}, {12, "[IMG_BREAK]"}, {13, "[IMG_END]"}, {14, "[PREFIX]"}, {15, "[MIDDLE]"}, {16, "[SUFFIX]"},
      {17, "[SYSTEM_PROMPT]"}, {18, "[/SYSTEM_PROMPT]"}, {19, "[TOOL_CONTENT]"}, {32, "[ARGS]"}, {33, "[CALL_ID]"},
      {34, "[THINK]"}, {35, "[/THINK]"}, {36, "[MODEL_SETTINGS]"}, {37, "[/MODEL_SETTINGS]"}};
  return names;
}

namespace {

std::string synthetic_tekken_json() {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    const std::string token_bytes = {kB64[b >> 2], kB64[(b & 3) << 4], '=', '='};  // base64 of one byte
    vocab += fmt::format("{}{{\"rank\": {}, \"token_bytes\": \"{}\", \"token_str\": null}}", b ? ", " : "", b,
                         token_bytes);
  }
  std::string specials;
  for (const auto& [id, name] : special_names()) {
    specials += fmt::format("{}{{\"rank\": {}, \"token_str\": \"{}\", \"is_control\": true}}",
                            specials.empty() ? "" : ", ", id, name);
  }
  // PROTOCOL §1.4, JSON-escaped.
  const std::string pattern =
      R"([^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|)"
      R"([^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|)"
      R"(\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+)";
  return fmt::format(
      R"({{"config": {{"pattern": "{}", "num_vocab_tokens": 256, "default_vocab_size": {}, )"
      R"("default_num_special_tokens": {}, "version": "v15"}}, "vocab": [{}], "special_tokens": [{}], )"
      R"("image": {{"image_patch_size": 14, "max_image_size": 1540, "spatial_merge_size": 2}}, )"
      R"("model_settings_builder": {{"reasoning_effort": {{"type": "enum", "accepts_none": true, "default": "none", )"
      R"("values": ["none", "high"]}}}}}})",
      pattern, kSyntheticSpecials + 256, kSyntheticSpecials, vocab, specials);
}

}  // namespace

const Tekken& synthetic_tekken() {
  static const Tekken t = Tekken::from_json(synthetic_tekken_json(), "synthetic chat tekken");
  return t;
}

std::vector<TokenId> synthetic_ids(std::string_view text_form) {
  std::vector<TokenId> ids;
  size_t i = 0;
  while (i < text_form.size()) {
    bool matched = false;
    for (const auto& [id, name] : special_names()) {
      if (text_form.substr(i).starts_with(name)) {
        ids.push_back(id);
        i += name.size();
        matched = true;
        break;
      }
    }
    if (!matched) ids.push_back(kSyntheticSpecials + static_cast<unsigned char>(text_form[i++]));
  }
  return ids;
}

}  // namespace quatre::tokenizer::chat_testing
