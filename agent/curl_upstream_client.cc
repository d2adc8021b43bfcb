#include "agent/curl_upstream_client.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

#include "agent/arc_challenge.h"
#include "agent/base/ascii.h"
#include "agent/base/check.h"
#include "agent/base/secure_memory.h"
#include "agent/base/url.h"

namespace mi {
namespace {

using Outcome = UpstreamResponse::Outcome;

// A Retry-After (or Server) longer than this is garbage anyway; keep the copy small.
constexpr size_t kMaxRetryAfterChars = 128;

void EnsureCurlGlobalInit() {
  // Once per process; thread-safe through the static's initialisation.
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) Fatal("curl_global_init", curl_easy_strerror(rc));
}

// A transport failure in a few words for /status and logs: the OS's reason
// (CURLINFO_OS_ERRNO) where there is one, else libcurl's. The same failure
// reads the same each time (a timeout names the configured limit, not the
// time measured): the daemon logs a failure once per change of its text.
std::string DescribeFailure(CURL* easy, CURLcode result, Duration connect_timeout, Duration timeout) {
  if (result == CURLE_OPERATION_TIMEDOUT) {
    curl_off_t connect_us = 0;
    curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connect_us);
    return connect_us > 0 ? "no answer: timed out after " + std::to_string(timeout.count()) + " ms"
                          : "connect timed out after " + std::to_string(connect_timeout.count()) + " ms";
  }
  if (result == CURLE_COULDNT_RESOLVE_HOST) return "cannot resolve the host name";
  if (result == CURLE_GOT_NOTHING) return "connection closed without an answer";
  long os = 0;
  curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os);
  switch (os) {
#ifdef _WIN32
    case WSAECONNREFUSED: return "connection refused";
    case WSAENETUNREACH: return "network unreachable";
    case WSAEHOSTUNREACH: return "host unreachable";
    case WSAECONNRESET: return "connection reset";
    case WSAETIMEDOUT: return "connect timed out";
#else
    case ECONNREFUSED: return "connection refused";
    case ENETUNREACH: return "network unreachable";
    case EHOSTUNREACH: return "host unreachable";
    case ECONNRESET: return "connection reset";
    case ETIMEDOUT: return "connect timed out";
    case EADDRNOTAVAIL: return "address not available";
#endif
    default: break;
  }
  std::string text = curl_easy_strerror(result);
  if (os != 0) text += " (os error " + std::to_string(os) + ")";
  return text;
}

long ToCurlMs(Duration d) {
  // 0 means "no timeout" to curl; a configured non-positive value keeps that.
  return d.count() > 0 ? static_cast<long>(std::min<int64_t>(d.count(), 0x7fffffff)) : 0L;
}

}  // namespace

// One GET in flight. Owned by transfers_ (keyed by its easy handle).
struct CurlUpstreamClient::Transfer {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  Callback callback;
  // On the secure arena: the copies left behind as it grows are wiped too.
  SecureString body;
  std::string retry_after;
  std::string server;
  std::string request_body;  // a Forward's POST body (curl reads it from here)
  // Arc fetches: what the second GET repeats, and the challenge header.
  ArcStep arc = ArcStep::kNone;
  std::string url;
  std::string client_request_id;
  std::string www_authenticate;
  bool secret_header = false;  // `headers` holds Arc's Authorization: wiped when freed
  size_t max_bytes = 0;
  bool too_large = false;
  char error[CURL_ERROR_SIZE] = {};

  Transfer() = default;
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;
  // REQUIRES: `easy` is no longer in the multi handle.
  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (secret_header) {
      for (curl_slist* h = headers; h != nullptr; h = h->next) WipeBytes(h->data, std::strlen(h->data));
    }
    if (headers != nullptr) curl_slist_free_all(headers);
  }

  static size_t OnWrite(char* data, size_t size, size_t nmemb, void* userp) noexcept {
    auto* t = static_cast<Transfer*>(userp);
    const size_t n = size * nmemb;
    if (n > t->max_bytes - std::min(t->max_bytes, t->body.size())) {
      t->too_large = true;
      return 0;  // n > 0 here; any count but n aborts the transfer
    }
    t->body.append(data, n);
    return n;
  }

  static size_t OnHeader(char* data, size_t size, size_t nitems, void* userp) noexcept {
    auto* t = static_cast<Transfer*>(userp);
    const size_t n = size * nitems;
    std::string_view line(data, n);
    if (StartsWithIgnoreCase(line, "HTTP/")) {
      // A new response (after a 1xx): only the final one's headers count.
      t->retry_after.clear();
      t->server.clear();
      t->www_authenticate.clear();
    } else if (t->arc != ArcStep::kNone && StartsWithIgnoreCase(line, "www-authenticate:")) {
      // One byte over the bound keeps a too-long challenge recognisable as such.
      t->www_authenticate.assign(TrimLine(line.substr(17)).substr(0, kMaxArcChallengeBytes + 1));
    } else if (StartsWithIgnoreCase(line, "server:")) {
      // Passed back to callers as a header: only printable ASCII, else none.
      std::string_view value = TrimLine(line.substr(7)).substr(0, kMaxRetryAfterChars);
      const bool printable =
          std::all_of(value.begin(), value.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
      t->server.assign(printable ? value : std::string_view());
    } else if (StartsWithIgnoreCase(line, "retry-after:")) {
      std::string_view value = TrimLine(line.substr(12));
      t->retry_after.assign(value.substr(0, kMaxRetryAfterChars));
    }
    return n;
  }
};

// One socket curl asked us to watch.
struct CurlUpstreamClient::Socket {
  CurlUpstreamClient* owner = nullptr;
  curl_socket_t fd{};
  UvHandle<uv_poll_t> poll;  // closed (asynchronously) with the Socket
};

CurlUpstreamClient::CurlUpstreamClient(EventLoop& loop, const Options& options, Logger& logger)
    : loop_(loop.uv()), options_(options), logger_(logger), alive_(std::make_shared<bool>(true)) {
  EnsureCurlGlobalInit();
  multi_ = curl_multi_init();
  if (multi_ == nullptr) Fatal("curl_multi_init", "out of memory");
  MI_CHECK_UV(timer_.Init(uv_timer_init, loop_, this), "uv_timer_init");
  MI_CHECK_UV(failed_timer_.Init(uv_timer_init, loop_, this), "uv_timer_init");

  CURLMcode mc = curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlUpstreamClient::OnCurlSocket);
  if (mc == CURLM_OK) mc = curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  if (mc == CURLM_OK) mc = curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlUpstreamClient::OnCurlTimer);
  if (mc == CURLM_OK) mc = curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  if (mc != CURLM_OK) Fatal("curl_multi_setopt", curl_multi_strerror(mc));
}

CurlUpstreamClient::~CurlUpstreamClient() {
  *alive_ = false;
  // Cancel: detach every easy handle first (curl may call the socket/timer
  // functions meanwhile; every member is still alive), then free them.
  for (auto& entry : transfers_) curl_multi_remove_handle(multi_, entry.first);
  transfers_.clear();
  failed_.clear();
  curl_multi_cleanup(multi_);  // closes cached connections (socket callbacks may run)
  multi_ = nullptr;
  sockets_.clear();  // closes any poll handle curl did not remove
  timer_.Close();
  failed_timer_.Close();
}

std::string CurlUpstreamClient::BuildUrl(const Options& options, const TokenKey& key, bool bypass_cache) {
  std::string url = options.endpoint;
  url += url.find('?') == std::string::npos ? '?' : '&';
  url += "api-version=";
  url += UrlEncode(options.api_version);
  url += "&resource=";
  url += UrlEncode(key.resource);
  // Arc takes an ARM id as msi_res_id only.
  const bool arc_res_id = options.kind == Kind::kArc && key.kind == SelectorKind::kResourceId;
  const char* param = arc_res_id ? "msi_res_id" : SelectorParam(key.kind);
  if (*param != '\0' && !key.id.empty()) {
    url += '&';
    url += param;
    url += '=';
    url += UrlEncode(key.id);
  }
  if (!key.claims.empty()) {
    url += "&claims=";
    url += UrlEncode(key.claims);
  }
  if (bypass_cache) url += "&bypass_cache=true";
  return url;
}

void CurlUpstreamClient::Fetch(const TokenKey& key, Callback callback) {
  FetchWith(key, FetchOptions(), std::move(callback));
}

void CurlUpstreamClient::FetchWith(const TokenKey& key, const FetchOptions& options, Callback callback) {
  ForwardRequest get;
  get.method = "GET";
  if (!options.client_request_id.empty()) {
    MI_LOG(logger_, kDebug) << "imds: fetch for " << key.Describe() << " with x-ms-client-request-id "
                            << options.client_request_id;
  }
  Start(BuildUrl(options_, key, options.bypass_cache), get, options.client_request_id, std::move(callback),
        options_.kind == Kind::kArc ? ArcStep::kChallenge : ArcStep::kNone);
}

std::string CurlUpstreamClient::ForwardUrl(const Options& options, std::string_view path_and_query) {
  // scheme://authority of the endpoint, then the caller's path and query.
  const std::string& endpoint = options.endpoint;
  const size_t scheme = endpoint.find("://");
  const size_t path = scheme == std::string::npos ? std::string::npos : endpoint.find_first_of("/?#", scheme + 3);
  std::string url = endpoint.substr(0, path);
  url += path_and_query;
  return url;
}

void CurlUpstreamClient::Forward(const ForwardRequest& request, Callback callback) {
  Start(ForwardUrl(options_, request.path_and_query), request, std::string(), std::move(callback));
}

void CurlUpstreamClient::Start(const std::string& url, const ForwardRequest& request,
                               const std::string& client_request_id, Callback callback, ArcStep arc,
                               const SecureString* secret) {
  auto t = std::make_unique<Transfer>();
  t->max_bytes = options_.max_response_bytes;
  t->arc = arc;
  if (arc == ArcStep::kChallenge) {
    t->url = url;
    t->client_request_id = client_request_id;
  }
  t->easy = curl_easy_init();
  if (t->easy == nullptr) {
    FailLater(std::move(callback), "curl_easy_init failed");
    return;
  }
  const bool post = request.method == "POST";
  t->headers = curl_slist_append(nullptr, "Metadata: true");
  auto append = [&t](const std::string& header) {
    if (t->headers == nullptr) return;
    curl_slist* more = curl_slist_append(t->headers, header.c_str());
    if (more == nullptr) curl_slist_free_all(t->headers);
    t->headers = more;
  };
  // No Content-Type from the caller: none upstream either (curl would add a form type).
  if (post) append(request.content_type.empty() ? std::string("Content-Type:") : "Content-Type: " + request.content_type);
  if (!client_request_id.empty()) append("x-ms-client-request-id: " + client_request_id);
  if (secret != nullptr && t->headers != nullptr) {
    SecureString header = ArcAuthorizationHeader(*secret);
    curl_slist* more = curl_slist_append(t->headers, header.c_str());  // curl's copy: wiped by ~Transfer
    WipeString(&header);
    if (more == nullptr) curl_slist_free_all(t->headers);
    t->headers = more;
    t->secret_header = more != nullptr;
  }
  if (t->headers == nullptr) {
    FailLater(std::move(callback), "out of memory");
    return;
  }
  CURL* e = t->easy;
  CURLcode rc = CURLE_OK;
  auto set = [&rc](CURLcode r) {
    if (rc == CURLE_OK) rc = r;
  };
  set(curl_easy_setopt(e, CURLOPT_URL, url.c_str()));
  if (post) {
    t->request_body = request.body;
    set(curl_easy_setopt(e, CURLOPT_POST, 1L));
    set(curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->request_body.size())));
    set(curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->request_body.data()));
  } else {
    set(curl_easy_setopt(e, CURLOPT_HTTPGET, 1L));
  }
  set(curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers));
  // IMDS is link-local: never via a proxy, whatever http_proxy/no_proxy say.
  set(curl_easy_setopt(e, CURLOPT_PROXY, ""));
  set(curl_easy_setopt(e, CURLOPT_NOPROXY, "*"));
  set(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L));
#if LIBCURL_VERSION_NUM >= 0x075500  // 7.85.0
  set(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"));
#else
  set(curl_easy_setopt(e, CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS)));
#endif
  set(curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ToCurlMs(options_.connect_timeout)));
  set(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ToCurlMs(options_.timeout)));
  // Rejects a too-large Content-Length up front; OnWrite catches the rest.
  set(curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options_.max_response_bytes)));
  set(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Transfer::OnWrite));
  set(curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get()));
  set(curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Transfer::OnHeader));
  set(curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get()));
  set(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error));
  set(curl_easy_setopt(e, CURLOPT_USERAGENT, "mi-agent/" MI_VERSION));
  if (rc != CURLE_OK) {
    FailLater(std::move(callback), std::string("curl_easy_setopt: ") + curl_easy_strerror(rc));
    return;
  }
  t->callback = std::move(callback);
  CURLMcode mc = curl_multi_add_handle(multi_, e);
  if (mc != CURLM_OK) {
    FailLater(std::move(t->callback), std::string("curl_multi_add_handle: ") + curl_multi_strerror(mc));
    return;
  }
  // curl now asks (through OnCurlTimer) for a zero timeout: the transfer
  // starts on a later loop turn.
  transfers_.emplace(e, std::move(t));
}

void CurlUpstreamClient::FailLater(Callback callback, std::string error) {
  MI_LOG(logger_, kDebug) << "imds: request not started: " << error;
  Failed f;
  f.callback = std::move(callback);
  f.response.outcome = Outcome::kConnectError;
  f.response.description = "request not started: " + error;
  f.response.error = std::move(error);
  failed_.push_back(std::move(f));
  uv_timer_start(failed_timer_.get(), &CurlUpstreamClient::OnFailedTimer, 0, 0);
}

void CurlUpstreamClient::OnFailedTimer(uv_timer_t* handle) noexcept {
  auto* self = static_cast<CurlUpstreamClient*>(handle->data);
  if (self == nullptr) return;
  std::vector<Failed> batch;
  batch.swap(self->failed_);
  std::shared_ptr<bool> alive = self->alive_;
  for (auto& f : batch) {
    f.callback(std::move(f.response));
    if (!*alive) return;
  }
}

int CurlUpstreamClient::OnCurlSocket(CURL*, curl_socket_t s, int what, void* userp, void*) noexcept {
  return static_cast<CurlUpstreamClient*>(userp)->HandleSocket(s, what);
}

int CurlUpstreamClient::HandleSocket(curl_socket_t s, int what) {
  if (what == CURL_POLL_REMOVE) {
    // curl calls this before it closes the socket: the poll handle stops now
    // (uv_close stops it synchronously) and is freed after its close callback.
    sockets_.erase(s);
    return 0;
  }
  auto& slot = sockets_[s];
  if (!slot) {
    auto sock = std::make_unique<Socket>();
    sock->owner = this;
    sock->fd = s;
    int rc = sock->poll.Init(uv_poll_init_socket, loop_, sock.get(), s);
    if (rc != 0) {
      sockets_.erase(s);
      MI_LOG(logger_, kDebug) << "imds: uv_poll_init_socket: " << uv_strerror(rc);
      return -1;  // curl fails the transfers on this socket
    }
    slot = std::move(sock);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  int rc = uv_poll_start(slot->poll.get(), events, &CurlUpstreamClient::OnPoll);
  if (rc != 0) {
    MI_LOG(logger_, kDebug) << "imds: uv_poll_start: " << uv_strerror(rc);
    return -1;
  }
  return 0;
}

void CurlUpstreamClient::OnPoll(uv_poll_t* handle, int status, int events) noexcept {
  auto* sock = static_cast<Socket*>(handle->data);
  if (sock == nullptr) return;
  int flags = 0;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  if (status < 0) flags |= CURL_CSELECT_ERR;
  // `sock` may be destroyed inside: copy what we need first.
  CurlUpstreamClient* self = sock->owner;
  self->SocketAction(sock->fd, flags);
}

int CurlUpstreamClient::OnCurlTimer(CURLM*, long timeout_ms, void* userp) noexcept {
  auto* self = static_cast<CurlUpstreamClient*>(userp);
  uv_timer_t* timer = self->timer_.get();
  if (timer == nullptr) return 0;  // closing
  if (timeout_ms < 0) {
    uv_timer_stop(timer);
    return 0;
  }
  // 0 means "as soon as possible": a libuv timer of 0 fires on the next loop
  // iteration, never inside this call (curl forbids calling it back here).
  return uv_timer_start(timer, &CurlUpstreamClient::OnTimer, static_cast<uint64_t>(timeout_ms), 0) == 0
             ? 0
             : -1;
}

void CurlUpstreamClient::OnTimer(uv_timer_t* handle) noexcept {
  auto* self = static_cast<CurlUpstreamClient*>(handle->data);
  if (self == nullptr) return;
  self->SocketAction(CURL_SOCKET_TIMEOUT, 0);
}

void CurlUpstreamClient::SocketAction(curl_socket_t s, int flags) {
  int running = 0;
  CURLMcode mc = curl_multi_socket_action(multi_, s, flags, &running);
  if (mc != CURLM_OK) {
    MI_LOG(logger_, kDebug) << "imds: curl_multi_socket_action: " << curl_multi_strerror(mc);
  }
  ProcessDone();
}

void CurlUpstreamClient::ProcessDone() {
  std::shared_ptr<bool> alive = alive_;
  int pending = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &pending)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    const CURLcode result = msg->data.result;
    // `msg` is invalid after this.
    curl_multi_remove_handle(multi_, easy);
    auto found = transfers_.find(easy);
    if (found == transfers_.end()) {
      curl_easy_cleanup(easy);  // not ours: cannot happen
      continue;
    }
    std::unique_ptr<Transfer> t = std::move(found->second);
    transfers_.erase(found);

    UpstreamResponse r;
    r.retry_after = std::move(t->retry_after);
    r.server = std::move(t->server);
    long status = 0;
    if (curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK) r.status = static_cast<int>(status);
    if (t->too_large || result == CURLE_FILESIZE_EXCEEDED) {
      r.outcome = Outcome::kTooLarge;
      r.error = "response body over " + std::to_string(t->max_bytes) + " bytes";
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
      r.outcome = Outcome::kTimeout;
      r.error = t->error[0] != '\0' ? t->error : curl_easy_strerror(result);
      r.description = DescribeFailure(easy, result, options_.connect_timeout, options_.timeout);
    } else if (result != CURLE_OK) {
      r.outcome = Outcome::kConnectError;
      r.error = t->error[0] != '\0' ? t->error : curl_easy_strerror(result);
      r.description = DescribeFailure(easy, result, options_.connect_timeout, options_.timeout);
    } else {
      r.outcome = Outcome::kHttp;
      r.body.assign(t->body.data(), t->body.size());  // one exact copy, wiped by ~UpstreamResponse
    }
    if (t->arc != ArcStep::kNone && r.outcome == Outcome::kHttp && r.status == 401 && OnArcUnauthorized(*t, &r)) {
      continue;  // the second GET answers the callback
    }
    if (r.outcome != Outcome::kHttp) {
      MI_LOG(logger_, kDebug) << "imds: request failed: " << r.error;
    }
    Callback callback = std::move(t->callback);
    t.reset();
    callback(std::move(r));
    if (!*alive) return;  // the callback destroyed the client
  }
}

bool CurlUpstreamClient::OnArcUnauthorized(Transfer& t, UpstreamResponse* r) {
  std::string why;
  if (t.arc == ArcStep::kAnswered) {
    why = "the endpoint refused the secret (a second 401)";
  } else if (StatusOr<std::string> realm = ParseArcChallenge(t.www_authenticate); !realm.ok()) {
    why = realm.status().message();
  } else if (StatusOr<SecureString> secret = ReadArcSecret(options_.arc_token_dir, *realm); !secret.ok()) {
    why = secret.status().message() + " (realm " + *realm + ")";
  } else {
    MI_LOG(logger_, kDebug) << "arc: answering the challenge of " << *realm;
    ForwardRequest get;
    get.method = "GET";
    Start(t.url, get, t.client_request_id, std::move(t.callback), ArcStep::kAnswered, &*secret);
    WipeString(&*secret);
    return true;
  }
  MI_LOG(logger_, kWarning) << "arc: token request refused: " << why;
  r->outcome = Outcome::kRefused;
  r->status = 0;
  r->body.clear();
  r->error = "Arc challenge: " + why;
  r->description = r->error;  // for /status and the log (cleaned there); never the secret
  return false;
}

}  // namespace mi
