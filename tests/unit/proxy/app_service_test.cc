// The App Service / Functions dialects (issue #14 point 4): routing, the
// secret checks and the answer's shape, with a fake broker and no sockets.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "proxy/http/request_parser.h"
#include "proxy/request_params.h"
#include "proxy/token_api.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"
#include "tests/fakes/recording_sink.h"

namespace mi::proxy {
namespace {

constexpr char kSecret[] = "0123456789abcdef0123456789abcdef";

class FakeBroker : public TokenBroker {
 public:
  const Token* Lookup(const TokenKey& key) override {
    lookups.push_back(key);
    return cached.get();
  }
  void Get(const TokenKey& key, CallerTag, Callback callback, StillWaiting) override {
    gets.push_back(key);
    callback(next);
  }
  std::shared_ptr<const Token> cached;
  TokenResult next;
  std::vector<TokenKey> lookups;
  std::vector<TokenKey> gets;
};

struct Fixture {
  FakeTime time;
  FakeBroker broker;
  TokenApi api{&broker, &time, Options(kSecret)};

  static TokenApi::Options Options(const std::string& secret) {
    TokenApi::Options o;
    o.app_service_secret = secret;
    return o;
  }
  Fixture() {
    broker.cached = Token::FromImdsBody(FakeUpstream::TokenBody("tok", 1900000000, "https://vault.azure.net")).value();
  }
  std::shared_ptr<testing::RecordingSink> Call(const std::string& target, const std::string& headers) {
    const std::string raw = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1:50342\r\n" + headers + "\r\n";
    RequestParser parser{RequestParser::Limits{}};
    RequestParser::Event event;
    parser.Feed(raw, &event);
    EXPECT_EQ(event, RequestParser::Event::kRequest) << raw;
    auto sink = std::make_shared<testing::RecordingSink>();
    HttpRequest& request = parser.request();
    request.peer_is_loopback = true;
    request.peer = "127.0.0.1:40000";
    api.OnRequest(request, Responder(sink));
    return sink;
  }
};

std::string StatusAndError(const testing::RecordingSink& sink) {
  if (!sink.answered()) return "no answer";
  std::string out = std::to_string(sink.status());
  auto j = sink.Json();
  if (j.is_object() && j.contains("error")) out += " " + j["error"].get<std::string>();
  return out;
}

const std::string k2019 = "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net";
const std::string k2017 = "/MSI/token?resource=https://vault.azure.net&api-version=2017-09-01";
const std::string kIdentityHeader = std::string("X-IDENTITY-HEADER: ") + kSecret + "\r\n";
const std::string kSecretHeader = std::string("Secret: ") + kSecret + "\r\n";

TEST(AppServiceRouteTest, BothPathsAreOneRoute) {
  std::string_view q;
  EXPECT_EQ(ClassifyTarget("/msi/token?api-version=2019-08-01", false, &q), Route::kAppService);
  EXPECT_EQ(q, "api-version=2019-08-01");
  EXPECT_EQ(ClassifyTarget("/MSI/token/?resource=x", false, &q), Route::kAppService);
  EXPECT_EQ(ClassifyTarget("/Msi/Token", false, &q), Route::kUnknown);
  EXPECT_EQ(ClassifyTarget("/msi/tokens", false, &q), Route::kUnknown);
  EXPECT_STREQ(RouteName(Route::kAppService), "app_service");
}

TEST(AppServiceRouteTest, TheDialectsSelectorSpellings) {
  auto p = ParseTokenParams("resource=r&principal_id=11111111-2222-3333-4444-555555555555", "", /*app_service=*/true);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->key.Describe(), MakeTokenKey({"", "11111111-2222-3333-4444-555555555555", "", ""}, "r").value().Describe());
  p = ParseTokenParams("resource=r&clientid=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee&api-version=2017-09-01", "", true);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->key.Describe(), MakeTokenKey({"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "", "", ""}, "r").value().Describe());
  EXPECT_EQ(p->api_version, "2017-09-01");
  EXPECT_FALSE(ParseTokenParams("resource=r&clientid=11111111-2222-3333-4444-555555555555&client_id=11111111-2222-3333-4444-555555555555", "", true).ok()) << "one field, given twice";
  EXPECT_FALSE(ParseTokenParams("resource=r&principal_id=11111111-2222-3333-4444-555555555555&client_id=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "", true).ok()) << "two selectors";
  // Elsewhere these names are unknown fields, ignored as before.
  p = ParseTokenParams("resource=r&clientid=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee&principal_id=11111111-2222-3333-4444-555555555555", "");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->key.Describe(), MakeTokenKey({}, "r").value().Describe());
}

TEST(AppServiceApiTest, Version2019AnswersTheDialectsShape) {
  Fixture f;
  auto sink = f.Call(k2019 + "&client_id=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", kIdentityHeader);
  ASSERT_EQ(sink->status(), 200) << sink->body();
  EXPECT_EQ(sink->body(),
            R"({"access_token":"tok","expires_on":"1900000000","resource":"https://vault.azure.net",)"
            R"("token_type":"Bearer","client_id":"c"})");
  ASSERT_EQ(f.broker.lookups.size(), 1u);
  EXPECT_EQ(f.broker.lookups[0].Describe(), MakeTokenKey({"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "", "", ""}, "https://vault.azure.net").value().Describe());
  EXPECT_EQ(f.api.counters().Get(Route::kAppService, 200), 1u);
}

TEST(AppServiceApiTest, Version2017AnswersEpochSecondsAndAFetchRendersLikeAHit) {
  Fixture f;
  auto hit = f.Call(k2017, kSecretHeader);
  ASSERT_EQ(hit->status(), 200) << hit->body();
  EXPECT_EQ(hit->Json()["expires_on"], "1900000000");
  f.broker.next.kind = TokenResult::Kind::kToken;
  f.broker.next.token = f.broker.cached;
  f.broker.cached = nullptr;
  auto miss = f.Call(k2017, kSecretHeader);
  EXPECT_EQ(miss->body(), hit->body());
  EXPECT_EQ(f.broker.gets.size(), 1u);
}

TEST(AppServiceApiTest, NoMetadataHeaderNeededButTheSecretIs) {
  Fixture f;
  EXPECT_EQ(StatusAndError(*f.Call(k2019, "")), "401 unauthorized_client");
  EXPECT_EQ(StatusAndError(*f.Call(k2019, kSecretHeader + "Metadata: true\r\n")), "401 unauthorized_client");
  EXPECT_EQ(StatusAndError(*f.Call(k2019, "X-IDENTITY-HEADER: 0123456789abcdef0123456789abcdeX\r\n")),
            "401 unauthorized_client");
  EXPECT_EQ(StatusAndError(*f.Call(k2019, "X-IDENTITY-HEADER: 0123456789abcdef\r\n")), "401 unauthorized_client");
  EXPECT_EQ(StatusAndError(*f.Call(k2019, kIdentityHeader + kIdentityHeader)), "401 unauthorized_client");
  // Each version takes its own header.
  EXPECT_EQ(StatusAndError(*f.Call(k2019, kSecretHeader)), "401 unauthorized_client");
  EXPECT_EQ(StatusAndError(*f.Call(k2017, kIdentityHeader)), "401 unauthorized_client");
  EXPECT_TRUE(f.broker.lookups.empty()) << "refused before the cache";
  EXPECT_EQ(f.api.counters().Get(Route::kAppService, 401), 7u);
}

// MSI_ENDPOINT without a secret, with Metadata: true (msrestazure's
// get_msi_token off App Service, Cloud Shell's convention): the legacy API.
TEST(AppServiceApiTest, MetadataWithoutASecretIsTheLegacyApi) {
  Fixture f;
  auto sink = f.Call("/MSI/token?resource=https://vault.azure.net", "Metadata: true\r\n");
  ASSERT_EQ(sink->status(), 200) << sink->body();
  EXPECT_EQ(sink->Json()["refresh_token"], "") << "the legacy shape";
  EXPECT_EQ(f.api.counters().Get(Route::kLegacy, 200), 1u);
  EXPECT_EQ(StatusAndError(*f.Call("/MSI/token?resource=r", "Metadata: false\r\n")), "400 bad_request_102");
}

TEST(AppServiceApiTest, ApiVersionIsRequiredAndChecked) {
  Fixture f;
  EXPECT_EQ(StatusAndError(*f.Call("/msi/token?resource=r", kIdentityHeader)), "400 invalid_request");
  EXPECT_EQ(StatusAndError(*f.Call("/msi/token?resource=r&api-version=2018-02-01", kIdentityHeader)),
            "400 invalid_request");
  EXPECT_EQ(StatusAndError(*f.Call("/msi/token?api-version=2019-08-01", kIdentityHeader)), "400 invalid_request")
      << "resource is required";
}

TEST(AppServiceApiTest, HostOriginAndMethodChecksApply) {
  Fixture f;
  EXPECT_EQ(StatusAndError(*f.Call(k2019, kIdentityHeader + "Origin: http://evil.example\r\n")),
            "400 invalid_request");
  auto post = [&] {
    const std::string raw = "POST " + k2019 + " HTTP/1.1\r\nHost: localhost\r\n" + kIdentityHeader +
                            "Content-Length: 0\r\n\r\n";
    RequestParser parser{RequestParser::Limits{}};
    RequestParser::Event event;
    parser.Feed(raw, &event);
    auto sink = std::make_shared<testing::RecordingSink>();
    parser.request().peer_is_loopback = true;
    f.api.OnRequest(parser.request(), Responder(sink));
    return sink;
  };
  EXPECT_EQ(post()->status(), 405);
  EXPECT_TRUE(f.broker.lookups.empty());
}

TEST(AppServiceApiTest, WithoutASecretThePathsAreUnknown) {
  FakeTime time;
  FakeBroker broker;
  TokenApi api(&broker, &time, TokenApi::Options{});
  const std::string raw = "GET " + k2019 + " HTTP/1.1\r\nHost: localhost\r\nX-IDENTITY-HEADER: \r\n\r\n";
  RequestParser parser{RequestParser::Limits{}};
  RequestParser::Event event;
  parser.Feed(raw, &event);
  auto sink = std::make_shared<testing::RecordingSink>();
  parser.request().peer_is_loopback = true;
  api.OnRequest(parser.request(), Responder(sink));
  EXPECT_EQ(StatusAndError(*sink), "401 unknown_source");
  EXPECT_EQ(api.counters().Get(Route::kUnknown, 401), 1u);
}

TEST(AppServiceRenderTest, ClientIdIsLeftOutWhenImdsSentNone) {
  auto token = Token::FromImdsBody(R"({"access_token":"a\"b","expires_on":"1900000000","resource":"r"})");
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(TokenApi::RenderAppService(**token).body,
            R"({"access_token":"a\"b","expires_on":"1900000000","resource":"r","token_type":"Bearer"})");
}

}  // namespace
}  // namespace mi::proxy
