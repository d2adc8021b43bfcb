#include "agent/base/clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <limits>

namespace mi {
namespace {

TEST(TimeConversionTest, FromEpochSecondsSaturatesInsteadOfOverflowing) {
  EXPECT_EQ(FromEpochSeconds(std::numeric_limits<int64_t>::max()), TimePoint::max());
  EXPECT_EQ(FromEpochSeconds(9999999999999999), TimePoint::max());
  EXPECT_EQ(FromEpochSeconds(std::numeric_limits<int64_t>::min()), TimePoint::min());
  EXPECT_EQ(ToEpochSeconds(FromEpochSeconds(kMaxEpochSeconds)), kMaxEpochSeconds);
  EXPECT_EQ(ToEpochSeconds(FromEpochSeconds(-5)), -5);
}

TEST(SystemClockTest, ReadsTheWallClock) {
  const SystemClock clock;
  const TimePoint now = clock.Now();
  const TimePoint system = std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  EXPECT_GT(ToEpochSeconds(now), 1577836800) << "after 2020-01-01";
  // The same clock read twice: apart by far less than a minute (a step of the
  // clock in between aside).
  EXPECT_LT(std::chrono::abs(system - now), std::chrono::minutes(1));
}

}  // namespace
}  // namespace mi
