// Shared by the model tests: synthetic checkpoints in a temp dir, a loaded model on the CPU backend, runs of one
// or more sequences through TextModel::forward, and tensor comparisons that print max abs/rel error, relative L2
// error, cosine distance and the worst index with both values (STYLE.md (c)).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "core/arena.h"
#include "core/backend.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/kv_cache.h"
#include "model/step_inputs.h"
#include "model/text_model.h"
#include "model/text_weights.h"

namespace quatre::model::test {

// The elements of tensor `name` of a golden file as T (empty when absent; a size mismatch is a test failure).
template <typename T>
std::vector<T> read_tensor(const io::SafetensorsFile& f, const std::string& name) {
  const io::TensorInfo* t = f.find(name);
  if (t == nullptr) return {};
  std::vector<T> out(static_cast<size_t>(t->numel()));
  const auto bytes = f.data(*t);
  EXPECT_EQ(bytes.size(), out.size() * sizeof(T)) << name;
  std::memcpy(out.data(), bytes.data(), std::min(bytes.size(), out.size() * sizeof(T)));
  return out;
}
inline std::vector<int32_t> to_i32(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

// Greedy continuation with incremental decoding: prefill, then one token per step, through a KV cache of
// `kv_dtype` on the model's backend (rank 0's in a tensor-parallel group). Returns the ids and the logits each was
// chosen from.
inline std::pair<std::vector<int32_t>, std::vector<std::vector<float>>> greedy(const TextModel& model, std::vector<int32_t> ids,
                                                                               int n_new, DType kv_dtype = DType::F32) {
  const io::TextConfig& c = model.config();
  Backend& be = model.backend();
  KvCache kv(c, be, {.n_blocks = 64, .block_size = 16, .dtype = kv_dtype});
  const int64_t total = static_cast<int64_t>(ids.size()) + n_new;
  const std::vector<int32_t> blocks = kv.allocate((total + 15) / 16);
  Arena arena(be.memory());
  std::vector<int32_t> out;
  std::vector<std::vector<float>> logits;
  int64_t n_cached = 0;
  std::vector<int32_t> chunk = ids;
  for (int step = 0; step < n_new; ++step) {
    StepBuilder builder(16);
    builder.add({.block_table = blocks, .n_cached = n_cached, .ids = chunk, .positions = {}}, LogitRows::kLast);
    arena.reset();
    const Tensor t = model.forward(builder.inputs(), kv, arena);
    std::vector<float> row(static_cast<size_t>(c.vocab_size));
    be.copy_to_host(t, row.data());
    const auto next = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    n_cached += static_cast<int64_t>(chunk.size());
    out.push_back(next);
    logits.push_back(std::move(row));
    chunk = {next};
  }
  return {out, logits};
}

// The .safetensors files directly in `dir`, sorted (empty when `dir` does not exist): a golden set.
std::vector<std::filesystem::path> safetensors_in(const std::filesystem::path& dir);
// FNV-1a 64 over the bytes of dir's .safetensors files in name order: which checkpoint a golden file was made from.
uint64_t fnv1a64_of_safetensors(const std::filesystem::path& dir);

// A directory under testing::TempDir(), unique per process and instance; removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct CheckpointSpec {
  std::string preset = "tiny";
  io::CheckpointFormat format = io::CheckpointFormat::kHuggingFace;
  bool fp8 = false;
  uint64_t seed = 7;
  int64_t n_layers = 0;  // 0: the preset's
};
// Writes the synthetic checkpoint into dir/name (synth::generate_checkpoint) and returns its path.
std::filesystem::path make_checkpoint(const TempDir& dir, const std::string& name, const CheckpointSpec& spec);

// A checkpoint opened with its weights viewed by a CPU backend (or prepared for `device`'s).
struct LoadedModel {
  explicit LoadedModel(const std::filesystem::path& dir, Device device = Device::kCpu,
                       Fp8Activations fp8 = Fp8Activations::kNone);
  io::Checkpoint checkpoint;
  std::unique_ptr<Backend> backend;
  TextWeights weights;
  const io::TextConfig& text() const { return checkpoint.config().text; }
};

// Deterministic token ids in [0, vocab).
std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t seed);

// Runs `ids` (positions pos0, pos0+1, ...) of a fresh sequence in one step; returns logits [T,V] row-major.
// When hidden is given, it receives the hidden states [L+1][T*D]: the embedding, then the output of each layer.
std::vector<float> prefill_logits(const TextModel& model, const std::vector<int32_t>& ids, int32_t pos0 = 0,
                                  std::vector<std::vector<float>>* hidden = nullptr);

// A comparison of two float arrays.
struct Diff {
  double max_abs = 0, max_rel = 0, rel_l2 = 0, cosine_distance = 0;
  int64_t worst = -1;  // index of max_abs
  float got = 0, want = 0;
  bool same_nonfinite = true;  // NaN/inf at the same indices
};
Diff diff(const std::vector<float>& got, const std::vector<float>& want);
std::string describe(const Diff& d);
// Passes when the non-finite positions agree and rel_l2 <= rel_l2_tol and max_abs <= max_abs_tol.
::testing::AssertionResult near(const std::vector<float>& got, const std::vector<float>& want, double rel_l2_tol,
                                double max_abs_tol);
std::vector<float> slice_rows(const std::vector<float>& x, int64_t width, int64_t begin, int64_t count);

}  // namespace quatre::model::test
