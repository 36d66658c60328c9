// Tiktoken-style byte-pair merging of one pre-token (PROTOCOL.md §1.5): whole-piece lookup first, then
// repeatedly merge the adjacent pair whose concatenation has the lowest rank (leftmost on ties).
// Internal to src/tokenizer; depends on rank_map.h only.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/rank_map.h"

namespace quatre::tokenizer {

// Appends the ids (rank + id_offset) of `piece`'s tokens to `out`. Byte b must have rank b (PROTOCOL §1.1
// rule 3), so that every piece is encodable.
void bpe_encode(std::string_view piece, const RankMap& ranks, int32_t id_offset, std::vector<int32_t>& out);

namespace detail {
// The two merge loops behind bpe_encode, exposed so that a test can check they agree. Both return the
// start offsets of the final parts followed by piece.size() (so part k is [bounds[k], bounds[k+1])).
// scan: O(n·parts) like tiktoken, allocation-free, used for short pieces.
// heap: O(n log n) with a priority queue keyed by (rank, start), used for long pieces.
inline constexpr size_t kMaxScanBytes = 64;
std::vector<uint32_t> bpe_bounds_scan(std::string_view piece, const RankMap& ranks);
std::vector<uint32_t> bpe_bounds_heap(std::string_view piece, const RankMap& ranks);
}  // namespace detail

}  // namespace quatre::tokenizer
