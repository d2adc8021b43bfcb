#include "proxy/token_api.h"

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
  const std::string* client_request_id = nullptr;  // x-ms-client-request-id
  size_t hosts = 0;
  size_t metadatas = 0;
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

void TokenApi::Reply(Route route, Responder& responder, HttpResponse&& response) {
  counters_.Count(route, response.status);
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

HttpResponse TokenApi::RenderToken(const Token& token, TimePoint now) {
  HttpResponse r;
  r.body.reserve(token.body_size_hint());
  token.AppendBody(now, &r.body);
  return r;
}

void TokenApi::OnRequest(const HttpRequest& request, Responder responder) {
  std::string_view query;
  std::string_view authority;
  const Route route = ClassifyTarget(request.target, options_.absolute_form, &query, &authority);

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
  if (headers.metadatas != 1 || std::string_view(*headers.metadata) != "true") {
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
  StatusOr<ParsedParams> parsed = ParseTokenParams(query, form);
  if (!parsed.ok()) return Reply(route, responder, Error(400, "invalid_request", parsed.status().message()));
  const ParsedParams& params = *parsed;
  if (route == Route::kImds && !params.has_api_version) {
    return Reply(route, responder, Error(400, "invalid_request", "Required query variable 'api-version' is missing"));
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
      return Serve(route, listener, request.caller, params.key, Decision::kAllow, nullptr, responder, options);
    }
    CallerInfo caller;  // audit_all under mode "off": the peer as the listener saw it
    caller.peer = request.caller;
    return Serve(route, listener, request.caller, params.key, Decision::kAllow, &caller, responder, options);
  }
  // Authorization before the cache: a hit is checked like a miss.
  Decision decision = Decision::kAllow;
  const CallerInfo* caller = nullptr;
  if (gate_->Decide(request.caller, params.key, &decision, &caller)) {
    return Serve(route, listener, request.caller, params.key, decision, auditing() ? caller : nullptr, responder,
                 options);
  }
  auto pending = std::make_shared<Responder>(std::move(responder));
  std::shared_ptr<const RequestOptions> kept = options ? std::make_shared<RequestOptions>(*options) : nullptr;
  auto decided = [this, route, listener, peer = request.caller, key = params.key, pending, kept](
                     Decision d, const CallerInfo& resolved) {
    // It hung up while it was looked up: nothing to answer.
    if (!pending->connected()) return pending->Abort();
    Serve(route, listener, peer, key, d, auditing() ? &resolved : nullptr, *pending, kept.get());
  };
  gate_->Await(request.caller, params.key, std::move(decided));
}

void TokenApi::Serve(Route route, const char* listener, const PeerCredentials& peer, const TokenKey& key,
                     Decision decision, const CallerInfo* audited, Responder& responder,
                     const RequestOptions* options) {
  if (decision == Decision::kDeny) {
    if (audited != nullptr) Record(route, listener, *audited, key, decision, CacheOutcome::kNone, 401, nullptr);
    return Reply(route, responder,
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
    return Reply(route, responder, RenderToken(*token, clock_->Now()));
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
  auto answer = [this, route, listener, pending, audit](const TokenResult& result) {
    HttpResponse response = MapResult(result, clock_->Now());
    if (audit != nullptr) {
      Record(route, listener, audit->caller, audit->key, audit->decision,
             result.coalesced ? CacheOutcome::kCoalesced : CacheOutcome::kMiss, response.status,
             result.kind == TokenResult::Kind::kToken ? result.token.get() : nullptr);
    }
    Reply(route, *pending, std::move(response));
  };
  auto still_waiting = [pending] { return pending->connected(); };
  if (options != nullptr) {
    broker_->GetWithOptions(key, CallerTag::Of(peer), *options, std::move(answer), std::move(still_waiting));
  } else {
    broker_->Get(key, CallerTag::Of(peer), std::move(answer), std::move(still_waiting));
  }
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
}

}  // namespace mi::proxy
