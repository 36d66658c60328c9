// Writes a JsonValue exactly like Python's json.dumps(obj, ensure_ascii=False) (PROTOCOL §2.7).
// Depends on core only.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

#include "core/check.h"
#include "tokenizer/json_value.h"

namespace quatre::tokenizer {

std::string json_float_repr(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  // Shortest round-trip digits in scientific form, e.g. "-1.2345e+02", then laid out like CPython's
  // float_repr_style "short": positional when the decimal exponent is in [-4, 16), else scientific.
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
  CHECK(ec == std::errc()) << "to_chars failed for " << x;
  const std::string_view sci(buf, static_cast<size_t>(end - buf));
  const size_t e_pos = sci.find('e');
  CHECK(e_pos != std::string_view::npos) << sci;
  std::string digits;
  for (char c : sci.substr(0, e_pos)) {
    if (c >= '0' && c <= '9') digits += c;
  }
  int exponent = 0;
  std::string_view exp_text = sci.substr(e_pos + 1);
  if (exp_text.front() == '+') exp_text.remove_prefix(1);
  std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exponent);

  std::string out = std::signbit(x) ? "-" : "";
  const int n = static_cast<int>(digits.size());
  const int decpt = exponent + 1;  // value = 0.d1d2...dn * 10^decpt
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0.";
      out.append(static_cast<size_t>(-decpt), '0');
      out += digits;
    } else if (decpt >= n) {
      out += digits;
      out.append(static_cast<size_t>(decpt - n), '0');
      out += ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(decpt));
      out += '.';
      out += digits.substr(static_cast<size_t>(decpt));
    }
    return out;
  }
  out += digits[0];
  if (n > 1) {
    out += '.';
    out += digits.substr(1);
  }
  const int e = decpt - 1;
  out += e < 0 ? "e-" : "e+";
  const std::string e_digits = std::to_string(std::abs(e));
  if (e_digits.size() < 2) out += '0';
  out += e_digits;
  return out;
}

std::string json_quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += ch;  // everything else raw, including U+007F and all non-ASCII
        }
    }
  }
  out += '"';
  return out;
}

namespace {

void dump_to(std::string& out, const JsonValue& v, const JsonDumpOptions& options) {
  if (v.is_null()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += v.as_int().digits;
  } else if (v.is_float()) {
    out += json_float_repr(v.as_float());
  } else if (v.is_string()) {
    out += json_quote(v.as_string());
  } else if (v.is_array()) {
    out += '[';
    bool first = true;
    for (const JsonValue& item : v.as_array()) {
      if (!first) out += ", ";
      first = false;
      dump_to(out, item, options);
    }
    out += ']';
  } else {
    std::vector<const JsonValue::Member*> members;
    for (const JsonValue::Member& m : v.as_object()) members.push_back(&m);
    if (options.sort_keys) {
      // Python compares str by code point; UTF-8 byte order is the same order.
      std::stable_sort(members.begin(), members.end(),
                       [](const JsonValue::Member* a, const JsonValue::Member* b) { return a->first < b->first; });
    }
    out += '{';
    bool first = true;
    for (const JsonValue::Member* m : members) {
      if (!first) out += ", ";
      first = false;
      out += json_quote(m->first);
      out += ": ";
      dump_to(out, m->second, options);
    }
    out += '}';
  }
}

}  // namespace

std::string dump_json(const JsonValue& value, JsonDumpOptions options) {
  std::string out;
  dump_to(out, value, options);
  return out;
}

}  // namespace quatre::tokenizer
