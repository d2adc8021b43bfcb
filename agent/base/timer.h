#pragma once
// One-shot timers, injected like the Clock (clock.h): EventLoop is the
// TimerFactory of the daemon (its timers are UvTimers, event_loop.h), FakeTime
// that of the unit tests. Timers run on the monotonic clock: a step of the wall
// clock neither fires nor delays them.

#include <functional>
#include <memory>

#include "agent/base/clock.h"

namespace mi {

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

}  // namespace mi
