#pragma once
// Logging: one line per event, with a level. Never pass a token to a logger.
// The one way to log is the MI_LOG macro at the end of this file:
//   MI_LOG(logger, kInfo) << "serving tokens on " << where;
// Every message is escaped (AppendEscaped, agent/text.h: \n, \r, \t, \xHH for
// other control characters and for bytes that are not UTF-8) in every format,
// so a value from a caller or IMDS can never start a line of its own.
//
// Formats:
//   kText    "2026-11-22T18:00:00.123Z info  message" (a terminal)
//   kJournal "<6>message" (stderr under systemd: journald reads the priority prefix)
//   kJson    {"time":"...","level":"info","msg":"..."} one object per line

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>

#include "agent/base/clock.h"

namespace mi {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kAuto, kText, kJournal, kJson };

bool ParseLogLevel(std::string_view text, LogLevel* out);
bool ParseLogFormat(std::string_view text, LogFormat* out);
const char* LogLevelName(LogLevel level);

class Logger {
 public:
  // `sink` receives each finished line without the trailing newline; by default
  // lines go to stderr. `clock` may be null (then no timestamp in text/json).
  explicit Logger(const Clock* clock = nullptr);
  virtual ~Logger() = default;

  void set_level(LogLevel level) { level_ = level; }
  LogLevel level() const { return level_; }
  // kAuto picks kJournal when JOURNAL_STREAM is set, else kText.
  void set_format(LogFormat format);
  LogFormat format() const { return format_; }
  void set_sink(std::function<void(std::string_view line)> sink) { sink_ = std::move(sink); }

  // A logger that drops every line: the default where a caller gives none, so a
  // component holds a `Logger&` and never tests for null.
  static Logger& Discard();

  bool Enabled(LogLevel level) const { return level >= level_; }
  // Writes one finished line. Log with MI_LOG (below), not with this: MI_LOG
  // tests the level before it builds the message; this is what it ends in.
  void Log(LogLevel level, std::string_view message);

 private:
  const Clock* clock_;
  LogLevel level_ = LogLevel::kInfo;
  LogFormat format_ = LogFormat::kText;
  std::function<void(std::string_view)> sink_;
};

// One line under construction; MI_LOG builds it only when the level is on and
// hands it to the logger when the statement ends.
class LogMessage {
 public:
  LogMessage(Logger& logger, LogLevel level) : logger_(logger), level_(level) {}
  ~LogMessage() { logger_.Log(level_, text_); }
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;

  LogMessage& operator<<(std::string_view s) {
    text_.append(s);
    return *this;
  }
  LogMessage& operator<<(const char* s) { return *this << std::string_view(s); }
  LogMessage& operator<<(const std::string& s) { return *this << std::string_view(s); }
  LogMessage& operator<<(char c) {
    text_.push_back(c);
    return *this;
  }
  template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
  LogMessage& operator<<(T value) {
    if constexpr (std::is_floating_point_v<T>) {
      text_.append(std::to_string(value));
    } else if constexpr (std::is_same_v<T, bool>) {
      text_.append(value ? "true" : "false");
    } else if constexpr (std::is_signed_v<T>) {
      text_.append(std::to_string(static_cast<long long>(value)));
    } else {
      text_.append(std::to_string(static_cast<unsigned long long>(value)));
    }
    return *this;
  }

 private:
  Logger& logger_;
  LogLevel level_;
  std::string text_;
};

// Turns `LogMessage << ...` into void so MI_LOG can be a conditional
// expression (`&` binds looser than `<<`).
struct LogVoidify {
  void operator&(const LogMessage&) const {}
};

}  // namespace mi

// MI_LOG(logger, kDebug) << "text " << value;  `logger` is a Logger& (never null).
// The level is checked once, before any operand is evaluated: a disabled line
// costs one comparison and formats nothing. The macro is one expression, so it
// is safe as the body of an unbraced `if` or loop.
#define MI_LOG(logger, level)                        \
  !(logger).Enabled(::mi::LogLevel::level)           \
      ? (void)0                                      \
      : ::mi::LogVoidify() & ::mi::LogMessage((logger), ::mi::LogLevel::level)
