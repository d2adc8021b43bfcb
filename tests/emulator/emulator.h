#pragma once
// The IMDS emulator: an HttpHandler that answers like the Instance Metadata
// Service's managed-identity token endpoint, for tests, the demo and benchmarks.
// It runs on mi::proxy::HttpServer (see main.cc / cli.h for the executable).
//
// ---------------------------------------------------------------------------
// Token endpoint (as real IMDS)
//
//   GET /metadata/identity/oauth2/token[/]?api-version=..&resource=..
//       [&client_id=..|&object_id=..|&mi_res_id=..|&msi_res_id=..]
//   with header "Metadata: true".
//
// Checked in this order; the first failure answers:
//   other path 404, non-GET 405 (Allow: GET)
//   no "Metadata: true"         400 invalid_request "Required metadata header not specified"
//   X-Forwarded-For present     400 invalid_request (IMDS refuses proxied requests)
//   throttle_rps exceeded       429 too_many_requests, Retry-After: 1
//   --- fault mode, then fault steps (below) may take over from here ---
//   no api-version              400 "Bad request" "Required query variable 'api-version' is missing"
//   no resource                 400 invalid_request "Required audience parameter not specified"
//   several selectors           400 invalid_request
//   a parameter not UTF-8       400 invalid_request (after percent-decoding)
//   unknown identity            400 invalid_request "Identity not found"
//   no selector, none default   400 invalid_request "Multiple user assigned identities exist, ..."
//   rejected resource           400 invalid_resource "AADSTS500011: The resource principal named <r> ..."
//   otherwise 200 {"access_token","client_id","expires_in","expires_on",
//                  "ext_expires_in","not_before","resource","token_type"} (all strings).
// Empty selector values count as absent; selector values compare
// case-insensitively; the resource is compared exactly. The default identity is
// the system-assigned one if enabled, else the only user-assigned one.
// The same token is returned for (identity, resource) until less than
// reissue_before remains; every minted token is distinct (claim "uti").
// With --date-offset S, those answers carry "Date:" (now + S seconds).
// The default delay (--delay-ms, config delay_ms) or a step's delay_ms holds
// every answer decided after the throttle check; earlier answers are immediate.
//
// ---------------------------------------------------------------------------
// IMDS v2 paths (issue #14 point 3; not in the request log or its counts)
//
//   GET|POST /metadata/identity/getplatformmetadata[?...]
//   GET|POST /metadata/identity/issuecredential[?cred-api-version=...]
//   (paths compared case-insensitively) with header "Metadata: true" (else
//   400 invalid_request).
//   200 {"emulator":"imds-v2","path":..,"method":..,"query":..,"body":..}
//   (the request's path, method, raw query and body echoed) with
//   "Server: imds-emulator-v2". A query parameter emulator_status=NNN
//   (100..599) answers with that status instead of 200 (same body).
//
// ---------------------------------------------------------------------------
// Admin endpoints (same port, no Metadata header, not in the request log)
//
//   GET  /admin/requests[?limit=N]
//        {"count":N,          token-path requests since the last reset (all statuses)
//         "served":N,         of which answered 200
//         "throttled":N,      of which answered 429 by the throttle
//         "in_flight":N,      accepted, not yet answered (delays, hangs)
//         "max_concurrent":N, highest in_flight since the last reset (an
//                             immediate answer counts for an instant: use a
//                             delay to measure a client's concurrency)
//         "log_dropped":N,    entries dropped from the front (the log keeps 100000)
//         "log":[{"t_ms":<arrival, epoch ms>,"resource":"..","selector":"client_id=.."|"",
//                 "status":200 (0 = none: pending, hang, reset, client gone),
//                 "token_id":"<uti>"|"","fault":""|"throttle"|"status"|"delay"|"hang"|
//                 "reset"|"malformed"|"oversized"|"missing_expires_on"|"fail_all"|"gone",
//                 "outcome":"answered"|"pending"|"hang"|"reset"|"client_gone"
//                   (client_gone: the client closed while delayed or hung),
//                 "latency_ms":N}]}           (last N entries with ?limit=N)
//        Cache-control parameters (issue #14): "bypass_cache":N counts token
//        requests with bypass_cache=true; an entry adds "claims":"<decoded>",
//        "other_params":"name,name" (every query parameter but api-version,
//        resource, the selectors and claims) and "client_request_id":".."
//        (the x-ms-client-request-id header) only when the request had them.
//        A token request with claims that do not name xms_az_nwperimid is
//        answered 400 invalid_request (as IMDS today); with them, its token is
//        another one than the same request's without claims.
//   POST /admin/reset      body optional {"tokens":true}
//        Clears log, counters, throttle window and faults. With "tokens":true
//        also the token cache and the issued-token list. Identities and config stay.
//   POST /admin/faults     body = fault script (below); replaces the script.
//   GET  /admin/faults     the remaining script, same schema.
//   POST /admin/identities body = identities (below); replaces them.
//   GET  /admin/identities
//   POST /admin/config     body: any of {"delay_ms":N,"throttle_rps":N,"lifetime":S,
//                          "reissue_before":S,"token_bytes":N,"reject_resources":[..],
//                          "wrong_identity":B}
//        wrong_identity: while true, every token answer (200) is for another
//        identity than the request named (client_id 0bad1d00-0000-4000-8000-00000000e0e0,
//        its object_id and mi_res_id derived as for a user-assigned identity):
//        the body's client_id and the token's appid/oid/xms_mirid claims all
//        name it. Errors (unknown identity, ...) are unchanged. Not reset by
//        /admin/reset; set it back with {"wrong_identity":false}.
//   GET  /admin/config     the same fields, plus "tenant_id"
//   GET  /admin/tokens     {"tokens":["<access_token>",...]} every token minted, oldest
//                          first (at most the last 100000)
// POSTs answer 200 {"ok":true}, or 400 {"error":"invalid_request",...} and
// change nothing. Unknown admin path 404, wrong method 405.
//
// ---------------------------------------------------------------------------
// Identities (--identities FILE, POST /admin/identities)
//
//   {"system_assigned": true | false | {"client_id":..,"object_id":..,"mi_res_id":..},
//    "user_assigned": [{"client_id":"..","object_id":"..","mi_res_id":".."}, ...]}
//
// client_id is required for a user-assigned identity; a missing object_id or
// mi_res_id is derived from it. Missing "system_assigned" means true.
//
// ---------------------------------------------------------------------------
// Fault script (--faults FILE, POST /admin/faults)
//
//   {"steps":[STEP, ...], "mode": MODE | null}     (a bare [STEP, ...] is the steps)
// Unknown fields are errors, so a typo never silently disables a fault.
//
// STEP: consumed by token requests that pass the Metadata and throttle checks.
// Each request takes (one count of) the FIRST step whose "match" accepts it.
//   {"count":N,            how many requests this step answers (default 1)
//    "match":MATCH,        optional filter (below)
//    "delay_ms":N,         wait N ms before the action (replaces the default delay)
//    and at most one action (none: answer normally, after delay_ms):
//    "status":N,           answer N (200 = normal answer) with "body" (object
//                          or string; default an IMDS-like error body) and
//                          "retry_after" (string or number; Retry-After header)
//    "hang":true,          never answer; the connection stays open until the
//                          client closes it
//    "reset":true,         close the connection abruptly, no answer
//    "malformed":true,     200 with the first half of a valid body
//    "oversized_bytes":N,  200 with a valid token body padded to N bytes
//    "missing_expires_on":true   200 without "expires_on"}
//
// MODE: time-based; while active it answers every matching request (steps are
// not consumed). An element of "steps" that has a "mode" key is taken as MODE.
//   {"kind":"fail_all"|"gone",   ("mode" is accepted as a synonym of "kind")
//    "status":N,                  fail_all only, default 500 (gone is always 410)
//    "body":..,"retry_after":..,  as in steps
//    "until_ms":<epoch ms>,       active until then, or
//    "duration_ms":N,             active for N ms from the first request it answers;
//                                 neither: until cleared (reset / new script)
//    "match":MATCH}
//
// MATCH: all given fields must hold.
//   {"resource":"..",                              exact
//    "client_id"|"object_id"|"mi_res_id":"..",     the request's selector, case-
//                                                  insensitive (msi_res_id = mi_res_id)
//    "default":true}                               the request names no identity
//
// ---------------------------------------------------------------------------
// Azure Arc mode (--arc-token-dir DIR; issue #14 point 5)
//
// As himds does: a token request (after the Metadata and X-Forwarded-For
// checks) without "Authorization: Basic <secret>" naming a secret it handed
// out is answered 401 {"error":"unauthorized",..} with
//   WWW-Authenticate: Basic realm=<DIR>/<random>.key
// after writing a fresh random secret (32 hex digits) to that file; the log
// entry's fault is "arc_challenge". A request with a secret it issued (each
// is good for one request; its file is then removed) goes on as IMDS.
// A wrong secret gets a new challenge. POST /admin/config {"arc_realm":R}
// makes the next challenges hostile (GET /admin/config shows it in Arc mode):
//   "normal"   (default) as above
//   "outside"  the file is written in DIR's parent directory
//   "not_key"  DIR/<random>.txt
//   "too_big"  DIR/<random>.key of 4,097 bytes
//   "symlink"  DIR/<random>.key is a symlink to a file in DIR's parent
//   "dotdot"   DIR/../<DIR's name>/<random>.key (a ".." component)
// In every case the named file holds a secret the emulator accepts, so an
// agent that skipped a check would get a token. Not reset by /admin/reset.
// ---------------------------------------------------------------------------

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/base/clock.h"
#include "agent/base/timer.h"
#include "agent/base/log.h"
#include "agent/base/status.h"
#include "proxy/http/http_message.h"

namespace mi::emulator {

struct Identity {
  std::string client_id;
  std::string object_id;
  std::string mi_res_id;  // ARM resource id
};

struct IdentitySet {
  bool system_assigned = true;
  Identity system;  // ids of the system-assigned identity (defaults below)
  std::vector<Identity> user_assigned;
};

// The built-in ids of the system-assigned identity and the tenant.
IdentitySet DefaultIdentities();
extern const char kDefaultTenantId[];

// Fills missing object_id / mi_res_id from client_id.
Identity DeriveUserAssigned(std::string client_id, std::string object_id = "",
                            std::string mi_res_id = "");

// Parses the identities JSON (schema above).
Status ParseIdentities(std::string_view json_text, IdentitySet* out);
// No two identities may share a client_id, object_id or mi_res_id.
Status ValidateIdentities(const IdentitySet& set);
std::string IdentitiesToJson(const IdentitySet& set);

struct Match {
  std::optional<std::string> resource;
  std::string selector_param;  // "", "client_id", "object_id", "mi_res_id"
  std::string selector_value;  // lower case
  bool require_default = false;
};

// What a fault answers instead of (or before) the normal answer.
struct FaultAction {
  enum class Kind { kNormal, kStatus, kHang, kReset, kMalformed, kOversized, kMissingExpiresOn };
  Kind kind = Kind::kNormal;
  int status = 0;
  std::string body;         // kStatus: empty = default body for the status
  std::string retry_after;  // kStatus: empty = no header
  size_t oversized_bytes = 0;
};

struct FaultStep {
  int count = 1;
  std::optional<Match> match;
  std::optional<Duration> delay;
  FaultAction action;
};

struct FaultMode {
  enum class Kind { kFailAll, kGone };
  Kind kind = Kind::kFailAll;
  int status = 500;
  std::string body;
  std::string retry_after;
  std::optional<TimePoint> until;     // until_ms
  std::optional<Duration> duration;   // from the first request answered
  std::optional<Match> match;
};

struct FaultScript {
  std::deque<FaultStep> steps;
  std::optional<FaultMode> mode;
};

// Parses a fault script (schema above).
Status ParseFaultScript(std::string_view json_text, FaultScript* out);
std::string FaultScriptToJson(const FaultScript& script);

struct EmulatorOptions {
  std::string tenant_id = kDefaultTenantId;
  IdentitySet identities = DefaultIdentities();
  Duration lifetime = std::chrono::seconds(86400);
  // A cached token is reissued when less than this remains (clamped to lifetime).
  Duration reissue_before = std::chrono::seconds(300);
  Duration delay = Duration(0);  // latency added to every token answer
  uint32_t throttle_rps = 0;     // 0: no throttling
  // Target length of access_token; ~1.4 KB bodies by default. Never shorter
  // than the claims need.
  size_t token_bytes = 1200;
  std::vector<std::string> reject_resources;
  // Every 200 answers for another identity (the emulator's "wrong identity",
  // client_id 0bad1d00-0000-4000-8000-00000000e0e0), whatever the request named.
  bool wrong_identity = false;
  // Arc mode (header comment): challenge files go here; "" = off.
  std::string arc_token_dir;
  std::string arc_realm = "normal";  // admin "arc_realm"
  bool log_requests = false;  // one line per request (never a token)
  // --date-offset SECONDS: every token-path answer through Answer() carries a
  // Date header, this machine's time plus the offset (doctor's clock check).
  // Unset: no Date header, as before.
  std::optional<int64_t> date_offset;
};

// Loop thread only. `clock`, `timers` and `logger` (Logger::Discard() for none) must outlive it.
class Emulator : public proxy::HttpHandler {
 public:
  Emulator(Clock& clock, TimerFactory& timers, Logger& logger, EmulatorOptions options);
  ~Emulator() override;
  Emulator(const Emulator&) = delete;
  Emulator& operator=(const Emulator&) = delete;

  // Unit tests answer into a RecordingSink (tests/fakes/recording_sink.h).
  void OnRequest(const proxy::HttpRequest& request, proxy::Responder responder) override;

  void SetFaults(FaultScript script);
  // Closes every delayed or hung request's connection (shutdown).
  void AbortPending();

  size_t in_flight() const { return in_flight_; }
  size_t max_concurrent() const { return max_concurrent_; }
  uint64_t token_requests() const { return count_; }
  const EmulatorOptions& options() const { return options_; }

 private:
  struct Query;
  struct Plan;
  struct Pending;
  struct Token;
  struct LogEntry {
    int64_t t_ms = 0;
    std::string resource;
    std::string selector;
    int status = 0;
    std::string token_id;
    std::string fault;
    std::string outcome = "pending";
    int64_t latency_ms = 0;
    // Cache-control parameters (shown only when given): see the header comment.
    std::string claims;
    std::string other_params;
    std::string client_request_id;
  };

  void HandleToken(const proxy::HttpRequest& request, proxy::Responder reply);
  // Arc mode: the 401 challenge for a request without a valid secret (else
  // nullopt: it goes on; its secret is used up).
  std::optional<proxy::HttpResponse> ArcChallenge(const proxy::HttpRequest& request);
  void HandleV2(const proxy::HttpRequest& request, std::string_view path, std::string_view query,
                proxy::Responder& reply);
  void HandleAdmin(const proxy::HttpRequest& request, std::string_view path, std::string_view query,
                   proxy::Responder& reply);
  // Decides (and consumes) the fault for a request arriving at `now`.
  Plan MakePlan(const Query& query, TimePoint now);
  void Execute(uint64_t seq, const Query& query, const Plan& plan, proxy::Responder& reply);
  void Answer(uint64_t seq, const Query& query, proxy::Responder& reply, proxy::HttpResponse&& response,
              const std::string& token_id);
  // The normal answer (200 or a validation error); sets *token_id with a token.
  proxy::HttpResponse TokenAnswer(const Query& query, bool omit_expires_on, std::string* token_id);
  std::shared_ptr<Token> GetToken(const Identity& identity, const std::string& resource,
                                  const std::string& claims = std::string());
  std::shared_ptr<Token> Mint(const Identity& identity, const std::string& resource, TimePoint now);
  const Identity* ResolveIdentity(const Query& query, proxy::HttpResponse* error) const;

  LogEntry* Entry(uint64_t seq);
  // The request left in_flight (answered, reset, or its client went away).
  void Finish(uint64_t seq, const Query& query, const char* outcome);
  void ArmSweep();
  void Sweep();
  void ResetCounters();
  std::string RequestsJson(size_t limit) const;
  std::string ConfigJson() const;
  Status ApplyConfig(std::string_view json_text);

  Clock& clock_;
  TimerFactory& timers_;
  Logger& logger_;
  EmulatorOptions options_;
  uint64_t instance_;  // mixed into token ids so restarts never repeat a token

  FaultScript faults_;
  std::optional<TimePoint> mode_started_;
  std::deque<TimePoint> window_;  // admitted token requests in the last second

  std::unordered_map<std::string, std::shared_ptr<Token>> cache_;
  std::vector<std::string> issued_;
  uint64_t minted_ = 0;

  std::deque<LogEntry> log_;
  uint64_t next_seq_ = 0;       // never reset: keys pending_ and the log
  uint64_t log_first_seq_ = 0;  // seq of log_.front()
  uint64_t log_dropped_ = 0;
  uint64_t count_ = 0;
  uint64_t bypass_cache_ = 0;  // token requests with bypass_cache=true since the last reset
  uint64_t served_ = 0;
  uint64_t throttled_ = 0;
  size_t in_flight_ = 0;
  size_t max_concurrent_ = 0;

  std::map<uint64_t, std::unique_ptr<Pending>> pending_;  // by seq
  std::map<std::string, std::string> arc_secrets_;        // Arc mode: secret -> its file
  std::unique_ptr<Timer> sweep_timer_;
};

// Helpers, exposed for tests.
std::string Base64UrlEncode(std::string_view bytes);
bool Base64UrlDecode(std::string_view text, std::string* out);
std::string PercentDecode(std::string_view text);

}  // namespace mi::emulator
