// TokenCache: construction, the lookups, the entries (LRU, eviction), prefetch
// and reconfiguration, and the health views. The fetch machine and the callers
// waiting on it are in token_cache_fetch.cc.
#include "agent/token_cache.h"

#include <algorithm>

namespace mi {

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
    if (e->fetch == FetchState::kQueued) scheduler_->Cancel(e->job);
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

void TokenCache::Get(const TokenKey& key, CallerTag caller, Callback callback, StillWaiting still_waiting) {
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
  Wait(key, e, caller, std::move(callback), std::move(still_waiting), now);
}

void TokenCache::Wait(const TokenKey& key, Entry* e, CallerTag caller, Callback callback, StillWaiting still_waiting,
                      TimePoint now) {
  // A miss adds a waiter: within the caller's share, and the total.
  auto mine = waiting_.find(caller);
  const bool share_full = mine != waiting_.end() && mine->second >= options_.max_waiters_per_caller;
  if (share_full || stats_.waiters >= options_.max_waiters ||
      (e == nullptr && (e = FindOrCreate(key)) == nullptr)) {
    ++stats_.shed;
    if (share_full) ++stats_.shed_caller_share;
    TokenResult r;
    r.kind = TokenResult::Kind::kShed;
    r.retry_after_seconds = 1;
    callback(r);
    return;
  }
  ++stats_.misses;
  ++e->misses;
  Touch(e);
  const bool joined = e->fetch != FetchState::kIdle;
  Duration wait = options_.caller_deadline;
  if (upstream_health_.down && options_.fail_fast > Duration(0)) wait = std::min(wait, options_.fail_fast);
  e->waiters.push_back(Waiter{now, now + wait, caller, joined, std::move(callback), std::move(still_waiting)});
  ++stats_.waiters;
  ++waiting_[caller];
  if (!e->fetch_caller) e->fetch_caller = caller;
  if (e->waiters.size() == 1) ArmDeadline(e);
  if (!joined) {
    StartFetch(e);
  } else {
    ++stats_.coalesced;
    if (e->fetch == FetchState::kQueued) scheduler_->Promote(e->job, *e->fetch_caller);
  }
}

void TokenCache::GetWithOptions(const TokenKey& key, CallerTag caller, const RequestOptions& options,
                                Callback callback, StillWaiting still_waiting) {
  if (!options.refresh_sha256.empty()) {
    Entry* e = Find(key);
    if (e != nullptr && e->token && e->token->HasSha256(options.refresh_sha256)) {
      // The caller holds this token as revoked: nobody gets it again. The Get
      // below misses and fetches, or joins the fetch under way.
      ++stats_.refresh_by_hash;
      SetToken(e, nullptr);
      e->stalled = false;
      UpdateState(e);
    }
  }
  starting_request_id_ = options.client_request_id.empty() ? nullptr : &options.client_request_id;
  Entry* e = options.bypass_cache ? Find(key) : nullptr;
  const TimePoint now = clock_->Now();
  if (!options.bypass_cache) {
    Get(key, caller, std::move(callback), std::move(still_waiting));
  } else if (e != nullptr && e->bypass_fetch) {
    ++stats_.bypass_coalesced;
    Wait(key, e, caller, std::move(callback), std::move(still_waiting), now);
  } else if (e != nullptr && e->last_bypass != TimePoint() && now - e->last_bypass < options_.bypass_min_interval) {
    ++stats_.bypass_recent;  // the token the last bypass fetched, or a newer one
    Get(key, caller, std::move(callback), std::move(still_waiting));
  } else {
    if (e == nullptr) e = FindOrCreate(key);  // null (cache full): Wait sheds
    const bool sent = e != nullptr && e->fetch == FetchState::kInFlight;
    if (e != nullptr && !sent) {
      ++stats_.bypass_fetched;
      e->bypass_fetch = true;  // the fetch started (or not yet sent) forwards it
      e->last_bypass = now;
    } else {
      ++stats_.bypass_coalesced;
    }
    Wait(key, e, caller, std::move(callback), std::move(still_waiting), now);
    // Shed before any fetch started: no bypass left pending for a later refresh.
    Entry* after = Find(key);
    if (after != nullptr && after->fetch == FetchState::kIdle) after->bypass_fetch = false;
  }
  starting_request_id_ = nullptr;
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
  ++by_state_[static_cast<int>(e->state)];
  stats_.keys = entries_.size();
  return e;
}

void TokenCache::Touch(Entry* e) {
  e->last_used = clock_->Now();
  if (e->lru != lru_.begin()) lru_.splice(lru_.begin(), lru_, e->lru);
}

bool TokenCache::Evictable(const Entry* e) const {
  return !e->prefetch && e->waiters.empty() && e->fetch == FetchState::kIdle;
}

void TokenCache::Erase(Entry* e) {
  if (e->fetch == FetchState::kQueued) scheduler_->Cancel(e->job);
  if (e->first_round && --prefetch_pending_ == 0 && prefetch_done_) std::exchange(prefetch_done_, nullptr)();
  SetToken(e, nullptr);
  --by_state_[static_cast<int>(e->state)];
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
    if (e->fetch == FetchState::kIdle) StartFetch(e);
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
    if (!e->token && e->fetch == FetchState::kIdle) StartFetch(e);
  }
  EvictIdle();
}

// --- health ----------------------------------------------------------------------------

void TokenCache::SetToken(Entry* e, std::shared_ptr<const Token> token) {
  if (e->token) expiries_.erase({e->token->expires_on(), e});
  e->token = std::move(token);
  if (e->token) expiries_.emplace(e->token->expires_on(), e);
}

void TokenCache::UpdateState(Entry* e) {
  EntryState from = e->state;
  const TimePoint now = clock_->Now();
  const bool valid = e->token && FromEpochSeconds(e->token->expires_on()) > now;
  const bool fetching = e->fetch != FetchState::kIdle;
  if (valid) {
    e->state = e->consecutive_failures > 0 ? EntryState::kDegraded
               : fetching                 ? EntryState::kRefreshing
                                          : EntryState::kOk;
  } else {
    e->state = (e->consecutive_failures > 0 || !fetching) ? EntryState::kFailing : EntryState::kRefreshing;
  }
  --by_state_[static_cast<int>(from)];
  ++by_state_[static_cast<int>(e->state)];
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
  s.last_error_description = e->last_error_description;
  s.consecutive_failures = e->consecutive_failures;
  s.hits = e->hits;
  s.misses = e->misses;
  return s;
}

// A token that expired since the state was last updated no longer counts.
EntryState TokenCache::ShownState(const Entry* e, TimePoint now) const {
  if (e->token && FromEpochSeconds(e->token->expires_on()) <= now) {
    return e->fetch != FetchState::kIdle && e->consecutive_failures == 0 ? EntryState::kRefreshing
                                                                          : EntryState::kFailing;
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

// The stored states, corrected for the keys whose token expired since their
// state was last updated: ShownState() of every key, visiting only those.
TokenCache::Summary TokenCache::Summarize() const {
  Summary out;
  std::copy(std::begin(by_state_), std::end(by_state_), std::begin(out.by_state));
  const TimePoint now = clock_->Now();
  for (const auto& [expires_on, e] : expiries_) {
    if (FromEpochSeconds(expires_on) > now) break;
    --out.by_state[static_cast<int>(e->state)];
    ++out.by_state[static_cast<int>(ShownState(e, now))];
  }
  // Tokens are stored only before their expiry (OnUpstream), so every
  // expires_on here is past the epoch: 0 still means "no token".
  if (!expiries_.empty()) out.earliest_expires_on = expiries_.begin()->first;
  return out;
}

bool TokenCache::SnapshotKey(const TokenKey& key, EntrySnapshot* out) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  *out = SnapshotOf(it->second.get());
  return true;
}

}  // namespace mi
