// SdNotifier and socket activation against a fake service manager: a notify
// datagram socket in a temporary directory, and listening sockets placed at
// SD_LISTEN_FDS_START as systemd would pass them.
#if defined(MI_HAVE_SYSTEMD)

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "agent/platform.h"

namespace mi {
namespace {

// A NOTIFY_SOCKET the test reads from. Restores the environment on exit.
class FakeServiceManager {
 public:
  FakeServiceManager() {
    char dir_template[] = "/tmp/mi-sd-notify-XXXXXX";
    const char* dir = mkdtemp(dir_template);
    EXPECT_NE(dir, nullptr);
    dir_ = dir ? dir : "";
    path_ = dir_ + "/notify";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    EXPECT_GE(fd_, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~FakeServiceManager() {
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    close(fd_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }

  // Every message received so far (sd_notify sends synchronously, so the
  // datagrams are queued by the time the notifier call returns).
  std::vector<std::string> Drain() {
    std::vector<std::string> messages;
    char buf[4096];
    for (;;) {
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n < 0) break;
      messages.emplace_back(buf, static_cast<size_t>(n));
    }
    return messages;
  }

 private:
  std::string dir_;
  std::string path_;
  int fd_ = -1;
};

TEST(SdNotifierTest, WithoutNotifySocketIsANoOp) {
  unsetenv("NOTIFY_SOCKET");
  auto notifier = platform::MakeNotifier();
  ASSERT_NE(notifier, nullptr);
  EXPECT_EQ(notifier->WatchdogInterval(), Duration(0));
  notifier->Ready();  // must not crash or block
  notifier->Status("nothing listens");
}

TEST(SdNotifierTest, SendsStateChangesToTheManager) {
  FakeServiceManager manager;
  auto notifier = platform::MakeNotifier();
  notifier->Ready();
  notifier->Status("2 identities ok, 0 failing, IMDS ok");
  notifier->Reloading();
  notifier->Ready();
  notifier->Stopping();
  const auto messages = manager.Drain();
  ASSERT_EQ(messages.size(), 5u);
  EXPECT_EQ(messages[0], "READY=1");
  EXPECT_EQ(messages[1], "STATUS=2 identities ok, 0 failing, IMDS ok");
  EXPECT_EQ(messages[2].rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u) << messages[2];
  EXPECT_EQ(messages[3], "READY=1");
  EXPECT_EQ(messages[4], "STOPPING=1");
}

TEST(SdNotifierTest, StatusIsOneLine) {
  FakeServiceManager manager;
  auto notifier = platform::MakeNotifier();
  notifier->Status("first\nREADY=1\r\nthird");
  const auto messages = manager.Drain();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0], "STATUS=first READY=1  third");
}

TEST(SdNotifierTest, WatchdogAtHalfTheTimeout) {
  FakeServiceManager manager;
  setenv("WATCHDOG_USEC", "3000000", 1);
  setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  auto notifier = platform::MakeNotifier();
  EXPECT_EQ(notifier->WatchdogInterval(), Duration(1500));
  notifier->Watchdog();
  const auto messages = manager.Drain();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0], "WATCHDOG=1");
}

TEST(SdNotifierTest, WatchdogMeantForAnotherProcessIsOff) {
  FakeServiceManager manager;
  setenv("WATCHDOG_USEC", "3000000", 1);
  setenv("WATCHDOG_PID", std::to_string(getpid() + 1).c_str(), 1);
  auto notifier = platform::MakeNotifier();
  EXPECT_EQ(notifier->WatchdogInterval(), Duration(0));
  notifier->Watchdog();
  EXPECT_TRUE(manager.Drain().empty());
}

// Places `fd` at SD_LISTEN_FDS_START (3) as systemd would, and puts back
// whatever the test process had there.
class ActivationFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_fd3_ = fcntl(3, F_DUPFD_CLOEXEC, 100);  // -1 if fd 3 was not open
  }
  void TearDown() override {
    if (saved_fd3_ >= 0) {
      dup2(saved_fd3_, 3);
      close(saved_fd3_);
    } else {
      close(3);
    }
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
  }
  void Pass(int fd) {
    ASSERT_EQ(dup2(fd, 3), 3);
    if (fd != 3) close(fd);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  }
  static int LoopbackSocket(int type) {
    const int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }

  int saved_fd3_ = -1;
};

TEST_F(ActivationFixture, NothingPassedIsOkAndEmpty) {
  unsetenv("LISTEN_FDS");
  std::vector<uv_os_sock_t> fds;
  EXPECT_TRUE(platform::TakeActivatedSockets(&fds).ok());
  EXPECT_TRUE(fds.empty());
}

TEST_F(ActivationFixture, AdoptsAListeningTcpSocketAndClearsTheEnvironment) {
  const int fd = LoopbackSocket(SOCK_STREAM);
  ASSERT_EQ(listen(fd, 16), 0);
  Pass(fd);
  std::vector<uv_os_sock_t> fds;
  const Status status = platform::TakeActivatedSockets(&fds);
  ASSERT_TRUE(status.ok()) << status.message();
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_EQ(fds[0], 3);
  EXPECT_EQ(std::getenv("LISTEN_FDS"), nullptr);
  EXPECT_EQ(std::getenv("LISTEN_PID"), nullptr);
}

TEST_F(ActivationFixture, RejectsADatagramSocket) {
  Pass(LoopbackSocket(SOCK_DGRAM));
  std::vector<uv_os_sock_t> fds;
  const Status status = platform::TakeActivatedSockets(&fds);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("fd 3"), std::string::npos) << status.message();
  EXPECT_TRUE(fds.empty());
}

TEST_F(ActivationFixture, RejectsASocketThatDoesNotListen) {
  Pass(LoopbackSocket(SOCK_STREAM));
  std::vector<uv_os_sock_t> fds;
  EXPECT_FALSE(platform::TakeActivatedSockets(&fds).ok());
  EXPECT_TRUE(fds.empty());
}

TEST(PlatformPathsTest, LinuxLocations) {
  EXPECT_EQ(platform::DefaultConfigPath(), "/etc/mi-agent/config.json");
  EXPECT_EQ(platform::DiscoveryFilePath(), "/var/lib/waagent/ManagedIdentity-Settings");
}

}  // namespace
}  // namespace mi

#endif  // MI_HAVE_SYSTEMD
