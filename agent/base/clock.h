#pragma once
// Time as the core sees it. Nothing in agent/ or proxy/ reads the real clock or
// arms a libuv timer directly: they get a Clock and a TimerFactory, so unit tests
// can run a day of token lifetimes in milliseconds with FakeTime (tests/unit).

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>

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

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

// A one-shot timer. Loop thread only. Destroying a Timer disarms it; the callback
// never runs after Disarm() or destruction.
class Timer {
 public:
  virtual ~Timer() = default;
  // (Re)arms the timer: `callback` runs once, `delay` from now. A zero delay means
  // "on a later loop turn", never inside this call.
  virtual void Arm(Duration delay, std::function<void()> callback) = 0;
  virtual void Disarm() = 0;
  virtual bool armed() const = 0;
};

class TimerFactory {
 public:
  virtual ~TimerFactory() = default;
  virtual std::unique_ptr<Timer> NewTimer() = 0;
};

// A source of randomness for jitter, injected so tests are deterministic.
class Random {
 public:
  virtual ~Random() = default;
  // Uniform in [0, 1).
  virtual double Uniform() = 0;
};

}  // namespace mi
