#include "proxy/http/response_writer.h"

#include <charconv>
#include <cstdint>

#include "agent/base/ascii.h"

namespace mi::proxy {
namespace {

void AppendNumber(std::string* out, uint64_t n) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof buf, n);
  out->append(buf, static_cast<size_t>(res.ptr - buf));
}

// A plain loop: std::string::find_first_of(const char*) calls memchr once per
// character of the string, which showed up at ~5% of a cached answer's
// instructions (Content-Type is checked on every response).
bool HasLineBreak(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n') return true;
  }
  return false;
}

// Appends a string literal with its length known at compile time (no strlen).
template <size_t N>
void AppendLiteral(std::string* out, const char (&text)[N]) {
  out->append(text, N - 1);
}

// A JSON string as nlohmann::json::dump(-1, ' ', false, replace) writes it
// (the server's own texts are ASCII; other bytes pass through unchanged).
void AppendJsonString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': AppendLiteral(out, "\\\""); break;
      case '\\': AppendLiteral(out, "\\\\"); break;
      case '\b': AppendLiteral(out, "\\b"); break;
      case '\f': AppendLiteral(out, "\\f"); break;
      case '\n': AppendLiteral(out, "\\n"); break;
      case '\r': AppendLiteral(out, "\\r"); break;
      case '\t': AppendLiteral(out, "\\t"); break;
      default:
        if (c < 0x20) {
          AppendLiteral(out, "\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xf]);
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

}  // namespace

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

bool ExtraHeaderAllowed(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  if (name.find_first_of(":\r\n ") != std::string_view::npos) return false;
  if (HasLineBreak(value)) return false;
  return !EqualsIgnoreCase(name, "content-length") && !EqualsIgnoreCase(name, "connection") &&
         !EqualsIgnoreCase(name, "transfer-encoding");
}

void Serialize(std::string* out, const HttpResponse& r, bool head_request, bool close, bool keep_alive_header) {
  int status = (r.status >= 100 && r.status <= 999) ? r.status : 500;
  // 1xx, 204 and 304 carry no body (RFC 9110 6.4.1).
  bool bodyless = status < 200 || status == 204 || status == 304;
  if (status == 200) {
    AppendLiteral(out, "HTTP/1.1 200 OK\r\n");  // every cached token: one append
  } else {
    AppendLiteral(out, "HTTP/1.1 ");
    AppendNumber(out, static_cast<uint64_t>(status));
    out->push_back(' ');
    out->append(ReasonPhrase(status));
    AppendLiteral(out, "\r\n");
  }
  if (!bodyless) {
    if (!r.content_type.empty() && !HasLineBreak(r.content_type)) {
      AppendLiteral(out, "Content-Type: ");
      out->append(r.content_type);
      AppendLiteral(out, "\r\n");
    }
    AppendLiteral(out, "Content-Length: ");
    AppendNumber(out, r.body.size());
    AppendLiteral(out, "\r\n");
  }
  for (const auto& [name, value] : r.headers) {
    if (!ExtraHeaderAllowed(name, value)) continue;
    out->append(name);
    AppendLiteral(out, ": ");
    out->append(value);
    AppendLiteral(out, "\r\n");
  }
  if (close) {
    AppendLiteral(out, "Connection: close\r\n");
  } else if (keep_alive_header) {
    AppendLiteral(out, "Connection: keep-alive\r\n");
  }
  AppendLiteral(out, "\r\n");
  if (!bodyless && !head_request) out->append(r.body);
}

std::string ProtocolErrorBody(std::string_view error, std::string_view description) {
  std::string out;
  out.reserve(40 + error.size() + description.size());
  AppendLiteral(&out, "{\"error\":");
  AppendJsonString(&out, error);
  AppendLiteral(&out, ",\"error_description\":");
  AppendJsonString(&out, description);
  out.push_back('}');
  return out;
}

// http_message.h: a Responder dropped without an answer.
void Responder::SendDropped() noexcept {
  HttpResponse r;
  r.status = 500;
  r.body = ProtocolErrorBody("unknown", "no response");
  Send(std::move(r));
}

}  // namespace mi::proxy
