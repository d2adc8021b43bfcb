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
  void Sample(std::string_view name, std::initializer_list<Label> labels, double value);
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

// Something with metrics to show: a component writes its own mi_agent_*
// families. Loop thread only, like the counters it reads.
class MetricsSource {
 public:
  virtual ~MetricsSource() = default;
  virtual void WriteMetrics(MetricsWriter& out) const = 0;
};

}  // namespace mi
