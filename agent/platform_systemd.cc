// Linux with libsystemd: sd_notify for the service state, sd_listen_fds for
// socket activation. Both are no-ops outside systemd (no NOTIFY_SOCKET, no
// LISTEN_FDS), so a console run or a test behaves like any other process.
#include "agent/platform.h"

#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace mi::platform {
namespace {

// Talks to the service manager over NOTIFY_SOCKET. sd_notify failures are
// ignored: the manager is gone or the socket is full, and the agent serves
// tokens either way (a missed READY=1 shows up as a start timeout in systemd).
class SdNotifier : public ServiceNotifier {
 public:
  SdNotifier() {
    uint64_t usec = 0;
    // > 0 only if WATCHDOG_USEC is set and WATCHDOG_PID (if set) is this process.
    if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0 && usec > 0) {
      // Ping at half the timeout, as sd_watchdog_enabled(3) recommends; never
      // below 1 ms (a sub-millisecond timeout would round to "no watchdog").
      watchdog_interval_ = Duration(usec / 2000 > 0 ? usec / 2000 : 1);
    }
  }

  void Ready() override { Send("READY=1"); }

  void Reloading() override {
    // MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match this
    // reload to its request; older managers ignore it.
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const uint64_t usec = static_cast<uint64_t>(now.tv_sec) * 1000000u +
                          static_cast<uint64_t>(now.tv_nsec) / 1000u;
    Send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
  }

  void Stopping() override { Send("STOPPING=1"); }

  void Status(std::string_view line) override {
    // STATUS= is one line of the notify message: a newline would end it and
    // start a new (bogus) assignment.
    std::string message = "STATUS=";
    message.reserve(message.size() + line.size());
    for (char c : line) {
      message.push_back(c == '\n' || c == '\r' ? ' ' : c);
    }
    Send(message);
  }

  void Watchdog() override {
    if (watchdog_interval_.count() > 0) Send("WATCHDOG=1");
  }

  Duration WatchdogInterval() const override { return watchdog_interval_; }

 private:
  static void Send(const std::string& message) {
    (void)sd_notify(/*unset_environment=*/0, message.c_str());
  }

  Duration watchdog_interval_{0};
};

}  // namespace

std::unique_ptr<ServiceNotifier> MakeNotifier() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  if (socket == nullptr || socket[0] == '\0') return std::make_unique<NullNotifier>();
  return std::make_unique<SdNotifier>();
}

Status TakeActivatedSockets(std::vector<uv_os_sock_t>* out) {
  // unset_environment=1: LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES must not leak into
  // anything this process starts. sd_listen_fds also sets FD_CLOEXEC on them.
  const int n = sd_listen_fds(/*unset_environment=*/1);
  if (n < 0) {
    return Status::Error(std::string("socket activation: invalid LISTEN_FDS: ") + std::strerror(-n));
  }
  std::vector<uv_os_sock_t> taken;
  for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; ++fd) {
    // Any family (AF_INET or AF_INET6), stream, listening, any port; or a
    // listening Unix stream socket (ListenStream=/run/mi-agent/token.sock).
    int r = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, /*listening=*/1, /*port=*/0);
    if (r == 0) r = sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, /*path=*/nullptr, /*length=*/0);
    if (r < 0) {
      return Status::Error("socket activation: fd " + std::to_string(fd) + ": " + std::strerror(-r));
    }
    if (r == 0) {
      return Status::Error("socket activation: fd " + std::to_string(fd) +
                           " is not a listening TCP or Unix stream socket (use ListenStream= with an IP address or "
                           "a path)");
    }
    taken.push_back(fd);
  }
  out->insert(out->end(), taken.begin(), taken.end());
  return Status::Ok();
}

std::string DefaultConfigPath() { return "/etc/mi-agent/config.json"; }

std::string DiscoveryFilePath() { return "/var/lib/waagent/ManagedIdentity-Settings"; }

std::string ArcAgentPath() { return "/opt/azcmagent/bin/himds"; }

std::string DefaultArcTokenDir() { return "/var/opt/azcmagent/tokens"; }

}  // namespace mi::platform
