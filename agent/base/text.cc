#include "agent/base/text.h"

namespace mi {
namespace {

// The length of the well-formed UTF-8 sequence starting at s[i], or 0.
size_t Utf8Length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;       // overlong
    else if (c == 0xed) hi = 0x9f;  // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;       // overlong
    else if (c == 0xf4) hi = 0x8f;  // past U+10FFFF
  } else {
    return 0;  // continuation byte, C0/C1 overlong lead, F5..FF
  }
  if (s.size() - i < n) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  }
  return n;
}

}  // namespace

size_t InvalidUtf8Offset(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8Length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string::npos;
}

bool IsValidUtf8(std::string_view s) { return InvalidUtf8Offset(s) == std::string::npos; }

bool AppendEscaped(std::string_view s, std::string* out, size_t max_bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t room = max_bytes;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = Utf8Length(s, i);
    char escape[4] = {'\\', 0, 0, 0};
    size_t escape_len = 0;
    if (c == '\n') escape[1] = 'n', escape_len = 2;
    else if (c == '\r') escape[1] = 'r', escape_len = 2;
    else if (c == '\t') escape[1] = 't', escape_len = 2;
    else if (c < 0x20 || c == 0x7f || n == 0) {
      escape[1] = 'x';
      escape[2] = kHex[c >> 4];
      escape[3] = kHex[c & 0xf];
      escape_len = 4;
    }
    const size_t len = escape_len != 0 ? escape_len : n;
    if (len > room) return false;
    room -= len;
    if (escape_len != 0) {
      out->append(escape, escape_len);
      i += 1;
    } else {
      out->append(s.data() + i, n);
      i += n;
    }
  }
  return true;
}

std::string Escaped(std::string_view s, size_t max_bytes) {
  std::string out;
  AppendEscaped(s, &out, max_bytes);
  return out;
}

bool JsonDepthWithin(std::string_view s, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

}  // namespace mi
