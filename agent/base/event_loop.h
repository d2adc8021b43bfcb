#pragma once
// The one event loop. EventLoop owns the uv_loop_t; every handle is created, used
// and closed on the thread that runs it. Model: Envoy's Dispatcher.

#include <uv.h>

#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/uv_handle.h"

namespace mi {

// Something destroyed on the next loop turn, so an object may end itself from
// inside one of its own callbacks (a connection, a fetch).
class DeferredDeletable {
 public:
  virtual ~DeferredDeletable() = default;
};

class EventLoop : public Clock, public TimerFactory {
 public:
  EventLoop();
  // REQUIRES: Close() returned true, or the loop was never run.
  ~EventLoop() override;
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  uv_loop_t* uv() { return &loop_; }

  // Clock: wall-clock time (uv_gettimeofday, read on each call).
  TimePoint Now() const override;
  std::unique_ptr<Timer> NewTimer() override;

  // Runs until no active handles remain or Stop() is called.
  void Run();
  // Runs one non-blocking iteration (tests).
  void RunNoWait();
  void Stop();

  // Thread-safe: runs `fn` on the loop thread on a later turn. The only call
  // other threads may make (the Windows SCM control handler uses it).
  void Post(std::function<void()> fn);

  // Loop thread only: `object` is deleted on the next loop turn.
  void DeferDelete(std::unique_ptr<DeferredDeletable> object);

  // Closes the loop's own handles, runs the loop until every handle is closed,
  // and returns whether uv_loop_close() succeeded (0). Tests assert it.
  bool Close();

 private:
  void DrainPosted();
  void DrainDeferred();

  uv_loop_t loop_;
  UvHandle<uv_async_t> async_;
  UvHandle<uv_idle_t> deferred_idle_;
  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;
  std::vector<std::unique_ptr<DeferredDeletable>> deferred_;
  bool closed_ = false;
};

// Jitter from a Mersenne Twister seeded once from the high-resolution clock.
class SystemRandom : public Random {
 public:
  SystemRandom() : engine_(uv_hrtime()) {}
  double Uniform() override { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }

 private:
  std::mt19937_64 engine_;
};

// A Timer on a uv_timer_t.
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
