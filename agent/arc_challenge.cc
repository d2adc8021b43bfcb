#include "agent/arc_challenge.h"

#include <cerrno>
#include <cstring>

#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#else
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#endif

#include "agent/base/ascii.h"

namespace mi {
namespace {

#ifdef _WIN32
constexpr bool kWindows = true;
bool IsSeparator(char c) { return c == '/' || c == '\\'; }
#else
constexpr bool kWindows = false;
bool IsSeparator(char c) { return c == '/'; }
#endif

bool IsAbsolute(const std::string& path) {
  if (kWindows) {
    const char d = path.size() >= 3 ? path[0] : '\0';
    return ((d >= 'A' && d <= 'Z') || (d >= 'a' && d <= 'z')) && path[1] == ':' && IsSeparator(path[2]);
  }
  return !path.empty() && path[0] == '/';
}

// Some component is "." or ".." (empty ones, "//", are harmless).
bool HasDotComponent(std::string_view path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = start;
    while (end < path.size() && !IsSeparator(path[end])) ++end;
    const std::string_view part = path.substr(start, end - start);
    if (part == "." || part == "..") return true;
    start = end + 1;
  }
  return false;
}

bool EndsWithKey(std::string_view path) {
  if (path.size() <= 4 || IsSeparator(path[path.size() - 5])) return false;
  const std::string_view ext = path.substr(path.size() - 4);
  return kWindows ? EqualsIgnoreCase(ext, ".key") : ext == ".key";
}

// Printable ASCII, no space at either end (it becomes a header value).
bool ValidSecret(const SecureString& s) {
  if (s.empty() || s.front() == ' ' || s.back() == ' ') return false;
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

Status Refused(const std::string& why) { return Status::Error(why); }

#ifdef _WIN32

std::wstring Wide(const std::string& utf8) {
  if (utf8.empty()) return {};
  const int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), static_cast<int>(utf8.size()), nullptr, 0);
  if (n <= 0) return {};
  std::wstring out(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), static_cast<int>(utf8.size()), out.data(), n);
  return out;
}

// Lower case, '/' as '\', no trailing separator: for a prefix comparison.
std::string Normalized(std::string path) {
  for (char& c : path) {
    if (c == '/') c = '\\';
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  while (path.size() > 3 && path.back() == '\\') path.pop_back();
  return path;
}

StatusOr<SecureString> ReadChecked(const std::string& token_dir, const std::string& path) {
  const std::string dir = Normalized(token_dir);
  const std::string file = Normalized(path);
  if (file.size() <= dir.size() + 1 || file.compare(0, dir.size(), dir) != 0 || file[dir.size()] != '\\') {
    return Refused("the realm is outside the tokens directory " + token_dir);
  }
  const std::wstring wide = Wide(path);
  if (wide.empty()) return Refused("the realm is not valid UTF-8");
  HANDLE h = CreateFileW(wide.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                         FILE_FLAG_OPEN_REPARSE_POINT, nullptr);
  if (h == INVALID_HANDLE_VALUE) {
    return Refused("the realm's file cannot be opened (error " + std::to_string(GetLastError()) + ")");
  }
  BY_HANDLE_FILE_INFORMATION info{};
  Status status = Status::Ok();
  SecureString secret;
  if (!GetFileInformationByHandle(h, &info)) {
    status = Refused("the realm's file cannot be examined");
  } else if (info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) {
    status = Refused("the realm's file is a symbolic link");
  } else if (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) {
    status = Refused("the realm's file is not a regular file");
  } else if (info.nFileSizeHigh != 0 || info.nFileSizeLow > kMaxArcSecretBytes) {
    status = Refused("the realm's file is larger than " + std::to_string(kMaxArcSecretBytes) + " bytes");
  } else {
    secret.resize(kMaxArcSecretBytes + 1);
    DWORD got = 0;
    size_t total = 0;
    while (total < secret.size() &&
           ReadFile(h, secret.data() + total, static_cast<DWORD>(secret.size() - total), &got, nullptr) && got > 0) {
      total += got;
    }
    secret.resize(total);
  }
  CloseHandle(h);
  if (!status.ok()) return status;
  return secret;
}

#else

StatusOr<std::string> RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) return Status::Error(std::strerror(errno));
  return std::string(buf);
}

StatusOr<SecureString> ReadChecked(const std::string& token_dir, const std::string& path) {
  StatusOr<std::string> dir = RealPath(token_dir);
  if (!dir.ok()) return Refused("the tokens directory " + token_dir + " cannot be resolved: " + dir.status().message());
  const size_t slash = path.rfind('/');
  const std::string name = path.substr(slash + 1);
  StatusOr<std::string> parent = RealPath(slash == 0 ? std::string("/") : path.substr(0, slash));
  if (!parent.ok()) return Refused("the realm's directory cannot be resolved: " + parent.status().message());
  const std::string& d = *dir;
  const std::string& p = *parent;
  const bool inside = p == d || (p.size() > d.size() && p.compare(0, d.size(), d) == 0 && (d == "/" || p[d.size()] == '/'));
  if (!inside) return Refused("the realm is outside the tokens directory " + token_dir);

  // O_NONBLOCK: a FIFO planted there must not block the loop; it is refused below.
  const std::string resolved = p + (p == "/" ? "" : "/") + name;
  const int fd = open(resolved.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == ELOOP) return Refused("the realm's file is a symbolic link");
    return Refused(std::string("the realm's file cannot be opened: ") + std::strerror(errno));
  }
  struct stat st {};
  Status status = Status::Ok();
  SecureString secret;
  if (fstat(fd, &st) != 0) {
    status = Refused(std::string("the realm's file cannot be examined: ") + std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    status = Refused("the realm's file is not a regular file");
  } else if (st.st_size > static_cast<off_t>(kMaxArcSecretBytes)) {
    status = Refused("the realm's file is larger than " + std::to_string(kMaxArcSecretBytes) + " bytes");
  } else {
    // One byte more than allowed: a file that grew since fstat is caught too.
    secret.resize(kMaxArcSecretBytes + 1);
    size_t total = 0;
    while (total < secret.size()) {
      const ssize_t n = read(fd, secret.data() + total, secret.size() - total);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = Refused(std::string("the realm's file cannot be read: ") + std::strerror(errno));
        break;
      }
      if (n == 0) break;
      total += static_cast<size_t>(n);
    }
    secret.resize(total);
  }
  close(fd);
  if (!status.ok()) return status;
  return secret;
}

#endif

}  // namespace

StatusOr<std::string> ParseArcChallenge(std::string_view value) {
  std::string_view v = TrimOws(value);
  if (v.empty()) return Status::Error("no WWW-Authenticate challenge");
  if (v.size() > kMaxArcChallengeBytes) return Status::Error("the challenge is too long");
  if (!StartsWithIgnoreCase(v, "basic") || v.size() == 5 || (v[5] != ' ' && v[5] != '\t')) {
    return Status::Error("not a Basic challenge");
  }
  v = TrimOws(v.substr(5));
  if (!StartsWithIgnoreCase(v, "realm=")) return Status::Error("the challenge has no realm");
  v = v.substr(6);
  if (!v.empty() && v.front() == '"') {
    if (v.size() < 2 || v.back() != '"') return Status::Error("the realm's quotes do not close");
    v = v.substr(1, v.size() - 2);
  }
  if (v.empty()) return Status::Error("the realm is empty");
  for (char c : v) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '"') {
      return Status::Error("the realm has control characters or quotes");
    }
  }
  return std::string(v);
}

StatusOr<SecureString> ReadArcSecret(const std::string& token_dir, const std::string& path) {
  if (!IsAbsolute(path)) return Refused("the realm is not an absolute path");
  if (HasDotComponent(path)) return Refused("the realm has a . or .. component");
  if (!EndsWithKey(path)) return Refused("the realm does not name a .key file");
  if (!IsAbsolute(token_dir)) return Refused("the tokens directory is not an absolute path");
  StatusOr<SecureString> secret = ReadChecked(token_dir, path);
  if (!secret.ok()) return secret;
  if (secret->size() > kMaxArcSecretBytes) {
    WipeString(&*secret);
    return Refused("the realm's file is larger than " + std::to_string(kMaxArcSecretBytes) + " bytes");
  }
  if (!ValidSecret(*secret)) {
    WipeString(&*secret);
    return Refused("the realm's file is empty or not printable ASCII");
  }
  return secret;
}

SecureString ArcAuthorizationHeader(const SecureString& secret) {
  static constexpr std::string_view kPrefix = "Authorization: Basic ";
  SecureString header;
  header.reserve(kPrefix.size() + secret.size() + 1);
  header.append(kPrefix.data(), kPrefix.size());
  header.append(secret);
  return header;
}

}  // namespace mi
