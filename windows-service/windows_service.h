#pragma once
// mi-agent as a Windows service: the same Daemon, driven by the Service Control
// Manager. The CLI dispatches `mi-agent.exe service|install|uninstall` here.
//
//  * The service is named `mi-agent` and runs `"<exe>" service` as LocalSystem,
//    auto-start, restarted by the SCM when it fails.
//  * START_PENDING until every listener is bound, then RUNNING; STOP, SHUTDOWN
//    and PRESHUTDOWN drain (STOP_PENDING) and end in STOPPED; PARAMCHANGE
//    (`sc control mi-agent paramchange`) reloads the configuration file.
//  * Logs go to %ProgramData%\mi-agent\mi-agent.log (the previous file is kept
//    as mi-agent.log.1 once it exceeds 10 MiB).

#include <string>
#include <vector>

#include "agent/app/daemon.h"

namespace mi {

// `mi-agent.exe service [--config PATH] [overrides]`, `install` and `uninstall`
// (called by RunCli). `service` loads the configuration like a console run;
// a configuration error is logged to the log file and reported to the SCM as
// a failed start.
int RunWindowsCommand(const std::string& command, const std::vector<std::string>& args);

// Connects to the SCM and runs the service until it stops; returns the process
// exit code. `options.notifier` and `options.handle_signals` are replaced (the
// SCM is the notifier; a service has no console signals). Started by hand,
// outside the SCM, it prints why it cannot run and returns non-zero.
int RunWindowsService(DaemonOptions options);

// Registers the service to run `"<exe_path>" service`, or updates the command
// line of an existing registration. Prints what it did; returns 0 on success.
// REQUIRES: an elevated (Administrator) process.
int InstallWindowsService(const std::wstring& exe_path);

// Stops the service (waiting for its drain) and deletes it. Returns 0 on
// success and when the service is not installed.
int UninstallWindowsService();

}  // namespace mi
