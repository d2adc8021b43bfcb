#pragma once
// CurlUpstreamClient: the real UpstreamClient. libcurl's multi-socket interface
// driven by the libuv loop (one uv_poll_t per socket, one uv_timer_t for
// curl's timeouts); no threads, no blocking calls.
//
// Each Fetch is one GET of
//   <endpoint>?api-version=<v>&resource=<enc>[&client_id|object_id|mi_res_id=<enc>]
// with "Metadata: true" (SPEC §5): never through a proxy whatever the
// environment says, no redirects, bounded by connect and total timeouts, body
// capped at max_response_bytes. Connections to IMDS are kept alive and reused.
// Forward is the same transfer for a request passed through (the IMDS v2
// paths): the caller's method, path, query and body to the endpoint's host.
// Outcomes: kHttp (any status: retrying and classifying is RetryPolicy's job),
// kTimeout, kConnectError (with curl's error text), kTooLarge.
//
// Kind arc (Azure Arc-enabled servers, agent/arc_challenge.h): a fetch whose
// first GET is answered 401 with a valid challenge is sent again, once, with
// "Authorization: Basic <the .key file's contents>"; the secret is wiped once
// that GET is handed to curl (and curl's copy of the header when it ends),
// never logged, never kept for another fetch. A challenge that fails a check,
// a 401 without one, or a second 401 ends the fetch as kRefused
// ("Arc challenge: <the check>"; not retried), logged at warning. mi_res_id goes up as
// msi_res_id. Forward never answers a challenge.
//
// Loop thread only. Callbacks run on the loop thread, never inside Fetch, never
// after destruction; a callback may destroy the client or call Fetch again.
// Destroying the client cancels every transfer without running its callback,
// and closes every handle it opened (uv_loop_close succeeds afterwards).

#include <curl/curl.h>
#include <uv.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/event_loop.h"
#include "agent/base/log.h"
#include "agent/base/uv_handle.h"
#include "agent/platform.h"
#include "agent/upstream_client.h"

namespace mi {

// The Azure Arc agent's token endpoint and the api-version it speaks.
inline constexpr const char kArcEndpoint[] = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
inline constexpr const char kArcApiVersion[] = "2020-06-01";

class CurlUpstreamClient : public UpstreamClient {
 public:
  enum class Kind { kImds, kArc };
  // Config "imds" (ranges checked by ParseConfig, agent/app/config.cc).
  struct Options {
    Kind kind = Kind::kImds;  // "kind": "imds", "arc" ("auto" is resolved when the config is read)
    std::string arc_token_dir = platform::DefaultArcTokenDir();  // "arc_token_dir"
    std::string endpoint = "http://169.254.169.254/metadata/identity/oauth2/token";  // "endpoint"
    std::string api_version = "2018-02-01";     // "api_version"
    Duration connect_timeout = Duration(2000);  // "connect_timeout_seconds": 2
    Duration timeout = Duration(10000);         // "timeout_seconds": 10 (whole request)
    size_t max_response_bytes = 64 * 1024;      // "max_response_bytes": larger bodies are kTooLarge
  };

  // `loop` and `logger` are not owned and must outlive the client (Logger::Discard()
  // for no logging).
  CurlUpstreamClient(EventLoop& loop, const Options& options, Logger& logger);
  ~CurlUpstreamClient() override;
  CurlUpstreamClient(const CurlUpstreamClient&) = delete;
  CurlUpstreamClient& operator=(const CurlUpstreamClient&) = delete;

  // Applies to fetches started after the call (config reload).
  void set_options(const Options& options) { options_ = options; }

  void Fetch(const TokenKey& key, Callback callback) override;
  // The same transfer for a caller's request (method GET or POST, its body and
  // Content-Type) to ForwardUrl; the answer's Server header is kept.
  void Forward(const ForwardRequest& request, Callback callback) override;
  // Sends options.client_request_id as x-ms-client-request-id (logged at debug).
  void FetchWith(const TokenKey& key, const FetchOptions& options, Callback callback) override;

  // Transfers started and not yet answered.
  size_t in_flight() const { return transfers_.size() + failed_.size(); }

  // The request URL for `key` (exposed for tests and logs).
  static std::string BuildUrl(const Options& options, const TokenKey& key, bool bypass_cache = false);
  // The endpoint's scheme://host[:port] followed by `path_and_query`.
  static std::string ForwardUrl(const Options& options, std::string_view path_and_query);

 private:
  struct Transfer;
  struct Socket;
  // Where a fetch stands in the Arc challenge (kNone: kind imds, or a Forward).
  enum class ArcStep { kNone, kChallenge, kAnswered };
  struct Failed {
    Callback callback;
    UpstreamResponse response;
  };

  static int OnCurlSocket(CURL* easy, curl_socket_t s, int what, void* userp, void* socketp) noexcept;
  static int OnCurlTimer(CURLM* multi, long timeout_ms, void* userp) noexcept;
  static void OnPoll(uv_poll_t* handle, int status, int events) noexcept;
  static void OnTimer(uv_timer_t* handle) noexcept;
  static void OnFailedTimer(uv_timer_t* handle) noexcept;

  // One transfer of `url` (method, body and Content-Type from `request`; a
  // non-empty `client_request_id` goes up as x-ms-client-request-id). With
  // `secret`, it goes up as Arc's Authorization header.
  void Start(const std::string& url, const ForwardRequest& request, const std::string& client_request_id,
             Callback callback, ArcStep arc = ArcStep::kNone, const SecureString* secret = nullptr);
  // An Arc fetch answered 401: true when the second GET took over `t`'s
  // callback, else *r is the fetch's error.
  bool OnArcUnauthorized(Transfer& t, UpstreamResponse* r);
  int HandleSocket(curl_socket_t s, int what);
  void SocketAction(curl_socket_t s, int flags);
  // Reads finished transfers and runs their callbacks.
  void ProcessDone();
  // Answers `callback` with a transport error on a later loop turn.
  void FailLater(Callback callback, std::string error);

  uv_loop_t* loop_;
  Options options_;
  Logger& logger_;
  CURLM* multi_ = nullptr;
  UvHandle<uv_timer_t> timer_;         // curl's timeout
  UvHandle<uv_timer_t> failed_timer_;  // delivers FailLater answers
  std::unordered_map<curl_socket_t, std::unique_ptr<Socket>> sockets_;
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> transfers_;
  std::vector<Failed> failed_;
  // Cleared by the destructor: a callback that destroyed the client stops the
  // loop that called it.
  std::shared_ptr<bool> alive_;
};

}  // namespace mi
