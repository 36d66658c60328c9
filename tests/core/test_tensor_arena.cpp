// Tensor views (shape, rows, reshape) and the Arena (chunk reuse after reset, pointers stable while it grows,
// poisoning).
#include <cmath>
#include <cstring>
#include <set>

#include <gtest/gtest.h>

#include "core/arena.h"
#include "core/tensor.h"

namespace quatre {
namespace {

TEST(Tensor, ShapeRowsAndReshape) {
  float data[24];
  for (int i = 0; i < 24; ++i) data[i] = static_cast<float>(i);
  const Tensor t(data, DType::F32, {4, 6});
  EXPECT_EQ(t.rank(), 2);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.bytes(), 96u);
  EXPECT_EQ(t.dim(-1), 6);
  EXPECT_EQ(t.shape_string(), "[4, 6]");
  const Tensor r = t.rows(1, 2);
  EXPECT_TRUE(has_shape(r, {2, 6}));
  EXPECT_EQ(r.data_as<float>()[0], 6.0f);
  const Tensor v = t.reshaped({2, 3, 4});
  EXPECT_TRUE(has_shape(v, {2, 3, 4}));
  EXPECT_FALSE(has_shape(v, {2, 12}));
  EXPECT_EQ(v.data(), t.data());
}

TEST(Arena, ReusesItsChunksAfterReset) {
  Arena a(host_memory(), {.chunk_bytes = 1024});
  std::vector<void*> first;
  for (int i = 0; i < 10; ++i) first.push_back(a.allocate(300));
  const size_t chunks = a.n_chunks(), capacity = a.capacity_bytes();
  EXPECT_GE(chunks, 3u);
  for (int round = 0; round < 3; ++round) {
    a.reset();
    for (int i = 0; i < 10; ++i) EXPECT_EQ(a.allocate(300), first[static_cast<size_t>(i)]) << "allocation " << i;
    EXPECT_EQ(a.n_chunks(), chunks);
    EXPECT_EQ(a.capacity_bytes(), capacity);
  }
}

TEST(Arena, EarlierAllocationsSurviveGrowthAndDoNotOverlap) {
  Arena a(host_memory(), {.chunk_bytes = 256});
  std::vector<std::pair<unsigned char*, size_t>> blocks;
  for (size_t i = 0; i < 40; ++i) {
    const size_t n = 1 + (i * 37) % 700;  // some larger than a chunk
    auto* p = static_cast<unsigned char*>(a.allocate(n, 16));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u);
    std::memset(p, static_cast<int>(i), n);
    blocks.emplace_back(p, n);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    for (size_t j = 0; j < blocks[i].second; ++j) ASSERT_EQ(blocks[i].first[j], static_cast<unsigned char>(i));
  }
  EXPECT_GE(a.used_bytes(), 40u);
}

// rewind(mark) frees what came after the mark, keeps what came before, and reuses the freed chunks.
TEST(Arena, RewindFreesWhatCameAfterTheMark) {
  Arena a(host_memory(), {.chunk_bytes = 1024});
  auto* kept = static_cast<unsigned char*>(a.allocate(300));
  std::memset(kept, 7, 300);
  const Arena::Mark m = a.mark();
  const size_t used = a.used_bytes();
  std::vector<void*> first;
  for (int i = 0; i < 10; ++i) first.push_back(a.allocate(300));
  const size_t chunks = a.n_chunks();
  for (int round = 0; round < 3; ++round) {
    a.rewind(m);
    EXPECT_EQ(a.used_bytes(), used);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(a.allocate(300), first[static_cast<size_t>(i)]) << "allocation " << i;
    EXPECT_EQ(a.n_chunks(), chunks);
  }
  for (int j = 0; j < 300; ++j) ASSERT_EQ(kept[j], 7);
  a.reset();
  EXPECT_DEATH(a.rewind(m), "after the current position");
}

// seek(mark) goes to a mark taken after the same allocations (a replayed step), so what comes next lands where it
// landed then; a chunk that does not exist is a bug.
TEST(Arena, SeekGoesToAMarkOfTheSameAllocations) {
  Arena a(host_memory(), {.chunk_bytes = 1024});
  a.allocate(300);
  a.allocate(900);  // a second chunk
  const Arena::Mark end = a.mark();
  void* next = a.allocate(100);
  a.reset();
  a.seek(end);
  EXPECT_EQ(a.allocate(100), next);
  EXPECT_DEATH(a.seek({.chunk = 7, .offset = 0, .used_before = 0}), "Arena::seek");
}

// layout_id names one arena's chunks: unique, kept while chunks are only added, changed when one is replaced.
TEST(Arena, LayoutIdChangesOnlyWhenAChunkIsReplaced) {
  Arena a(host_memory(), {.chunk_bytes = 1024}), b(host_memory(), {.chunk_bytes = 1024});
  EXPECT_NE(a.layout_id(), b.layout_id());
  const uint64_t id = a.layout_id();
  a.allocate(100);
  a.allocate(2000);  // a new chunk of 2000 after the first: added, not replaced
  EXPECT_EQ(a.layout_id(), id);
  a.reset();
  a.allocate(100);
  a.allocate(5000);  // the empty 2000-byte chunk is too small: replaced by a larger one
  EXPECT_NE(a.layout_id(), id);
}

TEST(Arena, PoisonFillsAllocationsWithNan) {
  Arena a(host_memory(), {.poison = true});
  const Tensor t = a.tensor(DType::F32, {3, 5});
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_TRUE(std::isnan(t.data_as<float>()[i]));
}

}  // namespace
}  // namespace quatre
