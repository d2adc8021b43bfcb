#pragma once
// HTTP/1.1 response bytes: the status line, framing headers, the handler's
// extra headers (sanitised) and the body. Pure functions, no libuv.

#include <string>
#include <string_view>

#include "proxy/http/http_message.h"

namespace mi::proxy {

// "OK", "Not Found", ...; "Unknown" for a code without a registered phrase.
std::string_view ReasonPhrase(int status);

// Appends `response` to `out`. A status outside 100..999 is sent as 500.
// 1xx, 204 and 304 carry no body and no Content-Type/Content-Length; a HEAD
// request (`head_request`) gets the headers without the body. `close` adds
// "Connection: close"; otherwise `keep_alive_header` adds
// "Connection: keep-alive" (an HTTP/1.0 client that asked to keep it).
void Serialize(std::string* out, const HttpResponse& response, bool head_request, bool close,
               bool keep_alive_header);

// An extra header may go out: a token name, no line break in the value, and
// not one of the framing headers the server writes itself.
bool ExtraHeaderAllowed(std::string_view name, std::string_view value);

// {"error":"...","error_description":"..."}: the body of the answers the
// server gives itself (protocol errors, 503 at the cap or the drain deadline,
// 500 for a dropped Responder). Escapes like nlohmann::json::dump() so the
// bytes are those the server always sent.
std::string ProtocolErrorBody(std::string_view error, std::string_view description);

}  // namespace mi::proxy
