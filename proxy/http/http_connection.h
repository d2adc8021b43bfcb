#pragma once
// One accepted connection of an HttpServer: reads and parses requests, hands
// them to the handler, writes the answers in request order, lingers, closes.
// Internal to mi_http (http_server.cc and http_listener.cc create them).
//
// Its socket is a TCP stream (uv_tcp_t) or a Unix stream socket (uv_pipe_t),
// chosen at construction and held inline in one union: both begin with
// libuv's stream fields, so stream() serves either and the read/write path
// does not look at the kind. Only accept-time calls differ (TCP_NODELAY and
// the peer lookup for TCP, SO_PEERCRED for a Unix socket) and a reset close.
//
// Lifetime: heap-allocated; owns its socket handle inline and is deleted in that
// handle's close callback, which libuv runs after every write/shutdown
// callback of the handle and never inside another callback of this connection
// (a self-owned wrapper, uv_handle.h rule 2). Close() only starts that: after
// it the object stays valid but inert (kClosed), so code on the stack below a
// callback may still look at it. Its timer is a UvHandle.
//
// Each request occupies a Slot in the FIFO. The handler gets a Responder whose
// sink (an Exchange) points back at the connection and the slot while both are
// alive. Closing or abandoning the connection, or answering 503 at the
// shutdown deadline, detaches the Exchange first, so a late Send() is a no-op.
//
// Output: answered slots at the head of the FIFO are serialized into out_; the
// server's turn flushes out_ with one write per connection (uv_try_write
// first, uv_write for the rest). Parsing, resuming after back-pressure,
// flushing, closing and timer updates all happen in Service(), run from the
// turn, so nothing re-enters the parser or frees a connection from inside the
// handler.

#include <uv.h>

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include "agent/base/clock.h"
#include "agent/base/uv_handle.h"
#include "proxy/http/http_message.h"
#include "proxy/http/request_parser.h"

namespace mi::proxy {

class HttpServer;
struct ServerLimits;

namespace detail {

class Exchange;

// One request's place in the response order.
struct Slot {
  enum class Kind : uint8_t { kRequest, kInterim, kError };
  Kind kind = Kind::kRequest;
  bool answered = false;
  bool head = false;             // HEAD request: no body in the answer
  bool keep_alive = true;        // the request allows another after it
  bool http10 = false;           // HTTP/1.0 keep-alive needs an explicit header
  Exchange* exchange = nullptr;  // the unanswered Exchange, if any
  std::optional<HttpResponse> response;  // answered out of order: waits here
};

}  // namespace detail

class HttpConnection {
 public:
  // The lifecycle, in the only order it moves (kAborting skips to kClosed).
  enum class State : uint8_t {
    kOpen,               // serving requests
    kDraining,           // server shutdown: finish the requests in flight, read no more, close
    kAborting,           // Responder::Abort(): reset on the next Service(), unanswered
    kClosingAfterWrite,  // the last answer is queued ("Connection: close"); nothing more is answered
    kLingering,          // written and half-closed; reading and discarding until EOF or the linger timer
    kClosed,             // uv_close() started; deleted in its callback
  };

  HttpConnection(HttpServer* server, HttpRequest::Transport transport);
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // uv_tcp_init or uv_pipe_init, by the transport.
  bool InitStream();
  bool InitTimer();
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&socket_); }

  // Admitted: counted in open_connections, reading.
  void Start();
  // Over max_connections: answered 503 and closed.
  void Reject();
  void Drain();
  // The drain deadline: answers 503 to every request still waiting (answers
  // already given go out first, in order) and closes after the last. Returns
  // how many requests it answered.
  size_t RefuseWaiting();
  // The one teardown: starts closing; the object is deleted in the socket's
  // close callback. With `reset`, a TCP peer sees a reset instead of an
  // orderly close (a Unix socket just closes). REQUIRES: InitStream() succeeded.
  void Close(bool reset = false);
  // Responder::Abort(): reset the connection on the next turn, unanswered.
  void Abort();
  // The server is going away: no more calls into it.
  void Detach() { server_ = nullptr; }
  void Service();
  void Answer(detail::Slot* slot, HttpResponse&& response);

  bool closed() const { return state_ == State::kClosed; }
  bool peer_closed() const { return peer_eof_; }
  bool counted() const { return admission_ == Admission::kServed; }
  bool rejecting() const { return admission_ == Admission::kRejected; }
  // Nothing owed to the client: no request handed to the handler is waiting
  // for its answer and nothing is left to write (a request still arriving has
  // not been handed over). Closing it loses no answer.
  bool OwesNothing() const {
    return counted() && !closing() && !write_in_flight_ && fifo_.empty() && out_.empty();
  }

  // HttpServer's turn list and HttpListener's idle list.
  bool dirty = false;
  bool idle_listed = false;
  HttpConnection* idle_prev = nullptr;
  HttpConnection* idle_next = nullptr;

 private:
  enum class Admission : uint8_t { kNew, kServed, kRejected };
  // What happens to input: parsed, kept until answers make room, or ignored
  // (close-request, error, upgrade or abort seen).
  enum class Input : uint8_t { kParsing, kPaused, kStopped };
  enum class TimerMode : uint8_t { kNone, kIdle, kRequest, kLinger };

  // The last answer is queued or out: nothing more is answered (also true
  // while lingering and once closed).
  bool closing() const { return state_ >= State::kClosingAfterWrite; }
  bool lingering() const { return state_ == State::kLingering; }
  bool draining() const { return state_ == State::kDraining; }
  bool aborting() const { return state_ == State::kAborting; }
  bool input_stopped() const { return input_ == Input::kStopped; }
  bool is_tcp() const { return transport_ == HttpRequest::Transport::kTcp; }
  const ServerLimits& limits() const;
  // At Start(): peer_, loopback_ and caller_, once per connection.
  void IdentifyTcpPeer();
  void IdentifyUnixPeer();
  // Another request may be dispatched: few enough in flight, and the client
  // is reading what we already owe it.
  bool HasRoom() const;
  // Parsing stopped for back-pressure and may go on now.
  bool CanResumeParse() const { return input_ == Input::kPaused && !draining() && HasRoom(); }
  void Schedule();
  void LogFailure(std::string_view what, int uv_error);

  // Parsing.
  void ParseInput(const char* data, size_t len);
  void ParsePending();
  size_t Parse(std::string_view data);
  void Dispatch();
  void ProtocolError();
  void RespondError(int status, std::string_view error, std::string_view description);

  // Output.
  void PushAnswered(detail::Slot::Kind kind, std::optional<HttpResponse> response);
  void EmitFront(const HttpResponse* direct);
  void MoveReady();
  void AbandonFifo();
  void Flush();
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

  // Both kinds begin with libuv's stream fields (stream()).
  union Socket {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  };

  HttpServer* server_;
  const HttpRequest::Transport transport_;
  Socket socket_;  // initialised before the object is handed to anyone (InitStream)
  UvHandle<uv_timer_t> timer_;
  uv_write_t write_req_;
  uv_shutdown_t shutdown_req_;
  RequestParser parser_;
  uint64_t allowance_starts_ = 0;  // parser_.allowance_starts() the request timer was armed for

  State state_ = State::kOpen;
  Admission admission_ = Admission::kNew;
  Input input_ = Input::kParsing;
  bool peer_eof_ = false;         // client half-closed: answer what we have, then close
  bool reading_ = false;          // uv_read_start() is in effect
  bool write_in_flight_ = false;  // a uv_write() of writing_ is pending

  std::string pending_in_;  // input not parsed yet (paused for back-pressure)
  std::string peer_;        // "127.0.0.1:53122", "unix:pid=4711" (for logs)
  bool loopback_ = false;   // a loopback TCP peer, or any Unix socket peer
  PeerCredentials caller_;  // resolved once, in Start()

  // Responses in request order; references stay valid on push_back/pop_front.
  std::deque<detail::Slot> fifo_;
  std::string out_;      // serialized, ready to write
  std::string writing_;  // handed to uv_write

  TimerMode timer_mode_ = TimerMode::kNone;
  uint64_t timer_deadline_ = 0;  // loop time (ms) at which timer_mode_ expires
  uint64_t timer_due_ = 0;       // loop time at which the uv timer fires
};

}  // namespace mi::proxy
