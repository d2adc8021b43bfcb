#pragma once
// Internal to agent/app/config*.cc: the strict JSON object reader ParseConfig
// is built on, and the section parsers that live in their own files
// (config_access.cc: "authorization" and "audit").

#include <cmath>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/audit_trail.h"
#include "agent/authorization.h"
#include "agent/app/app_service_options.h"

namespace mi::config_internal {

using nlohmann::json;

// Reads one JSON object: each known key is taken once; whatever nobody took is
// reported as an unknown key. The first error wins and names the key path.
class Reader {
 public:
  Reader(const json& object, std::string path, std::string* error)
      : object_(object), path_(std::move(path)), error_(error) {}

  std::string Path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  bool Fail(const std::string& key, const std::string& what) {
    if (error_->empty()) *error_ = Path(key) + ": " + what;
    return false;
  }

  const json* Take(const std::string& key) {
    auto it = object_.find(key);
    if (it == object_.end()) return nullptr;
    taken_.push_back(key);
    return &*it;
  }

  void Bool(const std::string& key, bool* out) {
    if (const json* v = Take(key)) {
      if (!v->is_boolean()) Fail(key, "expected true or false");
      else *out = v->get<bool>();
    }
  }

  void String(const std::string& key, std::string* out) {
    if (const json* v = Take(key)) {
      if (!v->is_string() || v->get_ref<const std::string&>().empty()) Fail(key, "expected a non-empty string");
      else *out = v->get<std::string>();
    }
  }

  template <typename Int>
  void Integer(const std::string& key, Int* out, int64_t min, int64_t max) {
    if (const json* v = Take(key)) {
      if (!v->is_number_integer() || (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(max)) ||
          v->get<int64_t>() < min || v->get<int64_t>() > max) {
        Fail(key, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
      } else {
        *out = static_cast<Int>(v->get<int64_t>());
      }
    }
  }

  void Number(const std::string& key, double* out, double min, double max) {
    if (std::optional<double> d = NumberIn(key, min, max)) *out = *d;
  }

  // "<name>_seconds": seconds, fractions allowed (tests scale time down).
  void Seconds(const std::string& key, Duration* out, double min, double max) {
    if (std::optional<double> s = NumberIn(key, min, max)) {
      *out = Duration(static_cast<int64_t>(std::llround(*s * 1000)));
    }
  }

  // A nested object read by `read` with its own Reader (keys named
  // "<key>.<name>"), then checked for unknown keys. Nothing when absent.
  void Section(const std::string& key, const std::function<void(Reader&)>& read) {
    if (const json* o = Object(key)) {
      Reader s(*o, Path(key), error_);
      read(s);
      s.Finish();
    }
  }

  // Returns the nested object (or null when absent or not an object).
  const json* Object(const std::string& key) {
    const json* v = Take(key);
    if (v != nullptr && !v->is_object()) {
      Fail(key, "expected an object");
      return nullptr;
    }
    return v;
  }

  const json* Array(const std::string& key) {
    const json* v = Take(key);
    if (v != nullptr && !v->is_array()) {
      Fail(key, "expected an array");
      return nullptr;
    }
    return v;
  }

  void Finish() {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      bool taken = false;
      for (const auto& k : taken_) taken = taken || k == it.key();
      if (!taken) Fail(it.key(), "unknown key");
    }
  }

 private:
  // The value of `key` when it is a number within [min, max]; else nothing
  // (and an error when the key is there).
  std::optional<double> NumberIn(const std::string& key, double min, double max) {
    const json* v = Take(key);
    if (v == nullptr) return std::nullopt;
    const double d = v->is_number() ? v->get<double>() : NAN;
    if (!std::isfinite(d) || d < min || d > max) {
      std::ostringstream m;
      m << "expected a number from " << min << " to " << max;
      Fail(key, m.str());
      return std::nullopt;
    }
    return d;
  }

  const json& object_;
  std::string path_;
  std::string* error_;
  std::vector<std::string> taken_;
};

// "authorization" (config_access.cc): the first error goes to *error (naming
// the key); *out is replaced only when there is none.
void ParseAuthorization(Reader& top, std::string* error, AuthorizationOptions* out);
// "audit" (config_access.cc), the same way.
void ParseAudit(Reader& r, std::string* error, AuditTrail::Options* out);
// "dialects" (config_dialects.cc): "app_service": {"enabled", "secret_file"};
// with enabled, the secret is read into *secret (an error names the file).
void ParseDialects(Reader& r, std::string* error, AppServiceOptions* out, std::string* secret);

}  // namespace mi::config_internal
