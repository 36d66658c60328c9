// The JSON-schema compiler: one grammar rule per schema node, shared rules for strings, numbers and free JSON.
#include "grammar/json_schema.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "core/error.h"
#include "tokenizer/chat_request.h"

namespace quatre::grammar {
namespace {

using tokenizer::JsonValue;

constexpr int64_t kMaxChain = 10000;  // bound of minLength/maxLength/minItems/maxItems that we unroll
constexpr int kIntDigits = 20, kFracDigits = 20, kExpDigits = 4;
constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max();

const std::set<std::string_view>& ignored_keywords() {
  static const std::set<std::string_view> k = {
      "title", "description", "default", "examples", "format", "$schema", "$id", "$comment", "deprecated",
      "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "$defs", "definitions", "strict"};
  return k;
}

const std::set<std::string_view>& supported_keywords() {
  static const std::set<std::string_view> k = {
      "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
      "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "nullable", "uniqueItems"};
  return k;
}

[[noreturn]] void refuse(std::string_view path, std::string_view problem) {
  throw InvalidRequest(fmt::format("{}: {}", path, problem));
}

class SchemaCompiler {
 public:
  SchemaCompiler(GrammarBuilder& b, const JsonValue& root, std::string_view root_path)
      : b_(b), root_(root), root_path_(root_path) {}

  uint32_t compile(const JsonValue& s, const std::string& path);
  uint32_t any_object();

 private:
  // Shared rules, made on first use.
  uint32_t ws();
  uint32_t any_value();
  uint32_t string_char();
  uint32_t string_body();
  uint32_t number();
  uint32_t integer();
  uint32_t digits(int min, int max);

  uint32_t compile_object_node(const JsonValue& s, const std::string& path);
  uint32_t compile_types(const JsonValue& s, const std::string& path);
  uint32_t compile_type(std::string_view type, const JsonValue& s, const std::string& path);
  uint32_t compile_object(const JsonValue& s, const std::string& path);
  uint32_t compile_array(const JsonValue& s, const std::string& path);
  uint32_t compile_string(const JsonValue& s, const std::string& path);
  uint32_t compile_ref(const std::string& ref, const std::string& path);
  Seq value_literal(const JsonValue& v, const std::string& path);
  int64_t count(const JsonValue& s, std::string_view key, int64_t fallback, const std::string& path);

  GrammarBuilder& b_;
  const JsonValue& root_;
  std::string root_path_;
  std::map<std::string, uint32_t> shared_;  // name -> rule
  std::map<std::string, uint32_t> refs_;    // $ref -> rule
};

uint32_t SchemaCompiler::ws() {
  auto [it, fresh] = shared_.try_emplace("ws", 0);
  if (fresh) it->second = b_.rule("ws", {{}, literal(" ")});
  return it->second;
}

// One JSON string character: an unescaped code point (valid UTF-8, no '"', '\\' or control) or an escape.
uint32_t SchemaCompiler::string_char() {
  auto [it, fresh] = shared_.try_emplace("char", 0);
  if (!fresh) return it->second;
  SymbolSet plain;
  for (int c = 0x20; c < 0x80; ++c) plain.set(c);
  plain.reset('"');
  plain.reset('\\');
  SymbolSet escaped;
  for (char c : std::string_view("\"\\/bfnrt")) escaped.set(static_cast<uint8_t>(c));
  SymbolSet hex;
  for (char c : std::string_view("0123456789abcdefABCDEF")) hex.set(static_cast<uint8_t>(c));
  const Item cont = byte_range(0x80, 0xBF);
  it->second = b_.rule("char", {
      {symbols(plain)},
      {byte_range('\\', '\\'), symbols(escaped)},
      Seq{byte_range('\\', '\\'), byte_range('u', 'u'), symbols(hex), symbols(hex), symbols(hex), symbols(hex)},
      {byte_range(0xC2, 0xDF), cont},
      {byte_range(0xE0, 0xE0), byte_range(0xA0, 0xBF), cont},
      {byte_range(0xE1, 0xEC), cont, cont},
      {byte_range(0xED, 0xED), byte_range(0x80, 0x9F), cont},
      {byte_range(0xEE, 0xEF), cont, cont},
      {byte_range(0xF0, 0xF0), byte_range(0x90, 0xBF), cont, cont},
      {byte_range(0xF1, 0xF3), cont, cont, cont},
      {byte_range(0xF4, 0xF4), byte_range(0x80, 0x8F), cont, cont},
  });
  return it->second;
}

// Characters then the closing quote: body := char body | '"'. Plain ASCII is its own alternative so that the
// automaton state inside a string repeats (the token mask cache then hits).
uint32_t SchemaCompiler::string_body() {
  auto [it, fresh] = shared_.try_emplace("string_body", 0);
  if (!fresh) return it->second;
  const uint32_t body = b_.declare("string_body");
  it->second = body;
  b_.define(body, {{ref(string_char()), ref(body)}, literal("\"")});
  return body;
}

// min..max digits as a chain of rules: d_k := [0-9] d_{k+1} | "" (once k >= min).
uint32_t SchemaCompiler::digits(int min, int max) {
  auto [it, fresh] = shared_.try_emplace(fmt::format("digits{}_{}", min, max), 0);
  if (!fresh) return it->second;
  uint32_t next = b_.rule("digits_end", {{}});
  for (int k = max - 1; k >= 0; --k) {
    std::vector<Seq> alts = {{byte_range('0', '9'), ref(next)}};
    if (k >= min) alts.push_back({});
    next = b_.rule(fmt::format("digits{}", k), std::move(alts));
  }
  it->second = next;
  return next;
}

// -?(0|[1-9][0-9]{0,19})
uint32_t SchemaCompiler::integer() {
  auto [it, fresh] = shared_.try_emplace("integer", 0);
  if (!fresh) return it->second;
  const uint32_t sign = b_.rule("sign", {{}, literal("-")});
  it->second = b_.rule("integer", {Seq{ref(sign)} + literal("0"),
                                   Seq{ref(sign), byte_range('1', '9'), ref(digits(0, kIntDigits - 1))}});
  return it->second;
}

// integer (.[0-9]{1,20})? ([eE][+-]?[0-9]{1,4})?
uint32_t SchemaCompiler::number() {
  auto [it, fresh] = shared_.try_emplace("number", 0);
  if (!fresh) return it->second;
  const uint32_t frac = b_.rule("fraction", {{}, literal(".") + ref(digits(1, kFracDigits))});
  SymbolSet e, pm;
  e.set('e');
  e.set('E');
  pm.set('+');
  pm.set('-');
  const uint32_t exp_sign = b_.rule("exp_sign", {{}, {symbols(pm)}});
  const uint32_t exp = b_.rule("exponent", {{}, {symbols(e), ref(exp_sign), ref(digits(1, kExpDigits))}});
  it->second = b_.rule("number", {{ref(integer()), ref(frac), ref(exp)}});
  return it->second;
}

uint32_t SchemaCompiler::any_value() {
  auto [it, fresh] = shared_.try_emplace("value", 0);
  if (!fresh) return it->second;
  const uint32_t value = b_.declare("value");
  it->second = value;
  const uint32_t string = b_.rule("string", {literal("\"") + ref(string_body())});
  const uint32_t member = b_.rule("member", {{ref(string), byte_range(':', ':'), ref(ws()), ref(value)}});
  const uint32_t members = b_.declare("members");
  b_.define(members, {literal("}"), literal(",") + ref(ws()) + ref(member) + ref(members)});
  const uint32_t object = b_.rule("object", {literal("{}"), literal("{") + ref(member) + ref(members)});
  const uint32_t elems = b_.declare("elements");
  b_.define(elems, {literal("]"), literal(",") + ref(ws()) + ref(value) + ref(elems)});
  const uint32_t array = b_.rule("array", {literal("[]"), literal("[") + ref(value) + ref(elems)});
  shared_["object"] = object;
  b_.define(value, {{ref(object)}, {ref(array)}, {ref(string)}, {ref(number())}, literal("true"),
                    literal("false"), literal("null")});
  return value;
}

uint32_t SchemaCompiler::any_object() {
  any_value();
  return shared_.at("object");
}

int64_t SchemaCompiler::count(const JsonValue& s, std::string_view key, int64_t fallback, const std::string& path) {
  const JsonValue* v = s.find(key);
  if (v == nullptr) return fallback;
  const std::optional<int64_t> n = v->as_int64();
  if (!n || *n < 0) refuse(fmt::format("{}.{}", path, key), "expected a non-negative integer");
  return *n;
}

uint32_t SchemaCompiler::compile(const JsonValue& s, const std::string& path) {
  if (s.is_bool()) {
    if (!s.as_bool()) refuse(path, "the schema false admits no value");
    return any_value();
  }
  if (!s.is_object()) refuse(path, fmt::format("expected a schema object, got {}", s.type_name()));
  return compile_object_node(s, path);
}

uint32_t SchemaCompiler::compile_object_node(const JsonValue& s, const std::string& path) {
  for (const auto& [key, value] : s.as_object()) {
    if (!ignored_keywords().contains(key) && !supported_keywords().contains(key)) {
      refuse(fmt::format("{}.{}", path, key), fmt::format("unsupported JSON Schema keyword \"{}\"", key));
    }
  }
  if (const JsonValue* u = s.find("uniqueItems"); u != nullptr && !(u->is_bool() && !u->as_bool())) {
    refuse(path + ".uniqueItems", "uniqueItems true is not supported");
  }
  if (const JsonValue* r = s.find("$ref")) {
    if (!r->is_string()) refuse(path + ".$ref", "expected a string");
    return compile_ref(r->as_string(), path + ".$ref");
  }
  const bool nullable = s.find("nullable") != nullptr && s.find("nullable")->is_bool() && s.find("nullable")->as_bool();
  const auto with_null = [&](uint32_t rule) {
    return nullable ? b_.rule(path + "?", {{ref(rule)}, literal("null")}) : rule;
  };
  if (const JsonValue* c = s.find("const")) return with_null(b_.rule(path + ".const", {value_literal(*c, path)}));
  if (const JsonValue* e = s.find("enum")) {
    if (!e->is_array() || e->as_array().empty()) refuse(path + ".enum", "expected a non-empty array");
    std::vector<Seq> alts;
    for (const JsonValue& v : e->as_array()) alts.push_back(value_literal(v, path + ".enum"));
    return with_null(b_.rule(path + ".enum", std::move(alts)));
  }
  for (std::string_view combinator : {"anyOf", "oneOf", "allOf"}) {
    const JsonValue* list = s.find(combinator);
    if (list == nullptr) continue;
    const std::string at = fmt::format("{}.{}", path, combinator);
    if (!list->is_array() || list->as_array().empty()) refuse(at, "expected a non-empty array of schemas");
    for (std::string_view other : {"type", "properties", "items", "prefixItems", "anyOf", "oneOf", "allOf"}) {
      if (other != combinator && s.find(other) != nullptr) {
        refuse(at, fmt::format("{} together with \"{}\" in one schema is not supported", combinator, other));
      }
    }
    if (combinator == "allOf" && list->as_array().size() != 1) refuse(at, "allOf with more than one schema");
    std::vector<Seq> alts;
    for (size_t i = 0; i < list->as_array().size(); ++i) {
      alts.push_back({ref(compile(list->as_array()[i], fmt::format("{}[{}]", at, i)))});
    }
    return with_null(b_.rule(at, std::move(alts)));
  }
  return with_null(compile_types(s, path));
}

uint32_t SchemaCompiler::compile_types(const JsonValue& s, const std::string& path) {
  const JsonValue* type = s.find("type");
  if (type == nullptr) {  // infer from the keywords, else any value
    for (std::string_view k : {"properties", "required", "additionalProperties"}) {
      if (s.find(k) != nullptr) return compile_type("object", s, path);
    }
    for (std::string_view k : {"items", "prefixItems", "minItems", "maxItems"}) {
      if (s.find(k) != nullptr) return compile_type("array", s, path);
    }
    for (std::string_view k : {"minLength", "maxLength"}) {
      if (s.find(k) != nullptr) return compile_type("string", s, path);
    }
    return any_value();
  }
  if (type->is_string()) return compile_type(type->as_string(), s, path);
  if (!type->is_array() || type->as_array().empty()) refuse(path + ".type", "expected a type name or a list of them");
  std::vector<Seq> alts;
  for (const JsonValue& t : type->as_array()) {
    if (!t.is_string()) refuse(path + ".type", "expected a list of type names");
    alts.push_back({ref(compile_type(t.as_string(), s, path))});
  }
  return b_.rule(path, std::move(alts));
}

uint32_t SchemaCompiler::compile_type(std::string_view type, const JsonValue& s, const std::string& path) {
  if (type == "object") return compile_object(s, path);
  if (type == "array") return compile_array(s, path);
  if (type == "string") return compile_string(s, path);
  if (type == "number") return number();
  if (type == "integer") return integer();
  if (type == "boolean") return b_.rule(path + ".boolean", {literal("true"), literal("false")});
  if (type == "null") return b_.rule(path + ".null", {literal("null")});
  refuse(path + ".type", fmt::format("\"{}\" is not a JSON Schema type", type));
}

// Members in the order of `properties`. none_i / some_i: the members from i on, when no member / some member
// has been written already (a comma is needed before the next one only in the second case).
uint32_t SchemaCompiler::compile_object(const JsonValue& s, const std::string& path) {
  static const JsonValue kEmpty = JsonValue::object();
  const JsonValue* props = s.find("properties");
  if (props == nullptr) props = &kEmpty;
  if (!props->is_object()) refuse(path + ".properties", "expected an object of schemas");
  std::set<std::string> required;
  if (const JsonValue* r = s.find("required")) {
    if (!r->is_array()) refuse(path + ".required", "expected an array of strings");
    for (const JsonValue& name : r->as_array()) {
      if (!name.is_string()) refuse(path + ".required", "expected an array of strings");
      if (props->find(name.as_string()) == nullptr) {
        refuse(path + ".required", fmt::format("required property \"{}\" is not declared in properties",
                                               name.as_string()));
      }
      required.insert(name.as_string());
    }
  }
  std::optional<uint32_t> extra;  // rule of one additional member
  if (const JsonValue* a = s.find("additionalProperties"); a != nullptr && !(a->is_bool() && !a->as_bool())) {
    const uint32_t value = compile(*a, path + ".additionalProperties");
    const uint32_t key = b_.rule("key", {literal("\"") + ref(string_body())});
    extra = b_.rule(path + ".additionalProperties", {{ref(key), byte_range(':', ':'), ref(ws()), ref(value)}});
  }
  const auto& members = props->as_object();
  const size_t n = members.size();
  std::vector<uint32_t> none(n + 1), some(n + 1);
  none[n] = b_.declare(path + ".end");
  some[n] = b_.declare(path + ".end,");
  if (extra) {
    b_.define(none[n], {literal("}"), Seq{ref(*extra), ref(some[n])}});
    b_.define(some[n], {literal("}"), literal(",") + ref(ws()) + ref(*extra) + ref(some[n])});
  } else {
    b_.define(none[n], {literal("}")});
    b_.define(some[n], {literal("}")});
  }
  for (size_t i = n; i-- > 0;) {
    const auto& [name, sub] = members[i];
    const std::string at = fmt::format("{}.properties.{}", path, name);
    const Seq member = literal(tokenizer::json_quote(name) + ":") + ref(ws()) + ref(compile(sub, at));
    const bool optional = !required.contains(name);
    std::vector<Seq> none_alts = {member + ref(some[i + 1])};
    std::vector<Seq> some_alts = {literal(",") + ref(ws()) + member + ref(some[i + 1])};
    if (optional) {
      none_alts.push_back({ref(none[i + 1])});
      some_alts.push_back({ref(some[i + 1])});
    }
    none[i] = b_.rule(at, std::move(none_alts));
    some[i] = b_.rule(at + ",", std::move(some_alts));
  }
  return b_.rule(path, {literal("{") + ref(none[0])});
}

// after_i: the array once i items are written: "]" when i >= minItems, or ", item_i" when i < maxItems.
uint32_t SchemaCompiler::compile_array(const JsonValue& s, const std::string& path) {
  std::vector<uint32_t> prefix;
  if (const JsonValue* p = s.find("prefixItems")) {
    if (!p->is_array()) refuse(path + ".prefixItems", "expected an array of schemas");
    for (size_t i = 0; i < p->as_array().size(); ++i) {
      prefix.push_back(compile(p->as_array()[i], fmt::format("{}.prefixItems[{}]", path, i)));
    }
  }
  const auto k = static_cast<int64_t>(prefix.size());
  int64_t lo = count(s, "minItems", 0, path), hi = count(s, "maxItems", kUnbounded, path);
  std::optional<uint32_t> item;
  const JsonValue* items = s.find("items");
  if (items != nullptr && items->is_array()) {
    refuse(path + ".items", "items as a list (draft-07 tuples) is not supported; use prefixItems");
  }
  if (items != nullptr && items->is_bool() && !items->as_bool()) {
    hi = std::min(hi, k);
  } else {
    item = items == nullptr ? any_value() : compile(*items, path + ".items");
  }
  if (lo > hi) refuse(path, fmt::format("minItems {} exceeds the most items the schema allows ({})", lo, hi));
  const int64_t unrolled = hi == kUnbounded ? std::max(std::max(k, lo), int64_t{1}) : hi;  // after_0 has no comma: loop on >= 1
  if (unrolled > kMaxChain) refuse(path, fmt::format("array bounds above {} are not supported", kMaxChain));
  const auto elem = [&](int64_t i) { return i < k ? prefix[i] : *item; };
  std::vector<uint32_t> after(unrolled + 1);
  for (int64_t i = 0; i <= unrolled; ++i) after[i] = b_.declare(fmt::format("{}[{}:]", path, i));
  for (int64_t i = 0; i <= unrolled; ++i) {
    std::vector<Seq> alts;
    if (i >= lo) alts.push_back(literal("]"));
    if (i < hi) {
      const uint32_t next = i < unrolled ? after[i + 1] : after[i];  // the last one loops when unbounded
      alts.push_back(i == 0 ? Seq{ref(elem(i)), ref(next)} : literal(",") + ref(ws()) + ref(elem(i)) + ref(next));
    }
    b_.define(after[i], std::move(alts));
  }
  return b_.rule(path, {literal("[") + ref(after[0])});
}

uint32_t SchemaCompiler::compile_string(const JsonValue& s, const std::string& path) {
  const int64_t lo = count(s, "minLength", 0, path), hi = count(s, "maxLength", kUnbounded, path);
  if (lo == 0 && hi == kUnbounded) return b_.rule("string", {literal("\"") + ref(string_body())});
  if (lo > hi) refuse(path, fmt::format("minLength {} exceeds maxLength {}", lo, hi));
  const int64_t unrolled = hi == kUnbounded ? lo : hi;
  if (unrolled > kMaxChain) refuse(path, fmt::format("string length bounds above {} are not supported", kMaxChain));
  // rest_i: the string once i characters are written.
  uint32_t next = hi == kUnbounded ? string_body() : b_.rule(path + ".end", {literal("\"")});
  for (int64_t i = unrolled - 1; i >= 0; --i) {
    std::vector<Seq> alts = {{ref(string_char()), ref(next)}};
    if (i >= lo) alts.push_back(literal("\""));
    next = b_.rule(fmt::format("{}[{}]", path, i), std::move(alts));
  }
  return b_.rule(path, {literal("\"") + ref(next)});
}

uint32_t SchemaCompiler::compile_ref(const std::string& ref_text, const std::string& path) {
  if (auto it = refs_.find(ref_text); it != refs_.end()) return it->second;
  if (ref_text.empty() || ref_text[0] != '#') refuse(path, fmt::format("only local $refs (\"#...\") are supported, got \"{}\"", ref_text));
  const JsonValue* target = &root_;
  std::string pointer = ref_text.substr(1);
  size_t pos = 0;
  while (pos < pointer.size()) {  // JSON pointer: /a/b with ~0 ~1 escapes
    if (pointer[pos] != '/') refuse(path, fmt::format("malformed $ref \"{}\"", ref_text));
    const size_t end = std::min(pointer.find('/', pos + 1), pointer.size());
    std::string token = pointer.substr(pos + 1, end - pos - 1);
    for (size_t i = 0; (i = token.find('~', i)) != std::string::npos; ++i) {
      if (i + 1 < token.size() && (token[i + 1] == '0' || token[i + 1] == '1')) {
        token.replace(i, 2, token[i + 1] == '0' ? "~" : "/");
      }
    }
    const JsonValue* next = nullptr;
    if (target->is_object()) {
      next = target->find(token);
    } else if (target->is_array() && !token.empty() && token.find_first_not_of("0123456789") == std::string::npos &&
               std::stoull(token) < target->as_array().size()) {
      next = &target->as_array()[std::stoull(token)];
    }
    if (next == nullptr) refuse(path, fmt::format("$ref \"{}\" points to nothing in the schema", ref_text));
    target = next;
    pos = end;
  }
  const uint32_t rule = b_.declare(fmt::format("{}({})", path, ref_text));
  refs_[ref_text] = rule;  // before compiling: the target may refer to itself
  b_.define(rule, {{ref(compile(*target, fmt::format("{}{}", root_path_, ref_text.substr(1))))}});
  return rule;
}

// The text of one JSON value as it must be written (objects and arrays allow the optional spaces).
Seq SchemaCompiler::value_literal(const JsonValue& v, const std::string& path) {
  if (v.is_float()) {
    if (!std::isfinite(v.as_float())) refuse(path, "NaN and Infinity are not JSON values");
    return literal(tokenizer::json_float_repr(v.as_float()));
  }
  if (v.is_array()) {
    Seq seq = literal("[");
    for (size_t i = 0; i < v.as_array().size(); ++i) {
      if (i > 0) seq = seq + literal(",") + ref(ws());
      seq = seq + value_literal(v.as_array()[i], path);
    }
    return seq + literal("]");
  }
  if (v.is_object()) {
    Seq seq = literal("{");
    bool first = true;
    for (const auto& [key, value] : v.as_object()) {
      if (!first) seq = seq + literal(",") + ref(ws());
      first = false;
      seq = seq + literal(tokenizer::json_quote(key) + ":") + ref(ws()) + value_literal(value, path);
    }
    return seq + literal("}");
  }
  return literal(tokenizer::dump_json(v));
}

}  // namespace

uint32_t add_json_schema(GrammarBuilder& builder, const JsonValue& schema, std::string_view path) {
  tokenizer::check_json_schema_draft7(schema, path);
  SchemaCompiler compiler(builder, schema, path);
  return compiler.compile(schema, std::string(path));
}

uint32_t add_any_json_object(GrammarBuilder& builder) {
  static const JsonValue kEmpty = JsonValue::object();
  SchemaCompiler compiler(builder, kEmpty, "json_object");
  return compiler.any_object();
}

Grammar json_schema_grammar(const JsonValue* schema, std::string_view path) {
  GrammarBuilder b;
  const uint32_t root = schema != nullptr ? add_json_schema(b, *schema, path) : add_any_json_object(b);
  return std::move(b).finish(root);
}

}  // namespace quatre::grammar
