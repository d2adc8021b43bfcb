#pragma once
// The one abort path. For conditions that only resource exhaustion at start-up
// (or a broken invariant) can produce, where nothing sensible is left to do:
// print one line to stderr and abort. Never for input from a caller or IMDS.
// (No libuv include here: Windows code includes this before <winsock2.h>.)

namespace mi {

// "mi-agent: fatal: <what>: <detail>" on stderr, then abort().
[[noreturn]] void Fatal(const char* what, const char* detail);

// A libuv call that cannot fail on an initialised, open handle: Fatal with
// uv_strerror(rc) unless rc == 0.
void CheckUv(int rc, const char* what);

}  // namespace mi

// MI_CHECK(condition): a broken invariant stops the process with file and line.
#define MI_CHECK(condition) \
  ((condition) ? static_cast<void>(0) : ::mi::Fatal("check failed", #condition " at " __FILE__))
#define MI_CHECK_UV(rc, what) ::mi::CheckUv((rc), (what))
