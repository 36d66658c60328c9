// `quatre quantize`: a BF16 or FP8 checkpoint to quatre's 4-bit format (wiring only; the work is in quant/).
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/error.h"
#include "quant/quantize.h"

namespace quatre::cli {
namespace {

struct QuantizeArgs {
  std::string in_dir, out_dir;
  int64_t group_size = 128;
  std::string what = "experts";
  bool is_asymmetric = false;
  std::string format;
  double shard_gib = 5.0;
  bool upcast_others = false;
};

int run_quantize(const QuantizeArgs& a) {
  quant::QuantizeOptions o;
  o.int4 = {.group_size = a.group_size,
            .is_symmetric = !a.is_asymmetric,
            .modules = a.what == "all" ? io::Int4Modules::kAll : io::Int4Modules::kExperts};
  o.keep_fp8 = !a.upcast_others;
  if (a.format == "hf") o.input_format = io::CheckpointFormat::kHuggingFace;
  if (a.format == "native") o.input_format = io::CheckpointFormat::kMistralNative;
  if (!(a.shard_gib > 0)) throw InvalidRequest(fmt::format("--shard-size-gib must be positive, got {}", a.shard_gib));
  o.max_shard_bytes = static_cast<uint64_t>(a.shard_gib * static_cast<double>(1ull << 30));
  o.progress = [](const std::string& line) { std::fprintf(stderr, "quantize: %s\n", line.c_str()); };
  const quant::QuantizeSummary s = quant::quantize_checkpoint(a.in_dir, a.out_dir, o);
  std::printf("quantize: %lld weights in 4 bits (%s, group %lld, %s), %lld tensors, %.3f GiB -> %.3f GiB, written to %s\n",
              static_cast<long long>(s.n_int4_weights), a.what.c_str(), static_cast<long long>(a.group_size),
              a.is_asymmetric ? "asymmetric" : "symmetric", static_cast<long long>(s.n_tensors),
              static_cast<double>(s.bytes_in) / double(1ull << 30), static_cast<double>(s.bytes_out) / double(1ull << 30),
              a.out_dir.c_str());
  return 0;
}

}  // namespace

Runner add_quantize(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  app.add_option("in_dir", a->in_dir, "Checkpoint to read (either format, BF16 or FP8)")->required()->check(CLI::ExistingDirectory);
  app.add_option("out_dir", a->out_dir, "Directory to write, in the input's format (created; must be empty)")->required();
  app.add_option("--group-size", a->group_size, "Input columns per BF16 scale; must divide every quantised input width")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--what", a->what, "experts (routed experts only) or all (every text linear: attention, shared and dense FFNs too)")
      ->check(CLI::IsMember({"experts", "all"}))
      ->capture_default_str();
  app.add_flag("--asymmetric", a->is_asymmetric, "Store a BF16 offset per group too (codes 0..15 span [min, max])");
  app.add_option("--format", a->format, "Which config to read when the input holds both (hf or native)")
      ->check(CLI::IsMember({"hf", "native"}));
  app.add_option("--shard-size-gib", a->shard_gib, "Largest output shard in GiB")->capture_default_str();
  app.add_flag("--upcast-others", a->upcast_others,
               "FP8 input: store the linears not in 4 bits in BF16 (by default they stay FP8 as stored, with their scales)");
  return [a] { return run_quantize(*a); };
}

}  // namespace quatre::cli
