#pragma once
// Text that came from outside (a caller, IMDS, the command line) checked and
// made safe before it is stored, logged or passed on.

#include <cstddef>
#include <string>
#include <string_view>

namespace mi {

// True when `s` is well-formed UTF-8: no stray continuation bytes, overlong
// forms, surrogates (U+D800..U+DFFF) or code points past U+10FFFF.
bool IsValidUtf8(std::string_view s);
// The offset of the first byte that breaks UTF-8, or std::string::npos.
size_t InvalidUtf8Offset(std::string_view s);

// Appends `s` so that it cannot break a line or a terminal: \n, \r and \t as
// those two-character escapes, other C0 controls, DEL and every byte that is not
// part of well-formed UTF-8 as \xHH. Printable ASCII (backslash included) and
// valid multi-byte characters are copied. The appended text is valid UTF-8 with
// no control characters. At most `max_bytes` are appended; an escape or a
// character is never cut. Returns false when `s` did not fit.
bool AppendEscaped(std::string_view s, std::string* out, size_t max_bytes = std::string::npos);
std::string Escaped(std::string_view s, size_t max_bytes = std::string::npos);

// True when no array or object in the JSON text `s` nests deeper than
// `max_depth` ("[]" and "{}" are depth 1). A linear scan that skips strings and
// their escapes; it says nothing else about validity. Run before
// nlohmann::json::parse on untrusted text: parse would build the tree, and
// dump and copy recurse once per level.
bool JsonDepthWithin(std::string_view s, int max_depth);

}  // namespace mi
