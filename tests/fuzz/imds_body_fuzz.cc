// libFuzzer target: an IMDS success body (hostile: it comes off the network)
// through Token::FromImdsBody, then what the cache and the token API do with a
// parsed token: the time conversions on expires_on/not_before and the answer
// body at several moments. The answer must be a JSON object that carries the
// access token and expires_on unchanged. Every body also goes through the
// identity echo check (agent/identity_echo.h) for a key of each kind, and as an
// error body through ImdsErrorDescription: what /status and the logs show must
// be valid UTF-8 without control characters, at most kMaxDescriptionBytes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agent/base/clock.h"
#include "agent/identity_echo.h"
#include "agent/token.h"

namespace {

[[noreturn]] void Die(const char* what, const std::string& body) {
  std::fprintf(stderr, "imds_body_fuzz: %s:\n%s\n", what, body.c_str());
  std::abort();
}

// The checks a caller's client makes on our answer.
void CheckAnswer(const nlohmann::json& input, const mi::Token& token, const std::string& body) {
  const nlohmann::json answer = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (answer.is_discarded() || !answer.is_object()) Die("the answer is not a JSON object", body);
  auto at = answer.find("access_token");
  if (at == answer.end() || *at != input["access_token"]) Die("the answer does not carry the access token", body);
  auto exp = answer.find("expires_on");
  if (exp == answer.end() || *exp != std::to_string(token.expires_on())) Die("expires_on changed", body);
  auto type = answer.find("token_type");
  if (type == answer.end() || !type->is_string()) Die("the answer has no token_type", body);
}

// A description as /status shows it: bounded, valid UTF-8, no C0/DEL/C1.
void CheckDescription(const std::string& d, std::string_view input) {
  if (d.size() > mi::kMaxDescriptionBytes) Die("a description over the bound", std::string(input));
  for (size_t i = 0; i < d.size();) {
    const unsigned char c = static_cast<unsigned char>(d[i]);
    if (c < 0x20 || c == 0x7F) Die("a control character in a description", std::string(input));
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > d.size()) Die("invalid UTF-8 in a description", std::string(input));
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(d[i + k]) & 0xC0) != 0x80) Die("invalid UTF-8 in a description", std::string(input));
    }
    if (n == 2 && c == 0xC2 && static_cast<unsigned char>(d[i + 1]) < 0xA0) {
      Die("a C1 control in a description", std::string(input));
    }
    i += n;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  for (mi::SelectorKind kind : {mi::SelectorKind::kDefault, mi::SelectorKind::kClientId, mi::SelectorKind::kObjectId,
                                mi::SelectorKind::kResourceId}) {
    const mi::TokenKey key{kind, "0d1e2f30-aaaa-4bbb-8ccc-123456789abc", "https://management.azure.com/"};
    const mi::Status echo = mi::CheckIdentityEcho(key, input);
    if (!echo.ok() && (kind == mi::SelectorKind::kDefault || echo.message().empty())) {
      Die("the echo check failed for the default identity or without naming the field", std::string(input));
    }
  }
  CheckDescription(mi::ImdsErrorDescription(input), input);
  CheckDescription(mi::CleanDescription(input), input);
  const mi::StatusOr<std::shared_ptr<const mi::Token>> result = mi::Token::FromImdsBody(input);
  if (!result.ok()) {
    if (result.status().message().empty()) Die("a rejected body without a reason", std::string(input));
    return 0;
  }
  const std::shared_ptr<const mi::Token>& token = *result;

  // As the cache does: expiry as a TimePoint, time left, valid-or-not.
  const mi::TimePoint now = mi::FromEpochSeconds(1795373045);
  const mi::TimePoint expires = mi::FromEpochSeconds(token->expires_on());
  const mi::Duration left = expires - now;
  const bool valid = expires > now;
  if (valid != (left.count() > 0)) Die("expiry comparison and time left disagree", std::string(input));
  if (mi::ToEpochSeconds(expires) != token->expires_on()) Die("expires_on does not round-trip", std::string(input));
  if (token->not_before() > 0) {
    const mi::TimePoint not_before = mi::FromEpochSeconds(token->not_before());
    if (mi::ToEpochSeconds(not_before) != token->not_before()) Die("not_before does not round-trip", std::string(input));
  }

  // Answers now, at expiry and long after it (expires_in clamps at 0).
  const nlohmann::json parsed = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
  for (mi::TimePoint at : {now, expires, expires + std::chrono::hours(24)}) {
    std::string body;
    body.reserve(token->body_size_hint());
    token->AppendBody(at, &body);
    CheckAnswer(parsed, *token, body);
  }
  return 0;
}
