// generate() on the CUDA backend == generate() on the CPU backend for the tiny models (BF16 and FP8): greedy
// continuations of random prompts, token for token, through chunked prefill and one-token decode steps.
// Label gpu: skips without a GPU.
#include <gtest/gtest.h>

#include "engine/generate.h"
#include "model_test_util.h"

namespace quatre::engine {
namespace {

using model::test::CheckpointSpec;
using model::test::LoadedModel;
using model::test::TempDir;

TEST(GenerateCuda, GreedyOutputEqualsTheCpu) {
  if (!is_available(Device::kCuda)) GTEST_SKIP() << "no CUDA device present";
  TempDir dir;
  for (bool fp8 : {false, true}) {
    const auto path = model::test::make_checkpoint(dir, fp8 ? "fp8" : "bf16", CheckpointSpec{.fp8 = fp8});
    const LoadedModel cpu(path, Device::kCpu), gpu(path, Device::kCuda);
    const model::TextModel cpu_model(cpu.text(), cpu.weights, *cpu.backend);
    const model::TextModel gpu_model(gpu.text(), gpu.weights, *gpu.backend);
    for (uint64_t seed : {1u, 2u, 3u}) {
      GenerateRequest r;
      r.prompt = model::test::random_ids(static_cast<int64_t>(5 + 17 * seed), cpu.text().vocab_size, seed);
      r.sampling.temperature = 0.0f;
      r.max_tokens = 40;
      r.ignore_eos = true;
      const GenerateOptions o{.prefill_chunk_tokens = 16};
      const GenerateResult want = generate(cpu_model, r, 2, nullptr, o);
      const GenerateResult got = generate(gpu_model, r, 2, nullptr, o);
      EXPECT_EQ(got.ids, want.ids) << (fp8 ? "fp8" : "bf16") << " seed " << seed;
      EXPECT_EQ(got.ids.size(), 40u);
    }
  }
}

}  // namespace
}  // namespace quatre::engine
