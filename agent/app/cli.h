#pragma once
// The mi-agent command line. agent/main.cc (POSIX) only calls RunCli;
// windows-service/main_win.cc handles `service|install|uninstall` and hands
// everything else to RunCli.
//
//   mi-agent [options]            run the agent (foreground; a service manager
//                                 or the console supervises it)
//   mi-agent --check-config PATH  validate a configuration file and explain errors
//   mi-agent status [--health URL] [-o wide]  identity health from the running agent
//   mi-agent doctor [--config PATH] [--bundle FILE]  checks the installation
//   mi-agent token --resource R [...]   fetch a token through the running agent
//   mi-agent env [--config PATH]        the App Service dialects' environment
//   mi-agent --help | --version

#include <string>
#include <vector>

#include "agent/app/config.h"
#include "agent/app/daemon.h"
#include "agent/base/status.h"

namespace mi {

// Runs the command line (argv[0] is the program). Returns the exit code:
// 0, 1 (start-up failed), 2 (usage) or 78 (invalid configuration: a file, a
// drop-in or an option's value; also --check-config's answer for an invalid file).
inline constexpr int kExitInvalidConfiguration = 78;  // EX_CONFIG (sysexits.h)
int RunCli(int argc, char** argv);

// The daemon's options from its arguments (the command line without the
// program name): `--config PATH` (else the default file, which may be
// missing), `--allow-core-dumps`, and the overrides (--port, --listen, ...),
// applied on top of the file and re-applied after each reload. The notifier
// is left to the caller. Errors, as `mi-agent: ` prints them:
//   "invalid configuration: ..."  the file, a drop-in or an override's value
//                                  (kInvalidConfiguration; IsInvalidConfiguration)
//   "--config needs a file"        the option without its value
//   the override's message         an unknown option, a missing value
// Shared by the console run and the Windows `service` command.
StatusOr<DaemonOptions> LoadDaemonOptions(const std::vector<std::string>& args);
inline constexpr char kInvalidConfiguration[] = "invalid configuration: ";
inline bool IsInvalidConfiguration(const Status& s) {
  return !s.ok() && s.message().rfind(kInvalidConfiguration, 0) == 0;
}

// Applies command-line overrides (--port, --listen, ...) to `config`. On error
// the message names the option (code kBadOverrideValue when the value is
// refused, 0 for an unknown option or a missing value); `config` may then be
// partly changed.
inline constexpr int kBadOverrideValue = 1;
Status ApplyOverrides(const std::vector<std::string>& args, Config* config);

// Subcommands talking to a running agent (agent/app/commands.cc; status and
// doctor: status_command.h, doctor.h).
int RunTokenCommand(const std::vector<std::string>& args);
int RunEnvCommand(const std::vector<std::string>& args);

}  // namespace mi
