#pragma once
// Tokens and the keys they are cached under. No HTTP here: the proxy maps a
// TokenResult to a response.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "agent/base/clock.h"
#include "agent/base/secure_memory.h"

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

  bool operator==(const TokenKey& o) const {
    return kind == o.kind && id == o.id && resource == o.resource;
  }
  // "client_id=<id>" / "system" — for status output and logs; never secret.
  std::string Describe() const;
};

struct TokenKeyHash {
  size_t operator()(const TokenKey& k) const {
    size_t h = std::hash<std::string>()(k.resource);
    h ^= std::hash<std::string>()(k.id) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h ^ static_cast<size_t>(k.kind);
  }
};

// Identity selector syntax checks (no IMDS call needed to reject these).
bool IsGuid(std::string_view s);
bool IsArmResourceId(std::string_view s);
// Builds a key from the caller's parameters; lower-cases ids. Returns an error
// description ("client_id is not a GUID") or "" on success.
std::string MakeTokenKey(SelectorKind kind, std::string_view id, std::string_view resource, TokenKey* out);

// A token as served to callers. Immutable once built; shared by the cache and
// any answer in flight.
class Token {
 public:
  // Parses an IMDS success body. On failure returns null and sets *error to a
  // description that never contains the body (it may hold a token).
  static std::shared_ptr<const Token> FromImdsBody(std::string_view body, std::string* error);

  int64_t expires_on() const { return expires_on_; }
  int64_t not_before() const { return not_before_; }
  // A short non-reversible fingerprint (hash) of the access token, to tell a
  // renewed token from the same one again. Never the token itself.
  uint64_t fingerprint() const { return fingerprint_; }

  // Appends the JSON body for an answer at `now`: the upstream fields as string
  // values, with expires_in recomputed. Two appends and one integer: cheap.
  void AppendBody(TimePoint now, std::string* out) const;
  size_t body_size_hint() const { return head_.size() + tail_.size() + 12; }

 private:
  int64_t expires_on_ = 0;
  int64_t not_before_ = 0;
  uint64_t fingerprint_ = 0;
  // The body around expires_in. On the secure arena: out of core dumps, wiped
  // when the token is dropped (agent/secure_memory.h).
  SecureString head_;  // ... "expires_in":"
  SecureString tail_;  // ","expires_on":"..." ... }
};

// The IMDS "error" code of an error body, escaped (agent/text.h) and at most
// 128 bytes, or "http_error" when the body has none. For status output and
// logs; never the rest of the body.
std::string ImdsErrorCode(std::string_view body);

// What a caller gets for an IMDS rejection (status `status`): a JSON object with
// a string "error" is passed through unchanged; anything else (HTML, text, an
// array, a body nested too deep, an object without "error", nothing) becomes
// {"error":"imds_error","error_description":"IMDS answered <status>: <body>"}
// with the body escaped and cut to kMaxErrorDescriptionBytes.
constexpr size_t kMaxErrorDescriptionBytes = 512;
std::string ImdsErrorBody(int status, std::string_view body);

// What the broker answers. The proxy turns it into HTTP.
struct TokenResult {
  enum class Kind {
    kToken,        // `token` is set
    kRejected,     // IMDS said no (non-retryable 4xx): pass `status` and `body` (ImdsErrorBody) through
    kUnavailable,  // no token within the retry budget or deadline: 500 unknown
    kShed,         // the agent is shedding load: 429 with Retry-After
  };
  Kind kind = Kind::kUnavailable;
  std::shared_ptr<const Token> token;
  int status = 0;
  std::string body;
  std::string description;  // for kUnavailable; never contains a token
  int retry_after_seconds = 0;
};

}  // namespace mi
