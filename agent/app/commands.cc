// `mi-agent token` and `mi-agent env`: small clients of a running agent. A
// command line tool, not the daemon: blocking libcurl easy calls are fine here.
//
//   (`mi-agent status`: agent/app/status_command.cc; `mi-agent doctor`: doctor.cc.)
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
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#ifndef _WIN32
#include <sys/stat.h>
#endif

#include "agent/app/cli.h"
#include "agent/app/cli_http.h"

namespace mi {
namespace {

using ojson = nlohmann::ordered_json;

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

// "eyJ0…[redacted 1234 chars]": enough to see that it is a JWT, nothing usable.
std::string Redact(const std::string& token) {
  if (token.empty()) return token;
  const size_t shown = token.size() > 16 ? 4 : 0;
  return token.substr(0, shown) + "\xE2\x80\xA6[redacted " + std::to_string(token.size()) + " chars]";
}

std::string Dump(const ojson& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace); }

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
  ojson doc = ParseJsonBounded(r.body);
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
