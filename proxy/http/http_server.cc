#include "proxy/http/http_server.h"

#include <algorithm>

#include "agent/base/check.h"
#include "proxy/http/http_connection.h"

// Object model (see the contract in http_server.h):
//
//  HttpServer owns the HttpListener (listening sockets, admission, the idle
//  list), a uv_check + uv_idle pair that runs one "turn" per loop iteration
//  while some connection has work, the shutdown deadline timer, and the set of
//  every HttpConnection not yet deleted. A connection deletes itself in its
//  close callback (http_connection.h).

namespace mi::proxy {

HttpServer::HttpServer(uv_loop_t* loop, const ServerLimits& limits, HttpHandler& handler, Logger& logger,
                       PeerResolver* peers)
    : loop_(loop),
      limits_(limits),
      handler_(handler),
      logger_(logger),
      own_peers_(peers == nullptr ? MakeSystemPeerResolver() : nullptr),
      peers_(peers == nullptr ? *own_peers_ : *peers),
      read_buffer_(new char[kReadBufferSize]),
      listener_(*this) {
  MI_CHECK_UV(check_.Init(uv_check_init, loop_, this), "uv_check_init");
  MI_CHECK_UV(idle_.Init(uv_idle_init, loop_, this), "uv_idle_init");
  MI_CHECK_UV(deadline_timer_.Init(uv_timer_init, loop_, this), "uv_timer_init");
}

HttpServer::~HttpServer() {
  // No callbacks from here on: connections forget us, then close.
  for (HttpConnection* c : connections_) {
    c->Detach();
    c->Close();
  }
  connections_.clear();
  dirty_.clear();
  listener_.ForgetIdle();
  shutdown_done_ = nullptr;
  // The listeners, check_, idle_ and deadline_timer_ close in their destructors.
}

HttpConnection* HttpServer::NewConnection(HttpRequest::Transport transport) {
  auto* c = new HttpConnection(this, transport);
  if (!c->InitStream()) {
    delete c;  // never handed to libuv
    return nullptr;
  }
  connections_.insert(c);
  return c;
}

void HttpServer::Schedule(HttpConnection* c) {
  if (!c->dirty) {
    c->dirty = true;
    dirty_.push_back(c);
  }
  StartTurn();
}

void HttpServer::StartTurn() {
  if (turn_active_) return;
  // The check handle does the work after this iteration's I/O; the idle handle
  // only keeps the next poll from blocking when work is queued from a phase
  // that runs after the check (or from timers).
  MI_CHECK_UV(uv_check_start(check_.get(),
                             [](uv_check_t* h) {
                               if (h->data != nullptr) static_cast<HttpServer*>(h->data)->OnTurn();
                             }),
              "uv_check_start");
  MI_CHECK_UV(uv_idle_start(idle_.get(), [](uv_idle_t*) {}), "uv_idle_start");
  turn_active_ = true;
}

void HttpServer::StopTurn() {
  if (!turn_active_) return;
  MI_CHECK_UV(uv_check_stop(check_.get()), "uv_check_stop");
  MI_CHECK_UV(uv_idle_stop(idle_.get()), "uv_idle_stop");
  turn_active_ = false;
}

void HttpServer::OnTurn() {
  servicing_.swap(dirty_);
  for (HttpConnection* c : servicing_) c->dirty = false;
  for (HttpConnection* c : servicing_) c->Service();
  servicing_.clear();
  if (dirty_.empty()) StopTurn();
  if (done_pending_ && connections_.empty()) {
    done_pending_ = false;
    MI_CHECK_UV(uv_timer_stop(deadline_timer_.get()), "uv_timer_stop");
    std::function<void()> done = std::move(shutdown_done_);
    shutdown_done_ = nullptr;
    // Last statement: `done` may destroy the server.
    if (done) done();
  }
}

void HttpServer::OnConnectionClosing(HttpConnection* c) { listener_.OnConnectionClosing(c); }

void HttpServer::Forget(HttpConnection* c) {
  connections_.erase(c);
  if (c->dirty) {
    dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), c), dirty_.end());
    c->dirty = false;
  }
  // servicing_ only holds connections during OnTurn, which never runs close callbacks.
  MaybeFinishShutdown();
}

void HttpServer::MaybeFinishShutdown() {
  if (shutting_down_ && connections_.empty() && shutdown_done_ && !done_pending_) {
    done_pending_ = true;
    StartTurn();
  }
}

void HttpServer::Shutdown(Duration deadline, std::function<void()> done) {
  StopAccepting();
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  done_pending_ = false;
  deadline_passed_ = false;
  for (HttpConnection* c : connections_) c->Drain();
  StartDeadlineTimer(deadline);
  MaybeFinishShutdown();
}

void HttpServer::StartDeadlineTimer(Duration delay) {
  const uint64_t ms = delay.count() > 0 ? static_cast<uint64_t>(delay.count()) : 0;
  MI_CHECK_UV(uv_timer_start(
                  deadline_timer_.get(),
                  [](uv_timer_t* h) {
                    if (h->data != nullptr) static_cast<HttpServer*>(h->data)->OnDeadline();
                  },
                  ms, 0),
              "uv_timer_start");
}

// First the deadline: whoever still waits is told 503 and the connections
// close after their answers. Then, after a short grace, whatever did not get
// there (a client not reading) is closed.
void HttpServer::OnDeadline() {
  std::vector<HttpConnection*> open(connections_.begin(), connections_.end());
  if (!deadline_passed_) {
    deadline_passed_ = true;
    size_t refused = 0;
    for (HttpConnection* c : open) refused += c->RefuseWaiting();
    if (refused > 0) {
      MI_LOG(logger_, kInfo) << "http: shutdown deadline reached, answering 503 to " << refused
                             << " request(s) still waiting";
    }
    if (!open.empty()) StartDeadlineTimer(limits_.drain_grace);
    return;
  }
  if (!open.empty()) {
    MI_LOG(logger_, kInfo) << "http: shutdown grace over, closing " << open.size() << " connection(s)";
  }
  for (HttpConnection* c : open) c->Close();
  MaybeFinishShutdown();
}

}  // namespace mi::proxy
