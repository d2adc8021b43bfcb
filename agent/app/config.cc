#include "agent/app/config.h"

#include "agent/app/config_merge.h"
#include "agent/app/config_reader.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>
#include <uv.h>

#include "agent/base/socket_address.h"
#include "agent/base/text.h"
#include "agent/platform.h"

namespace mi {
namespace {

using nlohmann::json;
using config_internal::Reader;
using config_internal::ParseAudit;
using config_internal::ParseAuthorization;

// A Host name as allowed_hosts takes it: DNS labels (letters, digits, inner
// hyphens; an IPv4 address is one too) or a bracketed IPv6 address. No port.
bool ValidAllowedHost(const std::string& host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']' && host.find('%') == std::string::npos) {
    char buf[16];
    return uv_inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), buf) == 0;
  }
  if (host.empty() || host.size() > 253) return false;
  size_t label = 0;  // length of the current label
  for (size_t i = 0; i <= host.size(); ++i) {
    const char c = i < host.size() ? host[i] : '.';
    if (c == '.') {
      if (label == 0 || label > 63 || host[i - 1] == '-') return false;
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c == '-' && label > 0)) {
      ++label;
    } else {
      return false;
    }
  }
  return true;
}

void ParseAllowedHosts(Reader& r, std::string* error, std::vector<std::string>* out) {
  const json* list = r.Array("allowed_hosts");
  if (list == nullptr) return;
  std::vector<std::string> hosts;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& item = (*list)[i];
    if (!item.is_string() || !ValidAllowedHost(item.get_ref<const std::string&>())) {
      if (error->empty()) {
        *error = "allowed_hosts[" + std::to_string(i) +
                 "]: expected a host name or IP address without a port, such as \"myvm.internal\", "
                 "\"10.0.0.4\" or \"[fd00::4]\"";
      }
      return;
    }
    hosts.push_back(item.get<std::string>());
  }
  *out = std::move(hosts);
}

void ParsePrefetch(Reader& r, std::string* error, std::vector<TokenKey>* out) {
  const json* list = r.Array("prefetch");
  if (list == nullptr) return;
  std::vector<TokenKey> keys;
  for (size_t i = 0; i < list->size(); ++i) {
    std::string path = "prefetch[" + std::to_string(i) + "]";
    const json& item = (*list)[i];
    if (!item.is_object()) {
      if (error->empty()) *error = path + ": expected an object";
      return;
    }
    Reader ir(item, path, error);
    std::string resource;
    std::string client_id, object_id, mi_res_id, msi_res_id;
    ir.String("resource", &resource);
    ir.String("client_id", &client_id);
    ir.String("object_id", &object_id);
    ir.String("mi_res_id", &mi_res_id);
    ir.String("msi_res_id", &msi_res_id);
    ir.Finish();
    if (!error->empty()) return;
    SelectorFields fields;
    fields.client_id = client_id;
    fields.object_id = object_id;
    fields.mi_res_id = mi_res_id;
    fields.msi_res_id = msi_res_id;
    StatusOr<TokenKey> key = MakeTokenKey(fields, resource);
    // The rule is MakeTokenKey's; the config file words its two conflicts (and
    // a missing resource, checked between them) as it always has.
    const int code = key.ok() ? 0 : key.status().code();
    if (code == kBothResourceIds) {
      *error = path + ": give mi_res_id or msi_res_id, not both";
      return;
    }
    if (resource.empty()) {
      *error = path + ".resource: required";
      return;
    }
    if (code == kSeveralSelectors) {
      *error = path + ": at most one of client_id, object_id, mi_res_id";
      return;
    }
    if (!key.ok()) {
      *error = path + ": " + key.status().message();
      return;
    }
    keys.push_back(std::move(*key));
  }
  *out = std::move(keys);
}

// "limits.max_waiters_per_caller" (`given`, 0 when absent: a quarter of
// max_waiters, at least 16, at most max_waiters), and the same share of the
// callers' IMDS queue (budget.max_queue), at least one place: one knob for
// both halves of a caller's fair share.
void SetFairShare(size_t given, Config* c) {
  const size_t waiters = c->cache.max_waiters;
  const size_t per_caller = given != 0 ? given : std::min(waiters, std::max<size_t>(16, waiters / 4));
  c->cache.max_waiters_per_caller = per_caller;
  const uint64_t queue = c->budget.max_queue;
  c->budget.max_queue_per_caller =
      per_caller >= waiters ? c->budget.max_queue
                            : static_cast<size_t>(std::max<uint64_t>(1, (queue * per_caller + waiters - 1) / waiters));
}

// "unix_socket": "" (off) or an absolute path that fits sockaddr_un (107
// bytes on Linux; the same bound everywhere, so a file checks alike).
void ParseUnixSocket(Reader& r, std::string* out) {
  constexpr size_t kMaxPath = 107;
  const json* v = r.Take("unix_socket");
  if (v == nullptr) return;
  if (!v->is_string()) {
    r.Fail("unix_socket", "expected a path such as \"/run/mi-agent/token.sock\", or \"\" for none");
    return;
  }
  const std::string& path = v->get_ref<const std::string&>();
#ifdef _WIN32
  if (!path.empty()) {
    r.Fail("unix_socket", "not supported on Windows");
    return;
  }
#endif
  if (!path.empty() && (path.front() != '/' || path.back() == '/' || path.find('\0') != std::string::npos)) {
    r.Fail("unix_socket", "expected an absolute path to a socket file, such as \"/run/mi-agent/token.sock\"");
    return;
  }
  if (path.size() > kMaxPath) {
    r.Fail("unix_socket", "longer than " + std::to_string(kMaxPath) + " bytes (the limit of a Unix socket address)");
    return;
  }
  *out = path;
}

// "imds.kind" (`kind`: "" when absent), "imds.arc_token_dir", and Arc's
// endpoint and api-version where the file gives none (`imds` holds the
// section, or null). "auto" is arc when the Arc agent is installed.
void ApplyImdsKind(Reader& r, const json* imds, const std::string& kind, Config* c) {
  CurlUpstreamClient::Options& o = c->imds;
  c->imds_kind_auto = kind == "auto";
  if (kind.empty() || kind == "imds") {
    o.kind = CurlUpstreamClient::Kind::kImds;
  } else if (kind == "arc") {
    o.kind = CurlUpstreamClient::Kind::kArc;
  } else if (kind == "auto") {
    uv_fs_t req;
    const bool installed = uv_fs_stat(nullptr, &req, platform::ArcAgentPath().c_str(), nullptr) == 0;
    uv_fs_req_cleanup(&req);
    o.kind = installed ? CurlUpstreamClient::Kind::kArc : CurlUpstreamClient::Kind::kImds;
  } else {
    r.Fail("imds.kind", "expected imds, arc or auto");
    return;
  }
  const std::string& dir = o.arc_token_dir;
#ifdef _WIN32
  const bool absolute = dir.size() >= 3 && dir[1] == ':' && (dir[2] == '\\' || dir[2] == '/');
#else
  const bool absolute = !dir.empty() && dir[0] == '/';
#endif
  if (!absolute) {
    r.Fail("imds.arc_token_dir", "expected the absolute path of a directory");
    return;
  }
  if (o.kind != CurlUpstreamClient::Kind::kArc) return;
  const bool given = imds != nullptr && imds->is_object();
  if (!given || !imds->contains("endpoint")) o.endpoint = kArcEndpoint;
  if (!given || !imds->contains("api_version")) o.api_version = kArcApiVersion;
}

}  // namespace

std::string DefaultConfigPath() { return platform::DefaultConfigPath(); }

proxy::ServerLimits DefaultHealthLimits() {
  proxy::ServerLimits l;
  l.max_connections = 64;
  l.idle_timeout = Duration(5000);
  l.evict_idle_at_limit = true;
  return l;
}

// ParseConfig after the text is a JSON object (LoadConfigFile: the merged files).
Status ParseConfigDocument(const json& doc, Config* out);

Status ParseConfig(const std::string& text, Config* out) {
  json doc;
  Status s = config_merge::ParseText(text, &doc);
  if (!s.ok()) return s;
  return ParseConfigDocument(doc, out);
}

Status ParseConfigDocument(const json& doc, Config* out) {
  Config c = *out;
  std::string error;
  Reader r(doc, "", &error);

  r.Integer("port", &c.port, 0, 65535);
  if (const json* listen = r.Array("listen")) {
    std::vector<std::string> hosts;
    for (const auto& h : *listen) {
      if (!h.is_string() || h.get_ref<const std::string&>().empty()) {
        r.Fail("listen", "expected a list of addresses such as \"127.0.0.1\", \"::1\"");
        break;
      }
      hosts.push_back(h.get<std::string>());
    }
    c.listen = std::move(hosts);
  }
  ParseUnixSocket(r, &c.unix_socket);
  r.Bool("allow_remote", &c.api.allow_remote);
  r.Bool("absolute_form", &c.api.absolute_form);
  ParseAllowedHosts(r, &error, &c.api.allowed_hosts);

  CurlUpstreamClient::Options& imds = c.imds;
  std::string imds_kind;
  const json* imds_section = doc.contains("imds") ? &doc["imds"] : nullptr;
  r.Section("imds", [&](Reader& s) {
    s.String("kind", &imds_kind);
    s.String("arc_token_dir", &imds.arc_token_dir);
    s.String("endpoint", &imds.endpoint);
    s.String("api_version", &imds.api_version);
    s.Seconds("connect_timeout_seconds", &imds.connect_timeout, 0.001, 600);
    s.Seconds("timeout_seconds", &imds.timeout, 0.001, 600);
    s.Integer("max_response_bytes", &imds.max_response_bytes, 1024, 16 << 20);
    s.Bool("v2_passthrough", &c.api.v2_passthrough);
  });
  if (error.empty()) ApplyImdsKind(r, imds_section, imds_kind, &c);
  if (error.empty() && imds.endpoint.rfind("http://", 0) != 0 && imds.endpoint.rfind("https://", 0) != 0) {
    error = "imds.endpoint: expected an http:// URL";
  }
  TokenCache::Options& cache = c.cache;
  r.Section("cache", [&](Reader& s) {
    s.Seconds("margin_seconds", &cache.margin, 0, 86400);
    s.Seconds("refresh_ahead_seconds", &cache.refresh_ahead, 0, 86400);
    s.Seconds("hard_floor_seconds", &cache.hard_floor, 0, 86400);
    s.Seconds("idle_seconds", &cache.idle_evict, 0.001, 30 * 86400);
    s.Integer("max_keys", &cache.max_keys, 1, 10000000);
    s.Seconds("negative_ttl_seconds", &cache.negative_ttl, 0, 3600);
    s.Seconds("same_token_backoff_seconds", &cache.same_token_backoff, 0.001, 86400);
    s.Seconds("bypass_min_interval_seconds", &cache.bypass_min_interval, 0, 86400);
  });
  RetryPolicy::Options& retry = c.cache.retry;
  r.Section("retry", [&](Reader& s) {
    s.Integer("max_attempts", &retry.max_attempts, 1, 100);
    s.Seconds("delta_seconds", &retry.delta, 0, 3600);
    s.Seconds("max_delay_seconds", &retry.max_delay, 0, 3600);
    s.Seconds("gone_window_seconds", &retry.gone_window, 0, 3600);
    s.Seconds("retry_after_cap_seconds", &retry.retry_after_cap, 0, 3600);
  });
  UpstreamScheduler::Options& budget = c.budget;
  r.Section("budget", [&](Reader& s) {
    s.Number("rate_per_second", &budget.rate_per_second, 0.01, 1000);
    s.Integer("burst", &budget.burst, 1, 1000);
    s.Integer("max_concurrent", &budget.max_concurrent, 1, 64);
    s.Integer("max_queue", &budget.max_queue, 1, 1000000);
    s.Integer("max_background_queue", &budget.max_background_queue, 1, 1000000);
  });
  proxy::ServerLimits& limits = c.limits;
  size_t waiters_per_caller = 0;  // 0: not given
  r.Section("limits", [&](Reader& s) {
    s.Integer("max_connections", &limits.max_connections, 1, 1000000);
    s.Integer("max_header_bytes", &limits.max_header_bytes, 256, 1 << 20);
    s.Integer("max_body_bytes", &limits.max_body_bytes, 0, 1 << 20);
    s.Seconds("header_timeout_seconds", &limits.header_timeout, 0.001, 3600);
    s.Seconds("idle_timeout_seconds", &limits.idle_timeout, 0.001, 86400);
    s.Integer("max_pipelined", &limits.max_pipelined, 1, 1024);
    s.Integer("max_waiters", &cache.max_waiters, 1, 10000000);
    s.Integer("max_waiters_per_caller", &waiters_per_caller, 1, 10000000);
    s.Seconds("caller_deadline_seconds", &cache.caller_deadline, 0.001, 3600);
    s.Seconds("fail_fast_seconds", &cache.fail_fast, 0, 3600);
    s.Seconds("drain_seconds", &c.drain_timeout, 0, 3600);
  });
  if (const json* list = r.Array("health")) {
    std::vector<ListenAddress> addrs;
    for (const auto& h : *list) {
      ListenAddress a;
      if (!h.is_string() || !ParseHostPort(h.get_ref<const std::string&>(), &a.host, &a.port)) {
        r.Fail("health", "expected a list of \"host:port\" strings such as \"127.0.0.1:50343\"");
        break;
      }
      addrs.push_back(a);
    }
    c.health = std::move(addrs);
  }
  r.Section("health_limits", [&](Reader& s) {
    s.Integer("max_connections", &c.health_limits.max_connections, 1, 10000);
    s.Seconds("idle_timeout_seconds", &c.health_limits.idle_timeout, 0.001, 3600);
  });
  ParsePrefetch(r, &error, &c.cache.prefetch);
  ParseAuthorization(r, &error, &c.authorization);
  r.Bool("ready_waits_for_prefetch", &c.ready_waits_for_prefetch);
  ParseAudit(r, &error, &c.audit);
  config_internal::ParseDialects(r, &error, &c.app_service, &c.api.app_service_secret);
  std::string level;
  std::string format;
  r.Section("log", [&](Reader& s) {
    s.String("level", &level);
    s.String("format", &format);
  });
  if (!level.empty() && !ParseLogLevel(level, &c.log_level)) {
    r.Fail("log.level", "expected debug, info, warning or error");
  }
  if (!format.empty() && !ParseLogFormat(format, &c.log_format)) {
    r.Fail("log.format", "expected auto, text, journal or json");
  }
  r.Finish();

  if (error.empty() && c.listen.empty() && c.unix_socket.empty()) error = "listen: at least one address is needed";
  if (!error.empty()) return Status::Error(error);
  SetFairShare(waiters_per_caller, &c);
  // The health listener takes what "health_limits" does not set from "limits".
  proxy::ServerLimits health = c.limits;
  health.max_connections = c.health_limits.max_connections;
  health.idle_timeout = c.health_limits.idle_timeout;
  health.evict_idle_at_limit = c.health_limits.evict_idle_at_limit;
  c.health_limits = health;
  *out = std::move(c);
  return Status::Ok();
}

Status LoadConfigFile(const std::string& path, bool missing_ok, Config* out) {
  std::vector<config_merge::Source> sources;
  Status s = config_merge::ReadSources(path, missing_ok, &sources);
  if (!s.ok() || sources.empty()) return s;
  s = ParseConfigDocument(config_merge::Merge(sources), out);
  if (s.ok()) return s;
  // The message starts with the key: name the file that set it.
  const std::string& message = s.message();
  return Status::Error(config_merge::Blame(sources, message.substr(0, message.find(": "))) + ": " + message);
}

bool ParseListenAddress(const std::string& text, ListenAddress* out) {
  return ParseHostPort(text, &out->host, &out->port);
}

}  // namespace mi
