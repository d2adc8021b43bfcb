// The Windows peer resolver: the owner pid of the client's socket from the
// TCP table (GetExtendedTcpTable, TCP_TABLE_OWNER_PID_ALL).
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <iphlpapi.h>

#include <cstring>
#include <vector>

#include "agent/base/peer_lookup.h"

namespace mi {
namespace tcp_table {
namespace {

// MIB_TCP_STATE_TIME_WAIT: the connection is closed; such rows have no owner.
constexpr DWORD kTimeWait = 11;

struct Endpoint {
  int family = 0;
  uint8_t addr[16] = {};
  uint16_t port = 0;  // network byte order, as in sockaddr and the MIB rows
};

bool IsV4Mapped(const uint8_t* a) {
  static const uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(a, kPrefix, sizeof kPrefix) == 0;
}

bool TakeEndpoint(const sockaddr_storage& ss, Endpoint* e) {
  if (ss.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    e->family = AF_INET;
    std::memcpy(e->addr, &in.sin_addr, 4);
    e->port = in.sin_port;
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    e->family = AF_INET6;
    std::memcpy(e->addr, &in6.sin6_addr, 16);
    e->port = in6.sin6_port;
    return true;
  }
  return false;
}

// Both endpoints, of one family; both v4-mapped become IPv4.
bool TakeBoth(const sockaddr_storage& peer, const sockaddr_storage& local, Endpoint* p, Endpoint* l) {
  if (!TakeEndpoint(peer, p) || !TakeEndpoint(local, l) || p->family != l->family) return false;
  if (p->family == AF_INET6 && IsV4Mapped(p->addr) && IsV4Mapped(l->addr)) {
    for (Endpoint* e : {p, l}) {
      e->family = AF_INET;
      std::memmove(e->addr, e->addr + 12, 4);
      std::memset(e->addr + 4, 0, 12);
    }
  }
  return true;
}

// The low 16 bits of a row's port field hold the port in network byte order.
uint16_t RowPort(DWORD field) { return static_cast<uint16_t>(field & 0xffff); }

// The rows of a table of `size` bytes: at most as many as fit.
template <typename Table, typename Row>
size_t RowCount(const Table* table, size_t size) {
  const size_t header = offsetof(Table, table);
  if (size < header) return 0;
  const size_t fit = (size - header) / sizeof(Row);
  return table->dwNumEntries < fit ? table->dwNumEntries : fit;
}

}  // namespace

int TableFamily(const sockaddr_storage& peer, const sockaddr_storage& local) {
  Endpoint p, l;
  return TakeBoth(peer, local, &p, &l) ? p.family : 0;
}

uint32_t FindOwner(int family, const void* table, size_t size, const sockaddr_storage& peer,
                   const sockaddr_storage& local) {
  Endpoint p, l;
  if (table == nullptr || !TakeBoth(peer, local, &p, &l) || p.family != family) return 0;
  if (family == AF_INET) {
    const auto* t = static_cast<const MIB_TCPTABLE_OWNER_PID*>(table);
    const size_t n = RowCount<MIB_TCPTABLE_OWNER_PID, MIB_TCPROW_OWNER_PID>(t, size);
    for (size_t i = 0; i < n; ++i) {
      const MIB_TCPROW_OWNER_PID& row = t->table[i];
      if (RowPort(row.dwLocalPort) != p.port || RowPort(row.dwRemotePort) != l.port) continue;
      if (std::memcmp(&row.dwLocalAddr, p.addr, 4) != 0 || std::memcmp(&row.dwRemoteAddr, l.addr, 4) != 0) continue;
      return row.dwState == kTimeWait ? 0 : row.dwOwningPid;
    }
    return 0;
  }
  const auto* t = static_cast<const MIB_TCP6TABLE_OWNER_PID*>(table);
  const size_t n = RowCount<MIB_TCP6TABLE_OWNER_PID, MIB_TCP6ROW_OWNER_PID>(t, size);
  for (size_t i = 0; i < n; ++i) {
    const MIB_TCP6ROW_OWNER_PID& row = t->table[i];
    if (RowPort(row.dwLocalPort) != p.port || RowPort(row.dwRemotePort) != l.port) continue;
    if (std::memcmp(row.ucLocalAddr, p.addr, 16) != 0 || std::memcmp(row.ucRemoteAddr, l.addr, 16) != 0) continue;
    return row.dwState == kTimeWait ? 0 : row.dwOwningPid;
  }
  return 0;
}

}  // namespace tcp_table

namespace {

// The table grows with the machine's connections: each lookup retries with
// the size Windows asks for (plus room for new rows) a few times, up to a cap.
constexpr DWORD kMaxTableBytes = 64u << 20;
constexpr int kAttempts = 4;

// Wine (8.0) fills the owner pids by scanning the host's /proc for every row
// of the host's whole TCP table, and still reports 0 for its own processes:
// one lookup takes seconds on a busy host and would stall the loop for
// nothing. Under Wine callers stay unknown.
bool UnderWine() {
  HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && GetProcAddress(ntdll, "wine_get_version") != nullptr;
}

class TcpTableResolver : public PeerResolver {
 public:
  PeerCredentials Resolve(const sockaddr_storage& peer, const sockaddr_storage& local) override {
    const int family = tcp_table::TableFamily(peer, local);
    if (family == 0 || under_wine_) return {};
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      DWORD size = static_cast<DWORD>(table_.size() * sizeof table_[0]);
      const DWORD r = GetExtendedTcpTable(table_.data(), &size, FALSE, family, TCP_TABLE_OWNER_PID_ALL, 0);
      if (r == NO_ERROR) {
        const uint32_t pid = tcp_table::FindOwner(family, table_.data(), size, peer, local);
        if (pid == 0) return {};
        PeerCredentials credentials;
        credentials.known = true;
        credentials.pid = pid;
        return credentials;
      }
      if (r != ERROR_INSUFFICIENT_BUFFER || size > kMaxTableBytes) return {};
      const size_t want = size + size / 4 + 1024;  // room for connections made meanwhile
      table_.resize((want + sizeof table_[0] - 1) / sizeof table_[0]);
    }
    return {};
  }

 private:
  const bool under_wine_ = UnderWine();
  // Kept between lookups (loop thread only); words keep the rows aligned.
  std::vector<uint64_t> table_ = std::vector<uint64_t>(2048);
};

}  // namespace

std::unique_ptr<PeerResolver> MakeSystemPeerResolver() { return std::make_unique<TcpTableResolver>(); }

}  // namespace mi
