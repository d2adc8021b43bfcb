// The audit trail on FakeTime: records at once then a count, bounded tables,
// overflow, escaping of hostile fields, journal fields, metrics, never a token;
// and the file writer on a real loop (append, reopen after rename, size cap).
#include "agent/audit_trail.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#ifndef _WIN32
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <nlohmann/json.hpp>

#include "agent/base/sha256.h"
#include "tests/fakes/fake_time.h"

namespace mi {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

const char kSecret[] = "eyJ0eXAiOiJKV1QiSECRETTOKENxQzV9aB7cD3eF1gH5iJ";

std::shared_ptr<const Token> MakeToken(const std::string& access) {
  auto t = Token::FromImdsBody(R"({"access_token":")" + access + R"(","expires_on":"1767229200"})");
  EXPECT_TRUE(t.ok());
  return *t;
}

struct Event {
  CallerInfo caller;
  TokenKey key;
  AuditEvent event;

  Event(uint32_t uid, std::string resource, Decision decision = Decision::kAllow) {
    caller.peer.known = true;
    caller.peer.uid = uid;
    key.resource = std::move(resource);
    event.caller = &caller;
    event.key = &key;
    event.listener = "tcp";
    event.dialect = "imds";
    event.decision = decision;
    event.cache = CacheOutcome::kHit;
    event.status = decision == Decision::kDeny ? 401 : 200;
  }
};

class AuditTrailTest : public ::testing::Test {
 protected:
  std::unique_ptr<AuditTrail> Make(bool enabled = true, Duration summarize = seconds(60)) {
    AuditTrail::Options o;
    o.enabled = enabled;
    o.sink = AuditTrail::SinkKind::kStderr;
    o.summarize = summarize;
    AuditTrail::Env env;
    env.clock = &time_;
    env.timers = &time_;
    env.stderr_line = [this](std::string_view line) { lines_.emplace_back(line); };
    auto trail = std::make_unique<AuditTrail>(o, env);
    EXPECT_TRUE(trail->status().ok());
    return trail;
  }
  json Line(size_t i) const {
    EXPECT_LT(i, lines_.size());
    return i < lines_.size() ? json::parse(lines_[i]) : json();
  }
  std::string Metrics(const AuditTrail& trail) const {
    MetricsWriter w(time_.Now());
    trail.WriteMetrics(w);
    return w.Take();
  }

  FakeTime time_;
  std::vector<std::string> lines_;
};

TEST_F(AuditTrailTest, FirstEventAtOnceThenRepeatsAsOneRecordWithACount) {
  auto trail = Make();
  Event e(1001, "https://vault.azure.net");
  e.caller.account_known = true;
  e.caller.user = "alice";
  for (int i = 0; i < 5; ++i) trail->Record(e.event);
  ASSERT_EQ(lines_.size(), 1u);
  json first = Line(0);
  EXPECT_EQ(first["caller_uid"], 1001);
  EXPECT_EQ(first["caller_user"], "alice");
  EXPECT_EQ(first["listener"], "tcp");
  EXPECT_EQ(first["dialect"], "imds");
  EXPECT_EQ(first["identity"], "default");
  EXPECT_EQ(first["resource"], "https://vault.azure.net");
  EXPECT_EQ(first["decision"], "allow");
  EXPECT_EQ(first["cache"], "hit");
  EXPECT_EQ(first["status"], 200);
  EXPECT_EQ(first["count"], 1);
  EXPECT_EQ(first["time"], "2026-01-01T00:00:00.000Z");
  EXPECT_FALSE(first.contains("since"));

  time_.Advance(seconds(60));
  ASSERT_EQ(lines_.size(), 2u);
  json summary = Line(1);
  EXPECT_EQ(summary["count"], 4);
  EXPECT_EQ(summary["resource"], "https://vault.azure.net");
  EXPECT_EQ(summary["time"], "2026-01-01T00:01:00.000Z");
  EXPECT_TRUE(summary.contains("since"));
  EXPECT_EQ(trail->records(), 2u);

  // A quiet window writes nothing; then the key is forgotten and written at once again.
  time_.Advance(seconds(60));
  EXPECT_EQ(lines_.size(), 2u);
  EXPECT_FALSE(time_.NextTimerIn().has_value());  // no timer while nothing is summarized
  trail->Record(e.event);
  ASSERT_EQ(lines_.size(), 3u);
  EXPECT_EQ(Line(2)["count"], 1);
}

TEST_F(AuditTrailTest, KeysAreCallerIdentityResourceAndDecision) {
  auto trail = Make();
  Event a(1001, "https://vault.azure.net");
  Event b(1002, "https://vault.azure.net");
  Event c(1001, "https://storage.azure.com/");
  Event d(1001, "https://vault.azure.net", Decision::kDeny);
  Event u(0, "https://vault.azure.net");
  u.caller.peer.known = false;
  for (Event* e : {&a, &b, &c, &d, &u, &a, &b}) trail->Record(e->event);
  ASSERT_EQ(lines_.size(), 5u);
  EXPECT_EQ(Line(3)["decision"], "deny");
  EXPECT_EQ(Line(3)["status"], 401);
  EXPECT_EQ(Line(4)["caller_uid"], "unknown");
}

TEST_F(AuditTrailTest, SummarizeZeroWritesEveryEvent) {
  auto trail = Make(true, Duration(0));
  Event e(1001, "r");
  for (int i = 0; i < 3; ++i) trail->Record(e.event);
  EXPECT_EQ(lines_.size(), 3u);
}

TEST_F(AuditTrailTest, TheSummaryTableIsBoundedAndTheRestCountedAsOverflow) {
  auto trail = Make();
  const size_t extra = 7;
  std::vector<std::unique_ptr<Event>> events;
  for (size_t i = 0; i < AuditTrail::kMaxSummaryKeys + extra; ++i) {
    auto e = std::make_unique<Event>(1001, "https://r/" + std::to_string(i));
    trail->Record(e->event);
    trail->Record(e->event);  // a repeat: counted wherever its key went
    events.push_back(std::move(e));
  }
  EXPECT_EQ(lines_.size(), AuditTrail::kMaxSummaryKeys);
  lines_.clear();
  time_.Advance(seconds(60));
  // One summary per tracked key, and one overflow record with the rest.
  ASSERT_EQ(lines_.size(), AuditTrail::kMaxSummaryKeys + 1);
  uint64_t total = 0;
  size_t overflow = 0;
  for (size_t i = 0; i < lines_.size(); ++i) {
    json j = Line(i);
    total += j["count"].get<uint64_t>();
    if (j.value("overflow", false)) {
      ++overflow;
      EXPECT_EQ(j["identity"], "*");
      EXPECT_EQ(j["resource"], "*");
      EXPECT_EQ(j["count"], 2 * extra);
    }
  }
  EXPECT_EQ(overflow, 1u);
  // Every event is in some record: kMaxSummaryKeys first records before, the rest now.
  EXPECT_EQ(total + AuditTrail::kMaxSummaryKeys, 2 * (AuditTrail::kMaxSummaryKeys + extra));
}

TEST_F(AuditTrailTest, HostileFieldsAreEscapedAndCut) {
  auto trail = Make();
  const std::string hostile = std::string("https://x\"}\n{\"decision\":\"allow\"}\r\x01\xff\xc3") + "\u2028" +
                              std::string(3000, 'a');
  Event e(1001, hostile, Decision::kDeny);
  e.caller.process_known = true;
  e.caller.pid = 42;
  e.caller.exe = "/tmp/evil\n\"exe";
  trail->Record(e.event);
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0].find('\n'), std::string::npos);
  EXPECT_EQ(lines_[0].find('\r'), std::string::npos);
  json j = Line(0);
  EXPECT_EQ(j["decision"], "deny");
  EXPECT_EQ(j["caller_pid"], 42);
  EXPECT_EQ(j["caller_exe"], "/tmp/evil\n\"exe");
  const std::string resource = j["resource"];
  EXPECT_EQ(resource.rfind("https://x\"}\n{\"decision\"", 0), 0u);
  EXPECT_LE(resource.size(), kMaxFieldBytes + 8);  // replacement characters may grow it a little

  // Journal fields: no field value breaks a line.
  AuditRecord r;
  r.uid_known = true;
  r.resource = hostile.substr(0, 40);
  r.exe = "/tmp/evil\n\"exe";
  for (const std::string& f : AuditJournalFields(r)) {
    EXPECT_EQ(f.find('\n'), std::string::npos) << f;
    EXPECT_EQ(f.find('\r'), std::string::npos) << f;
  }
}

TEST_F(AuditTrailTest, NeverTheTokenOnlyItsFingerprintAndExpiry) {
  auto trail = Make();
  auto token = MakeToken(kSecret);
  Event e(1001, "https://vault.azure.net");
  e.event.cache = CacheOutcome::kMiss;
  e.event.token = token.get();
  trail->Record(e.event);
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0].find(kSecret), std::string::npos);
  EXPECT_EQ(lines_[0].find("SECRETTOKEN"), std::string::npos);
  json j = Line(0);
  EXPECT_EQ(j["token_fingerprint"], Sha256::HexHash(kSecret).substr(0, 16));
  EXPECT_EQ(j["expires_on"], 1767229200);
  EXPECT_EQ(j["cache"], "miss");
}

TEST(AuditJournalFieldsTest, StructuredFieldsAndAMessageIdPerDecision) {
  AuditRecord r;
  r.time = r.since = FakeTime::DefaultStart();
  r.uid_known = true;
  r.uid = 1001;
  r.user = "alice";
  r.pid = 4242;
  r.exe = "/usr/bin/curl";
  r.listener = "unix";
  r.dialect = "legacy";
  r.identity = "client_id=0d1e2f30-aaaa-4bbb-8ccc-123456789abc";
  r.resource = "https://vault.azure.net";
  r.decision = Decision::kWouldDeny;
  r.cache = CacheOutcome::kCoalesced;
  r.status = 200;
  r.expires_on = 1767229200;
  std::snprintf(r.fingerprint, sizeof r.fingerprint, "0123456789abcdef");
  r.count = 3;
  std::map<std::string, std::string> f;
  for (const std::string& field : AuditJournalFields(r)) {
    const size_t eq = field.find('=');
    ASSERT_NE(eq, std::string::npos);
    EXPECT_TRUE(f.emplace(field.substr(0, eq), field.substr(eq + 1)).second) << "twice: " << field;
  }
  EXPECT_EQ(f["MESSAGE_ID"], kAuditMessageIdWouldDeny);
  EXPECT_EQ(f["PRIORITY"], "5");
  EXPECT_EQ(f["MI_CALLER_UID"], "1001");
  EXPECT_EQ(f["MI_CALLER_USER"], "alice");
  EXPECT_EQ(f["MI_CALLER_PID"], "4242");
  EXPECT_EQ(f["MI_CALLER_EXE"], "/usr/bin/curl");
  EXPECT_EQ(f["MI_LISTENER"], "unix");
  EXPECT_EQ(f["MI_DIALECT"], "legacy");
  EXPECT_EQ(f["MI_IDENTITY"], "client_id=0d1e2f30-aaaa-4bbb-8ccc-123456789abc");
  EXPECT_EQ(f["MI_RESOURCE"], "https://vault.azure.net");
  EXPECT_EQ(f["MI_DECISION"], "would_deny");
  EXPECT_EQ(f["MI_CACHE"], "coalesced");
  EXPECT_EQ(f["MI_STATUS"], "200");
  EXPECT_EQ(f["MI_EXPIRES_ON"], "1767229200");
  EXPECT_EQ(f["MI_TOKEN_FINGERPRINT"], "0123456789abcdef");
  EXPECT_EQ(f["MI_COUNT"], "3");
  EXPECT_EQ(f["MI_SINCE"], "2026-01-01T00:00:00.000Z");
  EXPECT_NE(f["MESSAGE"].find("would be denied"), std::string::npos);
  EXPECT_NE(f["MESSAGE"].find("uid 1001 (alice)"), std::string::npos);

  r.decision = Decision::kAllow;
  r.fingerprint[0] = '\0';
  r.uid_known = false;
  r.user.clear();
  f.clear();
  for (const std::string& field : AuditJournalFields(r)) f.emplace(field.substr(0, field.find('=')), "");
  EXPECT_EQ(f.count("MI_TOKEN_FINGERPRINT"), 0u);
  EXPECT_EQ(f.count("MI_CALLER_USER"), 0u);
  auto id = [](Decision d) {
    AuditRecord x;
    x.decision = d;
    for (const std::string& field : AuditJournalFields(x)) {
      if (field.rfind("MESSAGE_ID=", 0) == 0) return field.substr(11);
    }
    return std::string();
  };
  EXPECT_EQ(id(Decision::kAllow), kAuditMessageIdAllow);
  EXPECT_EQ(id(Decision::kDeny), kAuditMessageIdDeny);
  EXPECT_NE(id(Decision::kAllow), id(Decision::kDeny));
}

TEST_F(AuditTrailTest, DecisionMetricsAppearAfterTheFirstEventAlsoWhenDisabled) {
  auto trail = Make(/*enabled=*/false);
  EXPECT_EQ(Metrics(*trail), "");
  EXPECT_FALSE(trail->seen_events());
  Event a(1001, "r");
  Event d(1002, "r", Decision::kDeny);
  trail->Record(a.event);
  trail->Record(d.event);
  trail->Record(d.event);
  EXPECT_TRUE(lines_.empty());
  const std::string m = Metrics(*trail);
  EXPECT_NE(m.find("mi_agent_authorization_decisions_total{decision=\"allow\",listener=\"tcp\",dialect=\"imds\"} 1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("mi_agent_authorization_decisions_total{decision=\"deny\",listener=\"tcp\",dialect=\"imds\"} 2"),
            std::string::npos);
  EXPECT_EQ(m.find("mi_agent_audit_records_total"), std::string::npos);  // the trail is off

  auto on = Make(true);
  const std::string zero = Metrics(*on);
  EXPECT_NE(zero.find("mi_agent_audit_records_total 0"), std::string::npos);
  EXPECT_EQ(zero.find("mi_agent_authorization_decisions_total"), std::string::npos);
  on->Record(a.event);
  EXPECT_NE(Metrics(*on).find("mi_agent_audit_records_total 1"), std::string::npos);
  EXPECT_NE(Metrics(*on).find("mi_agent_audit_dropped_total 0"), std::string::npos);
}

TEST_F(AuditTrailTest, TopCallersByRequestsAndDenialsInABoundedTable) {
  auto trail = Make(false);
  Event busy(2000, "r");
  busy.caller.account_known = true;
  busy.caller.user = "busy";
  Event denied(2001, "r", Decision::kDeny);
  Event would(2002, "r", Decision::kWouldDeny);
  for (int i = 0; i < 50; ++i) trail->Record(busy.event);
  for (int i = 0; i < 20; ++i) trail->Record(denied.event);
  for (int i = 0; i < 5; ++i) trail->Record(would.event);
  for (uint32_t uid = 0; uid < AuditTrail::kMaxCallers + 100; ++uid) {
    Event e(10000 + uid, "r");
    trail->Record(e.event);
  }
  EXPECT_EQ(trail->callers_tracked(), AuditTrail::kMaxCallers);
  EXPECT_EQ(trail->other_callers().requests, 103u);  // the three above took three rows

  auto top = trail->TopCallers(false);
  ASSERT_EQ(top.size(), AuditTrail::kTopCallers);
  EXPECT_EQ(top[0].uid, 2000u);
  EXPECT_EQ(top[0].user, "busy");
  EXPECT_EQ(top[0].requests, 50u);
  EXPECT_EQ(top[1].uid, 2001u);
  auto by_denials = trail->TopCallers(true);
  ASSERT_EQ(by_denials.size(), 2u);
  EXPECT_EQ(by_denials[0].uid, 2001u);
  EXPECT_EQ(by_denials[0].denials, 20u);
  EXPECT_EQ(by_denials[1].uid, 2002u);
  EXPECT_EQ(by_denials[1].denials, 5u);
}

TEST_F(AuditTrailTest, OpenSummariesAreWrittenWhenTheTrailGoes) {
  auto trail = Make();
  Event e(1001, "r");
  trail->Record(e.event);
  trail->Record(e.event);
  trail->Record(e.event);
  trail.reset();
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_EQ(Line(1)["count"], 2);
}

// ---- The file writer on a real loop -------------------------------------------
#ifndef _WIN32

class FileAuditWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/mi-audit-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/audit.log";
    ASSERT_EQ(uv_loop_init(&loop_), 0);
  }
  void TearDown() override {
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    std::string cmd = "rm -rf " + dir_;
    EXPECT_EQ(std::system(cmd.c_str()), 0);
  }
  static std::vector<std::string> ReadLines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }
  static AuditRecord Rec(const std::string& resource) {
    AuditRecord r;
    r.resource = resource;
    r.identity = "default";
    return r;
  }

  uv_loop_t loop_;
  std::string dir_;
  std::string path_;
};

TEST_F(FileAuditWriterTest, AppendsJsonLinesReopensAfterRenameAndCapsTheSize) {
  {
    FileAuditWriter w(&loop_, path_, 1 << 20, Logger::Discard());
    ASSERT_TRUE(w.Open().ok());
    EXPECT_TRUE(w.Write(Rec("one")));
    EXPECT_TRUE(w.Write(Rec("two")));
    uv_run(&loop_, UV_RUN_DEFAULT);
    struct stat st;
    ASSERT_EQ(stat(path_.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640u & ~[] { mode_t m = umask(0); umask(m); return m; }());
    // logrotate: rename, then SIGHUP.
    ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
    EXPECT_TRUE(w.Write(Rec("three")));  // still the old file (open fd)
    uv_run(&loop_, UV_RUN_DEFAULT);
    ASSERT_TRUE(w.Reopen().ok());
    EXPECT_TRUE(w.Write(Rec("four")));
    EXPECT_TRUE(w.Write(Rec("five")));  // left pending when the writer goes: written at once
  }
  auto old_lines = ReadLines(path_ + ".1");
  ASSERT_EQ(old_lines.size(), 3u);
  EXPECT_EQ(json::parse(old_lines[2])["resource"], "three");
  uv_run(&loop_, UV_RUN_DEFAULT);
  auto lines = ReadLines(path_);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(json::parse(lines[0])["resource"], "four");
  EXPECT_EQ(json::parse(lines[1])["resource"], "five");
}

TEST_F(FileAuditWriterTest, SizeCapDropsAndCountsUntilReopen) {
  const size_t line = AuditRecordJson(Rec("x")).size() + 1;
  FileAuditWriter w(&loop_, path_, static_cast<int64_t>(2 * line + line / 2), Logger::Discard());
  ASSERT_TRUE(w.Open().ok());
  EXPECT_TRUE(w.Write(Rec("x")));
  EXPECT_TRUE(w.Write(Rec("x")));
  EXPECT_FALSE(w.Write(Rec("x")));
  EXPECT_FALSE(w.Write(Rec("x")));
  EXPECT_EQ(w.dropped(), 2u);
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(ReadLines(path_).size(), 2u);
  // Still full after a reopen of the same file; a rotated (new) file has room.
  ASSERT_TRUE(w.Reopen().ok());
  EXPECT_FALSE(w.Write(Rec("x")));
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
  ASSERT_TRUE(w.Reopen().ok());
  EXPECT_TRUE(w.Write(Rec("x")));
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(ReadLines(path_).size(), 1u);
  EXPECT_EQ(w.dropped(), 3u);
}

TEST_F(FileAuditWriterTest, RefusesASymlinkAndANonRegularFile) {
  ASSERT_EQ(symlink("/dev/null", path_.c_str()), 0);
  FileAuditWriter link(&loop_, path_, 1 << 20, Logger::Discard());
  EXPECT_FALSE(link.Open().ok());
  FileAuditWriter dir(&loop_, dir_, 1 << 20, Logger::Discard());
  EXPECT_FALSE(dir.Open().ok());
}

TEST_F(FileAuditWriterTest, TheTrailOpensTheFileAndReportsAnUnopenableOne) {
  FakeTime time;
  AuditTrail::Options o;
  o.enabled = true;
  o.sink = AuditTrail::SinkKind::kFile;
  o.path = dir_ + "/missing-dir/audit.log";
  AuditTrail::Env env{&time, &time, &loop_, nullptr, nullptr};
  AuditTrail bad(o, env);
  EXPECT_FALSE(bad.status().ok());
  EXPECT_NE(bad.status().message().find("missing-dir"), std::string::npos);
  // A reload to a good path takes it.
  o.path = path_;
  EXPECT_TRUE(bad.set_options(o).ok());
  CallerInfo caller;
  TokenKey key;
  key.resource = "r";
  AuditEvent e;
  e.caller = &caller;
  e.key = &key;
  e.listener = "tcp";
  e.dialect = "legacy";
  bad.Record(e);
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(ReadLines(path_).size(), 1u);
}

#endif  // _WIN32

}  // namespace
}  // namespace mi
