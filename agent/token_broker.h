#pragma once
// The one interface where the proxy meets the core.

#include <functional>
#include <string>

#include "agent/caller_tag.h"
#include "agent/token.h"

namespace mi {

// A caller's cache-control parameters that are not part of the key (issue #14).
struct RequestOptions {
  // token_sha256_to_refresh, 64 lowercase hex digits (empty: not given): when
  // it is the SHA-256 of the key's cached token, that token is dropped and a
  // fresh one fetched (callers with the same hash share that one fetch).
  std::string refresh_sha256;
  bool bypass_cache = false;  // bypass_cache=true: TokenCache::GetWithOptions
  // The caller's x-ms-client-request-id (printable, at most 128 bytes; empty:
  // none): sent upstream with the fetch this request starts, if it starts one.
  std::string client_request_id;
};

class TokenBroker {
 public:
  using Callback = std::function<void(const TokenResult&)>;
  virtual ~TokenBroker() = default;

  // The hot path: a token valid for the caller, straight from the cache, or null.
  // Counts the hit/miss and marks the key used. The pointer stays valid until
  // control returns to the loop. Loop thread only.
  virtual const Token* Lookup(const TokenKey& key) = 0;

  // Whether the caller still waits for its answer (false once it hung up).
  using StillWaiting = std::function<bool()>;

  // The miss path: `callback` runs exactly once on the loop thread — maybe before
  // Get returns (negative cache, shedding), usually when IMDS answers. Concurrent
  // Gets for one key share one upstream request (the result says `coalesced`
  // to the Gets that joined one already under way). `caller` is who asks
  // (agent/caller_tag.h): each caller has its own share of the waiters and of
  // the IMDS queue, and is shed (kShed) beyond it. `still_waiting` (may be
  // empty: always) lets the broker drop work for callers that left before
  // their deadline; their callback still runs once.
  virtual void Get(const TokenKey& key, CallerTag caller, Callback callback, StillWaiting still_waiting) = 0;
  void Get(const TokenKey& key, CallerTag caller, Callback callback) {
    Get(key, caller, std::move(callback), nullptr);
  }
  // Get with the caller's cache-control options: only for a request that gave
  // some (a plain request uses Lookup/Get and costs what it did). The default
  // ignores them.
  virtual void GetWithOptions(const TokenKey& key, CallerTag caller, const RequestOptions& options,
                              Callback callback, StillWaiting still_waiting) {
    (void)options;
    Get(key, caller, std::move(callback), std::move(still_waiting));
  }
  // For tests and tools: an unknown caller (CallerTag::Unknown()).
  void Get(const TokenKey& key, Callback callback) { Get(key, CallerTag::Unknown(), std::move(callback), nullptr); }
};

// The IMDS v2 paths (/metadata/identity/getplatformmetadata, .../issuecredential;
// issue #14 point 3), passed through uncached: a request as the caller sent it,
// sent to the configured IMDS host (scheme, host and port of imds.endpoint)
// with "Metadata: true".
struct ForwardRequest {
  std::string method;          // "GET" or "POST"
  std::string path_and_query;  // "/metadata/identity/...?..." as received
  std::string body;            // POST only
  std::string content_type;    // the caller's, if any
};

struct ForwardResult {
  enum class Kind {
    kHttp,         // IMDS answered: status, body, server
    kShed,         // the IMDS budget refused it (the caller's share or the queue is full)
    kUnavailable,  // no answer: timeout, connection error (description says which)
    kTooLarge,     // the answer's body was over imds.max_response_bytes
  };
  Kind kind = Kind::kUnavailable;
  int status = 0;
  std::string body;
  std::string server;  // IMDS's Server header, if any
  std::string description;
};

class ImdsForwarder {
 public:
  using Callback = std::function<void(ForwardResult)>;
  virtual ~ImdsForwarder() = default;
  // Through the IMDS budget as a caller job of `caller`. `callback` runs exactly
  // once on the loop thread, maybe before Forward returns (kShed). Loop thread only.
  virtual void Forward(ForwardRequest request, CallerTag caller, Callback callback) = 0;
};

}  // namespace mi
