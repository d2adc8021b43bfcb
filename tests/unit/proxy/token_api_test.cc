// The token API's request handling and error mapping with a fake broker: no
// sockets. (The same behaviour end to end is in tests/integration.)
#include "proxy/token_api.h"

#include <gtest/gtest.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "agent/base/event_loop.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"
#include "tests/fakes/loopback.h"

namespace mi::proxy {
namespace {

class FakeBroker : public TokenBroker {
 public:
  const Token* Lookup(const TokenKey& key) override {
    lookups.push_back(key);
    return cached.get();
  }
  void Get(const TokenKey& key, Callback callback, StillWaiting) override {
    gets.push_back(key);
    callback(next);
  }
  std::shared_ptr<const Token> cached;
  TokenResult next;
  std::vector<TokenKey> lookups;
  std::vector<TokenKey> gets;
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

// --- through a real loopback server -------------------------------------------------

namespace mi::proxy {
namespace {

// Presents every request as if it came from another host: the loopback check is
// the API's, so this exercises it without a second network.
class RemotePeer : public HttpHandler {
 public:
  explicit RemotePeer(HttpHandler* inner) : inner_(inner) {}
  void OnRequest(HttpRequest& request, Responder responder) override {
    request.peer_is_loopback = false;
    request.peer = "10.1.2.3:4567";
    inner_->OnRequest(request, std::move(responder));
  }

 private:
  HttpHandler* inner_;
};

struct LoopbackFixture {
  EventLoop loop;
  Logger logger;
  FakeBroker broker;

  // Sends `raw` to a server running `handler` and returns the raw answer.
  std::string Exchange(HttpHandler* handler, const std::string& raw) {
    return ExchangeAll(handler, {raw}).at(0);
  }

  // Sends each of `raws` on a connection of its own; returns the raw answers.
  std::vector<std::string> ExchangeAll(HttpHandler* handler, const std::vector<std::string>& raws) {
    std::vector<std::string> answers;
    {
      HttpServer server(loop.uv(), ServerLimits(), handler, &logger);
      EXPECT_TRUE(server.Listen("127.0.0.1", 0).ok());
      const uint16_t port = server.BoundPorts().at(0);
      std::thread client([&] {
        for (const std::string& raw : raws) answers.push_back(testing::SendAndReceive(port, raw));
        loop.Post([&] { loop.Stop(); });
      });
      loop.Run();
      client.join();
    }
    EXPECT_TRUE(loop.Close());
    return answers;
  }
};

TokenApi::Options AllowRemote() {
  TokenApi::Options o;
  o.allow_remote = true;
  return o;
}

// "400 invalid_request" from a raw answer: the status code and the "error" field.
std::string StatusAndError(const std::string& answer) {
  if (answer.size() < 12) return "no answer";
  std::string out = answer.substr(9, 3);
  size_t body = answer.find("\r\n\r\n");
  auto j = nlohmann::json::parse(body == std::string::npos ? "" : answer.substr(body + 4), nullptr, false);
  if (j.is_object() && j.contains("error")) out += " " + j["error"].get<std::string>();
  return out;
}

TEST(TokenApiLoopbackTest, NonLoopbackPeerGets401UnauthorizedClient) {
  LoopbackFixture f;
  TokenApi api(&f.broker, &f.loop, TokenApi::Options{});
  RemotePeer remote(&api);
  std::string answer = f.Exchange(
      &remote, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"error\":\"unauthorized_client\""), std::string::npos) << answer;
  EXPECT_TRUE(f.broker.lookups.empty()) << "refused before the cache is consulted";
}

TEST(TokenApiLoopbackTest, AllowRemoteServesNonLoopbackPeers) {
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.loop, AllowRemote());
  RemotePeer remote(&api);
  std::string answer = f.Exchange(
      &remote, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 500", 0), 0u) << answer;
  EXPECT_EQ(f.broker.gets.size(), 1u);
}

TEST(TokenApiLoopbackTest, RealLoopbackPeerIsServed) {
  LoopbackFixture f;
  f.broker.cached = *Token::FromImdsBody(FakeUpstream::TokenBody("tok", ToEpochSeconds(f.loop.Now()) + 3600));
  TokenApi api(&f.broker, &f.loop, TokenApi::Options{});
  std::string answer = f.Exchange(
      &api, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"access_token\":\"tok\""), std::string::npos);
}

// --- Host, Origin (DNS rebinding) -----------------------------------------------------

std::string Get(const std::string& head, const std::string& target = "/oauth2/token?resource=x",
                const std::string& version = "HTTP/1.1") {
  return "GET " + target + " " + version + "\r\n" + head + "Metadata: true\r\nConnection: close\r\n\r\n";
}

struct HostCase {
  std::string request;
  std::string want;  // StatusAndError()
};

void ExpectAnswers(LoopbackFixture& f, TokenApi& api, const std::vector<HostCase>& cases) {
  std::vector<std::string> raws;
  for (const auto& c : cases) raws.push_back(c.request);
  std::vector<std::string> answers = f.ExchangeAll(&api, raws);
  ASSERT_EQ(answers.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(StatusAndError(answers[i]), cases[i].want) << cases[i].request << "\n--\n" << answers[i];
  }
}

TEST(TokenApiHostTest, ForeignHostIsRefusedBeforeTheCache) {
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.loop, TokenApi::Options{});
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
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.loop, TokenApi::Options{});
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
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.loop, TokenApi::Options{});
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
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.loop, TokenApi::Options{});
  ExpectAnswers(f, api,
                {
                    {Get("Host: localhost\r\nOrigin: http://attacker.example\r\n"), "400 invalid_request"},
                    {Get("Host: localhost\r\nOrigin: null\r\n"), "400 invalid_request"},
                    {Get("Host: localhost\r\norigin: http://localhost:50342\r\n"), "400 invalid_request"},
                });
  EXPECT_TRUE(f.broker.gets.empty());
}

TEST(TokenApiHostTest, OtherChecksKeepTheirAnswersForAGoodHost) {
  LoopbackFixture f;
  TokenApi api(&f.broker, &f.loop, TokenApi::Options{});
  ExpectAnswers(f, api,
                {
                    {"GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                     "400 bad_request_102"},
                    {Get("Host: localhost\r\n", "/nowhere"), "401 unknown_source"},
                    {Get("Host: localhost\r\n", "/oauth2/token"), "400 invalid_request"},
                });
}

TEST(TokenApiHostTest, ListenAddressesAndAllowedHostsAreServed) {
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi::Options options;
  options.listen_hosts = {"10.0.0.4", "fd00::4", "[fd00::5]"};
  options.allowed_hosts = {"MyVM.internal", "[fd00::6]"};
  TokenApi api(&f.broker, &f.loop, options);
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
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi::Options options;
  options.allowed_hosts = {"old.internal"};
  TokenApi api(&f.broker, &f.loop, options);
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
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi::Options options;
  options.absolute_form = true;
  options.allowed_hosts = {"myvm.internal"};
  TokenApi api(&f.broker, &f.loop, options);
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
  LoopbackFixture f;
  TokenApi api(&f.broker, &f.loop, TokenApi::Options{});
  std::string answer = f.Exchange(
      &api,
      "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "a\r\nresource=x\r\n0\r\nMetadata: true\r\n\r\n");
  EXPECT_EQ(StatusAndError(answer), "400 bad_request_102") << answer;
  EXPECT_TRUE(f.broker.lookups.empty());
}

}  // namespace
}  // namespace mi::proxy
