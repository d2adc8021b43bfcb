#include "tests/emulator/emulator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/base/ascii.h"
#include "agent/identity_echo.h"
#include "tests/fakes/fake_time.h"
#include "tests/fakes/recording_sink.h"

namespace mi::emulator {
namespace {

using json = nlohmann::json;

constexpr char kSystemClientId[] = "9b7c3f5e-2d1a-4e8b-b6f0-3a5c7d9e1f20";
constexpr char kTokenTarget[] =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F";
constexpr char kArm[] = "https://management.azure.com/";

using Record = testing::RecordingSink;

class EmulatorTest : public ::testing::Test {
 protected:
  void Make(EmulatorOptions options = EmulatorOptions()) {
    emulator_ = std::make_unique<Emulator>(time_, time_, Logger::Discard(), std::move(options));
  }

  std::shared_ptr<Record> Request(const std::string& method, const std::string& target,
                                  std::vector<std::pair<std::string, std::string>> headers,
                                  const std::string& body = "") {
    if (!emulator_) Make();
    proxy::HttpRequest request;
    request.method = method;
    request.target = target;
    request.headers = std::move(headers);
    request.body = body;
    request.peer = "127.0.0.1:40000";
    request.peer_is_loopback = true;
    auto record = std::make_shared<Record>();
    emulator_->OnRequest(request, proxy::Responder(record));
    return record;
  }

  std::shared_ptr<Record> Get(const std::string& target = kTokenTarget) {
    return Request("GET", target, {{"metadata", "true"}});
  }

  std::shared_ptr<Record> GetFor(const std::string& extra) { return Get(std::string(kTokenTarget) + "&" + extra); }

  json Admin(const std::string& method, const std::string& path, const std::string& body = "") {
    auto r = Request(method, path, {}, body);
    EXPECT_TRUE(r->answered());
    if (!r->answered()) return json();
    EXPECT_EQ(r->status(), 200) << method << " " << path << " " << r->body();
    return r->Json();
  }

  static std::string Description(const Record& r) { return r.Json().value("error_description", ""); }
  static std::string Error(const Record& r) { return r.Json().value("error", ""); }

  FakeTime time_{FromEpochSeconds(1700000000)};
  std::unique_ptr<Emulator> emulator_;
};

EmulatorOptions WithIdentities(const std::string& identities_json) {
  EmulatorOptions o;
  Status s = ParseIdentities(identities_json, &o.identities);
  EXPECT_TRUE(s.ok()) << s.message();
  return o;
}

TEST_F(EmulatorTest, DefaultIsSystemAssignedWithImdsBody) {
  auto r = Get();
  ASSERT_EQ(r->status(), 200) << r->body();
  EXPECT_EQ(r->sent[0].content_type, "application/json");
  json j = r->Json();
  ASSERT_TRUE(j.is_object());
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) {
    keys.push_back(it.key());
    EXPECT_TRUE(it->is_string()) << it.key();
  }
  // IMDS order (the raw body, not the parsed map).
  std::vector<std::string> order = {"access_token", "client_id", "expires_in", "expires_on",
                                    "ext_expires_in", "not_before", "resource", "token_type"};
  size_t last = 0;
  for (const std::string& k : order) {
    size_t at = r->body().find("\"" + k + "\":");
    ASSERT_NE(at, std::string::npos) << k;
    EXPECT_GE(at, last) << k;
    last = at;
  }
  EXPECT_EQ(keys.size(), order.size());
  EXPECT_EQ(j["client_id"], kSystemClientId);
  EXPECT_EQ(j["resource"], kArm);
  EXPECT_EQ(j["token_type"], "Bearer");
  EXPECT_EQ(j["expires_in"], "86400");
  EXPECT_EQ(j["ext_expires_in"], "86400");
  EXPECT_EQ(j["expires_on"], std::to_string(1700000000 + 86400));
}

TEST_F(EmulatorTest, TrailingSlashServedOtherPathsNot) {
  auto slash = Get("/metadata/identity/oauth2/token/?api-version=2018-02-01&resource=x");
  EXPECT_EQ(slash->status(), 200);
  EXPECT_EQ(Get("/metadata/identity/oauth2/tokens?api-version=2018-02-01&resource=x")->status(), 404);
  EXPECT_EQ(Get("/oauth2/token?resource=x")->status(), 404);
  auto post = Request("POST", kTokenTarget, {{"metadata", "true"}});
  EXPECT_EQ(post->status(), 405);
  EXPECT_EQ(post->Header("Allow"), "GET");
}

TEST_F(EmulatorTest, ValidationErrorsLikeImds) {
  auto no_header = Request("GET", kTokenTarget, {});
  EXPECT_EQ(no_header->status(), 400);
  EXPECT_EQ(Error(*no_header), "invalid_request");
  EXPECT_EQ(Description(*no_header), "Required metadata header not specified");
  EXPECT_EQ(Request("GET", kTokenTarget, {{"metadata", "false"}})->status(), 400);

  auto no_version = Get("/metadata/identity/oauth2/token?resource=x");
  EXPECT_EQ(no_version->status(), 400);
  EXPECT_EQ(Error(*no_version), "Bad request");
  EXPECT_EQ(Description(*no_version), "Required query variable 'api-version' is missing");

  auto no_resource = Get("/metadata/identity/oauth2/token?api-version=2018-02-01");
  EXPECT_EQ(no_resource->status(), 400);
  EXPECT_EQ(Error(*no_resource), "invalid_request");
  EXPECT_EQ(Description(*no_resource), "Required audience parameter not specified");

  auto two = GetFor("client_id=a&object_id=b");
  EXPECT_EQ(two->status(), 400);
  EXPECT_EQ(Error(*two), "invalid_request");

  // An empty selector is "not given".
  EXPECT_EQ(GetFor("client_id=")->status(), 200);
}

TEST_F(EmulatorTest, DefaultIdentityRules) {
  Make(WithIdentities(R"({"system_assigned":false,"user_assigned":[{"client_id":"ua-1"}]})"));
  auto only = Get();
  ASSERT_EQ(only->status(), 200);
  EXPECT_EQ(only->Json()["client_id"], "ua-1");

  Make(WithIdentities(
      R"({"system_assigned":false,"user_assigned":[{"client_id":"ua-1"},{"client_id":"ua-2"}]})"));
  auto many = Get();
  EXPECT_EQ(many->status(), 400);
  EXPECT_EQ(Description(*many),
            "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in "
            "the token request");
  EXPECT_EQ(GetFor("client_id=ua-2")->Json()["client_id"], "ua-2");

  Make(WithIdentities(R"({"system_assigned":false})"));
  auto none = Get();
  EXPECT_EQ(none->status(), 400);
  EXPECT_EQ(Description(*none), "Identity not found");

  // System-assigned wins over user-assigned ones.
  Make(WithIdentities(R"({"user_assigned":[{"client_id":"ua-1"},{"client_id":"ua-2"}]})"));
  EXPECT_EQ(Get()->Json()["client_id"], kSystemClientId);
}

TEST_F(EmulatorTest, SelectorsCompareCaseInsensitively) {
  Make(WithIdentities(R"({"user_assigned":[{"client_id":"AbCd-0001","object_id":"0B1E-77",
      "mi_res_id":"/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/one"}]})"));
  for (std::string sel : {"client_id=abcd-0001", "client_id=ABCD-0001", "object_id=0b1e-77",
                          "mi_res_id=%2Fsubscriptions%2FS%2Fresourcegroups%2Fg%2Fproviders%2Fmicrosoft.managedidentity%"
                          "2FuserAssignedIdentities%2Fone",
                          "msi_res_id=/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/"
                          "userAssignedIdentities/ONE"}) {
    auto r = GetFor(sel);
    ASSERT_EQ(r->status(), 200) << sel << " " << r->body();
    EXPECT_EQ(r->Json()["client_id"], "AbCd-0001") << sel;
  }
  auto unknown = GetFor("client_id=nobody");
  EXPECT_EQ(unknown->status(), 400);
  EXPECT_EQ(Error(*unknown), "invalid_request");
  EXPECT_EQ(Description(*unknown), "Identity not found");
  // Selecting one identity by two names is one token.
  EXPECT_EQ(GetFor("client_id=abcd-0001")->Json()["access_token"],
            GetFor("object_id=0B1E-77")->Json()["access_token"]);
}

TEST_F(EmulatorTest, RejectedResource) {
  EmulatorOptions o;
  o.reject_resources = {"https://nope.example/"};
  Make(o);
  auto r = Get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://nope.example/");
  EXPECT_EQ(r->status(), 400);
  EXPECT_EQ(Error(*r), "invalid_resource");
  EXPECT_EQ(Description(*r),
            "AADSTS500011: The resource principal named https://nope.example/ was not found in the tenant");
  EXPECT_EQ(Get()->status(), 200);
}

TEST_F(EmulatorTest, ResourceThatDecodesToInvalidUtf8IsA400NotAnAbort) {
  // %FF decodes to a lone 0xFF byte: IMDS refuses it, and so must the emulator
  // (it used to throw type_error.316 while serialising the answer and abort).
  auto r = Get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fx%2F%FF");
  ASSERT_EQ(r->status(), 400) << r->body();
  EXPECT_EQ(Error(*r), "invalid_request");
  auto selector = GetFor("client_id=%C3%28");  // a broken two-byte sequence
  EXPECT_EQ(selector->status(), 400) << selector->body();
  // The request log still serialises (the bad byte replaced).
  json requests = Admin("GET", "/admin/requests");
  ASSERT_EQ(requests["log"].size(), 2u);
  EXPECT_EQ(requests["log"][0]["status"], 400);
  // Valid multi-byte UTF-8 is a resource like any other.
  EXPECT_EQ(Get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fx%2F%C3%A9")->status(),
            200);
}

TEST_F(EmulatorTest, InvalidUtf8FromTheCommandLineNeverAborts) {
  EmulatorOptions o;
  o.reject_resources = {"https://nope.example/\xff"};
  o.tenant_id = "tenant-\xfe";
  Make(o);
  EXPECT_EQ(Get()->status(), 200);
  EXPECT_EQ(Admin("GET", "/admin/config")["tenant_id"], "tenant-\xef\xbf\xbd");
}

TEST_F(EmulatorTest, CachesUntilReissueWindow) {
  EmulatorOptions o;
  o.lifetime = std::chrono::seconds(3600);
  o.reissue_before = std::chrono::seconds(300);
  Make(o);
  json first = Get()->Json();
  time_.Advance(std::chrono::seconds(1000));
  json second = Get()->Json();
  EXPECT_EQ(second["access_token"], first["access_token"]);
  EXPECT_EQ(second["expires_on"], first["expires_on"]);
  EXPECT_EQ(second["expires_in"], "2600");
  // Another resource or identity is another token.
  EXPECT_NE(Get("/metadata/identity/oauth2/token?api-version=1&resource=other")->Json()["access_token"],
            first["access_token"]);

  time_.Advance(std::chrono::seconds(2300));  // 300 s left: reissue
  json third = Get()->Json();
  EXPECT_NE(third["access_token"], first["access_token"]);
  EXPECT_EQ(third["expires_in"], "3600");
  EXPECT_EQ(third["expires_on"], std::to_string(1700000000 + 3300 + 3600));
}

TEST_F(EmulatorTest, ReissueBeforeIsClampedToLifetime) {
  EmulatorOptions o;
  o.lifetime = std::chrono::seconds(60);
  o.reissue_before = std::chrono::seconds(600);
  Make(o);
  std::string a = Get()->Json()["access_token"];
  time_.Advance(Duration(1));
  std::string b = Get()->Json()["access_token"];
  EXPECT_NE(a, b);
  EXPECT_EQ(Admin("GET", "/admin/tokens")["tokens"].size(), 2u);
}

TEST_F(EmulatorTest, ThrottlesOverSlidingOneSecondWindow) {
  EmulatorOptions o;
  o.throttle_rps = 3;
  Make(o);
  EXPECT_EQ(Get()->status(), 200);  // t=0
  time_.Advance(Duration(500));
  EXPECT_EQ(Get()->status(), 200);  // t=500
  EXPECT_EQ(Get()->status(), 200);  // t=500
  auto throttled = Get();
  EXPECT_EQ(throttled->status(), 429);
  EXPECT_EQ(throttled->Header("Retry-After"), "1");
  EXPECT_EQ(Error(*throttled), "too_many_requests");
  time_.Advance(Duration(500));  // t=1000: the t=0 request left the window
  EXPECT_EQ(Get()->status(), 200);
  EXPECT_EQ(Get()->status(), 429);
  time_.Advance(Duration(500));  // t=1500: both t=500 requests left
  EXPECT_EQ(Get()->status(), 200);
  EXPECT_EQ(Get()->status(), 200);
  EXPECT_EQ(Get()->status(), 429);

  json requests = Admin("GET", "/admin/requests");
  EXPECT_EQ(requests["count"], 9);
  EXPECT_EQ(requests["served"], 6);
  EXPECT_EQ(requests["throttled"], 3);
  EXPECT_EQ(requests["log"][3]["fault"], "throttle");
  EXPECT_EQ(requests["log"][3]["status"], 429);
}

TEST_F(EmulatorTest, FaultStepsConsumedInOrder) {
  Make();
  FaultScript script;
  ASSERT_TRUE(ParseFaultScript(R"({"steps":[{"status":500,"count":2},{"status":429,"retry_after":"2"},
      {"status":410},{"status":404},{"status":400,"body":{"error":"invalid_request","error_description":"x"}}]})",
                               &script)
                  .ok());
  emulator_->SetFaults(script);
  EXPECT_EQ(Get()->status(), 500);
  EXPECT_EQ(Get()->status(), 500);
  auto throttled = Get();
  EXPECT_EQ(throttled->status(), 429);
  EXPECT_EQ(throttled->Header("Retry-After"), "2");
  EXPECT_EQ(Get()->status(), 410);
  EXPECT_EQ(Get()->status(), 404);
  auto custom = Get();
  EXPECT_EQ(custom->status(), 400);
  EXPECT_EQ(Description(*custom), "x");
  EXPECT_EQ(Get()->status(), 200);
  EXPECT_EQ(Admin("GET", "/admin/faults")["steps"].size(), 0u);
}

TEST_F(EmulatorTest, StepsWithMatchOnlyTakeMatchingRequests) {
  Make(WithIdentities(R"({"user_assigned":[{"client_id":"ua-1"}]})"));
  Admin("POST", "/admin/faults",
        R"({"steps":[{"status":500,"match":{"client_id":"UA-1"}},{"status":503,"match":{"default":true}}]})");
  EXPECT_EQ(Get("/metadata/identity/oauth2/token?api-version=1&resource=r&object_id=whatever")->status(), 400);
  EXPECT_EQ(Get()->status(), 503);
  EXPECT_EQ(Get()->status(), 200);
  EXPECT_EQ(GetFor("client_id=ua-1")->status(), 500);
  EXPECT_EQ(GetFor("client_id=ua-1")->status(), 200);
}

TEST_F(EmulatorTest, DelayStepAnswersLaterAndCountsConcurrency) {
  Make();
  Admin("POST", "/admin/faults", R"({"steps":[{"delay_ms":3000,"count":3}]})");
  std::vector<std::shared_ptr<Record>> rs;
  for (int i = 0; i < 4; ++i) rs.push_back(Get());
  EXPECT_FALSE(rs[0]->answered());
  EXPECT_TRUE(rs[3]->answered());
  EXPECT_EQ(emulator_->in_flight(), 3u);
  // The fourth was in flight (briefly) alongside the three delayed ones.
  EXPECT_EQ(emulator_->max_concurrent(), 4u);
  time_.Advance(Duration(2999));
  EXPECT_FALSE(rs[2]->answered());
  time_.Advance(Duration(1));
  for (auto& r : rs) EXPECT_EQ(r->status(), 200);
  EXPECT_EQ(emulator_->in_flight(), 0u);
  json requests = Admin("GET", "/admin/requests");
  EXPECT_EQ(requests["max_concurrent"], 4);
  EXPECT_EQ(requests["log"][0]["fault"], "delay");
  EXPECT_EQ(requests["log"][0]["latency_ms"], 3000);
  EXPECT_EQ(requests["log"][0]["outcome"], "answered");
  // The answer is computed when sent: the token cached at t=0 has 3 s less.
  EXPECT_EQ(rs[0]->Json()["expires_in"], "86397");
  EXPECT_EQ(rs[3]->Json()["expires_in"], "86400");
}

TEST_F(EmulatorTest, DefaultDelayAppliesToEveryTokenAnswer) {
  EmulatorOptions o;
  o.delay = Duration(100);
  Make(o);
  std::vector<std::shared_ptr<Record>> rs;
  for (int i = 0; i < 5; ++i) rs.push_back(Get());
  EXPECT_EQ(emulator_->max_concurrent(), 5u);
  time_.Advance(Duration(100));
  for (auto& r : rs) EXPECT_EQ(r->status(), 200);
  // Admin answers are immediate.
  Admin("POST", "/admin/reset");
  EXPECT_EQ(Admin("GET", "/admin/requests")["max_concurrent"], 0);
}

TEST_F(EmulatorTest, HangHoldsUntilClientLeaves) {
  Make();
  Admin("POST", "/admin/faults", R"({"steps":[{"hang":true}]})");
  auto hung = Get();
  auto next = Get();
  EXPECT_EQ(next->status(), 200);
  time_.Advance(std::chrono::seconds(600));
  EXPECT_FALSE(hung->answered());
  EXPECT_EQ(emulator_->in_flight(), 1u);
  EXPECT_EQ(Admin("GET", "/admin/requests")["log"][0]["outcome"], "hang");
  hung->gone = true;
  time_.Advance(std::chrono::seconds(1));
  EXPECT_FALSE(hung->answered());
  EXPECT_EQ(emulator_->in_flight(), 0u);
  json log = Admin("GET", "/admin/requests")["log"];
  EXPECT_EQ(log[0]["outcome"], "client_gone");
  EXPECT_EQ(log[0]["status"], 0);
  EXPECT_EQ(log[0]["fault"], "hang");
}

TEST_F(EmulatorTest, ResetAbortsTheConnection) {
  Make();
  Admin("POST", "/admin/faults", R"({"steps":[{"reset":true}]})");
  auto r = Get();
  EXPECT_TRUE(r->aborted);
  EXPECT_FALSE(r->answered());
  EXPECT_EQ(Admin("GET", "/admin/requests")["log"][0]["outcome"], "reset");
  EXPECT_EQ(emulator_->in_flight(), 0u);
}

TEST_F(EmulatorTest, BrokenBodies) {
  Make();
  Admin("POST", "/admin/faults",
        R"({"steps":[{"malformed":true},{"oversized_bytes":200000},{"missing_expires_on":true}]})");
  auto malformed = Get();
  EXPECT_EQ(malformed->status(), 200);
  EXPECT_TRUE(malformed->Json().is_discarded());

  auto oversized = Get();
  EXPECT_EQ(oversized->status(), 200);
  EXPECT_EQ(oversized->body().size(), 200000u);
  EXPECT_EQ(oversized->Json()["token_type"], "Bearer");

  auto missing = Get();
  EXPECT_EQ(missing->status(), 200);
  EXPECT_FALSE(missing->Json().contains("expires_on"));
  EXPECT_TRUE(missing->Json().contains("expires_in"));
}

TEST_F(EmulatorTest, GoneWindowStartsAtFirstRequest) {
  Make();
  Admin("POST", "/admin/faults", R"({"mode":{"kind":"gone","duration_ms":60000}})");
  time_.Advance(std::chrono::seconds(100));  // the window has not started yet
  EXPECT_EQ(Get()->status(), 410);
  time_.Advance(Duration(59999));
  EXPECT_EQ(Get()->status(), 410);
  time_.Advance(Duration(1));
  EXPECT_EQ(Get()->status(), 200);
  EXPECT_TRUE(Admin("GET", "/admin/faults")["mode"].is_null());
}

TEST_F(EmulatorTest, FailAllUntilAndBeforeSteps) {
  Make();
  int64_t until = 1700000000LL * 1000 + 5000;
  Admin("POST", "/admin/faults",
        R"({"steps":[{"status":404}],"mode":{"kind":"fail_all","status":503,"retry_after":5,"until_ms":)" +
            std::to_string(until) + "}}");
  auto r = Get();
  EXPECT_EQ(r->status(), 503);
  EXPECT_EQ(r->Header("Retry-After"), "5");
  time_.Advance(Duration(5000));
  EXPECT_EQ(Get()->status(), 404);  // the step was kept while the mode ruled
  EXPECT_EQ(Get()->status(), 200);

  // The brief's spelling: a "mode" entry among the steps; no end: until cleared.
  Admin("POST", "/admin/faults", R"({"steps":[{"mode":"fail_all","status":500}]})");
  time_.Advance(std::chrono::hours(10));
  EXPECT_EQ(Get()->status(), 500);
  Admin("POST", "/admin/reset");
  EXPECT_EQ(Get()->status(), 200);
}

TEST_F(EmulatorTest, JwtShape) {
  Make();
  auto r = Get();
  json body = r->Json();
  std::string token = body["access_token"];
  size_t d1 = token.find('.'), d2 = token.find('.', d1 + 1);
  ASSERT_NE(d1, std::string::npos);
  ASSERT_NE(d2, std::string::npos);
  EXPECT_EQ(token.find('.', d2 + 1), std::string::npos);
  std::string header, payload, signature;
  ASSERT_TRUE(Base64UrlDecode(token.substr(0, d1), &header));
  ASSERT_TRUE(Base64UrlDecode(token.substr(d1 + 1, d2 - d1 - 1), &payload));
  ASSERT_TRUE(Base64UrlDecode(token.substr(d2 + 1), &signature));
  EXPECT_EQ(signature.size(), 256u);
  json h = json::parse(header, nullptr, false);
  EXPECT_EQ(h["typ"], "JWT");
  EXPECT_EQ(h["alg"], "RS256");
  EXPECT_TRUE(h.contains("kid"));
  json p = json::parse(payload, nullptr, false);
  ASSERT_TRUE(p.is_object());
  for (const char* claim : {"aud", "iss", "iat", "nbf", "exp", "oid", "tid", "sub", "appid", "xms_mirid", "uti"}) {
    EXPECT_TRUE(p.contains(claim)) << claim;
  }
  EXPECT_EQ(p["aud"], kArm);
  EXPECT_EQ(std::to_string(p["exp"].get<int64_t>()), body["expires_on"]);
  EXPECT_EQ(std::to_string(p["nbf"].get<int64_t>()), body["not_before"]);
  EXPECT_EQ(p["appid"], kSystemClientId);
  EXPECT_EQ(p["tid"], kDefaultTenantId);
  EXPECT_EQ(p["xms_mirid"], DefaultIdentities().system.mi_res_id);
  // ~1.4 KB, like a real IMDS answer.
  EXPECT_GE(r->body().size(), 1300u);
  EXPECT_LE(r->body().size(), 1500u);
  json log = Admin("GET", "/admin/requests")["log"];
  EXPECT_EQ(log[0]["token_id"], p["uti"]);
}

TEST_F(EmulatorTest, TokenBytesIsConfigurable) {
  EmulatorOptions o;
  o.token_bytes = 4000;
  Make(o);
  std::string token = Get()->Json()["access_token"];
  EXPECT_NEAR(static_cast<double>(token.size()), 4000.0, 4.0);
  o.token_bytes = 0;  // as small as the claims allow
  Make(o);
  std::string small = Get()->Json()["access_token"];
  EXPECT_LT(small.size(), 1200u);
}

TEST_F(EmulatorTest, EveryMintedTokenIsUnique) {
  EmulatorOptions o;
  o.reissue_before = o.lifetime;
  Make(o);
  std::set<std::string> tokens;
  for (int i = 0; i < 50; ++i) {
    time_.Advance(Duration(1000));
    tokens.insert(Get()->Json()["access_token"].get<std::string>());
  }
  EXPECT_EQ(tokens.size(), 50u);
  // Another emulator instance at the same time mints different tokens too.
  std::string a = Get()->Json()["access_token"];
  Make(o);
  EXPECT_NE(Get()->Json()["access_token"], a);
}

TEST_F(EmulatorTest, AdminRequestsLogAndReset) {
  Make(WithIdentities(R"({"user_assigned":[{"client_id":"ua-1"}]})"));
  Get();
  time_.Advance(Duration(250));
  GetFor("client_id=ua-1");
  Request("GET", kTokenTarget, {});
  json j = Admin("GET", "/admin/requests");
  EXPECT_EQ(j["count"], 3);
  ASSERT_EQ(j["log"].size(), 3u);
  EXPECT_EQ(j["log"][0]["t_ms"], 1700000000LL * 1000);
  EXPECT_EQ(j["log"][0]["resource"], kArm);
  EXPECT_EQ(j["log"][0]["selector"], "");
  EXPECT_EQ(j["log"][0]["status"], 200);
  EXPECT_EQ(j["log"][1]["selector"], "client_id=ua-1");
  EXPECT_EQ(j["log"][1]["t_ms"], 1700000000LL * 1000 + 250);
  EXPECT_EQ(j["log"][2]["status"], 400);
  EXPECT_EQ(j["log"][2]["token_id"], "");
  EXPECT_EQ(Admin("GET", "/admin/requests?limit=1")["log"].size(), 1u);

  std::string token = Get()->Json()["access_token"];
  Admin("POST", "/admin/reset");
  EXPECT_EQ(Admin("GET", "/admin/requests")["count"], 0);
  EXPECT_EQ(Get()->Json()["access_token"], token);  // cache kept
  Admin("POST", "/admin/reset", R"({"tokens":true})");
  EXPECT_EQ(Admin("GET", "/admin/tokens")["tokens"].size(), 0u);
  EXPECT_NE(Get()->Json()["access_token"], token);
}

TEST_F(EmulatorTest, AdminTokensListsEveryIssuedToken) {
  Make();
  std::string a = Get()->Json()["access_token"];
  std::string b = Get("/metadata/identity/oauth2/token?api-version=1&resource=other")->Json()["access_token"];
  json tokens = Admin("GET", "/admin/tokens")["tokens"];
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_EQ(tokens[0], a);
  EXPECT_EQ(tokens[1], b);
}

TEST_F(EmulatorTest, AdminIdentitiesReplaceAtRunTime) {
  Make(WithIdentities(R"({"user_assigned":[{"client_id":"ua-1"}]})"));
  EXPECT_EQ(GetFor("client_id=ua-1")->status(), 200);
  Admin("POST", "/admin/identities", R"({"system_assigned":true,"user_assigned":[]})");
  auto gone = GetFor("client_id=ua-1");
  EXPECT_EQ(gone->status(), 400);
  EXPECT_EQ(Description(*gone), "Identity not found");
  json ids = Admin("GET", "/admin/identities");
  EXPECT_EQ(ids["system_assigned"]["client_id"], kSystemClientId);
  EXPECT_EQ(ids["user_assigned"].size(), 0u);
}

TEST_F(EmulatorTest, AdminConfig) {
  Make();
  Admin("POST", "/admin/config",
        R"({"lifetime":600,"reissue_before":60,"throttle_rps":1,"reject_resources":["bad"],"delay_ms":0})");
  json c = Admin("GET", "/admin/config");
  EXPECT_EQ(c["lifetime"], 600);
  EXPECT_EQ(c["throttle_rps"], 1);
  EXPECT_EQ(Get()->Json()["expires_in"], "600");
  EXPECT_EQ(Get()->status(), 429);
  time_.Advance(Duration(1000));
  EXPECT_EQ(Get("/metadata/identity/oauth2/token?api-version=1&resource=bad")->status(), 400);
}

TEST_F(EmulatorTest, WrongIdentityAnswersForAnotherIdentity) {
  Make(WithIdentities(R"({"user_assigned":[{"client_id":"ua-1"}]})"));
  const json ids = Admin("GET", "/admin/identities")["user_assigned"][0];
  const std::string resource = "https://management.azure.com/";
  const TokenKey by_client{SelectorKind::kClientId, "ua-1", resource};
  const TokenKey by_object{SelectorKind::kObjectId, ToLower(ids["object_id"].get<std::string>()), resource};
  const TokenKey by_res_id{SelectorKind::kResourceId, ToLower(ids["mi_res_id"].get<std::string>()), resource};
  auto right = GetFor("client_id=ua-1");
  ASSERT_EQ(right->status(), 200);
  for (const TokenKey& key : {by_client, by_object, by_res_id}) {
    EXPECT_TRUE(CheckIdentityEcho(key, right->body()).ok()) << key.Describe();
  }
  Admin("POST", "/admin/config", R"({"wrong_identity":true})");
  EXPECT_EQ(Admin("GET", "/admin/config")["wrong_identity"], true);
  auto wrong = GetFor("client_id=ua-1");
  ASSERT_EQ(wrong->status(), 200);
  EXPECT_EQ(wrong->Json()["client_id"], "0bad1d00-0000-4000-8000-00000000e0e0");
  for (const TokenKey& key : {by_client, by_object, by_res_id}) {
    EXPECT_FALSE(CheckIdentityEcho(key, wrong->body()).ok()) << key.Describe();
  }
  EXPECT_EQ(GetFor("client_id=nobody")->status(), 400) << "errors are unchanged";
  EXPECT_EQ(Request("POST", "/admin/config", {}, R"({"wrong_identity":1})")->status(), 400);
  Admin("POST", "/admin/config", R"({"wrong_identity":false})");
  EXPECT_TRUE(CheckIdentityEcho(by_client, GetFor("client_id=ua-1")->body()).ok());
}

TEST_F(EmulatorTest, AdminRejectsBadInputAndChangesNothing) {
  Make();
  for (const char* body : {"{", "[]", R"({"steps":[{"stauts":500}]})", R"({"steps":[{"status":500,"hang":true}]})",
                           R"({"steps":[{"count":0}]})", R"({"mode":{"kind":"sometimes"}})"}) {
    auto r = Request("POST", "/admin/faults", {}, body);
    if (std::string(body) == "[]") {
      EXPECT_EQ(r->status(), 200);  // a bare array is a list of steps
      continue;
    }
    EXPECT_EQ(r->status(), 400) << body;
    EXPECT_EQ(Error(*r), "invalid_request");
  }
  EXPECT_EQ(Request("POST", "/admin/config", {}, R"({"lifetime":"long"})")->status(), 400);
  EXPECT_EQ(Request("POST", "/admin/identities", {}, R"({"user_assigned":[{"object_id":"x"}]})")->status(), 400);
  EXPECT_EQ(Request("GET", "/admin/nothing", {})->status(), 404);
  EXPECT_EQ(Request("GET", "/admin/reset", {})->status(), 405);
  EXPECT_EQ(Get()->status(), 200);
  EXPECT_EQ(Admin("GET", "/admin/requests")["count"], 1);  // admin calls are not logged
}

TEST_F(EmulatorTest, AbortPendingClosesDelayedAndHung) {
  Make();
  Admin("POST", "/admin/faults", R"({"steps":[{"hang":true},{"delay_ms":1000}]})");
  auto hung = Get();
  auto delayed = Get();
  emulator_->AbortPending();
  EXPECT_TRUE(hung->aborted);
  EXPECT_TRUE(delayed->aborted);
  time_.Advance(Duration(5000));
  EXPECT_FALSE(delayed->answered());
  EXPECT_EQ(emulator_->in_flight(), 0u);
}

TEST(EmulatorHelpersTest, Base64UrlRoundTrip) {
  for (std::string s : {std::string(""), std::string("f"), std::string("fo"), std::string("foo"),
                        std::string("\xff\xfe\x00\x01", 4)}) {
    std::string enc = Base64UrlEncode(s), dec;
    EXPECT_EQ(enc.find_first_of("+/="), std::string::npos);
    ASSERT_TRUE(Base64UrlDecode(enc, &dec));
    EXPECT_EQ(dec, s);
  }
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
}

TEST(EmulatorHelpersTest, PercentDecode) {
  EXPECT_EQ(PercentDecode("https%3A%2F%2Fx%2F"), "https://x/");
  EXPECT_EQ(PercentDecode("a+b%2"), "a b%2");
  EXPECT_EQ(PercentDecode("%zz"), "%zz");
}

TEST(EmulatorHelpersTest, IdentitiesDeriveMissingIds) {
  IdentitySet set;
  ASSERT_TRUE(ParseIdentities(R"({"user_assigned":[{"client_id":"11111111-2222-3333-4444-555555555555"}]})", &set).ok());
  ASSERT_EQ(set.user_assigned.size(), 1u);
  EXPECT_EQ(set.user_assigned[0].object_id.size(), 36u);
  EXPECT_NE(set.user_assigned[0].mi_res_id.find("userAssignedIdentities/"), std::string::npos);
  EXPECT_FALSE(ParseIdentities(R"({"user_assigned":[{"client_id":"a"},{"client_id":"A"}]})", &set).ok());
}

}  // namespace
}  // namespace mi::emulator
