// The headnode's wall clock jumps (an NTP step, an operator's `date -s`,
// a VM resumed from a snapshot): the next pull, the backoff after a failure
// and the data age shown by `status` must not move with it.
#include <catch2/catch.hpp>

#include "agent/scheduler.h"

namespace lifeboat::agent {
namespace {

constexpr int64_t kHour = 3'600'000;

struct FakeJob : PullJob {
  PullDoneFn done;
  void Cancel(const Status&) override {}
};

struct Harness {
  uv_loop_t loop;
  ManualClock clock;
  std::vector<FakeJob*> jobs;  // owned by the scheduler
  std::unique_ptr<PeerScheduler> sched;
  SchedulePolicy policy;

  Harness() {
    uv_loop_init(&loop);
    policy.interval_ms = 10 * 60'000;
    policy.jitter = 0.1;
    policy.backoff_base_ms = 2'000;
    policy.backoff_max_ms = 5 * 60'000;
    sched = std::make_unique<PeerScheduler>(
        &loop, "hn1", "127.0.0.1:1", policy,
        [this](const PullRequest&, ProgressFn, PullDoneFn df) {
          auto j = std::make_unique<FakeJob>();
          j->done = std::move(df);
          jobs.push_back(j.get());
          return j;
        },
        &clock, nullptr);
  }
  ~Harness() {
    sched.reset();
    DrainAndCloseLoop(&loop);
  }
  // One sync-now pull that ends with `s`; the result is seen by its waiter.
  void Pull(Status s) {
    bool finished = false;
    sched->SyncNow({{}, "sync-now"}, {nullptr, [&](const PullResult&) { finished = true; }});
    PullResult r;
    r.peer = "hn1";
    r.status = s;
    r.generation = 7;
    r.started_wall_ms = clock.WallMs();
    jobs.back()->done(r);
    REQUIRE(finished);
  }
  int64_t Age() const { return DataAgeMs(sched->record(), clock.WallMs(), clock.MonotonicMs()); }
};

}  // namespace

TEST_CASE("clock jump: the next pull stays one interval away whichever way the wall clock jumps") {
  Harness h;
  h.sched->Start(h.policy.interval_ms);
  h.Pull(Status::Ok());
  int64_t before = h.sched->NextPullInMs();
  CHECK(before >= h.policy.interval_ms * 0.9 - 1);
  CHECK(before <= h.policy.interval_ms * 1.1 + 1);
  for (int64_t jump : {-3 * kHour, +5 * kHour, -48 * kHour}) {
    INFO("wall clock jump of " << jump / kHour << "h");
    h.clock.SetWall(h.clock.WallMs() + jump);
    uv_update_time(&h.loop);
    int64_t after = h.sched->NextPullInMs();
    CHECK(after <= before);
    CHECK(after >= before - 1'000);  // only real (monotonic) time went by
  }
}

TEST_CASE("clock jump: backoff after a failure does not stretch or vanish with the wall clock") {
  Harness h;
  h.sched->Start(h.policy.interval_ms);
  h.Pull(UnavailableError("peer hn1 refused the connection"));
  int64_t backoff = h.sched->NextPullInMs();
  CHECK(backoff >= h.policy.backoff_base_ms / 2 - 1);
  CHECK(backoff <= h.policy.backoff_base_ms + 1);
  h.clock.SetWall(h.clock.WallMs() - 6 * kHour);
  uv_update_time(&h.loop);
  CHECK(h.sched->NextPullInMs() <= backoff);
  CHECK(h.sched->NextPullInMs() >= backoff - 1'000);
  // The retry really happens, after the backoff, though the wall clock went back 6 hours.
  bool retried = RunLoopUntil(
      &h.loop, [&] { return h.jobs.size() == 2; }, backoff + 5'000);
  CHECK(retried);
}

TEST_CASE("clock jump: status ages data on the monotonic clock, never negative") {
  Harness h;
  CHECK(h.Age() == -1);  // never pulled
  h.Pull(Status::Ok());
  h.clock.Advance(90'000);
  CHECK(h.Age() == 90'000);
  SECTION("the wall clock jumps back 3 hours: the data is not -3h old") {
    h.clock.SetWall(h.clock.WallMs() - 3 * kHour);
    CHECK(h.Age() == 90'000);
  }
  SECTION("the wall clock jumps forward 5 hours: fresh data does not turn stale") {
    h.clock.SetWall(h.clock.WallMs() + 5 * kHour);
    CHECK(h.Age() == 90'000);
    CHECK_FALSE(h.Age() > 30 * 60'000);  // stale_after 30m
  }
  SECTION("real time still ages the data") {
    h.clock.SetWall(h.clock.WallMs() - 3 * kHour);
    h.clock.Advance(kHour);
    CHECK(h.Age() == kHour + 90'000);
  }
}

TEST_CASE("clock jump: a success known only from the catalog is aged on wall time, and a clock set back makes it unknown, never fresh") {
  Harness h;
  h.sched->SeedRecord(7, h.clock.WallMs() - 120'000);  // pulled 2 minutes before a restart
  CHECK(h.Age() == 120'000);
  h.clock.SetWall(h.clock.WallMs() - 3 * kHour);
  CHECK(h.Age() == kClockChangedMs);
  // A pull of this process takes over: from then on the age is monotonic.
  h.Pull(Status::Ok());
  h.clock.Advance(5'000);
  h.clock.SetWall(h.clock.WallMs() + 3 * kHour);
  CHECK(h.Age() == 5'000);
}

}  // namespace lifeboat::agent
