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

void MetricsWriter::Sample(std::string_view name, std::initializer_list<Label> labels, double value) {
  if (current_ == kNone) return;  // no family: nothing to file it under
  std::string& out = families_[current_].text;
  out += name;
  if (labels.size() != 0) {
    char sep = '{';
    for (const Label& l : labels) {
      out += sep;
      out += l.name;
      out += "=\"";
      out += EscapeLabel(l.value);
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

}  // namespace mi
