#pragma once
// The health listener's routes (SPEC §8): /healthz, /readyz, /status, /metrics.
// Never serves tokens, needs no Metadata header, never shows a token. Reads the
// core's state through HealthSources; owns nothing. Loop thread only.
//
//   GET /healthz  200 {"status":"ok",...}: the loop answered.
//   GET /readyz   200 {"status":"ready"} or 503 {"error":"not_ready","error_description":why}.
//   GET /status   200 JSON (StatusJson): version, uptime, upstream, counts by state,
//                 then per identity and resource state, worst first (failing, degraded,
//                 refreshing, ok). Times are ISO-8601 UTC strings ("..._epoch": seconds).
//                 The default view stays small: at most kDefaultEntries keys, and
//                 callers' strings (resources, ids) longer than kShortString bytes
//                 shortened ("entries_total", "entries_shown", "truncated" and
//                 "full_view" tell what was left out; "<name>_bytes" a cut string's
//                 length). Compact JSON.
//   GET /status?entries=all
//                 Every key, values exact. Built from one snapshot in slices across
//                 loop turns (BuildFullStatus), so the loop keeps serving tokens; one
//                 at a time: another full request meanwhile gets 503 + Retry-After.
//                 Any other query on /status is a 400.
//   GET /metrics  200 Prometheus text format 0.0.4 (MetricsText), names mi_agent_*.
//   other paths   404 {"error":"not_found"}; other methods 405 (Allow: GET).
// Every pointer in HealthSources may be null: that part is left out.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent/base/clock.h"
#include "agent/token_cache.h"
#include "agent/upstream_latency.h"
#include "agent/upstream_scheduler.h"
#include "proxy/http/http_server.h"
#include "proxy/token_api.h"

namespace mi::proxy {

struct HealthSources {
  const Clock* clock = nullptr;
  std::string version;
  TimePoint start_time{};
  std::string config_digest;           // short hash of the effective config
  std::vector<std::string> listeners;  // token listener addresses
  std::string imds_endpoint;
  int max_concurrent = 0;              // the IMDS budget's concurrency cap
  const TokenCache* cache = nullptr;
  const UpstreamScheduler* scheduler = nullptr;
  const UpstreamLatency* upstream_metrics = nullptr;
  const HttpServer* token_server = nullptr;
  const HttpServer* health_server = nullptr;  // optional: its connections in /metrics
  const TokenApi* token_api = nullptr;
  // Slices the full /status across loop turns; null: it is built in one go.
  TimerFactory* timers = nullptr;
  // Listeners up and (if configured) the first prefetch round done; else the reason.
  std::function<bool(std::string* reason)> ready;
};

class HealthApi : public HttpHandler {
 public:
  // The default /status view: this many keys at most, callers' strings this long.
  static constexpr size_t kDefaultEntries = 50;
  static constexpr size_t kShortString = 128;
  // The full view: about this many bytes per loop turn, turns this far apart (a
  // zero-delay libuv timer re-armed from its callback runs again before any I/O).
  static constexpr size_t kSliceBytes = 256 * 1024;
  static constexpr Duration kSliceGap = Duration(1);

  explicit HealthApi(HealthSources sources);
  ~HealthApi() override;
  void OnRequest(const HttpRequest& request, Responder responder) override;
  HealthSources& sources() { return sources_; }

  // The whole /status document at once: the default view, or (full) every key.
  std::string StatusJson(bool full = false) const;
  // Starts the full view: a snapshot now, the sort on the next turn, then about
  // kSliceBytes of JSON per loop turn; `done` gets the body on the last turn (never inside this call when
  // sources().timers is set). Returns false, and never calls `done`, while another
  // is being built. Destroying the HealthApi drops a build under way.
  bool BuildFullStatus(std::function<void(std::string body)> done);
  bool building_full_status() const { return full_ != nullptr; }
  std::string MetricsText() const;

 private:
  class FullStatus;
  void ContinueFullStatus();

  HealthSources sources_;
  std::unique_ptr<FullStatus> full_;
};

}  // namespace mi::proxy
