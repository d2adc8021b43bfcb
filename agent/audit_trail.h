#pragma once
// The audit trail (issue #13): one record per authorization decision, written
// to journald, a JSON-lines file or stderr, and never a token (the token's
// expires_on and audit fingerprint only).
//
// Summaries keep the output bounded: the first event of a (caller uid,
// identity, resource, decision) is written at once (count 1); its repeats are
// counted and written as one record with their count when the summary window
// (summarize_seconds) closes, so the counts of a key's records add up to its
// decisions. A key idle for a whole window is forgotten. The table holds at
// most kMaxSummaryKeys keys; events of further keys are counted into one
// "overflow" record per decision (identity and resource "*"), never dropped
// silently. summarize_seconds 0 writes every event.
//
// Counted for every event, also with the trail disabled (the token API emits
// events whenever the authorization mode is not off): decisions by
// (decision, listener, dialect) for /metrics, and requests and denials per
// caller uid for /status (kMaxCallers uids; beyond, into one "other" row).
// Neither appears before the first event, so a default config's /metrics and
// /status stay as they were.
//
// Loop thread only.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agent/audit_event.h"
#include "agent/base/clock.h"
#include "agent/base/log.h"
#include "agent/base/metrics.h"
#include "agent/base/status.h"
#include "agent/base/timer.h"

struct uv_loop_s;

namespace mi {

// One record as written: copies of the event's fields (callers' strings cut to
// kMaxFieldBytes). No token.
struct AuditRecord {
  TimePoint time{};    // when written (a summary: when its window closed)
  TimePoint since{};   // a summary: the first repeat it counts; else == time
  bool uid_known = false;
  uint32_t uid = 0;
  std::string user;    // "" when not known
  uint32_t pid = 0;    // 0 when not known
  std::string exe;     // "" when not known
  std::string listener;
  std::string dialect;
  std::string identity;  // TokenKey::Describe(), or "*" (overflow)
  std::string resource;  // or "*" (overflow)
  Decision decision = Decision::kAllow;
  CacheOutcome cache = CacheOutcome::kNone;
  int status = 0;
  int64_t expires_on = 0;     // 0: no token served
  char fingerprint[17] = {};  // "": no token served
  uint64_t count = 1;
  bool overflow = false;  // events of keys the summary table had no room for
};

// Caller-controlled strings in records are cut to this many bytes.
constexpr size_t kMaxFieldBytes = 512;

// One JSON object (no newline): the file and stderr sinks' line. Callers'
// strings are JSON-escaped (control characters, quotes, invalid UTF-8
// replaced), so a hostile value cannot end the line or add a field.
std::string AuditRecordJson(const AuditRecord& r);

// The journald fields of a record, each "NAME=value" (for sd_journal_sendv):
// MESSAGE, MESSAGE_ID (one per decision, kAuditMessageId*), PRIORITY (allow 6,
// would_deny 5, deny 4) and the MI_* fields. Values are escaped like log lines
// (agent/base/text.h): no newline, no control character, valid UTF-8.
std::vector<std::string> AuditJournalFields(const AuditRecord& r);
constexpr const char* kAuditMessageIdAllow = "601c857e51094af4b16923c03187d13f";
constexpr const char* kAuditMessageIdDeny = "8306a5d9d1524a3bb498c28debe08227";
constexpr const char* kAuditMessageIdWouldDeny = "bfd9d0c78fcf428087449de45fbc0bd1";

// Where records go. Write() never blocks the loop for long; a record it cannot
// take is counted in dropped(). Loop thread only.
class AuditWriter {
 public:
  virtual ~AuditWriter() = default;
  // False when the record was dropped (counted in dropped()).
  virtual bool Write(const AuditRecord& record) = 0;
  // The file sink reopens its path (logrotate); the others do nothing.
  virtual Status Reopen() { return Status::Ok(); }
  virtual uint64_t dropped() const = 0;
};

class AuditTrail : public AuditSink, public MetricsSource {
 public:
  static constexpr size_t kMaxSummaryKeys = 10000;
  static constexpr size_t kMaxCallers = 1024;
  static constexpr size_t kTopCallers = 10;

  enum class SinkKind { kJournal, kFile, kStderr };

  // The "audit" config block (agent/app/config.cc).
  struct Options {
    bool enabled = false;                   // "enabled"
#ifdef _WIN32
    SinkKind sink = SinkKind::kFile;        // "sink": "file" | "stderr" (no journal on Windows)
#else
    SinkKind sink = SinkKind::kJournal;     // "sink": "journal" | "file" | "stderr"
#endif
    std::string path;                       // "path": the file sink's file (required for "file")
    Duration summarize = Duration(60000);   // "summarize_seconds": 0 writes every event
    int64_t max_file_bytes = 1LL << 30;     // "max_file_bytes": beyond, records are dropped until reopen
  };

  // What the writers need from the daemon; not owned, each outlives the trail.
  struct Env {
    const Clock* clock = nullptr;
    TimerFactory* timers = nullptr;
    uv_loop_s* loop = nullptr;  // the file sink's writes (uv_fs_write)
    Logger* logger = nullptr;
    // The stderr sink's line (no newline); default: written to stderr.
    std::function<void(std::string_view line)> stderr_line;
  };

  // Opens the sink when enabled; a file that cannot be opened makes status()
  // an error (start-up fails on it).
  AuditTrail(Options options, Env env);
  // Writes the summaries still open.
  ~AuditTrail() override;

  // The sink's state after the constructor or the last set_options/Reopen.
  const Status& status() const { return status_; }

  // Reload: a new sink or path opens it (on failure: logged, the old one kept,
  // returned). Open summaries are written first.
  Status set_options(Options options);
  // SIGHUP: the file sink reopens its path (after logrotate renamed it) and
  // counts size again from the new file's size.
  Status Reopen();

  // AuditSink.
  void Record(const AuditEvent& event) override;

  // Writes the summaries that have repeats now (as the window timer does).
  void Flush();

  // MetricsSource: mi_agent_authorization_decisions_total{decision,listener,dialect}
  // (after the first event), mi_agent_audit_records_total and
  // mi_agent_audit_dropped_total (when enabled).
  void WriteMetrics(MetricsWriter& out) const override;

  // /status: the callers seen (agent/health.cc shows them after the first event).
  struct CallerRow {
    bool uid_known = false;  // false: unresolved callers (and the "other" row's)
    uint32_t uid = 0;
    std::string user;
    uint64_t requests = 0;
    uint64_t denials = 0;  // deny and would_deny
  };
  bool seen_events() const { return events_ > 0; }
  // The top kTopCallers by requests or by denials (rows with none left out).
  std::vector<CallerRow> TopCallers(bool by_denials) const;
  size_t callers_tracked() const { return callers_.size(); }
  // Requests of uids beyond kMaxCallers, counted together.
  const CallerRow& other_callers() const { return other_; }

  uint64_t records() const { return records_; }
  uint64_t dropped() const;

 private:
  struct SummaryKey {
    bool uid_known;
    uint32_t uid;
    std::string identity;
    std::string resource;
    Decision decision;
    bool operator==(const SummaryKey& o) const {
      return uid_known == o.uid_known && uid == o.uid && decision == o.decision && identity == o.identity &&
             resource == o.resource;
    }
  };
  struct SummaryKeyHash {
    size_t operator()(const SummaryKey& k) const;
  };
  struct Summary {
    AuditRecord last;     // the latest repeat's fields
    uint64_t repeats = 0;  // since the last record written
    bool fresh = true;     // created in the current window: kept at its end even when idle
  };
  struct DecisionCounts {
    std::string listener;
    std::string dialect;
    uint64_t counts[3] = {};  // by Decision
  };

  std::unique_ptr<AuditWriter> MakeWriter(const Options& o, Status* status);
  void Count(const AuditEvent& event);
  void Write(const AuditRecord& record);
  void ArmWindow();

  Options options_;
  Env env_;
  Status status_;
  std::unique_ptr<AuditWriter> writer_;
  uint64_t dropped_before_ = 0;  // drops of writers replaced by set_options
  std::unique_ptr<Timer> window_;

  std::unordered_map<SummaryKey, Summary, SummaryKeyHash> summaries_;
  AuditRecord overflow_[3];  // by Decision; count 0: none
  uint64_t records_ = 0;

  uint64_t events_ = 0;
  std::vector<DecisionCounts> decisions_;  // few: listener x dialect
  std::unordered_map<uint32_t, CallerRow> callers_;
  // The rows the last event counted in (the token API's listener and dialect
  // strings are constants, so their addresses identify them; a keep-alive
  // caller repeats its uid): most events skip the searches. Row pointers stay
  // valid: decisions_ is reserved up front, callers_ never rehashes them away
  // (unordered_map nodes are stable) and rows are never erased.
  const char* last_listener_ = nullptr;
  const char* last_dialect_ = nullptr;
  DecisionCounts* last_row_ = nullptr;
  bool last_uid_known_ = false;
  uint32_t last_uid_ = 0;
  CallerRow* last_caller_ = nullptr;
  CallerRow unresolved_;  // callers whose uid is not known
  CallerRow other_;
};

// The file sink: JSON lines appended to `path` (O_APPEND | O_CLOEXEC |
// O_NOFOLLOW, created 0640), written with uv_fs_write, one write in flight and
// at most kMaxBuffered bytes waiting (beyond, records are dropped and
// counted). When the file reaches max_file_bytes further records are dropped
// and counted (one warning) until Reopen(). Exposed for tests.
class FileAuditWriter : public AuditWriter {
 public:
  static constexpr size_t kMaxBuffered = 1 << 20;
  FileAuditWriter(uv_loop_s* loop, std::string path, int64_t max_file_bytes, Logger& logger);
  ~FileAuditWriter() override;
  Status Open();
  bool Write(const AuditRecord& record) override;
  Status Reopen() override;
  uint64_t dropped() const override { return dropped_; }

 private:
  struct WriteReq;
  void StartWrite();
  void OnWritten(WriteReq* req, int64_t result);

  uv_loop_s* loop_;
  std::string path_;
  int64_t max_file_bytes_;
  Logger& logger_;
  int fd_ = -1;
  int64_t size_ = 0;       // the file's size plus what is queued for it
  std::string pending_;    // lines waiting for the write in flight
  WriteReq* in_flight_ = nullptr;
  uint64_t dropped_ = 0;
  bool warned_full_ = false;
};

}  // namespace mi
