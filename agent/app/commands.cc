// `mi-agent status` and `mi-agent token`: small clients of a running agent. A
// command line tool, not the daemon: blocking libcurl easy calls are fine here.
//
//   mi-agent status [--health HOST:PORT|URL] [--json]
//     GET /status?entries=all (every key, exact) from the health listener (default
//     127.0.0.1:50343) and print a table (or the JSON). While the agent is busy
//     with another full view (503) it asks again, once a second, a few times.
//     Exit 0: every key ok (or refreshing with a valid token); 1: any key
//     degraded, failing or without a token; 2: agent unreachable.
//
//   mi-agent token --resource R [--client-id ID|--object-id ID|--mi-res-id ID]
//                  [--host H] [--port N | --unix-socket PATH] [--config PATH]
//                  [--show-token]
//     GET /oauth2/token from the token listener with "Metadata: true" and print
//     the answer with the access token redacted. Exit 0: 200; 1: an error answer
//     (printed); 2: agent unreachable. The listener: --unix-socket, or
//     --host/--port, or else the agent's Unix socket when there is one (the
//     config file's "unix_socket", else /run/mi-agent/token.sock if it is a
//     socket), or else TCP 127.0.0.1:50342.
//
//   mi-agent env [--config PATH]
//     Prints the environment an application needs for the App Service dialects
//     (dialects.app_service), as POSIX shell export lines: IDENTITY_ENDPOINT,
//     IDENTITY_HEADER, MSI_ENDPOINT, MSI_SECRET. Reads the secret file, so it
//     needs that file's group. Exit 0: printed; 1: the config is invalid or the
//     dialect is off or the agent has no TCP listener; 2: usage.
#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#ifndef _WIN32
#include <sys/stat.h>
#endif

#include "agent/app/cli.h"
#include "agent/token.h"  // CleanDescription

namespace mi {
namespace {

using ojson = nlohmann::ordered_json;

// A full /status of 4,096 keys with 2 KB resources is about 10 MB.
constexpr size_t kMaxStatusBytes = 256u << 20;

constexpr const char* kStatusUsage =
    "Usage: mi-agent status [--health HOST:PORT] [--json]\n"
    "  --health HOST:PORT  the agent's health listener (default 127.0.0.1:50343;\n"
    "                      an http:// URL is accepted too)\n"
    "  --json              print the agent's /status JSON as it is\n"
    "Exit status: 0 all identities ok, 1 any degraded or failing, 2 agent unreachable.\n";

constexpr const char* kTokenUsage =
    "Usage: mi-agent token --resource URI [--client-id ID | --object-id ID | --mi-res-id ID]\n"
    "                      [--host HOST] [--port N | --unix-socket PATH] [--config PATH]\n"
    "                      [--show-token]\n"
    "  --resource URI      the token's audience, e.g. https://management.azure.com/\n"
    "  --client-id ID, --object-id ID, --mi-res-id ID\n"
    "                      a user-assigned identity (default: the VM's default identity)\n"
    "  --host HOST         the agent's address (default 127.0.0.1)\n"
    "  --port N            the agent's token port (default 50342)\n"
    "  --unix-socket PATH  the agent's Unix socket (default: the config file's unix_socket,\n"
    "                      else /run/mi-agent/token.sock if it is a socket; --host/--port: TCP)\n"
    "  --config PATH       the file to read unix_socket from (default /etc/mi-agent/config.json)\n"
    "  --show-token        print the access token instead of redacting it\n"
    "Exit status: 0 token received, 1 error answer, 2 agent unreachable.\n";

constexpr const char* kEnvUsage =
    "Usage: mi-agent env [--config PATH]\n"
    "  --config PATH  the agent's config file (default /etc/mi-agent/config.json)\n"
    "Prints export lines for IDENTITY_ENDPOINT, IDENTITY_HEADER, MSI_ENDPOINT and\n"
    "MSI_SECRET (dialects.app_service must be enabled; reading its secret_file needs\n"
    "that file's group). Use: eval \"$(mi-agent env)\"\n";

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

struct HttpResult {
  bool reached = false;
  long status = 0;
  std::string body;
  std::string error;  // when not reached
  size_t max_body = 0;
  bool too_big = false;  // the answer passed max_body: abandoned
};

size_t Collect(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<HttpResult*>(user);
  const size_t len = size * n;
  if (out->body.size() + len > out->max_body) {
    out->too_big = true;
    return 0;  // abort: not an agent answer
  }
  out->body.append(data, len);
  return len;
}

// `unix_socket`: connect to that Unix socket instead of the URL's host.
HttpResult HttpGet(const std::string& url, const std::vector<std::string>& headers, long timeout_seconds,
                   size_t max_body, const std::string& unix_socket = std::string()) {
  HttpResult out;
  out.max_body = max_body;
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) {
    out.error = "cannot initialise libcurl";
    return out;
  }
  std::unique_ptr<curl_slist, SlistDeleter> list;
  for (const std::string& h : headers) {
    curl_slist* next = curl_slist_append(list.get(), h.c_str());
    if (next == nullptr) {
      out.error = "out of memory";
      return out;
    }
    list.release();
    list.reset(next);
  }
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  if (!unix_socket.empty()) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, unix_socket.c_str());
  // The agent is local: never through an HTTP proxy, whatever the environment says.
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_seconds);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list.get());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    out.error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    if (out.too_big) out.error = "the answer is larger than " + std::to_string(out.max_body >> 20) + " MiB";
    return out;
  }
  out.reached = true;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out.status);
  return out;
}

std::string Escape(const std::string& value) {
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return value;
  char* e = curl_easy_escape(curl.get(), value.c_str(), static_cast<int>(value.size()));
  if (e == nullptr) return value;
  std::string out(e);
  curl_free(e);
  return out;
}

// "eyJ0…[redacted 1234 chars]": enough to see that it is a JWT, nothing usable.
std::string Redact(const std::string& token) {
  if (token.empty()) return token;
  const size_t shown = token.size() > 16 ? 4 : 0;
  return token.substr(0, shown) + "\xE2\x80\xA6[redacted " + std::to_string(token.size()) + " chars]";
}

std::string Dump(const ojson& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace); }

// "23h59m", "4m05s", "12s".
// The next step when the agent cannot be reached, after what failed.
#ifdef _WIN32
constexpr const char kServiceHint[] = "is the service running? try: sc query mi-agent";
#else
constexpr const char kServiceHint[] = "is the service running? try: systemctl status mi-agent";
#endif

std::string FormatDuration(int64_t s) {
  char buf[32];
  if (s >= 86400) std::snprintf(buf, sizeof buf, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
  else if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else std::snprintf(buf, sizeof buf, "%llds", (long long)s);
  return buf;
}

template <typename T>
T Field(const ojson& j, const char* name, T fallback) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, std::string>) {
    return it->is_string() ? it->get<std::string>() : fallback;
  } else {
    return it->is_number() ? it->get<T>() : fallback;
  }
}

// A last_error object of /status as "<status> <error>: <description>".
std::string DescribeLastError(const ojson& le) {
  const int status = Field<int>(le, "status", 0);
  std::string text = (status != 0 ? std::to_string(status) + " " : std::string()) + Field<std::string>(le, "error", "?");
  const std::string description = CleanDescription(Field<std::string>(le, "description", ""));
  if (!description.empty()) text += ": " + description;
  return text;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

// Where the agent's Unix socket is when the command line names no listener:
// the config file's "unix_socket" (a file we cannot read or parse names
// none: the agent reports its own config errors), else the conventional path
// if a socket is there. "" = none: TCP.
constexpr const char* kDefaultUnixSocket = "/run/mi-agent/token.sock";

std::string DefaultUnixSocket(const std::string& config_path) {
  Config config;
  if (LoadConfigFile(config_path, /*missing_ok=*/true, &config).ok() && !config.unix_socket.empty()) {
    return config.unix_socket;
  }
#ifndef _WIN32
  struct stat st;
  if (::stat(kDefaultUnixSocket, &st) == 0 && S_ISSOCK(st.st_mode)) return kDefaultUnixSocket;
#endif
  return std::string();
}

}  // namespace

int RunStatusCommand(const std::vector<std::string>& args) {
  std::string health = "127.0.0.1:50343";
  bool json = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--health" && i + 1 < args.size()) {
      health = args[++i];
    } else if (a == "--help" || a == "-h") {
      std::printf("%s", kStatusUsage);
      return 0;
    } else {
      std::fprintf(stderr, "mi-agent status: unexpected argument %s\n%s", a.c_str(), kStatusUsage);
      return 2;
    }
  }
  std::string url = health.rfind("http://", 0) == 0 || health.rfind("https://", 0) == 0 ? health : "http://" + health;
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.size() < 7 || url.compare(url.size() - 7, 7, "/status") != 0) url += "/status";
  // Every key: the default view is capped and shortens long resources.
  url += "?entries=all";

  // One full view at a time per agent: another one under way is a 503, soon over.
  HttpResult r;
  for (int attempt = 0;; ++attempt) {
    r = HttpGet(url, {}, 60, kMaxStatusBytes);
    if (!r.reached || r.status != 503 || attempt == 9) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (!r.reached) {
    std::fprintf(stderr, "mi-agent status: cannot reach the agent's health listener at %s: %s; %s\n", url.c_str(),
                 r.error.c_str(), kServiceHint);
    return 2;
  }
  ojson doc = ojson::parse(r.body, nullptr, false);
  if (r.status != 200 || doc.is_discarded() || !doc.is_object()) {
    std::fprintf(stderr, "mi-agent status: %s answered HTTP %ld, not a status document\n", url.c_str(), r.status);
    return 2;
  }

  // Healthy: every key has a valid token and is ok or merely refreshing it.
  bool healthy = true;
  std::vector<std::vector<std::string>> rows = {{"IDENTITY", "RESOURCE", "STATE", "EXPIRES IN", "LAST ERROR"}};
  const ojson empty = ojson::array();
  const ojson& identities = doc.contains("identities") && doc["identities"].is_array() ? doc["identities"] : empty;
  for (const ojson& id : identities) {
    if (!id.is_object()) continue;
    const std::string who = Field<std::string>(id, "identity", "?");
    const ojson& resources = id.contains("resources") && id["resources"].is_array() ? id["resources"] : empty;
    for (const ojson& res : resources) {
      if (!res.is_object()) continue;
      const std::string state = Field<std::string>(res, "state", "?");
      const auto expires_in = Field<int64_t>(res, "expires_in_seconds", -1);
      const bool valid = expires_in > 0;
      if (!(state == "ok" || (state == "refreshing" && valid))) healthy = false;
      std::string error = "-";
      const int failures = Field<int>(res, "consecutive_failures", 0);
      auto le = res.find("last_error");
      if (failures > 0 && le != res.end() && le->is_object()) {
        error = DescribeLastError(*le);
        if (failures > 1) error += " (" + std::to_string(failures) + " in a row)";
      }
      rows.push_back({who, Field<std::string>(res, "resource", "?"), state,
                      expires_in < 0 ? "-" : expires_in == 0 ? "expired" : FormatDuration(expires_in), error});
    }
  }

  if (json) {
    std::printf("%s\n", Dump(doc).c_str());
    return healthy ? 0 : 1;
  }
  const ojson empty_obj = ojson::object();
  const ojson& up = doc.contains("upstream") && doc["upstream"].is_object() ? doc["upstream"] : empty_obj;
  std::string imds = Field<std::string>(up, "state", "unknown");
  if (imds == "failing") {
    auto le = up.find("last_error");
    if (le != up.end() && le->is_object()) imds += " (" + DescribeLastError(*le) + ")";
  }
  auto lat = up.find("latency_ms");
  if (lat != up.end() && lat->is_object() && Field<int64_t>(*lat, "samples", 0) > 0) {
    char buf[96];
    std::snprintf(buf, sizeof buf, ", latency p50 %.0f ms p99 %.0f ms", Field<double>(*lat, "p50", 0),
                  Field<double>(*lat, "p99", 0));
    imds += buf;
  }
  std::string throttled = Field<std::string>(up, "throttled_until", "");
  if (!throttled.empty()) imds += ", throttled until " + throttled;
  std::printf("mi-agent %s, up %s, IMDS %s\n", Field<std::string>(doc, "version", "?").c_str(),
              FormatDuration(Field<int64_t>(doc, "uptime_seconds", 0)).c_str(), imds.c_str());
  if (rows.size() == 1) {
    std::printf("no identities in the cache yet\n");
  } else {
    PrintTable(rows);
  }
  return healthy ? 0 : 1;
}

namespace {

// A single-quoted shell word ('it'\''s').
std::string ShellQuote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

// The host an application on this machine reaches the token listener at.
std::string LocalHost(const std::vector<std::string>& listen) {
  for (const char* loopback : {"127.0.0.1", "::1"}) {
    if (std::find(listen.begin(), listen.end(), loopback) != listen.end()) return loopback;
  }
  if (listen.empty()) return "";
  if (listen.front() == "0.0.0.0") return "127.0.0.1";
  if (listen.front() == "::") return "::1";
  return listen.front();
}

}  // namespace

int RunEnvCommand(const std::vector<std::string>& args) {
  std::string config_path = DefaultConfigPath();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::printf("%s", kEnvUsage);
      return 0;
    }
    if (a == "--config" && i + 1 < args.size()) {
      config_path = args[++i];
    } else {
      std::fprintf(stderr, "mi-agent env: unexpected argument %s\n%s", a.c_str(), kEnvUsage);
      return 2;
    }
  }
  Config config;
  if (Status s = LoadConfigFile(config_path, /*missing_ok=*/true, &config); !s.ok()) {
    std::fprintf(stderr, "mi-agent env: %s\n", s.message().c_str());
    return 1;
  }
  if (!config.app_service.enabled) {
    std::fprintf(stderr, "mi-agent env: dialects.app_service.enabled is false in %s\n", config_path.c_str());
    return 1;
  }
  std::string host = LocalHost(config.listen);
  if (host.empty() || config.port == 0) {
    std::fprintf(stderr, "mi-agent env: the agent has no fixed TCP listener (listen, port) in %s\n",
                 config_path.c_str());
    return 1;
  }
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  const std::string base = "http://" + host + ":" + std::to_string(config.port);
  const std::string secret = ShellQuote(config.api.app_service_secret);
  std::printf("export IDENTITY_ENDPOINT=%s\nexport IDENTITY_HEADER=%s\nexport MSI_ENDPOINT=%s\nexport MSI_SECRET=%s\n",
              ShellQuote(base + "/msi/token").c_str(), secret.c_str(), ShellQuote(base + "/MSI/token").c_str(),
              secret.c_str());
  return 0;
}

int RunTokenCommand(const std::vector<std::string>& args) {
  std::string resource, selector, selector_value, host = "127.0.0.1";
  long port = 50342;
  bool show = false;
  bool tcp_given = false;  // --host or --port: TCP, whatever Unix socket there is
  std::string unix_socket;
  std::string config_path = DefaultConfigPath();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--show-token") {
      show = true;
    } else if (a == "--help" || a == "-h") {
      std::printf("%s", kTokenUsage);
      return 0;
    } else if (a == "--resource" && has_value) {
      resource = args[++i];
    } else if ((a == "--client-id" || a == "--object-id" || a == "--mi-res-id") && has_value) {
      const std::string param = a == "--client-id" ? "client_id" : a == "--object-id" ? "object_id" : "mi_res_id";
      if (!selector.empty() && selector != param) {
        std::fprintf(stderr, "mi-agent token: give at most one of --client-id, --object-id, --mi-res-id\n");
        return 2;
      }
      selector = param;
      selector_value = args[++i];
    } else if (a == "--host" && has_value) {
      host = args[++i];
      tcp_given = true;
    } else if (a == "--unix-socket" && has_value) {
      unix_socket = args[++i];
      if (unix_socket.empty()) {
        std::fprintf(stderr, "mi-agent token: --unix-socket: expected a path\n");
        return 2;
      }
    } else if (a == "--config" && has_value) {
      config_path = args[++i];
    } else if (a == "--port" && has_value) {
      tcp_given = true;
      char* end = nullptr;
      port = std::strtol(args[++i].c_str(), &end, 10);
      if (*end != '\0' || port < 1 || port > 65535) {
        std::fprintf(stderr, "mi-agent token: --port: expected 1..65535\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "mi-agent token: unexpected argument %s\n%s", a.c_str(), kTokenUsage);
      return 2;
    }
  }
  if (resource.empty()) {
    std::fprintf(stderr, "mi-agent token: --resource is required\n%s", kTokenUsage);
    return 2;
  }
  if (tcp_given && !unix_socket.empty()) {
    std::fprintf(stderr, "mi-agent token: give --unix-socket or --host/--port, not both\n");
    return 2;
  }
  if (!tcp_given && unix_socket.empty()) unix_socket = DefaultUnixSocket(config_path);
  // An IPv6 literal needs brackets in a URL. Over a Unix socket the URL's host
  // is only the Host header: "localhost", which the agent always accepts.
  const std::string authority =
      !unix_socket.empty() ? "unix:" + unix_socket
                           : (host.find(':') != std::string::npos && host.front() != '[' ? "[" + host + "]" : host) +
                                 ":" + std::to_string(port);
  std::string url = std::string("http://") + (unix_socket.empty() ? authority : "localhost") +
                    "/oauth2/token?resource=" + Escape(resource);
  if (!selector.empty()) url += "&" + selector + "=" + Escape(selector_value);

  // A miss waits for IMDS; the agent answers by its caller deadline (25 s by default).
  const HttpResult r = HttpGet(url, {"Metadata: true"}, 90, 4u << 20, unix_socket);
  if (!r.reached) {
    std::fprintf(stderr, "mi-agent token: cannot reach the agent's token listener at %s: %s; %s\n",
                 authority.c_str(), r.error.c_str(), kServiceHint);
    return 2;
  }
  ojson doc = ojson::parse(r.body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    // Not JSON: never echo a 200 body we cannot redact.
    std::fprintf(stderr, "mi-agent token: HTTP %ld with a body that is not a JSON object (%zu bytes)\n", r.status,
                 r.body.size());
    return 1;
  }
  if (!show) {
    for (const char* field : {"access_token", "refresh_token"}) {
      auto it = doc.find(field);
      if (it != doc.end() && it->is_string()) *it = Redact(it->get<std::string>());
    }
  }
  if (r.status == 200) {
    std::printf("%s\n", Dump(doc).c_str());
    return 0;
  }
  std::printf("HTTP %ld\n%s\n", r.status, Dump(doc).c_str());
  return 1;
}

}  // namespace mi
