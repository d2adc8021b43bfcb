#include "agent/caller_resolver.h"

#include <uv.h>

#include <utility>

#include "agent/caller_lookup.h"

namespace mi {
namespace {

void CopyAccount(const CallerInfo& from, CallerInfo* to) {
  to->account_known = from.account_known;
  to->user = from.user;
  to->user_sid = from.user_sid;
  to->gids = from.gids;
  to->groups = from.groups;
  to->group_sids = from.group_sids;
}

void CopyProcess(const CallerInfo& from, CallerInfo* to) {
  to->process_known = from.process_known;
  to->pid = from.pid;
  to->exe = from.exe;
  to->process_name = from.process_name;
}

}  // namespace

bool SystemCallerLookup::Account(const PeerCredentials& peer, CallerInfo* out) {
  return caller_lookup::Account(peer, out);
}
uint32_t SystemCallerLookup::FindPid(const PeerCredentials& peer) { return caller_lookup::FindPid(peer); }
bool SystemCallerLookup::Process(uint32_t pid, CallerInfo* out, uint64_t* start_time) {
  return caller_lookup::Process(pid, out, start_time);
}

void UvWorkQueue::Run(std::function<void()> work, std::function<void()> done) {
  struct Job {
    uv_work_t req;
    std::function<void()> work;
    std::function<void()> done;
  };
  auto* job = new Job{uv_work_t{}, std::move(work), std::move(done)};
  job->req.data = job;
  const int rc = uv_queue_work(
      loop_, &job->req, [](uv_work_t* req) { static_cast<Job*>(req->data)->work(); },
      [](uv_work_t* req, int) {
        // Cancelled work did not run: `done` finds nothing looked up.
        std::unique_ptr<Job> j(static_cast<Job*>(req->data));
        j->done();
      });
  if (rc != 0) {  // never on a live loop; do not block it with the work instead
    std::unique_ptr<Job> j(job);
    j->done();
  }
}

// One connection being looked up, and the requests waiting for it.
struct CallerResolver::Pending {
  CallerInfo info;
  CallerNeeds looked_up;
  int outstanding = 0;  // lookups still running (+1 while Resolve starts them)
  std::vector<Callback> waiters;
};

CallerResolver::CallerResolver(Options options, const Clock& clock, std::shared_ptr<CallerLookup> lookup,
                               WorkQueue& work)
    : options_(options), clock_(clock), lookup_(std::move(lookup)), work_(work), alive_(std::make_shared<bool>(true)) {}

CallerResolver::~CallerResolver() = default;

void CallerResolver::set_options(Options options) { options_ = options; }

CallerResolver::PeerKey CallerResolver::KeyOf(const PeerCredentials& peer) {
  // The socket inode names a Linux TCP connection; elsewhere the pid the transport gave.
  return PeerKey{peer.uid, peer.inode != 0 ? 0 : peer.pid, peer.inode};
}

uint64_t CallerResolver::AccountKeyOf(const PeerCredentials& peer) {
#ifdef _WIN32
  return peer.pid;  // the account is the process token's
#else
  return peer.uid;
#endif
}

template <typename Key, typename Hash>
CallerResolver::Entry<Key>* CallerResolver::Get(Lru<Key, Hash>& lru, const Key& key, TimePoint now) {
  auto it = lru.map.find(key);
  if (it == lru.map.end()) return nullptr;
  if (!Fresh(it->second.at, now)) {
    lru.order.erase(it->second.lru);
    lru.map.erase(it);
    return nullptr;
  }
  lru.order.splice(lru.order.begin(), lru.order, it->second.lru);
  return &it->second;
}

template <typename Key, typename Hash>
CallerResolver::Entry<Key>& CallerResolver::Put(Lru<Key, Hash>& lru, const Key& key, size_t cap, TimePoint now) {
  auto it = lru.map.find(key);
  if (it != lru.map.end()) {
    lru.order.splice(lru.order.begin(), lru.order, it->second.lru);
    it->second.at = now;
    return it->second;
  }
  while (!lru.order.empty() && lru.map.size() >= std::max<size_t>(cap, 1)) {
    lru.map.erase(lru.order.back());
    lru.order.pop_back();
  }
  lru.order.push_front(key);
  Entry<Key>& e = lru.map[key];
  e.at = now;
  e.lru = lru.order.begin();
  return e;
}

const CallerInfo* CallerResolver::Find(const PeerCredentials& peer, CallerNeeds needs) {
  const TimePoint now = clock_.Now();
  const PeerKey key = KeyOf(peer);
  Entry<PeerKey>* e = Get(callers_, key, now);
  if (e != nullptr && (!needs.account || e->looked_up.account) && (!needs.process || e->looked_up.process)) {
    return &e->info;
  }
  if (needs.process || pending_.count(key) != 0) return nullptr;
  // A new connection of a known account: no lookup, one copy.
  Entry<uint64_t>* account = Get(accounts_, AccountKeyOf(peer), now);
  if (account == nullptr) return nullptr;
  const bool fresh_entry = e == nullptr;
  e = &Put(callers_, key, options_.max_callers, now);
  if (fresh_entry) {
    e->info = CallerInfo{};
    e->info.peer = peer;
    e->looked_up = CallerNeeds{};
  }
  CopyAccount(account->info, &e->info);
  e->looked_up.account = true;
  return &e->info;
}

void CallerResolver::Resolve(const PeerCredentials& peer, CallerNeeds needs, Callback done) {
  if (const CallerInfo* known = Find(peer, needs)) return done(*known, needs);
  const PeerKey key = KeyOf(peer);
  if (auto it = pending_.find(key); it != pending_.end()) {
    it->second->waiters.push_back(std::move(done));
    return;
  }
  if (pending_.size() >= options_.max_pending) {
    // A flood of new connections: do not queue without bound; decided as not known.
    CallerInfo unknown;
    unknown.peer = peer;
    return done(unknown, needs);
  }
  const TimePoint now = clock_.Now();
  auto owned = std::make_unique<Pending>();
  Pending& p = *owned;
  p.info.peer = peer;
  if (Entry<PeerKey>* e = Get(callers_, key, now)) {  // what this connection already told
    p.info = e->info;
    p.looked_up = e->looked_up;
  }
  p.waiters.push_back(std::move(done));
  p.outstanding = 1;
  pending_.emplace(key, std::move(owned));
  if (needs.account && !p.looked_up.account) {
    if (Entry<uint64_t>* account = Get(accounts_, AccountKeyOf(peer), now)) {
      CopyAccount(account->info, &p.info);
      p.looked_up.account = true;
    } else {
      ++p.outstanding;
      StartAccount(peer, key);
    }
  }
  if (needs.process && !p.looked_up.process) {
    ++p.outstanding;
    StartProcess(peer, key);
  }
  Step(key);
}

void CallerResolver::StartAccount(const PeerCredentials& peer, const PeerKey& waiter) {
  const uint64_t account_key = AccountKeyOf(peer);
  std::vector<PeerKey>& waiters = account_waiters_[account_key];
  waiters.push_back(waiter);
  if (waiters.size() > 1) return;  // one lookup per uid at a time
  auto found = std::make_shared<CallerInfo>();
  work_.Run([found, peer, lookup = lookup_] { lookup->Account(peer, found.get()); },
            [this, alive = std::weak_ptr<bool>(alive_), account_key, found] {
              if (!alive.expired()) OnAccount(account_key, *found);
            });
}

void CallerResolver::OnAccount(uint64_t account_key, const CallerInfo& found) {
  Entry<uint64_t>& entry = Put(accounts_, account_key, options_.max_accounts, clock_.Now());
  CopyAccount(found, &entry.info);
  entry.looked_up.account = true;
  std::vector<PeerKey> waiters;
  if (auto it = account_waiters_.find(account_key); it != account_waiters_.end()) {
    waiters = std::move(it->second);
    account_waiters_.erase(it);
  }
  for (const PeerKey& key : waiters) {
    auto it = pending_.find(key);
    if (it == pending_.end()) continue;
    CopyAccount(found, &it->second->info);
    it->second->looked_up.account = true;
    Step(key);
  }
}

void CallerResolver::StartProcess(const PeerCredentials& peer, const PeerKey& key) {
  auto found = std::make_shared<CallerInfo>();
  work_.Run(
      [found, peer, lookup = lookup_] {
        const uint32_t pid = lookup->FindPid(peer);
        uint64_t start_time = 0;
        if (pid != 0 && !lookup->Process(pid, found.get(), &start_time)) *found = CallerInfo{};
      },
      [this, alive = std::weak_ptr<bool>(alive_), key, found] {
        if (alive.expired()) return;
        auto it = pending_.find(key);
        if (it == pending_.end()) return;
        CopyProcess(*found, &it->second->info);
        it->second->looked_up.process = true;
        Step(key);
      });
}

void CallerResolver::Step(const PeerKey& key) {
  auto it = pending_.find(key);
  if (it == pending_.end() || --it->second->outstanding > 0) return;
  std::unique_ptr<Pending> p = std::move(it->second);
  pending_.erase(it);
  Entry<PeerKey>& e = Put(callers_, key, options_.max_callers, clock_.Now());
  e.info = p->info;
  e.looked_up = p->looked_up;
  // From the Pending, not the entry: a waiter may resolve again and evict it.
  for (Callback& waiter : p->waiters) waiter(p->info, p->looked_up);
}

}  // namespace mi
