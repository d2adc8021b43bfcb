#include "proxy/request_params.h"

#include <array>

#include "agent/base/ascii.h"
#include "agent/base/url.h"

namespace mi::proxy {
namespace {

constexpr std::string_view kLegacyPath = "/oauth2/token";
constexpr std::string_view kImdsPath = "/metadata/identity/oauth2/token";
constexpr std::string_view kAppServicePath = "/msi/token";      // 2019-08-01 (IDENTITY_ENDPOINT)
constexpr std::string_view kAppService2017Path = "/MSI/token";  // 2017-09-01 (MSI_ENDPOINT)
constexpr std::string_view kV2PlatformPath = "/metadata/identity/getplatformmetadata";
constexpr std::string_view kV2CredentialPath = "/metadata/identity/issuecredential";

enum Field {
  kResource, kClientId, kObjectId, kMiResId, kMsiResId, kApiVersion,
  kClaims, kTokenSha256, kBypassCache,
  kFieldCount
};

int FieldOf(std::string_view name, bool app_service) {
  if (app_service) {
    if (name == "principal_id") return kObjectId;
    if (name == "clientid") return kClientId;
  }
  if (name == "resource") return kResource;
  if (name == "client_id") return kClientId;
  if (name == "object_id") return kObjectId;
  if (name == "mi_res_id") return kMiResId;
  if (name == "msi_res_id") return kMsiResId;
  if (name == "api-version") return kApiVersion;
  if (name == "claims") return kClaims;
  if (name == "token_sha256_to_refresh") return kTokenSha256;
  if (name == "bypass_cache") return kBypassCache;
  return -1;  // xms_cc too: accepted, not part of the key, never forwarded
}

bool IsHexDigit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool NeedsDecoding(std::string_view s) {
  for (char c : s) {
    if (c == '%' || c == '+') return true;
  }
  return false;
}

// Splits "a=1&b=2" and records known fields; empty values count as absent.
Status ParseForm(std::string_view text, bool app_service, std::array<std::string, kFieldCount>* fields,
                 std::array<bool, kFieldCount>* seen) {
  while (!text.empty()) {
    size_t amp = text.find('&');
    std::string_view pair = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    // Names are nearly always plain ("resource"): decoded only when they need it.
    std::string_view name = pair.substr(0, eq);
    std::string decoded_name;
    if (NeedsDecoding(name)) {
      StatusOr<std::string> decoded = UrlDecode(name, true);
      if (!decoded.ok()) return Status::Error("malformed percent-encoding in a parameter name");
      decoded_name = std::move(*decoded);
      name = decoded_name;
    }
    int field = FieldOf(name, app_service);
    if (field < 0) continue;  // grant_type, authority, ... are ignored
    const std::string_view raw = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (raw.empty()) continue;  // client_id= means "not given"
    StatusOr<std::string> value = UrlDecode(raw, true);
    if (!value.ok()) return Status::Error("malformed percent-encoding in " + std::string(name));
    if ((*seen)[field]) return Status::Error(std::string(name) + " is given more than once");
    (*seen)[field] = true;
    (*fields)[field] = std::move(*value);
  }
  return Status::Ok();
}

}  // namespace

const char* RouteName(Route route) {
  switch (route) {
    case Route::kLegacy: return "legacy";
    case Route::kImds: return "imds";
    case Route::kUnknown: return "other";
    case Route::kAppService: return "app_service";
    case Route::kImdsV2: return "imds_v2";
  }
  return "other";
}

Route ClassifyTarget(std::string_view target, bool absolute_form, std::string_view* query,
                     std::string_view* authority) {
  *query = std::string_view();
  if (authority != nullptr) *authority = std::string_view();
  // "http://" with an empty authority is no absolute form: it stays an unknown path.
  const size_t end = absolute_form && target.size() > 7 && target.substr(0, 7) == "http://"
                         ? target.find_first_of("/?#", 7)
                         : 0;
  if (end > 7) {
    if (authority != nullptr) *authority = target.substr(7, end - 7);  // npos: to the end
    target = end == std::string_view::npos ? std::string_view("/") : target.substr(end);
  }
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) *query = target.substr(q + 1);
  if (path.size() >= 2 && path[0] == '/' && path[1] == '/') path.remove_prefix(1);
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path == kLegacyPath) return Route::kLegacy;
  if (path == kImdsPath) return Route::kImds;
  if (path == kAppServicePath || path == kAppService2017Path) return Route::kAppService;
  // Case-insensitive: SDKs have sent "/metadata/identity/getPlatformMetadata".
  if (EqualsIgnoreCase(path, kV2PlatformPath) || EqualsIgnoreCase(path, kV2CredentialPath)) return Route::kImdsV2;
  return Route::kUnknown;
}

HostAllowList::HostAllowList() : hosts_{"localhost", "127.0.0.1", "[::1]"} {}

void HostAllowList::Add(std::string_view host) {
  if (host.empty()) return;  // would allow "Host:" with no value
  std::string lower(host);
  for (char& c : lower) c = AsciiLower(c);
  for (const auto& h : hosts_) {
    if (h == lower) return;
  }
  hosts_.push_back(std::move(lower));
}

bool HostAllowList::Allows(std::string_view authority) const {
  // Split off ":port" (1 to 5 digits), scanning back from the end. Whatever is
  // left must equal an entry, so "::1", "[::1" or "a:b:80" never match.
  std::string_view host = authority;
  size_t digits = 0;
  while (digits < host.size() && host[host.size() - 1 - digits] >= '0' && host[host.size() - 1 - digits] <= '9') {
    ++digits;
  }
  if (digits < host.size() && host[host.size() - 1 - digits] == ':') {
    if (digits == 0 || digits > 5) return false;
    host.remove_suffix(digits + 1);
  }
  for (const auto& allowed : hosts_) {
    if (allowed.size() != host.size()) continue;
    size_t i = 0;
    while (i < host.size() && AsciiLower(host[i]) == allowed[i]) ++i;
    if (i == host.size()) return true;
  }
  return false;
}

StatusOr<ParsedParams> ParseTokenParams(std::string_view query, std::string_view form_body, bool app_service) {
  std::array<std::string, kFieldCount> fields;
  std::array<bool, kFieldCount> seen{};
  Status parsed = ParseForm(query, app_service, &fields, &seen);
  if (parsed.ok()) parsed = ParseForm(form_body, app_service, &fields, &seen);
  if (!parsed.ok()) return parsed;
  SelectorFields selectors;
  selectors.client_id = fields[kClientId];
  selectors.object_id = fields[kObjectId];
  selectors.mi_res_id = fields[kMiResId];
  selectors.msi_res_id = fields[kMsiResId];
  StatusOr<TokenKey> key = MakeTokenKey(selectors, fields[kResource]);
  if (!key.ok()) return key.status();
  ParsedParams out{std::move(*key), seen[kApiVersion], std::move(fields[kApiVersion]), {}, false};
  if (seen[kClaims]) {
    Status claims = SetClaims(&out.key, fields[kClaims]);
    if (!claims.ok()) return claims;
  }
  if (seen[kTokenSha256]) {
    const std::string& hash = fields[kTokenSha256];
    bool hex = hash.size() == 64;
    for (size_t i = 0; hex && i < hash.size(); ++i) hex = IsHexDigit(hash[i]);
    if (!hex) return Status::Error("token_sha256_to_refresh is not a hex SHA-256");
    out.options.refresh_sha256.resize(hash.size());
    for (size_t i = 0; i < hash.size(); ++i) out.options.refresh_sha256[i] = AsciiLower(hash[i]);
  }
  // bypass_cache: "true" only (any other value is as if not given).
  out.options.bypass_cache = seen[kBypassCache] && fields[kBypassCache] == "true";
  out.has_options = out.options.bypass_cache || !out.options.refresh_sha256.empty();
  return out;
}

}  // namespace mi::proxy
