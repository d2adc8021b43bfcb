#pragma once
// The running agent: builds the object graph (loop, upstream, broker, listeners,
// health), runs the loop, reloads and drains. Platform entry points (the POSIX
// main, the Windows service) drive it through this class only.

#include <atomic>
#include <memory>
#include <string>

#include "agent/app/config.h"
#include "agent/base/log.h"
#include "agent/service_notifier.h"

namespace mi {

struct DaemonOptions {
  Config config;
  std::string config_path;  // re-read on reload; "" = nothing to reload
  // Command-line overrides re-applied on top of a reloaded file.
  std::function<void(Config*)> overrides;
  ServiceNotifier* notifier = nullptr;  // not owned; null = NullNotifier
  // Run() first forbids core dumps (ForbidCoreDumps, agent/secure_memory.h);
  // true keeps the process dumpable (--allow-core-dumps: debugging only,
  // logged as a warning). Cached tokens stay excluded from dumps either way.
  bool allow_core_dumps = false;
  // POSIX: handle SIGTERM/SIGINT (drain) and SIGHUP (reload) on the loop.
  bool handle_signals = true;
  // Where log lines go (Logger::set_sink); null = stderr. The Windows service
  // logs to a file: a service has no usable stderr.
  std::function<void(std::string_view line)> log_sink;
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options);
  ~Daemon();

  // Runs on the calling thread until stopped; returns the process exit code
  // (0 after a clean drain, non-zero if start-up failed, with the reason logged).
  int Run();

  // Thread-safe: ask the loop to drain and stop / to reload the config file.
  void RequestStop();
  void RequestReload();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mi
