#include "agent/health.h"

#include <algorithm>
#include <map>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "agent/audit_trail.h"
#include "agent/base/civil_time.h"
#include "agent/token_cache.h"
#include "agent/upstream_latency.h"
#include "agent/upstream_scheduler.h"

namespace mi {
namespace {

using ojson = nlohmann::ordered_json;

bool IsSet(TimePoint t) { return t.time_since_epoch().count() > 0; }

// Sets j[name] (ISO string) and j[name + "_epoch"] (seconds), or nulls for "never".
void PutTime(ojson& j, const std::string& name, TimePoint t) {
  if (IsSet(t)) {
    j[name] = FormatIso8601Utc(t);
    j[name + "_epoch"] = ToEpochSeconds(t);
  } else {
    j[name] = nullptr;
    j[name + "_epoch"] = nullptr;
  }
}

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

// Worst first; then by identity and resource, a stable order.
bool Worse(EntryState sa, const TokenKey& a, EntryState sb, const TokenKey& b) {
  if (Rank(sa) != Rank(sb)) return Rank(sa) < Rank(sb);
  if (a.kind != b.kind) return a.kind < b.kind;
  if (a.id != b.id) return a.id < b.id;
  return a.resource < b.resource;
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
    AppendString(out, FormatIso8601Utc(t));
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
  if (!shorten || value.size() <= HealthModel::kShortString) {
    AppendString(out, value);
    return;
  }
  size_t cut = HealthModel::kShortString;
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  AppendString(out, std::string(value.substr(0, cut)) + "\xE2\x80\xA6");
  AppendNumber(out, std::string(name) + "_bytes", static_cast<int64_t>(value.size()));
}

void AppendCallerString(std::string* out, std::string_view name, std::string_view value, bool shorten) {
  AppendKey(out, name);
  AppendCallerValue(out, name, value, shorten);
}

// Requests and denials per caller uid (agent/audit_trail.h): the top ones by each.
ojson CallersJson(const AuditTrail& trail) {
  auto rows = [](const std::vector<AuditTrail::CallerRow>& top) {
    ojson list = ojson::array();
    for (const AuditTrail::CallerRow& r : top) {
      ojson row;
      if (r.uid_known) row["uid"] = r.uid;
      else row["uid"] = "unknown";
      row["user"] = r.user.empty() ? ojson(nullptr) : ojson(r.user);
      row["requests"] = r.requests;
      row["denials"] = r.denials;
      list.push_back(std::move(row));
    }
    return list;
  };
  ojson j;
  j["tracked"] = trail.callers_tracked();
  j["untracked_requests"] = trail.other_callers().requests;
  j["top_by_requests"] = rows(trail.TopCallers(/*by_denials=*/false));
  j["top_by_denials"] = rows(trail.TopCallers(/*by_denials=*/true));
  return j;
}

}  // namespace

// One /status document. The constructor takes everything at one instant: the
// model's state (rendered at once as the head) and a snapshot of the cache (the
// default view: of the kDefaultEntries worst keys). Each step may run on its own
// loop turn: Order() sorts the snapshot, then Write() renders entries, as many
// per call as the caller allows. Loop thread only.
class HealthModel::Doc : public StatusBuilder {
 public:
  Doc(const HealthModel& m, TimePoint now, bool full);
  void Order();
  // REQUIRES: Order() ran. Appends entries until about `budget` more bytes are
  // written or none are left. Returns true once the document is complete.
  bool Write(size_t budget);

  // StatusBuilder.
  bool Step(size_t budget) override {
    if (!ordered_) {
      Order();
      ordered_ = true;
      return false;
    }
    return Write(budget);
  }
  std::string Take() override { return std::move(out_); }

 private:
  void Head(const HealthModel& m, TimePoint now);
  void Entry(const EntrySnapshot& e);

  const bool full_;
  size_t total_ = 0;          // keys in the cache
  size_t by_state_[4] = {};   // of them, by EntryState
  int64_t now_s_ = 0;
  std::vector<EntrySnapshot> entries_;
  std::vector<uint32_t> order_;  // indices into entries_, as written
  size_t next_ = 0;              // into order_
  const EntrySnapshot* identity_ = nullptr;  // the identity being written
  bool ordered_ = false;
  bool finished_ = false;
  std::string out_;
};

HealthModel::Doc::Doc(const HealthModel& m, TimePoint now, bool full) : full_(full) {
  const TokenCache& cache = m.cache_;
  if (full) {
    entries_ = cache.Snapshot();
    total_ = entries_.size();
    for (const EntrySnapshot& e : entries_) ++by_state_[static_cast<int>(e.state)];
  } else {
    // Copy only the keys shown.
    auto states = cache.States();
    total_ = states.size();
    for (const auto& [key, state] : states) ++by_state_[static_cast<int>(state)];
    const size_t shown = std::min(states.size(), kDefaultEntries);
    std::partial_sort(states.begin(), states.begin() + static_cast<ptrdiff_t>(shown), states.end(),
                      [](const auto& a, const auto& b) { return Worse(a.second, *a.first, b.second, *b.first); });
    entries_.resize(shown);
    for (size_t i = 0; i < shown; ++i) cache.SnapshotKey(*states[i].first, &entries_[i]);
  }
  Head(m, now);
}

void HealthModel::Doc::Order() {
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
      estimate += 640 + e.key.resource.size() + 2 * e.key.id.size() + e.last_error.size() +
                  e.last_error_description.size();
    }
    out_.reserve(estimate);
  }
}

void HealthModel::Doc::Head(const HealthModel& m, TimePoint now) {
  const Info& info = m.info_;
  now_s_ = ToEpochSeconds(now);
  ojson j;
  j["version"] = info.version;
  j["now"] = FormatIso8601Utc(now);
  PutTime(j, "start_time", info.start_time);
  j["uptime_seconds"] = IsSet(info.start_time) ? ToEpochSeconds(now) - ToEpochSeconds(info.start_time) : 0;
  j["config_digest"] = info.config_digest;
  j["listeners"] = info.listeners;
  std::string reason;
  const bool ready = m.Ready(&reason);
  j["ready"] = ready;
  if (!ready) j["not_ready_reason"] = reason;
  ojson reload;
  reload["result"] = ReloadResultName(info.reload.result);
  PutTime(reload, "time", info.reload.time);
  if (info.reload.result == Info::ReloadResult::kFailed) reload["error"] = info.reload.error;
  else reload["error"] = nullptr;
  j["reload"] = std::move(reload);

  // Upstream (IMDS).
  ojson up;
  up["endpoint"] = info.imds_endpoint;
  const UpstreamHealth& h = m.cache_.upstream_health();
  const CacheStats& cs = m.cache_.stats();
  up["state"] = h.failing ? "failing" : (IsSet(h.last_success) ? "ok" : "unknown");
  PutTime(up, "last_success", h.last_success);
  if (IsSet(h.last_failure)) {
    ojson e;
    PutTime(e, "time", h.last_failure);
    e["status"] = h.last_error_status;  // 0: no HTTP answer (timeout, connection error)
    e["error"] = h.last_error;
    // IMDS's error_description or the OS's reason, already cleaned (CleanDescription).
    if (h.last_error_description.empty()) {
      e["description"] = nullptr;
    } else {
      e["description"] = h.last_error_description;
    }
    up["last_error"] = std::move(e);
  } else {
    up["last_error"] = nullptr;
  }
  up["requests_total"] = cs.upstream_requests;
  up["retries_total"] = cs.retries;
  up["throttle_pauses_total"] = cs.throttle_pauses;
  ojson lat;
  lat["p50"] = m.latency_.PercentileMs(50);
  lat["p99"] = m.latency_.PercentileMs(99);
  lat["samples"] = m.latency_.window_size();
  up["latency_ms"] = std::move(lat);
  const UpstreamScheduler::Stats st = m.scheduler_.stats();
  PutTime(up, "throttled_until", st.paused_until > now ? st.paused_until : TimePoint());
  up["in_flight"] = st.in_flight;
  up["max_concurrent"] = st.max_concurrent;
  if (st.max_concurrent > 0) {
    up["budget_in_use"] = static_cast<double>(st.in_flight) / static_cast<double>(st.max_concurrent);
  } else {
    up["budget_in_use"] = nullptr;
  }
  up["queue_depth"] = st.queued_caller + st.queued_background;
  up["queued_callers"] = st.queued_caller;
  up["queued_background"] = st.queued_background;
  j["upstream"] = std::move(up);

  ojson cache;
  cache["keys"] = cs.keys;
  cache["hits"] = cs.hits;
  cache["misses"] = cs.misses;
  cache["coalesced"] = cs.coalesced;
  cache["waiters"] = cs.waiters;
  cache["shed"] = cs.shed;
  j["cache"] = std::move(cache);
  if (m.audit_ != nullptr && m.audit_->seen_events()) j["callers"] = CallersJson(*m.audit_);
  ojson summary;
  for (int i = 0; i < 4; ++i) summary[EntryStateName(static_cast<EntryState>(i))] = by_state_[i];
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

bool HealthModel::Doc::Write(size_t budget) {
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

// Keys of one identity come together (Order() grouped them): a new identity
// closes the previous one's "resources".
void HealthModel::Doc::Entry(const EntrySnapshot& e) {
  const bool shorten = !full_;
  const TokenKey& key = e.key;
  if (identity_ == nullptr || identity_->key.kind != key.kind || identity_->key.id != key.id) {
    if (identity_ != nullptr) out_ += "]},";
    identity_ = &e;
    out_ += "{\"identity\":";
    AppendCallerValue(&out_, "identity", key.DescribeAsGiven(), shorten);
    AppendKey(&out_, "selector");
    AppendString(&out_, key.kind == SelectorKind::kDefault ? "default" : SelectorParam(key.kind));
    AppendCallerString(&out_, "id", key.DisplayId(), shorten);
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
    AppendString(&out_, FormatIso8601Utc(FromEpochSeconds(e.expires_on)));
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
    AppendKey(&out_, "description");
    if (e.last_error_description.empty()) {
      out_ += "null";
    } else {
      AppendString(&out_, e.last_error_description);
    }
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

HealthModel::HealthModel(const TokenCache& cache, const UpstreamScheduler& scheduler, const UpstreamLatency& latency)
    : cache_(cache), scheduler_(scheduler), latency_(latency) {}

const char* HealthModel::ReloadResultName(Info::ReloadResult r) {
  switch (r) {
    case Info::ReloadResult::kNone: return "none";
    case Info::ReloadResult::kOk: return "ok";
    case Info::ReloadResult::kFailed: return "failed";
  }
  return "none";
}

bool HealthModel::Ready(std::string* why) const {
  if (!listening_) *why = "listeners are not up";
  else if (!ready_) *why = "the first prefetch round has not finished";
  return ready_;
}

std::string HealthModel::StatusJson(TimePoint now) const {
  Doc doc(*this, now, /*full=*/false);
  doc.Order();
  doc.Write(std::string::npos);
  return doc.Take();
}

std::unique_ptr<StatusBuilder> HealthModel::FullStatus(TimePoint now) const {
  return std::make_unique<Doc>(*this, now, /*full=*/true);
}

std::string HealthModel::FullStatusJson(TimePoint now) const {
  Doc doc(*this, now, /*full=*/true);
  doc.Order();
  doc.Write(std::string::npos);
  return doc.Take();
}

}  // namespace mi
