#pragma once
// FNV-1a, 64 bits: a fast non-cryptographic hash (fingerprints for logs, stable
// ids in the emulator). Not for anything an attacker must not forge.

#include <cstdint>
#include <string_view>

namespace mi {

constexpr uint64_t kFnv1a64OffsetBasis = 14695981039346656037ULL;

constexpr uint64_t Fnv1a64(std::string_view s, uint64_t basis = kFnv1a64OffsetBasis) {
  uint64_t h = basis;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace mi
