// The independent oracle of the grammar tests (schema_oracle.h).
#include "schema_oracle.h"

#include <cmath>
#include <set>


namespace quatre::grammar::testing {
namespace {

int64_t code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

const JsonValue* resolve(const JsonValue& schema, const JsonValue& root) {
  const JsonValue* r = schema.find("$ref");
  if (r == nullptr) return &schema;
  const std::string& ref = r->as_string();
  if (ref == "#") return &root;
  const std::string defs = ref.substr(2, ref.find('/', 2) - 2);
  return root.find(defs)->find(ref.substr(ref.find('/', 2) + 1));
}

bool has_type(const JsonValue& v, std::string_view t) {
  if (t == "null") return v.is_null();
  if (t == "boolean") return v.is_bool();
  if (t == "integer") return v.is_int();
  if (t == "number") return v.is_int() || v.is_float();
  if (t == "string") return v.is_string();
  if (t == "array") return v.is_array();
  return v.is_object();
}

int64_t num(const JsonValue& s, std::string_view key, int64_t fallback) {
  const JsonValue* v = s.find(key);
  return v == nullptr ? fallback : *v->as_int64();
}

}  // namespace

bool validate(const JsonValue& v, const JsonValue& schema_in, const JsonValue& root) {
  if (schema_in.is_bool()) return schema_in.as_bool();
  const JsonValue& s = *resolve(schema_in, root);
  if (const JsonValue* n = s.find("nullable"); n != nullptr && n->as_bool() && v.is_null()) return true;
  if (const JsonValue* c = s.find("const")) return v == *c;
  if (const JsonValue* e = s.find("enum")) {
    for (const JsonValue& x : e->as_array()) {
      if (x == v) return true;
    }
    return false;
  }
  if (const JsonValue* any = s.find("anyOf")) {
    for (const JsonValue& sub : any->as_array()) {
      if (validate(v, sub, root)) return true;
    }
    return false;
  }
  if (const JsonValue* one = s.find("oneOf")) {
    int hits = 0;
    for (const JsonValue& sub : one->as_array()) hits += validate(v, sub, root);
    return hits == 1;
  }
  if (const JsonValue* type = s.find("type")) {
    bool ok = false;
    if (type->is_string()) {
      ok = has_type(v, type->as_string());
    } else {
      for (const JsonValue& t : type->as_array()) ok = ok || has_type(v, t.as_string());
    }
    if (!ok) return false;
  }
  if (v.is_string()) {
    const int64_t n = code_points(v.as_string());
    return n >= num(s, "minLength", 0) && n <= num(s, "maxLength", INT64_MAX);
  }
  if (v.is_array()) {
    const auto& a = v.as_array();
    const auto n = static_cast<int64_t>(a.size());
    if (n < num(s, "minItems", 0) || n > num(s, "maxItems", INT64_MAX)) return false;
    const JsonValue* prefix = s.find("prefixItems");
    const size_t k = prefix == nullptr ? 0 : prefix->as_array().size();
    for (size_t i = 0; i < a.size(); ++i) {
      if (i < k) {
        if (!validate(a[i], prefix->as_array()[i], root)) return false;
      } else if (const JsonValue* items = s.find("items"); items != nullptr && !validate(a[i], *items, root)) {
        return false;
      }
    }
    return true;
  }
  if (v.is_object()) {
    static const JsonValue kNone = JsonValue::object();
    const JsonValue* props = s.find("properties") != nullptr ? s.find("properties") : &kNone;
    if (const JsonValue* req = s.find("required")) {
      for (const JsonValue& name : req->as_array()) {
        if (v.find(name.as_string()) == nullptr) return false;
      }
    }
    const JsonValue* extra = s.find("additionalProperties");
    for (const auto& [key, value] : v.as_object()) {
      if (const JsonValue* sub = props->find(key)) {
        if (!validate(value, *sub, root)) return false;
      } else if (extra == nullptr || !validate(value, *extra, root)) {
        return false;
      }
    }
    return true;
  }
  return true;
}

namespace {

int pick(std::mt19937& rng, int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }

std::string random_text(std::mt19937& rng, int64_t n_chars) {
  static const std::vector<std::string> pool = {"a", "b", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01",
                                                "é", "€", "𝄞", "日", "{", "}", ":", ",", "[", "]", "\x7f"};
  std::string s;
  for (int64_t i = 0; i < n_chars; ++i) s += pool[pick(rng, static_cast<int>(pool.size()))];
  return s;
}

JsonValue random_scalar(std::mt19937& rng) {
  switch (pick(rng, 6)) {
    case 0: return JsonValue::null();
    case 1: return JsonValue::boolean(pick(rng, 2) == 1);
    case 2: return JsonValue::integer(static_cast<int64_t>(rng()) - (1ll << 31));
    case 3: return JsonValue::floating(std::ldexp(static_cast<double>(rng()) - 2e9, pick(rng, 80) - 40));
    default: return JsonValue::string(random_text(rng, pick(rng, 5)));
  }
}

JsonValue str(std::string s) { return JsonValue::string(std::move(s)); }

}  // namespace

JsonValue random_value(std::mt19937& rng, int depth) {
  const int kind = depth >= 3 ? 0 : pick(rng, 4);
  if (kind == 2) {
    JsonValue::Array a;
    for (int i = pick(rng, 4); i > 0; --i) a.push_back(random_value(rng, depth + 1));
    return JsonValue::array(std::move(a));
  }
  if (kind == 3) {
    JsonValue o = JsonValue::object();
    for (int i = pick(rng, 4); i > 0; --i) o.set(std::string(1, static_cast<char>('a' + pick(rng, 5))), random_value(rng, depth + 1));
    return o;
  }
  return random_scalar(rng);
}

JsonValue random_schema(std::mt19937& rng, int depth, bool bounded) {
  JsonValue s = JsonValue::object();
  const int kind = pick(rng, depth >= 3 ? 6 : 10);
  switch (kind) {
    case 0: {
      s.set("type", str("string"));
      if (pick(rng, 2) == 1) s.set("minLength", JsonValue::integer(pick(rng, 3)));
      if (bounded || pick(rng, 2) == 1) s.set("maxLength", JsonValue::integer(3 + pick(rng, 5)));
      break;
    }
    case 1: s.set("type", str("integer")); break;
    case 2: s.set("type", str("number")); break;
    case 3: s.set("type", str(pick(rng, 2) == 1 ? "boolean" : "null")); break;
    case 4: {
      JsonValue::Array values;
      std::set<std::string> seen;
      for (int i = 1 + pick(rng, 4); i > 0; --i) {
        JsonValue v = random_scalar(rng);
        if (seen.insert(dump_compact(v)).second) values.push_back(v);
      }
      s.set("enum", JsonValue::array(std::move(values)));
      break;
    }
    case 5: s.set("const", depth >= 3 ? random_scalar(rng) : random_value(rng, 1)); break;
    case 6: case 7: {
      s.set("type", str("object"));
      JsonValue props = JsonValue::object();
      JsonValue::Array required;
      for (int i = pick(rng, 4); i > 0; --i) {
        std::string name = pick(rng, 4) == 0 ? "k\"é" + std::to_string(i) : "p" + std::to_string(i);
        props.set(name, random_schema(rng, depth + 1, bounded));
        if (pick(rng, 2) == 1) required.push_back(str(name));
      }
      s.set("properties", std::move(props));
      s.set("required", JsonValue::array(std::move(required)));
      if (pick(rng, 4) == 0) s.set("additionalProperties", JsonValue::boolean(!bounded && pick(rng, 2) == 1));
      break;
    }
    case 8: {
      s.set("type", str("array"));
      if (pick(rng, 3) == 0) {
        JsonValue::Array prefix;
        for (int i = 1 + pick(rng, 2); i > 0; --i) prefix.push_back(random_schema(rng, depth + 1, bounded));
        s.set("prefixItems", JsonValue::array(std::move(prefix)));
      }
      s.set("items", random_schema(rng, depth + 1, bounded));
      if (pick(rng, 2) == 1) s.set("minItems", JsonValue::integer(pick(rng, 2)));
      if (bounded || pick(rng, 2) == 1) s.set("maxItems", JsonValue::integer(2 + pick(rng, 3)));
      break;
    }
    default: {  // anyOf of distinct types (so that oneOf semantics agree)
      JsonValue a = JsonValue::object(), b = JsonValue::object();
      a.set("type", str("integer"));
      b = random_schema(rng, depth + 1, bounded);
      while (b.find("type") == nullptr || b.find("type")->as_string() == "integer" ||
             b.find("type")->as_string() == "number") {
        b = random_schema(rng, depth + 1, bounded);
      }
      s.set(pick(rng, 2) == 1 ? "anyOf" : "oneOf", JsonValue::array({a, b}));
      break;
    }
  }
  return s;
}

JsonValue random_document(std::mt19937& rng, const JsonValue& schema_in, const JsonValue& root, int depth) {
  if (schema_in.is_bool()) return random_value(rng, 2);
  const JsonValue& s = *resolve(schema_in, root);
  if (const JsonValue* c = s.find("const")) return *c;
  if (const JsonValue* e = s.find("enum")) return e->as_array()[pick(rng, static_cast<int>(e->as_array().size()))];
  for (const char* k : {"anyOf", "oneOf"}) {
    if (const JsonValue* alts = s.find(k)) {
      return random_document(rng, alts->as_array()[pick(rng, static_cast<int>(alts->as_array().size()))], root, depth);
    }
  }
  const JsonValue* type = s.find("type");
  std::string t = type == nullptr ? "object" : type->is_string() ? type->as_string()
                                            : type->as_array()[pick(rng, static_cast<int>(type->as_array().size()))].as_string();
  if (t == "null") return JsonValue::null();
  if (t == "boolean") return JsonValue::boolean(pick(rng, 2) == 1);
  if (t == "integer") return JsonValue::integer(static_cast<int64_t>(rng()) * (pick(rng, 2) ? 1 : -1) / (1 + pick(rng, 1000)));
  if (t == "number") {
    return pick(rng, 2) ? JsonValue::integer(pick(rng, 100))
                        : JsonValue::floating(std::ldexp(static_cast<double>(rng()) - 2e9, pick(rng, 100) - 50));
  }
  if (t == "string") {
    const int64_t lo = num(s, "minLength", 0), hi = std::min<int64_t>(num(s, "maxLength", 12), lo + 12);
    return JsonValue::string(random_text(rng, lo + pick(rng, static_cast<int>(hi - lo + 1))));
  }
  if (t == "array") {
    const JsonValue* prefix = s.find("prefixItems");
    const int64_t k = prefix == nullptr ? 0 : static_cast<int64_t>(prefix->as_array().size());
    const int64_t lo = num(s, "minItems", 0), hi = std::min<int64_t>(num(s, "maxItems", 4), depth > 2 ? lo : lo + 4);
    const int64_t n = lo + pick(rng, static_cast<int>(hi - lo + 1));
    JsonValue::Array a;
    for (int64_t i = 0; i < n; ++i) {
      a.push_back(random_document(rng, i < k ? prefix->as_array()[i] : *s.find("items"), root, depth + 1));
    }
    return JsonValue::array(std::move(a));
  }
  JsonValue o = JsonValue::object();
  std::set<std::string> required;
  if (const JsonValue* r = s.find("required")) {
    for (const JsonValue& name : r->as_array()) required.insert(name.as_string());
  }
  if (const JsonValue* props = s.find("properties")) {
    for (const auto& [name, sub] : props->as_object()) {
      if (required.contains(name) || pick(rng, 2) == 1) o.set(name, random_document(rng, sub, root, depth + 1));
    }
  }
  if (const JsonValue* extra = s.find("additionalProperties"); extra != nullptr && extra->is_bool() && extra->as_bool()) {
    for (int i = pick(rng, 3); i > 0; --i) o.set("extra" + std::to_string(i), random_value(rng, depth + 1));
  }
  return o;
}

std::string dump_compact(const JsonValue& v) {
  if (v.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < v.as_array().size(); ++i) out += (i ? "," : "") + dump_compact(v.as_array()[i]);
    return out + "]";
  }
  if (v.is_object()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, x] : v.as_object()) {
      out += (first ? "" : ",") + tokenizer::json_quote(k) + ":" + dump_compact(x);
      first = false;
    }
    return out + "}";
  }
  return tokenizer::dump_json(v);
}

}  // namespace quatre::grammar::testing
