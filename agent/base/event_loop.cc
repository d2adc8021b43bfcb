#include "agent/base/event_loop.h"

#include <cstdio>

#include "agent/base/check.h"

namespace mi {

EventLoop::EventLoop() {
  CheckUv(uv_loop_init(&loop_), "uv_loop_init");
  CheckUv(async_.Init(uv_async_init, &loop_, this,
                      [](uv_async_t* h) {
                        if (h->data) static_cast<EventLoop*>(h->data)->DrainPosted();
                      }),
          "uv_async_init");
  // The async handle must not keep the loop alive on its own.
  uv_unref(async_.base());
}

EventLoop::~EventLoop() {
  if (!closed_) Close();
}

std::unique_ptr<Timer> EventLoop::NewTimer() { return std::make_unique<UvTimer>(&loop_); }

void EventLoop::Run() { uv_run(&loop_, UV_RUN_DEFAULT); }
void EventLoop::Stop() { uv_stop(&loop_); }

void EventLoop::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    posted_.push_back(std::move(fn));
  }
  uv_async_send(async_.get());
}

void EventLoop::DrainPosted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

bool EventLoop::Close() {
  if (closed_) return true;
  async_.Close();
  // Let every pending close callback run.
  uv_run(&loop_, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop_);
  if (rc != 0) {
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void*) {
          std::fprintf(stderr, "mi-agent: handle still open at loop close: %s\n",
                       uv_handle_type_name(h->type));
        },
        nullptr);
    return false;
  }
  closed_ = true;
  return true;
}

UvTimer::UvTimer(uv_loop_t* loop) {
  CheckUv(timer_.Init(uv_timer_init, loop, this), "uv_timer_init");
}

void UvTimer::Arm(Duration delay, std::function<void()> callback) {
  callback_ = std::move(callback);
  uint64_t ms = delay.count() > 0 ? static_cast<uint64_t>(delay.count()) : 0;
  // libuv counts from the loop's cached time; refresh it so a timer armed late in
  // a busy iteration does not fire early.
  uv_update_time(timer_.get()->loop);
  uv_timer_start(
      timer_.get(),
      [](uv_timer_t* h) {
        auto* self = static_cast<UvTimer*>(h->data);
        if (self == nullptr) return;
        // Move out first: the callback may re-arm or destroy this timer.
        auto cb = std::move(self->callback_);
        self->callback_ = nullptr;
        if (cb) cb();
      },
      ms, 0);
}

void UvTimer::Disarm() {
  uv_timer_stop(timer_.get());
  callback_ = nullptr;
}

bool UvTimer::armed() const { return uv_is_active(reinterpret_cast<uv_handle_t*>(timer_.get())) != 0; }

}  // namespace mi
