// BlockPool: refcounts, the hash map of full blocks and the LRU of cached-free blocks.
// Depends on core/check.h and the standard library.
#include "engine/block_pool.h"

#include <algorithm>

#include "core/check.h"
#include "core/rng.h"

namespace quatre::engine {

std::span<const TokenExtra> extras_in(std::span<const TokenExtra> extras, int64_t begin, int64_t end) {
  const auto by_position = [](const TokenExtra& e, int64_t p) { return e.position < p; };
  const auto first = std::lower_bound(extras.begin(), extras.end(), begin, by_position);
  const auto last = std::lower_bound(first, extras.end(), end, by_position);
  return {first, last};
}

BlockHash hash_block(BlockHash parent, std::span<const int32_t> ids, std::span<const TokenExtra> extras) {
  // SplitMix64 chained over the parent and each id: cheap, well mixed, the same on every platform.
  uint64_t state = parent ^ (0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(ids.size()) + 1));
  uint64_t h = splitmix64(state);
  for (int32_t id : ids) {
    state ^= static_cast<uint32_t>(id) + h;
    h = splitmix64(state);
  }
  for (const TokenExtra& e : extras) {  // then each extra with its position
    state ^= static_cast<uint64_t>(e.position) * 0xD6E8FEB86659FD93ull + h;
    h = splitmix64(state);
    state ^= e.hash + h;
    h = splitmix64(state);
  }
  return h;
}

BlockPool::BlockPool(int64_t n_blocks, int64_t block_size, bool enable_prefix_caching)
    : block_size_(block_size),
      enable_prefix_caching_(enable_prefix_caching),
      refcount_(static_cast<size_t>(n_blocks), 0),
      hash_(static_cast<size_t>(n_blocks), 0),
      is_registered_(static_cast<size_t>(n_blocks), false),
      lru_pos_(static_cast<size_t>(n_blocks)),
      is_in_lru_(static_cast<size_t>(n_blocks), false) {
  CHECK(n_blocks > 0 && block_size > 0) << "n_blocks " << n_blocks << ", block_size " << block_size;
  free_.reserve(static_cast<size_t>(n_blocks));
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));  // block 0 first
}

std::vector<int32_t> BlockPool::match_prefix(std::span<const int32_t> ids, int64_t max_blocks,
                                             std::vector<BlockHash>& hashes, std::span<const TokenExtra> extras) {
  std::vector<int32_t> blocks;
  hashes.clear();
  const int64_t n_full = std::min<int64_t>(max_blocks, static_cast<int64_t>(ids.size()) / block_size_);
  if (!enable_prefix_caching_) return blocks;
  BlockHash parent = kRootBlockHash;
  for (int64_t j = 0; j < n_full; ++j) {
    const BlockHash h = hash_block(parent, ids.subspan(static_cast<size_t>(j * block_size_), static_cast<size_t>(block_size_)),
                                   extras_in(extras, j * block_size_, (j + 1) * block_size_));
    const auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const int32_t b = it->second;
    const auto bi = static_cast<size_t>(b);
    if (is_in_lru_[bi]) {
      lru_.erase(lru_pos_[bi]);
      is_in_lru_[bi] = false;
    }
    ++refcount_[bi];
    blocks.push_back(b);
    hashes.push_back(h);
    parent = h;
  }
  return blocks;
}

bool BlockPool::allocate(int64_t n, std::vector<int32_t>& out) {
  if (n > n_available()) return false;
  for (int64_t i = 0; i < n; ++i) {
    int32_t b = 0;
    if (!free_.empty()) {
      b = free_.back();
      free_.pop_back();
    } else {
      b = lru_.front();  // evict the least recently used cached block
      lru_.pop_front();
      const auto bi = static_cast<size_t>(b);
      is_in_lru_[bi] = false;
      by_hash_.erase(hash_[bi]);
      is_registered_[bi] = false;
    }
    CHECK(refcount_[static_cast<size_t>(b)] == 0) << "block " << b << " handed out with refcount " << refcount_[static_cast<size_t>(b)];
    refcount_[static_cast<size_t>(b)] = 1;
    out.push_back(b);
  }
  return true;
}

void BlockPool::release(std::span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    CHECK(b >= 0 && b < n_blocks()) << "block " << b << " of " << n_blocks();
    const auto bi = static_cast<size_t>(b);
    CHECK(refcount_[bi] > 0) << "block " << b << " released with refcount " << refcount_[bi];
    if (--refcount_[bi] > 0) continue;
    if (is_registered_[bi]) {
      lru_pos_[bi] = lru_.insert(lru_.end(), b);  // most recently used last
      is_in_lru_[bi] = true;
    } else {
      free_.push_back(b);
    }
  }
}

void BlockPool::retain(std::span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    CHECK(b >= 0 && b < n_blocks()) << "block " << b << " of " << n_blocks();
    CHECK(refcount_[static_cast<size_t>(b)] > 0) << "block " << b << " shared while not in use";
    ++refcount_[static_cast<size_t>(b)];
  }
}

void BlockPool::commit_full_block(int32_t block, BlockHash hash) {
  CHECK(block >= 0 && block < n_blocks()) << "block " << block << " of " << n_blocks();
  const auto bi = static_cast<size_t>(block);
  CHECK(refcount_[bi] > 0) << "block " << block << " committed while not in use";
  if (!enable_prefix_caching_ || is_registered_[bi]) return;
  if (!by_hash_.emplace(hash, block).second) return;  // an equal block is already registered
  hash_[bi] = hash;
  is_registered_[bi] = true;
}

double BlockPool::hit_rate() const {
  const int64_t n = n_hit_blocks_ + n_miss_blocks_;
  return n == 0 ? 0.0 : static_cast<double>(n_hit_blocks_) / static_cast<double>(n);
}

void BlockPool::check_invariants() const {
  std::vector<int> n_states(refcount_.size(), 0);
  for (int32_t b : free_) {
    CHECK(b >= 0 && b < n_blocks()) << "free block " << b;
    const auto bi = static_cast<size_t>(b);
    CHECK(refcount_[bi] == 0 && !is_registered_[bi] && !is_in_lru_[bi]) << "free block " << b << " refcount " << refcount_[bi];
    ++n_states[bi];
  }
  for (int32_t b : lru_) {
    const auto bi = static_cast<size_t>(b);
    CHECK(refcount_[bi] == 0 && is_registered_[bi] && is_in_lru_[bi]) << "cached block " << b << " refcount " << refcount_[bi];
    ++n_states[bi];
  }
  int64_t n_registered = 0;
  for (size_t bi = 0; bi < refcount_.size(); ++bi) {
    CHECK(refcount_[bi] >= 0) << "block " << bi << " refcount " << refcount_[bi];
    if (refcount_[bi] > 0) ++n_states[bi];
    CHECK(n_states[bi] == 1) << "block " << bi << " is in " << n_states[bi] << " states (refcount " << refcount_[bi] << ")";
    if (is_registered_[bi]) {
      ++n_registered;
      const auto it = by_hash_.find(hash_[bi]);
      CHECK(it != by_hash_.end() && it->second == static_cast<int32_t>(bi)) << "block " << bi << " registered but not mapped";
    }
  }
  CHECK(n_registered == static_cast<int64_t>(by_hash_.size())) << n_registered << " registered blocks, " << by_hash_.size() << " hashes";
}

}  // namespace quatre::engine
