#pragma once
// Owning libuv handles from C++.
//
// Rules (after Node.js src/handle_wrap.h):
//  * The uv_*_t lives in a heap box; it is freed only in its close callback,
//    so the C++ owner may go away at once.
//  * handle->data points at the owner while open; Close() clears it, so a
//    callback that fires during closing sees data == nullptr and returns.
//  * Loop thread only.

#include <uv.h>

#include <cstdlib>
#include <utility>

namespace mi {

template <typename T>
class UvHandle {
 public:
  UvHandle() : handle_(new T()) {}
  ~UvHandle() { Close(); }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  T* get() const { return handle_; }
  uv_handle_t* base() const { return reinterpret_cast<uv_handle_t*>(handle_); }
  // Marks the handle as initialised (call after a successful uv_*_init).
  void set_initialized(void* owner) {
    initialized_ = true;
    handle_->data = owner;
  }
  bool initialized() const { return initialized_; }

  // Closes the handle (if initialised) and releases the box in the close callback.
  void Close() {
    if (handle_ == nullptr) return;
    T* h = std::exchange(handle_, nullptr);
    if (!initialized_) {
      delete h;
      return;
    }
    h->data = nullptr;
    uv_handle_t* base = reinterpret_cast<uv_handle_t*>(h);
    if (!uv_is_closing(base)) {
      uv_close(base, [](uv_handle_t* closed) { delete reinterpret_cast<T*>(closed); });
    }
  }

 private:
  T* handle_;
  bool initialized_ = false;
};

}  // namespace mi
