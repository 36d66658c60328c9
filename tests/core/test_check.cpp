// CHECK aborts with the condition, file:line and the streamed context; a passing CHECK evaluates nothing else.
#include <gtest/gtest.h>

#include "core/check.h"

namespace {

int side_effects = 0;
int count() { return ++side_effects; }

TEST(Check, PassingCheckDoesNotEvaluateTheMessage) {
  CHECK(1 + 1 == 2) << count();
  EXPECT_EQ(side_effects, 0);
}

TEST(CheckDeathTest, FailingCheckAbortsWithContext) {
  const int got = 3;
  EXPECT_DEATH(CHECK(got == 4) << "got " << got, "test_check.cpp:[0-9]+: CHECK\\(got == 4\\) failed: got 3");
}

}  // namespace
