#include "agent/identity_echo.h"

#include <cstdint>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace mi {
namespace {

const char kClient[] = "11111111-2222-4333-8444-555555555555";
const char kOther[] = "99999999-8888-4777-8666-555555555555";
const char kMirid[] =
    "/subscriptions/0000/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/one";

TokenKey Key(SelectorKind kind, const std::string& id) {
  StatusOr<TokenKey> k = MakeTokenKey(SelectorFields::Of(kind, id), "https://management.azure.com/");
  EXPECT_TRUE(k.ok()) << k.status().message();
  return k.ok() ? *k : TokenKey();
}

std::string Base64Url(const std::string& in) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint8_t(in[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    for (int s = 18; s >= 6; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  return out;
}

std::string Jwt(const std::string& claims_json) {
  return Base64Url(R"({"typ":"JWT","alg":"RS256"})") + "." + Base64Url(claims_json) + ".c2ln";
}

// An IMDS body with `access_token` and, unless empty, "client_id".
std::string Body(const std::string& access_token, const std::string& client_id) {
  nlohmann::json j = {{"access_token", access_token}, {"expires_on", "1900000000"}, {"token_type", "Bearer"}};
  if (!client_id.empty()) j["client_id"] = client_id;
  return j.dump();
}

std::string Claims(const std::string& appid, const std::string& oid, const std::string& mirid) {
  nlohmann::json j = {{"aud", "https://management.azure.com/"}};
  if (!appid.empty()) j["appid"] = appid;
  if (!oid.empty()) j["oid"] = oid;
  if (!mirid.empty()) j["xms_mirid"] = mirid;
  return j.dump();
}

TEST(IdentityEchoTest, MatchingAnswersPass) {
  const std::string body = Body(Jwt(Claims(kClient, kClient, kMirid)), kClient);
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kClientId, kClient), body).ok());
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kObjectId, kClient), body).ok());
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kResourceId, kMirid), body).ok());
}

TEST(IdentityEchoTest, ComparesCaseInsensitively) {
  std::string upper = kClient;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string mirid_upper = kMirid;
  for (char& c : mirid_upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string body = Body(Jwt(Claims(upper, upper, mirid_upper)), upper);
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kClientId, kClient), body).ok());
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kObjectId, kClient), body).ok());
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kResourceId, kMirid), body).ok());
}

TEST(IdentityEchoTest, EachFieldMismatchIsCaught) {
  const TokenKey client = Key(SelectorKind::kClientId, kClient);
  Status s = CheckIdentityEcho(client, Body(Jwt(Claims(kClient, "", "")), kOther));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "client_id");
  s = CheckIdentityEcho(client, Body(Jwt(Claims(kOther, "", "")), kClient));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "appid");
  s = CheckIdentityEcho(Key(SelectorKind::kObjectId, kClient), Body(Jwt(Claims(kClient, kOther, kMirid)), kClient));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "oid");
  s = CheckIdentityEcho(Key(SelectorKind::kResourceId, kMirid),
                        Body(Jwt(Claims(kClient, kClient, std::string(kMirid) + "x")), kClient));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "xms_mirid");
}

TEST(IdentityEchoTest, OnlyTheNamedSelectorIsCompared) {
  // An object_id key says nothing about client ids (and a client_id key nothing about oid).
  const std::string body = Body(Jwt(Claims(kOther, kClient, "/other")), kOther);
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kObjectId, kClient), body).ok());
  const std::string body2 = Body(Jwt(Claims(kClient, kOther, "/other")), kClient);
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kClientId, kClient), body2).ok());
}

TEST(IdentityEchoTest, DefaultIdentityHasNothingToCompare) {
  const TokenKey def = Key(SelectorKind::kDefault, "");
  EXPECT_TRUE(CheckIdentityEcho(def, Body(Jwt(Claims(kOther, kOther, "/x")), kOther)).ok());
}

TEST(IdentityEchoTest, AbsentFieldsAreNotAMismatch) {
  const TokenKey client = Key(SelectorKind::kClientId, kClient);
  EXPECT_TRUE(CheckIdentityEcho(client, Body(Jwt(Claims("", "", "")), "")).ok());
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kObjectId, kClient), Body(Jwt(Claims("", "", "")), "")).ok());
  EXPECT_TRUE(CheckIdentityEcho(Key(SelectorKind::kResourceId, kMirid), Body(Jwt("{}"), "")).ok());
  // Non-string values are no evidence either.
  EXPECT_TRUE(CheckIdentityEcho(client, R"({"access_token":"a.b.c","client_id":7})").ok());
  EXPECT_TRUE(CheckIdentityEcho(client, Body(Jwt(R"({"appid":["x"],"oid":null})"), "")).ok());
}

TEST(IdentityEchoTest, MalformedTokensHaveNoClaims) {
  const TokenKey client = Key(SelectorKind::kClientId, kClient);
  for (const std::string& token : {std::string("opaque"), std::string("a.b"), std::string("a..c"),
                                   std::string("a.!!!!.c"), std::string("a.A.c"),  // impossible length
                                   "a." + Base64Url("not json") + ".c", "a." + Base64Url("[1,2]") + ".c",
                                   "a." + Base64Url(std::string(100, '[')) + ".c",
                                   "a." + Base64Url(std::string("{\"appid\":\"\xff\"}")) + ".c"}) {
    EXPECT_TRUE(CheckIdentityEcho(client, Body(token, "")).ok()) << token;
  }
  // The body's client_id still counts when the token is opaque.
  EXPECT_FALSE(CheckIdentityEcho(client, Body("opaque", kOther)).ok());
  // Padding is tolerated.
  EXPECT_FALSE(CheckIdentityEcho(client, Body("h." + Base64Url(Claims(kOther, "", "")) + "==.s", "")).ok());
}

TEST(IdentityEchoTest, HugeClaimsAreIgnored) {
  const TokenKey client = Key(SelectorKind::kClientId, kClient);
  nlohmann::json claims = {{"appid", kOther}, {"filler", std::string(kMaxJwtClaimsBytes, 'x')}};
  EXPECT_TRUE(CheckIdentityEcho(client, Body(Jwt(claims.dump()), "")).ok()) << "over the bound: no claims";
  claims["filler"] = std::string(kMaxJwtClaimsBytes / 2, 'x');
  EXPECT_FALSE(CheckIdentityEcho(client, Body(Jwt(claims.dump()), "")).ok()) << "within it: read";
}

TEST(IdentityEchoTest, BodiesThatAreNotObjectsHaveNothingToCompare) {
  const TokenKey client = Key(SelectorKind::kClientId, kClient);
  EXPECT_TRUE(CheckIdentityEcho(client, "").ok());
  EXPECT_TRUE(CheckIdentityEcho(client, "[]").ok());
  EXPECT_TRUE(CheckIdentityEcho(client, std::string(1000, '{')).ok());
}

}  // namespace
}  // namespace mi
