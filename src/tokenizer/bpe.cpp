// Byte-pair merging (see bpe.h). The merge priority of a pair is the rank of the merged byte string; there is
// no separate merges list. Depends on rank_map.h only.
#include "tokenizer/bpe.h"

#include <array>
#include <limits>
#include <queue>


namespace quatre::tokenizer {

namespace {

constexpr int32_t kUnmergeable = std::numeric_limits<int32_t>::max();  // "rank ∞": not in the vocabulary

int32_t pair_rank(std::string_view piece, uint32_t start, uint32_t end, const RankMap& ranks) {
  const auto rank = ranks.find(piece.substr(start, end - start));
  return rank ? *rank : kUnmergeable;
}

// The scan loop on caller-provided storage [piece.size() + 1 each]. Part i spans [start[i], start[i+1]) and is
// the token part_rank[i]; pair_rank[i] is the rank of parts i and i+1 merged. Returns the number of parts.
size_t merge_scan(std::string_view piece, const RankMap& ranks, uint32_t* start, int32_t* part_rank,
                  int32_t* rank) {
  const auto n = static_cast<uint32_t>(piece.size());
  size_t n_parts = n;
  for (uint32_t i = 0; i <= n; ++i) start[i] = i;
  for (uint32_t i = 0; i < n; ++i) part_rank[i] = static_cast<unsigned char>(piece[i]);  // byte b is rank b
  for (uint32_t i = 0; i + 1 < n; ++i) rank[i] = pair_rank(piece, i, i + 2, ranks);
  while (n_parts > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n_parts; ++i) {
      if (rank[i] < rank[best]) best = i;  // strict: leftmost wins ties
    }
    if (rank[best] == kUnmergeable) break;
    // Merge parts best and best+1: drop boundary best+1.
    part_rank[best] = rank[best];
    for (size_t i = best + 1; i < n_parts; ++i) start[i] = start[i + 1];
    for (size_t i = best + 1; i + 1 < n_parts; ++i) part_rank[i] = part_rank[i + 1];
    for (size_t i = best + 1; i + 2 < n_parts; ++i) rank[i] = rank[i + 1];
    --n_parts;
    if (best + 1 < n_parts) rank[best] = pair_rank(piece, start[best], start[best + 2], ranks);
    if (best > 0) rank[best - 1] = pair_rank(piece, start[best - 1], start[best + 1], ranks);
  }
  return n_parts;
}

struct HeapParts {
  std::vector<uint32_t> bounds;     // start offsets of the parts, then piece.size()
  std::vector<int32_t> part_ranks;  // [bounds.size() - 1]
};

HeapParts merge_heap(std::string_view piece, const RankMap& ranks) {
  const auto n = static_cast<uint32_t>(piece.size());
  // Doubly linked list of parts, indexed by start offset; next[i] = start of the following part (n at the end).
  std::vector<uint32_t> next(n), prev(n);
  std::vector<int32_t> part_rank(n);
  std::vector<bool> is_alive(n, true);
  for (uint32_t i = 0; i < n; ++i) {
    next[i] = i + 1;
    prev[i] = i == 0 ? 0 : i - 1;
    part_rank[i] = static_cast<unsigned char>(piece[i]);
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
    part_rank[c.start] = c.rank;
    if (c.end < n) prev[c.end] = c.start;
    push_pair(c.start);
    if (c.start > 0) push_pair(prev[c.start]);
  }
  HeapParts parts;
  for (uint32_t i = 0; i < n; i = next[i]) {
    parts.bounds.push_back(i);
    parts.part_ranks.push_back(part_rank[i]);
  }
  parts.bounds.push_back(n);
  return parts;
}

}  // namespace

namespace detail {

std::vector<uint32_t> bpe_bounds_scan(std::string_view piece, const RankMap& ranks) {
  std::vector<uint32_t> start(piece.size() + 1);
  std::vector<int32_t> part_rank(piece.size() + 1), rank(piece.size() + 1);
  const size_t n_parts = merge_scan(piece, ranks, start.data(), part_rank.data(), rank.data());
  start.resize(n_parts + 1);
  return start;
}

std::vector<uint32_t> bpe_bounds_heap(std::string_view piece, const RankMap& ranks) {
  return merge_heap(piece, ranks).bounds;
}

}  // namespace detail

void bpe_encode(std::string_view piece, const RankMap& ranks, int32_t id_offset, std::vector<int32_t>& out) {
  if (piece.empty()) return;
  if (piece.size() == 1) {  // byte b is rank b: no lookup (",", ".", " " are common pieces)
    out.push_back(static_cast<unsigned char>(piece[0]) + id_offset);
    return;
  }
  if (const auto rank = ranks.find(piece)) {
    out.push_back(*rank + id_offset);
    return;
  }
  if (piece.size() <= detail::kMaxScanBytes) {
    std::array<uint32_t, detail::kMaxScanBytes + 1> start;
    std::array<int32_t, detail::kMaxScanBytes + 1> part_rank;
    std::array<int32_t, detail::kMaxScanBytes + 1> rank;
    const size_t n_parts = merge_scan(piece, ranks, start.data(), part_rank.data(), rank.data());
    for (size_t k = 0; k < n_parts; ++k) out.push_back(part_rank[k] + id_offset);
  } else {
    for (const int32_t rank : merge_heap(piece, ranks).part_ranks) out.push_back(rank + id_offset);
  }
}

}  // namespace quatre::tokenizer

