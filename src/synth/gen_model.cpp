// Synthetic checkpoint writer: the weight_map table decides the names, synthetic_weights the values.
#include "synth/gen_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "core/dtype.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "synth/synthetic_tekken.h"
#include "synth/synthetic_weights.h"

namespace quatre::synth {
namespace {

using io::CheckpointTensor;
using io::TensorRole;
using io::WeightKey;
using io::WeightKind;

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw LoadError(fmt::format("{}: cannot write", path.string()));
}

// Generates weights and their FP8 scales. One per-tensor scale amax/448 per weight, except the gate and
// up projections of a routed expert, which share max(amax_gate, amax_up)/448 (MODEL.md §2.5) so the
// native and HF files of one seed hold bit-identical FP8 bytes.
class WeightSource {
 public:
  WeightSource(const io::ModelConfig& config, uint64_t seed) : config_(config), seed_(seed) {}

  std::vector<float> values(const WeightKey& key) const {
    std::vector<float> v(static_cast<size_t>(numel(io::weight_shape(config_, key))));
    fill_weight(config_, key, seed_, v);
    return v;
  }

  float fp8_scale(const WeightKey& key, const std::vector<float>& own_values) {
    float amax = remember_amax(key, own_values);
    if (key.kind == WeightKind::kExpertGate || key.kind == WeightKind::kExpertUp) {
      const WeightKey partner{key.kind == WeightKind::kExpertGate ? WeightKind::kExpertUp : WeightKind::kExpertGate, key.layer, key.expert};
      amax = std::max(amax, amax_of(partner));
    }
    return amax > 0 ? amax / 448.0f : 1.0f;
  }

  float fp8_scale(const WeightKey& key) { return fp8_scale(key, values(key)); }

 private:
  float remember_amax(const WeightKey& key, const std::vector<float>& v) {
    float amax = 0;
    for (float x : v) amax = std::max(amax, std::fabs(x));
    std::lock_guard lock(mutex_);
    amax_[key] = amax;
    return amax;
  }
  float amax_of(const WeightKey& key) {
    {
      std::lock_guard lock(mutex_);
      if (auto it = amax_.find(key); it != amax_.end()) return it->second;
    }
    return remember_amax(key, values(key));
  }

  const io::ModelConfig& config_;
  uint64_t seed_;
  std::mutex mutex_;
  std::map<WeightKey, float> amax_;
};

// Native row h·hd + 2i + j goes to HF row h·hd + j·hd/2 + i (MODEL.md §2.5).
std::vector<float> to_hf_vision_qk_rows(const std::vector<float>& native, int64_t head_dim, int64_t cols) {
  std::vector<float> hf(native.size());
  const int64_t rows = static_cast<int64_t>(native.size()) / cols;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = r / head_dim, within = r % head_dim, i = within / 2, j = within % 2;
    const int64_t to = h * head_dim + j * (head_dim / 2) + i;
    std::copy_n(native.begin() + r * cols, cols, hf.begin() + to * cols);
  }
  return hf;
}

class TensorWriter {
 public:
  TensorWriter(const GenModelOptions& o, WeightSource& source) : o_(o), source_(source) {}

  DType dtype(const CheckpointTensor& t) const {
    if (t.role != TensorRole::kWeight) return DType::F32;
    return o_.fp8 && io::may_be_fp8(t.pieces.front().key.kind) ? DType::F8_E4M3 : DType::BF16;
  }

  void fill(const CheckpointTensor& t, std::span<std::byte> out) {
    if (t.role == TensorRole::kWeight) {
      fill_weight_tensor(t, out);
      return;
    }
    const int64_t n = numel(t.shape);
    std::vector<float> values(static_cast<size_t>(n));
    for (const io::TensorPiece& piece : t.pieces) {
      // Stacked scales hold one element per expert, or two ([E,2,1]: gate then up) for gate_up.
      const int64_t per_stack = piece.stack >= 0 ? n / o_.config.text.n_routed_experts : 1;
      const int64_t element = piece.stack < 0 ? 0 : piece.stack * per_stack + (per_stack == 2 && piece.row_begin > 0 ? 1 : 0);
      values[static_cast<size_t>(element)] =
          t.role == TensorRole::kWeightScale ? source_.fp8_scale(piece.key) : kSyntheticActivationScale;
    }
    std::memcpy(out.data(), values.data(), out.size());
  }

 private:
  void fill_weight_tensor(const CheckpointTensor& t, std::span<std::byte> out) {
    const DType dt = dtype(t);
    const size_t es = dtype_size(dt);
    const int64_t rows_per_stack = t.shape.size() == 3 ? t.shape[1] : 0;
    // Pieces are independent: spread them over the cores (the full-width experts are big).
    const size_t n_threads = std::min<size_t>(t.pieces.size(), std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> workers;
    std::exception_ptr error;
    std::mutex error_mutex;
    for (size_t w = 0; w < n_threads; ++w) {
      workers.emplace_back([&, w] {
        try {
          for (size_t p = w; p < t.pieces.size(); p += n_threads) {
            const io::TensorPiece& piece = t.pieces[p];
            std::vector<float> v = source_.values(piece.key);
            const std::vector<int64_t> shape = io::weight_shape(o_.config, piece.key);
            const int64_t row_size = numel(shape) / shape[0];
            if (t.row_order == io::RowOrder::kHfVisionQk) v = to_hf_vision_qk_rows(v, o_.config.vision->head_dim, row_size);
            const int64_t first_row = (piece.stack >= 0 ? piece.stack * rows_per_stack : 0) + piece.row_begin;
            std::byte* dst = out.data() + static_cast<size_t>(first_row * row_size) * es;
            if (dt == DType::F8_E4M3) {
              const float inv = 1.0f / source_.fp8_scale(piece.key, v);
              for (size_t i = 0; i < v.size(); ++i) dst[i] = static_cast<std::byte>(f32_to_fp8e4m3(v[i] * inv));
            } else {
              for (size_t i = 0; i < v.size(); ++i) {
                const uint16_t b = f32_to_bf16(v[i]);
                std::memcpy(dst + 2 * i, &b, 2);
              }
            }
          }
        } catch (...) {
          std::lock_guard lock(error_mutex);
          error = std::current_exception();
        }
      });
    }
    for (std::thread& w : workers) w.join();
    if (error) std::rethrow_exception(error);
  }

  const GenModelOptions& o_;
  WeightSource& source_;
};

}  // namespace

void generate_checkpoint(const GenModelOptions& options, const std::filesystem::path& out_dir) {
  GenModelOptions o = options;
  o.config.format = o.format;
  o.config.quantization = o.fp8 ? io::WeightQuantization::kFp8PerTensor : io::WeightQuantization::kNone;
  o.config.static_activation_scales = true;
  o.config.architecture = o.config.vision ? "Mistral3ForConditionalGeneration" : "Mistral4ForCausalLM";
  if (o.format == io::CheckpointFormat::kMistralNative) {
    o.config.text.rope.apply_scale = o.config.text.rope.apply_scale.value_or(false);
  }
  o.config.validate("gen-model options");
  const io::HfNaming naming = o.hf_naming.value_or(o.config.vision ? io::HfNaming::kLegacyVlm : io::HfNaming::kCausalLm);
  if (naming == io::HfNaming::kCausalLm && o.config.vision) {
    throw InvalidRequest("gen-model: the Mistral4ForCausalLM naming (model.*) has no place for a vision tower; use --text-only");
  }
  if (std::filesystem::exists(out_dir) && !std::filesystem::is_empty(out_dir)) {
    throw InvalidRequest(fmt::format("gen-model: output directory {} is not empty", out_dir.string()));
  }
  std::filesystem::create_directories(out_dir);

  const std::vector<CheckpointTensor> layout = io::checkpoint_layout(
      o.config, {.format = o.format, .hf_naming = naming, .fp8 = o.fp8, .static_activation_scales = true});
  WeightSource source(o.config, o.seed);
  TensorWriter writer(o, source);

  // Shards: tensors in table order, a new shard when the next tensor would pass the size limit.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < layout.size(); ++i) {
    const uint64_t bytes = static_cast<uint64_t>(numel(layout[i].shape)) * dtype_size(writer.dtype(layout[i]));
    if (!shards.back().empty() && shard_bytes + bytes > o.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += bytes;
  }

  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t total_bytes = 0;
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"quatre.seed", std::to_string(o.seed)}};
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = io::shard_file_name(o.format, static_cast<int>(s), static_cast<int>(shards.size()));
    std::vector<io::TensorSpec> specs;
    for (size_t i : shards[s]) {
      specs.push_back({layout[i].name, writer.dtype(layout[i]), layout[i].shape});
      weight_map[layout[i].name] = file;
      total_bytes += static_cast<uint64_t>(numel(layout[i].shape)) * dtype_size(writer.dtype(layout[i]));
    }
    io::write_safetensors(out_dir / file, specs, [&](size_t k, std::span<std::byte> out) { writer.fill(layout[shards[s][k]], out); },
                          metadata);
    if (o.progress) o.progress(fmt::format("wrote {} ({} tensors)", file, specs.size()));
  }
  if (shards.size() > 1) {
    const nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    write_text(out_dir / io::index_file_name(o.format), index.dump(2) + "\n");
  }

  if (o.format == io::CheckpointFormat::kHuggingFace) {
    write_text(out_dir / "config.json", io::to_hf_config(o.config).dump(2) + "\n");
    write_text(out_dir / "generation_config.json", io::to_hf_generation_config(o.config).dump(2) + "\n");
  } else {
    write_text(out_dir / "params.json", io::to_params_json(o.config).dump(2) + "\n");
  }
  if (o.tokenizer) {
    std::filesystem::copy_file(*o.tokenizer, out_dir / "tekken.json");
  } else {
    write_text(out_dir / "tekken.json", synthetic_tekken_json(o.config.text.vocab_size));
  }
}

}  // namespace quatre::synth
