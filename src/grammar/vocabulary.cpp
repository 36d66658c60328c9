// Vocabulary: the byte trie of the Tekken tokens, built breadth-first so that children are contiguous.
#include "grammar/vocabulary.h"

#include <algorithm>
#include <deque>

#include "core/check.h"
#include "core/error.h"
#include "grammar/utf8_dfa.h"

namespace quatre::grammar {

namespace {

SpecialIds tekken_specials(const tokenizer::Tekken& t) {
  return SpecialIds{.eos = t.eos_id(),
                    .tool_calls = t.special_id("[TOOL_CALLS]"),
                    .args = t.special_id("[ARGS]"),
                    .think = t.special_id("[THINK]"),
                    .end_think = t.special_id("[/THINK]")};
}

std::vector<std::string> tekken_bytes(const tokenizer::Tekken& t) {
  std::vector<std::string> bytes(t.vocab_size());
  for (int32_t id = t.n_special(); id < t.vocab_size(); ++id) bytes[id] = std::string(t.token_bytes(id));
  return bytes;
}

}  // namespace

Vocabulary::Vocabulary(const tokenizer::Tekken& tekken)
    : Vocabulary(tekken_bytes(tekken), tekken.n_special(), tekken_specials(tekken)) {}

Vocabulary::Vocabulary(std::vector<std::string> token_bytes, int32_t n_special, SpecialIds specials)
    : bytes_(std::move(token_bytes)), n_special_(n_special), specials_(specials) {
  CHECK(n_special_ >= 0 && n_special_ <= size()) << "n_special " << n_special_ << " of " << size() << " ids";
  CHECK(specials_.eos >= 0 && specials_.eos < n_special_) << "eos id " << specials_.eos;
  for (int32_t id = 0; id < n_special_; ++id) bytes_[id].clear();
  build_trie();
}

int Vocabulary::special_symbol(int32_t id) const {
  if (specials_.tool_calls == id) return kToolCalls;
  if (specials_.args == id) return kArgs;
  if (specials_.think == id) return kThink;
  if (specials_.end_think == id) return kEndThink;
  return -1;
}

int32_t Vocabulary::special_id(int symbol) const {
  const std::optional<int32_t>* id = symbol == kToolCalls ? &specials_.tool_calls
                                     : symbol == kArgs    ? &specials_.args
                                     : symbol == kThink   ? &specials_.think
                                     : symbol == kEndThink ? &specials_.end_think
                                                           : nullptr;
  return id != nullptr && id->has_value() ? **id : -1;
}

void Vocabulary::build_trie() {
  for (int32_t id = n_special_; id < size(); ++id) {
    if (!bytes_[id].empty()) sorted_.push_back(id);
  }
  std::stable_sort(sorted_.begin(), sorted_.end(), [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b]; });
  const auto n = static_cast<uint32_t>(sorted_.size());
  trie_.push_back(TrieNode{.token_begin = 0, .exact_end = 0, .token_end = n});
  std::vector<uint32_t> depth = {0};
  std::deque<uint32_t> queue = {0};
  while (!queue.empty()) {  // breadth-first: a node's children are appended together
    const uint32_t v = queue.front();
    queue.pop_front();
    const uint32_t d = depth[v];
    uint32_t i = trie_[v].token_begin;
    while (i < trie_[v].token_end && bytes_[sorted_[i]].size() == d) ++i;
    trie_[v].exact_end = i;
    trie_[v].child_begin = static_cast<uint32_t>(trie_.size());
    while (i < trie_[v].token_end) {
      const auto b = static_cast<uint8_t>(bytes_[sorted_[i]][d]);
      uint32_t j = i;
      while (j < trie_[v].token_end && static_cast<uint8_t>(bytes_[sorted_[j]][d]) == b) ++j;
      queue.push_back(static_cast<uint32_t>(trie_.size()));
      trie_.push_back(TrieNode{.token_begin = i, .exact_end = i, .token_end = j, .byte = b});
      depth.push_back(d + 1);
      i = j;
    }
    trie_[v].child_end = static_cast<uint32_t>(trie_.size());
  }
  below_.assign(trie_.size(), {0, 0, 0, 0});
  plain_.assign(trie_.size(), uint8_t{0xFF});
  chars_.assign(trie_.size(), uint8_t{0});
  for (size_t v = trie_.size(); v-- > 0;) {  // children come after their parent
    for (uint32_t c = trie_[v].child_begin; c < trie_[v].child_end; ++c) {
      const bool starts_char = trie_[c].byte < 0x80 || trie_[c].byte >= 0xC0;
      chars_[v] = static_cast<uint8_t>(std::max<int>(chars_[v], std::min(255, chars_[c] + (starts_char ? 1 : 0))));
    }
    for (uint32_t c = trie_[v].child_begin; c < trie_[v].child_end; ++c) {
      for (int u = 0; u < kUtf8States; ++u) {
        const int next = utf8_plain_next(u, trie_[c].byte);
        if (next < 0 || ((plain_[c] >> next) & 1) == 0) plain_[v] &= static_cast<uint8_t>(~(1u << u));
      }
    }
    for (uint32_t c = trie_[v].child_begin; c < trie_[v].child_end; ++c) {
      for (int w = 0; w < 4; ++w) below_[v][w] |= below_[c][w];
      below_[v][trie_[c].byte / 64] |= uint64_t{1} << (trie_[c].byte % 64);
    }
  }
}

}  // namespace quatre::grammar
