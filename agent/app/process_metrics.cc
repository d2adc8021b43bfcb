#include "agent/app/process_metrics.h"

#include <cstdint>

#include "agent/app/build_revision.h"  // generated: MI_BUILD_REVISION

#ifdef _WIN32
// clang-format off
#include <winsock2.h>
#include <windows.h>
#include <psapi.h>
// clang-format on
#else
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace mi {

const char* BuildRevision() { return MI_BUILD_REVISION; }

bool ParseProcStat(std::string_view stat, long ticks_per_second, long page_size, ProcessStats* out) {
  const size_t paren = stat.rfind(')');
  if (paren == std::string_view::npos || ticks_per_second <= 0 || page_size <= 0) return false;
  // Fields 3 (state) onwards; we need 14 utime, 15 stime, 23 vsize, 24 rss.
  constexpr int kUtime = 14, kStime = 15, kVsize = 23, kRss = 24;
  double utime = -1, stime = -1, vsize = -1, rss = -1;
  size_t i = paren + 1;
  for (int field = 3; field <= kRss; ++field) {
    while (i < stat.size() && stat[i] == ' ') ++i;
    const size_t begin = i;
    while (i < stat.size() && stat[i] != ' ' && stat[i] != '\n') ++i;
    if (i == begin) return false;  // the line ended early
    if (field != kUtime && field != kStime && field != kVsize && field != kRss) continue;
    double value = 0;
    for (size_t k = begin; k < i; ++k) {
      if (stat[k] < '0' || stat[k] > '9') return false;  // these four are unsigned
      value = value * 10 + (stat[k] - '0');
    }
    if (field == kUtime) utime = value;
    else if (field == kStime) stime = value;
    else if (field == kVsize) vsize = value;
    else rss = value;
  }
  out->cpu_seconds = (utime + stime) / static_cast<double>(ticks_per_second);
  out->virtual_bytes = vsize;
  out->resident_bytes = rss * static_cast<double>(page_size);
  return true;
}

#ifdef _WIN32

void ReadProcessStats(ProcessStats* out) {
  HANDLE self = GetCurrentProcess();
  PROCESS_MEMORY_COUNTERS_EX memory{};
  // A running process never has 0 of these: 0 is a value the platform does not
  // keep (Wine reports 0 private bytes and 0 handles), so it stays unknown.
  if (GetProcessMemoryInfo(self, reinterpret_cast<PROCESS_MEMORY_COUNTERS*>(&memory), sizeof memory)) {
    if (memory.WorkingSetSize > 0) out->resident_bytes = static_cast<double>(memory.WorkingSetSize);
    if (memory.PrivateUsage > 0) out->virtual_bytes = static_cast<double>(memory.PrivateUsage);
  }
  FILETIME created, exited, kernel, user;
  if (GetProcessTimes(self, &created, &exited, &kernel, &user)) {
    const auto ticks = [](const FILETIME& t) {  // 100 ns units
      return static_cast<double>((static_cast<uint64_t>(t.dwHighDateTime) << 32) | t.dwLowDateTime);
    };
    out->cpu_seconds = (ticks(kernel) + ticks(user)) / 1e7;
  }
  DWORD handles = 0;
  if (GetProcessHandleCount(self, &handles) && handles > 0) out->open_fds = static_cast<double>(handles);
}

#else

void ReadProcessStats(ProcessStats* out) {
  const int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[1024];  // about 300 bytes: a 16-byte name and 50 numbers
    const ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n > 0) {
      ParseProcStat(std::string_view(buf, static_cast<size_t>(n)), sysconf(_SC_CLK_TCK), sysconf(_SC_PAGESIZE), out);
    }
  }
  if (DIR* dir = opendir("/proc/self/fd")) {
    double entries = 0;
    while (const dirent* e = readdir(dir)) {
      if (e->d_name[0] != '.') ++entries;
    }
    closedir(dir);
    out->open_fds = entries - 1;  // not the one that listed them
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    out->max_fds = static_cast<double>(limit.rlim_cur);
  }
}

#endif

void ProcessMetrics::WriteMetrics(MetricsWriter& w) const {
  w.Family("mi_agent_build_info", "gauge", "Build information; the value is always 1.");
  w.Sample("mi_agent_build_info", {{"version", version_}, {"revision", revision_}}, 1);
  if (readiness_ != nullptr) {
    std::string why;
    w.One("mi_agent_ready", "gauge", "1 when the agent is ready (as /readyz answers 200), else 0.",
          readiness_->Ready(&why) ? 1 : 0);
  }
  const double start = static_cast<double>(ToEpochSeconds(start_time_));
  // The name dashboards used before process_start_time_seconds; the same value.
  w.One("mi_agent_process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.",
        start);
  w.One("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", start);
  ProcessStats st;
  stats_(&st);
  const auto one = [&](const char* name, const char* type, const char* help, double value) {
    if (value >= 0) w.One(name, type, help, value);
  };
  one("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", st.cpu_seconds);
  one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", st.resident_bytes);
  one("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", st.virtual_bytes);
  one("process_open_fds", "gauge", "Number of open file descriptors.", st.open_fds);
  one("process_max_fds", "gauge", "Maximum number of open file descriptors.", st.max_fds);
}

void ReloadMetrics::WriteMetrics(MetricsWriter& w) const {
  const HealthModel::Info::Reload& r = info_.reload;
  w.One("mi_agent_config_reload_success", "gauge",
        "1 if the last configuration reload succeeded (or none happened), 0 if it failed.",
        r.result == HealthModel::Info::ReloadResult::kFailed ? 0 : 1);
  w.One("mi_agent_config_reload_timestamp_seconds", "gauge",
        "Time of the last configuration reload attempt since the Unix epoch in seconds (0: none).",
        r.result == HealthModel::Info::ReloadResult::kNone ? 0.0 : static_cast<double>(ToEpochSeconds(r.time)));
}

void ListenerMetrics::WriteMetrics(MetricsWriter& w) const {
  const proxy::ServerStats& st = server_.stats();
  const auto family = [&](const char* name, const char* type, const char* help, double value) {
    w.Family(name, type, help);
    w.Sample(name, {{"listener", listener_}}, value);
  };
  family("mi_agent_open_connections", "gauge", "Open client connections, by listener.",
         static_cast<double>(st.open_connections));
  family("mi_agent_connections_accepted_total", "counter", "Client connections accepted, by listener.",
         static_cast<double>(st.accepted));
  family("mi_agent_connections_rejected_total", "counter",
         "Client connections refused at the connection limit (503), by listener.",
         static_cast<double>(st.rejected_over_limit));
  family("mi_agent_connections_timed_out_total", "counter",
         "Client connections closed by the header or idle timeout, by listener.", static_cast<double>(st.timed_out));
  family("mi_agent_http_protocol_errors_total", "counter",
         "Requests refused as malformed or too large (400, 413, 431, 505), by listener.",
         static_cast<double>(st.protocol_errors));
}

}  // namespace mi
