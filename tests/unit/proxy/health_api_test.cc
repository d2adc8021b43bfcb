// /status and /metrics rendered from a real TokenCache on a fake clock and a fake
// upstream: states, times, counters, the histogram, and never a token.
#include "proxy/health_api.h"

#include <gtest/gtest.h>

#include <map>
#include <tuple>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"

namespace mi::proxy {
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

class HealthApiTest : public ::testing::Test {
 protected:
  HealthApiTest() {
    config_.cache.margin = minutes(5);
    config_.cache.refresh_ahead = minutes(10);
    config_.cache.hard_floor = minutes(1);
    config_.cache.retry.max_attempts = 2;
    config_.budget.rate_per_second = 1000;
    config_.budget.burst = 1000;
    config_.budget.max_concurrent = 3;
    scheduler_ = std::make_unique<UpstreamScheduler>(config_.budget, time_, time_);
    cache_ = std::make_unique<TokenCache>(config_.cache, time_, time_, random_, upstream_, *scheduler_);
    cache_->set_upstream_observer([this](Duration latency, int) { metrics_.Observe(latency); });
    api_ = std::make_unique<TokenApi>(cache_.get(), &time_, TokenApi::Options{});

    HealthSources s;
    s.clock = &time_;
    s.version = "9.8.7";
    s.start_time = time_.Now();
    s.config_digest = "0123456789abcdef";
    s.listeners = {"127.0.0.1:50342", "[::1]:50342"};
    s.imds_endpoint = "http://169.254.169.254/metadata/identity/oauth2/token";
    s.max_concurrent = config_.budget.max_concurrent;
    s.cache = cache_.get();
    s.scheduler = scheduler_.get();
    s.upstream_metrics = &metrics_;
    s.token_api = api_.get();
    s.ready = [](std::string*) { return true; };
    health_ = std::make_unique<HealthApi>(std::move(s));
  }
  ~HealthApiTest() override {
    health_.reset();
    api_.reset();
    cache_.reset();
    scheduler_.reset();
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
  // A legacy GET through the token API (the answer itself goes nowhere).
  void LegacyRequest(const std::string& query, bool metadata = true) {
    HttpRequest r;
    r.method = "GET";
    r.target = "/oauth2/token?" + query;
    r.peer_is_loopback = true;
    r.headers.emplace_back("host", "localhost");
    if (metadata) r.headers.emplace_back("metadata", "true");
    api_->OnRequest(r, Responder());
  }

  json Status() {
    json j = json::parse(health_->StatusJson(), nullptr, false);
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

  // Parses the exposition: sample "name{labels}" -> value. Checks the format as it
  // goes: every sample belongs to a family announced by HELP and TYPE, names are
  // legal and prefixed, counters end in _total, no family or sample twice.
  std::map<std::string, double> Metrics() {
    const std::string text = health_->MetricsText();
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    std::map<std::string, double> samples;
    std::map<std::string, std::string> types;
    std::set<std::string> helped;
    std::string family;
    const std::regex sample_re(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$)");
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("# HELP ", 0) == 0) {
        family = line.substr(7, line.find(' ', 7) - 7);
        EXPECT_TRUE(helped.insert(family).second) << "HELP twice: " << family;
        continue;
      }
      if (line.rfind("# TYPE ", 0) == 0) {
        std::istringstream t(line.substr(7));
        std::string name, type;
        t >> name >> type;
        EXPECT_EQ(name, family) << "TYPE without HELP: " << line;
        EXPECT_TRUE(types.emplace(name, type).second) << "TYPE twice: " << name;
        EXPECT_EQ(name.rfind("mi_agent_", 0), 0u) << name;
        if (type == "counter") {
          EXPECT_TRUE(name.size() > 6 && name.substr(name.size() - 6) == "_total") << name;
        }
        continue;
      }
      std::smatch m;
      EXPECT_TRUE(std::regex_match(line, m, sample_re)) << "bad line: " << line;
      if (m.empty()) continue;
      const std::string name = m[1];
      const std::string base = types.count(name) ? name : name.substr(0, name.rfind('_'));
      EXPECT_TRUE(name == family || (types[family] == "histogram" && base == family))
          << name << " outside its family " << family;
      const std::string id = name + std::string(m[2]);
      EXPECT_TRUE(samples.emplace(id, std::stod(m[3])).second) << "sample twice: " << id;
    }
    return samples;
  }

  void ExpectNoSecrets(const std::string& text) {
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(text.find(Secret(i)), std::string::npos) << "token " << i << " in output";
    }
    EXPECT_EQ(text.find("SECRETTOKEN"), std::string::npos) << "a token fragment in output:\n" << text;
  }

  struct {
    TokenCache::Options cache;
    UpstreamScheduler::Options budget;
  } config_;
  FakeTime time_;
  FakeRandom random_;
  FakeUpstream upstream_;
  Logger logger_;
  UpstreamLatency metrics_;
  std::unique_ptr<UpstreamScheduler> scheduler_;
  std::unique_ptr<TokenCache> cache_;
  std::unique_ptr<TokenApi> api_;
  std::unique_ptr<HealthApi> health_;
};

TEST_F(HealthApiTest, EmptyAgentRendersWithoutIdentities) {
  json s = Status();
  EXPECT_EQ(s["version"], "9.8.7");
  EXPECT_EQ(s["start_time"], "2026-01-01T00:00:00Z");
  EXPECT_EQ(s["start_time_epoch"], 1767225600);
  EXPECT_EQ(s["uptime_seconds"], 0);
  EXPECT_EQ(s["config_digest"], "0123456789abcdef");
  EXPECT_EQ(s["listeners"].size(), 2u);
  EXPECT_EQ(s["ready"], true);
  EXPECT_EQ(s["upstream"]["state"], "unknown");
  EXPECT_TRUE(s["upstream"]["last_success"].is_null());
  EXPECT_TRUE(s["upstream"]["last_error"].is_null());
  EXPECT_TRUE(s["upstream"]["throttled_until"].is_null());
  EXPECT_EQ(s["identities"].size(), 0u);
  auto m = Metrics();
  EXPECT_EQ(m["mi_agent_build_info{version=\"9.8.7\"}"], 1);
  EXPECT_EQ(m["mi_agent_process_start_time_seconds"], 1767225600);
  EXPECT_EQ(m.count("mi_agent_token_earliest_expiry_seconds"), 0u);  // no token: no value
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_count"], 0);
}

TEST_F(HealthApiTest, StatusShowsEachIdentityAndResourceState) {
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

  ExpectNoSecrets(health_->StatusJson());
  ExpectNoSecrets(health_->MetricsText());
}

TEST_F(HealthApiTest, RecoveryReturnsToOk) {
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

TEST_F(HealthApiTest, MetricsCountWhatHappened) {
  const TokenKey arm = Key(kArm);
  const TokenKey vault = Key(kVault);
  // One miss through the API (20 ms upstream), then N cached requests.
  LegacyRequest("resource=https%3A%2F%2Fmanagement.azure.com%2F");
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  time_.Advance(milliseconds(20));
  const int64_t expires_on = Epoch(hours(2));
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody(Secret(1), expires_on)));
  constexpr int kCached = 7;
  for (int i = 0; i < kCached; ++i) LegacyRequest("resource=https%3A%2F%2Fmanagement.azure.com%2F");
  LegacyRequest("resource=x", /*metadata=*/false);  // 400 bad_request_102
  // A slower failing fetch with one retry (budget of 2 attempts), on its own key.
  cache_->Get(vault, [](const TokenResult&) {});
  time_.RunPending();
  time_.Advance(milliseconds(300));
  upstream_.Respond(FakeUpstream::Http(500, ""));
  time_.RunNext();
  time_.RunPending();
  time_.Advance(milliseconds(3));
  upstream_.Respond(FakeUpstream::Transport(UpstreamResponse::Outcome::kTimeout));

  auto m = Metrics();
  EXPECT_EQ(m["mi_agent_requests_total{route=\"legacy\",code=\"200\"}"], 1 + kCached);
  EXPECT_EQ(m["mi_agent_requests_total{route=\"legacy\",code=\"400\"}"], 1);
  EXPECT_EQ(m.count("mi_agent_requests_total{route=\"imds\",code=\"200\"}"), 0u);
  EXPECT_EQ(m["mi_agent_cache_hits_total"], kCached);
  EXPECT_EQ(m["mi_agent_cache_misses_total"], 2);
  EXPECT_EQ(m["mi_agent_upstream_requests_total{class=\"2xx\"}"], 1);
  EXPECT_EQ(m["mi_agent_upstream_requests_total{class=\"5xx\"}"], 1);
  EXPECT_EQ(m["mi_agent_upstream_requests_total{class=\"error\"}"], 1);
  EXPECT_EQ(m["mi_agent_upstream_requests_total{class=\"4xx\"}"], 0);
  EXPECT_EQ(m["mi_agent_upstream_retries_total"], 1);
  EXPECT_EQ(m["mi_agent_upstream_up"], 0);
  EXPECT_EQ(m["mi_agent_tokens{state=\"ok\"}"], 1);
  EXPECT_EQ(m["mi_agent_tokens{state=\"failing\"}"], 1);
  EXPECT_EQ(m["mi_agent_tokens{state=\"degraded\"}"], 0);
  EXPECT_EQ(m["mi_agent_tokens{state=\"refreshing\"}"], 0);
  EXPECT_EQ(m["mi_agent_cache_keys"], 2);
  EXPECT_NEAR(m["mi_agent_token_earliest_expiry_seconds"],
              static_cast<double>((FromEpochSeconds(expires_on) - time_.Now()).count()) / 1000, 1e-9);
  EXPECT_EQ(m["mi_agent_upstream_max_concurrent"], 3);
  EXPECT_EQ(m["mi_agent_upstream_in_flight"], 0);

  // Histogram: 3 ms, 20 ms, 300 ms; cumulative buckets.
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_count"], 3);
  EXPECT_NEAR(m["mi_agent_upstream_latency_seconds_sum"], 0.323, 1e-9);
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_bucket{le=\"0.001\"}"], 0);
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_bucket{le=\"0.005\"}"], 1);
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_bucket{le=\"0.025\"}"], 2);
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_bucket{le=\"0.25\"}"], 2);
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_bucket{le=\"0.5\"}"], 3);
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_bucket{le=\"10\"}"], 3);
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_bucket{le=\"+Inf\"}"], 3);
  ExpectNoSecrets(health_->MetricsText());
  ExpectNoSecrets(health_->StatusJson());
}

TEST_F(HealthApiTest, ThrottlingShowsPauseAndQueue) {
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
  auto m = Metrics();
  EXPECT_EQ(m["mi_agent_upstream_throttle_pauses_total"], 1);
  EXPECT_EQ(m["mi_agent_upstream_queue_depth{priority=\"caller\"}"], 1);
  EXPECT_EQ(m["mi_agent_waiters"], 2);
  EXPECT_GT(m["mi_agent_upstream_pause_remaining_seconds"], 29);
  EXPECT_EQ(Status()["upstream"]["queue_depth"], 1);
}

TEST_F(HealthApiTest, OddResourceBytesNeverThrow) {
  // Resources come from callers as they sent them: invalid UTF-8 must render.
  const TokenKey key = Key(std::string("https://x/\xff\xfe\"\\"));
  Fetch(key, FakeUpstream::Http(400, R"({"error":"invalid_resource"})"));
  json s = Status();
  ASSERT_EQ(s["identities"].size(), 1u);
  EXPECT_EQ(s["identities"][0]["resources"][0]["state"], "failing");
  Metrics();
}

// Identities and their resources as the document lists them: [(identity, resource, state)].
std::vector<std::tuple<std::string, std::string, std::string>> Listed(const json& status) {
  std::vector<std::tuple<std::string, std::string, std::string>> out;
  for (const json& id : status["identities"]) {
    for (const json& r : id["resources"]) out.emplace_back(id["identity"], r["resource"], r["state"]);
  }
  return out;
}

TEST_F(HealthApiTest, DefaultViewIsCappedWorstFirst) {
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
  EXPECT_EQ(s["entries_shown"], HealthApi::kDefaultEntries);
  EXPECT_EQ(s["truncated"], true);
  EXPECT_EQ(s["full_view"], "/status?entries=all");
  auto listed = Listed(s);
  ASSERT_EQ(listed.size(), HealthApi::kDefaultEntries);
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
  json full = json::parse(health_->StatusJson(/*full=*/true), nullptr, false);
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

TEST_F(HealthApiTest, DefaultViewShortensCallersStringsFullViewKeepsThem) {
  // 2 KB, two-byte characters: the cut must not split one.
  std::string resource = "https://x/";
  while (resource.size() < 2048) resource += "\xC3\xA9";
  Fetch(Key(resource), FakeUpstream::Http(400, R"({"error":"invalid_resource"})"));
  const std::string text = health_->StatusJson();
  EXPECT_LT(text.size(), 2048u);
  json s = json::parse(text, nullptr, false);
  ASSERT_FALSE(s.is_discarded()) << text;  // the parser checks the UTF-8
  const json& r = s["identities"][0]["resources"][0];
  const std::string shown = r["resource"];
  EXPECT_LE(shown.size(), HealthApi::kShortString + 3);
  EXPECT_EQ(shown.substr(shown.size() - 3), "\xE2\x80\xA6");
  EXPECT_EQ(resource.rfind(shown.substr(0, shown.size() - 3), 0), 0u);
  EXPECT_EQ(shown.find("\xEF\xBF\xBD"), std::string::npos);  // no replacement character
  EXPECT_EQ(r["resource_bytes"], resource.size());

  json full = json::parse(health_->StatusJson(/*full=*/true), nullptr, false);
  ASSERT_FALSE(full.is_discarded());
  EXPECT_EQ(full["identities"][0]["resources"][0]["resource"], resource);
  EXPECT_FALSE(full["identities"][0]["resources"][0].contains("resource_bytes"));
}

// 4,096 keys of 2 KB resources (the cache's default cap): the full view is about
// 10 MB. It is written a slice per loop turn from the snapshot taken when it was
// asked for, while the loop keeps serving hits in between.
TEST_F(HealthApiTest, FullViewIsWrittenAcrossTurnsFromOneSnapshot) {
  ASSERT_EQ(config_.cache.max_keys, 4096u);
  health_->sources().timers = &time_;
  auto resource = [](int i) {
    std::string r = "https://r" + std::to_string(i) + ".example/";
    r.resize(2048, 'x');
    return r;
  };
  for (int i = 0; i < 4096; ++i) Warm(Key(resource(i)), hours(24), 1);

  std::string body;
  int answers = 0;
  ASSERT_TRUE(health_->BuildFullStatus([&](std::string b) {
    body = std::move(b);
    ++answers;
  }));
  EXPECT_EQ(answers, 0);
  EXPECT_TRUE(health_->building_full_status());
  // One at a time.
  EXPECT_FALSE(health_->BuildFullStatus([&](std::string) { ADD_FAILURE() << "a second build ran"; }));

  // A new key after the snapshot (it pushes the least recently used one out).
  cache_->Get(Key("https://after-the-snapshot/"), [](const TokenResult&) {});
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody(Secret(2), Epoch(hours(24)))));
  EXPECT_EQ(cache_->stats().keys, 4096u);
  int turns = 0;
  uint64_t hits = 0;
  while (answers == 0 && turns < 100000) {
    // Between slices the loop serves hits.
    ASSERT_NE(cache_->Lookup(Key(resource(4095 - turns % 4096))), nullptr);
    ++hits;
    time_.Advance(HealthApi::kSliceGap);
    ++turns;
  }
  ASSERT_EQ(answers, 1);
  EXPECT_FALSE(health_->building_full_status());
  EXPECT_GE(static_cast<size_t>(turns), body.size() / HealthApi::kSliceBytes);
  EXPECT_EQ(cache_->stats().hits, hits);

  json s = json::parse(body, nullptr, false);
  ASSERT_FALSE(s.is_discarded());
  EXPECT_EQ(s["entries_total"], 4096);
  EXPECT_EQ(s["summary"]["ok"], 4096);
  ASSERT_EQ(s["identities"].size(), 1u);
  const json& resources = s["identities"][0]["resources"];
  ASSERT_EQ(resources.size(), 4096u);
  std::set<std::string> seen;
  uint64_t hits_shown = 0;
  for (const json& r : resources) {
    seen.insert(r["resource"].get<std::string>());
    hits_shown += r["hits"].get<uint64_t>();
  }
  for (int i = 0; i < 4096; ++i) EXPECT_EQ(seen.count(resource(i)), 1u) << i;
  EXPECT_EQ(body.find("after-the-snapshot"), std::string::npos);
  EXPECT_EQ(hits_shown, 0u);  // as they were at the snapshot
  ExpectNoSecrets(body);

  // Done: the next one may start.
  EXPECT_TRUE(health_->BuildFullStatus([&](std::string) { ++answers; }));
  health_.reset();  // dropped with the HealthApi, unanswered
  time_.Advance(seconds(1));
  EXPECT_EQ(answers, 1);
}

}  // namespace
}  // namespace mi::proxy
