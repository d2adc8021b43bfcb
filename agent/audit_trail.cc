#include "agent/audit_trail.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "agent/base/civil_time.h"
#include "agent/base/text.h"

namespace mi {
namespace {

// Rows of mi_agent_authorization_decisions_total: listener x dialect, a handful.
constexpr size_t kMaxDecisionRows = 32;

using ojson = nlohmann::ordered_json;

// At most kMaxFieldBytes of a caller's string, never inside a UTF-8 character.
std::string Cut(std::string_view s) {
  if (s.size() <= kMaxFieldBytes) return std::string(s);
  size_t n = kMaxFieldBytes;
  for (int back = 0; back < 3 && n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80; ++back) --n;
  return std::string(s.substr(0, n));
}

int DecisionIndex(Decision d) { return static_cast<int>(d); }

AuditRecord FromEvent(const AuditEvent& e, TimePoint now) {
  AuditRecord r;
  r.time = e.time.time_since_epoch().count() > 0 ? e.time : now;
  r.since = r.time;
  const CallerInfo& c = *e.caller;
  r.uid_known = c.peer.known;
  r.uid = c.peer.known ? c.peer.uid : 0;
  if (c.account_known) r.user = Cut(c.user);
  r.pid = c.process_known ? c.pid : c.peer.pid;
  if (c.process_known) r.exe = Cut(c.exe);
  r.listener = Cut(e.listener);
  r.dialect = Cut(e.dialect);
  r.identity = Cut(e.key->Describe());
  r.resource = Cut(e.key->resource);
  r.decision = e.decision;
  r.cache = e.cache;
  r.status = e.status;
  if (e.token != nullptr) {
    r.expires_on = e.token->expires_on();
    std::copy_n(e.token->audit_fingerprint(), sizeof r.fingerprint, r.fingerprint);
  }
  return r;
}

const char* MessageId(Decision d) {
  switch (d) {
    case Decision::kAllow: return kAuditMessageIdAllow;
    case Decision::kDeny: return kAuditMessageIdDeny;
    case Decision::kWouldDeny: return kAuditMessageIdWouldDeny;
  }
  return kAuditMessageIdAllow;
}

const char* Priority(Decision d) {
  switch (d) {
    case Decision::kAllow: return "6";      // info
    case Decision::kWouldDeny: return "5";  // notice
    case Decision::kDeny: return "4";       // warning
  }
  return "6";
}

const char* Verb(Decision d) {
  switch (d) {
    case Decision::kAllow: return "allowed";
    case Decision::kDeny: return "denied";
    case Decision::kWouldDeny: return "would be denied (audit mode)";
  }
  return "allowed";
}

std::string UidText(const AuditRecord& r) { return r.uid_known ? std::to_string(r.uid) : "unknown"; }

}  // namespace

std::string AuditRecordJson(const AuditRecord& r) {
  ojson j;
  j["time"] = FormatIso8601UtcMillis(r.time);
  if (r.count > 1 || r.overflow) j["since"] = FormatIso8601UtcMillis(r.since);
  if (r.uid_known) j["caller_uid"] = r.uid;
  else j["caller_uid"] = "unknown";
  if (!r.user.empty()) j["caller_user"] = r.user;
  if (r.pid != 0) j["caller_pid"] = r.pid;
  if (!r.exe.empty()) j["caller_exe"] = r.exe;
  j["listener"] = r.listener;
  j["dialect"] = r.dialect;
  j["identity"] = r.identity;
  j["resource"] = r.resource;
  j["decision"] = DecisionName(r.decision);
  j["cache"] = CacheOutcomeName(r.cache);
  j["status"] = r.status;
  if (r.fingerprint[0] != '\0') {
    j["expires_on"] = r.expires_on;
    j["token_fingerprint"] = r.fingerprint;
  }
  j["count"] = r.count;
  if (r.overflow) j["overflow"] = true;
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

std::vector<std::string> AuditJournalFields(const AuditRecord& r) {
  std::vector<std::string> f;
  f.reserve(20);
  auto put = [&f](const char* name, std::string_view value) {
    std::string field = name;
    field += '=';
    AppendEscaped(value, &field);
    f.push_back(std::move(field));
  };
  std::string message = "token request ";
  message += Verb(r.decision);
  message += ": uid " + UidText(r);
  if (!r.user.empty()) message += " (" + r.user + ")";
  if (r.pid != 0) message += " pid " + std::to_string(r.pid);
  if (!r.exe.empty()) message += " " + r.exe;
  message += ", identity " + r.identity + ", resource " + r.resource + ", via " + r.listener + "/" + r.dialect +
             ": " + std::to_string(r.status) + " (cache " + CacheOutcomeName(r.cache) + ")";
  if (r.overflow) {
    message += ", " + std::to_string(r.count) + " requests of callers beyond the summary table";
  } else if (r.count > 1) {
    message += ", " + std::to_string(r.count) + " times since " + FormatIso8601Utc(r.since);
  }
  put("MESSAGE", message);
  put("MESSAGE_ID", MessageId(r.decision));
  put("PRIORITY", Priority(r.decision));
  put("MI_CALLER_UID", UidText(r));
  if (!r.user.empty()) put("MI_CALLER_USER", r.user);
  if (r.pid != 0) put("MI_CALLER_PID", std::to_string(r.pid));
  if (!r.exe.empty()) put("MI_CALLER_EXE", r.exe);
  put("MI_LISTENER", r.listener);
  put("MI_DIALECT", r.dialect);
  put("MI_IDENTITY", r.identity);
  put("MI_RESOURCE", r.resource);
  put("MI_DECISION", DecisionName(r.decision));
  put("MI_CACHE", CacheOutcomeName(r.cache));
  put("MI_STATUS", std::to_string(r.status));
  if (r.fingerprint[0] != '\0') {
    put("MI_EXPIRES_ON", std::to_string(r.expires_on));
    put("MI_TOKEN_FINGERPRINT", r.fingerprint);
  }
  put("MI_COUNT", std::to_string(r.count));
  if (r.count > 1 || r.overflow) put("MI_SINCE", FormatIso8601UtcMillis(r.since));
  if (r.overflow) put("MI_OVERFLOW", "1");
  return f;
}

size_t AuditTrail::SummaryKeyHash::operator()(const SummaryKey& k) const {
  size_t h = std::hash<std::string>()(k.resource);
  h ^= std::hash<std::string>()(k.identity) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= (static_cast<size_t>(k.uid) << 3) ^ (static_cast<size_t>(k.uid_known) << 1) ^ static_cast<size_t>(k.decision);
  return h;
}

AuditTrail::AuditTrail(Options options, Env env) : options_(std::move(options)), env_(std::move(env)) {
  if (env_.logger == nullptr) env_.logger = &Logger::Discard();
  window_ = env_.timers->NewTimer();
  decisions_.reserve(kMaxDecisionRows);  // never reallocated: last_row_ stays valid
  for (int d = 0; d < 3; ++d) {
    overflow_[d].decision = static_cast<Decision>(d);
    overflow_[d].count = 0;
    overflow_[d].overflow = true;
    overflow_[d].identity = overflow_[d].resource = "*";
  }
  unresolved_.uid_known = false;
  other_.uid_known = false;
  if (options_.enabled) writer_ = MakeWriter(options_, &status_);
}

AuditTrail::~AuditTrail() { Flush(); }

uint64_t AuditTrail::dropped() const { return dropped_before_ + (writer_ ? writer_->dropped() : 0); }

Status AuditTrail::set_options(Options options) {
  const bool same_sink = options.enabled == options_.enabled && options.sink == options_.sink &&
                         options.path == options_.path && options.max_file_bytes == options_.max_file_bytes;
  if (same_sink) {
    const bool window_changed = options.summarize != options_.summarize;
    options_ = std::move(options);
    if (window_changed) {
      Flush();
      window_->Disarm();
      if (!summaries_.empty()) ArmWindow();
    }
    return Status::Ok();
  }
  Flush();  // with the old sink
  std::unique_ptr<AuditWriter> next;
  if (options.enabled) {
    Status s;
    next = MakeWriter(options, &s);
    if (!s.ok()) {
      MI_LOG(*env_.logger, kError) << "audit: " << s.message() << "; keeping the previous audit sink";
      return s;
    }
  }
  if (writer_) dropped_before_ += writer_->dropped();
  writer_ = std::move(next);
  options_ = std::move(options);
  summaries_.clear();
  window_->Disarm();
  status_ = Status::Ok();
  return status_;
}

Status AuditTrail::Reopen() {
  if (!writer_) return Status::Ok();
  Status s = writer_->Reopen();
  if (!s.ok()) MI_LOG(*env_.logger, kError) << "audit: " << s.message() << "; still writing to the old file";
  return s;
}

void AuditTrail::Count(const AuditEvent& event) {
  ++events_;
  // Listeners and dialects are the token API's constants: a handful of rows.
  DecisionCounts* row = last_row_;
  if (row == nullptr || event.listener.data() != last_listener_ || event.dialect.data() != last_dialect_) {
    row = nullptr;
    for (DecisionCounts& dc : decisions_) {
      if (dc.listener == event.listener && dc.dialect == event.dialect) {
        row = &dc;
        break;
      }
    }
    if (row == nullptr) {
      if (decisions_.size() < kMaxDecisionRows) {
        decisions_.push_back({Cut(event.listener), Cut(event.dialect), {}});
      }
      row = &decisions_.back();
    }
    last_row_ = row;
    last_listener_ = event.listener.data();
    last_dialect_ = event.dialect.data();
  }
  ++row->counts[DecisionIndex(event.decision)];

  const CallerInfo& c = *event.caller;
  CallerRow* caller = &unresolved_;
  if (c.peer.known) {
    if (last_caller_ != nullptr && last_uid_known_ && last_uid_ == c.peer.uid) {
      caller = last_caller_;
    } else {
      auto it = callers_.find(c.peer.uid);
      if (it == callers_.end() && callers_.size() < kMaxCallers) {
        CallerRow fresh;
        fresh.uid_known = true;
        fresh.uid = c.peer.uid;
        it = callers_.emplace(c.peer.uid, std::move(fresh)).first;
      }
      caller = it != callers_.end() ? &it->second : &other_;
      last_caller_ = caller;
      last_uid_known_ = true;
      last_uid_ = c.peer.uid;
    }
    if (caller->user.empty() && c.account_known && caller != &other_) caller->user = Cut(c.user);
  }
  ++caller->requests;
  if (event.decision != Decision::kAllow) ++caller->denials;
}

void AuditTrail::Record(const AuditEvent& event) {
  Count(event);
  if (!options_.enabled || !writer_) return;
  AuditRecord r = FromEvent(event, env_.clock->Now());
  if (options_.summarize <= Duration(0)) {
    Write(r);
    return;
  }
  SummaryKey key{r.uid_known, r.uid, r.identity, r.resource, r.decision};
  auto it = summaries_.find(key);
  if (it != summaries_.end()) {
    Summary& s = it->second;
    if (s.repeats == 0) s.last.since = r.time;
    ++s.repeats;
    // The latest repeat's details; the strings of the key stay.
    s.last.time = r.time;
    s.last.pid = r.pid;
    s.last.exe = std::move(r.exe);
    s.last.cache = r.cache;
    s.last.status = r.status;
    s.last.expires_on = r.expires_on;
    std::copy_n(r.fingerprint, sizeof r.fingerprint, s.last.fingerprint);
    return;
  }
  if (summaries_.size() >= kMaxSummaryKeys) {
    AuditRecord& o = overflow_[DecisionIndex(r.decision)];
    if (o.count == 0) o.since = r.time;
    ++o.count;
    ArmWindow();
    return;
  }
  Write(r);
  Summary s;
  s.last = std::move(r);
  summaries_.emplace(std::move(key), std::move(s));
  ArmWindow();
}

void AuditTrail::Flush() {
  if (!writer_) return;
  const TimePoint now = env_.clock->Now();
  for (auto it = summaries_.begin(); it != summaries_.end();) {
    Summary& s = it->second;
    if (s.repeats == 0) {
      // Idle for a whole window: forgotten; its next event is written at once.
      if (s.fresh) {
        s.fresh = false;
        ++it;
      } else {
        it = summaries_.erase(it);
      }
      continue;
    }
    s.fresh = false;
    AuditRecord r = s.last;
    r.count = s.repeats;
    r.time = now;
    Write(r);
    s.repeats = 0;
    ++it;
  }
  for (AuditRecord& o : overflow_) {
    if (o.count == 0) continue;
    o.time = now;
    Write(o);
    o.count = 0;
  }
}

void AuditTrail::ArmWindow() {
  if (window_->armed()) return;
  window_->Arm(options_.summarize, [this] {
    Flush();
    if (!summaries_.empty()) ArmWindow();
  });
}

void AuditTrail::Write(const AuditRecord& record) {
  if (writer_->Write(record)) ++records_;
}

std::vector<AuditTrail::CallerRow> AuditTrail::TopCallers(bool by_denials) const {
  std::vector<const CallerRow*> rows;
  rows.reserve(callers_.size() + 1);
  auto consider = [&](const CallerRow& row) {
    if ((by_denials ? row.denials : row.requests) > 0) rows.push_back(&row);
  };
  for (const auto& entry : callers_) consider(entry.second);
  consider(unresolved_);
  auto metric = [by_denials](const CallerRow* r) { return by_denials ? r->denials : r->requests; };
  auto before = [&](const CallerRow* a, const CallerRow* b) {
    if (metric(a) != metric(b)) return metric(a) > metric(b);
    if (a->uid_known != b->uid_known) return a->uid_known;
    return a->uid < b->uid;
  };
  const size_t n = std::min(rows.size(), kTopCallers);
  std::partial_sort(rows.begin(), rows.begin() + static_cast<ptrdiff_t>(n), rows.end(), before);
  std::vector<CallerRow> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*rows[i]);
  return out;
}

void AuditTrail::WriteMetrics(MetricsWriter& out) const {
  if (events_ > 0) {
    out.Family("mi_agent_authorization_decisions_total", "counter",
               "Token requests decided by the authorization policy, by decision, listener and dialect.");
    for (const DecisionCounts& dc : decisions_) {
      for (int d = 0; d < 3; ++d) {
        out.Sample("mi_agent_authorization_decisions_total",
                   {{"decision", DecisionName(static_cast<Decision>(d))},
                    {"listener", dc.listener},
                    {"dialect", dc.dialect}},
                   static_cast<double>(dc.counts[d]));
      }
    }
  }
  if (options_.enabled) {
    out.One("mi_agent_audit_records_total", "counter", "Audit records written (summaries count once).",
            static_cast<double>(records_));
    out.One("mi_agent_audit_dropped_total", "counter",
            "Audit records dropped: the file sink's size cap or buffer was full, or a write failed.",
            static_cast<double>(dropped()));
  }
}

}  // namespace mi
