// Temporary: replaced by the systemd branch.
#include "agent/platform.h"

namespace mi::platform {
std::unique_ptr<ServiceNotifier> MakeNotifier() { return std::make_unique<NullNotifier>(); }
Status TakeActivatedSockets(std::vector<uv_os_sock_t>* out) {
  out->clear();
  return Status::Ok();
}
std::string DefaultConfigPath() { return "/etc/mi-agent/config.json"; }
std::string DiscoveryFilePath() { return "/var/lib/waagent/ManagedIdentity-Settings"; }
}  // namespace mi::platform
