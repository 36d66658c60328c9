// Token mask: a depth-first walk of the vocabulary trie alongside the automaton.
#include "grammar/token_mask.h"

#include <algorithm>
#include <limits>

namespace quatre::grammar {

namespace {

void allow(std::vector<uint64_t>& mask, int32_t id) { mask[id / 64] |= uint64_t{1} << (id % 64); }

bool subset(const std::array<uint64_t, 4>& a, const std::bitset<256>& b) {
  for (int w = 0; w < 4; ++w) {
    for (uint64_t bits = a[w]; bits != 0; bits &= bits - 1) {
      if (!b.test(w * 64 + __builtin_ctzll(bits))) return false;
    }
  }
  return true;
}

}  // namespace

std::vector<uint64_t> compute_token_mask(Automaton& automaton, const Vocabulary& vocab, int32_t state) {
  std::vector<uint64_t> mask((vocab.size() + 63) / 64, 0);
  const auto& trie = vocab.trie();
  const auto& ids = vocab.sorted_ids();
  constexpr uint32_t kWholeSubtreeMin = 8;  // below this many tokens, walking beats computing the loop set
  struct Frame {
    uint32_t node;
    int32_t state;
  };
  std::vector<Frame> stack = {{0, state}};
  while (!stack.empty()) {
    const Frame f = stack.back();
    stack.pop_back();
    for (uint32_t c = trie[f.node].child_begin; c < trie[f.node].child_end; ++c) {
      const Vocabulary::TrieNode& n = trie[c];
      const int32_t s = automaton.step(f.state, n.byte);
      if (s == Automaton::kDead) continue;
      const bool leaf = n.child_begin == n.child_end;
      if (!leaf && n.token_end - n.token_begin >= kWholeSubtreeMin &&
          ((vocab.plain_string_below(c) && automaton.plain_run(s, vocab.chars_below(c)) >= vocab.chars_below(c)) ||
           subset(vocab.bytes_below(c), automaton.self_loop_bytes(s)))) {
        for (uint32_t i = n.token_begin; i < n.token_end; ++i) allow(mask, ids[i]);
        continue;
      }
      for (uint32_t i = n.token_begin; i < n.exact_end; ++i) allow(mask, ids[i]);
      if (!leaf) stack.push_back({c, s});
    }
  }
  const SymbolSet& next = automaton.next_symbols(state);
  for (int sym = 256; sym < kNumSymbols; ++sym) {
    const int32_t id = vocab.special_id(sym);
    if (id >= 0 && next.test(sym)) allow(mask, id);
  }
  if (automaton.accepting(state)) allow(mask, vocab.specials().eos);
  return mask;
}

namespace {

// kByteLimit[b][j]: +inf when bit j of b is set (keep the logit), else -inf; min(logit, limit) applies 8 bits.
struct ByteLimits {
  alignas(32) float v[256][8];
  ByteLimits() {
    for (int b = 0; b < 256; ++b) {
      for (int j = 0; j < 8; ++j) v[b][j] = ((b >> j) & 1) ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
    }
  }
};
const ByteLimits kByteLimits;

}  // namespace

void apply_token_mask(std::span<const uint64_t> mask, std::span<float> logits) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const size_t covered = std::min(logits.size(), mask.size() * 64);
  float* x = logits.data();
  size_t w = 0;
  for (; (w + 1) * 64 <= covered; ++w) {  // whole words: 8 bytes of 8 logits each, branch-free inside a byte
    const uint64_t bits = mask[w];
    if (bits == ~uint64_t{0}) continue;
    float* base = x + w * 64;
    if (bits == 0) {
      std::fill(base, base + 64, kNegInf);
      continue;
    }
    for (int k = 0; k < 8; ++k) {
      const auto byte = static_cast<uint8_t>(bits >> (8 * k));
      if (byte == 0xFF) continue;
      const float* limit = kByteLimits.v[byte];
      for (int j = 0; j < 8; ++j) base[8 * k + j] = std::min(base[8 * k + j], limit[j]);
    }
  }
  for (size_t i = w * 64; i < covered; ++i) {  // the partial last word
    if (((mask[w] >> (i - w * 64)) & 1) == 0) x[i] = kNegInf;
  }
  std::fill(logits.begin() + static_cast<ptrdiff_t>(covered), logits.end(), kNegInf);
}

}  // namespace quatre::grammar
