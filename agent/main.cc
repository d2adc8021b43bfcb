// mi-agent: serves managed-identity tokens from IMDS on the legacy VM-extension
// API. Everything lives in libraries; see agent/app/cli.cc.
#include <csignal>

#include "agent/app/cli.h"

int main(int argc, char** argv) {
#ifndef _WIN32
  // A client that vanishes mid-write must cost an EPIPE, not the process.
  std::signal(SIGPIPE, SIG_IGN);
#endif
  return mi::RunCli(argc, argv);
}
