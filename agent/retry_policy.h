#pragma once
// The IMDS retry strategy (SPEC §7, after the IMDS documentation): which
// upstream outcomes are retried, and how long to wait before the next attempt.
// A pure decision function: no timers, no I/O. The caller (the broker or the
// refresher) keeps one RetryState per fetch, calls Decide() once per finished
// attempt, and arms its own timer for `delay`.
//
// Retried: HTTP 404 (IMDS updating), 410 (IMDS upgrading), 429 (throttled),
// 5xx, timeouts, connection errors, kTooLarge (an oversized body is a server
// fault like a 5xx, not the caller's mistake), and a 200 whose body the caller
// cannot use (DecideMalformed). Never retried: any other status (2xx handed
// in by mistake, 3xx — redirects are not followed — and other 4xx).
//
// Backoff: the wait after the n-th failed attempt (n counted from 1) is
//   delta * 2^(n-1)                        -> 2, 4, 8, 16 s with delta 2 s
// so that, with instant failures, attempt n starts delta * (2^(n-1) - 1)
// after the first: 0, 2, 6, 14, 30 s (IMDS docs). Each wait is multiplied by a
// jitter factor uniform in [0.8, 1.2) (the injected Random) and then capped
// at max_delay, so the cap is a hard bound. At most max_attempts attempts in
// total (5: four waits).
//
// 410: once a fetch has seen a 410, IMDS is upgrading and may also refuse
// connections or time out meanwhile; so every retryable failure is retried,
// beyond max_attempts, until gone_window (70 s) after the first 410. A wait
// that would end past the window is shortened to end at it (one last attempt
// at the window's end), unless Retry-After forbids that; then no retry.
//
// Retry-After (delta-seconds or an HTTP-date) on a retryable answer is a
// floor: the wait is max(backoff, min(Retry-After, retry_after_cap)).
// Unparseable values are ignored.
//
// Not thread-safe (Random is shared); loop thread only.

#include <optional>
#include <string_view>

#include "agent/base/clock.h"
#include "agent/base/random.h"
#include "agent/upstream_client.h"

namespace mi {

// Per-fetch retry state. Start with a default-constructed one per fetch.
struct RetryState {
  int attempts = 0;                     // finished attempts (Decide counts them)
  std::optional<TimePoint> first_gone;  // when this fetch first saw a 410
};

struct RetryDecision {
  bool retry = false;
  Duration delay{0};  // wait before the next attempt (meaningful when retry)
  // IMDS answered 429: the whole VM is over its budget, not just this fetch.
  // The caller pauses every upstream request (UpstreamScheduler::PauseFor) for
  // `pause`, whether or not this fetch retries.
  bool throttled = false;
  Duration pause{0};
};

class RetryPolicy {
 public:
  // Config "retry" (ranges checked by ParseConfig, agent/app/config.cc).
  struct Options {
    int max_attempts = 5;                        // "max_attempts": 1..100
    Duration delta = Duration(2000);             // "delta_seconds": backoff unit (0, 2, 6, 14, 30 s)
    Duration max_delay = Duration(60000);        // "max_delay_seconds": cap on each wait
    Duration gone_window = Duration(70000);      // "gone_window_seconds": keep retrying 410 this long
    Duration retry_after_cap = Duration(60000);  // "retry_after_cap_seconds": cap on Retry-After
  };

  // `random` is not owned and must outlive the policy.
  RetryPolicy(const Options& options, Random& random);

  // Applies to later decisions (config reload).
  void set_options(const Options& options) { options_ = options; }
  const Options& options() const { return options_; }

  // Whether this outcome is worth another attempt (see the header comment).
  static bool IsRetryable(const UpstreamResponse& response);

  // Records one finished, failed attempt in `state` and decides on the next.
  // `now` is when the attempt ended. A non-retryable response yields
  // {retry = false}.
  RetryDecision Decide(RetryState& state, const UpstreamResponse& response, TimePoint now) const;
  // As Decide, for a 200 whose body was unusable (not JSON, no access_token...).
  RetryDecision DecideMalformed(RetryState& state, TimePoint now) const;

  // The wait after `attempts` failed attempts, before jitter and cap:
  // delta * 2^(attempts-1); zero for attempts < 1.
  Duration BaseDelay(int attempts) const;

 private:
  RetryDecision DecideRetryable(RetryState& state, std::optional<Duration> retry_after,
                                bool throttled, TimePoint now) const;

  Options options_;
  Random& random_;
};

// Parses a Retry-After value: delta-seconds ("120") or an HTTP-date (RFC 7231
// §7.1.1.1: IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", and the obsolete
// RFC 850 and asctime forms recipients must accept). Returns the wait from
// `now` (zero for a date in the past), or nullopt for anything else. Huge
// values saturate; callers cap them.
std::optional<Duration> ParseRetryAfter(std::string_view value, TimePoint now);

}  // namespace mi
