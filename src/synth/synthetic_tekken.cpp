// Synthetic tekken.json: special table, byte tokens, English-piece merges, filler.
#include "synth/synthetic_tekken.h"

#include <algorithm>
#include <array>
#include <set>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace quatre::synth {
namespace {

// PROTOCOL.md §1.3 (ids not listed are <SPECIAL_id>).
constexpr std::array<std::pair<int, std::string_view>, 26> kSpecials = {{
    {0, "<unk>"}, {1, "<s>"}, {2, "</s>"}, {3, "[INST]"}, {4, "[/INST]"}, {5, "[AVAILABLE_TOOLS]"},
    {6, "[/AVAILABLE_TOOLS]"}, {7, "[TOOL_RESULTS]"}, {8, "[/TOOL_RESULTS]"}, {9, "[TOOL_CALLS]"}, {10, "[IMG]"},
    {11, "<pad>"}, {12, "[IMG_BREAK]"}, {13, "[IMG_END]"}, {14, "[PREFIX]"}, {15, "[MIDDLE]"}, {16, "[SUFFIX]"},
    {17, "[SYSTEM_PROMPT]"}, {18, "[/SYSTEM_PROMPT]"}, {19, "[TOOL_CONTENT]"}, {32, "[ARGS]"}, {33, "[CALL_ID]"},
    {34, "[THINK]"}, {35, "[/THINK]"}, {36, "[MODEL_SETTINGS]"}, {37, "[/MODEL_SETTINGS]"},
}};

// The same pre-tokenization pattern as every recent tekken file (PROTOCOL.md §1.4).
constexpr std::string_view kPattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Common English words and pieces; their prefixes become merges so BPE can reach every one of them.
constexpr std::string_view kWords[] = {
    "the", "and", "of", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with", "as", "be", "at", "this",
    "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can",
    "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other", "about",
    "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has",
    "look", "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first",
    "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made",
    "may", "part", "hello", "world", "model", "token", "you", "I", "The", "ing", "ed", "er", "ly", "tion", "ment",
};

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], kAlphabet[v & 63]};
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], '='};
  }
  return out;
}

// Ranks 256.. : prefixes of the words (with and without a leading space), then printable-ASCII pairs and
// triples as deterministic filler, until `count` entries.
std::vector<std::string> merged_tokens(size_t count) {
  std::vector<std::string> tokens;
  std::set<std::string> seen;
  auto add = [&](const std::string& t) {
    if (tokens.size() < count && t.size() >= 2 && seen.insert(t).second) tokens.push_back(t);
  };
  for (std::string_view word : kWords) {
    std::string spaced(" ");  // not " " + std::string(word): GCC 12 at -O3 warns of a false memcpy overlap there
    spaced += word;
    for (const std::string& w : {spaced, std::string(word)}) {
      for (size_t n = 2; n <= w.size(); ++n) add(w.substr(0, n));
    }
  }
  for (char a = ' '; a <= '~' && tokens.size() < count; ++a) {
    for (char b = ' '; b <= '~'; ++b) add(std::string{a, b});
  }
  for (char a = ' '; a <= '~' && tokens.size() < count; ++a) {
    for (char b = ' '; b <= '~' && tokens.size() < count; ++b) {
      for (char c = ' '; c <= '~'; ++c) add(std::string{a, b, c});
    }
  }
  if (tokens.size() < count) throw InvalidRequest(fmt::format("synthetic tekken: cannot make {} merged tokens", count));
  return tokens;
}

}  // namespace

std::string special_token_name(int id) {
  for (const auto& [special_id, name] : kSpecials) {
    if (special_id == id) return std::string(name);
  }
  return fmt::format("<SPECIAL_{}>", id);
}

std::string synthetic_tekken_json(int64_t vocab_size) {
  const int64_t n_ranks = vocab_size - kNumSpecialTokens;
  if (n_ranks < 256) {
    throw InvalidRequest(fmt::format("a tekken vocabulary needs at least {} ids (1000 specials + 256 bytes), got {}",
                                     kNumSpecialTokens + 256, vocab_size));
  }
  nlohmann::ordered_json vocab = nlohmann::ordered_json::array();
  auto add = [&](const std::string& bytes) {
    const bool printable = std::all_of(bytes.begin(), bytes.end(), [](char c) { return c >= ' ' && c <= '~'; });
    vocab.push_back({{"rank", vocab.size()}, {"token_bytes", base64(bytes)}, {"token_str", printable ? nlohmann::ordered_json(bytes) : nullptr}});
  };
  for (int b = 0; b < 256; ++b) add(std::string(1, static_cast<char>(b)));
  for (const std::string& t : merged_tokens(static_cast<size_t>(n_ranks - 256))) add(t);

  nlohmann::ordered_json specials = nlohmann::ordered_json::array();
  for (int id = 0; id < kNumSpecialTokens; ++id) {
    const std::string name = special_token_name(id);
    specials.push_back({{"rank", id}, {"token_str", name}, {"is_control", true}});
  }
  nlohmann::ordered_json tekken = {
      {"config",
       {{"pattern", kPattern},
        {"num_vocab_tokens", n_ranks},
        {"default_vocab_size", vocab_size},
        {"default_num_special_tokens", kNumSpecialTokens},
        {"version", "v15"}}},
      {"vocab", vocab},
      {"special_tokens", specials},
      {"image", {{"image_patch_size", 14}, {"max_image_size", 1540}, {"spatial_merge_size", 2}}},
      {"model_settings_builder",
       {{"reasoning_effort", {{"type", "enum"}, {"accepts_none", true}, {"default", "none"}, {"values", {"none", "high"}}}}}},
  };
  return tekken.dump();
}

}  // namespace quatre::synth
