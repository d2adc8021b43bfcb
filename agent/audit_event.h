#pragma once
// One authorization decision as the audit trail sees it (issue #13). Built by
// the token API for every token request it decides on; the AuditTrail
// (agent/audit_trail.h) summarizes repeats and writes records. Views only:
// valid for the duration of Record(). Never holds a token: the trail takes
// expires_on and the fingerprint from `token`.

#include <cstdint>
#include <string_view>

#include "agent/base/clock.h"
#include "agent/caller.h"
#include "agent/token.h"
#include "agent/token_key.h"

namespace mi {

enum class Decision : uint8_t { kAllow, kDeny, kWouldDeny };
const char* DecisionName(Decision d);  // "allow", "deny", "would_deny"

enum class CacheOutcome : uint8_t { kNone, kHit, kMiss, kCoalesced };  // kNone: never reached the cache (denied)
const char* CacheOutcomeName(CacheOutcome c);  // "none", "hit", "miss", "coalesced"

struct AuditEvent {
  TimePoint time{};  // epoch (zero): now, by the trail's clock (Record runs at the decision)
  const CallerInfo* caller = nullptr;  // never null
  std::string_view listener;           // "tcp" or "unix"
  std::string_view dialect;            // the route: "legacy", "imds", "app_service" (RouteName)
  const TokenKey* key = nullptr;       // never null
  Decision decision = Decision::kAllow;
  CacheOutcome cache = CacheOutcome::kNone;
  int status = 0;                      // the HTTP status answered
  const Token* token = nullptr;        // set when a token was served
};

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  virtual void Record(const AuditEvent& event) = 0;  // loop thread only
};

}  // namespace mi
