#include "agent/retry_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "agent/base/ascii.h"
#include "agent/base/civil_time.h"

namespace mi {
namespace {

using Outcome = UpstreamResponse::Outcome;

// 10^9 s (~31 years): far beyond any cap, far from int64 overflow in ms.
constexpr int64_t kMaxRetryAfterSeconds = 1000000000;

}  // namespace

std::optional<Duration> ParseRetryAfter(std::string_view value, TimePoint now) {
  std::string_view v = TrimOws(value);
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), IsAsciiDigit)) {
    int64_t seconds = 0;
    for (char c : v) {
      seconds = seconds * 10 + (c - '0');
      if (seconds > kMaxRetryAfterSeconds) {
        seconds = kMaxRetryAfterSeconds;
        break;
      }
    }
    return Duration(seconds * 1000);
  }
  auto epoch = ParseHttpDate(v);
  if (!epoch) return std::nullopt;
  Duration wait = FromEpochSeconds(*epoch) - now;
  return std::clamp(wait, Duration(0), Duration(kMaxRetryAfterSeconds * 1000));
}

RetryPolicy::RetryPolicy(const Options& options, Random& random) : options_(options), random_(random) {}

bool RetryPolicy::IsRetryable(const UpstreamResponse& r) {
  switch (r.outcome) {
    case Outcome::kTimeout:
    case Outcome::kConnectError:
    case Outcome::kTooLarge:
      return true;
    case Outcome::kRefused:
      return false;
    case Outcome::kHttp:
      return r.status == 404 || r.status == 410 || r.status == 429 ||
             (r.status >= 500 && r.status <= 599);
  }
  return false;
}

Duration RetryPolicy::BaseDelay(int attempts) const {
  if (attempts < 1) return Duration(0);
  // Saturate instead of overflowing: anything past ~2^40 ms is capped anyway.
  int shift = std::min(attempts - 1, 40);
  int64_t delta = options_.delta.count();
  int64_t limit = INT64_MAX >> (shift + 1);
  if (delta > limit) return Duration(INT64_MAX / 2);
  return Duration(delta << shift);
}

RetryDecision RetryPolicy::Decide(RetryState& state, const UpstreamResponse& response,
                                  TimePoint now) const {
  ++state.attempts;
  const bool http = response.outcome == Outcome::kHttp;
  if (http && response.status == 410 && !state.first_gone) state.first_gone = now;
  if (!IsRetryable(response)) return RetryDecision{};
  std::optional<Duration> retry_after;
  if (!response.retry_after.empty()) retry_after = ParseRetryAfter(response.retry_after, now);
  return DecideRetryable(state, retry_after, http && response.status == 429, now);
}

RetryDecision RetryPolicy::DecideMalformed(RetryState& state, TimePoint now) const {
  ++state.attempts;
  return DecideRetryable(state, std::nullopt, false, now);
}

RetryDecision RetryPolicy::DecideRetryable(RetryState& state, std::optional<Duration> retry_after,
                                           bool throttled, TimePoint now) const {
  const Duration max_delay = options_.max_delay;
  const Duration base = std::min(BaseDelay(state.attempts), max_delay);
  double factor = 0.8 + 0.4 * random_.Uniform();
  factor = std::clamp(factor, 0.8, 1.2);
  Duration delay(static_cast<int64_t>(std::llround(static_cast<double>(base.count()) * factor)));
  delay = std::min(delay, max_delay);

  Duration floor(0);
  if (retry_after) floor = std::min(*retry_after, options_.retry_after_cap);
  delay = std::max(delay, floor);

  RetryDecision d;
  d.throttled = throttled;
  if (throttled) d.pause = delay;

  if (state.attempts < options_.max_attempts) {
    d.retry = true;
    d.delay = delay;
    return d;
  }
  if (state.first_gone) {
    const TimePoint deadline = *state.first_gone + options_.gone_window;
    if (now < deadline) {
      const Duration left = deadline - now;
      if (delay <= left) {
        d.retry = true;
        d.delay = delay;
      } else if (floor <= left) {
        d.retry = true;
        d.delay = left;
      }
    }
  }
  return d;
}

}  // namespace mi
