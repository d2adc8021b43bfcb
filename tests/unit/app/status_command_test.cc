#include "agent/app/status_command.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace mi {
namespace {

using ojson = nlohmann::ordered_json;

const std::string kLongId =
    "/subscriptions/3f2b6c1e-8d4a-4e2b-9c7d-5a1e0f9b2c84/resourceGroups/"
    "rg-production-westeurope-platform-shared-services-01/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/id-payments-api-worker-westeurope-prod-000001-ab";

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

ojson Resource(const std::string& resource, const std::string& state, int64_t expires_in) {
  return {{"resource", resource}, {"state", state}, {"expires_in_seconds", expires_in},
          {"last_error", nullptr}, {"consecutive_failures", 0}};
}

ojson Doc() {
  ojson failing = Resource("https://vault.azure.net", "failing", -1);
  failing["expires_in_seconds"] = nullptr;
  failing["consecutive_failures"] = 3;
  failing["last_error"] = {{"status", 400}, {"error", "invalid_request"}};
  return {{"version", "1.2.3"},
          {"uptime_seconds", 3725},
          {"config_digest", "f95e2c8277d0aec6"},
          {"ready", true},
          {"upstream", {{"state", "ok"}, {"latency_ms", {{"p50", 2.0}, {"p99", 9.0}, {"samples", 4}}}}},
          {"identities",
           {{{"identity", "default"}, {"resources", {Resource("https://management.azure.com/", "ok", 86000)}}},
            {{"identity", "mi_res_id=" + kLongId},
             {"resources", {Resource("https://management.azure.com/", "ok", 300), failing}}}}}};
}

TEST(ShortenMiddle, KeepsHeadAndTailInWidth) {
  EXPECT_EQ(ShortenMiddle("short", 10), "short");
  const std::string s = ShortenMiddle(kLongId, 48);
  EXPECT_EQ(Columns(s), 48u);
  EXPECT_EQ(s.rfind("/subscriptions/3f2", 0), 0u) << s;
  EXPECT_NE(s.find("\xE2\x80\xA6"), std::string::npos);
  EXPECT_EQ(s.substr(s.size() - 9), "000001-ab") << s;
  EXPECT_EQ(Columns(ShortenMiddle("h\xC3\xA9llo w\xC3\xB6rld", 5)), 5u);  // code points, never split
  EXPECT_EQ(ShortenMiddle("abcdef", 1), "\xE2\x80\xA6");
}

TEST(FormatStatus, EveryLineFitsTheWidth) {
  for (size_t width : {40u, 60u, 80u, 132u}) {
    for (const std::string& line : Lines(FormatStatus(Doc(), width, false))) {
      EXPECT_LE(Columns(line), width) << width << ": " << line;
    }
  }
}

TEST(FormatStatus, GroupsByIdentityWithHeader) {
  const auto lines = Lines(FormatStatus(Doc(), 80, false));
  ASSERT_EQ(lines.size(), 9u);
  EXPECT_EQ(lines[0], "mi-agent 1.2.3, ready, up 1h02m");
  EXPECT_EQ(lines[1], "IMDS ok, latency p50 2 ms p99 9 ms");
  EXPECT_EQ(lines[2], "config f95e2c8277d0aec6, last reload -");
  EXPECT_EQ(lines[3].rfind("IDENTITY / RESOURCE", 0), 0u);
  EXPECT_EQ(lines[4], "default");
  EXPECT_EQ(lines[5].rfind("  https://management.azure.com/  ok", 0), 0u) << lines[5];
  EXPECT_EQ(lines[6].rfind("mi_res_id=/subscriptions/", 0), 0u);
  EXPECT_EQ(Columns(lines[6]), 80u);
  EXPECT_NE(lines[8].find("failing"), std::string::npos);
  EXPECT_NE(lines[8].find("  400 invalid_request (3x)"), std::string::npos) << lines[8];
}

TEST(FormatStatus, WideShowsEverything) {
  const std::string out = FormatStatus(Doc(), 80, true);
  EXPECT_NE(out.find("mi_res_id=" + kLongId + "\n"), std::string::npos);
  EXPECT_EQ(out.find("\xE2\x80\xA6"), std::string::npos);
}

TEST(FormatStatus, NotReadyAndReload) {
  ojson doc = Doc();
  doc["ready"] = false;
  doc["not_ready_reason"] = "the first prefetch round has not finished";
  doc["reload"] = {{"result", "failed"}, {"time", "2026-12-01T19:00:00Z"}, {"error", "port: bad"}};
  const auto lines = Lines(FormatStatus(doc, 200, false));
  EXPECT_EQ(lines[0], "mi-agent 1.2.3, NOT READY (the first prefetch round has not finished), up 1h02m");
  EXPECT_EQ(lines[2], "config f95e2c8277d0aec6, last reload failed at 2026-12-01T19:00:00Z: port: bad");
  doc["reload"] = {{"result", "none"}, {"time", nullptr}, {"error", nullptr}};
  EXPECT_EQ(Lines(FormatStatus(doc, 80, false))[2], "config f95e2c8277d0aec6, last reload none");
}

TEST(FormatStatus, HostileDocumentDoesNotThrow) {
  for (const char* text : {"{}", "{\"identities\":5}", "{\"identities\":[1,{\"resources\":{}}]}",
                           "{\"upstream\":[],\"reload\":\"x\",\"ready\":\"yes\"}"}) {
    EXPECT_NO_THROW(FormatStatus(ojson::parse(text), 80, false)) << text;
    EXPECT_NO_THROW(StatusHealthy(ojson::parse(text))) << text;
  }
  EXPECT_EQ(Lines(FormatStatus(ojson::parse("{}"), 80, false)).back(), "no identities in the cache yet");
}

TEST(StatusHealthy, FailingKeyIsUnhealthy) {
  EXPECT_FALSE(StatusHealthy(Doc()));
  ojson doc = Doc();
  doc["identities"][1]["resources"].erase(1);
  EXPECT_TRUE(StatusHealthy(doc));
}

}  // namespace
}  // namespace mi
