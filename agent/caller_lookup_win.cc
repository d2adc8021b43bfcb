// The Windows caller lookups: the account from the caller process's token,
// the process from its image name and times. A TCP caller's pid comes with
// the connection (the owner pid of GetExtendedTcpTable, agent/base/
// peer_lookup_win.cc).
//
// Names are converted to UTF-8 strictly: a path or name that is not valid
// UTF-16 (an unpaired surrogate, which NTFS allows) is left empty instead of
// being "repaired" into a string that another caller could spell.

#include <winsock2.h>
#include <windows.h>
#include <sddl.h>

#include <cstring>
#include <string>
#include <vector>

#include "agent/caller_lookup.h"

namespace mi::caller_lookup {
namespace {

// Token information (user, groups) larger than this is refused; a token has
// at most a few thousand groups.
constexpr DWORD kMaxTokenInfo = 1u << 20;
// Names from LookupAccountSidW: grown on ERROR_INSUFFICIENT_BUFFER up to this.
constexpr DWORD kMaxName = 1u << 15;
// QueryFullProcessImageNameW: the longest path Windows has (32767 characters).
constexpr DWORD kMaxImagePath = 32768;

class Handle {
 public:
  explicit Handle(HANDLE h) : h_(h) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (h_ != nullptr) CloseHandle(h_);
  }
  HANDLE get() const { return h_; }
  bool ok() const { return h_ != nullptr; }

 private:
  HANDLE h_;
};

// Strict UTF-16 -> UTF-8; false (and nothing) for invalid UTF-16.
bool Utf8(const wchar_t* wide, size_t length, std::string* out) {
  out->clear();
  if (length == 0) return true;
  const int n = static_cast<int>(length);
  const int bytes = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, wide, n, nullptr, 0, nullptr, nullptr);
  if (bytes <= 0) return false;
  out->resize(static_cast<size_t>(bytes));
  if (WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, wide, n, &(*out)[0], bytes, nullptr, nullptr) != bytes) {
    out->clear();
    return false;
  }
  return true;
}

// The token's information of class `what` into `buffer` (8-byte aligned words).
bool TokenInfo(HANDLE token, TOKEN_INFORMATION_CLASS what, std::vector<uint64_t>* buffer) {
  DWORD size = 0;
  GetTokenInformation(token, what, nullptr, 0, &size);
  if (GetLastError() != ERROR_INSUFFICIENT_BUFFER || size == 0 || size > kMaxTokenInfo) return false;
  buffer->assign((size + sizeof(uint64_t) - 1) / sizeof(uint64_t), 0);
  return GetTokenInformation(token, what, buffer->data(), static_cast<DWORD>(buffer->size() * sizeof(uint64_t)),
                             &size) != 0;
}

// "S-1-5-21-...".
bool SidString(PSID sid, std::string* out) {
  wchar_t* text = nullptr;
  if (!ConvertSidToStringSidW(sid, &text) || text == nullptr) return false;
  const bool ok = Utf8(text, wcslen(text), out);
  LocalFree(text);
  return ok && !out->empty();
}

// "DOMAIN\name", or "name" for a SID without a domain (Everyone). May ask a
// domain controller: blocking, off the loop.
bool AccountName(PSID sid, std::string* out) {
  std::vector<wchar_t> name(256), domain(256);
  for (int attempt = 0; attempt < 4; ++attempt) {
    DWORD name_len = static_cast<DWORD>(name.size());
    DWORD domain_len = static_cast<DWORD>(domain.size());
    SID_NAME_USE use;
    if (LookupAccountSidW(nullptr, sid, name.data(), &name_len, domain.data(), &domain_len, &use)) {
      std::wstring full(domain.data(), domain_len);
      if (!full.empty()) full += L'\\';
      full.append(name.data(), name_len);
      return Utf8(full.data(), full.size(), out) && !out->empty();
    }
    // On ERROR_INSUFFICIENT_BUFFER both lengths say what is needed.
    if (GetLastError() != ERROR_INSUFFICIENT_BUFFER || name_len > kMaxName || domain_len > kMaxName) return false;
    name.resize(name_len + 1);
    domain.resize(domain_len + 1);
  }
  return false;
}

// A group that grants access: enabled, not deny-only (a filtered admin's
// Administrators), and not the logon session's SID or an integrity label
// (neither is a group a rule can name).
bool CountsAsGroup(DWORD attributes) {
  if ((attributes & SE_GROUP_ENABLED) == 0) return false;
  if ((attributes & (SE_GROUP_USE_FOR_DENY_ONLY | SE_GROUP_LOGON_ID | SE_GROUP_INTEGRITY)) != 0) return false;
  return true;
}

}  // namespace

bool Account(const PeerCredentials& peer, CallerInfo* out) {
  if (!peer.known || peer.pid == 0) return false;
  Handle process(OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, peer.pid));
  if (!process.ok()) return false;
  HANDLE raw = nullptr;
  if (!OpenProcessToken(process.get(), TOKEN_QUERY, &raw)) return false;
  Handle token(raw);
  std::vector<uint64_t> buffer;
  if (!TokenInfo(token.get(), TokenUser, &buffer)) return false;
  const auto* user = reinterpret_cast<const TOKEN_USER*>(buffer.data());
  std::string user_sid, user_name;
  if (!SidString(user->User.Sid, &user_sid)) return false;
  AccountName(user->User.Sid, &user_name);  // an unresolvable SID still has its SID

  std::vector<std::string> groups, group_sids;
  if (TokenInfo(token.get(), TokenGroups, &buffer)) {
    const auto* list = reinterpret_cast<const TOKEN_GROUPS*>(buffer.data());
    // GroupCount as Windows wrote it; the buffer was sized for it.
    for (DWORD i = 0; i < list->GroupCount; ++i) {
      const SID_AND_ATTRIBUTES& g = list->Groups[i];
      if (!CountsAsGroup(g.Attributes)) continue;
      std::string sid, name;
      if (!SidString(g.Sid, &sid)) continue;
      group_sids.push_back(std::move(sid));
      if (AccountName(g.Sid, &name)) groups.push_back(std::move(name));
    }
  }
  out->user = std::move(user_name);
  out->user_sid = std::move(user_sid);
  out->groups = std::move(groups);
  out->group_sids = std::move(group_sids);
  out->account_known = true;
  return true;
}

// The owner pid came with the connection; there is nothing to scan.
uint32_t FindPid(const PeerCredentials& peer) { return peer.pid; }

bool Process(uint32_t pid, CallerInfo* out, uint64_t* start_time) {
  if (pid == 0) return false;
  Handle process(OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid));
  if (!process.ok()) return false;
  // A handle to a process that has exited stays valid while handles exist.
  DWORD exit_code = 0;
  if (!GetExitCodeProcess(process.get(), &exit_code) || exit_code != STILL_ACTIVE) return false;
  FILETIME created, exited, kernel, user;
  if (!GetProcessTimes(process.get(), &created, &exited, &kernel, &user)) return false;
  std::vector<wchar_t> path(kMaxImagePath);
  DWORD length = kMaxImagePath;
  std::string exe, name;
  if (QueryFullProcessImageNameW(process.get(), 0, path.data(), &length) && length < kMaxImagePath &&
      Utf8(path.data(), length, &exe)) {
    const size_t slash = exe.find_last_of("\\/");
    name = slash == std::string::npos ? exe : exe.substr(slash + 1);
  } else {
    exe.clear();
  }
  out->pid = pid;
  out->exe = std::move(exe);
  out->process_name = std::move(name);
  out->process_known = true;
  *start_time = (static_cast<uint64_t>(created.dwHighDateTime) << 32) | created.dwLowDateTime;
  return true;
}

}  // namespace mi::caller_lookup
