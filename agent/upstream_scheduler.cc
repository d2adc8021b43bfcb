#include "agent/upstream_scheduler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "agent/base/check.h"

namespace mi {
namespace {

// Floating-point slack: a bucket holding 0.9999999999 tokens is full enough.
constexpr double kEpsilon = 1e-9;

}  // namespace

UpstreamScheduler::UpstreamScheduler(const Options& options, Clock& clock, TimerFactory& timers)
    : options_(options), clock_(clock), timer_(timers.NewTimer()) {
  tokens_ = burst();
  last_wall_ = clock_.Now();
}

UpstreamScheduler::~UpstreamScheduler() = default;


UpstreamScheduler::JobId UpstreamScheduler::Enqueue(Priority priority, CallerTag owner,
                                                    std::function<void()> start) {
  const bool caller = priority == Priority::kCaller;
  const bool full = caller ? queued_caller_ >= options_.max_queue : background_.size() >= options_.max_background_queue;
  const bool share_full = caller && !full && CallerShareFull(owner);
  if (full || share_full) {
    ++rejected_total_;
    if (share_full) ++rejected_caller_share_total_;
    return kRejected;
  }
  const JobId id = next_id_++;
  Queue& q = caller ? CallerQueue(owner) : background_;
  q.push_back(Job{id, caller ? owner : CallerTag::Unknown(), std::move(start)});
  index_.emplace(id, Entry{priority, std::prev(q.end())});
  Reschedule();
  return id;
}

bool UpstreamScheduler::CallerShareFull(CallerTag owner) const {
  auto found = callers_.find(owner);
  return found != callers_.end() && found->second.jobs.size() >= options_.max_queue_per_caller;
}

UpstreamScheduler::OwnerQueue& UpstreamScheduler::QueueOf(CallerTag owner) {
  auto found = callers_.find(owner);
  MI_CHECK(found != callers_.end());  // a queued caller job's owner is in the round
  return found->second;
}

UpstreamScheduler::Queue& UpstreamScheduler::CallerQueue(CallerTag owner) {
  ++queued_caller_;
  auto [it, added] = callers_.try_emplace(owner);
  if (added) it->second.turn = turns_.insert(turns_.end(), owner);
  return it->second.jobs;
}

void UpstreamScheduler::CallerJobLeft(CallerTag owner) {
  --queued_caller_;
  auto found = callers_.find(owner);
  if (found == callers_.end() || !found->second.jobs.empty()) return;
  turns_.erase(found->second.turn);
  callers_.erase(found);
}

UpstreamScheduler::Job UpstreamScheduler::TakeCallerJob() {
  OwnerQueue& turn = QueueOf(turns_.front());
  Job job = std::move(turn.jobs.front());
  turn.jobs.pop_front();
  // To the end of the round; CallerJobLeft takes it out if that was its last job.
  turns_.splice(turns_.end(), turns_, turns_.begin());
  CallerJobLeft(job.owner);
  return job;
}

void UpstreamScheduler::Promote(JobId id, CallerTag owner) {
  auto found = index_.find(id);
  if (found == index_.end() || found->second.priority == Priority::kCaller) return;
  found->second.it->owner = owner;
  // splice keeps the iterator valid.
  Queue& q = CallerQueue(owner);
  q.splice(q.end(), background_, found->second.it);
  found->second.priority = Priority::kCaller;
}

bool UpstreamScheduler::Demote(JobId id) {
  auto found = index_.find(id);
  if (found == index_.end()) return false;
  if (found->second.priority == Priority::kBackground) return true;
  if (background_.size() >= options_.max_background_queue) return false;
  const CallerTag owner = found->second.it->owner;
  background_.splice(background_.end(), QueueOf(owner).jobs, found->second.it);
  found->second.priority = Priority::kBackground;
  CallerJobLeft(owner);
  return true;
}

bool UpstreamScheduler::Cancel(JobId id) {
  auto found = index_.find(id);
  if (found == index_.end()) return false;
  if (found->second.priority == Priority::kCaller) {
    const CallerTag owner = found->second.it->owner;
    QueueOf(owner).jobs.erase(found->second.it);
    CallerJobLeft(owner);
  } else {
    background_.erase(found->second.it);
  }
  index_.erase(found);
  Reschedule();
  return true;
}

void UpstreamScheduler::Finished() {
  if (in_flight_ > 0) --in_flight_;
  Reschedule();
}

void UpstreamScheduler::PauseFor(Duration d) {
  if (d.count() <= 0) return;
  ++pauses_total_;
  paused_until_ = std::max(paused_until_, Tick() + d);
  Reschedule();
}

void UpstreamScheduler::set_options(const Options& options) {
  // Account for the time so far at the old rate.
  Refill(Tick());
  options_ = options;
  tokens_ = std::min(tokens_, burst());
  Reschedule();
}

UpstreamScheduler::Stats UpstreamScheduler::stats() const {
  Stats s;
  s.queued_caller = queued_caller_;
  s.caller_owners = turns_.size();
  s.queued_background = background_.size();
  s.in_flight = in_flight_;
  s.max_concurrent = options_.max_concurrent;
  // Without advancing the estimate (const): the wall clock since last_wall_.
  const TimePoint now = clock_.Now();
  const Duration mono = mono_ + std::max(Duration(0), now - last_wall_);
  if (paused_until_ > mono) s.paused_until = now + (paused_until_ - mono);
  s.pauses_total = pauses_total_;
  s.rejected_total = rejected_total_;
  s.rejected_caller_share_total = rejected_caller_share_total_;
  s.started_total = started_total_;
  return s;
}

Duration UpstreamScheduler::Tick() {
  const TimePoint now = clock_.Now();
  if (now > last_wall_) mono_ += now - last_wall_;
  if (now < last_wall_) stepped_back_ = true;
  last_wall_ = now;
  return mono_;
}

void UpstreamScheduler::OnTimer() {
  // The timer is monotonic: after a backward step of the wall clock, trust it
  // that its delay has passed. Otherwise trust the wall clock: a libuv timer
  // counts from the loop's cached time and may fire a little early, and
  // jumping to timer_due_ each time would let the estimate run fast.
  Tick();
  if (stepped_back_) mono_ = std::max(mono_, timer_due_);
  Pump();
}

void UpstreamScheduler::Refill(Duration mono) {
  if (options_.rate_per_second <= 0) {
    tokens_ = burst();
  } else if (mono > last_refill_) {
    const double elapsed_ms = static_cast<double>((mono - last_refill_).count());
    tokens_ = std::min(burst(), tokens_ + elapsed_ms * options_.rate_per_second / 1000.0);
  }
  last_refill_ = mono;
}

void UpstreamScheduler::Pump() {
  while (queued() > 0 && in_flight_ < options_.max_concurrent) {
    const Duration now = Tick();
    if (Paused(now)) break;
    Refill(now);
    const bool limited = options_.rate_per_second > 0;
    if (limited && tokens_ < 1.0 - kEpsilon) break;
    const bool background = BackgroundsTurn();
    if (background || background_.empty()) {
      caller_streak_ = 0;
    } else {
      ++caller_streak_;
    }
    Job job;
    if (background) {
      job = std::move(background_.front());
      background_.pop_front();
    } else {
      job = TakeCallerJob();
    }
    index_.erase(job.id);
    if (limited) tokens_ = std::max(0.0, tokens_ - 1.0);
    ++in_flight_;
    ++started_total_;
    // May re-enter Enqueue/Cancel/Finished/PauseFor; the loop re-reads state.
    if (job.start) job.start();
  }
  Reschedule();
}

bool UpstreamScheduler::BackgroundsTurn() const {
  return queued_caller_ == 0 || (!background_.empty() && caller_streak_ >= kCallerStartsPerBackground);
}

void UpstreamScheduler::Reschedule() {
  if (queued() == 0 || in_flight_ >= options_.max_concurrent) {
    // Finished() or Enqueue() will call again.
    timer_->Disarm();
    return;
  }
  const Duration now = Tick();
  Duration wait(0);
  if (Paused(now)) wait = paused_until_ - now;
  if (options_.rate_per_second > 0) {
    Refill(now);
    if (tokens_ < 1.0 - kEpsilon) {
      const double ms = (1.0 - tokens_) * 1000.0 / options_.rate_per_second;
      // The tiny subtraction keeps 200.0000001 from becoming 201; at least
      // 1 ms, or a bucket a hair short of a token would spin at one instant.
      const auto token_wait = static_cast<int64_t>(std::ceil(ms - 1e-6));
      wait = std::max(wait, Duration(std::max<int64_t>(token_wait, 1)));
    }
  }
  timer_due_ = now + wait;
  stepped_back_ = false;
  timer_->Arm(wait, [this] { OnTimer(); });
}

void UpstreamScheduler::WriteMetrics(MetricsWriter& w) const {
  const Stats st = stats();
  const TimePoint now = w.now();
  w.One("mi_agent_upstream_in_flight", "gauge", "IMDS requests in flight.", st.in_flight);
  w.One("mi_agent_upstream_max_concurrent", "gauge", "The IMDS budget's cap on concurrent requests.",
        st.max_concurrent);
  w.Family("mi_agent_upstream_queue_depth", "gauge", "IMDS requests waiting for the budget, by priority.");
  w.Sample("mi_agent_upstream_queue_depth", {{"priority", "caller"}}, static_cast<double>(st.queued_caller));
  w.Sample("mi_agent_upstream_queue_depth", {{"priority", "background"}}, static_cast<double>(st.queued_background));
  w.One("mi_agent_upstream_queue_rejected_total", "counter", "IMDS requests refused because the queue was full.",
        static_cast<double>(st.rejected_total));
  w.One("mi_agent_upstream_pause_remaining_seconds", "gauge", "Seconds until a throttle pause ends (0: not paused).",
        st.paused_until > now ? static_cast<double>((st.paused_until - now).count()) / 1000.0 : 0);
}

}  // namespace mi
