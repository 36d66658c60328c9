// A checkpoint directory of either format: its config, its safetensors shards (with or without an index),
// and the view of every logical weight through the name table of io/weight_map.h. Depends on core, io.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "io/weight_map.h"

namespace quatre::io {

// One logical weight as stored: a contiguous range of a mapped tensor, plus its FP8 scales.
struct WeightView {
  std::span<const std::byte> bytes;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;               // the logical shape (weight_shape)
  float weight_scale = 1.0f;                // FP8: W_real = float(W_fp8) * weight_scale; 1 otherwise
  std::optional<float> activation_scale;    // FP8 static activation scale (a divisor before quantising x)
  RowOrder row_order = RowOrder::kNative;
  std::string source;                       // checkpoint tensor it came from, for messages
  // 4-bit (int4_group_size > 0): bytes are U8 codes [out, in/2], with BF16 scales (and offsets when asymmetric)
  // [out, in/int4_group_size] (core/int4.h); shape stays the logical [out, in].
  int64_t int4_group_size = 0;
  std::span<const std::byte> int4_scales;
  std::span<const std::byte> int4_offsets;  // empty when symmetric

  bool is_fp8() const { return dtype == DType::F8_E4M3; }
  bool is_int4() const { return int4_group_size > 0; }
  float at(size_t i) const;  // dequantised element i of the logical row-major [out, in]
};

class Checkpoint {
 public:
  // Opens DIR: reads the config (params.json or config.json; `format` picks when both exist), maps every
  // shard (from the index when there is one), and maps every logical weight. Throws LoadError naming the
  // file and tensor for anything missing, extra, mis-shaped, of the wrong dtype, or corrupt.
  static Checkpoint open(const std::filesystem::path& dir, std::optional<CheckpointFormat> format = {});

  const std::filesystem::path& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  CheckpointFormat format() const { return config_.format; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  std::optional<HfNaming> hf_naming() const { return hf_naming_; }

  struct Tensor {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  const std::map<std::string, Tensor, std::less<>>& tensors() const { return tensors_; }
  const Tensor* find_tensor(std::string_view name) const;

  const std::map<WeightKey, WeightView>& weights() const { return weights_; }
  const WeightView& weight(const WeightKey& key) const;  // CHECKs that the key exists

 private:
  Checkpoint() = default;
  void map_shards(std::optional<CheckpointFormat> format);
  void map_weights();
  void map_int4_groups(const CheckpointTensor& expected, std::set<std::string>& consumed);

  std::filesystem::path dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Tensor, std::less<>> tensors_;
  std::optional<HfNaming> hf_naming_;
  std::map<WeightKey, WeightView> weights_;
};

// File names of a format: the index ("model.safetensors.index.json") and shard naming.
std::string index_file_name(CheckpointFormat format);
std::string shard_file_name(CheckpointFormat format, int index, int count);  // count 1: "model.safetensors"

}  // namespace quatre::io
