#include "agent/retry_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace mi {
namespace {

using Outcome = UpstreamResponse::Outcome;

// 10^9 s (~31 years): far beyond any cap, far from int64 overflow in ms.
constexpr int64_t kMaxRetryAfterSeconds = 1000000000;

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Reads exactly `n` digits at *s, advancing it.
bool ReadDigits(std::string_view* s, size_t n, int* out) {
  if (s->size() < n) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!IsDigit((*s)[i])) return false;
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

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
// days_from_civil): portable, no timegm().
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
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

}  // namespace

std::optional<Duration> ParseRetryAfter(std::string_view value, TimePoint now) {
  std::string_view v = TrimOws(value);
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), IsDigit)) {
    int64_t seconds = 0;
    for (char c : v) {
      seconds = seconds * 10 + (c - '0');
      if (seconds > kMaxRetryAfterSeconds) {
        seconds = kMaxRetryAfterSeconds;
        break;
      }
    }
    return Duration(seconds * 1000);
  }
  auto epoch = ParseHttpDate(v);
  if (!epoch) return std::nullopt;
  Duration wait = FromEpochSeconds(*epoch) - now;
  return std::clamp(wait, Duration(0), Duration(kMaxRetryAfterSeconds * 1000));
}

RetryPolicy::RetryPolicy(const Options& options, Random& random) : options_(options), random_(random) {}

bool RetryPolicy::IsRetryable(const UpstreamResponse& r) {
  switch (r.outcome) {
    case Outcome::kTimeout:
    case Outcome::kConnectError:
    case Outcome::kTooLarge:
      return true;
    case Outcome::kHttp:
      return r.status == 404 || r.status == 410 || r.status == 429 ||
             (r.status >= 500 && r.status <= 599);
  }
  return false;
}

Duration RetryPolicy::BaseDelay(int attempts) const {
  if (attempts < 1) return Duration(0);
  // Saturate instead of overflowing: anything past ~2^40 ms is capped anyway.
  int shift = std::min(attempts - 1, 40);
  int64_t delta = options_.delta.count();
  int64_t limit = INT64_MAX >> (shift + 1);
  if (delta > limit) return Duration(INT64_MAX / 2);
  return Duration(delta << shift);
}

RetryDecision RetryPolicy::Decide(RetryState& state, const UpstreamResponse& response,
                                  TimePoint now) const {
  ++state.attempts;
  const bool http = response.outcome == Outcome::kHttp;
  if (http && response.status == 410 && !state.first_gone) state.first_gone = now;
  if (!IsRetryable(response)) return RetryDecision{};
  std::optional<Duration> retry_after;
  if (!response.retry_after.empty()) retry_after = ParseRetryAfter(response.retry_after, now);
  return DecideRetryable(state, retry_after, http && response.status == 429, now);
}

RetryDecision RetryPolicy::DecideMalformed(RetryState& state, TimePoint now) const {
  ++state.attempts;
  return DecideRetryable(state, std::nullopt, false, now);
}

RetryDecision RetryPolicy::DecideRetryable(RetryState& state, std::optional<Duration> retry_after,
                                           bool throttled, TimePoint now) const {
  const Duration max_delay = options_.max_delay;
  const Duration base = std::min(BaseDelay(state.attempts), max_delay);
  double factor = 0.8 + 0.4 * random_.Uniform();
  factor = std::clamp(factor, 0.8, 1.2);
  Duration delay(static_cast<int64_t>(std::llround(static_cast<double>(base.count()) * factor)));
  delay = std::min(delay, max_delay);

  Duration floor(0);
  if (retry_after) floor = std::min(*retry_after, options_.retry_after_cap);
  delay = std::max(delay, floor);

  RetryDecision d;
  d.throttled = throttled;
  if (throttled) d.pause = delay;

  if (state.attempts < options_.max_attempts) {
    d.retry = true;
    d.delay = delay;
    return d;
  }
  if (state.first_gone) {
    const TimePoint deadline = *state.first_gone + options_.gone_window;
    if (now < deadline) {
      const Duration left = deadline - now;
      if (delay <= left) {
        d.retry = true;
        d.delay = delay;
      } else if (floor <= left) {
        d.retry = true;
        d.delay = left;
      }
    }
  }
  return d;
}

}  // namespace mi
