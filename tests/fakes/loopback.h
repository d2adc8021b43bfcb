#pragma once
// A blocking loopback client for tests that run a server on the loop thread and
// the client on another thread. Portable (POSIX sockets / Winsock).

#include <string>

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

}  // namespace mi::testing
