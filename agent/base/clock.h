#pragma once
// Time as the components see it: Duration, TimePoint (wall-clock milliseconds)
// and the Clock interface. The token cache, the IMDS budget, the token and health
// APIs, the logger and the emulator read time only through an injected Clock and
// arm timers only through a TimerFactory (timer.h), so their unit tests run a day
// of token lifetimes in milliseconds on FakeTime (tests/fakes/fake_time.h). The
// loop's own machinery -- the HTTP server's connection timers and the curl
// bridge -- arms libuv timers directly; it keeps no wall-clock time.
//
// Two clocks, as on a real machine: Clock::Now() is the wall clock, which NTP
// may step either way; timers run on the monotonic clock (libuv's), which
// never jumps. Code that measures elapsed time with Now() must cope with a
// step (see upstream_scheduler.h).

#include <chrono>
#include <cstdint>
#include <limits>

namespace mi {

using Duration = std::chrono::milliseconds;
// Wall-clock time in milliseconds since the Unix epoch. Token expiry (expires_on)
// is wall-clock time, so the cache reasons in it.
using TimePoint = std::chrono::time_point<std::chrono::system_clock, Duration>;

// The last second of 9999-12-31 UTC: IMDS times past it are malformed.
constexpr int64_t kMaxEpochSeconds = 253402300799;

inline int64_t ToEpochSeconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
// Saturates: seconds beyond what a TimePoint holds (about +-292 million years)
// give TimePoint::max() / min(), never an overflow.
inline TimePoint FromEpochSeconds(int64_t s) {
  constexpr int64_t kLimit = std::numeric_limits<Duration::rep>::max() / 1000;
  if (s > kLimit) return TimePoint::max();
  if (s < -kLimit) return TimePoint::min();
  return TimePoint(std::chrono::seconds(s));
}

// The wall clock.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

// The system's wall clock (uv_gettimeofday, read on each call). EventLoop::clock().
class SystemClock : public Clock {
 public:
  TimePoint Now() const override;
};

}  // namespace mi
