// The health listener's routes over the interfaces: /metrics walks its list of
// sources (a real TokenCache, TokenApi, scheduler and latency window on a fake
// clock), the full /status is written across loop turns. The /status document
// itself is tests/unit/core/health_test.cc; the writer tests/unit/base/metrics_test.cc.
#include "proxy/health_api.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "agent/app/process_metrics.h"
#include "agent/token_cache.h"
#include "agent/upstream_latency.h"
#include "agent/upstream_scheduler.h"
#include "proxy/token_api.h"
#include "tests/fakes/fake_core.h"
#include "tests/fakes/fake_random.h"
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

// Distinctive token strings: none of them (nor a long piece) may appear in output.
std::string Secret(int n) { return "eyJ0eXAiOiJKV1QiSECRETTOKEN" + std::to_string(n) + "xQzV9aB7cD3eF1gH5iJ"; }

// A process with some stats unknown (as on a platform that lacks them).
void FakeStats(ProcessStats* st) {
  st->cpu_seconds = 1.5;
  st->resident_bytes = 4096;
  st->open_fds = 7;
}

// Request durations measured on the fixture's fake clock.
const FakeTime* g_time = nullptr;
uint64_t FakeNanos() { return static_cast<uint64_t>(g_time->Now().time_since_epoch().count()) * 1000000; }

class HealthApiTest : public ::testing::Test {
 protected:
  HealthApiTest() {
    api_ = std::make_unique<TokenApi>(cache_.get(), &time_, TokenApi::Options{});
    g_time = &time_;
    api_->set_monotonic_clock(&FakeNanos);
    model_->info().version = "9.8.7";
    model_->info().start_time = time_.Now();
    model_->set_listening();
    model_->set_ready();
    process_ = std::make_unique<ProcessMetrics>("9.8.7", "abc1234", time_.Now(), model_.get(), &FakeStats);
    health_ = MakeApi(nullptr);
  }
  ~HealthApiTest() override {
    health_.reset();
    api_.reset();
  }

  std::unique_ptr<HealthApi> MakeApi(TimerFactory* timers) {
    return std::make_unique<HealthApi>(
        *model_,
        std::vector<const MetricsSource*>{process_.get(), api_.get(), cache_.get(), &metrics_, scheduler_.get()},
        time_, timers);
  }
  static TokenKey Key(const std::string& resource, SelectorKind kind = SelectorKind::kDefault,
                      const std::string& id = "") {
    StatusOr<TokenKey> k = MakeTokenKey(SelectorFields::Of(kind, id), resource);
    EXPECT_TRUE(k.ok()) << k.status().message();
    return k.ok() ? *k : TokenKey();
  }
  int64_t Epoch(Duration from_now) { return ToEpochSeconds(time_.Now() + from_now); }
  void Warm(const TokenKey& key, Duration life, int secret) {
    cache_->Get(key, [](const TokenResult&) {});
    time_.RunPending();
    ASSERT_EQ(upstream_.pending(), 1u);
    time_.Advance(milliseconds(20));
    upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody(Secret(secret), Epoch(life), key.resource)));
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
        EXPECT_TRUE(name.rfind("mi_agent_", 0) == 0 || name.rfind("process_", 0) == 0) << name;
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

  FakeCore core_;  // first: its cache outlives everything below that reads it
  FakeTime& time_ = core_.time;
  FakeUpstream& upstream_ = core_.upstream;
  UpstreamLatency& metrics_ = core_.latency;
  std::unique_ptr<UpstreamScheduler>& scheduler_ = core_.scheduler;
  std::unique_ptr<TokenCache>& cache_ = core_.cache;
  std::unique_ptr<HealthModel>& model_ = core_.model;
  std::unique_ptr<TokenApi> api_;
  std::unique_ptr<ProcessMetrics> process_;
  std::unique_ptr<HealthApi> health_;
};

TEST_F(HealthApiTest, EmptyAgentMetrics) {
  auto m = Metrics();
  EXPECT_EQ(m["mi_agent_build_info{version=\"9.8.7\",revision=\"abc1234\"}"], 1);
  EXPECT_EQ(m["mi_agent_ready"], 1);
  EXPECT_EQ(m["mi_agent_process_start_time_seconds"], 1767225600);
  EXPECT_EQ(m["process_start_time_seconds"], 1767225600);
  EXPECT_EQ(m["process_cpu_seconds_total"], 1.5);
  EXPECT_EQ(m["process_resident_memory_bytes"], 4096);
  EXPECT_EQ(m["process_open_fds"], 7);
  EXPECT_EQ(m.count("process_virtual_memory_bytes"), 0u);  // unknown: left out
  EXPECT_EQ(m.count("process_max_fds"), 0u);
  EXPECT_EQ(m.count("mi_agent_request_duration_seconds_count"), 0u);  // no request yet: no series
  EXPECT_EQ(m.count("mi_agent_token_earliest_expiry_seconds"), 0u);  // no token: no value
  EXPECT_EQ(m["mi_agent_upstream_latency_seconds_count"], 0);
  EXPECT_EQ(m["mi_agent_upstream_max_concurrent"], 3);
}

TEST_F(HealthApiTest, MetricsFollowTheListOrder) {
  const std::string text = health_->MetricsText();
  const size_t build = text.find("# HELP mi_agent_build_info ");
  const size_t requests = text.find("# HELP mi_agent_requests_total ");
  const size_t hits = text.find("# HELP mi_agent_cache_hits_total ");
  const size_t latency = text.find("# HELP mi_agent_upstream_latency_seconds ");
  const size_t in_flight = text.find("# HELP mi_agent_upstream_in_flight ");
  EXPECT_EQ(build, 0u);
  EXPECT_LT(build, requests);
  EXPECT_LT(requests, hits);
  EXPECT_LT(hits, latency);
  EXPECT_LT(latency, in_flight);
  EXPECT_NE(in_flight, std::string::npos);
  // Nothing to walk: an empty body.
  HealthApi none(*model_, {}, time_, nullptr);
  EXPECT_EQ(none.MetricsText(), "");
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

  // Request durations: the miss waited 20 ms; the hits and the 400 none.
  const std::string miss = "{route=\"legacy\",cache=\"miss\"";
  EXPECT_EQ(m["mi_agent_request_duration_seconds_count" + miss + "}"], 1);
  EXPECT_NEAR(m["mi_agent_request_duration_seconds_sum" + miss + "}"], 0.02, 1e-9);
  EXPECT_EQ(m["mi_agent_request_duration_seconds_bucket" + miss + ",le=\"0.01\"}"], 0);
  EXPECT_EQ(m["mi_agent_request_duration_seconds_bucket" + miss + ",le=\"0.025\"}"], 1);
  EXPECT_EQ(m["mi_agent_request_duration_seconds_bucket" + miss + ",le=\"+Inf\"}"], 1);
  const std::string hit = "{route=\"legacy\",cache=\"hit\"";
  EXPECT_EQ(m["mi_agent_request_duration_seconds_count" + hit + "}"], kCached);
  EXPECT_EQ(m["mi_agent_request_duration_seconds_bucket" + hit + ",le=\"0.0001\"}"], kCached);
  EXPECT_EQ(m["mi_agent_request_duration_seconds_count{route=\"legacy\",cache=\"none\"}"], 1);
  EXPECT_EQ(m.count("mi_agent_request_duration_seconds_count{route=\"imds\",cache=\"hit\"}"), 0u);

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
  ExpectNoSecrets(model_->StatusJson(time_.Now()));
}

TEST_F(HealthApiTest, ThrottlingMetricsShowPauseAndQueue) {
  cache_->Get(Key(kArm), [](const TokenResult&) {});
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(429, R"({"error":"too_many_requests"})", "30"));
  // A second caller for another key queues behind the pause.
  cache_->Get(Key(kVault), [](const TokenResult&) {});
  time_.RunPending();
  time_.Advance(milliseconds(250));
  auto m = Metrics();
  EXPECT_EQ(m["mi_agent_upstream_throttle_pauses_total"], 1);
  EXPECT_EQ(m["mi_agent_upstream_queue_depth{priority=\"caller\"}"], 1);
  EXPECT_EQ(m["mi_agent_waiters"], 2);
  EXPECT_DOUBLE_EQ(m["mi_agent_upstream_pause_remaining_seconds"], 29.75);
}

TEST_F(HealthApiTest, FullViewWithoutTimersIsBuiltInOneGo) {
  Warm(Key(kArm), hours(24), 1);
  std::string body;
  EXPECT_TRUE(health_->BuildFullStatus([&](std::string b) { body = std::move(b); }));
  EXPECT_FALSE(health_->building_full_status());
  EXPECT_EQ(body, model_->FullStatusJson(time_.Now()));
}

// 4,096 keys of 2 KB resources (the cache's default cap): the full view is about
// 10 MB. It is written a slice per loop turn from the snapshot taken when it was
// asked for, while the loop keeps serving hits in between.
TEST_F(HealthApiTest, FullViewIsWrittenAcrossTurnsFromOneSnapshot) {
  ASSERT_EQ(core_.cache_options.max_keys, 4096u);
  health_ = MakeApi(&time_);
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
