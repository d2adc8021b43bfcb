#pragma once
// A scripted upstream for unit tests: records every Fetch and lets the test
// answer it when it wants (never inside Fetch, as the contract says). Needs
// gtest: answering with no call pending is a test failure.

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "agent/upstream_client.h"

namespace mi {

class FakeUpstream : public UpstreamClient {
 public:
  struct Call {
    TokenKey key;
    Callback callback;
    bool answered = false;
    std::string client_request_id = std::string();  // FetchWith's
    bool bypass_cache = false;
  };

  void Fetch(const TokenKey& key, Callback callback) override { calls_.push_back({key, std::move(callback)}); }
  // A forward is one more call (answered with Respond); its request is kept.
  void Forward(const ForwardRequest& request, Callback callback) override {
    forwards_.push_back(request);
    calls_.push_back({TokenKey(), std::move(callback)});
  }
  const std::vector<ForwardRequest>& forwards() const { return forwards_; }
  void FetchWith(const TokenKey& key, const FetchOptions& options, Callback callback) override {
    calls_.push_back({key, std::move(callback)});
    calls_.back().client_request_id = options.client_request_id;
    calls_.back().bypass_cache = options.bypass_cache;
  }

  size_t calls() const { return calls_.size(); }
  size_t pending() const {
    size_t n = 0;
    for (const auto& c : calls_) n += c.answered ? 0 : 1;
    return n;
  }
  const TokenKey& key(size_t i) const { return calls_[i].key; }
  const std::string& client_request_id(size_t i) const { return calls_[i].client_request_id; }
  bool bypass_cache(size_t i) const { return calls_[i].bypass_cache; }

  // Answers the oldest unanswered call. Like IMDS, a TokenBody answers for the
  // client id the call named: its placeholder client_id "c" becomes that id
  // (an explicit client_id stays, to answer for another identity).
  void Respond(UpstreamResponse response) {
    for (auto& c : calls_) {
      if (c.answered) continue;
      c.answered = true;
      static const std::string kPlaceholder = "\"client_id\":\"c\",";
      const size_t at = response.body.find(kPlaceholder);
      if (c.key.kind == SelectorKind::kClientId && at != std::string::npos) {
        response.body.replace(at, kPlaceholder.size(), "\"client_id\":\"" + c.key.id + "\",");
      }
      auto cb = std::move(c.callback);
      cb(std::move(response));
      return;
    }
    ADD_FAILURE() << "no pending upstream call to answer";
  }

  static UpstreamResponse Http(int status, std::string body = "", std::string retry_after = "") {
    UpstreamResponse r;
    r.outcome = UpstreamResponse::Outcome::kHttp;
    r.status = status;
    r.body = std::move(body);
    r.retry_after = std::move(retry_after);
    return r;
  }
  static UpstreamResponse Transport(UpstreamResponse::Outcome outcome) {
    UpstreamResponse r;
    r.outcome = outcome;
    r.error = "fake transport error";
    return r;
  }
  // An IMDS success body with string values, like the real one.
  static std::string TokenBody(const std::string& access_token, int64_t expires_on,
                               const std::string& resource = "https://management.azure.com/",
                               const std::string& client_id = "c") {
    return "{\"access_token\":\"" + access_token + "\",\"client_id\":\"" + client_id + "\",\"expires_in\":\"3599\",\"expires_on\":\"" +
           std::to_string(expires_on) + "\",\"ext_expires_in\":\"3599\",\"not_before\":\"" +
           std::to_string(expires_on - 86400) + "\",\"resource\":\"" + resource + "\",\"token_type\":\"Bearer\"}";
  }

 private:
  std::vector<Call> calls_;
  std::vector<ForwardRequest> forwards_;
};

}  // namespace mi
