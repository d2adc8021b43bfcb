#pragma once
// Configuration: a JSON file, strict (unknown keys and wrong types are errors
// naming the offending key), every field with a documented default. The old VM
// extension's settings object {"port": 50342} is a valid file.
//
// Config only aggregates the Options each component declares (with its
// defaults, next to the field); ParseConfig is the one place values are
// range-checked, so components take their Options as they are.

#include <cstdint>
#include <string>
#include <vector>

#include "agent/app/app_service_options.h"
#include "agent/authorization.h"
#include "agent/base/clock.h"
#include "agent/base/log.h"
#include "agent/audit_trail.h"
#include "agent/base/status.h"
#include "agent/curl_upstream_client.h"
#include "agent/token_cache.h"
#include "agent/upstream_scheduler.h"
#include "proxy/http/http_server.h"
#include "proxy/token_api.h"

namespace mi {

struct ListenAddress {
  std::string host;  // "127.0.0.1", "::1"
  uint16_t port = 0;
};

// The health listener's limits unless "health_limits" says otherwise: few
// connections, a short idle keep-alive, and idle sockets (anyone's) make way
// for a probe instead of locking it out with 503. Header and body limits and
// the header timeout are those of "limits" (ParseConfig copies them).
proxy::ServerLimits DefaultHealthLimits();

struct Config {
  // --- Token listener -------------------------------------------------------
  uint16_t port = 50342;                                   // "port"
  std::vector<std::string> listen = {"127.0.0.1", "::1"};  // "listen": addresses to bind
  // "unix_socket": the path of a Unix stream socket serving the same API
  // (e.g. "/run/mi-agent/token.sock"), callers identified by SO_PEERCRED;
  // "" = none. Absolute, shorter than sockaddr_un's sun_path. With it set,
  // "listen" may be [] (Unix socket only). Not on Windows.
  std::string unix_socket;
  // "allow_remote", "absolute_form", "allowed_hosts" (listen_hosts stays empty:
  // the daemon fills it in from the bound listeners).
  proxy::TokenApi::Options api;
  // "limits": max_connections, max_header_bytes, max_body_bytes,
  // header_timeout_seconds, idle_timeout_seconds, max_pipelined.
  proxy::ServerLimits limits;
  Duration drain_timeout = Duration(10000);  // "limits.drain_seconds": bounded drain on stop

  // --- Upstream (IMDS), cache, retry policy, budget ---------------------------
  CurlUpstreamClient::Options imds;  // "imds"
  bool imds_kind_auto = false;       // "imds.kind" was "auto" (imds.kind holds what it chose)
  // "cache", "retry" (cache.retry), "prefetch" (cache.prefetch), and
  // "limits.max_waiters", "limits.max_waiters_per_caller", "limits.caller_deadline_seconds".
  TokenCache::Options cache;
  // "budget"; max_queue_per_caller follows from "limits.max_waiters_per_caller".
  UpstreamScheduler::Options budget;

  // --- Health listener --------------------------------------------------------------
  std::vector<ListenAddress> health = {{"127.0.0.1", 50343}};  // "health": ["127.0.0.1:50343"], [] = off
  // "health_limits": max_connections (beyond, the connection idle longest is
  // closed to admit the new one; 503 only if every connection is waiting for
  // an answer) and idle_timeout_seconds.
  proxy::ServerLimits health_limits = DefaultHealthLimits();

  // --- Prefetch -----------------------------------------------------------------
  bool ready_waits_for_prefetch = true;  // "ready_waits_for_prefetch"

  // --- Audit trail (issue #13) ----------------------------------------------------
  // "audit": {"enabled": false, "sink": "journal" | "file" | "stderr", "path": ...,
  // "summarize_seconds": 60, "max_file_bytes": 1073741824}. "file" needs "path"
  // (absolute); Windows has no "journal".
  AuditTrail::Options audit;
  // --- Authorization (issue #13) --------------------------------------------------
  // "authorization": {"mode": "off|audit|enforce", "rules": [...], "cache_seconds": 60}
  AuthorizationOptions authorization;

  // --- Dialects (issue #14) ------------------------------------------------------
  // "dialects": {"app_service": {"enabled": false, "secret_file": ...}}; the
  // secret itself goes to api.app_service_secret.
  AppServiceOptions app_service;

  // --- Logging -------------------------------------------------------------------
  LogLevel log_level = LogLevel::kInfo;   // "log": {"level": "info"}
  LogFormat log_format = LogFormat::kAuto;  // "log": {"format": "auto|text|journal|json"}
};

// Parses a config document over *out (keys the text does not give keep their
// value). On error returns a Status whose message names the key
// ("cache.margin_seconds: expected a number") and leaves *out untouched.
Status ParseConfig(const std::string& text, Config* out);
// Reads and parses a file with its drop-ins (config_merge.h: "config.d/*.json"
// beside it, merged over it in name order). A missing file is an error unless
// `missing_ok` (then the drop-ins alone, if any). An error names the file and
// the key ("/etc/mi-agent/config.d/10-port.json: port: expected ...").
Status LoadConfigFile(const std::string& path, bool missing_ok, Config* out);

// "127.0.0.1:50343", "[::1]:50343".
bool ParseListenAddress(const std::string& text, ListenAddress* out);

// The platform's default config path (/etc/mi-agent/config.json,
// %ProgramData%\mi-agent\config.json).
std::string DefaultConfigPath();

}  // namespace mi
