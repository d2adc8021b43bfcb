// "dialects.app_service": the block, and the secret file's checks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "agent/app/config.h"

namespace mi {
namespace {

class ConfigDialectsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("mi-dialects-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }
  static std::string Doc(const std::string& path) {
    nlohmann::json j = {{"dialects", {{"app_service", {{"enabled", true}, {"secret_file", path}}}}}};
    return j.dump();
  }
  std::filesystem::path dir_;
};

TEST_F(ConfigDialectsTest, OffByDefaultAndNothingIsRead) {
  Config c;
  ASSERT_TRUE(ParseConfig("{}", &c).ok());
  EXPECT_FALSE(c.app_service.enabled);
  EXPECT_TRUE(c.api.app_service_secret.empty());
#ifdef _WIN32
  const char* off = R"({"dialects":{"app_service":{"enabled":false,"secret_file":"C:\\nonexistent\\x"}}})";
#else
  const char* off = R"({"dialects":{"app_service":{"enabled":false,"secret_file":"/nonexistent/x"}}})";
#endif
  EXPECT_TRUE(ParseConfig(off, &c).ok());
  EXPECT_TRUE(c.api.app_service_secret.empty());
  EXPECT_NE(DefaultAppServiceSecretPath().find("app-service.secret"), std::string::npos);
}

TEST_F(ConfigDialectsTest, TheSecretIsReadWithOneTrailingNewlineStripped) {
  Config c;
  const std::string path = Write("s", "0123456789abcdefXYZ\r\n");
  ASSERT_TRUE(ParseConfig(Doc(path), &c).ok());
  EXPECT_TRUE(c.app_service.enabled);
  EXPECT_EQ(c.api.app_service_secret, "0123456789abcdefXYZ");
  EXPECT_EQ(AppServiceSecretPath(c.app_service), path);
}

TEST_F(ConfigDialectsTest, BadSecretFilesAreErrorsNamingThePathNeverTheContent) {
  struct Case {
    const char* name;
    std::string content;
    const char* why;
  };
  for (const Case& k : {Case{"short", "0123456789abcde\n", "16 to 4096"},
                        Case{"long", std::string(4097, 'a'), "16 to 4096"},
                        Case{"space", "0123456789 abcdef-secret", "printable"},
                        Case{"two-lines", "0123456789abcdef\n\n", "printable"}}) {
    Config c;
    const std::string path = Write(k.name, k.content);
    Status s = ParseConfig(Doc(path), &c);
    ASSERT_FALSE(s.ok()) << k.name;
    EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(k.why), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find("abcdef"), std::string::npos) << s.message();
    EXPECT_FALSE(c.app_service.enabled) << "unchanged on error";
  }
  Config c;
  Status s = ParseConfig(Doc((dir_ / "missing").string()), &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing"), std::string::npos);
  s = ParseConfig(Doc(dir_.string()), &c);
  EXPECT_FALSE(s.ok()) << "a directory is no secret file";
}

TEST_F(ConfigDialectsTest, KeysAreStrict) {
  Config c;
  EXPECT_EQ(ParseConfig(R"({"dialects":{"app_service":{"enabled":1}}})", &c).message(),
            "dialects.app_service.enabled: expected true or false");
  EXPECT_FALSE(ParseConfig(R"({"dialects":{"app_service":{"secret":"x"}}})", &c).ok());
  EXPECT_FALSE(ParseConfig(R"({"dialects":{"other":{}}})", &c).ok());
  EXPECT_EQ(ParseConfig(R"({"dialects":{"app_service":{"secret_file":"relative"}}})", &c).message(),
            "dialects.app_service.secret_file: expected an absolute path");
}

}  // namespace
}  // namespace mi
