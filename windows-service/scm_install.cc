// `mi-agent.exe install` and `uninstall`: the service's registration with the
// Service Control Manager. See scm_service.h.
#include "windows-service/scm_service.h"

// winsock2.h before windows.h: agent/platform.h includes uv.h, which needs it.
#include <winsock2.h>
#include <windows.h>

#include <cstdio>
#include <iterator>
#include <memory>
#include <type_traits>

#include "agent/platform.h"

namespace mi::windows_service {
namespace {

constexpr wchar_t kDisplayName[] = L"mi-agent (managed identity token agent)";
constexpr wchar_t kDescription[] =
    L"Serves Azure managed-identity tokens to local applications on the legacy VM-extension API "
    L"(http://localhost:50342/oauth2/token), fetched from the Instance Metadata Service.";
constexpr DWORD kUninstallStopTimeoutMs = 60000;

struct ScHandleCloser {
  void operator()(SC_HANDLE h) const { CloseServiceHandle(h); }
};
using ScHandle = std::unique_ptr<std::remove_pointer_t<SC_HANDLE>, ScHandleCloser>;

}  // namespace

int InstallService(const std::wstring& exe_path) {
  ScHandle scm(OpenSCManagerW(nullptr, nullptr, SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE));
  if (!scm) return Fail("cannot open the Service Control Manager", GetLastError());
  std::wstring command = L"\"" + exe_path + L"\" service";
  bool updated = false;
  ScHandle service(CreateServiceW(scm.get(), kServiceName, kDisplayName, SERVICE_ALL_ACCESS,
                                  SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL,
                                  command.c_str(), nullptr, nullptr, nullptr, nullptr /* LocalSystem */, nullptr));
  if (!service) {
    DWORD error = GetLastError();
    if (error != ERROR_SERVICE_EXISTS) return Fail("cannot create service mi-agent", error);
    // Installing over an existing registration (an upgrade): point it at this exe.
    service.reset(OpenServiceW(scm.get(), kServiceName, SERVICE_ALL_ACCESS));
    if (!service) return Fail("cannot open service mi-agent", GetLastError());
    if (!ChangeServiceConfigW(service.get(), SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL,
                              command.c_str(), nullptr, nullptr, nullptr, nullptr, nullptr, kDisplayName)) {
      return Fail("cannot update service mi-agent", GetLastError());
    }
    updated = true;
  }

  SERVICE_DESCRIPTIONW description{const_cast<LPWSTR>(kDescription)};
  if (!ChangeServiceConfig2W(service.get(), SERVICE_CONFIG_DESCRIPTION, &description)) {
    Warn("cannot set the service description", GetLastError());
  }
  // Restart on failure: after 5 s, 10 s, then every 60 s; the count resets after a day.
  SC_ACTION actions[] = {{SC_ACTION_RESTART, 5000}, {SC_ACTION_RESTART, 10000}, {SC_ACTION_RESTART, 60000}};
  SERVICE_FAILURE_ACTIONSW failure{};
  failure.dwResetPeriod = 24 * 60 * 60;
  failure.cActions = static_cast<DWORD>(std::size(actions));
  failure.lpsaActions = actions;
  if (!ChangeServiceConfig2W(service.get(), SERVICE_CONFIG_FAILURE_ACTIONS, &failure)) {
    return Fail("cannot set the service's restart-on-failure actions", GetLastError());
  }
  // Also restart after a start-up failure (STOPPED with a non-zero exit code), not only a crash.
  SERVICE_FAILURE_ACTIONS_FLAG on_exit_code{TRUE};
  if (!ChangeServiceConfig2W(service.get(), SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, &on_exit_code)) {
    Warn("cannot enable failure actions for non-crash failures", GetLastError());
  }
  // Time to drain at system shutdown (PRESHUTDOWN).
  SERVICE_PRESHUTDOWN_INFO preshutdown{30000};
  if (!ChangeServiceConfig2W(service.get(), SERVICE_CONFIG_PRESHUTDOWN_INFO, &preshutdown)) {
    Warn("cannot set the pre-shutdown timeout", GetLastError());
  }
  std::printf("mi-agent: %s service mi-agent (automatic start, restart on failure): %s\n",
              updated ? "updated" : "installed", platform::Utf8FromWide(command).c_str());
  return 0;
}

int UninstallService() {
  ScHandle scm(OpenSCManagerW(nullptr, nullptr, SC_MANAGER_CONNECT));
  if (!scm) return Fail("cannot open the Service Control Manager", GetLastError());
  ScHandle service(OpenServiceW(scm.get(), kServiceName, SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE));
  if (!service) {
    DWORD error = GetLastError();
    if (error == ERROR_SERVICE_DOES_NOT_EXIST) {
      std::printf("mi-agent: service mi-agent is not installed\n");
      return 0;
    }
    return Fail("cannot open service mi-agent", error);
  }
  SERVICE_STATUS status{};
  // The process outlives its STOPPED report a little; the caller (an
  // uninstaller) deletes the exe next, so wait for the process itself too.
  HANDLE process = nullptr;
  SERVICE_STATUS_PROCESS process_status{};
  DWORD needed = 0;
  if (QueryServiceStatusEx(service.get(), SC_STATUS_PROCESS_INFO, reinterpret_cast<BYTE*>(&process_status),
                           sizeof process_status, &needed) &&
      process_status.dwProcessId != 0) {
    process = OpenProcess(SYNCHRONIZE, FALSE, process_status.dwProcessId);
  }
  if (QueryServiceStatus(service.get(), &status) && status.dwCurrentState != SERVICE_STOPPED) {
    if (!ControlService(service.get(), SERVICE_CONTROL_STOP, &status)) {
      DWORD error = GetLastError();
      if (error != ERROR_SERVICE_NOT_ACTIVE && error != ERROR_SERVICE_CANNOT_ACCEPT_CTRL) {
        Warn("cannot stop service mi-agent", error);
      }
    }
    // Wait for the drain to finish, so that the files can be removed after us.
    for (DWORD waited = 0; waited < kUninstallStopTimeoutMs; waited += 250) {
      if (!QueryServiceStatus(service.get(), &status) || status.dwCurrentState == SERVICE_STOPPED) break;
      Sleep(250);
    }
    if (status.dwCurrentState != SERVICE_STOPPED) {
      std::fprintf(stderr, "mi-agent: warning: service mi-agent did not stop within %lu s; deleting it anyway\n",
                   static_cast<unsigned long>(kUninstallStopTimeoutMs / 1000));
    } else if (process != nullptr) {
      WaitForSingleObject(process, 10000);
    }
  }
  if (process != nullptr) CloseHandle(process);
  if (!DeleteService(service.get())) {
    DWORD error = GetLastError();
    if (error != ERROR_SERVICE_MARKED_FOR_DELETE) return Fail("cannot delete service mi-agent", error);
  }
  std::printf("mi-agent: removed service mi-agent\n");
  return 0;
}

}  // namespace mi::windows_service
