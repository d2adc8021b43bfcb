#include "agent/app/process_metrics.h"

namespace mi {

void ProcessMetrics::WriteMetrics(MetricsWriter& w) const {
  w.Family("mi_agent_build_info", "gauge", "Build information; the value is always 1.");
  w.Sample("mi_agent_build_info", {{"version", version_}}, 1);
  w.One("mi_agent_process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.",
        static_cast<double>(ToEpochSeconds(start_time_)));
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
