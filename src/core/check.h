// CHECK(cond) << "context": an always-on invariant check that aborts with file:line and the message.
// For broken invariants only; bad input throws InvalidRequest / LoadError instead. Depends on the standard library.
#pragma once

#include <sstream>

namespace quatre::detail {

class CheckFailure {
 public:
  CheckFailure(const char* condition, const char* file, int line);
  [[noreturn]] ~CheckFailure();
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;
  template <typename T>
  CheckFailure& operator<<(const T& value) {
    message_ << value;
    return *this;
  }

 private:
  std::ostringstream message_;
};

// Lets `CHECK(c) << x` be a void expression in both branches of the ternary below.
struct Voidify {
  void operator&(const CheckFailure&) {}
};

}  // namespace quatre::detail

#define CHECK(condition)                   \
  (condition) ? static_cast<void>(0)       \
              : ::quatre::detail::Voidify() & ::quatre::detail::CheckFailure(#condition, __FILE__, __LINE__)

#ifdef NDEBUG
#define DCHECK(condition) \
  true ? static_cast<void>(0) : ::quatre::detail::Voidify() & ::quatre::detail::CheckFailure(#condition, __FILE__, __LINE__)
#else
#define DCHECK(condition) CHECK(condition)
#endif
