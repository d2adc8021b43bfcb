#include "agent/base/log.h"

#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "agent/base/civil_time.h"
#include "agent/base/text.h"

namespace mi {
namespace {


int SyslogPriority(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return 7;
    case LogLevel::kInfo: return 6;
    case LogLevel::kWarning: return 4;
    case LogLevel::kError: return 3;
  }
  return 6;
}

}  // namespace

Logger& Logger::Discard() {
  // Above kError: Enabled() is false for every level, so nothing is formatted.
  static Logger* discard = [] {
    auto* logger = new Logger();
    logger->set_level(static_cast<LogLevel>(static_cast<int>(LogLevel::kError) + 1));
    logger->set_sink([](std::string_view) {});
    return logger;
  }();
  return *discard;
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "info";
}

bool ParseLogLevel(std::string_view text, LogLevel* out) {
  if (text == "debug") *out = LogLevel::kDebug;
  else if (text == "info") *out = LogLevel::kInfo;
  else if (text == "warning" || text == "warn") *out = LogLevel::kWarning;
  else if (text == "error") *out = LogLevel::kError;
  else return false;
  return true;
}

bool ParseLogFormat(std::string_view text, LogFormat* out) {
  if (text == "auto") *out = LogFormat::kAuto;
  else if (text == "text") *out = LogFormat::kText;
  else if (text == "journal") *out = LogFormat::kJournal;
  else if (text == "json") *out = LogFormat::kJson;
  else return false;
  return true;
}

Logger::Logger(const Clock* clock) : clock_(clock) {}

void Logger::set_format(LogFormat format) {
  if (format == LogFormat::kAuto) {
    const char* js = std::getenv("JOURNAL_STREAM");
    format = (js != nullptr && *js != '\0') ? LogFormat::kJournal : LogFormat::kText;
  }
  format_ = format;
}

void Logger::Log(LogLevel level, std::string_view message) {
  if (!Enabled(level)) return;
  std::string line;
  switch (format_) {
    case LogFormat::kJournal:
      line = "<" + std::to_string(SyslogPriority(level)) + ">";
      AppendEscaped(message, &line);
      break;
    case LogFormat::kJson: {
      // The same escaped text as the other formats, then JSON-quoted.
      nlohmann::json j;
      if (clock_ != nullptr) j["time"] = FormatIso8601UtcMillis(clock_->Now());
      j["level"] = LogLevelName(level);
      j["msg"] = Escaped(message);
      line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      break;
    }
    case LogFormat::kAuto:
    case LogFormat::kText: {
      if (clock_ != nullptr) {
        line = FormatIso8601UtcMillis(clock_->Now());
        line += ' ';
      }
      char lvl[10];
      std::snprintf(lvl, sizeof lvl, "%-8s", LogLevelName(level));
      line += lvl;
      AppendEscaped(message, &line);
      break;
    }
  }
  if (sink_) {
    sink_(line);
  } else {
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stderr);
    // The Windows C runtime buffers stderr when it is not a console (a file, a pipe).
    std::fflush(stderr);
  }
}

}  // namespace mi
