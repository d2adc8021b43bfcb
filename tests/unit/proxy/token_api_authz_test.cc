// The token API's authorization gate and audit hook (issue #13) with a fake
// gate, a fake broker and a recording audit sink: where the decision sits
// (after validation, before the cache), the 401 body, audit mode answering as
// off, the audit events, and mode off untouched.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "proxy/http/request_parser.h"
#include "proxy/token_api.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"
#include "tests/fakes/recording_sink.h"

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

// Decides `decision` now (sync) or only through Await (later, run by the test).
class FakeGate : public AccessGate {
 public:
  bool Decide(const PeerCredentials& peer, const TokenKey& key, Decision* decision,
              const CallerInfo** caller) override {
    ++decides;
    last_key = key;
    if (!sync) return false;
    info.peer = peer;
    *decision = this->decision;
    *caller = &info;
    return true;
  }
  void Await(const PeerCredentials& peer, const TokenKey&, Callback done) override {
    info.peer = peer;
    awaiting.push_back(std::move(done));
  }
  void Finish() {
    for (auto& done : awaiting) done(decision, info);
    awaiting.clear();
  }
  bool sync = true;
  Decision decision = Decision::kAllow;
  CallerInfo info;
  int decides = 0;
  TokenKey last_key;
  std::vector<Callback> awaiting;
};

struct Recorded {
  std::string listener, dialect, identity, resource;
  Decision decision;
  CacheOutcome cache;
  int status;
  bool token;
  uint32_t uid;
  std::string user;
};

class FakeAuditSink : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    events.push_back({std::string(e.listener), std::string(e.dialect), e.key->Describe(), e.key->resource,
                      e.decision, e.cache, e.status, e.token != nullptr, e.caller->peer.uid, e.caller->user});
  }
  std::vector<Recorded> events;
};

constexpr const char* kRequest =
    "GET /oauth2/token?resource=https://vault.azure.net&client_id=11111111-2222-3333-4444-555555555555 HTTP/1.1\r\n"
    "Host: localhost\r\nMetadata: true\r\n\r\n";

struct Fixture {
  Fixture() : api(&broker, &time, TokenApi::Options{}) {
    token = Token::FromImdsBody(FakeUpstream::TokenBody("tok", ToEpochSeconds(time.Now()) + 3600)).value();
  }
  std::shared_ptr<testing::RecordingSink> Call(const std::string& raw = kRequest, uint32_t uid = 1000,
                                               HttpRequest::Transport transport = HttpRequest::Transport::kTcp) {
    RequestParser parser{RequestParser::Limits{}};
    RequestParser::Event event;
    parser.Feed(raw, &event);
    EXPECT_EQ(event, RequestParser::Event::kRequest);
    auto sink = std::make_shared<testing::RecordingSink>();
    HttpRequest& request = parser.request();
    request.peer_is_loopback = true;
    request.peer = "127.0.0.1:40000";
    request.caller.known = true;
    request.caller.uid = uid;
    request.caller.inode = 77;
    request.transport = transport;
    api.OnRequest(request, Responder(sink));
    return sink;
  }
  FakeTime time;
  FakeBroker broker;
  FakeGate gate;
  FakeAuditSink audit;
  TokenApi api;
  std::shared_ptr<const Token> token;
};

TEST(TokenApiAuthzTest, DeniedUnderEnforceIs401NamingIdentityAndResourceBeforeTheCache) {
  Fixture f;
  f.broker.cached = f.token;
  f.gate.decision = Decision::kDeny;
  f.api.set_access_gate(&f.gate);
  auto sink = f.Call();
  ASSERT_EQ(sink->status(), 401);
  const auto j = sink->Json();
  EXPECT_EQ(j["error"], "unauthorized_client");
  const std::string why = j["error_description"];
  EXPECT_NE(why.find("client_id=11111111-2222-3333-4444-555555555555"), std::string::npos) << why;
  EXPECT_NE(why.find("https://vault.azure.net"), std::string::npos) << why;
  EXPECT_EQ(why.find("rule"), std::string::npos) << "the rules are not named: " << why;
  EXPECT_TRUE(f.broker.lookups.empty()) << "a cache hit is checked like a miss";
  EXPECT_TRUE(f.broker.gets.empty());
  EXPECT_EQ(f.api.counters().Get(Route::kLegacy, 401), 1u);
}

TEST(TokenApiAuthzTest, TheGateSeesTheValidatedKey) {
  Fixture f;
  f.api.set_access_gate(&f.gate);
  f.broker.cached = f.token;
  f.Call("GET /oauth2/token?resource=r&client_id=11111111-2222-3333-4444-55555555555A HTTP/1.1\r\n"
         "Host: localhost\r\nMetadata: true\r\n\r\n");
  EXPECT_EQ(f.gate.last_key.id, "11111111-2222-3333-4444-55555555555a");
  // Invalid parameters are answered before the gate.
  auto bad = f.Call("GET /oauth2/token?client_id=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n");
  EXPECT_EQ(bad->status(), 400);
  EXPECT_EQ(f.gate.decides, 1);
}

TEST(TokenApiAuthzTest, WouldDenyUnderAuditAnswersAsOff) {
  Fixture f;
  f.broker.cached = f.token;
  f.gate.decision = Decision::kWouldDeny;
  f.api.set_access_gate(&f.gate);
  f.api.set_audit_sink(&f.audit);
  auto sink = f.Call();
  EXPECT_EQ(sink->status(), 200);
  EXPECT_EQ(sink->Json()["access_token"], "tok");
  ASSERT_EQ(f.audit.events.size(), 1u);
  EXPECT_EQ(f.audit.events[0].decision, Decision::kWouldDeny);
  EXPECT_EQ(f.audit.events[0].cache, CacheOutcome::kHit);
}

TEST(TokenApiAuthzTest, AsyncDecisionServesOrDeniesWhenTheLookupFinishes) {
  Fixture f;
  f.gate.sync = false;
  f.api.set_access_gate(&f.gate);
  f.broker.cached = f.token;
  auto allowed = f.Call();
  EXPECT_FALSE(allowed->answered()) << "waits for the lookup";
  EXPECT_TRUE(f.broker.lookups.empty());
  f.gate.Finish();
  EXPECT_EQ(allowed->status(), 200);

  f.gate.decision = Decision::kDeny;
  auto denied = f.Call();
  f.gate.Finish();
  EXPECT_EQ(denied->status(), 401);
  EXPECT_EQ(f.broker.lookups.size(), 1u);
}

TEST(TokenApiAuthzTest, CallerThatHungUpDuringTheLookupIsDroppedQuietly) {
  Fixture f;
  f.gate.sync = false;
  f.api.set_access_gate(&f.gate);
  f.api.set_audit_sink(&f.audit);
  f.broker.cached = f.token;
  auto sink = f.Call();
  sink->gone = true;
  f.gate.Finish();
  EXPECT_FALSE(sink->answered());
  EXPECT_TRUE(f.broker.lookups.empty()) << "never reaches the cache";
  EXPECT_TRUE(f.audit.events.empty());
}

TEST(TokenApiAuthzTest, AuditEventsForHitMissCoalescedAndDeny) {
  Fixture f;
  f.api.set_access_gate(&f.gate);
  f.api.set_audit_sink(&f.audit);
  f.gate.info.user = "billing";
  f.broker.cached = f.token;
  f.Call(kRequest, 1000, HttpRequest::Transport::kUnix);  // hit
  f.broker.cached = nullptr;
  f.broker.next.kind = TokenResult::Kind::kToken;
  f.broker.next.token = f.token;
  f.Call();  // miss
  f.broker.next.coalesced = true;
  f.Call();  // coalesced
  f.broker.next = TokenResult{};
  f.broker.next.kind = TokenResult::Kind::kUnavailable;
  f.Call();  // miss, 500
  f.gate.decision = Decision::kDeny;
  f.Call();
  ASSERT_EQ(f.audit.events.size(), 5u);
  const auto& e = f.audit.events;
  EXPECT_EQ(e[0].listener, "unix");
  EXPECT_EQ(e[1].listener, "tcp");
  EXPECT_EQ(e[0].dialect, "legacy");
  EXPECT_EQ(e[0].identity, "client_id=11111111-2222-3333-4444-555555555555");
  EXPECT_EQ(e[0].resource, "https://vault.azure.net");
  EXPECT_EQ(e[0].uid, 1000u);
  EXPECT_EQ(e[0].user, "billing");
  EXPECT_EQ(e[1].user, "billing") << "the miss keeps a copy of the caller";
  EXPECT_EQ(e[0].cache, CacheOutcome::kHit);
  EXPECT_EQ(e[1].cache, CacheOutcome::kMiss);
  EXPECT_EQ(e[2].cache, CacheOutcome::kCoalesced);
  EXPECT_EQ(e[3].cache, CacheOutcome::kMiss);
  EXPECT_EQ(e[4].cache, CacheOutcome::kNone);
  EXPECT_EQ(e[0].status, 200);
  EXPECT_EQ(e[3].status, 500);
  EXPECT_EQ(e[4].status, 401);
  EXPECT_TRUE(e[0].token && e[1].token && e[2].token);
  EXPECT_FALSE(e[3].token || e[4].token);
  EXPECT_EQ(e[4].decision, Decision::kDeny);
  EXPECT_EQ(e[0].decision, Decision::kAllow);
}

TEST(TokenApiAuthzTest, ModeOffWithoutAuditAllBuildsNoEvents) {
  Fixture f;
  f.api.set_audit_sink(&f.audit);
  f.broker.cached = f.token;
  EXPECT_EQ(f.Call()->status(), 200);
  EXPECT_TRUE(f.audit.events.empty());
  EXPECT_EQ(f.gate.decides, 0);

  TokenApi::Options o;
  o.audit_all = true;
  f.api.set_options(o);
  f.Call(kRequest, 4242);
  ASSERT_EQ(f.audit.events.size(), 1u);
  EXPECT_EQ(f.audit.events[0].uid, 4242u) << "the peer as the listener saw it";
  EXPECT_EQ(f.audit.events[0].decision, Decision::kAllow);
}

TEST(TokenApiAuthzTest, NamesOfDecisionsAndCacheOutcomes) {
  EXPECT_STREQ(DecisionName(Decision::kAllow), "allow");
  EXPECT_STREQ(DecisionName(Decision::kDeny), "deny");
  EXPECT_STREQ(DecisionName(Decision::kWouldDeny), "would_deny");
  EXPECT_STREQ(CacheOutcomeName(CacheOutcome::kNone), "none");
  EXPECT_STREQ(CacheOutcomeName(CacheOutcome::kHit), "hit");
  EXPECT_STREQ(CacheOutcomeName(CacheOutcome::kMiss), "miss");
  EXPECT_STREQ(CacheOutcomeName(CacheOutcome::kCoalesced), "coalesced");
}

}  // namespace
}  // namespace mi::proxy
