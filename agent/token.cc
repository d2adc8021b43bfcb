#include "agent/token.h"

#include <cctype>

#include <nlohmann/json.hpp>

#include "agent/base/text.h"

namespace mi {
namespace {

using nlohmann::json;

std::string Quote(const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); }

// IMDS bodies are flat objects; anything nested deeper is malformed, and is
// refused before nlohmann builds (and would recurse over) the tree.
constexpr int kMaxBodyDepth = 16;

json ParseBody(std::string_view body) {
  if (!JsonDepthWithin(body, kMaxBodyDepth)) return json(json::value_t::discarded);
  return json::parse(body, nullptr, /*allow_exceptions=*/false);
}

enum class Epoch { kAbsent, kOk, kMalformed };

// Epoch seconds as a string of digits or as a JSON integer, from 0 to
// kMaxEpochSeconds. Fractions, exponents, signs and floats are malformed.
Epoch EpochField(const json& obj, const char* name, int64_t* out) {
  auto it = obj.find(name);
  if (it == obj.end()) return Epoch::kAbsent;
  uint64_t v = 0;
  if (it->is_number_unsigned()) {
    v = it->get<uint64_t>();
  } else if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    if (s.empty() || s.size() > 12) return Epoch::kMalformed;  // kMaxEpochSeconds has 12 digits
    for (char c : s) {
      if (c < '0' || c > '9') return Epoch::kMalformed;
      v = v * 10 + static_cast<uint64_t>(c - '0');
    }
  } else {
    return Epoch::kMalformed;  // negative integers, floats, anything else
  }
  if (v > uint64_t(kMaxEpochSeconds)) return Epoch::kMalformed;
  *out = static_cast<int64_t>(v);
  return Epoch::kOk;
}

// An extra field as a JSON string value, as the README promises: strings as
// they are, numbers and booleans in their JSON spelling. Objects, arrays and
// null have no string form: "" tells the caller to drop the field.
std::string AsStringValue(const json& v) {
  if (v.is_string()) return Quote(v.get_ref<const std::string&>());
  if (v.is_number() || v.is_boolean()) return Quote(v.dump());
  return "";
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

bool IsHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

}  // namespace

const char* SelectorParam(SelectorKind kind) {
  switch (kind) {
    case SelectorKind::kDefault: return "";
    case SelectorKind::kClientId: return "client_id";
    case SelectorKind::kObjectId: return "object_id";
    case SelectorKind::kResourceId: return "mi_res_id";
  }
  return "";
}

std::string TokenKey::Describe() const {
  if (kind == SelectorKind::kDefault) return "default";
  return std::string(SelectorParam(kind)) + "=" + id;
}

std::shared_ptr<const Token> Token::FromImdsBody(std::string_view body, std::string* error) {
  json doc = ParseBody(body);
  if (doc.is_discarded() || !doc.is_object()) {
    *error = "IMDS answered 200 with a body that is not a JSON object (or nests too deep)";
    return nullptr;
  }
  auto at = doc.find("access_token");
  if (at == doc.end() || !at->is_string() || at->get_ref<const std::string&>().empty()) {
    *error = "IMDS answer has no access_token";
    return nullptr;
  }
  auto token = std::make_shared<Token>();
  if (EpochField(doc, "expires_on", &token->expires_on_) != Epoch::kOk || token->expires_on_ == 0) {
    *error = "IMDS answer has no usable expires_on (epoch seconds up to year 9999)";
    return nullptr;
  }
  if (EpochField(doc, "not_before", &token->not_before_) == Epoch::kMalformed) {
    *error = "IMDS answer has a malformed not_before";
    return nullptr;
  }
  auto type = doc.find("token_type");
  if (type != doc.end() && !type->is_string()) {
    *error = "IMDS answer has a malformed token_type";
    return nullptr;
  }
  const std::string& access = at->get_ref<const std::string&>();
  token->fingerprint_ = Fnv1a(access);

  auto string_or = [&](const char* name, const char* fallback) {
    auto it = doc.find(name);
    return it != doc.end() && it->is_string() ? it->get<std::string>() : std::string(fallback);
  };
  // The legacy extension's field order, then whatever else IMDS sent.
  SecureString& head = token->head_;
  head.reserve(access.size() + 64);
  head += "{\"access_token\":";
  head += Quote(access);
  head += ",\"refresh_token\":";
  head += Quote(string_or("refresh_token", ""));
  head += ",\"expires_in\":\"";

  SecureString& tail = token->tail_;
  tail += "\",\"expires_on\":\"";
  tail += std::to_string(token->expires_on_);
  tail += "\"";
  if (token->not_before_ > 0) {
    tail += ",\"not_before\":\"";
    tail += std::to_string(token->not_before_);
    tail += "\"";
  }
  tail += ",\"resource\":";
  tail += Quote(string_or("resource", ""));
  tail += ",\"token_type\":";
  tail += Quote(string_or("token_type", "Bearer"));
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& k = it.key();
    if (k == "access_token" || k == "refresh_token" || k == "expires_in" || k == "expires_on" ||
        k == "not_before" || k == "resource" || k == "token_type") {
      continue;
    }
    const std::string value = AsStringValue(*it);
    if (value.empty()) continue;
    tail += ",";
    tail += Quote(k);
    tail += ":";
    tail += value;
  }
  tail += "}";
  return token;
}

std::string ImdsErrorCode(std::string_view body) {
  json doc = ParseBody(body);
  if (doc.is_object()) {
    auto it = doc.find("error");
    if (it != doc.end() && it->is_string()) return Escaped(it->get_ref<const std::string&>(), 128);
  }
  return "http_error";
}

std::string ImdsErrorBody(int status, std::string_view body) {
  json doc = ParseBody(body);
  if (doc.is_object()) {
    auto it = doc.find("error");
    if (it != doc.end() && it->is_string()) return std::string(body);
  }
  std::string description = "IMDS answered " + std::to_string(status);
  if (body.empty()) {
    description += " with an empty body";
  } else {
    description += ": ";
    if (!AppendEscaped(body, &description, kMaxErrorDescriptionBytes)) description += "...";
  }
  json wrapped = {{"error", "imds_error"}, {"error_description", std::move(description)}};
  return wrapped.dump();
}

void Token::AppendBody(TimePoint now, std::string* out) const {
  int64_t left = expires_on_ - ToEpochSeconds(now);
  if (left < 0) left = 0;
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + left % 10);
    left /= 10;
  } while (left > 0);
  out->append(head_);
  while (n > 0) out->push_back(digits[--n]);
  out->append(tail_);
}

bool IsGuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!IsHex(s[i])) {
      return false;
    }
  }
  return true;
}

// /subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}
bool IsArmResourceId(std::string_view s) {
  if (s.size() > 1024 || s.empty() || s[0] != '/') return false;
  std::vector<std::string_view> parts;
  size_t start = 1;
  while (start <= s.size()) {
    size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) slash = s.size();
    parts.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
  if (parts.size() < 8 || parts.size() % 2 != 0) return false;
  for (auto p : parts) {
    if (p.empty()) return false;
    for (char c : p) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7f || c == '?' || c == '#' || c == '"' || c == '\\') return false;
    }
  }
  return IEquals(parts[0], "subscriptions") && IEquals(parts[2], "resourcegroups") &&
         IEquals(parts[4], "providers");
}

std::string MakeTokenKey(SelectorKind kind, std::string_view id, std::string_view resource, TokenKey* out) {
  if (resource.empty()) return "resource is required";
  if (resource.size() > 2048) return "resource is too long";
  for (char c : resource) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "resource contains control characters";
  }
  switch (kind) {
    case SelectorKind::kDefault: break;
    case SelectorKind::kClientId:
    case SelectorKind::kObjectId:
      if (!IsGuid(id)) return std::string(SelectorParam(kind)) + " is not a GUID";
      break;
    case SelectorKind::kResourceId:
      if (!IsArmResourceId(id)) return "mi_res_id is not an Azure resource id";
      break;
  }
  out->kind = kind;
  out->id.assign(id.begin(), id.end());
  for (char& c : out->id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  out->resource.assign(resource.begin(), resource.end());
  return "";
}

}  // namespace mi
