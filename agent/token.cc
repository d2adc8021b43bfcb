#include "agent/token.h"

#include <nlohmann/json.hpp>

#include "agent/base/fnv.h"
#include "agent/base/sha256.h"
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

}  // namespace

bool Token::HasSha256(std::string_view hex) const {
  return hex == std::string_view(sha256_hex_, sizeof sha256_hex_ - 1);
}

StatusOr<std::shared_ptr<const Token>> Token::FromImdsBody(std::string_view body) {
  json doc = ParseBody(body);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Error("IMDS answered 200 with a body that is not a JSON object (or nests too deep)");
  }
  auto at = doc.find("access_token");
  if (at == doc.end() || !at->is_string() || at->get_ref<const std::string&>().empty()) {
    return Status::Error("IMDS answer has no access_token");
  }
  auto token = std::make_shared<Token>();
  if (EpochField(doc, "expires_on", &token->expires_on_) != Epoch::kOk || token->expires_on_ == 0) {
    return Status::Error("IMDS answer has no usable expires_on (epoch seconds up to year 9999)");
  }
  if (EpochField(doc, "not_before", &token->not_before_) == Epoch::kMalformed) {
    return Status::Error("IMDS answer has a malformed not_before");
  }
  auto type = doc.find("token_type");
  if (type != doc.end() && !type->is_string()) {
    return Status::Error("IMDS answer has a malformed token_type");
  }
  const std::string& access = at->get_ref<const std::string&>();
  token->fingerprint_ = Fnv1a64(access);
  const Sha256::Digest digest = Sha256::Hash(access);
  HexPrefix(digest, sizeof token->audit_fingerprint_ - 1, token->audit_fingerprint_);
  HexPrefix(digest, sizeof token->sha256_hex_ - 1, token->sha256_hex_);

  auto string_or = [&](const char* name, const char* fallback) {
    auto it = doc.find(name);
    return it != doc.end() && it->is_string() ? it->get<std::string>() : std::string(fallback);
  };
  // The legacy extension's field order, then whatever else IMDS sent.
  SecureString& head = token->head_;
  head.reserve(access.size() + 64);
  head += "{\"access_token\":";
  head += Quote(access);
  token->quoted_access_size_ = head.size() - kAccessTokenAt;
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
  std::string& fields = token->app_service_fields_;
  fields += ",\"resource\":";
  fields += Quote(string_or("resource", ""));
  fields += ",\"token_type\":";
  fields += Quote(string_or("token_type", "Bearer"));
  tail.append(fields.data(), fields.size());
  if (auto id = doc.find("client_id"); id != doc.end() && id->is_string()) {
    fields += ",\"client_id\":";
    fields += Quote(id->get_ref<const std::string&>());
  }
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
  return std::shared_ptr<const Token>(std::move(token));
}

std::string ImdsErrorCode(std::string_view body) {
  json doc = ParseBody(body);
  if (doc.is_object()) {
    auto it = doc.find("error");
    if (it != doc.end() && it->is_string()) return Escaped(it->get_ref<const std::string&>(), 128);
  }
  return "http_error";
}

std::string CleanDescription(std::string_view text) {
  if (text.size() > kMaxDescriptionBytes) {
    // Cut before a character that would not fit whole (at most 3 continuation bytes).
    size_t cut = kMaxDescriptionBytes;
    for (int i = 0; i < 3 && cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80; ++i) --cut;
    text = text.substr(0, cut);
  }
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      out.push_back(c < 0x20 || c == 0x7F ? '?' : static_cast<char>(c));
      ++i;
      continue;
    }
    const size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    const std::string_view ch = text.substr(i, len);
    if (len == 1 || ch.size() < len || !IsValidUtf8(ch)) {
      out.push_back('?');  // one byte at a time: the next may start a good character
      ++i;
      continue;
    }
    const bool c1 = c == 0xC2 && static_cast<unsigned char>(ch[1]) < 0xA0;  // U+0080..U+009F
    if (c1) {
      out.push_back('?');
    } else {
      out.append(ch.data(), ch.size());
    }
    i += len;
  }
  return out;
}

std::string ImdsErrorDescription(std::string_view body) {
  json doc = ParseBody(body);
  if (!doc.is_object()) return "";
  auto it = doc.find("error_description");
  if (it == doc.end() || !it->is_string()) return "";
  return CleanDescription(it->get_ref<const std::string&>());
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

}  // namespace mi
