// The platform caller lookups against the real system: this process, its
// children, and (Linux, as root) users and groups the test creates and removes.

#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#endif

#include "agent/caller_lookup.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef __linux__
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <csignal>
#include <fstream>
#include <sstream>

#include "agent/base/peer_lookup.h"
#endif

namespace mi {
namespace {

#ifdef __linux__

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string SelfExe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

std::string SelfComm() {
  std::ifstream in("/proc/self/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

// A listening loopback socket; Accept() returns the server's end of the next
// connection, Resolve() the client's end through the real sock_diag resolver.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on loopback: " << std::strerror(errno);
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() {
    if (fd_ >= 0) ::close(fd_);
  }
  uint16_t port() const { return port_; }

  // The client's socket (in this process): a blocking connect.
  int Connect() const {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s >= 0 && ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(s);
      return -1;
    }
    return s;
  }

  // The owner of the client's end of the next connection (accepted and closed).
  PeerCredentials AcceptAndResolve() {
    sockaddr_storage peer, local;
    socklen_t peer_len = sizeof peer, local_len = sizeof local;
    const int s = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC);
    if (s < 0) return {};
    PeerCredentials credentials;
    if (::getsockname(s, reinterpret_cast<sockaddr*>(&local), &local_len) == 0) {
      credentials = MakeSystemPeerResolver()->Resolve(peer, local);
    }
    accepted_.push_back(s);
    return credentials;
  }

  void CloseAccepted() {
    for (int s : accepted_) ::close(s);
    accepted_.clear();
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::vector<int> accepted_;

 public:
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
};

// A child process that waits (for a byte or EOF on a pipe) until Stop().
class Child {
 public:
  // `body` runs in the child before it signals readiness; a non-zero return
  // makes the child exit with it instead.
  template <typename Body>
  explicit Child(Body body) {
    int ready[2], hold[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(hold, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only system calls and the body from here; never return into gtest.
      ::close(ready[0]);
      ::close(hold[1]);
      const int failed = body();
      if (failed != 0) ::_exit(failed);
      char c = 'r';
      if (::write(ready[1], &c, 1) != 1) ::_exit(90);
      if (::read(hold[0], &c, 1) < 0) ::_exit(0);
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(hold[0]);
    hold_ = hold[1];
    char c = 0;
    ready_ = pid_ > 0 && ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
  }
  ~Child() { Stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool ready() const { return ready_; }
  pid_t pid() const { return pid_; }

  // Lets the child exit and reaps it; its exit status.
  int Stop() {
    if (hold_ >= 0) ::close(hold_);
    hold_ = -1;
    if (pid_ <= 0) return -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int hold_ = -1;
  bool ready_ = false;
};

// Runs a shell command quietly; true on exit status 0.
bool Shell(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()) == 0; }

bool HaveUserTools() {
  return ::access("/usr/sbin/useradd", X_OK) == 0 && ::access("/usr/sbin/groupadd", X_OK) == 0;
}

// A user with a primary and a supplementary group, created for the test and
// removed at the end (also on failure).
class TemporaryAccount {
 public:
  TemporaryAccount() {
    const std::string tag = std::to_string(::getpid());
    user_ = "mi-cl-u" + tag;
    primary_ = "mi-cl-p" + tag;
    extra_ = "mi-cl-s" + tag;
    if (!Shell("groupadd --system " + primary_)) return;
    primary_created_ = true;
    if (!Shell("groupadd --system " + extra_)) return;
    extra_created_ = true;
    if (!Shell("useradd --system --no-create-home --shell /usr/sbin/nologin -g " + primary_ + " -G " + extra_ + " " +
               user_)) {
      return;
    }
    user_created_ = true;
    const passwd* pw = ::getpwnam(user_.c_str());
    const group* gr = ::getgrnam(extra_.c_str());
    if (pw == nullptr || gr == nullptr) return;
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    extra_gid_ = gr->gr_gid;
    ok_ = true;
  }
  ~TemporaryAccount() {
    if (user_created_ && !Shell("userdel " + user_)) ADD_FAILURE() << "could not remove user " << user_;
    if (extra_created_ && !Shell("groupdel " + extra_)) ADD_FAILURE() << "could not remove group " << extra_;
    if (primary_created_ && !Shell("groupdel " + primary_)) ADD_FAILURE() << "could not remove group " << primary_;
  }
  TemporaryAccount(const TemporaryAccount&) = delete;
  TemporaryAccount& operator=(const TemporaryAccount&) = delete;

  bool ok() const { return ok_; }
  const std::string& user() const { return user_; }
  const std::string& primary() const { return primary_; }
  const std::string& extra() const { return extra_; }
  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  gid_t extra_gid() const { return extra_gid_; }

 private:
  std::string user_, primary_, extra_;
  bool user_created_ = false, primary_created_ = false, extra_created_ = false, ok_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0, extra_gid_ = 0;
};

#define SKIP_UNLESS_ROOT_WITH_USER_TOOLS()                                          \
  do {                                                                             \
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (creates users and groups)"; \
    if (!HaveUserTools()) GTEST_SKIP() << "no useradd/groupadd";                   \
  } while (0)

TEST(CallerLookupTest, FindPidOfOurOwnLoopbackClient) {
  Listener listener;
  const int client = listener.Connect();
  ASSERT_GE(client, 0);
  const PeerCredentials peer = listener.AcceptAndResolve();
  ASSERT_TRUE(peer.known) << "sock_diag answered nothing (is NETLINK_SOCK_DIAG available?)";
  ASSERT_NE(peer.inode, 0u);
  EXPECT_EQ(caller_lookup::FindPid(peer), static_cast<uint32_t>(::getpid()));
  ::close(client);
  listener.CloseAccepted();
}

TEST(CallerLookupTest, FindPidOfASharedSocketIsTheLowestPid) {
  Listener listener;
  const int client = listener.Connect();
  ASSERT_GE(client, 0);
  const PeerCredentials peer = listener.AcceptAndResolve();
  ASSERT_TRUE(peer.known);
  Child child([] { return 0; });  // holds a copy of `client` (fork)
  ASSERT_TRUE(child.ready());
  const uint32_t lowest = static_cast<uint32_t>(std::min(::getpid(), child.pid()));
  EXPECT_EQ(caller_lookup::FindPid(peer), lowest);
  ::close(client);
  EXPECT_EQ(caller_lookup::FindPid(peer), static_cast<uint32_t>(child.pid()));  // only the child holds it now
  EXPECT_EQ(child.Stop(), 0);
  EXPECT_EQ(caller_lookup::FindPid(peer), 0u);  // nobody does
  listener.CloseAccepted();
}

TEST(CallerLookupTest, FindPidTakesTheTransportsPidAndFindsNothingElse) {
  PeerCredentials peer;
  EXPECT_EQ(caller_lookup::FindPid(peer), 0u);  // unknown
  peer.known = true;
  peer.uid = ::getuid();
  EXPECT_EQ(caller_lookup::FindPid(peer), 0u);  // no inode, no pid
  peer.pid = 4242;
  EXPECT_EQ(caller_lookup::FindPid(peer), 4242u);  // SO_PEERCRED / owner pid: taken as is
  peer.pid = 0;
  peer.inode = UINT64_MAX;  // no such socket
  EXPECT_EQ(caller_lookup::FindPid(peer), 0u);
}

TEST(CallerLookupTest, ProcessOfOurself) {
  CallerInfo first, second;
  uint64_t start1 = 0, start2 = 0;
  const uint32_t self = static_cast<uint32_t>(::getpid());
  ASSERT_TRUE(caller_lookup::Process(self, &first, &start1));
  EXPECT_TRUE(first.process_known);
  EXPECT_EQ(first.pid, self);
  EXPECT_EQ(first.exe, SelfExe());
  EXPECT_FALSE(first.exe.empty());
  EXPECT_EQ(first.process_name, SelfComm());
  EXPECT_NE(start1, 0u);
  ASSERT_TRUE(caller_lookup::Process(self, &second, &start2));
  EXPECT_EQ(start1, start2);
  EXPECT_FALSE(caller_lookup::Process(0, &second, &start2));
}

TEST(CallerLookupTest, ProcessThatExitedIsGone) {
  pid_t pid = 0;
  {
    Child child([] { return 0; });
    ASSERT_TRUE(child.ready());
    pid = child.pid();
    CallerInfo info;
    uint64_t start = 0;
    EXPECT_TRUE(caller_lookup::Process(static_cast<uint32_t>(pid), &info, &start));
    EXPECT_EQ(info.pid, static_cast<uint32_t>(pid));
    EXPECT_EQ(child.Stop(), 0);
  }
  CallerInfo info;
  uint64_t start = 0;
  EXPECT_FALSE(caller_lookup::Process(static_cast<uint32_t>(pid), &info, &start));
  EXPECT_FALSE(info.process_known);
}

TEST(CallerLookupTest, ProcessNameIsRawBytesEvenWithParenthesesAndSpaces) {
  // comm is stat's field 2 in parentheses: starttime is counted after the last ')'.
  static const char kName[] = ") 1 (x) \xff";
  Child child([] { return ::prctl(PR_SET_NAME, kName, 0, 0, 0) == 0 ? 0 : 91; });
  ASSERT_TRUE(child.ready());
  CallerInfo info;
  uint64_t start = 0, again = 0;
  ASSERT_TRUE(caller_lookup::Process(static_cast<uint32_t>(child.pid()), &info, &start));
  EXPECT_EQ(info.process_name, std::string(kName));
  EXPECT_EQ(info.exe, SelfExe());
  // Our own starttime is earlier or equal (the child was forked after we started).
  CallerInfo self;
  uint64_t self_start = 0;
  ASSERT_TRUE(caller_lookup::Process(static_cast<uint32_t>(::getpid()), &self, &self_start));
  EXPECT_GE(start, self_start);
  ASSERT_TRUE(caller_lookup::Process(static_cast<uint32_t>(child.pid()), &info, &again));
  EXPECT_EQ(start, again);
}

// An executable run from a copy of /bin/sleep at `path`.
class CopiedSleep {
 public:
  explicit CopiedSleep(const std::string& path) : path_(path) {
    if (!Shell("cp /bin/sleep '" + path + "'")) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      execl(path.c_str(), "sleep", "30", static_cast<char*>(nullptr));
      ::_exit(92);
    }
    // Until the child has exec'd: its exe is the copy (bounded wait).
    for (int i = 0; i < 500 && pid_ > 0; ++i) {
      char buf[PATH_MAX];
      const std::string link = "/proc/" + std::to_string(pid_) + "/exe";
      const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
      if (n > 0 && std::string(buf, static_cast<size_t>(n)) == path) return;
      ::usleep(10000);
    }
  }
  ~CopiedSleep() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::unlink(path_.c_str());
  }
  CopiedSleep(const CopiedSleep&) = delete;
  CopiedSleep& operator=(const CopiedSleep&) = delete;
  pid_t pid() const { return pid_; }

 private:
  std::string path_;
  pid_t pid_ = -1;
};

std::string TempDir() {
  char dir[] = "/tmp/mi-caller-lookup-XXXXXX";
  return ::mkdtemp(dir) != nullptr ? dir : "";
}

TEST(CallerLookupTest, ReplacedExecutableKeepsItsPath) {
  const std::string dir = TempDir();
  ASSERT_FALSE(dir.empty());
  {
    const std::string path = dir + "/app";
    CopiedSleep app(path);
    ASSERT_GT(app.pid(), 0);
    ASSERT_EQ(::unlink(path.c_str()), 0);  // as an upgrade replacing it would
    CallerInfo info;
    uint64_t start = 0;
    ASSERT_TRUE(caller_lookup::Process(static_cast<uint32_t>(app.pid()), &info, &start));
    EXPECT_EQ(info.exe, path);
    EXPECT_EQ(info.process_name, "app");
  }
  {
    // A file whose name ends in " (deleted)" is not a deleted file.
    const std::string path = dir + "/app (deleted)";
    CopiedSleep app(path);
    ASSERT_GT(app.pid(), 0);
    CallerInfo info;
    uint64_t start = 0;
    ASSERT_TRUE(caller_lookup::Process(static_cast<uint32_t>(app.pid()), &info, &start));
    EXPECT_EQ(info.exe, path);
  }
  ::rmdir(dir.c_str());
}

TEST(CallerLookupTest, AccountOfRoot) {
  PeerCredentials peer;
  peer.known = true;
  peer.uid = 0;
  CallerInfo info;
  ASSERT_TRUE(caller_lookup::Account(peer, &info));
  EXPECT_TRUE(info.account_known);
  EXPECT_EQ(info.user, "root");
  ASSERT_FALSE(info.gids.empty());
  EXPECT_EQ(info.gids[0], 0u);  // the primary group first
  EXPECT_TRUE(Contains(info.groups, "root"));
}

TEST(CallerLookupTest, AccountOfUnknownOrUnresolvedCaller) {
  CallerInfo info;
  EXPECT_FALSE(caller_lookup::Account(PeerCredentials(), &info));
  PeerCredentials peer;
  peer.known = true;
  peer.uid = 4000000001u;  // no such user
  EXPECT_FALSE(caller_lookup::Account(peer, &info));
  EXPECT_FALSE(info.account_known);
}

TEST(CallerLookupTest, AccountWithSupplementaryGroup) {
  SKIP_UNLESS_ROOT_WITH_USER_TOOLS();
  TemporaryAccount account;
  ASSERT_TRUE(account.ok()) << "useradd/groupadd failed";
  PeerCredentials peer;
  peer.known = true;
  peer.uid = account.uid();
  CallerInfo info;
  ASSERT_TRUE(caller_lookup::Account(peer, &info));
  EXPECT_EQ(info.user, account.user());
  ASSERT_EQ(info.gids.size(), 2u);
  EXPECT_EQ(info.gids[0], account.gid());
  EXPECT_EQ(info.gids[1], account.extra_gid());
  EXPECT_EQ(info.groups, (std::vector<std::string>{account.primary(), account.extra()}));
}

TEST(CallerLookupTest, FindPidOfAnotherUsersClient) {
  SKIP_UNLESS_ROOT_WITH_USER_TOOLS();
  TemporaryAccount account;
  ASSERT_TRUE(account.ok()) << "useradd/groupadd failed";
  Listener listener;
  const uint16_t port = listener.port();
  const uid_t uid = account.uid();
  const gid_t gid = account.gid();
  Child child([port, uid, gid] {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) return 93;
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : 94;  // kept open
  });
  ASSERT_TRUE(child.ready());
  // An own connection too, so the scan has a socket of ours to pass over.
  const int own = listener.Connect();
  ASSERT_GE(own, 0);
  const PeerCredentials theirs = listener.AcceptAndResolve();
  const PeerCredentials ours = listener.AcceptAndResolve();
  ASSERT_TRUE(theirs.known);
  ASSERT_TRUE(ours.known);
  EXPECT_EQ(theirs.uid, uid);
  EXPECT_EQ(caller_lookup::FindPid(theirs), static_cast<uint32_t>(child.pid()));
  EXPECT_EQ(caller_lookup::FindPid(ours), static_cast<uint32_t>(::getpid()));
  CallerInfo info;
  uint64_t start = 0;
  ASSERT_TRUE(caller_lookup::Process(static_cast<uint32_t>(child.pid()), &info, &start));
  EXPECT_EQ(info.exe, SelfExe());
  ::close(own);
  listener.CloseAccepted();
  EXPECT_EQ(child.Stop(), 0);
}

#endif  // __linux__

#ifdef _WIN32

std::wstring SelfPath() {
  std::vector<wchar_t> path(32768);
  const DWORD n = GetModuleFileNameW(nullptr, path.data(), static_cast<DWORD>(path.size()));
  return std::wstring(path.data(), n);
}

std::string Utf8(const std::wstring& w) {
  if (w.empty()) return {};
  const int n = WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), nullptr, 0, nullptr, nullptr);
  std::string out(static_cast<size_t>(n), '\0');
  WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), &out[0], n, nullptr, nullptr);
  return out;
}

// Case-insensitive (ASCII) comparison: Windows paths are, and an image name may
// be reported with another case than the module's file name.
bool SamePath(std::string a, std::string b) {
  for (std::string* s : {&a, &b}) {
    for (char& c : *s) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return a == b;
}

TEST(CallerLookupTest, ProcessOfOurself) {
  const uint32_t self = GetCurrentProcessId();
  CallerInfo first, second;
  uint64_t start1 = 0, start2 = 0;
  ASSERT_TRUE(caller_lookup::Process(self, &first, &start1));
  EXPECT_TRUE(first.process_known);
  EXPECT_EQ(first.pid, self);
  const std::string exe = Utf8(SelfPath());
  EXPECT_TRUE(SamePath(first.exe, exe)) << first.exe << " vs " << exe;
  EXPECT_TRUE(SamePath(first.process_name, exe.substr(exe.find_last_of('\\') + 1))) << first.process_name;
  EXPECT_NE(start1, 0u);
  ASSERT_TRUE(caller_lookup::Process(self, &second, &start2));
  EXPECT_EQ(start1, start2);
  EXPECT_FALSE(caller_lookup::Process(0, &second, &start2));
}

TEST(CallerLookupTest, ProcessThatExitedIsGone) {
  // This test binary again, running no test: it exits at once. Its handle is
  // kept open, so the pid still names the exited process.
  std::wstring command = L"\"" + SelfPath() + L"\" --gtest_filter=NoSuchTest";
  STARTUPINFOW si;
  std::memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  PROCESS_INFORMATION pi;
  ASSERT_TRUE(CreateProcessW(nullptr, &command[0], nullptr, nullptr, FALSE, CREATE_NO_WINDOW, nullptr, nullptr, &si,
                             &pi));
  ASSERT_EQ(WaitForSingleObject(pi.hProcess, 60000), WAIT_OBJECT_0);
  CallerInfo info;
  uint64_t start = 0;
  EXPECT_FALSE(caller_lookup::Process(pi.dwProcessId, &info, &start));
  EXPECT_FALSE(info.process_known);
  CloseHandle(pi.hThread);
  CloseHandle(pi.hProcess);
}

TEST(CallerLookupTest, AccountOfOurself) {
  PeerCredentials peer;
  peer.known = true;
  peer.pid = GetCurrentProcessId();
  EXPECT_EQ(caller_lookup::FindPid(peer), peer.pid);  // the owner pid came with the connection
  CallerInfo info;
  ASSERT_TRUE(caller_lookup::Account(peer, &info));
  EXPECT_TRUE(info.account_known);
  EXPECT_EQ(info.user_sid.rfind("S-1-", 0), 0u) << info.user_sid;
  EXPECT_FALSE(info.user.empty());
  EXPECT_FALSE(info.group_sids.empty());
  for (const std::string& sid : info.group_sids) {
    EXPECT_EQ(sid.rfind("S-1-", 0), 0u) << sid;
    EXPECT_NE(sid.rfind("S-1-5-5-", 0), 0u) << "a logon session SID: " << sid;
    EXPECT_NE(sid.rfind("S-1-16-", 0), 0u) << "an integrity label: " << sid;
  }
  EXPECT_TRUE(info.gids.empty());
}

TEST(CallerLookupTest, AccountNeedsAPid) {
  CallerInfo info;
  EXPECT_FALSE(caller_lookup::Account(PeerCredentials(), &info));
  PeerCredentials peer;
  peer.known = true;  // pid 0: nothing to ask
  EXPECT_FALSE(caller_lookup::Account(peer, &info));
  EXPECT_FALSE(info.account_known);
}

#endif  // _WIN32

}  // namespace
}  // namespace mi
