#pragma once
// The accepting side of an HttpServer: listening sockets (TCP or Unix stream,
// bound or adopted), accept(), admission at max_connections (503 + Retry-After, or closing the
// connection idle longest), and the idle list that choice reads. Internal to
// mi_http: HttpServer owns one and forwards its public calls here.

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/base/status.h"
#include "agent/base/uv_handle.h"

namespace mi::proxy {

class HttpConnection;
class HttpServer;

class HttpListener {
 public:
  explicit HttpListener(HttpServer& server) : server_(server) {}
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  Status Listen(const std::string& host, uint16_t port);
  Status ListenUnix(const std::string& path);
  Status Adopt(uv_os_sock_t fd);
  Status AdoptConnection(uv_os_sock_t fd);
  std::vector<std::string> BoundAddresses() const;
  std::vector<uint16_t> BoundPorts() const;
  // Closes the listening sockets (their handles close in their destructors;
  // libuv unlinks the path of a Unix socket it bound as it closes it).
  void StopAccepting() { listeners_.clear(); }

  // The idle list: connections that owe their client nothing, the one quiet
  // longest first. Relisting moves a connection to the back.
  void ListIdle(HttpConnection* c);
  void UnlistIdle(HttpConnection* c);
  // A connection started closing: off the idle list and out of the counts.
  void OnConnectionClosing(HttpConnection* c);
  // The server is going away: the connections are closed without callbacks.
  void ForgetIdle() { idle_head_ = idle_tail_ = nullptr; }

 private:
  // Warnings that a flood could repeat are logged at most once per interval.
  struct Throttle {
    bool logged = false;
    uint64_t at = 0;
  };

  // One listening socket: exactly one of the two handles is set.
  struct Listening {
    std::unique_ptr<UvHandle<uv_tcp_t>> tcp;
    std::unique_ptr<UvHandle<uv_pipe_t>> pipe;  // a Unix stream socket
    uv_stream_t* stream() const {
      return tcp ? reinterpret_cast<uv_stream_t*>(tcp->get()) : reinterpret_cast<uv_stream_t*>(pipe->get());
    }
  };

  static void OnConnectionCb(uv_stream_t* listener, int status) noexcept;
  void OnConnection(uv_stream_t* listener, int status);
  // A new connection with its socket open: served, or answered 503 beyond
  // max_connections (unless an idle one can make room).
  void Admit(HttpConnection* c);
  Status AdoptUnix(uv_os_sock_t fd, const std::string& what);
  Status StartListener(Listening listener, const std::string& what);
  // evict_idle_at_limit: closes the first idle-listed connection that still
  // owes nothing; false if there is none.
  bool EvictIdlest();
  void NoteOverLimit();
  bool ShouldLog(Throttle* t);

  HttpServer& server_;
  std::vector<Listening> listeners_;
  HttpConnection* idle_head_ = nullptr;
  HttpConnection* idle_tail_ = nullptr;
  size_t rejecting_ = 0;  // connections being answered 503 beyond max_connections
  Throttle over_limit_log_;
  Throttle evict_log_;
  Throttle accept_error_log_;
};

}  // namespace mi::proxy
