// Decode steps as CUDA graphs (Backend::run_step, backend/cuda/step_graphs.h) on the tiny checkpoints: three
// sequences of different lengths decoded together for many steps, their block tables crossing several power-of-two
// widths (new keys), give logits bit for bit equal to the same steps run without graphs, and most steps are
// replays; bad input on a recorded key is an InvalidRequest, after which the graph still replays correctly.
// Label gpu: skips without a GPU.
#include <algorithm>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "model/step_inputs.h"
#include "model_test_util.h"

namespace quatre::model::test {
namespace {

constexpr int64_t kBlockSize = 4;  // small blocks: the tables' widths double several times in 60 steps
constexpr int kSteps = 60;

// Greedy decode of three sequences (prompts of 3, 9 and 17 tokens, each prefilled in its own step) for kSteps
// steps of one token each; returns every decode step's logits [3, V], concatenated.
std::vector<float> decode_logits(const TextModel& model, Backend& be) {
  const io::TextConfig& text = model.config();
  KvCache kv(text, be, {.n_blocks = 64, .block_size = kBlockSize, .dtype = DType::BF16});
  Arena arena(be.memory());
  std::vector<std::vector<int32_t>> tables;
  std::vector<int64_t> lengths;
  std::vector<int32_t> last;
  for (int64_t n : {3, 9, 17}) {
    tables.push_back(kv.allocate((n + kSteps + kBlockSize - 1) / kBlockSize));
    const std::vector<int32_t> prompt = random_ids(n, text.vocab_size, static_cast<uint64_t>(n));
    StepBuilder b(kBlockSize);
    b.add({.block_table = std::span(tables.back()).first(static_cast<size_t>((n + kBlockSize - 1) / kBlockSize)),
           .ids = prompt});
    arena.reset();
    std::vector<float> logits(static_cast<size_t>(text.vocab_size));
    be.copy_to_host(model.forward(b.inputs(), kv, arena), logits.data());
    last.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    lengths.push_back(n);
  }
  std::vector<float> all;
  for (int step = 0; step < kSteps; ++step) {
    StepBuilder b(kBlockSize);
    for (size_t s = 0; s < 3; ++s) {
      const int64_t blocks = (lengths[s] + 1 + kBlockSize - 1) / kBlockSize;  // the table as the engine grows it
      b.add({.block_table = std::span(tables[s]).first(static_cast<size_t>(blocks)), .n_cached = lengths[s],
             .ids = std::span(&last[s], 1)});
    }
    arena.reset();
    std::vector<float> logits(static_cast<size_t>(3 * text.vocab_size));
    be.copy_to_host(model.forward(b.inputs(), kv, arena), logits.data());
    for (size_t s = 0; s < 3; ++s) {
      const auto row = logits.begin() + static_cast<int64_t>(s) * text.vocab_size;
      last[s] = static_cast<int32_t>(std::max_element(row, row + text.vocab_size) - row);
      ++lengths[s];
    }
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

cuda::CudaBackend& cuda_backend(const LoadedModel& m) { return dynamic_cast<cuda::CudaBackend&>(*m.backend); }

TEST(StepGraphsCuda, ReplayedDecodeStepsEqualEagerOnesBitForBit) {
  if (!is_available(Device::kCuda)) GTEST_SKIP() << "no CUDA device present";
  const TempDir dir;
  for (bool fp8 : {false, true}) {
    const LoadedModel m(make_checkpoint(dir, fp8 ? "fp8" : "bf16", {.fp8 = fp8}), Device::kCuda);
    const TextModel model(m.text(), m.weights, *m.backend);
    cuda::CudaBackend& be = cuda_backend(m);
    be.set_step_graphs(false);
    const std::vector<float> eager = decode_logits(model, be);
    be.set_step_graphs(true);
    const cuda::StepGraphs::Stats before = be.step_graph_stats();
    const std::vector<float> graphed = decode_logits(model, be);
    const cuda::StepGraphs::Stats after = be.step_graph_stats();
    EXPECT_EQ(graphed, eager) << (fp8 ? "fp8" : "bf16");
    // Widths 2, 4, 8, 16 of 4-entry blocks over 60 steps: a handful of keys, each run once eagerly, then recorded.
    EXPECT_GE(after.recorded - before.recorded, 3) << (fp8 ? "fp8" : "bf16");
    EXPECT_GE(after.replayed - before.replayed, kSteps - 10) << (fp8 ? "fp8" : "bf16");
    EXPECT_EQ(after.refused, before.refused);
  }
}

TEST(StepGraphsCuda, BadInputOnARecordedKeyIsAnErrorAndReplaysGoOn) {
  if (!is_available(Device::kCuda)) GTEST_SKIP() << "no CUDA device present";
  const TempDir dir;
  const LoadedModel m(make_checkpoint(dir, "bf16", {}), Device::kCuda);
  const TextModel model(m.text(), m.weights, *m.backend);
  cuda::CudaBackend& be = cuda_backend(m);
  be.set_step_graphs(true);
  KvCache kv(m.text(), be, {.n_blocks = 8, .block_size = 16});
  const std::vector<int32_t> table = kv.allocate(2);
  Arena arena(be.memory());
  const int64_t V = m.text().vocab_size;
  auto step = [&](int32_t id, int64_t n_cached) {
    StepBuilder b(16);
    b.add({.block_table = table, .n_cached = n_cached, .ids = std::span(&id, 1)});
    arena.reset();
    std::vector<float> logits(static_cast<size_t>(V));
    be.copy_to_host(model.forward(b.inputs(), kv, arena), logits.data());
    return logits;
  };
  for (int64_t n = 0; n < 4; ++n) step(static_cast<int32_t>(n + 1), n);  // recorded by now
  const int64_t replayed = be.step_graph_stats().replayed;
  EXPECT_GE(replayed, 2);
  EXPECT_THROW(step(static_cast<int32_t>(V), 4), InvalidRequest) << "token id outside the vocabulary";
  EXPECT_THROW(step(-1, 4), InvalidRequest);
  {
    const std::vector<int32_t> bad_table = {table[0], 8};  // block 8 of 8
    StepBuilder b(16);
    const int32_t id = 1;
    b.add({.block_table = bad_table, .n_cached = 20, .ids = std::span(&id, 1)});
    arena.reset();
    EXPECT_THROW(model.forward(b.inputs(), kv, arena), InvalidRequest) << "a block outside the cache";
  }
  // The same step again with graphs and without: equal, and it was a replay.
  const std::vector<float> graphed = step(7, 4);
  EXPECT_GT(be.step_graph_stats().replayed, replayed);
  be.set_step_graphs(false);
  EXPECT_EQ(step(7, 4), graphed);
}

}  // namespace
}  // namespace quatre::model::test
