#pragma once
// The mi-agent command line: `mi-agent [options]` runs the daemon; subcommands
// `status`, `token`, `--check-config`. main.cc only calls RunCli.

namespace mi {

int RunCli(int argc, char** argv);

}  // namespace mi
