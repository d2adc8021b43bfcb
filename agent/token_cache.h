#pragma once
// TokenCache: the broker behind the token API. It is the VM's shared token
// cache (SPEC §6, §7):
//  * hits are served from memory while a token has more than `margin` left;
//  * concurrent misses for one key share one upstream request (single flight);
//    every waiter gets its answer as soon as it arrives, or at its deadline;
//  * only keys the cache keeps fresh -- prefetch keys, and keys holding a token
//    not yet expired -- cause background work (refreshes, retries with nobody
//    waiting, tries again after a full IMDS queue). Any other key (one that
//    never obtained a token, or whose token expired) is fetched only while a
//    caller waits: when its last caller leaves (its deadline passed, or it hung
//    up: checked under pressure only -- when its fetch reaches the front while
//    other callers are queued, and, at most once a second, when a new caller
//    would find the callers' queue full), a fetch not yet sent is dropped; a failed or shed fetch is not retried or rescheduled; its next
//    caller starts a new fetch. So a flood of misses for junk keys leaves
//    nothing behind once its callers are gone;
//  * when the last caller of a key kept fresh leaves, its fetch not yet sent
//    becomes background work (UpstreamScheduler::Demote), out of the callers'
//    queue;
//  * keys in use are refreshed ahead of the margin, with jitter; the same token
//    coming back again backs off instead of looping (a token already inside
//    the floor is asked for again at half its remaining life); a token that
//    arrives already expired is a failure, with the retry policy's backoff;
//  * prefetch keys are fetched at start and kept fresh forever;
//  * idle keys stop refreshing and are dropped; the number of keys is capped (LRU);
//  * IMDS's definite "no" (4xx) is cached briefly;
//  * a fair share per caller (CallerTag, agent/caller_tag.h): a caller with
//    `max_waiters_per_caller` callbacks waiting on IMDS is shed (429) for a
//    further miss, whether it would start a fetch or join one under way (of
//    any caller); a fetch's job in the IMDS queue belongs to the caller that
//    created it, or for which it became a caller job (Promote), and takes
//    that caller's turn in the scheduler's round robin and a place in its
//    share of the queue (UpstreamScheduler::Options::max_queue_per_caller).
//    Background work is no caller's;
//  * while IMDS fails, valid tokens are served down to `hard_floor` before expiry;
//  * fail fast: while IMDS is known down (UpstreamHealth::down: the last attempt
//    could not connect or timed out, and IMDS has not answered since), a caller
//    without a servable token waits at most `fail_fast` -- callers already
//    waiting when it goes down are cut to the same cap -- and then gets its 500
//    (or the cached token, if refreshes failing made it servable). Retries and
//    refreshes go on; any HTTP answer ends the state. Failures keep IMDS's
//    error_description, or the transport's reason, for /status and logs
//    (`last_error_description`), never for callers.
// Every upstream request goes through one UpstreamScheduler (the IMDS budget)
// and one RetryPolicy. Time and the upstream are injected. It does not log: the
// daemon logs what its observers report. Loop thread only.

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/metrics.h"
#include "agent/base/random.h"
#include "agent/base/timer.h"
#include "agent/retry_policy.h"
#include "agent/token_broker.h"
#include "agent/upstream_client.h"
#include "agent/upstream_scheduler.h"

namespace mi {

// ok: a token beyond the margin; refreshing: a fetch under way and no failure yet;
// degraded: serving a cached token while refreshes fail; failing: no valid token.
enum class EntryState { kOk, kRefreshing, kDegraded, kFailing };
const char* EntryStateName(EntryState state);

// What the health endpoint shows of one key. Never a token.
struct EntrySnapshot {
  TokenKey key;
  EntryState state = EntryState::kRefreshing;
  bool prefetch = false;
  int64_t expires_on = 0;          // 0: no token
  TimePoint last_refresh{};        // last time a token arrived
  TimePoint next_refresh{};        // when the refresher runs next (epoch 0: not scheduled)
  TimePoint last_used{};
  int last_error_status = 0;       // HTTP status of the last failure, 0 for transport errors
  std::string last_error;          // IMDS "error" code or a transport description
  // IMDS's error_description or the transport's reason (CleanDescription); "": none.
  std::string last_error_description;
  int consecutive_failures = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
};

// Counters for metrics. Monotonic except the gauges marked so.
struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t coalesced = 0;          // misses that joined a fetch already under way
  uint64_t negative_hits = 0;
  uint64_t shed = 0;               // callers answered 429 by the agent
  uint64_t shed_caller_share = 0;  // of which: their caller held its share of the waiters or of the IMDS queue
  uint64_t deadline_expired = 0;   // callers answered 500 at their deadline
  uint64_t upstream_requests = 0;
  uint64_t upstream_by_class[6] = {};  // [0] transport errors, [1..5] 1xx..5xx
  uint64_t retries = 0;
  uint64_t throttle_pauses = 0;
  uint64_t same_token = 0;
  uint64_t wrong_identity = 0;     // 200 answers for another identity (agent/identity_echo.h)
  uint64_t evicted_idle = 0;
  uint64_t evicted_lru = 0;
  uint64_t refresh_by_hash = 0;    // cached tokens dropped for token_sha256_to_refresh
  // bypass_cache=true requests: started a bypass fetch, joined one under way,
  // or came within bypass_min_interval of the last one (served as usual).
  uint64_t bypass_fetched = 0;
  uint64_t bypass_coalesced = 0;
  uint64_t bypass_recent = 0;
  size_t waiters = 0;              // gauge
  size_t keys = 0;                 // gauge
};

// Upstream health for /status.
struct UpstreamHealth {
  TimePoint last_success{};
  TimePoint last_failure{};
  int last_error_status = 0;
  std::string last_error;
  std::string last_error_description;  // as EntrySnapshot's
  bool failing = false;             // the last upstream answer was a failure
  // Known down: the last attempt could not connect or timed out, and IMDS has
  // not answered (any HTTP status) since. Callers without a token fail fast.
  bool down = false;
};

class TokenCache : public TokenBroker, public MetricsSource {
 public:
  // Called for each upstream request that finished, after the cache has taken in
  // its answer: its latency and HTTP status (0: transport error).
  using UpstreamObserver = std::function<void(Duration latency, int status)>;

  // Config "cache", plus "limits.max_waiters", "limits.caller_deadline_seconds",
  // "retry" and "prefetch" (ranges checked by ParseConfig, agent/app/config.cc).
  struct Options {
    Duration margin = Duration(300000);          // "margin_seconds": hits need this much life left
    Duration refresh_ahead = Duration(600000);   // "refresh_ahead_seconds": refresh 1/2..1 of this before the margin (jittered)
    Duration hard_floor = Duration(60000);       // "hard_floor_seconds": while IMDS fails, serve down to this
    Duration idle_evict = Duration(3600000);     // "idle_seconds": unused keys stop refreshing and go
    size_t max_keys = 4096;                      // "max_keys": LRU cap
    Duration negative_ttl = Duration(5000);      // "negative_ttl_seconds": cache IMDS 4xx this long (0: off)
    Duration same_token_backoff = Duration(60000);  // "same_token_backoff_seconds"
    // "bypass_min_interval_seconds": at most one bypass_cache fetch per key this often.
    Duration bypass_min_interval = Duration(30000);
    size_t max_waiters = 4096;                   // "limits.max_waiters": callers waiting on IMDS in total
    // "limits.max_waiters_per_caller": waiting callbacks of one CallerTag.
    // ParseConfig's default: a quarter of max_waiters, at least 16.
    size_t max_waiters_per_caller = 1024;
    Duration caller_deadline = Duration(25000);  // "limits.caller_deadline_seconds"
    // "limits.fail_fast_seconds": while IMDS is known down (UpstreamHealth::down),
    // a caller waits at most this long (0: the full caller_deadline).
    Duration fail_fast = Duration(2000);
    RetryPolicy::Options retry;                  // "retry"
    std::vector<TokenKey> prefetch;              // "prefetch": fetched at start, kept fresh forever
  };

  // Every collaborator is not owned and must outlive the cache.
  TokenCache(const Options& options, Clock& clock, TimerFactory& timers, Random& random, UpstreamClient& upstream,
             UpstreamScheduler& scheduler);
  ~TokenCache() override;

  // TokenBroker.
  const Token* Lookup(const TokenKey& key) override;
  using TokenBroker::Get;
  void Get(const TokenKey& key, CallerTag caller, Callback callback, StillWaiting still_waiting) override;
  // refresh_sha256 naming the cached token drops it first (then as Get: a
  // fetch, which later callers with the same hash join); else as Get. A fetch
  // this call starts carries options.client_request_id upstream. bypass_cache:
  // waits on a bypass fetch (forwarded as bypass_cache=true), started unless
  // one is under way; within bypass_min_interval of the last one, as Get.
  // A fetch already sent without bypass is joined (its answer is new enough).
  void GetWithOptions(const TokenKey& key, CallerTag caller, const RequestOptions& options, Callback callback,
                      StillWaiting still_waiting) override;

  // Applies reloaded options: margins, limits, the prefetch list (new keys are
  // fetched, removed ones become ordinary keys). Cached tokens stay.
  void Reconfigure(const Options& options);
  // Starts the prefetch round; `done` runs once every prefetch key has a token or
  // has failed its first round (at once when there is nothing to prefetch).
  void StartPrefetch(std::function<void()> done);
  bool prefetch_round_done() const { return prefetch_pending_ == 0; }

  std::vector<EntrySnapshot> Snapshot() const;
  // For a look at a few keys among many without copying all: each key with its
  // state as Snapshot() shows it. The pointers are valid until the cache next
  // changes: use them at once.
  std::vector<std::pair<const TokenKey*, EntryState>> States() const;
  // Keys by state and the earliest expiry, without copying any key (metrics,
  // the service status line).
  struct Summary {
    size_t by_state[4] = {};    // indexed by EntryState
    int64_t earliest_expires_on = 0;  // 0: no token
  };
  Summary Summarize() const;
  // The snapshot of one key; false when it is not in the cache.
  bool SnapshotKey(const TokenKey& key, EntrySnapshot* out) const;
  const CacheStats& stats() const { return stats_; }
  const UpstreamHealth& upstream_health() const { return upstream_health_; }
  // MetricsSource: hits, misses, evictions, waiters, upstream requests by class,
  // keys by state, the earliest expiry (token_cache_metrics.cc).
  void WriteMetrics(MetricsWriter& out) const override;
  void set_upstream_observer(UpstreamObserver observer) { observer_ = std::move(observer); }
  // Runs when any key's state changes (for logs and the service status line).
  void set_state_observer(std::function<void(const EntrySnapshot&, EntryState from)> observer) {
    state_observer_ = std::move(observer);
  }

 private:
  struct Waiter {
    TimePoint arrived;
    TimePoint deadline;  // arrived + caller_deadline, or sooner (FailFast)
    CallerTag caller;
    bool coalesced;  // joined a fetch already under way (TokenResult::coalesced)
    Callback callback;
    StillWaiting still_waiting;  // empty: always
    bool gone() const { return still_waiting && !still_waiting(); }
  };
  // Where a key's fetch is; a key has at most one fetch under way.
  //   kIdle      no fetch. `timer`, if armed, is the next refresh.
  //   kQueued    waiting in the scheduler's queue; `job` is its id (0 only
  //              inside StartFetch()/Enqueue(), before the scheduler answers).
  //   kInFlight  the scheduler started it (Attempt), so it holds a scheduler
  //              slot: the request is sent, or about to be, and its answer is
  //              awaited.
  //   kBackoff   an attempt failed; `timer` is the wait before the next one.
  // StartFetch: kIdle -> kQueued -> kInFlight; its answer ends the fetch
  // (FinishFetch: kIdle) or, after a failure worth retrying, kBackoff -> kQueued
  // (OnTimer) -> kInFlight again. A fetch not sent (kQueued, kBackoff) also
  // returns to kIdle when nobody needs it any more or the queue is full; one in
  // flight always waits for its answer.
  enum class FetchState { kIdle, kQueued, kInFlight, kBackoff };

  struct Entry {
    TokenKey key;
    std::shared_ptr<const Token> token;     // set only through SetToken()
    bool prefetch = false;
    bool first_round = false;  // counts towards prefetch_pending_
    // Negative cache: IMDS said no.
    TimePoint negative_until{};
    int negative_status = 0;
    std::string negative_body;
    // The fetch (see FetchState); job, retry, the generation and attempt_started
    // belong to the fetch under way.
    FetchState fetch = FetchState::kIdle;
    UpstreamScheduler::JobId job = 0;       // kQueued only
    // The caller whose job the fetch is in the IMDS queue: who created it, or
    // the first caller to wait on it since it last had none. Set exactly while
    // the key has waiters (Get sets it, the three places waiters leave --
    // AnswerWaiters, OnDeadline, DropGoneWaiters -- clear it with the last).
    std::optional<CallerTag> fetch_caller;
    // The x-ms-client-request-id of the caller that started the fetch (its
    // attempts send it); cleared when the fetch ends.
    std::string fetch_request_id;
    // The fetch under way was asked for with bypass_cache=true (its attempts
    // forward it); cleared when the fetch ends. last_bypass: when the last one
    // started (epoch 0: never).
    bool bypass_fetch = false;
    TimePoint last_bypass{};
    RetryState retry;
    uint64_t fetch_generation = 0;
    TimePoint attempt_started{};
    std::unique_ptr<Timer> timer;           // kBackoff: the retry wait; kIdle: the next refresh
    TimePoint next_refresh{};
    std::vector<Waiter> waiters;            // in arrival order (= deadline order)
    std::unique_ptr<Timer> deadline_timer;  // for waiters.front()
    // Health. `state` changes only in UpdateState() (by_state_ counts it).
    EntryState state = EntryState::kRefreshing;
    TimePoint last_refresh{};
    TimePoint last_used{};
    int last_error_status = 0;
    std::string last_error;
    std::string last_error_description;
    int consecutive_failures = 0;
    // IMDS handed back the token we have (or one already inside the margin):
    // serve it down to the floor rather than make callers wait.
    bool stalled = false;
    uint64_t hits = 0;
    uint64_t misses = 0;
    std::list<Entry*>::iterator lru;
  };

  // The miss part of Get: the caller waits on e's fetch (e null: created),
  // starting one if none is under way, or is shed.
  void Wait(const TokenKey& key, Entry* e, CallerTag caller, Callback callback, StillWaiting still_waiting,
            TimePoint now);
  Entry* Find(const TokenKey& key);
  Entry* FindOrCreate(const TokenKey& key);
  void Touch(Entry* e);
  bool Evictable(const Entry* e) const;
  void Erase(Entry* e);
  void EvictIdle();

  bool Servable(const Entry* e, TimePoint now) const;
  // A prefetch key, or one holding a token not yet expired (see the header comment).
  bool KeptFresh(const Entry* e, TimePoint now) const;
  void StartFetch(Entry* e);
  void Enqueue(Entry* e);
  void Attempt(const TokenKey& key, uint64_t generation);
  void OnUpstream(const TokenKey& key, uint64_t generation, UpstreamResponse response);
  void OnToken(Entry* e, std::shared_ptr<const Token> token);
  void OnExpiredToken(Entry* e, const UpstreamResponse& response);
  void OnWrongIdentity(Entry* e, const UpstreamResponse& response);
  void OnRejected(Entry* e, const UpstreamResponse& response);
  void OnFailure(Entry* e, const UpstreamResponse& response, const std::string& why, const std::string& description,
                 bool malformed);
  // IMDS just became known down: every waiter's deadline comes within
  // fail_fast (waiters stay in deadline order: later ones get now + fail_fast).
  void FailFast(TimePoint now);
  void FinishFetch(Entry* e);
  // Ends the fetch under way (cancels its job, disarms its retry wait). Leaves
  // the state alone: dropping a fetch nobody waits for is not news.
  void AbandonFetch(Entry* e);
  // After a refused enqueue: a key kept fresh tries again in max_delay/2..max_delay.
  void RetryLater(Entry* e);
  void ScheduleRefresh(Entry* e, TimePoint at);
  void OnTimer(const TokenKey& key);
  // Answers every waiter of e with `result` (coalesced set per waiter).
  void AnswerWaiters(Entry* e, TokenResult result);
  // A waiter leaves (answered or dropped): the counts by caller and in total.
  void Unwait(const Waiter& w);
  void ArmDeadline(Entry* e);
  void OnDeadline(const TokenKey& key);
  // The last caller of `e` left: a fetch not yet sent goes on only as
  // background work for a key kept fresh.
  void OnLastCallerLeft(Entry* e);
  // Answers (429) and removes e's callers that hung up; true if any.
  bool DropGoneWaiters(Entry* e);
  // Before refusing a caller of `enqueuing`: drops queued fetches whose callers
  // all hung up. At most once a second; true if it freed room in the callers' queue.
  bool SweepGoneCallers(const Entry* enqueuing);
  // Replaces e's token, keeping expiries_ in step.
  void SetToken(Entry* e, std::shared_ptr<const Token> token);
  void UpdateState(Entry* e);
  EntrySnapshot SnapshotOf(const Entry* e) const;
  EntryState ShownState(const Entry* e, TimePoint now) const;
  Duration Jitter(Duration span);

  Options options_;
  Clock* clock_;
  TimerFactory* timers_;
  Random* random_;
  UpstreamClient* upstream_;
  UpstreamScheduler* scheduler_;
  RetryPolicy retry_policy_;

  std::unordered_map<TokenKey, std::unique_ptr<Entry>, TokenKeyHash> entries_;
  std::list<Entry*> lru_;  // front: most recently used
  // Kept in step with the entries so Summarize() visits only keys whose token
  // expired since their state was last updated (ShownState), not every key.
  size_t by_state_[4] = {};                          // Entry::state, by EntryState
  std::set<std::pair<int64_t, Entry*>> expiries_;   // (expires_on, entry) of each token held
  // Waiters by caller (callers with none are not in the map): the fair share.
  std::unordered_map<CallerTag, size_t, CallerTag::Hash> waiting_;
  std::unique_ptr<Timer> sweep_timer_;
  TimePoint last_gone_sweep_{};
  size_t prefetch_pending_ = 0;
  // Inside GetWithOptions only: the request id a fetch started now takes.
  const std::string* starting_request_id_ = nullptr;
  std::function<void()> prefetch_done_;
  CacheStats stats_;
  UpstreamHealth upstream_health_;
  UpstreamObserver observer_;
  std::function<void(const EntrySnapshot&, EntryState)> state_observer_;
};

}  // namespace mi
