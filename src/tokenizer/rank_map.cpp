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
  slots_.assign(n_slots, Slot{});
  mask_ = n_slots - 1;
  capacity_ = n_slots / 2;
  offsets_.reserve(n_expected + 1);
}

std::optional<int32_t> RankMap::add_unique(std::string_view bytes) {
  if (const auto existing = find(bytes)) return existing;
  const int32_t rank = size();
  CHECK(static_cast<size_t>(rank) < capacity_) << "RankMap sized for " << capacity_ << " entries";
  CHECK(bytes.size() < 0xFFFF) << "token of " << bytes.size() << " bytes";
  const uint64_t h = hash(bytes);
  size_t slot = h & mask_;
  while (slots_[slot].rank_plus_1 != 0) slot = (slot + 1) & mask_;
  blob_.append(bytes);
  offsets_.push_back(static_cast<uint32_t>(blob_.size()));
  slots_[slot] = Slot{.prefix = load_prefix(bytes),
                      .rank_plus_1 = static_cast<uint32_t>(rank + 1),
                      .n_bytes = static_cast<uint16_t>(bytes.size()),
                      .tag = static_cast<uint16_t>(h >> 48)};
  return std::nullopt;
}

}  // namespace quatre::tokenizer
