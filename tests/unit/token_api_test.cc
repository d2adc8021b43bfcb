// The token API's request handling and error mapping with a fake broker: no
// sockets. (The same behaviour end to end is in tests/integration.)
#include "proxy/token_api.h"

#include <gtest/gtest.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "agent/event_loop.h"
#include "tests/unit/fake_time.h"
#include "tests/unit/fake_upstream.h"
#include "tests/unit/socket_client.h"

namespace mi::proxy {
namespace {

class FakeBroker : public TokenBroker {
 public:
  const Token* Lookup(const TokenKey& key) override {
    lookups.push_back(key);
    return cached.get();
  }
  void Get(const TokenKey& key, Callback callback) override {
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
  std::string why;
  auto token = Token::FromImdsBody(FakeUpstream::TokenBody("abc", ToEpochSeconds(time.Now()) + 100), &why);
  ASSERT_TRUE(token) << why;
  TokenResult r;
  r.kind = TokenResult::Kind::kToken;
  r.token = token;
  HttpResponse resp = TokenApi::MapResult(r, time.Now() + std::chrono::seconds(40));
  EXPECT_EQ(resp.status, 200);
  auto j = nlohmann::json::parse(resp.body);
  EXPECT_EQ(j["expires_in"], "60");
  EXPECT_EQ(j["access_token"], "abc");
  EXPECT_EQ(j["refresh_token"], "");
  EXPECT_TRUE(j["expires_on"].is_string());
}

TEST(TokenApiMapTest, ExpiresOnAsNumberBecomesAString) {
  std::string why;
  auto token = Token::FromImdsBody(R"({"access_token":"t","expires_on":1900000000,"token_type":"Bearer"})", &why);
  ASSERT_TRUE(token) << why;
  std::string body;
  token->AppendBody(FromEpochSeconds(1900000000 - 5), &body);
  EXPECT_EQ(nlohmann::json::parse(body)["expires_on"], "1900000000");
}

TEST(TokenApiMapTest, MalformedImdsBodiesAreRejectedWithoutEchoingThem) {
  for (const char* bad : {"", "[]", "{", R"({"access_token":""})", R"({"access_token":"secret-tok"})",
                          R"({"access_token":"secret-tok","expires_on":"soon"})",
                          R"({"access_token":"secret-tok","expires_on":"1900000000","token_type":7})"}) {
    std::string why;
    EXPECT_FALSE(Token::FromImdsBody(bad, &why)) << bad;
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
    std::string answer;
    {
      HttpServer server(loop.uv(), ServerLimits(), handler, &logger);
      EXPECT_TRUE(server.Listen("127.0.0.1", 0).ok());
      const uint16_t port = server.BoundPorts().at(0);
      std::thread client([&] {
        answer = testing::SendAndReceive(port, raw);
        loop.Post([&] { loop.Stop(); });
      });
      loop.Run();
      client.join();
    }
    EXPECT_TRUE(loop.Close());
    return answer;
  }
};

TEST(TokenApiLoopbackTest, NonLoopbackPeerGets401UnauthorizedClient) {
  LoopbackFixture f;
  TokenApi api(&f.broker, &f.loop, TokenApiOptions{});
  RemotePeer remote(&api);
  std::string answer = f.Exchange(
      &remote, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"error\":\"unauthorized_client\""), std::string::npos) << answer;
  EXPECT_TRUE(f.broker.lookups.empty()) << "refused before the cache is consulted";
}

TEST(TokenApiLoopbackTest, AllowRemoteServesNonLoopbackPeers) {
  LoopbackFixture f;
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  TokenApi api(&f.broker, &f.loop, TokenApiOptions{/*allow_remote=*/true, false});
  RemotePeer remote(&api);
  std::string answer = f.Exchange(
      &remote, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 500", 0), 0u) << answer;
  EXPECT_EQ(f.broker.gets.size(), 1u);
}

TEST(TokenApiLoopbackTest, RealLoopbackPeerIsServed) {
  LoopbackFixture f;
  std::string why;
  f.broker.cached = Token::FromImdsBody(FakeUpstream::TokenBody("tok", ToEpochSeconds(f.loop.Now()) + 3600), &why);
  TokenApi api(&f.broker, &f.loop, TokenApiOptions{});
  std::string answer = f.Exchange(
      &api, "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"access_token\":\"tok\""), std::string::npos);
}

}  // namespace
}  // namespace mi::proxy
