#include "agent/base/peer_lookup.h"

#ifdef __linux__
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#endif

namespace mi {

#ifdef __linux__
namespace sock_diag {
namespace {

// TCP states (include/net/tcp_states.h) whose diag record is a mini socket
// with no owner: uid 0 there means "none", not root.
constexpr uint8_t kTcpTimeWait = 6;
constexpr uint8_t kTcpNewSynRecv = 12;

bool IsV4Mapped(const uint8_t* a) {
  static const uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(a, kPrefix, sizeof kPrefix) == 0;
}

// One side of the query from a socket address; false for another family.
bool TakeAddress(const sockaddr_storage& ss, uint8_t* family, uint8_t* addr, uint16_t* port) {
  if (ss.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    *family = AF_INET;
    std::memcpy(addr, &in.sin_addr, 4);
    *port = ntohs(in.sin_port);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    *family = AF_INET6;
    std::memcpy(addr, &in6.sin6_addr, 16);
    *port = ntohs(in6.sin6_port);
    return true;
  }
  return false;
}

bool SameId(const inet_diag_sockid& id, const Query& q) {
  const size_t n = q.family == AF_INET ? 4 : 16;
  return ntohs(id.idiag_sport) == q.sport && ntohs(id.idiag_dport) == q.dport &&
         std::memcmp(id.idiag_src, q.src, n) == 0 && std::memcmp(id.idiag_dst, q.dst, n) == 0;
}

}  // namespace

bool MakeQuery(const sockaddr_storage& peer, const sockaddr_storage& local, Query* q) {
  *q = Query();
  uint8_t local_family = 0;
  if (!TakeAddress(peer, &q->family, q->src, &q->sport)) return false;
  if (!TakeAddress(local, &local_family, q->dst, &q->dport)) return false;
  if (local_family != q->family) return false;
  if (q->family == AF_INET6 && IsV4Mapped(q->src) && IsV4Mapped(q->dst)) {
    // The client connected to an IPv4 address: its socket is an IPv4 one.
    q->family = AF_INET;
    std::memmove(q->src, q->src + 12, 4);
    std::memmove(q->dst, q->dst + 12, 4);
    std::memset(q->src + 4, 0, 12);
    std::memset(q->dst + 4, 0, 12);
  }
  return true;
}

size_t BuildRequest(const Query& q, uint32_t seq, uint8_t* out, size_t capacity) {
  struct {
    nlmsghdr header;
    inet_diag_req_v2 req;
  } msg;
  if (capacity < sizeof msg) return 0;
  std::memset(&msg, 0, sizeof msg);
  msg.header.nlmsg_len = sizeof msg;
  msg.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.header.nlmsg_flags = NLM_F_REQUEST;  // one exact socket, no dump
  msg.header.nlmsg_seq = seq;
  msg.req.sdiag_family = q.family;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0u;
  msg.req.id.idiag_sport = htons(q.sport);
  msg.req.id.idiag_dport = htons(q.dport);
  std::memcpy(msg.req.id.idiag_src, q.src, 16);
  std::memcpy(msg.req.id.idiag_dst, q.dst, 16);
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  std::memcpy(out, &msg, sizeof msg);
  return sizeof msg;
}

Answer ParseAnswer(const uint8_t* data, size_t len, uint32_t seq, const Query& q, PeerCredentials* out) {
  size_t at = 0;
  while (len - at >= sizeof(nlmsghdr)) {
    nlmsghdr h;
    std::memcpy(&h, data + at, sizeof h);  // the buffer need not be aligned
    if (h.nlmsg_len < sizeof h || h.nlmsg_len > len - at) return Answer::kMalformed;
    const uint8_t* payload = data + at + sizeof h;
    const size_t payload_len = h.nlmsg_len - sizeof h;
    // The next message starts at the aligned length (the last may end unpadded).
    const size_t step = NLMSG_ALIGN(h.nlmsg_len);
    at = step < len - at ? at + step : len;
    if (h.nlmsg_seq != seq) continue;  // an answer to an earlier lookup
    if (h.nlmsg_type == NLMSG_ERROR) {
      if (payload_len < sizeof(int)) return Answer::kMalformed;
      int error = 0;
      std::memcpy(&error, payload, sizeof error);
      if (error == 0) continue;  // an acknowledgement, not an answer
      return Answer::kNotFound;
    }
    if (h.nlmsg_type == NLMSG_DONE) return Answer::kNotFound;
    if (h.nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;  // NLMSG_NOOP and the like
    if (payload_len < sizeof(inet_diag_msg)) return Answer::kMalformed;
    inet_diag_msg m;
    std::memcpy(&m, payload, sizeof m);
    if (m.idiag_family != q.family || !SameId(m.id, q)) continue;
    // No owner to name: a mini socket (whose uid reads 0, as root's would; a
    // time-wait one may report its FIN_WAIT2 substate), or a socket its
    // process has closed (inode 0).
    if (m.idiag_state == kTcpTimeWait || m.idiag_state == kTcpNewSynRecv || m.idiag_inode == 0) {
      return Answer::kNotFound;
    }
    out->known = true;
    out->uid = m.idiag_uid;
    out->inode = m.idiag_inode;
    return Answer::kFound;
  }
  return at == len ? Answer::kMore : Answer::kMalformed;
}

}  // namespace sock_diag

namespace {

// Each wait for the kernel's answer (which is normally queued before sendto
// returns); at most kMaxDatagrams reads per lookup.
constexpr int kPollMs = 20;
constexpr int kMaxDatagrams = 4;
constexpr int kMaxStale = 16;

class SockDiagResolver : public PeerResolver {
 public:
  SockDiagResolver() = default;
  SockDiagResolver(const SockDiagResolver&) = delete;
  SockDiagResolver& operator=(const SockDiagResolver&) = delete;
  ~SockDiagResolver() override {
    if (fd_ >= 0) ::close(fd_);
  }

  PeerCredentials Resolve(const sockaddr_storage& peer, const sockaddr_storage& local) override {
    sock_diag::Query q;
    if (!sock_diag::MakeQuery(peer, local, &q) || !Open()) return {};
    if (unsettled_) DropStale();
    const uint32_t seq = ++seq_;
    uint8_t request[128];
    const size_t n = sock_diag::BuildRequest(q, seq, request, sizeof request);
    sockaddr_nl kernel;
    std::memset(&kernel, 0, sizeof kernel);
    kernel.nl_family = AF_NETLINK;
    if (n == 0 || ::sendto(fd_, request, n, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) !=
                      static_cast<ssize_t>(n)) {
      return {};
    }
    unsettled_ = true;  // until the kernel's answer has been read
    for (int i = 0; i < kMaxDatagrams; ++i) {
      pollfd p = {fd_, POLLIN, 0};
      if (::poll(&p, 1, kPollMs) <= 0) return {};
      size_t got = 0;
      if (!Receive(&got)) continue;
      PeerCredentials credentials;
      const sock_diag::Answer answer = sock_diag::ParseAnswer(buffer_, got, seq, q, &credentials);
      if (answer == sock_diag::Answer::kMore) continue;
      unsettled_ = false;
      return answer == sock_diag::Answer::kFound ? credentials : PeerCredentials();
    }
    return {};
  }

 private:
  bool Open() {
    if (fd_ >= 0) return true;
    if (broken_) return false;
    fd_ = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd_ < 0) broken_ = true;
    return fd_ >= 0;
  }

  // One datagram into buffer_; false (and nothing to parse) if it did not fit,
  // did not come from the kernel, or nothing was there.
  bool Receive(size_t* got) {
    sockaddr_nl from;
    socklen_t from_len = sizeof from;
    std::memset(&from, 0, sizeof from);
    ssize_t r = ::recvfrom(fd_, buffer_, sizeof buffer_, MSG_DONTWAIT | MSG_TRUNC, reinterpret_cast<sockaddr*>(&from),
                           &from_len);
    if (r <= 0 || static_cast<size_t>(r) > sizeof buffer_) return false;
    // Another process may send to our port; only the kernel (port 0) answers.
    if (from_len < sizeof from || from.nl_family != AF_NETLINK || from.nl_pid != 0) return false;
    *got = static_cast<size_t>(r);
    return true;
  }

  // Answers that came after an earlier lookup gave up on them (their
  // sequence would not match anyway; this keeps them from piling up).
  void DropStale() {
    for (int i = 0; i < kMaxStale; ++i) {
      if (::recv(fd_, buffer_, sizeof buffer_, MSG_DONTWAIT | MSG_TRUNC) < 0) break;
    }
    unsettled_ = false;
  }

  int fd_ = -1;
  bool broken_ = false;
  bool unsettled_ = false;  // a lookup gave up before its answer was read
  uint32_t seq_ = 0;
  alignas(nlmsghdr) uint8_t buffer_[8192];
};

}  // namespace

std::unique_ptr<PeerResolver> MakeSystemPeerResolver() { return std::make_unique<SockDiagResolver>(); }

#elif !defined(_WIN32)  // Windows: peer_lookup_win.cc

std::unique_ptr<PeerResolver> MakeSystemPeerResolver() { return std::make_unique<NoPeerResolver>(); }

#endif

}  // namespace mi
