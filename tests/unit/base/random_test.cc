#include "agent/base/random.h"

#include <gtest/gtest.h>

#include <set>

namespace mi {
namespace {

TEST(SystemRandomTest, UniformIsInTheUnitIntervalAndVaries) {
  SystemRandom random;
  std::set<double> seen;
  for (int i = 0; i < 1000; ++i) {
    const double v = random.Uniform();
    ASSERT_GE(v, 0.0);
    ASSERT_LT(v, 1.0);
    seen.insert(v);
  }
  EXPECT_GT(seen.size(), 900u);
}

}  // namespace
}  // namespace mi
