// FakeTime itself: the core's unit tests build on it.
#include "tests/fakes/fake_time.h"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mi {
namespace {

using std::chrono::seconds;

TEST(FakeTimeTest, FiresInDeadlineOrderAndReadsTheDeadline) {
  FakeTime time;
  const TimePoint t0 = time.Now();
  std::vector<std::string> fired;
  auto a = time.NewTimer(), b = time.NewTimer(), c = time.NewTimer();
  a->Arm(Duration(300), [&] { fired.push_back("a@" + std::to_string((time.Now() - t0).count())); });
  b->Arm(Duration(100), [&] { fired.push_back("b@" + std::to_string((time.Now() - t0).count())); });
  c->Arm(Duration(100), [&] { fired.push_back("c@" + std::to_string((time.Now() - t0).count())); });
  time.Advance(Duration(250));
  EXPECT_EQ(fired, (std::vector<std::string>{"b@100", "c@100"}));
  EXPECT_EQ(time.Now() - t0, Duration(250));
  EXPECT_TRUE(a->armed());
  EXPECT_FALSE(b->armed());
  time.Advance(Duration(50));
  EXPECT_EQ(fired.back(), "a@300");
  EXPECT_EQ(time.armed_timers(), 0u);
}

TEST(FakeTimeTest, ZeroDelayFiresLaterNotInsideArm) {
  FakeTime time;
  int runs = 0;
  auto t = time.NewTimer();
  t->Arm(Duration(0), [&] { ++runs; });
  EXPECT_EQ(runs, 0);
  EXPECT_TRUE(t->armed());
  time.RunPending();
  EXPECT_EQ(runs, 1);
}

TEST(FakeTimeTest, CallbacksMayRearmDisarmAndDestroyTimers) {
  FakeTime time;
  const TimePoint t0 = time.Now();
  std::vector<int64_t> ticks;
  auto ticker = time.NewTimer();
  std::function<void()> tick = [&] {
    ticks.push_back((time.Now() - t0).count());
    if (ticks.size() < 5) ticker->Arm(Duration(10), tick);
  };
  ticker->Arm(Duration(10), tick);
  auto victim = time.NewTimer();
  victim->Arm(Duration(25), [] { FAIL() << "destroyed timer fired"; });
  auto killer = time.NewTimer();
  killer->Arm(Duration(15), [&] { victim.reset(); });
  auto self_destruct = time.NewTimer();
  self_destruct->Arm(Duration(5), [&] { self_destruct.reset(); });
  time.Advance(Duration(1000));
  EXPECT_EQ(ticks, (std::vector<int64_t>{10, 20, 30, 40, 50}));
  EXPECT_EQ(victim, nullptr);
  EXPECT_EQ(self_destruct, nullptr);

  auto disarmed = time.NewTimer();
  disarmed->Arm(Duration(1), [] { FAIL() << "disarmed timer fired"; });
  disarmed->Disarm();
  time.Advance(Duration(10));
}

TEST(FakeTimeTest, WallClockJumpsDoNotMoveTimers) {
  FakeTime time;
  int runs = 0;
  auto t = time.NewTimer();
  t->Arm(seconds(10), [&] { ++runs; });
  const TimePoint before = time.Now();
  time.JumpWallClock(-seconds(3600));
  EXPECT_EQ(before - time.Now(), seconds(3600));
  EXPECT_EQ(time.NextTimerIn(), seconds(10));
  time.Advance(seconds(10));
  EXPECT_EQ(runs, 1);
}

TEST(FakeTimeTest, RunNextAndRunUntilIdle) {
  FakeTime time;
  const TimePoint t0 = time.Now();
  EXPECT_FALSE(time.RunNext());
  auto t = time.NewTimer();
  int runs = 0;
  t->Arm(seconds(7), [&] { ++runs; });
  EXPECT_TRUE(time.RunNext());
  EXPECT_EQ(time.Now() - t0, seconds(7));
  std::function<void()> again = [&] {
    if (++runs < 10) t->Arm(seconds(1), again);
  };
  t->Arm(seconds(1), again);
  EXPECT_TRUE(time.RunUntilIdle());
  EXPECT_EQ(runs, 10);
  t->Arm(seconds(100), [] {});
  EXPECT_FALSE(time.RunUntilIdle(seconds(5)));
  EXPECT_EQ(time.Now() - t0, seconds(7 + 9 + 5));
}

TEST(FakeTimeTest, TimersMayOutliveTheClock) {
  std::unique_ptr<Timer> t;
  {
    FakeTime time;
    t = time.NewTimer();
    t->Arm(seconds(1), [] {});
  }
  t->Arm(seconds(1), [] {});
  EXPECT_FALSE(t->armed());
}

}  // namespace
}  // namespace mi
