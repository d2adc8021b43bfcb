// Windows implementation of agent/platform.h. A console run reports to nobody
// (NullNotifier); the service reports to the SCM through its own notifier
// (windows-service/scm_service.cc). There is no socket activation.
#include "agent/platform.h"

#include <windows.h>
#include <knownfolders.h>
#include <shlobj.h>

namespace mi::platform {
namespace {

// The known folder, not %ProgramData%: a service's environment need not carry
// it (under Wine it even points elsewhere), and the installers use the folder.
std::string ProgramDataDir() {
  wchar_t* path = nullptr;
  std::string out;
  if (SUCCEEDED(SHGetKnownFolderPath(FOLDERID_ProgramData, 0, nullptr, &path)) && path != nullptr) {
    out = Utf8FromWide(path);
  }
  CoTaskMemFree(path);
  return out.empty() ? "C:\\ProgramData" : out;
}

std::string ProgramFilesDir() {
  wchar_t* path = nullptr;
  std::string out;
  if (SUCCEEDED(SHGetKnownFolderPath(FOLDERID_ProgramFiles, 0, nullptr, &path)) && path != nullptr) {
    out = Utf8FromWide(path);
  }
  CoTaskMemFree(path);
  return out.empty() ? "C:\\Program Files" : out;
}

// "C:" from the Windows directory (what %SystemDrive% names).
std::string SystemDrive() {
  wchar_t windir[MAX_PATH];
  UINT n = GetSystemWindowsDirectoryW(windir, MAX_PATH);
  if (n < 2 || n >= MAX_PATH || windir[1] != L':') return "C:";
  return Utf8FromWide(std::wstring_view(windir, 2));
}

}  // namespace

std::string Utf8FromWide(std::wstring_view wide) {
  if (wide.empty()) return {};
  const int length = static_cast<int>(wide.size());
  int bytes = WideCharToMultiByte(CP_UTF8, 0, wide.data(), length, nullptr, 0, nullptr, nullptr);
  if (bytes <= 0) return {};
  std::string out(static_cast<size_t>(bytes), '\0');
  WideCharToMultiByte(CP_UTF8, 0, wide.data(), length, out.data(), bytes, nullptr, nullptr);
  return out;
}

std::unique_ptr<ServiceNotifier> MakeNotifier() { return std::make_unique<NullNotifier>(); }

Status TakeActivatedSockets(std::vector<uv_os_sock_t>* out) {
  out->clear();
  return Status::Ok();
}

// %ProgramData%\mi-agent\config.json
std::string DefaultConfigPath() { return ProgramDataDir() + "\\mi-agent\\config.json"; }

// %SystemDrive%\WindowsAzure\Config\ManagedIdentity-Settings, where the VM
// extension wrote it and old client libraries look for it.
std::string DiscoveryFilePath() { return SystemDrive() + "\\WindowsAzure\\Config\\ManagedIdentity-Settings"; }

std::string ArcAgentPath() { return ProgramFilesDir() + "\\AzureConnectedMachineAgent\\himds.exe"; }

std::string DefaultArcTokenDir() { return ProgramDataDir() + "\\AzureConnectedMachineAgent\\Tokens"; }

}  // namespace mi::platform
