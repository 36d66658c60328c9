// `quatre bench`: decode tokens/s at several batch sizes over a synthetic context, prefill tokens/s at several
// prompt lengths, and memory, each next to its roofline (bytes moved / copy bandwidth measured on the spot;
// flops / peak) and the ratio. Weights: --random-weights (drawn on the GPU, any preset, --layers to shrink; --dtype
// fp8, bf16 or int4 experts) or a checkpoint; the roofline counts the linears' stored bytes (4-bit: codes + scales).
// Decode steps are timed end to end (host work and one sync per step included, no sampling), as CUDA graphs after a
// batch size's first steps (--no-graphs: op by op), with the host's share (the forward call before the sync) beside.
// --profile adds, per decode batch size and prompt length, one more step (or prefill) timed op by op on the GPU
// (CUDA events around each backend op, summed per kind and weight shape) with the bytes each kind must move and the
// bandwidth it reached.
// Wiring only: the work is in model/ and the backends.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <span>

#include <fmt/format.h>

#include "cli/bench_vision.h"
#include "cli/commands.h"
#include "cli/random_weights.h"
#include "core/backend.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "model/kv_cache.h"
#include "model/step_inputs.h"
#include "model/text_model.h"
#ifdef QUATRE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/kernels.h"
#include "cli/bench_profile.h"
#endif

namespace quatre::cli {
namespace {

struct BenchArgs {
  std::string preset = "mistral-small-4";
  std::string model_dir;
  bool random_weights = false;
  std::string dtype = "fp8";
  std::string fp8_activations = "auto";  // model::Fp8Activations (cli/model_loader.h)
  std::string attention_operands = "auto";  // model::AttentionOperands (model/text_model.h)
  int64_t layers = 0;
  std::string device = "cuda";
  std::vector<int64_t> batches = {1, 8, 32, 128, 256};
  int64_t context = 1024;
  std::string kv_cache_dtype = "auto";  // auto: bf16 on the GPU (as `quatre serve`), f32 on the CPU
  std::vector<int64_t> prefill = {1024, 8192};
  int64_t prefill_chunk = 0;  // tokens a forward (0: the whole prompt in one), as the server's step budget splits it
  int steps = 8;
  bool no_graphs = false;
  uint64_t seed = 1;
  // H100/H200 SXM dense BF16 on the tensor cores: the card's ceiling for the prefill and large-batch matmuls and MLA,
  // which run there (with fp32 activations as three BF16 terms: a third of it at best). Was 67, the fp32 CUDA-core
  // peak, under which the tensor-core prefill read as ~88% of its roofline.
  double peak_tflops = 989.0;
  bool profile = false;
  std::vector<int64_t> vision;  // image sides (px): time the vision tower instead (bench_vision.h)
};

constexpr int64_t kBlockSize = 16;

// Every element of a cache pool ~0.01, filled as F32 words: 0.01f itself in F32; in BF16 and FP8 the word 0x3C243C24,
// whose halves are BF16 0.0100 and whose bytes are E4M3 1.5 and 0.07 (no NaN or huge value a score could overflow on).
void fill_latents(Backend& be, const Tensor& pool, DType dtype) {
  const float word = dtype == DType::F32 ? 0.01f : std::bit_cast<float>(0x3C243C24u);
  const int64_t words = (pool.numel() * static_cast<int64_t>(dtype_size(dtype)) + 3) / 4;
  be.fill(Tensor(pool.data(), DType::F32, {words}, pool.device()), word);
}

// Bytes and flops of the model's parts, from the config (weights as stored: bytes per parameter of the routed
// experts and of the other linears, the router and lm_head BF16).
struct Costs {
  double attn_bytes = 0, expert_bytes = 0, shared_bytes = 0, router_bytes = 0, dense_bytes = 0, head_bytes = 0;
  double attn_params = 0, expert_params = 0, shared_params = 0, router_params = 0, dense_params = 0, head_params = 0;
  int64_t n_moe = 0, n_dense = 0;
};

Costs costs(const io::TextConfig& t, const LinearBytes& linear) {
  Costs c;
  const double D = static_cast<double>(t.hidden_size), H = static_cast<double>(t.n_heads);
  const double R = static_cast<double>(t.kv_lora_rank), Dr = static_cast<double>(t.qk_rope_head_dim);
  const double Dn = static_cast<double>(t.qk_nope_head_dim), Dv = static_cast<double>(t.v_head_dim);
  const double Q = static_cast<double>(t.q_lora_rank), F = static_cast<double>(t.moe_intermediate_size);
  c.attn_params = Q * D + H * (Dn + Dr) * Q + (R + Dr) * D + H * (Dn + Dv) * R + D * H * Dv;
  c.attn_bytes = c.attn_params * linear.other;
  c.expert_params = 3 * F * D;
  c.expert_bytes = c.expert_params * linear.experts;
  c.shared_params = 3 * F * static_cast<double>(t.n_shared_experts) * D;
  c.shared_bytes = c.shared_params * linear.other;
  c.router_params = static_cast<double>(t.n_routed_experts) * D;
  c.router_bytes = c.router_params * 2;
  c.dense_params = 3 * static_cast<double>(t.intermediate_size) * D;
  c.dense_bytes = c.dense_params * linear.other;
  c.head_params = static_cast<double>(t.vocab_size) * D;
  c.head_bytes = c.head_params * 2;
  for (int64_t l = 0; l < t.n_layers; ++l) (t.is_moe_layer(l) ? c.n_moe : c.n_dense)++;
  return c;
}

struct Roofline {
  double bytes = 0, flops = 0;
};

// One step of `tokens` tokens in total over sequences attending to `ctx` entries each on average; `distinct`:
// the experts the step touches per MoE layer.
Roofline step_roofline(const io::TextConfig& t, const Costs& c, double tokens, double ctx, double distinct,
                       double n_logit_rows, double kv_bytes_read) {
  Roofline r;
  const double L = static_cast<double>(t.n_layers), K = static_cast<double>(t.n_experts_per_tok);
  r.bytes = L * c.attn_bytes + static_cast<double>(c.n_moe) * (distinct * c.expert_bytes + c.shared_bytes + c.router_bytes) +
            static_cast<double>(c.n_dense) * c.dense_bytes + c.head_bytes + kv_bytes_read;
  const double per_token = L * c.attn_params + static_cast<double>(c.n_moe) * (K * c.expert_params + c.shared_params + c.router_params) +
                           static_cast<double>(c.n_dense) * c.dense_params;
  const double H = static_cast<double>(t.n_heads), R = static_cast<double>(t.kv_lora_rank);
  const double attn_per_entry = H * 2 * (2 * R + static_cast<double>(t.qk_rope_head_dim));  // scores + context
  r.flops = 2 * per_token * tokens + 2 * c.head_params * n_logit_rows + L * tokens * ctx * attn_per_entry;
  return r;
}

double expected_distinct(double E, double K, double tokens) { return E * (1 - std::pow(1 - K / E, tokens)); }

class Timer {
 public:
  explicit Timer(Backend& be) : be_(be) {}
  template <typename F>
  double seconds(F&& f) {
    sync();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    sync();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void sync() {  // until the device is done
#ifdef QUATRE_HAVE_CUDA
    if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be_)) c->synchronize();
#endif
  }

 private:
  Backend& be_;
};

std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / double(1ull << 30)); }

#ifdef QUATRE_HAVE_CUDA
// What each matmul weight shape of the config is ("matmul NxK" -> name); the routed experts' rows get their bytes
// from the expected number of distinct experts, which the backend cannot know without a sync.
std::string matmul_name(const io::TextConfig& t, const std::string& label) {
  const int64_t D = t.hidden_size, H = t.n_heads, F = t.moe_intermediate_size * t.n_shared_experts;
  const std::vector<std::pair<std::string, std::string>> names = {
      {fmt::format("matmul {}x{} ", t.q_lora_rank, D), "q_a"},
      {fmt::format("matmul {}x{} ", H * (t.qk_nope_head_dim + t.qk_rope_head_dim), t.q_lora_rank), "q_b"},
      {fmt::format("matmul {}x{} ", t.kv_lora_rank + t.qk_rope_head_dim, D), "kv_a"},
      {fmt::format("matmul {}x{} ", D, H * t.v_head_dim), "o_proj"},
      {fmt::format("matmul {}x{} ", t.n_routed_experts, D), "router"},
      {fmt::format("matmul {}x{} ", F, D), "shared gate/up"},
      {fmt::format("matmul {}x{} ", D, F), "shared down"},
      {fmt::format("matmul {}x{} ", t.intermediate_size, D), "dense gate/up"},
      {fmt::format("matmul {}x{} ", D, t.intermediate_size), "dense down"},
      {fmt::format("matmul {}x{} ", t.vocab_size, D), "lm_head"}};
  for (const auto& [prefix, name] : names) {
    if (label.rfind(prefix, 0) == 0) return name;
  }
  return "";
}

// One decode step's GPU time per op kind: ms, share, bytes and GB/s; then the sum against the step's wall time
// (the rest: launch gaps and host work the GPU waited for).
void print_profile(const io::TextConfig& t, const Costs& c, std::vector<cuda::ProfileRow> rows, double distinct,
                   double step_ms) {
  const double n_moe = static_cast<double>(c.n_moe);
  double sum = 0;
  for (cuda::ProfileRow& r : rows) {
    sum += r.ms;
    if (r.label == "moe gate+up+silu (routed)") r.bytes = n_moe * distinct * c.expert_bytes * 2 / 3;
    if (r.label == "moe down (routed)") r.bytes = n_moe * distinct * c.expert_bytes / 3;
    const std::string name = matmul_name(t, r.label);
    if (!name.empty()) r.label = fmt::format("{} ({})", name, r.label);
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.ms > b.ms; });
  fmt::print("  {:<44} {:>6} {:>9} {:>6} {:>10} {:>8}\n", "op", "calls", "ms", "share", "MB", "GB/s");
  for (const cuda::ProfileRow& r : rows) {
    fmt::print("  {:<44} {:>6} {:>9.3f} {:>5.1f}% {:>10.1f} {:>8}\n", r.label, r.calls, r.ms, r.ms / sum * 100,
               r.bytes / 1e6, r.bytes > 0 && r.ms > 0 ? fmt::format("{:.0f}", r.bytes / (r.ms * 1e-3) / 1e9) : "-");
  }
  fmt::print("  sum of ops {:.3f} ms; step wall time {:.3f} ms (unprofiled median): {:.3f} ms of gaps and host work\n",
             sum, step_ms, step_ms - sum);
}
#endif

int run_bench(const BenchArgs& o) {
  if (!o.vision.empty()) {
    if (!o.random_weights || o.device != "cuda") throw InvalidRequest("bench --vision: needs --random-weights on --device cuda");
    const bool bf16 = model::parse_attention_operands(o.attention_operands, Device::kCuda) == model::AttentionOperands::kBf16;
    return run_vision_bench({.preset = o.preset, .sides = o.vision, .reps = o.steps, .seed = o.seed,
                             .peak_tflops = o.peak_tflops, .bf16_attention_operands = bf16, .profile = o.profile});
  }
  const Device device = o.device == "cuda" ? Device::kCuda : Device::kCpu;
  std::unique_ptr<Backend> be = make_backend(device);
  std::optional<io::Checkpoint> checkpoint;
  io::TextConfig text;
  if (o.random_weights) {
    text = random_weights_config(o.preset, o.layers);
  } else {
    if (o.model_dir.empty()) throw InvalidRequest("bench: give --model DIR or --random-weights");
    checkpoint.emplace(io::Checkpoint::open(o.model_dir));
    text = checkpoint->config().text;
  }
  const RandomDType dtype = parse_random_dtype(o.dtype, "bench");
  // Random FP8 (or int4 beside FP8) linears are drawn as the release is made, with static activation scales: auto
  // gives them W8A8; BF16 ones have none.
  const model::Fp8Activations fp8 = model::parse_fp8_activations(
      o.fp8_activations, o.random_weights ? dtype != RandomDType::kBf16
                                          : model::has_static_activation_scales(checkpoint->config()));
  const model::AttentionOperands operands = model::parse_attention_operands(o.attention_operands, device);
  const auto t0 = std::chrono::steady_clock::now();
  const model::TextWeights weights =
      o.random_weights ? random_text_weights(text, *be, dtype, o.seed, fp8)
                       : model::TextWeights::load(*checkpoint, *be, {}, fp8);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const model::TextModel model(text, weights, *be,
                               {.attention_operands = operands});
  const LinearBytes linear = o.random_weights ? linear_bytes(dtype) : linear_bytes(checkpoint->config());
  const Costs c = costs(text, linear);
  double bandwidth = 0;
#ifdef QUATRE_HAVE_CUDA
  if (device == Device::kCuda) {
    fmt::print("device: {}\n", cuda::describe_device(0));
    bandwidth = cuda::measure_copy_bandwidth(size_t{2} << 30);
    const cuda::DeviceMemory m = cuda::device_memory();
    fmt::print("weights: {} on the device, device memory used {} of {}\n",
               gib(static_cast<double>(dynamic_cast<cuda::CudaBackend&>(*be).weight_bytes())),
               gib(static_cast<double>(m.total - m.free)), gib(static_cast<double>(m.total)));
    if (linear.experts < 1.0) {  // 4-bit experts: the numerics of their activations (QUATRE_CUDA_INT4_ACT)
      fmt::print("4-bit experts' activations: {}{}\n", cuda::int4_q8_activations()    ? "int8 in blocks of 128 (q8)"
                                                       : cuda::int4_bf16_activations() ? "bf16"
                                                                                       : "fp32",
                 cuda::int4_q8_activations() && cuda::q8_wide_groups() ? "; a prompt's experts in groups of 64 rows"
                                                                       : "");
    }
  }
#endif
  fmt::print("weights {} in {:.1f} s\n", o.random_weights ? "drawn" : "loaded", load_s);
  fmt::print("model: {} layers, D={}, E={} top-{}, linear weights of {:.3g} bytes a parameter (routed experts) and "
             "{:.3g} (the others), FP8 linears {}; copy bandwidth {:.0f} GB/s (read+write, measured); peak {:.0f} "
             "TFLOP/s assumed\n",
             text.n_layers, text.hidden_size, text.n_routed_experts, text.n_experts_per_tok, linear.experts, linear.other,
             fp8 == model::Fp8Activations::kStatic ? "W8A8 (static activation scales)" : "W8A16", bandwidth / 1e9,
             o.peak_tflops);
  const DType kv_dtype = o.kv_cache_dtype == "auto" ? (device == Device::kCuda ? DType::BF16 : DType::F32)
                                                     : model::parse_kv_dtype(o.kv_cache_dtype);
  const double width_bytes = static_cast<double>((text.kv_lora_rank + text.qk_rope_head_dim) * dtype_size(kv_dtype));
  fmt::print("kv cache: {}; attention operands {}\n", model::kv_dtype_name(kv_dtype),
             operands == model::AttentionOperands::kBf16 ? "bf16" : "fp32");
  Timer timer(*be);
  std::mt19937_64 rng(o.seed);
  auto token = [&] { return static_cast<int32_t>(rng() % static_cast<uint64_t>(text.vocab_size)); };

#ifdef QUATRE_HAVE_CUDA
  if (auto* cb = dynamic_cast<cuda::CudaBackend*>(be.get())) cb->set_step_graphs(!o.no_graphs);
#endif
  fmt::print("\ndecode steps {}\n", o.no_graphs ? "launched op by op (--no-graphs)" : "as CUDA graphs after their first run");
  fmt::print("{:>9} {:>8} {:>11} {:>10} {:>12} {:>12} {:>8} {:>9}\n", "decode B", "context", "ms/step", "tok/s",
             "roof ms", "bound", "of roof", "host ms");
  for (int64_t B : o.batches) {
    try {
      const int64_t per_seq = (o.context + o.steps + 2 + kBlockSize - 1) / kBlockSize;
      model::KvCache kv(text, *be, {.n_blocks = B * per_seq, .block_size = kBlockSize, .poison = false, .dtype = kv_dtype});
      for (int64_t l = 0; l < text.n_layers; ++l) {  // a context of equal latents, ~0.01 in every dtype
        const Tensor pool = kv.layer(l);
        fill_latents(*be, pool, kv_dtype);
      }
      std::vector<std::vector<int32_t>> tables;
      for (int64_t s = 0; s < B; ++s) tables.push_back(kv.allocate(per_seq));
      Arena arena(be->memory(), {.chunk_bytes = size_t{64} << 20});
      std::vector<double> times, host_times;  // host: the forward call alone, before the step's sync
      std::vector<int32_t> ids(static_cast<size_t>(B));
      for (int step = 0; step < o.steps + 2; ++step) {
        model::StepBuilder builder(kBlockSize);
        for (int64_t s = 0; s < B; ++s) {
          ids[static_cast<size_t>(s)] = token();
          builder.add({.block_table = tables[static_cast<size_t>(s)], .n_cached = o.context + step,
                       .ids = std::span<const int32_t>(&ids[static_cast<size_t>(s)], 1)});
        }
        arena.reset();
        double host = 0;
        const double t = timer.seconds([&] {
          const auto h0 = std::chrono::steady_clock::now();
          model.forward(builder.inputs(), kv, arena);
          host = std::chrono::duration<double>(std::chrono::steady_clock::now() - h0).count();
        });
        if (step >= 2) times.push_back(t), host_times.push_back(host);  // two warm-up steps: arena, tables, graph
      }
      std::sort(times.begin(), times.end());
      std::sort(host_times.begin(), host_times.end());
      const double ms = times[times.size() / 2] * 1e3;
      const double distinct = expected_distinct(static_cast<double>(text.n_routed_experts),
                                                static_cast<double>(text.n_experts_per_tok), static_cast<double>(B));
      const double ctx = static_cast<double>(o.context);
      const Roofline r = step_roofline(text, c, static_cast<double>(B), ctx, distinct, static_cast<double>(B),
                                       static_cast<double>(B) * ctx * width_bytes * static_cast<double>(text.n_layers));
      const double t_mem = bandwidth > 0 ? r.bytes / bandwidth * 1e3 : 0, t_flop = r.flops / (o.peak_tflops * 1e12) * 1e3;
      const double roof = std::max(t_mem, t_flop);
      fmt::print("{:>9} {:>8} {:>11.2f} {:>10.1f} {:>12.3f} {:>12} {:>7.1f}% {:>9.3f}\n", B, o.context, ms,
                 static_cast<double>(B) / ms * 1e3, roof, t_mem >= t_flop ? fmt::format("mem {}", gib(r.bytes)) : "flops",
                 roof / ms * 100, host_times[host_times.size() / 2] * 1e3);
#ifdef QUATRE_HAVE_CUDA
      if (auto* cb = dynamic_cast<cuda::CudaBackend*>(be.get()); cb != nullptr && o.profile) {
        model::StepBuilder builder(kBlockSize);
        for (int64_t s = 0; s < B; ++s) {
          builder.add({.block_table = tables[static_cast<size_t>(s)], .n_cached = o.context + o.steps + 1,
                       .ids = std::span<const int32_t>(&ids[static_cast<size_t>(s)], 1)});
        }
        arena.reset();
        print_profile(text, c, profile_run(*cb, [&] { model.forward(builder.inputs(), kv, arena); }), distinct, ms);
      }
#endif
    } catch (const std::bad_alloc&) {
      fmt::print("{:>9} {:>8} out of device memory\n", B, o.context);
    }
  }

  fmt::print("\n{:>9} {:>11} {:>10} {:>12} {:>12} {:>8}{}\n", "prefill T", "ms", "tok/s", "roof ms", "bound", "of roof",
             o.prefill_chunk > 0 ? fmt::format("   (chunks of {} tokens)", o.prefill_chunk) : std::string());
  for (int64_t T : o.prefill) {
    try {
      const int64_t blocks = (T + kBlockSize - 1) / kBlockSize;
      model::KvCache kv(text, *be, {.n_blocks = blocks, .block_size = kBlockSize, .poison = false, .dtype = kv_dtype});
      const std::vector<int32_t> table = kv.allocate(blocks);
      std::vector<int32_t> ids(static_cast<size_t>(T));
      for (int32_t& id : ids) id = token();
      const int64_t chunk = o.prefill_chunk > 0 ? std::min(o.prefill_chunk, T) : T;
      Arena arena(be->memory(), {.chunk_bytes = size_t{256} << 20});
      // The prompt in forwards of `chunk` tokens, each after the cache the ones before wrote (an engine step each,
      // waited for as the engine waits to sample), logits for the last token only.
      const auto prefill = [&] {
        for (int64_t done = 0; done < T; done += chunk) {
          const int64_t n = std::min(chunk, T - done);
          model::StepBuilder builder(kBlockSize);
          builder.add({.block_table = table, .n_cached = done, .ids = std::span(ids).subspan(static_cast<size_t>(done), static_cast<size_t>(n))},
                      done + n == T ? model::LogitRows::kLast : model::LogitRows::kNone);
          arena.reset();
          model.forward(builder.inputs(), kv, arena);
          if (done + n < T) timer.sync();
        }
      };
      double s = 0;
      for (int rep = 0; rep < 2; ++rep) s = timer.seconds(prefill);  // the first run sizes the arena
      const double Td = static_cast<double>(T);
      const double distinct = expected_distinct(static_cast<double>(text.n_routed_experts),
                                                static_cast<double>(text.n_experts_per_tok), Td);
      const Roofline r = step_roofline(text, c, Td, Td / 2, distinct, 1, Td * width_bytes * static_cast<double>(text.n_layers) * 2);
      const double t_mem = bandwidth > 0 ? r.bytes / bandwidth * 1e3 : 0, t_flop = r.flops / (o.peak_tflops * 1e12) * 1e3;
      const double roof = std::max(t_mem, t_flop);
      fmt::print("{:>9} {:>11.1f} {:>10.1f} {:>12.2f} {:>12} {:>7.1f}%\n", T, s * 1e3, Td / s, roof,
                 t_mem >= t_flop ? "mem" : fmt::format("{:.1f} TFLOP", r.flops / 1e12), roof / (s * 1e3) * 100);
#ifdef QUATRE_HAVE_CUDA
      if (auto* cb = dynamic_cast<cuda::CudaBackend*>(be.get()); cb != nullptr && o.profile) {
        print_profile(text, c, profile_run(*cb, prefill), distinct, s * 1e3);
      }
#endif
    } catch (const std::bad_alloc&) {
      fmt::print("{:>9} out of device memory\n", T);
    }
  }
  return 0;
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto o = std::make_shared<BenchArgs>();
  app.add_option("--model", o->model_dir, "Checkpoint directory (or use --random-weights)");
  app.add_flag("--random-weights", o->random_weights, "Draw the weights of --preset on the GPU: no checkpoint");
  app.add_option("--preset", o->preset, "Config for --random-weights")->capture_default_str();
  app.add_option("--dtype", o->dtype,
                 "Linear weights of --random-weights: fp8, bf16, or int4 (routed experts symmetric 4-bit in groups of "
                 "128 columns, the other linears FP8, as `quatre quantize` writes them from the FP8 release)")
      ->capture_default_str();
  app.add_option("--layers", o->layers, "Override the preset's layer count (fit a smaller GPU)");
  app.add_option("--fp8-activations", o->fp8_activations,
                 "FP8 linears: none (W8A16), static (W8A8 with the checkpoint's activation scales; --random-weights "
                 "draws 8/448) or auto (static where the checkpoint has them, and for --random-weights)")
      ->check(CLI::IsMember({"auto", "none", "static"}))
      ->capture_default_str();
  app.add_option("--attention-operands", o->attention_operands,
                 "The attention's q and softmax weights: fp32 (exact), bf16 (rounded: a third of the tensor-core "
                 "work, vLLM's numerics) or auto (bf16 on cuda, fp32 on cpu)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}))
      ->capture_default_str();
  app.add_option("--device", o->device, "cuda or cpu")->capture_default_str();
  app.add_option("--batch", o->batches, "Decode batch sizes")->delimiter(',')->capture_default_str();
  app.add_option("--context", o->context, "Cached entries per sequence while decoding")->capture_default_str();
  app.add_option("--prefill-chunk", o->prefill_chunk,
                 "Prefill in forwards of this many tokens, as the server's --max-num-batched-tokens splits a prompt (0: all at once)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--kv-cache-dtype", o->kv_cache_dtype, "KV cache element type: auto (bf16 on a GPU, as quatre serve; f32 on the CPU), f32, bf16 or fp8")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "fp8"}))
      ->capture_default_str();
  app.add_option("--prefill", o->prefill, "Prompt lengths to prefill (empty: none)")->delimiter(',')->capture_default_str();
  app.add_option("--steps", o->steps, "Timed decode steps per batch size (median reported)")->capture_default_str();
  app.add_option("--seed", o->seed, "Seed of weights and tokens")->capture_default_str();
  app.add_option("--peak-tflops", o->peak_tflops, "Arithmetic ceiling of the roofline (default: an H100/H200 SXM's dense BF16 tensor-core peak)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--no-graphs", o->no_graphs, "Launch decode steps op by op instead of as CUDA graphs (A/B)");
  app.add_option("--vision", o->vision,
                 "Time the vision tower (random BF16 weights of --preset) on one square image per side in px, instead "
                 "of the text model (--steps runs each; --attention-operands and --profile apply)")
      ->delimiter(',');
  app.add_flag("--profile", o->profile,
               "Per decode batch size and prompt length, one more step (or prefill) timed op by op on the GPU (CUDA)");
  return [o] { return run_bench(*o); };
}

}  // namespace quatre::cli
