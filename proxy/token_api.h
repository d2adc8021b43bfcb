#pragma once
// The token API served on the token listener: the legacy VM-extension endpoint
// (/oauth2/token, GET and POST form) and the IMDS-shaped endpoint
// (/metadata/identity/oauth2/token). Validates, asks the TokenBroker, and maps
// its answer to HTTP (SPEC §3 error table). Loop thread only.
//
// The IMDS v2 paths (/metadata/identity/getplatformmetadata and
// .../issuecredential, issue #14 point 3) go through an ImdsForwarder
// uncached: same Host/Origin, X-Forwarded-For and Metadata checks, GET or POST
// (else 405), the gate asked for identity "default" and resource "<the path>",
// IMDS's status, body and Server header passed back; the budget's refusal is
// 429, no answer or a body over imds.max_response_bytes 502 bad_gateway. With
// Options::v2_passthrough false (or no forwarder): 404 not_found at once.
//
// Against DNS rebinding (a web page whose name now resolves to 127.0.0.1 is
// same-origin with us), before anything else but the peer check: a request
// with an Origin header, several Host headers, no Host in HTTP/1.1, or a Host
// (absolute-form: the target's authority) outside HostAllowList gets 400
// invalid_request.
//
// The App Service / Functions dialects (Route::kAppService, only with a
// secret): GET /msi/token?api-version=2019-08-01 with X-IDENTITY-HEADER, or
// GET /MSI/token?api-version=2017-09-01 with Secret (the path does not choose
// the version; api-version does). No Metadata header. A missing or wrong
// secret gets 401 unauthorized_client; the check runs in constant time.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/access_gate.h"
#include "agent/audit_event.h"
#include "agent/base/clock.h"
#include "agent/base/metrics.h"
#include "agent/token_broker.h"
#include "proxy/http/http_message.h"
#include "proxy/request_params.h"

namespace mi::proxy {

// Requests answered, by route and status code (for metrics).
class RequestCounters {
 public:
  void Count(Route route, int status) {
    if (status >= 100 && status < 600) ++counts_[static_cast<int>(route)][status];
  }
  uint64_t Get(Route route, int status) const { return counts_[static_cast<int>(route)][status]; }

 private:
  std::array<std::array<uint64_t, 600>, kRouteCount> counts_{};
};

// Time from a request's arrival at the API to its answer, by route and cache
// outcome (none: answered before the cache, or uncached like the v2 paths):
// one fixed histogram each, so an observation never allocates.
class RequestDurations {
 public:
  static constexpr int kCacheOutcomes = 4;  // CacheOutcome: none, hit, miss, coalesced
  void Observe(Route route, CacheOutcome cache, double seconds) {
    histograms_[static_cast<int>(route)][static_cast<int>(cache)].Observe(seconds);
  }
  const Histogram& Get(Route route, CacheOutcome cache) const {
    return histograms_[static_cast<int>(route)][static_cast<int>(cache)];
  }

 private:
  std::array<std::array<Histogram, kCacheOutcomes>, kRouteCount> histograms_{};
};

class TokenApi : public HttpHandler, public MetricsSource {
 public:
  // Config keys at the top level (checked by ParseConfig, agent/app/config.cc),
  // except listen_hosts, which the daemon fills in once the listeners are bound.
  struct Options {
    bool allow_remote = false;   // "allow_remote": serve non-loopback peers
    bool absolute_form = false;  // "absolute_form": accept "GET http://169.254.169.254/..." targets
    // Host values served besides localhost, 127.0.0.1 and [::1] (and
    // 169.254.169.254 with absolute_form), without a port:
    std::vector<std::string> listen_hosts;   // the listener's addresses ("10.0.0.4", "::1" or "[::1]")
    std::vector<std::string> allowed_hosts;  // "allowed_hosts" ("myvm.internal", "[fd00::4]")
    // "audit.enabled": record every token request with the audit sink, also
    // under authorization mode "off" (otherwise only when a gate is set).
    bool audit_all = false;
    // "dialects.app_service": the secret App Service callers send (read from
    // its secret_file by ParseConfig). Empty: the dialect is off and its
    // paths are unknown like any other.
    std::string app_service_secret;
    // "imds.v2_passthrough": pass the IMDS v2 paths (Route::kImdsV2) through
    // to IMDS; false (or no forwarder set): a fast 404, and SDKs use v1.
    bool v2_passthrough = true;
  };

  TokenApi(TokenBroker* broker, const Clock* clock, Options options);

  void OnRequest(const HttpRequest& request, Responder responder) override;
  void set_options(Options options);
  // Authorization (issue #13): asked after the parameters are valid and before
  // the cache, for every token request. Null (the default, and mode "off"):
  // not consulted at all. Not owned; outlives the API or is reset first.
  void set_access_gate(AccessGate* gate) { gate_ = gate; }
  // One AuditEvent per token request that reached the decision point, when a
  // gate is set or Options::audit_all is true. Null: nothing is built. Not owned.
  void set_audit_sink(AuditSink* sink) { audit_sink_ = sink; }
  // The IMDS v2 paths go through it (uncached, on the IMDS budget). Null: 404.
  // Not owned; outlives the API or is reset first.
  void set_forwarder(ImdsForwarder* forwarder) { forwarder_ = forwarder; }
  const RequestCounters& counters() const { return counters_; }
  const RequestDurations& durations() const { return durations_; }
  // The monotonic clock request durations are measured with, in nanoseconds
  // (default: uv_hrtime, the clock libuv's loop time is read from; tests set a fake).
  using MonotonicNanos = uint64_t (*)();
  void set_monotonic_clock(MonotonicNanos now) { monotonic_ns_ = now; }
  // MetricsSource: mi_agent_requests_total by route and status code, and
  // mi_agent_request_duration_seconds by route and cache outcome (only the
  // combinations that have answered a request).
  void WriteMetrics(MetricsWriter& out) const override;

  // The HTTP answer for a broker result (exposed for tests).
  static HttpResponse MapResult(const TokenResult& result, TimePoint now);
  // 200 with the token's JSON, expires_in counted from `now`: the cache hit
  // and the answer of a fetch alike.
  static HttpResponse RenderToken(const Token& token, TimePoint now);
  // The App Service dialects' 200 (both versions): {"access_token","expires_on"
  // (epoch seconds as a string),"resource","token_type"[,"client_id"]}.
  static HttpResponse RenderAppService(const Token& token);

 private:
  // Counts and times the answer, then sends it. Without `start_ns`: an answer
  // given within OnRequest (the request began at request_start_ns_), cache "none".
  void Reply(Route route, Responder& responder, HttpResponse&& response) {
    Reply(route, CacheOutcome::kNone, request_start_ns_, responder, std::move(response));
  }
  void Reply(Route route, CacheOutcome cache, uint64_t start_ns, Responder& responder, HttpResponse&& response);
  uint64_t NowNanos() const;
  static HttpResponse Render(Route route, const Token& token, TimePoint now) {
    return route == Route::kAppService ? RenderAppService(token) : RenderToken(token, now);
  }
  // After the decision: 401 for kDeny, else the cache, else the broker.
  // `peer`: the request's caller (HttpRequest::caller); `audited` (null: no
  // audit record) is valid during the call; `listener`: "tcp" or "unix"
  // (HttpRequest::transport).
  // `options`: the caller's cache-control parameters, null when it gave none.
  // `start_ns`: when the request arrived (monotonic_ns_).
  void Serve(Route route, const char* listener, const PeerCredentials& peer, const TokenKey& key, Decision decision,
             const CallerInfo* audited, Responder& responder, const RequestOptions* options, uint64_t start_ns);
  void Record(Route route, const char* listener, const CallerInfo& caller, const TokenKey& key, Decision decision,
              CacheOutcome cache, int status, const Token* token);
  bool auditing() const { return audit_sink_ != nullptr && (gate_ != nullptr || options_.audit_all); }
  struct CheckedHeaders;
  // The IMDS v2 paths: after Host/Origin, before anything
  // token-specific. Under a gate, the request is decided as identity "default"
  // and resource "<the path>" (no query).
  void OnV2Request(const HttpRequest& request, const CheckedHeaders& headers, Responder& responder);
  void ForwardV2(const PeerCredentials& peer, ForwardRequest request, Decision decision, Responder& responder,
                 uint64_t start_ns);
  // Why Host/Origin refuse the request (RFC 9112 §3.2, DNS rebinding), or null.
  // The App Service dialects' api-version and secret checks: true with *refused set.
  bool RefusedAppService(const ParsedParams& params, const CheckedHeaders& headers, HttpResponse* refused) const;
  const char* RefusedHost(const HttpRequest& request, const CheckedHeaders& headers,
                          std::string_view authority) const;

  TokenBroker* broker_;
  const Clock* clock_;
  Options options_;
  HostAllowList allowed_hosts_;  // built from options_
  RequestCounters counters_;
  RequestDurations durations_;
  MonotonicNanos monotonic_ns_ = nullptr;  // null: uv_hrtime, called directly
  uint64_t request_start_ns_ = 0;  // the request OnRequest is handling
  AccessGate* gate_ = nullptr;
  AuditSink* audit_sink_ = nullptr;
  ImdsForwarder* forwarder_ = nullptr;
};

}  // namespace mi::proxy
