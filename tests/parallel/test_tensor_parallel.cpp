// Tensor and expert parallelism on the CPU (issue #10): the tiny goldens (tests/data/golden, transformers 5.17) met by
// N = 2 and 4 ranks as threads (TensorParallelGroup + ThreadCommunicator) as by one: prefill logits and every
// layer's hidden state, 32 greedy decode steps through the KV cache, and the same numbers as the unsharded model;
// generate() driving rank 0 gives the 1-rank continuation; the sharded weights are the right slices; a size that
// does not divide the model is refused by name. test_tensor_parallel_cuda builds this file with QUATRE_TP_CUDA: the
// same goldens with one GPU per rank through NCCL (label gpu; skips where fewer GPUs than ranks are visible).
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/generate.h"
#include "io/safetensors.h"
#include "model/prompt_run.h"
#include "model_test_util.h"
#include "parallel/tensor_parallel.h"
#include "parallel/thread_communicator.h"
#include "synth/gen_model.h"

namespace quatre::parallel {
namespace {

#ifdef QUATRE_TP_CUDA
constexpr Device kDevice = Device::kCuda;
#else
constexpr Device kDevice = Device::kCpu;
#endif

namespace fs = std::filesystem;
using model::test::describe;
using model::test::diff;
using model::test::greedy;
using model::test::read_tensor;
using model::test::to_i32;
using model::test::Diff;

// The golden test's tolerances (tests/model/test_golden.cpp).
constexpr double kLogitMaxAbs = 5e-5;
constexpr double kHiddenMaxAbs = 5e-5;
constexpr float kGreedyMinMargin = 1e-3f;

fs::path golden_dir() { return fs::path(QUATRE_SOURCE_DIR) / "tests" / "data" / "golden"; }

// The golden checkpoints (tools/reference/make_checkpoints.sh), written by gen-model as the golden test does.
struct GoldenCheckpoint {
  const char* name;
  const char* preset;
  bool fp8;
  uint64_t seed;
  bool text_only;
};
const GoldenCheckpoint kCheckpoints[] = {
    {"tiny-hf-bf16-s1", "tiny", false, 1, false},
    {"tiny-hf-fp8-s1", "tiny", true, 1, false},
    {"tiny-dense-text-hf-bf16-s2", "tiny-dense", false, 2, true},
    {"tiny-yarn32-hf-bf16-s3", "tiny-yarn32", false, 3, false},
};

fs::path write_checkpoint(const model::test::TempDir& dir, const GoldenCheckpoint& ck) {
  synth::GenModelOptions o;
  o.config = io::preset(ck.preset);
  if (ck.text_only) o.config.vision.reset();
  o.format = io::CheckpointFormat::kHuggingFace;
  o.fp8 = ck.fp8;
  o.seed = ck.seed;
  const fs::path path = dir.path() / ck.name;
  synth::generate_checkpoint(o, path);
  return path;
}

// Empty when a group of n ranks can run here; else why not (too few GPUs, no NCCL).
std::string cannot_run(int n_ranks) {
  if (!is_available(kDevice)) return std::string("no ") + std::string(device_name(kDevice)) + " device";
  try {
    check_tensor_parallel_supported(kDevice, n_ranks);
  } catch (const InvalidRequest& e) {
    return e.what();
  }
  return {};
}

std::vector<std::string> golden_files() {
  std::vector<std::string> names;
  for (const fs::path& p : model::test::safetensors_in(golden_dir())) names.push_back(p.filename().string());
  return names;
}

class TensorParallelGolden : public testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(TensorParallelGolden, MatchesTransformersAndOneRank) {
  const auto& [file, n_ranks] = GetParam();
  if (const std::string why = cannot_run(n_ranks); !why.empty()) GTEST_SKIP() << why;
  const io::SafetensorsFile golden(golden_dir() / file);
  const std::map<std::string, std::string>& meta = golden.metadata();
  const GoldenCheckpoint* ck = nullptr;
  for (const GoldenCheckpoint& c : kCheckpoints) {
    if (meta.at("checkpoint") == c.name) ck = &c;
  }
  ASSERT_NE(ck, nullptr) << "unknown checkpoint " << meta.at("checkpoint");
  model::test::TempDir dir;
  const fs::path path = write_checkpoint(dir, *ck);
  const model::SoftmaxScale mode = meta.at("softmax_scale_mode") == "hf" ? model::SoftmaxScale::kTransformers
                                                                          : model::SoftmaxScale::kRelease;
  const model::TextModelOptions options{.mla_form = MlaForm::kAbsorbed, .softmax_scale = mode};

  const model::test::LoadedModel one(path, kDevice);  // the unsharded model
  const model::TextModel single(one.text(), one.weights, *one.backend, options);
  const TensorParallelGroup group(one.checkpoint, kDevice, n_ranks, options);
  ASSERT_EQ(group.size(), n_ranks);
  const model::TextModel& m = group.model();

  const std::vector<int32_t> ids = to_i32(read_tensor<int64_t>(golden, "input_ids"));
  const std::vector<int32_t> positions = to_i32(read_tensor<int64_t>(golden, "positions"));
  const std::vector<int32_t> rows = to_i32(read_tensor<int64_t>(golden, "logit_rows"));
  const std::vector<float> want_hidden = read_tensor<float>(golden, "hidden_states");
  const model::PromptRunOptions run_options{.positions = positions, .logit_rows = rows, .capture_hidden = !want_hidden.empty()};
  const model::PromptRun run = model::run_prompt(m, ids, run_options);
  const model::PromptRun run1 = model::run_prompt(single, ids, run_options);
  const Diff d = diff(run.logits, read_tensor<float>(golden, "logits"));
  EXPECT_TRUE(d.same_nonfinite && d.max_abs <= kLogitMaxAbs) << "logits vs transformers: " << describe(d);
  const Diff d1 = diff(run.logits, run1.logits);
  EXPECT_TRUE(d1.same_nonfinite && d1.max_abs <= kLogitMaxAbs) << "logits vs 1 rank: " << describe(d1);

  if (!want_hidden.empty()) {  // [L+1, T, D]: embedding, layer outputs, then the final norm of the last
    const size_t per_layer = run.hidden.front().size();
    const auto n_layers = static_cast<size_t>(one.text().n_layers);
    for (size_t l = 0; l <= n_layers; ++l) {
      const std::vector<float>& got = l < n_layers ? run.hidden[l] : run.final_norm;
      const std::vector<float> want(want_hidden.begin() + static_cast<std::ptrdiff_t>(l * per_layer),
                                    want_hidden.begin() + static_cast<std::ptrdiff_t>((l + 1) * per_layer));
      const Diff h = diff(got, want);
      EXPECT_TRUE(h.max_abs <= kHiddenMaxAbs) << "hidden_states[" << l << "]: " << describe(h);
    }
  }

  const std::vector<int64_t> want_greedy = read_tensor<int64_t>(golden, "greedy_ids");
  if (want_greedy.empty()) return;
  const std::vector<float> margins = read_tensor<float>(golden, "greedy_margin");
  ASSERT_EQ(margins.size(), want_greedy.size());
  const std::vector<float> want_logits = read_tensor<float>(golden, "greedy_logits");
  const auto [got, got_logits] = greedy(m, ids, static_cast<int>(want_greedy.size()));
  const auto [got1, got1_logits] = greedy(single, ids, static_cast<int>(want_greedy.size()));
  const auto vocab = static_cast<size_t>(one.text().vocab_size);
  for (size_t k = 0; k < want_greedy.size(); ++k) {
    ASSERT_EQ(got[k], want_greedy[k]) << "greedy token " << k;
    ASSERT_EQ(got[k], got1[k]) << "greedy token " << k << " vs 1 rank";
    if (margins[k] < kGreedyMinMargin) break;  // a near-tie: later tokens may legitimately differ
    const Diff g1 = diff(got_logits[k], got1_logits[k]);
    EXPECT_TRUE(g1.max_abs <= kLogitMaxAbs) << "greedy step " << k << " logits vs 1 rank: " << describe(g1);
    if (want_logits.empty()) continue;  // only the p13 goldens keep the logits of every step
    const std::vector<float> want_row(want_logits.begin() + static_cast<std::ptrdiff_t>(k * vocab),
                                      want_logits.begin() + static_cast<std::ptrdiff_t>((k + 1) * vocab));
    const Diff g = diff(got_logits[k], want_row);
    EXPECT_TRUE(g.max_abs <= kLogitMaxAbs) << "greedy step " << k << " logits: " << describe(g);
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, TensorParallelGolden, testing::Combine(testing::ValuesIn(golden_files()), testing::Values(2, 4)),
                         [](const testing::TestParamInfo<std::tuple<std::string, int>>& p) {
                           const std::string& f = std::get<0>(p.param);
                           std::string name = f.substr(0, f.size() - std::string(".safetensors").size());
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name + "_tp" + std::to_string(std::get<1>(p.param));
                         });

TEST(TensorParallel, GoldensArePresent) { EXPECT_EQ(golden_files().size(), 24u); }

// generate() drives rank 0 with a cache of its own making; the others follow with their replicas, over chunked
// prefill and sampled decode (temperature 0.8, seeded): the continuation of the unsharded model, token for token.
TEST(TensorParallel, GenerateOnRankZeroEqualsOneRank) {
  if (const std::string why = cannot_run(2); !why.empty()) GTEST_SKIP() << why;
  model::test::TempDir dir;
  const fs::path path = write_checkpoint(dir, kCheckpoints[0]);
  const model::test::LoadedModel one(path, kDevice);
  const model::TextModel single(one.text(), one.weights, *one.backend);
  const TensorParallelGroup group(one.checkpoint, kDevice, 2, {});
  engine::GenerateRequest request;
  request.prompt = model::test::random_ids(37, one.text().vocab_size, 5);
  request.sampling.temperature = 0.8f;
  request.sampling.seed = 11;
  request.max_tokens = 24;
  request.ignore_eos = true;
  const engine::GenerateOptions options{.prefill_chunk_tokens = 16, .block_size = 16};
  const auto keep = [](int32_t) { return true; };
  const engine::GenerateResult want = engine::generate(single, request, 2, keep, options);
  const engine::GenerateResult got = engine::generate(group.model(), request, 2, keep, options);
  ASSERT_EQ(want.ids.size(), 24u);
  EXPECT_EQ(got.ids, want.ids);
}

#ifndef QUATRE_TP_CUDA  // host pointers and the CPU group's errors
// Rank r of N holds its heads' rows of q_b and kv_b, their columns of o, its experts, its slice of the shared expert
// and its vocabulary rows of lm_head: byte for byte the same slices of the whole weights.
TEST(TensorParallel, RanksHoldTheirSlices) {
  model::test::TempDir dir;
  const fs::path path = write_checkpoint(dir, kCheckpoints[1]);  // FP8: slices keep the per-tensor scale
  const model::test::LoadedModel one(path);
  const io::TextConfig& t = one.text();
  constexpr int kRanks = 2;
  const TensorParallelGroup group(one.checkpoint, Device::kCpu, kRanks, {});
  const int64_t Hl = t.n_heads / kRanks, qk = t.qk_nope_head_dim + t.qk_rope_head_dim, dv = t.v_head_dim;
  const int64_t D = t.hidden_size, El = t.n_routed_experts / kRanks, Fl = t.moe_intermediate_size * t.n_shared_experts / kRanks;
  for (int r = 0; r < kRanks; ++r) {
    const model::TextWeights& w = group.weights(r);
    EXPECT_EQ(w.shard.rank, r);
    EXPECT_EQ(w.experts.first, r * El);
    const model::LayerWeights& l1 = one.weights.layers[1];
    const model::LayerWeights& lr = w.layers[1];
    EXPECT_TRUE(has_shape(lr.attn.q_b.w, {Hl * qk, t.q_lora_rank}));
    EXPECT_EQ(lr.attn.q_b.w.data(), l1.attn.q_b.w.rows(r * Hl * qk, Hl * qk).data());  // a view of the checkpoint
    EXPECT_TRUE(has_shape(lr.attn.kv_b.w, {Hl * (t.qk_nope_head_dim + dv), t.kv_lora_rank}));
    ASSERT_TRUE(has_shape(lr.attn.o.w, {D, Hl * dv}));
    EXPECT_EQ(lr.attn.o.weight_scale, l1.attn.o.weight_scale);
    const size_t e = dtype_size(lr.attn.o.w.dtype());
    for (int64_t row = 0; row < D; ++row) {  // o[:, r*Hl*Dv : (r+1)*Hl*Dv]
      const auto* whole = static_cast<const std::byte*>(l1.attn.o.w.data()) + static_cast<size_t>(row * t.n_heads * dv + r * Hl * dv) * e;
      const auto* part = static_cast<const std::byte*>(lr.attn.o.w.data()) + static_cast<size_t>(row * Hl * dv) * e;
      ASSERT_EQ(std::memcmp(whole, part, static_cast<size_t>(Hl * dv) * e), 0) << "rank " << r << " o row " << row;
    }
    ASSERT_TRUE(lr.moe.has_value());
    ASSERT_EQ(static_cast<int64_t>(lr.moe->experts.size()), El);
    EXPECT_EQ(lr.moe->experts[0].gate.w.data(), l1.moe->experts[static_cast<size_t>(r * El)].gate.w.data());
    EXPECT_TRUE(has_shape(lr.moe->shared->gate.w, {Fl, D}));
    EXPECT_TRUE(has_shape(lr.moe->shared->down.w, {D, Fl}));
    EXPECT_TRUE(has_shape(w.lm_head.w, {t.vocab_size / kRanks, D}));
    EXPECT_TRUE(has_shape(w.embed.w, {t.vocab_size, D}));
  }
}

TEST(TensorParallel, ASizeThatDoesNotDivideTheHeadsIsRefusedByName) {
  model::test::TempDir dir;
  const fs::path path = write_checkpoint(dir, kCheckpoints[0]);
  const model::test::LoadedModel one(path);  // tiny: 4 heads
  try {
    const TensorParallelGroup group(one.checkpoint, Device::kCpu, 3, {});
    FAIL() << "a group of 3 over 4 heads was built";
  } catch (const LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("num_attention_heads=4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(TensorParallelGroup(one.checkpoint, Device::kCpu, 0, {}), InvalidRequest);
}
#endif

}  // namespace
}  // namespace quatre::parallel
