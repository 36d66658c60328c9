// JsonValue accessors and the json.loads-compatible parser (PROTOCOL §2.7).
// Depends on core only.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>

#include "core/error.h"
#include "tokenizer/json_value.h"

namespace quatre::tokenizer {

JsonValue JsonValue::integer(int64_t v) { return JsonValue(Int{std::to_string(v)}); }

JsonValue JsonValue::integer_digits(std::string digits) { return JsonValue(Int{std::move(digits)}); }

std::optional<int64_t> JsonValue::as_int64() const {
  if (!is_int()) return std::nullopt;
  const std::string& d = as_int().digits;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(d.data(), d.data() + d.size(), v);
  if (ec != std::errc() || end != d.data() + d.size()) return std::nullopt;
  return v;
}

const JsonValue* JsonValue::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : as_object()) {
    if (k == key) return &v;
  }
  return nullptr;
}

void JsonValue::set(std::string key, JsonValue value) {
  for (auto& [k, v] : as_object()) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  as_object().emplace_back(std::move(key), std::move(value));
}

const char* JsonValue::type_name() const {
  switch (v_.index()) {
    case 0: return "null";
    case 1: return "bool";
    case 2: return "int";
    case 3: return "float";
    case 4: return "string";
    case 5: return "array";
    default: return "object";
  }
}

namespace {

constexpr int kMaxDepth = 500;           // Python's default recursion limit is about 1000 frames
constexpr size_t kMaxIntDigits = 4300;   // CPython's sys.int_info.default_max_str_digits

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length of the valid UTF-8 sequence starting at s[i] (lead byte >= 0x80), or 0 when invalid.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

class Parser {
 public:
  Parser(std::string_view text, std::string_view what) : s_(text), what_(what) {}

  JsonValue parse_document() {
    skip_ws();
    JsonValue v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("Extra data");
    return v;
  }

 private:
  [[noreturn]] void fail(std::string_view msg) const { fail_at(msg, pos_); }

  [[noreturn]] void fail_at(std::string_view msg, size_t pos) const {
    size_t line = 1, line_start = 0;
    for (size_t i = 0; i < pos && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        line_start = i + 1;
      }
    }
    throw InvalidRequest(fmt::format("{} is not valid JSON: {}: line {} column {} (char {})", what_, msg, line,
                                     pos - line_start + 1, pos));
  }

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }

  void skip_ws() {
    while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  bool consume_literal(std::string_view lit) {
    if (s_.substr(pos_, lit.size()) != lit) return false;
    pos_ += lit.size();
    return true;
  }

  JsonValue parse_value(int depth) {
    if (depth > kMaxDepth) fail("nesting too deep");
    switch (peek()) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"': return JsonValue::string(parse_string());
      case 'n':
        if (consume_literal("null")) return JsonValue::null();
        break;
      case 't':
        if (consume_literal("true")) return JsonValue::boolean(true);
        break;
      case 'f':
        if (consume_literal("false")) return JsonValue::boolean(false);
        break;
      case 'N':
        if (consume_literal("NaN")) return JsonValue::floating(std::numeric_limits<double>::quiet_NaN());
        break;
      case 'I':
        if (consume_literal("Infinity")) return JsonValue::floating(std::numeric_limits<double>::infinity());
        break;
      case '-':
        if (consume_literal("-Infinity")) return JsonValue::floating(-std::numeric_limits<double>::infinity());
        return parse_number();
      default:
        if (peek() >= '0' && peek() <= '9') return parse_number();
        break;
    }
    fail("Expecting value");
  }

  JsonValue parse_object(int depth) {
    ++pos_;  // '{'
    JsonValue obj = JsonValue::object();
    std::unordered_map<std::string, size_t> index;  // key -> position, for "last value wins in place"
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return obj;
    }
    while (true) {
      if (peek() != '"') fail("Expecting property name enclosed in double quotes");
      std::string key = parse_string();
      skip_ws();
      if (peek() != ':') fail("Expecting ':' delimiter");
      ++pos_;
      skip_ws();
      JsonValue value = parse_value(depth + 1);
      auto& members = obj.as_object();
      auto [it, inserted] = index.try_emplace(key, members.size());
      if (inserted) {
        members.emplace_back(std::move(key), std::move(value));
      } else {
        members[it->second].second = std::move(value);
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return obj;
      }
      fail("Expecting ',' delimiter");
    }
  }

  JsonValue parse_array(int depth) {
    ++pos_;  // '['
    JsonValue arr = JsonValue::array();
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return arr;
    }
    while (true) {
      arr.as_array().push_back(parse_value(depth + 1));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return arr;
      }
      fail("Expecting ',' delimiter");
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > s_.size()) fail("Invalid \\uXXXX escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_ + k];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        fail("Invalid \\uXXXX escape");
      }
    }
    pos_ += 4;
    return v;
  }

  std::string parse_string() {
    const size_t start = pos_;
    ++pos_;  // '"'
    std::string out;
    while (true) {
      if (at_end()) fail_at("Unterminated string starting at", start);
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail("Invalid control character at");
      if (c >= 0x80) {
        const size_t n = utf8_sequence_length(s_, pos_);
        if (n == 0) fail("Invalid UTF-8 byte in string at");
        out.append(s_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (at_end()) fail_at("Unterminated string starting at", start);
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(pos_, 2) == "\\u") {
            const size_t save = pos_;
            pos_ += 2;
            const uint32_t low = parse_hex4();
            if (low >= 0xDC00 && low <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else {
              pos_ = save;  // the second escape is read on its own next time round
            }
          }
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // lone surrogate
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          fail("Invalid \\escape");
      }
    }
  }

  JsonValue parse_number() {
    const size_t start = pos_;
    const bool negative = peek() == '-';
    if (negative) ++pos_;
    const auto is_digit = [&] { return !at_end() && s_[pos_] >= '0' && s_[pos_] <= '9'; };
    if (!is_digit()) fail_at("Expecting value", start);
    if (s_[pos_] == '0') {
      ++pos_;
    } else {
      while (is_digit()) ++pos_;
    }
    const size_t int_end = pos_;
    bool is_float = false;
    if (peek() == '.' && pos_ + 1 < s_.size() && s_[pos_ + 1] >= '0' && s_[pos_ + 1] <= '9') {
      is_float = true;
      ++pos_;
      while (is_digit()) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      size_t p = pos_ + 1;
      if (p < s_.size() && (s_[p] == '+' || s_[p] == '-')) ++p;
      if (p < s_.size() && s_[p] >= '0' && s_[p] <= '9') {
        is_float = true;
        pos_ = p;
        while (is_digit()) ++pos_;
      }
    }
    const std::string_view literal = s_.substr(start, pos_ - start);
    if (!is_float) {
      std::string digits(s_.substr(start + (negative ? 1 : 0), int_end - start - (negative ? 1 : 0)));
      if (digits.size() > kMaxIntDigits) {
        fail_at(fmt::format("integer literal has {} digits, more than the limit of {}", digits.size(),
                            kMaxIntDigits),
                start);
      }
      if (negative && digits != "0") digits.insert(digits.begin(), '-');
      return JsonValue::integer_digits(std::move(digits));
    }
    return JsonValue::floating(parse_float(literal));
  }

  // float(literal) of Python: correctly rounded; out of range gives ±inf (overflow) or ±0.0 (underflow).
  static double parse_float(std::string_view literal) {
    double v = 0;
    auto [end, ec] = std::from_chars(literal.data(), literal.data() + literal.size(), v);
    if (ec == std::errc()) return v;
    // Out of range: decide overflow vs underflow from the decimal exponent of the first nonzero digit.
    const bool negative = literal.front() == '-';
    const size_t e_pos = literal.find_first_of("eE");
    const std::string_view mantissa = literal.substr(0, e_pos);
    long long exponent = 0;
    if (e_pos != std::string_view::npos) {
      std::string_view exp_text = literal.substr(e_pos + 1);
      if (!exp_text.empty() && exp_text.front() == '+') exp_text.remove_prefix(1);
      auto r = std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exponent);
      if (r.ec == std::errc::result_out_of_range) exponent = exp_text.front() == '-' ? -(1LL << 40) : (1LL << 40);
      // Beyond any digit count a text can hold, so exponent + k below cannot overflow (9e...9223372036854775807).
      exponent = std::clamp(exponent, -(1LL << 40), 1LL << 40);
    }
    // The value is about 10^(exponent + k): k = number of significant integer digits, or minus the
    // number of zeros between the point and the first nonzero digit. Only the sign of that matters here.
    long long k = 0;
    bool seen_point = false, seen_nonzero = false;
    for (char c : mantissa) {
      if (c == '.') {
        seen_point = true;
      } else if (c >= '0' && c <= '9') {
        if (c != '0') seen_nonzero = true;
        if (!seen_point && seen_nonzero) ++k;
        if (seen_point && !seen_nonzero) --k;
      }
    }
    const long long magnitude = exponent + k;
    const double r = magnitude > 0 ? std::numeric_limits<double>::infinity() : 0.0;
    return negative ? -r : r;
  }

  std::string_view s_;
  std::string_view what_;
  size_t pos_ = 0;
};

}  // namespace

JsonValue parse_json(std::string_view text, std::string_view what) { return Parser(text, what).parse_document(); }

}  // namespace quatre::tokenizer
