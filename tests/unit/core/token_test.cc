// Token::FromImdsBody against hostile IMDS answers, the served body, and the
// error-body cleanup (issue #11 items 4 and 9).
#include "agent/token.h"

#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "agent/base/text.h"

namespace mi {
namespace {

using nlohmann::json;

std::string Nested(const std::string& head, size_t depth, const std::string& tail) {
  return head + std::string(depth, '[') + std::string(depth, ']') + tail;
}

std::string WithExpiresOn(const std::string& value) {
  return R"({"access_token":"secret-tok","expires_on":)" + value + R"(,"token_type":"Bearer"})";
}

// The reason FromImdsBody refuses `body`, "" when it accepts it.
std::string Why(const std::string& body) {
  StatusOr<std::shared_ptr<const Token>> token = Token::FromImdsBody(body);
  if (token.ok()) return "";
  EXPECT_FALSE(token.status().message().empty());
  return token.status().message();
}

TEST(TokenBodyTest, DeeplyNestedExtraFieldIsMalformedNotAStackOverflow) {
  // Used to overflow the stack while the extra field was serialised.
  const std::string body = Nested(R"({"access_token":"secret-tok","expires_on":"1900000000","x":)", 30000, "}");
  const std::string why = Why(body);
  EXPECT_NE(why, "");
  EXPECT_EQ(why.find("secret-tok"), std::string::npos);
  // Release builds survived 30,000 but not this many.
  EXPECT_NE(Why(Nested(R"({"access_token":"t","expires_on":"1900000000","x":)", 200000, "}")), "");
  // Nesting inside strings is text, not depth.
  EXPECT_EQ(Why(R"({"access_token":"t","expires_on":"1900000000","x":")" + std::string(1000, '[') + R"(\"["})"),
            "");
}

TEST(TokenBodyTest, ExpiresOnOutOfRangeOrNotAnIntegerIsMalformed) {
  for (const char* bad : {"9999999999999999", "9223372036854775807", "18446744073709551615", "1e300", "1.5", "-5",
                          "0", "253402300800", "\"9999999999999999\"", "\"253402300800\"", "\"-5\"", "\"1.5\"",
                          "\"1e3\"", "true", "null", "[1900000000]"}) {
    EXPECT_EQ(Why(WithExpiresOn(bad)), "IMDS answer has no usable expires_on (epoch seconds up to year 9999)") << bad;
  }
  for (const char* good : {"1900000000", "\"1900000000\"", "253402300799", "\"253402300799\""}) {
    EXPECT_EQ(Why(WithExpiresOn(good)), "") << good;
  }
}

TEST(TokenBodyTest, NotBeforeIsRangeCheckedToo) {
  for (const char* bad : {"9999999999999999", "1e300", "1.5", "-5", "\"soon\""}) {
    const std::string body =
        R"({"access_token":"t","expires_on":"1900000000","not_before":)" + std::string(bad) + "}";
    EXPECT_EQ(Why(body), "IMDS answer has a malformed not_before") << bad;
  }
  EXPECT_EQ(Why(R"({"access_token":"t","expires_on":"1900000000","not_before":"0"})"), "");
}

TEST(TokenBodyTest, TheLatestExpiryStillComputesExpiresIn) {
  auto token = Token::FromImdsBody(WithExpiresOn("253402300799"));
  ASSERT_TRUE(token.ok()) << token.status().message();
  std::string body;
  (*token)->AppendBody(FromEpochSeconds(253402300799 - 7), &body);
  EXPECT_EQ(json::parse(body)["expires_in"], "7");
}

TEST(TokenBodyTest, ExtraFieldsAreStringsOrDropped) {
  auto token = Token::FromImdsBody(
      R"({"access_token":"t","expires_on":"1900000000","client_id":"c","ext_expires_in":86399,)"
      R"("ratio":1.5,"flag":true,"off":false,"obj":{"a":1},"arr":[1,2],"nothing":null})");
  ASSERT_TRUE(token.ok()) << token.status().message();
  std::string body;
  (*token)->AppendBody(FromEpochSeconds(1900000000 - 60), &body);
  json j = json::parse(body);
  for (auto it = j.begin(); it != j.end(); ++it) EXPECT_TRUE(it->is_string()) << it.key() << " " << body;
  EXPECT_EQ(j["client_id"], "c");
  EXPECT_EQ(j["ext_expires_in"], "86399");
  EXPECT_EQ(j["ratio"], "1.5");
  EXPECT_EQ(j["flag"], "true");
  EXPECT_EQ(j["off"], "false");
  EXPECT_FALSE(j.contains("obj"));
  EXPECT_FALSE(j.contains("arr"));
  EXPECT_FALSE(j.contains("nothing"));
}

TEST(TokenBodyTest, NotAnObjectOrNoAccessTokenIsMalformedAndTheErrorHoldsNoBody) {
  for (const char* bad : {"", "secret-tok", "[\"secret-tok\"]", "\"secret-tok\"", "{\"access_token\":\"secret-tok\"",
                          R"({"token":"secret-tok","expires_on":"1900000000"})",
                          R"({"access_token":7,"expires_on":"1900000000"})"}) {
    StatusOr<std::shared_ptr<const Token>> token = Token::FromImdsBody(bad);
    EXPECT_FALSE(token.ok()) << bad;
    const std::string& why = token.status().message();
    EXPECT_FALSE(why.empty()) << bad;
    EXPECT_EQ(why.find("secret-tok"), std::string::npos) << why;
  }
}

TEST(TokenBodyTest, ExpiresInNeverGoesNegativeAndTheUpstreamValueIsNotServed) {
  StatusOr<std::shared_ptr<const Token>> parsed = Token::FromImdsBody(
      R"({"access_token":"t","expires_in":"86399","expires_on":"1900000000","token_type":"Bearer"})");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  const std::shared_ptr<const Token>& token = *parsed;
  std::string body;
  token->AppendBody(FromEpochSeconds(1900000000 - 100), &body);
  EXPECT_EQ(json::parse(body)["expires_in"], "100");
  body.clear();
  token->AppendBody(FromEpochSeconds(1900000000 + 100), &body);
  EXPECT_EQ(json::parse(body)["expires_in"], "0");
  EXPECT_LE(body.size(), token->body_size_hint());
}

// The cache tells a renewed token from the same one again by its fingerprint.
TEST(TokenBodyTest, TheFingerprintFollowsTheAccessTokenOnly) {
  auto a = Token::FromImdsBody(R"({"access_token":"tok-a","expires_on":"1900000000"})");
  auto again = Token::FromImdsBody(R"({"access_token":"tok-a","expires_on":"1900000100","x":"y"})");
  auto b = Token::FromImdsBody(R"({"access_token":"tok-b","expires_on":"1900000000"})");
  ASSERT_TRUE(a.ok() && again.ok() && b.ok());
  EXPECT_EQ((*a)->fingerprint(), (*again)->fingerprint());
  EXPECT_NE((*a)->fingerprint(), (*b)->fingerprint());
}

TEST(ImdsErrorBodyTest, AJsonErrorObjectPassesThroughUnchanged) {
  const std::string body = R"({"error":"invalid_request","error_description":"Identity not found"})";
  EXPECT_EQ(ImdsErrorBody(400, body), body);
  EXPECT_EQ(ImdsErrorCode(body), "invalid_request");
}

TEST(ImdsErrorBodyTest, AnythingElseIsWrappedAsAJsonError) {
  struct Case {
    std::string body;
    std::string description;
  };
  const Case cases[] = {
      {"<html>Forbidden</html>", "IMDS answered 403: <html>Forbidden</html>"},
      {"", "IMDS answered 403 with an empty body"},
      {"[1,2]", "IMDS answered 403: [1,2]"},
      {R"({"message":"no"})", R"(IMDS answered 403: {"message":"no"})"},
      {R"({"error":7})", R"(IMDS answered 403: {"error":7})"},
      {"bad\r\nline\x01\xff", "IMDS answered 403: bad\\r\\nline\\x01\\xff"},
  };
  for (const Case& c : cases) {
    const std::string out = ImdsErrorBody(403, c.body);
    json j = json::parse(out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << out;
    EXPECT_EQ(j.size(), 2u) << out;
    EXPECT_EQ(j["error"], "imds_error") << out;
    EXPECT_EQ(j["error_description"], c.description) << out;
    EXPECT_EQ(ImdsErrorCode(c.body), "http_error");
  }
}

TEST(ImdsErrorBodyTest, LongAndDeepBodiesAreBounded) {
  const std::string long_body(100000, 'x');
  json j = json::parse(ImdsErrorBody(400, long_body));
  const std::string description = j["error_description"];
  EXPECT_LE(description.size(), kMaxErrorDescriptionBytes + 40);
  EXPECT_EQ(description.substr(description.size() - 3), "...");

  // A deep body is not parsed (no stack overflow) and comes back wrapped.
  const std::string deep = Nested(R"({"error":"x","y":)", 30000, "}");
  json d = json::parse(ImdsErrorBody(400, deep), nullptr, false);
  ASSERT_TRUE(d.is_object());
  EXPECT_EQ(d["error"], "imds_error");
  EXPECT_EQ(ImdsErrorCode(deep), "http_error");
}

TEST(ImdsErrorBodyTest, TheErrorCodeIsEscapedAndBounded) {
  EXPECT_EQ(ImdsErrorCode(R"({"error":"bad\nforged line"})"), "bad\\nforged line");
  EXPECT_EQ(ImdsErrorCode(R"({"error":")" + std::string(300, 'e') + "\"}").size(), 128u);
}

TEST(ImdsErrorDescriptionTest, IsTheErrorDescriptionStringOrNothing) {
  EXPECT_EQ(ImdsErrorDescription(R"({"error":"invalid_request","error_description":"Identity not found"})"),
            "Identity not found");
  EXPECT_EQ(ImdsErrorDescription(R"({"error":"invalid_request"})"), "");
  EXPECT_EQ(ImdsErrorDescription(R"({"error_description":42})"), "");
  EXPECT_EQ(ImdsErrorDescription(R"({"error_description":{"a":"b"}})"), "");
  EXPECT_EQ(ImdsErrorDescription("<html>Identity not found</html>"), "");
  EXPECT_EQ(ImdsErrorDescription(""), "");
  EXPECT_EQ(ImdsErrorDescription(R"(["error_description"])"), "");
  EXPECT_EQ(ImdsErrorDescription(Nested(R"({"error_description":"x","y":)", 30000, "}")), "");
}

TEST(ImdsErrorDescriptionTest, ControlCharactersAndBadUtf8BecomeQuestionMarks) {
  // JSON escapes decode to raw controls (a forged log line, a terminal escape): replaced.
  EXPECT_EQ(ImdsErrorDescription(R"({"error_description":"bad\nforged\r\u001b[31mred\u007f\u009bx\t"})"),
            "bad?forged??[31mred??x?");
  EXPECT_EQ(CleanDescription(std::string("a\0b", 3)), "a?b");
  // Stray continuation, overlong, surrogate, past U+10FFFF, truncated: one '?' per byte.
  EXPECT_EQ(CleanDescription("\x80x"), "?x");
  EXPECT_EQ(CleanDescription("\xc0\xaf"), "??");
  EXPECT_EQ(CleanDescription("\xed\xa0\x80"), "???");
  EXPECT_EQ(CleanDescription("\xf4\x90\x80\x80"), "????");
  EXPECT_EQ(CleanDescription("ok \xe2\x82"), "ok ??");
  EXPECT_EQ(CleanDescription("\xff\xfe"), "??");
  // Good multi-byte characters stay.
  EXPECT_EQ(CleanDescription("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91");
  EXPECT_TRUE(IsValidUtf8(CleanDescription("\xc3\x28\xa0\xa1\xe2\x28\xa1")));
}

TEST(ImdsErrorDescriptionTest, IsBoundedWithoutCuttingACharacter) {
  EXPECT_EQ(CleanDescription(std::string(1000, 'x')).size(), kMaxDescriptionBytes);
  EXPECT_EQ(CleanDescription(std::string(kMaxDescriptionBytes, 'x')).size(), kMaxDescriptionBytes);
  // 255 ASCII bytes and a 3-byte character that would straddle the bound: dropped whole.
  const std::string straddling = std::string(kMaxDescriptionBytes - 1, 'x') + "\xe2\x82\xac" + "tail";
  const std::string cut = CleanDescription(straddling);
  EXPECT_EQ(cut, std::string(kMaxDescriptionBytes - 1, 'x'));
  // Many euro signs: the longest whole prefix.
  std::string euros;
  for (int i = 0; i < 200; ++i) euros += "\xe2\x82\xac";
  const std::string kept = CleanDescription(euros);
  EXPECT_EQ(kept.size(), kMaxDescriptionBytes / 3 * 3);
  EXPECT_TRUE(IsValidUtf8(kept));
  // The body may be as large as the body cap: only the bound is kept.
  const std::string big = R"({"error":"e","error_description":")" + std::string(1 << 20, 'd') + "\"}";
  EXPECT_EQ(ImdsErrorDescription(big).size(), kMaxDescriptionBytes);
}

}  // namespace
}  // namespace mi

namespace mi {
namespace {

TEST(TokenAuditFingerprintTest, IsTheSha256PrefixOfTheAccessToken) {
  // python3 -c "import hashlib; print(hashlib.sha256(b'secret-tok').hexdigest()[:16])"
  auto token = Token::FromImdsBody(R"({"access_token":"secret-tok","expires_on":"1900000000"})");
  ASSERT_TRUE(token.ok());
  EXPECT_STREQ((*token)->audit_fingerprint(), "d8604f8061371303");
  auto other = Token::FromImdsBody(R"({"access_token":"secret-tol","expires_on":"1900000000"})");
  ASSERT_TRUE(other.ok());
  EXPECT_STRNE((*other)->audit_fingerprint(), (*token)->audit_fingerprint());
}

}  // namespace
}  // namespace mi
