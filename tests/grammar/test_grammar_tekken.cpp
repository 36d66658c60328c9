// Constraints over the real Small-4 Tekken vocabulary (131,072 ids): the tokens that the tokenizer produces for
// valid documents and tool calls are allowed one after another, special ids only where the structure needs them.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "grammar/constraint.h"
#include "../tokenizer/tekken_test_util.h"

namespace quatre::grammar {
namespace {

using tokenizer::JsonValue;
using tokenizer::parse_json;

const char* kSchema = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "description": "full name"},
    "age": {"type": "integer"},
    "email": {"type": ["string", "null"], "format": "email"},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 5},
    "address": {"$ref": "#/$defs/address"},
    "role": {"enum": ["admin", "user", "guest"]}
  },
  "required": ["name", "age", "role"],
  "additionalProperties": false,
  "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "zip": {"type": "string"}},
                        "required": ["street"]}}
})";

// Feeds `ids` one by one, each required to be unmasked before it is accepted.
void feed(engine::TokenConstraint& c, const std::vector<int32_t>& ids, int32_t vocab_size) {
  std::vector<float> logits(vocab_size);
  for (size_t i = 0; i < ids.size(); ++i) {
    std::fill(logits.begin(), logits.end(), 1.0f);
    c.mask(logits);
    ASSERT_FALSE(std::isinf(logits[ids[i]])) << "token " << i << " (id " << ids[i] << ") masked";
    c.accept(ids[i]);
  }
}

int count_allowed(engine::TokenConstraint& c, int32_t vocab_size) {
  std::vector<float> logits(vocab_size, 0.0f);
  c.mask(logits);
  return static_cast<int>(std::count_if(logits.begin(), logits.end(), [](float x) { return !std::isinf(x); }));
}

TEST(GrammarTekken, DocumentsAndToolCallsPassTheMask) {
  REAL_TEKKEN_OR_SKIP();
  const auto vocab = std::make_shared<const Vocabulary>(tekken);
  ASSERT_EQ(vocab->size(), 131072);
  const JsonValue schema = parse_json(kSchema);
  const auto proto = json_constraint(vocab, &schema);
  for (const char* doc : {
           R"({"name": "Ada Lovelace", "age": 36, "email": null, "tags": ["math", "poésie"], "role": "admin"})",
           R"({"name":"Zoë","age":7,"address":{"street":"1 Rue de l'Église","zip":"75001"},"role":"guest"})"}) {
    auto c = proto->clone();
    feed(*c, tekken.encode(doc), vocab->size());
    EXPECT_TRUE(c->is_complete()) << doc;
    EXPECT_EQ(count_allowed(*c, vocab->size()), 1);
  }
  auto c = proto->clone();
  EXPECT_THROW(c->accept(tekken.encode("[")[0]), InvalidRequest);
  feed(*c, tekken.encode(R"({"name": ")"), vocab->size());
  const int inside_string = count_allowed(*c, vocab->size());  // most of the vocabulary may continue a string
  EXPECT_GT(inside_string, 100000);
  EXPECT_LT(inside_string, vocab->size() - tekken.n_special());

  const std::vector<ToolSpec> tools = {
      {"get_weather", parse_json(R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})")},
      {"lookup", schema}};
  auto t = tool_call_constraint(vocab, tools, std::nullopt, true, {.allow_think = true})->clone();
  std::vector<int32_t> ids = {*tekken.special_id("[THINK]")};
  tekken.encode_into("Need the weather.", ids);
  ids.push_back(*tekken.special_id("[/THINK]"));
  for (const auto& [name, args] : {std::pair{"get_weather", R"({"city": "Paris"})"},
                                   std::pair{"lookup", R"({"name":"x","age":1,"role":"user"})"}}) {
    ids.push_back(*tekken.special_id("[TOOL_CALLS]"));
    tekken.encode_into(name, ids);
    ids.push_back(*tekken.special_id("[ARGS]"));
    tekken.encode_into(args, ids);
  }
  ids.push_back(tekken.eos_id());
  feed(*t, ids, vocab->size());
  EXPECT_TRUE(t->is_complete());
}

}  // namespace
}  // namespace quatre::grammar
