// The secure arena: dump-excluded pages, blocks wiped when freed, and the
// process-level core dump switch (in a child process: it is irreversible).
#include "agent/base/secure_memory.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace mi {
namespace {

bool AllZero(const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

#ifdef __linux__
// The VmFlags of the /proc/self/smaps mapping that contains `p` (e.g. "rd wr
// mr mw me ac dd"), or "" if no mapping does.
std::string VmFlagsOf(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long long lo = 0, hi = 0;
    // Mapping lines start "lo-hi perms ..."; the field lines ("Size:", ...) do not.
    if (std::sscanf(line.c_str(), "%llx-%llx ", &lo, &hi) == 2) {
      inside = lo <= addr && addr < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line.substr(8);
    }
  }
  return "";
}

bool DumpExcluded(const void* p) {
  std::istringstream flags(VmFlagsOf(p));
  std::string flag;
  while (flags >> flag) {
    if (flag == "dd") return true;
  }
  return false;
}

TEST(SecureArenaTest, BlocksAreOnDumpExcludedPages) {
  SecureArena arena;
  void* small = arena.Allocate(100);
  void* large = arena.Allocate(SecureArena::kMaxPooledBytes + 1);
  EXPECT_TRUE(DumpExcluded(small)) << VmFlagsOf(small);
  EXPECT_TRUE(DumpExcluded(large)) << VmFlagsOf(large);
  // The check can fail: ordinary heap memory is dumped.
  auto heap = std::make_unique<char[]>(100);
  EXPECT_FALSE(VmFlagsOf(heap.get()).empty());
  EXPECT_FALSE(DumpExcluded(heap.get())) << VmFlagsOf(heap.get());
  arena.Deallocate(small, 100);
  arena.Deallocate(large, SecureArena::kMaxPooledBytes + 1);
}

TEST(SecureArenaTest, SecureStringKeepsItsCharactersOnDumpExcludedPages) {
  SecureString s;
  s.reserve(16);
  s += std::string(3000, 't');
  EXPECT_TRUE(DumpExcluded(s.data())) << VmFlagsOf(s.data());
}

// Runs in a death-test child: exits 0 if ForbidCoreDumps did its job.
[[noreturn]] void ForbidCoreDumpsAndCheck() {
  rlimit before{RLIM_INFINITY, RLIM_INFINITY};
  (void)setrlimit(RLIMIT_CORE, &before);  // as high as this process may set it
  if (prctl(PR_GET_DUMPABLE) != 1) std::_Exit(10);
  Status s = ForbidCoreDumps();
  if (!s.ok()) std::_Exit(11);
  if (prctl(PR_GET_DUMPABLE) != 0) std::_Exit(12);
  rlimit after{};
  if (getrlimit(RLIMIT_CORE, &after) != 0 || after.rlim_cur != 0 || after.rlim_max != 0) std::_Exit(13);
  std::_Exit(0);
}

TEST(SecureArenaTest, ForbidCoreDumpsMakesTheProcessNotDumpable) {
  // In a child: the switch cannot be undone.
  EXPECT_EXIT(ForbidCoreDumpsAndCheck(), ::testing::ExitedWithCode(0), "");
}
#endif

TEST(SecureArenaTest, FreedBlockIsWipedAndReusedFirst) {
  SecureArena arena;
  const size_t n = 200;
  auto* p = static_cast<unsigned char*>(arena.Allocate(n));
  ASSERT_TRUE(AllZero(p, n));
  std::memset(p, 0xA5, n);
  arena.Deallocate(p, n);
  // The pages stay mapped: the next block of that size class is the same
  // memory, and nothing of the secret is left in it.
  auto* q = static_cast<unsigned char*>(arena.Allocate(n - 10));
  ASSERT_EQ(q, p);
  EXPECT_TRUE(AllZero(q, n));
  arena.Deallocate(q, n - 10);
}

TEST(SecureArenaTest, BlocksAreAlignedZeroedAndDisjoint) {
  SecureArena arena;
  std::vector<std::pair<unsigned char*, size_t>> blocks;
  for (size_t n : {1u, 15u, 64u, 65u, 1000u, 4096u, 16384u, 16385u, 70000u}) {
    auto* p = static_cast<unsigned char*>(arena.Allocate(n));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % SecureArena::kAlignment, 0u) << n;
    EXPECT_TRUE(AllZero(p, n)) << n;
    std::memset(p, static_cast<int>(blocks.size() + 1), n);
    blocks.emplace_back(p, n);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    const auto [p, n] = blocks[i];
    for (size_t j = 0; j < n; ++j) ASSERT_EQ(p[j], i + 1) << "block " << i << " overwritten at " << j;
  }
  for (auto [p, n] : blocks) arena.Deallocate(p, n);
}

TEST(SecureArenaTest, LargeBlocksAreUnmappedWhenFreed) {
  SecureArena arena;
  const size_t n = SecureArena::kMaxPooledBytes * 4;
  void* p = arena.Allocate(n);
  EXPECT_GE(arena.mapped_bytes(), n);
  arena.Deallocate(p, n);
  EXPECT_EQ(arena.mapped_bytes(), 0u);
  // Pooled blocks keep their chunk.
  arena.Deallocate(arena.Allocate(10), 10);
  EXPECT_EQ(arena.mapped_bytes(), SecureArena::kChunkBytes);
}

TEST(SecureArenaTest, ChunksFillUpAndNewOnesAreMapped) {
  SecureArena arena;
  const size_t per_chunk = SecureArena::kChunkBytes / SecureArena::kMaxPooledBytes;
  std::vector<void*> blocks;
  for (size_t i = 0; i < per_chunk + 1; ++i) blocks.push_back(arena.Allocate(SecureArena::kMaxPooledBytes));
  EXPECT_EQ(arena.mapped_bytes(), 2 * SecureArena::kChunkBytes);
  for (void* p : blocks) arena.Deallocate(p, SecureArena::kMaxPooledBytes);
}

// Counts the buffers freed with a non-zero byte left in them.
struct FreeCounts {
  static inline int frees = 0;
  static inline int dirty = 0;
};
template <typename T>
struct CheckingAllocator {
  using value_type = T;
  CheckingAllocator() = default;
  template <typename U>
  CheckingAllocator(const CheckingAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(std::malloc(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept {
    ++FreeCounts::frees;
    if (!AllZero(p, n * sizeof(T))) ++FreeCounts::dirty;
    std::free(p);
  }
  template <typename U>
  bool operator==(const CheckingAllocator<U>&) const noexcept {
    return true;
  }
  template <typename U>
  bool operator!=(const CheckingAllocator<U>&) const noexcept {
    return false;
  }
};
using CheckedString = std::basic_string<char, std::char_traits<char>, CheckingAllocator<char>>;

TEST(WipeStringTest, WipesTheWholeCapacityBeforeTheBufferIsFreed) {
  FreeCounts::frees = FreeCounts::dirty = 0;
  {
    CheckedString s(500, 's');
    s.resize(10);  // the tail beyond size() still holds the secret
    WipeString(&s);
    EXPECT_TRUE(s.empty());
    EXPECT_GE(s.capacity(), 500u);  // wiped in place, not reallocated
  }
  EXPECT_EQ(FreeCounts::frees, 1);
  EXPECT_EQ(FreeCounts::dirty, 0);
  // The check can fail: a string dropped without WipeString is freed dirty.
  { CheckedString s(500, 's'); }
  EXPECT_EQ(FreeCounts::dirty, 1);
}

TEST(SecureAllocatorTest, WorksAsAStandardAllocator) {
  SecureString s;
  s.reserve(16);
  s += "{\"access_token\":\"";
  s += std::string(5000, 'a');
  std::string out = "prefix ";
  out.append(s);
  EXPECT_EQ(out.size(), 7 + s.size());
  std::vector<uint64_t, SecureAllocator<uint64_t>> v(1000, 7);
  EXPECT_EQ(v[999], 7u);
}

}  // namespace
}  // namespace mi
