#pragma once
// The daemon's own /metrics families: the build, readiness and the process
// (ProcessMetrics), and each listener's connection counters (ListenerMetrics,
// read from the HTTP server's public stats, labelled by listener: the token
// and the health listener's samples form one family each). Loop thread only.
//
// The process families follow the Prometheus client conventions
// (process_cpu_seconds_total, process_resident_memory_bytes, ...), read when
// /metrics is scraped: on Linux one read of /proc/self/stat, a count of
// /proc/self/fd and getrlimit (procfs answers from memory: bounded, never
// blocks on a disk); on Windows GetProcessMemoryInfo, GetProcessTimes and
// GetProcessHandleCount (no process_max_fds there). A family the platform
// cannot read is left out.

#include <string>
#include <string_view>
#include <utility>

#include "agent/base/clock.h"
#include "agent/base/metrics.h"
#include "agent/health.h"
#include "proxy/http/http_server.h"

namespace mi {

// What the process families show; a value < 0 is unknown (its family is left out).
struct ProcessStats {
  double cpu_seconds = -1;     // user + system
  double resident_bytes = -1;  // resident set (Windows: working set)
  double virtual_bytes = -1;   // address space (Windows: private bytes)
  double open_fds = -1;        // Windows: open handles
  double max_fds = -1;         // the soft RLIMIT_NOFILE
};

// Fills cpu_seconds, virtual_bytes and resident_bytes from the text of
// /proc/<pid>/stat (proc(5): utime and stime in clock ticks, vsize in bytes,
// rss in pages). The command name may hold spaces and parentheses: fields are
// counted after its last ')'. False (nothing set) for text that is not such a line.
bool ParseProcStat(std::string_view stat, long ticks_per_second, long page_size, ProcessStats* out);

// This process, now (see the header comment).
void ReadProcessStats(ProcessStats* out);

// The git revision the build was configured from (git rev-parse --short HEAD),
// "unknown" outside a git checkout.
const char* BuildRevision();

class ProcessMetrics : public MetricsSource {
 public:
  using StatsReader = void (*)(ProcessStats*);

  // `readiness`: mi_agent_ready (as /readyz), null: no such family. Not owned.
  ProcessMetrics(std::string version, std::string revision, TimePoint start_time,
                 const HealthReporter* readiness = nullptr, StatsReader stats = &ReadProcessStats)
      : version_(std::move(version)),
        revision_(std::move(revision)),
        start_time_(start_time),
        readiness_(readiness),
        stats_(stats) {}
  void set_start_time(TimePoint t) { start_time_ = t; }
  void WriteMetrics(MetricsWriter& out) const override;

 private:
  std::string version_;
  std::string revision_;
  TimePoint start_time_;
  const HealthReporter* readiness_;
  StatsReader stats_;
};

// The last configuration reload, from HealthModel::Info::reload:
// mi_agent_config_reload_success (1 after a good reload or none, 0 after a
// failed one) and mi_agent_config_reload_timestamp_seconds (0: none yet).
class ReloadMetrics : public MetricsSource {
 public:
  explicit ReloadMetrics(const HealthModel::Info& info) : info_(info) {}  // not owned
  void WriteMetrics(MetricsWriter& out) const override;

 private:
  const HealthModel::Info& info_;
};

class ListenerMetrics : public MetricsSource {
 public:
  // `listener`: the label value ("token", "health"). Neither is owned.
  ListenerMetrics(const char* listener, const proxy::HttpServer& server) : listener_(listener), server_(server) {}
  void WriteMetrics(MetricsWriter& out) const override;

 private:
  const char* listener_;
  const proxy::HttpServer& server_;
};

}  // namespace mi
