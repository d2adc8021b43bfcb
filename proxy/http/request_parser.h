#pragma once
// The request side of HTTP/1.1: llhttp plus the server's size limits, without
// libuv, so the protocol is tested and fuzzed on bytes. One parser per
// connection; it keeps its state between Feed() calls (a request may arrive
// in any number of pieces). Model: Envoy source/common/http/http1/parser.h.
//
//   RequestParser parser(limits);
//   RequestParser::Event event;
//   size_t used = parser.Feed(bytes, &event);  // stops after each event
//   kRequest:        parser.request() is complete; feed bytes.substr(used) next
//   kExpectContinue: headers with "Expect: 100-continue" and a body; the body follows
//   kError:          answer error_status() and close; the parser takes nothing more
//   kNeedMore:       every byte was used
//
// Limits: max_header_bytes bounds the request line plus headers (and again a
// chunked trailer, whose fields are dropped); max_body_bytes the de-chunked
// body (a Content-Length above it fails at once). Errors: 400 malformed, 413
// body too large, 431 headers too large, 505 a major version other than 1.

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/http/http_message.h"

namespace mi::proxy {

class RequestParser {
 public:
  struct Limits {
    size_t max_header_bytes = 8192;
    size_t max_body_bytes = 8192;
  };
  enum class Event { kNeedMore, kRequest, kExpectContinue, kError };

  explicit RequestParser(const Limits& limits);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Applies from the next Feed() (the server's limits may be changed on reload).
  void set_limits(const Limits& limits) { limits_ = limits; }

  // Parses `bytes` up to and including the next event; returns the bytes used
  // (all of them unless the event is kRequest or kExpectContinue).
  size_t Feed(std::string_view bytes, Event* event);

  // After kRequest: the request, valid (and mutable, for the caller's peer
  // fields) until the next Feed(). A reference rather than a moved-out value
  // so that a keep-alive connection reuses the strings' and the header
  // vector's capacity from one request to the next (the cached-token path
  // allocates nothing for them).
  HttpRequest& request() { return request_; }

  // After kError: 400, 413, 431 or 505, and the text for the error body.
  int error_status() const { return error_status_; }
  std::string_view error_description() const { return error_description_; }

  // A request has begun and is not complete: its time allowance runs.
  bool in_request() const { return in_message_; }
  // Counts the starts of a request's time allowance: at its first byte, and
  // again at the end of headers that announce a body (the body gets the same
  // allowance afresh). The caller re-arms its request timer when it changes.
  uint64_t allowance_starts() const { return allowance_starts_; }
  // The client asked for another protocol (Upgrade/CONNECT): nothing after the
  // request is parsed.
  bool upgraded() const { return upgraded_; }

  // The input ended (the client half-closed): a request begun can never
  // complete, so in_request() turns false.
  void EndOfInput() {
    in_message_ = false;
    in_head_ = false;
  }

 private:
  int HeadSpan(const char* at, size_t len);
  int Fail(int status, const char* description);
  void SetError(llhttp_errno_t err);

  int OnMessageBegin();
  int OnUrl(const char* at, size_t len);
  int OnHeaderField(const char* at, size_t len);
  int OnHeaderValue(const char* at, size_t len);
  int OnHeaderValueComplete();
  int OnHeadersComplete();
  int OnBody(const char* at, size_t len);
  int OnMessageComplete();

  static const llhttp_settings_t kSettings;
  static llhttp_settings_t MakeSettings();
  static RequestParser* From(llhttp_t* p) { return static_cast<RequestParser*>(p->data); }

  Limits limits_;
  llhttp_t parser_;
  Event event_ = Event::kNeedMore;  // set by a callback that pauses llhttp
  bool failed_ = false;
  bool upgraded_ = false;
  bool in_message_ = false;  // first byte of a request seen, message not complete
  bool in_head_ = false;     // request line + headers not complete
  uint64_t allowance_starts_ = 0;
  int error_status_ = 0;  // set by a callback before it fails the parse
  const char* fail_description_ = nullptr;
  std::string error_description_;
  size_t head_bytes_ = 0;
  const char* head_start_ = nullptr;  // start of the uncounted head bytes in the current segment
  const char* last_end_ = nullptr;    // end of the last head span in the current segment
  HttpRequest request_;
  std::string field_;
  std::string value_;
};

}  // namespace mi::proxy
