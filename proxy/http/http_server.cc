#include "proxy/http/http_server.h"

#include <llhttp.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "agent/base/uv_handle.h"

// Object model (see the contract in http_server.h):
//
//  ServerCore (== HttpServer::Impl) owns the listeners, a uv_check + uv_idle
//  pair that runs one "turn" per loop iteration while some connection has work,
//  the shutdown deadline timer, the set of every Connection not yet deleted,
//  and the idle list (connections owing their client nothing, quiet longest
//  first: whom evict_idle_at_limit closes).
//
//  Connection is heap-allocated and owns its uv_tcp_t inline; it is deleted in
//  the tcp handle's close callback, which libuv runs after every write/shutdown
//  callback of the handle and never inside another callback of this connection
//  (deferred delete). Close() only starts that: after it the object stays valid
//  but inert (closed_), so code on the stack below a callback may still look at
//  it. Its timer is a UvHandle (freed on its own close callback).
//
//  Each request occupies a Slot in the connection's FIFO. The handler gets a
//  Responder holding the only reference to an Exchange, which points back at
//  the connection and the slot while both are alive. Destroying an unanswered
//  Exchange (Responder dropped, or overwritten by move-assignment) answers 500.
//  Closing or abandoning the connection, or answering 503 at the shutdown
//  deadline, detaches the Exchange first, so a late Send() is a no-op.
//
//  Output: answered slots at the head of the FIFO are serialized into out_;
//  the turn flushes out_ with one write per connection (uv_try_write first,
//  uv_write for the rest). Parsing, resuming after back-pressure, flushing,
//  closing and timer updates all happen in Connection::Service(), run from the
//  turn, so nothing re-enters llhttp or frees a connection from inside the
//  handler.

namespace mi::proxy {
namespace detail {

class Connection;
class ServerCore;

namespace {

constexpr int kBacklog = 1024;
constexpr size_t kReadBufferSize = 64 * 1024;
// Stop reading a connection whose client does not read its answers.
constexpr size_t kMaxBufferedOutput = 256 * 1024;
// Rounds of "parse until the output is full, write it" one connection gets per
// loop turn (about this many times kMaxBufferedOutput of answers).
constexpr int kParseRoundsPerTurn = 4;
// After the final response: half-close, then read and discard for at most this
// long so unread request bytes do not turn our close into a reset that destroys
// the response at the client.
constexpr Duration kLingerTimeout{2000};
// Connections being answered 503 beyond max_connections; past this they are
// closed without an answer.
constexpr size_t kMaxRejecting = 256;
// Flood warnings (max_connections reached, accept failing) at most once per this.
constexpr uint64_t kLogIntervalMs = 60000;

constexpr std::string_view k100Continue = "HTTP/1.1 100 Continue\r\n\r\n";

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

bool IsOws(char c) { return c == ' ' || c == '\t'; }

void AppendNumber(std::string* out, uint64_t n) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof buf, n);
  out->append(buf, static_cast<size_t>(res.ptr - buf));
}

// A plain loop: std::string::find_first_of(const char*) calls memchr once per
// character of the string, which showed up at ~5% of a cached answer's
// instructions (Content-Type is checked on every response).
bool HasLineBreak(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n') return true;
  }
  return false;
}

// Extra headers must not smuggle framing or line breaks into the response.
bool ExtraHeaderAllowed(const std::string& name, const std::string& value) {
  if (name.empty()) return false;
  if (name.find_first_of(":\r\n ") != std::string::npos) return false;
  if (HasLineBreak(value)) return false;
  return !EqualsIgnoreCase(name, "content-length") && !EqualsIgnoreCase(name, "connection") &&
         !EqualsIgnoreCase(name, "transfer-encoding");
}

// Appends a string literal with its length known at compile time (no strlen).
template <size_t N>
void AppendLiteral(std::string* out, const char (&text)[N]) {
  out->append(text, N - 1);
}

void Serialize(std::string* out, const HttpResponse& r, bool head_request, bool close, bool keep_alive_header) {
  int status = (r.status >= 100 && r.status <= 999) ? r.status : 500;
  // 1xx, 204 and 304 carry no body (RFC 9110 6.4.1).
  bool bodyless = status < 200 || status == 204 || status == 304;
  if (status == 200) {
    AppendLiteral(out, "HTTP/1.1 200 OK\r\n");  // every cached token: one append
  } else {
    AppendLiteral(out, "HTTP/1.1 ");
    AppendNumber(out, static_cast<uint64_t>(status));
    out->push_back(' ');
    out->append(ReasonPhrase(status));
    AppendLiteral(out, "\r\n");
  }
  if (!bodyless) {
    if (!r.content_type.empty() && !HasLineBreak(r.content_type)) {
      AppendLiteral(out, "Content-Type: ");
      out->append(r.content_type);
      AppendLiteral(out, "\r\n");
    }
    AppendLiteral(out, "Content-Length: ");
    AppendNumber(out, r.body.size());
    AppendLiteral(out, "\r\n");
  }
  for (const auto& [name, value] : r.headers) {
    if (!ExtraHeaderAllowed(name, value)) continue;
    out->append(name);
    AppendLiteral(out, ": ");
    out->append(value);
    AppendLiteral(out, "\r\n");
  }
  if (close) {
    AppendLiteral(out, "Connection: close\r\n");
  } else if (keep_alive_header) {
    AppendLiteral(out, "Connection: keep-alive\r\n");
  }
  AppendLiteral(out, "\r\n");
  if (!bodyless && !head_request) out->append(r.body);
}

bool IsLoopback(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    return reinterpret_cast<const uint8_t*>(&a->sin_addr)[0] == 127;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&a->sin6_addr);
    static const uint8_t kLoopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (std::memcmp(b, kLoopback, 16) == 0) return true;
    // ::ffff:127.0.0.0/104 (v4-mapped loopback)
    for (int i = 0; i < 10; ++i) {
      if (b[i] != 0) return false;
    }
    return b[10] == 0xff && b[11] == 0xff && b[12] == 127;
  }
  return false;
}

uint16_t PortOf(const sockaddr_storage& ss) {
  const uint8_t* p = nullptr;
  if (ss.ss_family == AF_INET) {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  } else {
    return 0;
  }
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}

// "127.0.0.1:50342" or "[::1]:50342"; empty if the family is unknown.
std::string FormatAddress(const sockaddr_storage& ss) {
  char ip[64] = {0};
  std::string out;
  if (ss.ss_family == AF_INET) {
    if (uv_ip4_name(reinterpret_cast<const sockaddr_in*>(&ss), ip, sizeof ip) != 0) return out;
    out = ip;
  } else if (ss.ss_family == AF_INET6) {
    if (uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(&ss), ip, sizeof ip) != 0) return out;
    out = "[";
    out += ip;
    out += "]";
  } else {
    return out;
  }
  out.push_back(':');
  AppendNumber(&out, PortOf(ss));
  return out;
}

std::string UvError(int rc) { return uv_strerror(rc); }

// For libuv calls that cannot fail on an initialised, open handle (or fail
// only on resource exhaustion at start-up): nothing sensible to do but stop.
void MustUv(int rc, const char* what) {
  if (rc != 0) {
    std::fprintf(stderr, "mi-agent: fatal: %s: %s\n", what, uv_strerror(rc));
    std::abort();
  }
}

}  // namespace

// One request's place in the response order.
struct Slot {
  enum class Kind : uint8_t { kRequest, kInterim, kError };
  Kind kind = Kind::kRequest;
  bool answered = false;
  bool head = false;        // HEAD request: no body in the answer
  bool keep_alive = true;   // the request allows another after it
  bool http10 = false;      // HTTP/1.0 keep-alive needs an explicit header
  Exchange* exchange = nullptr;  // the unanswered Exchange, if any
  std::optional<HttpResponse> response;  // answered out of order: waits here
};

struct Exchange {
  Exchange(Connection* c, Slot* s) : conn(c), slot(s) {}
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;
  ~Exchange();
  void Send(HttpResponse&& response);
  void Abort();

  // Both null once answered or once the connection dropped the request.
  Connection* conn;
  Slot* slot;
};

class ServerCore {
 public:
  ServerCore(uv_loop_t* loop, const ServerLimits& limits, HttpHandler* handler, Logger* logger);
  ~ServerCore();
  ServerCore(const ServerCore&) = delete;
  ServerCore& operator=(const ServerCore&) = delete;

  Status Listen(const std::string& host, uint16_t port);
  Status Adopt(uv_os_sock_t fd);
  std::vector<std::string> BoundAddresses() const;
  std::vector<uint16_t> BoundPorts() const;
  void StopAccepting();
  void Shutdown(Duration deadline, std::function<void()> done);
  Status AdoptConnection(uv_os_sock_t fd);

  // For connections.
  void Schedule(Connection* c);
  void OnConnectionClosing(Connection* c);  // Close() started
  // The idle list: connections that owe their client nothing, the one quiet
  // longest first. Relisting moves a connection to the back.
  void ListIdle(Connection* c);
  void UnlistIdle(Connection* c);
  void Forget(Connection* c);               // about to be deleted
  void NoteOverLimit();
  bool LogOn(LogLevel level) const { return logger_ != nullptr && logger_->Enabled(level); }
  void Log(LogLevel level, std::string_view message) {
    if (logger_ != nullptr) logger_->Log(level, message);
  }

  uv_loop_t* const loop_;
  ServerLimits limits_;
  HttpHandler* const handler_;
  Logger* const logger_;
  ServerStats stats_;
  std::unique_ptr<char[]> read_buffer_;
  size_t rejecting_ = 0;

 private:
  static void OnConnectionCb(uv_stream_t* listener, int status) noexcept;
  void OnConnection(uv_stream_t* listener, int status);
  void Admit(Connection* c);
  Status StartListener(std::unique_ptr<UvHandle<uv_tcp_t>> listener, const std::string& what);
  void StartTurn();
  void StopTurn();
  void OnTurn();
  void StartDeadlineTimer(Duration delay);
  void OnDeadline();
  void MaybeFinishShutdown();
  // evict_idle_at_limit: closes the first idle-listed connection that still
  // owes nothing; false if there is none.
  bool EvictIdlest();

  std::vector<std::unique_ptr<UvHandle<uv_tcp_t>>> listeners_;
  std::unordered_set<Connection*> connections_;  // every Connection not yet deleted
  std::vector<Connection*> dirty_;
  std::vector<Connection*> servicing_;
  Connection* idle_head_ = nullptr;
  Connection* idle_tail_ = nullptr;
  UvHandle<uv_check_t> check_;
  UvHandle<uv_idle_t> idle_;
  bool turn_active_ = false;
  UvHandle<uv_timer_t> deadline_timer_;
  bool shutting_down_ = false;
  bool deadline_passed_ = false;  // the 503s are out; the timer now bounds the grace
  bool done_pending_ = false;
  std::function<void()> shutdown_done_;
  // Warnings that a flood could repeat are logged at most once per interval.
  struct Throttle {
    bool logged = false;
    uint64_t at = 0;
  };
  bool ShouldLog(Throttle* t);
  Throttle over_limit_log_;
  Throttle evict_log_;
  Throttle accept_error_log_;
};

class Connection {
 public:
  explicit Connection(ServerCore* server);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool InitTcp();
  bool InitTimer();
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  void Start();
  void Reject();
  void Drain();
  // The drain deadline: answers 503 to every request still waiting (answers
  // already given go out first, in order) and closes after the last. Returns
  // how many requests it answered.
  size_t RefuseWaiting();
  // Starts closing; the object is deleted in the tcp close callback. With
  // `reset`, the peer sees a TCP reset instead of an orderly close.
  // REQUIRES: InitTcp() succeeded.
  void Close(bool reset = false);
  // Responder::Abort(): reset the connection on the next turn, unanswered.
  void Abort();
  // The server is going away: no more calls into it.
  void Detach() { server_ = nullptr; }
  void Service();
  void Answer(Slot* slot, HttpResponse&& response);

  bool closed() const { return closed_; }
  bool peer_closed() const { return peer_eof_; }
  bool counted() const { return counted_; }
  bool rejecting() const { return rejecting_; }
  // Nothing owed to the client: no request handed to the handler is waiting
  // for its answer and nothing is left to write (a request still arriving has
  // not been handed over). Closing it loses no answer.
  bool OwesNothing() const {
    return counted_ && !closed_ && !rejecting_ && !lingering_ && !close_after_write_ && !write_in_flight_ &&
           fifo_.empty() && out_.empty();
  }
  bool dirty = false;
  // ServerCore's idle list.
  bool idle_listed = false;
  Connection* idle_prev = nullptr;
  Connection* idle_next = nullptr;

 private:
  enum class TimerMode : uint8_t { kNone, kIdle, kRequest, kLinger };

  const ServerLimits& limits() const { return server_->limits_; }
  // Another request may be dispatched: few enough in flight, and the client
  // is reading what we already owe it.
  bool HasRoom() const {
    return fifo_.size() < std::max<size_t>(1, limits().max_pipelined) &&
           out_.size() + writing_.size() < kMaxBufferedOutput;
  }
  // Parsing stopped for back-pressure and may go on now.
  bool CanResumeParse() const { return parse_paused_ && !stop_parsing_ && !draining_ && HasRoom(); }
  void Schedule() {
    if (server_ != nullptr && !closed_) server_->Schedule(this);
  }

  // Parsing.
  void ParseInput(const char* data, size_t len);
  void ParsePending();
  size_t Execute(const char* data, size_t len);
  void ParseError(llhttp_errno_t err);
  void RespondError(int status, std::string_view error, std::string_view description);
  void ResetRequest();
  int HeadSpan(const char* at, size_t len);
  int Fail(int status, const char* description);

  int OnMessageBegin();
  int OnMethod(const char* at, size_t len) { return HeadSpan(at, len); }
  int OnUrl(const char* at, size_t len);
  int OnVersion(const char* at, size_t len) { return HeadSpan(at, len); }
  int OnHeaderField(const char* at, size_t len);
  int OnHeaderValue(const char* at, size_t len);
  int OnHeaderValueComplete();
  int OnHeadersComplete();
  int OnBody(const char* at, size_t len);
  int OnMessageComplete();

  // Output.
  void PushAnswered(Slot::Kind kind, std::optional<HttpResponse> response);
  void EmitFront(const HttpResponse* direct);
  void MoveReady();
  void AbandonFifo();
  void Flush();
  void AfterWrite();
  void BeginLinger();

  // Reading and timers.
  bool StartReading();
  void StopReading();
  void ArmTimer(TimerMode mode, Duration delay);
  void UpdateTimer();
  void OnTimer();

  static void OnAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) noexcept;
  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void OnWrite(uv_write_t* req, int status) noexcept;
  static void OnShutdown(uv_shutdown_t* req, int status) noexcept;
  static void OnClosed(uv_handle_t* handle) noexcept;
  static void OnTimerCb(uv_timer_t* timer) noexcept;
  void HandleRead(ssize_t nread, const uv_buf_t* buf);

  static const llhttp_settings_t kSettings;
  static llhttp_settings_t MakeSettings();
  static Connection* From(llhttp_t* p) { return static_cast<Connection*>(p->data); }

  ServerCore* server_;
  uv_tcp_t tcp_;  // initialised before the object is handed to anyone (InitTcp)
  UvHandle<uv_timer_t> timer_;
  uv_write_t write_req_;
  uv_shutdown_t shutdown_req_;
  llhttp_t parser_;

  // Lifecycle.
  bool closed_ = false;
  bool counted_ = false;     // in stats.open_connections
  bool rejecting_ = false;   // answering 503 over max_connections
  bool draining_ = false;    // server shutdown: finish in-flight requests, then close
  bool peer_eof_ = false;    // client half-closed: answer what we have, then close
  bool reading_ = false;
  bool lingering_ = false;
  bool close_after_write_ = false;
  bool aborting_ = false;    // Responder::Abort(): reset on the next Service()

  // Parser state.
  bool stop_parsing_ = false;  // close-request, error or upgrade seen: ignore further input
  bool parse_paused_ = false;  // llhttp paused at a message end; input kept in pending_in_
  bool in_message_ = false;    // first byte of a request seen, message not complete
  bool in_head_ = false;       // request line + headers not complete
  bool http10_ = false;
  int error_status_ = 0;       // set by a callback before it fails the parse
  const char* error_description_ = nullptr;
  size_t head_bytes_ = 0;
  const char* head_start_ = nullptr;  // start of the uncounted head bytes in the current segment
  const char* last_end_ = nullptr;    // end of the last head span in the current segment
  std::string pending_in_;
  HttpRequest request_;
  std::string field_;
  std::string value_;
  std::string peer_;
  bool loopback_ = false;

  // Responses in request order; references stay valid on push_back/pop_front.
  std::deque<Slot> fifo_;
  std::string out_;      // serialized, ready to write
  std::string writing_;  // handed to uv_write
  bool write_in_flight_ = false;

  TimerMode timer_mode_ = TimerMode::kNone;
  uint64_t timer_deadline_ = 0;  // loop time (ms) at which timer_mode_ expires
  uint64_t timer_due_ = 0;       // loop time at which the uv timer fires
};

// ---------------------------------------------------------------------------
// Exchange

Exchange::~Exchange() {
  if (conn == nullptr) return;
  HttpResponse r;
  r.status = 500;
  r.body = ErrorBody("unknown", "no response");
  Send(std::move(r));
}

void Exchange::Abort() {
  Connection* c = std::exchange(conn, nullptr);
  Slot* s = std::exchange(slot, nullptr);
  if (c == nullptr || s == nullptr) return;
  s->exchange = nullptr;
  c->Abort();
}

void Exchange::Send(HttpResponse&& response) {
  Connection* c = std::exchange(conn, nullptr);
  Slot* s = std::exchange(slot, nullptr);
  if (c == nullptr || s == nullptr) return;
  s->exchange = nullptr;
  c->Answer(s, std::move(response));
}

// ---------------------------------------------------------------------------
// Connection

llhttp_settings_t Connection::MakeSettings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) noexcept -> int { return From(p)->OnMessageBegin(); };
  s.on_method = [](llhttp_t* p, const char* at, size_t len) noexcept -> int { return From(p)->OnMethod(at, len); };
  s.on_url = [](llhttp_t* p, const char* at, size_t len) noexcept -> int { return From(p)->OnUrl(at, len); };
  s.on_version = [](llhttp_t* p, const char* at, size_t len) noexcept -> int {
    return From(p)->OnVersion(at, len);
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t len) noexcept -> int {
    return From(p)->OnHeaderField(at, len);
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t len) noexcept -> int {
    return From(p)->OnHeaderValue(at, len);
  };
  s.on_header_value_complete = [](llhttp_t* p) noexcept -> int { return From(p)->OnHeaderValueComplete(); };
  s.on_headers_complete = [](llhttp_t* p) noexcept -> int { return From(p)->OnHeadersComplete(); };
  s.on_body = [](llhttp_t* p, const char* at, size_t len) noexcept -> int { return From(p)->OnBody(at, len); };
  s.on_message_complete = [](llhttp_t* p) noexcept -> int { return From(p)->OnMessageComplete(); };
  return s;
}

const llhttp_settings_t Connection::kSettings = Connection::MakeSettings();

Connection::Connection(ServerCore* server) : server_(server) {
  std::memset(&tcp_, 0, sizeof tcp_);
  std::memset(&write_req_, 0, sizeof write_req_);
  std::memset(&shutdown_req_, 0, sizeof shutdown_req_);
  write_req_.data = this;
  shutdown_req_.data = this;
  llhttp_init(&parser_, HTTP_REQUEST, &kSettings);
  parser_.data = this;
}

bool Connection::InitTcp() {
  if (uv_tcp_init(server_->loop_, &tcp_) != 0) return false;
  tcp_.data = this;
  return true;
}

bool Connection::InitTimer() {
  if (uv_timer_init(server_->loop_, timer_.get()) != 0) return false;
  timer_.set_initialized(this);
  return true;
}

void Connection::Start() {
  counted_ = true;
  ++server_->stats_.open_connections;
  ++server_->stats_.accepted;
  // Small answers must not wait for Nagle.
  int rc = uv_tcp_nodelay(&tcp_, 1);
  if (rc != 0 && server_->LogOn(LogLevel::kDebug)) {
    server_->Log(LogLevel::kDebug, "http: TCP_NODELAY failed, continuing: " + UvError(rc));
  }
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof ss);
  int len = sizeof ss;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    peer_ = FormatAddress(ss);
    loopback_ = IsLoopback(ss);
  }
  if (!StartReading()) return;
  UpdateTimer();
  server_->ListIdle(this);
}

void Connection::Reject() {
  rejecting_ = true;
  ++server_->rejecting_;
  ++server_->stats_.rejected_over_limit;
  server_->NoteOverLimit();
  RespondError(503, "temporarily_unavailable", "too many connections");
}

void Connection::Drain() {
  if (closed_) return;
  draining_ = true;
  Schedule();
}

size_t Connection::RefuseWaiting() {
  if (closed_ || close_after_write_) return 0;
  size_t refused = 0;
  for (Slot& slot : fifo_) {
    if (slot.exchange == nullptr) continue;  // answered, or not a handler's request
    // The handler's late Send() becomes a no-op.
    slot.exchange->conn = nullptr;
    slot.exchange->slot = nullptr;
    slot.exchange = nullptr;
    slot.answered = true;
    HttpResponse& r = slot.response.emplace();
    r.status = 503;
    r.body = ErrorBody("temporarily_unavailable", "the server is shutting down");
    r.headers.emplace_back("Retry-After", "1");
    ++refused;
  }
  // draining_ puts "Connection: close" on the last answer.
  MoveReady();
  Schedule();
  return refused;
}

void Connection::Abort() {
  if (closed_) return;
  aborting_ = true;
  stop_parsing_ = true;
  Schedule();
}

void Connection::Close(bool reset) {
  if (closed_) return;
  closed_ = true;
  AbandonFifo();
  timer_.Close();
  reading_ = false;
  if (server_ != nullptr) server_->OnConnectionClosing(this);
  // A reset is impossible once uv_shutdown() started (lingering): close then.
  if (reset && !lingering_ && uv_tcp_close_reset(&tcp_, OnClosed) == 0) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), OnClosed);
}

void Connection::OnClosed(uv_handle_t* handle) noexcept {
  auto* c = static_cast<Connection*>(handle->data);
  if (c->server_ != nullptr) c->server_->Forget(c);
  delete c;
}

void Connection::Service() {
  if (aborting_ && !closed_) {
    Close(/*reset=*/true);
    return;
  }
  if (closed_ || lingering_) return;
  // Parse the buffered requests while their answers fit, writing between
  // rounds: a write the socket takes at once (uv_try_write) makes room without
  // any later event, so the next round must follow here. After
  // kParseRoundsPerTurn rounds the connection yields to the others and carries
  // on next turn.
  for (int round = 0;; ++round) {
    if (CanResumeParse()) {
      if (round == kParseRoundsPerTurn) {
        Schedule();
        break;
      }
      parse_paused_ = false;
      if (!pending_in_.empty()) ParsePending();
      if (closed_) return;
    }
    Flush();
    if (closed_) return;
    if (!CanResumeParse()) break;
  }
  if (!write_in_flight_ && out_.empty()) {
    if (close_after_write_) {
      BeginLinger();
      return;
    }
    if (fifo_.empty() && (draining_ || (peer_eof_ && pending_in_.empty()))) {
      Close();
      return;
    }
  }
  bool want_read = !stop_parsing_ && !draining_ && !peer_eof_ && !parse_paused_ && !close_after_write_ &&
                   pending_in_.empty() && HasRoom();
  if (want_read) {
    if (!StartReading()) return;
  } else {
    StopReading();
  }
  UpdateTimer();
  // Serviced means active: an idle connection goes to the back of the list.
  if (server_ == nullptr) return;
  if (OwesNothing()) {
    server_->ListIdle(this);
  } else {
    server_->UnlistIdle(this);
  }
}

// --- reading ---------------------------------------------------------------

bool Connection::StartReading() {
  if (reading_ || closed_) return !closed_;
  int rc = uv_read_start(stream(), OnAlloc, OnRead);
  if (rc != 0) {
    if (server_ != nullptr && server_->LogOn(LogLevel::kDebug)) {
      server_->Log(LogLevel::kDebug, "http: read from " + peer_ + " failed, closing: " + UvError(rc));
    }
    Close();
    return false;
  }
  reading_ = true;
  return true;
}

void Connection::StopReading() {
  if (!reading_ || closed_) return;
  MustUv(uv_read_stop(stream()), "uv_read_stop");
  reading_ = false;
}

void Connection::OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) noexcept {
  auto* c = static_cast<Connection*>(handle->data);
  if (c == nullptr || c->closed_ || c->server_ == nullptr) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  // One buffer per server: libuv fills it right before the read callback
  // (on Windows too: TCP reads are zero-byte reads there, then a synchronous
  // recv), and anything that must outlive the callback is copied out.
  *buf = uv_buf_init(c->server_->read_buffer_.get(), static_cast<unsigned int>(kReadBufferSize));
}

void Connection::OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* c = static_cast<Connection*>(stream->data);
  if (c == nullptr || c->closed_) return;
  c->HandleRead(nread, buf);
}

void Connection::HandleRead(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF && !lingering_) {
      peer_eof_ = true;
      StopReading();
      // A request cut short can never complete; earlier ones are still answered.
      in_message_ = false;
      in_head_ = false;
      Schedule();
      return;
    }
    if (server_ != nullptr && server_->LogOn(LogLevel::kDebug) && nread != UV_EOF) {
      server_->Log(LogLevel::kDebug,
                   "http: connection from " + peer_ + " failed, closing: " + UvError(static_cast<int>(nread)));
    }
    Close();
    return;
  }
  if (lingering_ || stop_parsing_ || draining_) return;  // discard
  ParseInput(buf->base, static_cast<size_t>(nread));
  Schedule();
}

// --- parsing ---------------------------------------------------------------

void Connection::ParseInput(const char* data, size_t len) {
  if (parse_paused_ || !pending_in_.empty()) {
    pending_in_.append(data, len);
    StopReading();
    return;
  }
  size_t used = Execute(data, len);
  if (stop_parsing_) {
    pending_in_.clear();
    StopReading();
  } else if (parse_paused_) {
    // The rest of this read (further pipelined requests) waits for room.
    pending_in_.assign(data + used, len - used);
    StopReading();
  }
}

void Connection::ParsePending() {
  size_t used = Execute(pending_in_.data(), pending_in_.size());
  if (stop_parsing_ || closed_) {
    pending_in_.clear();
  } else {
    pending_in_.erase(0, std::min(used, pending_in_.size()));
  }
}

// Feeds one segment to llhttp. Returns how many bytes it consumed (less than
// `len` only when paused at the end of a message).
size_t Connection::Execute(const char* data, size_t len) {
  if (in_head_) head_start_ = last_end_ = data;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  const char* stop = data + len;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    stop = llhttp_get_error_pos(&parser_);
    if (stop == nullptr || stop < data || stop > data + len) stop = data + len;
    if (err == HPE_PAUSED_UPGRADE) {
      stop_parsing_ = true;  // we do not speak other protocols; close after the answer
    } else {
      llhttp_resume(&parser_);
      parse_paused_ = true;
    }
  } else if (err != HPE_OK) {
    ParseError(err);
    return len;
  }
  if (in_head_ && head_start_ != nullptr) {
    // Head bytes llhttp skipped without a callback (e.g. padding) still count.
    head_bytes_ += static_cast<size_t>(stop - head_start_);
    head_start_ = last_end_ = nullptr;
    if (head_bytes_ > limits().max_header_bytes) {
      Fail(431, "request headers too large");
      ParseError(HPE_USER);
    }
  }
  return static_cast<size_t>(stop - data);
}

int Connection::Fail(int status, const char* description) {
  if (error_status_ == 0) {
    error_status_ = status;
    error_description_ = description;
  }
  return -1;
}

void Connection::ParseError(llhttp_errno_t err) {
  int status = error_status_;
  std::string description;
  if (status != 0) {
    description = error_description_ != nullptr ? error_description_ : "bad request";
  } else if (err == HPE_INVALID_VERSION || err == HPE_PAUSED_H2_UPGRADE) {
    status = 505;
    description = "HTTP version not supported";
  } else {
    status = 400;
    const char* reason = llhttp_get_error_reason(&parser_);
    description = "malformed request";
    if (reason != nullptr && *reason != '\0') {
      description += ": ";
      description += reason;
    }
  }
  if (server_ != nullptr) {
    ++server_->stats_.protocol_errors;
    if (server_->LogOn(LogLevel::kDebug)) {
      server_->Log(LogLevel::kDebug, "http: " + std::to_string(status) + " to " + peer_ + " (" + description +
                                         "), closing the connection");
    }
  }
  RespondError(status, "bad_request", description);
}

// Answers `status` after the answers already owed on this connection, then closes.
void Connection::RespondError(int status, std::string_view error, std::string_view description) {
  if (closed_ || close_after_write_) return;
  stop_parsing_ = true;
  parse_paused_ = false;
  in_message_ = false;
  in_head_ = false;
  pending_in_.clear();
  StopReading();
  HttpResponse r;
  r.status = status;
  r.body = ErrorBody(error, description);
  r.close = true;
  if (status == 503) r.headers.emplace_back("Retry-After", "1");
  PushAnswered(Slot::Kind::kError, std::move(r));
  Schedule();
}

void Connection::ResetRequest() {
  request_.method.clear();
  request_.target.clear();
  request_.headers.clear();
  request_.body.clear();
  request_.keep_alive = true;
  field_.clear();
  value_.clear();
}

// Accounts a span of the request head (or of a chunked trailer).
int Connection::HeadSpan(const char* at, size_t len) {
  if (!in_head_) {
    head_bytes_ += len;  // trailers
    return head_bytes_ > limits().max_header_bytes ? Fail(431, "request headers too large") : 0;
  }
  if (head_start_ == nullptr) head_start_ = at;
  last_end_ = at + len;
  if (head_bytes_ + static_cast<size_t>(last_end_ - head_start_) > limits().max_header_bytes) {
    return Fail(431, "request headers too large");
  }
  return 0;
}

int Connection::OnMessageBegin() {
  in_message_ = true;
  in_head_ = true;
  head_bytes_ = 0;
  head_start_ = last_end_ = nullptr;
  ResetRequest();
  ArmTimer(TimerMode::kRequest, limits().header_timeout);
  return 0;
}

int Connection::OnUrl(const char* at, size_t len) {
  if (HeadSpan(at, len) != 0) return -1;
  request_.target.append(at, len);
  return 0;
}

int Connection::OnHeaderField(const char* at, size_t len) {
  if (HeadSpan(at, len) != 0) return -1;
  field_.append(at, len);
  return 0;
}

int Connection::OnHeaderValue(const char* at, size_t len) {
  if (HeadSpan(at, len) != 0) return -1;
  value_.append(at, len);
  return 0;
}

int Connection::OnHeaderValueComplete() {
  if (!in_head_) {
    // A chunked trailer field: a header check must never see it (a trailer
    // "Metadata: true" would pass it). Its bytes were counted in HeadSpan.
    field_.clear();
    value_.clear();
    return 0;
  }
  for (char& ch : field_) ch = AsciiLower(ch);
  size_t begin = 0;
  size_t end = value_.size();
  while (begin < end && IsOws(value_[begin])) ++begin;
  while (end > begin && IsOws(value_[end - 1])) --end;
  request_.headers.emplace_back(field_, std::string_view(value_).substr(begin, end - begin));
  field_.clear();
  value_.clear();
  return 0;
}

int Connection::OnHeadersComplete() {
  if (head_start_ != nullptr && last_end_ != nullptr) head_bytes_ += static_cast<size_t>(last_end_ - head_start_);
  head_start_ = last_end_ = nullptr;
  in_head_ = false;
  if (head_bytes_ > limits().max_header_bytes) return Fail(431, "request headers too large");
  if (llhttp_get_http_major(&parser_) != 1) return Fail(505, "HTTP version not supported");
  request_.http_minor = llhttp_get_http_minor(&parser_);
  http10_ = request_.http_minor == 0;
  request_.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(&parser_)));
  request_.keep_alive = llhttp_should_keep_alive(&parser_) != 0 && llhttp_get_upgrade(&parser_) == 0;
  const bool chunked = (parser_.flags & F_CHUNKED) != 0;
  const bool has_length = (parser_.flags & F_CONTENT_LENGTH) != 0;
  if (has_length && parser_.content_length > limits().max_body_bytes) {
    return Fail(413, "request body too large");
  }
  if (chunked || (has_length && parser_.content_length > 0)) {
    if (has_length) request_.body.reserve(static_cast<size_t>(parser_.content_length));
    // The body gets the same allowance as the head, counted afresh.
    ArmTimer(TimerMode::kRequest, limits().header_timeout);
    const std::string* expect = request_.Header("expect");
    if (expect != nullptr && !http10_ && EqualsIgnoreCase(*expect, "100-continue")) {
      PushAnswered(Slot::Kind::kInterim, std::nullopt);
      Schedule();
    }
  }
  return 0;
}

int Connection::OnBody(const char* at, size_t len) {
  if (request_.body.size() + len > limits().max_body_bytes) return Fail(413, "request body too large");
  request_.body.append(at, len);
  return 0;
}

int Connection::OnMessageComplete() {
  in_message_ = false;
  const bool keep_alive = request_.keep_alive;
  fifo_.emplace_back();
  Slot& slot = fifo_.back();
  slot.head = llhttp_get_method(&parser_) == HTTP_HEAD;
  slot.keep_alive = keep_alive;
  slot.http10 = http10_;
  auto exchange = std::make_shared<Exchange>(this, &slot);
  slot.exchange = exchange.get();
  request_.peer = peer_;
  request_.peer_is_loopback = loopback_;
  if (server_ != nullptr) ++server_->stats_.requests;
  if (server_ != nullptr && server_->handler_ != nullptr) {
    server_->handler_->OnRequest(request_, Responder(std::move(exchange)));
  }
  exchange.reset();  // no handler: answers 500
  if (closed_) return HPE_PAUSED;
  if (!keep_alive || draining_ || close_after_write_) {
    stop_parsing_ = true;
    return HPE_PAUSED;
  }
  // Back-pressure: stop mid-buffer and keep the rest until answers drain.
  if (!HasRoom()) return HPE_PAUSED;
  return 0;
}

// --- output ----------------------------------------------------------------

void Connection::PushAnswered(Slot::Kind kind, std::optional<HttpResponse> response) {
  fifo_.emplace_back();
  Slot& slot = fifo_.back();
  slot.kind = kind;
  slot.answered = true;
  slot.response = std::move(response);
  MoveReady();
}

void Connection::Answer(Slot* slot, HttpResponse&& response) {
  if (closed_ || close_after_write_) return;
  slot->answered = true;
  if (!fifo_.empty() && &fifo_.front() == slot) {
    EmitFront(&response);  // the common case: no copy into the slot
    MoveReady();
  } else {
    slot->response.emplace(std::move(response));
  }
  Schedule();
}

// Serializes the (answered) head of the FIFO into out_ and pops it.
void Connection::EmitFront(const HttpResponse* direct) {
  Slot& slot = fifo_.front();
  const bool last = fifo_.size() == 1;
  if (slot.kind == Slot::Kind::kInterim) {
    out_.append(k100Continue);
  } else {
    const HttpResponse& r = direct != nullptr ? *direct : *slot.response;
    const bool close = r.close || !slot.keep_alive || slot.kind == Slot::Kind::kError ||
                       (last && (draining_ || stop_parsing_ || (peer_eof_ && pending_in_.empty())));
    Serialize(&out_, r, slot.head, close, !close && slot.http10);
    if (close) close_after_write_ = true;
  }
  fifo_.pop_front();
}

void Connection::MoveReady() {
  while (!close_after_write_ && !fifo_.empty() && fifo_.front().answered) EmitFront(nullptr);
  if (close_after_write_) AbandonFifo();
}

// Requests after a closing answer (or on a closed connection) get no answer:
// their Responders become no-ops.
void Connection::AbandonFifo() {
  for (Slot& slot : fifo_) {
    if (slot.exchange != nullptr) {
      slot.exchange->conn = nullptr;
      slot.exchange->slot = nullptr;
      slot.exchange = nullptr;
    }
  }
  fifo_.clear();
}

void Connection::Flush() {
  if (write_in_flight_ || out_.empty() || closed_) return;
  writing_.swap(out_);
  out_.clear();
  uv_buf_t buf = uv_buf_init(writing_.data(), static_cast<unsigned int>(writing_.size()));
  int n = uv_try_write(stream(), &buf, 1);
  if (n == static_cast<int>(writing_.size())) {
    writing_.clear();  // all taken at once; Service carries on
    return;
  }
  if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
    if (server_ != nullptr && server_->LogOn(LogLevel::kDebug)) {
      server_->Log(LogLevel::kDebug, "http: write to " + peer_ + " failed, closing: " + UvError(n));
    }
    Close();
    return;
  }
  size_t offset = n > 0 ? static_cast<size_t>(n) : 0;
  buf = uv_buf_init(writing_.data() + offset, static_cast<unsigned int>(writing_.size() - offset));
  int rc = uv_write(&write_req_, stream(), &buf, 1, OnWrite);
  if (rc != 0) {
    if (server_ != nullptr && server_->LogOn(LogLevel::kDebug)) {
      server_->Log(LogLevel::kDebug, "http: write to " + peer_ + " failed, closing: " + UvError(rc));
    }
    Close();
    return;
  }
  write_in_flight_ = true;
}

void Connection::OnWrite(uv_write_t* req, int status) noexcept {
  auto* c = static_cast<Connection*>(req->data);
  c->write_in_flight_ = false;
  c->writing_.clear();
  if (c->closed_) return;
  if (status < 0) {
    if (c->server_ != nullptr && c->server_->LogOn(LogLevel::kDebug)) {
      c->server_->Log(LogLevel::kDebug, "http: write to " + c->peer_ + " failed, closing: " + UvError(status));
    }
    c->Close();
    return;
  }
  c->AfterWrite();
}

void Connection::AfterWrite() {
  // Progress: the idle clock restarts; Service decides what comes next.
  Schedule();
}

void Connection::BeginLinger() {
  if (lingering_ || closed_) return;
  if (peer_eof_) {
    Close();  // nothing more can arrive: a plain close sends FIN after the data
    return;
  }
  lingering_ = true;
  int rc = uv_shutdown(&shutdown_req_, stream(), OnShutdown);
  if (rc != 0) {
    Close();
    return;
  }
  if (!StartReading()) return;
  Duration linger = std::min(kLingerTimeout, limits().idle_timeout);
  ArmTimer(TimerMode::kLinger, linger);
}

void Connection::OnShutdown(uv_shutdown_t* req, int status) noexcept {
  auto* c = static_cast<Connection*>(req->data);
  if (c->closed_) return;
  if (status < 0) c->Close();
}

// --- timer -----------------------------------------------------------------

// One uv timer per connection. Re-arming only moves a deadline; the uv timer is
// restarted only when the new deadline is earlier than the one it waits for.
void Connection::ArmTimer(TimerMode mode, Duration delay) {
  if (closed_ || timer_.get() == nullptr || !timer_.initialized()) return;
  const uint64_t now = uv_now(server_->loop_);
  const uint64_t ms = delay.count() > 0 ? static_cast<uint64_t>(delay.count()) : 0;
  timer_mode_ = mode;
  timer_deadline_ = now + ms;
  if (uv_is_active(timer_.base()) == 0 || timer_due_ > timer_deadline_) {
    MustUv(uv_timer_start(timer_.get(), OnTimerCb, ms, 0), "uv_timer_start");
    timer_due_ = timer_deadline_;
  }
}

void Connection::UpdateTimer() {
  if (closed_ || lingering_ || in_message_) return;  // the request or linger timer owns it
  if (fifo_.empty()) {
    // Nothing requested (maybe output the client is not reading): idle.
    ArmTimer(TimerMode::kIdle, limits().idle_timeout);
  } else {
    timer_mode_ = TimerMode::kNone;  // the handler is working
  }
}

void Connection::OnTimerCb(uv_timer_t* timer) noexcept {
  auto* c = static_cast<Connection*>(timer->data);
  if (c == nullptr || c->closed_) return;
  c->OnTimer();
}

void Connection::OnTimer() {
  if (timer_mode_ == TimerMode::kNone) return;
  const uint64_t now = uv_now(server_->loop_);
  if (now < timer_deadline_) {
    MustUv(uv_timer_start(timer_.get(), OnTimerCb, timer_deadline_ - now, 0), "uv_timer_start");
    timer_due_ = timer_deadline_;
    return;
  }
  const TimerMode mode = std::exchange(timer_mode_, TimerMode::kNone);
  switch (mode) {
    case TimerMode::kIdle:
      if (server_ != nullptr) ++server_->stats_.timed_out;
      Close();
      break;
    case TimerMode::kRequest:
      if (server_ != nullptr) {
        ++server_->stats_.timed_out;
        if (server_->LogOn(LogLevel::kDebug)) {
          server_->Log(LogLevel::kDebug, "http: request from " + peer_ + " too slow, answering 408 and closing");
        }
      }
      RespondError(408, "bad_request", "request timeout");
      break;
    case TimerMode::kLinger:
      Close();
      break;
    case TimerMode::kNone:
      break;
  }
}

// ---------------------------------------------------------------------------
// ServerCore

ServerCore::ServerCore(uv_loop_t* loop, const ServerLimits& limits, HttpHandler* handler, Logger* logger)
    : loop_(loop),
      limits_(limits),
      handler_(handler),
      logger_(logger),
      read_buffer_(new char[kReadBufferSize]) {
  MustUv(uv_check_init(loop_, check_.get()), "uv_check_init");
  check_.set_initialized(this);
  MustUv(uv_idle_init(loop_, idle_.get()), "uv_idle_init");
  idle_.set_initialized(this);
  MustUv(uv_timer_init(loop_, deadline_timer_.get()), "uv_timer_init");
  deadline_timer_.set_initialized(this);
}

ServerCore::~ServerCore() {
  // No callbacks from here on: connections forget us, then close.
  for (Connection* c : connections_) {
    c->Detach();
    c->Close();
  }
  connections_.clear();
  dirty_.clear();
  idle_head_ = idle_tail_ = nullptr;
  shutdown_done_ = nullptr;
  // listeners_, check_, idle_ and deadline_timer_ close in their destructors.
}

Status ServerCore::Listen(const std::string& host_in, uint16_t port) {
  std::string host = host_in;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const bool v6 = host.find(':') != std::string::npos;
  std::string what = "listen " + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  sockaddr_storage addr;
  std::memset(&addr, 0, sizeof addr);
  int rc = v6 ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr))
              : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) return Status::Error(what + ": invalid address");
  auto listener = std::make_unique<UvHandle<uv_tcp_t>>();
  rc = uv_tcp_init(loop_, listener->get());
  if (rc != 0) return Status::Error(what + ": " + UvError(rc));
  listener->set_initialized(this);
  rc = uv_tcp_bind(listener->get(), reinterpret_cast<const sockaddr*>(&addr), v6 ? UV_TCP_IPV6ONLY : 0);
  if (rc != 0) return Status::Error(what + ": " + UvError(rc));
  return StartListener(std::move(listener), what);
}

Status ServerCore::Adopt(uv_os_sock_t fd) {
  std::string what = "adopt listening socket " + std::to_string(static_cast<long long>(fd));
  auto listener = std::make_unique<UvHandle<uv_tcp_t>>();
  int rc = uv_tcp_init(loop_, listener->get());
  if (rc != 0) return Status::Error(what + ": " + UvError(rc));
  listener->set_initialized(this);
  rc = uv_tcp_open(listener->get(), fd);
  if (rc != 0) return Status::Error(what + ": " + UvError(rc));
  return StartListener(std::move(listener), what);
}

Status ServerCore::StartListener(std::unique_ptr<UvHandle<uv_tcp_t>> listener, const std::string& what) {
  // bind() may report EADDRINUSE only here.
  int rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener->get()), kBacklog, OnConnectionCb);
  if (rc != 0) return Status::Error(what + ": " + UvError(rc));
  listeners_.push_back(std::move(listener));
  return Status::Ok();
}

std::vector<std::string> ServerCore::BoundAddresses() const {
  std::vector<std::string> out;
  for (const auto& l : listeners_) {
    sockaddr_storage ss;
    std::memset(&ss, 0, sizeof ss);
    int len = sizeof ss;
    if (uv_tcp_getsockname(l->get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      out.push_back(FormatAddress(ss));
    } else {
      out.emplace_back();
    }
  }
  return out;
}

std::vector<uint16_t> ServerCore::BoundPorts() const {
  std::vector<uint16_t> out;
  for (const auto& l : listeners_) {
    sockaddr_storage ss;
    std::memset(&ss, 0, sizeof ss);
    int len = sizeof ss;
    out.push_back(uv_tcp_getsockname(l->get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0 ? PortOf(ss) : 0);
  }
  return out;
}

void ServerCore::OnConnectionCb(uv_stream_t* listener, int status) noexcept {
  auto* self = static_cast<ServerCore*>(listener->data);
  if (self == nullptr) return;
  self->OnConnection(listener, status);
}

void ServerCore::OnConnection(uv_stream_t* listener, int status) {
  if (status < 0) {
    if (ShouldLog(&accept_error_log_)) {
      Log(LogLevel::kWarning, "http: failed to accept connection, ignoring: " + UvError(status));
    }
    return;
  }
  auto* c = new Connection(this);
  if (!c->InitTcp()) {
    delete c;
    Log(LogLevel::kError, "http: cannot create a socket handle, connection left pending");
    return;
  }
  connections_.insert(c);
  int rc = uv_accept(listener, c->stream());
  if (rc != 0) {
    if (ShouldLog(&accept_error_log_)) {
      Log(LogLevel::kWarning, "http: failed to accept connection, ignoring: " + UvError(rc));
    }
    c->Close();
    return;
  }
  if (!c->InitTimer()) {
    Log(LogLevel::kError, "http: cannot create a timer, closing the new connection");
    c->Close();
    return;
  }
  if (shutting_down_) {
    c->Close();
    return;
  }
  Admit(c);
}

// A new connection with its socket open: served, or answered 503 beyond
// max_connections (unless an idle one can make room).
void ServerCore::Admit(Connection* c) {
  if (stats_.open_connections >= limits_.max_connections && !(limits_.evict_idle_at_limit && EvictIdlest())) {
    if (rejecting_ >= kMaxRejecting) {
      ++stats_.rejected_over_limit;
      c->Close();
      return;
    }
    c->Reject();
    return;
  }
  c->Start();
}

bool ServerCore::ShouldLog(Throttle* t) {
  const uint64_t now = uv_now(loop_);
  if (t->logged && now - t->at < kLogIntervalMs) return false;
  t->logged = true;
  t->at = now;
  return true;
}

void ServerCore::NoteOverLimit() {
  if (!ShouldLog(&over_limit_log_)) return;
  Log(LogLevel::kWarning, "http: max_connections (" + std::to_string(limits_.max_connections) +
                              ") reached, answering 503 to new connections");
}

void ServerCore::Schedule(Connection* c) {
  if (!c->dirty) {
    c->dirty = true;
    dirty_.push_back(c);
  }
  StartTurn();
}

void ServerCore::StartTurn() {
  if (turn_active_) return;
  // The check handle does the work after this iteration's I/O; the idle handle
  // only keeps the next poll from blocking when work is queued from a phase
  // that runs after the check (or from timers).
  MustUv(uv_check_start(check_.get(),
                        [](uv_check_t* h) {
                          if (h->data != nullptr) static_cast<ServerCore*>(h->data)->OnTurn();
                        }),
         "uv_check_start");
  MustUv(uv_idle_start(idle_.get(), [](uv_idle_t*) {}), "uv_idle_start");
  turn_active_ = true;
}

void ServerCore::StopTurn() {
  if (!turn_active_) return;
  MustUv(uv_check_stop(check_.get()), "uv_check_stop");
  MustUv(uv_idle_stop(idle_.get()), "uv_idle_stop");
  turn_active_ = false;
}

void ServerCore::OnTurn() {
  servicing_.swap(dirty_);
  for (Connection* c : servicing_) c->dirty = false;
  for (Connection* c : servicing_) c->Service();
  servicing_.clear();
  if (dirty_.empty()) StopTurn();
  if (done_pending_ && connections_.empty()) {
    done_pending_ = false;
    MustUv(uv_timer_stop(deadline_timer_.get()), "uv_timer_stop");
    std::function<void()> done = std::move(shutdown_done_);
    shutdown_done_ = nullptr;
    // Last statement: `done` may destroy the server.
    if (done) done();
  }
}

void ServerCore::ListIdle(Connection* c) {
  UnlistIdle(c);
  c->idle_listed = true;
  c->idle_prev = idle_tail_;
  c->idle_next = nullptr;
  if (idle_tail_ != nullptr) idle_tail_->idle_next = c;
  else idle_head_ = c;
  idle_tail_ = c;
}

void ServerCore::UnlistIdle(Connection* c) {
  if (!c->idle_listed) return;
  if (c->idle_prev != nullptr) c->idle_prev->idle_next = c->idle_next;
  else idle_head_ = c->idle_next;
  if (c->idle_next != nullptr) c->idle_next->idle_prev = c->idle_prev;
  else idle_tail_ = c->idle_prev;
  c->idle_listed = false;
  c->idle_prev = c->idle_next = nullptr;
}

bool ServerCore::EvictIdlest() {
  // The list is refreshed when connections are serviced; one may have taken a
  // request since (read, not yet serviced), so check each candidate afresh.
  for (Connection* c = idle_head_; c != nullptr; c = c->idle_next) {
    if (!c->OwesNothing()) continue;
    ++stats_.evicted_idle;
    if (ShouldLog(&evict_log_)) {
      Log(LogLevel::kWarning, "http: max_connections (" + std::to_string(limits_.max_connections) +
                                  ") reached, closing the connection idle longest to admit a new one");
    }
    c->Close();
    return true;
  }
  return false;
}

void ServerCore::OnConnectionClosing(Connection* c) {
  UnlistIdle(c);
  if (c->counted()) --stats_.open_connections;
  if (c->rejecting()) --rejecting_;
}

void ServerCore::Forget(Connection* c) {
  connections_.erase(c);
  if (c->dirty) {
    dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), c), dirty_.end());
    c->dirty = false;
  }
  // servicing_ only holds connections during OnTurn, which never runs close callbacks.
  MaybeFinishShutdown();
}

void ServerCore::MaybeFinishShutdown() {
  if (shutting_down_ && connections_.empty() && shutdown_done_ && !done_pending_) {
    done_pending_ = true;
    StartTurn();
  }
}

void ServerCore::StopAccepting() { listeners_.clear(); }

void ServerCore::Shutdown(Duration deadline, std::function<void()> done) {
  StopAccepting();
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  done_pending_ = false;
  deadline_passed_ = false;
  for (Connection* c : connections_) c->Drain();
  StartDeadlineTimer(deadline);
  MaybeFinishShutdown();
}

void ServerCore::StartDeadlineTimer(Duration delay) {
  const uint64_t ms = delay.count() > 0 ? static_cast<uint64_t>(delay.count()) : 0;
  MustUv(uv_timer_start(
             deadline_timer_.get(),
             [](uv_timer_t* h) {
               if (h->data != nullptr) static_cast<ServerCore*>(h->data)->OnDeadline();
             },
             ms, 0),
         "uv_timer_start");
}

// First the deadline: whoever still waits is told 503 and the connections
// close after their answers. Then, after a short grace, whatever did not get
// there (a client not reading) is closed.
void ServerCore::OnDeadline() {
  std::vector<Connection*> open(connections_.begin(), connections_.end());
  if (!deadline_passed_) {
    deadline_passed_ = true;
    size_t refused = 0;
    for (Connection* c : open) refused += c->RefuseWaiting();
    if (refused > 0) {
      Log(LogLevel::kInfo, "http: shutdown deadline reached, answering 503 to " + std::to_string(refused) +
                               " request(s) still waiting");
    }
    if (!open.empty()) StartDeadlineTimer(limits_.drain_grace);
    return;
  }
  if (!open.empty()) {
    Log(LogLevel::kInfo, "http: shutdown grace over, closing " + std::to_string(open.size()) + " connection(s)");
  }
  for (Connection* c : open) c->Close();
  MaybeFinishShutdown();
}

// OnConnection() for a socket that needs no accept(). The socket is opened last
// so that on every error path the caller still owns it.
Status ServerCore::AdoptConnection(uv_os_sock_t fd) {
  auto fail = [fd](const std::string& why) {
    return Status::Error("adopt connected socket " + std::to_string(static_cast<long long>(fd)) + ": " + why);
  };
  if (shutting_down_) return fail("the server is shutting down");
  auto* c = new Connection(this);
  if (!c->InitTcp()) {
    delete c;
    return fail("cannot create a socket handle");
  }
  connections_.insert(c);
  if (!c->InitTimer()) {
    c->Close();
    return fail("cannot create a timer");
  }
  int rc = uv_tcp_open(reinterpret_cast<uv_tcp_t*>(c->stream()), fd);
  if (rc != 0) {
    c->Close();
    return fail(UvError(rc));
  }
  Admit(c);
  return Status::Ok();
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Public API

const std::string* HttpRequest::Header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

size_t HttpRequest::HeaderCount(std::string_view lower_name) const {
  size_t n = 0;
  for (const auto& h : headers) {
    if (h.first == lower_name) ++n;
  }
  return n;
}

// Destroying the last reference to an unanswered Exchange answers 500.
Responder::~Responder() = default;

void Responder::Send(HttpResponse&& response) {
  std::shared_ptr<detail::Exchange> exchange = std::move(exchange_);
  if (exchange) exchange->Send(std::move(response));
}

void Responder::Abort() {
  std::shared_ptr<detail::Exchange> exchange = std::move(exchange_);
  if (exchange) exchange->Abort();
}

bool Responder::connected() const {
  return exchange_ && exchange_->conn != nullptr && !exchange_->conn->peer_closed();
}

struct HttpServer::Impl : detail::ServerCore {
  using ServerCore::ServerCore;
};

HttpServer::HttpServer(uv_loop_t* loop, const ServerLimits& limits, HttpHandler* handler, Logger* logger)
    : impl_(std::make_unique<Impl>(loop, limits, handler, logger)) {}

HttpServer::~HttpServer() = default;

Status HttpServer::Listen(const std::string& host, uint16_t port) { return impl_->Listen(host, port); }
Status HttpServer::Adopt(uv_os_sock_t fd) { return impl_->Adopt(fd); }
std::vector<std::string> HttpServer::BoundAddresses() const { return impl_->BoundAddresses(); }
std::vector<uint16_t> HttpServer::BoundPorts() const { return impl_->BoundPorts(); }
void HttpServer::set_limits(const ServerLimits& limits) { impl_->limits_ = limits; }
const ServerStats& HttpServer::stats() const { return impl_->stats_; }
void HttpServer::StopAccepting() { impl_->StopAccepting(); }
void HttpServer::Shutdown(Duration deadline, std::function<void()> done) {
  impl_->Shutdown(deadline, std::move(done));
}
Status HttpServer::AdoptConnection(uv_os_sock_t fd) { return impl_->AdoptConnection(fd); }

std::string ErrorBody(std::string_view error, std::string_view description) {
  nlohmann::json j = nlohmann::json::object();
  j["error"] = std::string(error);
  j["error_description"] = std::string(description);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace mi::proxy
