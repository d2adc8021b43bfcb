// libFuzzer target: raw bytes through RequestParser alone (llhttp glue, header
// and body caps, chunked, 100-continue), split into pieces at points the input
// chooses. No socket, no loop: millions of inputs a minute. The whole server
// (connection, pipelining, the token API) is http_request_fuzz.
//
// Input: two bytes that seed the piece lengths, then the bytes of the stream.
// Beyond the sanitizers, every input must satisfy:
//  * Feed() uses at most what it is given, all of it unless it stopped at a
//    request or a 100-continue, and takes nothing after an error;
//  * an error is 400, 413, 431 or 505 with a description;
//  * a request has lower-case header names, trimmed values, a body within the
//    cap, and HTTP/1.x;
//  * the split changes nothing: the same requests and the same error as the
//    stream fed in one piece (but for 431, whose limit counts the bytes of
//    each piece up to its end, so a cut can move it by a line break).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/request_parser.h"

namespace mi::proxy {
namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "request_parser_fuzz: %s\n", what);
  std::abort();
}

void Must(bool ok, const char* what) {
  if (!ok) Die(what);
}

struct Outcome {
  std::vector<HttpRequest> requests;
  size_t continues = 0;
  int error = 0;
};

bool IsOws(char c) { return c == ' ' || c == '\t'; }

void CheckRequest(const HttpRequest& r, const RequestParser::Limits& limits) {
  Must(!r.method.empty(), "a request without a method");
  Must(r.http_minor >= 0 && r.http_minor <= 9, "a request with an odd minor version");
  Must(r.body.size() <= limits.max_body_bytes, "a body over the cap");
  for (const auto& [name, value] : r.headers) {
    for (char c : name) Must(!(c >= 'A' && c <= 'Z'), "a header name not lower-cased");
    Must(value.empty() || (!IsOws(value.front()) && !IsOws(value.back())), "a header value not trimmed");
  }
}

// Feeds `stream` in pieces of the lengths `next_length` gives.
template <typename NextLength>
Outcome Parse(std::string_view stream, const RequestParser::Limits& limits, NextLength next_length) {
  Outcome out;
  RequestParser parser(limits);
  while (!stream.empty()) {
    std::string_view piece = stream.substr(0, next_length());
    stream.remove_prefix(piece.size());
    // A copy: the parser must not keep pointers into a piece after Feed().
    std::string copy(piece);
    std::string_view rest = copy;
    while (!rest.empty()) {
      RequestParser::Event event;
      const size_t used = parser.Feed(rest, &event);
      Must(used <= rest.size(), "Feed() used more than it was given");
      rest.remove_prefix(used);
      switch (event) {
        case RequestParser::Event::kNeedMore:
          Must(rest.empty() || parser.upgraded(), "kNeedMore with bytes left");
          if (parser.upgraded()) return out;
          break;
        case RequestParser::Event::kRequest:
          CheckRequest(parser.request(), limits);
          out.requests.push_back(parser.request());
          Must(!parser.in_request(), "a complete request still in progress");
          if (!parser.request().keep_alive) return out;  // the server stops reading here
          break;
        case RequestParser::Event::kExpectContinue:
          ++out.continues;
          Must(parser.in_request(), "100-continue outside a request");
          break;
        case RequestParser::Event::kError: {
          const int s = parser.error_status();
          Must(s == 400 || s == 413 || s == 431 || s == 505, "an error status other than 400/413/431/505");
          Must(!parser.error_description().empty(), "an error without a description");
          Must(rest.empty(), "bytes left after an error");
          RequestParser::Event again;
          Must(parser.Feed("GET / HTTP/1.1\r\n\r\n", &again) == 18 && again == RequestParser::Event::kError,
               "the parser took input after an error");
          out.error = s;
          return out;
        }
      }
    }
  }
  return out;
}

bool SameRequest(const HttpRequest& a, const HttpRequest& b) {
  return a.method == b.method && a.target == b.target && a.http_minor == b.http_minor && a.headers == b.headers &&
         a.body == b.body && a.keep_alive == b.keep_alive;
}

}  // namespace
}  // namespace mi::proxy

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mi::proxy;
  if (size < 2) return 0;
  uint32_t state = (static_cast<uint32_t>(data[0]) << 8 | data[1]) * 2654435761u + 1;
  const std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);
  // Small caps so that short inputs reach them.
  RequestParser::Limits limits;
  limits.max_header_bytes = 1024;
  limits.max_body_bytes = 512;

  const Outcome whole = Parse(stream, limits, [] { return std::string_view::npos; });
  const uint32_t max_piece = 1 + (state >> 24) % 64;
  const Outcome split = Parse(stream, limits, [&] {
    state = state * 1103515245u + 12345u;
    return static_cast<size_t>(1 + (state >> 16) % max_piece);
  });

  if (whole.error == 431 || split.error == 431) return 0;  // the one split-dependent limit (see above)
  Must(whole.error == split.error, "the split changed the error");
  Must(whole.continues == split.continues, "the split changed the 100-continues");
  Must(whole.requests.size() == split.requests.size(), "the split changed the number of requests");
  for (size_t i = 0; i < whole.requests.size(); ++i) {
    Must(SameRequest(whole.requests[i], split.requests[i]), "the split changed a request");
  }
  return 0;
}
