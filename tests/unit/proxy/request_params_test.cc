#include "proxy/request_params.h"

#include <gtest/gtest.h>

namespace mi::proxy {
namespace {

const char* kGuid = "0d1e2f30-aaaa-4bbb-8ccc-123456789abc";
const char* kArm =
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app";

Route Classify(std::string_view target, bool absolute_form = false) {
  std::string_view q;
  return ClassifyTarget(target, absolute_form, &q);
}

TEST(ClassifyTargetTest, LegacyAndImdsPathsWithSlashVariants) {
  EXPECT_EQ(Classify("/oauth2/token?resource=x"), Route::kLegacy);
  EXPECT_EQ(Classify("/oauth2/token/"), Route::kLegacy);
  EXPECT_EQ(Classify("//oauth2/token"), Route::kLegacy);
  EXPECT_EQ(Classify("/metadata/identity/oauth2/token?api-version=1"), Route::kImds);
  EXPECT_EQ(Classify("//metadata/identity/oauth2/token/"), Route::kImds);
  EXPECT_EQ(Classify("/oauth2/tokens"), Route::kUnknown);
  EXPECT_EQ(Classify("/OAUTH2/TOKEN"), Route::kUnknown);
  EXPECT_EQ(Classify("/"), Route::kUnknown);
  EXPECT_EQ(Classify(""), Route::kUnknown);
}

TEST(ClassifyTargetTest, AbsoluteFormOnlyWhenEnabled) {
  const char* target = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=1&resource=x";
  EXPECT_EQ(Classify(target, false), Route::kUnknown);
  std::string_view q;
  EXPECT_EQ(ClassifyTarget(target, true, &q), Route::kImds);
  EXPECT_EQ(q, "api-version=1&resource=x");
}

TEST(ClassifyTargetTest, AbsoluteFormAuthorityIsSplitOff) {
  std::string_view q;
  std::string_view authority = "stale";
  EXPECT_EQ(ClassifyTarget("http://169.254.169.254:80/oauth2/token?resource=x", true, &q, &authority), Route::kLegacy);
  EXPECT_EQ(authority, "169.254.169.254:80");
  EXPECT_EQ(q, "resource=x");
  EXPECT_EQ(ClassifyTarget("http://Attacker.Example", true, &q, &authority), Route::kUnknown);
  EXPECT_EQ(authority, "Attacker.Example");
  ClassifyTarget("http://h?resource=x", true, &q, &authority);
  EXPECT_EQ(authority, "h");
  // Origin form, absolute form switched off, and an empty authority: no authority.
  for (std::string_view target : {"/oauth2/token", "http:///oauth2/token", "http://"}) {
    authority = "stale";
    ClassifyTarget(target, true, &q, &authority);
    EXPECT_TRUE(authority.empty()) << target;
  }
  authority = "stale";
  ClassifyTarget("http://169.254.169.254/oauth2/token", false, &q, &authority);
  EXPECT_TRUE(authority.empty());
}

TEST(HostAllowListTest, LoopbackNamesAnyPortAnyCase) {
  HostAllowList allow;
  allow.Add("MyVM.Internal");
  allow.Add("[FD00::4]");
  allow.Add("10.0.0.4");
  struct Case {
    const char* authority;
    bool allowed;
  };
  const Case cases[] = {
      {"localhost", true},
      {"localhost:50342", true},
      {"LocalHost:1", true},
      {"127.0.0.1", true},
      {"127.0.0.1:50342", true},
      {"127.0.0.1:65535", true},
      {"[::1]", true},
      {"[::1]:50342", true},
      {"myvm.internal:80", true},
      {"MYVM.INTERNAL", true},
      {"[fd00::4]:50342", true},
      {"10.0.0.4", true},
      // Foreign names, and near misses of allowed ones.
      {"attacker.example", false},
      {"attacker.example:50342", false},
      {"localhost.attacker.example", false},
      {"localhost.", false},
      {"127.0.0.2", false},
      {"127.1", false},
      {"169.254.169.254", false},  // only with absolute_form (the API adds it)
      {"user@localhost", false},
      {"local host", false},
      {" localhost", false},
      // Malformed ports and brackets.
      {"localhost:", false},
      {"localhost:http", false},
      {"localhost:50342x", false},
      {"localhost:-1", false},
      {"localhost:+80", false},
      {"localhost:123456", false},
      {"localhost:000080", false},
      {"localhost:80:80", false},
      {"::1", false},
      {"::1:50342", false},
      {"[::1", false},
      {"[::1]50342", false},
      {"[::1]:", false},
      {"[::1]:x", false},
      {"::1]", false},
      {"[]", false},
      {"", false},
      {":50342", false},
  };
  for (const Case& c : cases) EXPECT_EQ(allow.Allows(c.authority), c.allowed) << '"' << c.authority << '"';
}

TEST(HostAllowListTest, OnlyTheDefaultsUntilAdded) {
  HostAllowList allow;
  EXPECT_TRUE(allow.Allows("localhost:50342"));
  EXPECT_FALSE(allow.Allows("myvm.internal"));
  allow.Add("");  // an empty Host never becomes allowed
  EXPECT_FALSE(allow.Allows(""));
  EXPECT_FALSE(allow.Allows(":80"));
}

TEST(ClassifyTargetTest, QueryIsSplitOff) {
  std::string_view q;
  ClassifyTarget("/oauth2/token?resource=a&b=c", false, &q);
  EXPECT_EQ(q, "resource=a&b=c");
}

std::string Parse(std::string_view query, std::string_view form, ParsedParams* out) {
  StatusOr<ParsedParams> parsed = ParseTokenParams(query, form);
  if (!parsed.ok()) return parsed.status().message();
  *out = std::move(*parsed);
  return "";
}

TEST(ParseTokenParamsTest, DecodesPlusAndPercent) {
  ParsedParams p;
  ASSERT_EQ(Parse("resource=https%3A%2F%2Fexample.com%2Fa+b%2Bc", "", &p), "");
  EXPECT_EQ(p.key.resource, "https://example.com/a b+c");
  EXPECT_EQ(p.key.kind, SelectorKind::kDefault);
}

TEST(ParseTokenParamsTest, UnencodedResourceIsAcceptedAsIs) {
  ParsedParams p;
  ASSERT_EQ(Parse("resource=https://management.azure.com/", "", &p), "");
  EXPECT_EQ(p.key.resource, "https://management.azure.com/");
}

TEST(ParseTokenParamsTest, FormBodyAndQueryCombine) {
  ParsedParams p;
  ASSERT_EQ(Parse("", std::string("resource=r&client_id=") + kGuid, &p), "");
  EXPECT_EQ(p.key.kind, SelectorKind::kClientId);
  ASSERT_EQ(Parse("resource=r", std::string("object_id=") + kGuid, &p), "");
  EXPECT_EQ(p.key.kind, SelectorKind::kObjectId);
}

TEST(ParseTokenParamsTest, EmptyValuesMeanNotGivenAndUnknownFieldsAreIgnored) {
  ParsedParams p;
  ASSERT_EQ(Parse("resource=r&client_id=&object_id=&grant_type=x&authority=y&api-version=2018-02-01&&", "", &p), "");
  EXPECT_EQ(p.key.kind, SelectorKind::kDefault);
  EXPECT_TRUE(p.has_api_version);
}

TEST(ParseTokenParamsTest, MsiResIdIsTheSameSelectorAsMiResId) {
  ParsedParams legacy, modern;
  ASSERT_EQ(Parse(std::string("resource=r&msi_res_id=") + kArm, "", &legacy), "");
  ASSERT_EQ(Parse(std::string("resource=r&mi_res_id=") + kArm, "", &modern), "");
  EXPECT_EQ(legacy.key.kind, SelectorKind::kResourceId);
  EXPECT_TRUE(legacy.key == modern.key);
}

TEST(ParseTokenParamsTest, IdsAreCaseInsensitive) {
  ParsedParams a, b;
  ASSERT_EQ(Parse(std::string("resource=r&client_id=") + kGuid, "", &a), "");
  ASSERT_EQ(Parse("resource=r&client_id=0D1E2F30-AAAA-4BBB-8CCC-123456789ABC", "", &b), "");
  EXPECT_TRUE(a.key == b.key);
}

TEST(ParseTokenParamsTest, Errors) {
  ParsedParams p;
  EXPECT_NE(Parse("", "", &p), "") << "missing resource";
  EXPECT_NE(Parse("resource=", "", &p), "") << "empty resource";
  EXPECT_NE(Parse("resource=a&resource=b", "", &p), "") << "given twice";
  EXPECT_NE(Parse("resource=a", "resource=b", &p), "") << "given twice across query and body";
  EXPECT_NE(Parse(std::string("resource=r&client_id=") + kGuid + "&object_id=" + kGuid, "", &p), "");
  EXPECT_NE(Parse(std::string("resource=r&mi_res_id=") + kArm + "&msi_res_id=" + kArm, "", &p), "");
  EXPECT_NE(Parse("resource=r&client_id=abc", "", &p), "") << "not a GUID";
  EXPECT_NE(Parse("resource=r&object_id=0d1e2f30aaaa4bbb8ccc123456789abc", "", &p), "") << "no dashes";
  EXPECT_NE(Parse("resource=r&mi_res_id=%2Fsubscriptions%2Fx", "", &p), "") << "not an ARM id";
  EXPECT_NE(Parse("resource=%ZZ", "", &p), "") << "bad escape";
  EXPECT_NE(Parse("resource=a%00b", "", &p), "") << "control characters";
}

TEST(ParseTokenParamsTest, ErrorDescriptions) {
  ParsedParams p;
  EXPECT_EQ(Parse("resource=%ZZ", "", &p), "malformed percent-encoding in resource");
  EXPECT_EQ(Parse("re%zource=r", "", &p), "malformed percent-encoding in a parameter name");
  EXPECT_EQ(Parse("resource=a&resource=b", "", &p), "resource is given more than once");
  EXPECT_EQ(Parse("", "", &p), "Required parameter resource is missing");
  EXPECT_EQ(Parse(std::string("client_id=") + kGuid + "&object_id=" + kGuid, "", &p),
            "give at most one of client_id, object_id and mi_res_id")
      << "the selector rule comes before the missing resource";
  EXPECT_EQ(Parse(std::string("mi_res_id=") + kArm + "&msi_res_id=" + kArm, "", &p),
            "give one of mi_res_id and msi_res_id");
  EXPECT_EQ(Parse("resource=r&client_id=abc", "", &p), "client_id is not a GUID");
}

TEST(IdentityShapeTest, GuidAndArmId) {
  EXPECT_TRUE(mi::IsGuid(kGuid));
  EXPECT_FALSE(mi::IsGuid("{0d1e2f30-aaaa-4bbb-8ccc-123456789abc}"));
  EXPECT_FALSE(mi::IsGuid("0d1e2f30-aaaa-4bbb-8ccc-123456789abg"));
  EXPECT_TRUE(mi::IsArmResourceId(kArm));
  EXPECT_TRUE(mi::IsArmResourceId("/SUBSCRIPTIONS/0000/RESOURCEGROUPS/rg/PROVIDERS/ns/type/name"));
  EXPECT_FALSE(mi::IsArmResourceId("/subscriptions/0000/resourceGroups/rg"));
  EXPECT_FALSE(mi::IsArmResourceId("/subscriptions/0000/resourceGroups//providers/ns/type/name"));
  EXPECT_FALSE(mi::IsArmResourceId("/subscriptions/0000/resourceGroups/rg/providers/ns/type/na me"));
  EXPECT_FALSE(mi::IsArmResourceId("subscriptions/0000/resourceGroups/rg/providers/ns/type/name"));
}

TEST(ParseTokenParamsTest, ClaimsGoIntoTheKeyDecoded) {
  auto p = ParseTokenParams("resource=r&claims=%7B%22access_token%22%3A%7B%7D%7D", "");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->key.claims, R"({"access_token":{}})");
  EXPECT_FALSE(p->has_options) << "claims are part of the key: the plain path";
  EXPECT_EQ(ParseTokenParams("resource=r&claims=a&claims=b", "").status().message(), "claims is given more than once");
  EXPECT_EQ(ParseTokenParams("resource=r&claims=%0A", "").status().message(), "claims contains control characters");
  EXPECT_EQ(ParseTokenParams("resource=r&claims=" + std::string(kMaxClaimsBytes + 1, 'x'), "").status().message(),
            "claims is too long");
  EXPECT_EQ(ParseTokenParams("resource=r&claims=", "")->key.claims, "") << "empty = not given";
}

TEST(ParseTokenParamsTest, TokenSha256ToRefreshIsLowerCasedHex) {
  const std::string hex = "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789";
  auto p = ParseTokenParams("resource=r&token_sha256_to_refresh=" + hex, "");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_TRUE(p->has_options);
  EXPECT_EQ(p->options.refresh_sha256, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
  EXPECT_EQ(p->key.claims, "");
  for (const std::string& bad : {hex.substr(1), hex + "0", "g" + hex.substr(1)}) {
    EXPECT_EQ(ParseTokenParams("resource=r&token_sha256_to_refresh=" + bad, "").status().message(),
              "token_sha256_to_refresh is not a hex SHA-256")
        << bad;
  }
}

TEST(ParseTokenParamsTest, BypassCacheTrueOnly) {
  auto p = ParseTokenParams("resource=r&bypass_cache=true", "");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->options.bypass_cache);
  EXPECT_TRUE(p->has_options);
  auto q = ParseTokenParams("resource=r&bypass_cache=false", "");
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE(q->options.bypass_cache);
  EXPECT_FALSE(q->has_options);
}

TEST(ParseTokenParamsTest, XmsCcAndUnknownParametersAreIgnored) {
  auto p = ParseTokenParams("resource=r&xms_cc=cp1,cp2&foo=bar", "xms_cc=cp1");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_FALSE(p->has_options);
  auto plain = ParseTokenParams("resource=r", "");
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(p->key == plain->key) << "xms_cc is not part of the key";
}

}  // namespace
}  // namespace mi::proxy
