// mi-agent: serves managed-identity tokens from IMDS on the legacy VM-extension
// API. Everything lives in libraries; see agent/app/cli.cc.
#include "agent/app/cli.h"

int main(int argc, char** argv) { return mi::RunCli(argc, argv); }
