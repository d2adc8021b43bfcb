#pragma once
// What differs between the service managers the agent runs under: how it
// reports its state (systemd's sd_notify, the Windows SCM), which listening
// sockets it is handed at start (systemd socket activation), and where its
// files live. One implementation per platform: platform_systemd.cc (Linux with
// libsystemd), platform_win.cc (Windows).

#include <uv.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/service_notifier.h"
#include "agent/base/status.h"

namespace mi::platform {

// The notifier for this process. Linux: an SdNotifier when NOTIFY_SOCKET is set
// (started by systemd as Type=notify), else a NullNotifier. The notifier reads
// its environment once, here; call before anything else changes it.
// WatchdogInterval() is half of WATCHDOG_USEC when the watchdog is on for this
// process (sd_watchdog_enabled), else 0.
std::unique_ptr<ServiceNotifier> MakeNotifier();

// Listening sockets passed by the service manager (LISTEN_FDS, sd_listen_fds).
// Appends them to *out, in the order given, and clears the LISTEN_* variables
// so that nothing started later inherits them. No sockets passed: *out is left
// unchanged and the result is ok. A passed descriptor that is not a listening
// TCP socket (IPv4 or IPv6) or Unix stream socket is an error naming it; then
// *out is left unchanged. The caller owns the sockets (HttpServer::Adopt them,
// or close them).
// Call once, at start-up, before the first bind.
Status TakeActivatedSockets(std::vector<uv_os_sock_t>* out);

// /etc/mi-agent/config.json (Windows: %ProgramData%\mi-agent\config.json).
std::string DefaultConfigPath();

// Where the old VM extension wrote its discovery file, which old client
// libraries read to find the token endpoint:
// /var/lib/waagent/ManagedIdentity-Settings
// (Windows: %SystemDrive%\WindowsAzure\Config\ManagedIdentity-Settings).
// The packages write it; the daemon only reports it.
std::string DiscoveryFilePath();

// The Azure Arc agent (himds), whose presence makes imds.kind "auto" mean arc:
// /opt/azcmagent/bin/himds (Windows: %ProgramFiles%\AzureConnectedMachineAgent\himds.exe).
std::string ArcAgentPath();
// Where himds writes its challenge files: /var/opt/azcmagent/tokens
// (Windows: %ProgramData%\AzureConnectedMachineAgent\Tokens).
std::string DefaultArcTokenDir();

#ifdef _WIN32
// UTF-16, as the Windows API speaks it, to UTF-8; "" when it does not convert.
std::string Utf8FromWide(std::wstring_view wide);
#endif

}  // namespace mi::platform
