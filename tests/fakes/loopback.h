#pragma once
// The loopback clients of the tests:
//  * SendAndReceive(): blocking, for a server running its loop on another
//    thread. Portable (POSIX sockets / Winsock).
//  * LoopbackClient: a libuv client on the test's own loop, for tests that
//    step the loop themselves (tests/unit/http), with ParseResponses().

#include <gtest/gtest.h>
#include <uv.h>

#include <cctype>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agent/base/uv_handle.h"

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

namespace mi::testing {

// Connects to 127.0.0.1:port, sends `request`, reads until the server closes (or
// 10 s pass), returns what arrived.
inline std::string SendAndReceive(uint16_t port, const std::string& request) {
#ifdef _WIN32
  using Socket = SOCKET;
  auto close_socket = [](Socket s) { closesocket(s); };
#else
  using Socket = int;
  auto close_socket = [](Socket s) { ::close(s); };
#endif
  Socket s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
#ifdef _WIN32
  DWORD timeout = 10000;
#else
  timeval timeout{10, 0};
#endif
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, reinterpret_cast<const char*>(&timeout), sizeof timeout);
  std::string out;
  if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ::send(s, request.data(), static_cast<int>(request.size()), 0);
    char buf[4096];
    for (;;) {
      auto n = ::recv(s, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close_socket(s);
  return out;
}

// A tiny HTTP/1.1 response reader for the client side.

struct ParsedResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  const std::string* Header(const std::string& lower) const {
    for (const auto& h : headers) {
      if (h.first == lower) return &h.second;
    }
    return nullptr;
  }
};

// Complete responses at the front of `data` (bodies framed by Content-Length).
inline std::vector<ParsedResponse> ParseResponses(const std::string& data) {
  std::vector<ParsedResponse> out;
  size_t pos = 0;
  while (true) {
    size_t end = data.find("\r\n\r\n", pos);
    if (end == std::string::npos) break;
    ParsedResponse r;
    std::string head = data.substr(pos, end - pos);
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    if (status_line.size() < 12 || status_line.compare(0, 9, "HTTP/1.1 ") != 0) break;
    r.status = std::stoi(status_line.substr(9, 3));
    size_t content_length = 0;
    while (line_end != std::string::npos) {
      size_t next = head.find("\r\n", line_end + 2);
      std::string line = head.substr(line_end + 2, next == std::string::npos ? std::string::npos : next - line_end - 2);
      line_end = next;
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (name == "content-length") content_length = std::stoul(value);
      r.headers.emplace_back(name, value);
    }
    size_t body_start = end + 4;
    if (data.size() - body_start < content_length) break;
    r.body = data.substr(body_start, content_length);
    pos = body_start + content_length;
    out.push_back(std::move(r));
  }
  return out;
}

// A libuv client on the test's own loop (for a server on that loop): writes,
// resets, and collects what arrives until the server closes. Over TCP
// (Connect) or a Unix stream socket (ConnectUnix, POSIX).
class LoopbackClient {
 public:
  explicit LoopbackClient(uv_loop_t* loop) : loop_(loop) {}
  LoopbackClient(const LoopbackClient&) = delete;
  LoopbackClient& operator=(const LoopbackClient&) = delete;

  void Connect(const std::string& host, uint16_t port) {
    ASSERT_EQ(tcp_.Init(uv_tcp_init, loop_, this), 0);
    sockaddr_storage addr;
    std::memset(&addr, 0, sizeof addr);
    if (host.find(':') != std::string::npos) {
      ASSERT_EQ(uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)), 0);
    } else {
      ASSERT_EQ(uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)), 0);
    }
    auto* req = new uv_connect_t();
    int rc = uv_tcp_connect(req, tcp_.get(), reinterpret_cast<const sockaddr*>(&addr), OnConnect);
    if (rc != 0) delete req;
    ASSERT_EQ(rc, 0);
  }

  void ConnectUnix(const std::string& path) {
    ASSERT_EQ(pipe_.Init(uv_pipe_init, loop_, this, 0), 0);
    auto* req = new uv_connect_t();
    uv_pipe_connect(req, pipe_.get(), path.c_str(), OnConnect);  // reports errors in the callback
  }

  void Write(std::string data) {
    ASSERT_NE(stream(), nullptr) << "write after close";
    struct WriteReq {
      uv_write_t req;
      std::string data;
    };
    auto* w = new WriteReq();
    w->data = std::move(data);
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned int>(w->data.size()));
    int rc = uv_write(&w->req, stream(), &buf, 1, [](uv_write_t* r, int) { delete reinterpret_cast<WriteReq*>(r); });
    if (rc != 0) delete w;
    EXPECT_EQ(rc, 0);
  }

  // Closes with RST (SO_LINGER 0); a Unix socket just closes.
  void Reset() {
    if (pipe_.is_open()) {
      pipe_.Close();
    } else {
      tcp_.CloseReset();
    }
  }
  void Close() {
    tcp_.Close();
    pipe_.Close();
  }

  bool connect_done() const { return connect_done_; }
  int connect_status() const { return connect_status_; }
  bool eof() const { return eof_; }
  const std::string& received() const { return received_; }
  std::vector<ParsedResponse> responses() const { return ParseResponses(received_); }

 private:
  uv_stream_t* stream() const {
    if (tcp_.get() != nullptr && tcp_.is_open()) return reinterpret_cast<uv_stream_t*>(tcp_.get());
    if (pipe_.get() != nullptr && pipe_.is_open()) return reinterpret_cast<uv_stream_t*>(pipe_.get());
    return nullptr;
  }

  static void OnConnect(uv_connect_t* r, int status) {
    auto* self = static_cast<LoopbackClient*>(r->handle->data);
    delete r;
    if (self == nullptr) return;
    self->connect_status_ = status;
    self->connect_done_ = true;
    if (status != 0) return;
    uv_read_start(
        self->stream(),
        [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
          *buf = uv_buf_init(new char[suggested], static_cast<unsigned int>(suggested));
        },
        [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
          std::unique_ptr<char[]> owned(buf->base);
          auto* client = static_cast<LoopbackClient*>(s->data);
          if (client == nullptr) return;
          if (nread > 0) client->received_.append(buf->base, static_cast<size_t>(nread));
          if (nread < 0) {
            // Like a real client: done with the connection once the server is.
            client->eof_ = true;
            client->read_error_ = static_cast<int>(nread);
            client->Close();
          }
        });
  }

  uv_loop_t* loop_;
  UvHandle<uv_tcp_t> tcp_;
  UvHandle<uv_pipe_t> pipe_;
  bool connect_done_ = false;
  int connect_status_ = 0;
  bool eof_ = false;
  int read_error_ = 0;
  std::string received_;
};

}  // namespace mi::testing
