#include "agent/app/cli.h"

#include <cstdio>
#include <cstring>
#include <exception>

#include "agent/app/daemon.h"
#include "agent/app/doctor.h"
#include "agent/app/status_command.h"
#include "agent/platform.h"
#include "agent/base/secure_memory.h"
#include "agent/base/text.h"

namespace mi {
namespace {

constexpr const char* kUsage = R"(Usage: mi-agent [options]
       mi-agent --check-config PATH
       mi-agent status [--health HOST:PORT] [--json] [-o wide]
       mi-agent token --resource URI [--client-id ID | --object-id ID | --mi-res-id ID]
                      [--port N | --unix-socket PATH] [--show-token]
       mi-agent env [--config PATH]
       mi-agent doctor [--config PATH] [--health HOST:PORT] [--bundle FILE]

Serves managed-identity tokens on the legacy VM-extension API
(http://localhost:50342/oauth2/token) and an IMDS-shaped API, fetched from IMDS
and cached.

Options:
  --config PATH          configuration file (default: %s; a missing default
                         file means built-in defaults)
  --port N               token listener port (default 50342)
  --listen ADDR          token listener address; repeat for several
                         (default 127.0.0.1 and ::1)
  --imds-endpoint URL    IMDS token endpoint
                         (default http://169.254.169.254/metadata/identity/oauth2/token)
  --health HOST:PORT     health listener; repeat for several (default 127.0.0.1:50343)
  --no-health            no health listener
  --log-level LEVEL      debug, info, warning, error (default info)
  --log-format FORMAT    auto, text, journal, json (default auto: journal under systemd)
  --check-config PATH    validate PATH with its config.d drop-ins and exit
                         (0 valid, 78 invalid)
  --allow-core-dumps     for debugging only (Linux): keep the process dumpable.
                         By default it is not: no core file on a crash, and no
                         debugger or gcore but root's
  --help, --version
)";

bool TakeValue(const std::vector<std::string>& args, size_t* i, std::string* value) {
  if (*i + 1 >= args.size()) return false;
  *value = args[++*i];
  return true;
}

}  // namespace

Status ApplyOverrides(const std::vector<std::string>& args, Config* config) {
  // A value refused (not a usage error): an invalid configuration.
  const auto bad = [](std::string message) { return Status::Error(kBadOverrideValue, std::move(message)); };
  bool listen_given = false;
  bool health_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    std::string v;
    if (a == "--no-health") {
      config->health.clear();
      health_given = true;
      continue;
    }
    if (a != "--port" && a != "--listen" && a != "--imds-endpoint" && a != "--health" && a != "--log-level" &&
        a != "--log-format") {
      return Status::Error("unknown option " + a);
    }
    if (!TakeValue(args, &i, &v)) return Status::Error(a + ": needs a value");
    // Config strings end up in JSON (status, the config digest): UTF-8 only.
    if (size_t bad_at = InvalidUtf8Offset(v); bad_at != std::string::npos) {
      return bad(a + ": the value is not valid UTF-8 (byte " + std::to_string(bad_at) + ")");
    }
    if (a == "--port") {
      char* end = nullptr;
      long port = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || port < 0 || port > 65535) return bad("--port: expected 0..65535");
      config->port = static_cast<uint16_t>(port);
    } else if (a == "--listen") {
      if (!listen_given) config->listen.clear();
      listen_given = true;
      config->listen.push_back(v);
    } else if (a == "--imds-endpoint") {
      if (v.rfind("http://", 0) != 0 && v.rfind("https://", 0) != 0) {
        return bad("--imds-endpoint: expected an http:// URL");
      }
      config->imds.endpoint = v;
    } else if (a == "--health") {
      ListenAddress addr;
      if (!ParseListenAddress(v, &addr)) return bad("--health: expected HOST:PORT");
      if (!health_given) config->health.clear();
      health_given = true;
      config->health.push_back(addr);
    } else if (a == "--log-level") {
      if (!ParseLogLevel(v, &config->log_level)) {
        return bad("--log-level: expected debug, info, warning or error");
      }
    } else if (a == "--log-format") {
      if (!ParseLogFormat(v, &config->log_format)) {
        return bad("--log-format: expected auto, text, journal or json");
      }
    }
  }
  return Status::Ok();
}

StatusOr<DaemonOptions> LoadDaemonOptions(const std::vector<std::string>& args) {
  DaemonOptions options;
  options.config_path = DefaultConfigPath();
  bool config_path_given = false;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--config") {
      if (!TakeValue(args, &i, &options.config_path)) return Status::Error("--config needs a file");
      config_path_given = true;
    } else if (a == "--allow-core-dumps") {
      options.allow_core_dumps = true;  // a start-up choice, not an override a reload re-applies
    } else {
      overrides.push_back(a);
    }
  }
  Status s = LoadConfigFile(options.config_path, /*missing_ok=*/!config_path_given, &options.config);
  if (!s.ok()) return Status::Error(kInvalidConfiguration + s.message());
  Status overridden = ApplyOverrides(overrides, &options.config);
  if (!overridden.ok() && overridden.code() == kBadOverrideValue) {
    return Status::Error(kInvalidConfiguration + overridden.message());
  }
  if (!overridden.ok()) return overridden;
  options.overrides = [overrides = std::move(overrides)](Config* c) { ApplyOverrides(overrides, c); };
  return options;
}

namespace {

// An invalid configuration at start: logged at error priority in the format
// the command line asks for (the journal's <3> under systemd by default), the
// file's own choice being unknown.
void LogInvalidConfiguration(const std::vector<std::string>& args, const std::string& message) {
  LogFormat format = LogFormat::kAuto;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--log-format") ParseLogFormat(args[i + 1], &format);
  }
  SystemClock clock;
  Logger logger(&clock);
  logger.set_format(format);
  MI_LOG(logger, kError) << message;
}

int RunDaemon(const std::vector<std::string>& args) {
  StatusOr<DaemonOptions> options = LoadDaemonOptions(args);
  if (!options.ok()) {
    const std::string& message = options.status().message();
    if (IsInvalidConfiguration(options.status())) {
      LogInvalidConfiguration(args, message);
      return kExitInvalidConfiguration;
    }
    std::fprintf(stderr, "mi-agent: %s (see --help)\n", Escaped(message).c_str());
    return 2;
  }
  auto notifier = platform::MakeNotifier();
  options->notifier = notifier.get();
  Daemon daemon(std::move(*options));
  return daemon.Run();
}

int RunCommandLine(const std::vector<std::string>& args) {
  if (!args.empty()) {
    const std::string& cmd = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (cmd == "status") return RunStatusCommand(rest);
    if (cmd == "env") return RunEnvCommand(rest);
    if (cmd == "doctor") return RunDoctorCommand(rest);
    if (cmd == "token") {
      // It holds a token too (and prints it with --show-token). Best effort.
      (void)ForbidCoreDumps();
      return RunTokenCommand(rest);
    }
  }

  // The actions first, in order; an option's value is never taken for one.
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::printf(kUsage, DefaultConfigPath().c_str());
      return 0;
    }
    if (a == "--version") {
      std::printf("mi-agent %s\n", MI_VERSION);
      return 0;
    }
    if (a == "--check-config") {
      std::string path;
      if (!TakeValue(args, &i, &path)) {
        std::fprintf(stderr, "mi-agent: --check-config needs a file\n");
        return 2;
      }
      Config config;
      Status s = LoadConfigFile(path, false, &config);
      if (!s.ok()) {
        std::fprintf(stderr, "mi-agent: invalid configuration: %s\n", Escaped(s.message()).c_str());
        return kExitInvalidConfiguration;
      }
      std::printf("%s: valid (port %u, IMDS %s, %zu prefetch key(s))\n", path.c_str(), config.port,
                  config.imds.endpoint.c_str(), config.cache.prefetch.size());
      return 0;
    }
    if (a == "--config") {
      std::string path;
      if (!TakeValue(args, &i, &path)) {
        std::fprintf(stderr, "mi-agent: --config needs a file\n");
        return 2;
      }
    }
  }
  return RunDaemon(args);
}

}  // namespace

int RunCli(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // Start-up may throw (std::bad_alloc, std::system_error); the loop does not.
  try {
    return RunCommandLine(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mi-agent: start-up failed: %s\n", Escaped(e.what()).c_str());
    return 1;
  }
}

}  // namespace mi
