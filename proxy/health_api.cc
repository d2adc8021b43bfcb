#include "proxy/health_api.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <map>
#include <string_view>

#include <nlohmann/json.hpp>

#include "proxy/error_body.h"
#include "proxy/request_params.h"

namespace mi::proxy {
namespace {

using ojson = nlohmann::ordered_json;

// --- time ------------------------------------------------------------------------

// "2026-01-01T00:00:00Z". Civil-from-days (H. Hinnant): no gmtime, no locale, no
// platform differences.
std::string IsoUtc(TimePoint t) {
  const int64_t secs = ToEpochSeconds(t);
  int64_t days = secs / 86400;
  int64_t rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    --days;
  }
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04" PRId64 "-%02" PRId64 "-%02" PRId64 "T%02" PRId64 ":%02" PRId64 ":%02" PRId64 "Z",
                y, m, d, rem / 3600, rem / 60 % 60, rem % 60);
  return buf;
}

bool IsSet(TimePoint t) { return t.time_since_epoch().count() > 0; }

// Sets j[name] (ISO string) and j[name + "_epoch"] (seconds), or nulls for "never".
void PutTime(ojson& j, const std::string& name, TimePoint t) {
  if (IsSet(t)) {
    j[name] = IsoUtc(t);
    j[name + "_epoch"] = ToEpochSeconds(t);
  } else {
    j[name] = nullptr;
    j[name + "_epoch"] = nullptr;
  }
}

double Seconds(Duration d) { return static_cast<double>(d.count()) / 1000.0; }

// --- prometheus text -------------------------------------------------------------------

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[40];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.12g", v);
  }
  return buf;
}

// Label values escaped as the text format requires: backslash, quote, newline.
std::string EscapeLabel(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

class MetricsWriter {
 public:
  // Starts a family: HELP and TYPE lines. Samples of one family follow it.
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // `labels` is "" or `a="x",b="y"` (values already escaped).
  void Sample(std::string_view name, std::string_view labels, double value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += FormatValue(value);
    out_ += '\n';
  }
  void One(std::string_view name, std::string_view type, std::string_view help, double value) {
    Family(name, type, help);
    Sample(name, "", value);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

const char* const kStates[] = {"ok", "refreshing", "degraded", "failing"};

HttpResponse Json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

// --- /status -----------------------------------------------------------------------

// Output order: the worst first.
int Rank(EntryState state) {
  switch (state) {
    case EntryState::kFailing: return 0;
    case EntryState::kDegraded: return 1;
    case EntryState::kRefreshing: return 2;
    case EntryState::kOk: return 3;
  }
  return 3;
}

// A JSON string. Resources and ids come from callers: odd bytes (invalid UTF-8)
// are replaced, never thrown about on the loop.
void AppendString(std::string* out, std::string_view s) {
  const bool plain = std::all_of(s.begin(), s.end(), [](char c) {
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  });
  if (plain) {
    *out += '"';
    *out += s;
    *out += '"';
  } else {
    *out += ojson(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
}

void AppendKey(std::string* out, std::string_view name) {
  *out += ",\"";
  *out += name;
  *out += "\":";
}

void AppendNumber(std::string* out, std::string_view name, int64_t v) {
  AppendKey(out, name);
  *out += std::to_string(v);
}

// Like PutTime: "name" (ISO) and "name_epoch" (seconds), or nulls for "never".
void AppendTime(std::string* out, const std::string& name, TimePoint t) {
  AppendKey(out, name);
  if (IsSet(t)) {
    AppendString(out, IsoUtc(t));
    AppendNumber(out, name + "_epoch", ToEpochSeconds(t));
  } else {
    *out += "null";
    AppendKey(out, name + "_epoch");
    *out += "null";
  }
}

// A caller's string. In the default view one longer than kShortString is cut (at a
// UTF-8 boundary) and marked with "…", and "<name>_bytes" follows with its length.
void AppendCallerValue(std::string* out, std::string_view name, std::string_view value, bool shorten) {
  if (!shorten || value.size() <= HealthApi::kShortString) {
    AppendString(out, value);
    return;
  }
  size_t cut = HealthApi::kShortString;
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  AppendString(out, std::string(value.substr(0, cut)) + "\xE2\x80\xA6");
  AppendNumber(out, std::string(name) + "_bytes", static_cast<int64_t>(value.size()));
}

void AppendCallerString(std::string* out, std::string_view name, std::string_view value, bool shorten) {
  AppendKey(out, name);
  AppendCallerValue(out, name, value, shorten);
}

// One /status document. The constructor takes everything at one instant: the
// sources' state (rendered at once as the head) and a snapshot of the cache (the
// default view: of the kDefaultEntries worst keys). Each
// step may run on its own loop turn: Order() sorts the snapshot, then Write()
// renders entries, as many per call as the caller allows. Loop thread only.
class StatusDoc {
 public:
  StatusDoc(const HealthSources& s, bool full);
  void Order();
  // REQUIRES: Order() ran. Appends entries until about `budget` more bytes are
  // written or none are left. Returns true once the document is complete.
  bool Write(size_t budget);
  std::string Take() { return std::move(out_); }

 private:
  void Head(const HealthSources& s);
  void Entry(const EntrySnapshot& e);

  const bool full_;
  size_t total_ = 0;          // keys in the cache
  size_t by_state_[4] = {};   // of them, by EntryState
  int64_t now_s_ = 0;
  std::vector<EntrySnapshot> entries_;
  std::vector<uint32_t> order_;  // indices into entries_, as written
  size_t next_ = 0;              // into order_
  const EntrySnapshot* identity_ = nullptr;  // the identity being written
  bool finished_ = false;
  std::string out_;
};

// Worst first; then by identity and resource, a stable order.
bool Worse(EntryState sa, const TokenKey& a, EntryState sb, const TokenKey& b) {
  if (Rank(sa) != Rank(sb)) return Rank(sa) < Rank(sb);
  if (a.kind != b.kind) return a.kind < b.kind;
  if (a.id != b.id) return a.id < b.id;
  return a.resource < b.resource;
}

StatusDoc::StatusDoc(const HealthSources& s, bool full) : full_(full) {
  if (s.cache != nullptr && full) {
    entries_ = s.cache->Snapshot();
    total_ = entries_.size();
    for (const EntrySnapshot& e : entries_) ++by_state_[static_cast<int>(e.state)];
  } else if (s.cache != nullptr) {
    // Copy only the keys shown.
    auto states = s.cache->States();
    total_ = states.size();
    for (const auto& [key, state] : states) ++by_state_[static_cast<int>(state)];
    const size_t shown = std::min(states.size(), HealthApi::kDefaultEntries);
    std::partial_sort(states.begin(), states.begin() + static_cast<ptrdiff_t>(shown), states.end(),
                      [](const auto& a, const auto& b) { return Worse(a.second, *a.first, b.second, *b.first); });
    entries_.resize(shown);
    for (size_t i = 0; i < shown; ++i) s.cache->SnapshotKey(*states[i].first, &entries_[i]);
  }
  Head(s);
}

void StatusDoc::Order() {
  order_.resize(entries_.size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<uint32_t>(i);
  std::sort(order_.begin(), order_.end(), [this](uint32_t a, uint32_t b) {
    return Worse(entries_[a].state, entries_[a].key, entries_[b].state, entries_[b].key);
  });
  // Each identity once, where its worst key put it; its keys worst first.
  std::map<std::pair<SelectorKind, std::string_view>, size_t> group_of;
  std::vector<std::pair<size_t, uint32_t>> grouped;
  grouped.reserve(order_.size());
  for (uint32_t i : order_) {
    const TokenKey& k = entries_[i].key;
    const size_t group = group_of.emplace(std::make_pair(k.kind, std::string_view(k.id)), group_of.size()).first->second;
    grouped.emplace_back(group, i);
  }
  std::stable_sort(grouped.begin(), grouped.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < grouped.size(); ++i) order_[i] = grouped[i].second;

  if (full_) {
    // One allocation up front rather than a doubling copy of megabytes on some turn.
    size_t estimate = out_.size();
    for (const EntrySnapshot& e : entries_) {
      estimate += 640 + e.key.resource.size() + 2 * e.key.id.size() + e.last_error.size();
    }
    out_.reserve(estimate);
  }
}

void StatusDoc::Head(const HealthSources& s) {
  const TimePoint now = s.clock != nullptr ? s.clock->Now() : s.start_time;
  now_s_ = ToEpochSeconds(now);
  ojson j;
  j["version"] = s.version;
  j["now"] = IsoUtc(now);
  PutTime(j, "start_time", s.start_time);
  j["uptime_seconds"] = IsSet(s.start_time) ? ToEpochSeconds(now) - ToEpochSeconds(s.start_time) : 0;
  j["config_digest"] = s.config_digest;
  j["listeners"] = s.listeners;
  if (s.ready) {
    std::string reason;
    const bool ready = s.ready(&reason);
    j["ready"] = ready;
    if (!ready) j["not_ready_reason"] = reason;
  }

  // Upstream (IMDS).
  ojson up;
  up["endpoint"] = s.imds_endpoint;
  if (s.cache != nullptr) {
    const UpstreamHealth& h = s.cache->upstream_health();
    const CacheStats& cs = s.cache->stats();
    up["state"] = h.failing ? "failing" : (IsSet(h.last_success) ? "ok" : "unknown");
    PutTime(up, "last_success", h.last_success);
    if (IsSet(h.last_failure)) {
      ojson e;
      PutTime(e, "time", h.last_failure);
      e["status"] = h.last_error_status;  // 0: no HTTP answer (timeout, connection error)
      e["error"] = h.last_error;
      up["last_error"] = std::move(e);
    } else {
      up["last_error"] = nullptr;
    }
    up["requests_total"] = cs.upstream_requests;
    up["retries_total"] = cs.retries;
    up["throttle_pauses_total"] = cs.throttle_pauses;
  }
  if (s.upstream_metrics != nullptr) {
    ojson lat;
    lat["p50"] = s.upstream_metrics->PercentileMs(50);
    lat["p99"] = s.upstream_metrics->PercentileMs(99);
    lat["samples"] = s.upstream_metrics->window_size();
    up["latency_ms"] = std::move(lat);
  }
  if (s.scheduler != nullptr) {
    const UpstreamScheduler::Stats st = s.scheduler->stats();
    PutTime(up, "throttled_until", st.paused_until > now ? st.paused_until : TimePoint());
    up["in_flight"] = st.in_flight;
    up["max_concurrent"] = s.max_concurrent;
    if (s.max_concurrent > 0) {
      up["budget_in_use"] = static_cast<double>(st.in_flight) / static_cast<double>(s.max_concurrent);
    } else {
      up["budget_in_use"] = nullptr;
    }
    up["queue_depth"] = st.queued_caller + st.queued_background;
    up["queued_callers"] = st.queued_caller;
    up["queued_background"] = st.queued_background;
  }
  j["upstream"] = std::move(up);

  if (s.cache != nullptr) {
    const CacheStats& cs = s.cache->stats();
    ojson cache;
    cache["keys"] = cs.keys;
    cache["hits"] = cs.hits;
    cache["misses"] = cs.misses;
    cache["coalesced"] = cs.coalesced;
    cache["waiters"] = cs.waiters;
    cache["shed"] = cs.shed;
    j["cache"] = std::move(cache);
  }
  ojson summary;
  for (int i = 0; i < 4; ++i) summary[kStates[i]] = by_state_[i];
  j["summary"] = std::move(summary);
  j["entries_total"] = total_;
  j["entries_shown"] = entries_.size();
  j["truncated"] = entries_.size() < total_;
  // Where the rest is (and the exact values of shortened strings).
  if (!full_) j["full_view"] = "/status?entries=all";

  out_ += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out_.pop_back();  // '}': "identities" follows
  out_ += ",\"identities\":[";
}

bool StatusDoc::Write(size_t budget) {
  const size_t stop = out_.size() + std::min(budget, out_.max_size() - out_.size());
  while (next_ < order_.size() && out_.size() < stop) Entry(entries_[order_[next_++]]);
  if (next_ < order_.size()) return false;
  if (!finished_) {
    if (identity_ != nullptr) out_ += "]}";
    out_ += "]}";
    finished_ = true;
    // The snapshot's memory goes before the body is handed on (and copied).
    identity_ = nullptr;
    entries_ = std::vector<EntrySnapshot>();
    order_ = std::vector<uint32_t>();
  }
  return true;
}

// Keys of one identity come together (the constructor grouped them): a new
// identity closes the previous one's "resources".
void StatusDoc::Entry(const EntrySnapshot& e) {
  const bool shorten = !full_;
  const TokenKey& key = e.key;
  if (identity_ == nullptr || identity_->key.kind != key.kind || identity_->key.id != key.id) {
    if (identity_ != nullptr) out_ += "]},";
    identity_ = &e;
    out_ += "{\"identity\":";
    AppendCallerValue(&out_, "identity", key.Describe(), shorten);
    AppendKey(&out_, "selector");
    AppendString(&out_, key.kind == SelectorKind::kDefault ? "default" : SelectorParam(key.kind));
    AppendCallerString(&out_, "id", key.id, shorten);
    out_ += ",\"resources\":[";
  } else {
    out_ += ',';
  }
  out_ += "{\"resource\":";
  AppendCallerValue(&out_, "resource", key.resource, shorten);
  AppendKey(&out_, "state");
  AppendString(&out_, EntryStateName(e.state));
  AppendKey(&out_, "prefetch");
  out_ += e.prefetch ? "true" : "false";
  if (e.expires_on > 0) {
    AppendNumber(&out_, "expires_on", e.expires_on);
    AppendKey(&out_, "expires_at");
    AppendString(&out_, IsoUtc(FromEpochSeconds(e.expires_on)));
    AppendNumber(&out_, "expires_in_seconds", std::max<int64_t>(0, e.expires_on - now_s_));
  } else {
    out_ += ",\"expires_on\":null,\"expires_at\":null,\"expires_in_seconds\":null";
  }
  AppendTime(&out_, "last_refresh", e.last_refresh);
  AppendTime(&out_, "next_refresh", e.next_refresh);
  AppendTime(&out_, "last_used", e.last_used);
  AppendKey(&out_, "last_error");
  if (!e.last_error.empty()) {
    out_ += "{\"status\":";
    out_ += std::to_string(e.last_error_status);
    AppendCallerString(&out_, "error", e.last_error, shorten);
    out_ += '}';
  } else {
    out_ += "null";
  }
  AppendNumber(&out_, "consecutive_failures", e.consecutive_failures);
  AppendKey(&out_, "hits");
  out_ += std::to_string(e.hits);
  AppendKey(&out_, "misses");
  out_ += std::to_string(e.misses);
  out_ += '}';
}

}  // namespace

class HealthApi::FullStatus {
 public:
  explicit FullStatus(const HealthSources& s) : doc(s, /*full=*/true) {}
  StatusDoc doc;
  std::unique_ptr<Timer> timer;
  std::function<void(std::string)> done;
};

HealthApi::HealthApi(HealthSources sources) : sources_(std::move(sources)) {}
HealthApi::~HealthApi() = default;

void HealthApi::OnRequest(const HttpRequest& request, Responder responder) {
  std::string_view path = request.target;
  const size_t question = path.find('?');
  const std::string_view query = question == std::string_view::npos ? std::string_view() : path.substr(question + 1);
  path = path.substr(0, question);
  const bool known = path == "/healthz" || path == "/readyz" || path == "/status" || path == "/metrics";
  if (!known) {
    responder.Send(Json(404, ErrorBody("not_found", "unknown path; try /healthz, /readyz, /status, /metrics")));
    return;
  }
  if (request.method != "GET") {
    HttpResponse r = Json(405, ErrorBody("method_not_allowed", "only GET is served here"));
    r.headers.emplace_back("Allow", "GET");
    responder.Send(std::move(r));
    return;
  }
  if (path == "/healthz") {
    // Answered by the loop itself: a wedged loop answers nothing.
    ojson j;
    j["status"] = "ok";
    if (sources_.clock != nullptr && IsSet(sources_.start_time)) {
      j["uptime_seconds"] = ToEpochSeconds(sources_.clock->Now()) - ToEpochSeconds(sources_.start_time);
    }
    responder.Send(Json(200, j.dump()));
  } else if (path == "/readyz") {
    std::string reason;
    if (sources_.ready && sources_.ready(&reason)) {
      responder.Send(Json(200, "{\"status\":\"ready\"}"));
    } else {
      HttpResponse r = Json(503, ErrorBody("not_ready", reason.empty() ? "not ready" : reason));
      r.headers.emplace_back("Retry-After", "1");
      responder.Send(std::move(r));
    }
  } else if (path == "/status") {
    if (query.empty()) {
      responder.Send(Json(200, StatusJson()));
    } else if (query == "entries=all") {
      auto shared = std::make_shared<Responder>(std::move(responder));
      const bool started =
          BuildFullStatus([shared](std::string body) { shared->Send(Json(200, std::move(body))); });
      if (!started) {
        HttpResponse r = Json(503, ErrorBody("busy", "a full /status is being built; retry in a moment"));
        r.headers.emplace_back("Retry-After", "1");
        shared->Send(std::move(r));
      }
    } else {
      responder.Send(Json(400, ErrorBody("bad_request", "/status takes no query but entries=all (every key)")));
    }
  } else {
    HttpResponse r = Json(200, MetricsText());
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    responder.Send(std::move(r));
  }
}

std::string HealthApi::StatusJson(bool full) const {
  StatusDoc doc(sources_, full);
  doc.Order();
  doc.Write(std::string::npos);
  return doc.Take();
}

bool HealthApi::BuildFullStatus(std::function<void(std::string body)> done) {
  if (full_ != nullptr) return false;
  if (sources_.timers == nullptr) {
    done(StatusJson(/*full=*/true));
    return true;
  }
  // The snapshot and the head on this turn, the sort on the next, then the entries.
  full_ = std::make_unique<FullStatus>(sources_);
  full_->timer = sources_.timers->NewTimer();
  full_->done = std::move(done);
  full_->timer->Arm(kSliceGap, [this] {
    full_->doc.Order();
    full_->timer->Arm(kSliceGap, [this] { ContinueFullStatus(); });
  });
  return true;
}

void HealthApi::ContinueFullStatus() {
  if (!full_->doc.Write(kSliceBytes)) {
    full_->timer->Arm(kSliceGap, [this] { ContinueFullStatus(); });
    return;
  }
  // Cleared before `done` runs, so that it may start the next one. The timer goes
  // from inside its own callback, which Timer allows.
  std::unique_ptr<FullStatus> finished = std::move(full_);
  finished->done(finished->doc.Take());
}

std::string HealthApi::MetricsText() const {
  const HealthSources& s = sources_;
  const TimePoint now = s.clock != nullptr ? s.clock->Now() : s.start_time;
  MetricsWriter w;

  w.Family("mi_agent_build_info", "gauge", "Build information; the value is always 1.");
  w.Sample("mi_agent_build_info", "version=\"" + EscapeLabel(s.version) + "\"", 1);
  w.One("mi_agent_process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.",
        static_cast<double>(ToEpochSeconds(s.start_time)));

  if (s.token_api != nullptr) {
    w.Family("mi_agent_requests_total", "counter", "Token requests answered, by route and HTTP status code.");
    const RequestCounters& c = s.token_api->counters();
    for (int route = 0; route < kRouteCount; ++route) {
      for (int code = 100; code < 600; ++code) {
        const uint64_t n = c.Get(static_cast<Route>(route), code);
        if (n == 0) continue;
        w.Sample("mi_agent_requests_total",
                 std::string("route=\"") + RouteName(static_cast<Route>(route)) + "\",code=\"" +
                     std::to_string(code) + "\"",
                 static_cast<double>(n));
      }
    }
  }

  if (s.cache != nullptr) {
    const CacheStats& cs = s.cache->stats();
    w.One("mi_agent_cache_hits_total", "counter", "Token requests served from the cache.",
          static_cast<double>(cs.hits));
    w.One("mi_agent_cache_misses_total", "counter", "Token requests that waited for IMDS.",
          static_cast<double>(cs.misses));
    w.One("mi_agent_cache_coalesced_total", "counter", "Misses that joined an IMDS request already under way.",
          static_cast<double>(cs.coalesced));
    w.One("mi_agent_cache_negative_hits_total", "counter", "Requests answered from a cached IMDS rejection.",
          static_cast<double>(cs.negative_hits));
    w.Family("mi_agent_cache_evictions_total", "counter", "Keys dropped from the cache, by reason.");
    w.Sample("mi_agent_cache_evictions_total", "reason=\"idle\"", static_cast<double>(cs.evicted_idle));
    w.Sample("mi_agent_cache_evictions_total", "reason=\"lru\"", static_cast<double>(cs.evicted_lru));
    w.One("mi_agent_cache_keys", "gauge", "Keys (identity and resource) in the cache.",
          static_cast<double>(cs.keys));
    w.One("mi_agent_waiters", "gauge", "Callers waiting for an IMDS answer.", static_cast<double>(cs.waiters));
    w.One("mi_agent_requests_shed_total", "counter", "Callers answered 429 because the agent was shedding load.",
          static_cast<double>(cs.shed));
    w.One("mi_agent_requests_deadline_expired_total", "counter",
          "Callers answered at their deadline without a token.", static_cast<double>(cs.deadline_expired));

    w.Family("mi_agent_upstream_requests_total", "counter",
             "IMDS requests finished, by HTTP status class (error: no HTTP answer).");
    static const char* const kClasses[] = {"error", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 6; ++i) {
      w.Sample("mi_agent_upstream_requests_total", std::string("class=\"") + kClasses[i] + "\"",
               static_cast<double>(cs.upstream_by_class[i]));
    }
    w.One("mi_agent_upstream_retries_total", "counter", "IMDS requests retried after a failure.",
          static_cast<double>(cs.retries));
    w.One("mi_agent_upstream_throttle_pauses_total", "counter",
          "Times IMDS throttled the agent (429) and upstream requests paused.",
          static_cast<double>(cs.throttle_pauses));
    w.One("mi_agent_upstream_same_token_total", "counter",
          "Refreshes for which IMDS returned the token already cached.", static_cast<double>(cs.same_token));
    w.One("mi_agent_upstream_up", "gauge", "1 unless the last IMDS answer was a failure.",
          s.cache->upstream_health().failing ? 0 : 1);

    // Tokens by state and the earliest expiry.
    // Counted in place: a scrape never copies the keys.
    const TokenCache::Summary sum = s.cache->Summarize();
    w.Family("mi_agent_tokens", "gauge", "Cache keys by state (ok, refreshing, degraded, failing).");
    for (int i = 0; i < 4; ++i) {
      w.Sample("mi_agent_tokens", std::string("state=\"") + kStates[i] + "\"", static_cast<double>(sum.by_state[i]));
    }
    if (sum.earliest_expires_on > 0) {
      w.One("mi_agent_token_earliest_expiry_seconds", "gauge",
            "Seconds until the earliest cached token expires (negative: already expired).",
            Seconds(FromEpochSeconds(sum.earliest_expires_on) - now));
    }
  }

  if (s.upstream_metrics != nullptr) {
    const UpstreamLatency& m = *s.upstream_metrics;
    constexpr std::string_view kName = "mi_agent_upstream_latency_seconds";
    w.Family(kName, "histogram", "IMDS request latency in seconds.");
    uint64_t cumulative = 0;
    for (size_t i = 0; i < UpstreamLatency::kBuckets.size(); ++i) {
      cumulative += m.bucket_counts()[i];
      w.Sample("mi_agent_upstream_latency_seconds_bucket", "le=\"" + FormatValue(UpstreamLatency::kBuckets[i]) + "\"",
               static_cast<double>(cumulative));
    }
    w.Sample("mi_agent_upstream_latency_seconds_bucket", "le=\"+Inf\"", static_cast<double>(m.count()));
    w.Sample("mi_agent_upstream_latency_seconds_sum", "", m.sum_seconds());
    w.Sample("mi_agent_upstream_latency_seconds_count", "", static_cast<double>(m.count()));
  }

  if (s.scheduler != nullptr) {
    const UpstreamScheduler::Stats st = s.scheduler->stats();
    w.One("mi_agent_upstream_in_flight", "gauge", "IMDS requests in flight.", st.in_flight);
    w.One("mi_agent_upstream_max_concurrent", "gauge", "The IMDS budget's cap on concurrent requests.",
          s.max_concurrent);
    w.Family("mi_agent_upstream_queue_depth", "gauge", "IMDS requests waiting for the budget, by priority.");
    w.Sample("mi_agent_upstream_queue_depth", "priority=\"caller\"", static_cast<double>(st.queued_caller));
    w.Sample("mi_agent_upstream_queue_depth", "priority=\"background\"", static_cast<double>(st.queued_background));
    w.One("mi_agent_upstream_queue_rejected_total", "counter", "IMDS requests refused because the queue was full.",
          static_cast<double>(st.rejected_total));
    w.One("mi_agent_upstream_pause_remaining_seconds", "gauge",
          "Seconds until a throttle pause ends (0: not paused).",
          st.paused_until > now ? Seconds(st.paused_until - now) : 0);
  }

  // Connections on the token listener (and the health listener when given).
  std::vector<std::pair<const char*, const HttpServer*>> servers;
  if (s.token_server != nullptr) servers.emplace_back("token", s.token_server);
  if (s.health_server != nullptr) servers.emplace_back("health", s.health_server);
  if (!servers.empty()) {
    auto family = [&](const char* name, const char* type, const char* help, auto get) {
      w.Family(name, type, help);
      for (const auto& [listener, server] : servers) {
        w.Sample(name, std::string("listener=\"") + listener + "\"", static_cast<double>(get(server->stats())));
      }
    };
    family("mi_agent_open_connections", "gauge", "Open client connections, by listener.",
           [](const ServerStats& st) { return st.open_connections; });
    family("mi_agent_connections_accepted_total", "counter", "Client connections accepted, by listener.",
           [](const ServerStats& st) { return st.accepted; });
    family("mi_agent_connections_rejected_total", "counter",
           "Client connections refused at the connection limit (503), by listener.",
           [](const ServerStats& st) { return st.rejected_over_limit; });
    family("mi_agent_connections_timed_out_total", "counter",
           "Client connections closed by the header or idle timeout, by listener.",
           [](const ServerStats& st) { return st.timed_out; });
    family("mi_agent_http_protocol_errors_total", "counter",
           "Requests refused as malformed or too large (400, 413, 431, 505), by listener.",
           [](const ServerStats& st) { return st.protocol_errors; });
  }
  return w.Take();
}

}  // namespace mi::proxy
