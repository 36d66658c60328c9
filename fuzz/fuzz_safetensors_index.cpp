// libFuzzer target: the safetensors index (model.safetensors.index.json) of a sharded checkpoint. A tiny synthetic
// checkpoint in three shards is written once to a scratch directory; each input replaces its index, and the
// directory is opened with io::Checkpoint::open. LoadError is the expected refusal; anything else (a crash, a
// sanitizer report, another exception, a failed CHECK) is a finding. An accepted index maps every logical weight.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/check.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/model_config.h"
#include "synth/gen_model.h"

namespace {

using namespace quatre;

// The scratch checkpoint: what `quatre gen-model DIR --preset tiny --text-only --shard-size-gib 0.000286` writes
// (HF format, three shards, so an index; the seed corpus's valid.json is its index).
// Removed at exit.
struct ScratchDir {
  std::filesystem::path path;
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

const std::filesystem::path& checkpoint_dir() {
  static const ScratchDir dir{[] {
    const std::filesystem::path d = std::filesystem::temp_directory_path() / ("quatre-fuzz-index-" + std::to_string(::getpid()));
    std::filesystem::remove_all(d);
    synth::GenModelOptions o;
    o.config = io::preset("tiny");
    o.config.vision.reset();
    o.max_shard_bytes = static_cast<uint64_t>(0.000286 * static_cast<double>(1ull << 30));
    synth::generate_checkpoint(o, d);
    CHECK(std::filesystem::exists(d / io::index_file_name(io::CheckpointFormat::kHuggingFace))) << "no index written";
    return d;
  }()};
  return dir.path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path& dir = checkpoint_dir();
  {
    std::ofstream out(dir / io::index_file_name(io::CheckpointFormat::kHuggingFace), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const io::Checkpoint c = io::Checkpoint::open(dir, io::CheckpointFormat::kHuggingFace);
    CHECK(!c.weights().empty());
  } catch (const LoadError&) {
  }
  return 0;
}
