#pragma once
// The health listener's routes (SPEC §8): /healthz, /readyz, /status, /metrics.
// Never serves tokens, needs no Metadata header, never shows a token. Reads the
// agent through a HealthReporter and a list of MetricsSources; owns nothing and
// names no counter. Loop thread only.
//
//   GET /healthz  200 {"status":"ok",...}: the loop answered.
//   GET /readyz   200 {"status":"ready"} or 503 {"error":"not_ready","error_description":why}.
//   GET /status   200 HealthReporter::StatusJson (agent/health.h: the default view).
//   GET /status?entries=all
//                 The full view, built from one snapshot in slices across loop
//                 turns (BuildFullStatus), so the loop keeps serving tokens; one
//                 at a time: another full request meanwhile gets 503 + Retry-After.
//                 Any other query on /status is a 400.
//   GET /metrics  200 Prometheus text format 0.0.4 (MetricsText): each source's
//                 families, in the order of the list.
//   other paths   404 {"error":"not_found"}; other methods 405 (Allow: GET).

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/metrics.h"
#include "agent/base/timer.h"
#include "agent/health.h"
#include "proxy/http/http_server.h"

namespace mi::proxy {

class HealthApi : public HttpHandler {
 public:
  // The full view: about this many bytes per loop turn, turns this far apart (a
  // zero-delay libuv timer re-armed from its callback runs again before any I/O).
  static constexpr size_t kSliceBytes = 256 * 1024;
  static constexpr Duration kSliceGap = Duration(1);

  // None is owned; each must outlive the HealthApi. `clock` gives the answers'
  // "now"; `timers` slices the full /status across loop turns (null: it is built
  // in one go).
  HealthApi(const HealthReporter& health, std::vector<const MetricsSource*> metrics, const Clock& clock,
            TimerFactory* timers);
  ~HealthApi() override;
  void OnRequest(const HttpRequest& request, Responder responder) override;

  // Starts the full view: a snapshot now, the sort on the next turn, then about
  // kSliceBytes of JSON per loop turn; `done` gets the body on the last turn (never
  // inside this call when there are timers). Returns false, and never calls
  // `done`, while another is being built. Destroying the HealthApi drops a build
  // under way.
  bool BuildFullStatus(std::function<void(std::string body)> done);
  bool building_full_status() const { return full_ != nullptr; }
  // The /metrics body: every source's families, as of now.
  std::string MetricsText() const;

 private:
  struct FullStatus;
  void ContinueFullStatus();

  const HealthReporter& health_;
  const std::vector<const MetricsSource*> metrics_;
  const Clock& clock_;
  TimerFactory* timers_;
  std::unique_ptr<FullStatus> full_;
};

}  // namespace mi::proxy
