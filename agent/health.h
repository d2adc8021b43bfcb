#pragma once
// The agent's health as the health listener shows it (SPEC §8): readiness and the
// /status document. The proxy reads it through HealthReporter; HealthModel
// builds it from the cache, the IMDS budget and the upstream latency window.
//
// /status: version, uptime, upstream, counts by state, then per identity and
// resource state, worst first (failing, degraded, refreshing, ok). Times are
// ISO-8601 UTC strings ("..._epoch": seconds). Compact JSON.
//  * The default view stays small: at most kDefaultEntries keys, and callers'
//    strings (resources, ids) longer than kShortString bytes shortened
//    ("entries_total", "entries_shown", "truncated" and "full_view" tell what
//    was left out; "<name>_bytes" a cut string's length).
//  * The full view: every key, values exact, from one snapshot, written in
//    steps (StatusBuilder) so that a big one need not hold the loop.
// Never shows a token. Loop thread only.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "agent/base/clock.h"

namespace mi {

class AuditTrail;
class TokenCache;
class UpstreamLatency;
class UpstreamScheduler;

// The full /status document under construction. The snapshot was taken when it
// was made; each Step() may run on its own loop turn.
class StatusBuilder {
 public:
  virtual ~StatusBuilder() = default;
  // The first step orders the snapshot; each later one appends entries until
  // about `budget` more bytes are written. True once the document is complete.
  virtual bool Step(size_t budget) = 0;
  // REQUIRES: Step() returned true.
  virtual std::string Take() = 0;
};

class HealthReporter {
 public:
  virtual ~HealthReporter() = default;
  // Listeners up and (if configured) the first prefetch round done; else false
  // and the reason in *why.
  virtual bool Ready(std::string* why) const = 0;
  // The process's start (epoch zero: not started yet).
  virtual TimePoint start_time() const = 0;
  // The /status document, default view, as of `now`.
  virtual std::string StatusJson(TimePoint now) const = 0;
  // The full view: a snapshot as of `now`, written by the builder's steps.
  virtual std::unique_ptr<StatusBuilder> FullStatus(TimePoint now) const = 0;
};

class HealthModel : public HealthReporter {
 public:
  // The default view: this many keys at most, callers' strings this long.
  static constexpr size_t kDefaultEntries = 50;
  static constexpr size_t kShortString = 128;

  // What /status tells of the agent itself (the daemon fills it in at start and
  // on reload).
  struct Info {
    std::string version;
    TimePoint start_time{};
    std::string config_digest;           // short hash of the effective config
    std::vector<std::string> listeners;  // token listener addresses
    std::string imds_endpoint;
    // The last reload (SIGHUP, the service's reload control): /status "reload"
    // {"result": "none"|"ok"|"failed", "time", "time_epoch", "error"}. A failed
    // one kept the running configuration; `error` says why (bounded, escaped).
    enum class ReloadResult { kNone, kOk, kFailed };
    struct Reload {
      ReloadResult result = ReloadResult::kNone;
      TimePoint time{};    // of the attempt; unset for kNone
      std::string error;   // kFailed only
    };
    Reload reload;
  };
  static const char* ReloadResultName(Info::ReloadResult r);

  // Not owned; each must outlive the model.
  HealthModel(const TokenCache& cache, const UpstreamScheduler& scheduler, const UpstreamLatency& latency);

  Info& info() { return info_; }
  const Info& info() const { return info_; }
  // Readiness: the token listeners are up; then the agent is ready (at once, or
  // after the first prefetch round).
  void set_listening() { listening_ = true; }
  void set_ready() { ready_ = true; }
  // The audit trail's per-caller counts: /status shows "callers" (the top
  // callers by requests and by denials) once it has seen an event. Not owned.
  void set_audit_trail(const AuditTrail* trail) { audit_ = trail; }
  bool ready() const { return ready_; }

  // HealthReporter.
  bool Ready(std::string* why) const override;
  TimePoint start_time() const override { return info_.start_time; }
  std::string StatusJson(TimePoint now) const override;
  std::unique_ptr<StatusBuilder> FullStatus(TimePoint now) const override;

  // The full view in one go (tests, small caches).
  std::string FullStatusJson(TimePoint now) const;

 private:
  class Doc;  // one /status document (health.cc)

  const TokenCache& cache_;
  const UpstreamScheduler& scheduler_;
  const UpstreamLatency& latency_;
  const AuditTrail* audit_ = nullptr;
  Info info_;
  bool listening_ = false;
  bool ready_ = false;
};

}  // namespace mi
