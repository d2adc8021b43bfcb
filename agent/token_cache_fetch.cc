// The fetch machine of TokenCache (see the FetchState comment in token_cache.h):
// queueing behind the IMDS budget, the attempt, its answer, retries and
// refreshes, and the callers waiting on a fetch (deadlines, hang-ups). The
// entries, lookups and health views are in token_cache.cc.
#include "agent/token_cache.h"

#include <algorithm>
#include <utility>

#include "agent/identity_echo.h"

namespace mi {
namespace {

constexpr Duration kMinRefreshDelay = Duration(1000);
constexpr char kExpired[] = "IMDS returned an expired token";

std::string DescribeTransport(const UpstreamResponse& r) {
  switch (r.outcome) {
    case UpstreamResponse::Outcome::kHttp: return "http " + std::to_string(r.status);
    case UpstreamResponse::Outcome::kTimeout: return "timeout";
    case UpstreamResponse::Outcome::kConnectError: return "connect_error";
    case UpstreamResponse::Outcome::kTooLarge: return "response_too_large";
    case UpstreamResponse::Outcome::kRefused: return "arc_challenge_refused";
  }
  return "error";
}

// A non-retryable IMDS answer: any 4xx except 404, 410, 429.
bool IsRejection(const UpstreamResponse& r) {
  return r.outcome == UpstreamResponse::Outcome::kHttp && r.status >= 400 && r.status < 500 && r.status != 404 &&
         r.status != 410 && r.status != 429;
}

}  // namespace

// --- fetching ----------------------------------------------------------------------

void TokenCache::StartFetch(Entry* e) {
  e->fetch = FetchState::kQueued;  // Enqueue() below asks for its job
  e->retry = RetryState();
  ++e->fetch_generation;
  if (starting_request_id_ != nullptr) e->fetch_request_id = *starting_request_id_;
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
  e->fetch = FetchState::kQueued;
  // Background work is no caller's: its owner is ignored.
  const CallerTag owner = e->fetch_caller.value_or(CallerTag::Unknown());
  e->job = scheduler_->Enqueue(priority, owner, start);
  // Callers who hung up may still hold places in the callers' queue.
  if (e->job == 0 && priority == Priority::kCaller && SweepGoneCallers(e)) {
    e->job = scheduler_->Enqueue(priority, owner, std::move(start));
  }
  if (e->job != 0) return;
  // The IMDS queue is full, or the fetch's caller has its share of it queued:
  // the agent is the one shedding. A key the cache keeps fresh tries again
  // later; any other waits for its next caller.
  const bool share_full = priority == Priority::kCaller && scheduler_->CallerShareFull(owner);
  FinishFetch(e);
  if (!e->waiters.empty()) {
    stats_.shed += e->waiters.size();
    if (share_full) stats_.shed_caller_share += e->waiters.size();
    TokenResult r;
    r.kind = TokenResult::Kind::kShed;
    r.retry_after_seconds = 1;
    AnswerWaiters(e, std::move(r));
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
  if (e == nullptr || e->fetch_generation != generation || e->fetch != FetchState::kQueued) {
    scheduler_->Finished();
    return;
  }
  e->fetch = FetchState::kInFlight;
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
  e->attempt_started = clock_->Now();
  ++stats_.upstream_requests;
  auto done = [this, key, generation](UpstreamResponse response) { OnUpstream(key, generation, std::move(response)); };
  if (e->fetch_request_id.empty() && !e->bypass_fetch) {
    upstream_->Fetch(key, std::move(done));
  } else {
    UpstreamClient::FetchOptions options;
    options.client_request_id = e->fetch_request_id;
    options.bypass_cache = e->bypass_fetch;
    upstream_->FetchWith(key, options, std::move(done));
  }
}

void TokenCache::OnUpstream(const TokenKey& key, uint64_t generation, UpstreamResponse response) {
  scheduler_->Finished();
  const bool http = response.outcome == UpstreamResponse::Outcome::kHttp;
  const int status = http ? response.status : 0;
  ++stats_.upstream_by_class[http && status >= 100 && status < 600 ? status / 100 : 0];
  Entry* e = Find(key);
  const Duration latency = e != nullptr ? clock_->Now() - e->attempt_started : Duration(0);
  // Reachability, whichever key asked: any HTTP answer says IMDS is up.
  const bool unreachable =
      response.outcome == UpstreamResponse::Outcome::kTimeout || response.outcome == UpstreamResponse::Outcome::kConnectError;
  const bool went_down = unreachable && !upstream_health_.down;
  if (http) upstream_health_.down = false;
  if (unreachable) upstream_health_.down = true;
  // Else evicted or superseded. The handlers below end the fetch or arm its retry.
  if (e != nullptr && e->fetch_generation == generation) {
    if (http && status == 200) {
      // Never a description from a 200 body: it may hold a token.
      StatusOr<std::shared_ptr<const Token>> token = Token::FromImdsBody(response.body);
      if (!token.ok()) {
        OnFailure(e, response, "malformed_response", token.status().message(), /*malformed=*/true);
      } else if (!CheckIdentityEcho(key, response.body).ok()) {
        OnWrongIdentity(e, response);
      } else if (FromEpochSeconds((*token)->expires_on()) <= clock_->Now()) {
        OnExpiredToken(e, response);
      } else {
        OnToken(e, std::move(*token));
      }
    } else if (IsRejection(response)) {
      OnRejected(e, response);
    } else {
      OnFailure(e, response, http ? ImdsErrorCode(response.body) : DescribeTransport(response),
                http ? ImdsErrorDescription(response.body) : CleanDescription(response.description), false);
    }
  }
  if (went_down && options_.fail_fast > Duration(0)) FailFast(clock_->Now());
  // Last, so the observer sees the cache's upstream health already updated.
  if (observer_) observer_(latency, status);
}

void TokenCache::OnToken(Entry* e, std::shared_ptr<const Token> token) {
  const TimePoint now = clock_->Now();
  upstream_health_.last_success = now;
  upstream_health_.failing = false;
  const bool same = e->token && e->token->fingerprint() == token->fingerprint();
  SetToken(e, std::move(token));
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
  AnswerWaiters(e, std::move(r));
  UpdateState(e);
}

void TokenCache::OnExpiredToken(Entry* e, const UpstreamResponse& response) {
  // IMDS handed out a token that has already expired: useless to everyone, so
  // the token we hold, if any, stays. A failure like any other, with its
  // backoff (asking again at once would get the same token).
  TokenResult r;
  r.kind = TokenResult::Kind::kUnavailable;
  r.description = kExpired;
  AnswerWaiters(e, std::move(r));
  OnFailure(e, response, "expired_token", kExpired, /*malformed=*/true);
}

void TokenCache::OnWrongIdentity(Entry* e, const UpstreamResponse& response) {
  // IMDS answered for another identity than the key names (agent/identity_echo.h):
  // that token is nobody's here. Its waiters get 500 at once (asking again is
  // unlikely to help them); the token we hold, if any, stays; the key backs off
  // like after a malformed answer, retrying only if the cache keeps it fresh.
  ++stats_.wrong_identity;
  TokenResult r;
  r.kind = TokenResult::Kind::kUnavailable;
  r.description = kWrongIdentityDescription;
  AnswerWaiters(e, std::move(r));
  OnFailure(e, response, "wrong_identity", kWrongIdentityDescription, /*malformed=*/true);
}

void TokenCache::OnRejected(Entry* e, const UpstreamResponse& response) {
  const TimePoint now = clock_->Now();
  // IMDS says this identity/resource cannot have a token (e.g. the identity was
  // removed): stop serving the old one and remember the answer briefly.
  SetToken(e, nullptr);
  e->stalled = false;
  ++e->consecutive_failures;
  e->last_error_status = response.status;
  e->last_error = ImdsErrorCode(response.body);
  e->last_error_description = ImdsErrorDescription(response.body);
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
  AnswerWaiters(e, std::move(r));
  if (e->prefetch) ScheduleRefresh(e, now + options_.retry.max_delay + Jitter(options_.retry.max_delay / 4));
  UpdateState(e);
}

void TokenCache::OnFailure(Entry* e, const UpstreamResponse& response, const std::string& why,
                           const std::string& description, bool malformed) {
  const TimePoint now = clock_->Now();
  upstream_health_.last_failure = now;
  upstream_health_.failing = true;
  upstream_health_.last_error_status = response.outcome == UpstreamResponse::Outcome::kHttp ? response.status : 0;
  upstream_health_.last_error = why;
  upstream_health_.last_error_description = description;
  ++e->consecutive_failures;
  e->last_error_status = upstream_health_.last_error_status;
  e->last_error = upstream_health_.last_error;
  e->last_error_description = description;

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
    e->fetch = FetchState::kBackoff;
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
  AnswerWaiters(e, std::move(r));
  if (KeptFresh(e, now)) ScheduleRefresh(e, now + options_.retry.max_delay + Jitter(options_.retry.max_delay / 4));
  UpdateState(e);
}

void TokenCache::FinishFetch(Entry* e) {
  if (e->fetch == FetchState::kQueued) scheduler_->Cancel(e->job);
  e->fetch = FetchState::kIdle;
  e->job = 0;
  e->fetch_request_id.clear();
  e->bypass_fetch = false;
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
  if (e->fetch == FetchState::kBackoff) {  // the retry wait ended
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

void TokenCache::AnswerWaiters(Entry* e, TokenResult result) {
  if (e->waiters.empty()) return;
  std::vector<Waiter> waiters;
  waiters.swap(e->waiters);
  e->fetch_caller.reset();
  for (const Waiter& w : waiters) Unwait(w);
  if (e->deadline_timer) e->deadline_timer->Disarm();
  for (auto& w : waiters) {
    result.coalesced = w.coalesced;
    w.callback(result);
  }
}

void TokenCache::Unwait(const Waiter& w) {
  --stats_.waiters;
  auto mine = waiting_.find(w.caller);
  if (mine != waiting_.end() && --mine->second == 0) waiting_.erase(mine);
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
  for (const Waiter& w : late) Unwait(w);
  if (e->waiters.empty()) e->fetch_caller.reset();
  stats_.deadline_expired += expired;
  ArmDeadline(e);
  std::vector<TokenResult> results;
  results.reserve(late.size());
  const bool down = upstream_health_.down;
  for (auto& w : late) {
    TokenResult r;
    r.coalesced = w.coalesced;
    if (down) {
      // Failing fast (FailFast): IMDS is unreachable, its retries go on. A
      // token still valid (refreshes failing) beats an error.
      if (Servable(e, now)) {
        r.kind = TokenResult::Kind::kToken;
        r.token = e->token;
      } else {
        r.kind = TokenResult::Kind::kUnavailable;
        r.description = e->last_error.empty() ? "IMDS did not provide a token within the deadline"
                                              : "IMDS could not provide a token: " + e->last_error;
      }
      results.push_back(std::move(r));
      continue;
    }
    // Who held this caller? The agent, if the fetch is still queued behind the
    // IMDS budget, the budget is paused, or the attempt under way went out only
    // in the second half of the caller's wait with no IMDS failure before it:
    // then 429 + Retry-After (come back later). Otherwise IMDS: 500.
    const TimePoint arrived = w.arrived;
    const bool held_by_budget = e->fetch == FetchState::kQueued || now < paused_until ||
                                (e->retry.attempts == 0 && e->fetch == FetchState::kInFlight &&
                                 e->attempt_started - arrived > options_.caller_deadline / 2);
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

void TokenCache::FailFast(TimePoint now) {
  const TimePoint cap = now + options_.fail_fast;
  for (auto& [key, owned] : entries_) {
    Entry* e = owned.get();
    if (e->waiters.empty() || e->waiters.back().deadline <= cap) continue;  // back: the latest
    for (Waiter& w : e->waiters) w.deadline = std::min(w.deadline, cap);
    ArmDeadline(e);
  }
}

void TokenCache::OnLastCallerLeft(Entry* e) {
  // A request already sent goes on (its answer is cheap to keep). One not sent
  // yet goes on only as background work, for a key the cache keeps fresh; any
  // other key has nobody left to fetch for.
  if (e->fetch != FetchState::kQueued && e->fetch != FetchState::kBackoff) return;
  if (!KeptFresh(e, clock_->Now())) {
    AbandonFetch(e);
  } else if (e->fetch == FetchState::kQueued && !scheduler_->Demote(e->job)) {
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
  for (const Waiter& w : gone) Unwait(w);
  if (e->waiters.empty()) e->fetch_caller.reset();
  stats_.shed += gone.size();
  ArmDeadline(e);
  // Their connections are gone (or half-closed): the answer is a formality.
  TokenResult r;
  r.kind = TokenResult::Kind::kShed;
  r.retry_after_seconds = 1;
  for (auto& w : gone) {
    r.coalesced = w.coalesced;
    w.callback(r);
  }
  return true;
}

// Only under pressure (here, and in Attempt while other callers are queued):
// a client that half-closed after its request (EOF) counts as gone, yet may
// still read an answer, so its miss is not dropped for that alone while
// nobody else waits.
bool TokenCache::SweepGoneCallers(const Entry* enqueuing) {
  const TimePoint now = clock_->Now();
  if (last_gone_sweep_ != TimePoint() && now - last_gone_sweep_ < Duration(1000)) return false;
  last_gone_sweep_ = now;
  const size_t queued = scheduler_->stats().queued_caller;
  for (auto& [key, owned] : entries_) {
    Entry* e = owned.get();
    // `enqueuing` has no place yet (its Enqueue() was just refused).
    if (e == enqueuing || e->fetch != FetchState::kQueued || e->waiters.empty() || !DropGoneWaiters(e)) continue;
    if (e->waiters.empty()) OnLastCallerLeft(e);
  }
  return scheduler_->stats().queued_caller < queued;
}

Duration TokenCache::Jitter(Duration span) {
  if (span <= Duration(0)) return Duration(0);
  return Duration(static_cast<int64_t>(random_->Uniform() * static_cast<double>(span.count())));
}

}  // namespace mi
