#pragma once
// The AccessGate of the daemon (issue #13): the compiled authorization policy
// plus the caller resolver. A decision needs only the facts some rule looks at:
// with uid-only rules, or a caller already resolved, it is made at once
// (Decide: no allocation, no thread hop); otherwise the resolver looks the
// caller up off the loop first (Await). Loop thread only.
//
// Denials (enforce) and would-be denials (audit) are logged as warnings, at
// most one line per 10 s with the count of those not logged in between; the
// audit trail has every one.

#include <memory>

#include "agent/access_gate.h"
#include "agent/authorization.h"
#include "agent/base/log.h"
#include "agent/caller_resolver.h"

namespace mi {

class PolicyGate : public AccessGate {
 public:
  PolicyGate(CallerResolver& resolver, const Clock& clock, Logger& logger);

  // The policy for decisions from now on (reload); lookups in flight are
  // decided by the policy in force when they finish. Requests already decided
  // stay decided. REQUIRES: not null.
  void set_policy(std::shared_ptr<const AuthorizationPolicy> policy) { policy_ = std::move(policy); }
  const AuthorizationPolicy& policy() const { return *policy_; }

  bool Decide(const PeerCredentials& peer, const TokenKey& key, Decision* decision,
              const CallerInfo** caller) override;
  void Await(const PeerCredentials& peer, const TokenKey& key, Callback done) override;

 private:
  // The mode applied to a verdict, and the denial logged.
  Decision Apply(bool allowed, const CallerInfo& caller, const TokenKey& key);

  CallerResolver& resolver_;
  const Clock& clock_;
  Logger& logger_;
  std::shared_ptr<const AuthorizationPolicy> policy_;
  CallerInfo peer_only_;  // the caller as the listener saw it (only .peer is ever set)
  TimePoint last_logged_{};
  uint64_t not_logged_ = 0;
};

}  // namespace mi
