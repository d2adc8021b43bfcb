#include "agent/base/check.h"

#include <uv.h>

#include <cstdio>
#include <cstdlib>

namespace mi {

void Fatal(const char* what, const char* detail) {
  std::fprintf(stderr, "mi-agent: fatal: %s: %s\n", what, detail);
  std::abort();
}

void CheckUv(int rc, const char* what) {
  if (rc != 0) Fatal(what, uv_strerror(rc));
}

}  // namespace mi
