#include "agent/base/clock.h"

#include <uv.h>

namespace mi {

TimePoint SystemClock::Now() const {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) return TimePoint();
  return TimePoint(Duration(tv.tv_sec * 1000 + tv.tv_usec / 1000));
}

}  // namespace mi
