#pragma once
// Civil (proleptic Gregorian, UTC) dates without gmtime, timegm or the locale:
// the same answer on every platform. After H. Hinnant's days_from_civil and
// civil_from_days.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent/base/clock.h"

namespace mi {

struct CivilDate {
  int64_t year;
  int month;  // 1..12
  int day;    // 1..31
};

// Days since 1970-01-01.
int64_t DaysFromCivil(int64_t year, int month, int day);
CivilDate CivilFromDays(int64_t days);

// "2026-01-01T00:00:00Z" (whole seconds, rounded down).
std::string FormatIso8601Utc(TimePoint t);
// "2026-01-01T00:00:00.123Z".
std::string FormatIso8601UtcMillis(TimePoint t);

// An HTTP date (RFC 9110 5.6.7: IMF-fixdate, rfc850-date, asctime-date) as epoch
// seconds; nullopt when it is none of them or names an impossible date.
std::optional<int64_t> ParseHttpDate(std::string_view text);

}  // namespace mi
