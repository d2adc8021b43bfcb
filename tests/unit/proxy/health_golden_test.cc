// Byte-for-byte goldens of /status (default and full view) and /metrics, taken
// from the code before the health model left proxy/ (issue #12): a fixed fake
// clock, a cache with keys in every state, an upstream with some latencies, some
// token API counters, a throttle pause with a queued caller, and both listeners'
// connection counters. A change here is a change an operator sees.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "agent/app/process_metrics.h"
#include "agent/base/event_loop.h"
#include "agent/health.h"
#include "agent/token_cache.h"
#include "agent/upstream_latency.h"
#include "agent/upstream_scheduler.h"
#include "proxy/health_api.h"
#include "proxy/token_api.h"
#include "tests/fakes/fake_core.h"
#include "tests/fakes/fake_random.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"
#include "tests/unit/proxy/health_golden_data.h"

namespace mi::proxy {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;

// The process as the golden shows it (what a real one reads varies).
void FixedStats(ProcessStats* st) {
  st->cpu_seconds = 0.25;
  st->resident_bytes = 8 << 20;
  st->virtual_bytes = 64 << 20;
  st->open_fds = 12;
  st->max_fds = 1024;
}
// Request durations measured on the fixture's fake clock.
const FakeTime* g_time = nullptr;
uint64_t FakeNanos() { return static_cast<uint64_t>(g_time->Now().time_since_epoch().count()) * 1000000; }

class HealthGoldenTest : public ::testing::Test {
 protected:
  HealthGoldenTest() {
    api_ = std::make_unique<TokenApi>(cache_.get(), &time_, TokenApi::Options{});
    // Never listening: their counters stay zero, their families are locked.
    token_server_ = std::make_unique<HttpServer>(loop_.uv(), ServerLimits{}, *api_, logger_);
    health_server_ = std::make_unique<HttpServer>(loop_.uv(), ServerLimits{}, *api_, logger_);

    HealthModel::Info& info = model_->info();
    info.version = "9.8.7-\"rc\\1\"";  // label escaping
    info.start_time = time_.Now();
    info.config_digest = "0123456789abcdef";
    info.listeners = {"127.0.0.1:50342", "[::1]:50342"};
    info.imds_endpoint = "http://169.254.169.254/metadata/identity/oauth2/token";
    model_->set_listening();
    process_ = std::make_unique<ProcessMetrics>(info.version, "abc1234", info.start_time, model_.get(), &FixedStats);
    g_time = &time_;
    api_->set_monotonic_clock(&FakeNanos);
    token_listener_ = std::make_unique<ListenerMetrics>("token", *token_server_);
    health_listener_ = std::make_unique<ListenerMetrics>("health", *health_server_);
    health_ = std::make_unique<HealthApi>(*model_,
                                          std::vector<const MetricsSource*>{process_.get(), api_.get(), cache_.get(),
                                                                            &latency_, scheduler_.get(),
                                                                            token_listener_.get(), health_listener_.get()},
                                          time_, nullptr);
  }
  ~HealthGoldenTest() override {
    health_.reset();
    health_listener_.reset();
    token_listener_.reset();
    health_server_.reset();
    token_server_.reset();
    api_.reset();
    EXPECT_TRUE(loop_.Close());
  }

  static TokenKey Key(const std::string& resource, SelectorKind kind = SelectorKind::kDefault,
                      const std::string& id = "") {
    StatusOr<TokenKey> k = MakeTokenKey(SelectorFields::Of(kind, id), resource);
    EXPECT_TRUE(k.ok()) << k.status().message();
    return k.ok() ? *k : TokenKey();
  }
  int64_t Epoch(Duration from_now) { return ToEpochSeconds(time_.Now() + from_now); }
  void Fetch(const TokenKey& key, UpstreamResponse response, Duration latency) {
    cache_->Get(key, [](const TokenResult&) {});
    time_.RunPending();
    ASSERT_EQ(upstream_.pending(), 1u);
    time_.Advance(latency);
    upstream_.Respond(std::move(response));
  }
  void Request(const std::string& target, bool metadata = true) {
    HttpRequest r;
    r.method = "GET";
    r.target = target;
    r.peer_is_loopback = true;
    r.headers.emplace_back("host", "localhost");
    if (metadata) r.headers.emplace_back("metadata", "true");
    api_->OnRequest(r, Responder());
  }

  // Keys in every state, latencies, API counters, a pause with a queued caller.
  void Scenario() {
    const std::string arm = "https://management.azure.com/";
    const std::string vault = "https://vault.azure.net";
    const std::string client_a = "0d1e2f30-aaaa-4bbb-8ccc-123456789abc";
    const std::string client_b = "11111111-2222-4333-8444-555555555555";
    std::string long_resource = "https://long.example/";
    while (long_resource.size() < 300) long_resource += "\xC3\xA9";

    Fetch(Key(arm), FakeUpstream::Http(200, FakeUpstream::TokenBody("SECRET1", Epoch(hours(24)), arm)),
          milliseconds(20));
    Fetch(Key(arm, SelectorKind::kClientId, client_b),
          FakeUpstream::Http(200, FakeUpstream::TokenBody("SECRET2", Epoch(minutes(20)), arm)), milliseconds(3));
    Fetch(Key(vault, SelectorKind::kClientId, client_a),
          FakeUpstream::Http(400, R"({"error":"invalid_request","error_description":"Identity not found"})"),
          milliseconds(7));
    Fetch(Key(long_resource, SelectorKind::kObjectId, client_b),
          FakeUpstream::Http(400, R"({"error":"invalid_resource"})"), milliseconds(1));
    time_.Advance(minutes(1));
    for (int i = 0; i < 3; ++i) Request("/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F");
    Request("/oauth2/token?resource=x", /*metadata=*/false);
    Request("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F");
    Request("/nowhere");
    // client B's refresh comes due and IMDS fails slowly.
    time_.Advance(minutes(9));
    ASSERT_EQ(upstream_.pending(), 1u);
    time_.Advance(milliseconds(1337));
    upstream_.Respond(FakeUpstream::Http(500, R"({"error":"internal_error"})"));
    // IMDS throttles a new key; another caller queues behind the pause.
    Fetch(Key("https://storage.azure.com/"), FakeUpstream::Http(429, R"({"error":"too_many_requests"})", "30"),
          milliseconds(42));
    cache_->Get(Key("https://refreshing.example/"), [](const TokenResult&) {});
    time_.RunPending();
    time_.Advance(milliseconds(1234));
  }

  std::string Status() const { return model_->StatusJson(time_.Now()); }
  std::string FullStatus() const { return model_->FullStatusJson(time_.Now()); }

  // Compares with the golden; MI_HEALTH_GOLDEN_DIR=<dir> writes what it got there.
  static void Expect(const char* name, const std::string& got, const char* want) {
    if (const char* dir = std::getenv("MI_HEALTH_GOLDEN_DIR")) {
      std::ofstream(std::string(dir) + "/" + name, std::ios::binary) << got;
    }
    EXPECT_EQ(got, want) << name;
  }

  FakeCore core_;  // first: its cache outlives everything below that reads it
  FakeTime& time_ = core_.time;
  FakeUpstream& upstream_ = core_.upstream;
  UpstreamLatency& latency_ = core_.latency;
  std::unique_ptr<UpstreamScheduler>& scheduler_ = core_.scheduler;
  std::unique_ptr<TokenCache>& cache_ = core_.cache;
  std::unique_ptr<HealthModel>& model_ = core_.model;
  EventLoop loop_;
  Logger logger_;
  std::unique_ptr<TokenApi> api_;
  std::unique_ptr<HttpServer> token_server_;
  std::unique_ptr<HttpServer> health_server_;
  std::unique_ptr<ProcessMetrics> process_;
  std::unique_ptr<ListenerMetrics> token_listener_;
  std::unique_ptr<ListenerMetrics> health_listener_;
  std::unique_ptr<HealthApi> health_;
};

TEST_F(HealthGoldenTest, EmptyAgent) {
  Expect("empty_status.json", Status(), kGoldenEmptyStatus);
  Expect("empty_metrics.txt", health_->MetricsText(), kGoldenEmptyMetrics);
}

TEST_F(HealthGoldenTest, BusyAgent) {
  Scenario();
  model_->set_ready();
  Expect("busy_status.json", Status(), kGoldenBusyStatus);
  Expect("busy_status_full.json", FullStatus(), kGoldenBusyStatusFull);
  Expect("busy_metrics.txt", health_->MetricsText(), kGoldenBusyMetrics);
}

}  // namespace
}  // namespace mi::proxy
