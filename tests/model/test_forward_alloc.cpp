// The forward makes no heap allocation in steady state (STYLE.md (b)): this binary replaces the global operator
// new to count allocations, so it is kept apart from the other tests.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include <gtest/gtest.h>

#include "model/step_inputs.h"
#include "model_test_util.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

// GCC, inlining these replacements at -O1 and above, pairs the `new` in a call site with the `free` below and
// warns of a mismatch; the pairing is right by construction (every replaced new allocates with malloc/aligned_alloc).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
// The aligned forms too: Arena chunks and the KV pool come from host_memory(), which uses them.
void* operator new(size_t n, std::align_val_t align) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const auto a = static_cast<size_t>(align);
  if (void* p = std::aligned_alloc(a, (std::max<size_t>(n, 1) + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }

namespace quatre::model::test {
namespace {

TEST(ForwardAllocations, NoHeapAllocationInSteadyState) {
  const TempDir dir;
  LoadedModel m(make_checkpoint(dir, "tiny", {}));
  for (MlaForm form : {MlaForm::kNaive, MlaForm::kAbsorbed}) {
    const TextModel model(m.text(), m.weights, *m.backend, {.mla_form = form});
    KvCache kv(m.text(), *m.backend, {.n_blocks = 8, .block_size = 16});
    const std::vector<int32_t> table = kv.allocate(8);
    Arena arena;
    const std::vector<int32_t> prompt = random_ids(40, m.text().vocab_size, 1);
    StepBuilder prefill(kv.block_size());
    prefill.add({.block_table = table, .ids = prompt}, LogitRows::kAll);
    const StepInputs prefill_in = prefill.inputs();
    StepBuilder decode(kv.block_size());
    const std::vector<int32_t> one = {5};
    decode.add({.block_table = table, .n_cached = 40, .ids = one});
    const StepInputs decode_in = decode.inputs();
    for (int warm = 0; warm < 2; ++warm) {  // the first steps size the arena and the backend's lazy tables
      arena.reset();
      model.forward(prefill_in, kv, arena);
      arena.reset();
      model.forward(decode_in, kv, arena);
    }
    const int64_t probe = g_allocations.load();
    const auto text = std::make_unique<std::string>(100, 'x');
    ASSERT_GT(g_allocations.load(), probe) << "the counting operator new is not the one in use";
    ASSERT_EQ(text->size(), 100u);
    {
      Arena probe_arena;
      probe_arena.allocate(1);
    }
    ASSERT_GT(g_allocations.load(), probe + 1) << "aligned allocations (Arena chunks) are counted too";
    const int64_t before = g_allocations.load();
    arena.reset();
    model.forward(prefill_in, kv, arena);
    arena.reset();
    model.forward(decode_in, kv, arena);
    EXPECT_EQ(g_allocations.load() - before, 0) << "heap allocations during two steady-state steps";
  }
}

}  // namespace
}  // namespace quatre::model::test
