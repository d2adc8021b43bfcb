#include "proxy/http/http_server.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/base/event_loop.h"
#include "agent/base/log.h"
#include "agent/base/peer_lookup.h"
#include "agent/base/socket_address.h"
#include "agent/base/uv_handle.h"
#include "tests/fakes/loopback.h"

#ifndef _WIN32
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace mi::proxy {
namespace {

using testing::ParsedResponse;
using TestClient = testing::LoopbackClient;

class TestHandler : public HttpHandler {
 public:
  // Null: answer 200 with "<method> <target>\n<body>".
  std::function<void(const HttpRequest&, Responder)> on_request;
  std::vector<HttpRequest> requests;

  void OnRequest(const HttpRequest& request, Responder responder) override {
    requests.push_back(request);
    if (on_request) {
      on_request(request, std::move(responder));
      return;
    }
    HttpResponse r;
    r.content_type = "text/plain";
    r.body = request.method + " " + request.target + "\n" + request.body;
    responder.Send(std::move(r));
  }
};

HttpResponse TextResponse(std::string body) {
  HttpResponse r;
  r.content_type = "text/plain";
  r.body = std::move(body);
  return r;
}

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerTest() {
#ifndef _WIN32
    std::signal(SIGPIPE, SIG_IGN);  // as the daemon does: peers vanish mid-write
#endif
    logger_.set_level(LogLevel::kDebug);
    logger_.set_sink([this](std::string_view line) { log_.emplace_back(line); });
  }

  void TearDown() override {
    held_.clear();
    timers_.clear();
    handler_.on_request = nullptr;
    server_.reset();
    EXPECT_TRUE(loop_.Close());
    if (!temp_dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(temp_dir_, ignored);
    }
  }

  void StartServer(const ServerLimits& limits = ServerLimits(), const std::string& host = "127.0.0.1",
                   PeerResolver* peers = nullptr) {
    server_ = std::make_unique<HttpServer>(loop_.uv(), limits, handler_, logger_, peers);
    Status st = server_->Listen(host, 0);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(server_->BoundPorts().size(), 1u);
    port_ = server_->BoundPorts()[0];
    ASSERT_NE(port_, 0);
  }

#ifndef _WIN32
  // A directory of this test's own (removed in TearDown), searchable by
  // everyone so a client run as another user reaches a socket in it.
  std::string TempDir() {
    if (temp_dir_.empty()) {
      char name[] = "/tmp/mi-http-test-XXXXXX";
      EXPECT_NE(::mkdtemp(name), nullptr);
      EXPECT_EQ(::chmod(name, 0755), 0);
      temp_dir_ = name;
    }
    return temp_dir_;
  }

  // A server on a Unix socket, <TempDir()>/token.sock; Connect() uses it.
  void StartUnixServer(const ServerLimits& limits = ServerLimits(), PeerResolver* peers = nullptr) {
    unix_path_ = TempDir() + "/token.sock";
    server_ = std::make_unique<HttpServer>(loop_.uv(), limits, handler_, logger_, peers);
    Status st = server_->ListenUnix(unix_path_);
    ASSERT_TRUE(st.ok()) << st.message();
  }
#endif

  // To the TCP port, or to the Unix socket once StartUnixServer() made one.
  std::unique_ptr<TestClient> Connect(const std::string& host = "127.0.0.1") {
    auto c = std::make_unique<TestClient>(loop_.uv());
    if (!unix_path_.empty()) {
      c->ConnectUnix(unix_path_);
    } else {
      c->Connect(host, port_);
    }
    EXPECT_TRUE(RunUntil([&] { return c->connect_done(); }));
    EXPECT_EQ(c->connect_status(), 0);
    return c;
  }

  // Runs the loop until `pred` holds. The guard only keeps a broken test from
  // hanging; nothing here depends on how long things take.
  bool RunUntil(const std::function<bool()>& pred) {
    if (pred()) return true;
    bool expired = false;
    UvTimer guard(loop_.uv());
    guard.Arm(Duration(20000), [&] { expired = true; });
    while (!pred() && !expired) uv_run(loop_.uv(), UV_RUN_ONCE);
    return pred();
  }

  // A few non-blocking loop iterations (to show that something does NOT happen).
  void RunTurns(int n) {
    for (int i = 0; i < n; ++i) uv_run(loop_.uv(), UV_RUN_NOWAIT);
  }

  // Runs `fn` on a later loop turn (asynchronous answers).
  void Later(std::function<void()> fn) {
    timers_.push_back(loop_.NewTimer());
    timers_.back()->Arm(Duration(0), std::move(fn));
  }

  void HoldRequests() {
    handler_.on_request = [this](const HttpRequest&, Responder r) { held_.push_back(std::move(r)); };
  }

  EventLoop loop_;
  Logger logger_;
  std::vector<std::string> log_;
  TestHandler handler_;
  std::vector<Responder> held_;
  std::vector<std::unique_ptr<Timer>> timers_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  std::string unix_path_;
  std::string temp_dir_;
};

// Tests that hold for both kinds of listener, run on each.
enum class Via { kTcp, kUnix };

class HttpServerTransportTest : public HttpServerTest, public ::testing::WithParamInterface<Via> {
 protected:
  void StartServer(const ServerLimits& limits = ServerLimits()) {
#ifndef _WIN32
    if (GetParam() == Via::kUnix) {
      StartUnixServer(limits);
      return;
    }
#endif
    HttpServerTest::StartServer(limits);
  }
  HttpRequest::Transport transport() const {
    return GetParam() == Via::kUnix ? HttpRequest::Transport::kUnix : HttpRequest::Transport::kTcp;
  }
};

#ifdef _WIN32
INSTANTIATE_TEST_SUITE_P(Listener, HttpServerTransportTest, ::testing::Values(Via::kTcp));
#else
INSTANTIATE_TEST_SUITE_P(Listener, HttpServerTransportTest, ::testing::Values(Via::kTcp, Via::kUnix),
                         [](const ::testing::TestParamInfo<Via>& info) {
                           return info.param == Via::kUnix ? std::string("Unix") : std::string("Tcp");
                         });
#endif

TEST_F(HttpServerTest, SimpleGet) {
  StartServer();
  auto c = Connect();
  c->Write(
      "GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata:  true \t\r\n"
      "X-Dup: a\r\nx-DUP: b\r\nX-Empty:\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  ParsedResponse r = c->responses()[0];
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "GET /oauth2/token?resource=x\n");
  ASSERT_NE(r.Header("content-type"), nullptr);
  EXPECT_EQ(*r.Header("content-type"), "text/plain");
  ASSERT_NE(r.Header("content-length"), nullptr);
  EXPECT_EQ(*r.Header("content-length"), std::to_string(r.body.size()));
  EXPECT_EQ(r.Header("connection"), nullptr);
  EXPECT_EQ(c->received().compare(0, 17, "HTTP/1.1 200 OK\r\n"), 0);

  ASSERT_EQ(handler_.requests.size(), 1u);
  const HttpRequest& req = handler_.requests[0];
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.target, "/oauth2/token?resource=x");
  std::vector<std::pair<std::string, std::string>> want = {
      {"host", "localhost"}, {"metadata", "true"}, {"x-dup", "a"}, {"x-dup", "b"}, {"x-empty", ""}};
  EXPECT_EQ(req.headers, want);
  ASSERT_NE(req.Header("metadata"), nullptr);
  EXPECT_EQ(*req.Header("metadata"), "true");
  EXPECT_EQ(*req.Header("x-dup"), "a");
  EXPECT_EQ(req.HeaderCount("x-dup"), 2u);
  EXPECT_EQ(req.Header("user-agent"), nullptr);
  EXPECT_TRUE(req.keep_alive);
  EXPECT_TRUE(req.peer_is_loopback);
  EXPECT_EQ(req.peer.rfind("127.0.0.1:", 0), 0u) << req.peer;
  EXPECT_EQ(server_->stats().accepted, 1u);
  EXPECT_EQ(server_->stats().open_connections, 1u);
  EXPECT_FALSE(c->eof());
  EXPECT_EQ(server_->BoundAddresses(), std::vector<std::string>{"127.0.0.1:" + std::to_string(port_)});
}

TEST_P(HttpServerTransportTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  auto c = Connect();
  for (int i = 1; i <= 3; ++i) {
    c->Write("GET /r" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
    ASSERT_TRUE(RunUntil([&] { return c->responses().size() == static_cast<size_t>(i); }));
    EXPECT_EQ(c->responses().back().body, "GET /r" + std::to_string(i) + "\n");
  }
  EXPECT_FALSE(c->eof());
  EXPECT_EQ(server_->stats().accepted, 1u);
  ASSERT_EQ(handler_.requests.size(), 3u);
  for (const HttpRequest& r : handler_.requests) {
    EXPECT_EQ(r.transport, transport());
    EXPECT_TRUE(r.peer_is_loopback);
  }
}

TEST_P(HttpServerTransportTest, PipelinedResponsesKeepRequestOrder) {
  StartServer();
  std::vector<std::string> answer_order;
  HoldRequests();
  auto c = Connect();
  c->Write("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 3; }));
  EXPECT_EQ(handler_.requests[0].target, "/1");
  EXPECT_EQ(handler_.requests[1].target, "/2");
  EXPECT_EQ(handler_.requests[2].target, "/3");

  bool second_sent = false;
  Later([&] {
    held_[1].Send(TextResponse("two"));
    answer_order.push_back("two");
    second_sent = true;
  });
  ASSERT_TRUE(RunUntil([&] { return second_sent; }));
  RunTurns(5);
  EXPECT_EQ(c->received(), "") << "response 2 must wait for response 1";

  bool rest_sent = false;
  Later([&] {
    held_[0].Send(TextResponse("one"));
    held_[2].Send(TextResponse("three"));
    answer_order.push_back("one");
    answer_order.push_back("three");
    rest_sent = true;
  });
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 3; }));
  auto rs = c->responses();
  EXPECT_EQ(rs[0].body, "one");
  EXPECT_EQ(rs[1].body, "two");
  EXPECT_EQ(rs[2].body, "three");
  EXPECT_EQ(answer_order, (std::vector<std::string>{"two", "one", "three"}));
  EXPECT_FALSE(c->eof());
}

TEST_F(HttpServerTest, PipelineBeyondLimitWaitsForAnswers) {
  ServerLimits limits;
  limits.max_pipelined = 2;
  StartServer(limits);
  HoldRequests();
  auto c = Connect();
  std::string batch;
  for (int i = 1; i <= 5; ++i) batch += "GET /" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
  c->Write(batch);
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 2; }));
  RunTurns(5);
  EXPECT_EQ(handler_.requests.size(), 2u) << "no more than max_pipelined in flight";

  size_t answered = 0;
  while (answered < 5) {
    ASSERT_TRUE(RunUntil([&] { return held_.size() > answered; }));
    EXPECT_LE(held_.size() - answered, 2u);
    for (; answered < held_.size(); ++answered) {
      held_[answered].Send(TextResponse("answer " + handler_.requests[answered].target));
    }
  }
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 5; }));
  auto rs = c->responses();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(rs[i].body, "answer /" + std::to_string(i + 1));
}

TEST_F(HttpServerTest, RequestSplitAcrossReads) {
  StartServer();
  auto c = Connect();
  const std::vector<std::string> pieces = {"GE", "T /sp", "lit HTTP/1.1\r\nHo", "st: x\r\nX-Long-Na",
                                           "me:  val", "ue \r", "\n\r", "\n"};
  for (const auto& p : pieces) {
    c->Write(p);
    RunTurns(3);
  }
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  ASSERT_EQ(handler_.requests.size(), 1u);
  EXPECT_EQ(handler_.requests[0].target, "/split");
  ASSERT_NE(handler_.requests[0].Header("x-long-name"), nullptr);
  EXPECT_EQ(*handler_.requests[0].Header("x-long-name"), "value");
  EXPECT_EQ(*handler_.requests[0].Header("host"), "x");
}

TEST_F(HttpServerTest, HeadersTooLargeAnswers431AndCloses) {
  ServerLimits limits;
  limits.max_header_bytes = 1024;
  StartServer(limits);
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 431);
  ASSERT_NE(rs[0].Header("connection"), nullptr);
  EXPECT_EQ(*rs[0].Header("connection"), "close");
  auto body = nlohmann::json::parse(rs[0].body, nullptr, false);
  ASSERT_FALSE(body.is_discarded());
  EXPECT_EQ(body["error"], "bad_request");
  EXPECT_TRUE(handler_.requests.empty());
  EXPECT_EQ(server_->stats().protocol_errors, 1u);
}

TEST_P(HttpServerTransportTest, BodyTooLargeByContentLengthAnswers413) {
  ServerLimits limits;
  limits.max_body_bytes = 16;
  StartServer(limits);
  auto c = Connect();
  c->Write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 413);
  EXPECT_EQ(*rs[0].Header("connection"), "close");
  EXPECT_TRUE(handler_.requests.empty());
  EXPECT_EQ(server_->stats().protocol_errors, 1u);
}

TEST_F(HttpServerTest, MalformedRequestAnswers400) {
  StartServer();
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 400);
  EXPECT_EQ(*rs[0].Header("connection"), "close");
  EXPECT_EQ(*rs[0].Header("content-type"), "application/json");
  auto body = nlohmann::json::parse(rs[0].body, nullptr, false);
  ASSERT_FALSE(body.is_discarded());
  EXPECT_EQ(body["error"], "bad_request");
  EXPECT_TRUE(handler_.requests.empty());
  EXPECT_EQ(server_->stats().protocol_errors, 1u);
}

TEST_F(HttpServerTest, ErrorAnswerWaitsForEarlierPipelinedAnswers) {
  StartServer();
  HoldRequests();
  auto c = Connect();
  c->Write("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 1 && server_->stats().protocol_errors == 1; }));
  RunTurns(3);
  EXPECT_EQ(c->received(), "");
  held_[0].Send(TextResponse("one"));
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].status, 200);
  EXPECT_EQ(rs[0].body, "one");
  EXPECT_EQ(rs[1].status, 400);
}

TEST_P(HttpServerTransportTest, SlowHeadersAnswer408AndClose) {
  ServerLimits limits;
  limits.header_timeout = Duration(50);
  StartServer(limits);
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 408);
  EXPECT_EQ(*rs[0].Header("connection"), "close");
  EXPECT_TRUE(handler_.requests.empty());
  EXPECT_EQ(server_->stats().timed_out, 1u);
  ASSERT_TRUE(RunUntil([&] { return server_->stats().open_connections == 0; }));
}

TEST_F(HttpServerTest, SlowBodyAnswers408) {
  ServerLimits limits;
  limits.header_timeout = Duration(50);
  StartServer(limits);
  auto c = Connect();
  c->Write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 408);
  EXPECT_TRUE(handler_.requests.empty());
}

TEST_F(HttpServerTest, IdleConnectionIsClosedSilently) {
  ServerLimits limits;
  limits.idle_timeout = Duration(50);
  StartServer(limits);
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 200);
  EXPECT_EQ(c->received().size(), c->received().find("\r\n\r\n") + 4 + rs[0].body.size()) << "nothing after";
  EXPECT_EQ(server_->stats().timed_out, 1u);
  ASSERT_TRUE(RunUntil([&] { return server_->stats().open_connections == 0; }));
}

TEST_F(HttpServerTest, RequestInFlightIsNotIdle) {
  ServerLimits limits;
  limits.idle_timeout = Duration(20);
  StartServer(limits);
  HoldRequests();
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 1; }));
  // Several idle periods pass while the handler works.
  bool waited = false;
  timers_.push_back(loop_.NewTimer());
  timers_.back()->Arm(Duration(100), [&] { waited = true; });
  ASSERT_TRUE(RunUntil([&] { return waited; }));
  EXPECT_TRUE(held_[0].connected());
  EXPECT_FALSE(c->eof());
  held_[0].Send(TextResponse("slow but fine"));
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  EXPECT_EQ(c->responses()[0].body, "slow but fine");
  // Then the idle clock runs again.
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  EXPECT_EQ(server_->stats().timed_out, 1u);
}

TEST_F(HttpServerTest, LargeResponseIsWrittenCompletely) {
  StartServer();
  const std::string big(4 * 1024 * 1024, 'x');
  handler_.on_request = [&](const HttpRequest&, Responder r) { r.Send(TextResponse(big)); };
  auto c = Connect();
  c->Write("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->received().size() > 2 * big.size() && c->responses().size() == 2; }));
  EXPECT_EQ(c->responses()[0].body, big);
  EXPECT_EQ(c->responses()[1].body, big);
}

TEST_F(HttpServerTest, ManyPipelinedRequestsAnsweredSynchronously) {
  StartServer();
  auto c = Connect();
  std::string batch;
  for (int i = 0; i < 500; ++i) batch += "GET /" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
  c->Write(batch);
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 500; }));
  auto rs = c->responses();
  for (int i = 0; i < 500; ++i) ASSERT_EQ(rs[i].body, "GET /" + std::to_string(i) + "\n");
  EXPECT_EQ(server_->stats().requests, 500u);
  EXPECT_FALSE(c->eof());
}

// Far more answers than the output buffer holds, all in one write, with the
// client reading as they come: the parse resumes whether the socket took the
// output at once (uv_try_write) or later (uv_write completion).
TEST_F(HttpServerTest, TenThousandPipelinedRequestsAreAllAnswered) {
  StartServer();
  constexpr int kRequests = 10000;
  const std::string padding(1000, 'p');  // about a cached token's size
  handler_.on_request = [&](const HttpRequest& req, Responder r) { r.Send(TextResponse(req.target + padding)); };
  auto c = Connect();
  std::string batch;
  for (int i = 0; i < kRequests; ++i) {
    char target[16];
    std::snprintf(target, sizeof target, "/%05d", i);  // same length each: answers of one size
    batch += std::string("GET ") + target + " HTTP/1.1\r\nHost: x\r\n\r\n";
  }
  c->Write(batch);
  ASSERT_TRUE(RunUntil([&] { return c->received().find("\r\n\r\n") != std::string::npos; }));
  const size_t answer_size = c->received().find("\r\n\r\n") + 4 + std::strlen("/00000") + padding.size();
  ASSERT_TRUE(RunUntil([&] { return c->received().size() >= answer_size * kRequests || c->eof(); }))
      << "answers received: " << c->received().size() / answer_size;
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    char target[16];
    std::snprintf(target, sizeof target, "/%05d", i);
    ASSERT_EQ(rs[i].body, target + padding) << "answer " << i;
  }
  EXPECT_EQ(server_->stats().requests, static_cast<uint64_t>(kRequests));
  EXPECT_FALSE(c->eof());
}

TEST_F(HttpServerTest, MaxConnectionsAnswers503WithRetryAfter) {
  ServerLimits limits;
  limits.max_connections = 1;
  StartServer(limits);
  auto first = Connect();
  first->Write("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return first->responses().size() == 1; }));

  auto second = Connect();
  second->Write("GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return second->eof(); }));
  auto rs = second->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 503);
  ASSERT_NE(rs[0].Header("retry-after"), nullptr);
  EXPECT_EQ(*rs[0].Header("retry-after"), "1");
  EXPECT_EQ(*rs[0].Header("connection"), "close");
  auto body = nlohmann::json::parse(rs[0].body, nullptr, false);
  ASSERT_FALSE(body.is_discarded());
  EXPECT_TRUE(body.contains("error"));
  EXPECT_TRUE(body.contains("error_description"));
  EXPECT_EQ(server_->stats().rejected_over_limit, 1u);
  EXPECT_EQ(server_->stats().open_connections, 1u);
  size_t warnings = 0;
  for (const auto& line : log_) warnings += line.find("max_connections (1) reached") != std::string::npos;
  EXPECT_EQ(warnings, 1u);

  // The admitted connection is unaffected.
  first->Write("GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return first->responses().size() == 2; }));
  EXPECT_EQ(handler_.requests.size(), 2u);

  // Once it goes, a new connection is served.
  first.reset();
  ASSERT_TRUE(RunUntil([&] { return server_->stats().open_connections == 0; }));
  auto third = Connect();
  third->Write("GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return third->responses().size() == 1; }));
  EXPECT_EQ(third->responses()[0].status, 200);
}

TEST_F(HttpServerTest, AtTheLimitEvictIdleClosesTheConnectionQuietLongest) {
  ServerLimits limits;
  limits.max_connections = 2;
  limits.evict_idle_at_limit = true;
  StartServer(limits);
  auto a = Connect();
  auto b = Connect();
  ASSERT_TRUE(RunUntil([&] { return server_->stats().open_connections == 2; }));
  a->Write("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");  // a was used since b came
  ASSERT_TRUE(RunUntil([&] { return a->responses().size() == 1; }));

  auto c = Connect();
  c->Write("GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  EXPECT_EQ(c->responses()[0].status, 200);
  ASSERT_TRUE(RunUntil([&] { return b->eof(); }));
  EXPECT_TRUE(b->received().empty()) << "closed silently, like an idle timeout";
  EXPECT_FALSE(a->eof());
  EXPECT_EQ(server_->stats().evicted_idle, 1u);
  EXPECT_EQ(server_->stats().rejected_over_limit, 0u);
  EXPECT_EQ(server_->stats().open_connections, 2u);
  size_t warnings = 0;
  for (const auto& line : log_) warnings += line.find("max_connections (2) reached") != std::string::npos;
  EXPECT_EQ(warnings, 1u);

  // A request that has not fully arrived is owed nothing either.
  c->Write("GET /partial HTTP/1.1\r\nHo");
  RunTurns(3);
  auto d = Connect();
  d->Write("GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return d->responses().size() == 1; }));
  EXPECT_EQ(d->responses()[0].status, 200);
  ASSERT_TRUE(RunUntil([&] { return a->eof() || c->eof(); }));
  EXPECT_TRUE(a->eof()) << "a was quiet longer than c";
  EXPECT_FALSE(c->eof());
  EXPECT_EQ(server_->stats().evicted_idle, 2u);
}

TEST_F(HttpServerTest, EvictIdleNeverClosesAConnectionOwedAnAnswer) {
  ServerLimits limits;
  limits.max_connections = 1;
  limits.evict_idle_at_limit = true;
  StartServer(limits);
  HoldRequests();
  auto busy = Connect();
  busy->Write("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 1; }));

  auto late = Connect();
  ASSERT_TRUE(RunUntil([&] { return late->eof(); }));
  ASSERT_EQ(late->responses().size(), 1u);
  EXPECT_EQ(late->responses()[0].status, 503);
  EXPECT_EQ(server_->stats().rejected_over_limit, 1u);
  EXPECT_EQ(server_->stats().evicted_idle, 0u);
  EXPECT_TRUE(held_[0].connected());
  held_[0].Send(TextResponse("still delivered"));
  ASSERT_TRUE(RunUntil([&] { return busy->responses().size() == 1; }));
  EXPECT_EQ(busy->responses()[0].body, "still delivered");
}

TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  StartServer();
  auto c = Connect();
  c->Write("GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].body, "GET /1\n");
  EXPECT_EQ(*rs[0].Header("connection"), "close");
  EXPECT_EQ(handler_.requests.size(), 1u);
  EXPECT_FALSE(handler_.requests[0].keep_alive);
}

TEST_F(HttpServerTest, Http10ClosesUnlessKeepAlive) {
  StartServer();
  auto plain = Connect();
  plain->Write("GET /old HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return plain->eof(); }));
  ASSERT_EQ(plain->responses().size(), 1u);
  EXPECT_EQ(*plain->responses()[0].Header("connection"), "close");

  auto ka = Connect();
  ka->Write("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return ka->responses().size() == 1; }));
  ASSERT_NE(ka->responses()[0].Header("connection"), nullptr);
  EXPECT_EQ(*ka->responses()[0].Header("connection"), "keep-alive");
  ka->Write("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return ka->responses().size() == 2; }));
  EXPECT_FALSE(ka->eof());
}

TEST_F(HttpServerTest, HandlerMayCloseAfterItsAnswer) {
  StartServer();
  handler_.on_request = [](const HttpRequest&, Responder r) {
    HttpResponse resp = TextResponse("bye");
    resp.close = true;
    resp.headers.emplace_back("X-Extra", "1");
    r.Send(std::move(resp));
  };
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  auto rs = c->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(*rs[0].Header("connection"), "close");
  EXPECT_EQ(*rs[0].Header("x-extra"), "1");
}

TEST_F(HttpServerTest, DroppedResponderAnswers500) {
  StartServer();
  handler_.on_request = [](const HttpRequest&, Responder) {};
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  EXPECT_EQ(c->responses()[0].status, 500);
  EXPECT_EQ(c->responses()[0].body, R"({"error":"unknown","error_description":"no response"})");

  // Dropped later, and overwritten by move-assignment: still answered.
  HoldRequests();
  c->Write("GET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 2; }));
  held_[0] = std::move(held_[1]);  // drops /2's responder
  held_.pop_back();
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 2; }));
  EXPECT_EQ(c->responses()[1].status, 500);
  held_.clear();
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 3; }));
  EXPECT_EQ(c->responses()[2].status, 500);
  EXPECT_FALSE(c->eof());
}

TEST_F(HttpServerTest, SendAfterClientResetIsNoOp) {
  StartServer();
  HoldRequests();
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 1; }));
  EXPECT_TRUE(held_[0].connected());
  c->Reset();
  ASSERT_TRUE(RunUntil([&] { return !held_[0].connected(); }));
  held_[0].Send(TextResponse("too late"));
  ASSERT_TRUE(RunUntil([&] { return server_->stats().open_connections == 0; }));
}

TEST_F(HttpServerTest, SendAfterClientCloseDoesNotCrash) {
  StartServer();
  HoldRequests();
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 1; }));
  c.reset();  // graceful close with the request in flight
  RunTurns(5);
  held_[0].Send(TextResponse("maybe nobody listens"));
  ASSERT_TRUE(RunUntil([&] { return server_->stats().open_connections == 0; }));
}

TEST_F(HttpServerTest, ExpectContinueGets100) {
  StartServer();
  auto c = Connect();
  c->Write("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->received().find("\r\n\r\n") != std::string::npos; }));
  EXPECT_EQ(c->received(), "HTTP/1.1 100 Continue\r\n\r\n");
  c->Write("abcde");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 2; }));
  EXPECT_EQ(c->responses()[1].status, 200);
  EXPECT_EQ(c->responses()[1].body, "POST /e\nabcde");
}

TEST_F(HttpServerTest, HeadAnswerHasNoBody) {
  StartServer();
  auto c = Connect();
  c->Write("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->received().find("\r\n\r\n") != std::string::npos; }));
  c->Write("GET /g HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->received().find("GET /g\n") != std::string::npos; }));
  const std::string& raw = c->received();
  size_t first_end = raw.find("\r\n\r\n") + 4;
  EXPECT_NE(raw.substr(0, first_end).find("Content-Length: 8\r\n"), std::string::npos);  // "HEAD /h\n"
  EXPECT_EQ(raw.compare(first_end, 9, "HTTP/1.1 "), 0) << "no body after a HEAD answer";
}

TEST_F(HttpServerTest, ShutdownDrainsInFlightRequestThenCallsDone) {
  StartServer();
  handler_.on_request = [this](const HttpRequest& req, Responder r) {
    if (req.target == "/slow") {
      held_.push_back(std::move(r));
    } else {
      r.Send(TextResponse("fast"));
    }
  };
  auto busy = Connect();
  auto idle = Connect();
  idle->Write("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return idle->responses().size() == 1; }));
  busy->Write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 1; }));

  bool done = false;
  server_->Shutdown(Duration(30000), [&] { done = true; });
  EXPECT_TRUE(server_->BoundPorts().empty());
  ASSERT_TRUE(RunUntil([&] { return idle->eof(); }));
  EXPECT_FALSE(done);
  EXPECT_FALSE(busy->eof());
  EXPECT_TRUE(held_[0].connected());

  held_[0].Send(TextResponse("finished"));
  ASSERT_TRUE(RunUntil([&] { return busy->eof(); }));
  auto rs = busy->responses();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].body, "finished");
  EXPECT_EQ(*rs[0].Header("connection"), "close");
  ASSERT_TRUE(RunUntil([&] { return done; }));
  EXPECT_EQ(server_->stats().open_connections, 0u);
}

void ExpectShutdown503(const ParsedResponse& r) {
  EXPECT_EQ(r.status, 503);
  ASSERT_NE(r.Header("retry-after"), nullptr);
  EXPECT_EQ(*r.Header("retry-after"), "1");
  auto body = nlohmann::json::parse(r.body, nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << r.body;
  EXPECT_EQ(body["error"], "temporarily_unavailable");
  EXPECT_TRUE(body["error_description"].is_string());
}

TEST_F(HttpServerTest, ShutdownDeadlineAnswers503ToWaitingRequests) {
  StartServer();
  HoldRequests();
  auto one = Connect();
  one->Write("GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
  // Pipelined: /b is answered but waits behind /a; /a and /c never are.
  auto three = Connect();
  three->Write("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 4; }));
  held_[2].Send(TextResponse("b"));  // held_: /never, /a, /b, /c
  bool done = false;
  server_->Shutdown(Duration(50), [&] { done = true; });
  ASSERT_TRUE(RunUntil([&] { return done; }));
  for (const Responder& r : held_) EXPECT_FALSE(r.connected());
  // The handlers' late answers change nothing.
  held_[0].Send(TextResponse("too late"));
  held_[1].Send(TextResponse("too late"));
  held_.clear();  // and dropping a Responder answers no 500 now
  ASSERT_TRUE(RunUntil([&] { return one->eof() && three->eof(); }));

  auto rs = one->responses();
  ASSERT_EQ(rs.size(), 1u);
  ExpectShutdown503(rs[0]);
  ASSERT_NE(rs[0].Header("connection"), nullptr);
  EXPECT_EQ(*rs[0].Header("connection"), "close");

  rs = three->responses();
  ASSERT_EQ(rs.size(), 3u) << three->received();
  ExpectShutdown503(rs[0]);
  EXPECT_EQ(rs[0].Header("connection"), nullptr) << "more answers follow on this connection";
  EXPECT_EQ(rs[1].status, 200);
  EXPECT_EQ(rs[1].body, "b");
  ExpectShutdown503(rs[2]);
  ASSERT_NE(rs[2].Header("connection"), nullptr);
  EXPECT_EQ(*rs[2].Header("connection"), "close");
  EXPECT_EQ(server_->stats().open_connections, 0u);
}

#ifndef _WIN32
// A client that never reads cannot hold the shutdown past the deadline's grace.
TEST_F(HttpServerTest, ShutdownGraceClosesAClientThatDoesNotRead) {
  ServerLimits limits;
  limits.drain_grace = Duration(50);
  StartServer(limits);
  const std::string big(8 * 1024 * 1024, 'x');
  handler_.on_request = [&](const HttpRequest& req, Responder r) {
    if (req.target == "/big") r.Send(TextResponse(big));
    else held_.push_back(std::move(r));
  };
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port_);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  // /big's 8 MiB answer waits behind /wait; after the 503 it fills the socket.
  const std::string requests = "GET /wait HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, requests.data(), requests.size(), 0), static_cast<ssize_t>(requests.size()));
  ASSERT_TRUE(RunUntil([&] { return handler_.requests.size() == 2; }));
  bool done = false;
  server_->Shutdown(Duration(20), [&] { done = true; });
  ASSERT_TRUE(RunUntil([&] { return done; }));
  EXPECT_FALSE(held_[0].connected());
  EXPECT_EQ(server_->stats().open_connections, 0u);
  ::close(fd);
}
#endif

TEST_F(HttpServerTest, ShutdownWithoutConnectionsCallsDoneLater) {
  StartServer();
  bool done = false;
  server_->Shutdown(Duration(1000), [&] { done = true; });
  EXPECT_FALSE(done) << "never inside Shutdown()";
  ASSERT_TRUE(RunUntil([&] { return done; }));
}

TEST_F(HttpServerTest, DestroyingServerWithOpenConnections) {
  StartServer();
  HoldRequests();
  auto c = Connect();
  c->Write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return held_.size() == 1; }));
  server_.reset();
  EXPECT_FALSE(held_[0].connected());
  held_[0].Send(TextResponse("server gone"));
  ASSERT_TRUE(RunUntil([&] { return c->eof(); }));
  EXPECT_TRUE(c->responses().empty());
}

TEST_F(HttpServerTest, ServesIpv6Loopback) {
  server_ = std::make_unique<HttpServer>(loop_.uv(), ServerLimits(), handler_, logger_);
  Status st = server_->Listen("::1", 0);
  if (!st.ok()) GTEST_SKIP() << "no IPv6 loopback: " << st.message();
  port_ = server_->BoundPorts()[0];
  EXPECT_EQ(server_->BoundAddresses(), std::vector<std::string>{"[::1]:" + std::to_string(port_)});
  auto c = Connect("::1");
  c->Write("GET /v6 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  ASSERT_EQ(handler_.requests.size(), 1u);
  EXPECT_TRUE(handler_.requests[0].peer_is_loopback);
  EXPECT_EQ(handler_.requests[0].peer.rfind("[::1]:", 0), 0u) << handler_.requests[0].peer;
}

TEST_F(HttpServerTest, ListenErrorsAreClear) {
  StartServer();
  HttpServer other(loop_.uv(), ServerLimits(), handler_, logger_);
  Status st = other.Listen("127.0.0.1", port_);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), "listen 127.0.0.1:" + std::to_string(port_) + ": address already in use");
  st = other.Listen("localhost", 80);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), "listen localhost:80: invalid address");
  EXPECT_TRUE(other.BoundPorts().empty());
}

#ifndef _WIN32
TEST_F(HttpServerTest, AdoptsListeningSocket) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);

  server_ = std::make_unique<HttpServer>(loop_.uv(), ServerLimits(), handler_, logger_);
  Status st = server_->Adopt(fd);
  ASSERT_TRUE(st.ok()) << st.message();
  port_ = server_->BoundPorts()[0];
  EXPECT_EQ(port_, ntohs(addr.sin_port));
  auto c = Connect();
  c->Write("GET /adopted HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  EXPECT_EQ(c->responses()[0].body, "GET /adopted\n");
}
#endif


// The caller's identity: looked up once per loopback connection, at accept.

class CountingResolver : public PeerResolver {
 public:
  PeerCredentials Resolve(const sockaddr_storage& peer, const sockaddr_storage& local) override {
    ++calls;
    peers.push_back(FormatAddress(peer));
    locals.push_back(FormatAddress(local));
    PeerCredentials c;
    c.known = true;
    c.uid = 4000 + static_cast<uint32_t>(calls);
    c.inode = 77;
    return c;
  }
  int calls = 0;
  std::vector<std::string> peers;
  std::vector<std::string> locals;
};

TEST_F(HttpServerTest, CallerIsResolvedOncePerConnection) {
  CountingResolver peers;
  StartServer(ServerLimits(), "127.0.0.1", &peers);
  auto c = Connect();
  for (int i = 1; i <= 3; ++i) {
    c->Write("GET /r HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(RunUntil([&] { return c->responses().size() == static_cast<size_t>(i); }));
  }
  auto d = Connect();
  d->Write("GET /r HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return d->responses().size() == 1; }));
  ASSERT_EQ(handler_.requests.size(), 4u);
  EXPECT_EQ(peers.calls, 2);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(handler_.requests[i].caller.known);
    EXPECT_EQ(handler_.requests[i].caller.uid, 4001u);
    EXPECT_EQ(handler_.requests[i].caller.inode, 77u);
  }
  EXPECT_EQ(handler_.requests[3].caller.uid, 4002u);
  // Asked with the client's address as the peer and the listener's as ours.
  ASSERT_EQ(peers.peers.size(), 2u);
  EXPECT_EQ(peers.peers[0], handler_.requests[0].peer);
  EXPECT_EQ(peers.peers[1], handler_.requests[3].peer);
  EXPECT_NE(peers.peers[0], peers.peers[1]);
  EXPECT_EQ(peers.locals, std::vector<std::string>(2, server_->BoundAddresses()[0]));
}

#ifndef _WIN32
TEST_F(HttpServerTest, CallerIsNotLookedUpForOtherPeers) {
  CountingResolver peers;
  StartServer(ServerLimits(), "127.0.0.1", &peers);
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  ASSERT_TRUE(server_->AdoptConnection(fds[0]).ok());
  const std::string request = "GET /pair HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::write(fds[1], request.data(), request.size()), static_cast<ssize_t>(request.size()));
  ASSERT_TRUE(RunUntil([&] { return handler_.requests.size() == 1; }));
  EXPECT_EQ(peers.calls, 0);
  EXPECT_FALSE(handler_.requests[0].caller.known);
  ::close(fds[1]);
}
#endif

#ifdef __linux__
// The real lookup (the server's own resolver): this process is the client.
TEST_F(HttpServerTest, CallerIsThisProcessOnIpv4AndIpv6Loopback) {
  for (const char* host : {"127.0.0.1", "::1"}) {
    SCOPED_TRACE(host);
    handler_.requests.clear();
    server_ = std::make_unique<HttpServer>(loop_.uv(), ServerLimits(), handler_, logger_);
    Status st = server_->Listen(host, 0);
    if (!st.ok() && std::string(host) == "::1") GTEST_SKIP() << "no IPv6 loopback: " << st.message();
    ASSERT_TRUE(st.ok()) << st.message();
    port_ = server_->BoundPorts()[0];
    auto c = Connect(host);
    c->Write("GET /who HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
    ASSERT_EQ(handler_.requests.size(), 1u);
    const PeerCredentials& caller = handler_.requests[0].caller;
    ASSERT_TRUE(caller.known) << "sock_diag answered nothing (is NETLINK_SOCK_DIAG available?)";
    EXPECT_EQ(caller.uid, ::getuid());
    EXPECT_NE(caller.inode, 0u);
  }
}

// A temporary system user (removed at the end, also on failure).
class TemporaryUser {
 public:
  TemporaryUser() : name_("mi-peer-test-" + std::to_string(::getpid())) {
    const std::string add = "useradd --system --no-create-home --shell /usr/sbin/nologin " + name_ + " >/dev/null 2>&1";
    if (std::system(add.c_str()) != 0) return;
    created_ = true;
    if (const passwd* pw = ::getpwnam(name_.c_str())) {
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      found_ = true;
    }
  }
  ~TemporaryUser() {
    if (!created_) return;
    const std::string del = "userdel " + name_ + " >/dev/null 2>&1";
    if (std::system(del.c_str()) != 0) ADD_FAILURE() << "could not remove the test user " << name_;
  }
  bool ok() const { return created_ && found_; }
  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }

 private:
  std::string name_;
  bool created_ = false;
  bool found_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

// A client run as another user: the handler sees that user, not the server's.
TEST_F(HttpServerTest, CallerIsTheUserOfAnotherProcess) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (creates a user and runs a client as it)";
  if (::access("/usr/sbin/useradd", X_OK) != 0 && ::access("/usr/bin/useradd", X_OK) != 0) {
    GTEST_SKIP() << "no useradd";
  }
  TemporaryUser user;
  ASSERT_TRUE(user.ok()) << "useradd failed";
  ASSERT_NE(user.uid(), ::getuid());
  StartServer(ServerLimits(), "127.0.0.1");
  handler_.on_request = [](const HttpRequest&, Responder r) {
    HttpResponse response = TextResponse("ok");
    response.close = true;
    r.Send(std::move(response));
  };
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only system calls from here: drop to the user, ask, read to EOF.
    if (::setgroups(0, nullptr) != 0 || ::setgid(user.gid()) != 0 || ::setuid(user.uid()) != 0) ::_exit(2);
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval timeout{10, 0};
    ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(3);
    static const char kRequest[] = "GET /who HTTP/1.1\r\nHost: x\r\n\r\n";
    if (::write(s, kRequest, sizeof kRequest - 1) != static_cast<ssize_t>(sizeof kRequest - 1)) ::_exit(4);
    char buf[512];
    ssize_t total = 0;
    for (ssize_t n; (n = ::read(s, buf, sizeof buf)) > 0;) total += n;
    ::_exit(total > 0 ? 0 : 5);
  }
  const bool answered = RunUntil([&] { return handler_.requests.size() == 1 && server_->stats().open_connections == 0; });
  int status = 0;
  if (!answered) ::kill(child, SIGKILL);
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(answered);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client status " << status;
  ASSERT_EQ(handler_.requests.size(), 1u);
  const PeerCredentials& caller = handler_.requests[0].caller;
  ASSERT_TRUE(caller.known);
  EXPECT_EQ(caller.uid, user.uid());
  EXPECT_NE(caller.uid, ::getuid());
}
#endif


#ifndef _WIN32
// --- Unix stream sockets ------------------------------------------------------

bool IsSocketFile(const std::string& path, mode_t* mode = nullptr) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  if (mode != nullptr) *mode = st.st_mode & 07777;
  return true;
}

// A socket file nobody listens on, as a crashed agent leaves it: bound, never
// listened on, closed.
void MakeStaleSocket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
  ASSERT_TRUE(IsSocketFile(path));
}

TEST_F(HttpServerTest, UnixSocketServesWithTheCallersCredentials) {
  StartUnixServer();
  EXPECT_EQ(server_->BoundAddresses(), std::vector<std::string>{"unix:" + unix_path_});
  EXPECT_EQ(server_->BoundPorts(), std::vector<uint16_t>{0});
  mode_t mode = 0;
  ASSERT_TRUE(IsSocketFile(unix_path_, &mode));
  EXPECT_EQ(mode, 0666u) << "any local user may connect; the policy decides what they get";
  auto c = Connect();
  for (int i = 1; i <= 2; ++i) {
    c->Write("GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n");
    ASSERT_TRUE(RunUntil([&] { return c->responses().size() == static_cast<size_t>(i); }));
  }
  EXPECT_EQ(server_->stats().accepted, 1u);
  ASSERT_EQ(handler_.requests.size(), 2u);
  for (const HttpRequest& r : handler_.requests) {
    EXPECT_EQ(r.transport, HttpRequest::Transport::kUnix);
    EXPECT_TRUE(r.peer_is_loopback);
#ifdef __linux__
    EXPECT_EQ(r.peer, "unix:pid=" + std::to_string(::getpid()));
    ASSERT_TRUE(r.caller.known);
    EXPECT_EQ(r.caller.uid, ::geteuid());
    EXPECT_EQ(r.caller.gid, ::getegid());
    EXPECT_EQ(r.caller.pid, static_cast<uint32_t>(::getpid()));
    EXPECT_EQ(r.caller.inode, 0u);
#endif
  }
}

TEST_F(HttpServerTest, UnixSocketFileIsRemovedAtShutdownAndDestruction) {
  StartUnixServer();
  bool done = false;
  server_->Shutdown(Duration(1000), [&] { done = true; });
  EXPECT_FALSE(IsSocketFile(unix_path_)) << "removed as soon as the server stops accepting";
  ASSERT_TRUE(RunUntil([&] { return done; }));

  StartUnixServer();  // the same path again
  ASSERT_TRUE(IsSocketFile(unix_path_));
  server_.reset();
  EXPECT_FALSE(IsSocketFile(unix_path_));
  EXPECT_EQ(::access(unix_path_.c_str(), F_OK), -1);
}

TEST_F(HttpServerTest, UnixSocketLeftByACrashIsReplaced) {
  const std::string path = TempDir() + "/token.sock";
  MakeStaleSocket(path);
  StartUnixServer();
  auto c = Connect();
  c->Write("GET /after-crash HTTP/1.1\r\nHost: localhost\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  EXPECT_EQ(c->responses()[0].body, "GET /after-crash\n");
}

TEST_F(HttpServerTest, UnixSocketInUseIsRefusedAndKept) {
  StartUnixServer();
  HttpServer other(loop_.uv(), ServerLimits(), handler_, logger_);
  Status st = other.ListenUnix(unix_path_);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), "listen unix:" + unix_path_ + ": address already in use (another process listens on it)");
  EXPECT_TRUE(other.BoundAddresses().empty());
  // The first server still has its socket and serves.
  ASSERT_TRUE(IsSocketFile(unix_path_));
  auto c = Connect();
  c->Write("GET /still HTTP/1.1\r\nHost: localhost\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
}

TEST_F(HttpServerTest, UnixSocketPathThatIsNotASocketIsRefused) {
  server_ = std::make_unique<HttpServer>(loop_.uv(), ServerLimits(), handler_, logger_);
  const std::string file = TempDir() + "/config.json";
  {
    FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("{}", f);
    std::fclose(f);
  }
  Status st = server_->ListenUnix(file);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), "listen unix:" + file + ": the path exists and is not a socket");
  EXPECT_EQ(::access(file.c_str(), F_OK), 0) << "a regular file is never removed";

  // A symlink to a stale socket: refused, and neither it nor its target removed.
  const std::string target = TempDir() + "/stale.sock";
  const std::string link = TempDir() + "/link.sock";
  MakeStaleSocket(target);
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  st = server_->ListenUnix(link);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), "listen unix:" + link + ": the path exists and is not a socket");
  struct stat ls;
  ASSERT_EQ(::lstat(link.c_str(), &ls), 0);
  EXPECT_TRUE(S_ISLNK(ls.st_mode));
  EXPECT_TRUE(IsSocketFile(target));

  st = server_->ListenUnix(TempDir() + "/" + std::string(200, 'x'));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("expected a path of 1 to"), std::string::npos) << st.message();
  EXPECT_TRUE(server_->BoundAddresses().empty());
}

TEST_F(HttpServerTest, AdoptsListeningUnixSocketAndLeavesItsFile) {
  const std::string path = TempDir() + "/activated.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 16), 0);

  server_ = std::make_unique<HttpServer>(loop_.uv(), ServerLimits(), handler_, logger_);
  Status st = server_->Adopt(fd);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(server_->BoundAddresses(), std::vector<std::string>{"unix:" + path});
  unix_path_ = path;
  auto c = Connect();
  c->Write("GET /adopted HTTP/1.1\r\nHost: localhost\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return c->responses().size() == 1; }));
  ASSERT_EQ(handler_.requests.size(), 1u);
  EXPECT_EQ(handler_.requests[0].transport, HttpRequest::Transport::kUnix);
  c.reset();
  server_.reset();
  EXPECT_TRUE(IsSocketFile(path)) << "the service manager's socket file is not ours to remove";
}

#ifdef __linux__
// A client forked as another uid and gid: SO_PEERCRED names them and its pid.
TEST_F(HttpServerTest, UnixCallerIsTheUidAndPidOfAnotherProcess) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (runs a client as another uid)";
  // Ids no account or group has: the client runs as nobody real.
  uid_t uid = 4242;
  while (::getpwuid(uid) != nullptr) ++uid;
  gid_t gid = 4343;
  while (::getgrgid(gid) != nullptr) ++gid;
  StartUnixServer();
  handler_.on_request = [](const HttpRequest&, Responder r) {
    HttpResponse response = TextResponse("ok");
    response.close = true;
    r.Send(std::move(response));
  };
  const std::string path = unix_path_;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only system calls from here: drop to the ids, ask, read to EOF.
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) {
      ::_exit(2);
    }
    int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    timeval timeout{10, 0};
    ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(3);
    static const char kRequest[] = "GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if (::write(s, kRequest, sizeof kRequest - 1) != static_cast<ssize_t>(sizeof kRequest - 1)) ::_exit(4);
    char buf[512];
    ssize_t total = 0;
    for (ssize_t n; (n = ::read(s, buf, sizeof buf)) > 0;) total += n;
    ::_exit(total > 0 ? 0 : 5);
  }
  const bool answered = RunUntil([&] { return handler_.requests.size() == 1 && server_->stats().open_connections == 0; });
  int status = 0;
  if (!answered) ::kill(child, SIGKILL);
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(answered);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client status " << status;
  ASSERT_EQ(handler_.requests.size(), 1u);
  const HttpRequest& r = handler_.requests[0];
  ASSERT_TRUE(r.caller.known);
  EXPECT_EQ(r.caller.uid, uid);
  EXPECT_EQ(r.caller.gid, gid);
  EXPECT_EQ(r.caller.pid, static_cast<uint32_t>(child));
  EXPECT_EQ(r.peer, "unix:pid=" + std::to_string(child));
}
#endif  // __linux__
#endif  // !_WIN32

}  // namespace
}  // namespace mi::proxy
