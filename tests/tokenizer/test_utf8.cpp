// Tests of the UTF-8 helpers: replace decoding against Python's bytes.decode("utf-8", "replace") (fixed vectors)
// and against a brute-force oracle built from the definition of "maximal subpart" (Unicode §3.9).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "tekken_test_util.h"
#include "tokenizer/utf8.h"

namespace quatre::tokenizer {
namespace {

using testing::escaped;

std::string replaced(std::string_view bytes) {
  std::string out;
  utf8::append_replacing_invalid(bytes, out);
  return out;
}

const std::string kFffd = "\xEF\xBF\xBD";

// Expected values printed by CPython 3.11: bytes.fromhex(h).decode("utf-8", "replace").
TEST(Utf8, ReplaceMatchesPython) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xE2\x82", kFffd},                               // PROTOCOL §1.6
      {"\xE2\x28\xA1", kFffd + "(" + kFffd},             // §1.6
      {"\xC0\xAF", kFffd + kFffd},                       // §1.6 overlong
      {"\xED\xA0\x80", kFffd + kFffd + kFffd},           // §1.6 encoded surrogate
      {"\xF0\x9F\x98", kFffd},                           // truncated emoji
      {"\xF4\x90\x80\x80", kFffd + kFffd + kFffd + kFffd},  // above U+10FFFF
      {"\xF5", kFffd},
      {"a\x80" "b", "a" + kFffd + "b"},
      {"\xE0\x80\xAF", kFffd + kFffd + kFffd},
      {"\xEF\xBF\xBD", kFffd},
      {"\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80"},
      {"\xF0\x9F\x98\x41", kFffd + "A"},
      {"\xED\x9F\xBF", "\xED\x9F\xBF"},        // U+D7FF
      {"\xF0\x90\x80\x80", "\xF0\x90\x80\x80"},  // U+10000
      {"\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF"},  // U+10FFFF
      {"\xC2", kFffd},
      {"\xDF\xBF", "\xDF\xBF"},
      {"\xE1\x80", kFffd},
      {"\xF1\x80\x80", kFffd},
      {"\xFF\xFE", kFffd + kFffd},
      {"", ""},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(replaced(in), want) << "input " << escaped(in);
}

// Independent oracle: decode code points arithmetically (no lead-byte tables); a byte string is a prefix of a
// well-formed sequence when some continuation makes it one.
bool is_well_formed(std::string_view s) {
  if (s.empty() || s.size() > 4) return false;
  const auto b0 = static_cast<unsigned char>(s[0]);
  const size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
  if (n != s.size()) return false;
  uint32_t cp = n == 1 ? b0 : b0 & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[k]);
    if ((b & 0xC0) != 0x80) return false;
    cp = cp << 6 | (b & 0x3F);
  }
  const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  return cp >= min_cp[n] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

bool is_completable(std::string s) {
  if (is_well_formed(s)) return true;
  if (s.size() >= 4) return false;
  for (const unsigned char c : {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF}) {
    if (is_completable(s + static_cast<char>(c))) return true;
  }
  return false;
}

std::string oracle_replace(std::string_view in) {
  std::string out;
  size_t i = 0;
  while (i < in.size()) {
    size_t n_char = 0;
    for (size_t n = 1; n <= 4 && i + n <= in.size(); ++n) {
      if (is_well_formed(in.substr(i, n))) n_char = n;
    }
    if (n_char > 0) {
      out.append(in.substr(i, n_char));
      i += n_char;
      continue;
    }
    size_t n_bad = 1;  // the maximal subpart: longest prefix that could still become a character
    while (n_bad < 3 && i + n_bad < in.size() && is_completable(std::string(in.substr(i, n_bad + 1)))) ++n_bad;
    out += kFffd;
    i += n_bad;
  }
  return out;
}

TEST(Utf8, ReplaceMatchesMaximalSubpartOracleOnRandomBytes) {
  std::mt19937 rng(20260317);
  const unsigned char interesting[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                       0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
  for (int trial = 0; trial < 20000; ++trial) {
    std::string s;
    const int n = static_cast<int>(rng() % 12);
    for (int k = 0; k < n; ++k) {
      s += static_cast<char>(rng() % 2 ? interesting[rng() % sizeof(interesting)] : rng() % 256);
    }
    ASSERT_EQ(replaced(s), oracle_replace(s)) << "input " << escaped(s);
    const std::string r = replaced(s);
    EXPECT_EQ(utf8::valid_prefix_length(r), r.size());
    EXPECT_EQ(utf8::valid_prefix_length(s) == s.size(), r == s);
  }
}

TEST(Utf8, ValidPrefixLength) {
  EXPECT_EQ(utf8::valid_prefix_length(""), 0u);
  EXPECT_EQ(utf8::valid_prefix_length("plain ascii text, longer than eight bytes"), 41u);
  EXPECT_EQ(utf8::valid_prefix_length("abcdefghij\xC3\xA9klm\xFFxyz"), 15u);
  EXPECT_EQ(utf8::valid_prefix_length("\xE2\x82\xAC\xE2\x82"), 3u);
}

TEST(Utf8, StablePrefixKeepsOnlyATrailingIncompleteCharacter) {
  EXPECT_EQ(utf8::stable_prefix_length("abc"), 3u);
  EXPECT_EQ(utf8::stable_prefix_length("ab\xE2\x82"), 2u);     // "€" waits for its last byte
  EXPECT_EQ(utf8::stable_prefix_length("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(utf8::stable_prefix_length("ab\xE2\x28"), 4u);     // can never complete: decodable now
  EXPECT_EQ(utf8::stable_prefix_length("\xED\xA0"), 2u);       // surrogate: invalid at its 2nd byte
  EXPECT_EQ(utf8::stable_prefix_length("\x80\xE2"), 1u);
  EXPECT_EQ(utf8::stable_prefix_length("\xC0"), 1u);           // never a lead byte
}

}  // namespace
}  // namespace quatre::tokenizer
