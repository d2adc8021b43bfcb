#pragma once
// Who is on the other end of a loopback TCP connection: the uid that owns the
// client's socket, found by the connection's exact 4-tuple. On Linux the
// kernel answers over NETLINK_SOCK_DIAG (inet_diag, as `ss` asks it); other
// platforms know nothing yet (known = false). The foundation of per-caller
// authorization (issue #13): nothing decides on it yet.
//
// The HTTP server asks once per accepted loopback connection, never per
// request. A lookup is a send and a receive on a local kernel socket: bounded,
// no network, and every failure (no permission, no answer, the client already
// gone) is known = false.

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
// known = false without trying again); NoPeerResolver elsewhere.
std::unique_ptr<PeerResolver> MakeSystemPeerResolver();

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
