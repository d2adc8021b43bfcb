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
//    loop turn. TCP_NODELAY is set on accepted TCP sockets.
//  * Listeners are TCP (IPv4/IPv6) or Unix stream sockets, served alike. Each
//    request says which (HttpRequest::transport) and who the caller is
//    (HttpRequest::caller): for loopback TCP from the PeerResolver, for a Unix
//    socket from SO_PEERCRED (Linux), both once per connection at accept.
//  * The handler must not destroy the server from inside OnRequest (the
//    Shutdown `done` callback may). On POSIX the process must ignore SIGPIPE
//    (a client may vanish while its answer is written).

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/log.h"
#include "agent/base/peer_lookup.h"
#include "agent/base/status.h"
#include "agent/base/uv_handle.h"
#include "proxy/http/http_listener.h"
#include "proxy/http/http_message.h"
#include "proxy/http/request_parser.h"

namespace mi::proxy {

struct ServerLimits {
  size_t max_connections = 10000;
  // The parser's caps (request line + headers; de-chunked body): the defaults are
  // the parser's own, declared once in request_parser.h.
  size_t max_header_bytes = RequestParser::Limits().max_header_bytes;
  size_t max_body_bytes = RequestParser::Limits().max_body_bytes;
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
  // `handler`, `logger` and `peers` must outlive the server. `peers` names the
  // owner of each accepted loopback connection's client socket, once per
  // connection (HttpRequest::caller); null: the platform's own
  // (MakeSystemPeerResolver(), owned by the server).
  HttpServer(uv_loop_t* loop, const ServerLimits& limits, HttpHandler& handler, Logger& logger,
             PeerResolver* peers = nullptr);
  // Closes listeners and connections (handles are released in close callbacks).
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; may be called for several addresses. Port 0 picks an
  // ephemeral port (see BoundPorts()). IPv6 sockets are v6-only.
  Status Listen(const std::string& host, uint16_t port) { return listener_.Listen(host, port); }
  // Binds a Unix stream socket at `path` (POSIX; on Windows an error, "unix_socket
  // is not supported on Windows") and listens. The socket file is made 0666:
  // any local user may connect, and what each gets is the authorization
  // policy's decision on its SO_PEERCRED credentials (per request), not the
  // file mode's. `path` must be shorter than sockaddr_un's sun_path. A file
  // that exists there is refused unless it is a socket that refuses
  // connections (nobody listens: left by a crash), which is removed; symlinks
  // are never followed. The file is unlinked when the listener closes
  // (StopAccepting, Shutdown, destruction) if this server created it.
  // Blocking system calls (lstat, connect, unlink): start-up only.
  Status ListenUnix(const std::string& path) { return listener_.ListenUnix(path); }
  // Adopts an already-listening socket (systemd socket activation): TCP, or a
  // Unix stream socket (getsockname's family decides), which is served like
  // one from ListenUnix() but never unlinked (the service manager owns it).
  Status Adopt(uv_os_sock_t fd) { return listener_.Adopt(fd); }
  // "127.0.0.1:50342", "[::1]:50342", "unix:/run/mi-agent/token.sock" for
  // each listener, in order.
  std::vector<std::string> BoundAddresses() const { return listener_.BoundAddresses(); }
  // Each listener's port, in order (0 for a Unix socket).
  std::vector<uint16_t> BoundPorts() const { return listener_.BoundPorts(); }

  void set_limits(const ServerLimits& limits) { limits_ = limits; }  // applies to new connections/requests
  const ServerStats& stats() const { return stats_; }

  // Stops accepting; open connections continue.
  void StopAccepting() { listener_.StopAccepting(); }
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
  // the server over socketpair(): served as TCP, such a peer is not loopback
  // and its caller is unknown. On success the
  // server owns `fd`; on error the caller still does.
  Status AdoptConnection(uv_os_sock_t fd) { return listener_.AdoptConnection(fd); }

 private:
  friend class HttpConnection;
  friend class HttpListener;
  static constexpr size_t kReadBufferSize = 64 * 1024;

  // A connection with its socket handle (TCP or pipe) initialised, in
  // connections_; null if the handle's init failed.
  HttpConnection* NewConnection(HttpRequest::Transport transport);
  // For connections.
  void Schedule(HttpConnection* c);
  void OnConnectionClosing(HttpConnection* c);  // Close() started
  void Forget(HttpConnection* c);               // about to be deleted
  // The per-turn pass: a uv_check + uv_idle pair that services every
  // connection with work once per loop iteration.
  void StartTurn();
  void StopTurn();
  void OnTurn();
  void StartDeadlineTimer(Duration delay);
  void OnDeadline();
  void MaybeFinishShutdown();

  uv_loop_t* const loop_;
  ServerLimits limits_;
  HttpHandler& handler_;
  Logger& logger_;
  std::unique_ptr<PeerResolver> own_peers_;  // when none was given
  PeerResolver& peers_;
  ServerStats stats_;
  std::unique_ptr<char[]> read_buffer_;  // one for every connection (see HttpConnection::OnAlloc)
  HttpListener listener_;
  std::unordered_set<HttpConnection*> connections_;  // every connection not yet deleted
  std::vector<HttpConnection*> dirty_;
  std::vector<HttpConnection*> servicing_;
  UvHandle<uv_check_t> check_;
  UvHandle<uv_idle_t> idle_;
  bool turn_active_ = false;
  UvHandle<uv_timer_t> deadline_timer_;
  bool shutting_down_ = false;
  bool deadline_passed_ = false;  // the 503s are out; the timer now bounds the grace
  bool done_pending_ = false;
  std::function<void()> shutdown_done_;
};

}  // namespace mi::proxy
