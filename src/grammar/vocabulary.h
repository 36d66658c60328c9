// The token vocabulary as the token mask needs it: each non-special id's bytes in a byte trie (children
// contiguous, each node's tokens a contiguous range of the ids sorted by bytes, and the set of bytes below
// each node), and the ids of the special tokens a structured output may contain. Built once per tokenizer.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "tokenizer/tekken.h"

namespace quatre::grammar {

struct SpecialIds {
  int32_t eos = -1;                   // "</s>"
  std::optional<int32_t> tool_calls;  // "[TOOL_CALLS]"
  std::optional<int32_t> args;        // "[ARGS]"
  std::optional<int32_t> think;       // "[THINK]"
  std::optional<int32_t> end_think;   // "[/THINK]"
};

class Vocabulary {
 public:
  struct TrieNode {
    uint32_t token_begin = 0, exact_end = 0, token_end = 0;  // [begin, exact_end): tokens that end here
    uint32_t child_begin = 0, child_end = 0;                  // children: nodes [child_begin, child_end)
    uint8_t byte = 0;                                         // the edge byte into this node
  };

  explicit Vocabulary(const tokenizer::Tekken& tekken);
  // `token_bytes[id]` for every id; ids < n_special are special (their entries are ignored).
  Vocabulary(std::vector<std::string> token_bytes, int32_t n_special, SpecialIds specials);

  int32_t size() const { return static_cast<int32_t>(bytes_.size()); }
  int32_t n_special() const { return n_special_; }
  const SpecialIds& specials() const { return specials_; }
  const std::string& token_bytes(int32_t id) const { return bytes_[id]; }
  // The special symbol (kToolCalls, ...) of a special id, or -1.
  int special_symbol(int32_t id) const;
  // The id of a special symbol, or -1 when the vocabulary lacks it.
  int32_t special_id(int symbol) const;

  // Trie: node 0 is the root (the empty prefix).
  const std::vector<TrieNode>& trie() const { return trie_; }
  const std::vector<int32_t>& sorted_ids() const { return sorted_; }
  // Bytes that occur after the node's prefix in any token below it (bitset words).
  const std::array<uint64_t, 4>& bytes_below(uint32_t node) const { return below_[node]; }
  // Every token below the node continues, after the node's prefix, with plain JSON string content from a
  // character boundary (utf8_dfa.h; a multi-byte character may be cut at the token's end).
  bool plain_string_below(uint32_t node) const { return (plain_[node] & 1) != 0; }
  // The most characters (a cut multi-byte one counts) that a token below adds after the node's prefix (<= 255).
  int chars_below(uint32_t node) const { return chars_[node]; }

 private:
  void build_trie();

  std::vector<std::string> bytes_;
  int32_t n_special_ = 0;
  SpecialIds specials_;
  std::vector<TrieNode> trie_;
  std::vector<int32_t> sorted_;  // non-special ids with non-empty bytes, sorted by bytes
  std::vector<std::array<uint64_t, 4>> below_;
  std::vector<uint8_t> chars_;
  std::vector<uint8_t> plain_;  // bit u: the suffixes below are plain content when started in UTF-8 state u
};

}  // namespace quatre::grammar
