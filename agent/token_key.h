#pragma once
// The key tokens are cached under, and the identity-selector rule (SPEC §3):
// at most one of client_id, object_id and mi_res_id (msi_res_id is a legacy
// name for mi_res_id; giving both is an error), ids checked for syntax and
// lower-cased, the resource a non-empty printable string. The token API and the
// config's prefetch list both build their keys with MakeTokenKey.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "agent/base/status.h"

namespace mi {

// Which user-assigned identity a request names. kDefault: none named, IMDS
// picks (system-assigned, else the only user-assigned one).
enum class SelectorKind : uint8_t { kDefault = 0, kClientId, kObjectId, kResourceId };

// The IMDS query parameter name for a selector ("" for kDefault). Legacy
// msi_res_id is the same selector as mi_res_id.
const char* SelectorParam(SelectorKind kind);

struct TokenKey {
  SelectorKind kind = SelectorKind::kDefault;
  // Normalised (ASCII lower case): ids compare case-insensitively.
  std::string id;
  // Exactly as the caller gave it (decoded).
  std::string resource;
  // The caller's `claims` parameter (decoded, verbatim; empty: none), forwarded
  // to IMDS: a token for other claims is another token (SetClaims).
  std::string claims = std::string();
  // The id as the caller or the config spelled it, when that differs from `id`
  // (empty otherwise: no copy for an id already in lower case). Display only:
  // not part of equality or the hash; a key keeps its first spelling.
  std::string display_id = std::string();

  bool operator==(const TokenKey& o) const {
    return kind == o.kind && id == o.id && resource == o.resource && claims == o.claims;
  }
  // "client_id=<id>" / "default" — for status output and logs; never secret.
  // A key with claims adds " claims#<8 hex digits of their SHA-256>" (bounded).
  std::string Describe() const;
  // The id and Describe() with the id as spelled (display_id): for /status.
  const std::string& DisplayId() const { return display_id.empty() ? id : display_id; }
  std::string DescribeAsGiven() const;
};

struct TokenKeyHash {
  size_t operator()(const TokenKey& k) const {
    size_t h = std::hash<std::string>()(k.resource);
    h ^= std::hash<std::string>()(k.id) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    if (!k.claims.empty()) h ^= std::hash<std::string>()(k.claims) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h ^ static_cast<size_t>(k.kind);
  }
};

// The selectors a caller gave, as given (decoded); empty = not given.
struct SelectorFields {
  std::string_view client_id;
  std::string_view object_id;
  std::string_view mi_res_id;
  std::string_view msi_res_id;

  // The one field that names `kind` (none for kDefault): to rebuild a key.
  static SelectorFields Of(SelectorKind kind, std::string_view id);
};

// Identity selector syntax checks (no IMDS call needed to reject these).
bool IsGuid(std::string_view s);
bool IsArmResourceId(std::string_view s);

// Builds a key from the caller's selectors and resource, or says why not, in
// this order: "give one of mi_res_id and msi_res_id", "give at most one of
// client_id, object_id and mi_res_id", then the resource ("Required parameter
// resource is missing", "resource is too long", "... control characters") and
// the id's syntax ("client_id is not a GUID", "mi_res_id is not an Azure
// resource id"). The messages are the token API's error_description; the two
// selector conflicts carry a code (Status::code()) for callers with their own
// wording (the config file).
enum TokenKeyError : int { kBothResourceIds = 1, kSeveralSelectors = 2 };
StatusOr<TokenKey> MakeTokenKey(const SelectorFields& fields, std::string_view resource);

// Sets key->claims to `claims` (decoded), checked like the resource: at most
// kMaxClaimsBytes ("claims is too long"), no control characters ("claims
// contains control characters"). Empty: no claims. IMDS judges the content.
constexpr size_t kMaxClaimsBytes = 2048;
Status SetClaims(TokenKey* key, std::string_view claims);

}  // namespace mi
