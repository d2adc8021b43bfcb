#include "windows-service/log_file_win.h"

// winsock2.h before windows.h: agent/platform.h includes uv.h, which needs it.
#include <winsock2.h>
#include <windows.h>

#include <share.h>

#include "agent/platform.h"

namespace mi::windows_service {
namespace {

constexpr ULONGLONG kMaxLogBytes = 10ull << 20;

std::wstring Wide(const std::string& utf8) {
  if (utf8.empty()) return {};
  int n = MultiByteToWideChar(CP_UTF8, 0, utf8.data(), static_cast<int>(utf8.size()), nullptr, 0);
  if (n <= 0) return {};
  std::wstring out(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, utf8.data(), static_cast<int>(utf8.size()), out.data(), n);
  return out;
}

}  // namespace

LogFile::~LogFile() {
  if (file_ != nullptr) std::fclose(file_);
}

bool LogFile::Open() {
  std::wstring config = Wide(platform::DefaultConfigPath());
  std::wstring dir = config.substr(0, config.find_last_of(L'\\'));
  CreateDirectoryW(dir.c_str(), nullptr);  // ERROR_ALREADY_EXISTS is fine
  path_ = dir + L"\\mi-agent.log";
  WIN32_FILE_ATTRIBUTE_DATA attributes;
  if (GetFileAttributesExW(path_.c_str(), GetFileExInfoStandard, &attributes)) {
    ULONGLONG size = (static_cast<ULONGLONG>(attributes.nFileSizeHigh) << 32) | attributes.nFileSizeLow;
    if (size > kMaxLogBytes) MoveFileExW(path_.c_str(), (path_ + L".1").c_str(), MOVEFILE_REPLACE_EXISTING);
  }
  file_ = _wfsopen(path_.c_str(), L"ab", _SH_DENYNO);
  if (file_ == nullptr) return false;
  // Best effort: stray stderr output (libuv or C runtime fatal errors) into
  // the same file. The C runtime refuses when stderr was never open (Wine does).
  _wfreopen(path_.c_str(), L"a", stderr);
  return true;
}

void LogFile::Write(std::string_view line) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_ == nullptr) return;
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fwrite("\r\n", 1, 2, file_);
  std::fflush(file_);
}

}  // namespace mi::windows_service
