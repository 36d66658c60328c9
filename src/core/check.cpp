// Out-of-line part of CHECK: print and abort.
#include "core/check.h"

#include <cstdio>
#include <cstdlib>

namespace quatre::detail {

CheckFailure::CheckFailure(const char* condition, const char* file, int line) {
  message_ << file << ":" << line << ": CHECK(" << condition << ") failed: ";
}

CheckFailure::~CheckFailure() {
  const std::string text = message_.str();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace quatre::detail
