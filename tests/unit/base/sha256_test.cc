// SHA-256 against the FIPS 180-4 / NIST CAVS example vectors, and split updates.
#include "agent/base/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace mi {
namespace {

TEST(Sha256Test, EmptyMessage) {
  EXPECT_EQ(Sha256::HexHash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, Abc) {
  EXPECT_EQ(Sha256::HexHash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, TwoBlockMessage448Bits) {
  EXPECT_EQ(Sha256::HexHash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, Message896Bits) {
  EXPECT_EQ(Sha256::HexHash("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                            "klmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(Sha256Test, OneMillionA) {
  EXPECT_EQ(Sha256::HexHash(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, SplitUpdatesGiveTheSameDigest) {
  const std::string message(1000, 'x');
  const Sha256::Digest whole = Sha256::Hash(message);
  // Every split point across block and padding boundaries, in pieces of 1..130 bytes.
  for (size_t piece : {1, 3, 55, 56, 63, 64, 65, 127, 128, 130}) {
    Sha256 h;
    for (size_t i = 0; i < message.size(); i += piece) h.Update(std::string_view(message).substr(i, piece));
    EXPECT_EQ(h.Finish(), whole) << "pieces of " << piece;
  }
  // Finish resets: the hasher serves the next message.
  Sha256 h;
  h.Update("ab");
  h.Finish();
  h.Update("a");
  h.Update("");
  h.Update("bc");
  EXPECT_EQ(h.Finish(), Sha256::Hash("abc"));
}

TEST(Sha256Test, PaddingBoundaries) {
  // Lengths around the 55/56-byte boundary where the length spills into a second block
  // (values from Python's hashlib).
  EXPECT_EQ(Sha256::HexHash(std::string(55, 'a')),
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(Sha256::HexHash(std::string(56, 'a')),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(Sha256::HexHash(std::string(64, 'a')),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256Test, HexPrefix) {
  char out[17];
  HexPrefix(Sha256::Hash("abc"), 16, out);
  EXPECT_STREQ(out, "ba7816bf8f01cfea");
}

}  // namespace
}  // namespace mi
