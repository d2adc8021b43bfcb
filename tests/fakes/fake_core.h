#pragma once
// The core on the fake clock, wired as the daemon wires it: the IMDS budget, a
// TokenCache over a FakeUpstream, the upstream latency window fed by the cache's
// observer, and the HealthModel over the three. For the tests of the health
// model, the health routes and the /status and /metrics goldens.
//
// Options: a 5 min margin, 10 min refresh-ahead, 1 min hard floor, 2 attempts,
// a budget that never throttles (1000/s) with 3 concurrent requests.

#include <chrono>
#include <memory>

#include "agent/health.h"
#include "agent/token_cache.h"
#include "agent/upstream_latency.h"
#include "agent/upstream_scheduler.h"
#include "tests/fakes/fake_random.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"

namespace mi {

struct FakeCore {
  FakeCore() {
    using std::chrono::minutes;
    cache_options.margin = minutes(5);
    cache_options.refresh_ahead = minutes(10);
    cache_options.hard_floor = minutes(1);
    cache_options.retry.max_attempts = 2;
    budget.rate_per_second = 1000;
    budget.burst = 1000;
    budget.max_concurrent = 3;
    scheduler = std::make_unique<UpstreamScheduler>(budget, time, time);
    cache = std::make_unique<TokenCache>(cache_options, time, time, random, upstream, *scheduler);
    cache->set_upstream_observer([this](Duration d, int) { latency.Observe(d); });
    model = std::make_unique<HealthModel>(*cache, *scheduler, latency);
  }
  ~FakeCore() {
    model.reset();
    cache.reset();
    scheduler.reset();
  }
  FakeCore(const FakeCore&) = delete;
  FakeCore& operator=(const FakeCore&) = delete;

  TokenCache::Options cache_options;
  UpstreamScheduler::Options budget;
  FakeTime time;
  FakeRandom random;
  FakeUpstream upstream;
  UpstreamLatency latency;
  std::unique_ptr<UpstreamScheduler> scheduler;
  std::unique_ptr<TokenCache> cache;
  std::unique_ptr<HealthModel> model;
};

}  // namespace mi
