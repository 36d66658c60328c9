// quatre bench --vision (cli/bench_vision.h). Wiring only: the tower is vision/vision_model.h on the CUDA backend.
#include "cli/bench_vision.h"

#include <algorithm>
#include <chrono>
#include <new>
#include <random>

#include <fmt/format.h>

#include "cli/random_weights.h"
#include "core/error.h"
#include "io/model_config.h"
#include "vision/vision_model.h"
#ifdef QUATRE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_info.h"
#include "cli/bench_profile.h"
#endif

namespace quatre::cli {
namespace {

// Multiply-adds x2 of one run over N patches of one image: the patch conv, per layer q/k/v/o and the SiLU FFN plus
// the attention's two N x N products per head, then the projector on N/M² tokens.
double tower_flops(const io::VisionConfig& v, int64_t text_hidden, double N) {
  const double Hv = static_cast<double>(v.hidden_size), Iv = static_cast<double>(v.intermediate_size);
  const double P = static_cast<double>(v.patch_size), MM = static_cast<double>(v.spatial_merge_size * v.spatial_merge_size);
  const double D = static_cast<double>(text_hidden), L = static_cast<double>(v.n_layers);
  const double layer = 2 * N * (4 * Hv * Hv + 3 * Hv * Iv) + 4 * N * N * Hv;
  return 2 * N * 3 * P * P * Hv + L * layer + 2 * (N / MM) * (MM * Hv * Hv + Hv * D + D * D);
}

#ifdef QUATRE_HAVE_CUDA
// The GPU time of one more run, op by op (the backend's profiler), longest first.
void print_profile(const vision::VisionModel& model, cuda::CudaBackend& cb, std::span<const vision::PixelValues> images) {
  std::vector<float> features;
  std::vector<cuda::ProfileRow> rows = profile_run(cb, [&] { model.run(images, nullptr, &features); });
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.ms > b.ms; });
  double sum = 0;
  for (const cuda::ProfileRow& r : rows) sum += r.ms;
  for (const cuda::ProfileRow& r : rows) {
    fmt::print("    {:<40} {:>6} {:>9.3f} ms {:>5.1f}%\n", r.label, r.calls, r.ms, r.ms / sum * 100);
  }
  fmt::print("    sum of ops {:.3f} ms\n", sum);
}
#endif

}  // namespace

int run_vision_bench(const VisionBenchArgs& o) {
  if (o.reps < 1) throw InvalidRequest(fmt::format("bench --vision: --steps {} (expected at least 1)", o.reps));
  const io::ModelConfig cfg = io::preset(o.preset);
  if (!cfg.vision) throw InvalidRequest(fmt::format("bench --vision: preset {} has no vision tower", o.preset));
  const io::VisionConfig& v = *cfg.vision;
  const int64_t cell = v.patch_size * v.spatial_merge_size;
  for (int64_t side : o.sides) {
    if (side <= 0 || side % cell != 0 || side > v.image_size) {
      throw InvalidRequest(fmt::format("bench --vision: image side {} px (expected a multiple of {} px, at most {})", side,
                                       cell, v.image_size));
    }
  }
  std::unique_ptr<Backend> be = make_backend(Device::kCuda);
#ifdef QUATRE_HAVE_CUDA
  fmt::print("device: {}\n", cuda::describe_device(0));
  auto* cb = dynamic_cast<cuda::CudaBackend*>(be.get());  // the profiler's; the model owns the backend below
#endif
  const auto t0 = std::chrono::steady_clock::now();
  vision::VisionWeights weights = random_vision_weights(v, cfg.text.hidden_size, *be, o.seed);
  fmt::print("vision tower of {}: {} layers, hidden {}, {} heads x {}, ffn {}, BF16 weights drawn in {:.1f} s; "
             "attention operands {}; peak {:.0f} TFLOP/s assumed\n",
             o.preset, v.n_layers, v.hidden_size, v.n_heads, v.head_dim, v.intermediate_size,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
             o.bf16_attention_operands ? "bf16" : "fp32", o.peak_tflops);
  const vision::VisionModel model(v, std::move(weights), std::move(be),
                                  {.bf16_attention_operands = o.bf16_attention_operands});
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> pixel(0.0f, 1.0f);
  fmt::print("\n{:>9} {:>9} {:>8} {:>11} {:>12} {:>10} {:>10} {:>8}\n", "image px", "patches", "tokens", "ms",
             "patches/s", "TFLOP", "roof ms", "of roof");
  for (int64_t side : o.sides) {
    const int64_t N = (side / v.patch_size) * (side / v.patch_size);
    std::vector<vision::PixelValues> images(1, vision::PixelValues{.height = side, .width = side, .chw = {}});
    images[0].chw.resize(static_cast<size_t>(3 * side * side));
    for (float& x : images[0].chw) x = pixel(rng);
    try {
      std::vector<float> features;
      std::vector<double> times;
      for (int rep = 0; rep <= o.reps; ++rep) {  // the first grows the tower's scratch (VisionModel keeps it)
        const auto s0 = std::chrono::steady_clock::now();
        model.run(images, nullptr, &features);  // ends with the features' copy to the host
        if (rep > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
      }
      std::sort(times.begin(), times.end());
      const double ms = times[times.size() / 2] * 1e3;
      const double flops = tower_flops(v, cfg.text.hidden_size, static_cast<double>(N));
      const double roof = flops / (o.peak_tflops * 1e12) * 1e3;
      fmt::print("{:>9} {:>9} {:>8} {:>11.1f} {:>12.0f} {:>10.2f} {:>10.2f} {:>7.1f}%\n", fmt::format("{}x{}", side, side),
                 N, N / (v.spatial_merge_size * v.spatial_merge_size), ms, static_cast<double>(N) / ms * 1e3,
                 flops / 1e12, roof, roof / ms * 100);
#ifdef QUATRE_HAVE_CUDA
      if (o.profile && cb != nullptr) print_profile(model, *cb, images);
#endif
    } catch (const std::bad_alloc&) {
      fmt::print("{:>9} out of device memory\n", fmt::format("{}x{}", side, side));
    }
  }
  return 0;
}

}  // namespace quatre::cli
