#include "proxy/http/http_listener.h"

#include <cerrno>
#include <cstring>

#ifndef _WIN32
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#endif

#include "agent/base/log.h"
#include "agent/base/socket_address.h"
#include "proxy/http/http_connection.h"
#include "proxy/http/http_server.h"
#include "proxy/http/unix_socket.h"

namespace mi::proxy {
namespace {

constexpr int kBacklog = 1024;
// Connections being answered 503 beyond max_connections; past this they are
// closed without an answer.
constexpr size_t kMaxRejecting = 256;
// Flood warnings (max_connections reached, accept failing) at most once per this.
constexpr uint64_t kLogIntervalMs = 60000;

}  // namespace

Status HttpListener::Listen(const std::string& host_in, uint16_t port) {
  std::string host = host_in;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const bool v6 = host.find(':') != std::string::npos;
  std::string what = "listen " + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  sockaddr_storage addr;
  std::memset(&addr, 0, sizeof addr);
  int rc = v6 ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr))
              : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) return Status::Error(what + ": invalid address");
  auto listener = std::make_unique<UvHandle<uv_tcp_t>>();
  rc = listener->Init(uv_tcp_init, server_.loop_, this);
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  rc = uv_tcp_bind(listener->get(), reinterpret_cast<const sockaddr*>(&addr), v6 ? UV_TCP_IPV6ONLY : 0);
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  return StartListener({std::move(listener), nullptr}, what);
}

Status HttpListener::ListenUnix(const std::string& path) {
#ifdef _WIN32
  (void)path;
  return Status::Error("unix_socket is not supported on Windows");
#else
  const std::string what = "listen unix:" + path;
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path) || path.find('\0') != std::string::npos) {
    return Status::Error(what + ": expected a path of 1 to " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                         " bytes");
  }
  Status s = ClearStaleUnixSocket(path, what);
  if (!s.ok()) return s;
  auto listener = std::make_unique<UvHandle<uv_pipe_t>>();
  int rc = listener->Init(uv_pipe_init, server_.loop_, this, 0);
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  rc = uv_pipe_bind(listener->get(), path.c_str());
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  // From here the handle owns the path: closing it (also on the error paths
  // below) unlinks it.
  // Any local user may connect, as any local user may reach the TCP listener:
  // what a caller gets is decided per request from its SO_PEERCRED
  // credentials (authorization policy), not by the file mode.
  if (::chmod(path.c_str(), 0666) != 0) return Status::Error(what + ": chmod: " + std::strerror(errno));
  return StartListener({nullptr, std::move(listener)}, what);
#endif
}

Status HttpListener::Adopt(uv_os_sock_t fd) {
  std::string what = "adopt listening socket " + std::to_string(static_cast<long long>(fd));
#ifndef _WIN32
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof ss);
  socklen_t ss_len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &ss_len) == 0 && ss.ss_family == AF_UNIX) {
    return AdoptUnix(fd, what);
  }
#endif
  auto listener = std::make_unique<UvHandle<uv_tcp_t>>();
  int rc = listener->Init(uv_tcp_init, server_.loop_, this);
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  rc = uv_tcp_open(listener->get(), fd);
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  return StartListener({std::move(listener), nullptr}, what);
}

// A socket the service manager bound: it is not ours to unlink (uv_pipe_open
// records no path, so closing leaves the file alone).
Status HttpListener::AdoptUnix(uv_os_sock_t fd, const std::string& what) {
#ifdef _WIN32
  (void)fd;
  return Status::Error(what + ": unix_socket is not supported on Windows");
#else
  auto listener = std::make_unique<UvHandle<uv_pipe_t>>();
  int rc = listener->Init(uv_pipe_init, server_.loop_, this, 0);
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  rc = uv_pipe_open(listener->get(), fd);
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  return StartListener({nullptr, std::move(listener)}, what);
#endif
}

Status HttpListener::StartListener(Listening listener, const std::string& what) {
  // bind() may report EADDRINUSE only here.
  int rc = uv_listen(listener.stream(), kBacklog, OnConnectionCb);
  if (rc != 0) return Status::Error(what + ": " + uv_strerror(rc));
  listeners_.push_back(std::move(listener));
  return Status::Ok();
}

std::vector<std::string> HttpListener::BoundAddresses() const {
  std::vector<std::string> out;
  for (const auto& l : listeners_) {
    if (l.pipe) {
      char path[512];
      size_t len = sizeof path;
      if (uv_pipe_getsockname(l.pipe->get(), path, &len) == 0) {
        std::string name(path, len);
        if (!name.empty() && name[0] == '\0') name[0] = '@';  // a Linux abstract socket, as systemd writes it
        out.push_back("unix:" + name);
      } else {
        out.emplace_back();
      }
      continue;
    }
    sockaddr_storage ss;
    std::memset(&ss, 0, sizeof ss);
    int len = sizeof ss;
    if (uv_tcp_getsockname(l.tcp->get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      out.push_back(FormatAddress(ss));
    } else {
      out.emplace_back();
    }
  }
  return out;
}

std::vector<uint16_t> HttpListener::BoundPorts() const {
  std::vector<uint16_t> out;
  for (const auto& l : listeners_) {
    sockaddr_storage ss;
    std::memset(&ss, 0, sizeof ss);
    int len = sizeof ss;
    const bool named = l.tcp && uv_tcp_getsockname(l.tcp->get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0;
    out.push_back(named ? PortOf(ss) : 0);
  }
  return out;
}

void HttpListener::OnConnectionCb(uv_stream_t* listener, int status) noexcept {
  auto* self = static_cast<HttpListener*>(listener->data);
  if (self == nullptr) return;
  self->OnConnection(listener, status);
}

void HttpListener::OnConnection(uv_stream_t* listener, int status) {
  if (status < 0) {
    if (ShouldLog(&accept_error_log_)) {
      MI_LOG(server_.logger_, kWarning) << "http: failed to accept connection, ignoring: " << uv_strerror(status);
    }
    return;  // ignore errors, continue serving
  }
  const auto transport =
      listener->type == UV_NAMED_PIPE ? HttpRequest::Transport::kUnix : HttpRequest::Transport::kTcp;
  HttpConnection* c = server_.NewConnection(transport);
  if (c == nullptr) {
    MI_LOG(server_.logger_, kError) << "http: cannot create a socket handle, connection left pending";
    return;
  }
  int rc = uv_accept(listener, c->stream());
  if (rc != 0) {
    if (ShouldLog(&accept_error_log_)) {
      MI_LOG(server_.logger_, kWarning) << "http: failed to accept connection, ignoring: " << uv_strerror(rc);
    }
    c->Close();
    return;
  }
  if (!c->InitTimer()) {
    MI_LOG(server_.logger_, kError) << "http: cannot create a timer, closing the new connection";
    c->Close();
    return;
  }
  if (server_.shutting_down_) {
    c->Close();
    return;
  }
  Admit(c);
}

// OnConnection() for a socket that needs no accept(). The socket is opened last
// so that on every error path the caller still owns it.
Status HttpListener::AdoptConnection(uv_os_sock_t fd) {
  auto fail = [fd](const std::string& why) {
    return Status::Error("adopt connected socket " + std::to_string(static_cast<long long>(fd)) + ": " + why);
  };
  if (server_.shutting_down_) return fail("the server is shutting down");
  HttpConnection* c = server_.NewConnection(HttpRequest::Transport::kTcp);
  if (c == nullptr) return fail("cannot create a socket handle");
  if (!c->InitTimer()) {
    c->Close();
    return fail("cannot create a timer");
  }
  int rc = uv_tcp_open(reinterpret_cast<uv_tcp_t*>(c->stream()), fd);
  if (rc != 0) {
    c->Close();
    return fail(uv_strerror(rc));
  }
  Admit(c);
  return Status::Ok();
}

void HttpListener::Admit(HttpConnection* c) {
  const ServerLimits& limits = server_.limits_;
  ServerStats& stats = server_.stats_;
  if (stats.open_connections >= limits.max_connections && !(limits.evict_idle_at_limit && EvictIdlest())) {
    ++stats.rejected_over_limit;
    if (rejecting_ >= kMaxRejecting) {
      c->Close();
      return;
    }
    ++rejecting_;
    NoteOverLimit();
    c->Reject();
    return;
  }
  c->Start();
}

bool HttpListener::ShouldLog(Throttle* t) {
  const uint64_t now = uv_now(server_.loop_);
  if (t->logged && now - t->at < kLogIntervalMs) return false;
  t->logged = true;
  t->at = now;
  return true;
}

void HttpListener::NoteOverLimit() {
  if (!ShouldLog(&over_limit_log_)) return;
  MI_LOG(server_.logger_, kWarning) << "http: max_connections (" << server_.limits_.max_connections
                                    << ") reached, answering 503 to new connections";
}

void HttpListener::ListIdle(HttpConnection* c) {
  UnlistIdle(c);
  c->idle_listed = true;
  c->idle_prev = idle_tail_;
  c->idle_next = nullptr;
  if (idle_tail_ != nullptr) idle_tail_->idle_next = c;
  else idle_head_ = c;
  idle_tail_ = c;
}

void HttpListener::UnlistIdle(HttpConnection* c) {
  if (!c->idle_listed) return;
  if (c->idle_prev != nullptr) c->idle_prev->idle_next = c->idle_next;
  else idle_head_ = c->idle_next;
  if (c->idle_next != nullptr) c->idle_next->idle_prev = c->idle_prev;
  else idle_tail_ = c->idle_prev;
  c->idle_listed = false;
  c->idle_prev = c->idle_next = nullptr;
}

bool HttpListener::EvictIdlest() {
  // The list is refreshed when connections are serviced; one may have taken a
  // request since (read, not yet serviced), so check each candidate afresh.
  for (HttpConnection* c = idle_head_; c != nullptr; c = c->idle_next) {
    if (!c->OwesNothing()) continue;
    ++server_.stats_.evicted_idle;
    if (ShouldLog(&evict_log_)) {
      MI_LOG(server_.logger_, kWarning) << "http: max_connections (" << server_.limits_.max_connections
                                        << ") reached, closing the connection idle longest to admit a new one";
    }
    c->Close();
    return true;
  }
  return false;
}

void HttpListener::OnConnectionClosing(HttpConnection* c) {
  UnlistIdle(c);
  if (c->counted()) --server_.stats_.open_connections;
  if (c->rejecting()) --rejecting_;
}

}  // namespace mi::proxy
