// JSON schema -> grammar: the automaton accepts the documents valid for a schema (hand-written lists and random
// schemas with random documents checked by the independent validator of schema_oracle.h) and rejects invalid
// ones; unsupported or broken schemas are refused with messages naming the keyword and path.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "grammar/automaton.h"
#include "grammar/json_schema.h"
#include "schema_oracle.h"

namespace quatre::grammar {
namespace {

using tokenizer::JsonValue;
using tokenizer::parse_json;

bool accepts(Automaton& a, std::string_view text) {
  const int32_t s = a.step_bytes(a.start(), text);
  return s != Automaton::kDead && a.accepting(s);
}

struct Case {
  const char* schema;
  std::vector<const char*> valid;
  std::vector<const char*> invalid;
};

TEST(JsonSchemaGrammar, HandWrittenDocuments) {
  const std::vector<Case> cases = {
      {R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}},"required":["a"]})",
       {R"({"a":1})", R"({"a": -12, "b": "x"})", R"({"a":0,"b":""})", R"({"a":1,"b":"\"\\\u00e9\n"})"},
       {R"({})", R"({"b":"x","a":1})", R"({"a":01})", R"({"a":1,})", R"({"a":1, "c":2})", R"({"a":  1})",
        R"({"a":1.5})", R"({"a":1,"b":"\x"})", "{\"a\":1,\"b\":\"\x01\"}", R"( {"a":1})", R"({"a":-})"}},
      {R"({"type":"array","items":{"type":"boolean"},"minItems":1,"maxItems":2})",
       {"[true]", "[true,false]", "[false, false]"},
       {"[]", "[true,true,true]", "[1]", "[true,]", "[,true]"}},
      {R"({"type":"array","prefixItems":[{"type":"integer"},{"type":"string"}],"items":false})",
       {"[]", "[1]", R"([1,"a"])"}, {R"([1,"a",2])", R"(["a"])"}},
      {R"({"enum":["red","green",3,null,{"k":[1,2]}]})",
       {R"("red")", "3", "null", R"({"k":[1,2]})", R"({"k": [1, 2]})"}, {R"("blue")", "3.0", R"({"k":[2,1]})"}},
      {R"({"type":["string","null"],"maxLength":2})", {R"("")", R"("ab")", R"("é€")", "null"},
       {R"("abc")", "1"}},
      {R"({"type":"string","minLength":2})", {R"("ab")", R"("a\n")", R"("𝄞𝄞")"}, {R"("a")", R"("𝄞")"}},
      {R"({"type":"number"})", {"0", "-1.5", "1e10", "2.5E-3", "12345678901234567890"},
       {"01", "1.", ".5", "+1", "1e", "--1", "123456789012345678901"}},
      {R"({"anyOf":[{"type":"integer"},{"type":"object","properties":{"x":{"const":true}},"required":["x"]}]})",
       {"7", R"({"x":true})", R"({"x": true})"}, {R"({"x":false})", "true"}},
      {R"({"type":"object","additionalProperties":{"type":"integer"}})",
       {"{}", R"({"a":1})", R"({"a":1, "b":2})"}, {R"({"a":"x"})"}},
      {R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/node"})",
       {R"({"v":1,"next":null})", R"({"v":-0,"next":{"v":2,"next":{"v":3,"next":null}}})"},
       {R"({"v":1})", R"({"v":1,"next":{"v":2}})"}},
      {R"({})", {"1", R"("x")", R"([{"a":[null]}])", "true"}, {"nul", "[1 ,2]", "{\"a\"}"}},
      {R"({"type":"object","properties":{"kid":{"$ref":"#"},"n":{"type":"integer","nullable":true}}})",
       {"{}", R"({"kid":{}})", R"({"kid":{"kid":{"n":null}},"n":3})"}, {R"({"n":"3"})", R"({"kid":[]})"}},
      {R"({"definitions":{"b":{"type":"boolean","title":"B"}},"type":"array","items":{"$ref":"#/definitions/b"}})",
       {"[]", "[true, false]"}, {"[null]"}},
      {R"({"oneOf":[{"const":"a\"b"},{"type":"null"}]})", {R"("a\"b")", "null"}, {R"("a"b")", R"("ab")"}},
  };
  for (const Case& c : cases) {
    const JsonValue schema = parse_json(c.schema);
    Automaton a(json_schema_grammar(&schema));
    for (const char* doc : c.valid) EXPECT_TRUE(accepts(a, doc)) << c.schema << "\n  should accept " << doc;
    for (const char* doc : c.invalid) EXPECT_FALSE(accepts(a, doc)) << c.schema << "\n  should reject " << doc;
  }
}

TEST(JsonSchemaGrammar, JsonObjectModeIsAnyObject) {
  Automaton a(json_schema_grammar(nullptr));
  for (const char* doc : {"{}", R"({"a": [1, {"b": null}], "c": "d"})"}) EXPECT_TRUE(accepts(a, doc)) << doc;
  for (const char* doc : {"[]", "1", R"("x")", "{", R"({"a":1}})"}) EXPECT_FALSE(accepts(a, doc)) << doc;
}

TEST(JsonSchemaGrammar, RandomSchemasAcceptTheirRandomDocuments) {
  std::mt19937 rng(1234);
  int checked = 0;
  for (int round = 0; round < 300; ++round) {
    const JsonValue schema = testing::random_schema(rng, 0, round % 2 == 0);
    Automaton a(json_schema_grammar(&schema));
    for (int i = 0; i < 10; ++i) {
      const JsonValue doc = testing::random_document(rng, schema, schema);
      ASSERT_TRUE(testing::validate(doc, schema, schema)) << "oracle disagrees with itself on " << tokenizer::dump_json(doc);
      for (const std::string& text : {tokenizer::dump_json(doc), testing::dump_compact(doc)}) {
        EXPECT_TRUE(accepts(a, text)) << "schema " << tokenizer::dump_json(schema) << "\n  should accept " << text;
        ++checked;
      }
      const JsonValue other = testing::random_value(rng, 0);  // soundness: invalid documents are refused
      if (!testing::validate(other, schema, schema)) {
        EXPECT_FALSE(accepts(a, tokenizer::dump_json(other)))
            << "schema " << tokenizer::dump_json(schema) << "\n  should reject " << tokenizer::dump_json(other);
      }
    }
  }
  EXPECT_EQ(checked, 6000);
}

void expect_refused(const char* schema, const std::string& fragment) {
  const JsonValue s = parse_json(schema);
  try {
    json_schema_grammar(&s, "schema");
    ADD_FAILURE() << "accepted " << schema;
  } catch (const InvalidRequest& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what() << "\n  lacks " << fragment;
  }
}

TEST(JsonSchemaGrammar, RefusesWhatItCannotEnforce) {
  expect_refused(R"({"type":"string","pattern":"^a+$"})", "schema.pattern: unsupported JSON Schema keyword \"pattern\"");
  expect_refused(R"({"type":"object","properties":{"n":{"type":"integer","minimum":0}}})",
                 "schema.properties.n.minimum: unsupported");
  expect_refused(R"({"not":{"type":"null"}})", "\"not\"");
  expect_refused(R"({"type":"colour"})", "colour");
  expect_refused(R"({"$ref":"#/$defs/missing"})", "points to nothing");
  expect_refused(R"({"$ref":"https://example.com/s.json"})", "only local $refs");
  expect_refused(R"({"$defs":{"a":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"})", "no finite JSON value");
  expect_refused(R"({"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"})",
                 "reference cycle");
  expect_refused(R"({"type":"object","properties":{"me":{"$ref":"#"}},"required":["me"]})", "no finite JSON value");
  expect_refused(R"({"type":"array","minItems":3,"maxItems":2})", "minItems 3 exceeds");
  expect_refused(R"({"type":"string","maxLength":1000000})", "above 10000");
  expect_refused(R"({"type":"object","required":["x"]})", "required property \"x\" is not declared");
  expect_refused(R"({"allOf":[{"type":"string"},{"maxLength":3}]})", "allOf with more than one");
  expect_refused(R"({"type":"array","uniqueItems":true})", "uniqueItems");
  expect_refused(R"({"type":"object","properties":{"a":false}})", "false admits no value");
  expect_refused(R"({"type":"object","properties":5})", "properties");  // the draft-07 structural check
}

// Replaces one value somewhere in the schema by a random JSON value (or a keyword by a random one).
void mutate(JsonValue& s, std::mt19937& rng) {
  static const char* kKeys[] = {"type", "properties", "required", "items", "prefixItems", "enum", "const", "anyOf",
                                "$ref", "minLength", "maxItems", "additionalProperties", "nullable", "allOf"};
  if (s.is_object() && !s.as_object().empty() && rng() % 3 != 0) {
    auto& members = s.as_object();
    mutate(members[rng() % members.size()].second, rng);
    return;
  }
  if (s.is_array() && !s.as_array().empty() && rng() % 3 != 0) {
    mutate(s.as_array()[rng() % s.as_array().size()], rng);
    return;
  }
  if (s.is_object() && rng() % 2 == 0) {
    s.set(kKeys[rng() % std::size(kKeys)], rng() % 4 == 0 ? JsonValue::string("#/$defs/x") : testing::random_value(rng, 1));
    return;
  }
  s = testing::random_value(rng, 1);
}

TEST(JsonSchemaGrammar, MutatedSchemasCompileOrAreRefusedCleanly) {
  std::mt19937 rng(77);
  int refused = 0;
  for (int i = 0; i < 2000; ++i) {
    JsonValue schema = testing::random_schema(rng, 0, i % 2 == 0);
    for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) mutate(schema, rng);
    try {
      Automaton a(json_schema_grammar(&schema));
      EXPECT_GE(a.n_states(), 1u);
    } catch (const InvalidRequest& e) {
      EXPECT_NE(std::string(e.what()).find("schema"), std::string::npos) << e.what();
      ++refused;
    }
  }
  EXPECT_GT(refused, 100);  // the mutations do reach the error paths
}

}  // namespace
}  // namespace quatre::grammar
