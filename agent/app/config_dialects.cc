// "dialects" in the config file (agent/app/config_reader.h).

#include <filesystem>
#include <fstream>
#include <system_error>

#include "agent/app/config_reader.h"
#include "agent/base/secure_memory.h"
#include "agent/platform.h"

namespace mi {

std::string DefaultAppServiceSecretPath() {
  std::string path = platform::DefaultConfigPath();
  const size_t slash = path.find_last_of("/\\");
  return path.substr(0, slash == std::string::npos ? 0 : slash + 1) + "app-service.secret";
}

namespace config_internal {
namespace {

bool AbsolutePath(const std::string& path) {
#ifdef _WIN32
  return (path.size() > 3 && path[1] == ':' && (path[2] == '\\' || path[2] == '/')) || path.rfind("\\\\", 0) == 0;
#else
  return !path.empty() && path.front() == '/';
#endif
}

// Reads at most kMaxSecretBytes + 2 bytes (a trailing CRLF) of a regular file.
// The messages name the file, never its content.
std::string ReadSecret(const std::string& path, std::string* secret) {
  const std::string where = "dialects.app_service.secret_file: " + path + ": ";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return where + "cannot be read (missing or not a regular file)";
  std::ifstream in(path, std::ios::binary);
  if (!in) return where + "cannot be read";
  std::string text(AppServiceOptions::kMaxSecretBytes + 3, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  std::string error;
  if (text.size() < AppServiceOptions::kMinSecretBytes || text.size() > AppServiceOptions::kMaxSecretBytes) {
    error = where + "expected " + std::to_string(AppServiceOptions::kMinSecretBytes) + " to " +
            std::to_string(AppServiceOptions::kMaxSecretBytes) + " bytes";
  } else {
    for (char c : text) {
      if (c < 0x21 || c > 0x7e) {
        error = where + "expected printable ASCII without spaces";
        break;
      }
    }
  }
  if (error.empty()) secret->assign(text);
  WipeString(&text);
  return error;
}

}  // namespace

void ParseDialects(Reader& r, std::string* error, AppServiceOptions* out, std::string* secret) {
  AppServiceOptions a = *out;
  bool given = false;
  r.Section("dialects", [&](Reader& d) {
    d.Section("app_service", [&](Reader& s) {
      given = true;
      s.Bool("enabled", &a.enabled);
      s.String("secret_file", &a.secret_file);
    });
  });
  if (!error->empty()) return;
  if (given && !a.secret_file.empty() && !AbsolutePath(a.secret_file)) {
    *error = "dialects.app_service.secret_file: expected an absolute path";
    return;
  }
  std::string read;
  if (a.enabled) {
    std::string why = ReadSecret(AppServiceSecretPath(a), &read);
    if (!why.empty()) {
      *error = std::move(why);
      return;
    }
  }
  *out = std::move(a);
  secret->swap(read);
  WipeString(&read);
}

}  // namespace config_internal
}  // namespace mi
