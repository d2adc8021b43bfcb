#pragma once
// "dialects.app_service" (issue #14): the App Service / Functions dialects
// (proxy/token_api.h) and the file holding their shared secret.

#include <cstddef>
#include <string>

namespace mi {

struct AppServiceOptions {
  bool enabled = false;     // "enabled"
  std::string secret_file;  // "secret_file": absolute; "" = DefaultAppServiceSecretPath()
  // The file's bounds, after one trailing newline ("\n" or "\r\n") is stripped.
  // Its bytes are printable ASCII without spaces (a header value as is).
  static constexpr size_t kMinSecretBytes = 16;
  static constexpr size_t kMaxSecretBytes = 4096;
};

// /etc/mi-agent/app-service.secret; Windows: next to the default config file.
std::string DefaultAppServiceSecretPath();
// The secret_file in effect for `options`.
inline std::string AppServiceSecretPath(const AppServiceOptions& options) {
  return options.secret_file.empty() ? DefaultAppServiceSecretPath() : options.secret_file;
}

}  // namespace mi
