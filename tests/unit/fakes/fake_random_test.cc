#include "tests/fakes/fake_random.h"

#include <gtest/gtest.h>

namespace mi {
namespace {

TEST(FakeRandomTest, FixedScriptedAndSequence) {
  FakeRandom r(0.25);
  EXPECT_EQ(r.Uniform(), 0.25);
  r.Script({0.0, 1.0, -3.0});
  EXPECT_EQ(r.Uniform(), 0.0);
  EXPECT_LT(r.Uniform(), 1.0);  // clamped into [0, 1)
  EXPECT_EQ(r.Uniform(), 0.0);
  EXPECT_EQ(r.Uniform(), 0.25);
  r.UseSequence(7);
  double sum = 0;
  for (int i = 0; i < 1000; ++i) {
    double v = r.Uniform();
    ASSERT_GE(v, 0.0);
    ASSERT_LT(v, 1.0);
    sum += v;
  }
  EXPECT_NEAR(sum / 1000, 0.5, 0.05);
  EXPECT_EQ(r.calls(), 1005);
}

}  // namespace
}  // namespace mi
