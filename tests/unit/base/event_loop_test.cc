// The real loop, no sockets: posted work, UvTimer's contract (the one FakeTime
// copies, tests/fakes/fake_time.h) and a clean close.
#include "agent/base/event_loop.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace mi {
namespace {

TEST(EventLoopTest, PostFromAnotherThreadRunsOnTheLoop) {
  EventLoop loop;
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::thread::id ran_on;
  // A timer keeps the loop running until the post arrives (bounded: 10 s).
  std::unique_ptr<Timer> guard = loop.NewTimer();
  guard->Arm(Duration(10000), [&] { loop.Stop(); });
  std::thread poster([&] {
    loop.Post([&] {
      ran_on = std::this_thread::get_id();
      guard->Disarm();
    });
  });
  loop.Run();
  poster.join();
  EXPECT_EQ(ran_on, loop_thread);
  guard.reset();
  EXPECT_TRUE(loop.Close());
}

TEST(EventLoopTest, UvTimerZeroDelayFiresOnALaterTurnAndDisarmCancels) {
  EventLoop loop;
  std::vector<int> fired;
  std::unique_ptr<Timer> a = loop.NewTimer();
  std::unique_ptr<Timer> b = loop.NewTimer();
  std::unique_ptr<Timer> c = loop.NewTimer();
  a->Arm(Duration(0), [&] {
    fired.push_back(1);
    a->Arm(Duration(0), [&] { fired.push_back(3); });  // re-arm from its own callback
  });
  b->Arm(Duration(0), [&] { fired.push_back(2); });
  c->Arm(Duration(0), [&] { fired.push_back(99); });
  EXPECT_TRUE(fired.empty()) << "never inside Arm()";
  EXPECT_TRUE(c->armed());
  c->Disarm();
  EXPECT_FALSE(c->armed());
  loop.Run();  // ends when no timer is armed
  EXPECT_EQ(fired, (std::vector<int>{1, 2, 3}));
  EXPECT_FALSE(a->armed());
  a.reset();
  b.reset();
  c.reset();
  EXPECT_TRUE(loop.Close()) << "every handle closed";
}

TEST(EventLoopTest, ADestroyedTimerNeverFires) {
  EventLoop loop;
  bool fired = false;
  std::unique_ptr<Timer> t = loop.NewTimer();
  t->Arm(Duration(0), [&] { fired = true; });
  t.reset();
  loop.Run();
  EXPECT_FALSE(fired);
  EXPECT_TRUE(loop.Close());
}

TEST(EventLoopTest, TheClockIsTheWallClock) {
  EventLoop loop;
  EXPECT_GT(ToEpochSeconds(loop.clock().Now()), 1577836800);
  EXPECT_TRUE(loop.Close());
}

}  // namespace
}  // namespace mi
