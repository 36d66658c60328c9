// Checkpoint directory: shard discovery, the index, and the mapping of every logical weight.
#include "io/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/check.h"
#include "core/error.h"
#include "core/int4.h"

namespace quatre::io {
namespace {

std::string shard_prefix(CheckpointFormat f) { return f == CheckpointFormat::kMistralNative ? "consolidated" : "model"; }

// "model-00001-of-00003.safetensors": a shard of a sharded checkpoint. (Not std::regex: GCC 12 warns
// inside <regex> under the sanitizers, which -Werror turns into a build failure.)
bool is_shard_file_name(std::string_view name, std::string_view prefix) {
  constexpr std::string_view suffix = ".safetensors";
  constexpr size_t middle = std::string_view("-00001-of-00003").size();
  if (name.size() != prefix.size() + middle + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix)) {
    return false;
  }
  const std::string_view m = name.substr(prefix.size(), middle);
  auto digits = [](std::string_view d) { return std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; }); };
  return m[0] == '-' && digits(m.substr(1, 5)) && m.substr(6, 4) == "-of-" && digits(m.substr(10, 5));
}

bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos && name != "." &&
         name != "..";
}

// Reads a scale tensor's element `i` as float, refusing non-finite or non-positive values.
float read_scale(const Checkpoint::Tensor& t, const SafetensorsFile& file, int64_t i) {
  const float v = load_as_f32(file.data(*t.info).data(), t.info->dtype, static_cast<size_t>(i));
  if (!std::isfinite(v) || v <= 0.0f) {
    throw LoadError(fmt::format("{}: scale tensor '{}' element {} is {}, expected a positive finite number",
                                file.path().string(), t.info->name, i, v));
  }
  return v;
}

// Bytes of row `row` (counted over the whole tensor, stacks included) of a tensor whose rows are `row_bytes` long.
std::span<const std::byte> rows_of(std::span<const std::byte> bytes, const CheckpointTensor& t, const TensorPiece& piece,
                                   size_t row_bytes) {
  const int64_t rows_per_stack = t.shape.size() == 3 ? t.shape[1] : 0;
  const int64_t first_row = (piece.stack >= 0 ? piece.stack * rows_per_stack : 0) + piece.row_begin;
  return bytes.subspan(static_cast<size_t>(first_row) * row_bytes, static_cast<size_t>(piece.rows) * row_bytes);
}

}  // namespace

float WeightView::at(size_t i) const {
  if (!is_int4()) return load_as_f32(bytes.data(), dtype, i) * weight_scale;
  const auto in = static_cast<size_t>(shape.back()), row = i / in, col = i % in;
  const size_t group = row * (in / static_cast<size_t>(int4_group_size)) + col / static_cast<size_t>(int4_group_size);
  const uint8_t code = int4_code(reinterpret_cast<const uint8_t*>(bytes.data()) + row * (in / 2), static_cast<int64_t>(col));
  uint16_t scale = 0, offset = 0;
  std::memcpy(&scale, int4_scales.data() + 2 * group, 2);
  if (!int4_offsets.empty()) std::memcpy(&offset, int4_offsets.data() + 2 * group, 2);
  return int4_value(code, scale, offset, int4_offsets.empty());
}

std::string index_file_name(CheckpointFormat f) { return shard_prefix(f) + ".safetensors.index.json"; }

std::string shard_file_name(CheckpointFormat f, int index, int count) {
  if (count == 1) return shard_prefix(f) + ".safetensors";
  return fmt::format("{}-{:05d}-of-{:05d}.safetensors", shard_prefix(f), index + 1, count);
}

Checkpoint Checkpoint::open(const std::filesystem::path& dir, std::optional<CheckpointFormat> format) {
  if (!std::filesystem::is_directory(dir)) {
    throw LoadError(fmt::format("{}: not a directory (expected a Mistral Small 4 checkpoint directory)", dir.string()));
  }
  Checkpoint c;
  c.dir_ = dir;
  c.config_ = load_model_config(dir, format);
  c.map_shards(c.config_.format);
  c.map_weights();
  return c;
}

const Checkpoint::Tensor* Checkpoint::find_tensor(std::string_view name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const WeightView& Checkpoint::weight(const WeightKey& key) const {
  const auto it = weights_.find(key);
  CHECK(it != weights_.end()) << "no weight " << weight_key_name(key);
  return it->second;
}

void Checkpoint::map_shards(std::optional<CheckpointFormat> format) {
  const CheckpointFormat f = *format;
  const std::filesystem::path index_path = dir_ / index_file_name(f);
  std::map<std::string, std::string> index_map;  // tensor -> file, when there is an index
  std::vector<std::string> shard_names;
  if (std::filesystem::exists(index_path)) {
    const nlohmann::json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw LoadError(fmt::format("{}: expected an object with a \"weight_map\" object", index_path.string()));
    }
    std::set<std::string> names;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string() || !is_plain_file_name(file.get<std::string>())) {
        throw LoadError(fmt::format("{}: weight_map['{}'] must be a file name in the same directory, got {}",
                                    index_path.string(), tensor, file.dump()));
      }
      index_map[tensor] = file.get<std::string>();
      names.insert(file.get<std::string>());
    }
    shard_names.assign(names.begin(), names.end());
  } else {
    const std::string single = shard_file_name(f, 0, 1);
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      const std::string name = entry.path().filename().string();
      if (name == single || is_shard_file_name(name, shard_prefix(f))) shard_names.push_back(name);
    }
    std::sort(shard_names.begin(), shard_names.end());
  }
  if (shard_names.empty()) {
    throw LoadError(fmt::format("{}: no weights: expected {} or {}-NNNNN-of-NNNNN.safetensors ({} format)", dir_.string(),
                                shard_file_name(f, 0, 1), shard_prefix(f), format_name(f)));
  }

  for (const std::string& name : shard_names) {
    const std::filesystem::path path = dir_ / name;
    if (!std::filesystem::exists(path)) {
      throw LoadError(fmt::format("{}: lists shard '{}', which does not exist", index_path.string(), name));
    }
    files_.push_back(std::make_unique<SafetensorsFile>(path));
    const SafetensorsFile& file = *files_.back();
    for (const TensorInfo& t : file.tensors()) {
      const auto [it, inserted] = tensors_.emplace(t.name, Tensor{&file, &t});
      if (!inserted) {
        throw LoadError(fmt::format("{}: tensor '{}' is also in {}", path.string(), t.name, it->second.file->path().string()));
      }
      if (!index_map.empty()) {
        const auto listed = index_map.find(t.name);
        if (listed == index_map.end()) {
          throw LoadError(fmt::format("{}: tensor '{}' is not in {}", path.string(), t.name, index_path.string()));
        }
        if (listed->second != name) {
          throw LoadError(fmt::format("{}: tensor '{}' is in {}, but the index says {}", index_path.string(), t.name, name,
                                      listed->second));
        }
      }
    }
  }
  for (const auto& [tensor, file] : index_map) {
    if (!tensors_.contains(tensor)) {
      throw LoadError(fmt::format("{}: tensor '{}' is listed in {} but missing from it", index_path.string(), tensor, file));
    }
  }
}

void Checkpoint::map_weights() {
  LayoutOptions options;
  options.format = config_.format;
  options.fp8 = true;  // every scale name is a candidate; whether a weight is FP8 is read off its dtype
  options.static_activation_scales = true;
  if (config_.format == CheckpointFormat::kHuggingFace) {
    std::vector<std::string> names;
    for (const auto& [name, t] : tensors_) names.push_back(name);
    hf_naming_ = detect_hf_naming(names, dir_.string());
    options.hf_naming = *hf_naming_;
  }
  const std::vector<CheckpointTensor> layout = checkpoint_layout(config_, options);
  std::set<std::string> consumed;
  auto where = [&](const Tensor& t) { return t.file->path().string(); };

  // Weights first, so the scales know which weights are FP8.
  std::set<std::string> fp8_weights;
  std::map<WeightKey, const std::string*> weight_names;  // logical weight -> the tensor that holds it
  for (const CheckpointTensor& expected : layout) {
    if (expected.role != TensorRole::kWeight) continue;
    for (const TensorPiece& piece : expected.pieces) weight_names[piece.key] = &expected.name;
    const Tensor* t = find_tensor(expected.name);
    if (t == nullptr) {
      throw LoadError(fmt::format("{}: tensor '{}' ({}) is missing from the checkpoint", dir_.string(), expected.name,
                                  weight_key_name(expected.pieces.front().key)));
    }
    consumed.insert(expected.name);
    const DType dt = t->info->dtype;
    const bool fp8_ok = may_be_fp8(expected.pieces.front().key.kind);
    const bool is_int4 = is_int4_weight(config_, expected.pieces.front().key.kind);
    if (is_int4) {
      if (dt != DType::U8) {
        throw LoadError(fmt::format("{}: tensor '{}' has dtype {}, expected U8 (packed 4-bit codes: the config's "
                                    "quantization_config is quatre_int4 with modules \"{}\")",
                                    where(*t), expected.name, dtype_name(dt), int4_modules_name(config_.int4.modules)));
      }
    } else if (dt == DType::F8_E4M3) {
      if (!fp8_ok) throw LoadError(fmt::format("{}: tensor '{}' is F8_E4M3, but this weight is kept in BF16", where(*t), expected.name));
      const bool fp8_declared = config_.quantization == WeightQuantization::kFp8PerTensor ||
                                (config_.quantization == WeightQuantization::kInt4 && config_.int4.others_fp8);
      if (!fp8_declared) {
        throw LoadError(fmt::format("{}: tensor '{}' is F8_E4M3 but the config declares no FP8 quantization{}", where(*t),
                                    expected.name,
                                    config_.quantization == WeightQuantization::kInt4
                                        ? " (its quatre_int4 quantization_config says \"other_linears\": \"bfloat16\")"
                                        : ""));
      }
      fp8_weights.insert(expected.name);
    } else if (dt != DType::BF16 && dt != DType::F16 && dt != DType::F32) {
      throw LoadError(fmt::format("{}: tensor '{}' has dtype {}, expected BF16, F16, F32{}", where(*t), expected.name,
                                  dtype_name(dt), fp8_ok ? " or F8_E4M3" : ""));
    }
    // After the dtype: a 4-bit config names the dtype it expects before the packed shape.
    if (t->info->shape != expected.shape) {
      throw LoadError(fmt::format("{}: tensor '{}' has shape [{}], expected [{}] for this config", where(*t), expected.name,
                                  fmt::join(t->info->shape, ", "), fmt::join(expected.shape, ", ")));
    }
    const auto bytes = t->file->data(*t->info);
    for (const TensorPiece& piece : expected.pieces) {
      const std::vector<int64_t> shape = weight_shape(config_, piece.key);
      int64_t row_size = 1;  // elements per row of the logical weight
      for (size_t i = 1; i < shape.size(); ++i) row_size *= shape[i];
      WeightView view;
      // A 4-bit row is in/2 bytes of codes.
      view.bytes = rows_of(bytes, expected, piece, is_int4 ? static_cast<size_t>(row_size / 2) : static_cast<size_t>(row_size) * dtype_size(dt));
      view.int4_group_size = is_int4 ? config_.int4.group_size : 0;
      view.dtype = dt;
      view.shape = shape;
      view.row_order = expected.row_order;
      view.source = piece.stack >= 0 ? fmt::format("{}[{}][{}:{}]", expected.name, piece.stack, piece.row_begin,
                                                   piece.row_begin + piece.rows)
                                     : expected.name;
      weights_[piece.key] = std::move(view);
    }
  }

  for (const CheckpointTensor& expected : layout) {
    if (expected.role == TensorRole::kInt4Scales || expected.role == TensorRole::kInt4Offsets) {
      map_int4_groups(expected, consumed);
      continue;
    }
    if (expected.role == TensorRole::kWeight) continue;
    const Tensor* t = find_tensor(expected.name);
    const std::string& weight_name = *weight_names.at(expected.pieces.front().key);
    const bool is_fp8 = fp8_weights.contains(weight_name);
    if (t == nullptr) {
      const bool required = is_fp8 && (expected.role == TensorRole::kWeightScale || config_.static_activation_scales);
      if (required) {
        throw LoadError(fmt::format("{}: tensor '{}' (the {} of FP8 weight '{}') is missing", dir_.string(), expected.name,
                                    expected.role == TensorRole::kWeightScale ? "weight scale" : "static activation scale",
                                    weight_name));
      }
      continue;
    }
    consumed.insert(expected.name);
    if (!is_fp8) {
      throw LoadError(fmt::format("{}: scale tensor '{}' belongs to '{}', which is not FP8", where(*t), expected.name, weight_name));
    }
    const DType dt = t->info->dtype;
    if (dt != DType::F32 && dt != DType::BF16 && dt != DType::F16) {
      throw LoadError(fmt::format("{}: scale tensor '{}' has dtype {}, expected F32, BF16 or F16", where(*t), expected.name, dtype_name(dt)));
    }
    // Shape-agnostic: one value for the tensor, one per stacked expert, or (gate_up) one per expert and half.
    const int64_t n = t->info->numel();
    const bool stacked = expected.pieces.front().stack >= 0;
    const int64_t n_stack = stacked ? config_.text.n_routed_experts : 1;
    const bool has_halves = stacked && expected.pieces.size() == 2 * static_cast<size_t>(n_stack);
    if (n != n_stack && !(has_halves && n == 2 * n_stack)) {
      throw LoadError(fmt::format("{}: scale tensor '{}' has {} elements (shape [{}]), expected {}{}", where(*t), expected.name, n,
                                  fmt::join(t->info->shape, ", "), n_stack, has_halves ? fmt::format(" or {}", 2 * n_stack) : ""));
    }
    for (size_t p = 0; p < expected.pieces.size(); ++p) {
      const TensorPiece& piece = expected.pieces[p];
      const int64_t element = !stacked ? 0 : (n == n_stack ? piece.stack : piece.stack * 2 + (piece.row_begin > 0 ? 1 : 0));
      const float value = read_scale(*t, *t->file, element);
      WeightView& view = weights_.at(piece.key);
      if (expected.role == TensorRole::kWeightScale) view.weight_scale = value;
      else view.activation_scale = value;
    }
  }

  for (const auto& [name, t] : tensors_) {
    if (!consumed.contains(name)) {
      throw LoadError(fmt::format("{}: unexpected tensor '{}' (shape [{}], {}): not part of this {} checkpoint's layout",
                                  where(t), name, fmt::join(t.info->shape, ", "), dtype_name(t.info->dtype),
                                  format_name(config_.format)));
    }
  }
}

// The scales (or offsets) of a 4-bit weight: BF16, exactly the layout's shape, one row per row of the weight.
void Checkpoint::map_int4_groups(const CheckpointTensor& expected, std::set<std::string>& consumed) {
  const bool is_scales = expected.role == TensorRole::kInt4Scales;
  const Tensor* t = find_tensor(expected.name);
  if (t == nullptr) {
    throw LoadError(fmt::format("{}: tensor '{}' (the 4-bit {} of {}) is missing from the checkpoint", dir_.string(), expected.name,
                                is_scales ? "scales" : "offsets", weight_key_name(expected.pieces.front().key)));
  }
  consumed.insert(expected.name);
  if (t->info->dtype != DType::BF16 || t->info->shape != expected.shape) {
    throw LoadError(fmt::format("{}: tensor '{}' is {} [{}], expected BF16 [{}] (one value per row and group of {} columns)",
                                t->file->path().string(), expected.name, dtype_name(t->info->dtype), fmt::join(t->info->shape, ", "),
                                fmt::join(expected.shape, ", "), config_.int4.group_size));
  }
  const auto bytes = t->file->data(*t->info);
  const auto row_bytes = static_cast<size_t>(expected.shape.back()) * 2;
  for (const TensorPiece& piece : expected.pieces) {
    WeightView& view = weights_.at(piece.key);
    (is_scales ? view.int4_scales : view.int4_offsets) = rows_of(bytes, expected, piece, row_bytes);
  }
}

}  // namespace quatre::io
