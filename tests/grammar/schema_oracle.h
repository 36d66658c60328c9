// Test oracle of the grammar tests, written independently of the compiler: a validator of JSON values against
// the supported JSON-schema subset, random schemas of that subset, random valid documents for them (members in
// `properties` order, as the grammar generates), and a compact serializer.
#pragma once

#include <random>
#include <string>

#include "tokenizer/json_value.h"

namespace quatre::grammar::testing {

using tokenizer::JsonValue;

// True when `v` is valid for `schema` (absent additionalProperties counts as false, oneOf as exactly one).
bool validate(const JsonValue& v, const JsonValue& schema, const JsonValue& root);

// A random schema of the subset, depth-limited. `bounded`: every string/array has a maximum length and there is
// no free JSON, so every document has bounded size.
JsonValue random_schema(std::mt19937& rng, int depth, bool bounded);
// A random document valid for `schema`.
JsonValue random_document(std::mt19937& rng, const JsonValue& schema, const JsonValue& root, int depth = 0);
// A random JSON value of any shape (for negative tests).
JsonValue random_value(std::mt19937& rng, int depth);

std::string dump_compact(const JsonValue& v);  // json.dumps(separators=(",", ":"), ensure_ascii=False)

}  // namespace quatre::grammar::testing
