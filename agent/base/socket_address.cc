#include "agent/base/socket_address.h"

#include <cstring>

namespace mi {

bool IsLoopback(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    return reinterpret_cast<const uint8_t*>(&a->sin_addr)[0] == 127;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&a->sin6_addr);
    static const uint8_t kLoopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (std::memcmp(b, kLoopback, 16) == 0) return true;
    for (int i = 0; i < 10; ++i) {
      if (b[i] != 0) return false;
    }
    return b[10] == 0xff && b[11] == 0xff && b[12] == 127;
  }
  return false;
}

uint16_t PortOf(const sockaddr_storage& ss) {
  const uint8_t* p = nullptr;
  if (ss.ss_family == AF_INET) {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  } else {
    return 0;
  }
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}

std::string FormatAddress(const sockaddr_storage& ss) {
  char ip[64] = {0};
  std::string out;
  if (ss.ss_family == AF_INET) {
    if (uv_ip4_name(reinterpret_cast<const sockaddr_in*>(&ss), ip, sizeof ip) != 0) return out;
    out = ip;
  } else if (ss.ss_family == AF_INET6) {
    if (uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(&ss), ip, sizeof ip) != 0) return out;
    out = "[";
    out += ip;
    out += "]";
  } else {
    return out;
  }
  out.push_back(':');
  out += std::to_string(PortOf(ss));
  return out;
}

bool ParseHostPort(std::string_view text, std::string* host_out, uint16_t* port_out) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return false;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) return false;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty() || port.empty() || port.size() > 5) return false;
  int p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    p = p * 10 + (c - '0');
  }
  if (p > 65535) return false;
  *host_out = std::string(host);
  *port_out = static_cast<uint16_t>(p);
  return true;
}

}  // namespace mi
