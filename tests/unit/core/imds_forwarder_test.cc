// UpstreamForwarder: pass-through requests on the IMDS budget (a caller job of
// their CallerTag), the upstream answer mapped to a ForwardResult.
#include "agent/imds_forwarder.h"

#include <gtest/gtest.h>

#include <optional>

#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"

namespace mi {
namespace {

class ImdsForwarderTest : public ::testing::Test {
 protected:
  ImdsForwarderTest() {
    budget_.rate_per_second = 5;
    budget_.burst = 5;
    budget_.max_concurrent = 1;
    budget_.max_queue = 1;
    budget_.max_queue_per_caller = 1;
    scheduler_ = std::make_unique<UpstreamScheduler>(budget_, time_, time_);
    forwarder_ = std::make_unique<UpstreamForwarder>(upstream_, *scheduler_);
  }
  static ForwardRequest Req() {
    ForwardRequest r;
    r.method = "GET";
    r.path_and_query = "/metadata/identity/getplatformmetadata";
    return r;
  }

  FakeTime time_;
  UpstreamScheduler::Options budget_;
  FakeUpstream upstream_;
  std::unique_ptr<UpstreamScheduler> scheduler_;
  std::unique_ptr<UpstreamForwarder> forwarder_;
};

TEST_F(ImdsForwarderTest, WaitsForItsTurnThenPassesTheAnswerThrough) {
  std::optional<ForwardResult> got;
  forwarder_->Forward(Req(), CallerTag::Uid(7), [&](ForwardResult r) { got = std::move(r); });
  EXPECT_EQ(upstream_.calls(), 0u) << "starts from the scheduler's timer, not inside Forward";
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 1u);
  EXPECT_EQ(upstream_.forwards()[0].path_and_query, "/metadata/identity/getplatformmetadata");
  EXPECT_EQ(scheduler_->stats().in_flight, 1);
  UpstreamResponse answer = FakeUpstream::Http(200, "{}");
  answer.server = "IMDS/150.870.65.1854";
  upstream_.Respond(std::move(answer));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->kind, ForwardResult::Kind::kHttp);
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, "{}");
  EXPECT_EQ(got->server, "IMDS/150.870.65.1854");
  EXPECT_EQ(scheduler_->stats().in_flight, 0);
}

TEST_F(ImdsForwarderTest, RefusedByTheBudgetIsShedAtOnce) {
  int answered = 0;
  forwarder_->Forward(Req(), CallerTag::Uid(7), [&](ForwardResult) { ++answered; });  // starts
  time_.RunPending();
  forwarder_->Forward(Req(), CallerTag::Uid(7), [&](ForwardResult) { ++answered; });  // queued
  std::optional<ForwardResult> third;
  forwarder_->Forward(Req(), CallerTag::Uid(7), [&](ForwardResult r) { third = std::move(r); });
  ASSERT_TRUE(third);
  EXPECT_EQ(third->kind, ForwardResult::Kind::kShed);
  EXPECT_EQ(answered, 0);
  upstream_.Respond(FakeUpstream::Http(200));
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(200));
  EXPECT_EQ(answered, 2);
}

TEST_F(ImdsForwarderTest, ImdsThrottlingPausesTheBudget) {
  std::optional<ForwardResult> got;
  forwarder_->Forward(Req(), CallerTag::Uid(7), [&](ForwardResult r) { got = std::move(r); });
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(429, "{}"));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, 429);
  EXPECT_GT(scheduler_->stats().paused_until, time_.Now());
}

TEST_F(ImdsForwarderTest, TransportOutcomesMap) {
  EXPECT_EQ(UpstreamForwarder::ResultOf(FakeUpstream::Transport(UpstreamResponse::Outcome::kTooLarge)).kind,
            ForwardResult::Kind::kTooLarge);
  EXPECT_EQ(UpstreamForwarder::ResultOf(FakeUpstream::Transport(UpstreamResponse::Outcome::kTimeout)).kind,
            ForwardResult::Kind::kUnavailable);
  ForwardResult refused =
      UpstreamForwarder::ResultOf(FakeUpstream::Transport(UpstreamResponse::Outcome::kConnectError));
  EXPECT_EQ(refused.kind, ForwardResult::Kind::kUnavailable);
  EXPECT_EQ(refused.description, "fake transport error");
}

TEST_F(ImdsForwarderTest, DestroyedBeforeItsTurnDoesNothing) {
  bool answered = false;
  forwarder_->Forward(Req(), CallerTag::Uid(7), [&](ForwardResult) { answered = true; });
  forwarder_.reset();
  time_.RunPending();
  EXPECT_EQ(upstream_.calls(), 0u);
  EXPECT_FALSE(answered);
}

}  // namespace
}  // namespace mi
