#include "proxy/health_api.h"

#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "proxy/error_body.h"
#include "proxy/request_params.h"

namespace mi::proxy {
namespace {

HttpResponse Json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

}  // namespace

struct HealthApi::FullStatus {
  std::unique_ptr<StatusBuilder> doc;
  std::unique_ptr<Timer> timer;
  std::function<void(std::string)> done;
};

HealthApi::HealthApi(const HealthReporter& health, std::vector<const MetricsSource*> metrics, const Clock& clock,
                     TimerFactory* timers)
    : health_(health), metrics_(std::move(metrics)), clock_(clock), timers_(timers) {}
HealthApi::~HealthApi() = default;

void HealthApi::OnRequest(const HttpRequest& request, Responder responder) {
  std::string_view path = request.target;
  const size_t question = path.find('?');
  const std::string_view query = question == std::string_view::npos ? std::string_view() : path.substr(question + 1);
  path = path.substr(0, question);
  const bool known = path == "/healthz" || path == "/readyz" || path == "/status" || path == "/metrics";
  if (!known) {
    responder.Send(Json(404, ErrorBody("not_found", "unknown path; try /healthz, /readyz, /status, /metrics")));
    return;
  }
  if (request.method != "GET") {
    HttpResponse r = Json(405, ErrorBody("method_not_allowed", "only GET is served here"));
    r.headers.emplace_back("Allow", "GET");
    responder.Send(std::move(r));
    return;
  }
  if (path == "/healthz") {
    // Answered by the loop itself: a wedged loop answers nothing.
    nlohmann::ordered_json j;
    j["status"] = "ok";
    const TimePoint start = health_.start_time();
    if (start.time_since_epoch().count() > 0) {
      j["uptime_seconds"] = ToEpochSeconds(clock_.Now()) - ToEpochSeconds(start);
    }
    responder.Send(Json(200, j.dump()));
  } else if (path == "/readyz") {
    std::string reason;
    if (health_.Ready(&reason)) {
      responder.Send(Json(200, "{\"status\":\"ready\"}"));
    } else {
      HttpResponse r = Json(503, ErrorBody("not_ready", reason.empty() ? "not ready" : reason));
      r.headers.emplace_back("Retry-After", "1");
      responder.Send(std::move(r));
    }
  } else if (path == "/status") {
    if (query.empty()) {
      responder.Send(Json(200, health_.StatusJson(clock_.Now())));
    } else if (query == "entries=all") {
      auto shared = std::make_shared<Responder>(std::move(responder));
      const bool started =
          BuildFullStatus([shared](std::string body) { shared->Send(Json(200, std::move(body))); });
      if (!started) {
        HttpResponse r = Json(503, ErrorBody("busy", "a full /status is being built; retry in a moment"));
        r.headers.emplace_back("Retry-After", "1");
        shared->Send(std::move(r));
      }
    } else {
      responder.Send(Json(400, ErrorBody("bad_request", "/status takes no query but entries=all (every key)")));
    }
  } else {
    HttpResponse r = Json(200, MetricsText());
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    responder.Send(std::move(r));
  }
}

bool HealthApi::BuildFullStatus(std::function<void(std::string body)> done) {
  if (full_ != nullptr) return false;
  std::unique_ptr<StatusBuilder> doc = health_.FullStatus(clock_.Now());
  if (timers_ == nullptr) {
    while (!doc->Step(std::string::npos)) {
    }
    done(doc->Take());
    return true;
  }
  // The snapshot and the head on this turn, the sort on the next, then the entries.
  full_ = std::make_unique<FullStatus>();
  full_->doc = std::move(doc);
  full_->timer = timers_->NewTimer();
  full_->done = std::move(done);
  full_->timer->Arm(kSliceGap, [this] { ContinueFullStatus(); });
  return true;
}

void HealthApi::ContinueFullStatus() {
  if (!full_->doc->Step(kSliceBytes)) {
    full_->timer->Arm(kSliceGap, [this] { ContinueFullStatus(); });
    return;
  }
  // Cleared before `done` runs, so that it may start the next one. The timer goes
  // from inside its own callback, which Timer allows.
  std::unique_ptr<FullStatus> finished = std::move(full_);
  finished->done(finished->doc->Take());
}

std::string HealthApi::MetricsText() const {
  MetricsWriter w(clock_.Now());
  for (const MetricsSource* source : metrics_) source->WriteMetrics(w);
  return w.Take();
}

}  // namespace mi::proxy
