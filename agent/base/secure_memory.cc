#include "agent/base/secure_memory.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#ifdef _WIN32
#include <windows.h>
#else
#include <errno.h>
#include <string.h>  // explicit_bzero
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#endif

#include "agent/base/check.h"

namespace mi {
namespace {

[[noreturn]] void OutOfMemory(size_t bytes) {
  Fatal("cannot map secure memory", (std::to_string(bytes) + " bytes").c_str());
}

#ifdef _WIN32

// Resolved at run time: the functions exist from Windows 10 1703 / Server 2016
// on, and mingw's import libraries may not know them.
struct WerExclusion {
  using Register = HRESULT(WINAPI*)(const void*, DWORD);
  using Unregister = HRESULT(WINAPI*)(const void*);
  Register add = nullptr;
  Unregister remove = nullptr;

  static const WerExclusion& Get() {
    static const WerExclusion api = [] {
      WerExclusion a;
      HMODULE kernel32 = GetModuleHandleW(L"kernel32.dll");
      if (kernel32 != nullptr) {
        // Through void(*)(void), the generic function pointer type: no
        // -Wcast-function-type.
        a.add = reinterpret_cast<Register>(
            reinterpret_cast<void (*)(void)>(GetProcAddress(kernel32, "WerRegisterExcludedMemoryBlock")));
        a.remove = reinterpret_cast<Unregister>(
            reinterpret_cast<void (*)(void)>(GetProcAddress(kernel32, "WerUnregisterExcludedMemoryBlock")));
      }
      return a;
    }();
    return api;
  }
};

size_t PageSize() {
  SYSTEM_INFO info;
  GetSystemInfo(&info);
  return info.dwPageSize;
}

// Excluded from WER's dumps where the system supports it (a failure, e.g. past
// WER_MAX_REGISTERED_ENTRIES, leaves the block usable, only not excluded).
void* MapPages(size_t bytes) {
  void* p = VirtualAlloc(nullptr, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  if (p == nullptr) return nullptr;
  const WerExclusion& wer = WerExclusion::Get();
  if (wer.add != nullptr && bytes <= MAXDWORD) (void)wer.add(p, static_cast<DWORD>(bytes));
  return p;
}

void UnmapPages(void* p, size_t) {
  const WerExclusion& wer = WerExclusion::Get();
  if (wer.remove != nullptr) (void)wer.remove(p);
  VirtualFree(p, 0, MEM_RELEASE);
}

#else

size_t PageSize() {
  const long size = sysconf(_SC_PAGESIZE);
  return size > 0 ? static_cast<size_t>(size) : 4096;
}

// MADV_DONTDUMP (Linux 3.4): the kernel's core dumps skip the mapping and gdb's
// gcore skips mappings with the "dd" flag. A kernel without it leaves the
// memory usable, only not excluded.
void* MapPages(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
#ifdef MADV_DONTDUMP
  (void)madvise(p, bytes, MADV_DONTDUMP);
#endif
  return p;
}

void UnmapPages(void* p, size_t bytes) { munmap(p, bytes); }

#endif

size_t LargeMappingBytes(size_t n) {
  const size_t page = PageSize();
  if (n > SIZE_MAX - page) OutOfMemory(n);
  return (n + page - 1) / page * page;
}

}  // namespace

Status ForbidCoreDumps() {
#ifdef _WIN32
  return Status::Ok();
#else
  std::string failed;
#ifdef __linux__
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    failed = std::string("prctl(PR_SET_DUMPABLE, 0): ") + std::strerror(errno);
  }
#endif
  // Already 0 under the systemd unit (LimitCORE=0).
  rlimit limit{};
  if (getrlimit(RLIMIT_CORE, &limit) != 0 || limit.rlim_cur != 0 || limit.rlim_max != 0) {
    const rlimit zero{0, 0};
    if (setrlimit(RLIMIT_CORE, &zero) != 0) {
      failed += (failed.empty() ? "" : "; ") + std::string("setrlimit(RLIMIT_CORE, 0): ") + std::strerror(errno);
    }
  }
  return failed.empty() ? Status::Ok() : Status::Error(failed);
#endif
}

void WipeBytes(void* p, size_t n) noexcept {
  if (p == nullptr || n == 0) return;
#ifdef _WIN32
  SecureZeroMemory(p, n);
#else
  explicit_bzero(p, n);
#endif
}

SecureArena::~SecureArena() {
  for (void* chunk : chunks_) UnmapPages(chunk, kChunkBytes);
}

SecureArena& SecureArena::Shared() {
  static SecureArena* const arena = new SecureArena();
  return *arena;
}

void* SecureArena::Allocate(size_t n) {
  if (n == 0) n = 1;
  if (n > kMaxPooledBytes) {
    const size_t bytes = LargeMappingBytes(n);
    void* p = MapPages(bytes);
    if (p == nullptr) OutOfMemory(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    large_bytes_ += bytes;
    return p;
  }
  size_t c = 0;
  while ((kMinBlockBytes << c) < n) ++c;
  const size_t block = kMinBlockBytes << c;

  std::lock_guard<std::mutex> lock(mu_);
  if (FreeBlock* b = free_[c]) {
    free_[c] = b->next;
    // The rest of the block was wiped when it was freed.
    std::memset(static_cast<void*>(b), 0, sizeof(FreeBlock));
    return b;
  }
  if (static_cast<size_t>(bump_end_ - bump_) < block) {
    // The old chunk's tail (under 16 KiB) is left unused.
    chunks_.reserve(chunks_.size() + 1);
    char* chunk = static_cast<char*>(MapPages(kChunkBytes));
    if (chunk == nullptr) OutOfMemory(kChunkBytes);
    chunks_.push_back(chunk);
    bump_ = chunk;
    bump_end_ = chunk + kChunkBytes;
  }
  void* p = bump_;
  bump_ += block;
  return p;
}

void SecureArena::Deallocate(void* p, size_t n) noexcept {
  if (p == nullptr) return;
  if (n == 0) n = 1;
  if (n > kMaxPooledBytes) {
    const size_t bytes = LargeMappingBytes(n);
    WipeBytes(p, n);
    UnmapPages(p, bytes);
    std::lock_guard<std::mutex> lock(mu_);
    large_bytes_ -= bytes;
    return;
  }
  size_t c = 0;
  while ((kMinBlockBytes << c) < n) ++c;
  WipeBytes(p, kMinBlockBytes << c);
  std::lock_guard<std::mutex> lock(mu_);
  free_[c] = new (p) FreeBlock{free_[c]};
}

size_t SecureArena::mapped_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return chunks_.size() * kChunkBytes + large_bytes_;
}

}  // namespace mi
