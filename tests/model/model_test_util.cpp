// Helpers of the model tests (see model_test_util.h).
#include "model_test_util.h"

#include <fstream>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <random>

#include <fmt/format.h>

#include "model/prompt_run.h"
#include "synth/gen_model.h"

namespace quatre::model::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = fs::path(::testing::TempDir()) / fmt::format("quatre_model_{}_{}", ::getpid(), counter++);
  fs::remove_all(path_);
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

fs::path make_checkpoint(const TempDir& dir, const std::string& name, const CheckpointSpec& spec) {
  synth::GenModelOptions o;
  o.config = io::preset(spec.preset);
  if (spec.n_layers > 0) o.config.text.n_layers = spec.n_layers;
  o.format = spec.format;
  o.fp8 = spec.fp8;
  o.seed = spec.seed;
  const fs::path out = dir.path() / name;
  synth::generate_checkpoint(o, out);
  return out;
}

LoadedModel::LoadedModel(const fs::path& dir, Device device, Fp8Activations fp8)
    : checkpoint(io::Checkpoint::open(dir)),
      backend(make_backend(device)),
      weights(TextWeights::load(checkpoint, *backend, {}, fp8)) {}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return ids;
}

std::vector<float> prefill_logits(const TextModel& model, const std::vector<int32_t>& ids, int32_t pos0,
                                  std::vector<std::vector<float>>* hidden) {
  std::vector<int32_t> positions(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) positions[i] = pos0 + static_cast<int32_t>(i);
  PromptRun run = run_prompt(model, ids, {.positions = positions, .capture_hidden = hidden != nullptr});
  if (hidden != nullptr) *hidden = std::move(run.hidden);
  return std::move(run.logits);
}

Diff diff(const std::vector<float>& got, const std::vector<float>& want) {
  Diff d;
  double err2 = 0, want2 = 0, got2 = 0, dot = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double g = got[i], w = want[i];
    if (!std::isfinite(g) || !std::isfinite(w)) {
      d.same_nonfinite = d.same_nonfinite && (std::isnan(g) == std::isnan(w)) && (std::isinf(g) == std::isinf(w)) &&
                         (!std::isinf(g) || g == w);
      continue;
    }
    const double e = std::abs(g - w);
    if (e > d.max_abs || d.worst < 0) {
      d.max_abs = e;
      d.worst = static_cast<int64_t>(i);
      d.got = got[i];
      d.want = want[i];
    }
    d.max_rel = std::max(d.max_rel, e / std::max(std::abs(w), 1e-6));
    err2 += e * e;
    want2 += w * w;
    got2 += g * g;
    dot += g * w;
  }
  d.same_nonfinite = d.same_nonfinite && got.size() == want.size();
  d.rel_l2 = want2 > 0 ? std::sqrt(err2 / want2) : std::sqrt(err2);
  d.cosine_distance = (want2 > 0 && got2 > 0) ? 1.0 - dot / std::sqrt(want2 * got2) : 0.0;
  return d;
}

std::string describe(const Diff& d) {
  return fmt::format("max_abs {:.3g} max_rel {:.3g} rel_l2 {:.3g} cosine_distance {:.3g}; worst index {}: got {} want {}{}",
                     d.max_abs, d.max_rel, d.rel_l2, d.cosine_distance, d.worst, d.got, d.want,
                     d.same_nonfinite ? "" : "; NaN/inf positions differ (or sizes)");
}

::testing::AssertionResult near(const std::vector<float>& got, const std::vector<float>& want, double rel_l2_tol,
                                double max_abs_tol) {
  const Diff d = diff(got, want);
  if (std::getenv("QUATRE_PRINT_DIFF") != nullptr) fmt::print(stderr, "  diff: {}\n", describe(d));
  if (d.same_nonfinite && d.rel_l2 <= rel_l2_tol && d.max_abs <= max_abs_tol) {
    return ::testing::AssertionSuccess() << describe(d);
  }
  return ::testing::AssertionFailure() << describe(d) << " (tolerance rel_l2 " << rel_l2_tol << ", max_abs "
                                       << max_abs_tol << ")";
}

std::vector<float> slice_rows(const std::vector<float>& x, int64_t width, int64_t begin, int64_t count) {
  return {x.begin() + begin * width, x.begin() + (begin + count) * width};
}

std::vector<fs::path> safetensors_in(const fs::path& dir) {
  std::vector<fs::path> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

uint64_t fnv1a64_of_safetensors(const fs::path& dir) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (const fs::path& f : safetensors_in(dir)) {
    std::ifstream in(f, std::ios::binary);
    char buffer[1 << 16];
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
      for (std::streamsize i = 0; i < in.gcount(); ++i) h = (h ^ static_cast<unsigned char>(buffer[i])) * 0x100000001B3ull;
    }
  }
  return h;
}

}  // namespace quatre::model::test
