#include "tests/emulator/cli.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace mi::emulator {
namespace {

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "emulator_cli_test_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(EmulatorCliTest, Defaults) {
  CliOptions o;
  ASSERT_TRUE(ParseArgs({}, &o).ok());
  EXPECT_EQ(o.host, "127.0.0.1");
  EXPECT_EQ(o.port, 0);
  EXPECT_TRUE(o.emulator.identities.system_assigned);
  EXPECT_TRUE(o.emulator.identities.user_assigned.empty());
  EXPECT_EQ(o.emulator.lifetime, std::chrono::seconds(86400));
  EXPECT_EQ(o.emulator.reissue_before, std::chrono::seconds(300));
  EXPECT_EQ(o.emulator.throttle_rps, 0u);
  EXPECT_EQ(o.emulator.delay, Duration(0));
  EXPECT_FALSE(o.emulator.log_requests);
}

TEST(EmulatorCliTest, ArcTokenDir) {
  CliOptions o;
  ASSERT_TRUE(ParseArgs({}, &o).ok());
  EXPECT_EQ(o.emulator.arc_token_dir, "");
  ASSERT_TRUE(ParseArgs({"--arc-token-dir", "/tmp/tokens"}, &o).ok());
  EXPECT_EQ(o.emulator.arc_token_dir, "/tmp/tokens");
  EXPECT_EQ(o.emulator.arc_realm, "normal");
  CliOptions bad;
  EXPECT_FALSE(ParseArgs({"--arc-token-dir"}, &bad).ok());
}

TEST(EmulatorCliTest, AllFlags) {
  CliOptions o;
  Status s = ParseArgs({"--host", "::1", "--port=50999", "--port-file", "/tmp/p", "--no-system-assigned",
                        "--user-assigned", "aaaa", "--user-assigned", "bbbb,obj-b,/sub/x/ua-b", "--tenant-id", "t1",
                        "--lifetime", "3600", "--reissue-before=60", "--token-bytes", "2000", "--throttle-rps", "20",
                        "--delay-ms", "15", "--reject-resource", "https://bad/", "--log-requests", "--log-level",
                        "debug"},
                       &o);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(o.host, "::1");
  EXPECT_EQ(o.port, 50999);
  EXPECT_EQ(o.port_file, "/tmp/p");
  EXPECT_FALSE(o.emulator.identities.system_assigned);
  ASSERT_EQ(o.emulator.identities.user_assigned.size(), 2u);
  EXPECT_EQ(o.emulator.identities.user_assigned[0].client_id, "aaaa");
  EXPECT_FALSE(o.emulator.identities.user_assigned[0].object_id.empty());
  EXPECT_EQ(o.emulator.identities.user_assigned[1].object_id, "obj-b");
  EXPECT_EQ(o.emulator.identities.user_assigned[1].mi_res_id, "/sub/x/ua-b");
  EXPECT_EQ(o.emulator.tenant_id, "t1");
  EXPECT_EQ(o.emulator.lifetime, std::chrono::seconds(3600));
  EXPECT_EQ(o.emulator.reissue_before, std::chrono::seconds(60));
  EXPECT_EQ(o.emulator.token_bytes, 2000u);
  EXPECT_EQ(o.emulator.throttle_rps, 20u);
  EXPECT_EQ(o.emulator.delay, Duration(15));
  ASSERT_EQ(o.emulator.reject_resources.size(), 1u);
  EXPECT_TRUE(o.emulator.log_requests);
  EXPECT_EQ(o.log_level, LogLevel::kDebug);
}

TEST(EmulatorCliTest, IdentitiesAndFaultsFiles) {
  std::string ids = WriteTemp("ids.json", R"({"system_assigned":false,"user_assigned":[{"client_id":"c1"}]})");
  std::string faults = WriteTemp("faults.json", R"({"steps":[{"status":500,"count":2}],"mode":null})");
  CliOptions o;
  Status s = ParseArgs({"--identities", ids, "--system-assigned", "--user-assigned", "c2", "--faults", faults}, &o);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(o.emulator.identities.system_assigned);  // the flag applies on top of the file
  ASSERT_EQ(o.emulator.identities.user_assigned.size(), 2u);
  EXPECT_EQ(o.emulator.identities.user_assigned[0].client_id, "c1");
  EXPECT_EQ(o.emulator.identities.user_assigned[1].client_id, "c2");
  ASSERT_EQ(o.faults.steps.size(), 1u);
  EXPECT_EQ(o.faults.steps[0].count, 2);
  std::remove(ids.c_str());
  std::remove(faults.c_str());
}

TEST(EmulatorCliTest, Errors) {
  CliOptions o;
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--port", "70000"}, {"--port"}, {"--lifetime", "0"}, {"--delay-ms", "-1"},
        {"--throttle-rps", "x"}, {"--user-assigned", ",obj"}, {"--user-assigned", "a", "--user-assigned", "A"},
        {"--identities", "/nonexistent/ids.json"}, {"--log-requests=yes"}, {"--frobnicate"},
        {"--log-level", "loud"}}) {
    EXPECT_FALSE(ParseArgs(args, &o).ok()) << args[0];
  }
  std::string bad = WriteTemp("bad_faults.json", R"({"steps":[{"hang":true,"reset":true}]})");
  Status s = ParseArgs({"--faults", bad}, &o);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("at most one action"), std::string::npos) << s.message();
  std::remove(bad.c_str());
}

}  // namespace
}  // namespace mi::emulator
