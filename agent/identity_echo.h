#pragma once
// The identity echo check (issue #14, point 2): an IMDS 200 answer for another
// identity than the caller named is never served or cached. A misrouted or
// misconfigured upstream must not hand one workload's token to another.
//
// Compared, for a key that names an identity (the default identity has nothing
// to compare):
//   client_id  vs the body's "client_id" and the token's "appid" claim (GUIDs,
//              case-insensitive)
//   object_id  vs the token's "oid" claim (case-insensitive)
//   mi_res_id  vs the token's "xms_mirid" claim (ARM ids, case-insensitive)
// A field or claim that is absent (or not a string) is not a mismatch: real
// IMDS answers carry client_id, tokens carry the claims. The access token's
// claims are the JWT's middle segment (base64url JSON), read as hostile input:
// a segment over kMaxJwtClaimsBytes, bad base64url or a payload that is not a JSON
// object (or nests too deep) means "no claims", never an error and never logged.

#include <cstddef>
#include <string_view>

#include "agent/base/status.h"
#include "agent/token_key.h"

namespace mi {

// The caller-facing description of a mismatch (500 unknown's error_description).
inline constexpr const char kWrongIdentityDescription[] = "IMDS answered for another identity";

// Encoded claims segments longer than this are ignored (no claims).
constexpr size_t kMaxJwtClaimsBytes = 16 * 1024;

// Ok, or an error naming the mismatched field ("client_id", "appid", "oid",
// "xms_mirid"; never a value). `body` is an IMDS 200 body; one that is not a
// JSON object has nothing to compare (Token::FromImdsBody refuses it).
Status CheckIdentityEcho(const TokenKey& key, std::string_view body);

}  // namespace mi
