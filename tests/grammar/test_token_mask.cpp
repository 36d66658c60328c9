// Token masks over a small vocabulary, checked by brute force against a separate byte-level automaton: every
// allowed id continues the text validly and every id that does is allowed. Random walks that sample only allowed
// ids end in complete documents that the independent validator accepts; clones are independent; tool calls and
// the [THINK] prefix have the structure of PROTOCOL §5.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "core/error.h"
#include "grammar/automaton.h"
#include "grammar/constraint.h"
#include "grammar/json_schema.h"
#include "schema_oracle.h"

namespace quatre::grammar {
namespace {

using tokenizer::JsonValue;
using tokenizer::parse_json;

constexpr int32_t kEos = 2, kToolCallsId = 3, kArgsId = 4, kThinkId = 5, kEndThinkId = 6, kNSpecial = 10;

// 10 specials, the 256 bytes, then pieces of random documents (2 to 6 bytes) as merged tokens.
std::shared_ptr<const Vocabulary> small_vocab(uint32_t seed, int n_merged) {
  std::vector<std::string> tokens(kNSpecial);
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  std::mt19937 rng(seed);
  std::set<std::string> seen(tokens.begin() + kNSpecial, tokens.end());
  while (static_cast<int>(tokens.size()) < kNSpecial + 256 + n_merged) {
    const JsonValue schema = testing::random_schema(rng, 0, true);
    const JsonValue doc = testing::random_document(rng, schema, schema);
    const std::string text = rng() % 2 ? tokenizer::dump_json(doc) : testing::dump_compact(doc);
    if (text.size() < 2) continue;
    const size_t len = std::min<size_t>(2 + rng() % 5, text.size());
    std::string piece = text.substr(rng() % (text.size() - len + 1), len);
    if (seen.insert(piece).second) tokens.push_back(piece);
  }
  return std::make_shared<const Vocabulary>(
      std::move(tokens), kNSpecial,
      SpecialIds{.eos = kEos, .tool_calls = kToolCallsId, .args = kArgsId, .think = kThinkId, .end_think = kEndThinkId});
}

std::vector<int32_t> allowed_ids(engine::TokenConstraint& c, int32_t vocab_size) {
  std::vector<float> logits(vocab_size, 0.0f);
  c.mask(logits);
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < vocab_size; ++id) {
    if (!std::isinf(logits[id])) ids.push_back(id);
  }
  return ids;
}

// What the mask must be, from a byte-level automaton of its own (no trie, no mask cache).
std::vector<int32_t> reference_ids(Automaton& ref, int32_t state, const Vocabulary& vocab) {
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < vocab.size(); ++id) {
    bool ok = false;
    if (id == kEos) {
      ok = ref.accepting(state);
    } else if (vocab.special_symbol(id) >= 0) {
      ok = ref.step(state, vocab.special_symbol(id)) != Automaton::kDead;
    } else if (id >= kNSpecial) {
      ok = ref.step_bytes(state, vocab.token_bytes(id)) != Automaton::kDead;
    }
    if (ok) ids.push_back(id);
  }
  return ids;
}

struct Walk {
  std::vector<int32_t> ids;
  bool ended = false;
};

// Samples allowed ids uniformly, checking each mask against the reference, until complete or `max_steps`.
Walk random_walk(engine::TokenConstraint& c, Automaton& ref, const Vocabulary& vocab, std::mt19937& rng,
                 int max_steps, bool check_masks) {
  Walk w;
  int32_t state = ref.start();
  for (int step = 0; step < max_steps && !c.is_complete(); ++step) {
    const std::vector<int32_t> allowed = allowed_ids(c, vocab.size());
    if (check_masks) {
      EXPECT_EQ(allowed, reference_ids(ref, state, vocab)) << "after " << w.ids.size() << " tokens";
    }
    if (allowed.empty()) {
      ADD_FAILURE() << "no allowed token after " << w.ids.size() << " tokens";
      return w;
    }
    const int32_t id = allowed[rng() % allowed.size()];
    c.accept(id);
    w.ids.push_back(id);
    if (id == kEos) break;
    state = vocab.special_symbol(id) >= 0 ? ref.step(state, vocab.special_symbol(id))
                                          : ref.step_bytes(state, vocab.token_bytes(id));
  }
  w.ended = c.is_complete();
  return w;
}

std::string text_of(const Vocabulary& vocab, const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += id < kNSpecial ? "" : vocab.token_bytes(id);
  return s;
}

TEST(TokenMask, MatchesBruteForceAndRandomWalksEndValid) {
  const auto vocab = small_vocab(7, 1500);
  std::mt19937 rng(99);
  for (int round = 0; round < 40; ++round) {
    const JsonValue schema = testing::random_schema(rng, 0, /*bounded=*/true);
    const auto proto = json_constraint(vocab, &schema);
    Automaton ref(json_schema_grammar(&schema));
    for (int walk = 0; walk < 3; ++walk) {
      auto c = proto->clone();
      const Walk w = random_walk(*c, ref, *vocab, rng, 3000, walk == 0);
      ASSERT_TRUE(w.ended) << tokenizer::dump_json(schema) << "\n  walk did not end: " << text_of(*vocab, w.ids);
      const std::string text = text_of(*vocab, w.ids);
      const JsonValue doc = parse_json(text, "walk");
      EXPECT_TRUE(testing::validate(doc, schema, schema)) << tokenizer::dump_json(schema) << "\n  " << text;
    }
  }
}

TEST(TokenMask, JsonObjectModeStartsWithABraceAndEndsWithEos) {
  const auto vocab = small_vocab(8, 300);
  auto c = json_constraint(vocab, nullptr)->clone();
  for (int32_t id : allowed_ids(*c, vocab->size())) EXPECT_EQ(vocab->token_bytes(id)[0], '{') << id;
  c->accept(kNSpecial + '{');
  EXPECT_THROW(c->accept(kEos), InvalidRequest);  // not complete: EOS refused
  EXPECT_THROW(c->accept(kNSpecial + ']'), InvalidRequest);
  c->accept(kNSpecial + '}');
  EXPECT_TRUE(c->is_complete());
  EXPECT_EQ(allowed_ids(*c, vocab->size()), std::vector<int32_t>{kEos});
  c->accept(kEos);
  EXPECT_TRUE(c->is_complete());
  EXPECT_EQ(allowed_ids(*c, vocab->size()), std::vector<int32_t>{kEos});
  EXPECT_THROW(c->accept(kNSpecial + ' '), InvalidRequest);
  EXPECT_THROW(c->accept(vocab->size()), InvalidRequest);
}

TEST(TokenMask, ClonesAreIndependent) {
  const auto vocab = small_vocab(9, 300);
  const JsonValue schema = parse_json(R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"boolean"}}})");
  auto a = json_constraint(vocab, &schema)->clone();
  for (char ch : std::string(R"({"a":)")) a->accept(kNSpecial + static_cast<uint8_t>(ch));
  const std::vector<int32_t> before = allowed_ids(*a, vocab->size());
  auto b = a->clone();
  b->accept(kNSpecial + '7');
  b->accept(kNSpecial + '}');
  EXPECT_TRUE(b->is_complete());
  EXPECT_FALSE(a->is_complete());
  EXPECT_EQ(allowed_ids(*a, vocab->size()), before);
  EXPECT_THROW(a->accept(kNSpecial + '}'), InvalidRequest);  // a still needs the value
  a->accept(kNSpecial + '1');
  EXPECT_NE(allowed_ids(*a, vocab->size()), allowed_ids(*b, vocab->size()));
}

TEST(TokenMask, ToolCallsHaveTheV15Structure) {
  const auto vocab = small_vocab(10, 800);
  std::vector<ToolSpec> tools = {
      {"get_weather", parse_json(R"({"type":"object","properties":{"city":{"type":"string","maxLength":5},"days":{"enum":[1,2,3]}},"required":["city"]})")},
      {"get_time", parse_json(R"({"type":"object","properties":{"utc":{"type":"boolean"}},"required":["utc"]})")},
  };
  std::mt19937 rng(5);
  for (bool parallel : {false, true}) {
    for (const std::optional<std::string>& forced : {std::optional<std::string>(), std::optional<std::string>("get_time")}) {
      const auto proto = tool_call_constraint(vocab, tools, forced, parallel);
      for (int walk = 0; walk < 20; ++walk) {
        auto c = proto->clone();
        EXPECT_EQ(allowed_ids(*c, vocab->size()), std::vector<int32_t>{kToolCallsId});
        std::vector<int32_t> ids;
        while (!c->is_complete() && ids.size() < 2000) {
          const std::vector<int32_t> allowed = allowed_ids(*c, vocab->size());
          ASSERT_FALSE(allowed.empty());
          ids.push_back(allowed[rng() % allowed.size()]);
          c->accept(ids.back());
        }
        ASSERT_TRUE(c->is_complete());
        // Complete either at EOS or, for a single call, right after its arguments (nothing else may follow).
        if (ids.back() != kEos) {
          EXPECT_FALSE(parallel);
          EXPECT_EQ(allowed_ids(*c, vocab->size()), std::vector<int32_t>{kEos});
          ids.push_back(kEos);
        }
        int calls = 0;
        for (size_t i = 0; i + 1 < ids.size();) {  // [TOOL_CALLS] name [ARGS] args, repeated
          ASSERT_EQ(ids[i], kToolCallsId);
          size_t j = i + 1;
          std::vector<int32_t> name, args;
          while (ids[j] != kArgsId) name.push_back(ids[j++]);
          for (++j; ids[j] != kToolCallsId && ids[j] != kEos; ++j) args.push_back(ids[j]);
          const std::string tool_name = text_of(*vocab, name);
          const auto tool = std::find_if(tools.begin(), tools.end(), [&](const ToolSpec& t) { return t.name == tool_name; });
          ASSERT_NE(tool, tools.end()) << tool_name;
          if (forced) {
            EXPECT_EQ(tool_name, *forced);
          }
          const std::string json = text_of(*vocab, args);
          EXPECT_TRUE(testing::validate(parse_json(json), tool->parameters, tool->parameters)) << json;
          ++calls;
          i = j;
        }
        if (!parallel) {
          EXPECT_EQ(calls, 1);
        }
      }
    }
  }
  EXPECT_THROW(tool_call_constraint(vocab, tools, "nope", false), InvalidRequest);
  EXPECT_THROW(tool_call_constraint(vocab, {}, std::nullopt, false), InvalidRequest);
}

// A schema with no finite value (a $ref to itself) is refused naming where it was given, so the server's 400
// names that field ("param"): the response_format schema, or the one tool to call, or all the tools.
TEST(TokenMask, ASchemaWithNoFiniteValueIsRefusedNamingItsField) {
  const auto vocab = small_vocab(12, 300);
  const JsonValue loop = parse_json(R"({"$ref": "#"})");
  auto message = [](const auto& make) {
    try {
      make();
    } catch (const InvalidRequest& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message([&] { json_constraint(vocab, &loop); }).rfind("response_format.json_schema.schema: ", 0), 0u);
  const std::vector<ToolSpec> one = {{"f", loop}};
  const std::string m1 = message([&] { tool_call_constraint(vocab, one, std::nullopt, false); });
  EXPECT_EQ(m1.rfind("tools[0].function.parameters: ", 0), 0u) << m1;
  const std::vector<ToolSpec> two = {{"f", parse_json(R"({"type": "object"})")}, {"g", loop}};
  EXPECT_EQ(message([&] { tool_call_constraint(vocab, two, "g", false); }).rfind("tools[1].function.parameters: ", 0), 0u);
  const std::vector<ToolSpec> both = {{"f", loop}, {"g", loop}};
  EXPECT_EQ(message([&] { tool_call_constraint(vocab, both, std::nullopt, true); }).rfind("tools: ", 0), 0u);
  EXPECT_NO_THROW(tool_call_constraint(vocab, two, std::nullopt, true));  // g can never be called; f can
}

TEST(TokenMask, OptionalThinkPrefix) {
  const auto vocab = small_vocab(11, 300);
  const JsonValue schema = parse_json(R"({"type":"boolean"})");
  auto c = json_constraint(vocab, &schema, {.allow_think = true})->clone();
  std::vector<int32_t> first = allowed_ids(*c, vocab->size());
  EXPECT_TRUE(std::binary_search(first.begin(), first.end(), kThinkId));
  EXPECT_FALSE(std::binary_search(first.begin(), first.end(), kEndThinkId));
  c->accept(kThinkId);
  const std::vector<int32_t> inside = allowed_ids(*c, vocab->size());  // every byte token, and [/THINK]
  EXPECT_EQ(inside.size(), static_cast<size_t>(vocab->size() - kNSpecial + 1));
  c->accept(kNSpecial + '{');
  c->accept(kEndThinkId);
  EXPECT_THROW(c->accept(kThinkId), InvalidRequest);
  for (char ch : std::string("true")) c->accept(kNSpecial + static_cast<uint8_t>(ch));
  EXPECT_TRUE(c->is_complete());
  auto plain = json_constraint(vocab, &schema)->clone();  // reasoning off: no [THINK]
  EXPECT_THROW(plain->accept(kThinkId), InvalidRequest);
}

}  // namespace
}  // namespace quatre::grammar
