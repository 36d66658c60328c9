// Load benchmark of the serving engine, without HTTP: a closed loop keeps --concurrency requests in flight on one
// Engine until --requests have finished. Prompt lengths are log-normal (clipped to [prompt-min, prompt-max]),
// output lengths log-normal (clipped to [output-min, output-max], EOS ignored so each runs its length), and a
// --shared-fraction of requests starts with one shared system prompt (prefix caching). Prompts are random ids.
// Prints request throughput, output tokens/s, TTFT and TPOT (time per output token after the first) p50/p99,
// the prefix-cache hit rate and preemptions. Not part of CTest.
//   bench_serve --model DIR [--device cpu|cuda] [--requests N] [--concurrency C] [--kv-dtype f32|bf16|fp8]
//               [--kv-memory GiB] [--scale S] ...   (--help lists all)
//   bench_serve --random-weights --preset mistral-small-4 --device cuda [--dtype fp8|bf16|int4] [--layers N]
//               (full-size weights drawn on the GPU; the KV cache takes what --gpu-memory-utilization leaves)
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <exception>
#include <numbers>
#include <optional>
#include <unordered_map>
#include <vector>

#include "cli/kv_sizing.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/rng.h"
#include "engine/engine.h"
#include "io/checkpoint.h"
#include "io/model_config.h"
#include "model/kv_cache.h"
#include "model/text_model.h"
#include "model/text_weights.h"
#include "parallel/tensor_parallel.h"
#include "cli/random_weights.h"

namespace {

using quatre::Xoshiro256;
using Clock = std::chrono::steady_clock;
namespace engine = quatre::engine;

struct Args {
  std::string model_dir;
  bool random_weights = false;  // draw --preset's weights on the GPU instead of loading --model
  float temperature = 1.0f;     // of every request (0: greedy)
  bool host_sampling = false;   // every logits row back to the host (EngineOptions::sample_on_backend off)
  std::string preset = "mistral-small-4";
  std::string dtype = "fp8";
  std::string fp8_activations = "auto";  // auto, none (W8A16) or static (W8A8) (cli/model_loader.h)
  std::string attention_operands = "auto";  // auto, fp32 or bf16 (model::AttentionOperands)
  int64_t layers = 0;
  std::string device = "cpu";
  int tensor_parallel_size = 1;  // ranks of a TensorParallelGroup (cuda: one GPU each); needs --model
  int64_t n_requests = 64;
  int64_t concurrency = 16;
  double prompt_median = 800, prompt_sigma = 0.8;
  int64_t prompt_min = 200, prompt_max = 4000;
  double output_median = 150, output_sigma = 0.7;
  int64_t output_min = 50, output_max = 500;
  double shared_fraction = 0.5;
  int64_t shared_tokens = 512;
  double scale = 1.0;  // multiplies every length (e.g. 0.05 for the tiny model on CPU)
  std::string kv_dtype = "auto";
  double kv_memory_gib = 0;  // 0: 4 GiB on the CPU, --gpu-memory-utilization on a GPU
  double gpu_memory_utilization = 0.9;
  int64_t block_size = 16;
  int64_t max_tokens_per_step = 2048;
  int64_t max_running = 64;
  uint64_t seed = 1;
};

// One draw of a log-normal length with the given median, clipped, scaled.
int64_t draw_length(Xoshiro256& rng, double median, double sigma, int64_t lo, int64_t hi, double scale) {
  const double u1 = std::max(rng.uniform(), 1e-12), u2 = rng.uniform();
  const double normal = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  const double x = std::clamp(median * std::exp(sigma * normal), static_cast<double>(lo), static_cast<double>(hi));
  return std::max<int64_t>(1, std::llround(x * scale));
}

std::vector<int32_t> random_ids(Xoshiro256& rng, int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  // Skip the first 1000 ids (special and control tokens in Tekken) when the vocabulary is large enough.
  const int64_t first = vocab > 2000 ? 1000 : 0;
  for (int32_t& id : ids) id = static_cast<int32_t>(first + static_cast<int64_t>(rng.next() % static_cast<uint64_t>(vocab - first)));
  return ids;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  const double frac = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - frac) + v[i + 1] * frac : v[i];
}

struct Timing {
  Clock::time_point submitted, first, last;
  int64_t n_prompt = 0, n_output = 0;
};

int run(const Args& a) {
  const quatre::Device device = a.device == "cuda" ? quatre::Device::kCuda : quatre::Device::kCpu;
  std::optional<quatre::io::Checkpoint> checkpoint;
  quatre::io::TextConfig text;
  if (a.random_weights) {
    text = quatre::cli::random_weights_config(a.preset, a.layers);
  } else {
    if (a.model_dir.empty()) throw quatre::InvalidRequest("bench_serve: give --model DIR or --random-weights");
    checkpoint.emplace(quatre::io::Checkpoint::open(a.model_dir));
    text = checkpoint->config().text;
  }
  // Random FP8 (or int4 beside FP8) linears are drawn as the release is made, with static activation scales: auto
  // gives them W8A8; BF16 ones have none.
  const quatre::model::Fp8Activations fp8 = quatre::model::parse_fp8_activations(
      a.fp8_activations, a.random_weights ? a.dtype != "bf16"
                                          : quatre::model::has_static_activation_scales(checkpoint->config()));
  const quatre::model::TextModelOptions model_options{
      .attention_operands = quatre::model::parse_attention_operands(a.attention_operands, device)};
  if (a.tensor_parallel_size > 1 && a.random_weights) {
    throw quatre::InvalidRequest("bench_serve: --tensor-parallel-size > 1 loads each rank's slice of --model; "
                                 "--random-weights draws the whole model on one GPU");
  }
  // One device, or a group of ranks driven by rank 0's model (README, "Several GPUs").
  const std::unique_ptr<quatre::parallel::TensorParallelGroup> group =
      a.tensor_parallel_size > 1 ? std::make_unique<quatre::parallel::TensorParallelGroup>(*checkpoint, device, a.tensor_parallel_size,
                                                                                           model_options, fp8)
                                 : nullptr;
  const std::unique_ptr<quatre::Backend> backend = group ? nullptr : quatre::make_backend(device);
  const auto load = [&]() -> std::optional<quatre::model::TextWeights> {
    if (group) return std::nullopt;
    if (!a.random_weights) return quatre::model::TextWeights::load(*checkpoint, *backend, {}, fp8);
#ifdef QUATRE_HAVE_CUDA
    return quatre::cli::random_text_weights(text, *backend, quatre::cli::parse_random_dtype(a.dtype, "bench_serve"), a.seed,
                                            fp8);
#else
    throw quatre::InvalidRequest("bench_serve: --random-weights needs the CUDA backend, not in this build");
#endif
  };
  const std::optional<quatre::model::TextWeights> weights = load();
  const std::optional<quatre::model::TextModel> single =
      group ? std::nullopt : std::make_optional<quatre::model::TextModel>(text, *weights, *backend, model_options);
  const quatre::model::TextModel& model = group ? group->model() : *single;

  engine::EngineOptions options{.block_size = a.block_size,
                                .max_tokens_per_step = a.max_tokens_per_step,
                                .max_running = a.max_running,
                                .seed = a.seed,
                                .poison_kv = false,
                                .sample_on_backend = !a.host_sampling};
  quatre::cli::KvSizing sizing{.kv_cache_mib = std::nullopt, .gpu_memory_utilization = a.gpu_memory_utilization, .kv_cache_dtype = a.kv_dtype};
  if (a.kv_memory_gib > 0 || device != quatre::Device::kCuda) {
    sizing.kv_cache_mib = static_cast<int64_t>((a.kv_memory_gib > 0 ? a.kv_memory_gib : 4.0) * 1024.0);
  }
  const std::string account = quatre::cli::size_kv_cache(model, sizing, options);
  engine::Engine eng(model, options);
  const std::string source = (a.random_weights ? fmt::format("--random-weights {} ({} layers, {})", a.preset, text.n_layers, a.dtype) : a.model_dir) +
                             (group ? fmt::format(" (tensor-parallel-size {})", group->size()) : std::string());
  std::printf("bench_serve: %s on %s; %s\n%s\n", source.c_str(), a.device.c_str(), account.c_str(), eng.capacity_line().c_str());
  std::fflush(stdout);  // a run killed by a time limit still shows how far it came (stderr below)

  // The workload, drawn up front so every run with one seed offers the same requests.
  Xoshiro256 rng(a.seed);
  const std::vector<int32_t> system = random_ids(rng, std::max<int64_t>(1, std::llround(static_cast<double>(a.shared_tokens) * a.scale)), text.vocab_size);
  std::deque<engine::GenerateRequest> pending;
  int64_t n_shared = 0;
  for (int64_t i = 0; i < a.n_requests; ++i) {
    engine::GenerateRequest r;
    const int64_t n_prompt = draw_length(rng, a.prompt_median, a.prompt_sigma, a.prompt_min, a.prompt_max, a.scale);
    r.max_tokens = static_cast<int32_t>(draw_length(rng, a.output_median, a.output_sigma, a.output_min, a.output_max, a.scale));
    if (rng.uniform() < a.shared_fraction) {
      r.prompt = system;
      ++n_shared;
    }
    const std::vector<int32_t> user = random_ids(rng, n_prompt, text.vocab_size);
    r.prompt.insert(r.prompt.end(), user.begin(), user.end());
    const int64_t room = eng.max_context() - r.max_tokens;
    if (static_cast<int64_t>(r.prompt.size()) > room) r.prompt.resize(static_cast<size_t>(std::max<int64_t>(1, room)));
    r.sampling.temperature = a.temperature;
    r.sampling.seed = rng.next();
    r.ignore_eos = true;
    pending.push_back(std::move(r));
  }

  std::unordered_map<int64_t, Timing> timing;
  std::vector<Timing> done;
  int64_t n_in_flight = 0, n_prompt_tokens = 0;
  const Clock::time_point start = Clock::now();
  while (!pending.empty() || n_in_flight > 0) {
    while (!pending.empty() && n_in_flight < a.concurrency) {
      Timing t;
      t.submitted = Clock::now();
      t.n_prompt = static_cast<int64_t>(pending.front().prompt.size());
      n_prompt_tokens += t.n_prompt;
      timing.emplace(eng.submit(std::move(pending.front())), t);
      pending.pop_front();
      ++n_in_flight;
    }
    const std::vector<engine::RequestOutput> outputs = eng.step();
    const Clock::time_point now = Clock::now();
    for (const engine::RequestOutput& o : outputs) {
      Timing& t = timing.at(o.id);
      if (o.token) {
        if (t.n_output == 0) t.first = now;
        t.last = now;
        ++t.n_output;
      }
      if (o.finish && *o.finish == engine::FinishReason::kError) std::fprintf(stderr, "request %lld failed: %s\n", static_cast<long long>(o.id), o.error.c_str());
      if (o.is_last) {
        done.push_back(t);
        timing.erase(o.id);
        --n_in_flight;
        if (done.size() % static_cast<size_t>(std::max<int64_t>(1, a.n_requests / 8)) == 0) {
          std::fprintf(stderr, "bench_serve: %zu of %lld requests done after %.1f s\n", done.size(), static_cast<long long>(a.n_requests),
                       std::chrono::duration<double>(now - start).count());
        }
      }
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double> ttft, tpot;
  int64_t n_output_tokens = 0;
  for (const Timing& t : done) {
    n_output_tokens += t.n_output;
    if (t.n_output == 0) continue;
    ttft.push_back(std::chrono::duration<double>(t.first - t.submitted).count());
    if (t.n_output > 1) tpot.push_back(std::chrono::duration<double>(t.last - t.first).count() / static_cast<double>(t.n_output - 1));
  }
  const engine::EngineStats s = eng.stats();
  std::printf("requests      %zu in %.2f s at concurrency %lld (%lld with the %lld-token shared prefix), kv %s\n", done.size(), seconds,
              static_cast<long long>(a.concurrency), static_cast<long long>(n_shared), static_cast<long long>(system.size()), a.kv_dtype.c_str());
  std::printf("tokens        %lld prompt (mean %.0f), %lld output (mean %.0f)\n", static_cast<long long>(n_prompt_tokens),
              static_cast<double>(n_prompt_tokens) / static_cast<double>(std::max<size_t>(done.size(), 1)), static_cast<long long>(n_output_tokens),
              static_cast<double>(n_output_tokens) / static_cast<double>(std::max<size_t>(done.size(), 1)));
  std::printf("throughput    %.3f requests/s, %.1f output tokens/s, %.1f total tokens/s\n", static_cast<double>(done.size()) / seconds,
              static_cast<double>(n_output_tokens) / seconds, static_cast<double>(n_prompt_tokens + n_output_tokens) / seconds);
  std::printf("ttft          p50 %.1f ms, p99 %.1f ms\n", 1e3 * percentile(ttft, 0.5), 1e3 * percentile(ttft, 0.99));
  std::printf("tpot          p50 %.2f ms, p99 %.2f ms\n", 1e3 * percentile(tpot, 0.5), 1e3 * percentile(tpot, 0.99));
  std::printf("engine        %lld steps, %lld tokens forwarded (%lld decode), %lld mixed steps, %lld preemptions, prefix hit rate %.3f\n",
              static_cast<long long>(s.n_steps), static_cast<long long>(s.n_forwarded_tokens), static_cast<long long>(s.n_decode_tokens),
              static_cast<long long>(s.n_mixed_steps), static_cast<long long>(s.n_preemptions), s.prefix_hit_rate);
  std::printf("sampling      %lld tokens from the backend's summaries, %lld from whole rows (fallbacks)\n",
              static_cast<long long>(s.n_summary_samples), static_cast<long long>(s.n_summary_fallbacks));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app("bench_serve: the engine under a closed-loop load of concurrent requests (no HTTP)");
  app.add_option("--model", a.model_dir, "Checkpoint directory (or --random-weights)");
  app.add_flag("--random-weights", a.random_weights, "Draw the weights of --preset on the GPU: no checkpoint");
  app.add_option("--preset", a.preset, "Config for --random-weights")->capture_default_str();
  app.add_option("--dtype", a.dtype, "Linear weights for --random-weights: fp8, bf16 or int4 (4-bit routed experts, G=128, "
                 "the other linears FP8: `quatre quantize`'s default for the FP8 release)")
      ->check(CLI::IsMember({"fp8", "bf16", "int4"}))->capture_default_str();
  app.add_option("--layers", a.layers, "Keep only this many layers (--random-weights; 0: all)")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--device", a.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--fp8-activations", a.fp8_activations,
                 "FP8 linears: none (W8A16), static (W8A8; --random-weights draws 8/448) or auto (static where the "
                 "checkpoint has static activation scales, and for --random-weights)")
      ->check(CLI::IsMember({"auto", "none", "static"}))
      ->capture_default_str();
  app.add_option("--attention-operands", a.attention_operands,
                 "The attention's q and softmax weights: fp32 (exact), bf16 (rounded: a third of the tensor-core "
                 "work) or auto (bf16 on cuda, fp32 on cpu)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}))
      ->capture_default_str();
  app.add_option("--tensor-parallel-size", a.tensor_parallel_size, "Ranks of tensor/expert parallelism (cuda: one GPU each)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--requests", a.n_requests, "Requests to run")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--concurrency", a.concurrency, "Requests in flight at once")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--prompt-median", a.prompt_median, "Median prompt tokens (log-normal)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--prompt-sigma", a.prompt_sigma, "Sigma of log prompt length")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--prompt-min", a.prompt_min, "Shortest prompt")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--prompt-max", a.prompt_max, "Longest prompt")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--output-median", a.output_median, "Median output tokens (log-normal)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--output-sigma", a.output_sigma, "Sigma of log output length")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--output-min", a.output_min, "Shortest output")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--output-max", a.output_max, "Longest output")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--shared-fraction", a.shared_fraction, "Fraction of requests that start with the shared system prompt")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--shared-tokens", a.shared_tokens, "Length of the shared system prompt")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--scale", a.scale, "Multiplies every length (small models on CPU)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--kv-dtype", a.kv_dtype, "auto (bf16 on a GPU, f32 on the CPU), f32, bf16 or fp8")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "fp8"}))->capture_default_str();
  app.add_option("--kv-memory", a.kv_memory_gib, "KV cache budget in GiB (default: 4 on the CPU, --gpu-memory-utilization on a GPU)")
      ->check(CLI::PositiveNumber);
  app.add_option("--gpu-memory-utilization", a.gpu_memory_utilization, "Fraction of GPU memory for weights, a step and the KV cache")
      ->capture_default_str();
  app.add_option("--block-size", a.block_size, "Tokens per KV block")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-tokens-per-step", a.max_tokens_per_step, "Token budget of one step")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-running", a.max_running, "Sequences running at once")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seed", a.seed, "Seed of the workload")->capture_default_str();
  app.add_option("--temperature", a.temperature,
                 "Sampling temperature of every request (0: greedy; random weights give flat rows, whose draws at 1 "
                 "mostly fall past the device summary's candidates)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--host-sampling", a.host_sampling, "Sample from whole logits rows on the host (not the backend's summaries)");
  CLI11_PARSE(app, argc, argv);
  if (a.prompt_min > a.prompt_max || a.output_min > a.output_max) {
    std::fprintf(stderr, "bench_serve: --prompt-min/--output-min must not exceed --prompt-max/--output-max\n");
    return 2;
  }
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_serve: %s\n", e.what());
    return 1;
  }
}
