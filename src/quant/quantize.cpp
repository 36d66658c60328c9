// quatre quantize: the output layout comes from io/weight_map.h's table for the 4-bit config, and each output
// tensor is produced row by row from the input's WeightViews (dequantised to fp32, then rounded to BF16 or to 4 bits).
#include "quant/quantize.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/int4.h"
#include "core/thread_pool.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"

namespace quatre::quant {
namespace {

using io::CheckpointTensor;
using io::TensorRole;

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

class TensorWriter {
 public:
  TensorWriter(const io::Checkpoint& in, const io::ModelConfig& out_config)
      : in_(in), config_(out_config), pool_(static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))) {}

  bool is_int4(const CheckpointTensor& t) const { return io::is_int4_weight(config_, t.pieces.front().key.kind); }
  // A weight (or the scales of one) that stays FP8 as the input stores it: others_fp8 and every piece FP8.
  bool keeps_fp8(const CheckpointTensor& t) const {
    if (!config_.int4.others_fp8 || is_int4(t) || !io::may_be_fp8(t.pieces.front().key.kind)) return false;
    return std::all_of(t.pieces.begin(), t.pieces.end(),
                       [&](const io::TensorPiece& p) { return in_.weight(p.key).dtype == DType::F8_E4M3; });
  }
  static bool is_fp8_scale(const CheckpointTensor& t) {
    return t.role == TensorRole::kWeightScale || t.role == TensorRole::kActivationScale;
  }
  DType dtype(const CheckpointTensor& t) const {
    if (is_fp8_scale(t)) return DType::F32;
    if (t.role != TensorRole::kWeight) return DType::BF16;  // 4-bit scales and offsets
    return is_int4(t) ? DType::U8 : keeps_fp8(t) ? DType::F8_E4M3 : DType::BF16;
  }
  uint64_t bytes(const CheckpointTensor& t) const { return static_cast<uint64_t>(numel(t.shape)) * dtype_size(dtype(t)); }

  // An FP8 weight's scale: the input's value, one float (its pieces share it: the layout stacks no FP8 weights
  // beside 4-bit experts).
  void fill_scale(const CheckpointTensor& t, std::span<std::byte> out) const {
    const io::WeightView& v = in_.weight(t.pieces.front().key);
    const std::optional<float> value = t.role == TensorRole::kWeightScale ? std::optional<float>(v.weight_scale) : v.activation_scale;
    if (!value || out.size() != sizeof(float)) {
      throw LoadError(fmt::format("quantize: {} of {}: the input has no such scale", t.name, io::weight_key_name(t.pieces.front().key)));
    }
    std::memcpy(out.data(), &*value, sizeof(float));
  }

  // The bytes of output tensor t: every piece (logical weight) at its rows.
  void fill(const CheckpointTensor& t, std::span<std::byte> out) {
    if (is_fp8_scale(t)) return fill_scale(t, out);
    const bool fp8 = t.role == TensorRole::kWeight && keeps_fp8(t);
    const uint64_t row_bytes = bytes(t) / static_cast<uint64_t>(t.shape.size() == 3 ? t.shape[0] * t.shape[1] : t.shape[0]);
    const int64_t rows_per_stack = t.shape.size() == 3 ? t.shape[1] : 0;
    for (const io::TensorPiece& piece : t.pieces) {
      const io::WeightView& v = in_.weight(piece.key);
      const int64_t first_row = (piece.stack >= 0 ? piece.stack * rows_per_stack : 0) + piece.row_begin;
      std::byte* dst = out.data() + static_cast<size_t>(first_row) * row_bytes;
      const int64_t cols = numel(v.shape) / v.shape[0];
      pool_.parallel_for(piece.rows, 16, [&](int64_t begin, int64_t end, int) {
        std::vector<float> row(static_cast<size_t>(cols));
        std::vector<uint8_t> codes(static_cast<size_t>(cols / 2));
        std::vector<uint16_t> scales(static_cast<size_t>(cols)), offsets(static_cast<size_t>(cols));
        for (int64_t r = begin; r < end; ++r) {
          std::byte* to = dst + static_cast<size_t>(r) * row_bytes;
          if (fp8 || (t.role == TensorRole::kWeight && !is_int4(t) && v.dtype == DType::BF16 && v.weight_scale == 1.0f)) {
            // FP8 kept as stored (its scale beside it), BF16 bit-exact
            std::memcpy(to, v.bytes.data() + static_cast<size_t>(r) * row_bytes, row_bytes);
            continue;
          }
          for (int64_t i = 0; i < cols; ++i) row[static_cast<size_t>(i)] = v.at(static_cast<size_t>(r * cols + i));
          if (!is_int4(t)) {
            for (int64_t i = 0; i < cols; ++i) {
              const uint16_t b = f32_to_bf16(row[static_cast<size_t>(i)]);
              std::memcpy(to + 2 * i, &b, 2);
            }
            continue;
          }
          quantize_int4_row(row.data(), cols, {config_.int4.group_size, config_.int4.is_symmetric}, codes.data(),
                            scales.data(), offsets.data());
          const void* part = t.role == TensorRole::kWeight ? static_cast<const void*>(codes.data())
                             : t.role == TensorRole::kInt4Scales ? static_cast<const void*>(scales.data())
                                                                 : static_cast<const void*>(offsets.data());
          std::memcpy(to, part, row_bytes);
        }
      });
    }
  }

 private:
  const io::Checkpoint& in_;
  const io::ModelConfig& config_;
  ThreadPool pool_;
};

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw LoadError(fmt::format("{}: cannot write", path.string()));
}

io::ModelConfig output_config(const io::ModelConfig& in, const QuantizeOptions& o, const std::filesystem::path& in_dir) {
  if (in.quantization == io::WeightQuantization::kInt4) {
    throw InvalidRequest(fmt::format("quantize: {} is already a 4-bit (quatre_int4) checkpoint", in_dir.string()));
  }
  io::ModelConfig out = in;
  out.quantization = io::WeightQuantization::kInt4;
  out.int4 = o.int4;
  // An FP8 input's other linears stay FP8 unless asked otherwise (the same values in half the bytes of BF16).
  out.int4.others_fp8 = in.quantization == io::WeightQuantization::kFp8PerTensor && o.keep_fp8 &&
                        o.int4.modules == io::Int4Modules::kExperts;
  out.static_activation_scales = out.int4.others_fp8 ? in.static_activation_scales : true;
  try {
    out.validate("quantize");
  } catch (const LoadError& e) {
    throw InvalidRequest(fmt::format("{} (--group-size {}, --what {})", e.what(), o.int4.group_size,
                                     io::int4_modules_name(o.int4.modules)));
  }
  return out;
}

}  // namespace

QuantizeSummary quantize_checkpoint(const std::filesystem::path& in_dir, const std::filesystem::path& out_dir,
                                    const QuantizeOptions& o) {
  const io::Checkpoint in = io::Checkpoint::open(in_dir, o.input_format);
  const io::ModelConfig config = output_config(in.config(), o, in_dir);
  if (std::filesystem::exists(out_dir) && !std::filesystem::is_empty(out_dir)) {
    throw InvalidRequest(fmt::format("quantize: output directory {} is not empty", out_dir.string()));
  }
  std::filesystem::create_directories(out_dir);

  io::LayoutOptions layout_options{.format = config.format, .fp8 = config.int4.others_fp8,
                                   .static_activation_scales = config.int4.others_fp8 && config.static_activation_scales};
  if (in.hf_naming()) layout_options.hf_naming = *in.hf_naming();
  TensorWriter writer(in, config);
  std::vector<CheckpointTensor> layout = io::checkpoint_layout(config, layout_options);
  std::erase_if(layout, [&](const CheckpointTensor& t) {  // scales only for the weights the input stores in FP8
    return (t.role == TensorRole::kWeightScale || t.role == TensorRole::kActivationScale) && !writer.keeps_fp8(t);
  });

  QuantizeSummary summary;
  for (const auto& file : in.files()) summary.bytes_in += std::filesystem::file_size(file->path());
  std::vector<std::vector<size_t>> shards(1);  // tensors in table order; a new shard when the next would pass the limit
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < layout.size(); ++i) {
    if (!shards.back().empty() && shard_bytes + writer.bytes(layout[i]) > o.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += writer.bytes(layout[i]);
    if (layout[i].role == TensorRole::kWeight && writer.is_int4(layout[i])) {
      summary.n_int4_weights += static_cast<int64_t>(layout[i].pieces.size());
    }
  }

  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"quatre.quantized_from", in_dir.filename().string()}};
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = io::shard_file_name(config.format, static_cast<int>(s), static_cast<int>(shards.size()));
    std::vector<io::TensorSpec> specs;
    for (size_t i : shards[s]) {
      specs.push_back({layout[i].name, writer.dtype(layout[i]), layout[i].shape});
      weight_map[layout[i].name] = file;
      summary.bytes_out += writer.bytes(layout[i]);
    }
    io::write_safetensors(out_dir / file, specs, [&](size_t k, std::span<std::byte> out) {
      const CheckpointTensor& t = layout[shards[s][k]];
      writer.fill(t, out);
      ++summary.n_tensors;
      if (o.progress) {
        o.progress(fmt::format("[{}/{}] {} [{}] {}{}", summary.n_tensors, layout.size(), t.name, fmt::join(t.shape, ", "),
                               dtype_name(writer.dtype(t)), t.role == TensorRole::kWeight && writer.is_int4(t) ? " (4-bit codes)" : ""));
      }
    }, metadata);
  }
  if (shards.size() > 1) {
    const nlohmann::ordered_json index = {{"metadata", {{"total_size", summary.bytes_out}}}, {"weight_map", weight_map}};
    write_text(out_dir / io::index_file_name(config.format), index.dump(2) + "\n");
  }
  if (config.format == io::CheckpointFormat::kHuggingFace) {
    write_text(out_dir / "config.json", io::to_hf_config(config).dump(2) + "\n");
  } else {
    write_text(out_dir / "params.json", io::to_params_json(config).dump(2) + "\n");
  }
  for (const char* name : {"tekken.json", "generation_config.json"}) {
    if (std::filesystem::exists(in_dir / name)) std::filesystem::copy_file(in_dir / name, out_dir / name);
  }
  return summary;
}

}  // namespace quatre::quant
