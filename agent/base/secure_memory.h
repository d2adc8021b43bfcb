#pragma once
// Keeping tokens out of core dumps and out of freed memory. Two layers:
//
//  * The process: ForbidCoreDumps(). Linux: the process is made not dumpable
//    (prctl PR_SET_DUMPABLE 0) and RLIMIT_CORE is set to 0, so a crash writes
//    no core file and only root (CAP_SYS_PTRACE) may attach a debugger, run
//    gcore or read /proc/<pid>/mem; the same uid may not. As the kernel
//    documents, the process's /proc/<pid>/ files then belong to root.
//    Windows has no per-process switch: ForbidCoreDumps() does nothing there.
//
//  * The memory that holds a token: SecureArena. Its blocks live on pages
//    mapped apart from the malloc heap and excluded from dumps, and every block
//    is wiped when freed. Linux: madvise(MADV_DONTDUMP) — the "dd" flag in
//    /proc/<pid>/smaps, honoured by the kernel's core dumps and by gdb's gcore
//    (even root's). Windows (10 1703 / Server 2016 and later):
//    WerRegisterExcludedMemoryBlock — honoured by Windows Error Reporting's
//    dumps, not by a full-memory dump taken with a debugger, procdump or Task
//    Manager. SecureString is std::string on that arena; Token keeps its
//    serialized body (which holds the access token) in two of them.
//
// IMDS's answer is wiped too once parsed (it grows in a SecureString in
// CurlUpstreamClient; ~UpstreamResponse wipes the copy handed on). Not covered:
// the other short-lived copies made while a token passes through (libcurl's
// receive buffer, the JSON parser's strings, each HTTP answer while it is
// written to a caller). They are freed, not wiped; the first layer is what
// keeps them out of dumps.

#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

#include "agent/base/status.h"

namespace mi {

// Linux: PR_SET_DUMPABLE 0 and RLIMIT_CORE {0, 0} (left alone when already
// {0, 0}, as under the systemd unit's LimitCORE=0). Windows: nothing. Returns
// what failed; the caller decides whether that is fatal. Not undone: with the
// hard limit at 0, only root could raise the core limit again.
Status ForbidCoreDumps();

// Zeroes `n` bytes at `p` in a way the compiler may not drop as a dead store.
void WipeBytes(void* p, size_t n) noexcept;

// Wipes a string's whole buffer (its capacity, not just its size) and leaves it
// empty; the buffer stays allocated. For std::string copies of a secret that
// are about to be dropped.
template <typename Alloc>
void WipeString(std::basic_string<char, std::char_traits<char>, Alloc>* s) noexcept {
  // Everything up to the capacity may hold an earlier, longer value. Resizing
  // within the capacity never allocates.
  s->resize(s->capacity());
  WipeBytes(s->data(), s->size());
  s->clear();
}

// Memory for secrets: a small pool allocator over dump-excluded pages.
//
// Blocks up to kMaxPooledBytes are carved from kChunkBytes chunks and rounded
// up to a power of two (at least 64 bytes). A freed block is wiped and kept on
// its size class's free list: the pages stay mapped and dump-excluded and are
// reused, last freed first out, by the next allocation of that class. Chunks
// are never returned to the system before the arena is destroyed, so the
// arena's footprint is its peak use (tokens: bounded by cache.max_keys).
// Larger blocks get a mapping of their own, wiped and unmapped when freed.
//
// Thread-safe. Allocation is a mutex and a list pop: keep it off hot paths
// anyway (tokens are built once per IMDS answer, read many times).
class SecureArena {
 public:
  static constexpr size_t kAlignment = 16;
  static constexpr size_t kMinBlockBytes = 64;
  static constexpr size_t kMaxPooledBytes = 16384;
  static constexpr size_t kChunkBytes = 65536;

  SecureArena() = default;
  // Unmaps every chunk. REQUIRES: every block has been deallocated.
  ~SecureArena();
  SecureArena(const SecureArena&) = delete;
  SecureArena& operator=(const SecureArena&) = delete;

  // The arena behind SecureAllocator. Never destroyed (blocks may be freed by
  // static destructors).
  static SecureArena& Shared();

  // `n` zero bytes, aligned to kAlignment (n == 0 counts as 1). Never null:
  // if the system cannot map the memory, the process aborts with a message.
  void* Allocate(size_t n);
  // Wipes the block and frees it. REQUIRES: `p` came from Allocate(n) on this
  // arena with the same `n`, and was not freed since. Null is ignored.
  void Deallocate(void* p, size_t n) noexcept;

  // Bytes of dump-excluded memory currently mapped (pooled chunks and large
  // blocks); for tests and status.
  size_t mapped_bytes() const;

 private:
  static constexpr size_t kClasses = 9;  // 64, 128, ..., 16384
  struct FreeBlock {
    FreeBlock* next;
  };

  mutable std::mutex mu_;
  FreeBlock* free_[kClasses] = {};
  std::vector<void*> chunks_;
  char* bump_ = nullptr;  // the unused tail of the newest chunk
  char* bump_end_ = nullptr;
  size_t large_bytes_ = 0;
};

// A standard allocator on SecureArena::Shared(); stateless, all instances equal.
template <typename T>
struct SecureAllocator {
  using value_type = T;
  static_assert(alignof(T) <= SecureArena::kAlignment, "SecureArena aligns to 16 bytes");

  SecureAllocator() noexcept = default;
  template <typename U>
  SecureAllocator(const SecureAllocator<U>&) noexcept {}

  T* allocate(size_t n) { return static_cast<T*>(SecureArena::Shared().Allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { SecureArena::Shared().Deallocate(p, n * sizeof(T)); }

  template <typename U>
  bool operator==(const SecureAllocator<U>&) const noexcept {
    return true;
  }
  template <typename U>
  bool operator!=(const SecureAllocator<U>&) const noexcept {
    return false;
  }
};

// std::string on the secure arena. Converts to std::string_view, so it appends
// to a std::string (and takes one) like any string. Up to 15 characters live
// inside the object itself (the small-string buffer), wherever the object is:
// reserve() 16 or more before writing a secret into a new one.
using SecureString = std::basic_string<char, std::char_traits<char>, SecureAllocator<char>>;

}  // namespace mi
