// The /status document and readiness from a real TokenCache on a fake clock and
// a fake upstream: states, times, ordering, the default view's caps, the full
// view's steps, and never a token. No HTTP: the routes are health_api_test.cc.
#include "agent/health.h"

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/audit_trail.h"
#include "agent/token_cache.h"
#include "agent/upstream_latency.h"
#include "agent/upstream_scheduler.h"
#include "tests/fakes/fake_core.h"
#include "tests/fakes/fake_random.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"

namespace mi {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using json = nlohmann::json;

const char kArm[] = "https://management.azure.com/";
const char kVault[] = "https://vault.azure.net";
const char kClientA[] = "0d1e2f30-aaaa-4bbb-8ccc-123456789abc";
const char kClientB[] = "11111111-2222-4333-8444-555555555555";

// Distinctive token strings: none of them (nor a long piece) may appear in output.
std::string Secret(int n) { return "eyJ0eXAiOiJKV1QiSECRETTOKEN" + std::to_string(n) + "xQzV9aB7cD3eF1gH5iJ"; }

class HealthModelTest : public ::testing::Test {
 protected:
  HealthModelTest() {
    HealthModel::Info& info = model_->info();
    info.version = "9.8.7";
    info.start_time = time_.Now();
    info.config_digest = "0123456789abcdef";
    info.listeners = {"127.0.0.1:50342", "[::1]:50342"};
    info.imds_endpoint = "http://169.254.169.254/metadata/identity/oauth2/token";
    model_->set_listening();
    model_->set_ready();
  }
  static TokenKey Key(const std::string& resource, SelectorKind kind = SelectorKind::kDefault,
                      const std::string& id = "") {
    StatusOr<TokenKey> k = MakeTokenKey(SelectorFields::Of(kind, id), resource);
    EXPECT_TRUE(k.ok()) << k.status().message();
    return k.ok() ? *k : TokenKey();
  }
  int64_t Epoch(Duration from_now) { return ToEpochSeconds(time_.Now() + from_now); }

  // A caller's miss answered by `response` after `latency`.
  void Fetch(const TokenKey& key, UpstreamResponse response, Duration latency = milliseconds(20)) {
    cache_->Get(key, [](const TokenResult&) {});
    time_.RunPending();
    ASSERT_EQ(upstream_.pending(), 1u);
    time_.Advance(latency);
    upstream_.Respond(std::move(response));
  }
  void Warm(const TokenKey& key, Duration life, int secret) {
    Fetch(key, FakeUpstream::Http(200, FakeUpstream::TokenBody(Secret(secret), Epoch(life), key.resource)));
  }

  json Status() {
    json j = json::parse(model_->StatusJson(time_.Now()), nullptr, false);
    EXPECT_FALSE(j.is_discarded());
    return j;
  }
  static const json* Entry(const json& status, const std::string& identity, const std::string& resource) {
    for (const json& id : status["identities"]) {
      if (id["identity"] != identity) continue;
      for (const json& r : id["resources"]) {
        if (r["resource"] == resource) return &r;
      }
    }
    return nullptr;
  }

  void ExpectNoSecrets(const std::string& text) {
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(text.find(Secret(i)), std::string::npos) << "token " << i << " in output";
    }
    EXPECT_EQ(text.find("SECRETTOKEN"), std::string::npos) << "a token fragment in output:\n" << text;
  }

  FakeCore core_;  // first: its cache outlives everything below that reads it
  FakeTime& time_ = core_.time;
  FakeUpstream& upstream_ = core_.upstream;
  UpstreamLatency& latency_ = core_.latency;
  std::unique_ptr<UpstreamScheduler>& scheduler_ = core_.scheduler;
  std::unique_ptr<TokenCache>& cache_ = core_.cache;
  std::unique_ptr<HealthModel>& model_ = core_.model;
};

TEST_F(HealthModelTest, EmptyAgentRendersWithoutIdentities) {
  json s = Status();
  EXPECT_EQ(s["version"], "9.8.7");
  EXPECT_EQ(s["start_time"], "2026-01-01T00:00:00Z");
  EXPECT_EQ(s["start_time_epoch"], 1767225600);
  EXPECT_EQ(s["uptime_seconds"], 0);
  EXPECT_EQ(s["config_digest"], "0123456789abcdef");
  EXPECT_EQ(s["listeners"].size(), 2u);
  EXPECT_EQ(s["ready"], true);
  EXPECT_FALSE(s.contains("not_ready_reason"));
  EXPECT_EQ(s["upstream"]["state"], "unknown");
  EXPECT_TRUE(s["upstream"]["last_success"].is_null());
  EXPECT_TRUE(s["upstream"]["last_error"].is_null());
  EXPECT_TRUE(s["upstream"]["throttled_until"].is_null());
  EXPECT_EQ(s["upstream"]["max_concurrent"], 3);
  EXPECT_EQ(s["identities"].size(), 0u);
}

TEST_F(HealthModelTest, ReloadShowsTheLastResult) {
  json s = Status();
  EXPECT_EQ(s["reload"], json::parse(R"({"result":"none","time":null,"time_epoch":null,"error":null})"));
  HealthModel::Info::Reload& r = model_->info().reload;
  r.result = HealthModel::Info::ReloadResult::kFailed;
  r.time = time_.Now();
  r.error = "/etc/mi-agent/config.d/10-x.json: port: expected an integer from 0 to 65535";
  s = Status();
  EXPECT_EQ(s["reload"]["result"], "failed");
  EXPECT_EQ(s["reload"]["time"], "2026-01-01T00:00:00Z");
  EXPECT_EQ(s["reload"]["time_epoch"], 1767225600);
  EXPECT_EQ(s["reload"]["error"], r.error);
  r.result = HealthModel::Info::ReloadResult::kOk;
  s = Status();
  EXPECT_EQ(s["reload"]["result"], "ok");
  EXPECT_TRUE(s["reload"]["error"].is_null());
}

TEST(HealthModelReadyTest, ListenersThenReadiness) {
  FakeCore core;
  HealthModel& model = *core.model;
  std::string why;
  EXPECT_FALSE(model.Ready(&why));
  EXPECT_EQ(why, "listeners are not up");
  model.set_listening();
  why.clear();
  EXPECT_FALSE(model.Ready(&why));
  EXPECT_EQ(why, "the first prefetch round has not finished");
  json s = json::parse(model.StatusJson(core.time.Now()));
  EXPECT_EQ(s["ready"], false);
  EXPECT_EQ(s["not_ready_reason"], "the first prefetch round has not finished");
  EXPECT_EQ(model.start_time(), TimePoint());
  EXPECT_EQ(s["uptime_seconds"], 0);  // not started
  model.set_ready();
  EXPECT_TRUE(model.Ready(&why));
  EXPECT_TRUE(model.ready());
}

TEST_F(HealthModelTest, StatusShowsEachIdentityAndResourceState) {
  const TokenKey arm = Key(kArm);
  const TokenKey vault_a = Key(kVault, SelectorKind::kClientId, kClientA);
  const TokenKey arm_b = Key(kArm, SelectorKind::kClientId, kClientB);

  Warm(arm, hours(24), 1);
  Warm(arm_b, minutes(20), 2);
  // IMDS: this identity is not assigned to the VM (a definite no).
  Fetch(vault_a, FakeUpstream::Http(400, R"({"error":"invalid_request","error_description":"Identity not found"})"));
  time_.Advance(minutes(1));
  for (int i = 0; i < 3; ++i) ASSERT_NE(cache_->Lookup(arm), nullptr);

  // arm_b's refresh comes due (20 min - margin 5 - refresh ahead 5..10) and IMDS fails.
  time_.Advance(minutes(9));
  ASSERT_EQ(upstream_.pending(), 1u);
  EXPECT_EQ(upstream_.key(upstream_.calls() - 1), arm_b);
  upstream_.Respond(FakeUpstream::Http(500, R"({"error":"internal_error","access_token":")" + Secret(3) + "\"}"));

  json s = Status();
  EXPECT_EQ(s["uptime_seconds"], 600);
  const json* e = Entry(s, "default", kArm);
  ASSERT_NE(e, nullptr) << s.dump(2);
  EXPECT_EQ((*e)["state"], "ok");
  EXPECT_EQ((*e)["expires_on"], ToEpochSeconds(FakeTime::DefaultStart() + hours(24)));
  EXPECT_EQ((*e)["expires_at"], "2026-01-02T00:00:00Z");
  EXPECT_EQ((*e)["expires_in_seconds"], 24 * 3600 - 600);
  EXPECT_EQ((*e)["last_refresh"], "2026-01-01T00:00:00Z");
  EXPECT_EQ((*e)["last_used"], "2026-01-01T00:01:00Z");
  EXPECT_FALSE((*e)["next_refresh"].is_null());
  EXPECT_TRUE((*e)["last_error"].is_null());
  EXPECT_EQ((*e)["consecutive_failures"], 0);
  EXPECT_EQ((*e)["hits"], 3);
  EXPECT_EQ((*e)["misses"], 1);

  e = Entry(s, "client_id=" + std::string(kClientA), kVault);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ((*e)["state"], "failing");
  EXPECT_TRUE((*e)["expires_on"].is_null());
  EXPECT_EQ((*e)["last_error"]["status"], 400);
  EXPECT_EQ((*e)["last_error"]["error"], "invalid_request");
  EXPECT_EQ((*e)["consecutive_failures"], 1);

  e = Entry(s, "client_id=" + std::string(kClientB), kArm);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ((*e)["state"], "degraded");  // a valid token while refreshes fail
  EXPECT_EQ((*e)["expires_in_seconds"], 600);
  EXPECT_EQ((*e)["last_error"]["status"], 500);
  EXPECT_EQ((*e)["last_error"]["error"], "internal_error");
  EXPECT_EQ((*e)["consecutive_failures"], 1);

  EXPECT_EQ(s["summary"]["ok"], 1);
  EXPECT_EQ(s["summary"]["degraded"], 1);
  EXPECT_EQ(s["summary"]["failing"], 1);
  EXPECT_EQ(s["summary"]["refreshing"], 0);
  // Selectors are grouped: two identities with one resource each, plus the default.
  EXPECT_EQ(s["identities"].size(), 3u);

  const json& up = s["upstream"];
  EXPECT_EQ(up["state"], "failing");
  EXPECT_EQ(up["last_success"], "2026-01-01T00:00:00Z");
  EXPECT_EQ(up["last_error"]["status"], 500);
  EXPECT_EQ(up["last_error"]["error"], "internal_error");
  EXPECT_EQ(up["last_error"]["time"], "2026-01-01T00:10:00Z");
  EXPECT_EQ(up["latency_ms"]["samples"], 4);
  EXPECT_EQ(up["latency_ms"]["p50"], 20);
  EXPECT_EQ(up["max_concurrent"], 3);
  EXPECT_EQ(up["in_flight"], 0);

  ExpectNoSecrets(model_->StatusJson(time_.Now()));
}

TEST_F(HealthModelTest, RecoveryReturnsToOk) {
  const TokenKey key = Key(kArm, SelectorKind::kClientId, kClientB);
  Warm(key, minutes(20), 1);
  time_.Advance(minutes(10));
  upstream_.Respond(FakeUpstream::Http(503, ""));
  EXPECT_EQ((*Entry(Status(), "client_id=" + std::string(kClientB), kArm))["state"], "degraded");
  time_.RunNext();  // the retry
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody(Secret(2), Epoch(hours(24)))));
  json s = Status();
  const json* e = Entry(s, "client_id=" + std::string(kClientB), kArm);
  EXPECT_EQ((*e)["state"], "ok");
  EXPECT_EQ((*e)["consecutive_failures"], 0);
  EXPECT_EQ(s["upstream"]["state"], "ok");
  ExpectNoSecrets(s.dump());
}

TEST_F(HealthModelTest, OddResourceBytesNeverThrow) {
  // Resources come from callers as they sent them: invalid UTF-8 must render.
  const TokenKey key = Key(std::string("https://x/\xff\xfe\"\\"));
  Fetch(key, FakeUpstream::Http(400, R"({"error":"invalid_resource"})"));
  json s = Status();
  ASSERT_EQ(s["identities"].size(), 1u);
  EXPECT_EQ(s["identities"][0]["resources"][0]["state"], "failing");
  json full = json::parse(model_->FullStatusJson(time_.Now()), nullptr, false);
  ASSERT_FALSE(full.is_discarded());
  EXPECT_EQ(full["identities"][0]["resources"][0]["state"], "failing");
}

// Identities and their resources as the document lists them: [(identity, resource, state)].
std::vector<std::tuple<std::string, std::string, std::string>> Listed(const json& status) {
  std::vector<std::tuple<std::string, std::string, std::string>> out;
  for (const json& id : status["identities"]) {
    for (const json& r : id["resources"]) out.emplace_back(id["identity"], r["resource"], r["state"]);
  }
  return out;
}

TEST_F(HealthModelTest, DefaultViewIsCappedWorstFirst) {
  const std::string client_a = "client_id=" + std::string(kClientA);
  // One key degraded: a 20 min token whose refresh will fail.
  Warm(Key("https://degraded/"), minutes(20), 1);
  // 60 ok keys of the default identity, one of identity A.
  char name[32];
  for (int i = 0; i < 60; ++i) {
    std::snprintf(name, sizeof name, "https://ok%02d/", i);
    Warm(Key(name), hours(24), 2);
  }
  Warm(Key("https://ok-a/", SelectorKind::kClientId, kClientA), hours(24), 3);
  // Three keys of identity A failing: IMDS says no.
  for (const char* r : {"https://f3/", "https://f1/", "https://f2/"}) {
    Fetch(Key(r, SelectorKind::kClientId, kClientA), FakeUpstream::Http(400, R"({"error":"invalid_request"})"));
  }
  time_.Advance(minutes(10));
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(500, R"({"error":"internal_error"})"));
  // One refreshing: a first fetch under way.
  cache_->Get(Key("https://refreshing/"), [](const TokenResult&) {});
  time_.RunPending();

  json s = Status();
  EXPECT_EQ(s["summary"], json({{"ok", 61}, {"refreshing", 1}, {"degraded", 1}, {"failing", 3}}));
  EXPECT_EQ(s["entries_total"], 66);
  EXPECT_EQ(s["entries_shown"], HealthModel::kDefaultEntries);
  EXPECT_EQ(s["truncated"], true);
  EXPECT_EQ(s["full_view"], "/status?entries=all");
  auto listed = Listed(s);
  ASSERT_EQ(listed.size(), HealthModel::kDefaultEntries);
  // The worst keys are chosen over all identities; each identity is listed once,
  // where its worst key puts it, with its keys worst first, then by resource.
  ASSERT_EQ(s["identities"].size(), 2u);
  EXPECT_EQ(listed[0], std::make_tuple(client_a, "https://f1/", "failing"));
  EXPECT_EQ(listed[1], std::make_tuple(client_a, "https://f2/", "failing"));
  EXPECT_EQ(listed[2], std::make_tuple(client_a, "https://f3/", "failing"));
  EXPECT_EQ(listed[3], std::make_tuple(std::string("default"), "https://degraded/", "degraded"));
  EXPECT_EQ(listed[4], std::make_tuple(std::string("default"), "https://refreshing/", "refreshing"));
  for (size_t i = 5; i < listed.size(); ++i) {
    std::snprintf(name, sizeof name, "https://ok%02zu/", i - 5);
    EXPECT_EQ(listed[i], std::make_tuple(std::string("default"), name, "ok"));
  }

  // The full view: every key, identity A with its ok key after its failing ones.
  json full = json::parse(model_->FullStatusJson(time_.Now()), nullptr, false);
  ASSERT_FALSE(full.is_discarded());
  EXPECT_EQ(full["entries_total"], 66);
  EXPECT_EQ(full["entries_shown"], 66);
  EXPECT_EQ(full["truncated"], false);
  EXPECT_FALSE(full.contains("full_view"));
  listed = Listed(full);
  ASSERT_EQ(listed.size(), 66u);
  EXPECT_EQ(listed[3], std::make_tuple(client_a, "https://ok-a/", "ok"));
  EXPECT_EQ(listed[4], std::make_tuple(std::string("default"), "https://degraded/", "degraded"));
  EXPECT_EQ(full["summary"], s["summary"]);
}

TEST_F(HealthModelTest, DefaultViewShortensCallersStringsFullViewKeepsThem) {
  // 2 KB, two-byte characters: the cut must not split one.
  std::string resource = "https://x/";
  while (resource.size() < 2048) resource += "\xC3\xA9";
  Fetch(Key(resource), FakeUpstream::Http(400, R"({"error":"invalid_resource"})"));
  const std::string text = model_->StatusJson(time_.Now());
  EXPECT_LT(text.size(), 2048u);
  json s = json::parse(text, nullptr, false);
  ASSERT_FALSE(s.is_discarded()) << text;  // the parser checks the UTF-8
  const json& r = s["identities"][0]["resources"][0];
  const std::string shown = r["resource"];
  EXPECT_LE(shown.size(), HealthModel::kShortString + 3);
  EXPECT_EQ(shown.substr(shown.size() - 3), "\xE2\x80\xA6");
  EXPECT_EQ(resource.rfind(shown.substr(0, shown.size() - 3), 0), 0u);
  EXPECT_EQ(shown.find("\xEF\xBF\xBD"), std::string::npos);  // no replacement character
  EXPECT_EQ(r["resource_bytes"], resource.size());

  json full = json::parse(model_->FullStatusJson(time_.Now()), nullptr, false);
  ASSERT_FALSE(full.is_discarded());
  EXPECT_EQ(full["identities"][0]["resources"][0]["resource"], resource);
  EXPECT_FALSE(full["identities"][0]["resources"][0].contains("resource_bytes"));
}

TEST_F(HealthModelTest, ThrottlingShowsPauseAndQueue) {
  const TokenKey key = Key(kArm);
  cache_->Get(key, [](const TokenResult&) {});
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(429, R"({"error":"too_many_requests"})", "30"));
  json s = Status();
  EXPECT_EQ(s["upstream"]["throttled_until"], "2026-01-01T00:00:30Z");
  EXPECT_EQ(s["upstream"]["throttled_until_epoch"], 1767225630);
  EXPECT_EQ((*Entry(s, "default", kArm))["state"], "failing");  // no token yet, fetches failing
  // A second caller for another key queues behind the pause.
  cache_->Get(Key(kVault), [](const TokenResult&) {});
  time_.RunPending();
  s = Status();
  EXPECT_EQ(s["upstream"]["queue_depth"], 1);
  EXPECT_EQ(s["upstream"]["queued_callers"], 1);
  EXPECT_EQ(s["upstream"]["throttle_pauses_total"], 1);
  EXPECT_EQ(s["cache"]["waiters"], 2);
}

// The full view's steps: the snapshot is taken when the builder is made, the
// first step sorts, each later one appends about `budget` bytes.
TEST_F(HealthModelTest, FullViewStepsFromOneSnapshot) {
  auto resource = [](int i) {
    std::string r = "https://r" + std::to_string(i) + ".example/";
    r.resize(512, 'x');
    return r;
  };
  for (int i = 0; i < 64; ++i) Warm(Key(resource(i)), hours(24), 1);
  const std::string whole = model_->FullStatusJson(time_.Now());
  std::unique_ptr<StatusBuilder> doc = model_->FullStatus(time_.Now());
  // After the snapshot: a new key, and hits on the old ones.
  Warm(Key("https://after-the-snapshot/"), hours(24), 2);
  for (int i = 0; i < 64; ++i) ASSERT_NE(cache_->Lookup(Key(resource(i))), nullptr);

  EXPECT_FALSE(doc->Step(1024));  // the sort
  int steps = 0;
  while (!doc->Step(1024) && steps < 1000) ++steps;
  const std::string body = doc->Take();
  EXPECT_GE(static_cast<size_t>(steps), body.size() / 2048);
  EXPECT_EQ(body, whole);  // steps change nothing but when the bytes are written
  json s = json::parse(body, nullptr, false);
  ASSERT_FALSE(s.is_discarded());
  EXPECT_EQ(s["entries_total"], 64);
  EXPECT_EQ(body.find("after-the-snapshot"), std::string::npos);
  for (const json& r : s["identities"][0]["resources"]) EXPECT_EQ(r["hits"], 0);
  ExpectNoSecrets(body);
}

}  // namespace
}  // namespace mi

namespace mi {
namespace {

TEST(HealthModelCallersTest, TopCallersAppearOnlyAfterTheFirstAuditEvent) {
  FakeCore core;
  AuditTrail::Env env;
  env.clock = &core.time;
  env.timers = &core.time;
  AuditTrail trail(AuditTrail::Options{}, env);  // disabled: it still counts
  core.model->set_audit_trail(&trail);
  const std::string before = core.model->StatusJson(core.time.Now());
  EXPECT_EQ(before.find("\"callers\""), std::string::npos);

  CallerInfo caller;
  caller.peer.known = true;
  caller.peer.uid = 1001;
  caller.account_known = true;
  caller.user = "alice";
  TokenKey key;
  key.resource = "https://vault.azure.net";
  AuditEvent e;
  e.caller = &caller;
  e.key = &key;
  e.listener = "tcp";
  e.dialect = "imds";
  e.decision = Decision::kDeny;
  trail.Record(e);
  e.decision = Decision::kAllow;
  trail.Record(e);
  json status = json::parse(core.model->StatusJson(core.time.Now()));
  ASSERT_TRUE(status.contains("callers")) << status.dump();
  const json& callers = status["callers"];
  EXPECT_EQ(callers["tracked"], 1);
  EXPECT_EQ(callers["top_by_requests"][0]["uid"], 1001);
  EXPECT_EQ(callers["top_by_requests"][0]["user"], "alice");
  EXPECT_EQ(callers["top_by_requests"][0]["requests"], 2);
  EXPECT_EQ(callers["top_by_requests"][0]["denials"], 1);
  EXPECT_EQ(callers["top_by_denials"].size(), 1u);
}

}  // namespace
}  // namespace mi
