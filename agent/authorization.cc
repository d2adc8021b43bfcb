#include "agent/authorization.h"

#include <algorithm>

#include "agent/base/ascii.h"

namespace mi {
namespace {

// Account names, SIDs and paths: case-insensitive on Windows, exact elsewhere.
bool SameName(std::string_view a, std::string_view b) {
#ifdef _WIN32
  return EqualsIgnoreCase(a, b);
#else
  return a == b;
#endif
}

bool AnyOf(const std::vector<std::string>& wanted, std::string_view have) {
  if (have.empty()) return false;
  for (const std::string& w : wanted) {
    if (SameName(w, have)) return true;
  }
  return false;
}

bool AnyOf(const std::vector<std::string>& wanted, const std::vector<std::string>& have) {
  for (const std::string& h : have) {
    if (AnyOf(wanted, h)) return true;
  }
  return false;
}

enum class Match : uint8_t { kNo, kYes, kUnknown };

}  // namespace

const char* AuthorizationModeName(AuthorizationMode mode) {
  switch (mode) {
    case AuthorizationMode::kOff: return "off";
    case AuthorizationMode::kAudit: return "audit";
    case AuthorizationMode::kEnforce: return "enforce";
  }
  return "off";
}

// The configured rule in the form evaluated per request: sorted ids and
// resources (binary search), and what its caller matchers need.
struct AuthorizationPolicy::Rule {
  AuthorizationRule r;
  CallerNeeds needs;

  bool MatchesResource(std::string_view resource) const {
    if (r.any_resource) return true;
    auto it = std::lower_bound(r.resources.begin(), r.resources.end(), resource,
                               [](const std::string& a, std::string_view b) { return std::string_view(a) < b; });
    return it != r.resources.end() && *it == resource;
  }

  bool MatchesIdentity(const TokenKey& key) const {
    if (r.any_identity) return true;
    for (const AuthorizationRule::Identity& id : r.identities) {
      if (id.kind == key.kind && id.id == key.id) return true;
    }
    return false;
  }

  Match MatchesCaller(const CallerInfo& c, CallerNeeds known) const {
    if (r.any_caller) return Match::kYes;
    if (!c.peer.known) return Match::kNo;
#ifndef _WIN32
    if (std::binary_search(r.uids.begin(), r.uids.end(), c.peer.uid)) return Match::kYes;
#endif
    bool unknown = false;
    if (needs.account) {
      if (!known.account) {
        unknown = true;
      } else if (c.account_known) {
        if (AnyOf(r.users, c.user) || AnyOf(r.users, c.user_sid) || AnyOf(r.groups, c.groups) ||
            AnyOf(r.groups, c.group_sids)) {
          return Match::kYes;
        }
      }
    }
    if (needs.process) {
      if (!known.process) {
        unknown = true;
      } else if (c.process_known && (AnyOf(r.exe, c.exe) || AnyOf(r.process_names, c.process_name))) {
        return Match::kYes;
      }
    }
    return unknown ? Match::kUnknown : Match::kNo;
  }
};

AuthorizationPolicy::AuthorizationPolicy(const AuthorizationOptions& options) : mode_(options.mode) {
  rules_.reserve(options.rules.size());
  for (const AuthorizationRule& configured : options.rules) {
    Rule rule{configured, {}};
    std::sort(rule.r.uids.begin(), rule.r.uids.end());
    std::sort(rule.r.resources.begin(), rule.r.resources.end());
    if (!rule.r.any_caller) {
      rule.needs.account = !rule.r.users.empty() || !rule.r.groups.empty();
      rule.needs.process = !rule.r.exe.empty() || !rule.r.process_names.empty();
    }
    needs_.account = needs_.account || rule.needs.account;
    needs_.process = needs_.process || rule.needs.process;
    rules_.push_back(std::move(rule));
  }
}

AuthorizationPolicy::~AuthorizationPolicy() = default;

AuthorizationPolicy::Verdict AuthorizationPolicy::Evaluate(const CallerInfo& caller, CallerNeeds known,
                                                           const TokenKey& key) const {
  Verdict v;
  for (const Rule& rule : rules_) {
    if (!rule.MatchesResource(key.resource) || !rule.MatchesIdentity(key)) continue;
    switch (rule.MatchesCaller(caller, known)) {
      case Match::kYes:
        v.allowed = true;
        v.missing = CallerNeeds{};
        return v;
      case Match::kUnknown:
        v.missing.account = v.missing.account || (rule.needs.account && !known.account);
        v.missing.process = v.missing.process || (rule.needs.process && !known.process);
        break;
      case Match::kNo:
        break;
    }
  }
  return v;
}

}  // namespace mi
