// Windows implementation of agent/platform.h. A console run reports to nobody
// (NullNotifier); the service reports to the SCM through its own notifier
// (windows-service/windows_service_win.cc). There is no socket activation.
#include "agent/platform.h"

#include <windows.h>

namespace mi::platform {
namespace {

// The value of an environment variable as UTF-8, or `fallback` when unset.
std::string EnvOr(const wchar_t* name, const char* fallback) {
  wchar_t buf[MAX_PATH];
  DWORD n = GetEnvironmentVariableW(name, buf, MAX_PATH);
  if (n == 0 || n >= MAX_PATH) return fallback;
  int bytes = WideCharToMultiByte(CP_UTF8, 0, buf, static_cast<int>(n), nullptr, 0, nullptr, nullptr);
  if (bytes <= 0) return fallback;
  std::string out(static_cast<size_t>(bytes), '\0');
  WideCharToMultiByte(CP_UTF8, 0, buf, static_cast<int>(n), out.data(), bytes, nullptr, nullptr);
  return out;
}

}  // namespace

std::unique_ptr<ServiceNotifier> MakeNotifier() { return std::make_unique<NullNotifier>(); }

Status TakeActivatedSockets(std::vector<uv_os_sock_t>* out) {
  out->clear();
  return Status::Ok();
}

// %ProgramData%\mi-agent\config.json
std::string DefaultConfigPath() { return EnvOr(L"ProgramData", "C:\\ProgramData") + "\\mi-agent\\config.json"; }

// %SystemDrive%\WindowsAzure\Config\ManagedIdentity-Settings, where the VM
// extension wrote it and old client libraries look for it.
std::string DiscoveryFilePath() {
  return EnvOr(L"SystemDrive", "C:") + "\\WindowsAzure\\Config\\ManagedIdentity-Settings";
}

}  // namespace mi::platform
