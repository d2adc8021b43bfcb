#include "proxy/token_api.h"

#include <uv.h>

#include <memory>
#include <utility>

#include "agent/base/ascii.h"
#include "proxy/error_body.h"

namespace mi::proxy {
namespace {

HttpResponse Error(int status, std::string_view error, std::string_view description) {
  HttpResponse r;
  r.status = status;
  r.body = ErrorBody(error, description);
  return r;
}

bool IsFormContentType(const std::string* value) {
  if (value == nullptr) return false;
  // "application/x-www-form-urlencoded" optionally followed by "; charset=...".
  constexpr std::string_view kForm = "application/x-www-form-urlencoded";
  if (!StartsWithIgnoreCase(*value, kForm)) return false;
  std::string_view rest = std::string_view(*value).substr(kForm.size());
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  return rest.empty() || rest.front() == ';';
}

// Equal in time that depends only on the secret's length, not on where the
// caller's guess first differs.
bool SecretMatches(std::string_view given, std::string_view secret) {
  unsigned diff = given.size() == secret.size() ? 0u : 1u;
  for (size_t i = 0; i < secret.size(); ++i) {
    const char g = i < given.size() ? given[i] : '\0';
    diff |= static_cast<unsigned char>(g ^ secret[i]);
  }
  return diff == 0 && !secret.empty();
}

bool IsRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

}  // namespace

// The headers the API looks at, found in one pass (header names are lower-cased).
struct TokenApi::CheckedHeaders {
  const std::string* host = nullptr;  // the first of each
  const std::string* metadata = nullptr;
  const std::string* content_type = nullptr;
  const std::string* secret = nullptr;           // "Secret" (2017-09-01)
  const std::string* identity_header = nullptr;  // "X-IDENTITY-HEADER" (2019-08-01)
  const std::string* client_request_id = nullptr;  // x-ms-client-request-id
  size_t hosts = 0;
  size_t metadatas = 0;
  size_t secrets = 0;
  size_t identity_headers = 0;
  bool origin = false;
  bool forwarded_for = false;

  explicit CheckedHeaders(const HttpRequest& request) {
    for (const auto& [name, value] : request.headers) {
      switch (name.size()) {  // one comparison per header at most
        case 4:
          if (std::string_view(name) == "host" && hosts++ == 0) host = &value;
          break;
        case 6:
          origin = origin || std::string_view(name) == "origin";
          if (std::string_view(name) == "secret" && secrets++ == 0) secret = &value;
          break;
        case 8:
          if (std::string_view(name) == "metadata" && metadatas++ == 0) metadata = &value;
          break;
        case 12:
          if (std::string_view(name) == "content-type" && content_type == nullptr) content_type = &value;
          break;
        case 15:
          forwarded_for = forwarded_for || std::string_view(name) == "x-forwarded-for";
          break;
        case 17:
          if (std::string_view(name) == "x-identity-header" && identity_headers++ == 0) identity_header = &value;
          break;
        case 22:
          if (std::string_view(name) == "x-ms-client-request-id" && client_request_id == nullptr) {
            client_request_id = &value;
          }
          break;
        default:
          break;
      }
    }
  }
};

TokenApi::TokenApi(TokenBroker* broker, const Clock* clock, Options options)
    : broker_(broker), clock_(clock) {
  set_options(std::move(options));
}

void TokenApi::set_options(Options options) {
  options_ = std::move(options);
  allowed_hosts_ = HostAllowList();
  if (options_.absolute_form) allowed_hosts_.Add("169.254.169.254");
  for (const std::string& host : options_.listen_hosts) {
    const bool bare_ipv6 = host.find(':') != std::string::npos && host.front() != '[';
    allowed_hosts_.Add(bare_ipv6 ? "[" + host + "]" : host);
  }
  for (const std::string& host : options_.allowed_hosts) allowed_hosts_.Add(host);
}

const char* TokenApi::RefusedHost(const HttpRequest& request, const CheckedHeaders& headers,
                                  std::string_view authority) const {
  // No client of this API is a browser; a page that reaches us is an attack.
  if (headers.origin) return "requests with an Origin header are refused";
  if (headers.hosts > 1) return "several Host headers";
  if (headers.hosts == 0 && request.http_minor != 0) return "the Host header is missing";
  // An absolute-form target's authority stands in for Host (RFC 9112 §3.2.2).
  if (!authority.empty()) {
    return allowed_hosts_.Allows(authority) ? nullptr : "the request target names a host this agent does not serve";
  }
  if (headers.host != nullptr && !allowed_hosts_.Allows(*headers.host)) {
    return "the Host header names a host this agent does not serve";
  }
  return nullptr;
}

uint64_t TokenApi::NowNanos() const { return monotonic_ns_ != nullptr ? monotonic_ns_() : uv_hrtime(); }

void TokenApi::Reply(Route route, CacheOutcome cache, uint64_t start_ns, Responder& responder,
                     HttpResponse&& response) {
  counters_.Count(route, response.status);
  const uint64_t now = NowNanos();
  durations_.Observe(route, cache, now > start_ns ? static_cast<double>(now - start_ns) / 1e9 : 0.0);
  responder.Send(std::move(response));
}

HttpResponse TokenApi::MapResult(const TokenResult& result, TimePoint now) {
  switch (result.kind) {
    case TokenResult::Kind::kToken:
      return RenderToken(*result.token, now);
    case TokenResult::Kind::kRejected: {
      // IMDS's own answer, status and body, passed through (the agent already
      // made the body a JSON error object: ImdsErrorBody).
      HttpResponse r;
      r.status = result.status;
      r.body = result.body;
      return r;
    }
    case TokenResult::Kind::kShed: {
      HttpResponse r = Error(429, "too_many_requests", "mi-agent is shedding load; retry later");
      r.headers.emplace_back("Retry-After", std::to_string(std::max(1, result.retry_after_seconds)));
      return r;
    }
    case TokenResult::Kind::kUnavailable:
      break;
  }
  return Error(500, "unknown", result.description.empty() ? "no token available" : result.description);
}

HttpResponse TokenApi::RenderAppService(const Token& token) {
  HttpResponse r;
  const std::string_view access = token.quoted_access_token();
  const std::string& fields = token.app_service_fields();
  r.body.reserve(access.size() + fields.size() + 48);
  r.body += "{\"access_token\":";
  r.body += access;
  r.body += ",\"expires_on\":\"";
  r.body += std::to_string(token.expires_on());
  r.body += '"';
  r.body += fields;
  r.body += '}';
  return r;
}

HttpResponse TokenApi::RenderToken(const Token& token, TimePoint now) {
  HttpResponse r;
  r.body.reserve(token.body_size_hint());
  token.AppendBody(now, &r.body);
  return r;
}

void TokenApi::OnRequest(const HttpRequest& request, Responder responder) {
  request_start_ns_ = NowNanos();
  const uint64_t start = request_start_ns_;  // for the answers given later
  std::string_view query;
  std::string_view authority;
  Route route = ClassifyTarget(request.target, options_.absolute_form, &query, &authority);

  if (!request.peer_is_loopback && !options_.allow_remote) {
    return Reply(route, responder, Error(401, "unauthorized_client", "only local callers are served"));
  }
  const CheckedHeaders headers(request);
  if (const char* why = RefusedHost(request, headers, authority)) {
    return Reply(route, responder, Error(400, "invalid_request", why));
  }
  if (headers.forwarded_for) {
    return Reply(route, responder,
                 Error(400, "invalid_request", "requests with X-Forwarded-For are refused"));
  }
  if (route == Route::kImdsV2) return OnV2Request(request, headers, responder);
  if (route == Route::kAppService) {
    if (options_.app_service_secret.empty()) {
      route = Route::kUnknown;
    } else if (headers.secrets == 0 && headers.identity_headers == 0 && headers.metadatas > 0) {
      // No secret but Metadata: a VM-extension client given MSI_ENDPOINT
      // (msrestazure off App Service, Cloud Shell's convention): the legacy API.
      route = Route::kLegacy;
    }
  }
  if (route == Route::kUnknown) {
    return Reply(route, responder, Error(401, "unknown_source", "Unknown Source " + request.target));
  }
  const std::string_view method = request.method;  // string_view: compared inline
  const bool post = method == "POST";
  if (method != "GET" && !(post && route == Route::kLegacy)) {
    HttpResponse r = Error(405, "invalid_request", "method " + request.method + " is not allowed");
    r.headers.emplace_back("Allow", route == Route::kLegacy ? "GET, POST" : "GET");
    return Reply(route, responder, std::move(r));
  }
  const bool app_service = route == Route::kAppService;  // its secret stands for Metadata: true
  if (!app_service && (headers.metadatas != 1 || std::string_view(*headers.metadata) != "true")) {
    return Reply(route, responder,
                 Error(400, "bad_request_102", "Required metadata header not specified"));
  }
  std::string_view form;
  if (post && !request.body.empty()) {
    if (!IsFormContentType(headers.content_type)) {
      return Reply(route, responder,
                   Error(400, "invalid_request", "the body must be application/x-www-form-urlencoded"));
    }
    form = request.body;
  }
  StatusOr<ParsedParams> parsed = ParseTokenParams(query, form, app_service);
  if (!parsed.ok()) return Reply(route, responder, Error(400, "invalid_request", parsed.status().message()));
  const ParsedParams& params = *parsed;
  if ((route == Route::kImds || app_service) && !params.has_api_version) {
    return Reply(route, responder, Error(400, "invalid_request", "Required query variable 'api-version' is missing"));
  }
  if (app_service) {
    if (HttpResponse refused; RefusedAppService(params, headers, &refused)) {
      return Reply(route, responder, std::move(refused));
    }
  }

  const char* listener = request.transport == HttpRequest::Transport::kUnix ? "unix" : "tcp";
  const RequestOptions* options = params.has_options ? &params.options : nullptr;
  // A caller's x-ms-client-request-id goes upstream with the fetch it starts:
  // only a printable one of at most 128 bytes (else it is ignored).
  RequestOptions with_request_id;
  if (headers.client_request_id != nullptr && IsRequestId(*headers.client_request_id)) {
    with_request_id = params.options;
    with_request_id.client_request_id = *headers.client_request_id;
    options = &with_request_id;
  }
  if (gate_ == nullptr) {
    if (!auditing()) {
      return Serve(route, listener, request.caller, params.key, Decision::kAllow, nullptr, responder, options, start);
    }
    CallerInfo caller;  // audit_all under mode "off": the peer as the listener saw it
    caller.peer = request.caller;
    return Serve(route, listener, request.caller, params.key, Decision::kAllow, &caller, responder, options, start);
  }
  // Authorization before the cache: a hit is checked like a miss.
  Decision decision = Decision::kAllow;
  const CallerInfo* caller = nullptr;
  if (gate_->Decide(request.caller, params.key, &decision, &caller)) {
    return Serve(route, listener, request.caller, params.key, decision, auditing() ? caller : nullptr, responder,
                 options, start);
  }
  auto pending = std::make_shared<Responder>(std::move(responder));
  std::shared_ptr<const RequestOptions> kept = options ? std::make_shared<RequestOptions>(*options) : nullptr;
  auto decided = [this, route, listener, peer = request.caller, key = params.key, pending, kept, start](
                     Decision d, const CallerInfo& resolved) {
    // It hung up while it was looked up: nothing to answer.
    if (!pending->connected()) return pending->Abort();
    Serve(route, listener, peer, key, d, auditing() ? &resolved : nullptr, *pending, kept.get(), start);
  };
  gate_->Await(request.caller, params.key, std::move(decided));
}

bool TokenApi::RefusedAppService(const ParsedParams& params, const CheckedHeaders& headers,
                                 HttpResponse* refused) const {
  const bool v2019 = params.api_version == "2019-08-01";
  if (!v2019 && params.api_version != "2017-09-01") {
    *refused = Error(400, "invalid_request", "api-version must be 2019-08-01 or 2017-09-01 on this path");
    return true;
  }
  const std::string* given = v2019 ? headers.identity_header : headers.secret;
  const size_t count = v2019 ? headers.identity_headers : headers.secrets;
  if (count != 1 || !SecretMatches(*given, options_.app_service_secret)) {
    *refused = Error(401, "unauthorized_client",
                     v2019 ? "the X-IDENTITY-HEADER header is missing or wrong" : "the Secret header is missing or wrong");
    return true;
  }
  return false;
}

void TokenApi::Serve(Route route, const char* listener, const PeerCredentials& peer, const TokenKey& key,
                     Decision decision, const CallerInfo* audited, Responder& responder,
                     const RequestOptions* options, uint64_t start_ns) {
  if (decision == Decision::kDeny) {
    if (audited != nullptr) Record(route, listener, *audited, key, decision, CacheOutcome::kNone, 401, nullptr);
    return Reply(route, CacheOutcome::kNone, start_ns, responder,
                 Error(401, "unauthorized_client",
                       "this caller may not get a token for identity " + key.Describe() + " and resource " +
                           key.resource));
  }
  // The hot path: a cached token, answered without touching IMDS. A request
  // with refresh-by-hash or bypass goes to the broker (it may not serve the
  // cache); a request id alone matters only to a fetch (SDKs send one always).
  const bool may_skip_cache = options != nullptr && (options->bypass_cache || !options->refresh_sha256.empty());
  if (const Token* token = may_skip_cache ? nullptr : broker_->Lookup(key)) {
    if (audited != nullptr) Record(route, listener, *audited, key, decision, CacheOutcome::kHit, 200, token);
    return Reply(route, CacheOutcome::kHit, start_ns, responder, Render(route, *token, clock_->Now()));
  }
  // What the audit record needs once the broker answers (the request is gone by then).
  struct Audited {
    CallerInfo caller;
    TokenKey key;
    Decision decision;
  };
  std::shared_ptr<Audited> audit =
      audited != nullptr ? std::make_shared<Audited>(Audited{*audited, key, decision}) : nullptr;
  auto pending = std::make_shared<Responder>(std::move(responder));
  auto answer = [this, route, listener, pending, audit, start_ns](const TokenResult& result) {
    HttpResponse response = result.kind == TokenResult::Kind::kToken
                                ? Render(route, *result.token, clock_->Now())
                                : MapResult(result, clock_->Now());
    const CacheOutcome cache = result.coalesced ? CacheOutcome::kCoalesced : CacheOutcome::kMiss;
    if (audit != nullptr) {
      Record(route, listener, audit->caller, audit->key, audit->decision, cache, response.status,
             result.kind == TokenResult::Kind::kToken ? result.token.get() : nullptr);
    }
    Reply(route, cache, start_ns, *pending, std::move(response));
  };
  auto still_waiting = [pending] { return pending->connected(); };
  if (options != nullptr) {
    broker_->GetWithOptions(key, CallerTag::Of(peer), *options, std::move(answer), std::move(still_waiting));
  } else {
    broker_->Get(key, CallerTag::Of(peer), std::move(answer), std::move(still_waiting));
  }
}

void TokenApi::OnV2Request(const HttpRequest& request, const CheckedHeaders& headers, Responder& responder) {
  constexpr Route kRoute = Route::kImdsV2;
  if (forwarder_ == nullptr || !options_.v2_passthrough) {
    return Reply(kRoute, responder, Error(404, "not_found", "the IMDS v2 paths are not served by this agent"));
  }
  const std::string_view method = request.method;
  if (method != "GET" && method != "POST") {
    HttpResponse r = Error(405, "invalid_request", "method " + request.method + " is not allowed");
    r.headers.emplace_back("Allow", "GET, POST");
    return Reply(kRoute, responder, std::move(r));
  }
  if (headers.metadatas != 1 || std::string_view(*headers.metadata) != "true") {
    return Reply(kRoute, responder, Error(400, "bad_request_102", "Required metadata header not specified"));
  }
  // The origin-form path and query, whatever form the target came in.
  std::string_view target = request.target;
  if (target.substr(0, 7) == "http://") {
    const size_t path = target.find_first_of("/?#", 7);
    target = path == std::string_view::npos ? std::string_view("/") : target.substr(path);
  }
  ForwardRequest forward;
  forward.method = request.method;
  forward.path_and_query.assign(target.data(), target.size());
  if (method == "POST") {
    forward.body = request.body;  // bounded by the server's limits.max_body_bytes
    if (headers.content_type != nullptr) forward.content_type = *headers.content_type;
  }
  const uint64_t start = request_start_ns_;
  if (gate_ == nullptr) return ForwardV2(request.caller, std::move(forward), Decision::kAllow, responder, start);
  // Authorization: identity "default", resource "<the path>" (lower case).
  TokenKey key;
  key.resource = ToLower(target.substr(0, target.find('?')));
  Decision decision = Decision::kAllow;
  const CallerInfo* caller = nullptr;
  if (gate_->Decide(request.caller, key, &decision, &caller)) {
    return ForwardV2(request.caller, std::move(forward), decision, responder, start);
  }
  auto pending = std::make_shared<Responder>(std::move(responder));
  auto job = std::make_shared<ForwardRequest>(std::move(forward));
  gate_->Await(request.caller, key, [this, peer = request.caller, job, pending, start](Decision d, const CallerInfo&) {
    if (!pending->connected()) return pending->Abort();
    ForwardV2(peer, std::move(*job), d, *pending, start);
  });
}

void TokenApi::ForwardV2(const PeerCredentials& peer, ForwardRequest request, Decision decision,
                         Responder& responder, uint64_t start_ns) {
  constexpr Route kRoute = Route::kImdsV2;
  if (decision == Decision::kDeny) {
    const std::string path = request.path_and_query.substr(0, request.path_and_query.find('?'));
    return Reply(kRoute, CacheOutcome::kNone, start_ns, responder,
                 Error(401, "unauthorized_client", "this caller may not use " + path));
  }
  auto pending = std::make_shared<Responder>(std::move(responder));
  forwarder_->Forward(std::move(request), CallerTag::Of(peer), [this, pending, start_ns](ForwardResult result) {
    HttpResponse r;
    switch (result.kind) {
      case ForwardResult::Kind::kHttp:
        r.status = result.status;
        r.body = std::move(result.body);
        if (!result.server.empty()) r.headers.emplace_back("Server", std::move(result.server));
        break;
      case ForwardResult::Kind::kShed:
        r = Error(429, "too_many_requests", "mi-agent is shedding load; retry later");
        r.headers.emplace_back("Retry-After", "1");
        break;
      case ForwardResult::Kind::kTooLarge:
        r = Error(502, "bad_gateway", "IMDS answered with a body over imds.max_response_bytes");
        break;
      case ForwardResult::Kind::kUnavailable:
        r = Error(502, "bad_gateway", "IMDS did not answer: " + result.description);
        break;
    }
    Reply(kRoute, CacheOutcome::kNone, start_ns, *pending, std::move(r));
  });
}

void TokenApi::Record(Route route, const char* listener, const CallerInfo& caller, const TokenKey& key,
                      Decision decision, CacheOutcome cache, int status, const Token* token) {
  if (audit_sink_ == nullptr) return;  // reset while a fetch was under way
  AuditEvent event;  // time left zero: the trail's clock, read only if it writes a record
  event.caller = &caller;
  event.listener = listener;
  event.dialect = RouteName(route);
  event.key = &key;
  event.decision = decision;
  event.cache = cache;
  event.status = status;
  event.token = token;
  audit_sink_->Record(event);
}

void TokenApi::WriteMetrics(MetricsWriter& w) const {
  w.Family("mi_agent_requests_total", "counter", "Token requests answered, by route and HTTP status code.");
  for (int route = 0; route < kRouteCount; ++route) {
    for (int code = 100; code < 600; ++code) {
      const uint64_t n = counters_.Get(static_cast<Route>(route), code);
      if (n == 0) continue;
      w.Sample("mi_agent_requests_total",
               {{"route", RouteName(static_cast<Route>(route))}, {"code", std::to_string(code)}},
               static_cast<double>(n));
    }
  }
  constexpr const char* kDuration = "mi_agent_request_duration_seconds";
  w.Family(kDuration, "histogram",
           "Time from a token request's arrival to its answer, by route and cache outcome (hit, miss, coalesced, "
           "none: answered without the cache).");
  for (int route = 0; route < kRouteCount; ++route) {
    for (int cache = 0; cache < RequestDurations::kCacheOutcomes; ++cache) {
      const Histogram& h = durations_.Get(static_cast<Route>(route), static_cast<CacheOutcome>(cache));
      if (h.count() == 0) continue;
      h.Write(w, kDuration,
              {{"route", RouteName(static_cast<Route>(route))},
               {"cache", CacheOutcomeName(static_cast<CacheOutcome>(cache))}});
    }
  }
}

}  // namespace mi::proxy
