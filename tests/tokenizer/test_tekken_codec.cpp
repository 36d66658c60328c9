// Tests of Tekken::encode / decode / IncrementalDecoder on a synthetic vocabulary: PROTOCOL §1.5 merging, special
// look-alikes, invalid UTF-8, §1.6 policies and replacement, the streaming decoder. Real-vocabulary tests are in
// test_tekken_real.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "tekken_test_util.h"

namespace quatre::tokenizer {
namespace {

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

}  // namespace
}  // namespace quatre::tokenizer
