// A JSON value that keeps what Python's json module keeps (PROTOCOL §2.7): int vs float, integers of any
// size, NaN/Infinity, object keys in insertion order; parsed like json.loads, written like
// json.dumps(obj, ensure_ascii=False). Depends on core only (no tokenizer, no nlohmann).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace quatre::tokenizer {

class JsonValue {
 public:
  // A Python int: decimal digits with an optional leading '-', never "-0", no leading zeros.
  struct Int {
    std::string digits;
    bool operator==(const Int&) const = default;
  };
  using Array = std::vector<JsonValue>;
  using Member = std::pair<std::string, JsonValue>;
  using Object = std::vector<Member>;  // insertion order; keys unique

  JsonValue() = default;  // null
  static JsonValue null() { return JsonValue(); }
  static JsonValue boolean(bool b) { return JsonValue(b); }
  static JsonValue integer(int64_t v);
  static JsonValue integer_digits(std::string digits);  // must already be canonical (see Int)
  static JsonValue floating(double v) { return JsonValue(v); }
  static JsonValue string(std::string s) { return JsonValue(std::move(s)); }
  static JsonValue array(Array a = {}) { return JsonValue(std::move(a)); }
  static JsonValue object(Object o = {}) { return JsonValue(std::move(o)); }

  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<Int>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_array() const { return std::holds_alternative<Array>(v_); }
  bool is_object() const { return std::holds_alternative<Object>(v_); }

  bool as_bool() const { return std::get<bool>(v_); }
  const Int& as_int() const { return std::get<Int>(v_); }
  double as_float() const { return std::get<double>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const Array& as_array() const { return std::get<Array>(v_); }
  Array& as_array() { return std::get<Array>(v_); }
  const Object& as_object() const { return std::get<Object>(v_); }
  Object& as_object() { return std::get<Object>(v_); }

  // The int as int64, or nullopt when it is not an int or does not fit.
  std::optional<int64_t> as_int64() const;
  // Object member by key, or nullptr (also when this is not an object).
  const JsonValue* find(std::string_view key) const;
  // Sets a member: replaces the value in place when the key exists (Python dict semantics), else appends.
  void set(std::string key, JsonValue value);

  // "null", "bool", "int", "float", "string", "array", "object": for error messages.
  const char* type_name() const;

  bool operator==(const JsonValue&) const = default;

 private:
  explicit JsonValue(bool b) : v_(b) {}
  explicit JsonValue(Int i) : v_(std::move(i)) {}
  explicit JsonValue(double d) : v_(d) {}
  explicit JsonValue(std::string s) : v_(std::move(s)) {}
  explicit JsonValue(Array a) : v_(std::move(a)) {}
  explicit JsonValue(Object o) : v_(std::move(o)) {}

  std::variant<std::monostate, bool, Int, double, std::string, Array, Object> v_;
};

// Parses JSON text like Python's json.loads: accepts NaN, Infinity and -Infinity; an integer literal
// stays an int of any size (up to 4300 digits, CPython's default limit); a float literal too large
// becomes ±Infinity; duplicate keys: the last value wins at the position of the first occurrence.
// Deviation: a lone UTF-16 surrogate escape (\ud800) becomes U+FFFD (Python keeps it; the tokenizer
// replaces it with U+FFFD before encoding anyway, PROTOCOL §1.5). Invalid UTF-8 is rejected.
// Throws InvalidRequest naming `what` (e.g. "request body") and the position of the error.
JsonValue parse_json(std::string_view text, std::string_view what = "JSON");

struct JsonDumpOptions {
  bool sort_keys = false;  // recursively, by code point (= UTF-8 byte order)
};
// json.dumps(value, ensure_ascii=False[, sort_keys=True]): ", " and ": " separators, no newlines.
std::string dump_json(const JsonValue& value, JsonDumpOptions options = {});
// How json.dumps writes a float: CPython repr (shortest round-trip digits: "1.0", "1e-05", "1e+16"),
// and "NaN", "Infinity", "-Infinity" for the non-finite values.
std::string json_float_repr(double x);
// A JSON string literal with Python's escapes (ensure_ascii=False).
std::string json_quote(std::string_view s);

}  // namespace quatre::tokenizer
