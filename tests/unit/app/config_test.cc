#include "agent/app/config.h"

#include "agent/app/cli.h"

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
  EXPECT_EQ(c.budget.max_queue, 1024u);
  EXPECT_EQ(c.budget.max_background_queue, 256u);
  EXPECT_EQ(c.cache.retry.max_attempts, 5);
  EXPECT_EQ(c.health_limits.max_connections, 64u);
  EXPECT_EQ(c.health_limits.idle_timeout, Duration(5000));
}

TEST(ConfigTest, ImdsV2PassthroughDefaultsOnAndCanBeTurnedOff) {
  Config c;
  ASSERT_TRUE(Parse("{}", &c).ok());
  EXPECT_TRUE(c.api.v2_passthrough);
  ASSERT_TRUE(Parse(R"({"imds": {"v2_passthrough": false}})", &c).ok());
  EXPECT_FALSE(c.api.v2_passthrough);
  EXPECT_FALSE(Parse(R"({"imds": {"v2_passthrough": "no"}})", &c).ok());
}

TEST(ConfigTest, FullDocument) {
  Config c;
  Status s = Parse(R"({
    "port": 8080, "listen": ["127.0.0.1"], "allow_remote": false, "absolute_form": true,
    "imds": {"endpoint": "http://127.0.0.1:9/x", "timeout_seconds": 0.5, "connect_timeout_seconds": 1,
             "max_response_bytes": 4096},
    "cache": {"margin_seconds": 30, "refresh_ahead_seconds": 10, "max_keys": 10, "negative_ttl_seconds": 0},
    "retry": {"max_attempts": 3, "delta_seconds": 0.05},
    "budget": {"rate_per_second": 2.5, "burst": 2, "max_concurrent": 1, "max_queue": 5,
               "max_background_queue": 7},
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
  EXPECT_TRUE(c.api.absolute_form);
  EXPECT_EQ(c.imds.timeout, Duration(500));
  EXPECT_EQ(c.cache.retry.delta, Duration(50));
  EXPECT_DOUBLE_EQ(c.budget.rate_per_second, 2.5);
  EXPECT_EQ(c.budget.max_queue, 5u);
  EXPECT_EQ(c.budget.max_background_queue, 7u);
  ASSERT_EQ(c.health.size(), 2u);
  EXPECT_EQ(c.health[1].host, "::1");
  EXPECT_EQ(c.health[1].port, 9001);
  EXPECT_EQ(c.health_limits.max_connections, 8u);
  EXPECT_EQ(c.health_limits.idle_timeout, Duration(500));
  ASSERT_EQ(c.cache.prefetch.size(), 2u);
  EXPECT_EQ(c.cache.prefetch[1].kind, SelectorKind::kResourceId);
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  EXPECT_EQ(c.log_format, LogFormat::kJson);
}

TEST(ConfigTest, LimitsGoToTheComponentsThatUseThem) {
  Config c;
  Status s = Parse(R"({
    "limits": {"max_connections": 100, "max_header_bytes": 4096, "max_body_bytes": 100,
               "header_timeout_seconds": 2, "idle_timeout_seconds": 30, "max_pipelined": 4,
               "max_waiters": 7, "caller_deadline_seconds": 3, "drain_seconds": 0.25,
               "fail_fast_seconds": 0.5},
    "health_limits": {"max_connections": 8}
  })",
                   &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.limits.max_connections, 100u);
  EXPECT_EQ(c.limits.max_header_bytes, 4096u);
  EXPECT_EQ(c.limits.idle_timeout, Duration(30000));
  EXPECT_FALSE(c.limits.evict_idle_at_limit);
  EXPECT_EQ(c.cache.max_waiters, 7u);
  EXPECT_EQ(c.cache.caller_deadline, Duration(3000));
  EXPECT_EQ(c.cache.fail_fast, Duration(500));
  EXPECT_EQ(c.drain_timeout, Duration(250));
  // The health listener: its own two keys, the rest from "limits".
  EXPECT_EQ(c.health_limits.max_connections, 8u);
  EXPECT_EQ(c.health_limits.idle_timeout, Duration(5000));
  EXPECT_TRUE(c.health_limits.evict_idle_at_limit);
  EXPECT_EQ(c.health_limits.max_header_bytes, 4096u);
  EXPECT_EQ(c.health_limits.max_body_bytes, 100u);
  EXPECT_EQ(c.health_limits.header_timeout, Duration(2000));
  EXPECT_EQ(c.health_limits.max_pipelined, 4u);
}

TEST(ConfigTest, DefaultsAreTheComponentsOwn) {
  Config c;
  ASSERT_TRUE(Parse("{}", &c).ok());
  EXPECT_EQ(c.limits.max_connections, proxy::ServerLimits().max_connections);
  EXPECT_EQ(c.cache.max_waiters, 4096u);
  EXPECT_EQ(c.cache.caller_deadline, Duration(25000));
  EXPECT_EQ(c.cache.fail_fast, Duration(2000));
  EXPECT_EQ(c.drain_timeout, Duration(10000));
  EXPECT_EQ(c.cache.retry.max_delay, Duration(60000));
  EXPECT_EQ(c.imds.max_response_bytes, 64u * 1024);
  EXPECT_FALSE(c.api.allow_remote);
  EXPECT_TRUE(c.api.listen_hosts.empty());
}

// One knob for a caller's fair share: its waiters, and the same share of the
// callers' IMDS queue.
TEST(ConfigTest, TheFairShareFollowsMaxWaitersPerCaller) {
  Config c;
  ASSERT_TRUE(ParseConfig("{}", &c).ok());
  EXPECT_EQ(c.cache.max_waiters_per_caller, 1024u) << "a quarter of max_waiters";
  EXPECT_EQ(c.budget.max_queue_per_caller, 256u) << "a quarter of max_queue";

  Config small;
  ASSERT_TRUE(ParseConfig(R"({"limits": {"max_waiters": 40}, "budget": {"max_queue": 10}})", &small).ok());
  EXPECT_EQ(small.cache.max_waiters_per_caller, 16u) << "at least 16";
  EXPECT_EQ(small.budget.max_queue_per_caller, 4u) << "16/40 of 10, rounded up";
  Config tiny;
  ASSERT_TRUE(ParseConfig(R"({"limits": {"max_waiters": 5}})", &tiny).ok());
  EXPECT_EQ(tiny.cache.max_waiters_per_caller, 5u) << "never above max_waiters";
  EXPECT_EQ(tiny.budget.max_queue_per_caller, 1024u) << "the whole queue: no share";

  Config given;
  ASSERT_TRUE(ParseConfig(R"({"limits": {"max_waiters": 1000, "max_waiters_per_caller": 100},
                              "budget": {"max_queue": 50}})", &given).ok());
  EXPECT_EQ(given.cache.max_waiters_per_caller, 100u);
  EXPECT_EQ(given.budget.max_queue_per_caller, 5u);
  Config one;
  ASSERT_TRUE(ParseConfig(R"({"limits": {"max_waiters_per_caller": 1}})", &one).ok());
  EXPECT_EQ(one.budget.max_queue_per_caller, 1u) << "at least one place";

  Config bad;
  Status s = ParseConfig(R"({"limits": {"max_waiters_per_caller": 0}})", &bad);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("limits.max_waiters_per_caller"), std::string::npos) << s.message();
}

TEST(ConfigTest, PrefetchEntriesFollowTheSelectorRule) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prefetch": [{"client_id": "0d1e2f30-aaaa-4bbb-8ccc-123456789abc"}]})", "prefetch[0].resource: required"},
      {R"({"prefetch": [{"resource": "r", "mi_res_id": "/subscriptions/s/resourceGroups/g/providers/p/t/n",
                         "msi_res_id": "/subscriptions/s/resourceGroups/g/providers/p/t/n"}]})",
       "prefetch[0]: give mi_res_id or msi_res_id, not both"},
      // The conflict between the two resource-id names is reported before a missing resource...
      {R"({"prefetch": [{"mi_res_id": "/a", "msi_res_id": "/b"}]})", "prefetch[0]: give mi_res_id or msi_res_id, not both"},
      // ... and a missing resource before two selectors (the wording of earlier releases).
      {R"({"prefetch": [{"client_id": "0d1e2f30-aaaa-4bbb-8ccc-123456789abc", "object_id": "x"}]})",
       "prefetch[0].resource: required"},
      {R"({"prefetch": [{"resource": "r"}, {"resource": "r", "client_id": "0d1e2f30-aaaa-4bbb-8ccc-123456789abc",
                         "object_id": "0d1e2f30-aaaa-4bbb-8ccc-123456789abc"}]})",
       "prefetch[1]: at most one of client_id, object_id, mi_res_id"},
      {R"({"prefetch": [{"resource": "r", "mi_res_id": "/x"}]})", "prefetch[0]: mi_res_id is not an Azure resource id"},
  };
  for (const auto& [text, expected] : cases) {
    Config c;
    Status s = Parse(text, &c);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.message(), expected) << text;
  }
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
      {R"({"budget": {"max_background_queue": 0}})", "budget.max_background_queue: expected an integer"},
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

TEST(ConfigTest, InvalidUtf8IsRefusedAtLoadWithAClearMessage) {
  Config c;
  Status s = Parse("{\"imds\": {\"endpoint\": \"http://x/\xff\"}}", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("UTF-8"), std::string::npos) << s.message();
  EXPECT_EQ(c.imds.endpoint, Config().imds.endpoint);
}

TEST(ConfigTest, CommandLineStringsMustBeUtf8) {
  // These used to be accepted and abort the daemon later (type_error.316 while
  // the config digest was serialised).
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--imds-endpoint", "http://x/\xff"},
           {"--listen", "127.0.0.\xc3"},
           {"--log-level", "\xed\xa0\x80"}}) {
    Config c;
    const std::string error = ApplyOverrides(args, &c).message();
    EXPECT_NE(error.find(args[0] + ": the value is not valid UTF-8"), std::string::npos) << error;
    EXPECT_EQ(c.imds.endpoint, Config().imds.endpoint);
    EXPECT_EQ(c.listen, Config().listen);
  }
  Config c;
  EXPECT_TRUE(ApplyOverrides({"--imds-endpoint", "http://127.0.0.1:9/caf\xc3\xa9"}, &c).ok());
}

TEST(ConfigTest, AllowedHostsDefaultsToNone) {
  Config c;
  ASSERT_TRUE(Parse("{}", &c).ok());
  EXPECT_TRUE(c.api.allowed_hosts.empty());
}

TEST(ConfigTest, AllowedHostsTakesNamesAndAddresses) {
  Config c;
  Status s = Parse(R"({"allowed_hosts": ["myvm.internal", "MyVM", "10.0.0.4", "[fd00::4]", "[::1]", "a-b.c-d.e",
                                         "x1"]})",
                   &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.api.allowed_hosts, (std::vector<std::string>{"myvm.internal", "MyVM", "10.0.0.4", "[fd00::4]", "[::1]",
                                                       "a-b.c-d.e", "x1"}));
}

TEST(ConfigTest, AllowedHostsEntriesAreValidated) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"allowed_hosts": "myvm"})", "allowed_hosts: expected an array"},
      {R"({"allowed_hosts": [""]})", "allowed_hosts[0]: expected a host name or IP address"},
      {R"({"allowed_hosts": ["ok", 7]})", "allowed_hosts[1]: expected a host name or IP address"},
      {R"({"allowed_hosts": ["my vm"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": [" myvm"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["myvm\t"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["my\u0000vm"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["myvm:50342"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["fd00::4"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["[fd00::4]:80"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["[not-ipv6]"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["[fe80::1%eth0]"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["*"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["*.example"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["user@myvm"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["myvm."]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": [".myvm"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["a..b"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["-myvm"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["myvm-"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["my_vm"]})", "allowed_hosts[0]:"},
      {R"({"allowed_hosts": ["http://myvm"]})", "allowed_hosts[0]:"},
  };
  for (const auto& [text, expected] : cases) {
    Config c;
    c.api.allowed_hosts = {"kept"};
    Status s = Parse(text, &c);
    EXPECT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.message().rfind(expected, 0), 0u) << text << " -> " << s.message();
    EXPECT_EQ(c.api.allowed_hosts, std::vector<std::string>{"kept"}) << text;
  }
  Config c;
  EXPECT_FALSE(Parse(R"({"allowed_hosts": [")" + std::string(64, 'a') + R"("]})", &c).ok()) << "label > 63";
  EXPECT_FALSE(Parse(R"({"allowed_hosts": [")" + std::string(254, 'a') + R"("]})", &c).ok());
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

// "unix_socket": off by default; an absolute path that fits sockaddr_un.
TEST(ConfigTest, UnixSocketIsAnAbsolutePathOfBoundedLength) {
  Config c;
  ASSERT_TRUE(Parse("{}", &c).ok());
  EXPECT_EQ(c.unix_socket, "");
  ASSERT_TRUE(Parse(R"({"unix_socket": ""})", &c).ok()) << "\"\" is off";
  EXPECT_EQ(c.unix_socket, "");
#ifdef _WIN32
  Status s = Parse(R"({"unix_socket": "/run/mi-agent/token.sock"})", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "unix_socket: not supported on Windows");
#else
  ASSERT_TRUE(Parse(R"({"unix_socket": "/run/mi-agent/token.sock"})", &c).ok());
  EXPECT_EQ(c.unix_socket, "/run/mi-agent/token.sock");
  // With a Unix socket, no TCP listener is needed.
  Config only;
  ASSERT_TRUE(Parse(R"({"listen": [], "unix_socket": "/run/t.sock"})", &only).ok());
  EXPECT_TRUE(only.listen.empty());
  const std::string longest = "/" + std::string(106, 'a');
  ASSERT_TRUE(Parse(R"({"unix_socket": ")" + longest + R"("})", &c).ok());
  EXPECT_EQ(c.unix_socket, longest);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"unix_socket": "run/token.sock"})", "unix_socket: expected an absolute path"},
      {R"({"unix_socket": "/run/mi-agent/"})", "unix_socket: expected an absolute path"},
      {R"({"unix_socket": "/run/a\u0000b"})", "unix_socket: expected an absolute path"},
      {R"({"unix_socket": 1})", "unix_socket: expected a path"},
      {R"({"unix_socket": ")" + longest + R"(b"})", "unix_socket: longer than 107 bytes"},
  };
  for (const auto& [text, expected] : bad) {
    Config kept;
    kept.unix_socket = "/kept";
    Status s = Parse(text, &kept);
    EXPECT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.message().rfind(expected, 0), 0u) << text << " -> " << s.message();
    EXPECT_EQ(kept.unix_socket, "/kept");
  }
#endif
}

}  // namespace
}  // namespace mi

namespace mi {
namespace {

TEST(ConfigAuditTest, DefaultsOffAndTheBlockParses) {
  Config c;
  ASSERT_TRUE(ParseConfig("{}", &c).ok());
  EXPECT_FALSE(c.audit.enabled);
  EXPECT_EQ(c.audit.summarize, Duration(60000));
#ifdef _WIN32
  const std::string path = R"(C:\\ProgramData\\mi-agent\\audit.log)";  // JSON-escaped
  const std::string parsed = R"(C:\ProgramData\mi-agent\audit.log)";
#else
  const std::string path = "/var/log/mi-agent/audit.log";
  const std::string parsed = path;
#endif
  ASSERT_TRUE(ParseConfig(R"({"audit": {"enabled": true, "sink": "file", "path": ")" + path +
                              R"(", "summarize_seconds": 5, "max_file_bytes": 1048576}})",
                          &c)
                  .ok());
  EXPECT_TRUE(c.audit.enabled);
  EXPECT_EQ(c.audit.sink, AuditTrail::SinkKind::kFile);
  EXPECT_EQ(c.audit.path, parsed);
  EXPECT_EQ(c.audit.summarize, Duration(5000));
  EXPECT_EQ(c.audit.max_file_bytes, 1048576);
  ASSERT_TRUE(ParseConfig(R"({"audit": {"enabled": true, "sink": "stderr", "summarize_seconds": 0}})", &c).ok());
  EXPECT_EQ(c.audit.sink, AuditTrail::SinkKind::kStderr);
  EXPECT_EQ(c.audit.summarize, Duration(0));
}

TEST(ConfigAuditTest, ErrorsNameTheKey) {
  auto error = [](const std::string& text) {
    Config c;
    Status s = ParseConfig(text, &c);
    return s.ok() ? std::string() : s.message();
  };
  EXPECT_EQ(error(R"({"audit": {"sink": "syslog"}})"), "audit.sink: expected journal, file or stderr");
  EXPECT_EQ(error(R"({"audit": {"enabled": true, "sink": "file"}})"), "audit.path: required for the file sink");
  EXPECT_EQ(error(R"({"audit": {"sink": "file", "path": "audit.log"}})"), "audit.path: expected an absolute path");
  EXPECT_EQ(error(R"({"audit": {"verbose": true}})"), "audit.verbose: unknown key");
  EXPECT_EQ(error(R"({"audit": {"max_file_bytes": 10}})").rfind("audit.max_file_bytes: expected an integer", 0), 0u);
#ifdef _WIN32
  EXPECT_EQ(error(R"({"audit": {"sink": "journal"}})"), "audit.sink: journal is not available on Windows; use file");
#else
  EXPECT_EQ(error(R"({"audit": {"sink": "journal"}})"), "");
#endif
}

}  // namespace
}  // namespace mi
