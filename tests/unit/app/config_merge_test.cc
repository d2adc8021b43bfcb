#include "agent/app/config_merge.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "agent/app/config.h"

namespace mi {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

TEST(ConfigMergeTest, MergePatchFollowsRfc7386) {
  json doc = json::parse(R"({"a": {"b": 1, "c": 2}, "list": [1, 2], "keep": true, "gone": 1})");
  config_merge::MergePatch(&doc, json::parse(R"({"a": {"c": 3, "d": {"e": 4}}, "list": [9], "gone": null})"));
  EXPECT_EQ(doc, json::parse(R"({"a": {"b": 1, "c": 3, "d": {"e": 4}}, "list": [9], "keep": true})"));
  // A scalar replaces an object and an object a scalar.
  config_merge::MergePatch(&doc, json::parse(R"({"a": 5, "keep": {"x": null, "y": 1}})"));
  EXPECT_EQ(doc, json::parse(R"({"a": 5, "list": [9], "keep": {"y": 1}})"));
}

TEST(ConfigMergeTest, DropInNamesAreJsonFilesInByteOrder) {
  EXPECT_EQ(config_merge::DropInNames({"b.json", "10-x.json", "a.json", "B.json", ".hidden.json", "x.json~",
                                       "x.json.dpkg-old", "notes.txt", ".json", "9.json", "\xc3\xa9.json"}),
            (std::vector<std::string>{"10-x.json", "9.json", "B.json", "a.json", "b.json", "\xc3\xa9.json"}));
}

TEST(ConfigMergeTest, DropInDirectoryIsBesideTheFile) {
  EXPECT_EQ(config_merge::DropInDirectory("/etc/mi-agent/config.json"), "/etc/mi-agent/config.d");
  EXPECT_EQ(config_merge::DropInDirectory("C:\\ProgramData\\mi-agent\\config.json"),
            "C:\\ProgramData\\mi-agent\\config.d");
  EXPECT_EQ(config_merge::DropInDirectory("config.json"), "config.d");
}

class DropInTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("mi-dropin-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "config.d");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Main() const { return (dir_ / "config.json").string(); }
  std::string DropIn(const std::string& name) const { return (dir_ / "config.d" / name).string(); }
  static void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

  fs::path dir_;
};

TEST_F(DropInTest, MergedInOrderOverTheMainFile) {
  Write(Main(), R"({"port": 1000, "listen": ["127.0.0.1"], "cache": {"max_keys": 7, "margin_seconds": 60}})");
  Write(DropIn("20-b.json"), R"({"port": 3000, "cache": {"margin_seconds": null}})");
  Write(DropIn("10-a.json"), R"({"port": 2000, "listen": ["::1"], "cache": {"max_keys": 8}})");
  Write(DropIn("30-c.json~"), R"(not even json)");
  Write(DropIn(".40.json"), R"({"port": 4000})");
  fs::create_directory(DropIn("50-dir.json"));
  Config c;
  Status s = LoadConfigFile(Main(), false, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.port, 3000);
  EXPECT_EQ(c.listen, std::vector<std::string>{"::1"});
  EXPECT_EQ(c.cache.max_keys, 8u);
  EXPECT_EQ(c.cache.margin, Config().cache.margin) << "null deletes: back to the default";
}

TEST_F(DropInTest, DeeplyNestedFilesAreRefusedNotRecursedOver) {
  // Copying or merging a tree this deep would overflow the stack.
  const std::string deep = "{\"a\": " + std::string(200000, '[') + std::string(200000, ']') + "}";
  Write(Main(), R"({"port": 1000})");
  Write(DropIn("10-deep.json"), deep);
  Config c;
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(), DropIn("10-deep.json") + ": nested deeper than 32 levels");
  fs::remove(DropIn("10-deep.json"));
  Write(Main(), deep);
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(), Main() + ": nested deeper than 32 levels");
  EXPECT_EQ(c.port, Config().port) << "nothing applied";
}

TEST_F(DropInTest, TheMainFilesNullIsStillRefused) {
  Write(Main(), R"({"port": null})");
  Config c;
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(), Main() + ": port: expected an integer from 0 to 65535");
}

TEST_F(DropInTest, ErrorsNameTheFileAndTheKey) {
  Write(Main(), R"({"cache": {"max_keys": 7}, "prefetch": [{"resource": "https://a"}]})");
  Write(DropIn("10-a.json"), R"({"cache": {"margin_seconds": "soon"}})");
  Config c;
  c.port = 1;
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(),
            DropIn("10-a.json") + ": cache.margin_seconds: expected a number from 0 to 86400");
  EXPECT_EQ(c.port, 1) << "untouched on error";
  Write(DropIn("10-a.json"), R"({"prefetch": [{}]})");
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(), DropIn("10-a.json") + ": prefetch[0].resource: required");
  Write(DropIn("10-a.json"), R"({"cahce": {}})");
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(), DropIn("10-a.json") + ": cahce: unknown key");
  Write(DropIn("10-a.json"), R"({"port": 1,})");
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(), DropIn("10-a.json") + ": not valid JSON");
  Write(DropIn("10-a.json"), R"([1])");
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(),
            DropIn("10-a.json") + ": the top level must be a JSON object");
  // The main file's own mistake is the main file's, a later drop-in notwithstanding.
  Write(DropIn("10-a.json"), R"({"cache": {"max_keys": 9}})");
  Write(Main(), R"({"cache": {"margin_seconds": -1}})");
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(),
            Main() + ": cache.margin_seconds: expected a number from 0 to 86400");
  EXPECT_EQ(c.port, 1);
}

TEST_F(DropInTest, AMissingDefaultFileStillTakesDropIns) {
  Write(DropIn("port.json"), R"({"port": 4242})");
  Config c;
  ASSERT_TRUE(LoadConfigFile(Main(), /*missing_ok=*/true, &c).ok());
  EXPECT_EQ(c.port, 4242);
  EXPECT_FALSE(LoadConfigFile(Main(), /*missing_ok=*/false, &c).ok());
}

TEST_F(DropInTest, Bounded) {
  Write(Main(), "{}");
  for (size_t i = 0; i <= config_merge::kMaxDropIns; ++i) Write(DropIn(std::to_string(100 + i) + ".json"), "{}");
  Config c;
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(), (dir_ / "config.d").string() + ": more than 64 drop-in files");
  fs::remove_all(dir_ / "config.d");
  fs::create_directory(dir_ / "config.d");
  Write(DropIn("big.json"), "{}" + std::string(config_merge::kMaxFileBytes, ' '));
  EXPECT_EQ(LoadConfigFile(Main(), false, &c).message(), DropIn("big.json") + ": larger than 16777216 bytes");
  Write(DropIn("big.json"), "{}" + std::string(config_merge::kMaxFileBytes - 2, ' '));
  EXPECT_TRUE(LoadConfigFile(Main(), false, &c).ok());
}

}  // namespace
}  // namespace mi
