#pragma once
// Prometheus text exposition, format 0.0.4 (what /metrics serves), and the
// interface of everything that has metrics to show. Each component declares its
// own families next to its counters (MetricsSource); the exporter only walks a
// list of sources with one MetricsWriter.
//
//   # HELP mi_agent_cache_hits_total Token requests served from the cache.
//   # TYPE mi_agent_cache_hits_total counter
//   mi_agent_cache_hits_total 42
//
// Families come out in the order they were first named, each with its HELP and
// TYPE lines once and then all its samples, whichever source wrote them (two
// listeners' connection counts form one family). Label values are escaped
// (backslash, quote, newline); names, types and help texts are the caller's
// constants and are written as given. Not thread-safe; one writer per scrape.

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/base/clock.h"

namespace mi {

class MetricsWriter {
 public:
  struct Label {
    std::string_view name;
    std::string_view value;  // escaped by the writer
  };

  // `now`: the scrape's instant, the one time every gauge is read against.
  explicit MetricsWriter(TimePoint now) : now_(now) {}
  TimePoint now() const { return now_; }

  // Makes `name` the current family; its HELP and TYPE lines are written where it
  // is first named (a later call with the same name only returns to it).
  void Family(std::string_view name, std::string_view type, std::string_view help);
  // A sample of the current family: `name` is the family's name, or for a
  // histogram its _bucket, _sum or _count series. REQUIRES: Family() was called.
  void Sample(std::string_view name, std::initializer_list<Label> labels, double value) {
    Sample(name, labels.begin(), labels.size(), value);
  }
  void Sample(std::string_view name, const Label* labels, size_t count, double value);
  void Sample(std::string_view name, double value) { Sample(name, {}, value); }
  // A family of one sample without labels.
  void One(std::string_view name, std::string_view type, std::string_view help, double value) {
    Family(name, type, help);
    Sample(name, value);
  }

  // The exposition so far; the writer is empty afterwards.
  std::string Take();

  // A sample value as the text format spells it: integers without a fraction,
  // else up to 12 significant digits; NaN, +Inf, -Inf.
  static std::string FormatValue(double value);
  static std::string EscapeLabel(std::string_view value);

 private:
  struct FamilyText {
    std::string text;  // HELP and TYPE lines, then the samples
  };

  TimePoint now_;
  std::vector<FamilyText> families_;  // in first-named order
  std::unordered_map<std::string, size_t> index_;  // name -> families_
  static constexpr size_t kNone = static_cast<size_t>(-1);
  size_t current_ = kNone;  // index into families_
};

// A Prometheus histogram over fixed bucket bounds: Observe() only counts into
// fixed arrays (no allocation, no search beyond the bounds), so it can sit on a
// hot path. The bounds are the caller's static constant, ascending, at most
// kMaxBuckets of them (the +Inf bucket is implicit). Loop thread only.
class Histogram {
 public:
  static constexpr size_t kMaxBuckets = 24;
  // Request latency in seconds, 100 µs to 25 s (mi_agent_request_duration_seconds).
  static constexpr std::array<double, 17> kLatencyBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                             1,      2.5,     5,      10,    25};

  Histogram() : Histogram(kLatencyBuckets.data(), kLatencyBuckets.size()) {}
  // REQUIRES: `bounds` outlives the histogram; count <= kMaxBuckets.
  Histogram(const double* bounds, size_t count);

  void Observe(double value);
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  size_t bucket_count() const { return bound_count_; }  // without +Inf
  // Observations <= bound i (cumulative, as exposed); i == bucket_count(): all.
  uint64_t cumulative(size_t i) const;

  // <name>_bucket{labels...,le="..."} for every bound and +Inf, then <name>_sum
  // and <name>_count with `labels` (at most 7). REQUIRES: out's current family
  // is `name`, of type histogram.
  void Write(MetricsWriter& out, std::string_view name, std::initializer_list<MetricsWriter::Label> labels) const;

 private:
  const double* bounds_;
  size_t bound_count_;
  std::array<uint64_t, kMaxBuckets + 1> counts_{};  // per bucket, not cumulative; last: above every bound
  uint64_t count_ = 0;
  double sum_ = 0;
};

// Something with metrics to show: a component writes its own mi_agent_*
// families. Loop thread only, like the counters it reads.
class MetricsSource {
 public:
  virtual ~MetricsSource() = default;
  virtual void WriteMetrics(MetricsWriter& out) const = 0;
};

}  // namespace mi
