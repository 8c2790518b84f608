#include "agent/scheduler.h"

#include <catch2/catch.hpp>

namespace lifeboat::agent {
namespace {

struct FakeJob : PullJob {
  PullRequest request;
  ProgressFn progress;
  PullDoneFn done;
  Status cancelled;
  bool was_cancelled = false;
  void Cancel(const Status& why) override {
    was_cancelled = true;
    cancelled = why;
  }
};

struct Harness {
  uv_loop_t loop;
  ManualClock clock;
  std::vector<FakeJob*> jobs;  // owned by the scheduler
  std::vector<PullResult> seen;
  std::unique_ptr<PeerScheduler> sched;

  Harness() {
    uv_loop_init(&loop);
    SchedulePolicy p;
    p.interval_ms = 60'000;
    sched = std::make_unique<PeerScheduler>(
        &loop, "hn1", "127.0.0.1:1", p,
        [this](const PullRequest& r, ProgressFn pf, PullDoneFn df) {
          auto j = std::make_unique<FakeJob>();
          j->request = r;
          j->progress = std::move(pf);
          j->done = std::move(df);
          jobs.push_back(j.get());
          return j;
        },
        &clock, [this](const PullResult& r) { seen.push_back(r); });
  }
  ~Harness() {
    sched.reset();
    DrainAndCloseLoop(&loop);
  }
  void Phase(PullPhase ph) {
    PullProgress p;
    p.peer = "hn1";
    p.phase = ph;
    jobs.back()->progress(p);
  }
  void Finish(Status s, uint64_t gen = 7) {
    PullResult r;
    r.peer = "hn1";
    r.status = s;
    r.generation = gen;
    r.started_wall_ms = clock.WallMs();
    jobs.back()->done(r);
  }
};

TEST_CASE("two sync-now before the manifest share one pull and both get its result") {
  Harness h;
  h.sched->Start(60'000);
  int results = 0;
  std::vector<PullPhase> progress_a;
  h.sched->SyncNow({{}, "sync-now"}, {[&](const PullProgress& p) { progress_a.push_back(p.phase); },
                                      [&](const PullResult& r) { results += r.status.ok(); }});
  h.Phase(PullPhase::kHandshake);
  h.sched->SyncNow({{"imgapi"}, "sync-now"},
                   {nullptr, [&](const PullResult& r) { results += r.status.ok(); }});
  REQUIRE(h.jobs.size() == 1);
  h.Phase(PullPhase::kManifest);
  h.Finish(Status::Ok());
  CHECK(results == 2);
  CHECK(h.jobs.size() == 1);  // no follow-up was needed
  CHECK(progress_a == std::vector<PullPhase>{PullPhase::kHandshake, PullPhase::kManifest});
  CHECK(h.sched->record().generation == 7);
  CHECK(h.sched->record().pulls_total == 1);
  CHECK(h.sched->state() == PeerScheduler::State::kWaiting);
}

TEST_CASE("sync-now during a transfer queues exactly one follow-up for every late caller") {
  Harness h;
  std::vector<std::string> order;
  h.sched->SyncNow({{}, "sync-now"},
                   {nullptr, [&](const PullResult&) { order.push_back("first"); }});
  h.Phase(PullPhase::kTransfer);
  h.sched->SyncNow({{"sapi"}, "sync-now"},
                   {nullptr, [&](const PullResult&) { order.push_back("late1"); }});
  h.sched->SyncNow({{"imgapi"}, "sync-now"},
                   {nullptr, [&](const PullResult&) { order.push_back("late2"); }});
  REQUIRE(h.jobs.size() == 1);
  h.Finish(Status::Ok(), 7);
  CHECK(order == std::vector<std::string>{"first"});
  REQUIRE(h.jobs.size() == 2);  // the follow-up started at once
  CHECK(h.jobs[1]->request.services == std::vector<std::string>{"imgapi", "sapi"});
  h.Finish(Status::Ok(), 8);
  CHECK(order == std::vector<std::string>{"first", "late1", "late2"});
  CHECK(h.jobs.size() == 2);
  CHECK(h.sched->record().generation == 8);
}

TEST_CASE("a failed pull records the error and backs off instead of waiting the interval") {
  Harness h;
  h.sched->SyncNow({{}, "sync-now"}, {nullptr, [](const PullResult&) {}});
  h.Finish(PermissionError("hn1 127.0.0.1:1: handshake: bad cluster key"));
  const PeerRecord& rec = h.sched->record();
  CHECK(rec.pulls_failed == 1);
  CHECK(rec.consecutive_failures == 1);
  CHECK(rec.last_error_code == "permission");
  CHECK(rec.last_error.find("cluster key") != std::string::npos);
  CHECK(rec.next_pull_in_ms <= 2'000);  // backoff base, not the 60 s interval
  CHECK(rec.generation == 7);
  // The retry happens when the backoff timer fires.
  REQUIRE(RunLoopUntil(
      &h.loop, [&] { return h.jobs.size() == 2; }, 5'000));
  h.Finish(Status::Ok(), 9);
  CHECK(h.sched->record().consecutive_failures == 0);
  CHECK(h.sched->record().last_error.empty());
  CHECK(h.sched->record().next_pull_in_ms >= 54'000);
}

TEST_CASE("stop cancels the running pull and reports once it has ended") {
  Harness h;
  Status got;
  h.sched->SyncNow({{}, "sync-now"}, {nullptr, [&](const PullResult& r) { got = r.status; }});
  h.Phase(PullPhase::kTransfer);
  Status queued;
  h.sched->SyncNow({{}, "sync-now"}, {nullptr, [&](const PullResult& r) { queued = r.status; }});
  bool stopped = false;
  h.sched->Stop(UnavailableError("shutting down", false), [&] { stopped = true; });
  CHECK(h.jobs[0]->was_cancelled);
  CHECK(queued.code() == Code::kUnavailable);  // the follow-up will never run
  CHECK_FALSE(stopped);
  h.Finish(TemporaryError("pull cancelled: shutting down"));
  CHECK(stopped);
  CHECK(got.code() == Code::kTemporary);
  CHECK(h.sched->state() == PeerScheduler::State::kStopped);
  bool refused = false;
  h.sched->SyncNow({{}, "sync-now"},
                   {nullptr, [&](const PullResult& r) { refused = !r.status.ok(); }});
  REQUIRE(RunLoopUntil(
      &h.loop, [&] { return refused; }, 1'000));
  CHECK(h.jobs.size() == 1);
}

}  // namespace
}  // namespace lifeboat::agent
