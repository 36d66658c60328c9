#include "cli/kv_sizing.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "model/kv_cache.h"
#ifdef QUATRE_HAVE_CUDA
#include "backend/cuda/device_info.h"
#endif

namespace quatre::cli {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
// Left free beyond the measured step: cuBLAS workspaces, the CUDA context's own growth, fragmentation.
constexpr int64_t kGpuMarginBytes = int64_t{512} << 20;

#ifdef QUATRE_HAVE_CUDA
// Device bytes one step of `n_tokens` prompt tokens takes beyond the weights (activations, lazily made tables,
// a cache just large enough), measured around a throwaway Engine.
int64_t profile_step_bytes(const model::TextModel& model, const engine::EngineOptions& base, int64_t n_tokens) {
  const int64_t before = static_cast<int64_t>(cuda::device_memory().free);
  engine::EngineOptions o = base;
  o.n_blocks = (n_tokens + 1 + o.block_size - 1) / o.block_size;
  o.max_context = 0;
  o.enable_prefix_caching = false;
  engine::Engine probe(model, o);
  engine::GenerateRequest request;
  const int64_t vocab = model.config().vocab_size;
  for (int64_t i = 0; i < n_tokens; ++i) request.prompt.push_back(static_cast<int32_t>((i * 7919) % vocab));
  request.max_tokens = 1;
  request.ignore_eos = true;
  probe.submit(std::move(request));
  while (probe.has_work()) probe.step();
  return before - static_cast<int64_t>(cuda::device_memory().free);
}
#endif

}  // namespace

DType kv_cache_dtype(const KvSizing& sizing, Device device) {
  if (sizing.kv_cache_dtype == "auto") return device == Device::kCuda ? DType::BF16 : DType::F32;
  try {
    return model::parse_kv_dtype(sizing.kv_cache_dtype);
  } catch (const std::exception&) {
    throw InvalidRequest(fmt::format("--kv-cache-dtype: expected auto, f32, bf16 or fp8, got \"{}\"", sizing.kv_cache_dtype));
  }
}

std::string size_kv_cache(const model::TextModel& model, const KvSizing& sizing, engine::EngineOptions& options) {
  const Device device = model.backend().device();
  options.kv_dtype = kv_cache_dtype(sizing, device);
  const io::TextConfig& text = model.config();
  const int64_t block_bytes = model::kv_block_bytes(text, options.block_size, options.kv_dtype);
  if (sizing.kv_cache_mib || device != Device::kCuda) {
    const int64_t mib = sizing.kv_cache_mib.value_or(kDefaultCpuKvMib);
    options.n_blocks = engine::kv_blocks_for_bytes(text, options.block_size, mib << 20, options.kv_dtype);
    if (options.n_blocks < 1) {
      throw InvalidRequest(fmt::format("--kv-cache-mib: {} MiB holds no KV block of {} bytes", mib, block_bytes));
    }
    return fmt::format("kv cache budget: {} MiB{}", mib, sizing.kv_cache_mib ? "" : " (the CPU default)");
  }
#ifdef QUATRE_HAVE_CUDA
  const double u = sizing.gpu_memory_utilization;
  if (!std::isfinite(u) || u <= 0 || u > 1) {
    throw InvalidRequest(fmt::format("--gpu-memory-utilization: expected a fraction in (0, 1], got {}", u));
  }
  const cuda::DeviceMemory before = cuda::device_memory();
  const int64_t total = static_cast<int64_t>(before.total);
  const int64_t in_use = total - static_cast<int64_t>(before.free);  // weights, context, other processes
  const int64_t step = profile_step_bytes(model, options, options.max_tokens_per_step);
  const int64_t allowed = static_cast<int64_t>(u * static_cast<double>(total));
  const int64_t budget = allowed - in_use - step - kGpuMarginBytes;
  options.n_blocks = budget > 0 ? budget / block_bytes : 0;
  const std::string account = fmt::format(
      "gpu memory: {:.1f} GiB, {:.2f} usable: in use {:.1f} GiB (weights), one step of {} tokens {:.2f} GiB, margin "
      "{:.1f} GiB, kv {:.2f} GiB", total / kGiB, u, in_use / kGiB, options.max_tokens_per_step, step / kGiB,
      kGpuMarginBytes / kGiB, std::max<int64_t>(budget, 0) / kGiB);
  if (options.n_blocks < 1) {
    throw InvalidRequest(fmt::format("--gpu-memory-utilization {} leaves no room for the KV cache ({}); raise it, "
                                     "lower --max-num-batched-tokens or give --kv-cache-mib", u, account));
  }
  return account;
#else
  throw InvalidRequest("the CUDA backend is not in this build");
#endif
}

}  // namespace quatre::cli
