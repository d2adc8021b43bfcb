#include "agent/upstream_scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "tests/fakes/fake_random.h"
#include "tests/fakes/fake_time.h"

namespace mi {
namespace {

using std::chrono::seconds;
using Priority = UpstreamScheduler::Priority;

// ---------------------------------------------------------------------------
// UpstreamScheduler

class UpstreamSchedulerTest : public ::testing::Test {
 protected:
  UpstreamSchedulerTest() {
    budget_.rate_per_second = 5;
    budget_.burst = 5;
    budget_.max_concurrent = 2;
    budget_.max_queue = 1024;
    budget_.max_background_queue = 1024;
    budget_.max_queue_per_caller = 1024;  // the fair-share tests set their own
  }
  void Make() { scheduler_ = std::make_unique<UpstreamScheduler>(budget_, time_, time_); }
  Duration Elapsed() const { return time_.Now() - t0_; }

  // A job that records its name and start time, and finishes at once.
  UpstreamScheduler::JobId Quick(Priority p, std::string name, CallerTag owner = CallerTag()) {
    return scheduler_->Enqueue(p, owner, [this, name] {
      order_.push_back(name);
      starts_.push_back(Elapsed());
      scheduler_->Finished();
    });
  }
  // A job that holds its slot until Release(name).
  UpstreamScheduler::JobId Held(Priority p, std::string name, CallerTag owner = CallerTag()) {
    return scheduler_->Enqueue(p, owner, [this, name] {
      order_.push_back(name);
      starts_.push_back(Elapsed());
    });
  }
  void Release() { scheduler_->Finished(); }

  FakeTime time_;
  const TimePoint t0_ = time_.Now();
  UpstreamScheduler::Options budget_;
  std::unique_ptr<UpstreamScheduler> scheduler_;
  std::vector<std::string> order_;
  std::vector<Duration> starts_;
};

TEST_F(UpstreamSchedulerTest, NothingStartsInsideEnqueue) {
  Make();
  Quick(Priority::kCaller, "a");
  EXPECT_TRUE(order_.empty());
  time_.RunPending();
  EXPECT_EQ(order_, (std::vector<std::string>{"a"}));
}

TEST_F(UpstreamSchedulerTest, RateIsNeverExceededOverAMinute) {
  budget_.max_concurrent = 1000;  // isolate the bucket
  Make();
  int finished = 0;
  std::vector<std::unique_ptr<Timer>> timers;
  for (int i = 0; i < 500; ++i) {
    auto id = scheduler_->Enqueue(i % 3 == 0 ? Priority::kCaller : Priority::kBackground, CallerTag(), [&] {
      starts_.push_back(Elapsed());
      // Each request takes 150 ms.
      timers.push_back(time_.NewTimer());
      timers.back()->Arm(Duration(150), [&] {
        ++finished;
        scheduler_->Finished();
      });
    });
    ASSERT_NE(id, 0u);
  }
  time_.Advance(seconds(60));
  // 5 at once (the burst), then one per 200 ms.
  EXPECT_EQ(starts_.size(), 305u);
  // The token-bucket bound over every window: n starts in [a, b] need
  // n <= burst + rate * (b - a).
  for (size_t i = 0; i < starts_.size(); ++i) {
    for (size_t j = i; j < starts_.size(); ++j) {
      const double allowed = 5 + 5 * (starts_[j] - starts_[i]).count() / 1000.0;
      ASSERT_LE(static_cast<double>(j - i + 1), allowed + 1e-6) << "starts " << i << ".." << j;
    }
  }
  EXPECT_EQ(scheduler_->stats().queued_caller + scheduler_->stats().queued_background, 500u - 305u);
  time_.Advance(seconds(60));
  EXPECT_EQ(starts_.size(), 500u);
  EXPECT_EQ(finished, 500);
  EXPECT_EQ(scheduler_->stats().in_flight, 0);
  EXPECT_EQ(scheduler_->stats().started_total, 500u);
}

TEST_F(UpstreamSchedulerTest, ConcurrencyIsNeverExceeded) {
  budget_.rate_per_second = 1000;
  budget_.burst = 1000;
  budget_.max_concurrent = 3;
  Make();
  FakeRandom random;
  random.UseSequence(1);
  int running = 0, max_running = 0, done = 0;
  std::vector<std::unique_ptr<Timer>> timers;
  for (int i = 0; i < 200; ++i) {
    scheduler_->Enqueue(i % 2 ? Priority::kCaller : Priority::kBackground, CallerTag(), [&] {
      ++running;
      max_running = std::max(max_running, running);
      EXPECT_LE(scheduler_->stats().in_flight, 3);
      timers.push_back(time_.NewTimer());
      timers.back()->Arm(Duration(10 + static_cast<int64_t>(random.Uniform() * 500)), [&] {
        --running;
        ++done;
        scheduler_->Finished();
      });
    });
  }
  time_.RunUntilIdle();
  EXPECT_EQ(done, 200);
  EXPECT_EQ(max_running, 3);
  EXPECT_EQ(scheduler_->stats().in_flight, 0);
}

TEST_F(UpstreamSchedulerTest, CallersStartBeforeBackgroundFifoWithin) {
  budget_.max_concurrent = 1;
  Make();
  Held(Priority::kBackground, "b0");  // takes the only slot
  time_.RunPending();
  Quick(Priority::kBackground, "b1");
  Quick(Priority::kBackground, "b2");
  Quick(Priority::kCaller, "c1");
  Quick(Priority::kBackground, "b3");
  Quick(Priority::kCaller, "c2");
  time_.Advance(seconds(5));
  EXPECT_EQ(order_, (std::vector<std::string>{"b0"}));
  Release();
  time_.Advance(seconds(5));
  EXPECT_EQ(order_, (std::vector<std::string>{"b0", "c1", "c2", "b1", "b2", "b3"}));
}

TEST_F(UpstreamSchedulerTest, PromoteMovesABackgroundJobAheadOfBackground) {
  budget_.max_concurrent = 1;
  Make();
  Held(Priority::kBackground, "busy");
  time_.RunPending();
  Quick(Priority::kBackground, "b1");
  Quick(Priority::kBackground, "b2");
  auto b3 = Quick(Priority::kBackground, "b3");
  Quick(Priority::kCaller, "c1");
  scheduler_->Promote(b3, CallerTag());
  scheduler_->Promote(b3, CallerTag());      // already a caller job: no-op
  scheduler_->Promote(123456, CallerTag());  // unknown: no-op
  EXPECT_EQ(scheduler_->stats().queued_caller, 2u);
  EXPECT_EQ(scheduler_->stats().queued_background, 2u);
  Release();
  time_.Advance(seconds(5));
  EXPECT_EQ(order_, (std::vector<std::string>{"busy", "c1", "b3", "b1", "b2"}));
}

TEST_F(UpstreamSchedulerTest, FullQueueRejects) {
  budget_.max_queue = 3;
  budget_.max_background_queue = 1;
  budget_.max_concurrent = 1;
  Make();
  EXPECT_NE(Held(Priority::kCaller, "a"), 0u);
  EXPECT_NE(Quick(Priority::kBackground, "b"), 0u);
  EXPECT_NE(Quick(Priority::kCaller, "c"), 0u);
  EXPECT_NE(Quick(Priority::kCaller, "d"), 0u);
  EXPECT_EQ(Quick(Priority::kCaller, "rejected"), UpstreamScheduler::kRejected);
  EXPECT_EQ(scheduler_->stats().rejected_total, 1u);
  time_.RunPending();  // "a" starts and leaves the queue
  EXPECT_NE(Quick(Priority::kCaller, "e"), 0u);
  EXPECT_EQ(Quick(Priority::kBackground, "rejected"), UpstreamScheduler::kRejected);
  EXPECT_EQ(scheduler_->stats().rejected_total, 2u);
  Release();
  time_.Advance(seconds(5));
  EXPECT_EQ(order_, (std::vector<std::string>{"a", "c", "d", "e", "b"}));
}

TEST_F(UpstreamSchedulerTest, BackgroundNeverTakesACallersPlace) {
  budget_.max_queue = 3;
  budget_.max_background_queue = 50;
  budget_.max_concurrent = 1;
  Make();
  Held(Priority::kCaller, "busy");
  time_.RunPending();
  // Refreshes fill their own share...
  for (int i = 0; i < 50; ++i) ASSERT_NE(Quick(Priority::kBackground, "b"), 0u) << i;
  EXPECT_EQ(Quick(Priority::kBackground, "b"), UpstreamScheduler::kRejected) << "the background share is bounded";
  // ...and callers still have all of theirs.
  for (int i = 0; i < 3; ++i) EXPECT_NE(Quick(Priority::kCaller, "c"), 0u) << i;
  EXPECT_EQ(Quick(Priority::kCaller, "c"), UpstreamScheduler::kRejected);
  EXPECT_EQ(scheduler_->stats().queued_caller, 3u);
  EXPECT_EQ(scheduler_->stats().queued_background, 50u);
  Release();
  time_.RunPending();
  EXPECT_EQ(order_, (std::vector<std::string>{"busy", "c", "c", "c", "b"})) << "callers still start first";
}

TEST_F(UpstreamSchedulerTest, BackgroundKeepsAShareOfStartsUnderACallerFlood) {
  budget_.max_concurrent = 1;
  budget_.rate_per_second = 1;
  budget_.burst = 1;
  Make();
  Quick(Priority::kBackground, "refresh-1");
  Quick(Priority::kBackground, "refresh-2");
  // Callers never stop coming: the caller queue is never empty.
  std::unique_ptr<Timer> flood = time_.NewTimer();
  int callers = 0;
  std::function<void()> more = [&] {
    for (int i = 0; i < 3 && callers < 300; ++i, ++callers) Quick(Priority::kCaller, "c");
    flood->Arm(Duration(500), more);
  };
  more();
  time_.Advance(seconds(20));
  ASSERT_GT(scheduler_->stats().queued_caller, 0u) << "the flood went on throughout";
  std::vector<std::string> expected(12, "c");
  expected[4] = "refresh-1";
  expected[9] = "refresh-2";
  ASSERT_GE(order_.size(), 12u);
  order_.resize(12);
  EXPECT_EQ(order_, expected) << "one background start after every " << UpstreamScheduler::kCallerStartsPerBackground
                              << " caller starts";
  flood->Disarm();
}

TEST_F(UpstreamSchedulerTest, DemoteMovesACallerJobToTheBackOfTheBackground) {
  budget_.max_concurrent = 1;
  budget_.max_background_queue = 2;
  Make();
  Held(Priority::kCaller, "busy");
  time_.RunPending();
  auto c1 = Quick(Priority::kCaller, "c1");
  Quick(Priority::kCaller, "c2");
  auto b1 = Quick(Priority::kBackground, "b1");
  EXPECT_TRUE(scheduler_->Demote(c1));
  EXPECT_TRUE(scheduler_->Demote(b1)) << "already background";
  EXPECT_FALSE(scheduler_->Demote(123456)) << "unknown";
  EXPECT_EQ(scheduler_->stats().queued_caller, 1u);
  EXPECT_EQ(scheduler_->stats().queued_background, 2u);
  // The background share is full: the job stays a caller job.
  auto c3 = Quick(Priority::kCaller, "c3");
  EXPECT_FALSE(scheduler_->Demote(c3));
  EXPECT_EQ(scheduler_->stats().queued_caller, 2u);
  Release();
  time_.Advance(seconds(5));
  EXPECT_EQ(order_, (std::vector<std::string>{"busy", "c2", "c3", "b1", "c1"}));
  EXPECT_FALSE(scheduler_->Demote(c1)) << "started";
}

TEST_F(UpstreamSchedulerTest, PauseDelaysEverythingAndOnlyExtends) {
  Make();
  scheduler_->PauseFor(seconds(10));
  Quick(Priority::kCaller, "c");
  Quick(Priority::kBackground, "b");
  time_.Advance(seconds(5));
  EXPECT_TRUE(order_.empty());
  EXPECT_EQ(scheduler_->stats().paused_until, t0_ + seconds(10));
  scheduler_->PauseFor(seconds(1));  // ends before the pause in force: ignored
  EXPECT_EQ(scheduler_->stats().paused_until, t0_ + seconds(10));
  scheduler_->PauseFor(seconds(8));  // extends to 13 s
  EXPECT_EQ(scheduler_->stats().paused_until, t0_ + seconds(13));
  time_.Advance(Duration(7999));
  EXPECT_TRUE(order_.empty());
  time_.Advance(Duration(1));
  EXPECT_EQ(order_, (std::vector<std::string>{"c", "b"}));
  EXPECT_EQ(starts_[0], seconds(13));
  EXPECT_EQ(scheduler_->stats().pauses_total, 3u);
  EXPECT_EQ(scheduler_->stats().paused_until, TimePoint{});
}

TEST_F(UpstreamSchedulerTest, PauseHoldsJobsThatWereWaitingForASlot) {
  budget_.max_concurrent = 1;
  Make();
  Held(Priority::kCaller, "first");
  Quick(Priority::kCaller, "second");
  time_.RunPending();
  scheduler_->PauseFor(seconds(3));
  Release();
  time_.Advance(Duration(2999));
  EXPECT_EQ(order_.size(), 1u);
  time_.Advance(Duration(1));
  EXPECT_EQ(order_.size(), 2u);
}

TEST_F(UpstreamSchedulerTest, BackwardClockStepNeitherStallsNorStretches) {
  budget_.burst = 1;
  budget_.rate_per_second = 1;
  Make();
  Quick(Priority::kCaller, "a");
  time_.RunPending();
  Quick(Priority::kCaller, "b");
  time_.JumpWallClock(-seconds(3600));
  time_.Advance(seconds(1));  // the next token is due 1 s later, by the timer
  EXPECT_EQ(order_.size(), 2u);
  scheduler_->PauseFor(seconds(5));
  Quick(Priority::kCaller, "c");
  time_.Advance(seconds(2));
  time_.JumpWallClock(-seconds(3600));
  time_.Advance(Duration(2999));
  EXPECT_EQ(order_.size(), 2u);
  time_.Advance(Duration(1));  // 5 s of real (monotonic) time
  EXPECT_EQ(order_.size(), 3u);
}

TEST_F(UpstreamSchedulerTest, CancelRemovesAQueuedJob) {
  budget_.max_concurrent = 1;
  Make();
  auto a = Held(Priority::kCaller, "a");
  auto b = Quick(Priority::kCaller, "b");
  auto c = Quick(Priority::kBackground, "c");
  time_.RunPending();
  EXPECT_FALSE(scheduler_->Cancel(a));  // started: the owner calls Finished()
  EXPECT_TRUE(scheduler_->Cancel(b));
  EXPECT_FALSE(scheduler_->Cancel(b));
  EXPECT_EQ(scheduler_->stats().queued_caller, 0u);
  Release();
  time_.Advance(seconds(5));
  EXPECT_EQ(order_, (std::vector<std::string>{"a", "c"}));
  EXPECT_FALSE(scheduler_->Cancel(c));
  // Cancelling the only queued job leaves nothing armed.
  auto d = Quick(Priority::kCaller, "d");
  EXPECT_TRUE(scheduler_->Cancel(d));
  time_.Advance(seconds(5));
  EXPECT_EQ(order_.size(), 2u);
  EXPECT_EQ(time_.armed_timers(), 0u);
}

// --- the fair share: round robin over owners, a share of the queue each ------------

const CallerTag kA = CallerTag::Uid(1001);
const CallerTag kB = CallerTag::Uid(1002);
const CallerTag kC = CallerTag::Uid(1003);

TEST_F(UpstreamSchedulerTest, ANewcomerStartsWithinTwoStartsOfAFloodOfAnotherCaller) {
  budget_.max_concurrent = 1;
  Make();
  for (int i = 0; i < 100; ++i) ASSERT_NE(Quick(Priority::kCaller, "a" + std::to_string(i), kA), 0u) << i;
  Quick(Priority::kCaller, "b", kB);
  EXPECT_EQ(scheduler_->stats().caller_owners, 2u);
  time_.Advance(seconds(60));
  ASSERT_EQ(order_.size(), 101u);
  const size_t b_at = std::find(order_.begin(), order_.end(), "b") - order_.begin();
  EXPECT_LT(b_at, 2u) << "B waits for at most one of A's jobs, not for all 100";
  // A's own jobs keep their order (FIFO within a caller).
  std::vector<std::string> a_order;
  for (const std::string& name : order_) {
    if (name != "b") a_order.push_back(name);
  }
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a_order[i], "a" + std::to_string(i));
  EXPECT_EQ(scheduler_->stats().caller_owners, 0u);
}

TEST_F(UpstreamSchedulerTest, CallerJobsTakeTurnsInTheOrderTheirOwnersCame) {
  budget_.max_concurrent = 1;
  Make();
  Held(Priority::kCaller, "busy", kC);
  time_.RunPending();
  for (int i = 0; i < 3; ++i) Quick(Priority::kCaller, "a" + std::to_string(i), kA);
  for (int i = 0; i < 2; ++i) Quick(Priority::kCaller, "b" + std::to_string(i), kB);
  Quick(Priority::kCaller, "c0", kC);
  Release();
  time_.Advance(seconds(10));
  EXPECT_EQ(order_, (std::vector<std::string>{"busy", "a0", "b0", "c0", "a1", "b1", "a2"}));
}

TEST_F(UpstreamSchedulerTest, BackgroundKeepsItsShareAmongSeveralCallers) {
  budget_.max_concurrent = 1;
  Make();
  Held(Priority::kBackground, "busy");
  time_.RunPending();
  for (int i = 0; i < 3; ++i) {
    Quick(Priority::kCaller, "a" + std::to_string(i), kA);
    Quick(Priority::kCaller, "b" + std::to_string(i), kB);
  }
  Quick(Priority::kBackground, "r");
  Release();
  time_.Advance(seconds(10));
  EXPECT_EQ(order_, (std::vector<std::string>{"busy", "a0", "b0", "a1", "b1", "r", "a2", "b2"}));
}

TEST_F(UpstreamSchedulerTest, EachCallerHasItsShareOfTheQueue) {
  budget_.max_concurrent = 1;
  budget_.max_queue = 10;
  budget_.max_queue_per_caller = 2;
  Make();
  Held(Priority::kCaller, "busy", kA);
  time_.RunPending();  // started: no longer queued, no longer in A's share
  EXPECT_NE(Quick(Priority::kCaller, "a0", kA), 0u);
  EXPECT_FALSE(scheduler_->CallerShareFull(kA));
  EXPECT_NE(Quick(Priority::kCaller, "a1", kA), 0u);
  EXPECT_TRUE(scheduler_->CallerShareFull(kA));
  EXPECT_EQ(Quick(Priority::kCaller, "a2", kA), UpstreamScheduler::kRejected) << "A holds its share";
  EXPECT_NE(Quick(Priority::kCaller, "b0", kB), 0u) << "B still finds room";
  EXPECT_FALSE(scheduler_->CallerShareFull(kB));
  // Background work is no caller's: never refused for a caller's share.
  EXPECT_NE(Quick(Priority::kBackground, "r", kA), 0u);
  EXPECT_EQ(scheduler_->stats().rejected_total, 1u);
  EXPECT_EQ(scheduler_->stats().rejected_caller_share_total, 1u);
  Release();
  time_.Advance(seconds(10));
  EXPECT_EQ(order_, (std::vector<std::string>{"busy", "a0", "b0", "a1", "r"}));
}

TEST_F(UpstreamSchedulerTest, PromoteDemoteAndCancelKeepTheRoundRobinInStep) {
  budget_.max_concurrent = 1;
  budget_.max_queue_per_caller = 1;
  Make();
  Held(Priority::kBackground, "busy");
  time_.RunPending();
  Quick(Priority::kCaller, "a0", kA);
  auto b_refresh = Quick(Priority::kBackground, "b-refresh");
  auto a_refresh = Quick(Priority::kBackground, "a-refresh");
  // A promoted job is its new owner's, past the owner's share (it was admitted already).
  scheduler_->Promote(a_refresh, kA);
  scheduler_->Promote(b_refresh, kB);
  EXPECT_EQ(scheduler_->stats().queued_caller, 3u);
  EXPECT_EQ(scheduler_->stats().caller_owners, 2u);
  // Demoting B's only job takes B out of the round; cancelling it too.
  EXPECT_TRUE(scheduler_->Demote(b_refresh));
  EXPECT_EQ(scheduler_->stats().caller_owners, 1u);
  EXPECT_TRUE(scheduler_->Cancel(b_refresh));
  auto c0 = Quick(Priority::kCaller, "c0", kC);
  EXPECT_TRUE(scheduler_->Cancel(c0));
  EXPECT_EQ(scheduler_->stats().caller_owners, 1u);
  Quick(Priority::kCaller, "b0", kB);
  Release();
  time_.Advance(seconds(10));
  EXPECT_EQ(order_, (std::vector<std::string>{"busy", "a0", "b0", "a-refresh"}));
  EXPECT_EQ(scheduler_->stats().caller_owners, 0u);
  EXPECT_EQ(scheduler_->stats().queued_caller, 0u);
}

TEST_F(UpstreamSchedulerTest, StartMayReenter) {
  budget_.max_concurrent = 1;
  Make();
  scheduler_->Enqueue(Priority::kCaller, CallerTag(), [&] {
    order_.push_back("outer");
    Quick(Priority::kCaller, "inner");
    scheduler_->Finished();
  });
  time_.Advance(seconds(1));
  EXPECT_EQ(order_, (std::vector<std::string>{"outer", "inner"}));
}

TEST_F(UpstreamSchedulerTest, ConfigChangesApplyAtOnce) {
  budget_.max_concurrent = 1;
  Make();
  for (int i = 0; i < 4; ++i) Held(Priority::kCaller, "j" + std::to_string(i));
  time_.Advance(seconds(1));
  EXPECT_EQ(order_.size(), 1u);
  UpstreamScheduler::Options wider = budget_;
  wider.max_concurrent = 3;
  scheduler_->set_options(wider);
  time_.Advance(seconds(1));
  EXPECT_EQ(order_.size(), 3u);
  EXPECT_EQ(scheduler_->stats().in_flight, 3);
}

TEST_F(UpstreamSchedulerTest, DestroyingTheSchedulerDropsQueuedJobs) {
  budget_.max_concurrent = 1;
  Make();
  Held(Priority::kCaller, "a");
  Quick(Priority::kCaller, "b");
  time_.RunPending();
  scheduler_.reset();
  time_.Advance(seconds(10));
  EXPECT_EQ(order_, (std::vector<std::string>{"a"}));
  EXPECT_EQ(time_.live_timers(), 0u);
}

}  // namespace
}  // namespace mi
