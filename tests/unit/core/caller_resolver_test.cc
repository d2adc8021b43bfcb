// The caller resolver and the policy gate (issue #13) on fakes: the lookups
// are a FakeLookup, "off the loop" is a ManualWorkQueue the test runs, time is
// FakeTime. Caches by connection and by uid, TTL, bounds, shared lookups, a
// lookup that finishes after the resolver is gone, and the gate's decisions.
#include "agent/caller_resolver.h"

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "agent/policy_gate.h"
#include "tests/fakes/fake_time.h"

namespace mi {
namespace {

class FakeLookup : public CallerLookup {
 public:
  bool Account(const PeerCredentials& peer, CallerInfo* out) override {
    ++accounts;
    if (peer.uid == kUnknownUid) return false;
    out->account_known = true;
    out->user = "user" + std::to_string(peer.uid);
    out->gids = {peer.uid, 27};
    out->groups = {out->user, "sudo"};
    return true;
  }
  uint32_t FindPid(const PeerCredentials& peer) override {
    ++find_pids;
    if (gone) return 0;
    return peer.pid != 0 ? peer.pid : static_cast<uint32_t>(peer.inode + 10000);
  }
  bool Process(uint32_t pid, CallerInfo* out, uint64_t* start_time) override {
    ++processes;
    out->process_known = true;
    out->pid = pid;
    out->exe = "/usr/bin/app";
    out->process_name = "app";
    *start_time = 1;
    return true;
  }
  static constexpr uint32_t kUnknownUid = 4000;
  int accounts = 0;
  int find_pids = 0;
  int processes = 0;
  bool gone = false;  // the caller closed before its pid was found
};

// Work runs when the test says so (or at once with `sync`).
class ManualWorkQueue : public WorkQueue {
 public:
  void Run(std::function<void()> work, std::function<void()> done) override {
    if (sync) {
      work();
      done();
      return;
    }
    jobs.push_back({std::move(work), std::move(done)});
  }
  void RunAll() {
    while (!jobs.empty()) {
      auto job = std::move(jobs.front());
      jobs.pop_front();
      job.first();
      job.second();
    }
  }
  bool sync = false;
  std::deque<std::pair<std::function<void()>, std::function<void()>>> jobs;
};

PeerCredentials Tcp(uint32_t uid, uint64_t inode) {
  PeerCredentials p;
  p.known = true;
  p.uid = uid;
  p.inode = inode;
  return p;
}

constexpr CallerNeeds kAccount{true, false};
constexpr CallerNeeds kProcess{false, true};

struct Fixture {
  explicit Fixture(CallerResolver::Options o = {})
      : lookup(std::make_shared<FakeLookup>()), resolver(o, time, lookup, work) {}
  // Resolves and returns what the callback saw ("" while it has not run).
  std::string Resolve(const PeerCredentials& peer, CallerNeeds needs, std::string* out) {
    resolver.Resolve(peer, needs, [out](const CallerInfo& c, CallerNeeds looked_up) {
      *out = (c.account_known ? c.user : "?") + "/" + (c.process_known ? c.exe : "?") +
             (looked_up.account ? " A" : "") + (looked_up.process ? " P" : "");
    });
    return *out;
  }
  FakeTime time;
  std::shared_ptr<FakeLookup> lookup;
  ManualWorkQueue work;
  CallerResolver resolver;
};

TEST(CallerResolverTest, ResolvesOffTheLoopThenHitsTheConnectionCache) {
  Fixture f;
  const PeerCredentials peer = Tcp(1000, 5);
  EXPECT_EQ(f.resolver.Find(peer, kAccount), nullptr);
  std::string seen;
  EXPECT_EQ(f.Resolve(peer, kAccount, &seen), "") << "nothing happens on the loop";
  EXPECT_EQ(f.lookup->accounts, 0);
  f.work.RunAll();
  EXPECT_EQ(seen, "user1000/? A");
  const CallerInfo* hit = f.resolver.Find(peer, kAccount);
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(hit->user, "user1000");
  EXPECT_EQ(hit->groups, (std::vector<std::string>{"user1000", "sudo"}));
  EXPECT_EQ(f.resolver.Find(peer, kAccount), hit) << "the same entry each request";
  EXPECT_EQ(f.resolver.Find(peer, kProcess), nullptr) << "the process was never looked up";
  EXPECT_EQ(f.lookup->accounts, 1);
}

TEST(CallerResolverTest, ANewConnectionOfAKnownUidNeedsNoLookup) {
  Fixture f;
  std::string seen;
  f.Resolve(Tcp(1000, 5), kAccount, &seen);
  f.work.RunAll();
  const CallerInfo* other = f.resolver.Find(Tcp(1000, 6), kAccount);
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->user, "user1000");
  EXPECT_EQ(other->peer.inode, 6u) << "its own connection";
  EXPECT_EQ(f.lookup->accounts, 1);
  EXPECT_EQ(f.resolver.Find(Tcp(1001, 7), kAccount), nullptr);
}

TEST(CallerResolverTest, ProcessByConnection) {
  Fixture f;
  std::string seen;
  f.Resolve(Tcp(1000, 5), CallerNeeds{true, true}, &seen);
  f.work.RunAll();
  EXPECT_EQ(seen, "user1000//usr/bin/app A P");
  const CallerInfo* c = f.resolver.Find(Tcp(1000, 5), kProcess);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->pid, 10005u);
  EXPECT_EQ(f.resolver.Find(Tcp(1000, 6), kProcess), nullptr) << "another socket: another process, maybe";

  PeerCredentials unix_peer;  // a Unix socket gives the pid
  unix_peer.known = true;
  unix_peer.uid = 1000;
  unix_peer.pid = 321;
  f.Resolve(unix_peer, kProcess, &seen);
  f.work.RunAll();
  c = f.resolver.Find(unix_peer, kProcess);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->pid, 321u);
}

TEST(CallerResolverTest, ACallerThatClosedFirstIsLookedUpButNotKnown) {
  Fixture f;
  f.lookup->gone = true;
  std::string seen;
  f.Resolve(Tcp(1000, 5), kProcess, &seen);
  f.work.RunAll();
  EXPECT_EQ(seen, "?/? P");
  EXPECT_EQ(f.lookup->processes, 0);
  ASSERT_NE(f.resolver.Find(Tcp(1000, 5), kProcess), nullptr) << "remembered: not asked again";
  f.Resolve(Tcp(FakeLookup::kUnknownUid, 9), kAccount, &seen);
  f.work.RunAll();
  EXPECT_EQ(seen, "?/? A");
}

TEST(CallerResolverTest, ConcurrentMissesShareOneLookup) {
  Fixture f;
  std::string a, b, c;
  f.Resolve(Tcp(1000, 5), kAccount, &a);  // two requests on one connection
  f.Resolve(Tcp(1000, 5), kAccount, &b);
  f.Resolve(Tcp(1000, 6), kAccount, &c);  // another connection of the same uid
  EXPECT_EQ(f.work.jobs.size(), 1u);
  f.work.RunAll();
  EXPECT_EQ(f.lookup->accounts, 1);
  EXPECT_EQ(a, "user1000/? A");
  EXPECT_EQ(b, a);
  EXPECT_EQ(c, a);
  EXPECT_EQ(f.resolver.pending(), 0u);
}

TEST(CallerResolverTest, EntriesExpireAfterTheTtlAndWhenTheClockStepsBack) {
  CallerResolver::Options o;
  o.ttl = Duration(60000);
  Fixture f(o);
  std::string seen;
  f.Resolve(Tcp(1000, 5), kAccount, &seen);
  f.work.RunAll();
  f.time.Advance(Duration(59000));
  EXPECT_NE(f.resolver.Find(Tcp(1000, 5), kAccount), nullptr);
  f.time.Advance(Duration(1000));
  EXPECT_EQ(f.resolver.Find(Tcp(1000, 5), kAccount), nullptr);
  EXPECT_EQ(f.resolver.Find(Tcp(1000, 6), kAccount), nullptr) << "the uid's account too";
  f.Resolve(Tcp(1000, 5), kAccount, &seen);
  f.work.RunAll();
  EXPECT_EQ(f.lookup->accounts, 2);
  EXPECT_NE(f.resolver.Find(Tcp(1000, 5), kAccount), nullptr);
  f.time.JumpWallClock(Duration(-3600 * 1000));
  EXPECT_EQ(f.resolver.Find(Tcp(1000, 5), kAccount), nullptr);
}

TEST(CallerResolverTest, CachesAreBounded) {
  CallerResolver::Options o;
  o.max_callers = 8;
  o.max_accounts = 4;
  Fixture f(o);
  f.work.sync = true;
  std::string seen;
  for (uint32_t i = 0; i < 100; ++i) f.Resolve(Tcp(1000 + i % 10, 100 + i), kAccount, &seen);
  EXPECT_LE(f.resolver.cached_callers(), 8u);
  EXPECT_LE(f.resolver.cached_accounts(), 4u);
  // The most recent stay.
  EXPECT_NE(f.resolver.Find(Tcp(1009, 199), kAccount), nullptr);
}

TEST(CallerResolverTest, PendingLookupsAreBounded) {
  CallerResolver::Options o;
  o.max_pending = 3;
  Fixture f(o);
  std::vector<std::string> seen(5);
  for (uint32_t i = 0; i < 5; ++i) f.Resolve(Tcp(1000 + i, 100 + i), kAccount, &seen[i]);
  EXPECT_EQ(f.resolver.pending(), 3u);
  EXPECT_EQ(seen[3], "?/? A") << "beyond the cap: decided as not known, at once";
  f.work.RunAll();
  EXPECT_EQ(seen[0], "user1000/? A");
}

TEST(CallerResolverTest, ALookupFinishingAfterTheResolverIsGoneIsDropped) {
  FakeTime time;
  auto lookup = std::make_shared<FakeLookup>();
  ManualWorkQueue work;
  bool called = false;
  {
    CallerResolver resolver({}, time, lookup, work);
    resolver.Resolve(Tcp(1000, 5), kAccount, [&](const CallerInfo&, CallerNeeds) { called = true; });
  }
  work.RunAll();
  EXPECT_FALSE(called);
  EXPECT_EQ(lookup->accounts, 1) << "the work ran on a lookup it kept alive";
}

// --- PolicyGate ------------------------------------------------------------------

AuthorizationRule Rule(std::string name) {
  AuthorizationRule r;
  r.name = std::move(name);
  r.any_identity = true;
  r.any_resource = true;
  return r;
}

std::shared_ptr<const AuthorizationPolicy> Policy(AuthorizationMode mode, std::vector<AuthorizationRule> rules) {
  AuthorizationOptions o;
  o.mode = mode;
  o.rules = std::move(rules);
  return std::make_shared<const AuthorizationPolicy>(o);
}

struct GateFixture : Fixture {
  GateFixture() : logger(&time), gate(resolver, time, logger) {
    logger.set_sink([this](std::string_view line) { lines.emplace_back(line); });
  }
  // "allow"/"deny"/"would_deny" decided now, or "later".
  std::string Decide(const PeerCredentials& peer) {
    Decision d;
    const CallerInfo* c = nullptr;
    if (!gate.Decide(peer, key, &d, &c)) return "later";
    EXPECT_NE(c, nullptr);
    return DecisionName(d);
  }
  std::string Await(const PeerCredentials& peer) {
    std::string out = "pending";
    gate.Await(peer, key, [&out](Decision d, const CallerInfo&) { out = DecisionName(d); });
    work.RunAll();
    return out;
  }
  Logger logger;
  PolicyGate gate;
  TokenKey key{SelectorKind::kDefault, "", "https://vault.azure.net"};
  std::vector<std::string> lines;
};

TEST(PolicyGateTest, UidRulesAreDecidedAtOnceWithoutLookups) {
  GateFixture f;
  std::vector<AuthorizationRule> rules;
  for (uint32_t uid = 1000; uid < 1010; ++uid) {
    AuthorizationRule r = Rule("u" + std::to_string(uid));
    r.uids = {uid};
    rules.push_back(r);
  }
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, rules));
  EXPECT_EQ(f.Decide(Tcp(1005, 5)), "allow");
  EXPECT_EQ(f.Decide(Tcp(0, 6)), "deny");
  EXPECT_EQ(f.lookup->accounts + f.lookup->find_pids, 0);
  EXPECT_TRUE(f.work.jobs.empty());
}

TEST(PolicyGateTest, UserRulesLookUpOnceThenDecideAtOnce) {
  GateFixture f;
  AuthorizationRule r = Rule("billing");
  r.users = {"user1000"};
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, {r}));
  EXPECT_EQ(f.Decide(Tcp(1000, 5)), "later");
  EXPECT_EQ(f.Await(Tcp(1000, 5)), "allow");
  EXPECT_EQ(f.Decide(Tcp(1000, 5)), "allow") << "the connection is known now";
  EXPECT_EQ(f.Decide(Tcp(1000, 6)), "allow") << "so is the uid";
  EXPECT_EQ(f.Await(Tcp(1001, 7)), "deny");
  EXPECT_EQ(f.Decide(Tcp(1001, 7)), "deny");
  EXPECT_EQ(f.lookup->accounts, 2);
}

TEST(PolicyGateTest, GroupAndProcessRules) {
  GateFixture f;
  AuthorizationRule by_group = Rule("g");
  by_group.groups = {"sudo"};
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, {by_group}));
  EXPECT_EQ(f.Await(Tcp(1000, 5)), "allow");
  AuthorizationRule by_exe = Rule("e");
  by_exe.exe = {"/usr/bin/app"};
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, {by_exe}));
  EXPECT_EQ(f.Decide(Tcp(1000, 5)), "later") << "the new policy needs the process";
  EXPECT_EQ(f.Await(Tcp(1000, 5)), "allow");
  f.lookup->gone = true;
  EXPECT_EQ(f.Await(Tcp(1000, 8)), "deny") << "it closed before its process was found";
}

TEST(PolicyGateTest, UnresolvedCallersAreDeniedUnlessARuleNamesEveryone) {
  GateFixture f;
  AuthorizationRule root = Rule("root");
  root.uids = {0};
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, {root}));
  EXPECT_EQ(f.Decide(PeerCredentials{}), "deny");
  AuthorizationRule everyone = Rule("all");
  everyone.any_caller = true;
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, {root, everyone}));
  EXPECT_EQ(f.Decide(PeerCredentials{}), "allow");
}

TEST(PolicyGateTest, AuditModeWouldDenyAndTheLogIsRateLimited) {
  GateFixture f;
  f.gate.set_policy(Policy(AuthorizationMode::kAudit, {}));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(f.Decide(Tcp(1000, 5)), "would_deny");
  ASSERT_EQ(f.lines.size(), 1u);
  EXPECT_NE(f.lines[0].find("would deny uid 1000 identity default resource https://vault.azure.net"),
            std::string::npos)
      << f.lines[0];
  f.time.Advance(Duration(10000));
  f.Decide(Tcp(1000, 5));
  ASSERT_EQ(f.lines.size(), 2u);
  EXPECT_NE(f.lines[1].find("(and 99 more since the last such line)"), std::string::npos) << f.lines[1];
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, {}));
  f.time.Advance(Duration(10000));
  EXPECT_EQ(f.Decide(Tcp(1000, 5)), "deny");
  EXPECT_NE(f.lines.back().find("authorization: denied uid 1000"), std::string::npos) << f.lines.back();
}

TEST(PolicyGateTest, ALookupInFlightIsDecidedByThePolicyInForceWhenItEnds) {
  GateFixture f;
  AuthorizationRule r = Rule("u");
  r.users = {"user1000"};
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, {r}));
  std::string out = "pending";
  f.gate.Await(Tcp(1000, 5), f.key, [&out](Decision d, const CallerInfo&) { out = DecisionName(d); });
  AuthorizationRule other = Rule("u");
  other.users = {"someone-else"};
  f.gate.set_policy(Policy(AuthorizationMode::kEnforce, {other}));
  f.work.RunAll();
  EXPECT_EQ(out, "deny");
}

}  // namespace
}  // namespace mi
