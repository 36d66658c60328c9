// CpuBackend: construction and the element-wise and row ops (embed, rms_norm, matmul, add, split, gather, RoPE,
// cache write). Attention is in mla_attention.cpp, routing and experts in moe.cpp. Depends on core only.
#include "backend/cpu/cpu_backend.h"

#include <cmath>
#include <cstring>
#include <thread>

#include "backend/cpu/kernels.h"

namespace quatre::cpu {
namespace {

int default_threads(int n_threads) {
  if (n_threads > 0) return n_threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void check_f32(const Tensor& t, const char* what) {
  CHECK(t.dtype() == DType::F32 && t.device() == Device::kCpu)
      << what << " must be an F32 host tensor, got " << dtype_name(t.dtype()) << " on " << device_name(t.device());
}

}  // namespace

CpuBackend::CpuBackend(int n_threads, Int4Activations int4_activations)
    : pool_(default_threads(n_threads)), int4_activations_(int4_activations) {}

void CpuBackend::copy_to_host(const Tensor& src, void* dst) { std::memcpy(dst, src.data(), src.bytes()); }

void CpuBackend::fill(Tensor t, float value) {
  check_f32(t, "fill target");
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value;
}

Tensor CpuBackend::embed(std::span<const int32_t> ids, const Weight& table, Arena& a) {
  const int64_t V = table.w.dim(0), D = table.w.dim(1);
  Tensor x = a.tensor(DType::F32, {static_cast<int64_t>(ids.size()), D});  // [T,D]
  for (size_t t = 0; t < ids.size(); ++t) {
    CHECK(ids[t] >= 0 && ids[t] < V) << "token id " << ids[t] << " outside the vocabulary of " << V;
    dequant_row(table, ids[t], x.data_as<float>() + t * static_cast<size_t>(D));
  }
  return x;
}

// = Mistral4RMSNorm: g ⊙ (x · rsqrt(mean(x²) + eps)), normalised in fp32, then the weight multiply.
Tensor CpuBackend::rms_norm(const Tensor& x, const Weight& g, float eps, Arena& a) {
  check_f32(x, "rms_norm input");
  const int64_t M = x.dim(0), n = x.dim(1);
  CHECK(g.w.numel() == n) << "rms_norm weight " << g.w.shape_string() << " for rows of " << n;
  Tensor y = a.tensor(DType::F32, {M, n});
  float* gamma = a.array<float>(static_cast<size_t>(n));
  dequant_row(g, 0, gamma);
  const float* xp = x.data_as<float>();
  float* yp = y.data_as<float>();
  pool_.parallel_for(M, std::max<int64_t>(1, 4096 / n), [&](int64_t begin, int64_t end, int) {
    for (int64_t m = begin; m < end; ++m) {
      const float* row = xp + m * n;
      const float mean_square = dot(row, row, n) / static_cast<float>(n);
      const float r = 1.0f / std::sqrt(mean_square + eps);
      for (int64_t i = 0; i < n; ++i) yp[m * n + i] = gamma[i] * (row[i] * r);
    }
  });
  return y;
}

void CpuBackend::matmul_into(const Tensor& x, const Weight& w, float* y, Arena& a) {
  check_f32(x, "matmul input");
  const int64_t M = x.dim(0), in = x.dim(1);
  float* scratch = a.array<float>(static_cast<size_t>(pool_.n_threads() * in));
  if (w.int4 && int4_activations_ != Int4Activations::kFp32) {  // x rounded as the CUDA kernels may take it
    float* xr = a.array<float>(static_cast<size_t>(M * in));
    std::memcpy(xr, x.data(), static_cast<size_t>(M * in) * sizeof(float));
    for (int64_t m = 0; m < M; ++m) round_int4_activations(xr + m * in, in, int4_activations_);
    matmul_f32(pool_, xr, M, in, w, y, scratch);
    return;
  }
  if (!w.activation_scale) {
    matmul_f32(pool_, x.data_as<float>(), M, in, w, y, scratch);
    return;
  }
  // W8A8 (core/backend.h): y = (x_q · float(w)ᵀ) · (a · weight_scale), x_q = fp8(x / a) as floats.
  CHECK(w.w.dtype() == DType::F8_E4M3 && !w.int4) << "an activation scale on a " << (w.int4 ? "4-bit" : dtype_name(w.w.dtype())) << " weight";
  const float act = *w.activation_scale;
  float* xq = a.array<float>(static_cast<size_t>(M * in));
  const float* xp = x.data_as<float>();
  pool_.parallel_for(M, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin * in; i < end * in; ++i) xq[i] = fp8e4m3_to_f32(f32_to_fp8e4m3(xp[i] / act));
  });
  Weight codes = w;  // the raw E4M3 values; both scales multiply the sums
  codes.weight_scale = 1.0f;
  matmul_f32(pool_, xq, M, in, codes, y, scratch);
  const float scale = act * w.weight_scale;
  for (int64_t i = 0; i < M * weight_rows(w); ++i) y[i] *= scale;
}

Tensor CpuBackend::matmul(const Tensor& x, const Weight& w, Arena& a) {
  Tensor y = a.tensor(DType::F32, {x.dim(0), weight_rows(w)});  // [M,out]
  matmul_into(x, w, y.data_as<float>(), a);
  return y;
}

void CpuBackend::add_to(Tensor x, const Tensor& y) {
  check_f32(x, "add_to target");
  check_f32(y, "add_to operand");
  CHECK(x.numel() == y.numel()) << "add_to " << x.shape_string() << " += " << y.shape_string();
  float* xp = x.data_as<float>();
  const float* yp = y.data_as<float>();
  for (int64_t i = 0; i < x.numel(); ++i) xp[i] += yp[i];
}

std::pair<Tensor, Tensor> CpuBackend::split_cols(const Tensor& x, int64_t n_left, Arena& a) {
  check_f32(x, "split_cols input");
  const int64_t M = x.dim(0), n = x.dim(1), n_right = n - n_left;
  CHECK(n_left >= 0 && n_right >= 0) << "split " << x.shape_string() << " at column " << n_left;
  Tensor left = a.tensor(DType::F32, {M, n_left}), right = a.tensor(DType::F32, {M, n_right});
  for (int64_t m = 0; m < M; ++m) {
    std::memcpy(left.data_as<float>() + m * n_left, x.data_as<float>() + m * n, static_cast<size_t>(n_left) * 4);
    std::memcpy(right.data_as<float>() + m * n_right, x.data_as<float>() + m * n + n_left,
                static_cast<size_t>(n_right) * 4);
  }
  return {left, right};
}

Tensor CpuBackend::gather_rows(const Tensor& x, std::span<const int32_t> rows, Arena& a) {
  check_f32(x, "gather_rows input");
  const int64_t M = x.dim(0), n = x.dim(1);
  Tensor y = a.tensor(DType::F32, {static_cast<int64_t>(rows.size()), n});
  for (size_t i = 0; i < rows.size(); ++i) {
    CHECK(rows[i] >= 0 && rows[i] < M) << "row " << rows[i] << " of " << x.shape_string();
    std::memcpy(y.data_as<float>() + i * static_cast<size_t>(n), x.data_as<float>() + rows[i] * n,
                static_cast<size_t>(n) * 4);
  }
  return y;
}

// = apply_rotary_pos_emb_interleave (kept interleaved: q and k alike, so q·k is unchanged) followed by
// get_llama_4_attn_scale on the whole query.
void CpuBackend::rope(Tensor q, Tensor k_rope, const RopeArgs& args) {
  const bool has_q = q.is_defined(), has_k = k_rope.is_defined();
  if (has_q) check_f32(q, "rope q");
  if (has_k) check_f32(k_rope, "rope k_rope");
  const MlaDims& d = args.dims;
  const int64_t T = has_q ? q.dim(0) : has_k ? k_rope.dim(0) : 0, Dh = d.qk_nope_head_dim + d.qk_rope_head_dim,
                half = d.qk_rope_head_dim / 2;
  if (has_q) CHECK_SHAPE(q, T, d.q_width());
  if (has_k) CHECK_SHAPE(k_rope, T, d.qk_rope_head_dim);
  CHECK(static_cast<int64_t>(args.positions.size()) == T && static_cast<int64_t>(args.inv_freq.size()) == half)
      << args.positions.size() << " positions and " << args.inv_freq.size() << " frequencies for T=" << T;
  auto rotate = [half](float* x, const float* cos, const float* sin) {
    for (int64_t i = 0; i < half; ++i) {
      const float x0 = x[2 * i], x1 = x[2 * i + 1];
      x[2 * i] = x0 * cos[i] - x1 * sin[i];
      x[2 * i + 1] = x1 * cos[i] + x0 * sin[i];
    }
  };
  constexpr int64_t kMaxHalf = 256;
  CHECK(half <= kMaxHalf) << "qk_rope_head_dim " << d.qk_rope_head_dim;
  for (int64_t t = 0; t < T; ++t) {
    const int32_t pos = args.positions[static_cast<size_t>(t)];
    float cos[kMaxHalf], sin[kMaxHalf];
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * args.inv_freq[static_cast<size_t>(i)];  // fp32, like HF
      cos[i] = std::cos(angle);
      sin[i] = std::sin(angle);
    }
    if (has_k) rotate(k_rope.data_as<float>() + t * d.qk_rope_head_dim, cos, sin);
    if (!has_q) continue;
    float* qt = q.data_as<float>() + t * d.q_width();
    for (int64_t h = 0; h < d.n_heads; ++h) rotate(qt + h * Dh + d.qk_nope_head_dim, cos, sin);
    if (args.llama4_beta != 0.0f) {
      const float ratio = static_cast<float>(pos) / static_cast<float>(args.llama4_original_max_position_embeddings);
      const float temperature = 1.0f + args.llama4_beta * std::log(1.0f + std::floor(ratio));
      for (int64_t i = 0; i < d.q_width(); ++i) qt[i] *= temperature;
    }
  }
}

// A BF16 or FP8 E4M3 cache stores each value rounded to nearest even (FP8: scale 1, saturated at +-448).
void CpuBackend::kv_write(Tensor kv_cache, const Tensor& c_kv, const Tensor& k_rope, std::span<const int64_t> slots) {
  check_f32(c_kv, "kv_write c_kv");
  check_f32(k_rope, "kv_write k_rope");
  const DType dt = kv_cache.dtype();
  CHECK(dt == DType::F32 || dt == DType::BF16 || dt == DType::F8_E4M3) << "kv cache of " << dtype_name(dt);
  const int64_t T = c_kv.dim(0), R = c_kv.dim(1), Dr = k_rope.dim(1), W = kv_cache.dim(2);
  const int64_t n_slots = kv_cache.dim(0) * kv_cache.dim(1);
  CHECK(W == R + Dr && k_rope.dim(0) == T && static_cast<int64_t>(slots.size()) == T)
      << "kv_write of " << c_kv.shape_string() << " and " << k_rope.shape_string() << " into " << kv_cache.shape_string();
  auto store = [&](int64_t slot, int64_t col, const float* src, int64_t n) {
    const size_t at = static_cast<size_t>(slot * W + col);
    if (dt == DType::F32) {
      std::memcpy(kv_cache.data_as<float>() + at, src, static_cast<size_t>(n) * 4);
    } else if (dt == DType::BF16) {
      uint16_t* dst = static_cast<uint16_t*>(kv_cache.data()) + at;
      for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
    } else {
      uint8_t* dst = static_cast<uint8_t*>(kv_cache.data()) + at;
      for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_fp8e4m3(src[i], /*saturate=*/true);
    }
  };
  for (int64_t t = 0; t < T; ++t) {
    const int64_t slot = slots[static_cast<size_t>(t)];
    CHECK(slot >= 0 && slot < n_slots) << "slot " << slot << " of " << n_slots;
    store(slot, 0, c_kv.data_as<float>() + t * R, R);
    store(slot, R, k_rope.data_as<float>() + t * Dr, Dr);
  }
}

}  // namespace quatre::cpu
