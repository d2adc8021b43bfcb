#include "agent/identity_echo.h"

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/base/ascii.h"
#include "agent/base/text.h"

namespace mi {
namespace {

using nlohmann::json;

constexpr int kMaxDepth = 16;

json ParseObject(std::string_view text) {
  if (!JsonDepthWithin(text, kMaxDepth)) return json(json::value_t::discarded);
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return json(json::value_t::discarded);
  return doc;
}

int Base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Base64url without padding (JWT segments), trailing '=' tolerated. False on
// any other byte or an impossible length.
bool DecodeBase64Url(std::string_view in, std::string* out) {
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return false;
  out->clear();
  out->reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = Base64UrlValue(c);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return true;
}

// The claims of a JWT (header.payload.signature), or a discarded value.
json Claims(std::string_view jwt) {
  const size_t first = jwt.find('.');
  if (first == std::string_view::npos) return json(json::value_t::discarded);
  const size_t second = jwt.find('.', first + 1);
  if (second == std::string_view::npos) return json(json::value_t::discarded);
  const std::string_view payload = jwt.substr(first + 1, second - first - 1);
  if (payload.empty() || payload.size() > kMaxJwtClaimsBytes) return json(json::value_t::discarded);
  std::string decoded;
  if (!DecodeBase64Url(payload, &decoded)) return json(json::value_t::discarded);
  return ParseObject(decoded);
}

// True when `obj` has `name` as a string that differs from `want` (ASCII case
// folded). Absent or non-string: no evidence, no mismatch.
bool Differs(const json& obj, const char* name, std::string_view want) {
  if (!obj.is_object()) return false;
  auto it = obj.find(name);
  if (it == obj.end() || !it->is_string()) return false;
  return !EqualsIgnoreCase(it->get_ref<const std::string&>(), want);
}

}  // namespace

Status CheckIdentityEcho(const TokenKey& key, std::string_view body) {
  if (key.kind == SelectorKind::kDefault) return Status::Ok();
  const json doc = ParseObject(body);
  if (doc.is_discarded()) return Status::Ok();
  if (key.kind == SelectorKind::kClientId && Differs(doc, "client_id", key.id)) return Status::Error("client_id");
  json claims;
  auto at = doc.find("access_token");
  if (at != doc.end() && at->is_string()) claims = Claims(at->get_ref<const std::string&>());
  switch (key.kind) {
    case SelectorKind::kClientId:
      if (Differs(claims, "appid", key.id)) return Status::Error("appid");
      break;
    case SelectorKind::kObjectId:
      if (Differs(claims, "oid", key.id)) return Status::Error("oid");
      break;
    case SelectorKind::kResourceId:
      if (Differs(claims, "xms_mirid", key.id)) return Status::Error("xms_mirid");
      break;
    case SelectorKind::kDefault: break;
  }
  return Status::Ok();
}

}  // namespace mi
