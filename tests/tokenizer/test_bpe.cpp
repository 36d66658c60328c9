// Tests of RankMap and the byte-pair merge: the two merge loops (scan, heap) against a naive transcription of
// PROTOCOL §1.5 on random vocabularies and pieces, plus the whole-piece-lookup rule.
#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tekken_test_util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/rank_map.h"

namespace quatre::tokenizer {
namespace {

using testing::escaped;

RankMap bytes_plus(const std::vector<std::string>& merges) {
  RankMap ranks(256 + merges.size());
  for (int b = 0; b < 256; ++b) EXPECT_FALSE(ranks.add_unique(std::string(1, static_cast<char>(b))));
  for (const std::string& m : merges) EXPECT_FALSE(ranks.add_unique(m)) << m;
  return ranks;
}

// PROTOCOL §1.5 step 2 read literally: recompute every adjacent pair each round, merge the lowest (leftmost).
std::vector<std::string> naive_merge(std::string_view piece, const RankMap& ranks) {
  std::vector<std::string> parts;
  for (const char c : piece) parts.emplace_back(1, c);
  while (parts.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    size_t best = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const auto r = ranks.find(parts[i] + parts[i + 1]);
      if (r && *r < best_rank) {
        best_rank = *r;
        best = i;
      }
    }
    if (best_rank == std::numeric_limits<int32_t>::max()) break;
    parts[best] += parts[best + 1];
    parts.erase(parts.begin() + static_cast<ptrdiff_t>(best) + 1);
  }
  return parts;
}

std::vector<std::string> parts_of(std::string_view piece, const std::vector<uint32_t>& bounds) {
  std::vector<std::string> parts;
  for (size_t k = 0; k + 1 < bounds.size(); ++k) parts.emplace_back(piece.substr(bounds[k], bounds[k + 1] - bounds[k]));
  return parts;
}

TEST(RankMap, FindsEveryEntryAndRejectsDuplicates) {
  RankMap ranks(5);
  EXPECT_FALSE(ranks.add_unique("a"));
  EXPECT_FALSE(ranks.add_unique("ab"));
  EXPECT_FALSE(ranks.add_unique(std::string("\0b", 2)));
  EXPECT_EQ(ranks.add_unique("ab"), 1);
  EXPECT_EQ(ranks.size(), 3);
  EXPECT_EQ(ranks.find("ab"), 1);
  EXPECT_EQ(ranks.find(std::string("\0b", 2)), 2);
  EXPECT_EQ(ranks.find("b"), std::nullopt);
  EXPECT_EQ(ranks.find(""), std::nullopt);
  EXPECT_EQ(ranks.bytes(1), "ab");
}

TEST(RankMap, ManyEntriesRoundTrip) {
  std::mt19937 rng(7);
  std::vector<std::string> keys;
  RankMap ranks(20000);
  for (int i = 0; i < 20000; ++i) {
    std::string k;
    const int n = 1 + static_cast<int>(rng() % 20);
    for (int j = 0; j < n; ++j) k += static_cast<char>(rng() % 256);
    if (!ranks.add_unique(k)) keys.push_back(k);
  }
  for (size_t r = 0; r < keys.size(); ++r) ASSERT_EQ(ranks.find(keys[r]), static_cast<int32_t>(r));
}

// Random vocabularies grown by merging existing tokens (as BPE training does), over a small alphabet so that
// pieces merge a lot.
TEST(Bpe, ScanAndHeapMatchNaiveMerge) {
  std::mt19937 rng(42);
  for (int vocab_trial = 0; vocab_trial < 20; ++vocab_trial) {
    std::vector<std::string> tokens = {"a", "b", "c", "d"};
    std::vector<std::string> merges;
    RankMap probe(4096);
    for (int b = 0; b < 256; ++b) probe.add_unique(std::string(1, static_cast<char>(b)));
    while (merges.size() < 300) {
      const std::string m = tokens[rng() % tokens.size()] + tokens[rng() % tokens.size()];
      if (m.size() <= 12 && !probe.add_unique(m)) {
        merges.push_back(m);
        tokens.push_back(m);
      }
    }
    const RankMap ranks = bytes_plus(merges);
    for (int piece_trial = 0; piece_trial < 200; ++piece_trial) {
      std::string piece;
      const size_t n = 1 + rng() % (piece_trial % 4 == 0 ? 300 : 70);  // across kMaxScanBytes
      for (size_t k = 0; k < n; ++k) piece += static_cast<char>('a' + rng() % (piece_trial % 3 == 0 ? 2 : 5));
      const auto want = naive_merge(piece, ranks);
      ASSERT_EQ(parts_of(piece, detail::bpe_bounds_scan(piece, ranks)), want) << escaped(piece);
      ASSERT_EQ(parts_of(piece, detail::bpe_bounds_heap(piece, ranks)), want) << escaped(piece);
      std::vector<int32_t> ids;
      bpe_encode(piece, ranks, 1000, ids);
      std::vector<int32_t> want_ids;
      if (const auto whole = ranks.find(piece)) {
        want_ids = {*whole + 1000};
      } else {
        for (const auto& p : want) want_ids.push_back(*ranks.find(p) + 1000);
      }
      ASSERT_EQ(ids, want_ids) << escaped(piece);
    }
  }
}

TEST(Bpe, TiesGoToTheLeftmostPair) {
  const RankMap ranks = bytes_plus({"aa"});
  EXPECT_EQ(naive_merge("aaa", ranks), (std::vector<std::string>{"aa", "a"}));
  EXPECT_EQ(parts_of("aaa", detail::bpe_bounds_scan("aaa", ranks)), (std::vector<std::string>{"aa", "a"}));
  EXPECT_EQ(parts_of("aaa", detail::bpe_bounds_heap("aaa", ranks)), (std::vector<std::string>{"aa", "a"}));
  const std::string long_run(101, 'a');  // heap path: 50 "aa" then a lone "a"
  const auto parts = parts_of(long_run, detail::bpe_bounds_heap(long_run, ranks));
  ASSERT_EQ(parts.size(), 51u);
  EXPECT_EQ(parts.back(), "a");
}

TEST(Bpe, WholePieceLookupComesFirst) {
  // "abc" is a token, but no merge path reaches it ("ab" and "bc" are not tokens).
  const RankMap ranks = bytes_plus({"abc"});
  std::vector<int32_t> ids;
  bpe_encode("abc", ranks, 0, ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{256}));
  ids.clear();
  bpe_encode("abcabc", ranks, 0, ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{'a', 'b', 'c', 'a', 'b', 'c'}));
}

TEST(Bpe, LowerRankMergesFirstEvenWhenToTheRight) {
  // "bc" (rank 256) beats "ab" (rank 257): "abc" -> "a" "bc"; then "abc"? not a token -> stays.
  const RankMap ranks = bytes_plus({"bc", "ab"});
  std::vector<int32_t> ids;
  bpe_encode("abc", ranks, 0, ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{'a', 256}));
}

}  // namespace
}  // namespace quatre::tokenizer
