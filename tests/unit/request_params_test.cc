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

TEST(ClassifyTargetTest, QueryIsSplitOff) {
  std::string_view q;
  ClassifyTarget("/oauth2/token?resource=a&b=c", false, &q);
  EXPECT_EQ(q, "resource=a&b=c");
}

std::string Parse(std::string_view query, std::string_view form, ParsedParams* out) {
  return ParseTokenParams(query, form, out);
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

}  // namespace
}  // namespace mi::proxy
