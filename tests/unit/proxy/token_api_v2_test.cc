// The IMDS v2 paths on the token API (issue #14 point 3): routing, the 404
// mode, the checks before forwarding, authorization as identity "default" and
// resource "<the path>", and the mapping of a forward's result to HTTP.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "proxy/http/request_parser.h"
#include "proxy/token_api.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/recording_sink.h"

namespace mi::proxy {
namespace {

class NoBroker : public TokenBroker {
 public:
  const Token* Lookup(const TokenKey&) override {
    ADD_FAILURE() << "the v2 paths never look in the cache";
    return nullptr;
  }
  void Get(const TokenKey&, CallerTag, Callback callback, StillWaiting) override {
    ADD_FAILURE() << "the v2 paths never fetch a token";
    callback(TokenResult());
  }
};

class FakeForwarder : public ImdsForwarder {
 public:
  void Forward(ForwardRequest request, CallerTag caller, Callback callback) override {
    requests.push_back(std::move(request));
    callers.push_back(caller);
    callback(next);
  }
  ForwardResult next;
  std::vector<ForwardRequest> requests;
  std::vector<CallerTag> callers;
};

class FakeGate : public AccessGate {
 public:
  bool Decide(const PeerCredentials&, const TokenKey& key, Decision* d, const CallerInfo** caller) override {
    keys.push_back(key);
    *d = decision;
    *caller = &info;
    return true;
  }
  void Await(const PeerCredentials&, const TokenKey&, Callback done) override { done(decision, info); }
  Decision decision = Decision::kAllow;
  CallerInfo info;
  std::vector<TokenKey> keys;
};

class TokenApiV2Test : public ::testing::Test {
 protected:
  TokenApiV2Test() : api_(&broker_, &time_, TokenApi::Options()) {
    api_.set_forwarder(&forwarder_);
    forwarder_.next.kind = ForwardResult::Kind::kHttp;
    forwarder_.next.status = 200;
    forwarder_.next.body = R"({"platform":"x"})";
    forwarder_.next.server = "Microsoft-IIS/10.0";
  }
  std::shared_ptr<testing::RecordingSink> Call(const std::string& raw) {
    RequestParser parser{RequestParser::Limits{}};
    RequestParser::Event event;
    EXPECT_EQ(parser.Feed(raw, &event), raw.size());
    EXPECT_EQ(event, RequestParser::Event::kRequest) << raw;
    auto sink = std::make_shared<testing::RecordingSink>();
    if (event != RequestParser::Event::kRequest) return sink;
    HttpRequest& request = parser.request();
    request.peer_is_loopback = true;
    request.peer = "127.0.0.1:40000";
    request.caller.known = true;
    request.caller.uid = 1234;
    api_.OnRequest(request, Responder(sink));
    return sink;
  }
  static std::string Get(const std::string& target, const std::string& headers = "Metadata: true\r\n") {
    return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + "\r\n";
  }

  FakeTime time_;
  NoBroker broker_;
  FakeForwarder forwarder_;
  TokenApi api_;
};

TEST(ClassifyV2Test, BothPathsAndTheirSlashVariants) {
  std::string_view q;
  EXPECT_EQ(ClassifyTarget("/metadata/identity/getplatformmetadata", false, &q), Route::kImdsV2);
  EXPECT_EQ(ClassifyTarget("/metadata/identity/issuecredential?cred-api-version=0.1", false, &q), Route::kImdsV2);
  EXPECT_EQ(q, "cred-api-version=0.1");
  EXPECT_EQ(ClassifyTarget("//metadata/identity/issuecredential/", false, &q), Route::kImdsV2);
  EXPECT_EQ(ClassifyTarget("/metadata/identity/issuecredentials", false, &q), Route::kUnknown);
  EXPECT_EQ(ClassifyTarget("/metadata/identity/getPlatformMetadata", false, &q), Route::kImdsV2);
  EXPECT_EQ(ClassifyTarget("/metadata/identity/getplatformmetadat", false, &q), Route::kUnknown);
  EXPECT_STREQ(RouteName(Route::kImdsV2), "imds_v2");
}

TEST_F(TokenApiV2Test, GetIsForwardedAsSentWithStatusBodyAndServer) {
  forwarder_.next.status = 404;
  auto sink = Call(Get("/metadata/identity/getplatformmetadata?cred-api-version=1.0&x=%41"));
  ASSERT_EQ(forwarder_.requests.size(), 1u);
  EXPECT_EQ(forwarder_.requests[0].method, "GET");
  EXPECT_EQ(forwarder_.requests[0].path_and_query, "/metadata/identity/getplatformmetadata?cred-api-version=1.0&x=%41");
  EXPECT_EQ(forwarder_.requests[0].body, "");
#ifndef _WIN32  // Windows tells callers apart by pid (agent/caller_tag.h)
  EXPECT_EQ(forwarder_.callers[0], CallerTag::Uid(1234));
#endif
  EXPECT_EQ(sink->status(), 404);
  EXPECT_EQ(sink->body(), R"({"platform":"x"})");
  EXPECT_EQ(sink->Header("Server"), "Microsoft-IIS/10.0");
  EXPECT_EQ(api_.counters().Get(Route::kImdsV2, 404), 1u);
}

TEST_F(TokenApiV2Test, PostKeepsItsBodyAndContentType) {
  const std::string body = R"({"cnf":{"jwk":{}}})";
  auto sink = Call("POST /metadata/identity/issuecredential?cred-api-version=0.1 HTTP/1.1\r\nHost: localhost\r\n"
                   "Metadata: true\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_EQ(forwarder_.requests.size(), 1u);
  EXPECT_EQ(forwarder_.requests[0].method, "POST");
  EXPECT_EQ(forwarder_.requests[0].body, body);
  EXPECT_EQ(forwarder_.requests[0].content_type, "application/json");
  EXPECT_EQ(sink->status(), 200);
}

TEST_F(TokenApiV2Test, AbsoluteFormTargetIsForwardedInOriginForm) {
  TokenApi::Options o;
  o.absolute_form = true;
  api_.set_options(o);
  Call(Get("http://169.254.169.254/metadata/identity/getplatformmetadata?a=1"));
  ASSERT_EQ(forwarder_.requests.size(), 1u);
  EXPECT_EQ(forwarder_.requests[0].path_and_query, "/metadata/identity/getplatformmetadata?a=1");
}

TEST_F(TokenApiV2Test, DisabledOrNoForwarderIsAFast404) {
  TokenApi::Options o;
  o.v2_passthrough = false;
  api_.set_options(o);
  auto sink = Call(Get("/metadata/identity/issuecredential"));
  EXPECT_EQ(sink->status(), 404);
  EXPECT_EQ(sink->Json()["error"], "not_found");
  api_.set_options(TokenApi::Options());
  api_.set_forwarder(nullptr);
  EXPECT_EQ(Call(Get("/metadata/identity/getplatformmetadata"))->status(), 404);
  EXPECT_TRUE(forwarder_.requests.empty());
}

TEST_F(TokenApiV2Test, ChecksBeforeForwarding) {
  EXPECT_EQ(Call(Get("/metadata/identity/getplatformmetadata", ""))->Json()["error"], "bad_request_102");
  EXPECT_EQ(Call(Get("/metadata/identity/getplatformmetadata", "Metadata: false\r\n"))->status(), 400);
  auto put = Call("PUT /metadata/identity/getplatformmetadata HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n"
                  "Content-Length: 0\r\n\r\n");
  EXPECT_EQ(put->status(), 405);
  EXPECT_EQ(put->Header("Allow"), "GET, POST");
  // Host/Origin as for the token routes.
  EXPECT_EQ(Call(Get("/metadata/identity/getplatformmetadata", "Metadata: true\r\nOrigin: http://a\r\n"))->status(),
            400);
  EXPECT_TRUE(forwarder_.requests.empty());
}

TEST_F(TokenApiV2Test, ForwardFailuresMapToJsonErrors) {
  forwarder_.next = ForwardResult();
  forwarder_.next.kind = ForwardResult::Kind::kShed;
  auto shed = Call(Get("/metadata/identity/getplatformmetadata"));
  EXPECT_EQ(shed->status(), 429);
  EXPECT_EQ(shed->Header("Retry-After"), "1");
  forwarder_.next.kind = ForwardResult::Kind::kTooLarge;
  auto big = Call(Get("/metadata/identity/getplatformmetadata"));
  EXPECT_EQ(big->status(), 502);
  EXPECT_EQ(big->Json()["error"], "bad_gateway");
  forwarder_.next.kind = ForwardResult::Kind::kUnavailable;
  forwarder_.next.description = "Connection refused";
  auto down = Call(Get("/metadata/identity/getplatformmetadata"));
  EXPECT_EQ(down->status(), 502);
  EXPECT_EQ(down->Header("Server"), "");
}

TEST_F(TokenApiV2Test, GateDecidesAsTheDefaultIdentityAndThePath) {
  FakeGate gate;
  api_.set_access_gate(&gate);
  Call(Get("/metadata/identity/issuecredential?cred-api-version=0.1"));
  ASSERT_EQ(gate.keys.size(), 1u);
  EXPECT_EQ(gate.keys[0].kind, SelectorKind::kDefault);
  EXPECT_EQ(gate.keys[0].resource, "/metadata/identity/issuecredential");
  EXPECT_EQ(forwarder_.requests.size(), 1u);
  Call(Get("/metadata/identity/IssueCredential"));
  ASSERT_EQ(gate.keys.size(), 2u);
  EXPECT_EQ(gate.keys[1].resource, "/metadata/identity/issuecredential") << "one rule covers every spelling";
  gate.decision = Decision::kDeny;
  auto denied = Call(Get("/metadata/identity/issuecredential"));
  EXPECT_EQ(denied->status(), 401);
  EXPECT_EQ(denied->Json()["error"], "unauthorized_client");
  EXPECT_EQ(forwarder_.requests.size(), 2u);
  api_.set_access_gate(nullptr);
}

}  // namespace
}  // namespace mi::proxy
