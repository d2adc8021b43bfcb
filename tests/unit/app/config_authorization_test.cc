// The "authorization" section of the config (issue #13): the shape of the
// issue parses into AuthorizationOptions; every mistake names its key.
#include <gtest/gtest.h>

#include "agent/app/config.h"

namespace mi {
namespace {

std::string Error(const std::string& authorization) {
  Config c;
  Status s = ParseConfig(R"({"authorization": )" + authorization + "}", &c);
  return s.ok() ? "ok" : s.message();
}

TEST(ConfigAuthorizationTest, TheIssuesExampleParses) {
  Config c;
  Status s = ParseConfig(R"({"authorization": {
    "mode": "enforce", "cache_seconds": 30,
    "rules": [
      {"name": "billing-app",
       "callers": {"users": ["billing"], "groups": ["billing"], "uids": [1001],
                   "exe": ["/opt/billing/bin/server"], "process_names": ["java"]},
       "identities": ["default", {"client_id": "11111111-2222-3333-4444-5555555555AA"},
                      {"object_id": "21111111-2222-3333-4444-555555555555"},
                      {"mi_res_id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/App"},
                      {"msi_res_id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b"}],
       "resources": ["https://vault.azure.net", "https://storage.azure.com/"]},
      {"name": "everyone-storage", "callers": "*", "identities": "*", "resources": ["*"]}
    ]}})", &c);
  ASSERT_TRUE(s.ok()) << s.message();
  const AuthorizationOptions& a = c.authorization;
  EXPECT_EQ(a.mode, AuthorizationMode::kEnforce);
  EXPECT_EQ(a.cache_ttl, Duration(30000));
  ASSERT_EQ(a.rules.size(), 2u);
  const AuthorizationRule& r = a.rules[0];
  EXPECT_EQ(r.name, "billing-app");
  EXPECT_EQ(r.users, std::vector<std::string>{"billing"});
  EXPECT_EQ(r.groups, std::vector<std::string>{"billing"});
  EXPECT_EQ(r.uids, std::vector<uint32_t>{1001});
  EXPECT_EQ(r.exe, std::vector<std::string>{"/opt/billing/bin/server"});
  EXPECT_EQ(r.process_names, std::vector<std::string>{"java"});
  ASSERT_EQ(r.identities.size(), 5u);
  EXPECT_EQ(r.identities[0].kind, SelectorKind::kDefault);
  EXPECT_EQ(r.identities[1].kind, SelectorKind::kClientId);
  EXPECT_EQ(r.identities[1].id, "11111111-2222-3333-4444-5555555555aa") << "lower-cased like the token key";
  EXPECT_EQ(r.identities[2].kind, SelectorKind::kObjectId);
  EXPECT_EQ(r.identities[3].kind, SelectorKind::kResourceId);
  EXPECT_EQ(r.identities[4].kind, SelectorKind::kResourceId) << "msi_res_id is mi_res_id";
  EXPECT_EQ(r.identities[3].id.find("App"), std::string::npos);
  EXPECT_FALSE(r.any_caller || r.any_identity || r.any_resource);
  EXPECT_TRUE(a.rules[1].any_caller && a.rules[1].any_identity && a.rules[1].any_resource);
}

TEST(ConfigAuthorizationTest, DefaultIsOffWithoutRules) {
  Config c;
  ASSERT_TRUE(ParseConfig("{}", &c).ok());
  EXPECT_EQ(c.authorization.mode, AuthorizationMode::kOff);
  EXPECT_TRUE(c.authorization.rules.empty());
  EXPECT_EQ(c.authorization.cache_ttl, Duration(60000));
  EXPECT_EQ(Error(R"({"mode": "audit"})"), "ok");
  EXPECT_EQ(Error(R"({"mode": "off", "rules": []})"), "ok");
}

TEST(ConfigAuthorizationTest, ErrorsNameTheKey) {
  const std::string ok_rule = R"({"name": "a", "callers": {"uids": [1]}, "identities": ["default"], "resources": ["r"]})";
  EXPECT_EQ(Error("[]"), "authorization: expected an object");
  EXPECT_EQ(Error(R"({"mode": "strict"})"), "authorization.mode: expected off, audit or enforce");
  EXPECT_EQ(Error(R"({"mode": 1})"), "authorization.mode: expected a non-empty string");
  EXPECT_EQ(Error(R"({"rule": []})"), "authorization.rule: unknown key");
  EXPECT_EQ(Error(R"({"cache_seconds": -1})"), "authorization.cache_seconds: expected a number from 0 to 86400");
  EXPECT_EQ(Error(R"({"rules": {}})"), "authorization.rules: expected an array");
  EXPECT_EQ(Error(R"({"rules": [7]})"), "authorization.rules[0]: expected an object");
  EXPECT_EQ(Error(R"({"rules": [)" + ok_rule + R"(, {"callers": "*", "identities": "*", "resources": "*"}]})"),
            "authorization.rules[1].name: required");
  EXPECT_EQ(Error(R"({"rules": [{"name": "", "callers": "*", "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].name: expected a non-empty string");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers: required");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "resources": "*"}]})"),
            "authorization.rules[0].identities: required");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": "*"}]})"),
            "authorization.rules[0].resources: required");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": "*", "resources": "*", "x": 1}]})"),
            "authorization.rules[0].x: unknown key");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": {}, "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers: name at least one caller (users, groups, uids, exe, process_names), "
            "or \"*\" for everyone");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "all", "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers: expected \"*\" or an object of users, groups, uids, exe, process_names");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": {"user": ["x"]}, "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers.user: unknown key");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": {"users": ["x", ""]}, "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers.users[1]: expected user names");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": {"groups": "x"}, "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers.groups: expected an array of group names");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": {"uids": [-1]}, "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers.uids[0]: expected a uid from 0 to 4294967294");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": {"uids": ["0"]}, "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers.uids[0]: expected a uid from 0 to 4294967294");
#ifndef _WIN32
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": {"exe": ["java"]}, "identities": "*", "resources": "*"}]})"),
            "authorization.rules[0].callers.exe[0]: expected full paths");
#endif
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": [], "resources": "*"}]})"),
            "authorization.rules[0].identities: expected \"*\" or a non-empty array of identities");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": ["system"], "resources": "*"}]})"),
            "authorization.rules[0].identities[0]: expected \"default\", \"*\" or one of {\"client_id\": ...}, "
            "{\"object_id\": ...}, {\"mi_res_id\": ...}, {\"msi_res_id\": ...}");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": [{"client_id": "x", "object_id": "y"}], "resources": "*"}]})"),
            "authorization.rules[0].identities[0]: expected \"default\", \"*\" or one of {\"client_id\": ...}, "
            "{\"object_id\": ...}, {\"mi_res_id\": ...}, {\"msi_res_id\": ...}");
  EXPECT_EQ(Error(R"({"rules": [)" + ok_rule + "," + ok_rule + R"(, {"name": "c", "callers": "*", "identities": ["default", {"client_id": "nope"}], "resources": "*"}]})"),
            "authorization.rules[2].identities[1].client_id: not a GUID");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": [{"object_id": "1"}], "resources": "*"}]})"),
            "authorization.rules[0].identities[0].object_id: not a GUID");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": [{"msi_res_id": "/x"}], "resources": "*"}]})"),
            "authorization.rules[0].identities[0].msi_res_id: not an Azure resource id");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": [{"tenant": "x"}], "resources": "*"}]})"),
            "authorization.rules[0].identities[0].tenant: unknown key");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": [{"client_id": 5}], "resources": "*"}]})"),
            "authorization.rules[0].identities[0].client_id: expected a non-empty string");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": "*", "resources": []}]})"),
            "authorization.rules[0].resources: expected \"*\" or a non-empty array of resources");
  EXPECT_EQ(Error(R"({"rules": [{"name": "a", "callers": "*", "identities": "*", "resources": ["ok", "a\u0001"]}]})"),
            "authorization.rules[0].resources[1]: expected a resource (\"*\", or printable, at most 2048 bytes)");
}

TEST(ConfigAuthorizationTest, AnErrorLeavesTheConfigUntouched) {
  Config c;
  ASSERT_TRUE(ParseConfig(R"({"authorization": {"mode": "audit"}})", &c).ok());
  EXPECT_FALSE(ParseConfig(R"({"authorization": {"mode": "enforce", "rules": [{"name": "a"}]}})", &c).ok());
  EXPECT_EQ(c.authorization.mode, AuthorizationMode::kAudit);
}

}  // namespace
}  // namespace mi
