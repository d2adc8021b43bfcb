#pragma once
// FakeTime: a Clock and a TimerFactory on simulated time, the one time double of
// the unit tests. Header-only, no gtest dependency.
//
// FakeTime keeps two clocks, like a real machine:
//  * a monotonic one that timers run on (libuv timers are monotonic), moved only
//    by Advance()/RunPending()/RunNext()/RunUntilIdle();
//  * the wall clock returned by Now(): monotonic time plus an offset that
//    JumpWallClock() changes (NTP stepping the clock) without firing anything.
//
// Timer semantics match UvTimer: one-shot, Arm() re-arms (replacing the
// callback), a zero delay fires on a later "turn" — never inside Arm() — i.e.
// on the next Advance()/RunPending(). While a callback runs, Now() reads that
// timer's deadline. Callbacks may arm, disarm, create and destroy timers
// (including their own); timers that fall due inside the window being advanced
// fire in the same call, in deadline order, ties in arming order.
// Timers may outlive the FakeTime (they then never fire) and vice versa.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/timer.h"

namespace mi {

class FakeTime : public Clock, public TimerFactory {
 public:
  // 2026-01-01T00:00:00Z: a realistic epoch, far from zero.
  static TimePoint DefaultStart() { return FromEpochSeconds(1767225600); }

  explicit FakeTime(TimePoint start = DefaultStart()) : state_(std::make_shared<State>()) {
    state_->wall_at_zero = start;
  }
  FakeTime(const FakeTime&) = delete;
  FakeTime& operator=(const FakeTime&) = delete;
  ~FakeTime() override { state_->alive = false; }

  TimePoint Now() const override { return state_->wall_at_zero + state_->mono; }
  std::unique_ptr<Timer> NewTimer() override { return std::make_unique<FakeTimer>(state_); }

  // Moves time forward by `d` (negative counts as zero), firing due timers.
  void Advance(Duration d) { AdvanceMono(state_->mono + std::max(d, Duration(0))); }
  // Fires the timers already due (zero-delay arms, and any they arm with zero delay).
  void RunPending() { Advance(Duration(0)); }
  // Advances to the earliest armed timer and fires everything due then.
  // Returns false (time unchanged) when no timer is armed.
  bool RunNext() {
    auto next = NextTimerIn();
    if (!next) return false;
    Advance(*next);
    return true;
  }
  // Fires timers in order until none is armed or `limit` of time has passed.
  // Returns true when it stopped because nothing was armed.
  bool RunUntilIdle(Duration limit = Duration(24LL * 3600 * 1000)) {
    const Duration end = state_->mono + limit;
    for (;;) {
      auto next = NextTimerIn();
      if (!next) return true;
      if (state_->mono + *next > end) {
        AdvanceMono(end);
        return !NextTimerIn().has_value();
      }
      Advance(*next);
    }
  }
  // Steps the wall clock by `d` (either sign) without moving timers.
  void JumpWallClock(Duration d) { state_->wall_at_zero += d; }

  // Time from now until the earliest armed timer is due (0 if overdue).
  std::optional<Duration> NextTimerIn() const {
    const FakeTimer* t = state_->Earliest();
    if (t == nullptr) return std::nullopt;
    return std::max(Duration(0), t->deadline_ - state_->mono);
  }
  size_t armed_timers() const {
    return static_cast<size_t>(std::count_if(state_->timers.begin(), state_->timers.end(),
                                             [](const FakeTimer* t) { return t->armed_; }));
  }
  size_t live_timers() const { return state_->timers.size(); }

 private:
  class FakeTimer;

  struct State {
    bool alive = true;
    TimePoint wall_at_zero;
    Duration mono{0};  // monotonic time since construction
    uint64_t seq = 0;
    std::vector<FakeTimer*> timers;

    FakeTimer* Earliest() const {
      FakeTimer* best = nullptr;
      for (FakeTimer* t : timers) {
        if (!t->armed_) continue;
        if (best == nullptr || t->deadline_ < best->deadline_ ||
            (t->deadline_ == best->deadline_ && t->seq_ < best->seq_)) {
          best = t;
        }
      }
      return best;
    }
  };

  class FakeTimer : public Timer {
   public:
    explicit FakeTimer(std::shared_ptr<State> state) : state_(std::move(state)) {
      state_->timers.push_back(this);
    }
    ~FakeTimer() override {
      auto& v = state_->timers;
      v.erase(std::remove(v.begin(), v.end(), this), v.end());
    }
    void Arm(Duration delay, std::function<void()> callback) override {
      callback_ = std::move(callback);
      deadline_ = state_->mono + std::max(delay, Duration(0));
      seq_ = ++state_->seq;
      armed_ = state_->alive;
    }
    void Disarm() override {
      armed_ = false;
      callback_ = nullptr;
    }
    bool armed() const override { return armed_; }

    // Public: the type itself is private to FakeTime.
    std::shared_ptr<State> state_;
    std::function<void()> callback_;
    Duration deadline_{0};
    uint64_t seq_ = 0;
    bool armed_ = false;
  };

  // Guards against a callback that re-arms itself with zero delay forever.
  static constexpr uint64_t kMaxFiringsPerAdvance = 10'000'000;

  void AdvanceMono(Duration target) {
    uint64_t firings = 0;
    for (;;) {
      FakeTimer* t = state_->Earliest();
      if (t == nullptr || t->deadline_ > target) break;
      if (++firings > kMaxFiringsPerAdvance) {
        std::fprintf(stderr, "FakeTime: more than %llu timer firings in one Advance (a timer loops?)\n",
                     static_cast<unsigned long long>(kMaxFiringsPerAdvance));
        std::abort();
      }
      state_->mono = std::max(state_->mono, t->deadline_);
      t->armed_ = false;
      // Move out first: the callback may re-arm or destroy the timer.
      auto cb = std::move(t->callback_);
      t->callback_ = nullptr;
      if (cb) cb();
    }
    state_->mono = std::max(state_->mono, target);
  }

  std::shared_ptr<State> state_;
};

}  // namespace mi
