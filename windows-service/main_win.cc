// mi-agent.exe: the Windows main. `service`, `install` and `uninstall` are the
// Service Control Manager's (scm_service.h); everything else is the same
// command line as on Linux (agent/app/cli.h).
// winsock2.h before windows.h: agent/app/cli.h brings in curl.h and uv.h, which need it.
#include <winsock2.h>
#include <windows.h>

#include <cstdio>
#include <string>
#include <vector>

#include "agent/app/cli.h"
#include "windows-service/scm_service.h"

namespace mi::windows_service {
namespace {

std::wstring ModulePath() {
  std::wstring path(MAX_PATH, L'\0');
  for (;;) {
    DWORD n = GetModuleFileNameW(nullptr, path.data(), static_cast<DWORD>(path.size()));
    if (n == 0) return L"";
    if (n < path.size()) {
      path.resize(n);
      return path;
    }
    path.resize(path.size() * 2);
  }
}

// `install` and `uninstall` take no arguments.
int RunRegistrationCommand(const std::string& command, const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::fprintf(stderr, "mi-agent: %s takes no arguments\n", command.c_str());
    return 2;
  }
  if (command == "uninstall") return UninstallService();
  std::wstring exe = ModulePath();
  if (exe.empty()) return Fail("cannot find the path of mi-agent.exe", GetLastError());
  return InstallService(exe);
}

}  // namespace
}  // namespace mi::windows_service

int main(int argc, char** argv) {
  if (argc >= 2) {
    std::string command = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    // `service [--config PATH] [overrides]`: the configuration rules of a console run.
    if (command == "service") return mi::windows_service::RunService(mi::LoadDaemonOptions(args));
    if (command == "install" || command == "uninstall") {
      return mi::windows_service::RunRegistrationCommand(command, args);
    }
  }
  return mi::RunCli(argc, argv);
}
