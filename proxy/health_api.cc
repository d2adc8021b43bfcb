#include "proxy/health_api.h"

namespace mi::proxy {

HealthApi::HealthApi(HealthSources sources) : sources_(std::move(sources)) {}

void HealthApi::OnRequest(HttpRequest& request, Responder responder) {
  HttpResponse r;
  std::string_view path = request.target;
  path = path.substr(0, path.find('?'));
  if (path == "/healthz") {
    r.body = "{\"status\":\"ok\"}";
  } else if (path == "/readyz") {
    std::string reason;
    if (sources_.ready && sources_.ready(&reason)) {
      r.body = "{\"status\":\"ready\"}";
    } else {
      r.status = 503;
      r.body = ErrorBody("not_ready", reason);
    }
  } else {
    r.status = 404;
    r.body = ErrorBody("not_found", "unknown path");
  }
  responder.Send(std::move(r));
}

std::string HealthApi::StatusJson() const { return "{}"; }
std::string HealthApi::MetricsText() const { return ""; }

}  // namespace mi::proxy
