#include "agent/upstream_latency.h"

#include <algorithm>

namespace mi {

void UpstreamLatency::Observe(Duration latency) {
  if (window_.size() < kWindow) {
    window_.push_back(latency);
  } else {
    window_[next_] = latency;
    next_ = (next_ + 1) % kWindow;
  }
  const double seconds = static_cast<double>(latency.count()) / 1000.0;
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++buckets_[i];
      break;
    }
  }
  ++count_;
  sum_seconds_ += seconds;
}

double UpstreamLatency::PercentileMs(double p) const {
  if (window_.empty()) return 0;
  std::vector<Duration> sorted = window_;
  std::sort(sorted.begin(), sorted.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[std::min(rank, sorted.size() - 1)].count());
}

void UpstreamLatency::WriteMetrics(MetricsWriter& w) const {
  w.Family("mi_agent_upstream_latency_seconds", "histogram", "IMDS request latency in seconds.");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    cumulative += buckets_[i];
    w.Sample("mi_agent_upstream_latency_seconds_bucket", {{"le", MetricsWriter::FormatValue(kBuckets[i])}},
             static_cast<double>(cumulative));
  }
  w.Sample("mi_agent_upstream_latency_seconds_bucket", {{"le", "+Inf"}}, static_cast<double>(count_));
  w.Sample("mi_agent_upstream_latency_seconds_sum", sum_seconds_);
  w.Sample("mi_agent_upstream_latency_seconds_count", static_cast<double>(count_));
}

}  // namespace mi
