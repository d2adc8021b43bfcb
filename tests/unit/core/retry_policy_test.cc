#include "agent/retry_policy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/fakes/fake_random.h"
#include "tests/fakes/fake_time.h"

namespace mi {
namespace {

using Outcome = UpstreamResponse::Outcome;
using std::chrono::seconds;

UpstreamResponse Http(int status, std::string retry_after = "") {
  UpstreamResponse r;
  r.outcome = Outcome::kHttp;
  r.status = status;
  r.retry_after = std::move(retry_after);
  return r;
}

UpstreamResponse Transport(Outcome outcome) {
  UpstreamResponse r;
  r.outcome = outcome;
  r.error = "boom";
  return r;
}

const TimePoint kT0 = FakeTime::DefaultStart();

// Feeds `response` for every attempt, each failing instantly, and returns the
// start offset (from the first attempt) of every attempt made.
std::vector<Duration> AttemptStarts(const RetryPolicy& policy, const UpstreamResponse& response) {
  RetryState state;
  std::vector<Duration> starts = {Duration(0)};
  TimePoint now = kT0;
  for (int i = 0; i < 100; ++i) {
    RetryDecision d = policy.Decide(state, response, now);
    if (!d.retry) break;
    now += d.delay;
    starts.push_back(now - kT0);
  }
  return starts;
}

std::vector<Duration> Secs(std::vector<int> s) {
  std::vector<Duration> out;
  for (int v : s) out.push_back(seconds(v));
  return out;
}

class RetryPolicyTest : public ::testing::Test {
 protected:
  RetryPolicy::Options config_;     // defaults: 5 attempts, delta 2 s, max 60 s, 410 window 70 s
  FakeRandom random_{0.5};   // 0.5: jitter factor exactly 1
  RetryPolicy policy_{config_, random_};
};

TEST_F(RetryPolicyTest, RetryableOutcomesFollowTheImdsSchedule) {
  const std::vector<UpstreamResponse> retryable = {
      Http(404), Http(429), Http(500), Http(502), Http(503), Http(504), Http(599),
      Transport(Outcome::kTimeout), Transport(Outcome::kConnectError), Transport(Outcome::kTooLarge)};
  for (const auto& r : retryable) {
    SCOPED_TRACE("outcome " + std::to_string(static_cast<int>(r.outcome)) + " status " +
                 std::to_string(r.status));
    EXPECT_TRUE(RetryPolicy::IsRetryable(r));
    EXPECT_EQ(AttemptStarts(policy_, r), Secs({0, 2, 6, 14, 30}));
  }
}

TEST_F(RetryPolicyTest, ARefusedAnswerIsNeverRetried) {
  EXPECT_FALSE(RetryPolicy::IsRetryable(Transport(Outcome::kRefused)));
  RetryState state;
  EXPECT_FALSE(policy_.Decide(state, Transport(Outcome::kRefused), kT0).retry);
}

TEST_F(RetryPolicyTest, OtherStatusesAreNeverRetried) {
  for (int status : {200, 301, 302, 400, 401, 403, 405, 409, 413, 422, 499}) {
    SCOPED_TRACE(status);
    EXPECT_FALSE(RetryPolicy::IsRetryable(Http(status)));
    RetryState state;
    RetryDecision d = policy_.Decide(state, Http(status, "5"), kT0);
    EXPECT_FALSE(d.retry);
    EXPECT_FALSE(d.throttled);
    EXPECT_EQ(state.attempts, 1);
  }
}

TEST_F(RetryPolicyTest, MalformedSuccessBodyIsRetried) {
  RetryState state;
  std::vector<Duration> delays;
  TimePoint now = kT0;
  for (;;) {
    RetryDecision d = policy_.DecideMalformed(state, now);
    if (!d.retry) break;
    delays.push_back(d.delay);
    now += d.delay;
  }
  EXPECT_EQ(delays, Secs({2, 4, 8, 16}));
  EXPECT_EQ(state.attempts, 5);
}

TEST_F(RetryPolicyTest, MaxAttemptsIsConfigurable) {
  config_.max_attempts = 3;
  policy_.set_options(config_);
  EXPECT_EQ(AttemptStarts(policy_, Http(500)), Secs({0, 2, 6}));
  config_.max_attempts = 1;
  policy_.set_options(config_);
  EXPECT_EQ(AttemptStarts(policy_, Http(500)), Secs({0}));
}

TEST_F(RetryPolicyTest, JitterStaysWithinTwentyPercent) {
  random_.UseSequence(42);
  Duration lo = Duration::max(), hi = Duration::min();
  for (int i = 0; i < 10000; ++i) {
    RetryState state;
    state.attempts = 2;  // the next failure is the 3rd: base wait 8 s
    RetryDecision d = policy_.Decide(state, Http(503), kT0);
    ASSERT_TRUE(d.retry);
    lo = std::min(lo, d.delay);
    hi = std::max(hi, d.delay);
  }
  EXPECT_GE(lo, Duration(6400));
  EXPECT_LE(hi, Duration(9600));
  // The draws actually spread over the range.
  EXPECT_LT(lo, Duration(6500));
  EXPECT_GT(hi, Duration(9500));
}

TEST_F(RetryPolicyTest, JitterExtremes) {
  random_.Script({0.0, 0.999999999});
  RetryState s1;
  EXPECT_EQ(policy_.Decide(s1, Http(500), kT0).delay, Duration(1600));
  RetryState s2;
  EXPECT_EQ(policy_.Decide(s2, Http(500), kT0).delay, Duration(2400));
}

TEST_F(RetryPolicyTest, WaitIsCappedAtMaxDelayEvenWithJitter) {
  config_.max_attempts = 10;
  policy_.set_options(config_);
  random_.set_value(0.999);
  RetryState state;
  std::vector<Duration> delays;
  TimePoint now = kT0;
  for (;;) {
    RetryDecision d = policy_.Decide(state, Transport(Outcome::kTimeout), now);
    if (!d.retry) break;
    delays.push_back(d.delay);
    now += d.delay;
  }
  ASSERT_EQ(delays.size(), 9u);
  // 2,4,8,16,32 (x1.1996) then 64,128,... capped at 60 s.
  EXPECT_EQ(delays[4], Duration(38387));
  for (size_t i = 5; i < delays.size(); ++i) EXPECT_EQ(delays[i], seconds(60)) << i;
}

TEST_F(RetryPolicyTest, GoneKeepsRetryingForSeventySecondsAfterTheFirst410) {
  // Instant 410s: 0, 2, 6, 14, 30 (max_attempts reached), 62, then one last
  // attempt at the window's end (70 s), then give up.
  EXPECT_EQ(AttemptStarts(policy_, Http(410)), Secs({0, 2, 6, 14, 30, 62, 70}));
}

TEST_F(RetryPolicyTest, GoneWindowCoversOtherFailuresDuringTheUpgrade) {
  RetryState state;
  TimePoint now = kT0;
  // Attempts 1-4 fail with 500, the 5th with 410 at t=30 s: the window runs to 100 s.
  for (int i = 0; i < 4; ++i) now += policy_.Decide(state, Http(500), now).delay;
  ASSERT_EQ(now - kT0, seconds(30));
  RetryDecision d = policy_.Decide(state, Http(410), now);
  ASSERT_TRUE(d.retry);
  EXPECT_EQ(d.delay, seconds(32));
  now += d.delay;  // 62 s
  // IMDS refuses connections while upgrading: still inside the window.
  d = policy_.Decide(state, Transport(Outcome::kConnectError), now);
  ASSERT_TRUE(d.retry);
  EXPECT_EQ(d.delay, seconds(38));  // 60 s backoff, shortened to the window's end at 100 s
  now += d.delay;
  d = policy_.Decide(state, Http(410), now);
  EXPECT_FALSE(d.retry);
  // A non-retryable answer inside the window still stops at once.
  RetryState other;
  policy_.Decide(other, Http(410), kT0);
  EXPECT_FALSE(policy_.Decide(other, Http(403), kT0 + seconds(2)).retry);
}

TEST_F(RetryPolicyTest, GoneWindowIsConfigurable) {
  config_.gone_window = seconds(20);
  policy_.set_options(config_);
  // Within max_attempts the normal schedule applies; past it the window is over.
  EXPECT_EQ(AttemptStarts(policy_, Http(410)), Secs({0, 2, 6, 14, 30}));
}

TEST_F(RetryPolicyTest, RetryAfterSecondsIsAFloor) {
  RetryState state;
  RetryDecision d = policy_.Decide(state, Http(503, "10"), kT0);
  ASSERT_TRUE(d.retry);
  EXPECT_EQ(d.delay, seconds(10));
  EXPECT_FALSE(d.throttled);
  // Shorter than the backoff: the backoff wins.
  d = policy_.Decide(state, Http(503, "1"), kT0);
  EXPECT_EQ(d.delay, seconds(4));
}

TEST_F(RetryPolicyTest, RetryAfterHttpDate) {
  const TimePoint now = FromEpochSeconds(784111777 - 25);  // Sun, 06 Nov 1994 08:49:12 GMT
  RetryState state;
  RetryDecision d = policy_.Decide(state, Http(503, "Sun, 06 Nov 1994 08:49:37 GMT"), now);
  ASSERT_TRUE(d.retry);
  EXPECT_EQ(d.delay, seconds(25));
}

TEST_F(RetryPolicyTest, GarbageRetryAfterIsIgnored) {
  for (const char* garbage : {"soon", "-5", "1.5", "10s", "Sun, 06 Nov 1994", "0x10"}) {
    SCOPED_TRACE(garbage);
    RetryState state;
    RetryDecision d = policy_.Decide(state, Http(503, garbage), kT0);
    ASSERT_TRUE(d.retry);
    EXPECT_EQ(d.delay, seconds(2));
  }
}

TEST_F(RetryPolicyTest, RetryAfterIsCapped) {
  RetryState state;
  RetryDecision d = policy_.Decide(state, Http(503, "3600"), kT0);
  ASSERT_TRUE(d.retry);
  EXPECT_EQ(d.delay, seconds(60));
  config_.retry_after_cap = seconds(30);
  policy_.set_options(config_);
  RetryState other;
  EXPECT_EQ(policy_.Decide(other, Http(503, "3600"), kT0).delay, seconds(30));
}

TEST_F(RetryPolicyTest, ThrottledPausesTheBudgetEvenOnTheLastAttempt) {
  RetryState state;
  RetryDecision d = policy_.Decide(state, Http(429, "7"), kT0);
  EXPECT_TRUE(d.retry);
  EXPECT_TRUE(d.throttled);
  EXPECT_EQ(d.delay, seconds(7));
  EXPECT_EQ(d.pause, seconds(7));
  state.attempts = 4;
  d = policy_.Decide(state, Http(429, "12"), kT0);
  EXPECT_FALSE(d.retry);
  EXPECT_TRUE(d.throttled);
  EXPECT_EQ(d.pause, seconds(32));  // backoff after a 5th failure: 32 s > Retry-After 12 s
  // Without Retry-After the pause is the backoff.
  RetryState fresh;
  d = policy_.Decide(fresh, Http(429), kT0);
  EXPECT_EQ(d.pause, seconds(2));
}

TEST(ParseRetryAfterTest, DeltaSeconds) {
  EXPECT_EQ(ParseRetryAfter("120", kT0), seconds(120));
  EXPECT_EQ(ParseRetryAfter("0", kT0), seconds(0));
  EXPECT_EQ(ParseRetryAfter(" 5\t", kT0), seconds(5));
  // Saturates rather than overflowing.
  auto huge = ParseRetryAfter("99999999999999999999999", kT0);
  ASSERT_TRUE(huge.has_value());
  EXPECT_GE(*huge, seconds(1000000));
}

TEST(ParseRetryAfterTest, HttpDates) {
  const TimePoint date = FromEpochSeconds(784111777);  // Sun, 06 Nov 1994 08:49:37 GMT
  EXPECT_EQ(ParseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", date - seconds(30)), seconds(30));
  EXPECT_EQ(ParseRetryAfter("Sunday, 06-Nov-94 08:49:37 GMT", date - seconds(30)), seconds(30));
  EXPECT_EQ(ParseRetryAfter("Sun Nov  6 08:49:37 1994", date - seconds(30)), seconds(30));
  // In the past: no wait.
  EXPECT_EQ(ParseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", date + seconds(30)), seconds(0));
  // A leap day and a date after 2038.
  EXPECT_EQ(ParseRetryAfter("Thu, 29 Feb 2024 00:00:00 GMT", FromEpochSeconds(1709164800 - 1)),
            seconds(1));
  EXPECT_EQ(ParseRetryAfter("Fri, 01 Jan 2100 00:00:00 GMT", FromEpochSeconds(4102444800 - 60)),
            seconds(60));
}

TEST(ParseRetryAfterTest, Garbage) {
  for (const char* garbage :
       {"", "   ", "soon", "-1", "+5", "1.5", "5 s", "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 29 Feb 2023 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT", "sun, 06 nov 1994 08:49:37 gmt",
        "Sun, 6 Nov 1994 08:49:37 GMT"}) {
    EXPECT_EQ(ParseRetryAfter(garbage, kT0), std::nullopt) << "'" << garbage << "'";
  }
}

}  // namespace
}  // namespace mi
