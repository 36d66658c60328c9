// Tests of the pre-tokenizer: the PROTOCOL §1.4 example table, Unicode White_Space semantics of \s (where PCRE2,
// JavaScript and tiktoken's Rust regex differ), the pattern rewrite and loud failure on a bad pattern.
#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "tekken_test_util.h"
#include "tokenizer/pretokenize.h"

namespace quatre::tokenizer {
namespace {

using testing::kTekkenPattern;
using Pieces = std::vector<std::string>;

Pieces split(std::string_view text) {
  static const PreTokenizer pre(kTekkenPattern, "test");
  Pieces out;
  for (std::string_view p : pre.split(text)) out.emplace_back(p);
  return out;
}

TEST(PreTokenize, UsesTheJit) {
  const PreTokenizer pre(kTekkenPattern, "test");
  EXPECT_TRUE(pre.is_jit());
}

TEST(PreTokenize, ProtocolExampleTable) {
  EXPECT_EQ(split("Hello, how are you?"), (Pieces{"Hello", ",", " how", " are", " you", "?"}));
  EXPECT_EQ(split("  leading and trailing  "), (Pieces{" ", " leading", " and", " trailing", "  "}));
  EXPECT_EQ(split("line1\nline2\r\n\r\nline3\n\n\n"),
            (Pieces{"line", "1", "\n", "line", "2", "\r\n\r\n", "line", "3", "\n\n\n"}));
  EXPECT_EQ(split("CamelCaseWordsHTTPServerXMLHttpRequest"),
            (Pieces{"Camel", "Case", "Words", "HTTPServer", "XMLHttp", "Request"}));
  EXPECT_EQ(split("don't I'll"), (Pieces{"don", "'t", " I", "'ll"}));
  EXPECT_EQ(split("3.14 -42"), (Pieces{"3", ".", "1", "4", " -", "4", "2"}));
  EXPECT_EQ(split("is 22 degrees"), (Pieces{"is", " ", "2", "2", " degrees"}));
  EXPECT_EQ(split("def f(x):\n    return"), (Pieces{"def", " f", "(x", "):\n", "   ", " return"}));
  EXPECT_EQ(split("path/to C:\\Win"), (Pieces{"path", "/to", " C", ":\\", "Win"}));
  EXPECT_EQ(split("\xF0\x9F\x98\x80ok"), (Pieces{"\xF0\x9F\x98\x80ok"}));
}

TEST(PreTokenize, LetterRunsBacktrackAcrossSharedCategories) {
  EXPECT_EQ(split("日本語"), (Pieces{"日本語"}));  // Lo is in both sets: U* gives one back to L+
  EXPECT_EQ(split("\u3000\u3000日本"), (Pieces{"\u3000", "\u3000日本"}));
  EXPECT_EQ(split("ǅemal ǅ"), (Pieces{"ǅemal", " ǅ"}));  // U+01C5 is Lt (upper-ish only)
  EXPECT_EQ(split("e\u0301te\u0301"), (Pieces{"e\u0301te\u0301"}));  // combining marks stay with their word
  EXPECT_EQ(split("\u2764\uFE0F"), (Pieces{"\u2764\uFE0F"}));  // VS16 is Mn: the heart is its prefix
}

TEST(PreTokenize, WhitespaceRunsGiveTheLastCharToTheNextWord) {
  EXPECT_EQ(split("\u00A0\u00A0x"), (Pieces{"\u00A0", "\u00A0x"}));
  EXPECT_EQ(split("x\u2028y"), (Pieces{"x", "\u2028y"}));
  EXPECT_EQ(split("\r\n\r\n  x"), (Pieces{"\r\n\r\n", " ", " x"}));
  EXPECT_EQ(split("a  \n  b"), (Pieces{"a", "  \n", " ", " b"}));
}

// \s is Unicode White_Space, as in tiktoken (Rust regex): U+0085 is whitespace (not for JavaScript's \s), U+FEFF
// is not (it is for JavaScript's \s), U+180E is not (it is for PCRE2's own UCP \s), U+001C..U+001F are not.
TEST(PreTokenize, WhitespaceIsUnicodeWhiteSpace) {
  EXPECT_EQ(split("a\u0085\u0085b"), (Pieces{"a", "\u0085", "\u0085b"}));
  EXPECT_EQ(split("a\uFEFF\uFEFFb"), (Pieces{"a", "\uFEFF\uFEFF", "b"}));
  EXPECT_EQ(split("\u180E\u180Ex"), (Pieces{"\u180E\u180E", "x"}));
  EXPECT_EQ(split("a\x1C\x1C b"), (Pieces{"a", "\x1C\x1C", " b"}));
  EXPECT_EQ(split("a\u200B\u200Bb"), (Pieces{"a", "\u200B\u200B", "b"}));
}

TEST(PreTokenize, PiecesConcatenateBackToTheInput) {
  const std::vector<std::string> alphabet = {"a", "Z", "é", " ", "  ", "\n", "\r\n", "\t", "1", "٣", "½", ".", "/",
                                             "'", "日", "ア", "ー", "\u0301", "\u00A0", "\u3000", "\u2028", "😀",
                                             "\u200D", "\uFE0F", "\u0085", "\uFEFF", "\u180E", "\x1F", "ǅ", "ʰ"};
  std::mt19937 rng(3);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 30);
    for (int k = 0; k < n; ++k) text += alphabet[rng() % alphabet.size()];
    std::string joined;
    for (const std::string& p : split(text)) {
      ASSERT_FALSE(p.empty());
      joined += p;
    }
    ASSERT_EQ(joined, text) << testing::escaped(text);
  }
}

TEST(PreTokenize, RewriteWhitespaceClasses) {
  const std::string ws = R"(\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
  EXPECT_EQ(rewrite_whitespace_classes(R"(\s+)"), "[" + ws + "]+");
  EXPECT_EQ(rewrite_whitespace_classes(R"((?!\S))"), "(?![^" + ws + "])");
  EXPECT_EQ(rewrite_whitespace_classes(R"([^\s\p{L}])"), "[^" + ws + R"(\p{L}])");
  EXPECT_EQ(rewrite_whitespace_classes(R"([]\s]x)"), "[]" + ws + "]x");         // ']' first is a member
  EXPECT_EQ(rewrite_whitespace_classes(R"([[:alpha:]\s]\s)"), "[[:alpha:]" + ws + "][" + ws + "]");
  EXPECT_EQ(rewrite_whitespace_classes(R"(\\s)"), R"(\\s)");  // an escaped backslash, then a literal s
  EXPECT_EQ(rewrite_whitespace_classes(R"(\p{N}\r\n)"), R"(\p{N}\r\n)");
  EXPECT_THROW(rewrite_whitespace_classes(R"([\S])"), std::invalid_argument);
  EXPECT_THROW(rewrite_whitespace_classes(R"(\Q\s\E)"), std::invalid_argument);
}

TEST(PreTokenize, BadPatternFailsLoudly) {
  try {
    PreTokenizer pre("[\\p{L", "bad.json");
    FAIL() << "compiled a broken pattern";
  } catch (const LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json: config.pattern does not compile"), std::string::npos) << e.what();
  }
  EXPECT_THROW(PreTokenizer("[\\S]", "bad.json"), LoadError);
}

}  // namespace
}  // namespace quatre::tokenizer
