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
    if (r.resources.size() <= 8) {  // the usual few: equality (length first) beats ordering compares
      for (const std::string& wanted : r.resources) {
        if (wanted == resource) return true;
      }
      return false;
    }
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
    // uids: through AuthorizationPolicy::by_uid_.
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
    const uint32_t index = static_cast<uint32_t>(rules_.size());
    for (uint32_t uid : rule.r.uids) by_uid_.emplace_back(uid, index);
    if (rule.r.any_caller || rule.needs.any()) others_.push_back(index);
    rules_.push_back(std::move(rule));
  }
  std::sort(by_uid_.begin(), by_uid_.end());
}

AuthorizationPolicy::~AuthorizationPolicy() = default;

bool AuthorizationPolicy::Grants(const Rule& rule, const TokenKey& key) const {
  return rule.MatchesResource(key.resource) && rule.MatchesIdentity(key);
}

AuthorizationPolicy::Verdict AuthorizationPolicy::Evaluate(const CallerInfo& caller, CallerNeeds known,
                                                           const TokenKey& key) const {
  Verdict v;
#ifndef _WIN32
  // The uid rules first, through the index: most policies end here.
  if (caller.peer.known && !by_uid_.empty()) {
    auto it = std::lower_bound(by_uid_.begin(), by_uid_.end(), std::make_pair(caller.peer.uid, uint32_t{0}));
    for (; it != by_uid_.end() && it->first == caller.peer.uid; ++it) {
      if (Grants(rules_[it->second], key)) {
        v.allowed = true;
        return v;
      }
    }
  }
#endif
  for (uint32_t index : others_) {
    const Rule& rule = rules_[index];
    const Match by_caller = rule.MatchesCaller(caller, known);
    if (by_caller == Match::kNo || !Grants(rule, key)) continue;
    if (by_caller == Match::kYes) {
      v.allowed = true;
      v.missing = CallerNeeds{};
      return v;
    }
    v.missing.account = v.missing.account || (rule.needs.account && !known.account);
    v.missing.process = v.missing.process || (rule.needs.process && !known.process);
  }
  return v;
}

}  // namespace mi
