// The Linux caller lookups: NSS for the account, /proc for the process.
//
// Every read is bounded (buffers, retries, processes and fds visited) and
// every byte read from /proc is the caller's (comm and the executable's path
// may hold any byte but NUL): kept as raw bytes, never parsed as text beyond
// the numbers of /proc/PID/stat.
//
// Permissions. /proc/PID/comm and /proc/PID/stat are readable for any visible
// process; /proc/PID/exe and the entries of /proc/PID/fd need ptrace read
// access (the same uid, or CAP_SYS_PTRACE), and listing another user's
// /proc/PID/fd (mode 0500) needs CAP_DAC_READ_SEARCH. The shipped unit has no
// capabilities and ProtectProc=invisible (other users' processes are not even
// visible): systemd/process-rules.conf is the drop-in that grants them.

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "agent/caller_lookup.h"

namespace mi::caller_lookup {
namespace {

// NSS answers: a buffer that starts at the system's hint and doubles on
// ERANGE up to this cap (a group with many members needs a large one).
constexpr size_t kMinNssBuffer = 1024;
constexpr size_t kMaxNssBuffer = size_t{1} << 20;
// getgrouplist: the kernel's NGROUPS_MAX.
constexpr int kMaxGroups = 65536;
// The /proc scan for a socket: entries of /proc looked at, and fd entries
// read over all processes (whatever is left unvisited is "not found").
constexpr int kMaxProcEntries = 1 << 17;
constexpr int kMaxFdEntries = 1 << 18;
// /proc/PID/comm holds at most TASK_COMM_LEN - 1 = 15 bytes and a newline;
// the reads allow a little more and cut there.
constexpr size_t kMaxComm = 64;
constexpr size_t kStatBuffer = 4096;
constexpr char kDeletedSuffix[] = " (deleted)";

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

// A directory stream over `fd` (taken over, closed with the stream).
class Dir {
 public:
  explicit Dir(int fd) : dir_(fd >= 0 ? ::fdopendir(fd) : nullptr) {
    if (fd >= 0 && dir_ == nullptr) ::close(fd);
  }
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;
  ~Dir() {
    if (dir_ != nullptr) ::closedir(dir_);
  }
  bool ok() const { return dir_ != nullptr; }
  int fd() const { return ::dirfd(dir_); }
  const dirent* Next() { return ::readdir(dir_); }

 private:
  DIR* dir_;
};

int OpenDirAt(int at, const char* name) {
  return ::openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

size_t NssHint(int name) {
  const long hint = ::sysconf(name);
  return hint > 0 ? std::min(std::max(static_cast<size_t>(hint), kMinNssBuffer), kMaxNssBuffer) : kMinNssBuffer;
}

// Runs `lookup(buffer, size)` (a getpwuid_r-like call returning 0 or an errno)
// with a buffer that grows on ERANGE; true if it found an entry.
template <typename Lookup>
bool WithNssBuffer(size_t start, std::vector<char>* buffer, Lookup lookup) {
  for (size_t size = start; size <= kMaxNssBuffer; size *= 2) {
    buffer->resize(size);
    int error = 0;
    bool found = false;
    do {
      error = lookup(buffer->data(), buffer->size(), &found);
    } while (error == EINTR);
    if (error == 0) return found;
    if (error != ERANGE) return false;
  }
  return false;
}

bool UserName(uid_t uid, std::string* name, gid_t* primary) {
  std::vector<char> buffer;
  return WithNssBuffer(NssHint(_SC_GETPW_R_SIZE_MAX), &buffer, [&](char* data, size_t size, bool* found) {
    passwd entry;
    passwd* result = nullptr;
    const int error = ::getpwuid_r(uid, &entry, data, size, &result);
    if (error == 0 && result != nullptr) {
      *found = true;
      name->assign(result->pw_name);
      *primary = result->pw_gid;
    }
    return error;
  });
}

bool GroupName(gid_t gid, std::vector<char>* buffer, std::string* name) {
  return WithNssBuffer(NssHint(_SC_GETGR_R_SIZE_MAX), buffer, [&](char* data, size_t size, bool* found) {
    group entry;
    group* result = nullptr;
    const int error = ::getgrgid_r(gid, &entry, data, size, &result);
    if (error == 0 && result != nullptr) {
      *found = true;
      name->assign(result->gr_name);
    }
    return error;
  });
}

// The primary group first, then the supplementary ones (getgrouplist's
// order), each once. Empty if the list does not fit kMaxGroups.
std::vector<gid_t> GroupIds(const std::string& user, gid_t primary) {
  std::vector<gid_t> gids(32);
  for (int attempt = 0; attempt < 8; ++attempt) {
    int count = static_cast<int>(gids.size());
    if (::getgrouplist(user.c_str(), primary, gids.data(), &count) >= 0) {
      gids.resize(static_cast<size_t>(std::max(count, 0)));
      std::vector<gid_t> unique;
      unique.reserve(gids.size());
      for (gid_t g : gids) {
        if (std::find(unique.begin(), unique.end(), g) == unique.end()) unique.push_back(g);
      }
      return unique;
    }
    // glibc sets count to the number needed; other libcs may not: double.
    const size_t want = std::max(static_cast<size_t>(std::max(count, 0)), gids.size() * 2);
    if (want > static_cast<size_t>(kMaxGroups)) break;
    gids.resize(want);
  }
  return {primary};
}

// A decimal pid of at most 10 digits that fits 32 bits; 0 for anything else
// ("self", "thread-self", other entries of /proc).
uint32_t ParsePid(const char* name) {
  uint64_t value = 0;
  size_t i = 0;
  for (; name[i] != '\0'; ++i) {
    if (name[i] < '0' || name[i] > '9' || i >= 10) return 0;
    value = value * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return i > 0 && value <= UINT32_MAX ? static_cast<uint32_t>(value) : 0;
}

// Whether the process whose /proc/PID is `pid_dir` has `want` ("socket:[N]")
// open; *budget counts down the fd entries read.
bool HoldsSocket(int pid_dir, const std::string& want, int* budget) {
  Dir fds(OpenDirAt(pid_dir, "fd"));
  if (!fds.ok()) return false;  // gone, or no permission (see the top of the file)
  char link[64];
  while (*budget > 0) {
    const dirent* entry = fds.Next();
    if (entry == nullptr) break;
    if (entry->d_name[0] == '.') continue;
    --*budget;
    // readlinkat never follows: it reads the fd's description ("socket:[N]",
    // "pipe:[N]", a path), whatever the fd refers to.
    const ssize_t n = ::readlinkat(fds.fd(), entry->d_name, link, sizeof link);
    if (n == static_cast<ssize_t>(want.size()) && std::memcmp(link, want.data(), want.size()) == 0) return true;
  }
  return false;
}

// Reads at most `cap` bytes of `name` under `dir`; false if it cannot be opened.
bool ReadSmallFile(int dir, const char* name, size_t cap, std::string* out) {
  Fd fd(::openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.ok()) return false;
  out->assign(cap, '\0');
  size_t got = 0;
  while (got < cap) {
    const ssize_t n = ::read(fd.get(), &(*out)[got], cap - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out->resize(got);
  return true;
}

// From /proc/PID/stat: the state (field 3) and starttime (field 22). comm
// (field 2, in parentheses) may contain ')' and spaces, so the fields are
// counted after the LAST ')'.
bool ParseStat(const std::string& stat, char* state, uint64_t* start_time) {
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return false;
  size_t at = close + 1;
  for (int field = 3; field <= 22; ++field) {
    if (at >= stat.size() || stat[at] != ' ') return false;
    ++at;
    const size_t begin = at;
    while (at < stat.size() && stat[at] != ' ' && stat[at] != '\n') ++at;
    if (at == begin) return false;
    if (field == 3) {
      if (at - begin != 1) return false;
      *state = stat[begin];
    } else if (field == 22) {
      uint64_t value = 0;
      for (size_t i = begin; i < at; ++i) {
        const char c = stat[i];
        if (c < '0' || c > '9' || value > (UINT64_MAX - 9) / 10) return false;
        value = value * 10 + static_cast<uint64_t>(c - '0');
      }
      *start_time = value;
    }
  }
  return true;
}

// /proc/PID/exe: the executable's path, empty if it cannot be read (no ptrace
// access, a kernel thread, a path longer than PATH_MAX). A deleted executable
// (replaced on disk, as a package upgrade does) reads "PATH (deleted)": the
// suffix is dropped when the file really has no links left, so a service
// keeps matching its exe rule until it restarts; a file whose name really
// ends in " (deleted)" keeps its name.
std::string Executable(int pid_dir) {
  std::string path(PATH_MAX + sizeof kDeletedSuffix, '\0');
  const ssize_t n = ::readlinkat(pid_dir, "exe", &path[0], path.size());
  if (n <= 0 || static_cast<size_t>(n) >= path.size()) return {};
  path.resize(static_cast<size_t>(n));
  const size_t suffix = sizeof kDeletedSuffix - 1;
  if (path.size() > suffix && path.compare(path.size() - suffix, suffix, kDeletedSuffix) == 0) {
    struct stat st;
    // Follows the magic link to the file itself, linked or not.
    if (::fstatat(pid_dir, "exe", &st, 0) == 0 && st.st_nlink == 0) path.resize(path.size() - suffix);
  }
  return path;
}

}  // namespace

bool Account(const PeerCredentials& peer, CallerInfo* out) {
  if (!peer.known) return false;
  std::string user;
  gid_t primary = 0;
  if (!UserName(static_cast<uid_t>(peer.uid), &user, &primary)) return false;
  std::vector<gid_t> gids = GroupIds(user, primary);
  std::vector<std::string> names;
  names.reserve(gids.size());
  std::vector<char> buffer;
  for (gid_t gid : gids) {
    std::string name;
    if (GroupName(gid, &buffer, &name)) names.push_back(std::move(name));
  }
  out->user = std::move(user);
  out->gids.assign(gids.begin(), gids.end());
  out->groups = std::move(names);
  out->account_known = true;
  return true;
}

uint32_t FindPid(const PeerCredentials& peer) {
  if (peer.pid != 0) return peer.pid;
  if (!peer.known || peer.inode == 0) return 0;
  const std::string want = "socket:[" + std::to_string(peer.inode) + "]";
  Dir proc(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc.ok()) return 0;
  int entries = kMaxProcEntries;
  int fd_budget = kMaxFdEntries;
  uint32_t found = 0;
  while (entries-- > 0 && fd_budget > 0) {
    const dirent* entry = proc.Next();
    if (entry == nullptr) break;
    const uint32_t pid = ParsePid(entry->d_name);
    // /proc lists processes in increasing pid order, so the first match is
    // the lowest pid; the comparison keeps that true without relying on it.
    if (pid == 0 || (found != 0 && pid >= found)) continue;
    struct stat st;
    // The cheap skip: /proc/PID belongs to the process's effective uid (root
    // for a non-dumpable process, which is then not found).
    if (::fstatat(proc.fd(), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_uid != peer.uid) continue;
    Fd pid_dir(OpenDirAt(proc.fd(), entry->d_name));
    if (!pid_dir.ok()) continue;
    if (HoldsSocket(pid_dir.get(), want, &fd_budget)) found = pid;
  }
  return found;
}

bool Process(uint32_t pid, CallerInfo* out, uint64_t* start_time) {
  if (pid == 0) return false;
  Fd proc(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc.ok()) return false;
  // Everything below is read through this one directory: if the pid is reused
  // meanwhile, the reads fail (ESRCH) instead of describing another process.
  Fd dir(OpenDirAt(proc.get(), std::to_string(pid).c_str()));
  if (!dir.ok()) return false;
  std::string stat;
  char state = 0;
  uint64_t started = 0;
  if (!ReadSmallFile(dir.get(), "stat", kStatBuffer, &stat) || !ParseStat(stat, &state, &started)) return false;
  if (state == 'Z' || state == 'X') return false;  // exited, not reaped yet: it holds no socket
  std::string comm;
  if (!ReadSmallFile(dir.get(), "comm", kMaxComm, &comm)) return false;
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  std::string exe = Executable(dir.get());
  out->pid = pid;
  out->exe = std::move(exe);
  out->process_name = std::move(comm);
  out->process_known = true;
  *start_time = started;
  return true;
}

}  // namespace mi::caller_lookup
