#pragma once
// Blocking HTTP GETs for the command-line clients (status, token, doctor):
// libcurl easy calls, never through a proxy. Not for the daemon's loop.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace mi {

struct HttpResult {
  bool reached = false;
  long status = 0;
  std::string body;
  std::string error;      // when not reached
  std::string date;       // the answer's Date header ("" when none)
  double seconds = 0;     // the whole exchange, as libcurl measured it
  size_t max_body = 0;
  bool too_big = false;   // the answer passed max_body: abandoned
};

// `unix_socket`: connect to that Unix socket instead of the URL's host.
HttpResult HttpGet(const std::string& url, const std::vector<std::string>& headers, long timeout_seconds,
                   size_t max_body, const std::string& unix_socket = std::string());

// `text` as JSON; discarded when it is not JSON or nests deeper than 64
// levels. What the commands read (an answer from whoever holds the port, a
// file) is hostile: a deeper tree would be copied and dumped recursively.
nlohmann::ordered_json ParseJsonBounded(std::string_view text);

// The next step to suggest when the agent cannot be reached.
#ifdef _WIN32
inline constexpr char kServiceHint[] = "is the service running? try: sc query mi-agent";
#else
inline constexpr char kServiceHint[] = "is the service running? try: systemctl status mi-agent";
#endif

// `value` percent-encoded for a query string.
std::string Escape(const std::string& value);

// "127.0.0.1:50343" or "http://host:port[/]" + `path` ("/status").
std::string HealthUrl(const std::string& health, const std::string& path);

}  // namespace mi
