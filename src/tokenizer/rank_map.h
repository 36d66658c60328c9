// RankMap: the BPE vocabulary as byte string <-> rank, with an open-addressing hash table tuned for the
// short lookups of the merge loop. Internal to src/tokenizer; depends on the standard library only.
#pragma once

#include <cstdint>
#include <cstring>
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
    const uint64_t prefix = load_prefix(bytes);
    const auto tag = static_cast<uint16_t>(h >> 48);
    for (size_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      const Slot& s = slots_[slot];
      if (s.rank_plus_1 == 0) return std::nullopt;
      if (s.tag != tag || s.n_bytes != bytes.size() || s.prefix != prefix) continue;
      const auto rank = static_cast<int32_t>(s.rank_plus_1 - 1);
      if (bytes.size() <= 8 || bytes.substr(8) == this->bytes(rank).substr(8)) return rank;
    }
  }

  std::string_view bytes(int32_t rank) const {
    return std::string_view(blob_).substr(offsets_[rank], offsets_[rank + 1] - offsets_[rank]);
  }
  int32_t size() const { return static_cast<int32_t>(offsets_.size()) - 1; }

  // A fast 64-bit hash of short byte strings (multiply-xorshift over 8-byte words). Public for tests.
  static uint64_t hash(std::string_view bytes);

 private:
  // One probe reads one slot: short keys (<= 8 bytes, most BPE pair lookups) are compared without touching blob_.
  struct Slot {
    uint64_t prefix = 0;       // the first 8 bytes of the key, zero-padded
    uint32_t rank_plus_1 = 0;  // 0: empty slot
    uint16_t n_bytes = 0;      // key length (add_unique takes keys shorter than 64 KiB)
    uint16_t tag = 0;          // top 16 bits of the hash
  };
  static uint64_t load_prefix(std::string_view bytes) {
    uint64_t prefix = 0;
    std::memcpy(&prefix, bytes.data(), bytes.size() < 8 ? bytes.size() : 8);
    return prefix;
  }

  std::string blob_;               // all byte strings, concatenated in rank order
  std::vector<uint32_t> offsets_;  // [size()+1]: rank r is blob_[offsets_[r], offsets_[r+1])
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t capacity_ = 0;            // most entries the table takes (half of its slots)
};

}  // namespace quatre::tokenizer
