// Structural check of tool `parameters` against the JSON Schema draft-07 meta-schema (PROTOCOL §2.4): each
// known keyword must have the type the meta-schema gives it; unknown keywords are free. Not a validator of
// instances, and `pattern`/`format` contents are not checked. Depends on core and json_value only.
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "core/error.h"
#include "tokenizer/chat_request.h"

namespace quatre::tokenizer {
namespace {

[[noreturn]] void fail(std::string_view path, std::string_view problem) {
  throw InvalidRequest(fmt::format("{}: invalid JSON Schema (draft-07): {}", path, problem));
}

std::string shown(const JsonValue& v) {
  std::string s = dump_json(v);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

bool is_number(const JsonValue& v) { return v.is_int() || v.is_float(); }

// jsonschema's draft-07 "integer": an int, or a float with an integral value (1.0).
bool is_integer(const JsonValue& v) {
  return v.is_int() || (v.is_float() && std::isfinite(v.as_float()) && std::floor(v.as_float()) == v.as_float());
}

bool is_negative(const JsonValue& v) {
  return v.is_int() ? v.as_int().digits.front() == '-' : v.as_float() < 0;
}

bool is_simple_type(std::string_view t) {
  return t == "array" || t == "boolean" || t == "integer" || t == "null" || t == "number" || t == "object" ||
         t == "string";
}

void check_schema(const JsonValue& schema, const std::string& path, int depth);

void check_unique_strings(const JsonValue& v, const std::string& path, bool allow_empty) {
  if (!v.is_array()) fail(path, fmt::format("expected an array of strings, got {} {}", v.type_name(), shown(v)));
  if (!allow_empty && v.as_array().empty()) fail(path, "expected a non-empty array");
  std::set<std::string> seen;
  for (size_t i = 0; i < v.as_array().size(); ++i) {
    const JsonValue& item = v.as_array()[i];
    if (!item.is_string()) {
      fail(fmt::format("{}[{}]", path, i), fmt::format("expected a string, got {} {}", item.type_name(), shown(item)));
    }
    if (!seen.insert(item.as_string()).second) {
      fail(fmt::format("{}[{}]", path, i), fmt::format("duplicate item \"{}\"", item.as_string()));
    }
  }
}

void check_schema_array(const JsonValue& v, const std::string& path, int depth) {
  if (!v.is_array() || v.as_array().empty()) {
    fail(path, fmt::format("expected a non-empty array of schemas, got {} {}", v.type_name(), shown(v)));
  }
  for (size_t i = 0; i < v.as_array().size(); ++i) check_schema(v.as_array()[i], fmt::format("{}[{}]", path, i), depth);
}

void check_schema_map(const JsonValue& v, const std::string& path, int depth) {
  if (!v.is_object()) fail(path, fmt::format("expected an object of schemas, got {} {}", v.type_name(), shown(v)));
  for (const auto& [name, sub] : v.as_object()) check_schema(sub, fmt::format("{}.{}", path, name), depth);
}

void check_keyword(std::string_view key, const JsonValue& v, const std::string& path, int depth) {
  const auto expect = [&](bool ok, std::string_view what) {
    if (!ok) fail(path, fmt::format("expected {}, got {} {}", what, v.type_name(), shown(v)));
  };
  if (key == "type") {
    if (v.is_string()) {
      if (!is_simple_type(v.as_string())) {
        fail(path, fmt::format("\"{}\" is not a type; expected one of array, boolean, integer, null, number, "
                               "object, string", v.as_string()));
      }
      return;
    }
    check_unique_strings(v, path, /*allow_empty=*/false);
    for (const JsonValue& t : v.as_array()) {
      if (!is_simple_type(t.as_string())) fail(path, fmt::format("\"{}\" is not a type", t.as_string()));
    }
  } else if (key == "properties" || key == "patternProperties" || key == "definitions") {
    check_schema_map(v, path, depth);
  } else if (key == "required") {
    check_unique_strings(v, path, /*allow_empty=*/true);
  } else if (key == "items") {
    if (v.is_array()) {
      check_schema_array(v, path, depth);
    } else {
      check_schema(v, path, depth);
    }
  } else if (key == "additionalItems" || key == "additionalProperties" || key == "contains" ||
             key == "propertyNames" || key == "not" || key == "if" || key == "then" || key == "else") {
    check_schema(v, path, depth);
  } else if (key == "allOf" || key == "anyOf" || key == "oneOf") {
    check_schema_array(v, path, depth);
  } else if (key == "dependencies") {
    expect(v.is_object(), "an object");
    for (const auto& [name, dep] : v.as_object()) {
      const std::string dep_path = fmt::format("{}.{}", path, name);
      if (dep.is_array()) {
        check_unique_strings(dep, dep_path, /*allow_empty=*/true);
      } else {
        check_schema(dep, dep_path, depth);
      }
    }
  } else if (key == "enum" || key == "examples") {
    expect(v.is_array(), "an array");
  } else if (key == "multipleOf") {
    expect(is_number(v) && !is_negative(v) && !(v.is_int() && v.as_int().digits == "0") &&
               !(v.is_float() && v.as_float() == 0),
           "a number greater than 0");
  } else if (key == "maximum" || key == "exclusiveMaximum" || key == "minimum" || key == "exclusiveMinimum") {
    expect(is_number(v), "a number");
  } else if (key == "maxLength" || key == "minLength" || key == "maxItems" || key == "minItems" ||
             key == "maxProperties" || key == "minProperties") {
    expect(is_integer(v) && !is_negative(v), "a non-negative integer");
  } else if (key == "uniqueItems" || key == "readOnly") {
    expect(v.is_bool(), "a boolean");
  } else if (key == "$id" || key == "$schema" || key == "$ref" || key == "$comment" || key == "title" ||
             key == "description" || key == "pattern" || key == "format" || key == "contentMediaType" ||
             key == "contentEncoding") {
    expect(v.is_string(), "a string");
  }
  // "default", "const" and unknown keywords take any value.
}

void check_schema(const JsonValue& schema, const std::string& path, int depth) {
  if (depth > 64) fail(path, "schema nested more than 64 levels deep");
  if (schema.is_bool()) return;
  if (!schema.is_object()) {
    fail(path, fmt::format("a schema must be an object or a boolean, got {} {}", schema.type_name(), shown(schema)));
  }
  for (const auto& [key, value] : schema.as_object()) {
    check_keyword(key, value, fmt::format("{}.{}", path, key), depth + 1);
  }
}

}  // namespace

void check_json_schema_draft7(const JsonValue& schema, std::string_view path) {
  if (!schema.is_object()) {
    fail(path, fmt::format("expected an object, got {} {}", schema.type_name(), shown(schema)));
  }
  check_schema(schema, std::string(path), 0);
}

}  // namespace quatre::tokenizer
