// The shared host-side pieces of op_args.h. Depends on core and the CUDA runtime.
#include "backend/cuda/op_args.h"

#include <string>

#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"

namespace quatre::cuda {

// What is wrong with a 4-bit weight for this backend ("" when nothing): codes U8 [out, in/2], scales (offsets) BF16
// [out, in/G], and G a multiple of 32 (a 16-byte load of 32 codes then lies in one group).
std::string int4_problem(const Weight& w, std::string_view what) {
  const Int4Weight& q = *w.int4;
  const int64_t G = q.group_size;
  if (G <= 0 || G % kInt4GroupMultiple != 0) {
    return fmt::format("{}: 4-bit weights in groups of {} columns; the CUDA backend takes group sizes that are "
                       "multiples of {} (quantize with --group-size 32, 64 or 128), or run with --device cpu",
                       what, G, kInt4GroupMultiple);
  }
  if (w.w.dtype() != DType::U8 || w.w.rank() != 2 || (2 * w.w.dim(1)) % G != 0) {
    return fmt::format("{}: 4-bit codes {} of {}, expected U8 [out, in/2] with in a multiple of the group size {}",
                       what, w.w.shape_string(), dtype_name(w.w.dtype()), G);
  }
  const int64_t out = w.w.dim(0), n_groups = 2 * w.w.dim(1) / G;
  for (const Tensor* t : {&q.scales, &q.offsets}) {
    if (t == &q.offsets && q.is_symmetric()) continue;
    if (t->dtype() != DType::BF16 || t->rank() != 2 || t->dim(0) != out || t->dim(1) != n_groups ||
        t->device() != w.w.device()) {
      return fmt::format("{}: 4-bit {} {} of {} on {}, expected BF16 [{}, {}] on {} like the codes", what,
                         t == &q.scales ? "scales" : "offsets", t->shape_string(), dtype_name(t->dtype()),
                         device_name(t->device()), out, n_groups, device_name(w.w.device()));
    }
  }
  return "";
}

// The split-K scratch launch_matmul may use for a plain problem (matmul_workspace_floats), from the step's arena; none
// when it runs in one pass.
void give_split_workspace(MatmulProblem& p, Arena& a) {
  const int64_t n = matmul_workspace_floats(p);
  if (n > 0) p.split_ws = a.array<float>(static_cast<size_t>(n)), p.split_ws_floats = n;
}

WType wtype(DType t, std::string_view what) {
  switch (t) {
    case DType::F32: return WType::kF32;
    case DType::BF16: return WType::kBF16;
    case DType::F16: return WType::kF16;
    case DType::F8_E4M3: return WType::kF8E4M3;
    default: break;
  }
  throw InvalidRequest(fmt::format("{}: weights of dtype {} are not supported by the CUDA backend", what,
                                   dtype_name(t)));
}

// Logical columns of a weight: a 4-bit one's codes hold two a byte.
int64_t weight_cols(const Weight& w) { return w.int4 ? 2 * w.w.dim(-1) : w.w.dim(-1); }

// "BF16", "F8_E4M3", ... or "int4" (profile labels).
std::string_view weight_type_name(const Weight& w) { return w.int4 ? "int4" : dtype_name(w.w.dtype()); }

// Bytes a kernel reads for the weight: a 4-bit one's codes, scales and offsets.
size_t stored_bytes(const Weight& w) {
  if (!w.int4) return w.w.bytes();
  return w.w.bytes() + w.int4->scales.bytes() + (w.int4->is_symmetric() ? 0 : w.int4->offsets.bytes());
}

DevWeight dev(const Weight& w, std::string_view what) {
  if (w.w.device() != Device::kCuda) {
    throw InvalidRequest(fmt::format("{} weight is on {}: pass it through CudaBackend::prepare_weight first", what,
                                     device_name(w.w.device())));
  }
  if (w.activation_scale) {  // W8A8 (DevWeight)
    const float a = *w.activation_scale;
    if (w.w.dtype() != DType::F8_E4M3 || w.int4 || !(a > 0.0f) || !std::isfinite(a)) {
      throw InvalidRequest(fmt::format("{} weight: activation scale {} on a {} weight (expected a positive finite "
                                       "scale on an FP8 E4M3 one)", what, a, w.int4 ? "4-bit" : dtype_name(w.w.dtype())));
    }
    return {.w = w.w.data(), .type = WType::kF8E4M3, .scale = a * w.weight_scale, .act_scale = a};
  }
  if (!w.int4) return {w.w.data(), wtype(w.w.dtype(), what), w.weight_scale};
  if (std::string why = int4_problem(w, what); !why.empty()) throw InvalidRequest(why);
  const Int4Weight& q = *w.int4;
  return {.w = w.w.data(),
          .type = WType::kInt4,
          .scale = 1.0f,
          .int4_scales = q.scales.data_as<uint16_t>(),
          .int4_offsets = q.is_symmetric() ? nullptr : q.offsets.data_as<uint16_t>(),
          .group_size = static_cast<int32_t>(q.group_size)};
}

// One launch may carry two weights (gate and up) or a table of experts only when they share the kernel: the type,
// and for 4-bit weights the symmetry and the group size.
bool same_layout(const DevWeight& a, const DevWeight& b) {
  if (a.type != b.type) return false;
  if (a.type != WType::kInt4) return true;
  return (a.int4_offsets == nullptr) == (b.int4_offsets == nullptr) && a.group_size == b.group_size;
}

void check_f32(const Tensor& t, const char* what) {
  if (t.dtype() != DType::F32 || t.device() != Device::kCuda) {
    throw InvalidRequest(fmt::format("{} must be an F32 CUDA tensor, got {} on {}", what, dtype_name(t.dtype()),
                                     device_name(t.device())));
  }
}

// The KV cache pool: F32, BF16 or FP8 E4M3 (scale 1) on the device.
WType cache_type(const Tensor& cache, const char* what) {
  if (cache.device() != Device::kCuda ||
      (cache.dtype() != DType::F32 && cache.dtype() != DType::BF16 && cache.dtype() != DType::F8_E4M3)) {
    throw InvalidRequest(fmt::format("{} must be an F32, BF16 or F8_E4M3 CUDA tensor, got {} on {}", what,
                                     dtype_name(cache.dtype()), device_name(cache.device())));
  }
  return wtype(cache.dtype(), what);
}

int64_t weight_rows(const Weight& w) { return w.w.rank() == 1 ? 1 : w.w.numel() / w.w.dim(-1); }

void launched(cudaError_t status, const char* kernel) { cuda_check(status, kernel, __FILE__, __LINE__); }

}  // namespace quatre::cuda
