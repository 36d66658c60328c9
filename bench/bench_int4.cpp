// bench_int4: the accuracy of a 4-bit checkpoint against the checkpoint it was quantised from, on the CPU backend:
// the relative L2 error of every layer's output and of the logits on one window, and the perplexity of both models
// over a token file (int32 little-endian ids, e.g. the demo model's held-out test.bin) in the demo model's windows
// (non-overlapping SEQ+1-token windows; every position predicts the next id, as tools/demo/train_demo.py measures).
//   bench_int4 --reference DIR --model DIR [--model DIR...] [--ids FILE] [--window 512] [--max-windows N] [--random-ids N]
//              [--int4-act fp32,bf16,q8]
// Several --model: each against the same reference run, on the same windows. --int4-act: each 4-bit model again with
// its matmuls' activations rounded as the CUDA kernels may take them (core/int4.h Int4Activations: BF16, or int8
// in blocks of 32): the accuracy those numerics cost.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "backend/cpu/cpu_backend.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/int4.h"
#include "io/checkpoint.h"
#include "model/prompt_run.h"
#include "model/text_model.h"
#include "model/text_weights.h"

namespace {

using namespace quatre;

struct Loaded {
  explicit Loaded(const std::string& dir, Int4Activations act = Int4Activations::kFp32)
      : checkpoint(io::Checkpoint::open(dir)), backend(std::make_unique<cpu::CpuBackend>(0, act)),
        weights(model::TextWeights::load(checkpoint, *backend)), model(checkpoint.config().text, weights, *backend) {}
  io::Checkpoint checkpoint;
  std::unique_ptr<Backend> backend;
  model::TextWeights weights;
  model::TextModel model;
};

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Σ over rows t < T-1 of -log softmax(logits[t])[ids[t+1]], in double.
double nll_sum(const std::vector<float>& logits, const std::vector<int32_t>& ids, int64_t V) {
  double total = 0;
  for (size_t t = 0; t + 1 < ids.size(); ++t) {
    const float* row = logits.data() + t * static_cast<size_t>(V);
    const float m = *std::max_element(row, row + V);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - m);
    total += std::log(sum) + m - row[ids[t + 1]];
  }
  return total;
}

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw LoadError(fmt::format("{}: cannot read", path));
  std::vector<int32_t> ids;
  int32_t id;
  while (in.read(reinterpret_cast<char*>(&id), 4)) ids.push_back(id);
  return ids;
}

Int4Activations parse_int4_act(const std::string& name) {
  if (name == "fp32") return Int4Activations::kFp32;
  if (name == "bf16") return Int4Activations::kBf16;
  if (name == "q8") return Int4Activations::kQ8;
  throw InvalidRequest(fmt::format("--int4-act: expected fp32, bf16 or q8, got \"{}\"", name));
}

int run(const std::string& reference_dir, const std::vector<std::string>& dirs, const std::vector<std::string>& acts,
        const std::string& ids_path, int64_t window, int64_t max_windows, int64_t random_ids) {
  const Loaded ref(reference_dir);
  std::vector<std::unique_ptr<Loaded>> models;
  std::vector<std::string> model_dirs;  // the names printed: DIR, or DIR [act] with --int4-act
  for (const std::string& dir : dirs) {
    for (const std::string& act : acts) {
      models.push_back(std::make_unique<Loaded>(dir, parse_int4_act(act)));
      model_dirs.push_back(acts.size() == 1 && act == "fp32" ? dir : fmt::format("{} [{}]", dir, act));
    }
  }
  const int64_t V = ref.checkpoint.config().text.vocab_size;
  std::vector<int32_t> ids;
  if (!ids_path.empty()) {
    ids = read_ids(ids_path);
  } else {
    std::mt19937_64 rng(1);
    for (int64_t i = 0; i < random_ids; ++i) ids.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(V)));
    window = random_ids - 1;
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= V) throw InvalidRequest(fmt::format("{}: id {} outside the vocabulary of {}", ids_path, id, V));
  }
  const int64_t n_windows = std::min<int64_t>(max_windows, (static_cast<int64_t>(ids.size()) - 1) / window);
  if (n_windows < 1) throw InvalidRequest(fmt::format("{} ids make no window of {}+1", ids.size(), window));
  double nll_ref = 0;
  std::vector<double> nll(models.size(), 0.0);
  for (int64_t w = 0; w < n_windows; ++w) {
    const std::vector<int32_t> win(ids.begin() + w * window, ids.begin() + w * window + window + 1);
    const model::PromptRunOptions opts{.capture_hidden = w == 0};
    const model::PromptRun a = model::run_prompt(ref.model, win, opts);
    nll_ref += nll_sum(a.logits, win, V);
    for (size_t m = 0; m < models.size(); ++m) {
      const model::PromptRun b = model::run_prompt(models[m]->model, win, opts);
      nll[m] += nll_sum(b.logits, win, V);
      if (w > 0) continue;
      fmt::print("{}: relative L2 error vs the reference on window 0 ({} tokens):", model_dirs[m], win.size());
      for (size_t l = 1; l < a.hidden.size(); ++l) fmt::print(" l{}.out {:.5f}", l - 1, rel_l2(b.hidden[l], a.hidden[l]));
      fmt::print(", logits {:.5f}\n", rel_l2(b.logits, a.logits));
    }
    std::fprintf(stderr, "\rwindow %lld/%lld", static_cast<long long>(w + 1), static_cast<long long>(n_windows));
  }
  const double n = static_cast<double>(n_windows * window);
  std::fprintf(stderr, "\n");
  fmt::print("perplexity over {} predicted tokens ({} windows of {}): reference {:.3f} (loss {:.4f})\n", n_windows * window,
             n_windows, window, std::exp(nll_ref / n), nll_ref / n);
  for (size_t m = 0; m < models.size(); ++m) {
    fmt::print("  {}: {:.3f} (loss {:.4f}): {:+.2f}%\n", model_dirs[m], std::exp(nll[m] / n), nll[m] / n,
               100.0 * (std::exp((nll[m] - nll_ref) / n) - 1.0));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Accuracy of a 4-bit checkpoint against its source on the CPU: layer errors and perplexity", "bench_int4"};
  std::string reference, ids;
  std::vector<std::string> models, acts{"fp32"};
  int64_t window = 512, max_windows = 1 << 30, random_ids = 64;
  app.add_option("--reference", reference, "The checkpoint the 4-bit one was quantised from")->required();
  app.add_option("--model", models, "A 4-bit checkpoint (repeatable)")->required();
  app.add_option("--ids", ids, "int32 little-endian token ids (e.g. the demo model's test.bin); none: random ids");
  app.add_option("--window", window, "Tokens predicted per window")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-windows", max_windows, "At most this many windows")->check(CLI::PositiveNumber);
  app.add_option("--random-ids", random_ids, "Without --ids: one window of this many random ids")->check(CLI::Range(2, 1 << 20))->capture_default_str();
  app.add_option("--int4-act", acts, "Activations of the 4-bit matmuls: fp32 (exact), bf16, q8; several: each in turn")
      ->delimiter(',')
      ->check(CLI::IsMember({"fp32", "bf16", "q8"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(reference, models, acts, ids, window, max_windows, random_ids);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_int4: error: %s\n", e.what());
    return 1;
  }
}
