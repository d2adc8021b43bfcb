#include "agent/imds_forwarder.h"

#include <utility>

namespace mi {
namespace {

// IMDS said 429 to a pass-through: hold every start for this long, as its
// Retry-After would (token fetches read theirs through RetryPolicy).
constexpr Duration kThrottlePause = Duration(1000);

}  // namespace

UpstreamForwarder::UpstreamForwarder(UpstreamClient& upstream, UpstreamScheduler& scheduler)
    : upstream_(upstream), scheduler_(scheduler), alive_(std::make_shared<bool>(true)) {}

UpstreamForwarder::~UpstreamForwarder() { *alive_ = false; }

ForwardResult UpstreamForwarder::ResultOf(UpstreamResponse response) {
  ForwardResult r;
  switch (response.outcome) {
    case UpstreamResponse::Outcome::kHttp:
      r.kind = ForwardResult::Kind::kHttp;
      r.status = response.status;
      r.body = std::move(response.body);
      r.server = std::move(response.server);
      return r;
    case UpstreamResponse::Outcome::kTooLarge:
      r.kind = ForwardResult::Kind::kTooLarge;
      break;
    case UpstreamResponse::Outcome::kTimeout:
    case UpstreamResponse::Outcome::kConnectError:
    case UpstreamResponse::Outcome::kRefused:  // Forward answers no challenge: not seen here
      r.kind = ForwardResult::Kind::kUnavailable;
      break;
  }
  r.description = std::move(response.error);
  return r;
}

void UpstreamForwarder::Forward(ForwardRequest request, CallerTag caller, Callback callback) {
  auto job = std::make_shared<std::pair<ForwardRequest, Callback>>(std::move(request), std::move(callback));
  auto start = [this, alive = alive_, job] {
    if (!*alive) return;
    upstream_.Forward(job->first, [this, alive, job](UpstreamResponse response) {
      if (!*alive) return;
      scheduler_.Finished();
      if (response.outcome == UpstreamResponse::Outcome::kHttp && response.status == 429) {
        scheduler_.PauseFor(kThrottlePause);
      }
      Callback done = std::move(job->second);
      done(ResultOf(std::move(response)));
    });
  };
  if (scheduler_.Enqueue(UpstreamScheduler::Priority::kCaller, caller, std::move(start)) ==
      UpstreamScheduler::kRejected) {
    ForwardResult shed;
    shed.kind = ForwardResult::Kind::kShed;
    shed.description = "the IMDS request budget is exhausted";
    job->second(std::move(shed));
  }
}

}  // namespace mi
