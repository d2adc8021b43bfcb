#pragma once
// Configuration: a JSON file, strict (unknown keys and wrong types are errors
// naming the offending key), every field with a documented default. The old VM
// extension's settings object {"port": 50342} is a valid file.

#include <cstdint>
#include <string>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/log.h"
#include "agent/base/status.h"
#include "agent/token.h"

namespace mi {

struct ListenAddress {
  std::string host;  // "127.0.0.1", "::1"
  uint16_t port = 0;
};

struct Config {
  // --- Token listener -------------------------------------------------------
  uint16_t port = 50342;                                   // "port"
  std::vector<std::string> listen = {"127.0.0.1", "::1"};  // "listen": addresses to bind
  bool allow_remote = false;        // "allow_remote": serve non-loopback peers (never by default)
  bool absolute_form = false;       // "absolute_form": accept "GET http://169.254.169.254/..." targets
  // "allowed_hosts": Host names served besides localhost, 127.0.0.1, [::1], the
  // listen addresses (and 169.254.169.254 with absolute_form): host names or IP
  // addresses without a port, IPv6 in brackets ("[fd00::4]"). Others get 400.
  std::vector<std::string> allowed_hosts;

  // --- Upstream (IMDS) ------------------------------------------------------
  struct Imds {
    std::string endpoint = "http://169.254.169.254/metadata/identity/oauth2/token";
    std::string api_version = "2018-02-01";
    Duration connect_timeout = Duration(2000);  // "connect_timeout_seconds": 2
    Duration timeout = Duration(10000);         // "timeout_seconds": 10 (whole request)
    size_t max_response_bytes = 64 * 1024;      // "max_response_bytes"
  } imds;

  // --- Cache ----------------------------------------------------------------
  struct Cache {
    Duration margin = Duration(300000);          // "margin_seconds": hits need this much life left
    Duration refresh_ahead = Duration(600000);   // "refresh_ahead_seconds": refresh 1/2..1 of this before the margin (jittered)
    Duration hard_floor = Duration(60000);       // "hard_floor_seconds": while IMDS fails, serve down to this
    Duration idle_evict = Duration(3600000);     // "idle_seconds": unused keys stop refreshing and go
    size_t max_keys = 4096;                      // "max_keys": LRU cap
    Duration negative_ttl = Duration(5000);      // "negative_ttl_seconds": cache IMDS 4xx this long (0: off)
    Duration same_token_backoff = Duration(60000);  // "same_token_backoff_seconds"
  } cache;

  // --- Retry policy (IMDS documented strategy) --------------------------------
  struct Retry {
    int max_attempts = 5;                        // "max_attempts"
    Duration delta = Duration(2000);             // "delta_seconds": backoff unit (0, 2, 6, 14, 30 s)
    Duration max_delay = Duration(60000);        // "max_delay_seconds"
    Duration gone_window = Duration(70000);      // "gone_window_seconds": keep retrying 410 this long
    Duration retry_after_cap = Duration(60000);  // "retry_after_cap_seconds"
  } retry;

  // --- IMDS request budget ----------------------------------------------------
  struct Budget {
    double rate_per_second = 5;  // "rate_per_second": token bucket refill
    int burst = 5;               // "burst"
    int max_concurrent = 2;      // "max_concurrent"
    size_t max_queue = 1024;     // "max_queue": queued misses (callers waiting); beyond, new misses get 429
    size_t max_background_queue = 256;  // "max_background_queue": queued refreshes; beyond, retried later
  } budget;

  // --- Inbound limits -----------------------------------------------------------
  struct Limits {
    size_t max_connections = 10000;              // "max_connections"
    size_t max_header_bytes = 8192;              // "max_header_bytes" (431 beyond)
    size_t max_body_bytes = 8192;                // "max_body_bytes" (413 beyond)
    Duration header_timeout = Duration(10000);   // "header_timeout_seconds" (slow-loris)
    Duration idle_timeout = Duration(60000);     // "idle_timeout_seconds"
    size_t max_pipelined = 32;                   // "max_pipelined": requests in flight per connection
    size_t max_waiters = 4096;                   // "max_waiters": callers waiting on IMDS in total
    Duration caller_deadline = Duration(25000);  // "caller_deadline_seconds"
    Duration drain_timeout = Duration(10000);    // "drain_seconds": bounded drain on stop
  } limits;

  // --- Health listener --------------------------------------------------------------
  std::vector<ListenAddress> health = {{"127.0.0.1", 50343}};  // "health": ["127.0.0.1:50343"], [] = off
  // "health_limits": the rest (header and body limits, header timeout) are
  // those of "limits".
  struct HealthLimits {
    // "max_connections": beyond, the connection idle longest is closed to admit
    // the new one (503 only if every connection is waiting for an answer).
    size_t max_connections = 64;
    Duration idle_timeout = Duration(5000);  // "idle_timeout_seconds"
  } health_limits;

  // --- Prefetch -----------------------------------------------------------------
  std::vector<TokenKey> prefetch;  // "prefetch": [{"resource": "...", "client_id": "..."}]
  bool ready_waits_for_prefetch = true;  // "ready_waits_for_prefetch"

  // --- Logging -------------------------------------------------------------------
  LogLevel log_level = LogLevel::kInfo;   // "log": {"level": "info"}
  LogFormat log_format = LogFormat::kAuto;  // "log": {"format": "auto|text|journal|json"}
};

// Parses a config document. On error returns a Status whose message names the
// key ("cache.margin_seconds: expected a number") and leaves *out untouched.
Status ParseConfig(const std::string& text, Config* out);
// Reads and parses a file. A missing file is an error unless `missing_ok`.
Status LoadConfigFile(const std::string& path, bool missing_ok, Config* out);

// "127.0.0.1:50343", "[::1]:50343".
bool ParseListenAddress(const std::string& text, ListenAddress* out);

// The platform's default config path (/etc/mi-agent/config.json,
// %ProgramData%\mi-agent\config.json).
std::string DefaultConfigPath();

}  // namespace mi
