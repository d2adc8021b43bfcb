#pragma once
// Logging: one line per event, with a level. Never pass a token to a logger.
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
  void Log(LogLevel level, std::string_view message);
  void Debug(std::string_view m) { Log(LogLevel::kDebug, m); }
  void Info(std::string_view m) { Log(LogLevel::kInfo, m); }
  void Warning(std::string_view m) { Log(LogLevel::kWarning, m); }
  void Error(std::string_view m) { Log(LogLevel::kError, m); }

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

}  // namespace mi

// MI_LOG(logger, kDebug) << "text " << value;  `logger` is a Logger& (never null).
// The level is checked once, before any operand is evaluated: a disabled line
// costs one comparison and formats nothing.
#define MI_LOG(logger, level)                                  \
  if (!(logger).Enabled(::mi::LogLevel::level)) {              \
  } else                                                       \
    ::mi::LogMessage((logger), ::mi::LogLevel::level)
