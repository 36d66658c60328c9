// Helpers of the tokenizer tests (see tekken_test_util.h). Test-only.
#include "tekken_test_util.h"

#include "tokenizer/utf8.h"

#include <fmt/format.h>

#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <memory>
#include <stdexcept>

namespace quatre::tokenizer::testing {

std::filesystem::path generated_data_dir() {
  return std::filesystem::path(QUATRE_BINARY_DIR) / "tests" / "tokenizer" / "data";
}

const Tekken* real_tekken() {
  static const std::unique_ptr<Tekken> tekken = []() -> std::unique_ptr<Tekken> {
    const auto path = generated_data_dir() / "tekken.json";
    if (!std::filesystem::exists(path)) return nullptr;
    return std::make_unique<Tekken>(Tekken::load(path));
  }();
  return tekken.get();
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t group = 0;
    for (size_t k = 0; k < 3; ++k) group = group << 8 | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kAlphabet[group >> (18 - 6 * k) & 63] : '=';
  }
  return out;
}

nlohmann::json synthetic_tekken_json(const std::vector<std::string>& merges, int n_special) {
  static const char* const kNames[38] = {
      "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
      "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
      "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]", nullptr, nullptr, nullptr, nullptr,
      nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, "[ARGS]", "[CALL_ID]", "[THINK]",
      "[/THINK]", "[MODEL_SETTINGS]", "[/MODEL_SETTINGS]"};
  nlohmann::json vocab = nlohmann::json::array();
  auto add = [&](const std::string& bytes) {
    const int rank = static_cast<int>(vocab.size());
    vocab.push_back({{"rank", rank}, {"token_bytes", base64_encode(bytes)}, {"token_str", nullptr}});
  };
  for (int b = 0; b < 256; ++b) add(std::string(1, static_cast<char>(b)));
  for (const std::string& m : merges) add(m);
  nlohmann::json specials = nlohmann::json::array();
  for (int id = 0; id < 38 && id < n_special; ++id) {
    if (kNames[id] != nullptr) specials.push_back({{"rank", id}, {"token_str", kNames[id]}, {"is_control", true}});
  }
  return {
      {"config",
       {{"pattern", std::string(kTekkenPattern)},
        {"num_vocab_tokens", vocab.size()},
        {"default_vocab_size", n_special + static_cast<int>(vocab.size())},
        {"default_num_special_tokens", n_special},
        {"version", "v15"}}},
      {"vocab", vocab},
      {"special_tokens", specials},
      {"image", {{"image_patch_size", 14}, {"max_image_size", 1540}, {"spatial_merge_size", 2}}},
      {"model_settings_builder",
       {{"reasoning_effort",
         {{"type", "enum"}, {"accepts_none", true}, {"default", "none"}, {"values", {"none", "high"}}}}}},
  };
}

Tekken load_synthetic(const nlohmann::json& doc) { return Tekken::from_json(doc.dump(), "synthetic.json"); }

std::vector<CorpusEntry> read_corpus(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("cannot open {}", path.string()));
  std::vector<CorpusEntry> corpus;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    CorpusEntry e;
    e.category = j.at("cat").get<std::string>();
    if (j.contains("hex")) {
      const auto& hex = j.at("hex").get_ref<const std::string&>();
      for (size_t i = 0; i + 1 < hex.size(); i += 2) e.bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
      e.is_raw_bytes = true;
    } else {
      e.bytes = j.at("text").get<std::string>();
    }
    corpus.push_back(std::move(e));
  }
  return corpus;
}

void expect_same_ids(const Tekken& tekken, const std::vector<CorpusEntry>& corpus,
                     const std::vector<std::vector<TokenId>>& want, std::string_view reference,
                     std::string_view skip_category) {
  ASSERT_EQ(want.size(), corpus.size()) << reference << " ids and corpus differ in length";
  std::map<std::string, int> n_compared;
  int n_mismatches = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    if (corpus[i].category == skip_category) continue;
    ++n_compared[corpus[i].category];
    const std::vector<TokenId> got = tekken.encode(corpus[i].bytes);
    if (got == want[i]) continue;
    if (++n_mismatches <= 10) {
      ADD_FAILURE() << reference << " mismatch at corpus line " << i + 1 << " (" << corpus[i].category << "): "
                    << escaped(corpus[i].bytes) << "\n  ours:   " << fmt::format("{}", got)
                    << "\n  theirs: " << fmt::format("{}", want[i]);
    }
  }
  int total = 0;
  for (const auto& [category, n] : n_compared) total += n;
  EXPECT_EQ(n_mismatches, 0) << "of " << total << " strings";
  EXPECT_GE(total, 10000);
  EXPECT_GE(n_compared.size(), 20u) << "corpus categories";
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot open {}", path.string()));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string escaped(std::string_view bytes) {
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const auto u = static_cast<unsigned char>(bytes[i]);
    const utf8::Unit unit = utf8::next_unit(bytes.substr(i));
    if (!unit.is_valid) {
      out += fmt::format("\\x{:02X}", u);
      ++i;
      continue;
    }
    uint32_t cp = unit.n_bytes == 1 ? u : u & (0xFF >> (unit.n_bytes + 1));
    for (uint32_t k = 1; k < unit.n_bytes; ++k) cp = cp << 6 | (static_cast<unsigned char>(bytes[i + k]) & 0x3F);
    // Controls, spaces other than U+0020 and invisible format characters are shown as escapes.
    const bool is_invisible = cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0x180E || cp == 0x1680 ||
                              (cp >= 0x2000 && cp <= 0x206F) || cp == 0x3000 || cp == 0xFEFF;
    if (cp == '\\') out += "\\\\";
    else if (cp == '\n') out += "\\n";
    else if (cp == '\r') out += "\\r";
    else if (cp == '\t') out += "\\t";
    else if (is_invisible) out += fmt::format("\\u{{{:04X}}}", cp);
    else out.append(bytes.substr(i, unit.n_bytes));
    i += unit.n_bytes;
  }
  return out;
}

}  // namespace quatre::tokenizer::testing
