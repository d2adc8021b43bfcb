#pragma once
// ImdsForwarder on the IMDS budget: each request waits for its turn in the
// UpstreamScheduler (a caller job of its CallerTag: the same budget and fair
// share as token fetches), then goes out through UpstreamClient::Forward.
// Never cached, never retried; bodies are never logged. IMDS's 429 pauses the
// scheduler like a token fetch's. Loop thread only; the client and scheduler
// are not owned and must outlive it.

#include <memory>

#include "agent/token_broker.h"
#include "agent/upstream_client.h"
#include "agent/upstream_scheduler.h"

namespace mi {

class UpstreamForwarder : public ImdsForwarder {
 public:
  UpstreamForwarder(UpstreamClient& upstream, UpstreamScheduler& scheduler);
  ~UpstreamForwarder() override;
  UpstreamForwarder(const UpstreamForwarder&) = delete;
  UpstreamForwarder& operator=(const UpstreamForwarder&) = delete;

  void Forward(ForwardRequest request, CallerTag caller, Callback callback) override;

  // The answer for an upstream response (exposed for tests).
  static ForwardResult ResultOf(UpstreamResponse response);

 private:
  UpstreamClient& upstream_;
  UpstreamScheduler& scheduler_;
  // Cleared by the destructor: a scheduler start that outlives us does nothing.
  std::shared_ptr<bool> alive_;
};

}  // namespace mi
