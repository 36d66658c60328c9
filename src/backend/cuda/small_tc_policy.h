// Where the small tensor-core kernel (matmul_small_tc.cu) runs a problem and how it takes x (small_tc_policy.cpp):
// the rules launch_matmul's dispatch (matmul.cu) and the kernel's launcher share. Host code. Depends on kernels.h.
#pragma once

#include "backend/cuda/kernels.h"

namespace quatre::cuda {

constexpr int kSmallTcRows = 8;          // a row block: the mma's B columns
constexpr int kSmallTcMaxRowBlocks = 8;  // plain problems of up to 64 rows; a wide group of 4-bit experts
constexpr int kSmallTcWideRows = kSmallTcMaxRowBlocks * kSmallTcRows;

// Tensor-core path for <= 8 rows a group, 4-bit experts' groups of 64 with int8 activations (x_q8 gathered), or plain
// problems of <= 64 rows: BF16/FP8/4-bit weights, K % 16 (FP8) / % 8 (BF16) / % 32 and % G (4-bit, G % 32 == 0) ==
// 0, 16-byte aligned rows, no x_rows past 8 plain rows, and rows enough (plain: M >= 2; grouped: rows_hint >= 1,
// QUATRE_CUDA_SMALL_TC_MIN_HINT); off with QUATRE_CUDA_SMALL_TC=0. False: the FMA kernel of matmul.cu (or past 8
// rows the large-M kernels) runs.
bool small_tc_applies(const MatmulProblem& p);
// Whether the small tensor-core kernel, where it runs p, reads p's x_terms (matmul_takes_terms, kernels.h).
bool small_tc_takes_terms(const MatmulProblem& p);
bool small_tc_takes_q8(const MatmulProblem& p);  // the 4-bit bodies take x_q8 (matmul_takes_q8)
// W8A8 inputs quantised beforehand through the three-term bodies (QUATRE_CUDA_W8A8_TERMS=3) instead of one term.
bool w8a8_split_terms();
// The 4-bit bodies take x_terms: one row block, K % 8 == 0 (QUATRE_CUDA_INT4_TERMS=0: never).
bool terms_apply(const MatmulProblem& p);
// The 4-bit bodies take x_q8: K and G multiples of kQ8Block, q8 on; one row block, or a wide group of experts.
bool q8_apply(const MatmulProblem& p);

}  // namespace quatre::cuda
