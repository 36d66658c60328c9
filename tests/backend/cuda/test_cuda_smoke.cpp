// The CUDA build runs: a kernel compiled for sm_90a computes axpy on the GPU. Skips without a GPU.
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cuda/device_info.h"
#include "core/error.h"

namespace {

TEST(CudaSmoke, AxpyMatchesTheCpu) {
  if (quatre::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device present";
  std::printf("device 0: %s\n", quatre::cuda::describe_device(0).c_str());
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> x(100003), y(x.size());  // odd size exercises the tail block
  for (size_t i = 0; i < x.size(); ++i) x[i] = u(rng), y[i] = u(rng);
  std::vector<float> want(y);
  for (size_t i = 0; i < x.size(); ++i) want[i] = std::fma(1.5f, x[i], want[i]);
  quatre::cuda::axpy_on_device(1.5f, x, y);
  EXPECT_EQ(y, want);
}

TEST(CudaSmoke, MismatchedSizesAreAnError) {
  if (quatre::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device present";
  std::vector<float> x(3), y(4);
  EXPECT_THROW(quatre::cuda::axpy_on_device(1.0f, x, y), quatre::InvalidRequest);
}

}  // namespace
