// The token API's request handling and error mapping with a fake broker:
// requests parsed from bytes, answers into a RecordingSink, no sockets (but one
// test of the peer address a real socket reports). The same behaviour end to
// end is in tests/integration.
#include "proxy/token_api.h"

#include <gtest/gtest.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "agent/base/event_loop.h"
#include "proxy/http/http_server.h"
#include "proxy/http/request_parser.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"
#include "tests/fakes/loopback.h"
#include "tests/fakes/recording_sink.h"

namespace mi::proxy {
namespace {

class FakeBroker : public TokenBroker {
 public:
  const Token* Lookup(const TokenKey& key) override {
    lookups.push_back(key);
    return cached.get();
  }
  void Get(const TokenKey& key, CallerTag caller, Callback callback, StillWaiting) override {
    gets.push_back(key);
    callers.push_back(caller);
    callback(next);
  }
  std::shared_ptr<const Token> cached;
  TokenResult next;
  std::vector<TokenKey> lookups;
  std::vector<TokenKey> gets;
  std::vector<CallerTag> callers;
};

// Checks that need no connection: the result → HTTP mapping and token bodies.
TEST(TokenApiMapTest, TokenBodyHasStringValuesAndRecomputedExpiresIn) {
  FakeTime time;
  auto token = Token::FromImdsBody(FakeUpstream::TokenBody("abc", ToEpochSeconds(time.Now()) + 100));
  ASSERT_TRUE(token.ok()) << token.status().message();
  TokenResult r;
  r.kind = TokenResult::Kind::kToken;
  r.token = *token;
  HttpResponse resp = TokenApi::MapResult(r, time.Now() + std::chrono::seconds(40));
  EXPECT_EQ(resp.status, 200);
  auto j = nlohmann::json::parse(resp.body);
  EXPECT_EQ(j["expires_in"], "60");
  EXPECT_EQ(j["access_token"], "abc");
  EXPECT_EQ(j["refresh_token"], "");
  EXPECT_TRUE(j["expires_on"].is_string());
}

TEST(TokenApiMapTest, ExpiresOnAsNumberBecomesAString) {
  auto token = Token::FromImdsBody(R"({"access_token":"t","expires_on":1900000000,"token_type":"Bearer"})");
  ASSERT_TRUE(token.ok()) << token.status().message();
  std::string body;
  (*token)->AppendBody(FromEpochSeconds(1900000000 - 5), &body);
  EXPECT_EQ(nlohmann::json::parse(body)["expires_on"], "1900000000");
}

TEST(TokenApiMapTest, MalformedImdsBodiesAreRejectedWithoutEchoingThem) {
  for (const char* bad : {"", "[]", "{", R"({"access_token":""})", R"({"access_token":"secret-tok"})",
                          R"({"access_token":"secret-tok","expires_on":"soon"})",
                          R"({"access_token":"secret-tok","expires_on":"1900000000","token_type":7})"}) {
    auto token = Token::FromImdsBody(bad);
    EXPECT_FALSE(token.ok()) << bad;
    const std::string why = token.status().message();
    EXPECT_EQ(why.find("secret-tok"), std::string::npos) << "never a token in an error";
    EXPECT_FALSE(why.empty());
  }
}

TEST(TokenApiMapTest, ErrorsMapToTheDocumentedTable) {
  TokenResult rejected;
  rejected.kind = TokenResult::Kind::kRejected;
  rejected.status = 400;
  rejected.body = R"({"error":"invalid_request","error_description":"Identity not found"})";
  HttpResponse r = TokenApi::MapResult(rejected, TimePoint());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, rejected.body) << "IMDS's answer passes through";

  TokenResult shed;
  shed.kind = TokenResult::Kind::kShed;
  shed.retry_after_seconds = 3;
  r = TokenApi::MapResult(shed, TimePoint());
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(nlohmann::json::parse(r.body)["error"], "too_many_requests");
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Retry-After");
  EXPECT_EQ(r.headers[0].second, "3");

  TokenResult unavailable;
  unavailable.kind = TokenResult::Kind::kUnavailable;
  r = TokenApi::MapResult(unavailable, TimePoint());
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(nlohmann::json::parse(r.body)["error"], "unknown");
}

}  // namespace
}  // namespace mi::proxy

// --- requests as bytes, answers into a RecordingSink: no socket ------------------------

namespace mi::proxy {
namespace {

struct Fixture {
  FakeTime time;
  FakeBroker broker;
};

// Parses `raw` (one complete request) as the server would and hands it to
// `api` as coming from `peer`; returns what the API answered.
std::shared_ptr<testing::RecordingSink> Call(TokenApi& api, const std::string& raw, bool loopback = true,
                                             const std::string& peer = "127.0.0.1:40000") {
  RequestParser parser{RequestParser::Limits{}};
  RequestParser::Event event;
  size_t used = parser.Feed(raw, &event);
  EXPECT_EQ(event, RequestParser::Event::kRequest) << raw;
  EXPECT_EQ(used, raw.size()) << raw;
  auto sink = std::make_shared<testing::RecordingSink>();
  if (event != RequestParser::Event::kRequest) return sink;
  HttpRequest& request = parser.request();
  request.peer_is_loopback = loopback;
  request.peer = peer;
  api.OnRequest(request, Responder(sink));
  return sink;
}

TokenApi::Options AllowRemote() {
  TokenApi::Options o;
  o.allow_remote = true;
  return o;
}

// "400 invalid_request": the status code and the "error" field.
std::string StatusAndError(const testing::RecordingSink& sink) {
  if (!sink.answered()) return "no answer";
  std::string out = std::to_string(sink.status());
  auto j = sink.Json();
  if (j.is_object() && j.contains("error")) out += " " + j["error"].get<std::string>();
  return out;
}

TEST(TokenApiPeerTest, NonLoopbackPeerGets401UnauthorizedClient) {
  Fixture f;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  auto sink = Call(api, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n",
                   /*loopback=*/false, "10.1.2.3:4567");
  EXPECT_EQ(StatusAndError(*sink), "401 unauthorized_client");
  EXPECT_TRUE(f.broker.lookups.empty()) << "refused before the cache is consulted";
}

TEST(TokenApiPeerTest, AllowRemoteServesNonLoopbackPeers) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.time, AllowRemote());
  auto sink = Call(api, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n",
                   /*loopback=*/false, "10.1.2.3:4567");
  EXPECT_EQ(sink->status(), 500);
  EXPECT_EQ(f.broker.gets.size(), 1u);
}

TEST(TokenApiPeerTest, CacheHitAndFetchRenderTheSameToken) {
  Fixture f;
  std::string why;
  f.broker.cached = Token::FromImdsBody(FakeUpstream::TokenBody("tok", ToEpochSeconds(f.time.Now()) + 3600)).value();
  ASSERT_TRUE(f.broker.cached) << why;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  const std::string raw = "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n";
  auto hit = Call(api, raw);
  ASSERT_EQ(hit->status(), 200);
  EXPECT_EQ(hit->Json()["access_token"], "tok");
  EXPECT_TRUE(f.broker.gets.empty());

  f.broker.next.kind = TokenResult::Kind::kToken;
  f.broker.next.token = f.broker.cached;
  f.broker.cached = nullptr;
  auto miss = Call(api, raw);
  ASSERT_EQ(miss->status(), 200);
  EXPECT_EQ(miss->body(), hit->body()) << "one rendering for the hit and the miss";
  EXPECT_EQ(f.broker.gets.size(), 1u);
}

// The broker learns who asks (the fair share): the connection's caller as a
// CallerTag; callers the listener could not resolve share the unknown tag.
TEST(TokenApiPeerTest, AMissIsAttributedToTheConnectionsCaller) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  const std::string raw = "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n";
  for (bool known : {true, false}) {
    RequestParser parser{RequestParser::Limits{}};
    RequestParser::Event event;
    parser.Feed(raw, &event);
    ASSERT_EQ(event, RequestParser::Event::kRequest);
    HttpRequest& request = parser.request();
    request.peer_is_loopback = true;
    request.caller.known = known;
    request.caller.uid = 1234;
    request.caller.pid = 77;
    auto sink = std::make_shared<testing::RecordingSink>();
    api.OnRequest(request, Responder(sink));
    EXPECT_EQ(sink->status(), 500);
  }
  ASSERT_EQ(f.broker.callers.size(), 2u);
#ifdef _WIN32
  EXPECT_EQ(f.broker.callers[0], CallerTag::Pid(77));
#else
  EXPECT_EQ(f.broker.callers[0], CallerTag::Uid(1234));
#endif
  EXPECT_EQ(f.broker.callers[1], CallerTag::Unknown());
}

}  // namespace
}  // namespace mi::proxy

// --- through a real loopback server: the peer address the socket reports ------------

namespace mi::proxy {
namespace {

TEST(TokenApiLoopbackTest, RealLoopbackPeerIsServed) {
  EventLoop loop;
  Logger logger;
  FakeBroker broker;
  std::string why;
  broker.cached = Token::FromImdsBody(FakeUpstream::TokenBody("tok", ToEpochSeconds(loop.clock().Now()) + 3600)).value();
  TokenApi api(&broker, &loop.clock(), TokenApi::Options{});
  std::string answer;
  {
    HttpServer server(loop.uv(), ServerLimits(), api, logger);
    ASSERT_TRUE(server.Listen("127.0.0.1", 0).ok());
    const uint16_t port = server.BoundPorts().at(0);
    std::thread client([&] {
      answer = testing::SendAndReceive(
          port, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nConnection: close\r\n\r\n");
      loop.Post([&] { loop.Stop(); });
    });
    loop.Run();
    client.join();
  }
  EXPECT_TRUE(loop.Close());
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"access_token\":\"tok\""), std::string::npos);
}

}  // namespace
}  // namespace mi::proxy

namespace mi::proxy {
namespace {

// --- Host, Origin (DNS rebinding) -----------------------------------------------------

std::string Get(const std::string& head, const std::string& target = "/oauth2/token?resource=x",
                const std::string& version = "HTTP/1.1") {
  return "GET " + target + " " + version + "\r\n" + head + "Metadata: true\r\nConnection: close\r\n\r\n";
}

struct HostCase {
  std::string request;
  std::string want;  // StatusAndError()
};

void ExpectAnswers(Fixture&, TokenApi& api, const std::vector<HostCase>& cases) {
  for (const auto& c : cases) {
    auto sink = Call(api, c.request);
    EXPECT_EQ(StatusAndError(*sink), c.want) << c.request << "\n--\n" << (sink->answered() ? sink->body() : "");
  }
}

TEST(TokenApiHostTest, ForeignHostIsRefusedBeforeTheCache) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  ExpectAnswers(f, api,
                {
                    {Get("Host: attacker.example:50342\r\n"), "400 invalid_request"},
                    {Get("Host: attacker.example\r\n"), "400 invalid_request"},
                    {Get("Host: localhost:50342:1\r\n"), "400 invalid_request"},
                    {Get("Host: \r\n"), "400 invalid_request"},
                    // An unknown path with a bad Host is refused for the Host.
                    {Get("Host: attacker.example\r\n", "/nowhere"), "400 invalid_request"},
                    {Get("Host: 169.254.169.254\r\n"), "400 invalid_request"},
                });
  EXPECT_TRUE(f.broker.lookups.empty());
  EXPECT_TRUE(f.broker.gets.empty());
  EXPECT_EQ(api.counters().Get(Route::kLegacy, 400), 5u);
}

TEST(TokenApiHostTest, LoopbackNamesAreServedOnAnyPortInAnyCase) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  ExpectAnswers(f, api,
                {
                    {Get("Host: localhost\r\n"), "500 unknown"},
                    {Get("Host: LOCALHOST:50342\r\n"), "500 unknown"},
                    {Get("Host: 127.0.0.1:50342\r\n"), "500 unknown"},
                    {Get("Host: [::1]:50342\r\n"), "500 unknown"},
                    {Get("host: [::1]\r\n"), "500 unknown"},
                });
  EXPECT_EQ(f.broker.gets.size(), 5u);
}

TEST(TokenApiHostTest, HostIsRequiredOnceInHttp11NotInHttp10) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  ExpectAnswers(f, api,
                {
                    {Get(""), "400 invalid_request"},
                    {Get("Host: localhost\r\nHost: localhost\r\n"), "400 invalid_request"},
                    {Get("Host: localhost\r\nHost: attacker.example\r\n"), "400 invalid_request"},
                    {Get("", "/oauth2/token?resource=x", "HTTP/1.0"), "500 unknown"},
                    {Get("Host: attacker.example\r\n", "/oauth2/token?resource=x", "HTTP/1.0"),
                     "400 invalid_request"},
                });
  EXPECT_EQ(f.broker.gets.size(), 1u);
}

TEST(TokenApiHostTest, OriginIsRefused) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  ExpectAnswers(f, api,
                {
                    {Get("Host: localhost\r\nOrigin: http://attacker.example\r\n"), "400 invalid_request"},
                    {Get("Host: localhost\r\nOrigin: null\r\n"), "400 invalid_request"},
                    {Get("Host: localhost\r\norigin: http://localhost:50342\r\n"), "400 invalid_request"},
                });
  EXPECT_TRUE(f.broker.gets.empty());
}

TEST(TokenApiHostTest, OtherChecksKeepTheirAnswersForAGoodHost) {
  Fixture f;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  ExpectAnswers(f, api,
                {
                    {"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                     "400 bad_request_102"},
                    {Get("Host: localhost\r\n", "/nowhere"), "401 unknown_source"},
                    {Get("Host: localhost\r\n", "/oauth2/token"), "400 invalid_request"},
                });
}

TEST(TokenApiHostTest, ListenAddressesAndAllowedHostsAreServed) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi::Options options;
  options.listen_hosts = {"10.0.0.4", "fd00::4", "[fd00::5]"};
  options.allowed_hosts = {"MyVM.internal", "[fd00::6]"};
  TokenApi api(&f.broker, &f.time, options);
  ExpectAnswers(f, api,
                {
                    {Get("Host: 10.0.0.4:50342\r\n"), "500 unknown"},
                    {Get("Host: [fd00::4]:50342\r\n"), "500 unknown"},
                    {Get("Host: [FD00::5]\r\n"), "500 unknown"},
                    {Get("Host: myvm.internal:50342\r\n"), "500 unknown"},
                    {Get("Host: [fd00::6]:1\r\n"), "500 unknown"},
                    {Get("Host: fd00::4\r\n"), "400 invalid_request"},
                    {Get("Host: othervm.internal\r\n"), "400 invalid_request"},
                });
  EXPECT_EQ(f.broker.gets.size(), 5u);
}

TEST(TokenApiHostTest, SetOptionsReplacesTheAllowedHosts) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi::Options options;
  options.allowed_hosts = {"old.internal"};
  TokenApi api(&f.broker, &f.time, options);
  options.allowed_hosts = {"new.internal"};
  api.set_options(options);  // a reload
  ExpectAnswers(f, api,
                {
                    {Get("Host: new.internal\r\n"), "500 unknown"},
                    {Get("Host: old.internal\r\n"), "400 invalid_request"},
                    {Get("Host: localhost\r\n"), "500 unknown"},
                });
}

TEST(TokenApiHostTest, AbsoluteFormAuthorityMustBeImdsOrAllowed) {
  Fixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi::Options options;
  options.absolute_form = true;
  options.allowed_hosts = {"myvm.internal"};
  TokenApi api(&f.broker, &f.time, options);
  const std::string imds = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=1&resource=x";
  const std::string foreign = "http://attacker.example/metadata/identity/oauth2/token?api-version=1&resource=x";
  ExpectAnswers(f, api,
                {
                    {Get("Host: 169.254.169.254\r\n", imds), "500 unknown"},
                    {Get("Host: 169.254.169.254:80\r\n"), "500 unknown"},
                    {Get("Host: localhost\r\n", "http://myvm.internal:80/oauth2/token?resource=x"), "500 unknown"},
                    {Get("Host: localhost\r\n", foreign), "400 invalid_request"},
                    {Get("Host: attacker.example\r\n", foreign), "400 invalid_request"},
                    {Get("Host: localhost\r\n", "http://user@169.254.169.254/oauth2/token?resource=x"),
                     "400 invalid_request"},
                    {Get("", imds), "400 invalid_request"},  // HTTP/1.1 still needs Host
                });
  EXPECT_EQ(f.broker.gets.size(), 3u);
}

TEST(TokenApiHostTest, TrailerMetadataDoesNotPass) {
  Fixture f;
  TokenApi api(&f.broker, &f.time, TokenApi::Options{});
  auto answer = Call(
      api,
      "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "a\r\nresource=x\r\n0\r\nMetadata: true\r\n\r\n");
  EXPECT_EQ(StatusAndError(*answer), "400 bad_request_102");
  EXPECT_TRUE(f.broker.lookups.empty());
}

}  // namespace
}  // namespace mi::proxy
