// The Arc challenge checks (agent/arc_challenge.h) on real files in a
// temporary tokens directory.

#include "agent/arc_challenge.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#ifndef _WIN32
#include <sys/stat.h>
#endif

namespace mi {
namespace {

namespace fs = std::filesystem;

class ArcChallengeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> n{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    root_ = fs::temp_directory_path() / ("mi-arc-test-" + std::to_string(stamp) + "-" + std::to_string(n++));
    dir_ = root_ / "tokens";
    fs::create_directories(dir_);
    fs::create_directories(root_ / "other");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  std::string Write(const fs::path& path, const std::string& contents) {
    std::ofstream(path, std::ios::binary) << contents;
    return path.string();
  }
  std::string Message(const std::string& path) {
    StatusOr<SecureString> s = ReadArcSecret(dir_.string(), path);
    EXPECT_FALSE(s.ok());
    return s.ok() ? std::string() : s.status().message();
  }

  fs::path root_;
  fs::path dir_;
};

TEST(ArcChallengeParse, TakesTheRealmOfABasicChallenge) {
  StatusOr<std::string> r = ParseArcChallenge("Basic realm=/var/opt/azcmagent/tokens/abc.key");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "/var/opt/azcmagent/tokens/abc.key");
  r = ParseArcChallenge("  basic   REALM=\"/t/x.key\" ");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "/t/x.key");
  r = ParseArcChallenge("Basic realm=C:\\ProgramData\\AzureConnectedMachineAgent\\Tokens\\a.key");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "C:\\ProgramData\\AzureConnectedMachineAgent\\Tokens\\a.key");
}

TEST(ArcChallengeParse, RefusesAnythingElse) {
  for (const char* bad : {"", "   ", "Bearer realm=/t/x.key", "Basic", "Basicrealm=/t/x.key", "Basic x=/t/x.key",
                          "Basic realm=", "Basic realm=\"/t/x.key", "Basic realm=\"\"", "Basic realm=/t/\x01.key",
                          "Basic realm=/t/a\"b.key", "Basic realm=/t/\x7f.key"}) {
    EXPECT_FALSE(ParseArcChallenge(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseArcChallenge("Basic realm=/" + std::string(kMaxArcChallengeBytes, 'a')).ok());
}

TEST_F(ArcChallengeTest, ReadsAKeyFileInTheDirectory) {
  const std::string path = Write(dir_ / "a1b2.key", "c2VjcmV0LXZhbHVl");
  StatusOr<SecureString> s = ReadArcSecret(dir_.string(), path);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(std::string(*s), "c2VjcmV0LXZhbHVl");
  // The largest file allowed.
  const std::string big = Write(dir_ / "big.key", std::string(kMaxArcSecretBytes, 'k'));
  s = ReadArcSecret(dir_.string(), big);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->size(), kMaxArcSecretBytes);
}

TEST_F(ArcChallengeTest, RefusesPathsOutsideOrNotAbsolute) {
  const std::string outside = Write(root_ / "other" / "x.key", "secret");
  EXPECT_NE(Message(outside).find("outside the tokens directory"), std::string::npos);
  EXPECT_NE(Message("x.key").find("not an absolute path"), std::string::npos);
  EXPECT_NE(Message("tokens/x.key").find("not an absolute path"), std::string::npos);
  const std::string dotdot = (dir_ / ".." / "other" / "x.key").string();
  EXPECT_NE(Message(dotdot).find(". or .. component"), std::string::npos);
  const std::string dot = (dir_ / "." / "x.key").string();
  EXPECT_NE(Message(dot).find(". or .. component"), std::string::npos);
  // A sibling directory whose name starts like the tokens directory's.
  fs::create_directories(root_ / "tokens2");
  const std::string sibling = Write(root_ / "tokens2" / "x.key", "secret");
  EXPECT_NE(Message(sibling).find("outside the tokens directory"), std::string::npos);
}

TEST_F(ArcChallengeTest, RefusesFilesThatAreNotKeys) {
  const std::string txt = Write(dir_ / "secret.txt", "secret");
  EXPECT_NE(Message(txt).find("not name a .key file"), std::string::npos);
  EXPECT_NE(Message((dir_ / ".key").string()).find("not name a .key file"), std::string::npos);
  EXPECT_NE(Message((dir_ / "missing.key").string()).find("cannot be opened"), std::string::npos);
  fs::create_directories(dir_ / "d.key");
  EXPECT_FALSE(ReadArcSecret(dir_.string(), (dir_ / "d.key").string()).ok());
}

TEST_F(ArcChallengeTest, RefusesBigEmptyOrUnprintableFiles) {
  const std::string big = Write(dir_ / "big.key", std::string(kMaxArcSecretBytes + 1, 'k'));
  EXPECT_NE(Message(big).find("larger than 4096 bytes"), std::string::npos);
  const std::string empty = Write(dir_ / "empty.key", "");
  EXPECT_NE(Message(empty).find("empty or not printable"), std::string::npos);
  const std::string crlf = Write(dir_ / "crlf.key", "secret\r\nX-Injected: 1");
  EXPECT_NE(Message(crlf).find("empty or not printable"), std::string::npos);
  const std::string newline = Write(dir_ / "nl.key", "secret\n");
  EXPECT_NE(Message(newline).find("empty or not printable"), std::string::npos);
}

#ifndef _WIN32
TEST_F(ArcChallengeTest, RefusesSymlinks) {
  const std::string target = Write(root_ / "other" / "target.key", "secret");
  fs::create_symlink(target, dir_ / "link.key");
  EXPECT_NE(Message((dir_ / "link.key").string()).find("symbolic link"), std::string::npos);
  // A symlink to a key inside the directory is refused as well: himds writes files.
  const std::string inside = Write(dir_ / "real.key", "secret");
  fs::create_symlink(inside, dir_ / "alias.key");
  EXPECT_NE(Message((dir_ / "alias.key").string()).find("symbolic link"), std::string::npos);
  // A symlinked directory in the path that escapes the tokens directory.
  fs::create_directory_symlink(root_ / "other", dir_ / "escape");
  EXPECT_NE(Message((dir_ / "escape" / "target.key").string()).find("outside the tokens directory"),
            std::string::npos);
}

TEST_F(ArcChallengeTest, RefusesAFifoWithoutBlocking) {
  const std::string fifo = (dir_ / "pipe.key").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_NE(Message(fifo).find("not a regular file"), std::string::npos);
}

TEST_F(ArcChallengeTest, ATokensDirectoryGivenThroughASymlinkStillWorks) {
  fs::create_directory_symlink(dir_, root_ / "tokens-link");
  const std::string path = Write(dir_ / "k.key", "secret");
  StatusOr<SecureString> s = ReadArcSecret((root_ / "tokens-link").string(), path);
  EXPECT_TRUE(s.ok()) << s.status().message();
}
#endif

TEST(ArcChallengeHeader, IsBasicWithTheFileContents) {
  SecureString secret("c2VjcmV0");
  EXPECT_EQ(std::string(ArcAuthorizationHeader(secret)), "Authorization: Basic c2VjcmV0");
}

}  // namespace
}  // namespace mi
