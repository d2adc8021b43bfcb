// libFuzzer target: raw bytes from a caller through the real HttpServer (llhttp,
// framing, pipelining, limits, back-pressure) and the real TokenApi (the token
// endpoints' checks), with a FakeBroker that answers from memory.
//
// Per input: a socketpair(); one end goes to the server (AdoptConnection), the
// other is the client, which writes the input, half-closes and reads until the
// server closes. One loop, one server and one broker serve every input, so an
// input costs a socketpair and a few loop turns, and no TCP port (TIME_WAIT
// would run out of them at millions of inputs).
//
// Beyond the sanitizers, every input must end with:
//  * the loop idle and the connection closed (nothing wedged or leaked);
//  * the bytes written back a well-formed sequence of HTTP/1.1 responses
//    (parsed with llhttp), ending with a complete response;
//  * one final answer per request the handler saw, plus at most one protocol
//    error answer (400/413/431/505) at the end.
#include <signal.h>
#include <sys/socket.h>
#include <uv.h>
#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/token.h"
#include "agent/token_broker.h"
#include "proxy/http/http_server.h"
#include "proxy/token_api.h"

namespace mi::proxy {
namespace {

constexpr int64_t kNow = 1795373045;

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "http_request_fuzz: %s\n", what);
  std::abort();
}

void Must(bool ok, const char* what) {
  if (!ok) Die(what);
}

class FixedClock : public Clock {
 public:
  TimePoint Now() const override { return FromEpochSeconds(kNow); }
};

std::shared_ptr<const Token> MakeToken(const char* access, int64_t lifetime) {
  auto token = Token::FromImdsBody(
      std::string(R"({"access_token":")") + access + R"(","refresh_token":"","expires_in":"86399","expires_on":")" +
          std::to_string(kNow + lifetime) + R"(","not_before":")" + std::to_string(kNow - 1) +
          R"(","resource":"https://management.azure.com/","token_type":"Bearer","client_id":"c0ffee00-0000-4000-8000-000000000001"})");
  Must(token.ok(), "the broker's token does not parse");
  return *token;
}

// Answers from memory. The cached key (the default identity for
// https://management.azure.com/) is a hit; every other key is a miss whose
// answer the resource picks, so one input can mix hits, synchronous answers and
// answers on a later loop turn (out of order with later pipelined requests).
class FakeBroker : public TokenBroker {
 public:
  explicit FakeBroker(uv_loop_t* loop) : cached_(MakeToken("fuzz-cached", 3600)), fresh_(MakeToken("fuzz-fresh", 86400)) {
    Must(uv_timer_init(loop, &timer_) == 0, "uv_timer_init");
    timer_.data = this;
  }

  const Token* Lookup(const TokenKey& key) override {
    if (key.kind == SelectorKind::kDefault && key.resource == "https://management.azure.com/") return cached_.get();
    return nullptr;
  }

  void Get(const TokenKey& key, CallerTag, Callback callback, StillWaiting) override {
    TokenResult r;
    const std::string_view resource = key.resource;
    if (resource.rfind("https://shed", 0) == 0) {  // shedding: answered inside Get
      r.kind = TokenResult::Kind::kShed;
      r.retry_after_seconds = 3;
      return callback(r);
    }
    if (resource.rfind("https://rejected", 0) == 0) {  // cached 4xx: inside Get too
      r.kind = TokenResult::Kind::kRejected;
      r.status = 400;
      r.body = R"({"error":"invalid_request","error_description":"Identity not found"})";
      return callback(r);
    }
    if (resource.rfind("https://unavailable", 0) == 0) {
      r.kind = TokenResult::Kind::kUnavailable;
      r.description = "IMDS timed out";
    } else {
      r.kind = TokenResult::Kind::kToken;
      r.token = fresh_;
    }
    pending_.emplace_back(std::move(callback), std::move(r));
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) == 0) {
      Must(uv_timer_start(&timer_, &FakeBroker::OnTimer, 0, 0) == 0, "uv_timer_start");
    }
  }

 private:
  static void OnTimer(uv_timer_t* timer) {
    auto* self = static_cast<FakeBroker*>(timer->data);
    self->running_.swap(self->pending_);
    for (auto& [callback, result] : self->running_) callback(result);
    self->running_.clear();
  }

  std::shared_ptr<const Token> cached_;
  std::shared_ptr<const Token> fresh_;
  uv_timer_t timer_;  // "IMDS answered": a later loop turn
  std::vector<std::pair<Callback, TokenResult>> pending_;
  std::vector<std::pair<Callback, TokenResult>> running_;
};

// Notes each request's method (HEAD answers have no body) before the token API sees it.
class RecordingHandler : public HttpHandler {
 public:
  explicit RecordingHandler(HttpHandler* next) : next_(next) {}
  void OnRequest(const HttpRequest& request, Responder responder) override {
    heads.push_back(request.method == "HEAD");
    next_->OnRequest(request, std::move(responder));
  }
  std::vector<bool> heads;

 private:
  HttpHandler* next_;
};

// Checks the server's output: llhttp in response mode over all of it.
class ResponseChecker {
 public:
  ResponseChecker() {
    llhttp_settings_init(&settings_);
    settings_.on_headers_complete = [](llhttp_t* p) -> int {
      auto* self = static_cast<ResponseChecker*>(p->data);
      const int status = llhttp_get_status_code(p);
      if (status < 200) return 0;  // 100 Continue: no body, not an answer
      const size_t k = self->finals_++;
      return k < self->heads_->size() && (*self->heads_)[k] ? 1 : 0;  // 1: no body follows (HEAD)
    };
  }

  // Returns the number of final (non-1xx) responses, or aborts.
  size_t Check(const std::string& out, const std::vector<bool>& heads) {
    heads_ = &heads;
    finals_ = 0;
    llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
    parser_.data = this;
    if (out.empty()) return 0;
    llhttp_errno_t err = llhttp_execute(&parser_, out.data(), out.size());
    if (err == HPE_OK) err = llhttp_finish(&parser_);
    if (err != HPE_OK) {
      std::fprintf(stderr, "http_request_fuzz: malformed output (%s: %s):\n%s\n", llhttp_errno_name(err),
                   llhttp_get_error_reason(&parser_), out.c_str());
      Die("the server wrote something that is not a sequence of complete HTTP responses");
    }
    return finals_;
  }

 private:
  llhttp_settings_t settings_;
  llhttp_t parser_;
  const std::vector<bool>* heads_ = nullptr;
  size_t finals_ = 0;
};

// The client end of one socketpair, as a libuv pipe on the same loop.
struct Client {
  uv_pipe_t pipe;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  std::string received;
  bool closing = false;
  bool closed = false;

  void Close() {
    if (closing) return;
    closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&pipe), [](uv_handle_t* h) { static_cast<Client*>(h->data)->closed = true; });
  }
};

struct Harness {
  Harness() {
    Must(uv_loop_init(&loop) == 0, "uv_loop_init");
    // The debug lines are built too (into nowhere); plain text, since every
    // input logs one (TCP_NODELAY fails on an AF_UNIX socket).
    logger.set_level(LogLevel::kDebug);
    logger.set_format(LogFormat::kText);
    logger.set_sink([](std::string_view) {});
    // Small limits so that short inputs reach them (431, 413, back-pressure).
    limits.max_header_bytes = 1024;
    limits.max_body_bytes = 512;
    limits.max_pipelined = 4;
    // A socketpair peer is never loopback: serve it anyway, or every request
    // would stop at the 401 and the checks behind it would go unfuzzed.
    // Absolute-form targets on, since that path is a superset of origin-form.
    TokenApi::Options options;
    options.allow_remote = true;
    options.absolute_form = true;
    broker = std::make_unique<FakeBroker>(&loop);
    api = std::make_unique<TokenApi>(broker.get(), &clock, options);
    recorder = std::make_unique<RecordingHandler>(api.get());
    server = std::make_unique<HttpServer>(&loop, limits, *recorder, logger);
    client.received.reserve(64 * 1024);
    print = std::getenv("MI_FUZZ_PRINT") != nullptr;  // show each exchange (reproducing a crash)
  }

  void Run(const uint8_t* data, size_t size) {
    recorder->heads.clear();
    client.received.clear();
    client.closing = client.closed = false;

    int fds[2];
    Must(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0, "socketpair");
    Status s = server->AdoptConnection(fds[0]);
    if (!s.ok()) Die(s.message().c_str());
    Must(uv_pipe_init(&loop, &client.pipe, 0) == 0, "uv_pipe_init");
    client.pipe.data = &client;
    Must(uv_pipe_open(&client.pipe, fds[1]) == 0, "uv_pipe_open");
    auto* stream = reinterpret_cast<uv_stream_t*>(&client.pipe);
    client.write_req.data = client.shutdown_req.data = &client;
    if (size > 0) {
      // libuv does not write through the buffer; the input outlives uv_run below.
      uv_buf_t buf = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(data)), static_cast<unsigned>(size));
      Must(uv_write(&client.write_req, stream, &buf, 1, [](uv_write_t*, int) {}) == 0, "uv_write");
    }
    // Half-close once the bytes are out: the server answers what it has, then closes.
    Must(uv_shutdown(&client.shutdown_req, stream, [](uv_shutdown_t*, int) {}) == 0, "uv_shutdown");
    Must(uv_read_start(
             stream,
             [](uv_handle_t*, size_t, uv_buf_t* buf) {
               *buf = uv_buf_init(read_buffer, static_cast<unsigned>(sizeof read_buffer));
             },
             [](uv_stream_t* st, ssize_t n, const uv_buf_t* buf) {
               auto* c = static_cast<Client*>(st->data);
               if (n > 0) c->received.append(buf->base, static_cast<size_t>(n));
               if (n < 0) c->Close();  // EOF (the server closed) or reset
             }) == 0,
         "uv_read_start");

    uv_run(&loop, UV_RUN_DEFAULT);

    Must(client.closed, "the loop went idle before the server closed the connection");
    Must(server->stats().open_connections == 0, "a connection is still open after the loop went idle");
    if (print) {
      std::fprintf(stderr, "--- %zu bytes in, %zu requests handled, answer:\n%s\n", size, recorder->heads.size(),
                   client.received.c_str());
    }
    const size_t handled = recorder->heads.size();
    const size_t answers = checker.Check(client.received, recorder->heads);
    if (answers != handled && answers != handled + 1) {
      std::fprintf(stderr, "http_request_fuzz: %zu requests, %zu answers:\n%s\n", handled, answers,
                   client.received.c_str());
      Die("answers do not match requests");
    }
  }

  static char read_buffer[64 * 1024];
  bool print = false;
  uv_loop_t loop;
  FixedClock clock;
  Logger logger;
  ServerLimits limits;
  std::unique_ptr<FakeBroker> broker;
  std::unique_ptr<TokenApi> api;
  std::unique_ptr<RecordingHandler> recorder;
  std::unique_ptr<HttpServer> server;
  Client client;
  ResponseChecker checker;
};

char Harness::read_buffer[64 * 1024];

// Lives for the whole process (reachable, so not a leak).
Harness* harness = nullptr;

}  // namespace
}  // namespace mi::proxy

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);  // the server's contract: a client may vanish mid-write
  mi::proxy::harness = new mi::proxy::Harness();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mi::proxy::harness->Run(data, size);
  return 0;
}
