#pragma once
// The upstream (IMDS) as the core sees it. CurlUpstreamClient is the real one;
// tests use a FakeUpstream.

#include <functional>
#include <string>

#include "agent/base/secure_memory.h"
#include "agent/token.h"
#include "agent/token_broker.h"  // ForwardRequest

namespace mi {

struct UpstreamResponse {
  enum class Outcome {
    kHttp,          // an HTTP answer: see status/body
    kTimeout,       // connect or total timeout
    kConnectError,  // refused, reset, DNS, ...
    kTooLarge,      // body over the configured cap
    kRefused,       // the agent refused the upstream's answer (Arc: a challenge that failed a check); not retried
  };
  UpstreamResponse() = default;
  UpstreamResponse(const UpstreamResponse&) = default;
  UpstreamResponse(UpstreamResponse&&) noexcept = default;
  UpstreamResponse& operator=(const UpstreamResponse&) = default;
  UpstreamResponse& operator=(UpstreamResponse&&) noexcept = default;
  // A 200 body holds a token: wiped, not just freed, whoever drops it last.
  ~UpstreamResponse() { WipeString(&body); }

  Outcome outcome = Outcome::kConnectError;
  int status = 0;
  std::string body;
  std::string retry_after;  // raw Retry-After header value, if any
  std::string server;       // raw Server header value, if any (Forward answers)
  std::string error;        // transport error text (no secrets)
  // A transport error's reason in a few words, from the OS where it has one
  // ("connection refused", "timed out after 2000 ms"): /status and logs.
  std::string description;
};

class UpstreamClient {
 public:
  using Callback = std::function<void(UpstreamResponse)>;
  virtual ~UpstreamClient() = default;
  // Starts one token request for `key`. `callback` runs exactly once on the loop
  // thread, never inside Fetch, and never after the client is destroyed.
  virtual void Fetch(const TokenKey& key, Callback callback) = 0;
  // Starts one pass-through request, with Fetch's guarantees; the answer's
  // body is capped like a token's (kTooLarge beyond).
  virtual void Forward(const ForwardRequest& request, Callback callback) = 0;

  // What a fetch carries besides its key: the caller's x-ms-client-request-id
  // (printable, bounded: TokenApi checks it) of the caller that triggered it.
  struct FetchOptions {
    std::string client_request_id;
    bool bypass_cache = false;  // forwarded as bypass_cache=true
  };
  // Fetch with options; the default ignores them.
  virtual void FetchWith(const TokenKey& key, const FetchOptions& options, Callback callback) {
    (void)options;
    Fetch(key, std::move(callback));
  }
};

}  // namespace mi
