#pragma once
// The IMDS request budget (SPEC §7). IMDS allows a VM about 20 identity
// requests/s and 5 concurrent ones, shared by everything on the VM, and answers
// 429 beyond; every upstream request of the agent goes through one
// UpstreamScheduler, which keeps the agent well inside that:
//
//  * a token bucket: `rate_per_second` refill, at most `burst` tokens (it
//    starts full); each start takes one token;
//  * a concurrency cap: at most `max_concurrent` started jobs not yet
//    Finished();
//  * two bounded queues, one per priority: at most `max_queue` waiting caller
//    jobs and at most `max_background_queue` waiting background jobs. Each
//    priority counts only against its own room, so background work never takes
//    a caller's place: a caller Enqueue is refused (the caller answers 429) only
//    when `max_queue` callers already wait, however much background work is
//    queued; a refused background Enqueue is the owner's to retry later;
//  * a share of the callers' queue per caller: a caller Enqueue is also
//    refused when its owner (CallerTag, agent/caller_tag.h) already has
//    `max_queue_per_caller` caller jobs waiting, so one caller never fills the
//    queue and a newcomer always finds room;
//  * a global pause: after IMDS said 429, nothing starts until the pause ends.
//
// Start order: callers' jobs before background (refresh, prefetch) ones,
// except that background keeps a bounded share of the starts: after
// kCallerStartsPerBackground caller starts in a row while background jobs
// wait, the next start is a background one. So a flood of callers cannot hold
// back the refresh of tokens already cached, and while callers wait background
// work takes at most 1 start in kCallerStartsPerBackground + 1. Background jobs
// start FIFO. Caller jobs start round robin over their owners: each owner with
// queued jobs has a turn, in the order they joined the round, and starts the
// oldest of its jobs; an owner new to the round joins at its end. So an owner
// with hundreds of queued jobs delays a newcomer by at most one start per
// other owner waiting, not by all of its jobs. A job's owner is fixed at
// Enqueue, or given by Promote() (the caller for whom it became a caller job).
// A Promote()d job joins the back of its owner's jobs (its caller started
// waiting only now); a Demote()d one the back of the background queue.
//
// start() callbacks never run inside Enqueue/Promote/Demote/Cancel/Finished/
// PauseFor/set_options: they run from the scheduler's timer (a zero delay when a
// start is possible at once). A start() may call back into the scheduler
// (Enqueue, Cancel, even Finished for a request that ended at once) but must
// not destroy it.
//
// Time: the Clock is the wall clock, the TimerFactory's timers are monotonic.
// The scheduler keeps its own monotonic estimate: wall-clock progress, never
// backwards, and at least the armed delay when its timer fires after the wall
// clock went backwards. So a wall clock stepped backwards neither stalls the
// bucket nor stretches a pause; one stepped forwards may refill the bucket (at
// most `burst`) and end a pause early.
//
// Loop thread only. Clock and TimerFactory are not owned and must outlive the
// scheduler.

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <unordered_map>

#include "agent/base/clock.h"
#include "agent/base/metrics.h"
#include "agent/base/timer.h"
#include "agent/caller_tag.h"

namespace mi {

class UpstreamScheduler : public MetricsSource {
 public:
  enum class Priority { kCaller, kBackground };
  using JobId = uint64_t;  // 0 = rejected
  static constexpr JobId kRejected = 0;
  // While background jobs wait, at most this many caller jobs start in a row.
  static constexpr int kCallerStartsPerBackground = 4;

  struct Stats {
    size_t queued_caller = 0;
    size_t caller_owners = 0;  // owners with caller jobs queued (in the round robin)
    size_t queued_background = 0;
    int in_flight = 0;
    int max_concurrent = 0;    // the cap as configured
    TimePoint paused_until{};  // epoch (zero) when not paused
    uint64_t pauses_total = 0;    // PauseFor() calls
    uint64_t rejected_total = 0;  // Enqueue()s refused: that priority's queue full, or the owner's share
    uint64_t rejected_caller_share_total = 0;  // of which: the owner had max_queue_per_caller queued
    uint64_t started_total = 0;
  };

  // Config "budget" (ranges checked by ParseConfig, agent/app/config.cc).
  struct Options {
    double rate_per_second = 5;  // "rate_per_second": token bucket refill (<= 0: no rate limit)
    int burst = 5;               // "burst": bucket size; REQUIRES >= 1
    int max_concurrent = 2;      // "max_concurrent": REQUIRES >= 1
    size_t max_queue = 1024;     // "max_queue": queued caller jobs; beyond, Enqueue refuses (429)
    size_t max_background_queue = 256;  // "max_background_queue": queued background jobs; beyond, refused
    // Queued caller jobs of one owner; beyond, its Enqueue refuses (429). Not
    // a key of its own: ParseConfig gives it the share of max_queue that
    // "limits.max_waiters_per_caller" is of "limits.max_waiters" (256 of 1024
    // by default). REQUIRES >= 1.
    size_t max_queue_per_caller = 256;
  };

  UpstreamScheduler(const Options& options, Clock& clock, TimerFactory& timers);
  ~UpstreamScheduler() override;
  UpstreamScheduler(const UpstreamScheduler&) = delete;
  UpstreamScheduler& operator=(const UpstreamScheduler&) = delete;

  // Queues a job. `start` runs once, on a later turn, when the job's turn comes
  // (see the start order above), a concurrency slot is free, a bucket token is
  // available and no pause is in force; the job then owns a slot until
  // Finished(). `owner` is the caller a caller job is for (ignored for
  // background jobs: background work is no caller's). Returns the job's id, or
  // kRejected (0) when the queue of that priority is full or, for a caller
  // job, `owner` has its share queued already (`start` is dropped).
  JobId Enqueue(Priority priority, CallerTag owner, std::function<void()> start);
  // A queued background job becomes a caller job of `owner` (it may take the
  // caller queue past max_queue, and `owner` past its share: it was admitted
  // already). No-op for unknown, started or already caller jobs.
  void Promote(JobId id, CallerTag owner);
  // A queued caller job becomes a background job (its callers left, the fetch
  // is now a refresh). True when the job is now a queued background job (also
  // when it was one already); false, and nothing changes, when it is unknown,
  // has started, or the background queue is full (then the owner decides:
  // keep it as a caller job or Cancel it).
  bool Demote(JobId id);
  // Removes a queued job (its start never runs). False if it is unknown or has
  // already started (then the owner must still call Finished()).
  bool Cancel(JobId id);
  // A started job's request ended: frees its slot.
  void Finished();
  // IMDS throttled us: nothing starts before now + d. Extends, never shortens
  // a pause in force.
  void PauseFor(Duration d);

  // Applies at once (config reload). Jobs already queued beyond a smaller
  // max_queue, max_background_queue or max_queue_per_caller stay; only new
  // ones are refused.
  void set_options(const Options& options);
  Stats stats() const;
  // Whether a caller Enqueue for `owner` would now be refused for its share
  // (max_queue_per_caller), not for a full queue.
  bool CallerShareFull(CallerTag owner) const;
  // MetricsSource: in flight, the cap, queue depths, refusals, the pause.
  void WriteMetrics(MetricsWriter& out) const override;

 private:
  struct Job {
    JobId id = 0;
    CallerTag owner;  // caller jobs only
    std::function<void()> start;
  };
  using Queue = std::list<Job>;
  // One owner's queued caller jobs (FIFO) and its place in the round robin.
  struct OwnerQueue {
    Queue jobs;
    std::list<CallerTag>::iterator turn;
  };
  struct Entry {
    Priority priority;
    Queue::iterator it;
  };

  // The monotonic estimate (see the header comment), advanced to now.
  Duration Tick();
  void OnTimer();
  void Refill(Duration mono);
  bool Paused(Duration mono) const { return paused_until_ > mono; }
  size_t queued() const { return queued_caller_ + background_.size(); }
  // Where a caller job of `owner` goes: its owner's queue, joining the round
  // robin (at its end) when the owner had nothing queued.
  Queue& CallerQueue(CallerTag owner);
  // The queue of an owner with caller jobs queued.
  OwnerQueue& QueueOf(CallerTag owner);
  // After a caller job of `owner` left its queue: an owner with nothing
  // queued leaves the round robin.
  void CallerJobLeft(CallerTag owner);
  // Takes the next caller job: the oldest of the owner whose turn it is; that
  // owner then goes to the end of the round.
  Job TakeCallerJob();
  // Whether the next start is a background job (see the start order).
  bool BackgroundsTurn() const;
  // Starts what can start now, then arms the timer for the next possibility.
  void Pump();
  // Arms the timer for when the next start may be possible (or disarms it).
  void Reschedule();
  double burst() const { return static_cast<double>(options_.burst); }

  Options options_;
  Clock& clock_;
  std::unique_ptr<Timer> timer_;

  // The callers' side: a queue per owner with jobs queued, and the owners in
  // round-robin order (front: the next turn).
  std::unordered_map<CallerTag, OwnerQueue, CallerTag::Hash> callers_;
  std::list<CallerTag> turns_;
  size_t queued_caller_ = 0;
  Queue background_;
  std::unordered_map<JobId, Entry> index_;
  JobId next_id_ = 1;

  TimePoint last_wall_;
  Duration mono_{0};
  Duration timer_due_{0};     // mono_ when the armed timer is due
  bool stepped_back_ = false;  // the wall clock went backwards since arming

  double tokens_;
  Duration last_refill_{0};
  Duration paused_until_{0};  // in mono_ time

  int in_flight_ = 0;
  int caller_streak_ = 0;  // caller starts since the last background one, while background waited
  uint64_t pauses_total_ = 0;
  uint64_t rejected_total_ = 0;
  uint64_t rejected_caller_share_total_ = 0;
  uint64_t started_total_ = 0;
};

}  // namespace mi
