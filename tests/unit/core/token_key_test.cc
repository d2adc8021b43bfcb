// MakeTokenKey: the identity-selector rule the token API and the config's
// prefetch list share, with the token API's error descriptions.
#include "agent/token_key.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>

namespace mi {
namespace {

constexpr const char* kGuid = "0d1e2f30-aaaa-4bbb-8ccc-123456789abc";
constexpr const char* kArm = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x";

std::string Why(const SelectorFields& fields, std::string_view resource = "r") {
  StatusOr<TokenKey> key = MakeTokenKey(fields, resource);
  return key.ok() ? "" : key.status().message();
}

TEST(TokenKeyTest, NoSelectorIsTheDefaultIdentity) {
  StatusOr<TokenKey> key = MakeTokenKey(SelectorFields{}, "https://vault.azure.net");
  ASSERT_TRUE(key.ok()) << key.status().message();
  EXPECT_EQ(key->kind, SelectorKind::kDefault);
  EXPECT_EQ(key->id, "");
  EXPECT_EQ(key->resource, "https://vault.azure.net");
  EXPECT_EQ(key->Describe(), "default");
}

TEST(TokenKeyTest, IdsAreLowerCasedAndTheResourceKeptAsGiven) {
  SelectorFields f;
  f.client_id = "0D1E2F30-AAAA-4BBB-8CCC-123456789ABC";
  StatusOr<TokenKey> key = MakeTokenKey(f, "HTTPS://Vault/");
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key->kind, SelectorKind::kClientId);
  EXPECT_EQ(key->id, kGuid);
  EXPECT_EQ(key->resource, "HTTPS://Vault/");
  EXPECT_EQ(key->Describe(), std::string("client_id=") + kGuid);
}

TEST(TokenKeyTest, TheSpellingAsGivenIsKeptForDisplayOnly) {
  SelectorFields f;
  f.mi_res_id = kArm;
  StatusOr<TokenKey> mixed = MakeTokenKey(f, "r");
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->DisplayId(), kArm);
  EXPECT_EQ(mixed->DescribeAsGiven(), std::string("mi_res_id=") + kArm);
  EXPECT_NE(mixed->Describe(), mixed->DescribeAsGiven());  // logs and audit: the key's form
  std::string lower(kArm);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  f.mi_res_id = lower;
  StatusOr<TokenKey> plain = MakeTokenKey(f, "r");
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->display_id.empty());  // no copy when nothing differs
  EXPECT_TRUE(*mixed == *plain);
  EXPECT_EQ(TokenKeyHash()(*mixed), TokenKeyHash()(*plain));
}

TEST(TokenKeyTest, MsiResIdIsMiResId) {
  SelectorFields legacy;
  legacy.msi_res_id = kArm;
  SelectorFields modern;
  modern.mi_res_id = kArm;
  StatusOr<TokenKey> a = MakeTokenKey(legacy, "r");
  StatusOr<TokenKey> b = MakeTokenKey(modern, "r");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->kind, SelectorKind::kResourceId);
  EXPECT_TRUE(*a == *b);
}

TEST(TokenKeyTest, OfRebuildsTheSameKey) {
  for (SelectorKind kind : {SelectorKind::kDefault, SelectorKind::kClientId, SelectorKind::kObjectId,
                            SelectorKind::kResourceId}) {
    const std::string id = kind == SelectorKind::kDefault ? "" : kind == SelectorKind::kResourceId ? kArm : kGuid;
    StatusOr<TokenKey> first = MakeTokenKey(SelectorFields::Of(kind, id), "r");
    ASSERT_TRUE(first.ok()) << first.status().message();
    EXPECT_EQ(first->kind, kind);
    StatusOr<TokenKey> again = MakeTokenKey(SelectorFields::Of(first->kind, first->id), first->resource);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(*again == *first);
    EXPECT_EQ(TokenKeyHash()(*again), TokenKeyHash()(*first));
  }
}

TEST(TokenKeyTest, TheRuleInOrderWithItsMessages) {
  SelectorFields both_res_ids;
  both_res_ids.mi_res_id = kArm;
  both_res_ids.msi_res_id = kArm;
  both_res_ids.client_id = kGuid;
  EXPECT_EQ(Why(both_res_ids, ""), "give one of mi_res_id and msi_res_id");

  SelectorFields two;
  two.client_id = kGuid;
  two.msi_res_id = kArm;
  EXPECT_EQ(Why(two, ""), "give at most one of client_id, object_id and mi_res_id");
  two.msi_res_id = "";
  two.object_id = kGuid;
  EXPECT_EQ(Why(two), "give at most one of client_id, object_id and mi_res_id");

  SelectorFields bad_id;
  bad_id.client_id = "abc";
  EXPECT_EQ(Why(bad_id, ""), "Required parameter resource is missing") << "the resource before the id";
  EXPECT_EQ(Why(SelectorFields{}, std::string(2049, 'r')), "resource is too long");
  EXPECT_EQ(Why(SelectorFields{}, std::string(2048, 'r')), "");
  EXPECT_EQ(Why(SelectorFields{}, std::string("a\0b", 3)), "resource contains control characters");
  EXPECT_EQ(Why(SelectorFields{}, "a\x7f"), "resource contains control characters");
  EXPECT_EQ(Why(bad_id), "client_id is not a GUID");
  EXPECT_EQ(Why(SelectorFields::Of(SelectorKind::kObjectId, "0d1e2f30aaaa4bbb8ccc123456789abc")),
            "object_id is not a GUID");
  EXPECT_EQ(Why(SelectorFields::Of(SelectorKind::kResourceId, "/subscriptions/x")),
            "mi_res_id is not an Azure resource id");
}

TEST(TokenKeyTest, ClaimsArePartOfTheKeyVerbatim) {
  StatusOr<TokenKey> plain = MakeTokenKey(SelectorFields{}, "r");
  ASSERT_TRUE(plain.ok());
  TokenKey with = *plain;
  ASSERT_TRUE(SetClaims(&with, R"({"access_token":{"xms_az_nwperimid":{"values":["a"]}}})").ok());
  TokenKey other = *plain;
  ASSERT_TRUE(SetClaims(&other, R"({"access_token":{"xms_az_nwperimid":{"values":["b"]}}})").ok());
  EXPECT_FALSE(with == *plain);
  EXPECT_FALSE(with == other);
  TokenKey same = *plain;
  ASSERT_TRUE(SetClaims(&same, with.claims).ok());
  EXPECT_TRUE(same == with);
  EXPECT_EQ(TokenKeyHash()(same), TokenKeyHash()(with));
  // Describe stays short whatever the claims: a hash prefix, never the claims.
  EXPECT_EQ(plain->Describe(), "default");
  EXPECT_EQ(with.Describe().rfind("default claims#", 0), 0u) << with.Describe();
  EXPECT_EQ(with.Describe().size(), std::string("default claims#").size() + 8);
  EXPECT_NE(with.Describe(), other.Describe());
}

TEST(TokenKeyTest, ClaimsAreBoundedAndPrintable) {
  TokenKey key;
  EXPECT_TRUE(SetClaims(&key, std::string(kMaxClaimsBytes, 'x')).ok());
  EXPECT_EQ(SetClaims(&key, std::string(kMaxClaimsBytes + 1, 'x')).message(), "claims is too long");
  EXPECT_EQ(SetClaims(&key, "{\n}").message(), "claims contains control characters");
  EXPECT_TRUE(SetClaims(&key, "").ok());
  EXPECT_EQ(key.claims, "");
}

}  // namespace
}  // namespace mi
