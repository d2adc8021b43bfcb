#pragma once
// The daemon's own /metrics families: the build and the process start
// (ProcessMetrics), and each listener's connection counters (ListenerMetrics,
// read from the HTTP server's public stats, labelled by listener: the token
// and the health listener's samples form one family each). Loop thread only.

#include <string>
#include <utility>

#include "agent/base/clock.h"
#include "agent/base/metrics.h"
#include "agent/health.h"
#include "proxy/http/http_server.h"

namespace mi {

class ProcessMetrics : public MetricsSource {
 public:
  ProcessMetrics(std::string version, TimePoint start_time)
      : version_(std::move(version)), start_time_(start_time) {}
  void set_start_time(TimePoint t) { start_time_ = t; }
  void WriteMetrics(MetricsWriter& out) const override;

 private:
  std::string version_;
  TimePoint start_time_;
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
