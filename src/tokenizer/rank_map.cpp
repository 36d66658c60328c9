// RankMap (see rank_map.h). Depends on core (CHECK) and the standard library.
#include "tokenizer/rank_map.h"

#include <cstring>

#include "core/check.h"

namespace quatre::tokenizer {

namespace {
constexpr uint64_t kMul = 0x9FB21C651E98DF25ull;

uint64_t mix(uint64_t h, uint64_t word) {
  h = (h ^ word) * kMul;
  return h ^ (h >> 29);
}
}  // namespace

uint64_t RankMap::hash(std::string_view bytes) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    h = mix(h, word);
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t word = 0;
    std::memcpy(&word, p, n);
    h = mix(h, word);
  }
  h *= 0xD6E8FEB86659FD93ull;
  return h ^ (h >> 32);
}

RankMap::RankMap(size_t n_expected) : offsets_{0} {
  size_t n_slots = 16;
  while (n_slots < 2 * n_expected) n_slots *= 2;
  slots_.assign(n_slots, 0);
  mask_ = n_slots - 1;
  capacity_ = n_slots / 2;
  offsets_.reserve(n_expected + 1);
}

std::optional<int32_t> RankMap::add_unique(std::string_view bytes) {
  const int32_t rank = size();
  CHECK(static_cast<size_t>(rank) < capacity_) << "RankMap sized for " << capacity_ << " entries";
  const uint64_t h = hash(bytes);
  const uint32_t tag = static_cast<uint32_t>(h >> 32);
  size_t slot = h & mask_;
  for (; slots_[slot] != 0; slot = (slot + 1) & mask_) {
    const uint64_t entry = slots_[slot];
    const auto other = static_cast<int32_t>(static_cast<uint32_t>(entry) - 1);
    if (static_cast<uint32_t>(entry >> 32) == tag && this->bytes(other) == bytes) return other;
  }
  blob_.append(bytes);
  offsets_.push_back(static_cast<uint32_t>(blob_.size()));
  slots_[slot] = (static_cast<uint64_t>(tag) << 32) | static_cast<uint32_t>(rank + 1);
  return std::nullopt;
}

}  // namespace quatre::tokenizer
