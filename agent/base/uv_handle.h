#pragma once
// Owning libuv handles from C++.
//
// Rules (after Node.js src/handle_wrap.h):
//  1. The uv_*_t lives in a heap box; it is freed only in its close callback,
//     so the C++ owner may go away at once (UvHandle below).
//  2. A self-owned wrapper (an object that owns its uv handle inline and may
//     end inside one of its own callbacks, e.g. HttpConnection) is deleted in
//     that handle's close callback, which checks that the object is closing.
//  3. handle->data points at the owner while open; Close() clears it, so a
//     callback that fires during closing sees data == nullptr and returns.
//  4. Loop thread only.

#include <uv.h>

#include <cstdlib>
#include <type_traits>
#include <utility>

namespace mi {

template <typename T>
class UvHandle {
 public:
  // kUninit: no uv_*_init yet (or it failed): the box is freed without uv_close.
  // kOpen: initialised; Close() hands it to uv_close. kClosing: uv_close()
  // started (by Close(), or by a caller through CloseReset()); get() is null.
  enum class State { kUninit, kOpen, kClosing };

  UvHandle() : handle_(new T()) {}
  ~UvHandle() { Close(); }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  T* get() const { return handle_; }
  uv_handle_t* base() const { return reinterpret_cast<uv_handle_t*>(handle_); }
  State state() const { return state_; }
  bool is_open() const { return state_ == State::kOpen; }

  // Runs `init(loop, handle, args...)` (uv_timer_init, uv_tcp_init,
  // uv_async_init with its callback, ...) and on success marks the handle open
  // with data = owner. Returns the libuv result.
  // REQUIRES: state() == kUninit.
  template <typename... InitArgs, typename... Args>
  int Init(int (*init)(uv_loop_t*, T*, InitArgs...), uv_loop_t* loop, void* owner, Args&&... args) {
    int rc = init(loop, handle_, std::forward<Args>(args)...);
    if (rc == 0) {
      state_ = State::kOpen;
      handle_->data = owner;
    }
    return rc;
  }

  // Closes the handle (if initialised) and releases the box in the close callback.
  void Close() {
    if (handle_ == nullptr) return;
    T* h = std::exchange(handle_, nullptr);
    const bool open = state_ == State::kOpen;
    state_ = State::kClosing;
    if (!open) {
      delete h;
      return;
    }
    h->data = nullptr;
    uv_handle_t* base = reinterpret_cast<uv_handle_t*>(h);
    if (!uv_is_closing(base)) uv_close(base, Free);
  }

  // Closes with a TCP reset (uv_tcp_close_reset) where possible, else as
  // Close() does. For uv_tcp_t handles only.
  void CloseReset() {
    static_assert(std::is_same_v<T, uv_tcp_t>, "CloseReset() is for TCP handles");
    if (handle_ == nullptr) return;
    if (state_ == State::kOpen && !uv_is_closing(base())) {
      T* h = std::exchange(handle_, nullptr);
      state_ = State::kClosing;
      h->data = nullptr;
      if (uv_tcp_close_reset(h, Free) == 0) return;
      uv_close(reinterpret_cast<uv_handle_t*>(h), Free);
      return;
    }
    Close();
  }

 private:
  static void Free(uv_handle_t* closed) { delete reinterpret_cast<T*>(closed); }

  T* handle_;
  State state_ = State::kUninit;
};

}  // namespace mi
