// TEMPORARY (h-audit): DecisionName and CacheOutcomeName until h-authz's
// agent/audit_event.cc is merged; weak, so its definitions win. Delete this
// file (and its line in agent/CMakeLists.txt) once h-authz is in.
#include "agent/audit_event.h"

namespace mi {

__attribute__((weak)) const char* DecisionName(Decision d) {
  switch (d) {
    case Decision::kAllow: return "allow";
    case Decision::kDeny: return "deny";
    case Decision::kWouldDeny: return "would_deny";
  }
  return "allow";
}

__attribute__((weak)) const char* CacheOutcomeName(CacheOutcome c) {
  switch (c) {
    case CacheOutcome::kNone: return "none";
    case CacheOutcome::kHit: return "hit";
    case CacheOutcome::kMiss: return "miss";
    case CacheOutcome::kCoalesced: return "coalesced";
  }
  return "none";
}

}  // namespace mi
