#include "proxy/http/http_connection.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

#include "agent/base/check.h"
#include "agent/base/log.h"
#include "agent/base/socket_address.h"
#include "proxy/http/http_server.h"
#include "proxy/http/response_writer.h"
#include "proxy/http/unix_socket.h"

namespace mi::proxy {
namespace detail {

// The server's ResponseSink: one per request, owned by its Responder.
class Exchange final : public ResponseSink {
 public:
  Exchange(HttpConnection* c, Slot* s) : conn(c), slot(s) {}

  void Send(HttpResponse&& response) override {
    HttpConnection* c = std::exchange(conn, nullptr);
    Slot* s = std::exchange(slot, nullptr);
    if (c == nullptr || s == nullptr) return;
    s->exchange = nullptr;
    c->Answer(s, std::move(response));
  }
  void Abort() override {
    HttpConnection* c = std::exchange(conn, nullptr);
    Slot* s = std::exchange(slot, nullptr);
    if (c == nullptr || s == nullptr) return;
    s->exchange = nullptr;
    c->Abort();
  }
  bool connected() const override { return conn != nullptr && !conn->peer_closed(); }

  // Both null once answered or once the connection dropped the request.
  HttpConnection* conn;
  Slot* slot;
};

}  // namespace detail

namespace {

using detail::Exchange;
using detail::Slot;

constexpr std::string_view k100Continue = "HTTP/1.1 100 Continue\r\n\r\n";
// Stop reading a connection whose client does not read its answers.
constexpr size_t kMaxBufferedOutput = 256 * 1024;
// Rounds of "parse until the output is full, write it" one connection gets per
// loop turn (about this many times kMaxBufferedOutput of answers).
constexpr int kParseRoundsPerTurn = 4;
// After the final response: half-close, then read and discard for at most this
// long so unread request bytes do not turn our close into a reset that destroys
// the response at the client.
constexpr Duration kLingerTimeout{2000};

void DetachExchange(Slot& slot) {
  if (slot.exchange == nullptr) return;
  slot.exchange->conn = nullptr;
  slot.exchange->slot = nullptr;
  slot.exchange = nullptr;
}

}  // namespace

HttpConnection::HttpConnection(HttpServer* server, HttpRequest::Transport transport)
    : server_(server),
      transport_(transport),
      parser_({server->limits_.max_header_bytes, server->limits_.max_body_bytes}) {
  std::memset(&socket_, 0, sizeof socket_);
  std::memset(&write_req_, 0, sizeof write_req_);
  std::memset(&shutdown_req_, 0, sizeof shutdown_req_);
  write_req_.data = this;
  shutdown_req_.data = this;
}

const ServerLimits& HttpConnection::limits() const { return server_->limits_; }

bool HttpConnection::HasRoom() const {
  return fifo_.size() < std::max<size_t>(1, limits().max_pipelined) &&
         out_.size() + writing_.size() < kMaxBufferedOutput;
}

void HttpConnection::Schedule() {
  if (server_ != nullptr && !closed()) server_->Schedule(this);
}

// "http: write to 127.0.0.1:5000 failed, closing: ..." (debug: clients vanish).
void HttpConnection::LogFailure(std::string_view what, int uv_error) {
  if (server_ == nullptr) return;
  MI_LOG(server_->logger_, kDebug) << "http: " << what << ' ' << peer_ << " failed, closing: " << uv_strerror(uv_error);
}

bool HttpConnection::InitStream() {
  const int rc = is_tcp() ? uv_tcp_init(server_->loop_, &socket_.tcp) : uv_pipe_init(server_->loop_, &socket_.pipe, 0);
  if (rc != 0) return false;
  stream()->data = this;
  return true;
}

bool HttpConnection::InitTimer() { return timer_.Init(uv_timer_init, server_->loop_, this) == 0; }

void HttpConnection::Start() {
  admission_ = Admission::kServed;
  ++server_->stats_.open_connections;
  ++server_->stats_.accepted;
  if (is_tcp()) {
    IdentifyTcpPeer();
  } else {
    IdentifyUnixPeer();
  }
  if (!StartReading()) return;
  UpdateTimer();
  server_->listener_.ListIdle(this);
}

void HttpConnection::IdentifyTcpPeer() {
  // Small answers must not wait for Nagle.
  int rc = uv_tcp_nodelay(&socket_.tcp, 1);
  if (rc != 0) {
    MI_LOG(server_->logger_, kDebug) << "http: TCP_NODELAY failed, continuing: " << uv_strerror(rc);
  }
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof ss);
  int len = sizeof ss;
  if (uv_tcp_getpeername(&socket_.tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    peer_ = FormatAddress(ss);
    loopback_ = IsLoopback(ss);
  }
  sockaddr_storage local;  // the caller is looked up here, once per connection
  std::memset(&local, 0, sizeof local);
  len = sizeof local;
  if (loopback_ && uv_tcp_getsockname(&socket_.tcp, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    caller_ = server_->peers_.Resolve(ss, local);
  }
}

// A Unix socket's peer is on this host by construction, and the kernel
// recorded its credentials at connect(): no lookup.
void HttpConnection::IdentifyUnixPeer() {
  loopback_ = true;
  peer_ = "unix";
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<const uv_handle_t*>(&socket_), &fd) == 0) caller_ = UnixPeerCredentials(fd);
  if (caller_.pid != 0) peer_ = "unix:pid=" + std::to_string(caller_.pid);
}

void HttpConnection::Reject() {
  admission_ = Admission::kRejected;
  RespondError(503, "temporarily_unavailable", "too many connections");
}

void HttpConnection::Drain() {
  if (closed()) return;
  if (state_ == State::kOpen) {
    state_ = State::kDraining;
  } else if (state_ != State::kDraining) {
    // Already ending (aborting, closing after its last answer, lingering): no
    // state to move to, but draining's rule for input holds: read nothing more.
    input_ = Input::kStopped;
  }
  Schedule();
}

size_t HttpConnection::RefuseWaiting() {
  if (closing()) return 0;
  size_t refused = 0;
  for (Slot& slot : fifo_) {
    if (slot.exchange == nullptr) continue;  // answered, or not a handler's request
    DetachExchange(slot);  // the handler's late Send() becomes a no-op
    slot.answered = true;
    HttpResponse& r = slot.response.emplace();
    r.status = 503;
    r.body = ProtocolErrorBody("temporarily_unavailable", "the server is shutting down");
    r.headers.emplace_back("Retry-After", "1");
    ++refused;
  }
  // kDraining puts "Connection: close" on the last answer.
  MoveReady();
  Schedule();
  return refused;
}

void HttpConnection::Abort() {
  // Once closing, every Exchange is detached: no Abort() arrives.
  if (closing() || aborting()) return;
  state_ = State::kAborting;
  input_ = Input::kStopped;
  Schedule();
}

void HttpConnection::Close(bool reset) {
  if (closed()) return;
  const bool was_lingering = lingering();
  state_ = State::kClosed;
  AbandonFifo();
  timer_.Close();
  reading_ = false;
  if (server_ != nullptr) server_->OnConnectionClosing(this);
  // A reset is impossible once uv_shutdown() started (lingering): close then.
  if (reset && !was_lingering && is_tcp() && uv_tcp_close_reset(&socket_.tcp, OnClosed) == 0) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&socket_), OnClosed);
}

void HttpConnection::OnClosed(uv_handle_t* handle) noexcept {
  auto* c = static_cast<HttpConnection*>(handle->data);
  MI_CHECK(c->state_ == State::kClosed);
  if (c->server_ != nullptr) c->server_->Forget(c);
  delete c;
}

void HttpConnection::Service() {
  if (aborting()) {
    Close(/*reset=*/true);
    return;
  }
  if (closed() || lingering()) return;
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
      input_ = Input::kParsing;
      if (!pending_in_.empty()) ParsePending();
      if (closed()) return;
    }
    Flush();
    if (closed()) return;
    if (!CanResumeParse()) break;
  }
  if (!write_in_flight_ && out_.empty()) {
    if (state_ == State::kClosingAfterWrite) {
      BeginLinger();
      return;
    }
    if (fifo_.empty() && (draining() || (peer_eof_ && pending_in_.empty()))) {
      Close();
      return;
    }
  }
  const bool want_read = input_ == Input::kParsing && !draining() && !peer_eof_ && !closing() &&
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
    server_->listener_.ListIdle(this);
  } else {
    server_->listener_.UnlistIdle(this);
  }
}

// --- reading ---------------------------------------------------------------

bool HttpConnection::StartReading() {
  if (closed()) return false;
  if (reading_) return true;
  int rc = uv_read_start(stream(), OnAlloc, OnRead);
  if (rc != 0) {
    LogFailure("read from", rc);
    Close();
    return false;
  }
  reading_ = true;
  return true;
}

void HttpConnection::StopReading() {
  if (!reading_ || closed()) return;
  MI_CHECK_UV(uv_read_stop(stream()), "uv_read_stop");
  reading_ = false;
}

void HttpConnection::OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) noexcept {
  auto* c = static_cast<HttpConnection*>(handle->data);
  if (c == nullptr || c->closed() || c->server_ == nullptr) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  // One buffer per server: libuv fills it right before the read callback
  // (on Windows too: TCP reads are zero-byte reads there, then a synchronous
  // recv), and anything that must outlive the callback is copied out.
  *buf = uv_buf_init(c->server_->read_buffer_.get(), static_cast<unsigned int>(HttpServer::kReadBufferSize));
}

void HttpConnection::OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* c = static_cast<HttpConnection*>(stream->data);
  if (c == nullptr || c->closed()) return;
  c->HandleRead(nread, buf);
}

void HttpConnection::HandleRead(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF && !lingering()) {
      peer_eof_ = true;
      StopReading();
      // A request cut short can never complete; earlier ones are still answered.
      parser_.EndOfInput();
      Schedule();
      return;
    }
    if (nread != UV_EOF) {
      LogFailure("connection from", static_cast<int>(nread));
    }
    Close();
    return;
  }
  if (lingering() || input_stopped() || draining()) return;  // discard
  ParseInput(buf->base, static_cast<size_t>(nread));
  Schedule();
}

// --- parsing ---------------------------------------------------------------

void HttpConnection::ParseInput(const char* data, size_t len) {
  if (input_ == Input::kPaused || !pending_in_.empty()) {
    pending_in_.append(data, len);
    StopReading();
    return;
  }
  size_t used = Parse(std::string_view(data, len));
  if (input_stopped()) {
    pending_in_.clear();
    StopReading();
  } else if (input_ == Input::kPaused) {
    // The rest of this read (further pipelined requests) waits for room.
    pending_in_.assign(data + used, len - used);
    StopReading();
  }
}

void HttpConnection::ParsePending() {
  size_t used = Parse(pending_in_);
  if (input_stopped() || closed()) {
    pending_in_.clear();
  } else {
    pending_in_.erase(0, std::min(used, pending_in_.size()));
  }
}

// Feeds `data` to the parser, event by event. Returns how many bytes it used
// (fewer than all only when paused for back-pressure).
size_t HttpConnection::Parse(std::string_view data) {
  size_t used = 0;
  for (;;) {
    parser_.set_limits({limits().max_header_bytes, limits().max_body_bytes});
    RequestParser::Event event;
    used += parser_.Feed(data.substr(used), &event);
    if (parser_.allowance_starts() != allowance_starts_) {
      // A request began, or its body did: the same allowance, counted afresh.
      allowance_starts_ = parser_.allowance_starts();
      ArmTimer(TimerMode::kRequest, limits().header_timeout);
    }
    switch (event) {
      case RequestParser::Event::kNeedMore:
        if (parser_.upgraded()) input_ = Input::kStopped;  // we do not speak other protocols
        return used;
      case RequestParser::Event::kError:
        ProtocolError();
        return data.size();
      case RequestParser::Event::kExpectContinue:
        PushAnswered(Slot::Kind::kInterim, std::nullopt);
        Schedule();
        break;
      case RequestParser::Event::kRequest: {
        const bool keep_alive = parser_.request().keep_alive;
        Dispatch();
        if (closed()) return used;
        if (!keep_alive || draining() || closing()) {
          input_ = Input::kStopped;
          return used;
        }
        // Back-pressure: stop mid-buffer and keep the rest until answers drain.
        if (!HasRoom()) {
          input_ = Input::kPaused;
          return used;
        }
        break;
      }
    }
    if (used == data.size()) return used;
  }
}

// Hands the parsed request to the handler with a Responder for its slot.
void HttpConnection::Dispatch() {
  HttpRequest& request = parser_.request();
  fifo_.emplace_back();
  Slot& slot = fifo_.back();
  slot.head = request.method == "HEAD";
  slot.keep_alive = request.keep_alive;
  slot.http10 = request.http_minor == 0;
  auto exchange = std::make_shared<Exchange>(this, &slot);
  slot.exchange = exchange.get();
  request.peer = peer_;
  request.peer_is_loopback = loopback_;
  request.caller = caller_;
  request.transport = transport_;
  if (server_ == nullptr) return;  // the Responder, dropped here, answers 500
  ++server_->stats_.requests;
  server_->handler_.OnRequest(request, Responder(std::move(exchange)));
}

void HttpConnection::ProtocolError() {
  const int status = parser_.error_status();
  const std::string_view description = parser_.error_description();
  if (server_ != nullptr) {
    ++server_->stats_.protocol_errors;
    MI_LOG(server_->logger_, kDebug) << "http: " << status << " to " << peer_ << " (" << description
                                     << "), closing the connection";
  }
  RespondError(status, "bad_request", description);
}

// Answers `status` after the answers already owed on this connection, then closes.
void HttpConnection::RespondError(int status, std::string_view error, std::string_view description) {
  if (closing()) return;
  input_ = Input::kStopped;
  parser_.EndOfInput();
  pending_in_.clear();
  StopReading();
  HttpResponse r;
  r.status = status;
  r.body = ProtocolErrorBody(error, description);
  r.close = true;
  if (status == 503) r.headers.emplace_back("Retry-After", "1");
  PushAnswered(Slot::Kind::kError, std::move(r));
  Schedule();
}

// --- output ----------------------------------------------------------------

void HttpConnection::PushAnswered(Slot::Kind kind, std::optional<HttpResponse> response) {
  fifo_.emplace_back();
  Slot& slot = fifo_.back();
  slot.kind = kind;
  slot.answered = true;
  slot.response = std::move(response);
  MoveReady();
}

void HttpConnection::Answer(Slot* slot, HttpResponse&& response) {
  if (closing()) return;
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
void HttpConnection::EmitFront(const HttpResponse* direct) {
  Slot& slot = fifo_.front();
  const bool last = fifo_.size() == 1;
  if (slot.kind == Slot::Kind::kInterim) {
    out_.append(k100Continue);
  } else {
    const HttpResponse& r = direct != nullptr ? *direct : *slot.response;
    const bool close = r.close || !slot.keep_alive || slot.kind == Slot::Kind::kError ||
                       (last && (draining() || input_stopped() || (peer_eof_ && pending_in_.empty())));
    Serialize(&out_, r, slot.head, close, !close && slot.http10);
    // An abort pending keeps its state: the reset wins over the linger.
    if (close && !aborting()) state_ = State::kClosingAfterWrite;
  }
  fifo_.pop_front();
}

void HttpConnection::MoveReady() {
  while (!closing() && !fifo_.empty() && fifo_.front().answered) EmitFront(nullptr);
  if (closing()) AbandonFifo();
}

// Requests after a closing answer (or on a closed connection) get no answer:
// their Responders become no-ops.
void HttpConnection::AbandonFifo() {
  for (Slot& slot : fifo_) DetachExchange(slot);
  fifo_.clear();
}

void HttpConnection::Flush() {
  if (write_in_flight_ || out_.empty() || closed()) return;
  writing_.swap(out_);
  out_.clear();
  uv_buf_t buf = uv_buf_init(writing_.data(), static_cast<unsigned int>(writing_.size()));
  int n = uv_try_write(stream(), &buf, 1);
  if (n == static_cast<int>(writing_.size())) {
    writing_.clear();  // all taken at once; Service carries on
    return;
  }
  if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
    LogFailure("write to", n);
    Close();
    return;
  }
  size_t offset = n > 0 ? static_cast<size_t>(n) : 0;
  buf = uv_buf_init(writing_.data() + offset, static_cast<unsigned int>(writing_.size() - offset));
  int rc = uv_write(&write_req_, stream(), &buf, 1, OnWrite);
  if (rc != 0) {
    LogFailure("write to", rc);
    Close();
    return;
  }
  write_in_flight_ = true;
}

void HttpConnection::OnWrite(uv_write_t* req, int status) noexcept {
  auto* c = static_cast<HttpConnection*>(req->data);
  c->write_in_flight_ = false;
  c->writing_.clear();
  if (c->closed()) return;
  if (status < 0) {
    c->LogFailure("write to", status);
    c->Close();
    return;
  }
  // Progress: the idle clock restarts; Service decides what comes next.
  c->Schedule();
}

void HttpConnection::BeginLinger() {
  if (lingering() || closed()) return;
  if (peer_eof_) {
    Close();  // nothing more can arrive: a plain close sends FIN after the data
    return;
  }
  state_ = State::kLingering;
  int rc = uv_shutdown(&shutdown_req_, stream(), OnShutdown);
  if (rc != 0) {
    Close();
    return;
  }
  if (!StartReading()) return;
  Duration linger = std::min(kLingerTimeout, limits().idle_timeout);
  ArmTimer(TimerMode::kLinger, linger);
}

void HttpConnection::OnShutdown(uv_shutdown_t* req, int status) noexcept {
  auto* c = static_cast<HttpConnection*>(req->data);
  if (c->closed()) return;
  if (status < 0) c->Close();
}

// --- timer -----------------------------------------------------------------

// One uv timer per connection. Re-arming only moves a deadline; the uv timer is
// restarted only when the new deadline is earlier than the one it waits for.
void HttpConnection::ArmTimer(TimerMode mode, Duration delay) {
  if (closed() || !timer_.is_open()) return;
  const uint64_t now = uv_now(server_->loop_);
  const uint64_t ms = delay.count() > 0 ? static_cast<uint64_t>(delay.count()) : 0;
  timer_mode_ = mode;
  timer_deadline_ = now + ms;
  if (uv_is_active(timer_.base()) == 0 || timer_due_ > timer_deadline_) {
    MI_CHECK_UV(uv_timer_start(timer_.get(), OnTimerCb, ms, 0), "uv_timer_start");
    timer_due_ = timer_deadline_;
  }
}

void HttpConnection::UpdateTimer() {
  if (closed() || lingering() || parser_.in_request()) return;  // the request or linger timer owns it
  if (fifo_.empty()) {
    // Nothing requested (maybe output the client is not reading): idle.
    ArmTimer(TimerMode::kIdle, limits().idle_timeout);
  } else {
    timer_mode_ = TimerMode::kNone;  // the handler is working
  }
}

void HttpConnection::OnTimerCb(uv_timer_t* timer) noexcept {
  auto* c = static_cast<HttpConnection*>(timer->data);
  if (c == nullptr || c->closed()) return;
  c->OnTimer();
}

void HttpConnection::OnTimer() {
  if (timer_mode_ == TimerMode::kNone) return;
  const uint64_t now = uv_now(server_->loop_);
  if (now < timer_deadline_) {
    MI_CHECK_UV(uv_timer_start(timer_.get(), OnTimerCb, timer_deadline_ - now, 0), "uv_timer_start");
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
        MI_LOG(server_->logger_, kDebug) << "http: request from " << peer_ << " too slow, answering 408 and closing";
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

}  // namespace mi::proxy
