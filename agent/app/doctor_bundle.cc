// `mi-agent doctor --bundle`: the support bundle, and the process and file
// helpers doctor's checks share (agent/app/doctor.h).
#include <curl/curl.h>
#include <uv.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

#ifndef _WIN32
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "agent/app/cli_http.h"
#include "agent/app/config_merge.h"
#include "agent/app/doctor.h"

#ifndef _WIN32
extern char** environ;
#endif

namespace mi {
namespace doctor {

using ojson = nlohmann::ordered_json;

bool ReadSmallFile(const std::string& path, std::string* out, size_t max) {
  std::string error;
  return config_merge::ReadBounded(path, max, out, &error);
}

std::string ScrubJwts(std::string text) {
  for (size_t at = 0; (at = text.find("eyJ", at)) != std::string::npos;) {
    size_t end = at;
    while (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '-' ||
                                 text[end] == '_' || text[end] == '.')) {
      ++end;
    }
    if (end - at >= 16) {
      text.replace(at, end - at, "[redacted]");
      at += 10;
    } else {
      at = end;
    }
  }
  return text;
}

#ifndef _WIN32
bool RunCapture(const std::vector<std::string>& argv, std::string* out, size_t max_bytes, int timeout_seconds) {
  int fds[2];
  if (::pipe(fds) != 0) return false;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return false;
  }
  const time_t deadline = std::time(nullptr) + timeout_seconds;
  char buf[4096];
  bool killed = false;
  for (;;) {
    struct pollfd p = {fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, 500);
    if (ready > 0) {
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      if (out->size() < max_bytes) out->append(buf, std::min(static_cast<size_t>(n), max_bytes - out->size()));
    } else if (ready < 0 && errno != EINTR) {
      break;
    }
    if (std::time(nullptr) > deadline) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return !killed && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
#endif

#ifndef _WIN32
namespace {

// What the daemon runs with, for the bundle: the file (secret-looking values
// redacted) and the settings that matter; never app_service's secret.
ojson EffectiveConfig(const std::string& path, const Config& c) {
  ojson j;
  j["file"] = path;
  std::string text;
  if (ReadSmallFile(path, &text)) {
    ojson file = ParseJsonBounded(text);
    if (file.is_discarded()) {
      j["file_content"] = "(not valid JSON)";
    } else {
      RedactSecrets(&file);
      j["file_content"] = file;
    }
  } else {
    j["file_content"] = nullptr;
  }
  ojson health = ojson::array();
  for (const ListenAddress& a : c.health) health.push_back(a.host + ":" + std::to_string(a.port));
  j["effective"] = {{"port", c.port},
                    {"listen", c.listen},
                    {"unix_socket", c.unix_socket},
                    {"health", health},
                    {"imds_endpoint", c.imds.endpoint},
                    {"imds_api_version", c.imds.api_version},
                    {"prefetch_keys", c.cache.prefetch.size()},
                    {"app_service_enabled", c.app_service.enabled}};
  return j;
}

bool WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  return static_cast<bool>(out);
}

std::string Versions() {
  std::string out = std::string("mi-agent ") + MI_VERSION + "\nlibuv " + uv_version_string() + "\n" + curl_version() + "\n";
  struct utsname u {};
  if (::uname(&u) == 0) {
    out += std::string("kernel ") + u.sysname + " " + u.release + " " + u.version + " " + u.machine + "\n";
  }
  return out;
}

}  // namespace

// Writes the bundle's files to a private directory and tars them into `file`.
Check WriteBundle(const std::string& file, const std::string& report, const std::string& health,
                  const std::string& config_path, const Config& config) {
  std::string target = file;
  if (target.empty() || target[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) == nullptr) return {Verdict::kFail, "bundle", "cannot resolve " + file, ""};
    target = std::string(cwd) + "/" + file;
  }
  char dir[] = "/tmp/mi-agent-doctor.XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    return {Verdict::kFail, "bundle", std::string("cannot create a directory in /tmp: ") + std::strerror(errno), ""};
  }
  std::vector<std::pair<std::string, std::string>> files;
  files.push_back({"doctor.txt", report});
  std::string status = "(no health listener)\n", metrics = status;
  if (!health.empty()) {
    HttpResult s = HttpGet(HealthUrl(health, "/status") + "?entries=all", {}, 60, 256u << 20);
    status = s.reached ? s.body : "(unreachable: " + s.error + ")\n";
    HttpResult m = HttpGet(HealthUrl(health, "/metrics"), {}, 60, 64u << 20);
    metrics = m.reached ? m.body : "(unreachable: " + m.error + ")\n";
  }
  files.push_back({"status.json", status});
  files.push_back({"metrics.txt", metrics});
  files.push_back({"config.json", EffectiveConfig(config_path, config).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"});
  std::string journal;
  if (!RunCapture({"journalctl", "-u", "mi-agent", "-n", "500", "--no-pager"}, &journal, 4u << 20, 30)) {
    journal = "(journalctl -u mi-agent was not available here)\n" + journal;
  }
  files.push_back({"journal.txt", journal});
  files.push_back({"versions.txt", Versions()});

  std::vector<std::string> argv = {"tar", "-czf", target, "-C", dir};
  bool written = true;
  for (const auto& [name, content] : files) {
    written = written && WriteFile(std::string(dir) + "/" + name, ScrubJwts(content));
    argv.push_back(name);
  }
  std::string tar_output;
  const bool tarred = written && RunCapture(argv, &tar_output, 4096, 60);
  for (const auto& f : files) ::unlink((std::string(dir) + "/" + f.first).c_str());
  ::rmdir(dir);
  if (!tarred) {
    return {Verdict::kFail, "bundle", "could not write " + target + (tar_output.empty() ? "" : ": " + Trim(tar_output)),
            "check that tar and gzip are installed and the directory is writable"};
  }
  // Caller names and uids from the logs: for whoever runs doctor only.
  (void)::chmod(target.c_str(), 0600);
  return {Verdict::kOk, "bundle", "wrote " + target, ""};
}
#endif

}  // namespace doctor
}  // namespace mi
