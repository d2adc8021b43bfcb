#pragma once
// mi-agent as a Windows service: the same Daemon, driven by the Service Control
// Manager. main_win.cc dispatches `mi-agent.exe service|install|uninstall` here.
//
//  * The service is named `mi-agent` and runs `"<exe>" service` as LocalSystem,
//    auto-start, restarted by the SCM when it fails.
//  * START_PENDING until every listener is bound, then RUNNING; STOP, SHUTDOWN
//    and PRESHUTDOWN drain (STOP_PENDING) and end in STOPPED; PARAMCHANGE
//    (`sc control mi-agent paramchange`) reloads the configuration file.
//  * Logs go to %ProgramData%\mi-agent\mi-agent.log (the previous file is kept
//    as mi-agent.log.1 once it exceeds 10 MiB; log_file_win.h).

#include <string>

#include "agent/app/daemon.h"
#include "agent/base/status.h"

namespace mi::windows_service {

inline constexpr wchar_t kServiceName[] = L"mi-agent";

// Connects to the SCM and runs the service until it stops; returns the process
// exit code. `options` come from LoadDaemonOptions (agent/app/cli.h); an error
// there (a bad configuration) is logged to the log file and reported to the
// SCM as a failed start. `notifier`, `handle_signals` and `log_sink` are
// replaced: the SCM is the notifier, a service has no console signals, and
// it logs to the file. Started by hand, outside the SCM, it prints why it
// cannot run and returns non-zero. (scm_service.cc)
int RunService(StatusOr<DaemonOptions> options);

// Registers the service to run `"<exe_path>" service`, or updates the command
// line of an existing registration. Prints what it did; returns 0 on success.
// REQUIRES: an elevated (Administrator) process. (scm_install.cc)
int InstallService(const std::wstring& exe_path);

// Stops the service (waiting for its drain) and deletes it. Returns 0 on
// success and when the service is not installed. (scm_install.cc)
int UninstallService();

// "mi-agent: WHAT: <the system's message> (ERROR)" on stderr, with a hint to
// elevate on ERROR_ACCESS_DENIED; returns 1, the exit code.
int Fail(const char* what, unsigned long error);
// "mi-agent: warning: WHAT: <the system's message> (ERROR)" on stderr.
void Warn(const char* what, unsigned long error);

}  // namespace mi::windows_service
