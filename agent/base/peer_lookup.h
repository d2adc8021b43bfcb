#pragma once
// Who is on the other end of a loopback TCP connection: the owner of the
// client's socket, found by the connection's exact 4-tuple. On Linux the
// kernel answers over NETLINK_SOCK_DIAG (inet_diag, as `ss` asks it) with the
// uid; on Windows GetExtendedTcpTable with the owner pid; other platforms know
// nothing (known = false). The foundation of per-caller authorization (#13).
//
// The HTTP server asks once per accepted loopback connection, never per
// request. A lookup is a send and a receive on a local kernel socket (Linux)
// or one copy of the TCP table (Windows): bounded, no network, and every
// failure (no permission, no answer, the client already gone) is
// known = false.

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "agent/base/peer_credentials.h"

namespace mi {

class PeerResolver {
 public:
  virtual ~PeerResolver() = default;
  // The owner of the socket whose local address is `peer` and whose remote
  // address is `local` (the client's end of our connection). Loop thread only.
  virtual PeerCredentials Resolve(const sockaddr_storage& peer, const sockaddr_storage& local) = 0;
};

// Resolves nothing: every answer is known = false.
class NoPeerResolver : public PeerResolver {
 public:
  PeerCredentials Resolve(const sockaddr_storage&, const sockaddr_storage&) override { return {}; }
};

// The platform's resolver: sock_diag on Linux (one netlink socket, opened at
// the first lookup and kept; if it cannot be opened, every later answer is
// known = false without trying again); on Windows the owner pid from
// GetExtendedTcpTable (peer_lookup_win.cc: known = true with pid set, uid and
// inode 0, which mean nothing there); NoPeerResolver elsewhere.
std::unique_ptr<PeerResolver> MakeSystemPeerResolver();

#ifdef _WIN32
namespace tcp_table {

// The table to ask GetExtendedTcpTable for: AF_INET or AF_INET6 when peer and
// local are of the same family (both v4-mapped IPv6 addresses: AF_INET, the
// client's socket is an IPv4 one); 0 otherwise.
int TableFamily(const sockaddr_storage& peer, const sockaddr_storage& local);

// In one GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL) answer of `size` bytes
// (a MIB_TCPTABLE_OWNER_PID for AF_INET, a MIB_TCP6TABLE_OWNER_PID for
// AF_INET6, as TableFamily says), the owner pid of the client's end of our
// connection: the row whose local endpoint is `peer` and whose remote endpoint
// is `local` (our listener's side has them the other way round). 0 if there
// is none, it is in TIME_WAIT (no owner), or its owner reads 0. The rows'
// ports are in network byte order in their low 16 bits (the high ones are
// not defined); IPv6 scope ids are not compared (loopback only). Never reads
// beyond `size`, whatever the entry count says.
uint32_t FindOwner(int family, const void* table, size_t size, const sockaddr_storage& peer,
                   const sockaddr_storage& local);

}  // namespace tcp_table
#endif

#ifdef __linux__
namespace sock_diag {

// One inet_diag lookup: the socket whose local end is src:sport and whose
// remote end is dst:dport. Addresses in network order (4 bytes for AF_INET);
// ports in host order.
struct Query {
  uint8_t family = 0;  // AF_INET or AF_INET6
  uint8_t src[16] = {};
  uint8_t dst[16] = {};
  uint16_t sport = 0;
  uint16_t dport = 0;
};

// The query for the client's end of a connection; false unless both are
// IPv4/IPv6 of the same kind. Both v4-mapped IPv6 addresses become IPv4.
bool MakeQuery(const sockaddr_storage& peer, const sockaddr_storage& local, Query* query);

// Writes the SOCK_DIAG_BY_FAMILY request (nlmsghdr + inet_diag_req_v2) into
// `out`; returns its length (0 if `capacity` is too small).
size_t BuildRequest(const Query& query, uint32_t seq, uint8_t* out, size_t capacity);

enum class Answer : uint8_t {
  kFound,      // *credentials is set
  kNotFound,   // NLMSG_ERROR or NLMSG_DONE for our sequence: the kernel has no such socket
  kMore,       // nothing for our sequence yet (other sequences are skipped)
  kMalformed,  // a message that does not fit its buffer or its type
};

// Reads one datagram of netlink messages: the first answer for `seq` decides.
// A socket message counts only if it is the queried tuple, a full socket
// (not TIME_WAIT or a pending SYN, whose uid the kernel reports as 0) and
// still open in some process (inode != 0).
Answer ParseAnswer(const uint8_t* data, size_t len, uint32_t seq, const Query& query, PeerCredentials* credentials);

}  // namespace sock_diag
#endif

}  // namespace mi
