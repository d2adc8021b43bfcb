#include "tests/emulator/emulator.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

#include "agent/base/ascii.h"
#include "agent/base/fnv.h"
#include "agent/base/text.h"

namespace mi::emulator {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

const char kDefaultTenantId[] = "8f3e2d1c-0b9a-4e7f-a6d5-c4b3a2918070";

namespace {

constexpr char kTokenPath[] = "/metadata/identity/oauth2/token";
constexpr char kSubscription[] = "d3b5f7a9-0c2e-4a6b-8d1f-3e5a7c9b1d2f";
constexpr char kKeyId[] = "emulator-signing-key-1";
constexpr size_t kMaxLog = 100000;
constexpr size_t kMaxIssued = 100000;
constexpr Duration kSweepInterval(200);
constexpr size_t kSignatureBytes = 256;  // RS256 with a 2048-bit key

// Strings from the command line, an admin body or a request may hold any bytes:
// invalid UTF-8 is replaced, never thrown on (the emulator must not abort).
template <typename Json>
std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::string GuidFromHash(uint64_t seed) {
  uint64_t state = seed;
  uint64_t a = SplitMix64(&state), b = SplitMix64(&state);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>(0x8000 | ((b >> 48) & 0x3fff)),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

int64_t EpochMs(TimePoint t) { return t.time_since_epoch().count(); }

std::string ErrorJson(std::string_view error, std::string_view description) {
  ojson j;
  j["error"] = error;
  j["error_description"] = description;
  return Dump(j);
}

proxy::HttpResponse JsonResponse(int status, std::string body) {
  proxy::HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

proxy::HttpResponse Error(int status, std::string_view error, std::string_view description) {
  return JsonResponse(status, ErrorJson(error, description));
}

std::string DefaultErrorBody(int status) {
  switch (status) {
    case 400: return ErrorJson("invalid_request", "Bad request");
    case 403: return ErrorJson("forbidden", "Forbidden");
    case 404: return ErrorJson("not_found", "The identity endpoint is being updated, retry later");
    case 410: return ErrorJson("gone", "The identity endpoint is being upgraded, retry later");
    case 429: return ErrorJson("too_many_requests", "Too many requests");
    case 500: return ErrorJson("unknown_error", "Internal server error");
    case 502: return ErrorJson("bad_gateway", "Bad gateway");
    case 503: return ErrorJson("service_unavailable", "Service unavailable");
    case 504: return ErrorJson("gateway_timeout", "Gateway timeout");
    default: return ErrorJson("error_" + std::to_string(status), "Emulated fault");
  }
}

const std::string* FindHeader(const proxy::HttpRequest& request, std::string_view lower_name) {
  for (const auto& [name, value] : request.headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

// Parses a JSON object body; an empty body is an empty object.
bool ParseObject(std::string_view text, json* out, std::string* error) {
  bool blank = std::all_of(text.begin(), text.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
  if (blank) {
    *out = json::object();
    return true;
  }
  *out = json::parse(text.begin(), text.end(), nullptr, false);
  if (out->is_discarded()) {
    *error = "body is not valid JSON";
    return false;
  }
  if (!out->is_object()) {
    *error = "body must be a JSON object";
    return false;
  }
  return true;
}

bool GetInt(const json& j, const char* key, int64_t min, int64_t max, int64_t* out, std::string* error) {
  const json& v = j.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < min || v.get<int64_t>() > max) {
    *error = std::string("\"") + key + "\" must be an integer in [" + std::to_string(min) + ", " +
             std::to_string(max) + "]";
    return false;
  }
  *out = v.get<int64_t>();
  return true;
}

bool GetTrue(const json& j, const char* key, std::string* error) {
  if (!j.at(key).is_boolean()) {
    *error = std::string("\"") + key + "\" must be a boolean";
    return false;
  }
  return true;
}

bool CheckKeys(const json& j, std::initializer_list<const char*> allowed, const char* what, std::string* error) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    if (!ok) {
      *error = std::string("unknown field \"") + it.key() + "\" in " + what;
      return false;
    }
  }
  return true;
}

bool ParseMatch(const json& j, Match* out, std::string* error) {
  if (!j.is_object()) {
    *error = "\"match\" must be an object";
    return false;
  }
  if (!CheckKeys(j, {"resource", "client_id", "object_id", "mi_res_id", "msi_res_id", "default"}, "match", error))
    return false;
  Match m;
  int selectors = 0;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "default") {
      if (!GetTrue(j, "default", error)) return false;
      m.require_default = it->get<bool>();
      continue;
    }
    if (!it->is_string()) {
      *error = "match \"" + key + "\" must be a string";
      return false;
    }
    if (key == "resource") {
      m.resource = it->get<std::string>();
    } else {
      ++selectors;
      m.selector_param = key == "msi_res_id" ? "mi_res_id" : key;
      m.selector_value = ToLower(it->get<std::string>());
    }
  }
  if (selectors > 1 || (selectors == 1 && m.require_default)) {
    *error = "match names more than one identity selector";
    return false;
  }
  *out = std::move(m);
  return true;
}

void MatchToJson(const Match& m, ojson* out) {
  ojson j = ojson::object();
  if (m.resource) j["resource"] = *m.resource;
  if (!m.selector_param.empty()) j[m.selector_param] = m.selector_value;
  if (m.require_default) j["default"] = true;
  *out = std::move(j);
}

// "body" (object/array → serialised, string → as is) and "retry_after".
bool ParseBodyAndRetryAfter(const json& j, std::string* body, std::string* retry_after, std::string* error) {
  if (j.contains("body")) {
    const json& b = j.at("body");
    *body = b.is_string() ? b.get<std::string>() : Dump(b);
  }
  if (j.contains("retry_after")) {
    const json& r = j.at("retry_after");
    if (r.is_string()) {
      *retry_after = r.get<std::string>();
    } else if (r.is_number_integer()) {
      *retry_after = std::to_string(r.get<int64_t>());
    } else {
      *error = "\"retry_after\" must be a string or an integer";
      return false;
    }
  }
  return true;
}

bool ParseMode(const json& j, FaultMode* out, std::string* error) {
  if (!j.is_object()) {
    *error = "\"mode\" must be an object or null";
    return false;
  }
  if (!CheckKeys(j, {"kind", "mode", "status", "body", "retry_after", "until_ms", "duration_ms", "match"}, "mode",
                 error))
    return false;
  FaultMode m;
  const char* kind_key = j.contains("kind") ? "kind" : "mode";
  if (!j.contains(kind_key) || !j.at(kind_key).is_string()) {
    *error = "mode needs \"kind\": \"fail_all\" or \"gone\"";
    return false;
  }
  std::string kind = j.at(kind_key).get<std::string>();
  if (kind == "fail_all") {
    m.kind = FaultMode::Kind::kFailAll;
    m.status = 500;
    if (j.contains("status")) {
      int64_t s;
      if (!GetInt(j, "status", 100, 599, &s, error)) return false;
      m.status = static_cast<int>(s);
    }
  } else if (kind == "gone") {
    m.kind = FaultMode::Kind::kGone;
    m.status = 410;
    if (j.contains("status")) {
      *error = "mode \"gone\" always answers 410; use fail_all for another status";
      return false;
    }
  } else {
    *error = "unknown mode kind \"" + kind + "\" (fail_all, gone)";
    return false;
  }
  if (!ParseBodyAndRetryAfter(j, &m.body, &m.retry_after, error)) return false;
  int64_t v;
  if (j.contains("until_ms")) {
    if (!GetInt(j, "until_ms", 0, INT64_MAX, &v, error)) return false;
    m.until = TimePoint(Duration(v));
  }
  if (j.contains("duration_ms")) {
    if (!GetInt(j, "duration_ms", 0, INT64_MAX / 2, &v, error)) return false;
    m.duration = Duration(v);
  }
  if (j.contains("match")) {
    Match match;
    if (!ParseMatch(j.at("match"), &match, error)) return false;
    m.match = std::move(match);
  }
  *out = std::move(m);
  return true;
}

bool ParseStep(const json& j, FaultStep* out, std::string* error) {
  if (!j.is_object()) {
    *error = "a step must be an object";
    return false;
  }
  if (!CheckKeys(j, {"count", "match", "delay_ms", "status", "body", "retry_after", "hang", "reset", "malformed",
                     "oversized_bytes", "missing_expires_on"},
                 "step", error))
    return false;
  FaultStep step;
  int64_t v;
  if (j.contains("count")) {
    if (!GetInt(j, "count", 1, INT32_MAX, &v, error)) return false;
    step.count = static_cast<int>(v);
  }
  if (j.contains("delay_ms")) {
    if (!GetInt(j, "delay_ms", 0, INT64_MAX / 2, &v, error)) return false;
    step.delay = Duration(v);
  }
  if (j.contains("match")) {
    Match match;
    if (!ParseMatch(j.at("match"), &match, error)) return false;
    step.match = std::move(match);
  }
  int actions = 0;
  FaultAction& a = step.action;
  if (j.contains("status")) {
    ++actions;
    if (!GetInt(j, "status", 100, 599, &v, error)) return false;
    a.status = static_cast<int>(v);
    a.kind = a.status == 200 ? FaultAction::Kind::kNormal : FaultAction::Kind::kStatus;
    if (!ParseBodyAndRetryAfter(j, &a.body, &a.retry_after, error)) return false;
  } else if (j.contains("body") || j.contains("retry_after")) {
    *error = "\"body\" and \"retry_after\" need \"status\"";
    return false;
  }
  for (auto [key, kind] : {std::pair{"hang", FaultAction::Kind::kHang}, std::pair{"reset", FaultAction::Kind::kReset},
                           std::pair{"malformed", FaultAction::Kind::kMalformed},
                           std::pair{"missing_expires_on", FaultAction::Kind::kMissingExpiresOn}}) {
    if (!j.contains(key)) continue;
    if (!GetTrue(j, key, error)) return false;
    if (!j.at(key).get<bool>()) continue;
    ++actions;
    a.kind = kind;
  }
  if (j.contains("oversized_bytes")) {
    ++actions;
    if (!GetInt(j, "oversized_bytes", 0, 1 << 30, &v, error)) return false;
    a.kind = FaultAction::Kind::kOversized;
    a.oversized_bytes = static_cast<size_t>(v);
  }
  if (actions > 1) {
    *error = "a step has at most one action (status, hang, reset, malformed, oversized_bytes, missing_expires_on)";
    return false;
  }
  *out = std::move(step);
  return true;
}

bool ParseIdentity(const json& j, Identity* out, bool need_client_id, std::string* error) {
  if (!j.is_object()) {
    *error = "an identity must be an object";
    return false;
  }
  if (!CheckKeys(j, {"client_id", "object_id", "mi_res_id"}, "identity", error)) return false;
  std::string f[3];
  const char* keys[3] = {"client_id", "object_id", "mi_res_id"};
  for (int i = 0; i < 3; ++i) {
    if (!j.contains(keys[i])) continue;
    if (!j.at(keys[i]).is_string()) {
      *error = std::string("identity \"") + keys[i] + "\" must be a string";
      return false;
    }
    f[i] = j.at(keys[i]).get<std::string>();
  }
  if (need_client_id && f[0].empty()) {
    *error = "a user-assigned identity needs \"client_id\"";
    return false;
  }
  Identity id;
  id.client_id = f[0];
  id.object_id = f[1];
  id.mi_res_id = f[2];
  *out = std::move(id);
  return true;
}

void IdentityToJson(const Identity& id, ojson* out) {
  ojson j;
  j["client_id"] = id.client_id;
  j["object_id"] = id.object_id;
  j["mi_res_id"] = id.mi_res_id;
  *out = std::move(j);
}

void SetRetryAfter(const std::string& value, proxy::HttpResponse* r) {
  if (!value.empty()) r->headers.emplace_back("Retry-After", value);
}

}  // namespace

// ---------------------------------------------------------------------------
// Helpers

std::string Base64UrlEncode(std::string_view bytes) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                 static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    if (rest == 2) out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

bool Base64UrlDecode(std::string_view text, std::string* out) {
  out->clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '-') v = 62;
    else if (c == '_') v = 63;
    else return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return bits < 6;  // a lone trailing sextet is not valid base64
}

std::string PercentDecode(std::string_view text) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Identities

IdentitySet DefaultIdentities() {
  IdentitySet set;
  set.system_assigned = true;
  set.system.client_id = "9b7c3f5e-2d1a-4e8b-b6f0-3a5c7d9e1f20";
  set.system.object_id = "4f2d8a6c-1b3e-4d5f-a7c9-0e2b4d6f8a1c";
  set.system.mi_res_id = std::string("/subscriptions/") + kSubscription +
                         "/resourceGroups/emulator-rg/providers/Microsoft.Compute/virtualMachines/emulator-vm";
  return set;
}

Identity DeriveUserAssigned(std::string client_id, std::string object_id, std::string mi_res_id) {
  Identity id;
  std::string lower = ToLower(client_id);
  if (object_id.empty()) object_id = GuidFromHash(Fnv1a64(lower));
  if (mi_res_id.empty()) {
    std::string name = lower.substr(0, 8);
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '-';
    }
    mi_res_id = std::string("/subscriptions/") + kSubscription +
                "/resourceGroups/emulator-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua-" + name;
  }
  id.client_id = std::move(client_id);
  id.object_id = std::move(object_id);
  id.mi_res_id = std::move(mi_res_id);
  return id;
}

Status ParseIdentities(std::string_view json_text, IdentitySet* out) {
  json j;
  std::string error;
  if (!ParseObject(json_text, &j, &error)) return Status::Error("identities: " + error);
  if (!CheckKeys(j, {"system_assigned", "user_assigned"}, "identities", &error))
    return Status::Error("identities: " + error);
  IdentitySet set = DefaultIdentities();
  if (j.contains("system_assigned")) {
    const json& sa = j.at("system_assigned");
    if (sa.is_boolean()) {
      set.system_assigned = sa.get<bool>();
    } else if (sa.is_object()) {
      Identity id;
      if (!ParseIdentity(sa, &id, false, &error)) return Status::Error("identities: system_assigned: " + error);
      if (!id.client_id.empty()) set.system.client_id = id.client_id;
      if (!id.object_id.empty()) set.system.object_id = id.object_id;
      if (!id.mi_res_id.empty()) set.system.mi_res_id = id.mi_res_id;
    } else {
      return Status::Error("identities: \"system_assigned\" must be a boolean or an object");
    }
  }
  if (j.contains("user_assigned")) {
    const json& ua = j.at("user_assigned");
    if (!ua.is_array()) return Status::Error("identities: \"user_assigned\" must be an array");
    for (const json& e : ua) {
      Identity id;
      if (!ParseIdentity(e, &id, true, &error)) return Status::Error("identities: user_assigned: " + error);
      set.user_assigned.push_back(DeriveUserAssigned(id.client_id, id.object_id, id.mi_res_id));
    }
  }
  Status valid = ValidateIdentities(set);
  if (!valid.ok()) return valid;
  *out = std::move(set);
  return Status::Ok();
}

Status ValidateIdentities(const IdentitySet& set) {
  // Two identities with one id would make a selector ambiguous.
  std::vector<const Identity*> all;
  if (set.system_assigned) all.push_back(&set.system);
  for (const Identity& id : set.user_assigned) all.push_back(&id);
  for (size_t a = 0; a < all.size(); ++a) {
    for (size_t b = a + 1; b < all.size(); ++b) {
      if (EqualsIgnoreCase(all[a]->client_id, all[b]->client_id) || EqualsIgnoreCase(all[a]->object_id, all[b]->object_id) ||
          EqualsIgnoreCase(all[a]->mi_res_id, all[b]->mi_res_id)) {
        return Status::Error("identities: two identities share an id (" + all[b]->client_id + ")");
      }
    }
  }
  return Status::Ok();
}

std::string IdentitiesToJson(const IdentitySet& set) {
  ojson j;
  if (set.system_assigned) {
    IdentityToJson(set.system, &j["system_assigned"]);
  } else {
    j["system_assigned"] = false;
  }
  j["user_assigned"] = ojson::array();
  for (const Identity& id : set.user_assigned) {
    ojson e;
    IdentityToJson(id, &e);
    j["user_assigned"].push_back(std::move(e));
  }
  return Dump(j);
}

// ---------------------------------------------------------------------------
// Fault scripts

Status ParseFaultScript(std::string_view json_text, FaultScript* out) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (j.is_discarded()) return Status::Error("faults: body is not valid JSON");
  if (j.is_array()) j = json{{"steps", j}};
  if (!j.is_object()) return Status::Error("faults: expected {\"steps\":[...],\"mode\":{...}}");
  std::string error;
  if (!CheckKeys(j, {"steps", "mode"}, "fault script", &error)) return Status::Error("faults: " + error);
  FaultScript script;
  if (j.contains("steps")) {
    const json& steps = j.at("steps");
    if (!steps.is_array()) return Status::Error("faults: \"steps\" must be an array");
    for (size_t i = 0; i < steps.size(); ++i) {
      const json& s = steps[i];
      if (s.is_object() && s.contains("mode")) {
        FaultMode mode;
        if (!ParseMode(s, &mode, &error)) return Status::Error("faults: steps[" + std::to_string(i) + "]: " + error);
        script.mode = std::move(mode);
        continue;
      }
      FaultStep step;
      if (!ParseStep(s, &step, &error)) return Status::Error("faults: steps[" + std::to_string(i) + "]: " + error);
      script.steps.push_back(std::move(step));
    }
  }
  if (j.contains("mode") && !j.at("mode").is_null()) {
    FaultMode mode;
    if (!ParseMode(j.at("mode"), &mode, &error)) return Status::Error("faults: mode: " + error);
    script.mode = std::move(mode);
  }
  *out = std::move(script);
  return Status::Ok();
}

std::string FaultScriptToJson(const FaultScript& script) {
  ojson j;
  j["steps"] = ojson::array();
  for (const FaultStep& s : script.steps) {
    ojson e;
    e["count"] = s.count;
    if (s.match) MatchToJson(*s.match, &e["match"]);
    if (s.delay) e["delay_ms"] = s.delay->count();
    const FaultAction& a = s.action;
    switch (a.kind) {
      case FaultAction::Kind::kNormal:
        if (a.status == 200) e["status"] = 200;
        break;
      case FaultAction::Kind::kStatus:
        e["status"] = a.status;
        if (!a.body.empty()) e["body"] = a.body;
        if (!a.retry_after.empty()) e["retry_after"] = a.retry_after;
        break;
      case FaultAction::Kind::kHang: e["hang"] = true; break;
      case FaultAction::Kind::kReset: e["reset"] = true; break;
      case FaultAction::Kind::kMalformed: e["malformed"] = true; break;
      case FaultAction::Kind::kOversized: e["oversized_bytes"] = a.oversized_bytes; break;
      case FaultAction::Kind::kMissingExpiresOn: e["missing_expires_on"] = true; break;
    }
    j["steps"].push_back(std::move(e));
  }
  if (script.mode) {
    const FaultMode& m = *script.mode;
    ojson e;
    e["kind"] = m.kind == FaultMode::Kind::kGone ? "gone" : "fail_all";
    e["status"] = m.status;
    if (!m.body.empty()) e["body"] = m.body;
    if (!m.retry_after.empty()) e["retry_after"] = m.retry_after;
    if (m.until) e["until_ms"] = EpochMs(*m.until);
    if (m.duration) e["duration_ms"] = m.duration->count();
    if (m.match) MatchToJson(*m.match, &e["match"]);
    j["mode"] = std::move(e);
  } else {
    j["mode"] = nullptr;
  }
  return Dump(j);
}

// ---------------------------------------------------------------------------
// Emulator internals

struct Emulator::Query {
  std::string method;
  std::string describe;  // "peer METHOD target" for request logs
  bool has_api_version = false;
  std::string resource;
  std::string selector_param;  // as sent: client_id, object_id, mi_res_id, msi_res_id
  std::string selector_value;  // as sent (decoded)
  int selector_count = 0;
  bool invalid_utf8 = false;  // a parameter that decodes to bytes that are not UTF-8
  std::string claims;         // decoded; cache-control parameters (issue #14)
  std::string other_params;   // names of the other parameters, comma-separated
  bool bypass_cache = false;

  std::string Selector() const { return selector_param.empty() ? "" : selector_param + "=" + selector_value; }
  std::string NormalizedParam() const { return selector_param == "msi_res_id" ? "mi_res_id" : selector_param; }

  bool Matches(const std::optional<Match>& match) const {
    if (!match) return true;
    if (match->resource && *match->resource != resource) return false;
    if (match->require_default && !selector_param.empty()) return false;
    if (!match->selector_param.empty() &&
        (NormalizedParam() != match->selector_param || !EqualsIgnoreCase(selector_value, match->selector_value)))
      return false;
    return true;
  }
};

struct Emulator::Plan {
  FaultAction action;
  Duration delay{0};
  std::string fault;  // label for the request log
};

struct Emulator::Pending {
  proxy::Responder reply;
  std::unique_ptr<Timer> timer;  // null while hanging
  Query query;
  Plan plan;
};

struct Emulator::Token {
  std::string access_token;
  std::string client_id;
  std::string resource;
  std::string uti;
  int64_t expires_on = 0;  // epoch seconds
  int64_t not_before = 0;
};

Emulator::Emulator(Clock& clock, TimerFactory& timers, Logger& logger, EmulatorOptions options)
    : clock_(clock), timers_(timers), logger_(logger), options_(std::move(options)) {
  uint64_t state = static_cast<uint64_t>(EpochMs(clock_.Now())) ^ reinterpret_cast<uintptr_t>(this);
  instance_ = SplitMix64(&state);
}

Emulator::~Emulator() {
  // Replies may call back into the server; take them out first.
  auto pending = std::move(pending_);
  pending_.clear();
  sweep_timer_.reset();
  pending.clear();
}

void Emulator::OnRequest(const proxy::HttpRequest& request, proxy::Responder reply) {
  std::string_view target = request.target;
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);

  if (path == kTokenPath || (path.size() == sizeof(kTokenPath) && path.back() == '/' &&
                             path.substr(0, path.size() - 1) == kTokenPath)) {
    HandleToken(request, std::move(reply));
    return;
  }
  if (path.substr(0, 7) == "/admin/") {
    HandleAdmin(request, path, query, reply);
    return;
  }
  if (EqualsIgnoreCase(path, "/metadata/identity/getplatformmetadata") ||
      EqualsIgnoreCase(path, "/metadata/identity/issuecredential")) {
    HandleV2(request, path, query, reply);
    return;
  }
  proxy::HttpResponse r = Error(404, "not_found", "No handler for this path");
  if (options_.log_requests) {
    MI_LOG(logger_, kInfo) << request.peer << " " << request.method << " " << path << " -> 404";
  }
  reply.Send(std::move(r));
}

void Emulator::HandleV2(const proxy::HttpRequest& request, std::string_view path, std::string_view query,
                        proxy::Responder& reply) {
  const std::string* metadata = FindHeader(request, "metadata");
  if (metadata == nullptr || !EqualsIgnoreCase(*metadata, "true")) {
    reply.Send(Error(400, "invalid_request", "Required metadata header not specified"));
    return;
  }
  proxy::HttpResponse r;
  constexpr std::string_view kStatus = "emulator_status=";
  const size_t at = query.find(kStatus);
  if (at != std::string_view::npos && (at == 0 || query[at - 1] == '&')) {
    const int status = std::atoi(std::string(query.substr(at + kStatus.size(), 3)).c_str());
    if (status >= 100 && status <= 599) r.status = status;
  }
  nlohmann::json body = {{"emulator", "imds-v2"},
                         {"path", std::string(path)},
                         {"method", request.method},
                         {"query", std::string(query)},
                         {"body", request.body}};
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  r.headers.emplace_back("Server", "imds-emulator-v2");
  reply.Send(std::move(r));
}

void Emulator::HandleToken(const proxy::HttpRequest& request, proxy::Responder reply) {
  Query query;
  query.method = request.method;
  query.describe = request.peer + " " + request.method + " " + request.target.substr(0, 512);
  size_t qpos = request.target.find('?');
  if (qpos != std::string::npos) {
    std::string_view qs = std::string_view(request.target).substr(qpos + 1);
    while (!qs.empty()) {
      size_t amp = qs.find('&');
      std::string_view pair = qs.substr(0, amp);
      qs = amp == std::string_view::npos ? std::string_view() : qs.substr(amp + 1);
      size_t eq = pair.find('=');
      std::string name = PercentDecode(pair.substr(0, eq));
      std::string value = eq == std::string_view::npos ? std::string() : PercentDecode(pair.substr(eq + 1));
      if (!IsValidUtf8(name) || !IsValidUtf8(value)) query.invalid_utf8 = true;
      if (name == "api-version") {
        query.has_api_version = query.has_api_version || !value.empty();
      } else if (name == "resource") {
        if (query.resource.empty()) query.resource = value;
      } else if (name == "client_id" || name == "object_id" || name == "mi_res_id" || name == "msi_res_id") {
        if (value.empty()) continue;  // empty means "not given"
        if (++query.selector_count == 1) {
          query.selector_param = name;
          query.selector_value = value;
        }
      } else if (name == "claims") {
        if (query.claims.empty()) query.claims = value;
      } else {
        if (name == "bypass_cache" && value == "true") query.bypass_cache = true;
        query.other_params += (query.other_params.empty() ? "" : ",") + name.substr(0, 64);
      }
    }
  }

  TimePoint now = clock_.Now();
  uint64_t seq = next_seq_++;
  ++count_;
  LogEntry entry;
  entry.t_ms = EpochMs(now);
  entry.resource = query.resource;
  entry.selector = query.Selector();
  entry.claims = query.claims;
  entry.other_params = query.other_params;
  if (const std::string* id = FindHeader(request, "x-ms-client-request-id")) entry.client_request_id = id->substr(0, 256);
  if (query.bypass_cache) ++bypass_cache_;
  if (log_.empty()) log_first_seq_ = seq;
  log_.push_back(std::move(entry));
  if (log_.size() > kMaxLog) {
    log_.pop_front();
    ++log_first_seq_;
    ++log_dropped_;
  }
  ++in_flight_;
  max_concurrent_ = std::max(max_concurrent_, in_flight_);

  if (query.method != "GET") {
    proxy::HttpResponse r = Error(405, "invalid_request", "Method not allowed: use GET");
    r.headers.emplace_back("Allow", "GET");
    Answer(seq, query, reply, std::move(r), "");
    return;
  }
  const std::string* metadata = FindHeader(request, "metadata");
  if (metadata == nullptr || !EqualsIgnoreCase(*metadata, "true")) {
    Answer(seq, query, reply, Error(400, "invalid_request", "Required metadata header not specified"), "");
    return;
  }
  if (FindHeader(request, "x-forwarded-for") != nullptr) {
    Answer(seq, query, reply,
           Error(400, "invalid_request", "Requests with X-Forwarded-For are not accepted"), "");
    return;
  }
  if (!options_.arc_token_dir.empty()) {
    if (std::optional<proxy::HttpResponse> challenge = ArcChallenge(request)) {
      if (LogEntry* e = Entry(seq)) e->fault = "arc_challenge";
      Answer(seq, query, reply, std::move(*challenge), "");
      return;
    }
  }
  if (options_.throttle_rps > 0) {
    while (!window_.empty() && window_.front() <= now - Duration(1000)) window_.pop_front();
    if (window_.size() >= options_.throttle_rps) {
      ++throttled_;
      if (LogEntry* e = Entry(seq)) e->fault = "throttle";
      proxy::HttpResponse r = JsonResponse(429, DefaultErrorBody(429));
      r.headers.emplace_back("Retry-After", "1");
      Answer(seq, query, reply, std::move(r), "");
      return;
    }
    window_.push_back(now);
  }

  Plan plan = MakePlan(query, now);
  if (LogEntry* e = Entry(seq)) e->fault = plan.fault;
  if (plan.action.kind == FaultAction::Kind::kHang || plan.delay.count() > 0) {
    auto pending = std::make_unique<Pending>();
    pending->reply = std::move(reply);
    pending->query = std::move(query);
    pending->plan = std::move(plan);
    if (pending->plan.action.kind == FaultAction::Kind::kHang) {
      if (LogEntry* e = Entry(seq)) e->outcome = "hang";
    } else {
      pending->timer = timers_.NewTimer();
      pending->timer->Arm(pending->plan.delay, [this, seq] {
        auto it = pending_.find(seq);
        if (it == pending_.end()) return;
        std::unique_ptr<Pending> p = std::move(it->second);
        pending_.erase(it);
        if (p->plan.action.kind == FaultAction::Kind::kHang) return;
        if (!p->reply.connected()) {
          p->reply.Abort();  // nobody reads an answer now
          Finish(seq, p->query, "client_gone");
          return;
        }
        Execute(seq, p->query, p->plan, p->reply);
        // `p` (timer included) goes away here, after its callback.
      });
    }
    pending_.emplace(seq, std::move(pending));
    ArmSweep();
    return;
  }
  Execute(seq, query, plan, reply);
}

Emulator::Plan Emulator::MakePlan(const Query& query, TimePoint now) {
  Plan plan;
  plan.delay = options_.delay;
  if (faults_.mode) {
    FaultMode& mode = *faults_.mode;
    if (mode.until && now >= *mode.until) {
      faults_.mode.reset();
      mode_started_.reset();
    } else if (query.Matches(mode.match)) {
      if (mode.duration) {
        if (!mode_started_) mode_started_ = now;
        if (now - *mode_started_ >= *mode.duration) {
          faults_.mode.reset();
          mode_started_.reset();
        }
      }
      if (faults_.mode) {
        plan.action.kind = FaultAction::Kind::kStatus;
        plan.action.status = mode.status;
        plan.action.body = mode.body;
        plan.action.retry_after = mode.retry_after;
        plan.fault = mode.kind == FaultMode::Kind::kGone ? "gone" : "fail_all";
        return plan;
      }
    }
  }
  for (auto it = faults_.steps.begin(); it != faults_.steps.end(); ++it) {
    if (!query.Matches(it->match)) continue;
    plan.action = it->action;
    if (it->delay) plan.delay = *it->delay;
    switch (plan.action.kind) {
      case FaultAction::Kind::kNormal: plan.fault = it->delay ? "delay" : ""; break;
      case FaultAction::Kind::kStatus: plan.fault = "status"; break;
      case FaultAction::Kind::kHang: plan.fault = "hang"; break;
      case FaultAction::Kind::kReset: plan.fault = "reset"; break;
      case FaultAction::Kind::kMalformed: plan.fault = "malformed"; break;
      case FaultAction::Kind::kOversized: plan.fault = "oversized"; break;
      case FaultAction::Kind::kMissingExpiresOn: plan.fault = "missing_expires_on"; break;
    }
    if (--it->count <= 0) faults_.steps.erase(it);
    return plan;
  }
  return plan;
}

void Emulator::Execute(uint64_t seq, const Query& query, const Plan& plan, proxy::Responder& reply) {
  const FaultAction& a = plan.action;
  if (a.kind == FaultAction::Kind::kReset) {
    reply.Abort();
    Finish(seq, query, "reset");
    return;
  }
  if (a.kind == FaultAction::Kind::kStatus) {
    proxy::HttpResponse r = JsonResponse(a.status, a.body.empty() ? DefaultErrorBody(a.status) : a.body);
    SetRetryAfter(a.retry_after, &r);
    Answer(seq, query, reply, std::move(r), "");
    return;
  }
  std::string token_id;
  proxy::HttpResponse r = TokenAnswer(query, a.kind == FaultAction::Kind::kMissingExpiresOn, &token_id);
  if (r.status == 200) {
    if (a.kind == FaultAction::Kind::kMalformed) {
      r.body.resize(r.body.size() / 2);
    } else if (a.kind == FaultAction::Kind::kOversized && a.oversized_bytes > r.body.size()) {
      // Still valid JSON: a client must reject it for its size, not its syntax.
      const std::string pad_head = ",\"x_padding\":\"";
      size_t overhead = pad_head.size() + 1;  // + closing quote
      size_t pad = a.oversized_bytes > r.body.size() + overhead ? a.oversized_bytes - r.body.size() - overhead : 0;
      r.body.pop_back();  // '}'
      r.body += pad_head;
      r.body.append(pad, 'x');
      r.body += "\"}";
    }
  }
  Answer(seq, query, reply, std::move(r), token_id);
}

proxy::HttpResponse Emulator::TokenAnswer(const Query& query, bool omit_expires_on, std::string* token_id) {
  if (!query.has_api_version) {
    return Error(400, "Bad request", "Required query variable 'api-version' is missing");
  }
  if (query.resource.empty()) {
    return Error(400, "invalid_request", "Required audience parameter not specified");
  }
  if (query.selector_count > 1) {
    return Error(400, "invalid_request",
                 "Only one of client_id, object_id or mi_res_id may be specified in the token request");
  }
  if (query.invalid_utf8) {
    return Error(400, "invalid_request", "A query parameter is not valid UTF-8 after percent-decoding");
  }
  if (!query.claims.empty() && query.claims.find("xms_az_nwperimid") == std::string::npos) {
    return Error(400, "invalid_request", "The claims parameter names a claim that is not supported");
  }
  proxy::HttpResponse error;
  const Identity* identity = ResolveIdentity(query, &error);
  if (identity == nullptr) return error;
  for (const std::string& rejected : options_.reject_resources) {
    if (rejected == query.resource) {
      return Error(400, "invalid_resource",
                   "AADSTS500011: The resource principal named " + query.resource + " was not found in the tenant");
    }
  }
  // "wrong_identity": every answer is for an identity the caller did not name.
  static const Identity kWrongIdentity = DeriveUserAssigned("0bad1d00-0000-4000-8000-00000000e0e0", "", "");
  if (options_.wrong_identity) identity = &kWrongIdentity;
  std::shared_ptr<Token> token = GetToken(*identity, query.resource, query.claims);
  int64_t now_s = ToEpochSeconds(clock_.Now());
  std::string expires_in = std::to_string(std::max<int64_t>(0, token->expires_on - now_s));
  ojson j;
  j["access_token"] = token->access_token;
  j["client_id"] = token->client_id;
  j["expires_in"] = expires_in;
  if (!omit_expires_on) j["expires_on"] = std::to_string(token->expires_on);
  j["ext_expires_in"] = expires_in;
  j["not_before"] = std::to_string(token->not_before);
  j["resource"] = token->resource;
  j["token_type"] = "Bearer";
  *token_id = token->uti;
  return JsonResponse(200, Dump(j));
}

const Identity* Emulator::ResolveIdentity(const Query& query, proxy::HttpResponse* error) const {
  const IdentitySet& ids = options_.identities;
  if (query.selector_param.empty()) {
    if (ids.system_assigned) return &ids.system;
    if (ids.user_assigned.size() == 1) return &ids.user_assigned.front();
    if (ids.user_assigned.empty()) {
      *error = Error(400, "invalid_request", "Identity not found");
    } else {
      *error = Error(400, "invalid_request",
                     "Multiple user assigned identities exist, please specify the clientId / resourceId of the "
                     "identity in the token request");
    }
    return nullptr;
  }
  std::string param = query.NormalizedParam();
  auto matches = [&](const Identity& id) {
    const std::string& v = param == "client_id" ? id.client_id : param == "object_id" ? id.object_id : id.mi_res_id;
    return EqualsIgnoreCase(v, query.selector_value);
  };
  if (ids.system_assigned && matches(ids.system)) return &ids.system;
  for (const Identity& id : ids.user_assigned) {
    if (matches(id)) return &id;
  }
  *error = Error(400, "invalid_request", "Identity not found");
  return nullptr;
}

std::shared_ptr<Emulator::Token> Emulator::GetToken(const Identity& identity, const std::string& resource,
                                                   const std::string& claims) {
  TimePoint now = clock_.Now();
  std::string key = ToLower(identity.client_id) + '\x1f' + resource;
  if (!claims.empty()) key += '\x1f' + claims;
  auto it = cache_.find(key);
  Duration margin = std::min(options_.reissue_before, options_.lifetime);
  if (it != cache_.end() && now + margin < FromEpochSeconds(it->second->expires_on)) return it->second;
  std::shared_ptr<Token> token = Mint(identity, resource, now);
  cache_[key] = token;
  return token;
}

std::shared_ptr<Emulator::Token> Emulator::Mint(const Identity& identity, const std::string& resource,
                                                TimePoint now) {
  uint64_t serial = ++minted_;
  uint64_t state = instance_ ^ (serial * 0x9e3779b97f4a7c15ULL);
  auto random_bytes = [&state](size_t n) {
    std::string out;
    out.reserve(n + 8);
    while (out.size() < n) {
      uint64_t v = SplitMix64(&state);
      for (int i = 0; i < 8 && out.size() < n; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
    }
    return out;
  };

  auto token = std::make_shared<Token>();
  std::string uti_bytes;
  for (uint64_t v : {instance_, serial}) {
    for (int i = 7; i >= 0; --i) uti_bytes += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  token->uti = Base64UrlEncode(uti_bytes);
  token->client_id = identity.client_id;
  token->resource = resource;
  int64_t issued = ToEpochSeconds(now);
  // Like Entra ID: iat/nbf are backdated 5 minutes for clock skew.
  token->not_before = issued - 300;
  token->expires_on = issued + std::chrono::duration_cast<std::chrono::seconds>(options_.lifetime).count();

  ojson header;
  header["typ"] = "JWT";
  header["alg"] = "RS256";
  header["kid"] = kKeyId;
  std::string header_b64 = Base64UrlEncode(Dump(header));
  std::string signature_b64 = Base64UrlEncode(random_bytes(kSignatureBytes));
  std::string iss = "https://sts.windows.net/" + options_.tenant_id + "/";

  auto payload_b64 = [&](const std::string& filler) {
    ojson p;
    p["aud"] = resource;
    p["iss"] = iss;
    p["iat"] = token->not_before;
    p["nbf"] = token->not_before;
    p["exp"] = token->expires_on;
    p["aio"] = filler;
    p["appid"] = identity.client_id;
    p["appidacr"] = "2";
    p["idtyp"] = "app";
    p["oid"] = identity.object_id;
    p["sub"] = identity.object_id;
    p["tid"] = options_.tenant_id;
    p["uti"] = token->uti;
    p["ver"] = "1.0";
    p["xms_mirid"] = identity.mi_res_id;
    return Base64UrlEncode(Dump(p));
  };
  // The filler ("aio", opaque in real tokens) brings the token to token_bytes.
  std::string filler_source = Base64UrlEncode(random_bytes(3 * 1024));
  size_t filler = 8;
  std::string payload;
  for (int round = 0; round < 4; ++round) {
    while (filler > filler_source.size()) filler_source += filler_source;
    payload = payload_b64(filler_source.substr(0, filler));
    size_t total = header_b64.size() + 1 + payload.size() + 1 + signature_b64.size();
    if (total >= options_.token_bytes) break;
    filler += (options_.token_bytes - total) * 3 / 4 + (round == 3 ? 0 : 1);
  }
  token->access_token = header_b64 + "." + payload + "." + signature_b64;
  issued_.push_back(token->access_token);
  if (issued_.size() > kMaxIssued) issued_.erase(issued_.begin(), issued_.begin() + issued_.size() / 2);
  return token;
}

Emulator::LogEntry* Emulator::Entry(uint64_t seq) {
  if (seq < log_first_seq_ || seq - log_first_seq_ >= log_.size()) return nullptr;
  return &log_[seq - log_first_seq_];
}

void Emulator::Answer(uint64_t seq, const Query& query, proxy::Responder& reply, proxy::HttpResponse&& response,
                      const std::string& token_id) {
  if (LogEntry* e = Entry(seq)) {
    e->status = response.status;
    e->token_id = token_id;
  }
  if (response.status == 200) ++served_;
  if (options_.date_offset) {
    const std::time_t t = std::time(nullptr) + static_cast<std::time_t>(*options_.date_offset);
    char date[64];
    if (std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", std::gmtime(&t)) > 0) {
      response.headers.emplace_back("Date", date);
    }
  }
  Finish(seq, query, "answered");
  reply.Send(std::move(response));
}

void Emulator::Finish(uint64_t seq, const Query& query, const char* outcome) {
  if (in_flight_ > 0) --in_flight_;
  int status = 0;
  std::string fault;
  int64_t latency = 0;
  if (LogEntry* e = Entry(seq)) {
    e->outcome = outcome;
    e->latency_ms = EpochMs(clock_.Now()) - e->t_ms;
    status = e->status;
    fault = e->fault;
    latency = e->latency_ms;
  }
  if (options_.log_requests) {
    MI_LOG(logger_, kInfo) << query.describe << " -> " << status << " " << outcome
                           << (fault.empty() ? "" : " fault=") << fault << " " << latency << "ms";
  }
}

void Emulator::ArmSweep() {
  if (pending_.empty()) return;
  if (!sweep_timer_) sweep_timer_ = timers_.NewTimer();
  if (sweep_timer_->armed()) return;
  sweep_timer_->Arm(kSweepInterval, [this] { Sweep(); });
}

void Emulator::Sweep() {
  // A delayed or hung request whose client went away no longer counts as in flight.
  std::vector<uint64_t> gone;
  for (const auto& [seq, p] : pending_) {
    if (!p->reply.connected()) gone.push_back(seq);
  }
  for (uint64_t seq : gone) {
    auto it = pending_.find(seq);
    if (it == pending_.end()) continue;
    std::unique_ptr<Pending> p = std::move(it->second);
    pending_.erase(it);
    p->reply.Abort();  // rather than the 500 a dropped Responder sends
    Finish(seq, p->query, "client_gone");
  }
  ArmSweep();
}

void Emulator::AbortPending() {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [seq, p] : pending) {
    p->timer.reset();
    p->reply.Abort();
    Finish(seq, p->query, "reset");
  }
  if (sweep_timer_) sweep_timer_->Disarm();
}

void Emulator::SetFaults(FaultScript script) {
  faults_ = std::move(script);
  mode_started_.reset();
}

void Emulator::ResetCounters() {
  log_.clear();
  log_first_seq_ = next_seq_;
  log_dropped_ = 0;
  count_ = 0;
  bypass_cache_ = 0;
  served_ = 0;
  throttled_ = 0;
  max_concurrent_ = in_flight_;
  window_.clear();
}

// ---------------------------------------------------------------------------
// Admin API

std::string Emulator::RequestsJson(size_t limit) const {
  ojson j;
  j["count"] = count_;
  j["served"] = served_;
  j["throttled"] = throttled_;
  j["in_flight"] = in_flight_;
  j["max_concurrent"] = max_concurrent_;
  j["log_dropped"] = log_dropped_;
  j["bypass_cache"] = bypass_cache_;
  ojson log = ojson::array();
  size_t start = log_.size() > limit ? log_.size() - limit : 0;
  for (size_t i = start; i < log_.size(); ++i) {
    const LogEntry& e = log_[i];
    ojson o;
    o["t_ms"] = e.t_ms;
    o["resource"] = e.resource;
    o["selector"] = e.selector;
    o["status"] = e.status;
    o["token_id"] = e.token_id;
    o["fault"] = e.fault;
    o["outcome"] = e.outcome;
    o["latency_ms"] = e.latency_ms;
    if (!e.claims.empty()) o["claims"] = e.claims;
    if (!e.other_params.empty()) o["other_params"] = e.other_params;
    if (!e.client_request_id.empty()) o["client_request_id"] = e.client_request_id;
    log.push_back(std::move(o));
  }
  j["log"] = std::move(log);
  return Dump(j);
}

std::string Emulator::ConfigJson() const {
  ojson j;
  j["delay_ms"] = options_.delay.count();
  j["throttle_rps"] = options_.throttle_rps;
  j["lifetime"] = std::chrono::duration_cast<std::chrono::seconds>(options_.lifetime).count();
  j["reissue_before"] = std::chrono::duration_cast<std::chrono::seconds>(options_.reissue_before).count();
  j["token_bytes"] = options_.token_bytes;
  j["reject_resources"] = options_.reject_resources;
  j["wrong_identity"] = options_.wrong_identity;
  if (!options_.arc_token_dir.empty()) j["arc_realm"] = options_.arc_realm;
  j["tenant_id"] = options_.tenant_id;
  return Dump(j);
}

Status Emulator::ApplyConfig(std::string_view json_text) {
  json j;
  std::string error;
  if (!ParseObject(json_text, &j, &error)) return Status::Error(error);
  if (!CheckKeys(j, {"delay_ms", "throttle_rps", "lifetime", "reissue_before", "token_bytes", "reject_resources",
                     "wrong_identity", "arc_realm"},
                 "config", &error))
    return Status::Error(error);
  EmulatorOptions o = options_;
  int64_t v;
  if (j.contains("delay_ms")) {
    if (!GetInt(j, "delay_ms", 0, INT64_MAX / 2, &v, &error)) return Status::Error(error);
    o.delay = Duration(v);
  }
  if (j.contains("throttle_rps")) {
    if (!GetInt(j, "throttle_rps", 0, UINT32_MAX, &v, &error)) return Status::Error(error);
    o.throttle_rps = static_cast<uint32_t>(v);
  }
  if (j.contains("lifetime")) {
    if (!GetInt(j, "lifetime", 1, INT32_MAX, &v, &error)) return Status::Error(error);
    o.lifetime = std::chrono::seconds(v);
  }
  if (j.contains("reissue_before")) {
    if (!GetInt(j, "reissue_before", 0, INT32_MAX, &v, &error)) return Status::Error(error);
    o.reissue_before = std::chrono::seconds(v);
  }
  if (j.contains("token_bytes")) {
    if (!GetInt(j, "token_bytes", 0, 1 << 24, &v, &error)) return Status::Error(error);
    o.token_bytes = static_cast<size_t>(v);
  }
  if (j.contains("reject_resources")) {
    const json& r = j.at("reject_resources");
    if (!r.is_array() || !std::all_of(r.begin(), r.end(), [](const json& e) { return e.is_string(); }))
      return Status::Error("\"reject_resources\" must be an array of strings");
    o.reject_resources = r.get<std::vector<std::string>>();
  }
  if (j.contains("wrong_identity")) {
    if (!GetTrue(j, "wrong_identity", &error)) return Status::Error(error);
    o.wrong_identity = j.at("wrong_identity").get<bool>();
  }
  if (j.contains("arc_realm")) {
    static const char* const kRealms[] = {"normal", "outside", "not_key", "too_big", "symlink", "dotdot"};
    const json& v = j.at("arc_realm");
    if (!v.is_string() || std::none_of(std::begin(kRealms), std::end(kRealms),
                                       [&v](const char* r) { return v.get<std::string>() == r; }))
      return Status::Error("\"arc_realm\" must be normal, outside, not_key, too_big, symlink or dotdot");
    o.arc_realm = v.get<std::string>();
  }
  options_ = std::move(o);
  return Status::Ok();
}

std::optional<proxy::HttpResponse> Emulator::ArcChallenge(const proxy::HttpRequest& request) {
  namespace fs = std::filesystem;
  if (const std::string* auth = FindHeader(request, "authorization")) {
    if (auth->size() > 6 && EqualsIgnoreCase(auth->substr(0, 6), "basic ")) {
      auto it = arc_secrets_.find(auth->substr(6));
      if (it != arc_secrets_.end()) {
        std::error_code ec;
        fs::remove(it->second, ec);
        arc_secrets_.erase(it);
        return std::nullopt;
      }
    }
  }
  static std::random_device device;
  char hex[33];
  std::snprintf(hex, sizeof(hex), "%08x%08x%08x%08x", device(), device(), device(), device());
  const std::string secret(hex);
  std::snprintf(hex, sizeof(hex), "%08x%08x", device(), device());
  const std::string name(hex);
  const fs::path dir(options_.arc_token_dir);
  const fs::path parent = dir.parent_path();
  const std::string& mode = options_.arc_realm;
  fs::path file = dir / (name + ".key");  // the file holding the secret
  std::string realm = file.string();
  std::string contents = secret;
  std::error_code ec;
  if (mode == "outside") {
    file = parent / (name + ".key");
    realm = file.string();
  } else if (mode == "not_key") {
    file = dir / (name + ".txt");
    realm = file.string();
  } else if (mode == "too_big") {
    contents.resize(4097, 'x');  // the secret is its first 32 bytes
  } else if (mode == "symlink") {
    file = parent / (name + "-target.key");
    fs::create_symlink(file, dir / (name + ".key"), ec);
  } else if (mode == "dotdot") {
    realm = (dir / ".." / dir.filename() / (name + ".key")).string();
  }
  std::FILE* f = std::fopen(file.string().c_str(), "wb");
  if (f != nullptr) {
    std::fwrite(contents.data(), 1, contents.size(), f);
    std::fclose(f);
  }
  if (arc_secrets_.size() >= 1024) arc_secrets_.erase(arc_secrets_.begin());  // bounded
  arc_secrets_[mode == "too_big" ? contents : secret] = file.string();
  proxy::HttpResponse r = Error(401, "unauthorized", "The request needs the secret of the challenge file");
  r.headers.emplace_back("WWW-Authenticate", "Basic realm=" + realm);
  return r;
}

void Emulator::HandleAdmin(const proxy::HttpRequest& request, std::string_view path, std::string_view query,
                           proxy::Responder& reply) {
  const bool get = request.method == "GET";
  const bool post = request.method == "POST";
  auto ok = [] { return JsonResponse(200, "{\"ok\":true}"); };
  auto bad = [](const Status& s) { return Error(400, "invalid_request", s.message()); };
  proxy::HttpResponse r;
  bool known = true;
  bool method_ok = true;

  if (path == "/admin/requests") {
    method_ok = get;
    if (method_ok) {
      size_t limit = SIZE_MAX;
      // ?limit=N: only the last N log entries.
      for (size_t pos = 0; pos < query.size();) {
        size_t amp = query.find('&', pos);
        std::string_view pair = query.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
        if (pair.substr(0, 6) == "limit=") {
          std::string digits(pair.substr(6));
          if (!digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) && digits.size() < 10) {
            limit = static_cast<size_t>(std::stoul(digits));
          }
        }
        if (amp == std::string_view::npos) break;
        pos = amp + 1;
      }
      r = JsonResponse(200, RequestsJson(limit));
    }
  } else if (path == "/admin/reset") {
    method_ok = post;
    if (method_ok) {
      json j;
      std::string error;
      if (!ParseObject(request.body, &j, &error) || !CheckKeys(j, {"tokens"}, "reset", &error) ||
          (j.contains("tokens") && !GetTrue(j, "tokens", &error))) {
        r = bad(Status::Error(error));
      } else {
        ResetCounters();
        SetFaults(FaultScript());
        if (j.value("tokens", false)) {
          cache_.clear();
          issued_.clear();
        }
        r = ok();
      }
    }
  } else if (path == "/admin/faults") {
    method_ok = get || post;
    if (get) {
      r = JsonResponse(200, FaultScriptToJson(faults_));
    } else if (post) {
      FaultScript script;
      Status s = ParseFaultScript(request.body, &script);
      if (s.ok()) {
        SetFaults(std::move(script));
        r = ok();
      } else {
        r = bad(s);
      }
    }
  } else if (path == "/admin/identities") {
    method_ok = get || post;
    if (get) {
      r = JsonResponse(200, IdentitiesToJson(options_.identities));
    } else if (post) {
      IdentitySet set;
      Status s = ParseIdentities(request.body, &set);
      if (s.ok()) {
        options_.identities = std::move(set);
        r = ok();
      } else {
        r = bad(s);
      }
    }
  } else if (path == "/admin/config") {
    method_ok = get || post;
    if (get) {
      r = JsonResponse(200, ConfigJson());
    } else if (post) {
      Status s = ApplyConfig(request.body);
      r = s.ok() ? ok() : bad(s);
    }
  } else if (path == "/admin/tokens") {
    method_ok = get;
    if (method_ok) {
      ojson j;
      j["tokens"] = issued_;
      r = JsonResponse(200, Dump(j));
    }
  } else {
    known = false;
    r = Error(404, "not_found", "Unknown admin endpoint");
  }
  if (known && !method_ok) {
    r = Error(405, "invalid_request", "Method not allowed");
  }
  if (options_.log_requests) {
    MI_LOG(logger_, kInfo) << request.peer << " " << request.method << " " << path << " -> " << r.status;
  }
  reply.Send(std::move(r));
}

}  // namespace mi::emulator
