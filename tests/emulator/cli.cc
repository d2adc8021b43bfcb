#include "tests/emulator/cli.h"

#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "agent/base/event_loop.h"
#include "agent/base/uv_handle.h"
#include "proxy/http/http_server.h"

namespace mi::emulator {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buf;
  buf << in.rdbuf();
  *out = buf.str();
  return !in.bad();
}

bool ParseUnsigned(const std::string& text, uint64_t max, uint64_t* out) {
  if (text.empty() || text.size() > 19) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

// Writes `text` to `path` through a temporary file and a rename, so a reader
// never sees a partial file. uv_fs_rename replaces an existing file on Windows too.
Status WriteFileAtomically(uv_loop_t* loop, const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::Error("cannot write " + tmp);
    out << text;
    out.close();
    if (!out) return Status::Error("cannot write " + tmp);
  }
  uv_fs_t req;
  int rc = uv_fs_rename(loop, &req, tmp.c_str(), path.c_str(), nullptr);
  uv_fs_req_cleanup(&req);
  if (rc != 0) return Status::Error("cannot rename " + tmp + " to " + path + ": " + uv_strerror(rc));
  return Status::Ok();
}

// State the signal callbacks reach through handle->data.
struct Runner {
  Runner(EventLoop& l, Logger& lg, Emulator& e, proxy::HttpServer& s) : loop(l), logger(lg), emulator(e), server(s) {}

  EventLoop& loop;
  Logger& logger;
  Emulator& emulator;
  proxy::HttpServer& server;
  UvHandle<uv_signal_t> sigint;
  UvHandle<uv_signal_t> sigterm;
  bool stopping = false;

  void OnSignal(int signum) {
    if (stopping) {
      loop.Stop();  // a second signal: do not wait for the drain
      return;
    }
    stopping = true;
    MI_LOG(logger, kInfo) << "imds-emulator: " << (signum == SIGINT ? "SIGINT" : "SIGTERM") << ", stopping";
    emulator.AbortPending();
    server.Shutdown(Duration(2000), [this] {
      sigint.Close();
      sigterm.Close();
      loop.Stop();
    });
  }

  Status WatchSignal(UvHandle<uv_signal_t>& handle, int signum) {
    int rc = handle.Init(uv_signal_init, loop.uv(), this);
    if (rc != 0) return Status::Error(std::string("uv_signal_init: ") + uv_strerror(rc));
    rc = uv_signal_start(
        handle.get(),
        [](uv_signal_t* h, int sig) {
          if (h->data != nullptr) static_cast<Runner*>(h->data)->OnSignal(sig);
        },
        signum);
    if (rc != 0) return Status::Error(std::string("uv_signal_start: ") + uv_strerror(rc));
    return Status::Ok();
  }
};

}  // namespace

const char* Usage() {
  return "usage: imds-emulator [options]\n"
         "  --host HOST              listen address (default 127.0.0.1)\n"
         "  --port N                 listen port (default 0: ephemeral)\n"
         "  --port-file PATH         write the bound port there once listening\n"
         "  --system-assigned        enable the system-assigned identity (default)\n"
         "  --no-system-assigned     disable it\n"
         "  --user-assigned CLIENT_ID[,OBJECT_ID[,MI_RES_ID]]  add a user-assigned identity (repeatable)\n"
         "  --identities FILE        identities JSON; the identity flags apply on top\n"
         "  --tenant-id ID           tenant id in tokens\n"
         "  --lifetime SECONDS       token lifetime (default 86400)\n"
         "  --reissue-before SECONDS reissue a cached token when less remains (default 300)\n"
         "  --token-bytes N          access_token length (default 1200)\n"
         "  --throttle-rps N         429 above N token requests per second (default 0: off)\n"
         "  --delay-ms N             latency added to every token answer (default 0)\n"
         "  --reject-resource URI    answer invalid_resource for URI (repeatable)\n"
         "  --arc-token-dir DIR      Azure Arc mode: 401 challenges with secret files in DIR\n"
         "  --faults FILE            initial fault script JSON\n"
         "  --date-offset SECONDS    a Date header on token answers, shifted by SECONDS\n"
         "  --log-requests           log one line per request (never a token)\n"
         "  --log-level LEVEL        debug, info, warning, error (default info)\n"
         "  --help\n"
         "Admin API on the same port: /admin/requests, /admin/reset, /admin/faults,\n"
         "/admin/identities, /admin/config, /admin/tokens (see tests/emulator/emulator.h).\n";
}

Status ParseArgs(const std::vector<std::string>& args, CliOptions* out) {
  CliOptions o;
  std::optional<bool> system_assigned;
  std::vector<Identity> user_assigned;
  std::string identities_file;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::optional<std::string> inline_value;
    size_t eq = name.find('=');
    if (name.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    std::string value;
    auto take = [&]() -> bool {
      if (inline_value) {
        value = *inline_value;
        return true;
      }
      if (i + 1 >= args.size()) return false;
      value = args[++i];
      return true;
    };
    auto number = [&](uint64_t max, uint64_t* v) -> Status {
      if (!take()) return Status::Error(name + " needs a value");
      if (!ParseUnsigned(value, max, v)) return Status::Error(name + ": not a number in [0, " + std::to_string(max) + "]: " + value);
      return Status::Ok();
    };
    auto flag = [&]() -> Status {
      return inline_value ? Status::Error(name + " takes no value") : Status::Ok();
    };
    uint64_t v = 0;
    Status s;
    if (name == "--help" || name == "-h") {
      o.help = true;
    } else if (name == "--host") {
      if (!take() || value.empty()) return Status::Error("--host needs a value");
      o.host = value;
    } else if (name == "--port") {
      if (!(s = number(65535, &v)).ok()) return s;
      o.port = static_cast<uint16_t>(v);
    } else if (name == "--port-file") {
      if (!take() || value.empty()) return Status::Error("--port-file needs a path");
      o.port_file = value;
    } else if (name == "--system-assigned") {
      if (!(s = flag()).ok()) return s;
      system_assigned = true;
    } else if (name == "--no-system-assigned") {
      if (!(s = flag()).ok()) return s;
      system_assigned = false;
    } else if (name == "--user-assigned") {
      if (!take()) return Status::Error("--user-assigned needs CLIENT_ID[,OBJECT_ID[,MI_RES_ID]]");
      std::string parts[3];
      size_t start = 0;
      for (int p = 0; p < 3; ++p) {
        size_t comma = p < 2 ? value.find(',', start) : std::string::npos;
        parts[p] = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      if (parts[0].empty()) return Status::Error("--user-assigned: empty client id in \"" + value + "\"");
      user_assigned.push_back(DeriveUserAssigned(parts[0], parts[1], parts[2]));
    } else if (name == "--identities") {
      if (!take() || value.empty()) return Status::Error("--identities needs a file");
      identities_file = value;
    } else if (name == "--tenant-id") {
      if (!take() || value.empty()) return Status::Error("--tenant-id needs a value");
      o.emulator.tenant_id = value;
    } else if (name == "--lifetime") {
      if (!(s = number(INT32_MAX, &v)).ok()) return s;
      if (v == 0) return Status::Error("--lifetime must be at least 1 second");
      o.emulator.lifetime = std::chrono::seconds(v);
    } else if (name == "--reissue-before") {
      if (!(s = number(INT32_MAX, &v)).ok()) return s;
      o.emulator.reissue_before = std::chrono::seconds(v);
    } else if (name == "--token-bytes") {
      if (!(s = number(1 << 24, &v)).ok()) return s;
      o.emulator.token_bytes = static_cast<size_t>(v);
    } else if (name == "--throttle-rps") {
      if (!(s = number(UINT32_MAX, &v)).ok()) return s;
      o.emulator.throttle_rps = static_cast<uint32_t>(v);
    } else if (name == "--delay-ms") {
      if (!(s = number(INT32_MAX, &v)).ok()) return s;
      o.emulator.delay = Duration(v);
    } else if (name == "--date-offset") {
      if (!take()) return Status::Error("--date-offset needs a value");
      char* end = nullptr;
      const long long offset = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || offset < -86400LL * 3650 || offset > 86400LL * 3650) {
        return Status::Error("--date-offset: expected seconds (may be negative): " + value);
      }
      o.emulator.date_offset = offset;
    } else if (name == "--reject-resource") {
      if (!take() || value.empty()) return Status::Error("--reject-resource needs a value");
      o.emulator.reject_resources.push_back(value);
    } else if (name == "--arc-token-dir") {
      if (!take() || value.empty()) return Status::Error("--arc-token-dir needs a directory");
      o.emulator.arc_token_dir = value;
    } else if (name == "--faults") {
      if (!take() || value.empty()) return Status::Error("--faults needs a file");
      std::string text;
      if (!ReadFile(value, &text)) return Status::Error("cannot read " + value);
      s = ParseFaultScript(text, &o.faults);
      if (!s.ok()) return Status::Error(value + ": " + s.message());
    } else if (name == "--log-requests") {
      if (!(s = flag()).ok()) return s;
      o.emulator.log_requests = true;
    } else if (name == "--log-level") {
      if (!take() || !ParseLogLevel(value, &o.log_level)) return Status::Error("--log-level: debug, info, warning or error");
    } else {
      return Status::Error("unknown argument: " + args[i]);
    }
  }
  if (!identities_file.empty()) {
    std::string text;
    if (!ReadFile(identities_file, &text)) return Status::Error("cannot read " + identities_file);
    Status s = ParseIdentities(text, &o.emulator.identities);
    if (!s.ok()) return Status::Error(identities_file + ": " + s.message());
  }
  if (system_assigned) o.emulator.identities.system_assigned = *system_assigned;
  for (Identity& id : user_assigned) o.emulator.identities.user_assigned.push_back(std::move(id));
  Status s = ValidateIdentities(o.emulator.identities);
  if (!s.ok()) return s;
  *out = std::move(o);
  return Status::Ok();
}

int RunEmulator(const CliOptions& options) {
#ifdef SIGPIPE
  // A client that went away must not kill the emulator when a write hits it.
  std::signal(SIGPIPE, SIG_IGN);
#endif
  EventLoop loop;
  Logger logger(&loop.clock());
  logger.set_format(LogFormat::kText);
  logger.set_level(options.log_level);

  int exit_code = 0;
  {
    Emulator emulator(loop.clock(), loop, logger, options.emulator);
    emulator.SetFaults(options.faults);

    proxy::ServerLimits limits;
    limits.max_body_bytes = 1 << 20;  // admin scripts
    limits.idle_timeout = Duration(600000);
    NoPeerResolver no_peers;  // IMDS does not ask who is calling
    proxy::HttpServer server(loop.uv(), limits, emulator, logger, &no_peers);
    Runner runner(loop, logger, emulator, server);

    Status s = server.Listen(options.host, options.port);
    if (s.ok()) s = runner.WatchSignal(runner.sigint, SIGINT);
    if (s.ok()) s = runner.WatchSignal(runner.sigterm, SIGTERM);
    std::vector<uint16_t> ports = server.BoundPorts();
    if (s.ok() && ports.empty()) s = Status::Error("no listener");
    if (s.ok() && !options.port_file.empty()) {
      s = WriteFileAtomically(loop.uv(), options.port_file, std::to_string(ports.front()) + "\n");
    }
    if (!s.ok()) {
      std::fprintf(stderr, "imds-emulator: %s\n", s.message().c_str());
      exit_code = 1;
    } else {
      std::printf("imds-emulator listening on %s\n", server.BoundAddresses().front().c_str());
      std::fflush(stdout);
      loop.Run();
    }
    emulator.AbortPending();
    runner.sigint.Close();
    runner.sigterm.Close();
    // The server closes what is left; the emulator goes after it.
  }
  if (!loop.Close()) {
    std::fprintf(stderr, "imds-emulator: handles left open at exit\n");
    if (exit_code == 0) exit_code = 1;
  }
  return exit_code;
}

int EmulatorMain(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  CliOptions options;
  Status s = ParseArgs(args, &options);
  if (!s.ok()) {
    std::fprintf(stderr, "imds-emulator: %s\n%s", s.message().c_str(), Usage());
    return 2;
  }
  if (options.help) {
    std::fputs(Usage(), stdout);
    return 0;
  }
  return RunEmulator(options);
}

}  // namespace mi::emulator
