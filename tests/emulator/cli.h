#pragma once
// The imds-emulator command line. main.cc only calls EmulatorMain.
//
//   imds-emulator [options]
//     --host HOST              listen address (default 127.0.0.1)
//     --port N                 listen port (default 0: ephemeral)
//     --port-file PATH         write the bound port there once listening (atomic rename)
//     --system-assigned        enable the system-assigned identity (default)
//     --no-system-assigned     disable it
//     --user-assigned CLIENT_ID[,OBJECT_ID[,MI_RES_ID]]
//                              add a user-assigned identity (repeatable; missing ids derived)
//     --identities FILE        identities JSON (see emulator.h); the flags above apply on top
//     --tenant-id ID           tenant in tokens
//     --lifetime SECONDS       token lifetime (default 86400)
//     --reissue-before SECONDS reissue a cached token when less remains (default 300)
//     --token-bytes N          access_token length (default 1200: ~1.4 KB bodies)
//     --throttle-rps N         429 above N token requests in any second (default 0: off)
//     --delay-ms N             latency added to every token answer (default 0)
//     --reject-resource URI    answer invalid_resource for it (repeatable)
//     --arc-token-dir DIR      Azure Arc mode (see emulator.h): challenge files in DIR
//     --faults FILE            initial fault script JSON (see emulator.h)
//     --log-requests           one log line per request (never a token)
//     --log-level LEVEL        debug, info, warning, error (default info)
//     --help
// Prints "imds-emulator listening on HOST:PORT" on stdout once listening.
// SIGINT/SIGTERM: close connections and exit 0.

#include <cstdint>
#include <string>
#include <vector>

#include "agent/base/log.h"
#include "agent/base/status.h"
#include "tests/emulator/emulator.h"

namespace mi::emulator {

struct CliOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string port_file;
  EmulatorOptions emulator;
  FaultScript faults;
  LogLevel log_level = LogLevel::kInfo;
  bool help = false;
};

// Parses the arguments (without argv[0]) and reads the files they name.
Status ParseArgs(const std::vector<std::string>& args, CliOptions* out);
const char* Usage();

// Runs the emulator until SIGINT/SIGTERM. Returns the process exit code.
int RunEmulator(const CliOptions& options);

int EmulatorMain(int argc, char** argv);

}  // namespace mi::emulator
