#include "agent/app/doctor.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace mi {
namespace doctor {
namespace {

TEST(DoctorParsers, ListenStreamPorts) {
  const std::string unit =
      "[Unit]\nDescription=x\nListenStream=1\n"
      "[Socket]\n# ListenStream=9\nListenStream=127.0.0.1:50342\nListenStream = [::1]:50342\n"
      "ListenStream=/run/mi-agent/token.sock\nListenStream=8080\nListenStream=@abstract\n"
      "ListenStreamX=7\nListenStream=host:99999\n[Install]\nListenStream=2\n";
  EXPECT_EQ(ListenStreamPorts(unit), (std::vector<uint16_t>{50342, 50342, 8080}));
  EXPECT_TRUE(ListenStreamPorts("").empty());
  // A drop-in's "ListenStream=" clears what came before.
  EXPECT_EQ(ListenStreamPorts("[Socket]\nListenStream=50342\n[Socket]\nListenStream=\nListenStream=8000\n"),
            (std::vector<uint16_t>{8000}));
}

TEST(DoctorParsers, DiscoveryPort) {
  uint16_t port = 0;
  EXPECT_TRUE(DiscoveryPort("{\"url\":\"http://localhost:50342/oauth2/token\"}", &port));
  EXPECT_EQ(port, 50342);
  for (const char* bad : {"", "{}", "[1]", "{\"url\":5}", "{\"url\":\"http://localhost:/oauth2/token\"}",
                          "{\"url\":\"http://localhost:70000/oauth2/token\"}",
                          "{\"url\":\"http://example.com:80/oauth2/token\"}",
                          "{\"url\":\"http://localhost:12a/oauth2/token\"}"}) {
    EXPECT_FALSE(DiscoveryPort(bad, &port)) << bad;
  }
}

TEST(DoctorParsers, HttpDate) {
  int64_t epoch = 0;
  ASSERT_TRUE(ParseHttpDate("Thu, 01 Jan 1970 00:00:00 GMT", &epoch));
  EXPECT_EQ(epoch, 0);
  ASSERT_TRUE(ParseHttpDate("Tue, 01 Dec 2026 19:49:13 GMT", &epoch));
  EXPECT_EQ(epoch, 1796154553);  // the agent's /status start_time_epoch for that time
  ASSERT_TRUE(ParseHttpDate("Tue, 29 Feb 2028 12:00:00 GMT", &epoch));
  EXPECT_EQ(epoch, 1835438400);
  for (const char* bad : {"", "yesterday", "Tue, 01 Foo 2026 19:49:13 GMT", "Tue, 01 Dec 2026 19:49:13 CET",
                          "Tue, 01 Dec 2026 25:49:13 GMT", "Tue 01 Dec 2026 19:49:13 GMT"}) {
    EXPECT_FALSE(ParseHttpDate(bad, &epoch)) << bad;
  }
}

TEST(DoctorChecks, ClockThresholds) {
  EXPECT_EQ(ClockCheck(0).verdict, Verdict::kOk);
  EXPECT_EQ(ClockCheck(-60).verdict, Verdict::kOk);
  EXPECT_EQ(ClockCheck(61).verdict, Verdict::kWarn);
  EXPECT_EQ(ClockCheck(-300).verdict, Verdict::kWarn);
  EXPECT_EQ(ClockCheck(301).verdict, Verdict::kFail);
  EXPECT_NE(ClockCheck(-400).found.find("400 s behind"), std::string::npos);
}

TEST(DoctorChecks, Proxy) {
  auto run = [](std::map<std::string, std::string> vars) {
    return ProxyCheck([&vars](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    });
  };
  EXPECT_EQ(run({}).verdict, Verdict::kOk);
  EXPECT_EQ(run({{"http_proxy", ""}}).verdict, Verdict::kOk);
  const Check warn = run({{"https_proxy", "http://p:3128"}, {"no_proxy", "localhost,169.254.169.2540"}});
  EXPECT_EQ(warn.verdict, Verdict::kWarn);
  EXPECT_NE(warn.found.find("https_proxy"), std::string::npos);
  EXPECT_FALSE(warn.todo.empty());
  EXPECT_EQ(run({{"HTTP_PROXY", "http://p"}, {"NO_PROXY", "localhost, 169.254.169.254"}}).verdict, Verdict::kOk);
  EXPECT_EQ(run({{"HTTP_PROXY", "http://p"}, {"no_proxy", "*"}}).verdict, Verdict::kOk);
}

TEST(DoctorChecks, FormatCheck) {
  EXPECT_EQ(FormatCheck({Verdict::kOk, "config", "valid", ""}), "ok   config: valid");
  EXPECT_EQ(FormatCheck({Verdict::kFail, "imds", "down", "fix it"}), "fail imds: down -> fix it");
  EXPECT_EQ(FormatCheck({Verdict::kSkip, "socket", "none", ""}), "skip socket: none");
}

TEST(DoctorChecks, ScrubJwts) {
  EXPECT_EQ(ScrubJwts("a eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln b"), "a [redacted] b");
  EXPECT_EQ(ScrubJwts("eyJ short eyJ"), "eyJ short eyJ");  // too short to be a token
  EXPECT_EQ(ScrubJwts("x=eyJ0123456789abcdef\neyJ0123456789abcdef"), "x=[redacted]\n[redacted]");
}

TEST(DoctorChecks, RedactSecrets) {
  auto doc = nlohmann::ordered_json::parse(
      R"({"dialects":{"app_service":{"enabled":true,"secret_file":"/etc/x","Client_Secret":"s3"}},"a":[{"secret":1}],"port":1})");
  RedactSecrets(&doc);
  EXPECT_EQ(doc["dialects"]["app_service"]["secret_file"], "[redacted]");
  EXPECT_EQ(doc["dialects"]["app_service"]["Client_Secret"], "[redacted]");
  EXPECT_EQ(doc["dialects"]["app_service"]["enabled"], true);
  EXPECT_EQ(doc["a"][0]["secret"], "[redacted]");
  EXPECT_EQ(doc["port"], 1);
}

}  // namespace
}  // namespace doctor
}  // namespace mi
