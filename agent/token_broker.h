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

  // The miss path: `callback` runs exactly once on the loop thread — maybe before
  // Get returns (negative cache, shedding), usually when IMDS answers. Concurrent
  // Gets for one key share one upstream request.
  virtual void Get(const TokenKey& key, Callback callback) = 0;
};

}  // namespace mi
