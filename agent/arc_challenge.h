#pragma once
// The Azure Arc challenge (issue #14 point 5). On an Arc-enabled server the
// token endpoint (himds, http://127.0.0.1:40342) answers a first token GET with
//   401, WWW-Authenticate: Basic realm=<path of a fresh .key file>
// and the same GET again with "Authorization: Basic <that file's contents>"
// gets the token. Reading the file proves the caller may read the tokens
// directory (root or the himds group). The realm is hostile input: whoever
// answers on the port chooses it, so it must name a file inside the configured
// tokens directory:
//   * an absolute path (Windows: drive-letter path), no "." or ".." component;
//   * ending in ".key";
//   * opened without following a symlink in its last component (O_NOFOLLOW;
//     Windows: FILE_FLAG_OPEN_REPARSE_POINT and no reparse point), and inside
//     the directory after resolving the rest (realpath of both);
//   * a regular file of 1..kMaxArcSecretBytes bytes (fstat before reading),
//     whose contents are printable ASCII (it goes into a header).
// Each refusal is an error naming the check, never the contents.
//
// The secret lives in a SecureString and is used for one request only: the
// caller (CurlUpstreamClient) wipes it after the second GET.

#include <cstddef>
#include <string>
#include <string_view>

#include "agent/base/secure_memory.h"
#include "agent/base/status.h"

namespace mi {

// Files over this are refused before they are read.
constexpr size_t kMaxArcSecretBytes = 4096;
// A WWW-Authenticate value longer than this is not a challenge.
constexpr size_t kMaxArcChallengeBytes = 4096;

// The realm of `www_authenticate` ("Basic realm=<path>", the scheme
// case-insensitive, the path optionally in double quotes), or an error.
StatusOr<std::string> ParseArcChallenge(std::string_view www_authenticate);

// Checks `path` against `token_dir` as above and returns the file's contents.
StatusOr<SecureString> ReadArcSecret(const std::string& token_dir, const std::string& path);

// "Authorization: Basic <secret>" as a curl header line, on the secure arena.
SecureString ArcAuthorizationHeader(const SecureString& secret);

}  // namespace mi
