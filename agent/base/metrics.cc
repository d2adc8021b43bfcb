#include "agent/base/metrics.h"

#include <cmath>
#include <cstdio>
#include <utility>

namespace mi {

void MetricsWriter::Family(std::string_view name, std::string_view type, std::string_view help) {
  auto [it, added] = index_.emplace(std::string(name), families_.size());
  current_ = it->second;
  if (!added) return;
  families_.emplace_back();
  std::string& out = families_.back().text;
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void MetricsWriter::Sample(std::string_view name, const Label* labels, size_t count, double value) {
  if (current_ == kNone) return;  // no family: nothing to file it under
  std::string& out = families_[current_].text;
  out += name;
  if (count != 0) {
    char sep = '{';
    for (const Label* l = labels; l != labels + count; ++l) {
      out += sep;
      out += l->name;
      out += "=\"";
      out += EscapeLabel(l->value);
      out += '"';
      sep = ',';
    }
    out += '}';
  }
  out += ' ';
  out += FormatValue(value);
  out += '\n';
}

std::string MetricsWriter::Take() {
  size_t size = 0;
  for (const FamilyText& f : families_) size += f.text.size();
  std::string out;
  out.reserve(size);
  for (const FamilyText& f : families_) out += f.text;
  families_.clear();
  index_.clear();
  current_ = kNone;
  return out;
}

std::string MetricsWriter::FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[40];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.12g", v);
  }
  return buf;
}

std::string MetricsWriter::EscapeLabel(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

Histogram::Histogram(const double* bounds, size_t count)
    : bounds_(bounds), bound_count_(count < kMaxBuckets ? count : kMaxBuckets) {}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bound_count_ && !(value <= bounds_[i])) ++i;  // NaN: the +Inf bucket
  ++counts_[i];
  ++count_;
  sum_ += value;
}

uint64_t Histogram::cumulative(size_t i) const {
  uint64_t n = 0;
  for (size_t b = 0; b <= i && b <= bound_count_; ++b) n += counts_[b];
  return n;
}

void Histogram::Write(MetricsWriter& out, std::string_view name,
                      std::initializer_list<MetricsWriter::Label> labels) const {
  constexpr size_t kMaxLabels = 8;  // the caller's, then le
  std::array<MetricsWriter::Label, kMaxLabels> with_le{};
  const size_t n = labels.size() < kMaxLabels ? labels.size() : kMaxLabels - 1;
  for (size_t i = 0; i < n; ++i) with_le[i] = labels.begin()[i];
  const std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bound_count_; ++i) {
    cumulative += counts_[i];
    const std::string le = i < bound_count_ ? MetricsWriter::FormatValue(bounds_[i]) : "+Inf";
    with_le[n] = {"le", le};
    out.Sample(bucket, with_le.data(), n + 1, static_cast<double>(cumulative));
  }
  out.Sample(std::string(name) + "_sum", labels.begin(), n, sum_);
  out.Sample(std::string(name) + "_count", labels.begin(), n, static_cast<double>(count_));
}

}  // namespace mi
