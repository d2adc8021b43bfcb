#pragma once
// Turning a token request (target + body) into a TokenKey, with the legacy
// extension's rules (SPEC §3): GET query or POST form, `+`/%XX decoding, empty
// value = not given, unknown fields ignored, msi_res_id = mi_res_id, at most one
// selector, a parameter given twice is an error.

#include <string>
#include <string_view>
#include <vector>

#include "agent/base/status.h"
#include "agent/token_broker.h"
#include "agent/token_key.h"

namespace mi::proxy {

// kAppService: the App Service / Functions dialects, /msi/token (2019-08-01)
// and /MSI/token (2017-09-01); TokenApi serves it only with a secret set.
// kImdsV2: /metadata/identity/getplatformmetadata and .../issuecredential
// (compared case-insensitively), passed through to IMDS (TokenApi).
enum class Route { kLegacy = 0, kImds = 1, kUnknown = 2, kAppService = 3, kImdsV2 = 4 };
constexpr int kRouteCount = 5;
const char* RouteName(Route route);

// Path of a request target without the query, normalised: a doubled leading
// slash collapses, one trailing slash is dropped. `absolute_form` also accepts
// "http://host[:port]/path" targets. Returns the route and sets *query to the
// raw query string (without '?'), and *authority (when given) to the
// "host[:port]" of an absolute-form target, empty for any other target.
Route ClassifyTarget(std::string_view target, bool absolute_form, std::string_view* query,
                     std::string_view* authority = nullptr);

// The host names a request may give in `Host` (or in an absolute-form target)
// on the token listener: the defence against DNS rebinding, where a web page
// whose name now resolves to 127.0.0.1 sends "Host: attacker.example".
// Always holds localhost, 127.0.0.1 and [::1]; Add() appends more.
class HostAllowList {
 public:
  HostAllowList();
  // REQUIRES: `host` is a host name, an IPv4 address or a bracketed IPv6
  // address ("[fd00::4]"), without a port. Kept lower-cased.
  void Add(std::string_view host);
  // `authority` is "host" or "host:port" (1 to 5 digits); the host compares
  // case-insensitively. Anything else (empty, bad port, userinfo, a bare IPv6
  // literal) is refused. Allocates nothing.
  bool Allows(std::string_view authority) const;

 private:
  std::vector<std::string> hosts_;
};

// The cache-control parameters (issue #14): `claims` goes into the key;
// token_sha256_to_refresh and bypass_cache into `options` (has_options: any
// given); `xms_cc` is accepted and ignored; other unknown parameters too.
// None but claims (and bypass_cache=true, by the broker) is forwarded.
struct ParsedParams {
  TokenKey key;
  bool has_api_version = false;
  std::string api_version;  // decoded; "" when not given
  RequestOptions options;
  bool has_options = false;
};

// Parses query and (for POST) the form body (the selector rule: MakeTokenKey,
// agent/token_key.h). On error the message is the error_description for a 400
// invalid_request. `app_service` also takes that dialect's spellings:
// principal_id (= object_id, 2019-08-01) and clientid (= client_id, 2017-09-01);
// elsewhere they stay unknown, ignored fields.
StatusOr<ParsedParams> ParseTokenParams(std::string_view query, std::string_view form_body,
                                        bool app_service = false);

}  // namespace mi::proxy
