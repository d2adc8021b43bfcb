#pragma once
// Turns the peer credentials the listener found (uid, socket inode or pid)
// into a CallerInfo with the facts a policy needs (issue #13): the account
// (names, groups) and the process (pid, executable, name). The platform
// lookups (agent/caller_lookup.h) block, so they run off the loop (a
// WorkQueue: libuv's thread pool in the daemon, synchronous or manual in
// tests). Loop thread only.
//
// Caches, all bounded (LRU; a flood of new connections evicts, never grows):
//  * callers by connection (uid + socket inode, or uid + pid where the
//    transport gives the pid: Unix sockets, Windows): a second request on a
//    keep-alive connection is one hash lookup, no allocation;
//  * accounts by uid (Windows: by pid, the account comes from the process
//    token), so a new connection of a known user is decided without a lookup.
// Entries live `ttl` (stepping the wall clock back expires them too). Lookups
// for one connection, and account lookups for one uid, in flight at once are
// shared. A failed lookup (the caller closed first, an unknown uid) is
// remembered like a found one: the fact stays "looked up, not known".

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "agent/authorization.h"
#include "agent/base/clock.h"
#include "agent/caller.h"

typedef struct uv_loop_s uv_loop_t;

namespace mi {

// The blocking lookups behind an interface (tests: fakes). Called on worker
// threads: implementations are thread-safe.
class CallerLookup {
 public:
  virtual ~CallerLookup() = default;
  virtual bool Account(const PeerCredentials& peer, CallerInfo* out) = 0;
  virtual uint32_t FindPid(const PeerCredentials& peer) = 0;
  virtual bool Process(uint32_t pid, CallerInfo* out, uint64_t* start_time) = 0;
};

// The platform's lookups (caller_lookup::Account, FindPid, Process).
class SystemCallerLookup : public CallerLookup {
 public:
  bool Account(const PeerCredentials& peer, CallerInfo* out) override;
  uint32_t FindPid(const PeerCredentials& peer) override;
  bool Process(uint32_t pid, CallerInfo* out, uint64_t* start_time) override;
};

// Runs blocking work away from the loop.
class WorkQueue {
 public:
  virtual ~WorkQueue() = default;
  // Runs `work` on another thread, then `done` on the loop thread, each once.
  // `done` may run after the submitter is gone: it guards itself.
  virtual void Run(std::function<void()> work, std::function<void()> done) = 0;
};

// libuv's thread pool (uv_queue_work). Work in flight keeps the loop running
// until it finishes (lookups are bounded by NSS's and /proc's own timeouts).
class UvWorkQueue : public WorkQueue {
 public:
  explicit UvWorkQueue(uv_loop_t* loop) : loop_(loop) {}
  void Run(std::function<void()> work, std::function<void()> done) override;

 private:
  uv_loop_t* loop_;
};

class CallerResolver {
 public:
  struct Options {
    Duration ttl = Duration(60000);  // "authorization.cache_seconds"
    size_t max_callers = 4096;       // connections remembered
    size_t max_accounts = 1024;      // uids remembered
    size_t max_pending = 1024;       // connections being looked up; beyond, resolved as unknown
  };

  // `lookup` is shared with the work in flight (it may outlive the resolver).
  CallerResolver(Options options, const Clock& clock, std::shared_ptr<CallerLookup> lookup, WorkQueue& work);
  ~CallerResolver();  // callbacks of lookups still in flight never run
  CallerResolver(const CallerResolver&) = delete;
  CallerResolver& operator=(const CallerResolver&) = delete;

  void set_options(Options options);  // a shorter ttl or cap applies as entries are touched

  // The hot path: the caller of `peer` with the facts `needs` looked up, from
  // the caches, or null (then Resolve). Allocates nothing when the
  // connection is known. REQUIRES: peer.known.
  const CallerInfo* Find(const PeerCredentials& peer, CallerNeeds needs);

  // Looks up what the caches lack, off the loop. `done` runs once on the loop
  // thread (maybe before Resolve returns) with the caller and the facts
  // looked up (CallerInfo::account_known / process_known say which were
  // found). REQUIRES: peer.known.
  using Callback = std::function<void(const CallerInfo& caller, CallerNeeds looked_up)>;
  void Resolve(const PeerCredentials& peer, CallerNeeds needs, Callback done);

  // For tests and /status: entries held now.
  size_t cached_callers() const { return callers_.size(); }
  size_t cached_accounts() const { return accounts_.size(); }
  size_t pending() const { return pending_.size(); }

 private:
  struct PeerKey {
    uint32_t uid;
    uint32_t pid;
    uint64_t inode;
    bool operator==(const PeerKey& o) const { return uid == o.uid && pid == o.pid && inode == o.inode; }
  };
  struct PeerKeyHash {
    size_t operator()(const PeerKey& k) const {
      return std::hash<uint64_t>()(k.inode ^ (uint64_t(k.pid) << 32) ^ (uint64_t(k.uid) * 0x9e3779b97f4a7c15ULL));
    }
  };
  // A remembered caller or account, in LRU order.
  template <typename Key>
  struct Entry {
    CallerInfo info;
    CallerNeeds looked_up;
    TimePoint at;
    typename std::list<Key>::iterator lru;
  };
  template <typename Key, typename Hash>
  struct Lru {
    std::unordered_map<Key, Entry<Key>, Hash> map;
    std::list<Key> order;  // most recent first
    size_t size() const { return map.size(); }
  };
  struct Pending;
  struct AccountWork;

  static PeerKey KeyOf(const PeerCredentials& peer);
  static uint64_t AccountKeyOf(const PeerCredentials& peer);
  bool Fresh(TimePoint at, TimePoint now) const { return at <= now && now - at < options_.ttl; }
  template <typename Key, typename Hash>
  Entry<Key>* Get(Lru<Key, Hash>& lru, const Key& key, TimePoint now);
  template <typename Key, typename Hash>
  Entry<Key>& Put(Lru<Key, Hash>& lru, const Key& key, size_t cap, TimePoint now);
  void StartAccount(const PeerCredentials& peer, const PeerKey& waiter);
  void StartProcess(const PeerCredentials& peer, const PeerKey& key);
  void OnAccount(uint64_t account_key, const CallerInfo& found);
  void Step(const PeerKey& key);  // one lookup of `key` finished: done when none is left

  Options options_;
  const Clock& clock_;
  std::shared_ptr<CallerLookup> lookup_;
  WorkQueue& work_;
  std::shared_ptr<bool> alive_;  // lookups in flight hold a weak_ptr
  Lru<PeerKey, PeerKeyHash> callers_;
  Lru<uint64_t, std::hash<uint64_t>> accounts_;
  std::unordered_map<PeerKey, std::unique_ptr<Pending>, PeerKeyHash> pending_;
  // Account lookups in flight, by account key: the connections waiting for each.
  std::unordered_map<uint64_t, std::vector<PeerKey>> account_waiters_;
};

}  // namespace mi
