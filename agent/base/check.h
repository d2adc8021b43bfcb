#pragma once
// The one abort path. For conditions that only resource exhaustion at start-up
// (or a broken invariant) can produce, where nothing sensible is left to do:
// print one line to stderr and abort. Never for input from a caller or IMDS.

#include <uv.h>

#include <cstdio>
#include <cstdlib>

namespace mi {

[[noreturn]] inline void Fatal(const char* what, const char* detail) {
  std::fprintf(stderr, "mi-agent: fatal: %s: %s\n", what, detail);
  std::abort();
}

// A libuv call that cannot fail on an initialised, open handle.
inline void CheckUv(int rc, const char* what) {
  if (rc != 0) Fatal(what, uv_strerror(rc));
}

}  // namespace mi

// MI_CHECK(condition): a broken invariant stops the process with file and line.
#define MI_CHECK(condition) \
  ((condition) ? static_cast<void>(0) : ::mi::Fatal("check failed", #condition " at " __FILE__))
#define MI_CHECK_UV(rc, what) ::mi::CheckUv((rc), (what))
