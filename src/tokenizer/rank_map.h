// RankMap: the BPE vocabulary as byte string <-> rank, with an open-addressing hash table tuned for the
// short lookups of the merge loop. Internal to src/tokenizer; depends on the standard library only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace quatre::tokenizer {

class RankMap {
 public:
  // `n_expected` sizes the table; adding more entries than that is a CHECK failure.
  explicit RankMap(size_t n_expected = 0);

  // Adds `bytes` as the next rank (size() before the call). When an identical byte string is already present,
  // adds nothing and returns that entry's rank.
  std::optional<int32_t> add_unique(std::string_view bytes);

  std::optional<int32_t> find(std::string_view bytes) const {
    const uint64_t h = hash(bytes);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (size_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      const uint64_t entry = slots_[slot];
      if (entry == 0) return std::nullopt;
      if (static_cast<uint32_t>(entry >> 32) != tag) continue;
      const auto rank = static_cast<int32_t>(static_cast<uint32_t>(entry) - 1);
      if (bytes == this->bytes(rank)) return rank;
    }
  }

  std::string_view bytes(int32_t rank) const {
    return std::string_view(blob_).substr(offsets_[rank], offsets_[rank + 1] - offsets_[rank]);
  }
  int32_t size() const { return static_cast<int32_t>(offsets_.size()) - 1; }

  // A fast 64-bit hash of short byte strings (multiply-xorshift over 8-byte words). Public for tests.
  static uint64_t hash(std::string_view bytes);

 private:
  std::string blob_;               // all byte strings, concatenated in rank order
  std::vector<uint32_t> offsets_;  // [size()+1]: rank r is blob_[offsets_[r], offsets_[r+1])
  std::vector<uint64_t> slots_;    // (hash >> 32) << 32 | (rank + 1); 0 = empty
  size_t mask_ = 0;
  size_t capacity_ = 0;            // most entries the table takes (half of its slots)
};

}  // namespace quatre::tokenizer
