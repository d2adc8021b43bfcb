#include "agent/base/peer_lookup.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#ifdef __linux__
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#endif

namespace mi {
namespace {

TEST(NoPeerResolverTest, KnowsNothing) {
  sockaddr_storage a;
  std::memset(&a, 0, sizeof a);
  NoPeerResolver none;
  EXPECT_FALSE(none.Resolve(a, a).known);
}

#ifdef __linux__
using sock_diag::Answer;
using sock_diag::Query;

sockaddr_storage V4(const char* ip, uint16_t port) {
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof ss);
  auto& in = reinterpret_cast<sockaddr_in&>(ss);
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  EXPECT_EQ(inet_pton(AF_INET, ip, &in.sin_addr), 1);
  return ss;
}

sockaddr_storage V6(const char* ip, uint16_t port) {
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof ss);
  auto& in6 = reinterpret_cast<sockaddr_in6&>(ss);
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port);
  EXPECT_EQ(inet_pton(AF_INET6, ip, &in6.sin6_addr), 1);
  return ss;
}

Query LoopbackQuery() {
  Query q;
  EXPECT_TRUE(sock_diag::MakeQuery(V4("127.0.0.1", 50000), V4("127.0.0.2", 80), &q));
  return q;
}

// Appends one netlink message (header + payload, padded to NLMSG_ALIGN).
void Append(std::vector<uint8_t>* out, uint16_t type, uint32_t seq, const void* payload, size_t len) {
  nlmsghdr h;
  std::memset(&h, 0, sizeof h);
  h.nlmsg_len = static_cast<uint32_t>(sizeof h + len);
  h.nlmsg_type = type;
  h.nlmsg_seq = seq;
  const size_t at = out->size();
  out->resize(at + NLMSG_ALIGN(h.nlmsg_len), 0);
  std::memcpy(out->data() + at, &h, sizeof h);
  if (len > 0) std::memcpy(out->data() + at + sizeof h, payload, len);
}

inet_diag_msg SocketRecord(const Query& q, uint32_t uid, uint32_t inode, uint8_t state = 1 /* ESTABLISHED */) {
  inet_diag_msg m;
  std::memset(&m, 0, sizeof m);
  m.idiag_family = q.family;
  m.idiag_state = state;
  m.id.idiag_sport = htons(q.sport);
  m.id.idiag_dport = htons(q.dport);
  std::memcpy(m.id.idiag_src, q.src, 16);
  std::memcpy(m.id.idiag_dst, q.dst, 16);
  m.idiag_uid = uid;
  m.idiag_inode = inode;
  return m;
}

void AppendRecord(std::vector<uint8_t>* out, uint32_t seq, const inet_diag_msg& m) {
  Append(out, SOCK_DIAG_BY_FAMILY, seq, &m, sizeof m);
}

void AppendError(std::vector<uint8_t>* out, uint32_t seq, int error) {
  nlmsgerr e;
  std::memset(&e, 0, sizeof e);
  e.error = error;
  Append(out, NLMSG_ERROR, seq, &e, sizeof e);
}

Answer Parse(const std::vector<uint8_t>& buf, uint32_t seq, const Query& q, PeerCredentials* c) {
  return sock_diag::ParseAnswer(buf.data(), buf.size(), seq, q, c);
}

TEST(SockDiagQueryTest, TheClientsEndIsTheSource) {
  Query q;
  ASSERT_TRUE(sock_diag::MakeQuery(V4("127.0.0.1", 50000), V4("127.0.0.2", 80), &q));
  EXPECT_EQ(q.family, AF_INET);
  EXPECT_EQ(q.sport, 50000);
  EXPECT_EQ(q.dport, 80);
  const uint8_t src[4] = {127, 0, 0, 1};
  const uint8_t dst[4] = {127, 0, 0, 2};
  EXPECT_EQ(std::memcmp(q.src, src, 4), 0);
  EXPECT_EQ(std::memcmp(q.dst, dst, 4), 0);

  uint8_t buf[256];
  const size_t n = sock_diag::BuildRequest(q, 7, buf, sizeof buf);
  ASSERT_EQ(n, sizeof(nlmsghdr) + sizeof(inet_diag_req_v2));
  nlmsghdr h;
  std::memcpy(&h, buf, sizeof h);
  EXPECT_EQ(h.nlmsg_len, n);
  EXPECT_EQ(h.nlmsg_type, SOCK_DIAG_BY_FAMILY);
  EXPECT_EQ(h.nlmsg_flags, NLM_F_REQUEST);
  EXPECT_EQ(h.nlmsg_seq, 7u);
  inet_diag_req_v2 r;
  std::memcpy(&r, buf + sizeof h, sizeof r);
  EXPECT_EQ(r.sdiag_family, AF_INET);
  EXPECT_EQ(r.sdiag_protocol, IPPROTO_TCP);
  EXPECT_EQ(ntohs(r.id.idiag_sport), 50000);
  EXPECT_EQ(ntohs(r.id.idiag_dport), 80);
  EXPECT_EQ(std::memcmp(r.id.idiag_src, src, 4), 0);
  EXPECT_EQ(std::memcmp(r.id.idiag_dst, dst, 4), 0);
  EXPECT_EQ(r.id.idiag_cookie[0], INET_DIAG_NOCOOKIE);
  EXPECT_EQ(sock_diag::BuildRequest(q, 7, buf, 8), 0u);
}

TEST(SockDiagQueryTest, Families) {
  Query q;
  ASSERT_TRUE(sock_diag::MakeQuery(V6("::1", 1), V6("::1", 2), &q));
  EXPECT_EQ(q.family, AF_INET6);
  EXPECT_EQ(q.src[15], 1);
  // Both v4-mapped: the client's socket is an IPv4 one.
  ASSERT_TRUE(sock_diag::MakeQuery(V6("::ffff:127.0.0.3", 1), V6("::ffff:127.0.0.1", 2), &q));
  EXPECT_EQ(q.family, AF_INET);
  const uint8_t src[16] = {127, 0, 0, 3};
  EXPECT_EQ(std::memcmp(q.src, src, 16), 0);
  EXPECT_FALSE(sock_diag::MakeQuery(V4("127.0.0.1", 1), V6("::1", 2), &q));
  sockaddr_storage unix_address;
  std::memset(&unix_address, 0, sizeof unix_address);
  unix_address.ss_family = AF_UNIX;
  EXPECT_FALSE(sock_diag::MakeQuery(unix_address, unix_address, &q));
}

TEST(SockDiagAnswerTest, OneRecord) {
  const Query q = LoopbackQuery();
  std::vector<uint8_t> buf;
  AppendRecord(&buf, 5, SocketRecord(q, 1234, 99));
  PeerCredentials c;
  ASSERT_EQ(Parse(buf, 5, q, &c), Answer::kFound);
  EXPECT_TRUE(c.known);
  EXPECT_EQ(c.uid, 1234u);
  EXPECT_EQ(c.inode, 99u);
}

TEST(SockDiagAnswerTest, ErrorAndDone) {
  const Query q = LoopbackQuery();
  PeerCredentials c;
  std::vector<uint8_t> buf;
  AppendError(&buf, 5, -ENOENT);  // the client already closed
  EXPECT_EQ(Parse(buf, 5, q, &c), Answer::kNotFound);
  buf.clear();
  AppendError(&buf, 5, 0);  // an acknowledgement alone answers nothing
  EXPECT_EQ(Parse(buf, 5, q, &c), Answer::kMore);
  buf.clear();
  Append(&buf, NLMSG_DONE, 5, nullptr, 0);
  EXPECT_EQ(Parse(buf, 5, q, &c), Answer::kNotFound);
  buf.clear();
  const int error = -EPERM;
  Append(&buf, NLMSG_ERROR, 5, &error, 2);  // shorter than its error code
  EXPECT_EQ(Parse(buf, 5, q, &c), Answer::kMalformed);
  EXPECT_FALSE(c.known);
}

TEST(SockDiagAnswerTest, SeveralMessages) {
  const Query q = LoopbackQuery();
  std::vector<uint8_t> buf;
  AppendRecord(&buf, 4, SocketRecord(q, 1, 1));  // an earlier lookup's late answer
  Append(&buf, NLMSG_NOOP, 5, nullptr, 0);
  Query other = q;
  other.sport = 50001;
  AppendRecord(&buf, 5, SocketRecord(other, 2, 2));  // not our tuple
  inet_diag_msg v6 = SocketRecord(q, 3, 3);
  v6.idiag_family = AF_INET6;  // wrong family
  AppendRecord(&buf, 5, v6);
  AppendRecord(&buf, 5, SocketRecord(q, 4242, 7));
  AppendError(&buf, 5, -ENOENT);  // after the answer: never read
  PeerCredentials c;
  ASSERT_EQ(Parse(buf, 5, q, &c), Answer::kFound);
  EXPECT_EQ(c.uid, 4242u);
  EXPECT_EQ(c.inode, 7u);

  // Only the other answers: nothing yet.
  buf.clear();
  AppendRecord(&buf, 4, SocketRecord(q, 1, 1));
  AppendRecord(&buf, 5, SocketRecord(other, 2, 2));
  c = PeerCredentials();
  EXPECT_EQ(Parse(buf, 5, q, &c), Answer::kMore);
  EXPECT_FALSE(c.known);
}

TEST(SockDiagAnswerTest, MiniSocketsHaveNoOwner) {
  const Query q = LoopbackQuery();
  for (uint8_t state : {uint8_t{6} /* TIME_WAIT */, uint8_t{12} /* NEW_SYN_RECV */}) {
    std::vector<uint8_t> buf;
    AppendRecord(&buf, 5, SocketRecord(q, 0, 0, state));
    PeerCredentials c;
    EXPECT_EQ(Parse(buf, 5, q, &c), Answer::kNotFound) << int{state};
    EXPECT_FALSE(c.known);
  }
}

TEST(SockDiagAnswerTest, TruncatedAndHostile) {
  const Query q = LoopbackQuery();
  std::vector<uint8_t> good;
  AppendRecord(&good, 5, SocketRecord(q, 1234, 99));
  PeerCredentials c;
  // Every cut of a valid answer: never found, never read past the end.
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    const Answer a = Parse(cut, 5, q, &c);
    EXPECT_TRUE(a == Answer::kMalformed || (n == 0 && a == Answer::kMore)) << n;
    EXPECT_FALSE(c.known) << n;
  }
  // A record whose header claims less than an inet_diag_msg.
  std::vector<uint8_t> buf;
  const inet_diag_msg m = SocketRecord(q, 1234, 99);
  Append(&buf, SOCK_DIAG_BY_FAMILY, 5, &m, sizeof m - 1);
  EXPECT_EQ(Parse(buf, 5, q, &c), Answer::kMalformed);
  // Lengths shorter than a header, or longer than the buffer.
  for (uint32_t len : {0u, 1u, 15u, static_cast<uint32_t>(good.size() + 1), 0xffffffffu}) {
    std::vector<uint8_t> bad = good;
    std::memcpy(bad.data(), &len, sizeof len);
    EXPECT_EQ(Parse(bad, 5, q, &c), Answer::kMalformed) << len;
  }
  // Trailing bytes too few for a header after a skipped message.
  buf.clear();
  Append(&buf, NLMSG_NOOP, 5, nullptr, 0);
  buf.resize(buf.size() + 3, 0);
  EXPECT_EQ(Parse(buf, 5, q, &c), Answer::kMalformed);
  EXPECT_FALSE(c.known);
  // An unaligned buffer is read byte-wise (UBSan would say otherwise).
  std::vector<uint8_t> shifted(good.size() + 1);
  std::memcpy(shifted.data() + 1, good.data(), good.size());
  ASSERT_EQ(sock_diag::ParseAnswer(shifted.data() + 1, good.size(), 5, q, &c), Answer::kFound);
  EXPECT_EQ(c.uid, 1234u);
}

// The real kernel: a loopback connection of our own is ours.
TEST(SystemPeerResolverTest, FindsOurOwnSocket) {
  int server = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(server, 0);
  sockaddr_storage bound = V4("127.0.0.1", 0);
  ASSERT_EQ(::bind(server, reinterpret_cast<sockaddr*>(&bound), sizeof(sockaddr_in)), 0);
  ASSERT_EQ(::listen(server, 1), 0);
  socklen_t len = sizeof bound;
  ASSERT_EQ(::getsockname(server, reinterpret_cast<sockaddr*>(&bound), &len), 0);
  int client = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&bound), sizeof(sockaddr_in)), 0);
  sockaddr_storage peer, local;
  len = sizeof peer;
  int accepted = ::accept(server, reinterpret_cast<sockaddr*>(&peer), &len);
  ASSERT_GE(accepted, 0);
  len = sizeof local;
  ASSERT_EQ(::getsockname(accepted, reinterpret_cast<sockaddr*>(&local), &len), 0);

  auto resolver = MakeSystemPeerResolver();
  PeerCredentials c = resolver->Resolve(peer, local);
  ASSERT_TRUE(c.known) << "sock_diag answered nothing (is NETLINK_SOCK_DIAG available?)";
  EXPECT_EQ(c.uid, ::getuid());
  EXPECT_NE(c.inode, 0u);
  // The server's end is a different socket: asking the reversed tuple finds
  // the accepted socket, not the client's.
  PeerCredentials reversed = resolver->Resolve(local, peer);
  ASSERT_TRUE(reversed.known);
  EXPECT_NE(reversed.inode, c.inode);
  // Again, on the same netlink socket.
  EXPECT_EQ(resolver->Resolve(peer, local).inode, c.inode);

  ::close(client);
  ::close(accepted);
  ::close(server);
  // Both ends closed: no full socket is left for that tuple.
  EXPECT_FALSE(resolver->Resolve(peer, local).known);
}
#endif

}  // namespace
}  // namespace mi
