// libFuzzer target: tekken.json text through Tekken::from_json; a file it accepts must encode and decode, and
// round-trip text when its pattern is the Tekken one. LoadError is the expected refusal; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/error.h"
#include "tokenizer/tekken.h"

namespace {

// PROTOCOL §1.4: the pattern of every real file, which matches every character.
constexpr std::string_view kTekkenPattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

bool has_tekken_pattern(std::string_view json_text) {
  const nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("config") || !doc["config"].is_object()) return false;
  const nlohmann::json& config = doc["config"];
  return config.contains("pattern") && config["pattern"].is_string() &&
         config["pattern"].get<std::string>() == kTekkenPattern;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace quatre;
  using tokenizer::Tekken;
  const std::string_view json_text(reinterpret_cast<const char*>(data), size);
  try {
    const Tekken tekken = Tekken::from_json(json_text, "fuzz tekken.json");
    const std::string_view text = "Hello, wörld! 123 [INST] \xf0\x9f\x98\x80\n\t";
    const std::vector<tokenizer::TokenId> ids = tekken.encode(text);
    for (tokenizer::TokenId id : ids) CHECK(id >= tekken.n_special() && id < tekken.vocab_size()) << id;
    // Every accepted vocabulary holds the 256 bytes, so the pieces decode back. Text that the file's pattern
    // does not match is skipped (as tiktoken's find_iter does), so only the Tekken pattern promises the round trip.
    const std::string decoded = tekken.decode(ids);
    CHECK(decoded.size() <= text.size()) << decoded;
    if (has_tekken_pattern(json_text)) CHECK(decoded == text) << decoded;
    for (tokenizer::TokenId id = 0; id < std::min(tekken.vocab_size(), 1100); ++id) (void)tekken.id_to_piece(id);
  } catch (const LoadError&) {
  }
  return 0;
}
