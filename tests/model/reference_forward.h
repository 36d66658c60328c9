// An independent float64 implementation of MODEL.md §3 (the text forward as transformers computes it, with the
// weights dequantised: W8A16 for FP8), straight from the checkpoint's WeightViews: one sequence, no cache,
// causal by index. The oracle of the model tests until the transformers goldens arrive.
#pragma once

#include <cstdint>
#include <vector>

#include "io/checkpoint.h"
#include "model/rope.h"

namespace quatre::model::test {

struct ReferenceOutput {
  std::vector<float> logits;               // [T,V]
  std::vector<std::vector<float>> hidden;  // [L+1][T*D]: embedding, then the output of each layer
};

ReferenceOutput reference_forward(const io::Checkpoint& checkpoint, const std::vector<int32_t>& ids,
                                  const std::vector<int32_t>& positions, SoftmaxScale convention);

}  // namespace quatre::model::test
