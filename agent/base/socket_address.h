#pragma once
// Socket addresses as text and back: the listener's bound addresses, a peer
// for logs, the `listen` config values.

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace mi {

// 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 (v4-mapped loopback).
bool IsLoopback(const sockaddr_storage& address);
// The port in host byte order; 0 for a family other than IPv4/IPv6.
uint16_t PortOf(const sockaddr_storage& address);
// "127.0.0.1:50342" or "[::1]:50342"; empty if the family is unknown.
std::string FormatAddress(const sockaddr_storage& address);

// "127.0.0.1:50342", "[::1]:50342" or "name:port" -> host (no brackets) and port.
// false for anything else: no port, a port over 65535 or with more than five
// digits, an unbracketed IPv6 address, an empty host.
bool ParseHostPort(std::string_view text, std::string* host, uint16_t* port);

}  // namespace mi
