// Pre-tokenization (PROTOCOL.md §1.4): splits text into the pieces that BPE encodes, by repeatedly matching the
// tekken.json regex with PCRE2 (UTF + UCP, JIT). Internal to src/tokenizer; depends on core, PCRE2, utf8.h.
// Unicode version: \p{..} uses PCRE2's tables (Unicode 14.0 for Debian 12's PCRE2 10.42). Characters assigned
// later (15.0+: e.g. CJK Ext. H-J, Kawi, U+A7CB..) are "other" here, letters or marks for newer engines, and
// U+0295 became Lo in 16.0; text with them may pre-tokenize differently from tiktoken (PROTOCOL §5 point 8).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace quatre::tokenizer {

class PreTokenizer {
 public:
  // Compiles `pattern` (after rewrite_whitespace_classes). Throws LoadError "<origin>: config.pattern ..."
  // when it does not compile.
  PreTokenizer(std::string_view pattern, std::string_view origin);
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;
  ~PreTokenizer();

  // The next match at or after `pos` in `text` (valid UTF-8): sets `piece`, advances `pos` past it and returns
  // true; false when nothing matches any more. Text between matches is skipped, as tiktoken's find_iter does
  // (the Tekken pattern matches every character, so nothing is skipped with it). Thread-safe.
  bool next_piece(std::string_view text, size_t& pos, std::string_view& piece) const;

  std::vector<std::string_view> split(std::string_view text) const;  // all pieces; CHECKs valid UTF-8
  bool is_jit() const;

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

// Rewrites \s and \S so that they mean Unicode White_Space, as in tiktoken's regex engine (Rust regex):
// PCRE2's UCP \s also matches U+180E, which White_Space does not. Throws std::invalid_argument for constructs
// the rewrite cannot handle (\S inside a character class, \Q...\E).
std::string rewrite_whitespace_classes(std::string_view pattern);

}  // namespace quatre::tokenizer
