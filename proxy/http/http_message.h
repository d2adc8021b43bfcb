#pragma once
// The values and interfaces a handler sees: one request, one response, and the
// channel that carries the answer back (ResponseSink behind a Responder). No
// libuv here: handlers are tested with a RecordingSink (tests/fakes).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/base/peer_credentials.h"

namespace mi::proxy {

struct HttpRequest {
  std::string method;  // "GET", "POST", ... as sent
  std::string target;  // request target as sent ("/oauth2/token?resource=...")
  int http_minor = 1;  // HTTP/1.<http_minor> (other major versions are answered 505)
  // Header names lower-cased, values with surrounding whitespace trimmed, in
  // arrival order, duplicates kept. Never the fields of a chunked trailer: those
  // count against max_header_bytes and are dropped.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // de-chunked
  bool keep_alive = true;
  bool peer_is_loopback = false;  // 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104, or a Unix socket peer
  std::string peer;               // "127.0.0.1:53122", "unix:pid=4711" (for logs)
  // The owner of the client's socket, looked up once when a loopback
  // connection is accepted (HttpServer's PeerResolver), or for a Unix socket
  // the kernel's SO_PEERCRED (uid, gid, pid); known = false for other peers
  // and when the lookup fails.
  PeerCredentials caller;
  // Which kind of listener accepted the connection (audit records name it).
  enum class Transport : uint8_t { kTcp, kUnix };
  Transport transport = Transport::kTcp;

  // First value of header `lower_name`, or null.
  const std::string* Header(std::string_view lower_name) const {
    for (const auto& [name, value] : headers) {
      if (name == lower_name) return &value;
    }
    return nullptr;
  }
  size_t HeaderCount(std::string_view lower_name) const {
    size_t n = 0;
    for (const auto& header : headers) {
      if (header.first == lower_name) ++n;
    }
    return n;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  // Extra headers (e.g. {"Retry-After", "5"}). No Content-Length/Connection here.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool close = false;  // close the connection after this response
};

// One request's answer channel. Loop thread only. The server's implementation
// lives in http_connection.cc; tests use tests/fakes/recording_sink.h.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // At most once (Responder sees to it). A no-op once the connection is gone.
  virtual void Send(HttpResponse&& response) = 0;
  // Instead of Send(): closes the connection at once without answering (TCP
  // reset where the platform allows). Answers not yet written on that
  // connection are dropped. For fault injection (the IMDS emulator's "reset").
  virtual void Abort() = 0;
  // The connection is still open and the client has not closed its side of it
  // (EOF usually means it gave up waiting). Send() still delivers to a client
  // that only half-closed.
  virtual bool connected() const = 0;
};

// The right to answer one request: a move-only value around the sink. Send()
// or Abort() exactly once, now or later, on the loop thread. Dropping (or
// overwriting) a Responder that did neither answers 500.
class Responder {
 public:
  Responder() = default;
  explicit Responder(std::shared_ptr<ResponseSink> sink) : sink_(std::move(sink)) {}
  Responder(Responder&&) noexcept = default;
  Responder& operator=(Responder&& other) noexcept {
    if (this != &other) {
      AnswerIfDropped();
      sink_ = std::move(other.sink_);
    }
    return *this;
  }
  ~Responder() { AnswerIfDropped(); }

  void Send(HttpResponse&& response) {
    std::shared_ptr<ResponseSink> sink = std::move(sink_);
    if (sink) sink->Send(std::move(response));
  }
  void Abort() {
    std::shared_ptr<ResponseSink> sink = std::move(sink_);
    if (sink) sink->Abort();
  }
  bool connected() const { return sink_ && sink_->connected(); }

 private:
  // 500 {"error":"unknown","error_description":"no response"} (response_writer.cc).
  void AnswerIfDropped() noexcept {
    if (sink_) SendDropped();
  }
  void SendDropped() noexcept;

  std::shared_ptr<ResponseSink> sink_;
};

class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  // `request` is valid for this call only.
  virtual void OnRequest(const HttpRequest& request, Responder responder) = 0;
};

}  // namespace mi::proxy
