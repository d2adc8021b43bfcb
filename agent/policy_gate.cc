#include "agent/policy_gate.h"

#include <utility>

namespace mi {
namespace {

constexpr Duration kLogEvery = Duration(10000);
constexpr CallerNeeds kNothingLookedUp{};

}  // namespace

PolicyGate::PolicyGate(CallerResolver& resolver, const Clock& clock, Logger& logger)
    : resolver_(resolver),
      clock_(clock),
      logger_(logger),
      policy_(std::make_shared<AuthorizationPolicy>(AuthorizationOptions{})) {}

bool PolicyGate::Decide(const PeerCredentials& peer, const TokenKey& key, Decision* decision,
                        const CallerInfo** caller) {
  peer_only_.peer = peer;
  // First with the uid alone: most policies, and every allowed uid rule, end here.
  const AuthorizationPolicy::Verdict first = policy_->Evaluate(peer_only_, kNothingLookedUp, key);
  if (first.allowed || !first.missing.any() || !peer.known) {
    *caller = &peer_only_;
    *decision = Apply(first.allowed, peer_only_, key);
    return true;
  }
  const CallerInfo* resolved = resolver_.Find(peer, first.missing);
  if (resolved == nullptr) return false;
  *caller = resolved;
  *decision = Apply(policy_->Evaluate(*resolved, first.missing, key).allowed, *resolved, key);
  return true;
}

void PolicyGate::Await(const PeerCredentials& peer, const TokenKey& key, Callback done) {
  peer_only_.peer = peer;
  const CallerNeeds missing = policy_->Evaluate(peer_only_, kNothingLookedUp, key).missing;
  resolver_.Resolve(peer, missing,
                    [this, key, done = std::move(done)](const CallerInfo& caller, CallerNeeds looked_up) {
                      // A fact a reloaded policy needs but nobody looked up counts as not matching.
                      const bool allowed = policy_->Evaluate(caller, looked_up, key).allowed;
                      done(Apply(allowed, caller, key), caller);
                    });
}

Decision PolicyGate::Apply(bool allowed, const CallerInfo& caller, const TokenKey& key) {
  if (allowed) return Decision::kAllow;
  const AuthorizationMode mode = policy_->mode();
  if (mode == AuthorizationMode::kOff) return Decision::kAllow;
  const Decision decision = mode == AuthorizationMode::kEnforce ? Decision::kDeny : Decision::kWouldDeny;
  const TimePoint now = clock_.Now();
  if (last_logged_ != TimePoint{} && now >= last_logged_ && now - last_logged_ < kLogEvery) {
    ++not_logged_;
    return decision;
  }
  auto line = [&] {
    std::string text = decision == Decision::kDeny ? "authorization: denied " : "authorization (audit): would deny ";
    if (!caller.peer.known) {
      text += "an unresolved caller";
    } else {
      text += "uid " + std::to_string(caller.peer.uid);
      if (caller.account_known && !caller.user.empty()) text += " (" + caller.user + ")";
      if (caller.process_known) text += " pid " + std::to_string(caller.pid) + " " + caller.exe;
    }
    text += " identity " + key.Describe() + " resource " + key.resource;
    if (not_logged_ > 0) text += " (and " + std::to_string(not_logged_) + " more since the last such line)";
    return text;
  };
  MI_LOG(logger_, kWarning) << line();
  last_logged_ = now;
  not_logged_ = 0;
  return decision;
}

}  // namespace mi
