#pragma once
// Percent-encoding for URLs, query strings and HTML forms (RFC 3986 §2.1,
// application/x-www-form-urlencoded). Pure functions, any thread.

#include <string>
#include <string_view>

#include "agent/base/status.h"

namespace mi {

// Percent-encodes everything except the RFC 3986 unreserved characters
// (ALPHA / DIGIT / "-" / "." / "_" / "~"), with upper-case hex: "a b/c" ->
// "a%20b%2Fc". Suitable for a query parameter value.
std::string UrlEncode(std::string_view in);

// Decodes %XX escapes (either hex case) and, when `plus_as_space` (query
// strings and form bodies), '+' as ' '. Any other byte is copied as is, so an
// unencoded value ("https://x/") decodes to itself. An error on a '%' not
// followed by two hex digits. Decoded bytes are not validated (a "%00" yields
// a NUL): callers check what they accept.
StatusOr<std::string> UrlDecode(std::string_view in, bool plus_as_space);

}  // namespace mi
