#pragma once
// The authorization decision as the token API sees it (issue #13): may this
// caller have this identity's token for this resource? The implementation
// (PolicyGate, agent/policy_gate.h) holds the policy and resolves callers; the
// proxy knows only this interface. Loop thread only.
//
// The token API asks after the request's parameters are valid and before the
// cache (a hit is checked like a miss). It holds no gate at all under mode
// "off" (TokenApi::set_access_gate(nullptr)): nothing is consulted then.

#include <functional>

#include "agent/audit_event.h"
#include "agent/base/peer_credentials.h"
#include "agent/caller.h"
#include "agent/token_key.h"

namespace mi {

class AccessGate {
 public:
  virtual ~AccessGate() = default;

  // The hot path: decides now when the facts the policy needs are at hand (a
  // uid-only policy, or a caller already resolved and cached). Then returns
  // true with *decision (kAllow, kDeny under "enforce", kWouldDeny under
  // "audit") and *caller, which stays valid until control returns to the loop.
  // Allocates nothing. False: the caller must be looked up first; call Await.
  virtual bool Decide(const PeerCredentials& peer, const TokenKey& key, Decision* decision,
                      const CallerInfo** caller) = 0;

  // The slow path: looks the caller up off the loop, then decides with the
  // policy in force at that moment. `done` runs exactly once on the loop
  // thread (maybe before Await returns); `caller` is valid during the call.
  using Callback = std::function<void(Decision decision, const CallerInfo& caller)>;
  virtual void Await(const PeerCredentials& peer, const TokenKey& key, Callback done) = 0;
};

}  // namespace mi
