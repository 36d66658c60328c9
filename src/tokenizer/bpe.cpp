// Byte-pair merging (see bpe.h). The merge priority of a pair is the rank of the merged byte string; there is
// no separate merges list. Depends on rank_map.h and core (CHECK).
#include "tokenizer/bpe.h"

#include <array>
#include <limits>
#include <queue>

#include "core/check.h"

namespace quatre::tokenizer {

namespace {

constexpr int32_t kUnmergeable = std::numeric_limits<int32_t>::max();  // "rank ∞": not in the vocabulary

int32_t pair_rank(std::string_view piece, uint32_t start, uint32_t end, const RankMap& ranks) {
  const auto rank = ranks.find(piece.substr(start, end - start));
  return rank ? *rank : kUnmergeable;
}

// The scan loop on caller-provided storage. part i spans [start[i], start[i+1]); pair_rank[i] is the rank of
// parts i and i+1 merged. Returns the number of parts.
size_t merge_scan(std::string_view piece, const RankMap& ranks, uint32_t* start, int32_t* rank) {
  const auto n = static_cast<uint32_t>(piece.size());
  size_t n_parts = n;
  for (uint32_t i = 0; i <= n; ++i) start[i] = i;
  for (uint32_t i = 0; i + 1 < n; ++i) rank[i] = pair_rank(piece, i, i + 2, ranks);
  while (n_parts > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n_parts; ++i) {
      if (rank[i] < rank[best]) best = i;  // strict: leftmost wins ties
    }
    if (rank[best] == kUnmergeable) break;
    // Merge parts best and best+1: drop boundary best+1.
    for (size_t i = best + 1; i < n_parts; ++i) start[i] = start[i + 1];
    for (size_t i = best + 1; i + 2 < n_parts; ++i) rank[i] = rank[i + 1];
    --n_parts;
    if (best + 1 < n_parts) rank[best] = pair_rank(piece, start[best], start[best + 2], ranks);
    if (best > 0) rank[best - 1] = pair_rank(piece, start[best - 1], start[best + 1], ranks);
  }
  return n_parts;
}

std::vector<uint32_t> merge_heap(std::string_view piece, const RankMap& ranks) {
  const auto n = static_cast<uint32_t>(piece.size());
  // Doubly linked list of parts, indexed by start offset; next_[i] = start of the following part (n at the end).
  std::vector<uint32_t> next(n), prev(n);
  std::vector<bool> is_alive(n, true);
  for (uint32_t i = 0; i < n; ++i) {
    next[i] = i + 1;
    prev[i] = i == 0 ? 0 : i - 1;
  }
  struct Candidate {
    int32_t rank;
    uint32_t start;  // start of the left part
    uint32_t end;    // end of the right part when the candidate was made; stale if it changed since
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : start > o.start; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push_pair = [&](uint32_t left) {
    const uint32_t right = next[left];
    if (right >= n) return;
    const uint32_t end = next[right];
    const int32_t rank = pair_rank(piece, left, end, ranks);
    if (rank != kUnmergeable) heap.push({rank, left, end});
  };
  for (uint32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const uint32_t right = next[c.start];
    if (!is_alive[c.start] || right >= n || next[right] != c.end) continue;  // stale
    is_alive[right] = false;
    next[c.start] = c.end;
    if (c.end < n) prev[c.end] = c.start;
    push_pair(c.start);
    if (c.start > 0) push_pair(prev[c.start]);
  }
  std::vector<uint32_t> bounds;
  for (uint32_t i = 0; i < n; i = next[i]) bounds.push_back(i);
  bounds.push_back(n);
  return bounds;
}

}  // namespace

namespace detail {

std::vector<uint32_t> bpe_bounds_scan(std::string_view piece, const RankMap& ranks) {
  std::vector<uint32_t> start(piece.size() + 1);
  std::vector<int32_t> rank(piece.size() + 1);
  const size_t n_parts = merge_scan(piece, ranks, start.data(), rank.data());
  start.resize(n_parts + 1);
  return start;
}

std::vector<uint32_t> bpe_bounds_heap(std::string_view piece, const RankMap& ranks) {
  return merge_heap(piece, ranks);
}

}  // namespace detail

void bpe_encode(std::string_view piece, const RankMap& ranks, int32_t id_offset, std::vector<int32_t>& out) {
  if (piece.empty()) return;
  if (const auto rank = ranks.find(piece)) {
    out.push_back(*rank + id_offset);
    return;
  }
  auto emit = [&](const uint32_t* bounds, size_t n_parts) {
    for (size_t k = 0; k < n_parts; ++k) {
      const auto rank = ranks.find(piece.substr(bounds[k], bounds[k + 1] - bounds[k]));
      CHECK(rank.has_value()) << "a merged part is not in the vocabulary";
      out.push_back(*rank + id_offset);
    }
  };
  if (piece.size() <= detail::kMaxScanBytes) {
    std::array<uint32_t, detail::kMaxScanBytes + 1> start;
    std::array<int32_t, detail::kMaxScanBytes + 1> rank;
    const size_t n_parts = merge_scan(piece, ranks, start.data(), rank.data());
    emit(start.data(), n_parts);
  } else {
    const std::vector<uint32_t> bounds = merge_heap(piece, ranks);
    emit(bounds.data(), bounds.size() - 1);
  }
}

}  // namespace quatre::tokenizer

