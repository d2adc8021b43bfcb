#include "proxy/http/unix_socket.h"

#include <cerrno>
#include <cstring>

#ifndef _WIN32
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#endif

namespace mi::proxy {

#ifndef _WIN32
Status ClearStaleUnixSocket(const std::string& path, const std::string& what) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Error(what + ": " + std::strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) return Status::Error(what + ": the path exists and is not a socket");
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());  // the caller checked the length
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return Status::Error(what + ": socket: " + std::strerror(errno));
  // Non-blocking: a listener with a full backlog answers EAGAIN instead of
  // making us wait; it is in use all the same.
  int rc = ::fcntl(fd, F_SETFL, O_NONBLOCK);
  if (rc == 0) rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int err = rc == 0 ? 0 : errno;
  ::close(fd);
  if (err == ECONNREFUSED) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::Error(what + ": cannot remove the stale socket: " + std::strerror(errno));
    }
    return Status::Ok();
  }
  if (err == 0 || err == EAGAIN || err == EINPROGRESS) {
    return Status::Error(what + ": address already in use (another process listens on it)");
  }
  return Status::Error(what + ": cannot tell whether the existing socket is in use: " + std::strerror(err));
}
#endif

PeerCredentials UnixPeerCredentials(uv_os_fd_t fd) {
  PeerCredentials out;
#ifdef __linux__
  ucred cred;
  std::memset(&cred, 0, sizeof cred);
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) return out;
  out.known = true;
  out.uid = static_cast<uint32_t>(cred.uid);
  out.gid = static_cast<uint32_t>(cred.gid);
  out.pid = cred.pid > 0 ? static_cast<uint32_t>(cred.pid) : 0;
#else
  (void)fd;
#endif
  return out;
}

}  // namespace mi::proxy
