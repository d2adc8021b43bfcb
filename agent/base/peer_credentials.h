#pragma once
// Who owns the client's end of a connection (agent/base/peer_lookup.h finds it).

#include <cstdint>

namespace mi {

struct PeerCredentials {
  bool known = false;  // false: the fields below mean nothing
  uint32_t uid = 0;    // the owner of the client's socket (POSIX)
  uint64_t inode = 0;  // Linux TCP: the client socket's inode (never 0 when known there); else 0
  // Known at accept on some transports only: SO_PEERCRED on a Unix socket
  // (pid, uid, gid), the owner PID of GetExtendedTcpTable on Windows (pid).
  // 0: not known yet (a Linux TCP caller's pid is found later from its inode).
  uint32_t pid = 0;
  uint32_t gid = 0;  // Unix socket: the caller's primary gid
};

}  // namespace mi
