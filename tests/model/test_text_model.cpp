// TextModel::forward on synthetic checkpoints (the tiny presets, ~200-token prompts that cross the 64-token YaRN
// original context and the Llama-4 steps at 64, 128, 192): against an independent float64 reference, and the
// properties absorbed == naive, incremental decode == prefill, batch == alone, FP8 ~ BF16, native == HF.
#include <algorithm>
#include <cmath>
#include <map>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/error.h"

#include "model/prompt_run.h"
#include "model/step_inputs.h"
#include "model_test_util.h"
#include "reference_forward.h"

namespace quatre::model::test {
namespace {

// Tolerances, all fp32 against float64 or fp32 against fp32 with another summation order:
// logits of the tiny model are O(1..10); the forward's rounding stays near 1e-6 relative.
constexpr double kRefRelL2 = 5e-6, kRefMaxAbs = 5e-5;          // fp32 forward vs float64 reference (seen: 4e-7, 6e-6)
constexpr double kSameMathRelL2 = 5e-6, kSameMathMaxAbs = 5e-5;  // two fp32 forms of the same math (seen: 3e-7, 3e-6)

// Checkpoints are written once per test binary and shared.
class Checkpoints {
 public:
  static const std::filesystem::path& get(const CheckpointSpec& spec) {
    static TempDir dir;
    static std::map<std::string, std::filesystem::path> made;
    const std::string name = fmt::format("{}_{}_{}_{}", spec.preset,
                                         spec.format == io::CheckpointFormat::kHuggingFace ? "hf" : "native",
                                         spec.fp8 ? "fp8" : "bf16", spec.seed);
    auto it = made.find(name);
    if (it == made.end()) it = made.emplace(name, make_checkpoint(dir, name, spec)).first;
    return it->second;
  }
};

LoadedModel& loaded(const CheckpointSpec& spec) {
  static std::map<std::filesystem::path, std::unique_ptr<LoadedModel>> models;
  const std::filesystem::path& dir = Checkpoints::get(spec);
  auto& m = models[dir];
  if (!m) m = std::make_unique<LoadedModel>(dir);
  return *m;
}

std::vector<int32_t> iota_positions(int64_t n, int32_t pos0) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = pos0 + static_cast<int32_t>(i);
  return p;
}

struct RefCase {
  std::string preset;
  MlaForm form;
  SoftmaxScale scale;
  bool fp8;
};

void PrintTo(const RefCase& c, std::ostream* os) {
  *os << c.preset << (c.form == MlaForm::kNaive ? " naive" : " absorbed")
      << (c.scale == SoftmaxScale::kRelease ? " release" : " transformers") << (c.fp8 ? " fp8" : " bf16");
}

class MatchesReference : public testing::TestWithParam<RefCase> {};

TEST_P(MatchesReference, LogitsAndEveryLayerOn200Tokens) {
  const RefCase& c = GetParam();
  LoadedModel& m = loaded({.preset = c.preset, .fp8 = c.fp8});
  const TextModel model(m.text(), m.weights, *m.backend, {.mla_form = c.form, .softmax_scale = c.scale});
  const std::vector<int32_t> ids = random_ids(200, m.text().vocab_size, 11);
  std::vector<std::vector<float>> hidden;
  const std::vector<float> logits = prefill_logits(model, ids, 0, &hidden);
  const ReferenceOutput want = reference_forward(m.checkpoint, ids, iota_positions(200, 0), c.scale);
  ASSERT_EQ(hidden.size(), want.hidden.size());
  for (size_t l = 0; l < hidden.size(); ++l) {
    EXPECT_TRUE(near(hidden[l], want.hidden[l], kRefRelL2, kRefMaxAbs)) << "hidden state " << l;
  }
  EXPECT_TRUE(near(logits, want.logits, kRefRelL2, kRefMaxAbs));
}

INSTANTIATE_TEST_SUITE_P(
    Presets, MatchesReference,
    testing::Values(RefCase{"tiny", MlaForm::kNaive, SoftmaxScale::kRelease, false},
                    RefCase{"tiny", MlaForm::kAbsorbed, SoftmaxScale::kRelease, false},
                    RefCase{"tiny", MlaForm::kAbsorbed, SoftmaxScale::kTransformers, false},
                    RefCase{"tiny", MlaForm::kNaive, SoftmaxScale::kTransformers, true},
                    RefCase{"tiny-dense", MlaForm::kAbsorbed, SoftmaxScale::kRelease, false},
                    RefCase{"tiny-yarn32", MlaForm::kNaive, SoftmaxScale::kTransformers, false}),
    [](const testing::TestParamInfo<RefCase>& i) {
      std::string name = i.param.preset + (i.param.form == MlaForm::kNaive ? "_naive" : "_absorbed") +
                         (i.param.scale == SoftmaxScale::kRelease ? "_release" : "_transformers") +
                         (i.param.fp8 ? "_fp8" : "_bf16");
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

// Positions need not start at the first cache entry: a 40-token run at positions 300..339 (the golden files do
// this to reach the YaRN and Llama-4 regimes without long prompts).
TEST(TextModel, MatchesReferenceAtAPositionOffset) {
  LoadedModel& m = loaded({});
  const TextModel model(m.text(), m.weights, *m.backend);
  const std::vector<int32_t> ids = random_ids(40, m.text().vocab_size, 12);
  const std::vector<float> logits = prefill_logits(model, ids, 300);
  const ReferenceOutput want = reference_forward(m.checkpoint, ids, iota_positions(40, 300), SoftmaxScale::kRelease);
  EXPECT_TRUE(near(logits, want.logits, kRefRelL2, kRefMaxAbs));
  const std::vector<float> at_zero = prefill_logits(model, ids, 0);
  EXPECT_GT(diff(logits, at_zero).rel_l2, 1e-3) << "the positions must matter";
}

// The step's arena holds one layer's scratch at a time (the forward rewinds it after each layer): its peak hardly
// grows with the number of layers (a 4096-token prefill of the full model needs one layer's activations, not 36).
TEST(TextModel, ArenaPeakDoesNotGrowWithTheLayers) {
  size_t peak[2] = {0, 0};
  const int64_t layers[2] = {2, 12};
  for (int i = 0; i < 2; ++i) {
    const TempDir dir;
    const LoadedModel m(make_checkpoint(dir, "m", {.n_layers = layers[i]}));
    ASSERT_EQ(m.text().n_layers, layers[i]);
    const TextModel model(m.text(), m.weights, *m.backend);
    KvCache kv(m.text(), *m.backend, {.n_blocks = 8, .block_size = 16});
    const std::vector<int32_t> table = kv.allocate(8);
    Arena arena(host_memory(), {.chunk_bytes = 4096});
    const std::vector<int32_t> prompt = random_ids(100, m.text().vocab_size, 1);
    StepBuilder step(kv.block_size());
    step.add({.block_table = table, .ids = prompt}, LogitRows::kAll);
    (void)model.forward(step.inputs(), kv, arena);
    peak[i] = arena.capacity_bytes();
  }
  // Not equal: the MoE's grouping allocates by the routing, so later layers may take a chunk more (measured: 1.42
  // MB with 2 layers, 1.64 MB with 12; without the rewind 2.0 and 8.6 MB).
  EXPECT_LT(static_cast<double>(peak[1]), 1.25 * static_cast<double>(peak[0]))
      << "arena bytes after one prefill: " << peak[0] << " with " << layers[0] << " layers, " << peak[1] << " with " << layers[1];
}

TEST(TextModel, AbsorbedEqualsNaive) {
  for (bool fp8 : {false, true}) {
    LoadedModel& m = loaded({.fp8 = fp8});
    const TextModel naive(m.text(), m.weights, *m.backend, {.mla_form = MlaForm::kNaive});
    const TextModel absorbed(m.text(), m.weights, *m.backend, {.mla_form = MlaForm::kAbsorbed});
    const std::vector<int32_t> ids = random_ids(211, m.text().vocab_size, 13);
    std::vector<std::vector<float>> h_naive, h_absorbed;
    const std::vector<float> a = prefill_logits(naive, ids, 0, &h_naive);
    const std::vector<float> b = prefill_logits(absorbed, ids, 0, &h_absorbed);
    for (size_t l = 0; l < h_naive.size(); ++l) {
      EXPECT_TRUE(near(h_absorbed[l], h_naive[l], kSameMathRelL2, kSameMathMaxAbs)) << "layer output " << l;
    }
    EXPECT_TRUE(near(b, a, kSameMathRelL2, kSameMathMaxAbs)) << (fp8 ? "fp8" : "bf16");
  }
}

// Prefill P tokens, then decode one token per step: every step's logits equal the matching row of one prefill of
// the whole sequence. On the CPU each op's per-row result does not depend on T, so the match is in fact exact; the
// tolerance (kSameMathRelL2) is what a backend that batches differently is held to.
TEST(TextModel, IncrementalDecodeEqualsOneShotPrefill) {
  for (MlaForm form : {MlaForm::kNaive, MlaForm::kAbsorbed}) {
    LoadedModel& m = loaded({});
    const TextModel model(m.text(), m.weights, *m.backend, {.mla_form = form});
    const int64_t V = m.text().vocab_size, P = 150, N = 60;  // decode crosses position 192
    const std::vector<int32_t> ids = random_ids(P + N, V, 14);
    const std::vector<float> one_shot = prefill_logits(model, ids);

    KvCache kv(m.text(), *m.backend, {.n_blocks = 64, .block_size = 8});
    std::vector<int32_t> table = kv.allocate(kv.n_blocks());
    std::shuffle(table.begin(), table.end(), std::mt19937(3));  // blocks need not be contiguous or ordered
    Arena arena(host_memory(), {.poison = true});
    {
      StepBuilder step(kv.block_size());
      step.add({.block_table = table, .n_cached = 0, .ids = std::span(ids).first(P)}, LogitRows::kLast);
      const Tensor logits = model.forward(step.inputs(), kv, arena);
      const float* p = logits.data_as<float>();
      EXPECT_TRUE(near({p, p + V}, slice_rows(one_shot, V, P - 1, 1), kSameMathRelL2, kSameMathMaxAbs)) << "prefill";
    }
    for (int64_t i = P; i < P + N; ++i) {
      arena.reset();
      StepBuilder step(kv.block_size());
      step.add({.block_table = table, .n_cached = i, .ids = std::span(ids).subspan(static_cast<size_t>(i), 1)});
      const Tensor logits = model.forward(step.inputs(), kv, arena);
      const float* p = logits.data_as<float>();
      ASSERT_TRUE(near({p, p + V}, slice_rows(one_shot, V, i, 1), kSameMathRelL2, kSameMathMaxAbs)) << "decode step " << i;
    }
  }
}

// Three prompts of different lengths in one step (plus, in a second step, one sequence decoding while another
// prefills) give the logits each gives alone.
TEST(TextModel, BatchOfPromptsEqualsEachAlone) {
  LoadedModel& m = loaded({});
  const TextModel model(m.text(), m.weights, *m.backend);
  const int64_t V = m.text().vocab_size;
  const std::vector<std::vector<int32_t>> prompts = {random_ids(37, V, 21), random_ids(200, V, 22),
                                                     random_ids(1, V, 23), random_ids(17, V, 24)};
  KvCache kv(m.text(), *m.backend, {.n_blocks = 128, .block_size = 4});
  std::vector<int32_t> blocks = kv.allocate(kv.n_blocks());
  std::shuffle(blocks.begin(), blocks.end(), std::mt19937(5));
  std::vector<std::vector<int32_t>> tables;
  for (size_t s = 0, at = 0; s < prompts.size(); ++s) {
    const size_t n = (prompts[s].size() + 8) / 4 + 1;  // room for a few more tokens
    tables.emplace_back(blocks.begin() + static_cast<long>(at), blocks.begin() + static_cast<long>(at + n));
    at += n;
  }
  Arena arena(host_memory(), {.poison = true});
  StepBuilder step(kv.block_size());
  std::vector<int64_t> first_row;
  for (size_t s = 0; s < 3; ++s) first_row.push_back(step.add({.block_table = tables[s], .ids = prompts[s]}, LogitRows::kAll));
  const Tensor logits = model.forward(step.inputs(), kv, arena);
  const float* p = logits.data_as<float>();
  const std::vector<float> batched(p, p + logits.numel());
  for (size_t s = 0; s < 3; ++s) {
    const auto n = static_cast<int64_t>(prompts[s].size());
    EXPECT_TRUE(near(slice_rows(batched, V, first_row[s], n), prefill_logits(model, prompts[s]), kSameMathRelL2,
                     kSameMathMaxAbs))
        << "prompt " << s;
  }
  // Step 2: prompt 1 decodes one token while prompt 3 prefills, listed first.
  std::vector<int32_t> whole1 = prompts[1];
  whole1.push_back(7);
  arena.reset();
  StepBuilder step2(kv.block_size());
  step2.add({.block_table = tables[3], .ids = prompts[3]}, LogitRows::kLast);
  step2.add({.block_table = tables[1], .n_cached = 200, .ids = std::span(whole1).last(1)}, LogitRows::kLast);
  const Tensor l2 = model.forward(step2.inputs(), kv, arena);
  const float* q = l2.data_as<float>();
  EXPECT_TRUE(near({q, q + V}, slice_rows(prefill_logits(model, prompts[3]), V, 16, 1), kSameMathRelL2, kSameMathMaxAbs));
  EXPECT_TRUE(near({q + V, q + 2 * V}, slice_rows(prefill_logits(model, whole1), V, 200, 1), kSameMathRelL2,
                   kSameMathMaxAbs));
}

TEST(TextModel, LogitRowsSelectsRowsInTheOrderAsked) {
  LoadedModel& m = loaded({});
  const TextModel model(m.text(), m.weights, *m.backend);
  const int64_t V = m.text().vocab_size;
  const std::vector<int32_t> ids = random_ids(9, V, 31);
  const std::vector<float> all = prefill_logits(model, ids);
  KvCache kv(m.text(), *m.backend, {.n_blocks = 2, .block_size = 16});
  const std::vector<int32_t> table = kv.allocate(1);
  StepBuilder step(kv.block_size());
  step.add({.block_table = table, .ids = ids}, LogitRows::kNone);
  StepInputs in = step.inputs();
  const std::vector<int32_t> rows = {5, 2, 5};
  in.logit_rows = rows;
  Arena arena;
  const Tensor logits = model.forward(in, kv, arena);
  ASSERT_TRUE(has_shape(logits, {3, V}));
  for (size_t i = 0; i < rows.size(); ++i) {
    const float* p = logits.data_as<float>() + i * static_cast<size_t>(V);
    EXPECT_EQ(std::vector<float>(p, p + V), slice_rows(all, V, rows[i], 1)) << "row " << i;
  }
}

// run_prompt (the golden-test entry point): explicit positions, chosen rows, hidden states of every layer.
TEST(TextModel, RunPromptGivesChosenRowsAndEveryHiddenState) {
  LoadedModel& m = loaded({});
  const TextModel model(m.text(), m.weights, *m.backend);
  const int64_t V = m.text().vocab_size, D = m.text().hidden_size;
  const std::vector<int32_t> ids = random_ids(30, V, 71), positions = iota_positions(30, 100), rows = {29, 0};
  const PromptRun all = run_prompt(model, ids, {.positions = positions, .capture_hidden = true});
  ASSERT_EQ(all.logits.size(), static_cast<size_t>(30 * V));
  ASSERT_EQ(all.hidden.size(), static_cast<size_t>(m.text().n_layers + 1));
  for (const std::vector<float>& h : all.hidden) EXPECT_EQ(h.size(), static_cast<size_t>(30 * D));
  EXPECT_EQ(all.final_norm.size(), static_cast<size_t>(30 * D));
  const ReferenceOutput want = reference_forward(m.checkpoint, ids, positions, SoftmaxScale::kRelease);
  EXPECT_TRUE(near(all.hidden.back(), want.hidden.back(), kRefRelL2, kRefMaxAbs));
  const PromptRun some = run_prompt(model, ids, {.positions = positions, .logit_rows = rows});
  EXPECT_TRUE(some.hidden.empty());
  EXPECT_EQ(slice_rows(some.logits, V, 0, 1), slice_rows(all.logits, V, 29, 1));
  EXPECT_EQ(slice_rows(some.logits, V, 1, 1), slice_rows(all.logits, V, 0, 1));
  EXPECT_THROW(run_prompt(model, ids, {.positions = std::span(positions).first(3)}), InvalidRequest);
}

// FP8 (E4M3, per-tensor scale amax/448) and BF16 checkpoints of one seed: the FP8 weights are the BF16 ones
// rounded to 3 mantissa bits (relative error up to 1/16, ~3.6% rms per weight), computed W8A16. Through the
// 2 layers and the lm_head that leaves a relative L2 error on the logits of 0.066 (tiny, seed 7). Tolerance:
// rel_l2 < 0.15, an order of magnitude below unrelated weights (another seed: 1.43).
TEST(TextModel, Fp8AndBf16AgreeWithinFp8Error) {
  const std::vector<int32_t> ids = random_ids(200, io::preset("tiny").text.vocab_size, 41);
  auto logits_of = [&](const CheckpointSpec& spec) {
    LoadedModel& m = loaded(spec);
    return prefill_logits(TextModel(m.text(), m.weights, *m.backend), ids);
  };
  const std::vector<float> bf16 = logits_of({.fp8 = false}), fp8 = logits_of({.fp8 = true});
  const Diff d = diff(fp8, bf16);
  EXPECT_LT(d.rel_l2, 0.15) << describe(d);
  EXPECT_GT(d.rel_l2, 1e-3) << "FP8 weights must actually be FP8: " << describe(d);
  const Diff other = diff(logits_of({.seed = 8}), bf16);
  EXPECT_GT(other.rel_l2, 1.0) << "another seed is the scale of a real mismatch: " << describe(other);
}

// --fp8-activations static (model/text_weights.h): every FP8 linear but kv_b carries the checkpoint's activation
// scale (gen-model writes 8/448 for all), gate and up the same one; the BF16 tensors and, in kNone, everything none.
TEST(TextModel, StaticFp8ActivationsLoadOnTheFp8LinearsButKvB) {
  TempDir dir;
  const std::filesystem::path path = make_checkpoint(dir, "fp8", {.fp8 = true});
  const LoadedModel none(path), w8a8(path, Device::kCpu, Fp8Activations::kStatic);
  const float a = 8.0f / 448.0f;
  int checked = 0;
  auto expect_scale = [&](const Weight& w, std::optional<float> want, const std::string& what) {
    EXPECT_EQ(w.activation_scale, want) << what;
    ++checked;
  };
  for (size_t l = 0; l < w8a8.weights.layers.size(); ++l) {
    const LayerWeights& s = w8a8.weights.layers[l];
    const LayerWeights& n = none.weights.layers[l];
    const std::string at = "layer " + std::to_string(l) + " ";
    for (const Weight* w : {&s.attn.q_a, &s.attn.q_b, &s.attn.kv_a, &s.attn.o}) expect_scale(*w, a, at + "attention");
    expect_scale(s.attn.kv_b, std::nullopt, at + "kv_b");
    expect_scale(n.attn.q_a, std::nullopt, at + "q_a, none");
    ASSERT_TRUE(s.moe.has_value()) << "the tiny preset is MoE in every layer";
    expect_scale(s.moe->router, std::nullopt, at + "router (BF16)");
    for (const FfnWeights& f : s.moe->experts) {
      for (const Weight* w : {&f.gate, &f.up, &f.down}) expect_scale(*w, a, at + "expert");
    }
    for (const Weight* w : {&s.moe->shared->gate, &s.moe->shared->up, &s.moe->shared->down}) expect_scale(*w, a, at + "shared");
    for (const Weight* w : {&n.moe->experts[0].gate, &n.moe->shared->down}) expect_scale(*w, std::nullopt, at + "none");
  }
  expect_scale(w8a8.weights.lm_head, std::nullopt, "lm_head (BF16)");
  EXPECT_GT(checked, 20);
  // A BF16 checkpoint has no activation scales: static loads it as it is.
  const std::filesystem::path bf16_path = make_checkpoint(dir, "bf16", {});
  const LoadedModel bf16(bf16_path, Device::kCpu, Fp8Activations::kStatic);
  EXPECT_FALSE(bf16.weights.layers[0].attn.q_a.activation_scale.has_value());
  EXPECT_THROW(parse_fp8_activations("dynamic", true), InvalidRequest);
  EXPECT_EQ(parse_fp8_activations("static", false), Fp8Activations::kStatic);
  EXPECT_EQ(parse_fp8_activations("none", true), Fp8Activations::kNone);
  // auto, the commands' default: static where the checkpoint is FP8 with static activation scales (this one; the
  // dynamic-scheme one below is not), none for BF16.
  EXPECT_TRUE(has_static_activation_scales(io::Checkpoint::open(path).config()));
  EXPECT_FALSE(has_static_activation_scales(io::Checkpoint::open(bf16_path).config()));
  EXPECT_EQ(parse_fp8_activations("auto", true), Fp8Activations::kStatic);
  EXPECT_EQ(parse_fp8_activations("auto", false), Fp8Activations::kNone);
  io::ModelConfig int4;  // quatre quantize's 4-bit experts beside the release's FP8 linears (and their scales)
  int4.quantization = io::WeightQuantization::kInt4;
  int4.int4.others_fp8 = true;
  EXPECT_TRUE(has_static_activation_scales(int4));
  int4.int4.others_fp8 = false;  // its other linears BF16: nothing to quantise
  EXPECT_FALSE(has_static_activation_scales(int4));
  // FP8 with dynamic activation scaling has no scales to apply: a LoadError naming the tensor and the way out.
  std::string config;
  {
    std::ifstream in(path / "config.json");
    config.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t at = config.find("\"static\"");
  ASSERT_NE(at, std::string::npos) << config;
  config.replace(at, 8, "\"dynamic\"");
  std::ofstream(path / "config.json") << config;
  try {
    const LoadedModel dynamic(path, Device::kCpu, Fp8Activations::kStatic);
    ADD_FAILURE() << "static activations loaded from a dynamic-scheme checkpoint";
  } catch (const LoadError& e) {
    EXPECT_NE(std::string(e.what()).find("--fp8-activations none"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(LoadedModel(path, Device::kCpu, Fp8Activations::kNone));
  EXPECT_FALSE(has_static_activation_scales(io::Checkpoint::open(path).config()));
}

// --attention-operands: auto (the default) is bf16 on a CUDA device, fp32 on the CPU; the named ones as named.
TEST(TextModel, AttentionOperandsAutoFollowsTheDevice) {
  EXPECT_EQ(parse_attention_operands("auto", Device::kCuda), AttentionOperands::kBf16);
  EXPECT_EQ(parse_attention_operands("auto", Device::kCpu), AttentionOperands::kFp32);
  EXPECT_EQ(parse_attention_operands("fp32", Device::kCuda), AttentionOperands::kFp32);
  EXPECT_EQ(parse_attention_operands("bf16", Device::kCpu), AttentionOperands::kBf16);
  EXPECT_THROW(parse_attention_operands("fp16", Device::kCuda), InvalidRequest);
}

// W8A8 changes the logits by about the FP8 rounding of the activations: clearly, yet far less than another model.
TEST(TextModel, W8A8LogitsDifferFromW8A16WithinFp8Error) {
  TempDir dir;
  const std::filesystem::path path = make_checkpoint(dir, "fp8", {.fp8 = true});
  const std::vector<int32_t> ids = random_ids(200, io::preset("tiny").text.vocab_size, 43);
  const LoadedModel none(path), w8a8(path, Device::kCpu, Fp8Activations::kStatic);
  const std::vector<float> a = prefill_logits(TextModel(none.text(), none.weights, *none.backend), ids);
  const std::vector<float> b = prefill_logits(TextModel(w8a8.text(), w8a8.weights, *w8a8.backend), ids);
  const Diff d = diff(b, a);
  EXPECT_GT(d.rel_l2, 1e-3) << "W8A8 must quantise: " << describe(d);
  EXPECT_LT(d.rel_l2, 0.15) << describe(d);
}

// The same seed written in the native and the HF layout holds the same weights, so the logits are bit-identical.
TEST(TextModel, NativeAndHfCheckpointsGiveIdenticalLogits) {
  for (bool fp8 : {false, true}) {
    const std::vector<int32_t> ids = random_ids(200, io::preset("tiny").text.vocab_size, 51);
    LoadedModel& hf = loaded({.format = io::CheckpointFormat::kHuggingFace, .fp8 = fp8});
    LoadedModel& native = loaded({.format = io::CheckpointFormat::kMistralNative, .fp8 = fp8});
    ASSERT_EQ(native.checkpoint.format(), io::CheckpointFormat::kMistralNative);
    const std::vector<float> a = prefill_logits(TextModel(hf.text(), hf.weights, *hf.backend), ids);
    const std::vector<float> b = prefill_logits(TextModel(native.text(), native.weights, *native.backend), ids);
    EXPECT_EQ(a, b) << (fp8 ? "fp8: " : "bf16: ") << describe(diff(a, b));
  }
}

// kTransformers multiplies the softmax scale by mscale(factor, mscale_all_dim)² (tiny: factor 16, so 1.631);
// the logits change accordingly (each convention matches the float64 reference in MatchesReference).
TEST(TextModel, SoftmaxScaleConventionsDiffer) {
  LoadedModel& m = loaded({});
  const TextModel release(m.text(), m.weights, *m.backend, {.softmax_scale = SoftmaxScale::kRelease});
  const TextModel hf(m.text(), m.weights, *m.backend, {.softmax_scale = SoftmaxScale::kTransformers});
  const double mscale = 0.1 * std::log(16.0) + 1.0;
  EXPECT_FLOAT_EQ(release.softmax_scale(), static_cast<float>(1.0 / std::sqrt(48.0)));
  EXPECT_FLOAT_EQ(hf.softmax_scale(), static_cast<float>(1.0 / std::sqrt(48.0) * mscale * mscale));
  const std::vector<int32_t> ids = random_ids(50, m.text().vocab_size, 61);
  const Diff d = diff(prefill_logits(hf, ids), prefill_logits(release, ids));
  EXPECT_GT(d.rel_l2, 1e-3) << describe(d);
}

class NameCollector final : public ActivationHook {
 public:
  void on_activation(int layer, std::string_view name, const Tensor& value) override {
    names.push_back(activation_name(layer, name));
    shapes.push_back(value.shape_string());
  }
  std::vector<std::string> names, shapes;
};

TEST(TextModel, HookSeesStablyNamedIntermediates) {
  LoadedModel& m = loaded({.preset = "tiny-dense"});
  const TextModel model(m.text(), m.weights, *m.backend);
  KvCache kv(m.text(), *m.backend, {.n_blocks = 1, .block_size = 16});
  const std::vector<int32_t> table = kv.allocate(1), ids = {1, 5, 9};
  StepBuilder step(kv.block_size());
  step.add({.block_table = table, .ids = ids});
  NameCollector hook;
  Arena arena;
  model.forward(step.inputs(), kv, arena, &hook);
  const std::vector<std::string> want = {
      "embed", "l0.attn_norm", "l0.attn.c_kv", "l0.attn.q", "l0.attn.k_rope", "l0.attn.o", "l0.attn_residual",
      "l0.ffn_norm", "l0.ffn", "l0.out", "l1.attn_norm", "l1.attn.c_kv", "l1.attn.q", "l1.attn.k_rope", "l1.attn.o",
      "l1.attn_residual", "l1.ffn_norm", "l1.moe.router_logits", "l1.ffn", "l1.out", "final_norm", "logits"};
  EXPECT_EQ(hook.names, want);
  EXPECT_EQ(hook.shapes.front(), "[3, 64]");
  EXPECT_EQ(hook.shapes.back(), fmt::format("[1, {}]", m.text().vocab_size));
}

// The arena is sized by the first steps; repeating a step of the same shape allocates no new chunk
// (test_forward_alloc checks that the forward makes no heap allocation at all then).
TEST(TextModel, ArenaStopsGrowingAfterTheFirstStep) {
  LoadedModel& m = loaded({});
  const TextModel model(m.text(), m.weights, *m.backend);
  KvCache kv(m.text(), *m.backend, {.n_blocks = 4, .block_size = 16});
  const std::vector<int32_t> table = kv.allocate(4);
  Arena arena(host_memory(), {.chunk_bytes = 8 << 10});
  size_t capacity = 0, chunks = 0;
  for (int i = 0; i < 4; ++i) {
    arena.reset();
    StepBuilder step(kv.block_size());
    const std::vector<int32_t> ids = {3, 4, 5, 6, 7};
    step.add({.block_table = table, .ids = ids}, LogitRows::kAll);
    model.forward(step.inputs(), kv, arena);
    if (i == 0) {
      capacity = arena.capacity_bytes();
      chunks = arena.n_chunks();
      EXPECT_GT(chunks, 1u) << "the step should need several 8 KiB chunks";
    }
    EXPECT_EQ(arena.capacity_bytes(), capacity) << "step " << i;
    EXPECT_EQ(arena.n_chunks(), chunks) << "step " << i;
  }
}

// Decode steps go through Backend::run_step with their block tables padded to a power-of-two width (text_model.h);
// a hook sends the same step through the plain path: the logits are the same bits. The padded path checks the
// step's inputs itself (a replayed step runs none of the ops' checks): bad ids, slots and blocks are errors.
class NoHook final : public ActivationHook {
 public:
  void on_activation(int, std::string_view, const Tensor&) override {}
};

std::vector<float> host_floats(const Tensor& t) {  // CPU backend: the tensor is host memory
  return std::vector<float>(t.data_as<float>(), t.data_as<float>() + t.numel());
}

TEST(TextModel, DecodeStepsWithPaddedTablesEqualThePlainPathAndCheckTheirInputs) {
  LoadedModel& m = loaded({});
  const TextModel model(m.text(), m.weights, *m.backend);
  constexpr int64_t kBlock = 4;
  KvCache kv(m.text(), *m.backend, {.n_blocks = 32, .block_size = kBlock});
  const std::vector<int32_t> a = kv.allocate(5), b = kv.allocate(3);  // widths 5 and 3: padded to 8
  Arena arena;
  std::vector<int32_t> prompt_a = random_ids(17, m.text().vocab_size, 4), prompt_b = random_ids(9, m.text().vocab_size, 5);
  for (auto [table, prompt] : {std::pair{&a, &prompt_a}, std::pair{&b, &prompt_b}}) {
    StepBuilder p(kBlock);
    p.add({.block_table = *table, .ids = *prompt});
    arena.reset();
    model.forward(p.inputs(), kv, arena);
  }
  auto decode = [&](int32_t id_a, int32_t id_b, std::span<const int32_t> table_b) {
    StepBuilder d(kBlock);
    d.add({.block_table = a, .n_cached = 17, .ids = std::span(&id_a, 1)});
    d.add({.block_table = table_b, .n_cached = 9, .ids = std::span(&id_b, 1)});
    return d;
  };
  const StepBuilder step = decode(5, 6, b);
  arena.reset();
  const std::vector<float> padded = host_floats(model.forward(step.inputs(), kv, arena));
  NoHook hook;
  arena.reset();
  const std::vector<float> plain = host_floats(model.forward(step.inputs(), kv, arena, &hook));
  ASSERT_EQ(padded.size(), static_cast<size_t>(2 * m.text().vocab_size));
  EXPECT_EQ(padded, plain);
  const auto V = static_cast<int32_t>(m.text().vocab_size);
  arena.reset();
  EXPECT_THROW(model.forward(decode(V, 6, b).inputs(), kv, arena), InvalidRequest) << "a token id outside the vocabulary";
  const std::vector<int32_t> bad_block = {b[0], b[1], 32};  // entry 9 lies in block 2 of the table: block 32 of 32
  arena.reset();
  EXPECT_THROW(model.forward(decode(5, 6, bad_block).inputs(), kv, arena), InvalidRequest) << "a block outside the cache";
}

TEST(TextModel, RejectsScaledCosSin) {
  LoadedModel& m = loaded({});
  io::TextConfig config = m.text();
  config.rope.mscale = 0.707;  // attention_factor != 1: cos/sin would be scaled, which this engine refuses
  EXPECT_THROW(TextModel(config, m.weights, *m.backend), LoadError);
}

}  // namespace
}  // namespace quatre::model::test
