#include "agent/app/daemon.h"

#include <algorithm>
#include <csignal>
#include <functional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "agent/app/process_metrics.h"
#include "agent/audit_trail.h"
#include "agent/curl_upstream_client.h"
#include "agent/base/event_loop.h"
#include "agent/base/fnv.h"
#include "agent/base/random.h"
#include "agent/health.h"
#include "agent/platform.h"
#include "agent/base/secure_memory.h"
#include "agent/base/text.h"
#include "agent/caller_resolver.h"
#include "agent/policy_gate.h"
#include "agent/token_cache.h"
#include "agent/upstream_latency.h"
#include "agent/imds_forwarder.h"
#include "agent/upstream_scheduler.h"
#include "proxy/health_api.h"
#include "proxy/http/http_server.h"
#include "proxy/token_api.h"

namespace mi {
namespace {

// The token API's options with the listeners' bound hosts (these include
// sockets adopted from the service manager).
proxy::TokenApi::Options ApiOptions(const Config& c, std::vector<std::string> listen_hosts) {
  proxy::TokenApi::Options o = c.api;
  o.listen_hosts = std::move(listen_hosts);
  o.audit_all = c.audit.enabled;  // every token request is audited, also under mode "off"
  return o;
}

// The caller resolver's options from "authorization" (its caps are fixed).
CallerResolver::Options ResolverOptions(const Config& c) {
  CallerResolver::Options o;
  o.ttl = c.authorization.cache_ttl;
  return o;
}

// The policy as the config digest sees it: mode, cache time and every rule.
nlohmann::json AuthorizationDigest(const AuthorizationOptions& a) {
  nlohmann::json rules = nlohmann::json::array();
  for (const AuthorizationRule& r : a.rules) {
    std::vector<std::string> identities;
    for (const auto& id : r.identities) identities.push_back(std::string(SelectorParam(id.kind)) + "=" + id.id);
    rules.push_back({r.name, r.any_caller, r.uids, r.users, r.groups, r.exe, r.process_names, r.any_identity,
                     identities, r.any_resource, r.resources});
  }
  return {AuthorizationModeName(a.mode), a.cache_ttl.count(), rules};
}

// imds.kind arc, or what "auto" chose (issue #14 point 5).
void LogUpstreamKind(const Config& c, Logger& logger) {
  const bool arc = c.imds.kind == CurlUpstreamClient::Kind::kArc;
  if (c.imds_kind_auto) {
    MI_LOG(logger, kInfo) << "imds.kind auto: " << platform::ArcAgentPath()
                          << (arc ? " exists, using the Azure Arc agent" : " not found, using IMDS");
  } else if (arc) {
    MI_LOG(logger, kInfo) << "imds.kind arc: using the Azure Arc agent (challenge files in "
                          << c.imds.arc_token_dir << ")";
  }
}

std::string Digest(const Config& c) {
  // A stable short hash of the settings that matter, so a fleet can spot drift.
  nlohmann::json j;
  j["port"] = c.port;
  j["listen"] = c.listen;
  if (!c.unix_socket.empty()) j["unix_socket"] = c.unix_socket;  // absent when off: digests stay as they were
  j["imds"] = {c.imds.endpoint, c.imds.api_version, c.imds.timeout.count()};
  if (c.imds.kind == CurlUpstreamClient::Kind::kArc) j["imds_kind"] = "arc";  // absent for imds: digests stay
  j["cache"] = {c.cache.margin.count(), c.cache.refresh_ahead.count(), c.cache.max_keys};
  j["budget"] = {c.budget.rate_per_second, c.budget.burst, c.budget.max_concurrent};
  std::vector<std::string> prefetch;
  for (const auto& k : c.cache.prefetch) prefetch.push_back(k.Describe() + " " + k.resource);
  j["prefetch"] = prefetch;
  // Only when on, so the digest of a config without a policy stays what it was.
  if (c.authorization.mode != AuthorizationMode::kOff) j["authorization"] = AuthorizationDigest(c.authorization);
  // Likewise the audit trail only when it is on (a default config's digest stays as it was).
  if (c.audit.enabled) {
    j["audit"] = {static_cast<int>(c.audit.sink), c.audit.path, c.audit.summarize.count(), c.audit.max_file_bytes};
  }
  // The basis is a digit short of FNV's own: kept, so the digest of a given
  // config stays what operators and their dashboards have seen.
  constexpr uint64_t kDigestBasis = 1469598103934665603ULL;
  const uint64_t h = Fnv1a64(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), kDigestBasis);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace

struct Daemon::Impl {
  explicit Impl(DaemonOptions o) : options(std::move(o)), config(options.config), logger(&loop.clock()) {
    if (options.notifier == nullptr) options.notifier = &null_notifier;
    if (options.log_sink) logger.set_sink(options.log_sink);
  }

  // Everything with handles on the loop, torn down together after the drain.
  struct Parts {
    Parts(Impl* d)
        : upstream(d->loop, d->config.imds, d->logger),
          scheduler(d->config.budget, d->loop.clock(), d->loop),
          audit(d->config.audit, {&d->loop.clock(), &d->loop, d->loop.uv(), &d->logger, nullptr}),
          cache(d->config.cache, d->loop.clock(), d->loop, d->random, upstream, scheduler),
          forwarder(upstream, scheduler),
          api(&cache, &d->loop.clock(), d->config.api),
          work_queue(d->loop.uv()),
          resolver(ResolverOptions(d->config), d->loop.clock(), std::make_shared<SystemCallerLookup>(), work_queue),
          gate(resolver, d->loop.clock(), d->logger),
          server(d->loop.uv(), d->config.limits, api, d->logger),
          health(cache, scheduler, upstream_metrics),
          process_metrics(MI_VERSION, BuildRevision(), TimePoint(), &health),
          reload_metrics(health.info()),
          // /metrics in this order; the listeners' sources are declared below.
          health_api(health,
                     {&process_metrics, &reload_metrics, &api, &audit, &cache, &upstream_metrics, &scheduler,
                      &token_listener_metrics, &health_listener_metrics},
                     d->loop.clock(), &d->loop),
          health_server(d->loop.uv(), d->config.health_limits, health_api, d->logger, &no_peers),
          token_listener_metrics("token", server),
          health_listener_metrics("health", health_server),
          watchdog(d->loop.NewTimer()) {
      api.set_forwarder(&forwarder);  // the IMDS v2 paths (imds.v2_passthrough)
    }

    CurlUpstreamClient upstream;
    UpstreamScheduler scheduler;
    UpstreamLatency upstream_metrics;
    AuditTrail audit;  // before api and health, which point to it
    TokenCache cache;
    UpstreamForwarder forwarder;  // before api, which points to it
    proxy::TokenApi api;
    UvWorkQueue work_queue;
    CallerResolver resolver;
    PolicyGate gate;
    proxy::HttpServer server;
    HealthModel health;
    ProcessMetrics process_metrics;
    ReloadMetrics reload_metrics;
    proxy::HealthApi health_api;
    // The health listener serves no tokens: its callers are never looked up.
    NoPeerResolver no_peers;
    proxy::HttpServer health_server;
    ListenerMetrics token_listener_metrics;
    ListenerMetrics health_listener_metrics;
    std::unique_ptr<Timer> watchdog;
    std::vector<std::unique_ptr<UvHandle<uv_signal_t>>> signals;
  };

  int Run();
  Status Start();
  Status ListenUnixSocket();
  void OnReady();
  void Stop();
  void Reload();
  void RecordReload(const Status& result);
  void WarnOnAdoptedAddresses();
  void ApplyAuthorization();
  void UpdateStatusLine();
  void LogUpstreamChange();
  void ArmWatchdog();
  void WatchSignal(int signum, void (*handler)(uv_signal_t*, int));

  DaemonOptions options;
  Config config;
  EventLoop loop;
  Logger logger;
  SystemRandom random;
  NullNotifier null_notifier;
  std::unique_ptr<Parts> parts;
  std::vector<std::string> listen_hosts;  // Host values naming our token listeners
  bool stopping = false;
  std::string status_line;
  // The upstream state last logged: a failure is logged once per change.
  bool upstream_failing = false;
  std::string upstream_error;
};

Daemon::Daemon(DaemonOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Daemon::~Daemon() = default;

int Daemon::Run() { return impl_->Run(); }

void Daemon::RequestStop() {
  Impl* d = impl_.get();
  d->loop.Post([d] { d->Stop(); });
}

void Daemon::RequestReload() {
  Impl* d = impl_.get();
  d->loop.Post([d] { d->Reload(); });
}

int Daemon::Impl::Run() {
  logger.set_level(config.log_level);
  logger.set_format(config.log_format);
  // Before the first token: a core file or a debugger must not see one.
  if (options.allow_core_dumps) {
    MI_LOG(logger, kWarning)
        << "core dumps allowed (--allow-core-dumps, for debugging only): a crash or a debugger can write this "
           "process's memory to disk; cached tokens stay excluded, copies in transit may not";
  } else {
    Status dumps = ForbidCoreDumps();
    if (!dumps.ok()) MI_LOG(logger, kWarning) << "cannot disable core dumps, continuing: " << dumps.message();
  }
  Status s = Start();
  if (!s.ok()) {
    MI_LOG(logger, kError) << "start-up failed: " << s.message();
    parts.reset();
    loop.Close();
    return 1;
  }
  loop.Run();
  parts.reset();
  if (!loop.Close()) {
    MI_LOG(logger, kError) << "event loop closed with handles still open";
    return 1;
  }
  MI_LOG(logger, kInfo) << "stopped";
  return 0;
}

Status Daemon::Impl::Start() {
  parts = std::make_unique<Parts>(this);
  Parts& p = *parts;
  MI_LOG(logger, kInfo) << "mi-agent " MI_VERSION " starting; IMDS " << config.imds.endpoint;
  LogUpstreamKind(config, logger);
  if (!p.audit.status().ok()) return p.audit.status();
  p.api.set_audit_sink(&p.audit);
  p.health.set_audit_trail(&p.audit);

  // Token listeners: sockets passed by the service manager, else bind our own.
  std::vector<uv_os_sock_t> activated;
  Status s = platform::TakeActivatedSockets(&activated);
  if (!s.ok()) return s;
  if (!activated.empty()) {
    for (uv_os_sock_t fd : activated) {
      s = p.server.Adopt(fd);
      if (!s.ok()) return s;
    }
    MI_LOG(logger, kInfo) << "adopted " << activated.size() << " socket(s) from the service manager";
    WarnOnAdoptedAddresses();
  } else {
    for (const std::string& host : config.listen) {
      s = p.server.Listen(host, config.port);
      if (!s.ok()) return s;
    }
  }
  s = ListenUnixSocket();
  if (!s.ok()) return s;
  for (const ListenAddress& a : config.health) {
    s = p.health_server.Listen(a.host, a.port);
    if (!s.ok()) return s;
  }
  std::string where;
  for (const auto& a : p.server.BoundAddresses()) {
    where += (where.empty() ? "" : ", ") + a;
    // A Unix socket names no host: its clients send "Host: localhost" (always allowed).
    if (a.rfind("unix:", 0) == 0) continue;
    listen_hosts.push_back(a.substr(0, a.rfind(':')));  // "[::1]:50342" -> "[::1]"
  }
  p.api.set_options(ApiOptions(config, listen_hosts));
  ApplyAuthorization();
  MI_LOG(logger, kInfo) << "serving tokens on " << where;
  for (const auto& a : p.health_server.BoundAddresses()) MI_LOG(logger, kInfo) << "health endpoint on " << a;
  p.health.set_listening();

  HealthModel::Info& info = p.health.info();
  info.version = MI_VERSION;
  info.start_time = loop.clock().Now();
  info.config_digest = Digest(config);
  info.listeners = p.server.BoundAddresses();
  info.imds_endpoint = config.imds.endpoint;
  p.process_metrics.set_start_time(info.start_time);

  p.cache.set_upstream_observer([this](Duration latency, int) {
    parts->upstream_metrics.Observe(latency);
    LogUpstreamChange();
    UpdateStatusLine();  // also IMDS's first answer: "unknown" -> "ok" (the line is sent only when it changed)
  });
  p.cache.set_state_observer([this](const EntrySnapshot& e, EntryState from) {
    const bool bad = e.state == EntryState::kFailing || e.state == EntryState::kDegraded;
    // Built only for a level that is on (MI_LOG evaluates nothing otherwise).
    auto line = [&] {
      std::string text = "identity " + e.key.Describe() + " resource " + e.key.resource + ": " +
                         EntryStateName(from) + " -> " + EntryStateName(e.state);
      if (bad && !e.last_error.empty()) {
        text += " (last error: " + (e.last_error_status != 0 ? std::to_string(e.last_error_status) + " " : "") +
                e.last_error + (e.last_error_description.empty() ? "" : ": " + e.last_error_description) + ")";
      }
      return text;
    };
    // Warning into trouble, info out of it, debug otherwise (every refresh).
    if (bad) {
      MI_LOG(logger, kWarning) << line();
    } else if (from == EntryState::kFailing || from == EntryState::kDegraded) {
      MI_LOG(logger, kInfo) << line();
    } else {
      MI_LOG(logger, kDebug) << line();
    }
    UpdateStatusLine();
  });

  if (options.handle_signals) {
    WatchSignal(SIGINT, [](uv_signal_t* h, int) {
      if (h->data) static_cast<Impl*>(h->data)->Stop();
    });
#ifdef SIGTERM
    WatchSignal(SIGTERM, [](uv_signal_t* h, int) {
      if (h->data) static_cast<Impl*>(h->data)->Stop();
    });
#endif
#ifndef _WIN32
    WatchSignal(SIGHUP, [](uv_signal_t* h, int) {
      if (h->data) static_cast<Impl*>(h->data)->Reload();
    });
#endif
  }
  ArmWatchdog();

  const bool wait = config.ready_waits_for_prefetch && !config.cache.prefetch.empty();
  if (!config.cache.prefetch.empty()) {
    MI_LOG(logger, kInfo) << "prefetching " << config.cache.prefetch.size() << " token(s)";
  }
  p.cache.StartPrefetch([this, wait] {
    if (!config.cache.prefetch.empty()) MI_LOG(logger, kInfo) << "first prefetch round finished";
    if (wait) OnReady();
  });
  if (!wait) OnReady();
  return Status::Ok();
}

// The service manager's sockets stand in for "port" and "listen": say so when
// they are not the configured ones (a socket unit and a config that drifted apart).
void Daemon::Impl::WarnOnAdoptedAddresses() {
  std::vector<std::string> adopted, configured;
  for (const std::string& a : parts->server.BoundAddresses()) {
    if (a.rfind("unix:", 0) != 0) adopted.push_back(a);
  }
  for (const std::string& host : config.listen) {
    configured.push_back((host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                         std::to_string(config.port));
  }
  std::sort(adopted.begin(), adopted.end());
  std::sort(configured.begin(), configured.end());
  if (adopted.empty() || adopted == configured) return;
  auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const std::string& a : v) out += (out.empty() ? "" : ", ") + a;
    return out.empty() ? std::string("none") : out;
  };
  MI_LOG(logger, kWarning) << "the service manager's sockets (" << join(adopted)
                           << ") differ from the configured port and listen addresses (" << join(configured)
                           << "); serving on the service manager's, the configured ones are not used";
}

// "unix_socket": bound here unless the service manager passed that very socket.
Status Daemon::Impl::ListenUnixSocket() {
  if (config.unix_socket.empty()) return Status::Ok();
  const std::string name = "unix:" + config.unix_socket;
  for (const std::string& a : parts->server.BoundAddresses()) {
    if (a == name) return Status::Ok();
  }
  return parts->server.ListenUnix(config.unix_socket);
}

void Daemon::Impl::WatchSignal(int signum, void (*handler)(uv_signal_t*, int)) {
  auto h = std::make_unique<UvHandle<uv_signal_t>>();
  if (h->Init(uv_signal_init, loop.uv(), this) != 0) return;
  if (uv_signal_start(h->get(), handler, signum) != 0) return;
  // Signal watchers must not keep the loop alive after the drain.
  uv_unref(h->base());
  parts->signals.push_back(std::move(h));
}

void Daemon::Impl::OnReady() {
  if (stopping || !parts || parts->health.ready()) return;
  parts->health.set_ready();
  MI_LOG(logger, kInfo) << "ready";
  UpdateStatusLine();
  options.notifier->Ready();
}

void Daemon::Impl::ArmWatchdog() {
  const Duration every = options.notifier->WatchdogInterval();
  if (every <= Duration(0) || !parts) return;
  // Sent from the loop itself: a wedged loop stops the pings and gets restarted.
  parts->watchdog->Arm(every, [this] {
    options.notifier->Watchdog();
    ArmWatchdog();
  });
}

void Daemon::Impl::UpdateStatusLine() {
  if (!parts) return;
  size_t ok = 0, failing = 0, degraded = 0;
  // Runs on every key's state change: count without copying the keys.
  const TokenCache::Summary sum = parts->cache.Summarize();
  failing = sum.by_state[static_cast<int>(EntryState::kFailing)];
  degraded = sum.by_state[static_cast<int>(EntryState::kDegraded)];
  ok = sum.by_state[static_cast<int>(EntryState::kOk)] + sum.by_state[static_cast<int>(EntryState::kRefreshing)];
  std::ostringstream line;
  const UpstreamHealth& up = parts->cache.upstream_health();
  line << ok << " identities ok, " << degraded << " degraded, " << failing << " failing, IMDS "
       << (up.failing ? "failing" : (up.last_success != TimePoint() ? "ok" : "unknown"));
  const HealthModel::Info::Reload& reload = parts->health.info().reload;
  if (reload.result == HealthModel::Info::ReloadResult::kFailed) line << "; reload failed: " << reload.error;
  if (line.str() == status_line) return;
  status_line = line.str();
  options.notifier->Status(status_line);
}

void Daemon::Impl::LogUpstreamChange() {
  if (!parts) return;
  const UpstreamHealth& h = parts->cache.upstream_health();
  std::string error;
  if (h.failing) {
    error = (h.last_error_status != 0 ? "HTTP " + std::to_string(h.last_error_status) + " " : std::string()) +
            h.last_error + (h.last_error_description.empty() ? "" : " (" + h.last_error_description + ")");
  }
  if (h.failing == upstream_failing && error == upstream_error) return;
  if (h.failing) {
    MI_LOG(logger, kWarning) << "IMDS request failed: " << error
                             << "; retrying with backoff, cached tokens are served while valid";
  } else {
    MI_LOG(logger, kInfo) << "IMDS answering again (last failure: " << upstream_error << ")";
  }
  upstream_failing = h.failing;
  upstream_error = std::move(error);
}

void Daemon::Impl::Reload() {
  if (stopping || !parts) return;
  options.notifier->Reloading();
  // READY=1 closes the reload, but never before the start-up readiness itself.
  auto done = [this] {
    if (parts->health.ready()) options.notifier->Ready();
  };
  if (options.config_path.empty()) {
    MI_LOG(logger, kInfo) << "reload requested; no configuration file to read";
    RecordReload(Status::Ok());
    done();
    return;
  }
  Config next;
  Status s = LoadConfigFile(options.config_path, /*missing_ok=*/false, &next);
  if (s.ok() && options.overrides) options.overrides(&next);
  if (!s.ok()) {
    MI_LOG(logger, kError) << "reload rejected, keeping the running configuration: " << s.message();
    RecordReload(s);
    done();
    return;
  }
  if (next.port != config.port || next.listen != config.listen || next.unix_socket != config.unix_socket) {
    MI_LOG(logger, kWarning) << "reload: listener addresses changed; restart the service to apply them";
  }
  config.log_level = next.log_level;
  config.log_format = next.log_format;
  logger.set_level(next.log_level);
  logger.set_format(next.log_format);
  // Listeners stay as they are (sockets and connections are kept); the rest applies.
  next.port = config.port;
  next.listen = config.listen;
  next.unix_socket = config.unix_socket;
  next.health = config.health;
  config = next;
  Parts& p = *parts;
  p.upstream.set_options(config.imds);
  p.scheduler.set_options(config.budget);
  p.cache.Reconfigure(config.cache);
  p.api.set_options(ApiOptions(config, listen_hosts));
  ApplyAuthorization();
  if (p.audit.set_options(config.audit).ok()) p.audit.Reopen();
  p.server.set_limits(config.limits);
  p.health_server.set_limits(config.health_limits);
  p.health.info().config_digest = Digest(config);
  p.health.info().imds_endpoint = config.imds.endpoint;
  MI_LOG(logger, kInfo) << "configuration reloaded from " << options.config_path << " (digest " << Digest(config)
                         << ")";
  RecordReload(Status::Ok());
  done();
}

// /status "reload", the reload metrics and STATUS= ("...; reload failed: <why>"
// until a reload succeeds).
void Daemon::Impl::RecordReload(const Status& result) {
  constexpr size_t kMaxError = 256;  // a file's key names can be long
  HealthModel::Info::Reload& r = parts->health.info().reload;
  r.result = result.ok() ? HealthModel::Info::ReloadResult::kOk : HealthModel::Info::ReloadResult::kFailed;
  r.time = loop.clock().Now();
  r.error = result.ok() ? std::string() : Escaped(result.message(), kMaxError);
  UpdateStatusLine();
}

// Compiles "authorization" and puts it in front of the token API; mode "off"
// takes the gate away (nothing is consulted). Decisions already made stand.
void Daemon::Impl::ApplyAuthorization() {
  Parts& p = *parts;
  const AuthorizationOptions& a = config.authorization;
  p.resolver.set_options(ResolverOptions(config));
  p.gate.set_policy(std::make_shared<const AuthorizationPolicy>(a));
  p.api.set_access_gate(a.mode == AuthorizationMode::kOff ? nullptr : &p.gate);
  if (a.mode != AuthorizationMode::kOff) {
    MI_LOG(logger, kInfo) << "authorization: mode " << AuthorizationModeName(a.mode) << ", " << a.rules.size()
                           << " rule(s)";
  }
}

void Daemon::Impl::Stop() {
  if (stopping || !parts) return;
  stopping = true;
  MI_LOG(logger, kInfo) << "stopping: draining requests in flight";
  options.notifier->Stopping();
  parts->health_server.StopAccepting();
  parts->server.Shutdown(config.drain_timeout, [this] {
    MI_LOG(logger, kInfo) << "drained";
    // Tear down on a later turn: we are inside the server's callback.
    loop.Post([this] { parts.reset(); });
  });
}

}  // namespace mi
