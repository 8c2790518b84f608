// PeerScheduler: decides when to pull from one peer and who waits for it.
//
//   kWaiting --timer or SyncNow--> kPulling --done--> kWaiting (next timer:
//   interval with jitter after a success, exponential backoff with jitter
//   after a failure) ... Stop() --> kStopping --pull done--> kStopped
//
// `sync-now` while a pull runs attaches to that pull when the pull has not
// yet asked for the manifest and covers the asked services (the result then
// reflects the peer as it is now); otherwise it joins the single queued
// follow-up pull, which starts as soon as the running one ends. Every caller
// gets the result of the pull it is attached to. Each peer has its own
// scheduler, so a dead peer never delays the others.
//
// Threads: loop thread only. Callbacks passed in run on the loop thread.
#ifndef LIFEBOAT_AGENT_SCHEDULER_H_
#define LIFEBOAT_AGENT_SCHEDULER_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/pull.h"
#include "agent/schedule.h"
#include "agent/uv.h"
#include "base/clock.h"

namespace lifeboat::agent {

// What `status` shows about a peer.
struct PeerRecord {
  std::string name;
  std::string address;
  PullPhase phase = PullPhase::kIdle;
  bool reachable = false;  // the last attempt got through the handshake
  int64_t last_attempt_wall_ms = 0;
  int64_t last_success_wall_ms = 0;
  // Monotonic time of the last success when this process made it (a seeded
  // record from the catalog has only wall time).
  std::optional<int64_t> last_success_mono_ms;
  int64_t next_pull_in_ms = 0;
  int consecutive_failures = 0;
  uint64_t generation = 0;
  std::string last_error;       // empty after a success
  std::string last_error_code;  // CodeName of the last error
  uint64_t pulls_total = 0;
  uint64_t pulls_failed = 0;
  uint64_t wire_bytes_total = 0;
  uint64_t file_bytes_total = 0;
  uint64_t files_total = 0;
  std::optional<PullResult> last_result;
};

// How old the data held from this peer is, for `status` and `stale_after`:
// kNeverMs when never pulled. A success made by this process is aged on the
// monotonic clock, so a wall-clock jump (NTP step, operator `date -s`)
// neither makes fresh data look stale nor stale data fresh. A success known
// only from the catalog (before a restart) is aged on the wall clock
// (WallAgeMs): kClockChangedMs when that clock is behind it, never 0.
int64_t DataAgeMs(const PeerRecord& r, int64_t now_wall_ms, int64_t now_mono_ms);

// Scheduling never reads the wall clock: the timers run on the loop's
// monotonic time, so a wall-clock jump moves no pull and no backoff.
class PeerScheduler {
 public:
  enum class State { kWaiting, kPulling, kStopping, kStopped };

  struct Waiter {
    ProgressFn progress;  // may be empty
    PullDoneFn done;
  };

  // `starter` makes the pulls; `on_result` sees every finished pull (logs,
  // metrics) before the waiters do. `clock` gives wall time for the record.
  PeerScheduler(uv_loop_t* loop, std::string peer, std::string address, SchedulePolicy policy,
                PullStarter starter, Clock* clock,
                std::function<void(const PullResult&)> on_result);
  ~PeerScheduler();

  // Arms the first periodic pull after `first_delay_ms`.
  void Start(int64_t first_delay_ms);
  // Pulls as soon as possible (see the header comment for attach/follow-up).
  void SyncNow(PullRequest request, Waiter waiter);
  // No new pulls; cancels the running one (a commit in progress finishes);
  // `done` runs once nothing runs any more (maybe before Stop returns).
  void Stop(const Status& why, std::function<void()> done);

  State state() const { return state_; }
  const PeerRecord& record() const { return record_; }
  // Seeds the record from persisted catalog state (held generation, last success).
  void SeedRecord(uint64_t generation, int64_t last_success_wall_ms);
  // Milliseconds until the next periodic pull (0 while pulling or stopped).
  int64_t NextPullInMs() const;
  // Number of pulls started so far (tests).
  uint64_t pulls_started() const { return pulls_started_; }

 private:
  struct Batch {
    PullRequest request;
    std::vector<Waiter> waiters;
  };

  void StartPull(Batch batch);
  void OnProgress(const PullProgress& p);
  void OnDone(const PullResult& r);
  void ArmTimer(int64_t delay_ms);
  bool CanAttach(const PullRequest& r) const;
  void FinishStop();

  uv_loop_t* loop_;
  std::string peer_;
  SchedulePolicy policy_;
  PullStarter starter_;
  Clock* clock_;
  std::function<void(const PullResult&)> on_result_;
  Jitter jitter_;
  Timer timer_;
  State state_ = State::kWaiting;
  PeerRecord record_;
  std::unique_ptr<PullJob> job_;
  Batch current_;
  std::optional<Batch> follow_up_;
  std::function<void()> on_stopped_;
  int64_t next_due_loop_ms_ = 0;
  uint64_t pulls_started_ = 0;
  std::shared_ptr<bool> alive_;
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_SCHEDULER_H_
