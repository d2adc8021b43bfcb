#pragma once
// The Unix stream socket side of the HTTP listener (POSIX): clearing a stale
// socket file before bind, and the peer's credentials of an accepted
// connection. Internal to mi_http.

#include <uv.h>

#include <string>

#include "agent/base/peer_credentials.h"
#include "agent/base/status.h"

namespace mi::proxy {

#ifndef _WIN32
// Clears the way for binding a Unix socket at `path`: nothing there, or a
// socket file nobody listens on any more (left by a crash), which is removed.
// Anything else is refused, with `what` leading the message: a file that is
// not a socket (a symlink is not followed: lstat, and unlink removes the link
// itself, never its target), a socket someone accepts on ("address already in
// use"), or one we cannot probe. Blocking system calls: start-up only.
// REQUIRES: `path` fits sockaddr_un's sun_path.
Status ClearStaleUnixSocket(const std::string& path, const std::string& what);
#endif

// The credentials the kernel recorded when the peer of the connected Unix
// socket `fd` called connect(): SO_PEERCRED (Linux) pid, effective uid and
// gid, as seen from our namespaces (pid 0: a process in a pid namespace we
// cannot see). known = false elsewhere or when the call fails.
PeerCredentials UnixPeerCredentials(uv_os_fd_t fd);

}  // namespace mi::proxy
