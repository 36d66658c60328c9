// JSON schema -> grammar. Supported subset (what OpenAI strict mode and common clients send): type (one or a
// list: object, array, string, number, integer, boolean, null), properties, required, additionalProperties
// (absent = false, as in OpenAI strict mode; true or a schema allows extra members after the declared ones),
// items, prefixItems, minItems/maxItems, minLength/maxLength (characters), enum, const, anyOf, oneOf (as anyOf:
// exclusivity is not enforced), allOf with one member, $ref to "#", "#/$defs/..", "#/definitions/.." or any JSON
// pointer into the root (recursion allowed), nullable (OpenAPI). Annotations (title, description, default,
// examples, format, $schema, $id, $comment, ...) are ignored. Anything else (pattern, minimum, not, if, ...) is
// refused with an InvalidRequest naming the keyword and its path.
// Generated text: members in the order of `properties` (optional ones may be left out), no whitespace except one
// optional space after ':' and ',' (both `{"a":1,"b":2}` and `{"a": 1, "b": 2}`), enum/const values in their
// canonical spelling, numbers of at most 20 integer digits, 20 fraction digits and 4 exponent digits.
// Depends on core and tokenizer (JsonValue).
#pragma once

#include <string_view>

#include "grammar/grammar.h"
#include "tokenizer/json_value.h"

namespace quatre::grammar {

// Adds the rules of `schema` to `builder`; returns the rule of one JSON value valid for it. `path` names the
// schema in error messages (e.g. "response_format.json_schema.schema"). $refs resolve against `schema` itself.
uint32_t add_json_schema(GrammarBuilder& builder, const tokenizer::JsonValue& schema, std::string_view path);
// Any JSON object (response_format json_object).
uint32_t add_any_json_object(GrammarBuilder& builder);

// Convenience for tests: the whole grammar of one schema (nullptr = any JSON object).
Grammar json_schema_grammar(const tokenizer::JsonValue* schema, std::string_view path = "schema");

}  // namespace quatre::grammar
