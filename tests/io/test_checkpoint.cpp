// io/checkpoint: loading errors of whole checkpoint directories. Tiny checkpoints from synth::generate_checkpoint
// (HF and native, BF16 and FP8, single-file and sharded) are copied and broken one way each: missing, extra,
// mis-shaped or mis-typed tensors, FP8 scales missing, misplaced or invalid, inconsistent shard indexes.
#include "io/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "io/weight_map.h"
#include "io_test_util.h"
#include "synth/gen_model.h"
#include "synth/synthetic_weights.h"

namespace quatre::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::read_bytes;
using test::TempDir;
using test::write_bytes;

// --- Rewriting shards: read every tensor of a file, edit the list, write it back.

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

OwnedTensor& named(std::vector<OwnedTensor>& tensors, const std::string& name) {
  const auto it = std::find_if(tensors.begin(), tensors.end(), [&](const OwnedTensor& t) { return t.name == name; });
  if (it == tensors.end()) throw std::logic_error("test setup: no tensor " + name);
  return *it;
}

void remove(std::vector<OwnedTensor>& tensors, const std::string& name) {
  const auto it = std::find_if(tensors.begin(), tensors.end(), [&](const OwnedTensor& t) { return t.name == name; });
  if (it == tensors.end()) throw std::logic_error("test setup: no tensor " + name);
  tensors.erase(it);
}

OwnedTensor f32_tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& values) {
  OwnedTensor t{name, DType::F32, std::move(shape), std::vector<std::byte>(values.size() * 4)};
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

void edit_shard(const fs::path& path, const std::function<void(std::vector<OwnedTensor>&)>& edit) {
  std::vector<OwnedTensor> tensors;
  std::map<std::string, std::string> metadata;
  {
    const SafetensorsFile file(path);
    metadata = file.metadata();
    for (const TensorInfo& t : file.tensors()) {
      const auto data = file.data(t);
      tensors.push_back({t.name, t.dtype, t.shape, std::vector<std::byte>(data.begin(), data.end())});
    }
  }
  edit(tensors);
  fs::remove(path);  // renaming over an existing file makes ext4 flush it: seconds of I/O wait per test
  std::vector<TensorSpec> specs;
  for (const OwnedTensor& t : tensors) specs.push_back({t.name, t.dtype, t.shape});
  write_safetensors(
      path, specs,
      [&](size_t i, std::span<std::byte> out) {
        if (out.size() != tensors[i].bytes.size()) throw std::logic_error("test setup: wrong byte count for " + tensors[i].name);
        std::copy(tensors[i].bytes.begin(), tensors[i].bytes.end(), out.begin());
      },
      metadata);
}

json read_json(const fs::path& path) { return json::parse(read_bytes(path)); }
void write_json(const fs::path& path, const json& j) { write_bytes(path, j.dump(2)); }

// --- Generated checkpoints, made once for the suite; each test breaks its own copy.

constexpr const char* kHfShard = "model.safetensors";
constexpr const char* kNativeShard = "consolidated.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";
const std::string kL0 = "language_model.model.layers.0.";
const std::string kL1 = "language_model.model.layers.1.";

class CheckpointLoad : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = std::make_unique<TempDir>();
    generate("hf_bf16", CheckpointFormat::kHuggingFace, false);
    generate("hf_fp8", CheckpointFormat::kHuggingFace, true);
    generate("native_bf16", CheckpointFormat::kMistralNative, false);
    generate("native_fp8", CheckpointFormat::kMistralNative, true);
    generate("hf_sharded", CheckpointFormat::kHuggingFace, true, /*max_shard_bytes=*/100'000);
  }
  static void TearDownTestSuite() { root_.reset(); }

  static void generate(const std::string& name, CheckpointFormat format, bool fp8, uint64_t max_shard_bytes = 5ull << 30) {
    synth::GenModelOptions o;
    o.config = preset("tiny");
    o.format = format;
    o.fp8 = fp8;
    o.seed = 3;
    o.max_shard_bytes = max_shard_bytes;
    synth::generate_checkpoint(o, *root_ / name);
  }

  // A private copy of a generated checkpoint.
  fs::path copy(const std::string& name) {
    const fs::path out = dir_ / (name + "_" + std::to_string(copies_++));
    fs::copy(*root_ / name, out, fs::copy_options::recursive);
    return out;
  }

  // The shard of a sharded checkpoint that holds `tensor`, from its index.
  static std::string shard_of(const fs::path& ckpt, const std::string& tensor) {
    return read_json(ckpt / kIndex)["weight_map"].at(tensor).get<std::string>();
  }

  static std::unique_ptr<TempDir> root_;
  TempDir dir_;
  int copies_ = 0;
};

std::unique_ptr<TempDir> CheckpointLoad::root_;

// --- The unbroken checkpoints load, so every failure below is due to its one defect.

TEST_F(CheckpointLoad, GeneratedCheckpointsLoad) {
  for (const char* name : {"hf_bf16", "hf_fp8", "native_bf16", "native_fp8", "hf_sharded"}) {
    SCOPED_TRACE(name);
    const Checkpoint c = Checkpoint::open(copy(name));
    const std::vector<WeightKey> keys = model_weights(c.config());
    EXPECT_EQ(c.weights().size(), keys.size());
    const bool fp8 = std::string(name).ends_with("fp8") || std::string(name) == "hf_sharded";
    EXPECT_EQ(c.config().quantization, fp8 ? WeightQuantization::kFp8PerTensor : WeightQuantization::kNone);
    for (const WeightKey& key : keys) {
      const WeightView& w = c.weight(key);
      EXPECT_EQ(w.shape, weight_shape(c.config(), key)) << weight_key_name(key);
      EXPECT_EQ(w.is_fp8(), fp8 && may_be_fp8(key.kind)) << weight_key_name(key);
      if (w.is_fp8()) {
        EXPECT_GT(w.weight_scale, 0.0f) << weight_key_name(key);
        EXPECT_EQ(w.activation_scale, synth::kSyntheticActivationScale) << weight_key_name(key);
      } else {
        EXPECT_EQ(w.weight_scale, 1.0f);
        EXPECT_FALSE(w.activation_scale.has_value());
      }
    }
  }
  EXPECT_GT(Checkpoint::open(copy("hf_sharded")).files().size(), 3u);
}

// --- Tensors missing, extra, mis-shaped, of the wrong dtype.

TEST_F(CheckpointLoad, MissingTensor) {
  const fs::path dir = copy("hf_bf16");
  const std::string name = kL1 + "self_attn.kv_b_proj.weight";
  edit_shard(dir / kHfShard, [&](auto& t) { remove(t, name); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), dir.string(), "'" + name + "'", "missing", "l1.attn.kv_b");
}

TEST_F(CheckpointLoad, MissingStackedExpertsAndNativeExpert) {
  const fs::path hf = copy("hf_bf16");
  edit_shard(hf / kHfShard, [&](auto& t) { remove(t, kL0 + "mlp.experts.down_proj"); });
  EXPECT_LOAD_ERROR(Checkpoint::open(hf), "'" + kL0 + "mlp.experts.down_proj'", "missing");
  const fs::path native = copy("native_bf16");
  edit_shard(native / kNativeShard, [&](auto& t) { remove(t, "layers.1.experts.6.w3.weight"); });
  EXPECT_LOAD_ERROR(Checkpoint::open(native), "'layers.1.experts.6.w3.weight'", "missing");
}

TEST_F(CheckpointLoad, ExtraTensor) {
  const fs::path dir = copy("hf_bf16");
  const std::string name = "language_model.model.layers.2.input_layernorm.weight";  // the tiny model has 2 layers
  edit_shard(dir / kHfShard, [&](auto& t) { t.push_back(OwnedTensor{name, DType::BF16, {64}, std::vector<std::byte>(128)}); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kHfShard).string(), "unexpected tensor '" + name + "'");
}

TEST_F(CheckpointLoad, ExtraTensorWithAnotherNaming) {
  // A CausalLM-style name inside a legacy-VLM checkpoint is not part of its layout.
  const fs::path dir = copy("hf_bf16");
  edit_shard(dir / kHfShard, [&](auto& t) { t.push_back(OwnedTensor{"model.norm.weight", DType::BF16, {64}, std::vector<std::byte>(128)}); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "unexpected tensor 'model.norm.weight'");
}

TEST_F(CheckpointLoad, MisShapedTensor) {
  const fs::path dir = copy("hf_bf16");
  const std::string name = kL0 + "self_attn.q_a_proj.weight";  // [48, 64]
  edit_shard(dir / kHfShard, [&](auto& t) { named(t, name).shape = {64, 48}; });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kHfShard).string(), "'" + name + "'", "[64, 48]", "[48, 64]");
}

TEST_F(CheckpointLoad, MisShapedStackedExpertsAndNorm) {
  const fs::path dir = copy("hf_fp8");
  const std::string name = kL1 + "mlp.experts.gate_up_proj";  // [8, 64, 64]
  edit_shard(dir / kHfShard, [&](auto& t) { named(t, name).shape = {8, 32, 128}; });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'" + name + "'", "[8, 32, 128]", "[8, 64, 64]");

  const fs::path flat = copy("hf_bf16");
  const std::string norm = "language_model.model.norm.weight";  // [64]
  edit_shard(flat / kHfShard, [&](auto& t) { named(t, norm).shape = {1, 64}; });
  EXPECT_LOAD_ERROR(Checkpoint::open(flat), "'" + norm + "'", "[1, 64]");
}

// Converts a BF16 tensor to F8_E4M3 (same values, rounded).
void to_fp8(OwnedTensor& t) {
  std::vector<std::byte> out(t.bytes.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>(f32_to_fp8e4m3(load_as_f32(t.bytes.data(), DType::BF16, i)));
  }
  t.dtype = DType::F8_E4M3;
  t.bytes = std::move(out);
}

TEST_F(CheckpointLoad, Fp8WhereBf16Belongs) {
  for (const std::string& name : {kL0 + "mlp.gate.weight", kL1 + "self_attn.kv_a_layernorm.weight",
                                  std::string("language_model.model.embed_tokens.weight"), std::string("vision_tower.ln_pre.weight")}) {
    SCOPED_TRACE(name);
    const fs::path dir = copy("hf_fp8");
    edit_shard(dir / kHfShard, [&](auto& t) { to_fp8(named(t, name)); });
    EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kHfShard).string(), "'" + name + "'", "F8_E4M3", "kept in BF16");
    fs::remove_all(dir);
  }
}

TEST_F(CheckpointLoad, Fp8WeightInACheckpointWithoutQuantization) {
  const fs::path dir = copy("hf_bf16");
  const std::string name = kL0 + "self_attn.o_proj.weight";
  edit_shard(dir / kHfShard, [&](auto& t) {
    to_fp8(named(t, name));
    t.push_back(f32_tensor(kL0 + "self_attn.o_proj.weight_scale_inv", {}, {0.01f}));
  });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'" + name + "'", "no FP8 quantization");
}

TEST_F(CheckpointLoad, IntegerWeight) {
  const fs::path dir = copy("native_bf16");
  const std::string name = "layers.0.attention.wq_a.weight";  // [48, 64]
  edit_shard(dir / kNativeShard, [&](auto& t) {
    OwnedTensor& w = named(t, name);
    w.dtype = DType::I32;
    w.bytes.assign(48 * 64 * 4, std::byte{0});
  });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kNativeShard).string(), "'" + name + "'", "dtype I32");
}

// --- FP8 scales: missing, misplaced, invalid.

TEST_F(CheckpointLoad, Fp8WeightWithoutItsWeightScale) {
  const fs::path dir = copy("hf_fp8");
  const std::string scale = kL1 + "self_attn.q_b_proj.weight_scale_inv";
  edit_shard(dir / kHfShard, [&](auto& t) { remove(t, scale); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), dir.string(), "'" + scale + "'", "weight scale", "'" + kL1 + "self_attn.q_b_proj.weight'");
}

TEST_F(CheckpointLoad, Fp8WeightWithoutItsActivationScale) {
  const fs::path dir = copy("hf_fp8");
  const std::string scale = kL0 + "mlp.shared_experts.down_proj.activation_scale";
  edit_shard(dir / kHfShard, [&](auto& t) { remove(t, scale); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'" + scale + "'", "static activation scale");
}

TEST_F(CheckpointLoad, Fp8StackedExpertsWithoutTheirScale) {
  const fs::path dir = copy("hf_fp8");
  const std::string scale = kL1 + "mlp.experts.gate_up_proj_scale_inv";
  edit_shard(dir / kHfShard, [&](auto& t) { remove(t, scale); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'" + scale + "'", "'" + kL1 + "mlp.experts.gate_up_proj'");
}

TEST_F(CheckpointLoad, NativeFp8WeightWithoutItsQscale) {
  const fs::path dir = copy("native_fp8");
  edit_shard(dir / kNativeShard, [&](auto& t) { remove(t, "layers.0.experts.3.w2.qscale_weight"); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'layers.0.experts.3.w2.qscale_weight'", "'layers.0.experts.3.w2.weight'");
  const fs::path act = copy("native_fp8");
  edit_shard(act / kNativeShard, [&](auto& t) { remove(t, "layers.1.attention.wkv_b.qscale_act"); });
  EXPECT_LOAD_ERROR(Checkpoint::open(act), "'layers.1.attention.wkv_b.qscale_act'");
}

TEST_F(CheckpointLoad, DynamicActivationsNeedNoActivationScale) {
  // qscheme_act NO_SCALES: the activation scales may be absent (the loader must not demand them).
  const fs::path dir = copy("native_fp8");
  json params = read_json(dir / "params.json");
  params["quantization"]["qscheme_act"] = "NO_SCALES";
  write_json(dir / "params.json", params);
  edit_shard(dir / kNativeShard, [&](auto& t) { remove(t, "layers.1.attention.wkv_b.qscale_act"); });
  const Checkpoint c = Checkpoint::open(dir);
  EXPECT_FALSE(c.weight({WeightKind::kKvB, 1}).activation_scale.has_value());
  EXPECT_TRUE(c.weight({WeightKind::kKvB, 1}).is_fp8());
}

TEST_F(CheckpointLoad, ScaleForABf16Weight) {
  const fs::path dir = copy("hf_bf16");
  const std::string scale = kL0 + "self_attn.q_a_proj.weight_scale_inv";
  edit_shard(dir / kHfShard, [&](auto& t) { t.push_back(f32_tensor(scale, {}, {0.01f})); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kHfShard).string(), "'" + scale + "'", "not FP8");

  const fs::path native = copy("native_bf16");
  edit_shard(native / kNativeShard, [&](auto& t) { t.push_back(f32_tensor("layers.1.experts.0.w1.qscale_act", {}, {0.5f})); });
  EXPECT_LOAD_ERROR(Checkpoint::open(native), "'layers.1.experts.0.w1.qscale_act'", "not FP8");
}

TEST_F(CheckpointLoad, ScaleForAWeightThatIsNeverFp8) {
  const fs::path dir = copy("hf_fp8");
  const std::string scale = kL0 + "mlp.gate.weight_scale_inv";  // the router stays BF16: not in the layout at all
  edit_shard(dir / kHfShard, [&](auto& t) { t.push_back(f32_tensor(scale, {}, {0.01f})); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "unexpected tensor '" + scale + "'");
}

// Sets element `i` of an F32 scale tensor.
void set_f32(OwnedTensor& t, size_t i, float v) {
  ASSERT_EQ(t.dtype, DType::F32);
  ASSERT_LE((i + 1) * 4, t.bytes.size());
  std::memcpy(t.bytes.data() + 4 * i, &v, 4);
}

TEST_F(CheckpointLoad, NonPositiveOrNonFiniteScales) {
  const float bad_values[] = {0.0f, -0.0f, -0.25f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
  for (const float bad : bad_values) {
    SCOPED_TRACE(bad);
    {
      const fs::path dir = copy("hf_fp8");
      const std::string scale = kL0 + "self_attn.kv_a_proj_with_mqa.weight_scale_inv";
      edit_shard(dir / kHfShard, [&](auto& t) { set_f32(named(t, scale), 0, bad); });
      EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kHfShard).string(), "'" + scale + "'", "element 0", "positive finite");
      fs::remove_all(dir);
    }
    {
      // [E,2,1]: element 7 is [3,1], the up half of expert 3.
      const fs::path dir = copy("hf_fp8");
      const std::string scale = kL1 + "mlp.experts.gate_up_proj_scale_inv";
      edit_shard(dir / kHfShard, [&](auto& t) { set_f32(named(t, scale), 7, bad); });
      EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'" + scale + "'", "element 7");
      fs::remove_all(dir);
    }
    {
      const fs::path dir = copy("native_fp8");
      edit_shard(dir / kNativeShard, [&](auto& t) { set_f32(named(t, "layers.0.shared_experts.w3.qscale_act"), 0, bad); });
      EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'layers.0.shared_experts.w3.qscale_act'", "element 0");
      fs::remove_all(dir);
    }
  }
}

TEST_F(CheckpointLoad, StackedScaleElementsGoToTheirExperts) {
  // gate_up_proj_scale_inv [E,2,1]: [e,0] scales expert e's gate rows, [e,1] its up rows.
  const fs::path dir = copy("hf_fp8");
  const std::string scale = kL1 + "mlp.experts.gate_up_proj_scale_inv";
  const std::string act = kL1 + "mlp.experts.down_proj_activation_scale";
  edit_shard(dir / kHfShard, [&](auto& t) {
    for (size_t e = 0; e < 8; ++e) {
      set_f32(named(t, scale), 2 * e, 1.0f + static_cast<float>(e));
      set_f32(named(t, scale), 2 * e + 1, 100.0f + static_cast<float>(e));
      set_f32(named(t, act), e, 0.5f + static_cast<float>(e));
    }
  });
  const Checkpoint c = Checkpoint::open(dir);
  for (int e = 0; e < 8; ++e) {
    EXPECT_EQ(c.weight({WeightKind::kExpertGate, 1, e}).weight_scale, 1.0f + static_cast<float>(e));
    EXPECT_EQ(c.weight({WeightKind::kExpertUp, 1, e}).weight_scale, 100.0f + static_cast<float>(e));
    EXPECT_EQ(c.weight({WeightKind::kExpertDown, 1, e}).activation_scale, 0.5f + static_cast<float>(e));
  }
}

TEST_F(CheckpointLoad, ScaleShapes) {
  // transformers' older [E,1,1] form of gate_up_proj_scale_inv is read as one scale per expert.
  const fs::path dir = copy("hf_fp8");
  const std::string scale = kL0 + "mlp.experts.gate_up_proj_scale_inv";
  edit_shard(dir / kHfShard, [&](auto& t) {
    std::vector<float> v(8);
    for (size_t e = 0; e < 8; ++e) v[e] = 0.25f * static_cast<float>(e + 1);
    named(t, scale) = f32_tensor(scale, {8, 1, 1}, v);
  });
  const Checkpoint c = Checkpoint::open(dir);
  EXPECT_EQ(c.weight({WeightKind::kExpertGate, 0, 5}).weight_scale, 1.5f);
  EXPECT_EQ(c.weight({WeightKind::kExpertUp, 0, 5}).weight_scale, 1.5f);

  // A scale with the wrong number of elements, or an integer dtype, is refused.
  const fs::path wrong = copy("hf_fp8");
  const std::string o = kL0 + "self_attn.o_proj.weight_scale_inv";
  edit_shard(wrong / kHfShard, [&](auto& t) { named(t, o) = f32_tensor(o, {2}, {0.1f, 0.1f}); });
  EXPECT_LOAD_ERROR(Checkpoint::open(wrong), "'" + o + "'", "2 elements");
  const fs::path stacked = copy("hf_fp8");
  const std::string down = kL0 + "mlp.experts.down_proj_scale_inv";
  edit_shard(stacked / kHfShard, [&](auto& t) { named(t, down) = f32_tensor(down, {8, 2, 1}, std::vector<float>(16, 0.1f)); });
  EXPECT_LOAD_ERROR(Checkpoint::open(stacked), "'" + down + "'", "16 elements");
  const fs::path integer = copy("hf_fp8");
  edit_shard(integer / kHfShard, [&](auto& t) { named(t, o).dtype = DType::I32; });
  EXPECT_LOAD_ERROR(Checkpoint::open(integer), "'" + o + "'", "dtype I32");
}

// --- Sharded checkpoints and their index.

TEST_F(CheckpointLoad, IndexListsAMissingShard) {
  const fs::path dir = copy("hf_sharded");
  const std::string shard = shard_of(dir, kL1 + "self_attn.o_proj.weight");
  fs::remove(dir / shard);
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kIndex).string(), "'" + shard + "'", "does not exist");

  const fs::path renamed = copy("hf_sharded");
  json index = read_json(renamed / kIndex);
  index["weight_map"][kL1 + "self_attn.o_proj.weight"] = "model-00099-of-00099.safetensors";
  write_json(renamed / kIndex, index);
  // The shards are read in name order, so the tensor's real shard is met first: the error names both.
  EXPECT_LOAD_ERROR(Checkpoint::open(renamed), (renamed / kIndex).string(), "'" + kL1 + "self_attn.o_proj.weight'",
                    "model-00099-of-00099.safetensors");
}

TEST_F(CheckpointLoad, IndexPutsATensorInTheWrongShard) {
  const fs::path dir = copy("hf_sharded");
  const std::string name = kL0 + "self_attn.q_a_proj.weight";
  const std::string actual = shard_of(dir, name), other = shard_of(dir, "language_model.model.embed_tokens.weight");
  ASSERT_NE(actual, other);
  json index = read_json(dir / kIndex);
  index["weight_map"][name] = other;
  write_json(dir / kIndex, index);
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kIndex).string(), "'" + name + "'", actual, "the index says " + other);
}

TEST_F(CheckpointLoad, IndexListsATensorThatNoShardHas) {
  const fs::path dir = copy("hf_sharded");
  const std::string name = kL1 + "self_attn.q_a_layernorm.weight";
  const std::string shard = shard_of(dir, name);
  edit_shard(dir / shard, [&](auto& t) { remove(t, name); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kIndex).string(), "'" + name + "'", shard);

  const fs::path invented = copy("hf_sharded");
  json index = read_json(invented / kIndex);
  index["weight_map"]["language_model.model.layers.0.self_attn.bonus.weight"] = shard_of(invented, name);
  write_json(invented / kIndex, index);
  EXPECT_LOAD_ERROR(Checkpoint::open(invented), "'language_model.model.layers.0.self_attn.bonus.weight'");
}

TEST_F(CheckpointLoad, ShardHasATensorTheIndexDoesNotList) {
  const fs::path dir = copy("hf_sharded");
  const std::string name = kL0 + "post_attention_layernorm.weight";
  json index = read_json(dir / kIndex);
  const std::string shard = index["weight_map"].at(name).get<std::string>();
  index["weight_map"].erase(name);
  write_json(dir / kIndex, index);
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / shard).string(), "'" + name + "'", "is not in");
}

TEST_F(CheckpointLoad, ShardNamesMustStayInTheDirectory) {
  for (const std::string& bad : {std::string("../model.safetensors"), std::string("../../etc/passwd"), std::string("/etc/passwd"),
                                 std::string("sub/model.safetensors"), std::string(".."), std::string(""),
                                 std::string("..\\model.safetensors")}) {
    SCOPED_TRACE(bad);
    const fs::path dir = copy("hf_sharded");
    json index = read_json(dir / kIndex);
    index["weight_map"][kL0 + "mlp.gate.weight"] = bad;
    write_json(dir / kIndex, index);
    EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kIndex).string(), "'" + kL0 + "mlp.gate.weight'", "file name in the same directory");
    fs::remove_all(dir);
  }
  const fs::path dir = copy("hf_sharded");
  json index = read_json(dir / kIndex);
  index["weight_map"][kL0 + "mlp.gate.weight"] = 3;
  write_json(dir / kIndex, index);
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'" + kL0 + "mlp.gate.weight'");
}

TEST_F(CheckpointLoad, MalformedIndex) {
  for (const char* text : {"[]", "{}", R"({"weight_map": []})", R"({"metadata": {}, "weight_map": "model.safetensors"})", "{"}) {
    SCOPED_TRACE(text);
    const fs::path dir = copy("hf_sharded");
    write_bytes(dir / kIndex, text);
    EXPECT_LOAD_ERROR(Checkpoint::open(dir), (dir / kIndex).string());
    fs::remove_all(dir);
  }
}

TEST_F(CheckpointLoad, TensorInTwoShards) {
  const fs::path dir = copy("hf_sharded");
  const std::string name = "language_model.model.norm.weight";
  const std::string home = shard_of(dir, name), other = shard_of(dir, "language_model.model.embed_tokens.weight");
  ASSERT_NE(home, other);
  OwnedTensor copy_of;
  edit_shard(dir / home, [&](auto& t) { copy_of = named(t, name); });
  edit_shard(dir / other, [&](auto& t) { t.push_back(copy_of); });
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'" + name + "'");

  // Without an index the shards are found by name, and the duplicate is still refused, naming both files.
  fs::remove(dir / kIndex);
  const std::string message = EXPECT_LOAD_ERROR(Checkpoint::open(dir), "'" + name + "'", "also in");
  EXPECT_NE(message.find(home), std::string::npos) << message;
  EXPECT_NE(message.find(other), std::string::npos) << message;
}

TEST_F(CheckpointLoad, ShardsWithoutAnIndexLoad) {
  const fs::path dir = copy("hf_sharded");
  fs::remove(dir / kIndex);
  write_bytes(dir / "model-00001-of-00002.safetensors.bak", "not a shard");  // not a shard name: ignored
  write_bytes(dir / "model-1-of-2.safetensors", "not a shard");
  const Checkpoint c = Checkpoint::open(dir);
  EXPECT_EQ(c.weights().size(), model_weights(c.config()).size());
  // ...but a missing shard shows up as missing tensors.
  fs::remove(dir / shard_file_name(CheckpointFormat::kHuggingFace, 1, static_cast<int>(c.files().size())));
  EXPECT_LOAD_ERROR(Checkpoint::open(dir), "missing from the checkpoint");
}

// --- The directory itself.

TEST_F(CheckpointLoad, DirectoryProblems) {
  EXPECT_LOAD_ERROR(Checkpoint::open(dir_ / "absent"), (dir_ / "absent").string(), "not a directory");
  write_bytes(dir_ / "file", "x");
  EXPECT_LOAD_ERROR(Checkpoint::open(dir_ / "file"), (dir_ / "file").string(), "not a directory");

  const fs::path no_weights = copy("hf_bf16");
  fs::remove(no_weights / kHfShard);
  EXPECT_LOAD_ERROR(Checkpoint::open(no_weights), no_weights.string(), "no weights");

  const fs::path no_config = copy("hf_bf16");
  fs::remove(no_config / "config.json");
  EXPECT_LOAD_ERROR(Checkpoint::open(no_config), no_config.string(), "no params.json or config.json");

  // Native weights under an HF config: the names do not match the HF table.
  const fs::path mixed = copy("native_bf16");
  write_bytes(mixed / "config.json", to_hf_config(preset("tiny")).dump());
  fs::rename(mixed / kNativeShard, mixed / kHfShard);
  EXPECT_LOAD_ERROR(Checkpoint::open(mixed, CheckpointFormat::kHuggingFace), "no token embedding");

  const fs::path truncated = copy("hf_bf16");
  const std::string bytes = read_bytes(truncated / kHfShard);
  write_bytes(truncated / kHfShard, std::string_view(bytes).substr(0, bytes.size() - 10));
  EXPECT_LOAD_ERROR(Checkpoint::open(truncated), (truncated / kHfShard).string(), "truncated");

  const fs::path config_mismatch = copy("hf_bf16");
  json config = read_json(config_mismatch / "config.json");
  config["text_config"]["q_lora_rank"] = 40;
  write_json(config_mismatch / "config.json", config);
  EXPECT_LOAD_ERROR(Checkpoint::open(config_mismatch), "q_a_proj.weight'", "[48, 64]", "[40, 64]");
}

}  // namespace
}  // namespace quatre::io
