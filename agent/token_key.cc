#include "agent/token_key.h"

#include <cctype>
#include <utility>
#include <vector>

#include "agent/base/ascii.h"
#include "agent/base/sha256.h"

namespace mi {
namespace {

bool IsHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

std::string DescribeWith(const TokenKey& key, const std::string& id) {
  std::string out =
      key.kind == SelectorKind::kDefault ? std::string("default") : std::string(SelectorParam(key.kind)) + "=" + id;
  if (!key.claims.empty()) out += " claims#" + Sha256::HexHash(key.claims).substr(0, 8);
  return out;
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

std::string TokenKey::Describe() const { return DescribeWith(*this, id); }

std::string TokenKey::DescribeAsGiven() const { return DescribeWith(*this, DisplayId()); }

SelectorFields SelectorFields::Of(SelectorKind kind, std::string_view id) {
  SelectorFields f;
  switch (kind) {
    case SelectorKind::kDefault: break;
    case SelectorKind::kClientId: f.client_id = id; break;
    case SelectorKind::kObjectId: f.object_id = id; break;
    case SelectorKind::kResourceId: f.mi_res_id = id; break;
  }
  return f;
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
  return EqualsIgnoreCase(parts[0], "subscriptions") && EqualsIgnoreCase(parts[2], "resourcegroups") &&
         EqualsIgnoreCase(parts[4], "providers");
}

StatusOr<TokenKey> MakeTokenKey(const SelectorFields& fields, std::string_view resource) {
  if (!fields.mi_res_id.empty() && !fields.msi_res_id.empty()) {
    return Status::Error(kBothResourceIds, "give one of mi_res_id and msi_res_id");
  }
  const std::string_view res_id = fields.mi_res_id.empty() ? fields.msi_res_id : fields.mi_res_id;
  SelectorKind kind = SelectorKind::kDefault;
  std::string_view id;
  const std::pair<std::string_view, SelectorKind> selectors[] = {{fields.client_id, SelectorKind::kClientId},
                                                                 {fields.object_id, SelectorKind::kObjectId},
                                                                 {res_id, SelectorKind::kResourceId}};
  for (const auto& [value, k] : selectors) {
    if (value.empty()) continue;
    if (kind != SelectorKind::kDefault) {
      return Status::Error(kSeveralSelectors, "give at most one of client_id, object_id and mi_res_id");
    }
    kind = k;
    id = value;
  }
  if (resource.empty()) return Status::Error("Required parameter resource is missing");
  if (resource.size() > 2048) return Status::Error("resource is too long");
  for (char c : resource) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return Status::Error("resource contains control characters");
  }
  switch (kind) {
    case SelectorKind::kDefault: break;
    case SelectorKind::kClientId:
    case SelectorKind::kObjectId:
      if (!IsGuid(id)) return Status::Error(std::string(SelectorParam(kind)) + " is not a GUID");
      break;
    case SelectorKind::kResourceId:
      if (!IsArmResourceId(id)) return Status::Error("mi_res_id is not an Azure resource id");
      break;
  }
  std::string lowered(id);
  for (char& c : lowered) c = AsciiLower(c);
  std::string display = lowered == id ? std::string() : std::string(id);
  return TokenKey{kind, std::move(lowered), std::string(resource), std::string(), std::move(display)};
}

Status SetClaims(TokenKey* key, std::string_view claims) {
  if (claims.size() > kMaxClaimsBytes) return Status::Error("claims is too long");
  for (char c : claims) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return Status::Error("claims contains control characters");
  }
  key->claims = std::string(claims);
  return Status::Ok();
}

}  // namespace mi
