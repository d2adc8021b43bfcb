#pragma once
// Tokens (the keys they are cached under: agent/token_key.h). No HTTP here: the proxy maps a
// TokenResult to a response.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "agent/base/clock.h"
#include "agent/base/secure_memory.h"
#include "agent/base/status.h"
#include "agent/token_key.h"

namespace mi {

// A token as served to callers. Immutable once built; shared by the cache and
// any answer in flight.
class Token {
 public:
  // Parses an IMDS success body. On failure the Status says why, never with
  // the body (it may hold a token).
  static StatusOr<std::shared_ptr<const Token>> FromImdsBody(std::string_view body);

  int64_t expires_on() const { return expires_on_; }
  int64_t not_before() const { return not_before_; }
  // A short non-reversible fingerprint (hash) of the access token, to tell a
  // renewed token from the same one again. Never the token itself.
  uint64_t fingerprint() const { return fingerprint_; }
  // The audit trail's fingerprint: the first 16 lowercase hex digits of the
  // SHA-256 of the access token, computed once when the token is built.
  const char* audit_fingerprint() const { return audit_fingerprint_; }
  // Whether `hex` (64 lowercase hex digits) is the SHA-256 of the access token
  // (token_sha256_to_refresh). The digest is computed once, with the one above.
  bool HasSha256(std::string_view hex) const;

  // Appends the JSON body for an answer at `now`: the upstream fields as string
  // values, with expires_in recomputed. Two appends and one integer: cheap.
  void AppendBody(TimePoint now, std::string* out) const;
  size_t body_size_hint() const { return head_.size() + tail_.size() + 12; }

  // For the App Service dialect's answer (proxy/token_api.h RenderAppService):
  // the access token as a JSON string literal (a view into the secure body,
  // quotes included), and ",\"resource\":...,\"token_type\":...[,\"client_id\":...]"
  // from IMDS's answer (no secret).
  std::string_view quoted_access_token() const {
    return std::string_view(head_).substr(kAccessTokenAt, quoted_access_size_);
  }
  const std::string& app_service_fields() const { return app_service_fields_; }

 private:
  int64_t expires_on_ = 0;
  int64_t not_before_ = 0;
  uint64_t fingerprint_ = 0;
  char audit_fingerprint_[17] = {};
  char sha256_hex_[65] = {};
  // The body around expires_in. On the secure arena: out of core dumps, wiped
  // when the token is dropped (agent/secure_memory.h).
  SecureString head_;  // ... "expires_in":"
  SecureString tail_;  // ","expires_on":"..." ... }
  static constexpr size_t kAccessTokenAt = 16;  // after {"access_token":
  size_t quoted_access_size_ = 0;
  std::string app_service_fields_;
};

// The IMDS "error" code of an error body, escaped (agent/text.h) and at most
// 128 bytes, or "http_error" when the body has none. For status output and
// logs; never the rest of the body.
std::string ImdsErrorCode(std::string_view body);

// Why an upstream attempt failed, in IMDS's or the OS's words, for /status
// ("description") and logs; never sent to callers. Hostile text: at most
// kMaxDescriptionBytes, a character never cut, every control character (C0,
// DEL, C1) and every byte that is not well-formed UTF-8 replaced by '?'.
constexpr size_t kMaxDescriptionBytes = 256;
std::string CleanDescription(std::string_view text);
// The "error_description" string of an IMDS error body, cleaned as above, or ""
// when there is none (not a JSON object, no such string, nested too deep).
// Only for error answers: a 200 body holds a token.
std::string ImdsErrorDescription(std::string_view body);

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
  // The Get joined a fetch already under way for its key (single flight), for
  // the audit trail's cache outcome (hit / miss / coalesced).
  bool coalesced = false;
};

}  // namespace mi
