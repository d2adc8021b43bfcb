#include "agent/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace mi {
namespace {

Status Parse(const std::string& text, Config* c) { return ParseConfig(text, c); }

TEST(ConfigTest, ExtensionSettingsObjectIsAValidConfig) {
  Config c;
  ASSERT_TRUE(Parse(R"({"port": 50342})", &c).ok());
  EXPECT_EQ(c.port, 50342);
  EXPECT_EQ(c.listen, (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_EQ(c.imds.endpoint, "http://169.254.169.254/metadata/identity/oauth2/token");
  EXPECT_EQ(c.imds.api_version, "2018-02-01");
}

TEST(ConfigTest, EmptyObjectMeansDefaults) {
  Config c;
  ASSERT_TRUE(Parse("{}", &c).ok());
  EXPECT_EQ(c.cache.margin, Duration(300000));
  EXPECT_EQ(c.budget.max_concurrent, 2);
  EXPECT_EQ(c.retry.max_attempts, 5);
  EXPECT_EQ(c.health_limits.max_connections, 64u);
  EXPECT_EQ(c.health_limits.idle_timeout, Duration(5000));
}

TEST(ConfigTest, FullDocument) {
  Config c;
  Status s = Parse(R"({
    "port": 8080, "listen": ["127.0.0.1"], "allow_remote": false, "absolute_form": true,
    "imds": {"endpoint": "http://127.0.0.1:9/x", "timeout_seconds": 0.5, "connect_timeout_seconds": 1,
             "max_response_bytes": 4096},
    "cache": {"margin_seconds": 30, "refresh_ahead_seconds": 10, "max_keys": 10, "negative_ttl_seconds": 0},
    "retry": {"max_attempts": 3, "delta_seconds": 0.05},
    "budget": {"rate_per_second": 2.5, "burst": 2, "max_concurrent": 1, "max_queue": 5},
    "limits": {"max_connections": 100, "caller_deadline_seconds": 3},
    "health": ["127.0.0.1:9000", "[::1]:9001"],
    "health_limits": {"max_connections": 8, "idle_timeout_seconds": 0.5},
    "prefetch": [{"resource": "https://vault.azure.net"},
                 {"resource": "r", "msi_res_id": "/subscriptions/s/resourceGroups/g/providers/p/t/n"}],
    "log": {"level": "debug", "format": "json"}
  })",
                   &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.port, 8080);
  EXPECT_TRUE(c.absolute_form);
  EXPECT_EQ(c.imds.timeout, Duration(500));
  EXPECT_EQ(c.retry.delta, Duration(50));
  EXPECT_DOUBLE_EQ(c.budget.rate_per_second, 2.5);
  ASSERT_EQ(c.health.size(), 2u);
  EXPECT_EQ(c.health[1].host, "::1");
  EXPECT_EQ(c.health[1].port, 9001);
  EXPECT_EQ(c.health_limits.max_connections, 8u);
  EXPECT_EQ(c.health_limits.idle_timeout, Duration(500));
  ASSERT_EQ(c.prefetch.size(), 2u);
  EXPECT_EQ(c.prefetch[1].kind, SelectorKind::kResourceId);
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  EXPECT_EQ(c.log_format, LogFormat::kJson);
}

TEST(ConfigTest, ErrorsNameTheOffendingKeyAndChangeNothing) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prot": 1})", "prot: unknown key"},
      {R"({"port": "50342"})", "port: expected an integer"},
      {R"({"port": 70000})", "port: expected an integer"},
      {R"({"cache": {"margin": 3}})", "cache.margin: unknown key"},
      {R"({"cache": {"margin_seconds": -1}})", "cache.margin_seconds: expected a number"},
      {R"({"imds": {"endpoint": "ftp://x"}})", "imds.endpoint: expected an http:// URL"},
      {R"({"imds": []})", "imds: expected an object"},
      {R"({"health": ["localhost"]})", "health: expected"},
      {R"({"health_limits": {"max_connections": 0}})", "health_limits.max_connections: expected an integer from 1"},
      {R"({"health_limits": {"idle_timeout_seconds": 0}})", "health_limits.idle_timeout_seconds: expected a number"},
      {R"({"health_limits": {"idle_seconds": 5}})", "health_limits.idle_seconds: unknown key"},
      {R"({"health_limits": 64})", "health_limits: expected an object"},
      {R"({"prefetch": [{"client_id": "0d1e2f30-aaaa-4bbb-8ccc-123456789abc"}]})", "prefetch[0].resource"},
      {R"({"prefetch": [{"resource": "r", "client_id": "nope"}]})", "prefetch[0]: client_id is not a GUID"},
      {R"({"prefetch": [{"resource": "r", "colour": "x"}]})", "prefetch[0].colour: unknown key"},
      {R"({"log": {"level": "loud"}})", "log.level: expected"},
      {R"({"listen": []})", "listen: at least one"},
      {R"([1, 2])", "top level must be a JSON object"},
      {R"({"port": 1,})", "not valid JSON"},
  };
  for (const auto& [text, expected] : cases) {
    Config c;
    c.port = 1234;
    Status s = Parse(text, &c);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_NE(s.message().find(expected), std::string::npos) << text << " -> " << s.message();
    EXPECT_EQ(c.port, 1234) << "a failed parse leaves the config alone";
  }
}

TEST(ConfigTest, MissingFileIsDefaultsOnlyWhenAllowed) {
  Config c;
  EXPECT_TRUE(LoadConfigFile("/nonexistent/mi-agent.json", true, &c).ok());
  Status s = LoadConfigFile("/nonexistent/mi-agent.json", false, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/mi-agent.json"), std::string::npos);
}

TEST(ConfigTest, ListenAddressParsing) {
  ListenAddress a;
  EXPECT_TRUE(ParseListenAddress("127.0.0.1:50343", &a));
  EXPECT_EQ(a.port, 50343);
  EXPECT_TRUE(ParseListenAddress("[::1]:1", &a));
  EXPECT_EQ(a.host, "::1");
  EXPECT_FALSE(ParseListenAddress("::1:1", &a));
  EXPECT_FALSE(ParseListenAddress("127.0.0.1:", &a));
  EXPECT_FALSE(ParseListenAddress("127.0.0.1:99999", &a));
  EXPECT_FALSE(ParseListenAddress("127.0.0.1:1x", &a));
}

}  // namespace
}  // namespace mi
