#pragma once
// A keep-alive HTTP/1.1 server on libuv + llhttp. Generic: it knows nothing of
// tokens. The token API (token_api.h), the health listener and the IMDS emulator
// all sit on it.
//
// Contract:
//  * Loop thread only. One HttpHandler serves every connection of a server.
//  * Requests on a connection are handed to the handler in order; responses go
//    out in request order even when the handler answers them out of order
//    (pipelining). At most `max_pipelined` requests per connection are in
//    flight; beyond that the server stops reading that connection until answers
//    go out (back-pressure, no unbounded queue).
//  * Bodies with Content-Length and chunked Transfer-Encoding are assembled
//    before the handler sees the request.
//  * The server answers protocol errors itself with a JSON body
//    {"error":"bad_request","error_description":"..."} and closes:
//      400 malformed request, 413 body too large, 431 headers too large,
//      408 header-read timeout (slow-loris), 505 bad version,
//      503 + Retry-After when max_connections is reached (unless
//      evict_idle_at_limit makes room by closing an idle connection).
//  * Idle keep-alive connections are closed after idle_timeout.
//  * Responses carry Content-Length, Content-Type, and "Connection: close" when
//    the server will close after them; writes are batched per connection per
//    loop turn. TCP_NODELAY is set on accepted sockets.
//  * The handler must not destroy the server from inside OnRequest (the
//    Shutdown `done` callback may). On POSIX the process must ignore SIGPIPE
//    (a client may vanish while its answer is written).

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/log.h"
#include "agent/base/status.h"

namespace mi::proxy {

struct ServerLimits {
  size_t max_connections = 10000;
  size_t max_header_bytes = 8192;   // request line + headers
  size_t max_body_bytes = 8192;
  // From first byte of a request to headers complete (408); a body then gets
  // the same allowance again, counted from the end of the headers.
  Duration header_timeout = Duration(10000);
  Duration idle_timeout = Duration(60000);    // no request in progress and nothing to write
  size_t max_pipelined = 32;
  // At max_connections: false answers the new connection 503; true closes the
  // connection quiet longest among those that owe their client nothing (no
  // request waiting for the handler's answer, nothing left to write) to admit
  // it, and answers 503 only when none does. For listeners where a pile of
  // idle sockets must not lock out new clients (the health listener).
  bool evict_idle_at_limit = false;
  // Shutdown(): after the deadline's 503s, this long for them to be written
  // before whatever is left is closed (a client that does not read).
  Duration drain_grace = Duration(2000);
};

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
  bool peer_is_loopback = false;  // 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104
  std::string peer;               // "127.0.0.1:53122" (for logs)

  // First value of header `lower_name`, or null.
  const std::string* Header(std::string_view lower_name) const;
  size_t HeaderCount(std::string_view lower_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  // Extra headers (e.g. {"Retry-After", "5"}). No Content-Length/Connection here.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool close = false;  // close the connection after this response
};

namespace detail {
struct Exchange;
}

// The right to answer one request. Move-only, cheap. Send() exactly once, now or
// later, on the loop thread. If the connection is gone, Send() is a no-op.
// Dropping a Responder without sending answers 500.
class Responder {
 public:
  Responder() = default;
  explicit Responder(std::shared_ptr<detail::Exchange> exchange) : exchange_(std::move(exchange)) {}
  Responder(Responder&&) noexcept = default;
  Responder& operator=(Responder&&) noexcept = default;
  ~Responder();

  void Send(HttpResponse&& response);
  // Instead of Send(): closes the connection at once without answering (TCP
  // reset where the platform allows). Answers not yet written on that
  // connection are dropped. For fault injection (the IMDS emulator's "reset").
  void Abort();
  // The connection is still open and the client has not closed its side of it
  // (EOF usually means it gave up waiting). Send() still delivers to a client
  // that only half-closed.
  bool connected() const;

 private:
  std::shared_ptr<detail::Exchange> exchange_;
};

class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  virtual void OnRequest(HttpRequest& request, Responder responder) = 0;
};

struct ServerStats {
  size_t open_connections = 0;
  uint64_t accepted = 0;             // connections admitted (not counting 503 rejects)
  uint64_t requests = 0;             // requests handed to the handler
  uint64_t rejected_over_limit = 0;  // 503 at max_connections
  uint64_t evicted_idle = 0;         // closed to admit another (evict_idle_at_limit)
  uint64_t timed_out = 0;            // header-read (408) and idle closes
  uint64_t protocol_errors = 0;      // 400/413/431/505
};

class HttpServer {
 public:
  HttpServer(uv_loop_t* loop, const ServerLimits& limits, HttpHandler* handler, Logger* logger);
  // Closes listeners and connections (handles are released in close callbacks).
  ~HttpServer();

  // Binds and listens; may be called for several addresses. Port 0 picks an
  // ephemeral port (see BoundPorts()). IPv6 sockets are v6-only.
  Status Listen(const std::string& host, uint16_t port);
  // Adopts an already-listening socket (systemd socket activation).
  Status Adopt(uv_os_sock_t fd);
  // "127.0.0.1:50342", "[::1]:50342" for each listener, in order.
  std::vector<std::string> BoundAddresses() const;
  std::vector<uint16_t> BoundPorts() const;

  void set_limits(const ServerLimits& limits);  // applies to new connections/requests
  const ServerStats& stats() const;

  // Stops accepting; open connections continue.
  void StopAccepting();
  // Graceful stop: stop accepting, let requests in flight finish and their
  // answers be written, close idle connections at once, then call `done`.
  // At `deadline`, every request still unanswered is answered 503
  // {"error":"temporarily_unavailable",...} with Retry-After (after the answers
  // owed before it, in order; the last answer on a connection carries
  // "Connection: close") and the handler's later Send() is a no-op; after
  // limits.drain_grace, whatever is still open is closed and `done` is called.
  void Shutdown(Duration deadline, std::function<void()> done);

  // Serves an already-connected stream socket as if it had just been accepted
  // (limits, timers and max_connections apply). For the fuzzer, which drives
  // the server over socketpair(): such a peer is not loopback. On success the
  // server owns `fd`; on error the caller still does.
  Status AdoptConnection(uv_os_sock_t fd);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes a JSON error body {"error":..,"error_description":..}.
std::string ErrorBody(std::string_view error, std::string_view description);

}  // namespace mi::proxy
