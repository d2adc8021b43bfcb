#include "agent/base/civil_time.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "agent/base/ascii.h"

namespace mi {
namespace {

// Reads exactly `n` digits at *s, advancing it.
bool ReadDigits(std::string_view* s, size_t n, int* out) {
  if (s->size() < n) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!IsAsciiDigit((*s)[i])) return false;
    v = v * 10 + ((*s)[i] - '0');
  }
  s->remove_prefix(n);
  *out = v;
  return true;
}

bool Expect(std::string_view* s, std::string_view literal) {
  if (s->substr(0, literal.size()) != literal) return false;
  s->remove_prefix(literal.size());
  return true;
}

// Case-sensitive as in the grammar ("Nov").
bool ReadMonth(std::string_view* s, int* month) {
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; ++i) {
    if (Expect(s, kMonths[i])) {
      *month = i + 1;
      return true;
    }
  }
  return false;
}

bool ReadDayName(std::string_view* s, bool long_form) {
  static const char* const kShort[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  static const char* const kLong[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                      "Friday", "Saturday", "Sunday"};
  for (int i = 0; i < 7; ++i) {
    if (Expect(s, long_form ? kLong[i] : kShort[i])) return true;
  }
  return false;
}

// "HH:MM:SS"
bool ReadTime(std::string_view* s, int* h, int* m, int* sec) {
  return ReadDigits(s, 2, h) && Expect(s, ":") && ReadDigits(s, 2, m) && Expect(s, ":") &&
         ReadDigits(s, 2, sec);
}

bool ValidDate(int year, int month, int day, int h, int m, int s) {
  static const int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1 || day > kDays[month - 1]) return false;
  if (month == 2 && day == 29) {
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (!leap) return false;
  }
  return h <= 23 && m <= 59 && s <= 60;  // 60: a leap second
}

// Splits epoch milliseconds into a civil date and the milliseconds of that day.
CivilDate SplitDay(int64_t ms, int64_t* ms_of_day) {
  int64_t days = ms / 86400000;
  int64_t rem = ms % 86400000;
  if (rem < 0) {
    rem += 86400000;
    --days;
  }
  *ms_of_day = rem;
  return CivilFromDays(days);
}

}  // namespace

int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

CivilDate CivilFromDays(int64_t days) {
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  return CivilDate{yoe + era * 400 + (m <= 2 ? 1 : 0), static_cast<int>(m), static_cast<int>(d)};
}

std::string FormatIso8601Utc(TimePoint t) {
  int64_t rem = 0;
  // Whole seconds first, so a negative time rounds down like ToEpochSeconds.
  const CivilDate c = SplitDay(ToEpochSeconds(t) * 1000, &rem);
  rem /= 1000;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04" PRId64 "-%02d-%02dT%02" PRId64 ":%02" PRId64 ":%02" PRId64 "Z", c.year,
                c.month, c.day, rem / 3600, rem / 60 % 60, rem % 60);
  return buf;
}

std::string FormatIso8601UtcMillis(TimePoint t) {
  int64_t rem = 0;
  const CivilDate c = SplitDay(t.time_since_epoch().count(), &rem);
  const int64_t s = rem / 1000;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04" PRId64 "-%02d-%02dT%02" PRId64 ":%02" PRId64 ":%02" PRId64 ".%03" PRId64 "Z",
                c.year, c.month, c.day, s / 3600, s / 60 % 60, s % 60, rem % 1000);
  return buf;
}

std::optional<int64_t> ParseHttpDate(std::string_view s) {
  int year = 0, month = 0, day = 0, h = 0, m = 0, sec = 0;
  std::string_view p = s;
  bool ok = false;
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  if (ReadDayName(&p, false) && Expect(&p, ", ") && ReadDigits(&p, 2, &day) && Expect(&p, " ") &&
      ReadMonth(&p, &month) && Expect(&p, " ") && ReadDigits(&p, 4, &year) && Expect(&p, " ") &&
      ReadTime(&p, &h, &m, &sec) && Expect(&p, " GMT") && p.empty()) {
    ok = true;
  }
  // rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT"
  if (!ok) {
    p = s;
    int yy = 0;
    if (ReadDayName(&p, true) && Expect(&p, ", ") && ReadDigits(&p, 2, &day) && Expect(&p, "-") &&
        ReadMonth(&p, &month) && Expect(&p, "-") && ReadDigits(&p, 2, &yy) && Expect(&p, " ") &&
        ReadTime(&p, &h, &m, &sec) && Expect(&p, " GMT") && p.empty()) {
      // RFC 7231: a two-digit year more than 50 years ahead is in the past.
      year = yy < 70 ? 2000 + yy : 1900 + yy;
      ok = true;
    }
  }
  // asctime-date: "Sun Nov  6 08:49:37 1994"
  if (!ok) {
    p = s;
    if (ReadDayName(&p, false) && Expect(&p, " ") && ReadMonth(&p, &month) && Expect(&p, " ")) {
      bool day_ok = false;
      if (Expect(&p, " ")) {
        day_ok = ReadDigits(&p, 1, &day);
      } else {
        day_ok = ReadDigits(&p, 2, &day);
      }
      if (day_ok && Expect(&p, " ") && ReadTime(&p, &h, &m, &sec) && Expect(&p, " ") &&
          ReadDigits(&p, 4, &year) && p.empty()) {
        ok = true;
      }
    }
  }
  if (!ok || !ValidDate(year, month, day, h, m, sec)) return std::nullopt;
  return DaysFromCivil(year, month, day) * 86400 + h * 3600 + m * 60 + std::min(sec, 59);
}

}  // namespace mi
