#pragma once
// The one event loop. EventLoop owns the uv_loop_t; every handle is created, used
// and closed on the thread that runs it. Model: Envoy's Dispatcher, which also
// has-a time source (clock()) and makes the timers (NewTimer()).

#include <uv.h>

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/timer.h"
#include "agent/base/uv_handle.h"

namespace mi {

class EventLoop : public TimerFactory {
 public:
  EventLoop();
  // REQUIRES: Close() returned true, or the loop was never run.
  ~EventLoop() override;
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  uv_loop_t* uv() { return &loop_; }
  // The wall clock of the components on this loop.
  Clock& clock() { return clock_; }

  // TimerFactory: UvTimers on this loop.
  std::unique_ptr<Timer> NewTimer() override;

  // Runs until no active handles remain or Stop() is called.
  void Run();
  void Stop();

  // Thread-safe: runs `fn` on the loop thread on a later turn. The only call
  // other threads may make (the Windows SCM control handler uses it).
  void Post(std::function<void()> fn);

  // Closes the loop's own handles, runs the loop until every handle is closed,
  // and returns whether uv_loop_close() succeeded (0). Tests assert it.
  bool Close();

 private:
  void DrainPosted();

  uv_loop_t loop_;
  SystemClock clock_;
  UvHandle<uv_async_t> async_;
  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;
  bool closed_ = false;
};

// A Timer on a uv_timer_t (monotonic, the loop's clock). Here rather than in
// timer.h so that the interfaces the components include carry no libuv.
class UvTimer : public Timer {
 public:
  explicit UvTimer(uv_loop_t* loop);
  void Arm(Duration delay, std::function<void()> callback) override;
  void Disarm() override;
  bool armed() const override;

 private:
  UvHandle<uv_timer_t> timer_;
  std::function<void()> callback_;
};

}  // namespace mi
