// TokenCache's families in /metrics, next to the counters they read (CacheStats,
// UpstreamHealth, Summarize()).
#include "agent/token_cache.h"

namespace mi {

void TokenCache::WriteMetrics(MetricsWriter& w) const {
  const CacheStats& cs = stats_;
  w.One("mi_agent_cache_hits_total", "counter", "Token requests served from the cache.", static_cast<double>(cs.hits));
  w.One("mi_agent_cache_misses_total", "counter", "Token requests that waited for IMDS.",
        static_cast<double>(cs.misses));
  w.One("mi_agent_cache_coalesced_total", "counter", "Misses that joined an IMDS request already under way.",
        static_cast<double>(cs.coalesced));
  w.One("mi_agent_cache_negative_hits_total", "counter", "Requests answered from a cached IMDS rejection.",
        static_cast<double>(cs.negative_hits));
  w.Family("mi_agent_cache_evictions_total", "counter", "Keys dropped from the cache, by reason.");
  w.Sample("mi_agent_cache_evictions_total", {{"reason", "idle"}}, static_cast<double>(cs.evicted_idle));
  w.Sample("mi_agent_cache_evictions_total", {{"reason", "lru"}}, static_cast<double>(cs.evicted_lru));
  w.One("mi_agent_cache_keys", "gauge", "Keys (identity and resource) in the cache.", static_cast<double>(cs.keys));
  w.One("mi_agent_waiters", "gauge", "Callers waiting for an IMDS answer.", static_cast<double>(cs.waiters));
  w.One("mi_agent_requests_shed_total", "counter", "Callers answered 429 because the agent was shedding load.",
        static_cast<double>(cs.shed));
  // Only once a caller asked for bypass_cache.
  if (cs.bypass_fetched + cs.bypass_coalesced + cs.bypass_recent > 0) {
    w.Family("mi_agent_cache_bypass_total", "counter",
             "bypass_cache=true requests: fetched (a bypass fetch started), coalesced (joined one under way), "
             "recent (within bypass_min_interval_seconds of the last one: served as usual).");
    w.Sample("mi_agent_cache_bypass_total", {{"outcome", "fetched"}}, static_cast<double>(cs.bypass_fetched));
    w.Sample("mi_agent_cache_bypass_total", {{"outcome", "coalesced"}}, static_cast<double>(cs.bypass_coalesced));
    w.Sample("mi_agent_cache_bypass_total", {{"outcome", "recent"}}, static_cast<double>(cs.bypass_recent));
  }
  // Only once a caller was shed for its share: a /metrics page where that never
  // happened reads as it did before the fair share existed.
  if (cs.shed_caller_share > 0) {
    w.One("mi_agent_requests_shed_caller_share_total", "counter",
          "Callers answered 429 because their caller (uid) held its share of the waiters or of the IMDS queue "
          "(also in mi_agent_requests_shed_total).",
          static_cast<double>(cs.shed_caller_share));
  }
  w.One("mi_agent_requests_deadline_expired_total", "counter", "Callers answered at their deadline without a token.",
        static_cast<double>(cs.deadline_expired));

  w.Family("mi_agent_upstream_requests_total", "counter",
           "IMDS requests finished, by HTTP status class (error: no HTTP answer).");
  static const char* const kClasses[] = {"error", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (int i = 0; i < 6; ++i) {
    w.Sample("mi_agent_upstream_requests_total", {{"class", kClasses[i]}},
             static_cast<double>(cs.upstream_by_class[i]));
  }
  w.One("mi_agent_upstream_retries_total", "counter", "IMDS requests retried after a failure.",
        static_cast<double>(cs.retries));
  w.One("mi_agent_upstream_throttle_pauses_total", "counter",
        "Times IMDS throttled the agent (429) and upstream requests paused.", static_cast<double>(cs.throttle_pauses));
  w.One("mi_agent_upstream_same_token_total", "counter", "Refreshes for which IMDS returned the token already cached.",
        static_cast<double>(cs.same_token));
  // Only once it happened, as the caller-share counter above.
  if (cs.wrong_identity > 0) {
    w.One("mi_agent_upstream_wrong_identity_total", "counter",
          "IMDS answers for another identity than the request named (not served, not cached).",
          static_cast<double>(cs.wrong_identity));
  }
  w.One("mi_agent_upstream_up", "gauge", "1 unless the last IMDS answer was a failure.",
        upstream_health_.failing ? 0 : 1);

  // Keys by state and the earliest expiry, counted in place: a scrape never
  // copies the keys.
  const Summary sum = Summarize();
  w.Family("mi_agent_tokens", "gauge", "Cache keys by state (ok, refreshing, degraded, failing).");
  for (int i = 0; i < 4; ++i) {
    w.Sample("mi_agent_tokens", {{"state", EntryStateName(static_cast<EntryState>(i))}}, static_cast<double>(sum.by_state[i]));
  }
  if (sum.earliest_expires_on > 0) {
    w.One("mi_agent_token_earliest_expiry_seconds", "gauge",
          "Seconds until the earliest cached token expires (negative: already expired).",
          static_cast<double>((FromEpochSeconds(sum.earliest_expires_on) - w.now()).count()) / 1000.0);
  }
}

}  // namespace mi
