#include "agent/token_cache.h"

#include <algorithm>

namespace mi {
namespace {

constexpr Duration kMinRefreshDelay = Duration(1000);

std::string DescribeTransport(const UpstreamResponse& r) {
  switch (r.outcome) {
    case UpstreamResponse::Outcome::kHttp: return "http " + std::to_string(r.status);
    case UpstreamResponse::Outcome::kTimeout: return "timeout";
    case UpstreamResponse::Outcome::kConnectError: return "connect_error";
    case UpstreamResponse::Outcome::kTooLarge: return "response_too_large";
  }
  return "error";
}

// A non-retryable IMDS answer: any 4xx except 404, 410, 429.
bool IsRejection(const UpstreamResponse& r) {
  return r.outcome == UpstreamResponse::Outcome::kHttp && r.status >= 400 && r.status < 500 && r.status != 404 &&
         r.status != 410 && r.status != 429;
}

}  // namespace

const char* EntryStateName(EntryState state) {
  switch (state) {
    case EntryState::kOk: return "ok";
    case EntryState::kRefreshing: return "refreshing";
    case EntryState::kDegraded: return "degraded";
    case EntryState::kFailing: return "failing";
  }
  return "failing";
}

TokenCache::TokenCache(const Options& options, Clock& clock, TimerFactory& timers, Random& random,
                       UpstreamClient& upstream, UpstreamScheduler& scheduler)
    : options_(options),
      clock_(&clock),
      timers_(&timers),
      random_(&random),
      upstream_(&upstream),
      scheduler_(&scheduler),
      retry_policy_(options.retry, random),
      sweep_timer_(timers.NewTimer()) {
  EvictIdle();  // arms the sweep
}

TokenCache::~TokenCache() {
  for (auto& [key, e] : entries_) {
    if (e->job != 0) scheduler_->Cancel(e->job);
  }
}

// --- lookup ---------------------------------------------------------------------

bool TokenCache::KeptFresh(const Entry* e, TimePoint now) const {
  return e->prefetch || (e->token && FromEpochSeconds(e->token->expires_on()) > now);
}

bool TokenCache::Servable(const Entry* e, TimePoint now) const {
  if (!e->token) return false;
  const Duration left = FromEpochSeconds(e->token->expires_on()) - now;
  if (left > options_.margin) return true;
  // Static stability: while refreshes fail (or IMDS keeps handing back the same
  // token), keep serving down to the hard floor. Never an expired token.
  return (e->consecutive_failures > 0 || e->stalled) && left > options_.hard_floor && left > Duration(0);
}

const Token* TokenCache::Lookup(const TokenKey& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  Entry* e = it->second.get();
  if (!Servable(e, clock_->Now())) return nullptr;
  ++stats_.hits;
  ++e->hits;
  Touch(e);
  return e->token.get();
}

void TokenCache::Get(const TokenKey& key, Callback callback, StillWaiting still_waiting) {
  const TimePoint now = clock_->Now();
  Entry* e = Find(key);
  if (e != nullptr && Servable(e, now)) {
    ++stats_.hits;
    ++e->hits;
    Touch(e);
    TokenResult r;
    r.kind = TokenResult::Kind::kToken;
    r.token = e->token;
    callback(r);
    return;
  }
  if (e != nullptr && e->negative_until > now) {
    ++stats_.negative_hits;
    Touch(e);
    TokenResult r;
    r.kind = TokenResult::Kind::kRejected;
    r.status = e->negative_status;
    r.body = e->negative_body;
    callback(r);
    return;
  }
  if (stats_.waiters >= options_.max_waiters || (e == nullptr && (e = FindOrCreate(key)) == nullptr)) {
    ++stats_.shed;
    TokenResult r;
    r.kind = TokenResult::Kind::kShed;
    r.retry_after_seconds = 1;
    callback(r);
    return;
  }
  ++stats_.misses;
  ++e->misses;
  Touch(e);
  e->waiters.push_back(Waiter{now + options_.caller_deadline, std::move(callback), std::move(still_waiting)});
  ++stats_.waiters;
  if (e->waiters.size() == 1) ArmDeadline(e);
  if (!e->fetching) {
    StartFetch(e);
  } else {
    ++stats_.coalesced;
    if (e->job != 0) scheduler_->Promote(e->job);
  }
}

// --- entries and eviction ------------------------------------------------------------

TokenCache::Entry* TokenCache::Find(const TokenKey& key) {
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : it->second.get();
}

TokenCache::Entry* TokenCache::FindOrCreate(const TokenKey& key) {
  if (Entry* e = Find(key)) return e;
  if (entries_.size() >= options_.max_keys) {
    // Evict the least recently used key that nobody is waiting on, preferring
    // one the cache does not keep fresh (no token): a flood of new keys churns
    // through its own dead keys first, not through the keys that hold tokens
    // (whose next caller would otherwise wait on IMDS, behind the flood).
    const TimePoint now = clock_->Now();
    Entry* victim = nullptr;
    Entry* fallback = nullptr;
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
      if (!Evictable(*it)) continue;
      if (!KeptFresh(*it, now)) {
        victim = *it;
        break;
      }
      if (fallback == nullptr) fallback = *it;
    }
    if (victim == nullptr) victim = fallback;
    if (victim == nullptr) return nullptr;
    ++stats_.evicted_lru;
    Erase(victim);
  }
  auto owned = std::make_unique<Entry>();
  Entry* e = owned.get();
  e->key = key;
  e->last_used = clock_->Now();
  lru_.push_front(e);
  e->lru = lru_.begin();
  entries_.emplace(key, std::move(owned));
  stats_.keys = entries_.size();
  return e;
}

void TokenCache::Touch(Entry* e) {
  e->last_used = clock_->Now();
  if (e->lru != lru_.begin()) lru_.splice(lru_.begin(), lru_, e->lru);
}

bool TokenCache::Evictable(const Entry* e) const { return !e->prefetch && e->waiters.empty() && !e->fetching; }

void TokenCache::Erase(Entry* e) {
  if (e->job != 0) scheduler_->Cancel(e->job);
  if (e->first_round && --prefetch_pending_ == 0 && prefetch_done_) std::exchange(prefetch_done_, nullptr)();
  lru_.erase(e->lru);
  TokenKey key = e->key;  // e dies with the map node
  entries_.erase(key);
  stats_.keys = entries_.size();
}

void TokenCache::EvictIdle() {
  const TimePoint now = clock_->Now();
  std::vector<Entry*> idle;
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    Entry* e = *it;
    if (now - e->last_used <= options_.idle_evict) break;  // the rest were used later
    if (Evictable(e)) idle.push_back(e);
  }
  for (Entry* e : idle) {
    ++stats_.evicted_idle;
    Erase(e);
  }
  const Duration period = std::clamp(options_.idle_evict / 4, Duration(1000), Duration(60000));
  sweep_timer_->Arm(period, [this] { EvictIdle(); });
}

// --- fetching ----------------------------------------------------------------------

void TokenCache::StartFetch(Entry* e) {
  e->fetching = true;
  e->retry = RetryState();
  ++e->fetch_generation;
  if (e->timer) e->timer->Disarm();
  e->next_refresh = TimePoint();
  UpdateState(e);
  Enqueue(e);
}

void TokenCache::Enqueue(Entry* e) {
  using Priority = UpstreamScheduler::Priority;
  const Priority priority = e->waiters.empty() ? Priority::kBackground : Priority::kCaller;
  const uint64_t generation = e->fetch_generation;
  auto start = [this, key = e->key, generation] { Attempt(key, generation); };
  e->job = scheduler_->Enqueue(priority, start);
  // Callers who hung up may still hold places in the callers' queue.
  if (e->job == 0 && priority == Priority::kCaller && SweepGoneCallers()) {
    e->job = scheduler_->Enqueue(priority, std::move(start));
  }
  if (e->job != 0) return;
  // The IMDS queue is full: the agent is the one shedding. A key the cache
  // keeps fresh tries again later; any other waits for its next caller.
  FinishFetch(e);
  if (!e->waiters.empty()) {
    stats_.shed += e->waiters.size();
    TokenResult r;
    r.kind = TokenResult::Kind::kShed;
    r.retry_after_seconds = 1;
    AnswerWaiters(e, r);
  }
  // No UpdateState: shedding says nothing about IMDS, and a flood of shed keys
  // must not become a flood of state-change logs.
  RetryLater(e);
}

void TokenCache::RetryLater(Entry* e) {
  const TimePoint now = clock_->Now();
  if (KeptFresh(e, now)) ScheduleRefresh(e, now + options_.retry.max_delay / 2 + Jitter(options_.retry.max_delay / 2));
}

void TokenCache::AbandonFetch(Entry* e) {
  FinishFetch(e);
  if (e->timer) e->timer->Disarm();
  e->next_refresh = TimePoint();
}

void TokenCache::Attempt(const TokenKey& key, uint64_t generation) {
  Entry* e = Find(key);
  if (e == nullptr || e->fetch_generation != generation || !e->fetching) {
    scheduler_->Finished();
    return;
  }
  e->job = 0;
  // Under pressure (other callers queued), callers who hung up are not worth
  // an IMDS request; see SweepGoneCallers.
  if (!e->waiters.empty() && scheduler_->stats().queued_caller > 0) DropGoneWaiters(e);
  if (e->waiters.empty() && !KeptFresh(e, clock_->Now())) {
    // Its callers left, or its token expired while the refresh waited: nobody
    // needs this request.
    scheduler_->Finished();
    AbandonFetch(e);
    UpdateState(e);
    return;
  }
  e->in_flight = true;
  e->attempt_started = clock_->Now();
  ++stats_.upstream_requests;
  upstream_->Fetch(key, [this, key, generation](UpstreamResponse response) {
    OnUpstream(key, generation, std::move(response));
  });
}

void TokenCache::OnUpstream(const TokenKey& key, uint64_t generation, UpstreamResponse response) {
  scheduler_->Finished();
  const bool http = response.outcome == UpstreamResponse::Outcome::kHttp;
  const int status = http ? response.status : 0;
  ++stats_.upstream_by_class[http && status >= 100 && status < 600 ? status / 100 : 0];
  Entry* e = Find(key);
  const Duration latency = e != nullptr ? clock_->Now() - e->attempt_started : Duration(0);
  if (e != nullptr && e->fetch_generation == generation) {  // else evicted or superseded
    e->in_flight = false;
    if (http && status == 200) {
      StatusOr<std::shared_ptr<const Token>> token = Token::FromImdsBody(response.body);
      if (!token.ok()) {
        OnFailure(e, response, "malformed_response", /*malformed=*/true);
      } else if (FromEpochSeconds((*token)->expires_on()) <= clock_->Now()) {
        OnExpiredToken(e, response);
      } else {
        OnToken(e, std::move(*token));
      }
    } else if (IsRejection(response)) {
      OnRejected(e, response);
    } else {
      OnFailure(e, response, http ? ImdsErrorCode(response.body) : DescribeTransport(response), false);
    }
  }
  // Last, so the observer sees the cache's upstream health already updated.
  if (observer_) observer_(latency, status);
}

void TokenCache::OnToken(Entry* e, std::shared_ptr<const Token> token) {
  const TimePoint now = clock_->Now();
  upstream_health_.last_success = now;
  upstream_health_.failing = false;
  const bool same = e->token && e->token->fingerprint() == token->fingerprint();
  e->token = std::move(token);
  e->last_refresh = now;
  e->consecutive_failures = 0;
  e->negative_until = TimePoint();
  e->negative_body.clear();
  FinishFetch(e);

  const TimePoint expires = FromEpochSeconds(e->token->expires_on());
  // Refresh between margin + refresh_ahead/2 and margin + refresh_ahead before
  // expiry: spread over time, and always with slack to retry before the margin.
  const Duration half = options_.refresh_ahead / 2;
  TimePoint at = expires - options_.margin - half - Jitter(options_.refresh_ahead - half);
  e->stalled = same || at <= now;
  if (e->stalled) {
    // IMDS handed back the token we had (it caches too), or one already inside
    // our margin: back off, but always come back before the floor. A token
    // already inside the floor (short-lived tokens) is asked for again at half
    // its remaining life, never in a tight loop; one that expired went to
    // OnExpiredToken.
    if (same) ++stats_.same_token;
    at = now + options_.same_token_backoff;
    const TimePoint latest = expires - options_.hard_floor;
    if (at >= latest) {
      const TimePoint target = latest > now ? latest : expires;
      at = now + std::max((target - now) / 2, kMinRefreshDelay);
    }
  }
  ScheduleRefresh(e, at);

  TokenResult r;
  r.kind = TokenResult::Kind::kToken;
  r.token = e->token;
  AnswerWaiters(e, r);
  UpdateState(e);
}

void TokenCache::OnExpiredToken(Entry* e, const UpstreamResponse& response) {
  // IMDS handed out a token that has already expired: useless to everyone, so
  // the token we hold, if any, stays. A failure like any other, with its
  // backoff (asking again at once would get the same token).
  TokenResult r;
  r.kind = TokenResult::Kind::kUnavailable;
  r.description = "IMDS returned an expired token";
  AnswerWaiters(e, r);
  OnFailure(e, response, "expired_token", /*malformed=*/true);
}

void TokenCache::OnRejected(Entry* e, const UpstreamResponse& response) {
  const TimePoint now = clock_->Now();
  // IMDS says this identity/resource cannot have a token (e.g. the identity was
  // removed): stop serving the old one and remember the answer briefly.
  e->token.reset();
  e->stalled = false;
  ++e->consecutive_failures;
  e->last_error_status = response.status;
  e->last_error = ImdsErrorCode(response.body);
  std::string body = ImdsErrorBody(response.status, response.body);
  if (options_.negative_ttl > Duration(0)) {
    e->negative_until = now + options_.negative_ttl;
    e->negative_status = response.status;
    e->negative_body = body;
  }
  FinishFetch(e);
  TokenResult r;
  r.kind = TokenResult::Kind::kRejected;
  r.status = response.status;
  r.body = std::move(body);
  AnswerWaiters(e, r);
  if (e->prefetch) ScheduleRefresh(e, now + options_.retry.max_delay + Jitter(options_.retry.max_delay / 4));
  UpdateState(e);
}

void TokenCache::OnFailure(Entry* e, const UpstreamResponse& response, const std::string& why, bool malformed) {
  const TimePoint now = clock_->Now();
  upstream_health_.last_failure = now;
  upstream_health_.failing = true;
  upstream_health_.last_error_status = response.outcome == UpstreamResponse::Outcome::kHttp ? response.status : 0;
  upstream_health_.last_error = why;
  ++e->consecutive_failures;
  e->last_error_status = upstream_health_.last_error_status;
  e->last_error = upstream_health_.last_error;

  RetryDecision d = malformed ? retry_policy_.DecideMalformed(e->retry, now)
                              : retry_policy_.Decide(e->retry, response, now);
  if (d.throttled) {
    ++stats_.throttle_pauses;
    scheduler_->PauseFor(d.pause);
  }
  // Retries serve callers, or a key the cache keeps fresh; a key that never
  // had a token and whose callers left waits for its next caller.
  if (d.retry && (!e->waiters.empty() || KeptFresh(e, now))) {
    ++stats_.retries;
    if (!e->timer) e->timer = timers_->NewTimer();
    e->timer->Arm(d.delay, [this, key = e->key] { OnTimer(key); });
    UpdateState(e);
    return;
  }
  // Retry budget spent: waiting callers get the error (or the cached token while
  // it lasts); the refresher keeps trying in the background while the key has
  // a valid token (or is prefetched).
  FinishFetch(e);
  TokenResult r;
  if (Servable(e, now)) {
    r.kind = TokenResult::Kind::kToken;
    r.token = e->token;
  } else {
    r.kind = TokenResult::Kind::kUnavailable;
    r.description = "IMDS could not provide a token: " + e->last_error;
  }
  AnswerWaiters(e, r);
  if (KeptFresh(e, now)) ScheduleRefresh(e, now + options_.retry.max_delay + Jitter(options_.retry.max_delay / 4));
  UpdateState(e);
}

void TokenCache::FinishFetch(Entry* e) {
  e->fetching = false;
  e->in_flight = false;
  if (e->job != 0) scheduler_->Cancel(e->job);
  e->job = 0;
  if (e->first_round) {
    e->first_round = false;
    if (--prefetch_pending_ == 0 && prefetch_done_) std::exchange(prefetch_done_, nullptr)();
  }
}

void TokenCache::ScheduleRefresh(Entry* e, TimePoint at) {
  const TimePoint now = clock_->Now();
  if (at < now + kMinRefreshDelay) at = now + kMinRefreshDelay;
  if (!e->timer) e->timer = timers_->NewTimer();
  e->next_refresh = at;
  e->timer->Arm(at - now, [this, key = e->key] { OnTimer(key); });
}

void TokenCache::OnTimer(const TokenKey& key) {
  Entry* e = Find(key);
  if (e == nullptr) return;
  const TimePoint now = clock_->Now();
  if (e->fetching) {  // a retry wait ended
    if (e->waiters.empty() && !KeptFresh(e, now)) {
      AbandonFetch(e);
    } else {
      Enqueue(e);
    }
    return;
  }
  e->next_refresh = TimePoint();
  if (!e->prefetch && now - e->last_used > options_.idle_evict) {
    ++stats_.evicted_idle;
    Erase(e);
    return;
  }
  // The token expired while refreshes failed: the next caller fetches.
  if (!KeptFresh(e, now)) return;
  StartFetch(e);
}

// --- waiters ---------------------------------------------------------------------

void TokenCache::AnswerWaiters(Entry* e, const TokenResult& result) {
  if (e->waiters.empty()) return;
  std::vector<Waiter> waiters;
  waiters.swap(e->waiters);
  stats_.waiters -= waiters.size();
  if (e->deadline_timer) e->deadline_timer->Disarm();
  for (auto& w : waiters) w.callback(result);
}

void TokenCache::ArmDeadline(Entry* e) {
  if (e->waiters.empty()) {
    if (e->deadline_timer) e->deadline_timer->Disarm();
    return;
  }
  if (!e->deadline_timer) e->deadline_timer = timers_->NewTimer();
  const Duration wait = std::max(e->waiters.front().deadline - clock_->Now(), Duration(0));
  e->deadline_timer->Arm(wait, [this, key = e->key] { OnDeadline(key); });
}

void TokenCache::OnDeadline(const TokenKey& key) {
  Entry* e = Find(key);
  if (e == nullptr) return;
  const TimePoint now = clock_->Now();
  const TimePoint paused_until = scheduler_->stats().paused_until;
  size_t expired = 0;
  while (expired < e->waiters.size() && e->waiters[expired].deadline <= now) ++expired;
  std::vector<Waiter> late(std::make_move_iterator(e->waiters.begin()),
                           std::make_move_iterator(e->waiters.begin() + static_cast<std::ptrdiff_t>(expired)));
  e->waiters.erase(e->waiters.begin(), e->waiters.begin() + static_cast<std::ptrdiff_t>(expired));
  stats_.waiters -= expired;
  stats_.deadline_expired += expired;
  ArmDeadline(e);
  std::vector<TokenResult> results;
  results.reserve(late.size());
  for (auto& w : late) {
    // Who held this caller? The agent, if the fetch is still queued behind the
    // IMDS budget, the budget is paused, or the attempt under way went out only
    // in the second half of the caller's wait with no IMDS failure before it:
    // then 429 + Retry-After (come back later). Otherwise IMDS: 500.
    const TimePoint arrived = w.deadline - options_.caller_deadline;
    const bool held_by_budget = e->job != 0 || now < paused_until ||
                                (e->retry.attempts == 0 && e->in_flight &&
                                 e->attempt_started - arrived > options_.caller_deadline / 2);
    TokenResult r;
    if (held_by_budget) {
      r.kind = TokenResult::Kind::kShed;
      const Duration pause = paused_until - now;
      r.retry_after_seconds = static_cast<int>(std::max<int64_t>(1, (pause.count() + 999) / 1000));
    } else {
      r.kind = TokenResult::Kind::kUnavailable;
      r.description = "IMDS did not provide a token within the deadline";
    }
    results.push_back(std::move(r));
  }
  if (e->waiters.empty()) OnLastCallerLeft(e);
  for (size_t i = 0; i < late.size(); ++i) late[i].callback(results[i]);
}

void TokenCache::OnLastCallerLeft(Entry* e) {
  // A request already sent goes on (its answer is cheap to keep). One not sent
  // yet goes on only as background work, for a key the cache keeps fresh; any
  // other key has nobody left to fetch for.
  if (!e->fetching || e->in_flight) return;
  if (!KeptFresh(e, clock_->Now())) {
    AbandonFetch(e);
  } else if (e->job != 0 && !scheduler_->Demote(e->job)) {
    FinishFetch(e);  // cancels the job: the background queue is full
    RetryLater(e);
    UpdateState(e);
  }
}

bool TokenCache::DropGoneWaiters(Entry* e) {
  auto keep = std::stable_partition(e->waiters.begin(), e->waiters.end(), [](const Waiter& w) { return !w.gone(); });
  if (keep == e->waiters.end()) return false;
  std::vector<Waiter> gone(std::make_move_iterator(keep), std::make_move_iterator(e->waiters.end()));
  e->waiters.erase(keep, e->waiters.end());
  stats_.waiters -= gone.size();
  stats_.shed += gone.size();
  ArmDeadline(e);
  // Their connections are gone (or half-closed): the answer is a formality.
  TokenResult r;
  r.kind = TokenResult::Kind::kShed;
  r.retry_after_seconds = 1;
  for (auto& w : gone) w.callback(r);
  return true;
}

// Only under pressure (here, and in Attempt while other callers are queued):
// a client that half-closed after its request (EOF) counts as gone, yet may
// still read an answer, so its miss is not dropped for that alone while
// nobody else waits.
bool TokenCache::SweepGoneCallers() {
  const TimePoint now = clock_->Now();
  if (last_gone_sweep_ != TimePoint() && now - last_gone_sweep_ < Duration(1000)) return false;
  last_gone_sweep_ = now;
  const size_t queued = scheduler_->stats().queued_caller;
  for (auto& [key, owned] : entries_) {
    Entry* e = owned.get();
    if (e->job == 0 || e->waiters.empty() || !DropGoneWaiters(e)) continue;
    if (e->waiters.empty()) OnLastCallerLeft(e);
  }
  return scheduler_->stats().queued_caller < queued;
}

// --- prefetch and reconfiguration -------------------------------------------------------

void TokenCache::StartPrefetch(std::function<void()> done) {
  prefetch_done_ = std::move(done);
  size_t started = 0;
  for (const TokenKey& key : options_.prefetch) {
    Entry* e = FindOrCreate(key);
    if (e == nullptr) continue;
    e->prefetch = true;
    if (e->first_round) continue;
    e->first_round = true;
    ++prefetch_pending_;
    ++started;
    if (!e->fetching) StartFetch(e);
  }
  if (started == 0 && prefetch_pending_ == 0 && prefetch_done_) std::exchange(prefetch_done_, nullptr)();
}

void TokenCache::Reconfigure(const Options& options) {
  options_ = options;
  retry_policy_.set_options(options.retry);
  for (auto& [key, e] : entries_) {
    e->prefetch = std::find(options.prefetch.begin(), options.prefetch.end(), key) != options.prefetch.end();
  }
  for (const TokenKey& key : options.prefetch) {
    Entry* e = FindOrCreate(key);
    if (e == nullptr) continue;
    e->prefetch = true;
    if (!e->token && !e->fetching) StartFetch(e);
  }
  EvictIdle();
}

// --- health ----------------------------------------------------------------------------

void TokenCache::UpdateState(Entry* e) {
  EntryState from = e->state;
  const TimePoint now = clock_->Now();
  const bool valid = e->token && FromEpochSeconds(e->token->expires_on()) > now;
  if (valid) {
    e->state = e->consecutive_failures > 0 ? EntryState::kDegraded
               : e->fetching              ? EntryState::kRefreshing
                                          : EntryState::kOk;
  } else {
    e->state = (e->consecutive_failures > 0 || !e->fetching) ? EntryState::kFailing : EntryState::kRefreshing;
  }
  // "refreshing" for a key that already has a good token is routine, not news.
  if (e->state != from && state_observer_) state_observer_(SnapshotOf(e), from);
}

EntrySnapshot TokenCache::SnapshotOf(const Entry* e) const {
  EntrySnapshot s;
  s.key = e->key;
  s.state = ShownState(e, clock_->Now());
  s.prefetch = e->prefetch;
  s.expires_on = e->token ? e->token->expires_on() : 0;
  s.last_refresh = e->last_refresh;
  s.next_refresh = e->next_refresh;
  s.last_used = e->last_used;
  s.last_error_status = e->last_error_status;
  s.last_error = e->last_error;
  s.consecutive_failures = e->consecutive_failures;
  s.hits = e->hits;
  s.misses = e->misses;
  return s;
}

// A token that expired since the state was last updated no longer counts.
EntryState TokenCache::ShownState(const Entry* e, TimePoint now) const {
  if (e->token && FromEpochSeconds(e->token->expires_on()) <= now) {
    return e->fetching && e->consecutive_failures == 0 ? EntryState::kRefreshing : EntryState::kFailing;
  }
  return e->state;
}

std::vector<EntrySnapshot> TokenCache::Snapshot() const {
  std::vector<EntrySnapshot> out;
  out.reserve(entries_.size());
  for (const auto& [key, e] : entries_) out.push_back(SnapshotOf(e.get()));
  return out;
}

std::vector<std::pair<const TokenKey*, EntryState>> TokenCache::States() const {
  std::vector<std::pair<const TokenKey*, EntryState>> out;
  out.reserve(entries_.size());
  const TimePoint now = clock_->Now();
  for (const auto& [key, e] : entries_) out.emplace_back(&e->key, ShownState(e.get(), now));
  return out;
}

TokenCache::Summary TokenCache::Summarize() const {
  Summary out;
  const TimePoint now = clock_->Now();
  for (const auto& [key, e] : entries_) {
    ++out.by_state[static_cast<int>(ShownState(e.get(), now))];
    if (e->token && (out.earliest_expires_on == 0 || e->token->expires_on() < out.earliest_expires_on)) {
      out.earliest_expires_on = e->token->expires_on();
    }
  }
  return out;
}

bool TokenCache::SnapshotKey(const TokenKey& key, EntrySnapshot* out) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  *out = SnapshotOf(it->second.get());
  return true;
}

Duration TokenCache::Jitter(Duration span) {
  if (span <= Duration(0)) return Duration(0);
  return Duration(static_cast<int64_t>(random_->Uniform() * static_cast<double>(span.count())));
}

}  // namespace mi
