// LoadDaemonOptions: the daemon's options from its arguments, shared by the
// console run and the Windows `service` command.
#include "agent/app/cli.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace mi {
namespace {

class LoadDaemonOptionsTest : public ::testing::Test {
 protected:
  void TearDown() override { std::remove(path_.c_str()); }
  // A configuration file in gtest's temporary directory (Windows too).
  std::string Write(const std::string& text) {
    path_ = ::testing::TempDir() + "mi-cli-test-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".json";
    std::ofstream(path_) << text;
    return path_;
  }
  std::string Missing() const { return ::testing::TempDir() + "mi-cli-test-missing.json"; }

  std::string path_;
};

TEST_F(LoadDaemonOptionsTest, FileThenOverridesKeptForReload) {
  std::string path = Write(R"({"port": 4000})");
  StatusOr<DaemonOptions> options = LoadDaemonOptions({"--port", "5000", "--config", path, "--allow-core-dumps"});
  ASSERT_TRUE(options.ok()) << options.status().message();
  EXPECT_EQ(options->config_path, path);
  EXPECT_EQ(options->config.port, 5000);  // the override wins over the file
  EXPECT_TRUE(options->allow_core_dumps);
  EXPECT_EQ(options->notifier, nullptr);  // the caller's to set

  // A reload re-reads the file and re-applies the same overrides.
  Config reloaded;
  reloaded.port = 4000;
  ASSERT_TRUE(options->overrides);
  options->overrides(&reloaded);
  EXPECT_EQ(reloaded.port, 5000);
}

TEST_F(LoadDaemonOptionsTest, NoArgumentsMeansTheDefaultFileWhichMayBeMissing) {
  StatusOr<DaemonOptions> options = LoadDaemonOptions({});
  // The default path (/etc/mi-agent/config.json): present or not, nothing else is set.
  if (options.ok()) {
    EXPECT_FALSE(options->config_path.empty());
    EXPECT_FALSE(options->allow_core_dumps);
  } else {
    EXPECT_EQ(options.status().message().rfind(kInvalidConfiguration, 0), 0u) << options.status().message();
  }
}

TEST_F(LoadDaemonOptionsTest, ErrorsSayWhere) {
  std::string path = Write(R"({"port": 99999})");
  StatusOr<DaemonOptions> bad_file = LoadDaemonOptions({"--config", path, "--port", "x"});
  ASSERT_FALSE(bad_file.ok());
  // The file is read first: its error wins over a bad override.
  EXPECT_EQ(bad_file.status().message().rfind(kInvalidConfiguration, 0), 0u) << bad_file.status().message();

  StatusOr<DaemonOptions> missing = LoadDaemonOptions({"--config", Missing()});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message().rfind(kInvalidConfiguration, 0), 0u);

  path = Write("{}");
  StatusOr<DaemonOptions> bad_override = LoadDaemonOptions({"--config", path, "--port", "x"});
  ASSERT_FALSE(bad_override.ok());
  // A refused value is an invalid configuration too (exit 78), not a usage error.
  EXPECT_EQ(bad_override.status().message(), std::string(kInvalidConfiguration) + "--port: expected 0..65535");

  StatusOr<DaemonOptions> unknown = LoadDaemonOptions({"--config", path, "--help"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(), "unknown option --help");  // actions are RunCli's

  StatusOr<DaemonOptions> no_value = LoadDaemonOptions({"--config"});
  ASSERT_FALSE(no_value.ok());
  EXPECT_EQ(no_value.status().message(), "--config needs a file");
}

}  // namespace
}  // namespace mi
