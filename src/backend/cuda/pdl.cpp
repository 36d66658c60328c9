// The switch of programmatic dependent launch (pdl.cuh, kernels.h): QUATRE_CUDA_PDL, or the tests' set_pdl_for_tests.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/kernels.h"

namespace quatre::cuda {
namespace {

std::atomic<int> g_test_mode{-1};  // set_pdl_for_tests

}  // namespace

void set_pdl_for_tests(int mode) { g_test_mode.store(mode); }

bool pdl_enabled() {
  static const bool env_on = [] {
    const char* v = std::getenv("QUATRE_CUDA_PDL");
    return v == nullptr || std::strcmp(v, "0") != 0;  // on (H200, session 15: batch 1 2.71 -> 2.58 ms); =0: off
  }();
  const int mode = g_test_mode.load();
  return mode < 0 ? env_on : mode != 0;
}

}  // namespace quatre::cuda
