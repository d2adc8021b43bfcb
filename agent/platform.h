#pragma once
// Platform seams: the service manager, socket activation and paths.
// platform_systemd.cc (Linux) and platform_win.cc (Windows) implement them.

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "agent/service_notifier.h"
#include "agent/status.h"

namespace mi::platform {
std::unique_ptr<ServiceNotifier> MakeNotifier();            // SdNotifier when NOTIFY_SOCKET is set, else NullNotifier
Status TakeActivatedSockets(std::vector<uv_os_sock_t>* out); // LISTEN_FDS via sd_listen_fds(1), validated; none → empty, ok
std::string DefaultConfigPath();                             // /etc/mi-agent/config.json
std::string DiscoveryFilePath();                             // /var/lib/waagent/ManagedIdentity-Settings
}
