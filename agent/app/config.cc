#include "agent/app/config.h"

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

// Reads one JSON object: each known key is taken once; whatever nobody took is
// reported as an unknown key. The first error wins and names the key path.
class Reader {
 public:
  Reader(const json& object, std::string path, std::string* error)
      : object_(object), path_(std::move(path)), error_(error) {}

  std::string Path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  bool Fail(const std::string& key, const std::string& what) {
    if (error_->empty()) *error_ = Path(key) + ": " + what;
    return false;
  }

  const json* Take(const std::string& key) {
    auto it = object_.find(key);
    if (it == object_.end()) return nullptr;
    taken_.push_back(key);
    return &*it;
  }

  void Bool(const std::string& key, bool* out) {
    if (const json* v = Take(key)) {
      if (!v->is_boolean()) Fail(key, "expected true or false");
      else *out = v->get<bool>();
    }
  }

  void String(const std::string& key, std::string* out) {
    if (const json* v = Take(key)) {
      if (!v->is_string() || v->get_ref<const std::string&>().empty()) Fail(key, "expected a non-empty string");
      else *out = v->get<std::string>();
    }
  }

  template <typename Int>
  void Integer(const std::string& key, Int* out, int64_t min, int64_t max) {
    if (const json* v = Take(key)) {
      if (!v->is_number_integer() || (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(max)) ||
          v->get<int64_t>() < min || v->get<int64_t>() > max) {
        Fail(key, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
      } else {
        *out = static_cast<Int>(v->get<int64_t>());
      }
    }
  }

  void Number(const std::string& key, double* out, double min, double max) {
    if (std::optional<double> d = NumberIn(key, min, max)) *out = *d;
  }

  // "<name>_seconds": seconds, fractions allowed (tests scale time down).
  void Seconds(const std::string& key, Duration* out, double min, double max) {
    if (std::optional<double> s = NumberIn(key, min, max)) {
      *out = Duration(static_cast<int64_t>(std::llround(*s * 1000)));
    }
  }

  // A nested object read by `read` with its own Reader (keys named
  // "<key>.<name>"), then checked for unknown keys. Nothing when absent.
  void Section(const std::string& key, const std::function<void(Reader&)>& read) {
    if (const json* o = Object(key)) {
      Reader s(*o, Path(key), error_);
      read(s);
      s.Finish();
    }
  }

  // Returns the nested object (or null when absent or not an object).
  const json* Object(const std::string& key) {
    const json* v = Take(key);
    if (v != nullptr && !v->is_object()) {
      Fail(key, "expected an object");
      return nullptr;
    }
    return v;
  }

  const json* Array(const std::string& key) {
    const json* v = Take(key);
    if (v != nullptr && !v->is_array()) {
      Fail(key, "expected an array");
      return nullptr;
    }
    return v;
  }

  void Finish() {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      bool taken = false;
      for (const auto& k : taken_) taken = taken || k == it.key();
      if (!taken) Fail(it.key(), "unknown key");
    }
  }

 private:
  // The value of `key` when it is a number within [min, max]; else nothing
  // (and an error when the key is there).
  std::optional<double> NumberIn(const std::string& key, double min, double max) {
    const json* v = Take(key);
    if (v == nullptr) return std::nullopt;
    const double d = v->is_number() ? v->get<double>() : NAN;
    if (!std::isfinite(d) || d < min || d > max) {
      std::ostringstream m;
      m << "expected a number from " << min << " to " << max;
      Fail(key, m.str());
      return std::nullopt;
    }
    return d;
  }

  const json& object_;
  std::string path_;
  std::string* error_;
  std::vector<std::string> taken_;
};

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

// --- "authorization" (issue #13) --------------------------------------------------

// An array of non-empty strings at `path` (each passing `valid` when given),
// appended to *out. Anything else: an error naming the item, `what` it expects.
bool StringList(const json& v, const std::string& path, std::string* error, std::vector<std::string>* out,
                bool (*valid)(const std::string&), const char* what) {
  if (!v.is_array()) {
    if (error->empty()) *error = path + ": expected an array of " + what;
    return false;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const json& item = v[i];
    if (!item.is_string() || item.get_ref<const std::string&>().empty() ||
        (valid != nullptr && !valid(item.get_ref<const std::string&>()))) {
      if (error->empty()) *error = path + "[" + std::to_string(i) + "]: expected " + what;
      return false;
    }
    out->push_back(item.get<std::string>());
  }
  return true;
}

bool FullPath(const std::string& path) {
#ifdef _WIN32
  // C:\dir\app.exe or \\server\share\app.exe
  return (path.size() > 3 && path[1] == ':' && (path[2] == '\\' || path[2] == '/')) || path.rfind("\\\\", 0) == 0;
#else
  return path.front() == '/';
#endif
}

void ParseCallers(const json& v, const std::string& path, std::string* error, AuthorizationRule* rule) {
  if (v.is_string() && v.get_ref<const std::string&>() == "*") {
    rule->any_caller = true;
    return;
  }
  if (!v.is_object()) {
    if (error->empty()) *error = path + ": expected \"*\" or an object of users, groups, uids, exe, process_names";
    return;
  }
  Reader r(v, path, error);
  if (const json* users = r.Take("users")) {
    StringList(*users, r.Path("users"), error, &rule->users, nullptr, "user names");
  }
  if (const json* groups = r.Take("groups")) {
    StringList(*groups, r.Path("groups"), error, &rule->groups, nullptr, "group names");
  }
  if (const json* uids = r.Take("uids")) {
    if (!uids->is_array()) r.Fail("uids", "expected an array of uids");
    for (size_t i = 0; uids->is_array() && i < uids->size(); ++i) {
      const json& u = (*uids)[i];
      if (!u.is_number_unsigned() || u.get<uint64_t>() > 4294967294ULL) {
        r.Fail("uids[" + std::to_string(i) + "]", "expected a uid from 0 to 4294967294");
        break;
      }
      rule->uids.push_back(static_cast<uint32_t>(u.get<uint64_t>()));
    }
  }
  if (const json* exe = r.Take("exe")) StringList(*exe, r.Path("exe"), error, &rule->exe, FullPath, "full paths");
  if (const json* names = r.Take("process_names")) {
#ifdef _WIN32
    StringList(*names, r.Path("process_names"), error, &rule->process_names, nullptr, "process names");
#else
    // Linux keeps 15 bytes of a process's name (comm): a longer one would never match.
    StringList(*names, r.Path("process_names"), error, &rule->process_names,
               [](const std::string& name) { return name.size() <= 15; }, "process names of at most 15 bytes");
#endif
  }
  r.Finish();
  if (error->empty() && rule->users.empty() && rule->groups.empty() && rule->uids.empty() && rule->exe.empty() &&
      rule->process_names.empty()) {
    *error = path + ": name at least one caller (users, groups, uids, exe, process_names), or \"*\" for everyone";
  }
}

void ParseIdentities(const json& v, const std::string& path, std::string* error, AuthorizationRule* rule) {
  if (v.is_string() && v.get_ref<const std::string&>() == "*") {
    rule->any_identity = true;
    return;
  }
  if (!v.is_array() || v.empty()) {
    if (error->empty()) *error = path + ": expected \"*\" or a non-empty array of identities";
    return;
  }
  for (size_t i = 0; i < v.size() && error->empty(); ++i) {
    const std::string item_path = path + "[" + std::to_string(i) + "]";
    const json& item = v[i];
    if (item.is_string() && (item == "*" || item == "default")) {
      if (item == "*") rule->any_identity = true;
      else rule->identities.push_back({SelectorKind::kDefault, ""});
      continue;
    }
    if (!item.is_object() || item.size() != 1) {
      *error = item_path + ": expected \"default\", \"*\" or one of {\"client_id\": ...}, {\"object_id\": ...}, "
                           "{\"mi_res_id\": ...}, {\"msi_res_id\": ...}";
      return;
    }
    const std::string& field = item.begin().key();
    const json& value = item.begin().value();
    if (field != "client_id" && field != "object_id" && field != "mi_res_id" && field != "msi_res_id") {
      *error = item_path + "." + field + ": unknown key";
      return;
    }
    if (!value.is_string() || value.get_ref<const std::string&>().empty()) {
      *error = item_path + "." + field + ": expected a non-empty string";
      return;
    }
    // The token key's own rule: the same syntax checks, the same lower-casing.
    SelectorFields fields;
    const std::string& id = value.get_ref<const std::string&>();
    if (field == "client_id") fields.client_id = id;
    else if (field == "object_id") fields.object_id = id;
    else fields.mi_res_id = id;
    StatusOr<TokenKey> key = MakeTokenKey(fields, "x");
    if (!key.ok()) {
      *error = item_path + "." + field + ": " +
               (field == "client_id" || field == "object_id" ? "not a GUID" : "not an Azure resource id");
      return;
    }
    rule->identities.push_back({key->kind, key->id});
  }
}

bool ValidResource(const std::string& resource) { return MakeTokenKey(SelectorFields{}, resource).ok(); }

void ParseResources(const json& v, const std::string& path, std::string* error, AuthorizationRule* rule) {
  if (v.is_string() && v.get_ref<const std::string&>() == "*") {
    rule->any_resource = true;
    return;
  }
  if (!v.is_array() || v.empty()) {
    if (error->empty()) *error = path + ": expected \"*\" or a non-empty array of resources";
    return;
  }
  std::vector<std::string> resources;
  if (!StringList(v, path, error, &resources, ValidResource,
                  "a resource (\"*\", or printable, at most 2048 bytes)")) {
    return;
  }
  for (std::string& resource : resources) {
    if (resource == "*") rule->any_resource = true;
    else rule->resources.push_back(std::move(resource));
  }
}

void ParseAuthorization(Reader& top, std::string* error, AuthorizationOptions* out) {
  const json* section = top.Object("authorization");
  if (section == nullptr) return;
  AuthorizationOptions options = *out;
  Reader r(*section, "authorization", error);
  std::string mode;
  r.String("mode", &mode);
  if (mode == "off") options.mode = AuthorizationMode::kOff;
  else if (mode == "audit") options.mode = AuthorizationMode::kAudit;
  else if (mode == "enforce") options.mode = AuthorizationMode::kEnforce;
  else if (!mode.empty()) r.Fail("mode", "expected off, audit or enforce");
  r.Seconds("cache_seconds", &options.cache_ttl, 0, 86400);
  if (const json* rules = r.Array("rules")) {
    options.rules.clear();
    for (size_t i = 0; i < rules->size() && error->empty(); ++i) {
      const std::string path = "authorization.rules[" + std::to_string(i) + "]";
      const json& item = (*rules)[i];
      if (!item.is_object()) {
        *error = path + ": expected an object";
        break;
      }
      Reader ir(item, path, error);
      AuthorizationRule rule;
      ir.String("name", &rule.name);
      const json* callers = ir.Take("callers");
      const json* identities = ir.Take("identities");
      const json* resources = ir.Take("resources");
      ir.Finish();
      if (!error->empty()) break;
      if (rule.name.empty()) ir.Fail("name", "required");
      else if (callers == nullptr) ir.Fail("callers", "required");
      else if (identities == nullptr) ir.Fail("identities", "required");
      else if (resources == nullptr) ir.Fail("resources", "required");
      if (!error->empty()) break;
      ParseCallers(*callers, ir.Path("callers"), error, &rule);
      if (error->empty()) ParseIdentities(*identities, ir.Path("identities"), error, &rule);
      if (error->empty()) ParseResources(*resources, ir.Path("resources"), error, &rule);
      options.rules.push_back(std::move(rule));
    }
  }
  r.Finish();
  if (error->empty()) *out = std::move(options);
}

// The "audit" block (agent/audit_trail.h).
void ParseAudit(Reader& r, std::string* error, AuditTrail::Options* out) {
  AuditTrail::Options a = *out;
  std::string sink;
  bool given = false;
  r.Section("audit", [&](Reader& s) {
    given = true;
    s.Bool("enabled", &a.enabled);
    s.String("sink", &sink);
    s.String("path", &a.path);
    s.Seconds("summarize_seconds", &a.summarize, 0, 86400);
    s.Integer("max_file_bytes", &a.max_file_bytes, 4096, int64_t(1) << 50);
  });
  if (!given || !error->empty()) return;
  if (sink == "file") {
    a.sink = AuditTrail::SinkKind::kFile;
  } else if (sink == "stderr") {
    a.sink = AuditTrail::SinkKind::kStderr;
  } else if (sink == "journal") {
#ifdef _WIN32
    *error = "audit.sink: journal is not available on Windows; use file";
    return;
#else
    a.sink = AuditTrail::SinkKind::kJournal;
#endif
  } else if (!sink.empty()) {
    *error = "audit.sink: expected journal, file or stderr";
    return;
  }
  if (a.sink == AuditTrail::SinkKind::kFile && a.enabled && a.path.empty()) {
    *error = "audit.path: required for the file sink";
    return;
  }
  if (!a.path.empty() && !FullPath(a.path)) {
    *error = "audit.path: expected an absolute path";
    return;
  }
  *out = std::move(a);
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

Status ParseConfig(const std::string& text, Config* out) {
  // The parser refuses bad UTF-8 too, but only as "not valid JSON".
  if (size_t bad = InvalidUtf8Offset(text); bad != std::string::npos) {
    return Status::Error("not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  if (doc.is_discarded()) return Status::Error("not valid JSON");
  if (!doc.is_object()) return Status::Error("the top level must be a JSON object");

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
  r.Section("imds", [&](Reader& s) {
    s.String("endpoint", &imds.endpoint);
    s.String("api_version", &imds.api_version);
    s.Seconds("connect_timeout_seconds", &imds.connect_timeout, 0.001, 600);
    s.Seconds("timeout_seconds", &imds.timeout, 0.001, 600);
    s.Integer("max_response_bytes", &imds.max_response_bytes, 1024, 16 << 20);
  });
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
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (missing_ok) return Status::Ok();
    return Status::Error(path + ": cannot be read");
  }
  std::ostringstream text;
  text << in.rdbuf();
  Status s = ParseConfig(text.str(), out);
  if (!s.ok()) return Status::Error(path + ": " + s.message());
  return s;
}

bool ParseListenAddress(const std::string& text, ListenAddress* out) {
  return ParseHostPort(text, &out->host, &out->port);
}

}  // namespace mi
