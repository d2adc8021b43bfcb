#pragma once
// The authorization policy (issue #13): which local callers may get which
// identity's token for which resource. Config "authorization" (parsed and
// checked by ParseConfig, agent/app/config.cc), compiled once per load into an
// AuthorizationPolicy that is cheap to evaluate: no allocation, a few
// comparisons per rule. Portable (the same code runs on Windows).
//
// A request is allowed when SOME rule matches its caller (any one matcher of
// "callers", or "*": everyone, even a caller that could not be resolved), its
// identity ("*", "default", or a client_id / object_id / mi_res_id, which is
// also msi_res_id; ids compare case-insensitively) and its resource ("*" or
// exactly, as the cache key holds it: MakeTokenKey). uid 0 has no implicit
// rights. No rule: denied.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/base/clock.h"
#include "agent/caller.h"
#include "agent/token_key.h"

namespace mi {

enum class AuthorizationMode : uint8_t {
  kOff,      // nothing is checked (today's behaviour, which equals IMDS's)
  kAudit,    // decide, log would-be denials, answer as kOff
  kEnforce,  // denied requests get 401 unauthorized_client
};
const char* AuthorizationModeName(AuthorizationMode mode);  // "off", "audit", "enforce"

// One rule as configured ("authorization.rules[i]"), already checked.
struct AuthorizationRule {
  std::string name;  // for logs and audit only; never in an answer

  // "callers": any_caller for "*"; else any one matcher below. POSIX: users
  // and groups are names (groups: primary or supplementary), compared exactly.
  // Windows: "DOMAIN\\name" or a SID ("S-1-5-..."), compared case-insensitively
  // with the account's names and SIDs; exe paths case-insensitively there too.
  // process_names: Linux comm (at most 15 bytes), Windows the image file name.
  bool any_caller = false;
  std::vector<uint32_t> uids;  // POSIX only (never matches on Windows)
  std::vector<std::string> users;
  std::vector<std::string> groups;
  std::vector<std::string> exe;
  std::vector<std::string> process_names;

  struct Identity {
    SelectorKind kind = SelectorKind::kDefault;  // kDefault: "default"
    std::string id;                              // lower-cased (TokenKey::id); empty for kDefault
  };
  bool any_identity = false;  // "*"
  std::vector<Identity> identities;

  bool any_resource = false;  // "*"
  std::vector<std::string> resources;
};

// Config "authorization".
struct AuthorizationOptions {
  AuthorizationMode mode = AuthorizationMode::kOff;  // "mode": "off" | "audit" | "enforce"
  std::vector<AuthorizationRule> rules;              // "rules"
  // "cache_seconds": how long a caller's account (names, groups: by uid) and
  // process (by connection) are remembered. Default 60 s: group changes apply
  // to running processes only at their next login anyway.
  Duration cache_ttl = Duration(60000);
};

// The caller facts besides the uid a policy looks at. Nothing else is looked up.
struct CallerNeeds {
  bool account = false;  // users, groups
  bool process = false;  // exe, process_names
  bool any() const { return account || process; }
};

// Immutable once built; shared (shared_ptr<const>) by the gate and lookups in flight.
class AuthorizationPolicy {
 public:
  explicit AuthorizationPolicy(const AuthorizationOptions& options);
  ~AuthorizationPolicy();
  AuthorizationPolicy(const AuthorizationPolicy&) = delete;
  AuthorizationPolicy& operator=(const AuthorizationPolicy&) = delete;

  AuthorizationMode mode() const { return mode_; }
  // What some rule looks at.
  CallerNeeds needs() const { return needs_; }

  struct Verdict {
    bool allowed = false;
    // When not allowed: facts not yet looked up that could still allow it
    // (look them up, then evaluate again). Empty: a final denial.
    CallerNeeds missing;
  };
  // `known`: the facts already looked up (found or not: caller.account_known
  // and process_known tell). A caller with peer.known false matches only
  // "callers": "*". Allocates nothing.
  Verdict Evaluate(const CallerInfo& caller, CallerNeeds known, const TokenKey& key) const;

 private:
  struct Rule;
  // Whether rule `index` allows `key` for a caller it already matched.
  bool Grants(const Rule& rule, const TokenKey& key) const;

  AuthorizationMode mode_;
  CallerNeeds needs_;
  std::vector<Rule> rules_;
  // Every (uid, rule index) of the uids matchers, sorted: a uid rule costs one
  // binary search over all of them, however many rules there are (POSIX).
  std::vector<std::pair<uint32_t, uint32_t>> by_uid_;
  // The rules that match callers by anything else ("*", names, groups,
  // process): looked at one by one.
  std::vector<uint32_t> others_;
};

}  // namespace mi
