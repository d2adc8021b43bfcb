// The authorization policy (issue #13): each matcher, "*", the identity
// selectors and their equivalences, resources as the cache key holds them,
// uid 0, no rule, the facts a policy asks for, Windows-style names.
#include "agent/authorization.h"

#include <gtest/gtest.h>

namespace mi {
namespace {

constexpr const char* kGuid = "11111111-2222-3333-4444-555555555555";
constexpr const char* kResId = "/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/"
                               "userassignedidentities/app";

TokenKey Key(SelectorKind kind, std::string id, std::string resource = "https://vault.azure.net") {
  return TokenKey{kind, std::move(id), std::move(resource)};
}
TokenKey Default(std::string resource = "https://vault.azure.net") {
  return Key(SelectorKind::kDefault, "", std::move(resource));
}

CallerInfo Caller(uint32_t uid) {
  CallerInfo c;
  c.peer.known = true;
  c.peer.uid = uid;
  c.peer.inode = 99;
  return c;
}

AuthorizationRule AnyIdentityAnyResource(std::string name = "r") {
  AuthorizationRule r;
  r.name = std::move(name);
  r.any_identity = true;
  r.any_resource = true;
  return r;
}

AuthorizationOptions With(std::vector<AuthorizationRule> rules) {
  AuthorizationOptions o;
  o.mode = AuthorizationMode::kEnforce;
  o.rules = std::move(rules);
  return o;
}

constexpr CallerNeeds kAll{true, true};

bool Allowed(const AuthorizationPolicy& p, const CallerInfo& c, const TokenKey& k, CallerNeeds known = kAll) {
  return p.Evaluate(c, known, k).allowed;
}

TEST(AuthorizationTest, NoRuleDeniesAndUidZeroHasNoImplicitRights) {
  AuthorizationPolicy none(With({}));
  EXPECT_FALSE(Allowed(none, Caller(1000), Default()));
  EXPECT_FALSE(Allowed(none, Caller(0), Default()));
  EXPECT_FALSE(none.Evaluate(Caller(0), {}, Default()).missing.any()) << "nothing to look up";

  AuthorizationRule r = AnyIdentityAnyResource();
  r.uids = {1000};
  AuthorizationPolicy p(With({r}));
  EXPECT_TRUE(Allowed(p, Caller(1000), Default()));
  EXPECT_FALSE(Allowed(p, Caller(0), Default())) << "root is a caller like any other";
  r.uids = {0};
  AuthorizationPolicy root_only(With({r}));
  EXPECT_TRUE(Allowed(root_only, Caller(0), Default()));
  EXPECT_FALSE(Allowed(root_only, Caller(1000), Default()));
}

TEST(AuthorizationTest, UidRulesNeedNoLookup) {
  std::vector<AuthorizationRule> rules;
  for (uint32_t uid = 1000; uid < 1010; ++uid) {
    AuthorizationRule r = AnyIdentityAnyResource();
    r.uids = {uid};
    rules.push_back(r);
  }
  AuthorizationPolicy p(With(rules));
  EXPECT_FALSE(p.needs().any());
  const auto v = p.Evaluate(Caller(1009), {}, Default());
  EXPECT_TRUE(v.allowed);
  const auto denied = p.Evaluate(Caller(2000), {}, Default());
  EXPECT_FALSE(denied.allowed);
  EXPECT_FALSE(denied.missing.any());
}

TEST(AuthorizationTest, UserAndGroupMatchersNeedTheAccount) {
  AuthorizationRule by_user = AnyIdentityAnyResource("u");
  by_user.users = {"billing"};
  AuthorizationRule by_group = AnyIdentityAnyResource("g");
  by_group.groups = {"vault-readers"};
  AuthorizationPolicy p(With({by_user, by_group}));
  EXPECT_TRUE(p.needs().account);
  EXPECT_FALSE(p.needs().process);

  CallerInfo c = Caller(1001);
  auto first = p.Evaluate(c, {}, Default());
  EXPECT_FALSE(first.allowed);
  EXPECT_TRUE(first.missing.account) << "look the account up, then ask again";
  EXPECT_FALSE(first.missing.process);

  c.account_known = true;
  c.user = "billing";
  EXPECT_TRUE(Allowed(p, c, Default(), {true, false}));
  c.user = "other";
  EXPECT_FALSE(Allowed(p, c, Default(), {true, false}));
  c.groups = {"users", "vault-readers"};  // supplementary
  EXPECT_TRUE(Allowed(p, c, Default(), {true, false}));
  c.groups = {"Vault-Readers"};
  EXPECT_FALSE(Allowed(p, c, Default(), {true, false})) << "POSIX names are exact";
  // Looked up and not found: final.
  CallerInfo unknown = Caller(1001);
  const auto v = p.Evaluate(unknown, {true, false}, Default());
  EXPECT_FALSE(v.allowed);
  EXPECT_FALSE(v.missing.any());
}

TEST(AuthorizationTest, ExeAndProcessNameMatchersNeedTheProcess) {
  AuthorizationRule by_exe = AnyIdentityAnyResource("e");
  by_exe.exe = {"/opt/billing/bin/server"};
  AuthorizationRule by_name = AnyIdentityAnyResource("n");
  by_name.process_names = {"java"};
  AuthorizationPolicy p(With({by_exe, by_name}));
  EXPECT_TRUE(p.needs().process);
  EXPECT_FALSE(p.needs().account);
  CallerInfo c = Caller(1001);
  EXPECT_TRUE(p.Evaluate(c, {}, Default()).missing.process);
  c.process_known = true;
  c.exe = "/opt/billing/bin/server";
  c.process_name = "server";
  EXPECT_TRUE(Allowed(p, c, Default()));
  c.exe = "/opt/billing/bin/server2";
  EXPECT_FALSE(Allowed(p, c, Default()));
  c.process_name = "java";
  EXPECT_TRUE(Allowed(p, c, Default()));
  c.process_known = false;  // it closed first
  EXPECT_FALSE(Allowed(p, c, Default()));
}

TEST(AuthorizationTest, AnUidRuleThatMatchesSparesTheLookupsOfOtherRules) {
  AuthorizationRule by_uid = AnyIdentityAnyResource();
  by_uid.uids = {1000};
  AuthorizationRule by_exe = AnyIdentityAnyResource();
  by_exe.exe = {"/bin/x"};
  AuthorizationPolicy p(With({by_exe, by_uid}));
  const auto v = p.Evaluate(Caller(1000), {}, Default());
  EXPECT_TRUE(v.allowed);
  EXPECT_TRUE(p.Evaluate(Caller(1001), {}, Default()).missing.process);
}

TEST(AuthorizationTest, StarCallersMatchEvenAnUnresolvedCaller) {
  AuthorizationRule everyone = AnyIdentityAnyResource();
  everyone.any_caller = true;
  everyone.any_resource = false;
  everyone.resources = {"https://storage.azure.com/"};
  AuthorizationPolicy p(With({everyone}));
  CallerInfo unresolved;  // peer.known false
  EXPECT_TRUE(Allowed(p, unresolved, Default("https://storage.azure.com/")));
  EXPECT_FALSE(Allowed(p, unresolved, Default()));

  AuthorizationRule by_uid = AnyIdentityAnyResource();
  by_uid.uids = {0};
  AuthorizationPolicy q(With({by_uid}));
  CallerInfo zero;  // unknown, and its uid field reads 0
  EXPECT_FALSE(Allowed(q, zero, Default())) << "an unresolved caller is not uid 0";
}

TEST(AuthorizationTest, IdentitySelectors) {
  AuthorizationRule r;
  r.name = "ids";
  r.any_caller = true;
  r.any_resource = true;
  r.identities = {{SelectorKind::kDefault, ""},
                  {SelectorKind::kClientId, kGuid},
                  {SelectorKind::kResourceId, kResId}};
  AuthorizationPolicy p(With({r}));
  const CallerInfo c = Caller(1);
  EXPECT_TRUE(Allowed(p, c, Default()));
  EXPECT_TRUE(Allowed(p, c, Key(SelectorKind::kClientId, kGuid)));
  EXPECT_FALSE(Allowed(p, c, Key(SelectorKind::kObjectId, kGuid))) << "the same GUID as object_id is another identity";
  // msi_res_id and mi_res_id are one selector: both reach the key as kResourceId.
  EXPECT_TRUE(Allowed(p, c, Key(SelectorKind::kResourceId, kResId)));
  EXPECT_FALSE(Allowed(p, c, Key(SelectorKind::kClientId, "99999999-2222-3333-4444-555555555555")));

  AuthorizationRule only_client = r;
  only_client.identities = {{SelectorKind::kClientId, kGuid}};
  AuthorizationPolicy q(With({only_client}));
  EXPECT_FALSE(Allowed(q, c, Default())) << "default is an identity of its own";

  AuthorizationRule any = r;
  any.identities.clear();
  any.any_identity = true;
  AuthorizationPolicy s(With({any}));
  EXPECT_TRUE(Allowed(s, c, Key(SelectorKind::kObjectId, kGuid)));
  EXPECT_TRUE(Allowed(s, c, Default()));
}

TEST(AuthorizationTest, ResourcesAreExactAsTheCacheKeyHoldsThem) {
  AuthorizationRule r;
  r.name = "res";
  r.any_caller = true;
  r.any_identity = true;
  r.resources = {"https://vault.azure.net", "https://storage.azure.com/", "api://a"};
  AuthorizationPolicy p(With({r}));
  const CallerInfo c = Caller(1);
  EXPECT_TRUE(Allowed(p, c, Default("https://vault.azure.net")));
  EXPECT_TRUE(Allowed(p, c, Default("https://storage.azure.com/")));
  EXPECT_TRUE(Allowed(p, c, Default("api://a")));
  EXPECT_FALSE(Allowed(p, c, Default("https://vault.azure.net/")));
  EXPECT_FALSE(Allowed(p, c, Default("https://storage.azure.com")));
  EXPECT_FALSE(Allowed(p, c, Default("HTTPS://vault.azure.net")));
  EXPECT_FALSE(Allowed(p, c, Default("")));
}

TEST(AuthorizationTest, ARuleMustMatchCallerIdentityAndResourceTogether) {
  AuthorizationRule a;
  a.name = "a";
  a.uids = {1000};
  a.identities = {{SelectorKind::kClientId, kGuid}};
  a.resources = {"https://vault.azure.net"};
  AuthorizationRule b;
  b.name = "b";
  b.uids = {2000};
  b.any_identity = true;
  b.resources = {"https://storage.azure.com/"};
  AuthorizationPolicy p(With({a, b}));
  EXPECT_TRUE(Allowed(p, Caller(1000), Key(SelectorKind::kClientId, kGuid)));
  EXPECT_FALSE(Allowed(p, Caller(1000), Key(SelectorKind::kClientId, kGuid, "https://storage.azure.com/")));
  EXPECT_FALSE(Allowed(p, Caller(2000), Key(SelectorKind::kClientId, kGuid)));
  EXPECT_TRUE(Allowed(p, Caller(2000), Key(SelectorKind::kClientId, kGuid, "https://storage.azure.com/")));
}

TEST(AuthorizationTest, WindowsStyleNamesAndSids) {
  AuthorizationRule r = AnyIdentityAnyResource();
  r.users = {"CONTOSO\\billing", "S-1-5-21-1-2-3-1001"};
  r.groups = {"S-1-5-32-544"};
  AuthorizationPolicy p(With({r}));
  CallerInfo c = Caller(0);
  c.account_known = true;
  c.user = "CONTOSO\\billing";
  EXPECT_TRUE(Allowed(p, c, Default()));
  c.user = "CONTOSO\\other";
  c.user_sid = "S-1-5-21-1-2-3-1001";
  EXPECT_TRUE(Allowed(p, c, Default())) << "the user by SID";
  c.user_sid = "S-1-5-21-1-2-3-1002";
  c.group_sids = {"S-1-1-0", "S-1-5-32-544"};
  EXPECT_TRUE(Allowed(p, c, Default())) << "a group by SID";
  c.group_sids.clear();
  c.user = "contoso\\BILLING";
#ifdef _WIN32
  EXPECT_TRUE(Allowed(p, c, Default())) << "case-insensitive on Windows";
  c.user = "";
  c.user_sid = "s-1-5-21-1-2-3-1001";
  EXPECT_TRUE(Allowed(p, c, Default()));
#else
  EXPECT_FALSE(Allowed(p, c, Default())) << "exact elsewhere";
#endif
}

#ifdef _WIN32
TEST(AuthorizationTest, WindowsExePathsCompareCaseInsensitively) {
  AuthorizationRule r = AnyIdentityAnyResource();
  r.exe = {"C:\\Program Files\\Billing\\server.exe"};
  AuthorizationPolicy p(With({r}));
  CallerInfo c = Caller(0);
  c.process_known = true;
  c.exe = "c:\\program files\\billing\\SERVER.EXE";
  EXPECT_TRUE(Allowed(p, c, Default()));
}
#endif

TEST(AuthorizationTest, ModeNames) {
  EXPECT_STREQ(AuthorizationModeName(AuthorizationMode::kOff), "off");
  EXPECT_STREQ(AuthorizationModeName(AuthorizationMode::kAudit), "audit");
  EXPECT_STREQ(AuthorizationModeName(AuthorizationMode::kEnforce), "enforce");
}

}  // namespace
}  // namespace mi
