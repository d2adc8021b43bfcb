// CurlUpstreamClient against a tiny blocking HTTP server on 127.0.0.1:0 (a
// std::thread), on a real EventLoop. These tests are about sockets, so they use
// them; each finishes in milliseconds except the timeout one (~300 ms).

#include "agent/curl_upstream_client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/arc_challenge.h"
#include "agent/base/event_loop.h"
#include "agent/base/url.h"

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

namespace mi {
namespace {

using Outcome = UpstreamResponse::Outcome;

// --- A little portability for the test server ---------------------------------

#ifdef _WIN32
using Fd = SOCKET;
const Fd kBadFd = INVALID_SOCKET;
void CloseFd(Fd fd) { closesocket(fd); }
void InitSockets() {
  static WSADATA data;
  static const int rc = WSAStartup(MAKEWORD(2, 2), &data);
  (void)rc;
}
using SockLen = int;
void SetEnv(const char* name, const char* value) { _putenv_s(name, value); }
void UnsetEnv(const char* name) { _putenv_s(name, ""); }
#else
using Fd = int;
const Fd kBadFd = -1;
void CloseFd(Fd fd) { close(fd); }
void InitSockets() {}
using SockLen = socklen_t;
void SetEnv(const char* name, const char* value) { setenv(name, value, 1); }
void UnsetEnv(const char* name) { unsetenv(name); }
#endif
#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL;  // a client that hung up must not SIGPIPE us
#else
constexpr int kSendFlags = 0;
#endif

// Binds 127.0.0.1:0; returns the socket (listening if `listen_now`) and port.
Fd BindLoopback(bool listen_now, uint16_t* port) {
  InitSockets();
  Fd fd = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (fd == kBadFd) return kBadFd;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  SockLen len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      (listen_now && listen(fd, 16) != 0) ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    CloseFd(fd);
    return kBadFd;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

// A port nobody listens on (bound, then released): connecting is refused.
uint16_t DeadPort() {
  uint16_t port = 0;
  Fd fd = BindLoopback(false, &port);
  if (fd != kBadFd) CloseFd(fd);
  return port;
}

// Waits up to 20 ms for `fd` to be readable.
bool WaitReadable(Fd fd) {
  fd_set set;
  FD_ZERO(&set);
  FD_SET(fd, &set);
  timeval tv{0, 20000};
  return select(static_cast<int>(fd + 1), &set, nullptr, nullptr, &tv) > 0;
}

std::string HttpResponse(int status, const std::string& reason, const std::string& body,
                         const std::string& extra_headers = "", bool close = true) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + (close ? "Connection: close\r\n" : "") + extra_headers + "\r\n" + body;
}

// One connection at a time: reads a request head, records it, then answers
// with a canned response, hangs until the client hangs up, or closes at once.
class TestServer {
 public:
  enum class Mode { kRespond, kHang, kClose };

  explicit TestServer(Mode mode, std::string response = "", bool keep_alive = false)
      : TestServer(mode, std::vector<std::string>{std::move(response)}, keep_alive) {}
  // The n-th request gets responses[n] (the last one once they run out).
  TestServer(Mode mode, std::vector<std::string> responses, bool keep_alive)
      : mode_(mode), responses_(std::move(responses)), keep_alive_(keep_alive) {
    listen_fd_ = BindLoopback(true, &port_);
    if (listen_fd_ != kBadFd) thread_ = std::thread([this] { Run(); });
  }
  ~TestServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ != kBadFd) CloseFd(listen_fd_);
  }

  bool ok() const { return listen_fd_ != kBadFd; }
  uint16_t port() const { return port_; }
  std::string endpoint() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/metadata/identity/oauth2/token";
  }
  std::vector<std::string> requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  size_t request_count() const { return requests().size(); }
  int connections() const { return connections_; }

 private:
  void Run() {
    while (!stop_) {
      if (!WaitReadable(listen_fd_)) continue;
      Fd c = accept(listen_fd_, nullptr, nullptr);
      if (c == kBadFd) continue;
      ++connections_;
      Serve(c);
      CloseFd(c);
    }
  }

  // Reads more into *buf; false on EOF, error or stop.
  bool ReadSome(Fd c, std::string* buf) {
    while (!stop_) {
      if (!WaitReadable(c)) continue;
      char chunk[4096];
      auto n = recv(c, chunk, sizeof(chunk), 0);
      if (n <= 0) return false;
      buf->append(chunk, static_cast<size_t>(n));
      return true;
    }
    return false;
  }

  void Serve(Fd c) {
    std::string buf;
    for (;;) {
      size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        if (buf.size() > 65536 || !ReadSome(c, &buf)) return;
      }
      size_t index = 0;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        index = requests_.size();
        requests_.push_back(buf.substr(0, end + 2));
      }
      const std::string& response_ = responses_[std::min(index, responses_.size() - 1)];
      buf.erase(0, end + 4);
      switch (mode_) {
        case Mode::kClose:
          return;
        case Mode::kHang:
          while (ReadSome(c, &buf)) {
          }
          return;
        case Mode::kRespond: {
          size_t sent = 0;
          while (sent < response_.size()) {
            auto n = send(c, response_.data() + sent, static_cast<int>(response_.size() - sent), kSendFlags);
            if (n <= 0) return;  // the client gave up (e.g. body too large)
            sent += static_cast<size_t>(n);
          }
          if (!keep_alive_) return;
          break;
        }
      }
    }
  }

  const Mode mode_;
  const std::vector<std::string> responses_;
  const bool keep_alive_;
  Fd listen_fd_ = kBadFd;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

bool HasHeaderLine(const std::string& head, const std::string& line_lower) {
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("\r\n" + line_lower + "\r\n") != std::string::npos;
}

std::string FirstLine(const std::string& head) { return head.substr(0, head.find("\r\n")); }

TokenKey Key(SelectorKind kind = SelectorKind::kDefault, std::string id = "",
             std::string resource = "https://management.azure.com/") {
  TokenKey k;
  k.kind = kind;
  k.id = std::move(id);
  k.resource = std::move(resource);
  return k;
}

// Sets environment variables for one test and restores them after.
class ScopedEnv {
 public:
  void Set(const char* name, const char* value) {
    Save(name);
    SetEnv(name, value);
  }
  void Unset(const char* name) {
    Save(name);
    UnsetEnv(name);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        SetEnv(it->first.c_str(), it->second->c_str());
      } else {
        UnsetEnv(it->first.c_str());
      }
    }
  }

 private:
  void Save(const char* name) {
    const char* old = std::getenv(name);
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

class CurlUpstreamTest : public ::testing::Test {
 protected:
  CurlUpstreamTest() {
    logger_.set_level(LogLevel::kDebug);
    logger_.set_sink([this](std::string_view line) { log_.emplace_back(line); });
  }
  void TearDown() override {
    client_.reset();
    EXPECT_TRUE(loop_.Close()) << "a handle was left open";
  }

  CurlUpstreamClient::Options ConfigFor(const TestServer& server) {
    CurlUpstreamClient::Options c;
    c.endpoint = server.endpoint();
    c.connect_timeout = Duration(2000);
    c.timeout = Duration(5000);
    return c;
  }
  void MakeClient(const CurlUpstreamClient::Options& config) {
    client_ = std::make_unique<CurlUpstreamClient>(loop_, config, logger_);
  }

  // Runs the loop until `done()` or `limit` of real time. A 5 ms repeating
  // timer keeps uv_run from blocking while the test server thread works.
  bool RunUntil(const std::function<bool()>& done, Duration limit = Duration(10000)) {
    UvHandle<uv_timer_t> wake;
    wake.Init(uv_timer_init, loop_.uv(), nullptr);
    uv_timer_start(wake.get(), [](uv_timer_t*) {}, 5, 5);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    bool ok = done();
    while (!ok && std::chrono::steady_clock::now() < deadline) {
      uv_run(loop_.uv(), UV_RUN_ONCE);
      ok = done();
    }
    return ok;  // `wake` closes here; its close callback runs on a later turn
  }

  // Fetches `key` and waits for the answer; checks it did not come inside Fetch.
  std::optional<UpstreamResponse> FetchAndWait(const TokenKey& key) {
    std::optional<UpstreamResponse> got;
    bool inside_fetch = true;
    client_->Fetch(key, [&](UpstreamResponse r) {
      EXPECT_FALSE(inside_fetch) << "callback ran inside Fetch";
      got = std::move(r);
    });
    inside_fetch = false;
    EXPECT_FALSE(got.has_value());
    EXPECT_EQ(client_->in_flight(), 1u);
    EXPECT_TRUE(RunUntil([&] { return got.has_value(); })) << "no answer";
    return got;
  }

  EventLoop loop_;
  Logger logger_;
  std::vector<std::string> log_;
  std::unique_ptr<CurlUpstreamClient> client_;
};

const char kGuid[] = "0e9d6b6a-3c1f-4d8e-9a4b-6f2b1c0d9e7a";
const char kTokenBody[] =
    R"({"access_token":"eyJ0eXAi.x.y","expires_in":"86399","expires_on":"1767312000",)"
    R"("not_before":"1767225300","resource":"https://management.azure.com/","token_type":"Bearer"})";

TEST_F(CurlUpstreamTest, SendsTheImdsRequestAndDeliversTheBody) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", kTokenBody));
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  auto r = FetchAndWait(Key(SelectorKind::kClientId, kGuid));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kHttp);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, kTokenBody);
  EXPECT_EQ(r->retry_after, "");
  EXPECT_EQ(client_->in_flight(), 0u);
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(FirstLine(requests[0]),
            std::string("GET /metadata/identity/oauth2/token?api-version=2018-02-01"
                        "&resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id=") +
                kGuid + " HTTP/1.1");
  EXPECT_TRUE(HasHeaderLine(requests[0], "metadata: true")) << requests[0];
  EXPECT_TRUE(HasHeaderLine(requests[0], "host: 127.0.0.1:" + std::to_string(server.port())))
      << requests[0];
}

TEST_F(CurlUpstreamTest, ResourceIdSelectorIsSentAsMiResId) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", kTokenBody));
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  const std::string arm_id =
      "/subscriptions/sub/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/id1";
  auto r = FetchAndWait(Key(SelectorKind::kResourceId, arm_id, "https://vault.azure.net"));
  ASSERT_TRUE(r);
  ASSERT_EQ(server.request_count(), 1u);
  EXPECT_NE(FirstLine(server.requests()[0])
                .find("&resource=https%3A%2F%2Fvault.azure.net&mi_res_id=%2Fsubscriptions%2Fsub%2F"),
            std::string::npos)
      << FirstLine(server.requests()[0]);
}

TEST_F(CurlUpstreamTest, BuildUrlForEachSelector) {
  CurlUpstreamClient::Options c;
  c.api_version = "2019-08-01";
  EXPECT_EQ(CurlUpstreamClient::BuildUrl(c, Key()),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01"
            "&resource=https%3A%2F%2Fmanagement.azure.com%2F");
  EXPECT_EQ(CurlUpstreamClient::BuildUrl(c, Key(SelectorKind::kObjectId, "abc", "r r")),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01"
            "&resource=r%20r&object_id=abc");
  c.endpoint = "http://127.0.0.1:1/token?x=1";
  EXPECT_EQ(CurlUpstreamClient::BuildUrl(c, Key(SelectorKind::kClientId, "id", "res")),
            "http://127.0.0.1:1/token?x=1&api-version=2019-08-01&resource=res&client_id=id");
}

TEST_F(CurlUpstreamTest, ForwardUrlKeepsTheEndpointsHostOnly) {
  CurlUpstreamClient::Options o;
  o.endpoint = "http://127.0.0.1:8080/metadata/identity/oauth2/token?x=1";
  EXPECT_EQ(CurlUpstreamClient::ForwardUrl(o, "/metadata/identity/issuecredential?cred-api-version=0.1"),
            "http://127.0.0.1:8080/metadata/identity/issuecredential?cred-api-version=0.1");
  o.endpoint = "https://imds.example";
  EXPECT_EQ(CurlUpstreamClient::ForwardUrl(o, "/p"), "https://imds.example/p");
}

TEST_F(CurlUpstreamTest, ForwardSendsMethodPathBodyAndKeepsServer) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(201, "Created", "{\"v2\":1}", "Server: IMDS/1.2\r\n"));
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  ForwardRequest request;
  request.method = "POST";
  request.path_and_query = "/metadata/identity/issuecredential?cred-api-version=0.1";
  request.body = "{\"cnf\":{}}";
  request.content_type = "application/json";
  std::optional<UpstreamResponse> got;
  bool inside = true;
  client_->Forward(request, [&](UpstreamResponse r) {
    EXPECT_FALSE(inside);
    got = std::move(r);
  });
  inside = false;
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  EXPECT_EQ(got->outcome, Outcome::kHttp);
  EXPECT_EQ(got->status, 201);
  EXPECT_EQ(got->body, "{\"v2\":1}");
  EXPECT_EQ(got->server, "IMDS/1.2");
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(FirstLine(requests[0]), "POST /metadata/identity/issuecredential?cred-api-version=0.1 HTTP/1.1");
  EXPECT_TRUE(HasHeaderLine(requests[0], "metadata: true")) << requests[0];
  EXPECT_TRUE(HasHeaderLine(requests[0], "content-type: application/json")) << requests[0];
  EXPECT_TRUE(HasHeaderLine(requests[0], "content-length: 10")) << requests[0];
}

TEST_F(CurlUpstreamTest, ForwardDropsAServerHeaderWithControlCharacters) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", "{}", "Server: a\x01b\r\n"));
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  ForwardRequest request;
  request.method = "GET";
  request.path_and_query = "/metadata/identity/getplatformmetadata";
  std::optional<UpstreamResponse> got;
  client_->Forward(request, [&](UpstreamResponse r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->server, "");
}

TEST_F(CurlUpstreamTest, ForwardBodyOverTheCapIsTooLarge) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", std::string(5000, 'x')));
  ASSERT_TRUE(server.ok());
  CurlUpstreamClient::Options config = ConfigFor(server);
  config.max_response_bytes = 1024;
  MakeClient(config);
  ForwardRequest request;
  request.method = "GET";
  request.path_and_query = "/metadata/identity/getplatformmetadata";
  std::optional<UpstreamResponse> got;
  client_->Forward(request, [&](UpstreamResponse r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  EXPECT_EQ(got->outcome, Outcome::kTooLarge);
  EXPECT_TRUE(got->body.empty());
  EXPECT_EQ(FirstLine(server.requests().at(0)), "GET /metadata/identity/getplatformmetadata HTTP/1.1");
}

TEST_F(CurlUpstreamTest, ErrorStatusesAreDelivered) {
  for (int status : {404, 500, 400}) {
    SCOPED_TRACE(status);
    const std::string body = R"({"error":"e)" + std::to_string(status) + R"("})";
    TestServer server(TestServer::Mode::kRespond, HttpResponse(status, "Whatever", body));
    ASSERT_TRUE(server.ok());
    MakeClient(ConfigFor(server));
    auto r = FetchAndWait(Key());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->outcome, Outcome::kHttp);
    EXPECT_EQ(r->status, status);
    EXPECT_EQ(r->body, body);
    client_.reset();
  }
}

TEST_F(CurlUpstreamTest, RetryAfterIsCapturedCaseInsensitively) {
  {
    TestServer server(TestServer::Mode::kRespond,
                      HttpResponse(429, "Too Many Requests", "{}", "retry-after: 7\r\n"));
    ASSERT_TRUE(server.ok());
    MakeClient(ConfigFor(server));
    auto r = FetchAndWait(Key());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 429);
    EXPECT_EQ(r->retry_after, "7");
  }
  {
    TestServer server(TestServer::Mode::kRespond,
                      HttpResponse(503, "Unavailable", "{}", "RETRY-AFTER:   Sun, 06 Nov 1994 08:49:37 GMT  \r\n"));
    ASSERT_TRUE(server.ok());
    MakeClient(ConfigFor(server));
    auto r = FetchAndWait(Key());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(r->retry_after, "Sun, 06 Nov 1994 08:49:37 GMT");
  }
}

TEST_F(CurlUpstreamTest, OversizeBodyIsTooLarge) {
  const std::string big(100000, 'x');
  struct Case {
    const char* name;
    std::string response;
    Outcome expected;
  };
  const std::vector<Case> cases = {
      {"content-length over the cap", HttpResponse(200, "OK", big), Outcome::kTooLarge},
      {"read until close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + big, Outcome::kTooLarge},
      {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n" + big + "\r\n0\r\n\r\n",
       Outcome::kTooLarge},
      {"exactly the cap", HttpResponse(200, "OK", std::string(1024, 'y')), Outcome::kHttp},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TestServer server(TestServer::Mode::kRespond, c.response);
    ASSERT_TRUE(server.ok());
    CurlUpstreamClient::Options config = ConfigFor(server);
    config.max_response_bytes = 1024;
    MakeClient(config);
    auto r = FetchAndWait(Key());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->outcome, c.expected) << r->error;
    if (c.expected == Outcome::kTooLarge) {
      EXPECT_TRUE(r->body.empty());
    } else {
      EXPECT_EQ(r->body.size(), 1024u);
    }
    client_.reset();
  }
}

TEST_F(CurlUpstreamTest, HangingServerTimesOut) {
  TestServer server(TestServer::Mode::kHang);
  ASSERT_TRUE(server.ok());
  CurlUpstreamClient::Options config = ConfigFor(server);
  config.timeout = Duration(300);
  MakeClient(config);
  const auto start = std::chrono::steady_clock::now();
  auto r = FetchAndWait(Key());
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kTimeout);
  EXPECT_FALSE(r->error.empty());
  // Connected, then nothing: the reason says so, with the limit (the same text each time).
  EXPECT_EQ(r->description, "no answer: timed out after 300 ms");
  EXPECT_GE(took, std::chrono::milliseconds(250));
  EXPECT_EQ(server.request_count(), 1u);
}

TEST_F(CurlUpstreamTest, RefusedConnectionIsAConnectError) {
  CurlUpstreamClient::Options config;
  config.endpoint = "http://127.0.0.1:" + std::to_string(DeadPort()) + "/metadata/identity/oauth2/token";
  MakeClient(config);
  auto r = FetchAndWait(Key());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kConnectError);
  EXPECT_FALSE(r->error.empty());
  EXPECT_EQ(r->description, "connection refused");  // CURLINFO_OS_ERRNO
  EXPECT_EQ(r->status, 0);
}

TEST_F(CurlUpstreamTest, ServerClosingWithoutAnswerIsAConnectError) {
  TestServer server(TestServer::Mode::kClose);
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  auto r = FetchAndWait(Key());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kConnectError);
  EXPECT_FALSE(r->error.empty());
  EXPECT_FALSE(r->description.empty());
}

TEST_F(CurlUpstreamTest, ProxyEnvironmentIsIgnored) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", kTokenBody));
  ASSERT_TRUE(server.ok());
  const std::string dead_proxy = "http://127.0.0.1:" + std::to_string(DeadPort());
  ScopedEnv env;
  for (const char* name : {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"}) env.Set(name, dead_proxy.c_str());
  for (const char* name : {"no_proxy", "NO_PROXY"}) env.Unset(name);
  MakeClient(ConfigFor(server));
  auto r = FetchAndWait(Key());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kHttp) << r->error;
  EXPECT_EQ(r->status, 200);
  ASSERT_EQ(server.request_count(), 1u);
  // Origin-form, not the absolute-form a proxy would get.
  EXPECT_EQ(FirstLine(server.requests()[0]).rfind("GET /metadata/", 0), 0u);
}

TEST_F(CurlUpstreamTest, ConnectionsAreReused) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", kTokenBody, "", /*close=*/false),
                    /*keep_alive=*/true);
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  for (int i = 0; i < 3; ++i) {
    auto r = FetchAndWait(Key());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  EXPECT_EQ(server.request_count(), 3u);
  EXPECT_EQ(server.connections(), 1);
}

TEST_F(CurlUpstreamTest, ConcurrentFetchesAllComplete) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", kTokenBody));
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  int answered = 0;
  for (int i = 0; i < 4; ++i) {
    client_->Fetch(Key(SelectorKind::kClientId, std::to_string(i)), [&](UpstreamResponse r) {
      EXPECT_EQ(r.status, 200);
      ++answered;
    });
  }
  EXPECT_EQ(client_->in_flight(), 4u);
  EXPECT_TRUE(RunUntil([&] { return answered == 4; }));
  EXPECT_EQ(server.request_count(), 4u);
}

TEST_F(CurlUpstreamTest, SetConfigAppliesToLaterFetches) {
  TestServer first(TestServer::Mode::kRespond, HttpResponse(200, "OK", "{\"n\":1}"));
  TestServer second(TestServer::Mode::kRespond, HttpResponse(200, "OK", "{\"n\":2}"));
  ASSERT_TRUE(first.ok() && second.ok());
  MakeClient(ConfigFor(first));
  EXPECT_EQ(FetchAndWait(Key())->body, "{\"n\":1}");
  client_->set_options(ConfigFor(second));
  EXPECT_EQ(FetchAndWait(Key())->body, "{\"n\":2}");
}

TEST_F(CurlUpstreamTest, DestroyingTheClientCancelsWithoutCallbacks) {
  TestServer server(TestServer::Mode::kHang);
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  bool called = false;
  client_->Fetch(Key(), [&](UpstreamResponse) { called = true; });
  client_->Fetch(Key(SelectorKind::kObjectId, "x"), [&](UpstreamResponse) { called = true; });
  ASSERT_TRUE(RunUntil([&] { return server.request_count() >= 1; }));
  client_.reset();
  RunUntil([] { return false; }, Duration(50));
  EXPECT_FALSE(called);
  // TearDown: the loop closes (every poll and timer handle was closed).
}

TEST_F(CurlUpstreamTest, CallbackMayDestroyTheClient) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", kTokenBody));
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  int calls = 0;
  for (int i = 0; i < 2; ++i) {
    client_->Fetch(Key(), [&](UpstreamResponse) {
      ++calls;
      client_.reset();
    });
  }
  EXPECT_TRUE(RunUntil([&] { return calls > 0; }));
  RunUntil([] { return false; }, Duration(50));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(client_, nullptr);
}

TEST_F(CurlUpstreamTest, BuildUrlForwardsClaimsAndNothingElse) {
  CurlUpstreamClient::Options c;
  c.api_version = "2019-08-01";
  TokenKey key = Key(SelectorKind::kDefault, "", "res");
  ASSERT_TRUE(SetClaims(&key, R"({"access_token":{"xms_az_nwperimid":{}}})").ok());
  EXPECT_EQ(CurlUpstreamClient::BuildUrl(c, key),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01&resource=res"
            "&claims=%7B%22access_token%22%3A%7B%22xms_az_nwperimid%22%3A%7B%7D%7D%7D");
  EXPECT_EQ(CurlUpstreamClient::BuildUrl(c, Key(SelectorKind::kDefault, "", "res"), /*bypass_cache=*/true),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01&resource=res"
            "&bypass_cache=true");
}

TEST_F(CurlUpstreamTest, FetchWithSendsTheClientRequestIdAndLogsItAtDebug) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(200, "OK", kTokenBody));
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  std::optional<UpstreamResponse> got;
  client_->FetchWith(Key(), UpstreamClient::FetchOptions{"corr-42"}, [&](UpstreamResponse r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil([&] { return got.has_value(); }));
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_TRUE(HasHeaderLine(requests[0], "x-ms-client-request-id: corr-42")) << requests[0];
  bool logged = false;
  for (const auto& line : log_) logged = logged || line.find("x-ms-client-request-id corr-42") != std::string::npos;
  EXPECT_TRUE(logged);
}

}  // namespace
}  // namespace mi

// --- Azure Arc (imds.kind arc) ---------------------------------------------------

namespace mi {
namespace {

namespace fs = std::filesystem;

class CurlUpstreamArcTest : public CurlUpstreamTest {
 protected:
  void SetUp() override {
    static int n = 0;
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    dir_ = fs::temp_directory_path() / ("mi-arc-client-" + std::to_string(stamp) + "-" + std::to_string(n++));
    fs::create_directories(dir_);
    key_path_ = (dir_ / "challenge.key").string();
    std::ofstream(key_path_, std::ios::binary) << kSecret;
  }
  void TearDown() override {
    CurlUpstreamTest::TearDown();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  CurlUpstreamClient::Options ArcConfigFor(const TestServer& server) {
    CurlUpstreamClient::Options c = ConfigFor(server);
    c.kind = CurlUpstreamClient::Kind::kArc;
    c.arc_token_dir = dir_.string();
    return c;
  }
  std::string Challenge(const std::string& realm) {
    return HttpResponse(401, "Unauthorized", R"({"error":"unauthorized"})", "WWW-Authenticate: Basic realm=" + realm + "\r\n");
  }
  bool LogMentionsSecret() const {
    for (const auto& line : log_) {
      if (line.find(kSecret) != std::string::npos) return true;
    }
    return false;
  }

  static constexpr const char* kSecret = "QXJjU2VjcmV0VmFsdWU0Mg";
  fs::path dir_;
  std::string key_path_;
};

TEST_F(CurlUpstreamArcTest, AnswersTheChallengeOnceWithTheFilesContents) {
  TestServer server(TestServer::Mode::kRespond, {Challenge(key_path_), HttpResponse(200, "OK", kTokenBody)}, false);
  ASSERT_TRUE(server.ok());
  MakeClient(ArcConfigFor(server));
  auto r = FetchAndWait(Key(SelectorKind::kClientId, kGuid));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kHttp);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, kTokenBody);
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(FirstLine(requests[0]), FirstLine(requests[1]));
  EXPECT_EQ(requests[0].find("Authorization"), std::string::npos);
  EXPECT_NE(requests[1].find(std::string("\r\nAuthorization: Basic ") + kSecret + "\r\n"), std::string::npos)
      << requests[1];
  EXPECT_TRUE(HasHeaderLine(requests[1], "metadata: true"));
  EXPECT_FALSE(LogMentionsSecret());
  EXPECT_EQ(client_->in_flight(), 0u);
}

TEST_F(CurlUpstreamArcTest, EachFetchReadsTheFileAgain) {
  TestServer server(TestServer::Mode::kRespond,
                    {Challenge(key_path_), HttpResponse(200, "OK", kTokenBody), Challenge(key_path_),
                     HttpResponse(200, "OK", kTokenBody)},
                    false);
  ASSERT_TRUE(server.ok());
  MakeClient(ArcConfigFor(server));
  ASSERT_TRUE(FetchAndWait(Key()));
  std::ofstream(key_path_, std::ios::binary | std::ios::trunc) << "U2Vjb25kU2VjcmV0";
  auto r = FetchAndWait(Key());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 4u);
  EXPECT_EQ(requests[2].find("Authorization"), std::string::npos);
  EXPECT_NE(requests[3].find("Authorization: Basic U2Vjb25kU2VjcmV0\r\n"), std::string::npos);
}

TEST_F(CurlUpstreamArcTest, ASecond401IsAnErrorNotALoop) {
  TestServer server(TestServer::Mode::kRespond, Challenge(key_path_));
  ASSERT_TRUE(server.ok());
  MakeClient(ArcConfigFor(server));
  auto r = FetchAndWait(Key());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kRefused);
  EXPECT_NE(r->error.find("second 401"), std::string::npos) << r->error;
  EXPECT_EQ(server.request_count(), 2u);
  EXPECT_FALSE(LogMentionsSecret());
}

TEST_F(CurlUpstreamArcTest, AHostileRealmEndsTheFetchWithoutASecondRequest) {
  const fs::path outside = dir_.parent_path() / (dir_.filename().string() + "-outside.key");
  std::ofstream(outside, std::ios::binary) << kSecret;
  const std::string cases[][2] = {
      {outside.string(), "outside the tokens directory"},
      {(dir_ / "x.txt").string(), "not name a .key file"},
      {"relative.key", "not an absolute path"},
  };
  for (const auto& c : cases) {
    TestServer server(TestServer::Mode::kRespond, Challenge(c[0]));
    ASSERT_TRUE(server.ok());
    MakeClient(ArcConfigFor(server));
    log_.clear();
    auto r = FetchAndWait(Key());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->outcome, Outcome::kRefused);
    EXPECT_EQ(r->error.rfind("Arc challenge: ", 0), 0u) << r->error;
    EXPECT_NE(r->error.find(c[1]), std::string::npos) << r->error;
    EXPECT_EQ(server.request_count(), 1u);
    bool warned = false;
    for (const auto& line : log_) warned = warned || line.find(c[1]) != std::string::npos;
    EXPECT_TRUE(warned) << c[1];
    EXPECT_FALSE(LogMentionsSecret());
    client_.reset();
  }
  fs::remove(outside);
}

TEST_F(CurlUpstreamArcTest, A401WithoutAChallengeIsAnError) {
  TestServer server(TestServer::Mode::kRespond, HttpResponse(401, "Unauthorized", "{}"));
  ASSERT_TRUE(server.ok());
  MakeClient(ArcConfigFor(server));
  auto r = FetchAndWait(Key());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kRefused);
  EXPECT_NE(r->error.find("no WWW-Authenticate challenge"), std::string::npos) << r->error;
  EXPECT_EQ(server.request_count(), 1u);
}

TEST_F(CurlUpstreamArcTest, ImdsKindDoesNotAnswerChallenges) {
  TestServer server(TestServer::Mode::kRespond, Challenge(key_path_));
  ASSERT_TRUE(server.ok());
  MakeClient(ConfigFor(server));
  auto r = FetchAndWait(Key());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, Outcome::kHttp);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(server.request_count(), 1u);
}

TEST_F(CurlUpstreamArcTest, ResourceIdGoesUpAsMsiResId) {
  CurlUpstreamClient::Options c;
  c.kind = CurlUpstreamClient::Kind::kArc;
  c.endpoint = kArcEndpoint;
  c.api_version = kArcApiVersion;
  EXPECT_EQ(CurlUpstreamClient::BuildUrl(c, Key(SelectorKind::kResourceId, "/subscriptions/s", "r")),
            "http://127.0.0.1:40342/metadata/identity/oauth2/token?api-version=2020-06-01&resource=r"
            "&msi_res_id=%2Fsubscriptions%2Fs");
  EXPECT_EQ(CurlUpstreamClient::BuildUrl(c, Key(SelectorKind::kClientId, kGuid, "r")),
            std::string(kArcEndpoint) + "?api-version=2020-06-01&resource=r&client_id=" + kGuid);
  EXPECT_EQ(CurlUpstreamClient::BuildUrl(c, Key(SelectorKind::kObjectId, kGuid, "r")),
            std::string(kArcEndpoint) + "?api-version=2020-06-01&resource=r&object_id=" + kGuid);
}

}  // namespace
}  // namespace mi
