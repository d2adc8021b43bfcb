// "imds.kind" and "imds.arc_token_dir" (issue #14 point 5).
#include <gtest/gtest.h>

#include <filesystem>

#include "agent/app/config.h"
#include "agent/platform.h"

namespace mi {
namespace {

using Kind = CurlUpstreamClient::Kind;

TEST(ConfigArcTest, ImdsIsTheDefault) {
  Config c;
  ASSERT_TRUE(ParseConfig("{}", &c).ok());
  EXPECT_EQ(c.imds.kind, Kind::kImds);
  EXPECT_FALSE(c.imds_kind_auto);
  EXPECT_EQ(c.imds.arc_token_dir, platform::DefaultArcTokenDir());
  ASSERT_TRUE(ParseConfig(R"({"imds": {"kind": "imds"}})", &c).ok());
  EXPECT_EQ(c.imds.kind, Kind::kImds);
  EXPECT_EQ(c.imds.endpoint, "http://169.254.169.254/metadata/identity/oauth2/token");
}

TEST(ConfigArcTest, ArcBringsItsEndpointAndApiVersion) {
  Config c;
  ASSERT_TRUE(ParseConfig(R"({"imds": {"kind": "arc"}})", &c).ok());
  EXPECT_EQ(c.imds.kind, Kind::kArc);
  EXPECT_EQ(c.imds.endpoint, "http://127.0.0.1:40342/metadata/identity/oauth2/token");
  EXPECT_EQ(c.imds.api_version, "2020-06-01");
}

#ifdef _WIN32
constexpr char kDir[] = "C:/tokens";
#else
constexpr char kDir[] = "/tmp/tokens";
#endif

TEST(ConfigArcTest, AnExplicitEndpointOrApiVersionWins) {
  Config c;
  const std::string text = std::string(R"({"imds": {"kind": "arc", "endpoint": "http://127.0.0.1:9/t", )") +
                           R"("api_version": "2019-11-01", "arc_token_dir": ")" + kDir + "\"}}";
  ASSERT_TRUE(ParseConfig(text, &c).ok());
  EXPECT_EQ(c.imds.kind, Kind::kArc);
  EXPECT_EQ(c.imds.endpoint, "http://127.0.0.1:9/t");
  EXPECT_EQ(c.imds.api_version, "2019-11-01");
  EXPECT_EQ(c.imds.arc_token_dir, kDir);
}

TEST(ConfigArcTest, AutoChoosesByTheArcAgentsPresence) {
  Config c;
  ASSERT_TRUE(ParseConfig(R"({"imds": {"kind": "auto"}})", &c).ok());
  EXPECT_TRUE(c.imds_kind_auto);
  std::error_code ec;
  const bool installed = std::filesystem::exists(platform::ArcAgentPath(), ec);
  EXPECT_EQ(c.imds.kind, installed ? Kind::kArc : Kind::kImds);
}

TEST(ConfigArcTest, ErrorsNameTheKey) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"imds": {"kind": "azure"}})", "imds.kind: expected imds, arc or auto"},
      {R"({"imds": {"kind": 1}})", "imds.kind: expected a non-empty string"},
      {R"({"imds": {"kind": "arc", "arc_token_dir": "tokens"}})", "imds.arc_token_dir: expected the absolute path"},
      {R"({"imds": {"arc_token_dir": ""}})", "imds.arc_token_dir: expected a non-empty string"},
  };
  for (const auto& [text, want] : cases) {
    Config c;
    Status s = ParseConfig(text, &c);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.message().rfind(want, 0), 0u) << s.message();
  }
}

}  // namespace
}  // namespace mi
