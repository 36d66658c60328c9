// Checkpoint WeightViews -> Backend Weights for the text decoder, whole or one rank's tensor/expert-parallel slice.
// Depends on core, io.
#include "model/text_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "core/error.h"

namespace quatre::model {
namespace {

using io::WeightKind;

// Rows or columns [begin, begin + count) of a stored [out, in] weight.
struct Slice {
  enum Axis : uint8_t { kWhole, kRows, kCols } axis = kWhole;
  int64_t begin = 0, count = 0;
};

class Loader {
 public:
  Loader(const io::Checkpoint& checkpoint, Backend& backend, TextWeights& out, Fp8Activations fp8)
      : checkpoint_(checkpoint), backend_(backend), out_(out), fp8_(fp8) {}

  // `a`: the static activation scale to keep (W8A8), else none.
  Weight operator()(WeightKind kind, int layer = -1, int expert = -1, Slice slice = {}) const {
    return load(kind, layer, expert, slice, activation_scale(kind, layer, expert));
  }

  // gate and up share max(a_gate, a_up), so one quantised input feeds both.
  FfnWeights ffn(WeightKind gate, WeightKind up, WeightKind down, int layer, int expert = -1) const {
    const auto [a_gate, a_up] = shared_scale(gate, up, layer, expert);
    return {load(gate, layer, expert, {}, a_gate), load(up, layer, expert, {}, a_up), (*this)(down, layer, expert)};
  }
  // Intermediate columns [begin, begin + count) of a SiLU-gated FFN: gate/up rows, down columns. The partial
  // outputs of the ranks sum to the whole FFN (silu(g)·u is elementwise in the intermediate dimension).
  FfnWeights ffn_slice(WeightKind gate, WeightKind up, WeightKind down, int layer, int64_t begin, int64_t count) const {
    const auto [a_gate, a_up] = shared_scale(gate, up, layer, -1);
    return {load(gate, layer, -1, {Slice::kRows, begin, count}, a_gate), load(up, layer, -1, {Slice::kRows, begin, count}, a_up),
            load(down, layer, -1, {Slice::kCols, begin, count}, activation_scale(down, layer, -1))};
  }

 private:
  // The activation scale the backend applies: the checkpoint's, in kStatic mode, for the FP8 linears of the layers
  // but kv_b (never the embedding, lm_head or router, BF16 in the release anyway).
  std::optional<float> activation_scale(WeightKind kind, int layer, int expert) const {
    if (fp8_ != Fp8Activations::kStatic || !takes_activation_scale(kind)) return std::nullopt;
    const io::WeightView& v = checkpoint_.weight({kind, layer, expert});
    if (v.dtype != DType::F8_E4M3) return std::nullopt;
    if (!v.activation_scale) {
      throw LoadError(fmt::format("{}: --fp8-activations static needs the checkpoint's static activation scales "
                                  "(activation_scheme \"static\"); this one has none (use --fp8-activations none)",
                                  v.source));
    }
    const float a = *v.activation_scale;
    if (!(a > 0.0f) || !std::isfinite(a)) {
      throw LoadError(fmt::format("{}: activation scale {} (expected a positive finite number)", v.source, a));
    }
    return a;
  }
  // gate's and up's when only one is FP8.
  std::pair<std::optional<float>, std::optional<float>> shared_scale(WeightKind gate, WeightKind up, int layer,
                                                                   int expert) const {
    const std::optional<float> g = activation_scale(gate, layer, expert), u = activation_scale(up, layer, expert);
    if (!g || !u) return {g, u};
    return {std::max(*g, *u), std::max(*g, *u)};
  }
  static bool takes_activation_scale(WeightKind kind) {
    switch (kind) {
      case WeightKind::kQA: case WeightKind::kQB: case WeightKind::kKvA: case WeightKind::kO:
      case WeightKind::kExpertGate: case WeightKind::kExpertUp: case WeightKind::kExpertDown:
      case WeightKind::kSharedGate: case WeightKind::kSharedUp: case WeightKind::kSharedDown:
      case WeightKind::kDenseGate: case WeightKind::kDenseUp: case WeightKind::kDenseDown: return true;
      default: return false;  // kv_b (absorbed into the attention), embeddings, norms, router, lm_head
    }
  }

  Weight load(WeightKind kind, int layer, int expert, Slice slice, std::optional<float> activation_scale) const {
    const io::WeightView& v = checkpoint_.weight({kind, layer, expert});
    if (v.is_int4()) return int4(v, slice);
    Weight stored;
    // Weights are never written: the const_cast only fits the view type shared with activations.
    stored.w = Tensor(const_cast<std::byte*>(v.bytes.data()), v.dtype, v.shape, Device::kCpu);
    CHECK(stored.w.bytes() == v.bytes.size()) << v.source << ": " << v.bytes.size() << " bytes for shape "
                                              << stored.w.shape_string();
    stored.weight_scale = v.weight_scale;  // per tensor (or per expert): a slice keeps it
    stored.activation_scale = activation_scale;
    if (slice.axis == Slice::kRows) stored.w = stored.w.rows(slice.begin, slice.count);
    if (slice.axis == Slice::kCols) stored.w = columns(stored.w, slice.begin, slice.count);
    return backend_.prepare_weight(stored);
  }

  // A 4-bit weight (core/int4.h): codes U8 [out, in/2], scales (offsets) BF16 [out, in/G]; the backend's
  // prepare_weight checks the layout it can run (CUDA: group sizes that are multiples of 32).
  Weight int4(const io::WeightView& v, Slice slice) const {
    if (slice.axis != Slice::kWhole) {
      throw LoadError(fmt::format("{}: a tensor-parallel slice of a 4-bit weight is not supported yet; quantize with "
                                  "--what experts (routed experts are split whole) or run with --tensor-parallel-size 1",
                                  v.source));
    }
    const int64_t out = v.shape[0], in = v.shape[1], n_groups = in / v.int4_group_size;
    auto view = [](std::span<const std::byte> b, DType dt, int64_t rows, int64_t cols) {
      const Tensor t(const_cast<std::byte*>(b.data()), dt, {rows, cols}, Device::kCpu);  // never written
      CHECK(t.bytes() == b.size()) << b.size() << " bytes for " << t.shape_string();
      return t;
    };
    Weight stored;
    stored.w = view(v.bytes, DType::U8, out, in / 2);
    stored.int4 = Int4Weight{.scales = view(v.int4_scales, DType::BF16, out, n_groups),
                             .offsets = v.int4_offsets.empty() ? Tensor() : view(v.int4_offsets, DType::BF16, out, n_groups),
                             .group_size = v.int4_group_size};
    return backend_.prepare_weight(stored);
  }

  // w [out, in] -> a host copy of w[:, begin:begin+count], kept in out_.slices.
  Tensor columns(const Tensor& w, int64_t begin, int64_t count) const {
    const int64_t rows = w.dim(0), in = w.dim(1);
    CHECK(w.rank() == 2 && begin >= 0 && begin + count <= in) << "columns [" << begin << ", " << begin + count
                                                              << ") of " << w.shape_string();
    const size_t elem = dtype_size(w.dtype());
    auto& bytes = *out_.slices.emplace_back(
        std::make_shared<std::vector<std::byte>>(static_cast<size_t>(rows * count) * elem));
    const auto* src = static_cast<const std::byte*>(w.data());
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(bytes.data() + static_cast<size_t>(r * count) * elem,
                  src + static_cast<size_t>(r * in + begin) * elem, static_cast<size_t>(count) * elem);
    }
    return Tensor(bytes.data(), w.dtype(), {rows, count}, Device::kCpu);
  }

  const io::Checkpoint& checkpoint_;
  Backend& backend_;
  TextWeights& out_;
  Fp8Activations fp8_;
};

// Throws LoadError unless n splits evenly over the ranks.
void check_divides(const ShardSpec& s, int64_t n, const char* key) {
  if (s.size < 1 || s.rank < 0 || s.rank >= s.size) {
    throw LoadError(fmt::format("tensor-parallel rank {} of {}: expected 0 <= rank < size", s.rank, s.size));
  }
  if (n % s.size != 0) {
    throw LoadError(fmt::format("--tensor-parallel-size {} does not divide {}={} (it must divide the number of "
                                "heads, experts, FFN widths and the vocabulary)",
                                s.size, key, n));
  }
}

void check_shardable(const io::TextConfig& t, const ShardSpec& s) {
  check_divides(s, t.n_heads, "num_attention_heads");
  check_divides(s, t.vocab_size, "vocab_size");
  if (t.n_layers > t.first_k_dense_replace) {
    check_divides(s, t.n_routed_experts, "n_routed_experts");
    check_divides(s, t.moe_intermediate_size * t.n_shared_experts, "moe_intermediate_size * n_shared_experts");
  }
  if (t.first_k_dense_replace > 0) check_divides(s, t.intermediate_size, "intermediate_size");
}

}  // namespace

Fp8Activations parse_fp8_activations(std::string_view value, bool static_scales) {
  if (value == "none") return Fp8Activations::kNone;
  if (value == "static") return Fp8Activations::kStatic;
  if (value == "auto") return static_scales ? Fp8Activations::kStatic : Fp8Activations::kNone;
  throw InvalidRequest(fmt::format("--fp8-activations: expected auto, none or static, got \"{}\"", value));
}

bool has_static_activation_scales(const io::ModelConfig& config) {
  const bool fp8_linears = config.quantization == io::WeightQuantization::kFp8PerTensor ||
                           (config.quantization == io::WeightQuantization::kInt4 && config.int4.others_fp8);
  return fp8_linears && config.static_activation_scales;
}

TextWeights TextWeights::load(const io::Checkpoint& checkpoint, Backend& backend, ShardSpec shard, Fp8Activations fp8) {
  const io::TextConfig& t = checkpoint.config().text;
  check_shardable(t, shard);
  const io::ModelConfig& config = checkpoint.config();
  if (fp8 == Fp8Activations::kStatic && config.quantization == io::WeightQuantization::kFp8PerTensor &&
      !config.static_activation_scales) {
    throw LoadError(fmt::format("{}: --fp8-activations static needs activation_scheme \"static\"; this FP8 "
                                "checkpoint's is dynamic (use --fp8-activations none)",
                                checkpoint.dir().string()));
  }
  TextWeights out;
  out.shard = shard;
  const Loader w(checkpoint, backend, out, fp8);
  // H heads: rank r holds heads [h0, h0 + Hl); q_b and kv_b are head-major, o takes them as columns.
  const int64_t h0 = shard.begin(t.n_heads), Hl = shard.count(t.n_heads);
  const int64_t qk = t.qk_nope_head_dim + t.qk_rope_head_dim, dv = t.v_head_dim;
  const Slice q_rows{Slice::kRows, h0 * qk, Hl * qk};                                  // of [H*(Dn+Dr), Q]
  const Slice kv_b_rows{Slice::kRows, h0 * (t.qk_nope_head_dim + dv), Hl * (t.qk_nope_head_dim + dv)};  // [H*(Dn+Dv), R]
  const Slice o_cols{Slice::kCols, h0 * dv, Hl * dv};                                  // of [D, H*Dv]
  const int64_t F_shared = t.moe_intermediate_size * t.n_shared_experts;
  out.experts = {.first = static_cast<int32_t>(shard.begin(t.n_routed_experts)),
                 .count = static_cast<int32_t>(shard.count(t.n_routed_experts))};

  out.embed = w(WeightKind::kEmbed);
  out.final_norm = w(WeightKind::kFinalNorm);
  const Slice vocab_rows = shard.is_sharded() ? Slice{Slice::kRows, shard.begin(t.vocab_size), shard.count(t.vocab_size)}
                                              : Slice{};
  if (t.tie_word_embeddings) {
    out.lm_head = shard.is_sharded() ? w(WeightKind::kEmbed, -1, -1, vocab_rows) : out.embed;
  } else {
    out.lm_head = w(WeightKind::kLmHead, -1, -1, vocab_rows);
  }
  for (int l = 0; l < static_cast<int>(t.n_layers); ++l) {
    LayerWeights& layer = out.layers.emplace_back();
    layer.attn_norm = w(WeightKind::kAttnNorm, l);
    layer.ffn_norm = w(WeightKind::kFfnNorm, l);
    layer.attn = {.q_a = w(WeightKind::kQA, l),
                  .q_a_norm = w(WeightKind::kQANorm, l),
                  .q_b = w(WeightKind::kQB, l, -1, shard.is_sharded() ? q_rows : Slice{}),
                  .kv_a = w(WeightKind::kKvA, l),
                  .kv_a_norm = w(WeightKind::kKvANorm, l),
                  .kv_b = w(WeightKind::kKvB, l, -1, shard.is_sharded() ? kv_b_rows : Slice{}),
                  .o = w(WeightKind::kO, l, -1, shard.is_sharded() ? o_cols : Slice{})};
    if (t.is_moe_layer(l)) {
      MoeWeights& moe = layer.moe.emplace();
      moe.router = w(WeightKind::kRouter, l);
      for (int e = out.experts.first; e < out.experts.first + out.experts.count; ++e) {
        moe.experts.push_back(w.ffn(WeightKind::kExpertGate, WeightKind::kExpertUp, WeightKind::kExpertDown, l, e));
      }
      if (t.n_shared_experts > 0) {
        moe.shared = shard.is_sharded() ? w.ffn_slice(WeightKind::kSharedGate, WeightKind::kSharedUp, WeightKind::kSharedDown,
                                                      l, shard.begin(F_shared), shard.count(F_shared))
                                        : w.ffn(WeightKind::kSharedGate, WeightKind::kSharedUp, WeightKind::kSharedDown, l);
      }
    } else {
      layer.dense = shard.is_sharded() ? w.ffn_slice(WeightKind::kDenseGate, WeightKind::kDenseUp, WeightKind::kDenseDown, l,
                                                     shard.begin(t.intermediate_size), shard.count(t.intermediate_size))
                                       : w.ffn(WeightKind::kDenseGate, WeightKind::kDenseUp, WeightKind::kDenseDown, l);
    }
  }
  return out;
}

}  // namespace quatre::model
