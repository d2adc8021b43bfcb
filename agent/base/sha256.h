#pragma once
// SHA-256 (FIPS 180-4, section 6.2), written for the audit trail's token
// fingerprints: an incremental hasher (Update any number of times, then
// Finish) and one-shot helpers. Not constant-time with respect to the message
// length; the input's bytes are never branched on.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mi {

class Sha256 {
 public:
  static constexpr size_t kDigestBytes = 32;
  using Digest = std::array<uint8_t, kDigestBytes>;

  Sha256();
  // Wipes the state (it held message bytes).
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view data);
  // Pads, returns the digest and resets the hasher for a new message.
  Digest Finish();

  static Digest Hash(std::string_view data);
  // 64 lowercase hex digits.
  static std::string HexHash(std::string_view data);

 private:
  void Compress(const uint8_t block[64]);
  void Reset();

  uint32_t state_[8];
  uint8_t block_[64];
  size_t used_ = 0;         // bytes in block_
  uint64_t total_bytes_ = 0;  // message length so far
};

// Writes the first `digits` lowercase hex digits of `digest` to `out` and a
// terminating NUL. REQUIRES: digits <= 64, `out` has digits + 1 bytes.
void HexPrefix(const Sha256::Digest& digest, size_t digits, char* out);

}  // namespace mi
