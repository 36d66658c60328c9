// Exactness against Python tiktoken, the engine mistral-common runs: goldens made by
// tools/reference/tiktoken_goldens.py from the same tekken.json and corpus, stored gzipped in
// tests/data/tokenizer/tiktoken_goldens.txt.gz. Skips, saying how to make them, when the file is absent.
#include <gtest/gtest.h>
#include <zlib.h>

#include <fmt/format.h>

#include <sstream>
#include <string>
#include <vector>

#include "tekken_test_util.h"

namespace quatre::tokenizer {
namespace {

using Ids = std::vector<TokenId>;

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

// Goldens from Python tiktoken (the engine mistral-common uses), built by tools/reference/tiktoken_goldens.py
// from the same tekken.json and corpus. Header: "# tiktoken_goldens v1 corpus_fnv1a64=<hex> lines=<n> ...".
TEST(TekkenReference, MatchesTiktokenGoldens) {
  const auto golden_path = std::filesystem::path(QUATRE_SOURCE_DIR) / "tests/data/tokenizer/tiktoken_goldens.txt.gz";
  if (!std::filesystem::exists(golden_path)) {
    GTEST_SKIP() << golden_path << " is absent; produce it on a host with Python tiktoken: "
                 << "python3 tools/reference/tiktoken_goldens.py --help";
  }
  REAL_TEKKEN_OR_SKIP();
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
  const std::string digest = fmt::format("corpus_fnv1a64={:016x}", fnv1a64(testing::read_file(corpus_path)));
  ASSERT_NE(header.find(digest), std::string::npos)
      << "the goldens were made from another corpus (header: " << header << ", this corpus: " << digest
      << "); regenerate them with tools/reference/tiktoken_goldens.py";
  std::vector<Ids> golden;
  for (std::string line; std::getline(lines, line);) golden.push_back(parse_ids(line));
  const auto corpus = testing::read_corpus(corpus_path);
  testing::expect_same_ids(tekken, corpus, golden, "tiktoken", "");
}

}  // namespace
}  // namespace quatre::tokenizer
