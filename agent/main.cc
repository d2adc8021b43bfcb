// mi-agent: serves managed-identity tokens from IMDS on the legacy VM-extension
// API. The POSIX main (Windows: windows-service/main_win.cc). Everything lives
// in libraries; see agent/app/cli.cc.
#include <csignal>

#include "agent/app/cli.h"

int main(int argc, char** argv) {
  // A client that vanishes mid-write must cost an EPIPE, not the process.
  std::signal(SIGPIPE, SIG_IGN);
  return mi::RunCli(argc, argv);
}
