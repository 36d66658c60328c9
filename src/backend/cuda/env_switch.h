// The CUDA backend's A/B switches (host code): a switch or a number from the environment, read once by the caller
// (kept in a static), and a test's override of a switch. Depends on the C library only.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace quatre::cuda {

// On unless the variable is set to "0".
inline bool env_switch_on(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// The variable's integer value, or `fallback` when it is unset.
inline int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoll(v) : fallback;
}

// A switch a test may force: test_mode -1 gives the environment's choice (env_on), 0 off, 1 on.
inline bool switch_on(int test_mode, bool env_on) { return test_mode < 0 ? env_on : test_mode != 0; }

}  // namespace quatre::cuda
