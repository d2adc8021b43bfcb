// The token cache on a fake clock and a fake upstream: a day of token lifetimes
// in milliseconds, no sockets, no sleeps.
#include "agent/token_cache.h"

#include <gtest/gtest.h>

#include <set>

#include <nlohmann/json.hpp>

#include "agent/base/log.h"
#include "agent/base/sha256.h"
#include "tests/fakes/fake_random.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/fake_upstream.h"

namespace mi {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using Kind = TokenResult::Kind;

class TokenCacheTest : public ::testing::Test {
 protected:
  TokenCacheTest() {
    config_.cache.margin = minutes(5);
    config_.cache.refresh_ahead = minutes(10);
    config_.cache.hard_floor = minutes(1);
    config_.cache.idle_evict = hours(1);
    config_.cache.negative_ttl = seconds(5);
    config_.cache.same_token_backoff = minutes(1);
    config_.budget.rate_per_second = 1000;
    config_.budget.burst = 1000;
    config_.budget.max_concurrent = 100;
  }

  void Build() {
    scheduler_ = std::make_unique<UpstreamScheduler>(config_.budget, time_, time_);
    cache_ = std::make_unique<TokenCache>(config_.cache, time_, time_, random_, upstream_, *scheduler_);
  }
  void TearDown() override {
    cache_.reset();
    scheduler_.reset();
  }

  static TokenKey Key(const std::string& resource = "https://management.azure.com/",
                      SelectorKind kind = SelectorKind::kDefault, const std::string& id = "") {
    StatusOr<TokenKey> k = MakeTokenKey(SelectorFields::Of(kind, id), resource);
    EXPECT_TRUE(k.ok()) << k.status().message();
    return k.ok() ? *k : TokenKey();
  }

  int64_t Epoch(Duration from_now) { return ToEpochSeconds(time_.Now() + from_now); }

  // Issues a Get and records what it answered.
  std::shared_ptr<std::vector<TokenResult>> Get(const TokenKey& key) {
    auto out = std::make_shared<std::vector<TokenResult>>();
    cache_->Get(key, [out](const TokenResult& r) { out->push_back(r); });
    return out;
  }

  // The same for a Get by `caller`.
  std::shared_ptr<std::vector<TokenResult>> GetAs(CallerTag caller, const TokenKey& key) {
    auto out = std::make_shared<std::vector<TokenResult>>();
    cache_->Get(key, caller, [out](const TokenResult& r) { out->push_back(r); });
    return out;
  }
  static bool Shed(const std::shared_ptr<std::vector<TokenResult>>& r) {
    return r->size() == 1 && r->at(0).kind == Kind::kShed;
  }

  // Fills the cache for `key` with a token living `life`.
  void Warm(const TokenKey& key, Duration life, const std::string& access = "tok-1") {
    auto r = Get(key);
    time_.RunPending();
    upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody(access, Epoch(life))));
    ASSERT_EQ(r->size(), 1u);
    ASSERT_EQ(r->at(0).kind, Kind::kToken);
  }

  static std::string Access(const Token* t, TimePoint now) {
    std::string body;
    t->AppendBody(now, &body);
    return nlohmann::json::parse(body)["access_token"];
  }

  struct {
    TokenCache::Options cache;
    UpstreamScheduler::Options budget;
  } config_;
  FakeTime time_;
  FakeRandom random_;
  FakeUpstream upstream_;
  std::unique_ptr<UpstreamScheduler> scheduler_;
  std::unique_ptr<TokenCache> cache_;
};

TEST_F(TokenCacheTest, MissFetchesThenHitsWithoutUpstream) {
  Build();
  const TokenKey key = Key();
  EXPECT_EQ(cache_->Lookup(key), nullptr);
  Warm(key, hours(24));
  EXPECT_EQ(upstream_.calls(), 1u);
  for (int i = 0; i < 1000; ++i) ASSERT_NE(cache_->Lookup(key), nullptr);
  EXPECT_EQ(upstream_.calls(), 1u);
  EXPECT_EQ(cache_->stats().hits, 1000u);
  EXPECT_EQ(cache_->stats().misses, 1u);
}

TEST_F(TokenCacheTest, ExpiresInIsRecomputedAtAnswerTime) {
  Build();
  const TokenKey key = Key();
  Warm(key, seconds(3600));
  time_.Advance(seconds(100));
  std::string body;
  cache_->Lookup(key)->AppendBody(time_.Now(), &body);
  auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["expires_in"], "3500");
  EXPECT_EQ(j["expires_on"], std::to_string(Epoch(seconds(3500))));
  EXPECT_EQ(j["token_type"], "Bearer");
  EXPECT_EQ(j["client_id"], "c");  // extra IMDS fields pass through
}

TEST_F(TokenCacheTest, MarginBoundary) {
  config_.cache.refresh_ahead = Duration(0);
  Build();
  const TokenKey key = Key();
  Warm(key, minutes(10));
  // The refresh-ahead fires at the margin; keep IMDS silent so the token ages.
  time_.Advance(minutes(5) - seconds(1));
  EXPECT_NE(cache_->Lookup(key), nullptr) << "5 min 1 s left: a hit";
  time_.Advance(seconds(1));
  EXPECT_EQ(cache_->Lookup(key), nullptr) << "exactly the margin left: not a hit";
}

TEST_F(TokenCacheTest, CaseInsensitiveSelectorsShareAnEntry) {
  Build();
  const TokenKey lower = Key("r", SelectorKind::kClientId, "0d1e2f30-aaaa-bbbb-cccc-123456789abc");
  const TokenKey upper = Key("r", SelectorKind::kClientId, "0D1E2F30-AAAA-BBBB-CCCC-123456789ABC");
  Warm(lower, hours(24));
  EXPECT_NE(cache_->Lookup(upper), nullptr);
  EXPECT_EQ(cache_->Lookup(Key("R", SelectorKind::kClientId, "0d1e2f30-aaaa-bbbb-cccc-123456789abc")), nullptr)
      << "the resource is compared exactly";
}

TEST_F(TokenCacheTest, SingleFlightSuccessAnswersEveryWaiter) {
  Build();
  const TokenKey key = Key();
  std::vector<std::shared_ptr<std::vector<TokenResult>>> results;
  for (int i = 0; i < 200; ++i) results.push_back(Get(key));
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("shared", Epoch(hours(24)))));
  for (auto& r : results) {
    ASSERT_EQ(r->size(), 1u);
    ASSERT_EQ(r->at(0).kind, Kind::kToken);
    EXPECT_EQ(Access(r->at(0).token.get(), time_.Now()), "shared");
  }
  EXPECT_EQ(cache_->stats().coalesced, 199u);
  EXPECT_EQ(cache_->stats().waiters, 0u);
}

TEST_F(TokenCacheTest, SingleFlightErrorAnswersEveryWaiter) {
  Build();
  const TokenKey key = Key();
  std::vector<std::shared_ptr<std::vector<TokenResult>>> results;
  for (int i = 0; i < 50; ++i) results.push_back(Get(key));
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 1u);
  const std::string body = R"({"error":"invalid_request","error_description":"Identity not found"})";
  upstream_.Respond(FakeUpstream::Http(400, body));
  for (auto& r : results) {
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ(r->at(0).kind, Kind::kRejected);
    EXPECT_EQ(r->at(0).status, 400);
    EXPECT_EQ(r->at(0).body, body);
  }
  EXPECT_EQ(upstream_.calls(), 1u) << "400 is not retried";
}

TEST_F(TokenCacheTest, NegativeAnswerIsCachedBrieflyThenAskedAgain) {
  Build();
  const TokenKey key = Key();
  auto first = Get(key);
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(400, R"({"error":"invalid_request"})"));
  for (int i = 0; i < 100; ++i) {
    auto r = Get(key);
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ(r->at(0).kind, Kind::kRejected);
  }
  time_.RunPending();
  EXPECT_EQ(upstream_.calls(), 1u);
  time_.Advance(seconds(6));
  auto later = Get(key);
  time_.RunPending();
  EXPECT_EQ(upstream_.calls(), 2u) << "negative entry expired";
}

TEST_F(TokenCacheTest, RefreshAheadHappensBeforeTheMarginWithJitterBounds) {
  for (double jitter : {0.0, 0.5, 0.999}) {
    random_.set_value(jitter);
    Build();
    const TokenKey key = Key();
    const auto before = upstream_.calls();
    Warm(key, hours(24));
    const TimePoint issued = time_.Now();
    // Keep using the key so it counts as "used recently".
    bool refreshed = false;
    while (!refreshed && time_.Now() - issued < hours(24)) {
      time_.Advance(minutes(1));
      ASSERT_NE(cache_->Lookup(key), nullptr) << "callers are never left without a token";
      refreshed = upstream_.calls() > before + 1;
    }
    ASSERT_TRUE(refreshed);
    const Duration left = FromEpochSeconds(ToEpochSeconds(issued + hours(24))) - time_.Now();
    EXPECT_LE(left, minutes(5) + minutes(10) + minutes(1)) << "not earlier than margin + refresh_ahead";
    EXPECT_GE(left, minutes(5) + minutes(5) - minutes(1)) << "at least refresh_ahead/2 before the margin";
    upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("tok-2", Epoch(hours(24)))));
    cache_.reset();
  }
}

TEST_F(TokenCacheTest, SameTokenAgainBacksOffAndNeverServesExpired) {
  Build();
  const TokenKey key = Key();
  const int64_t expires = Epoch(hours(1));
  Warm(key, hours(1), "same");
  const size_t calls_after_warm = upstream_.calls();
  // IMDS keeps handing back the same token until it expires.
  int answered = 0;
  for (int i = 0; i < 2000 && time_.Now() < FromEpochSeconds(expires); ++i) {
    time_.Advance(seconds(10));
    cache_->Lookup(key);
    while (upstream_.pending() > 0) {
      upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("same", expires)));
      ++answered;
    }
    if (const Token* t = cache_->Lookup(key)) {
      ASSERT_GT(t->expires_on(), ToEpochSeconds(time_.Now())) << "never an expired token";
    }
  }
  EXPECT_GT(cache_->stats().same_token, 0u);
  // About one request a minute from the refresh point on: no hot loop.
  EXPECT_LT(upstream_.calls() - calls_after_warm, 40u);
  EXPECT_GT(answered, 1);
}

TEST_F(TokenCacheTest, StaticStabilityServesInsideMarginDownToTheFloorWhileUpstreamFails) {
  config_.cache.retry.max_attempts = 2;
  Build();
  const TokenKey key = Key();
  const int64_t expires = Epoch(minutes(30));
  Warm(key, minutes(30));
  // From now on every upstream request fails.
  bool served_inside_margin = false;
  for (int i = 0; i < 3600; ++i) {
    time_.Advance(seconds(1));
    while (upstream_.pending() > 0) upstream_.Respond(FakeUpstream::Http(500, "{}"));
    const int64_t left = expires - ToEpochSeconds(time_.Now());
    const Token* t = cache_->Lookup(key);
    if (left > 60) {
      ASSERT_NE(t, nullptr) << "a valid token above the floor is served; " << left << " s left";
      served_inside_margin = served_inside_margin || left < 300;
    } else {
      ASSERT_EQ(t, nullptr) << "nothing is served inside the hard floor";
      break;
    }
  }
  EXPECT_TRUE(served_inside_margin);
  EXPECT_GT(upstream_.calls(), 3u) << "the refresher kept trying";
}

TEST_F(TokenCacheTest, UpstreamFailureNeverYieldsAnExpiredToken) {
  config_.cache.retry.max_attempts = 1;
  Build();
  const TokenKey key = Key();
  Warm(key, minutes(10));
  time_.Advance(minutes(11));
  while (upstream_.pending() > 0) upstream_.Respond(FakeUpstream::Http(503, ""));
  EXPECT_EQ(cache_->Lookup(key), nullptr);
  auto r = Get(key);
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(503, ""));
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at(0).kind, Kind::kUnavailable);
}

TEST_F(TokenCacheTest, PrefetchWarmsAtStartAndSignalsTheRound) {
  config_.cache.prefetch = {Key("https://vault.azure.net"),
                      Key("https://storage.azure.com/", SelectorKind::kClientId,
                          "0d1e2f30-aaaa-bbbb-cccc-123456789abc")};
  Build();
  bool done = false;
  cache_->StartPrefetch([&] { done = true; });
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 2u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("a", Epoch(hours(24)))));
  EXPECT_FALSE(done);
  upstream_.Respond(FakeUpstream::Http(400, R"({"error":"invalid_request"})"));
  EXPECT_TRUE(done) << "the round ends when each key has a token or failed";
  EXPECT_NE(cache_->Lookup(config_.cache.prefetch[0]), nullptr);
  // Prefetch keys are kept fresh even if nobody uses them.
  time_.Advance(hours(30));
  while (upstream_.pending() > 0) {
    upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("b", Epoch(hours(24)))));
    time_.RunPending();
  }
  EXPECT_NE(cache_->Lookup(config_.cache.prefetch[0]), nullptr);
}

TEST_F(TokenCacheTest, IdleKeysStopRefreshingAndAreDropped) {
  config_.cache.idle_evict = minutes(30);
  Build();
  const TokenKey key = Key();
  Warm(key, hours(24));
  time_.Advance(hours(25));
  EXPECT_EQ(upstream_.calls(), 1u) << "an idle key is not refreshed";
  EXPECT_EQ(cache_->stats().keys, 0u);
  EXPECT_GE(cache_->stats().evicted_idle, 1u);
}

TEST_F(TokenCacheTest, KeyCapEvictsLeastRecentlyUsed) {
  config_.cache.max_keys = 100;
  Build();
  for (int i = 0; i < 1000; ++i) {
    Warm(Key("https://r/" + std::to_string(i)), hours(24));
    ASSERT_LE(cache_->stats().keys, 100u);
  }
  EXPECT_EQ(cache_->stats().evicted_lru, 900u);
  EXPECT_NE(cache_->Lookup(Key("https://r/999")), nullptr);
  EXPECT_EQ(cache_->Lookup(Key("https://r/0")), nullptr);
}

TEST_F(TokenCacheTest, CallerDeadlineAnswers500AndTheFetchGoesOn) {
  config_.cache.caller_deadline = seconds(20);
  Build();
  const TokenKey key = Key();
  auto r = Get(key);
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  time_.Advance(seconds(21));
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at(0).kind, Kind::kUnavailable);
  EXPECT_EQ(cache_->stats().deadline_expired, 1u);
  // IMDS answers late: the token still lands in the cache.
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("late", Epoch(hours(24)))));
  EXPECT_NE(cache_->Lookup(key), nullptr);
}

TEST_F(TokenCacheTest, WaiterCapShedsWith429) {
  config_.cache.max_waiters = 10;
  Build();
  std::vector<std::shared_ptr<std::vector<TokenResult>>> results;
  for (int i = 0; i < 15; ++i) results.push_back(Get(Key("https://r/" + std::to_string(i))));
  size_t shed = 0;
  for (auto& r : results) {
    if (!r->empty() && r->at(0).kind == Kind::kShed) {
      ++shed;
      EXPECT_GE(r->at(0).retry_after_seconds, 1);
    }
  }
  EXPECT_EQ(shed, 5u);
}

TEST_F(TokenCacheTest, QueueFullShedsWith429) {
  config_.budget.max_concurrent = 1;
  config_.budget.max_queue = 3;
  Build();
  std::vector<std::shared_ptr<std::vector<TokenResult>>> results;
  for (int i = 0; i < 10; ++i) results.push_back(Get(Key("https://r/" + std::to_string(i))));
  size_t shed = 0;
  for (auto& r : results) shed += (!r->empty() && r->at(0).kind == Kind::kShed) ? 1 : 0;
  EXPECT_GT(shed, 0u);
  EXPECT_LT(shed, 10u);
}

TEST_F(TokenCacheTest, RetriesRetryableFailuresThenServes) {
  config_.cache.retry.delta = seconds(2);
  Build();
  const TokenKey key = Key();
  auto r = Get(key);
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(500, ""));
  time_.RunPending();
  EXPECT_EQ(upstream_.calls(), 1u) << "the retry waits for its backoff";
  time_.Advance(seconds(3));
  ASSERT_EQ(upstream_.calls(), 2u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("ok", Epoch(hours(24)))));
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at(0).kind, Kind::kToken);
  EXPECT_EQ(cache_->stats().retries, 1u);
}

TEST_F(TokenCacheTest, MalformedTokenBodyIsAFailureNotACrash) {
  config_.cache.retry.max_attempts = 1;
  Build();
  auto r = Get(Key());
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(200, "{\"access_token\": "));
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at(0).kind, Kind::kUnavailable);
}

}  // namespace
}  // namespace mi

namespace mi {
namespace {

TEST_F(TokenCacheTest, DeadlineWhileHeldByTheBudgetIs429NotA500) {
  config_.cache.caller_deadline = seconds(10);
  config_.budget.max_concurrent = 1;
  Build();
  // One slow fetch occupies the only IMDS slot; a second key waits in the queue.
  auto first = Get(Key("https://slow/"));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  time_.Advance(seconds(6));
  auto second = Get(Key("https://queued/"));
  time_.Advance(seconds(3));
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("a", Epoch(hours(24)))));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u) << "the queued fetch went out 3 s into its caller's 10 s wait";
  time_.Advance(seconds(4));
  ASSERT_EQ(second->size(), 0u);
  time_.Advance(seconds(4));  // its attempt started at 3 s of 10 s: IMDS is slow, not the agent
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ(second->at(0).kind, Kind::kUnavailable);

  // Now a caller whose fetch sits in the queue past its whole deadline.
  auto blocker = Get(Key("https://blocker/"));
  time_.RunPending();
  auto starved = Get(Key("https://starved/"));
  time_.Advance(seconds(11));
  ASSERT_EQ(starved->size(), 1u);
  EXPECT_EQ(starved->at(0).kind, Kind::kShed);
  EXPECT_GE(starved->at(0).retry_after_seconds, 1);
}

// --- floods of misses for keys that never get a token (issue #11, item 1) ----------

TEST_F(TokenCacheTest, DeadlineDropsAQueuedFetchForAKeyWithoutAToken) {
  config_.cache.caller_deadline = seconds(10);
  config_.budget.max_concurrent = 1;
  Build();
  auto blocker = Get(Key("https://slow/"));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  auto junk = Get(Key("https://junk/"));
  EXPECT_EQ(scheduler_->stats().queued_caller, 1u);
  time_.Advance(seconds(11));
  ASSERT_EQ(junk->size(), 1u);
  EXPECT_EQ(junk->at(0).kind, Kind::kShed);
  EXPECT_EQ(scheduler_->stats().queued_caller + scheduler_->stats().queued_background, 0u)
      << "nobody waits for it and the key has no token: the queued fetch is dropped";
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("a", Epoch(hours(24)))));
  time_.Advance(minutes(30));
  EXPECT_EQ(upstream_.calls(), 1u) << "the junk key is never fetched";
  for (const auto& s : cache_->Snapshot()) {
    if (s.key.resource == "https://junk/") {
      EXPECT_EQ(s.next_refresh, TimePoint()) << "nor scheduled";
    }
  }
  // Its next caller starts a fetch of its own.
  auto again = Get(Key("https://junk/"));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("j", Epoch(hours(24)))));
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ(again->at(0).kind, Kind::kToken);
}

TEST_F(TokenCacheTest, AFloodOfNewKeysEvictsJunkBeforeKeysHoldingTokens) {
  config_.cache.max_keys = 8;
  Build();
  const TokenKey held = Key("https://held/");
  Warm(held, hours(24));
  // Least recently used from here on: 100 junk keys, each refused by IMDS.
  for (int i = 0; i < 100; ++i) {
    auto r = Get(Key("https://junk-" + std::to_string(i) + "/"));
    time_.RunPending();
    upstream_.Respond(FakeUpstream::Http(400, R"({"error":"invalid_request"})"));
    time_.Advance(seconds(1));
  }
  EXPECT_NE(cache_->Lookup(held), nullptr) << "the key holding a token was evicted for junk";
  EXPECT_EQ(cache_->stats().keys, 8u);
}

TEST_F(TokenCacheTest, CallersWhoHungUpGiveUpTheirPlaceBeforeTheirDeadline) {
  // A flood whose process died: its queued misses must not keep new keys out
  // for the rest of the caller deadline.
  config_.cache.caller_deadline = seconds(25);
  config_.budget.max_concurrent = 1;
  config_.budget.max_queue = 3;
  Build();
  auto blocker = Get(Key("https://slow/"));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  auto connected = std::make_shared<bool>(true);
  std::vector<std::shared_ptr<std::vector<TokenResult>>> junk;
  for (int i = 0; i < 3; ++i) {
    auto out = std::make_shared<std::vector<TokenResult>>();
    cache_->Get(
        Key("https://junk-" + std::to_string(i) + "/"), CallerTag(), [out](const TokenResult& r) { out->push_back(r); },
        [connected] { return *connected; });
    junk.push_back(out);
  }
  ASSERT_EQ(scheduler_->stats().queued_caller, 3u);
  auto refused = Get(Key("https://new-1/"));
  ASSERT_EQ(refused->size(), 1u);
  EXPECT_EQ(refused->at(0).kind, Kind::kShed) << "the queue is full of callers still waiting";

  *connected = false;  // the flooding process is gone
  time_.Advance(seconds(2));
  auto fresh = Get(Key("https://new-2/"));
  EXPECT_TRUE(fresh->empty()) << "queued, not shed: the callers who hung up made room";
  for (const auto& j : junk) {
    ASSERT_EQ(j->size(), 1u);
    EXPECT_EQ(j->at(0).kind, Kind::kShed);
  }
  EXPECT_EQ(scheduler_->stats().queued_caller, 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("s", Epoch(hours(24)))));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u) << "the new key is fetched next, no junk key before it";
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("n", Epoch(hours(24)))));
  ASSERT_EQ(fresh->size(), 1u);
  EXPECT_EQ(fresh->at(0).kind, Kind::kToken);
  time_.Advance(minutes(1));
  EXPECT_EQ(upstream_.calls(), 2u) << "no junk key was ever fetched";
}

TEST_F(TokenCacheTest, UnderPressureAFetchWhoseCallersHungUpIsNotSent) {
  config_.budget.max_concurrent = 1;
  Build();
  auto blocker = Get(Key("https://slow/"));
  time_.RunPending();
  auto connected = std::make_shared<bool>(true);
  auto out = std::make_shared<std::vector<TokenResult>>();
  cache_->Get(Key("https://junk/"), CallerTag(), [out](const TokenResult& r) { out->push_back(r); },
              [connected] { return *connected; });
  auto live = Get(Key("https://live/"));
  *connected = false;
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("s", Epoch(hours(24)))));
  time_.RunPending();
  ASSERT_EQ(out->size(), 1u) << "its only caller hung up while another caller waited";
  EXPECT_EQ(out->at(0).kind, Kind::kShed);
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("l", Epoch(hours(24)))));
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ(live->at(0).kind, Kind::kToken) << "the live caller's fetch went out in the junk key's place";
  EXPECT_EQ(upstream_.calls(), 2u);
}

TEST_F(TokenCacheTest, WithoutPressureAHalfClosedCallerStillGetsItsToken) {
  Build();
  auto out = std::make_shared<std::vector<TokenResult>>();
  cache_->Get(Key("https://one/"), CallerTag(), [out](const TokenResult& r) { out->push_back(r); }, [] { return false; });
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("t", Epoch(hours(24)))));
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ(out->at(0).kind, Kind::kToken);
}

TEST_F(TokenCacheTest, DeadlineDemotesTheQueuedFetchOfAKeyHoldingAToken) {
  config_.cache.caller_deadline = seconds(10);
  config_.cache.fail_fast = Duration(0);  // the timeout below would cut the wait short
  config_.budget.max_concurrent = 1;
  config_.cache.refresh_ahead = Duration(0);
  Build();
  const TokenKey key = Key("https://held/");
  Warm(key, minutes(6));
  // Keep IMDS silent: the refresh at the margin stays in flight, then fails.
  time_.Advance(minutes(1));
  ASSERT_EQ(upstream_.pending(), 1u);
  auto waiting = Get(key);  // inside the margin: a miss that joins the refresh
  time_.Advance(seconds(2));
  upstream_.Respond(FakeUpstream::Transport(UpstreamResponse::Outcome::kTimeout));
  // The retry waits its backoff; a blocker takes the only slot meanwhile.
  auto blocker = Get(Key("https://slow/"));
  time_.Advance(seconds(3));
  ASSERT_EQ(upstream_.pending(), 1u);
  EXPECT_EQ(scheduler_->stats().queued_caller, 1u) << "the retry waits as a caller job";
  time_.Advance(seconds(6));  // past the waiter's deadline
  ASSERT_EQ(waiting->size(), 1u);
  EXPECT_EQ(scheduler_->stats().queued_caller, 0u);
  EXPECT_EQ(scheduler_->stats().queued_background, 1u) << "the key holds a token: the fetch goes on as a refresh";
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("b", Epoch(hours(24)))));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("fresh", Epoch(hours(24)))));
  ASSERT_NE(cache_->Lookup(key), nullptr);
  EXPECT_EQ(Access(cache_->Lookup(key), time_.Now()), "fresh");
}

TEST_F(TokenCacheTest, KeysThatNeverHadATokenAreNotRefreshedInTheBackground) {
  config_.cache.retry.max_attempts = 1;
  config_.budget.max_concurrent = 1;
  config_.budget.max_queue = 1;
  Build();
  // A failure with the retry budget spent...
  auto failed = Get(Key("https://fails/"));
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(500, "{}"));
  ASSERT_EQ(failed->size(), 1u);
  EXPECT_EQ(failed->at(0).kind, Kind::kUnavailable);
  // ...and a full IMDS queue.
  auto blocker = Get(Key("https://slow/"));
  time_.RunPending();
  auto queued = Get(Key("https://queued/"));
  auto refused = Get(Key("https://refused/"));
  ASSERT_EQ(refused->size(), 1u);
  EXPECT_EQ(refused->at(0).kind, Kind::kShed);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("s", Epoch(hours(24)))));
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("q", Epoch(hours(24)))));
  const size_t calls = upstream_.calls();
  EXPECT_EQ(calls, 3u);
  time_.Advance(minutes(30));
  EXPECT_EQ(upstream_.calls(), calls) << "neither the failed nor the refused key is fetched without a caller";
  for (const auto& s : cache_->Snapshot()) {
    if (s.key.resource == "https://fails/" || s.key.resource == "https://refused/") {
      EXPECT_EQ(s.next_refresh, TimePoint()) << s.key.resource << " has no refresh scheduled";
    }
  }
  // A failure for a key whose callers left is not retried either.
  config_.cache.retry.max_attempts = 5;
  cache_->Reconfigure(config_.cache);
  config_.cache.caller_deadline = seconds(2);
  cache_->Reconfigure(config_.cache);
  auto left = Get(Key("https://left/"));
  time_.RunPending();
  time_.Advance(seconds(3));  // the caller gives up while the request is out
  ASSERT_EQ(left->size(), 1u);
  upstream_.Respond(FakeUpstream::Http(503, "{}"));
  time_.Advance(minutes(30));
  EXPECT_EQ(upstream_.calls(), calls + 1) << "no retry for nobody";
}

TEST_F(TokenCacheTest, KeysWithTokensKeepRefreshingAheadOfAJunkFlood) {
  config_.budget.max_concurrent = 1;
  config_.budget.rate_per_second = 1;
  config_.budget.burst = 1;
  config_.budget.max_queue = 20;
  config_.cache.max_keys = 200;
  Build();
  const TokenKey key = Key("https://cached/");
  // Refresh due 30 s from now (margin 5 min + 7.5 min of refresh-ahead), margin at 8 min.
  Warm(key, minutes(13));
  const size_t warm_calls = upstream_.calls();
  int junk = 0;
  size_t refreshes = 0;
  bool queue_full = false;
  for (int step = 0; step < 10 * 60 * 10; ++step) {  // 10 minutes of 100 ms steps
    if (step % 2 == 0) Get(Key("https://junk/" + std::to_string(junk++)));  // 5 misses/s, 1 IMDS request/s
    queue_full = queue_full || scheduler_->stats().queued_caller == 20;
    time_.Advance(Duration(100));
    while (upstream_.pending() > 0) {
      const size_t i = upstream_.calls() - upstream_.pending();
      refreshes += upstream_.key(i) == key ? 1 : 0;
      upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("t" + std::to_string(i), Epoch(minutes(13)))));
    }
    ASSERT_NE(cache_->Lookup(key), nullptr) << "served from the cache throughout the flood, at "
                                            << (step / 10) << " s";
  }
  EXPECT_TRUE(queue_full) << "the flood filled the callers' queue";
  // Served from the cache past the first token's margin (8 min): refreshed in
  // time. The junk keys hold tokens too and are kept fresh like it (eviction
  // prefers keys without a token), so its refresh shares the background starts
  // with theirs and may come later than the 30 s of its schedule.
  EXPECT_GE(refreshes, 1u);
  EXPECT_GT(upstream_.calls(), warm_calls + 500);
}

// --- IMDS answering for another identity (issue #14, point 2) ------------------------

TEST_F(TokenCacheTest, AnswerForAnotherIdentityIsNeverServedNorCached) {
  Build();
  const std::string mine = "0d1e2f30-aaaa-4bbb-8ccc-123456789abc";
  const std::string other = "99999999-8888-4777-8666-555555555555";
  const TokenKey key = Key("https://management.azure.com/", SelectorKind::kClientId, mine);
  const std::string arm = "https://management.azure.com/";
  auto r = Get(key);
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("theirs", Epoch(hours(24)), arm, other)));
  ASSERT_EQ(r->size(), 1u) << "answered at once, not after retries";
  EXPECT_EQ(r->at(0).kind, Kind::kUnavailable);
  EXPECT_EQ(r->at(0).description, "IMDS answered for another identity");
  EXPECT_EQ(cache_->Lookup(key), nullptr) << "never cached";
  EXPECT_EQ(cache_->stats().wrong_identity, 1u);
  auto snapshot = cache_->Snapshot();
  ASSERT_EQ(snapshot.size(), 1u);
  EXPECT_EQ(snapshot[0].last_error, "wrong_identity");
  EXPECT_EQ(snapshot[0].last_error_description, "IMDS answered for another identity");
  // No caller waits and the key holds no token: nobody asks again on its behalf.
  time_.Advance(minutes(5));
  EXPECT_EQ(upstream_.pending(), 0u);

  // A later correct answer is served and cached.
  auto r2 = Get(key);
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("mine", Epoch(minutes(20)), arm, mine)));
  ASSERT_EQ(r2->size(), 1u);
  ASSERT_EQ(r2->at(0).kind, Kind::kToken);
  ASSERT_NE(cache_->Lookup(key), nullptr);

  // A refresh answered for another identity keeps the valid token and backs off.
  time_.Advance(minutes(7) + seconds(30));  // the refresh is due
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("theirs2", Epoch(hours(24)), arm, other)));
  const Token* t = cache_->Lookup(key);
  ASSERT_NE(t, nullptr) << "the previous valid token stays";
  EXPECT_EQ(Access(t, time_.Now()), "mine");
  EXPECT_EQ(cache_->stats().wrong_identity, 2u);
  EXPECT_EQ(cache_->Snapshot()[0].state, EntryState::kDegraded);
  EXPECT_EQ(upstream_.pending(), 0u) << "a retry waits for its backoff";
  time_.Advance(seconds(5));
  EXPECT_EQ(upstream_.pending(), 1u) << "retried as after a malformed answer";
}

TEST_F(TokenCacheTest, WrongIdentityMetricIsAbsentUntilTheFirst) {
  Build();
  auto has_metric = [&] {
    MetricsWriter w(time_.Now());
    cache_->WriteMetrics(w);
    return w.Take().find("mi_agent_upstream_wrong_identity_total") != std::string::npos;
  };
  EXPECT_FALSE(has_metric());
  const TokenKey key = Key("https://management.azure.com/", SelectorKind::kObjectId,
                           "0d1e2f30-aaaa-4bbb-8ccc-123456789abc");
  auto r = Get(key);
  time_.RunPending();
  // "a.<base64url {"oid":"other"}>.s"
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("a.eyJvaWQiOiJvdGhlciJ9.s", Epoch(hours(24)))));
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at(0).kind, Kind::kUnavailable);
  EXPECT_TRUE(has_metric());
}

// --- IMDS handing out expired tokens (issue #11, item 10) ----------------------------

TEST_F(TokenCacheTest, ExpiredTokensFromImdsBackOffLikeAnyFailure) {
  Build();
  const TokenKey key = Key();
  Warm(key, minutes(20));  // refresh due at 7.5 min
  time_.Advance(minutes(7) + seconds(30));
  const size_t before = upstream_.calls();
  ASSERT_EQ(upstream_.pending(), 1u);
  int consecutive = 0;
  for (int i = 0; i < 600; ++i) {  // 10 minutes
    while (upstream_.pending() > 0) {
      upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("stale", Epoch(-seconds(10)))));
    }
    for (const auto& s : cache_->Snapshot()) consecutive = s.consecutive_failures;
    time_.Advance(seconds(1));
  }
  // 5 attempts (0, 2, 6, 14, 30 s), then a new round every ~60-75 s: not one a second.
  EXPECT_LT(upstream_.calls() - before, 60u);
  EXPECT_GT(consecutive, 5) << "each expired token counts as a failure";
  auto snapshot = cache_->Snapshot();
  ASSERT_EQ(snapshot.size(), 1u);
  EXPECT_EQ(snapshot[0].last_error, "expired_token");
  EXPECT_EQ(snapshot[0].last_error_description, "IMDS returned an expired token");
  EXPECT_EQ(snapshot[0].state, EntryState::kDegraded) << "the cached token is still valid";
  const Token* t = cache_->Lookup(key);
  ASSERT_NE(t, nullptr) << "the old token is still served, down to the floor";
  EXPECT_EQ(Access(t, time_.Now()), "tok-1");
  // A caller asking meanwhile (inside the floor now) gets the IMDS answer as
  // before: an expired token is never handed out.
  time_.Advance(minutes(2) + seconds(30));
  EXPECT_EQ(cache_->Lookup(key), nullptr);
  auto r = Get(key);
  time_.Advance(minutes(2));
  while (upstream_.pending() > 0) {
    upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("stale", Epoch(-seconds(10)))));
    time_.Advance(seconds(30));
  }
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at(0).kind, Kind::kUnavailable);
}

TEST_F(TokenCacheTest, TokenInsideTheFloorGoesToItsWaitersButIsNotPolledForEverySecond) {
  config_.cache.prefetch = {Key("https://prefetched/")};
  Build();
  cache_->StartPrefetch([] {});
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  auto r = Get(config_.cache.prefetch[0]);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("short", Epoch(seconds(30)))));
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at(0).kind, Kind::kToken) << "a valid token, as before";
  EXPECT_EQ(cache_->Lookup(config_.cache.prefetch[0]), nullptr) << "but not cached: it is inside the floor";
  const size_t before = upstream_.calls();
  for (int i = 0; i < 300; ++i) {  // 5 minutes of IMDS answering the same short-lived token
    while (upstream_.pending() > 0) {
      upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("short", Epoch(seconds(30)))));
    }
    time_.Advance(seconds(1));
  }
  EXPECT_LT(upstream_.calls() - before, 30u);
  EXPECT_GT(upstream_.calls() - before, 3u) << "a prefetch key keeps trying";
}


// Summarize() keeps its counts incrementally; it must show every key as
// Snapshot() does, including keys whose token expired since their last change.
TEST_F(TokenCacheTest, SummaryCountsEveryKeyAsTheSnapshotShowsIt) {
  config_.budget.max_concurrent = 2;
  config_.budget.max_queue = 3;
  config_.cache.max_keys = 12;
  config_.cache.idle_evict = minutes(20);
  config_.cache.caller_deadline = seconds(10);
  config_.cache.prefetch = {Key("https://prefetched/")};
  Build();
  cache_->StartPrefetch([] {});
  auto check = [&](int step) {
    size_t by_state[4] = {};
    int64_t earliest = 0;
    for (const EntrySnapshot& s : cache_->Snapshot()) {
      ++by_state[static_cast<int>(s.state)];
      if (s.expires_on != 0 && (earliest == 0 || s.expires_on < earliest)) earliest = s.expires_on;
    }
    const TokenCache::Summary sum = cache_->Summarize();
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(sum.by_state[i], by_state[i]) << EntryStateName(static_cast<EntryState>(i)) << " at step " << step;
    }
    ASSERT_EQ(sum.earliest_expires_on, earliest) << "at step " << step;
  };
  // Each resource picks how IMDS answers it.
  // "dying" gets one token, then failures until long after it expired.
  const std::vector<std::string> kinds = {"ok", "short", "fails", "rejected", "expired", "flaky", "dying"};
  std::set<std::string> answered;
  for (int step = 0; step < 600; ++step) {  // 50 minutes of 5 s steps
    if (step % 3 == 0) Get(Key("https://" + kinds[step / 3 % kinds.size()] + "/" + std::to_string(step % 7)));
    if (step % 5 == 0) cache_->Lookup(Key("https://ok/0"));
    if (step % 60 == 30) {  // a burst past the queue: shed keys
      for (int i = 0; i < 8; ++i) Get(Key("https://burst/" + std::to_string(step + i)));
    }
    time_.Advance(seconds(5));
    while (upstream_.pending() > 0) {
      const std::string& resource = upstream_.key(upstream_.calls() - upstream_.pending()).resource;
      const std::string kind = resource.substr(8, resource.find('/', 8) - 8);
      const bool first = answered.insert(resource).second;
      if (kind == "fails" || (kind == "flaky" && step % 40 < 20) || (kind == "dying" && !first)) {
        upstream_.Respond(FakeUpstream::Http(503, "{}"));
      } else if (kind == "rejected") {
        upstream_.Respond(FakeUpstream::Http(400, R"({"error":"invalid_request"})"));
      } else if (kind == "expired") {
        upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("x", Epoch(-seconds(1)))));
      } else {
        const Duration life = kind == "short" || kind == "dying" ? minutes(7) : kind == "flaky" ? minutes(12) : hours(24);
        upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("t", Epoch(life))));
      }
      check(step);
    }
    check(step);
  }
  EXPECT_GT(cache_->stats().evicted_lru + cache_->stats().evicted_idle, 0u);
  EXPECT_GT(cache_->stats().shed, 0u);
}

// --- the fair share per caller ------------------------------------------------------

const CallerTag kA = CallerTag::Uid(1001);
const CallerTag kB = CallerTag::Uid(1002);

TEST_F(TokenCacheTest, ACallerAtItsShareOfWaitersIsShedWhileAnotherIsAdmitted) {
  config_.cache.max_waiters = 100;
  config_.cache.max_waiters_per_caller = 3;
  Build();
  std::vector<std::shared_ptr<std::vector<TokenResult>>> a;
  for (int i = 0; i < 3; ++i) a.push_back(GetAs(kA, Key("https://a/" + std::to_string(i))));
  for (auto& r : a) EXPECT_TRUE(r->empty()) << "within A's share: waiting";
  auto a_over = GetAs(kA, Key("https://a/new"));
  ASSERT_TRUE(Shed(a_over)) << "A's fourth waiter is over its share";
  EXPECT_GE(a_over->at(0).retry_after_seconds, 1);
  auto b = GetAs(kB, Key("https://b/0"));
  EXPECT_TRUE(b->empty()) << "B has its own share";
  // Joining a fetch under way counts too, whoever's fetch it is.
  auto a_joins_b = GetAs(kA, Key("https://b/0"));
  EXPECT_TRUE(Shed(a_joins_b));
  auto a_joins_own = GetAs(kA, Key("https://a/0"));
  EXPECT_TRUE(Shed(a_joins_own));
  auto b_joins_a = GetAs(kB, Key("https://a/0"));
  EXPECT_TRUE(b_joins_a->empty());
  EXPECT_EQ(cache_->stats().shed_caller_share, 3u);
  EXPECT_EQ(cache_->stats().shed, 3u);
  EXPECT_EQ(cache_->stats().waiters, 5u);

  // An answered waiter gives its place back.
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 4u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("tok-a0", Epoch(hours(24)))));  // a/0
  ASSERT_EQ(a[0]->size(), 1u);
  EXPECT_EQ(a[0]->at(0).kind, Kind::kToken);
  ASSERT_EQ(b_joins_a->size(), 1u);
  EXPECT_EQ(b_joins_a->at(0).kind, Kind::kToken);
  EXPECT_TRUE(GetAs(kA, Key("https://a/again"))->empty()) << "A is back within its share";
  EXPECT_EQ(cache_->stats().shed_caller_share, 3u);
}

TEST_F(TokenCacheTest, TheTotalCapStillHoldsAcrossCallers) {
  config_.cache.max_waiters = 4;
  config_.cache.max_waiters_per_caller = 3;
  Build();
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(GetAs(kA, Key("https://a/" + std::to_string(i)))->empty());
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(GetAs(kB, Key("https://b/" + std::to_string(i)))->empty());
  EXPECT_TRUE(Shed(GetAs(CallerTag::Uid(1003), Key("https://c/"))));
  EXPECT_EQ(cache_->stats().shed_caller_share, 0u) << "shed by the total, not by a share";
}

TEST_F(TokenCacheTest, UnresolvedCallersShareOneShare) {
  config_.cache.max_waiters_per_caller = 2;
  Build();
  EXPECT_TRUE(GetAs(CallerTag::Unknown(), Key("https://u/0"))->empty());
  EXPECT_TRUE(GetAs(CallerTag::Unknown(), Key("https://u/1"))->empty());
  EXPECT_TRUE(Shed(GetAs(CallerTag::Unknown(), Key("https://u/2"))));
  EXPECT_TRUE(GetAs(kA, Key("https://u/2"))->empty());
}

TEST_F(TokenCacheTest, DeadlinesAndHangUpsGiveTheirPlacesBack) {
  config_.cache.max_waiters_per_caller = 2;
  config_.cache.caller_deadline = seconds(10);
  Build();
  auto first = GetAs(kA, Key("https://a/0"));
  auto connected = std::make_shared<bool>(true);
  auto hung_up = std::make_shared<std::vector<TokenResult>>();
  cache_->Get(
      Key("https://a/1"), kA, [hung_up](const TokenResult& r) { hung_up->push_back(r); },
      [connected] { return *connected; });
  EXPECT_TRUE(Shed(GetAs(kA, Key("https://a/2"))));
  time_.RunPending();
  // Silent IMDS: the first waiter reaches its deadline.
  time_.Advance(seconds(11));
  ASSERT_EQ(first->size(), 1u);
  ASSERT_EQ(hung_up->size(), 1u);
  EXPECT_EQ(cache_->stats().waiters, 0u);
  EXPECT_TRUE(GetAs(kA, Key("https://a/3"))->empty());
  EXPECT_TRUE(GetAs(kA, Key("https://a/4"))->empty());
  EXPECT_TRUE(Shed(GetAs(kA, Key("https://a/5"))));
}

TEST_F(TokenCacheTest, ACallerAtItsShareOfTheImdsQueueIsShed) {
  config_.budget.max_concurrent = 1;
  config_.budget.max_queue = 100;
  config_.budget.max_queue_per_caller = 2;
  Build();
  auto busy = GetAs(kA, Key("https://a/busy"));
  time_.RunPending();  // in flight: out of the queue
  ASSERT_EQ(upstream_.pending(), 1u);
  EXPECT_TRUE(GetAs(kA, Key("https://a/0"))->empty());
  EXPECT_TRUE(GetAs(kA, Key("https://a/1"))->empty());
  auto over = GetAs(kA, Key("https://a/2"));
  EXPECT_TRUE(Shed(over)) << "A has its share of the IMDS queue";
  EXPECT_TRUE(GetAs(kA, Key("https://a/0"))->empty()) << "joining A's own queued fetch takes no new place";
  EXPECT_TRUE(GetAs(kB, Key("https://b/0"))->empty()) << "B still finds room in the queue";
  EXPECT_EQ(cache_->stats().shed_caller_share, 1u);
  MetricsWriter w(time_.Now());
  cache_->WriteMetrics(w);
  EXPECT_NE(w.Take().find("mi_agent_requests_shed_caller_share_total 1\n"), std::string::npos);
}

TEST_F(TokenCacheTest, TheCallerShareMetricAppearsOnlyOnceACallerWasShed) {
  Build();
  Warm(Key(), hours(24));
  MetricsWriter w(time_.Now());
  cache_->WriteMetrics(w);
  const std::string text = w.Take();
  EXPECT_NE(text.find("mi_agent_requests_shed_total 0"), std::string::npos);
  EXPECT_EQ(text.find("caller_share"), std::string::npos) << "/metrics reads as before the fair share";
}

TEST_F(TokenCacheTest, ANewCallersFetchGoesOutBeforeAFloodOfAnotherCallersFetches) {
  config_.budget.max_concurrent = 1;
  Build();
  std::vector<std::shared_ptr<std::vector<TokenResult>>> flood;
  for (int i = 0; i < 100; ++i) flood.push_back(GetAs(kA, Key("https://flood/" + std::to_string(i))));
  auto b = GetAs(kB, Key("https://b/"));
  time_.RunPending();
  // One request at a time: B's is among the first two IMDS sees.
  for (int sent = 0; sent < 2 && b->empty(); ++sent) {
    ASSERT_EQ(upstream_.pending(), 1u);
    upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("tok", Epoch(hours(24)))));
    time_.RunPending();
  }
  ASSERT_EQ(b->size(), 1u) << "B waited behind A's flood";
  EXPECT_EQ(b->at(0).kind, Kind::kToken);
  size_t answered = 0;
  for (auto& r : flood) answered += r->size();
  EXPECT_LE(answered, 1u);
}

TEST_F(TokenCacheTest, ABackgroundFetchJoinedByACallerBecomesThatCallersJob) {
  config_.budget.max_concurrent = 1;
  config_.cache.refresh_ahead = Duration(0);
  config_.cache.caller_deadline = hours(1);  // A's flood stays queued
  Build();
  const TokenKey fresh = Key("https://fresh/");
  Warm(fresh, minutes(10));
  // Hold the only slot, queue a flood of A, then let the refresh of `fresh`
  // come due (background work, no caller's).
  auto busy = GetAs(kA, Key("https://busy/"));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  std::vector<std::shared_ptr<std::vector<TokenResult>>> flood;
  for (int i = 0; i < 20; ++i) flood.push_back(GetAs(kA, Key("https://flood/" + std::to_string(i))));
  time_.Advance(minutes(6));  // inside the margin: the refresh is queued, and a Get is a miss
  ASSERT_EQ(scheduler_->stats().queued_background, 1u);
  auto b = GetAs(kB, fresh);
  ASSERT_TRUE(b->empty());
  EXPECT_EQ(scheduler_->stats().queued_background, 0u) << "promoted";
  EXPECT_EQ(scheduler_->stats().caller_owners, 2u) << "as B's job, not A's";
}

TEST_F(TokenCacheTest, CoalescedSaysWhichGetsJoinedAFetchUnderWay) {
  config_.cache.caller_deadline = seconds(10);
  Build();
  const TokenKey key = Key();
  auto first = Get(key);
  auto second = Get(key);
  auto third = GetAs(kA, key);
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("tok", Epoch(hours(24)))));
  ASSERT_EQ(first->size(), 1u);
  ASSERT_EQ(second->size(), 1u);
  ASSERT_EQ(third->size(), 1u);
  EXPECT_FALSE(first->at(0).coalesced) << "it started the fetch";
  EXPECT_TRUE(second->at(0).coalesced);
  EXPECT_TRUE(third->at(0).coalesced);
  EXPECT_EQ(cache_->stats().coalesced, 2u);
  // A hit is no join.
  auto hit = Get(key);
  ASSERT_EQ(hit->size(), 1u);
  EXPECT_FALSE(hit->at(0).coalesced);
  // Answers at the deadline say it too.
  const TokenKey slow = Key("https://slow/");
  auto s1 = Get(slow);
  auto s2 = Get(slow);
  time_.RunPending();
  time_.Advance(seconds(11));
  ASSERT_EQ(s1->size(), 1u);
  ASSERT_EQ(s2->size(), 1u);
  EXPECT_FALSE(s1->at(0).coalesced);
  EXPECT_TRUE(s2->at(0).coalesced);
}

// --- token_sha256_to_refresh (issue #14) ---------------------------------------------

class TokenCacheRefreshTest : public TokenCacheTest {
 protected:
  std::shared_ptr<std::vector<TokenResult>> GetRefreshing(const TokenKey& key, const std::string& hash) {
    auto out = std::make_shared<std::vector<TokenResult>>();
    RequestOptions options;
    options.refresh_sha256 = hash;
    cache_->GetWithOptions(key, CallerTag::Unknown(), options, [out](const TokenResult& r) { out->push_back(r); },
                           nullptr);
    return out;
  }
};

TEST_F(TokenCacheRefreshTest, HashOfTheCachedTokenDropsItAndNCallersShareOneFetch) {
  Build();
  const TokenKey key = Key();
  Warm(key, hours(24), "revoked");
  ASSERT_EQ(upstream_.calls(), 1u);
  const std::string stale = Sha256::HexHash("revoked");
  std::vector<std::shared_ptr<std::vector<TokenResult>>> results;
  for (int i = 0; i < 20; ++i) results.push_back(GetRefreshing(key, stale));
  EXPECT_EQ(cache_->Lookup(key), nullptr) << "nobody gets the revoked token again";
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 2u) << "one upstream call for all 20";
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("fresh", Epoch(hours(24)))));
  for (auto& r : results) {
    ASSERT_EQ(r->size(), 1u);
    ASSERT_EQ(r->at(0).kind, Kind::kToken);
    EXPECT_EQ(Access(r->at(0).token.get(), time_.Now()), "fresh");
  }
  EXPECT_EQ(cache_->stats().refresh_by_hash, 1u);
  // A late caller with the same stale hash gets the fresh token, no fetch.
  auto late = GetRefreshing(key, stale);
  ASSERT_EQ(late->size(), 1u);
  EXPECT_EQ(Access(late->at(0).token.get(), time_.Now()), "fresh");
  time_.RunPending();
  EXPECT_EQ(upstream_.calls(), 2u);
}

TEST_F(TokenCacheRefreshTest, OtherHashServesTheCachedToken) {
  Build();
  const TokenKey key = Key();
  Warm(key, hours(24), "current");
  auto r = GetRefreshing(key, Sha256::HexHash("older"));
  ASSERT_EQ(r->size(), 1u);
  ASSERT_EQ(r->at(0).kind, Kind::kToken);
  EXPECT_EQ(Access(r->at(0).token.get(), time_.Now()), "current");
  time_.RunPending();
  EXPECT_EQ(upstream_.calls(), 1u);
  EXPECT_EQ(cache_->stats().refresh_by_hash, 0u);
  auto none = GetRefreshing(Key("other"), Sha256::HexHash("x"));  // no token yet: an ordinary miss
  time_.RunPending();
  EXPECT_EQ(upstream_.calls(), 2u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("o", Epoch(hours(24)))));
  ASSERT_EQ(none->size(), 1u);
  EXPECT_EQ(none->at(0).kind, Kind::kToken);
}

TEST_F(TokenCacheTest, KeysWithClaimsAreSeparateEntries) {
  Build();
  const TokenKey plain = Key();
  TokenKey with = Key();
  ASSERT_TRUE(SetClaims(&with, R"({"access_token":{"xms_az_nwperimid":{}}})").ok());
  Warm(plain, hours(24), "plain");
  EXPECT_EQ(cache_->Lookup(with), nullptr);
  Warm(with, hours(24), "claims");
  ASSERT_EQ(upstream_.calls(), 2u);
  EXPECT_EQ(upstream_.key(1).claims, with.claims) << "the fetch carries the claims";
  EXPECT_EQ(Access(cache_->Lookup(plain), time_.Now()), "plain");
  EXPECT_EQ(Access(cache_->Lookup(with), time_.Now()), "claims");
}

TEST_F(TokenCacheRefreshTest, TheFetchCarriesTheRequestIdOfTheCallerThatStartedIt) {
  Build();
  auto get = [this](const TokenKey& key, const std::string& id) {
    auto out = std::make_shared<std::vector<TokenResult>>();
    RequestOptions options;
    options.client_request_id = id;
    cache_->GetWithOptions(key, CallerTag::Unknown(), options, [out](const TokenResult& r) { out->push_back(r); },
                           nullptr);
    return out;
  };
  auto first = get(Key(), "req-1");
  auto joined = get(Key(), "req-2");
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 1u);
  EXPECT_EQ(upstream_.client_request_id(0), "req-1");
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("t", Epoch(hours(24)))));
  ASSERT_EQ(joined->size(), 1u);
  EXPECT_EQ(joined->at(0).kind, Kind::kToken);
  auto plain = Get(Key("other"));  // no id: the plain Fetch
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 2u);
  EXPECT_EQ(upstream_.client_request_id(1), "");
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("o", Epoch(hours(24)))));
}

TEST_F(TokenCacheRefreshTest, BypassFetchesOncePerWindowAndCoalesces) {
  config_.cache.bypass_min_interval = seconds(30);
  Build();
  const TokenKey key = Key();
  Warm(key, hours(24), "cached");
  auto bypass = [this, &key] {
    auto out = std::make_shared<std::vector<TokenResult>>();
    RequestOptions options;
    options.bypass_cache = true;
    cache_->GetWithOptions(key, CallerTag::Unknown(), options, [out](const TokenResult& r) { out->push_back(r); },
                           nullptr);
    return out;
  };
  std::vector<std::shared_ptr<std::vector<TokenResult>>> results;
  for (int i = 0; i < 10; ++i) results.push_back(bypass());
  EXPECT_TRUE(results[0]->empty()) << "a bypass never serves the cache";
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 2u) << "one bypass fetch for all 10";
  EXPECT_TRUE(upstream_.bypass_cache(1));
  EXPECT_FALSE(upstream_.bypass_cache(0));
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("entra", Epoch(hours(24)))));
  for (auto& r : results) {
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ(Access(r->at(0).token.get(), time_.Now()), "entra");
  }
  EXPECT_EQ(cache_->stats().bypass_fetched, 1u);
  EXPECT_EQ(cache_->stats().bypass_coalesced, 9u);
  // Within the window: the token the last bypass fetched, no upstream call.
  time_.Advance(seconds(29));
  auto recent = bypass();
  ASSERT_EQ(recent->size(), 1u);
  EXPECT_EQ(Access(recent->at(0).token.get(), time_.Now()), "entra");
  time_.RunPending();
  EXPECT_EQ(upstream_.calls(), 2u);
  EXPECT_EQ(cache_->stats().bypass_recent, 1u);
  // After it: a new bypass fetch.
  time_.Advance(seconds(1));
  auto later = bypass();
  time_.RunPending();
  ASSERT_EQ(upstream_.calls(), 3u);
  EXPECT_TRUE(upstream_.bypass_cache(2));
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("entra-2", Epoch(hours(24)))));
  ASSERT_EQ(later->size(), 1u);
  EXPECT_EQ(Access(later->at(0).token.get(), time_.Now()), "entra-2");
  // A plain request still hits, and a refresh later is no bypass.
  EXPECT_NE(cache_->Lookup(key), nullptr);
}

}  // namespace
}  // namespace mi

namespace mi {
namespace {

UpstreamResponse Refused() {
  UpstreamResponse r = FakeUpstream::Transport(UpstreamResponse::Outcome::kConnectError);
  r.description = "connection refused";
  return r;
}

TEST_F(TokenCacheTest, FailuresKeepImdsDescriptionOrTheTransportReason) {
  config_.cache.retry.max_attempts = 1;
  Build();
  const TokenKey key = Key();
  auto r = Get(key);
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(500, R"({"error":"internal_error","error_description":"busy\nnow"})"));
  ASSERT_EQ(r->size(), 1u);
  // What the caller gets does not change: the code only.
  EXPECT_EQ(r->at(0).description, "IMDS could not provide a token: internal_error");
  EntrySnapshot s;
  ASSERT_TRUE(cache_->SnapshotKey(key, &s));
  EXPECT_EQ(s.last_error_description, "busy?now");
  EXPECT_EQ(cache_->upstream_health().last_error_description, "busy?now");
  EXPECT_FALSE(cache_->upstream_health().down) << "IMDS answered";

  auto again = Get(key);
  time_.RunPending();
  upstream_.Respond(Refused());
  ASSERT_TRUE(cache_->SnapshotKey(key, &s));
  EXPECT_EQ(s.last_error, "connect_error");
  EXPECT_EQ(s.last_error_description, "connection refused");
  EXPECT_TRUE(cache_->upstream_health().down);

  // A rejection (4xx) keeps its description on the key.
  const TokenKey other = Key("https://other/");
  auto no = Get(other);
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(400, R"({"error":"invalid_request","error_description":"Identity not found"})"));
  ASSERT_EQ(no->size(), 1u);
  EXPECT_EQ(no->at(0).kind, Kind::kRejected);
  ASSERT_TRUE(cache_->SnapshotKey(other, &s));
  EXPECT_EQ(s.last_error_description, "Identity not found");
  EXPECT_FALSE(cache_->upstream_health().down) << "any HTTP answer clears the known-down state";

  // A malformed 200 body is never read for a description (it may hold a token).
  auto bad = Get(Key("https://bad/"));
  time_.RunPending();
  upstream_.Respond(FakeUpstream::Http(200, R"({"access_token":"secret","error_description":"secret"})"));
  ASSERT_TRUE(cache_->SnapshotKey(Key("https://bad/"), &s));
  EXPECT_EQ(s.last_error, "malformed_response");
  EXPECT_EQ(s.last_error_description.find("secret"), std::string::npos);
}

TEST_F(TokenCacheTest, WhileImdsIsKnownDownCallersFailFastRetriesGoOnAndSuccessClears) {
  config_.cache.caller_deadline = seconds(25);
  config_.cache.fail_fast = seconds(2);
  config_.cache.retry.max_attempts = 3;
  config_.cache.prefetch = {Key("https://prefetch/")};
  Build();
  const TokenKey cached = Key("https://cached/");
  Warm(cached, hours(24));
  cache_->StartPrefetch([] {});
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 1u);
  // A caller waits on its own fetch (in flight); then IMDS refuses the prefetch.
  auto early = Get(Key("https://early/"));
  time_.RunPending();
  ASSERT_EQ(upstream_.pending(), 2u);
  upstream_.Respond(Refused());  // the prefetch key's
  ASSERT_TRUE(cache_->upstream_health().down);
  // A caller with a cached token is unaffected.
  auto hit = Get(cached);
  ASSERT_EQ(hit->size(), 1u);
  EXPECT_EQ(hit->at(0).kind, Kind::kToken);

  time_.Advance(seconds(2));
  ASSERT_EQ(early->size(), 1u) << "answered at the cap, not at its 25 s deadline";
  EXPECT_EQ(early->at(0).kind, Kind::kUnavailable);
  upstream_.Respond(Refused());  // early's request, answered late

  // A caller arriving while known down: answered at the cap, its fetch in flight.
  const size_t before = upstream_.calls();
  auto late = Get(Key("https://late/"));
  time_.RunPending();
  ASSERT_GT(upstream_.calls(), before);
  time_.Advance(seconds(1));
  EXPECT_TRUE(late->empty());
  time_.Advance(seconds(1));
  ASSERT_EQ(late->size(), 1u);
  EXPECT_EQ(late->at(0).kind, Kind::kUnavailable);

  // The prefetch key's retries go on in the background.
  size_t prefetch_calls = 0;
  for (size_t i = 0; i < upstream_.calls(); ++i) prefetch_calls += upstream_.key(i) == Key("https://prefetch/") ? 1 : 0;
  EXPECT_GE(prefetch_calls, 2u);
  while (upstream_.pending() > 0) upstream_.Respond(Refused());
  ASSERT_TRUE(cache_->upstream_health().down);

  // The first success clears the state: callers wait their full deadline again.
  for (int i = 0; i < 100 && upstream_.pending() == 0; ++i) time_.Advance(seconds(10));
  ASSERT_EQ(upstream_.pending(), 1u);
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("back", Epoch(hours(24)))));
  EXPECT_FALSE(cache_->upstream_health().down);
  auto after = Get(Key("https://after/"));
  time_.RunPending();
  time_.Advance(seconds(10));
  EXPECT_TRUE(after->empty()) << "no fail fast once IMDS answers";
  upstream_.Respond(FakeUpstream::Http(200, FakeUpstream::TokenBody("after", Epoch(hours(24)))));
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ(after->at(0).kind, Kind::kToken);
}

TEST_F(TokenCacheTest, FailFastOffWaitsTheWholeDeadline) {
  config_.cache.caller_deadline = seconds(20);
  config_.cache.fail_fast = Duration(0);
  Build();
  auto first = Get(Key("https://a/"));
  time_.RunPending();
  upstream_.Respond(Refused());
  ASSERT_TRUE(cache_->upstream_health().down);
  auto r = Get(Key("https://b/"));
  time_.RunPending();
  time_.Advance(seconds(5));
  EXPECT_TRUE(r->empty());
}

}  // namespace
}  // namespace mi
