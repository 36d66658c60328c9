// Output parsing (PROTOCOL §3.3 reasoning, §3.4 tool calls): whole parse on hand-written outputs, streaming
// deltas, and the property that concatenated streaming deltas equal the whole parse on random id sequences.
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "chat_test_util.h"
#include "tokenizer/output_parser.h"
#include "tokenizer/utf8.h"

namespace quatre::tokenizer {
namespace {

using chat_testing::synthetic_ids;
using chat_testing::synthetic_tekken;

const std::string kFffd = "\xef\xbf\xbd";

ParsedOutput parse(std::string_view text_form, uint64_t seed = 7) {
  return parse_output(synthetic_ids(text_form), synthetic_tekken(), random_tool_call_ids(seed));
}

std::vector<OutputDelta> stream(std::span<const TokenId> ids, const Tekken& tekken, uint64_t seed) {
  StreamingOutputParser parser(tekken, random_tool_call_ids(seed));
  std::vector<OutputDelta> all;
  for (TokenId id : ids) {
    for (OutputDelta& d : parser.push(id)) all.push_back(std::move(d));
  }
  for (OutputDelta& d : parser.finish()) all.push_back(std::move(d));
  return all;
}

// Rebuilds a ParsedOutput from deltas, checking the stream's own invariants on the way.
ParsedOutput collect(const std::vector<OutputDelta>& deltas) {
  ParsedOutput out;
  std::string reasoning;
  for (const OutputDelta& d : deltas) {
    EXPECT_EQ(utf8::valid_prefix_length(d.text), d.text.size()) << "a delta is not whole UTF-8";
    switch (d.kind) {
      case OutputDelta::Kind::kReasoning:
        EXPECT_FALSE(d.text.empty());
        reasoning += d.text;
        break;
      case OutputDelta::Kind::kContent:
        EXPECT_FALSE(d.text.empty());
        out.content += d.text;
        break;
      case OutputDelta::Kind::kToolCallStart:
        EXPECT_EQ(d.tool_index, static_cast<int>(out.tool_calls.size())) << "calls start in index order";
        out.tool_calls.push_back(ParsedToolCall{.id = d.tool_call_id, .name = d.name, .arguments = ""});
        break;
      case OutputDelta::Kind::kToolCallArguments:
        EXPECT_FALSE(d.text.empty());
        EXPECT_EQ(d.tool_index + 1, static_cast<int>(out.tool_calls.size())) << "arguments of the open call only";
        if (!out.tool_calls.empty()) out.tool_calls.back().arguments += d.text;
        break;
    }
  }
  if (!reasoning.empty()) out.reasoning = reasoning;
  return out;
}

void expect_same(const ParsedOutput& got, const ParsedOutput& want, std::string_view context) {
  EXPECT_EQ(got.reasoning, want.reasoning) << context;
  EXPECT_EQ(got.content, want.content) << context;
  EXPECT_EQ(got.tool_calls, want.tool_calls) << context;
}

TEST(ToolCallIds, NineAlphanumericCharactersDeterministicPerSeed) {
  ToolCallIdGenerator a = random_tool_call_ids(42), b = random_tool_call_ids(42), c = random_tool_call_ids();
  const std::string first = a();
  EXPECT_EQ(first, b());
  EXPECT_NE(first, a());
  for (int i = 0; i < 100; ++i) {
    const std::string id = c();
    ASSERT_EQ(id.size(), 9u);
    for (char ch : id) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(ch))) << id;
  }
}

TEST(OutputParser, PlainContent) {
  const ParsedOutput p = parse("The answer is 4.</s>ignored[TOOL_CALLS]x[ARGS]{}");
  EXPECT_EQ(p.reasoning, std::nullopt);
  EXPECT_EQ(p.content, "The answer is 4.");
  EXPECT_TRUE(p.tool_calls.empty());
}

TEST(OutputParser, ReasoningCasesOfSection33) {
  ParsedOutput p = parse("[THINK]2+2 is 4.[/THINK]The answer is 4.</s>");
  EXPECT_EQ(p.reasoning, "2+2 is 4.");
  EXPECT_EQ(p.content, "The answer is 4.");
  p = parse("before [THINK]r[/THINK] after");
  EXPECT_EQ(p.reasoning, "r");
  EXPECT_EQ(p.content, "before  after");
  p = parse("x[THINK]truncated reasoning");  // no [/THINK]
  EXPECT_EQ(p.reasoning, "truncated reasoning");
  EXPECT_EQ(p.content, "x");
  p = parse("no think[/THINK] here");  // stray [/THINK] dropped
  EXPECT_EQ(p.reasoning, std::nullopt);
  EXPECT_EQ(p.content, "no think here");
  p = parse("[THINK][/THINK]c");  // empty reasoning is omitted
  EXPECT_EQ(p.reasoning, std::nullopt);
  EXPECT_EQ(p.content, "c");
  p = parse("[THINK]a[THINK]b[/THINK]c[THINK]d[/THINK]e");  // only the first block is reasoning
  EXPECT_EQ(p.reasoning, "ab");
  EXPECT_EQ(p.content, "cde");
}

TEST(OutputParser, ToolCalls) {
  const ParsedOutput p = parse("Let me check.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]f[ARGS]{}</s>", 3);
  EXPECT_EQ(p.content, "Let me check.");
  ToolCallIdGenerator ids = random_tool_call_ids(3);
  const std::string id0 = ids(), id1 = ids();
  ASSERT_EQ(p.tool_calls.size(), 2u);
  EXPECT_EQ(p.tool_calls[0], (ParsedToolCall{.id = id0, .name = "get_weather", .arguments = "{\"city\": \"Paris\"}"}));
  EXPECT_EQ(p.tool_calls[1], (ParsedToolCall{.id = id1, .name = "f", .arguments = "{}"}));
}

TEST(OutputParser, ToolCallEdgeCases) {
  // Name trimmed of ASCII whitespace; arguments verbatim, even when not JSON.
  ParsedOutput p = parse("[TOOL_CALLS] get_weather \n[ARGS] {\"a\":1 \n");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].name, "get_weather");
  EXPECT_EQ(p.tool_calls[0].arguments, " {\"a\":1 \n");
  EXPECT_EQ(p.content, "");
  // No [ARGS]: split at the first '{'.
  p = parse("[TOOL_CALLS]f {\"a\": {\"b\": 1}}[TOOL_CALLS]g{}");
  ASSERT_EQ(p.tool_calls.size(), 2u);
  EXPECT_EQ(p.tool_calls[0].name, "f");
  EXPECT_EQ(p.tool_calls[0].arguments, "{\"a\": {\"b\": 1}}");
  EXPECT_EQ(p.tool_calls[1].name, "g");
  EXPECT_EQ(p.tool_calls[1].arguments, "{}");
  // A '{' before [ARGS] ends the name; the late [ARGS] is dropped.
  p = parse("[TOOL_CALLS]f{\"x\"[ARGS]: 1}");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].name, "f");
  EXPECT_EQ(p.tool_calls[0].arguments, "{\"x\": 1}");
  // Neither [ARGS] nor '{': the segment is dropped (vLLM).
  p = parse("text[TOOL_CALLS]garbage[TOOL_CALLS]g[ARGS]");
  EXPECT_EQ(p.content, "text");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].name, "g");
  EXPECT_EQ(p.tool_calls[0].arguments, "{}");
  // Reasoning then a call.
  p = parse("[THINK]need weather[/THINK][TOOL_CALLS]w[ARGS]{}</s>");
  EXPECT_EQ(p.reasoning, "need weather");
  EXPECT_EQ(p.content, "");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  // A think block inside a call's arguments is reasoning; the arguments continue after it.
  p = parse("[TOOL_CALLS]f[ARGS]{\"a\"[THINK]hmm[/THINK]: 1}");
  EXPECT_EQ(p.reasoning, "hmm");
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.tool_calls[0].arguments, "{\"a\": 1}");
}

TEST(OutputParser, SpecialIdsSplitUtf8Runs) {
  // "é" is C3 A9; other special ids are dropped but cut the character.
  std::vector<TokenId> ids = {100 + 0xC3, 3, 100 + 0xA9, 100 + 'x'};
  ParsedOutput p = parse_output(ids, synthetic_tekken(), random_tool_call_ids(1));
  EXPECT_EQ(p.content, kFffd + kFffd + "x");
  ids = {100 + 0xC3, 100 + 0xA9};
  EXPECT_EQ(parse_output(ids, synthetic_tekken(), random_tool_call_ids(1)).content, "\xc3\xa9");
}

TEST(StreamingOutputParser, DeltasOfAToolCallingAnswer) {
  const std::vector<TokenId> ids =
      synthetic_ids("[THINK]hm[/THINK]Ok.[TOOL_CALLS]get[ARGS]{\"c\": 1}[TOOL_CALLS]g{}[TOOL_CALLS]h[ARGS]</s>");
  StreamingOutputParser parser(synthetic_tekken(), random_tool_call_ids(5));
  std::vector<std::vector<OutputDelta>> per_token;
  for (TokenId id : ids) per_token.push_back(parser.push(id));
  EXPECT_TRUE(parser.finish().empty());  // EOS already finished
  ToolCallIdGenerator gen = random_tool_call_ids(5);
  const std::string id0 = gen(), id1 = gen(), id2 = gen();
  using D = OutputDelta;
  std::vector<D> all;
  for (const auto& v : per_token) all.insert(all.end(), v.begin(), v.end());
  const std::vector<D> want = {
      D::reasoning("h"), D::reasoning("m"), D::content("O"), D::content("k"), D::content("."),
      D::call_start(0, id0, "get"), D::arguments(0, "{"), D::arguments(0, "\""), D::arguments(0, "c"),
      D::arguments(0, "\""), D::arguments(0, ":"), D::arguments(0, " "), D::arguments(0, "1"), D::arguments(0, "}"),
      D::call_start(1, id1, "g"), D::arguments(1, "{"), D::arguments(1, "}"),
      D::call_start(2, id2, "h"), D::arguments(2, "{}")};
  EXPECT_EQ(all, want);
  // The name is held back until [ARGS]: pushing 'g', 'e', 't' gave nothing.
  const size_t get_start = 1 + 2 + 1 + 3 + 1;  // [THINK] h m [/THINK] O k . [TOOL_CALLS]
  for (size_t i = get_start; i < get_start + 3; ++i) EXPECT_TRUE(per_token[i].empty()) << i;
}

TEST(StreamingOutputParser, NeverEmitsHalfACharacter) {
  // "😀" = F0 9F 98 80, one byte per synthetic id.
  StreamingOutputParser parser(synthetic_tekken(), random_tool_call_ids(1));
  EXPECT_TRUE(parser.push(100 + 0xF0).empty());
  EXPECT_TRUE(parser.push(100 + 0x9F).empty());
  EXPECT_TRUE(parser.push(100 + 0x98).empty());
  const std::vector<OutputDelta> d = parser.push(100 + 0x80);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0], OutputDelta::content("\xf0\x9f\x98\x80"));
  // A truncated character is flushed as U+FFFD at the end.
  EXPECT_TRUE(parser.push(100 + 0xE2).empty());
  const std::vector<OutputDelta> tail = parser.finish();
  ASSERT_EQ(tail.size(), 1u);
  EXPECT_EQ(tail[0], OutputDelta::content(kFffd));
}

// Random outputs over a pool biased towards the tokens that matter: the routed specials, other specials,
// '{', whitespace, ASCII, and UTF-8 lead/continuation/invalid bytes (so characters get cut everywhere).
std::vector<TokenId> random_synthetic_output(std::mt19937& rng) {
  static const std::vector<TokenId> pool = [] {
    std::vector<TokenId> p = {2, 34, 34, 35, 35, 9, 9, 9, 32, 32, 32, 3, 10, 11, 50};
    for (unsigned char c : std::string("ab {{}\" :\n\tZ")) p.push_back(100 + c);
    for (int b : {0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0xC0, 0xED, 0xA0}) p.push_back(100 + b);
    return p;
  }();
  std::uniform_int_distribution<size_t> len(0, 40), pick(0, pool.size() - 1);
  std::vector<TokenId> ids(len(rng));
  for (TokenId& id : ids) id = pool[pick(rng)];
  return ids;
}

TEST(OutputParserProperty, StreamingEqualsWholeOnRandomSyntheticOutputs) {
  std::mt19937 rng(20260316);
  for (int trial = 0; trial < 3000; ++trial) {
    const std::vector<TokenId> ids = random_synthetic_output(rng);
    const uint64_t seed = static_cast<uint64_t>(trial);
    const ParsedOutput whole = parse_output(ids, synthetic_tekken(), random_tool_call_ids(seed));
    std::string context = "ids:";
    for (TokenId id : ids) context += " " + std::to_string(id);
    expect_same(collect(stream(ids, synthetic_tekken(), seed)), whole, context);
    if (testing::Test::HasFailure()) break;
  }
}

TEST(OutputParserProperty, StreamingEqualsWholeOnRandomRealVocabularyOutputs) {
  std::filesystem::path path = std::filesystem::path(QUATRE_BINARY_DIR) / "tests" / "tokenizer" / "data" / "tekken.json";
  if (const char* env = std::getenv("QUATRE_TEKKEN_JSON")) path = env;
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present (the test build writes it)";
  const Tekken real = Tekken::load(path);
  std::mt19937 rng(7);
  std::uniform_int_distribution<TokenId> any_bpe(real.n_special(), real.vocab_size() - 1), len(0, 60), coin(0, 9);
  const std::vector<TokenId> specials = {2, 34, 35, 9, 32, 3, 10};
  std::uniform_int_distribution<size_t> pick_special(0, specials.size() - 1);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<TokenId> ids(static_cast<size_t>(len(rng)));
    for (TokenId& id : ids) id = coin(rng) == 0 ? specials[pick_special(rng)] : any_bpe(rng);
    const ParsedOutput whole = parse_output(ids, real, random_tool_call_ids(1));
    expect_same(collect(stream(ids, real, 1)), whole, "trial " + std::to_string(trial));
    if (testing::Test::HasFailure()) break;
  }
}

}  // namespace
}  // namespace quatre::tokenizer
