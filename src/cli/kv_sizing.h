// How many KV cache blocks a serving command gets: an explicit budget (--kv-cache-mib), or on a GPU the room
// left by --gpu-memory-utilization once the weights are loaded and one step of the largest batch has run (as
// vLLM sizes its cache: the step's activations are measured, not guessed). Wiring over engine/ and, in CUDA
// builds, the device's free-memory query.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "engine/engine.h"
#include "model/text_model.h"

namespace quatre::cli {

struct KvSizing {
  std::optional<int64_t> kv_cache_mib;  // explicit budget; the default on the CPU backend
  double gpu_memory_utilization = 0.9;  // fraction of the GPU's memory this process may hold (CUDA backend)
  std::string kv_cache_dtype = "auto";  // auto (bf16 on a GPU, f32 on the CPU), f32, bf16 or fp8
};
inline constexpr int64_t kDefaultCpuKvMib = 1024;

// The cache dtype `sizing` names on `device`; throws InvalidRequest naming --kv-cache-dtype.
DType kv_cache_dtype(const KvSizing& sizing, Device device);

// Fills options.n_blocks and options.kv_dtype. On a GPU without --kv-cache-mib, runs one profiling step of
// options.max_tokens_per_step prompt tokens and gives the KV cache what is left under the utilization; throws
// InvalidRequest naming --gpu-memory-utilization when nothing is left, with the figures. Returns a one-line
// account of the sizing ("gpu memory: 139.8 GiB, 0.90 usable: weights 111.8 GiB, activations 2.1 GiB, kv 11.9 GiB").
std::string size_kv_cache(const model::TextModel& model, const KvSizing& sizing, engine::EngineOptions& options);

}  // namespace quatre::cli
