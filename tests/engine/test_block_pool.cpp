// BlockPool: refcounts, prefix matching by chained block hashes, LRU eviction of cached-free blocks, and the
// invariants under a seeded random mix of operations.
#include <algorithm>
#include <numeric>

#include <gtest/gtest.h>

#include "core/rng.h"
#include "engine/block_pool.h"

namespace quatre::engine {
namespace {

std::vector<int32_t> iota_ids(int n, int32_t start) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

// Allocates blocks for `ids` (block_size 4) and registers every full one, as the scheduler does after a step.
std::vector<int32_t> fill(BlockPool& pool, const std::vector<int32_t>& ids) {
  std::vector<int32_t> blocks;
  const int64_t n_blocks = (static_cast<int64_t>(ids.size()) + 3) / 4;
  EXPECT_TRUE(pool.allocate(n_blocks, blocks));
  BlockHash parent = kRootBlockHash;
  for (int64_t j = 0; (j + 1) * 4 <= static_cast<int64_t>(ids.size()); ++j) {
    parent = hash_block(parent, std::span(ids).subspan(static_cast<size_t>(j * 4), 4));
    pool.commit_full_block(blocks[static_cast<size_t>(j)], parent);
  }
  return blocks;
}

TEST(BlockPool, ExtrasChangeTheBlockHashAndTheMatch) {
  const std::vector<int32_t> ids = iota_ids(8, 100);
  const std::vector<TokenExtra> x = {{.position = 5, .hash = 7}}, y = {{.position = 5, .hash = 8}}, z = {{.position = 6, .hash = 7}};
  const std::span<const int32_t> first = std::span(ids).first(4);
  EXPECT_NE(hash_block(kRootBlockHash, first, x), hash_block(kRootBlockHash, first));
  EXPECT_NE(hash_block(kRootBlockHash, first, x), hash_block(kRootBlockHash, first, y));  // another image
  EXPECT_NE(hash_block(kRootBlockHash, first, x), hash_block(kRootBlockHash, first, z));  // the same one elsewhere
  EXPECT_EQ(extras_in(x, 4, 8).size(), 1u);
  EXPECT_TRUE(extras_in(x, 0, 4).empty());
  EXPECT_TRUE(extras_in(x, 6, 8).empty());

  // Blocks registered with x in the second block: the first matches whatever the extras, the second only with x.
  BlockPool pool(4, 4);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.allocate(2, blocks));
  const BlockHash h0 = hash_block(kRootBlockHash, first), h1 = hash_block(h0, std::span(ids).subspan(4, 4), extras_in(x, 4, 8));
  pool.commit_full_block(blocks[0], h0);
  pool.commit_full_block(blocks[1], h1);
  std::vector<BlockHash> hashes;
  std::vector<int32_t> hit = pool.match_prefix(ids, 2, hashes, y);
  EXPECT_EQ(hit, std::vector<int32_t>{blocks[0]});
  pool.release(hit);
  hit = pool.match_prefix(ids, 2, hashes, x);
  EXPECT_EQ(hit, blocks);
  EXPECT_EQ(hashes, (std::vector<BlockHash>{h0, h1}));
  pool.release(hit);
  pool.release(blocks);
  pool.check_invariants();
}

TEST(BlockPool, AllocateUntilEmptyThenReleaseEverything) {
  BlockPool pool(5, 4);
  std::vector<int32_t> a, b;
  EXPECT_TRUE(pool.allocate(3, a));
  EXPECT_FALSE(pool.allocate(3, b));  // only 2 left: nothing taken
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.n_free(), 2);
  EXPECT_TRUE(pool.allocate(2, b));
  EXPECT_EQ(pool.n_available(), 0);
  pool.check_invariants();
  pool.release(a);
  pool.release(b);
  EXPECT_EQ(pool.n_free(), 5);
  EXPECT_EQ(pool.n_in_use(), 0);
  pool.check_invariants();
}

TEST(BlockPool, ReleasedFullBlocksAreFoundByTheirPrefix) {
  BlockPool pool(8, 4);
  const std::vector<int32_t> ids = iota_ids(10, 100);  // 2 full blocks and a partial one
  const std::vector<int32_t> blocks = fill(pool, ids);
  pool.release(blocks);
  EXPECT_EQ(pool.n_cached(), 2);  // the partial block is simply free
  EXPECT_EQ(pool.n_free(), 6);
  pool.check_invariants();

  std::vector<BlockHash> hashes;
  const std::vector<int32_t> hit = pool.match_prefix(ids, 2, hashes);
  EXPECT_EQ(hit, std::vector<int32_t>(blocks.begin(), blocks.begin() + 2));
  EXPECT_EQ(hashes.size(), 2u);
  EXPECT_EQ(pool.refcount(hit[0]), 1);
  EXPECT_EQ(pool.n_cached(), 0);
  pool.check_invariants();

  // Shared: a second holder increments the refcount; the block becomes cached-free only when both let go.
  std::vector<int32_t> again = pool.match_prefix(ids, 1, hashes);
  EXPECT_EQ(pool.refcount(hit[0]), 2);
  pool.release(again);
  pool.release(hit);
  EXPECT_EQ(pool.n_cached(), 2);
  pool.check_invariants();
}

TEST(BlockPool, AMatchNeedsTheSamePrefixNotOnlyTheSameBlock) {
  BlockPool pool(8, 4);
  std::vector<int32_t> ids = iota_ids(8, 0);
  pool.release(fill(pool, ids));
  std::vector<BlockHash> hashes;
  std::vector<int32_t> other = ids;
  other[1] = 999;  // first block differs, second is equal: its parent hash differs, so no match at all
  EXPECT_TRUE(pool.match_prefix(other, 2, hashes).empty());
  other = ids;
  other[6] = 999;  // second block differs: the first still matches
  std::vector<int32_t> hit = pool.match_prefix(other, 2, hashes);
  EXPECT_EQ(hit.size(), 1u);
  pool.release(hit);
  pool.check_invariants();
}

TEST(BlockPool, AllocationTakesFreeBlocksFirstThenEvictsTheLeastRecentlyUsed) {
  BlockPool pool(4, 4);
  const std::vector<int32_t> a = iota_ids(4, 0), b = iota_ids(4, 50);
  const std::vector<int32_t> blocks_a = fill(pool, a), blocks_b = fill(pool, b);
  pool.release(blocks_a);  // a is older in the LRU than b
  pool.release(blocks_b);
  std::vector<int32_t> got;
  ASSERT_TRUE(pool.allocate(2, got));  // the two truly free blocks: both cached prefixes survive
  EXPECT_EQ(pool.n_cached(), 2);
  ASSERT_TRUE(pool.allocate(1, got));  // evicts a
  EXPECT_EQ(got.back(), blocks_a[0]);
  std::vector<BlockHash> hashes;
  EXPECT_TRUE(pool.match_prefix(a, 1, hashes).empty());
  const std::vector<int32_t> hit_b = pool.match_prefix(b, 1, hashes);
  EXPECT_EQ(hit_b, blocks_b);
  pool.release(hit_b);
  pool.release(got);
  pool.check_invariants();
  EXPECT_EQ(pool.n_in_use(), 0);
}

TEST(BlockPool, ASecondBlockWithTheSameContentStaysUnregistered) {
  BlockPool pool(4, 4);
  const std::vector<int32_t> ids = iota_ids(4, 7);
  const std::vector<int32_t> first = fill(pool, ids), second = fill(pool, ids);
  pool.release(second);
  EXPECT_EQ(pool.n_free(), 3);  // not cached: the first block holds that hash
  pool.release(first);
  EXPECT_EQ(pool.n_cached(), 1);
  pool.check_invariants();
}

TEST(BlockPool, PrefixCachingOffNeverMatches) {
  BlockPool pool(4, 4, /*enable_prefix_caching=*/false);
  const std::vector<int32_t> ids = iota_ids(8, 0);
  pool.release(fill(pool, ids));
  std::vector<BlockHash> hashes;
  EXPECT_TRUE(pool.match_prefix(ids, 2, hashes).empty());
  EXPECT_EQ(pool.n_free(), 4);
  pool.check_invariants();
}

TEST(BlockPool, TheHitRateCountsRecordedLookups) {
  BlockPool pool(4, 4);
  EXPECT_EQ(pool.hit_rate(), 0.0);
  pool.record_lookup(1, 3);
  EXPECT_DOUBLE_EQ(pool.hit_rate(), 0.25);
  EXPECT_EQ(pool.n_hit_blocks(), 1);
  EXPECT_EQ(pool.n_miss_blocks(), 3);
}

TEST(BlockPoolDeathTest, ReleasingABlockNobodyHoldsAborts) {
  BlockPool pool(2, 4);
  const std::vector<int32_t> b = {1};
  EXPECT_DEATH(pool.release(b), "released with refcount 0");
}

// Random holders taking fresh or matched blocks, committing and releasing; invariants after every operation.
TEST(BlockPool, RandomMixKeepsInvariantsAndLeaksNothing) {
  Xoshiro256 rng(42);
  BlockPool pool(12, 4);
  std::vector<std::vector<int32_t>> holders;
  int64_t n_hits = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const uint64_t op = rng.next() % 3;
    if (op == 0 || holders.empty()) {
      // A sequence from a small alphabet of prefixes, so matches happen.
      std::vector<int32_t> ids(static_cast<size_t>(1 + rng.next() % 16));
      const int32_t prefix = static_cast<int32_t>(rng.next() % 3);
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = i < 8 ? prefix * 10 + static_cast<int32_t>(i) : static_cast<int32_t>(rng.next() % 5);
      std::vector<BlockHash> hashes;
      std::vector<int32_t> blocks = pool.match_prefix(ids, static_cast<int64_t>(ids.size() - 1) / 4, hashes);
      n_hits += static_cast<int64_t>(blocks.size());
      const int64_t n_more = (static_cast<int64_t>(ids.size()) + 3) / 4 - static_cast<int64_t>(blocks.size());
      if (!pool.allocate(n_more, blocks)) {
        pool.release(blocks);
      } else {
        BlockHash parent = kRootBlockHash;
        for (int64_t j = 0; (j + 1) * 4 <= static_cast<int64_t>(ids.size()); ++j) {
          parent = hash_block(parent, std::span(ids).subspan(static_cast<size_t>(j * 4), 4));
          if (j >= static_cast<int64_t>(hashes.size())) pool.commit_full_block(blocks[static_cast<size_t>(j)], parent);
        }
        holders.push_back(std::move(blocks));
      }
    } else {
      const size_t k = rng.next() % holders.size();
      std::reverse(holders[k].begin(), holders[k].end());
      pool.release(holders[k]);
      holders.erase(holders.begin() + static_cast<std::ptrdiff_t>(k));
    }
    pool.check_invariants();
  }
  for (const auto& h : holders) pool.release(h);
  pool.check_invariants();
  EXPECT_EQ(pool.n_in_use(), 0);
  EXPECT_GT(n_hits, 0);
  EXPECT_GT(pool.n_cached(), 0);
}

}  // namespace
}  // namespace quatre::engine
