#pragma once
// The one interface where the proxy meets the core.

#include <functional>

#include "agent/token.h"

namespace mi {

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
  // Gets for one key share one upstream request. `still_waiting` (may be empty:
  // always) lets the broker drop work for callers that left before their
  // deadline; their callback still runs once.
  virtual void Get(const TokenKey& key, Callback callback, StillWaiting still_waiting) = 0;
  void Get(const TokenKey& key, Callback callback) { Get(key, std::move(callback), nullptr); }
};

}  // namespace mi
