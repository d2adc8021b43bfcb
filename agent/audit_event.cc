#include "agent/audit_event.h"

namespace mi {

const char* DecisionName(Decision d) {
  switch (d) {
    case Decision::kAllow: return "allow";
    case Decision::kDeny: return "deny";
    case Decision::kWouldDeny: return "would_deny";
  }
  return "allow";
}

const char* CacheOutcomeName(CacheOutcome c) {
  switch (c) {
    case CacheOutcome::kNone: return "none";
    case CacheOutcome::kHit: return "hit";
    case CacheOutcome::kMiss: return "miss";
    case CacheOutcome::kCoalesced: return "coalesced";
  }
  return "none";
}

}  // namespace mi
