// BlockPool: reference-counted KV cache blocks with prefix caching (hashed full blocks kept in an LRU while
// free, evicted least recently used first). Bookkeeping only: it never touches the cache memory.
// Depends on the standard library and core/check.h; knows nothing about the model or the scheduler.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

namespace quatre::engine {

// Hash of a full block: of its parent's hash and its token ids. Equal hashes mean equal prefixes (64-bit;
// a collision would reuse the wrong KV, at about 2^-64 per pair of blocks).
using BlockHash = uint64_t;
inline constexpr BlockHash kRootBlockHash = 0x51a7c0de5eed0001ull;  // parent of a sequence's first block

// What a token position holds that its id does not show: the image features spliced at an [IMG] token (a hash
// of that feature row). Mixed into the hash of the block holding `position`, so two prompts with equal ids but
// different images never share blocks, while the same image finds them again.
struct TokenExtra {
  int64_t position = 0;  // in the sequence
  uint64_t hash = 0;
};
// The extras of `extras` (ascending positions) with position in [begin, end).
std::span<const TokenExtra> extras_in(std::span<const TokenExtra> extras, int64_t begin, int64_t end);

// `extras`: those of the block's positions (none for text, which hashes as before).
BlockHash hash_block(BlockHash parent, std::span<const int32_t> ids, std::span<const TokenExtra> extras = {});

// Every block is in exactly one state: free (no content worth keeping), cached-free (refcount 0, registered
// under its hash, in the LRU) or in use (refcount > 0, registered or not).
class BlockPool {
 public:
  BlockPool(int64_t n_blocks, int64_t block_size, bool enable_prefix_caching = true);

  // The longest run of registered full blocks that the blocks of `ids` (with `extras`, ascending positions) hash
  // to, at most max_blocks of them; their refcounts are incremented. `hashes` receives their hashes.
  std::vector<int32_t> match_prefix(std::span<const int32_t> ids, int64_t max_blocks, std::vector<BlockHash>& hashes,
                                    std::span<const TokenExtra> extras = {});
  // Adds a lookup to the hit-rate counters; the caller records only lookups it kept (an admission that did
  // not fit and is retried next step would count its hits twice).
  void record_lookup(int64_t n_hit_blocks, int64_t n_miss_blocks) {
    n_hit_blocks_ += n_hit_blocks;
    n_miss_blocks_ += n_miss_blocks;
  }
  // n blocks with refcount 1: truly free ones first, then the least recently used cached ones (unregistered
  // on eviction). Returns false and changes nothing when fewer than n are available.
  bool allocate(int64_t n, std::vector<int32_t>& out);
  // Decrements refcounts. A block reaching 0 becomes cached-free when registered, else free. Release a
  // sequence's blocks last to first, so its tail is evicted before the prefix other requests share.
  void release(std::span<const int32_t> blocks);
  // Increments the refcounts of blocks already in use: another sequence shares them (the n choices of one
  // request share their prompt's full blocks).
  void retain(std::span<const int32_t> blocks);
  // Registers an in-use, now full block under `hash`. When another block already holds that hash (two
  // requests computed the same prefix), this one stays unregistered and is freed normally.
  void commit_full_block(int32_t block, BlockHash hash);

  int64_t n_blocks() const { return static_cast<int64_t>(refcount_.size()); }
  int64_t block_size() const { return block_size_; }
  int64_t n_free() const { return static_cast<int64_t>(free_.size()); }  // truly free
  int64_t n_cached() const { return static_cast<int64_t>(lru_.size()); }  // cached-free
  int64_t n_available() const { return n_free() + n_cached(); }
  int64_t n_in_use() const { return n_blocks() - n_available(); }
  int32_t refcount(int32_t block) const { return refcount_.at(static_cast<size_t>(block)); }
  int64_t n_hit_blocks() const { return n_hit_blocks_; }
  int64_t n_miss_blocks() const { return n_miss_blocks_; }
  double hit_rate() const;  // hits / (hits + misses); 0 before any query

  // Aborts (CHECK) when a block is in no state or in two, a refcount is negative, or the hash map and the
  // per-block hashes disagree.
  void check_invariants() const;

 private:
  int64_t block_size_;
  bool enable_prefix_caching_;
  std::vector<int32_t> refcount_;                           // [n_blocks]
  std::vector<BlockHash> hash_;                             // [n_blocks] valid where is_registered_
  std::vector<bool> is_registered_;                         // [n_blocks]
  std::vector<int32_t> free_;                               // truly free, popped from the back
  std::list<int32_t> lru_;                                  // cached-free, least recently used first
  std::vector<std::list<int32_t>::iterator> lru_pos_;       // [n_blocks] valid where in lru_
  std::vector<bool> is_in_lru_;                             // [n_blocks]
  std::unordered_map<BlockHash, int32_t> by_hash_;
  int64_t n_hit_blocks_ = 0, n_miss_blocks_ = 0;
};

}  // namespace quatre::engine
