#pragma once
// %ProgramData%\mi-agent\mi-agent.log: a service has no console, and Wine has
// no usable event log, so a file it is.

#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

namespace mi::windows_service {

// The service's log file, opened once at start. Write() is thread-safe: lines
// come from the ServiceMain and the loop threads.
class LogFile {
 public:
  LogFile() = default;
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;
  ~LogFile();

  // Creates the directory, moves a file over 10 MiB to mi-agent.log.1, opens
  // the log for appending and sends stderr there too (best effort). Returns
  // false if it cannot open the log.
  bool Open();

  // Appends `line` and CRLF, and flushes. A no-op when the file is not open.
  void Write(std::string_view line);

  const std::wstring& path() const { return path_; }

 private:
  std::mutex mutex_;
  FILE* file_ = nullptr;
  std::wstring path_;
};

}  // namespace mi::windows_service
