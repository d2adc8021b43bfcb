#pragma once
// The health listener's routes (SPEC §8): /healthz, /readyz, /status, /metrics.
// Never serves tokens, needs no Metadata header, never shows a token. Reads the
// core's state through HealthSources; owns nothing. Loop thread only.
//
//   GET /healthz  200 {"status":"ok",...}: the loop answered.
//   GET /readyz   200 {"status":"ready"} or 503 {"error":"not_ready","error_description":why}.
//   GET /status   200 JSON (StatusJson): version, uptime, upstream, per identity and
//                 resource state. Times are ISO-8601 UTC strings ("..._epoch": seconds).
//   GET /metrics  200 Prometheus text format 0.0.4 (MetricsText), names mi_agent_*.
//   other paths   404 {"error":"not_found"}; other methods 405 (Allow: GET).
// Every pointer in HealthSources may be null: that part is left out.

#include <functional>
#include <string>
#include <vector>

#include "agent/clock.h"
#include "agent/token_cache.h"
#include "agent/upstream_metrics.h"
#include "agent/upstream_scheduler.h"
#include "proxy/http_server.h"
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
  const UpstreamMetrics* upstream_metrics = nullptr;
  const HttpServer* token_server = nullptr;
  const HttpServer* health_server = nullptr;  // optional: its connections in /metrics
  const TokenApi* token_api = nullptr;
  // Listeners up and (if configured) the first prefetch round done; else the reason.
  std::function<bool(std::string* reason)> ready;
};

class HealthApi : public HttpHandler {
 public:
  explicit HealthApi(HealthSources sources);
  void OnRequest(HttpRequest& request, Responder responder) override;
  HealthSources& sources() { return sources_; }

  std::string StatusJson() const;
  std::string MetricsText() const;

 private:
  HealthSources sources_;
};

}  // namespace mi::proxy
