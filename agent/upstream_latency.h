#pragma once
// Upstream latency: a window of recent samples for p50/p99 in /status, and a
// cumulative histogram for /metrics. Loop thread only.

#include <array>
#include <cstdint>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/metrics.h"

namespace mi {

class UpstreamLatency : public MetricsSource {
 public:
  // Histogram bucket upper bounds, seconds (Prometheus "le").
  static constexpr std::array<double, 12> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,   0.25,   0.5,   1,    2.5,   10};

  void Observe(Duration latency);
  // Percentile (0..100) over the recent window, in milliseconds; 0 when empty.
  double PercentileMs(double p) const;
  size_t window_size() const { return window_.size(); }

  const std::array<uint64_t, kBuckets.size()>& bucket_counts() const { return buckets_; }  // non-cumulative
  uint64_t count() const { return count_; }
  double sum_seconds() const { return sum_seconds_; }
  // MetricsSource: the histogram, mi_agent_upstream_latency_seconds.
  void WriteMetrics(MetricsWriter& out) const override;

 private:
  static constexpr size_t kWindow = 256;
  std::vector<Duration> window_;  // ring buffer
  size_t next_ = 0;
  std::array<uint64_t, kBuckets.size()> buckets_{};
  uint64_t count_ = 0;
  double sum_seconds_ = 0;
};

}  // namespace mi
