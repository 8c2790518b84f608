#include "agent/scheduler.h"

#include <algorithm>
#include <set>

namespace lifeboat::agent {
namespace {

// The union of two service filters (empty = all).
std::vector<std::string> MergeServices(const std::vector<std::string>& a,
                                       const std::vector<std::string>& b) {
  if (a.empty() || b.empty()) return {};
  std::set<std::string> s(a.begin(), a.end());
  s.insert(b.begin(), b.end());
  return {s.begin(), s.end()};
}

bool Covers(const std::vector<std::string>& have, const std::vector<std::string>& want) {
  if (have.empty()) return true;
  if (want.empty()) return false;
  return std::all_of(want.begin(), want.end(), [&](const std::string& s) {
    return std::find(have.begin(), have.end(), s) != have.end();
  });
}

}  // namespace

int64_t DataAgeMs(const PeerRecord& r, int64_t now_wall_ms, int64_t now_mono_ms) {
  if (r.last_success_mono_ms) return std::max<int64_t>(0, now_mono_ms - *r.last_success_mono_ms);
  return WallAgeMs(r.last_success_wall_ms, now_wall_ms);
}

PeerScheduler::PeerScheduler(uv_loop_t* loop, std::string peer, std::string address,
                             SchedulePolicy policy, PullStarter starter, Clock* clock,
                             std::function<void(const PullResult&)> on_result)
    : loop_(loop),
      peer_(std::move(peer)),
      policy_(policy),
      starter_(std::move(starter)),
      clock_(clock),
      on_result_(std::move(on_result)),
      timer_(loop),
      alive_(std::make_shared<bool>(true)) {
  record_.name = peer_;
  record_.address = std::move(address);
}

PeerScheduler::~PeerScheduler() {
  *alive_ = false;
  if (job_) {
    job_->Cancel(UnavailableError("the agent is shutting down", false));
    DeferDelete(loop_, std::move(job_));
  }
}

void PeerScheduler::SeedRecord(uint64_t generation, int64_t last_success_wall_ms) {
  record_.generation = generation;
  record_.last_success_wall_ms = last_success_wall_ms;
  record_.last_success_mono_ms.reset();
}

void PeerScheduler::Start(int64_t first_delay_ms) {
  if (state_ != State::kWaiting) return;
  ArmTimer(first_delay_ms);
}

void PeerScheduler::ArmTimer(int64_t delay_ms) {
  next_due_loop_ms_ = static_cast<int64_t>(uv_now(loop_)) + delay_ms;
  record_.next_pull_in_ms = delay_ms;
  timer_.Start(delay_ms, [this] {
    if (state_ != State::kWaiting) return;
    StartPull(Batch{PullRequest{{}, "schedule"}, {}});
  });
}

bool PeerScheduler::CanAttach(const PullRequest& r) const {
  bool before_manifest =
      record_.phase == PullPhase::kConnecting || record_.phase == PullPhase::kHandshake;
  return before_manifest && Covers(current_.request.services, r.services);
}

int64_t PeerScheduler::NextPullInMs() const {
  if (state_ != State::kWaiting || !timer_.active()) return 0;
  return std::max<int64_t>(0, next_due_loop_ms_ - static_cast<int64_t>(uv_now(loop_)));
}

void PeerScheduler::SyncNow(PullRequest request, Waiter waiter) {
  switch (state_) {
    case State::kStopping:
    case State::kStopped: {
      PullResult r;
      r.peer = peer_;
      r.status = UnavailableError("the agent is shutting down; no new pulls", false);
      auto done = std::move(waiter.done);
      Defer(loop_, [done, r] { done(r); });
      return;
    }
    case State::kWaiting:
      timer_.Stop();
      StartPull(Batch{std::move(request), {std::move(waiter)}});
      return;
    case State::kPulling:
      if (CanAttach(request)) {
        current_.waiters.push_back(std::move(waiter));
        return;
      }
      if (!follow_up_) {
        follow_up_ = Batch{std::move(request), {}};
      } else {
        follow_up_->request.services =
            MergeServices(follow_up_->request.services, request.services);
      }
      follow_up_->waiters.push_back(std::move(waiter));
      return;
  }
}

void PeerScheduler::StartPull(Batch batch) {
  state_ = State::kPulling;
  current_ = std::move(batch);
  record_.phase = PullPhase::kConnecting;
  record_.last_attempt_wall_ms = clock_->WallMs();
  record_.next_pull_in_ms = 0;
  ++pulls_started_;
  std::weak_ptr<bool> alive = alive_;
  job_ = starter_(
      current_.request,
      [this, alive](const PullProgress& p) {
        if (!alive.expired()) OnProgress(p);
      },
      [this, alive](const PullResult& r) {
        if (!alive.expired()) OnDone(r);
      });
}

void PeerScheduler::OnProgress(const PullProgress& p) {
  record_.phase = p.phase;
  if (p.phase > PullPhase::kHandshake) record_.reachable = true;
  for (auto& w : current_.waiters) {
    if (w.progress) w.progress(p);
  }
}

void PeerScheduler::OnDone(const PullResult& r) {
  DeferDelete(loop_, std::move(job_));  // never delete the job inside its own callback
  record_.phase = PullPhase::kIdle;
  ++record_.pulls_total;
  record_.wire_bytes_total += r.wire_bytes;
  record_.file_bytes_total += r.file_bytes;
  record_.files_total += r.files;
  record_.last_result = r;
  if (r.status.ok()) {
    record_.reachable = true;
    record_.consecutive_failures = 0;
    record_.last_success_wall_ms = r.started_wall_ms + r.duration_ms;
    record_.last_success_mono_ms = clock_->MonotonicMs();
    record_.generation = r.generation;
    record_.last_error.clear();
    record_.last_error_code.clear();
  } else {
    ++record_.pulls_failed;
    ++record_.consecutive_failures;
    record_.last_error = r.status.message();
    record_.last_error_code = std::string(CodeName(r.status.code()));
    // Reachable means "answered as a peer": auth and data errors still count.
    Code c = r.status.code();
    record_.reachable = !(c == Code::kUnavailable || c == Code::kTemporary);
    if (r.generation != 0) record_.generation = r.generation;
  }
  if (on_result_) on_result_(r);
  Batch finished = std::move(current_);
  current_ = Batch{};
  for (auto& w : finished.waiters) {
    if (w.done) w.done(r);
  }

  if (state_ == State::kStopping) {
    FinishStop();
    return;
  }
  state_ = State::kWaiting;
  if (follow_up_) {
    Batch next = std::move(*follow_up_);
    follow_up_.reset();
    StartPull(std::move(next));
    return;
  }
  ArmTimer(r.status.ok() ? NextPullDelayMs(policy_, jitter_.Next())
                         : BackoffDelayMs(policy_, record_.consecutive_failures, jitter_.Next()));
}

void PeerScheduler::Stop(const Status& why, std::function<void()> done) {
  timer_.Stop();
  if (follow_up_) {
    PullResult r;
    r.peer = peer_;
    r.status = why;
    for (auto& w : follow_up_->waiters) {
      if (w.done) w.done(r);
    }
    follow_up_.reset();
  }
  on_stopped_ = std::move(done);
  if (state_ == State::kPulling && job_) {
    state_ = State::kStopping;
    job_->Cancel(why);
    return;
  }
  FinishStop();
}

void PeerScheduler::FinishStop() {
  state_ = State::kStopped;
  record_.phase = PullPhase::kIdle;
  record_.next_pull_in_ms = 0;
  if (auto fn = std::move(on_stopped_)) fn();
}

}  // namespace lifeboat::agent
