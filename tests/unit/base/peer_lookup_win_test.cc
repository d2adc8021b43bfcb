// The Windows peer resolver: the row matching on fake TCP tables (always),
// and the real table for a connection this process makes to itself (if the
// system, e.g. Wine, reports owner pids).
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <iphlpapi.h>
#endif

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "agent/base/peer_lookup.h"

namespace mi {
namespace {

#ifdef _WIN32

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

// A MIB_TCPTABLE_OWNER_PID with these rows, as GetExtendedTcpTable writes it.
class FakeTable4 {
 public:
  void Add(const char* local, uint16_t local_port, const char* remote, uint16_t remote_port, DWORD pid,
           DWORD state = 5 /* MIB_TCP_STATE_ESTAB */, DWORD port_high_bits = 0) {
    MIB_TCPROW_OWNER_PID row;
    std::memset(&row, 0, sizeof row);
    row.dwState = state;
    EXPECT_EQ(inet_pton(AF_INET, local, &row.dwLocalAddr), 1);
    EXPECT_EQ(inet_pton(AF_INET, remote, &row.dwRemoteAddr), 1);
    // Network byte order in the low 16 bits; Windows leaves the rest undefined.
    row.dwLocalPort = htons(local_port) | (port_high_bits << 16);
    row.dwRemotePort = htons(remote_port) | (port_high_bits << 16);
    row.dwOwningPid = pid;
    rows_.push_back(row);
  }
  // The table's bytes; `claimed` overrides dwNumEntries.
  std::vector<uint8_t> Bytes(DWORD claimed = ~0u) const {
    const size_t header = offsetof(MIB_TCPTABLE_OWNER_PID, table);
    std::vector<uint8_t> out(header + rows_.size() * sizeof(MIB_TCPROW_OWNER_PID));
    const DWORD n = claimed == ~0u ? static_cast<DWORD>(rows_.size()) : claimed;
    std::memcpy(out.data(), &n, sizeof n);
    if (!rows_.empty()) std::memcpy(out.data() + header, rows_.data(), rows_.size() * sizeof rows_[0]);
    return out;
  }

 private:
  std::vector<MIB_TCPROW_OWNER_PID> rows_;
};

uint32_t Find4(const std::vector<uint8_t>& table, const sockaddr_storage& peer, const sockaddr_storage& local) {
  // Copied into words: the real buffer is aligned for the rows.
  std::vector<uint64_t> aligned((table.size() + 7) / 8);
  std::memcpy(aligned.data(), table.data(), table.size());
  return tcp_table::FindOwner(AF_INET, aligned.data(), table.size(), peer, local);
}

TEST(TcpTableTest, TheClientsRowNamesItsOwner) {
  FakeTable4 t;
  t.Add("127.0.0.1", 50342, "0.0.0.0", 0, 900, 2 /* LISTEN */);  // our listener
  t.Add("127.0.0.1", 50342, "127.0.0.1", 50000, 900);            // our end of the connection
  t.Add("127.0.0.1", 50000, "127.0.0.1", 50342, 1234);           // the client's end
  const auto peer = V4("127.0.0.1", 50000);
  const auto local = V4("127.0.0.1", 50342);
  EXPECT_EQ(tcp_table::TableFamily(peer, local), AF_INET);
  EXPECT_EQ(Find4(t.Bytes(), peer, local), 1234u);
  // Another client port, or the other way round: no row.
  EXPECT_EQ(Find4(t.Bytes(), V4("127.0.0.1", 50001), local), 0u);
  EXPECT_EQ(Find4(t.Bytes(), V4("127.0.0.2", 50000), local), 0u);
}

TEST(TcpTableTest, PortsAreInNetworkOrderInTheLow16Bits) {
  // 50000 = 0xC350: in host order it would read 0x50C3 = 20675.
  FakeTable4 t;
  t.Add("127.0.0.1", 20675, "127.0.0.1", 20675, 7);  // what a host-order reading would match
  t.Add("127.0.0.1", 50000, "127.0.0.1", 443, 1234, 5, 0xBEEF);
  EXPECT_EQ(Find4(t.Bytes(), V4("127.0.0.1", 50000), V4("127.0.0.1", 443)), 1234u);
  EXPECT_EQ(Find4(t.Bytes(), V4("127.0.0.1", 20675), V4("127.0.0.1", 20675)), 7u);
}

TEST(TcpTableTest, TimeWaitAndMissingRowsHaveNoOwner) {
  FakeTable4 t;
  t.Add("127.0.0.1", 50000, "127.0.0.1", 443, 0, 11 /* TIME_WAIT */);
  EXPECT_EQ(Find4(t.Bytes(), V4("127.0.0.1", 50000), V4("127.0.0.1", 443)), 0u);
  EXPECT_EQ(Find4(FakeTable4().Bytes(), V4("127.0.0.1", 50000), V4("127.0.0.1", 443)), 0u);
}

TEST(TcpTableTest, NeverReadsBeyondTheBuffer) {
  FakeTable4 t;
  t.Add("127.0.0.1", 1, "127.0.0.1", 2, 11);
  t.Add("127.0.0.1", 50000, "127.0.0.1", 443, 1234);
  const auto peer = V4("127.0.0.1", 50000);
  const auto local = V4("127.0.0.1", 443);
  std::vector<uint8_t> bytes = t.Bytes(1000000);  // claims more rows than it holds
  EXPECT_EQ(Find4(bytes, peer, local), 1234u);
  bytes.resize(bytes.size() - 1);  // the second row no longer fits
  EXPECT_EQ(Find4(bytes, peer, local), 0u);
  EXPECT_EQ(tcp_table::FindOwner(AF_INET, bytes.data(), 2, peer, local), 0u);  // not even the count
  EXPECT_EQ(tcp_table::FindOwner(AF_INET, nullptr, 0, peer, local), 0u);
}

TEST(TcpTableTest, Ipv6AndMappedAddresses) {
  MIB_TCP6ROW_OWNER_PID row;
  std::memset(&row, 0, sizeof row);
  ASSERT_EQ(inet_pton(AF_INET6, "::1", row.ucLocalAddr), 1);
  ASSERT_EQ(inet_pton(AF_INET6, "::1", row.ucRemoteAddr), 1);
  row.dwLocalPort = htons(50000);
  row.dwRemotePort = htons(50342);
  row.dwState = 5;
  row.dwOwningPid = 4321;
  std::vector<uint64_t> table((offsetof(MIB_TCP6TABLE_OWNER_PID, table) + sizeof row + 7) / 8);
  const DWORD one = 1;
  std::memcpy(table.data(), &one, sizeof one);
  std::memcpy(reinterpret_cast<uint8_t*>(table.data()) + offsetof(MIB_TCP6TABLE_OWNER_PID, table), &row, sizeof row);
  const size_t size = offsetof(MIB_TCP6TABLE_OWNER_PID, table) + sizeof row;
  const auto peer = V6("::1", 50000);
  const auto local = V6("::1", 50342);
  EXPECT_EQ(tcp_table::TableFamily(peer, local), AF_INET6);
  EXPECT_EQ(tcp_table::FindOwner(AF_INET6, table.data(), size, peer, local), 4321u);
  EXPECT_EQ(tcp_table::FindOwner(AF_INET, table.data(), size, peer, local), 0u);  // the wrong table
  // A v4-mapped pair is an IPv4 connection: the IPv4 table is asked.
  const auto mapped_peer = V6("::ffff:127.0.0.1", 50000);
  const auto mapped_local = V6("::ffff:127.0.0.1", 50342);
  EXPECT_EQ(tcp_table::TableFamily(mapped_peer, mapped_local), AF_INET);
  FakeTable4 t;
  t.Add("127.0.0.1", 50000, "127.0.0.1", 50342, 99);
  EXPECT_EQ(Find4(t.Bytes(), mapped_peer, mapped_local), 99u);
  EXPECT_EQ(tcp_table::TableFamily(peer, V4("127.0.0.1", 1)), 0);  // mixed families
}

bool UnderWine() {
  HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && GetProcAddress(ntdll, "wine_get_version") != nullptr;
}

// What the system's IPv4 table says about the local port
// `port_network_order`: "pid N", "no row" or the error.
std::string OwnerRow(u_short port_network_order) {
  std::vector<uint64_t> table(1 << 17);
  DWORD size = static_cast<DWORD>(table.size() * sizeof table[0]);
  const DWORD r = GetExtendedTcpTable(table.data(), &size, FALSE, AF_INET, TCP_TABLE_OWNER_PID_ALL, 0);
  if (r != NO_ERROR) return "error " + std::to_string(r);
  const auto* t = reinterpret_cast<const MIB_TCPTABLE_OWNER_PID*>(table.data());
  for (DWORD i = 0; i < t->dwNumEntries; ++i) {
    if (static_cast<u_short>(t->table[i].dwLocalPort) == port_network_order) {
      return "pid " + std::to_string(t->table[i].dwOwningPid);
    }
  }
  return "no row among " + std::to_string(t->dwNumEntries);
}

// A loopback connection to ourselves: the real table names this process.
TEST(TcpTableTest, SystemResolverFindsOurOwnConnection) {
  WSADATA wsa;
  ASSERT_EQ(WSAStartup(MAKEWORD(2, 2), &wsa), 0);
  SOCKET listener = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  ASSERT_NE(listener, INVALID_SOCKET);
  sockaddr_in addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int len = sizeof addr;
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  SOCKET client = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  sockaddr_storage peer, local;
  int peer_len = sizeof peer, local_len = sizeof local;
  SOCKET server = accept(listener, reinterpret_cast<sockaddr*>(&peer), &peer_len);
  ASSERT_NE(server, INVALID_SOCKET);
  ASSERT_EQ(getsockname(server, reinterpret_cast<sockaddr*>(&local), &local_len), 0);
  const PeerCredentials credentials = MakeSystemPeerResolver()->Resolve(peer, local);
  const std::string row = OwnerRow(reinterpret_cast<const sockaddr_in&>(peer).sin_port);
  closesocket(server);
  closesocket(client);
  closesocket(listener);
  if (UnderWine()) {
    // The resolver does not ask under Wine (peer_lookup_win.cc says why).
    EXPECT_FALSE(credentials.known);
    GTEST_SKIP() << "under Wine, whose TCP table gives our client's row as: " << row
                 << (row == "pid 0" ? " (no owner pids)" : " (owner pids: the resolver could ask Wine now)");
  }
  ASSERT_TRUE(credentials.known) << "the table's row for our client: " << row;
  EXPECT_EQ(credentials.pid, GetCurrentProcessId());
  EXPECT_EQ(credentials.uid, 0u);
  EXPECT_EQ(credentials.inode, 0u);
}

#endif  // _WIN32

}  // namespace
}  // namespace mi
