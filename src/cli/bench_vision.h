// quatre bench --vision: the Pixtral tower + projector of a preset on random BF16 weights drawn on the GPU, timed on
// one square image per side given, next to its arithmetic (flops over the assumed peak); with profile, one more run
// a side op by op. Wiring only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace quatre::cli {

struct VisionBenchArgs {
  std::string preset = "mistral-small-4";
  std::vector<int64_t> sides;  // px, multiples of patch * merge, at most the preset's image_size
  int reps = 3;                // timed runs a side (median), after one warm-up
  uint64_t seed = 1;
  double peak_tflops = 989.0;
  bool bf16_attention_operands = true;  // vision::VisionOptions (--attention-operands: auto is bf16 on CUDA)
  bool profile = false;                 // one more run a side, timed op by op on the GPU
};

int run_vision_bench(const VisionBenchArgs& args);

}  // namespace quatre::cli
