#pragma once
// The mi-agent command line. main.cc only calls RunCli.
//
//   mi-agent [options]            run the agent (foreground; a service manager
//                                 or the console supervises it)
//   mi-agent --check-config PATH  validate a configuration file and explain errors
//   mi-agent status [--health URL]      identity health from the running agent
//   mi-agent token --resource R [...]   fetch a token through the running agent
//   mi-agent --help | --version

#include <string>
#include <vector>

#include "agent/app/config.h"
#include "agent/base/status.h"

namespace mi {

int RunCli(int argc, char** argv);

// Parsed daemon options (exposed for tests).
struct CliOptions {
  std::string config_path;
  bool config_path_given = false;
  std::vector<std::string> args;  // the overrides, kept to re-apply after a reload
};

// Applies command-line overrides (--port, --listen, ...) to `config`. On error
// the message names the option; `config` may then be partly changed.
Status ApplyOverrides(const std::vector<std::string>& args, Config* config);

// Subcommands talking to a running agent (agent/app/commands.cc).
int RunStatusCommand(const std::vector<std::string>& args);
int RunTokenCommand(const std::vector<std::string>& args);

}  // namespace mi
