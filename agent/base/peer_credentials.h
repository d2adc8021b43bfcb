#pragma once
// Who owns the client's end of a connection (agent/base/peer_lookup.h finds it).

#include <cstdint>

namespace mi {

struct PeerCredentials {
  bool known = false;  // false: the fields below mean nothing
  uint32_t uid = 0;    // the owner of the client's socket
  uint64_t inode = 0;  // the client socket's inode (never 0 when known)
};

}  // namespace mi
