#include "agent/schedule.h"

#include <catch2/catch.hpp>

namespace lifeboat::agent {
namespace {

TEST_CASE("periodic pulls wait interval +- jitter") {
  SchedulePolicy p;
  p.interval_ms = 300'000;
  p.jitter = 0.1;
  CHECK(NextPullDelayMs(p, 0.0) == 270'000);
  CHECK(NextPullDelayMs(p, 0.5) == 300'000);
  CHECK(NextPullDelayMs(p, 0.999999) == Approx(330'000).margin(1));
  p.jitter = 0;
  CHECK(NextPullDelayMs(p, 0.9) == 300'000);
}

TEST_CASE("backoff doubles per failure, stays within [cap/2, cap], never beyond interval") {
  SchedulePolicy p;
  p.interval_ms = 60'000;
  p.backoff_base_ms = 1'000;
  p.backoff_max_ms = 300'000;
  CHECK(BackoffDelayMs(p, 1, 1.0) == 1'000);
  CHECK(BackoffDelayMs(p, 1, 0.0) == 500);
  CHECK(BackoffDelayMs(p, 3, 1.0) == 4'000);
  CHECK(BackoffDelayMs(p, 3, 0.0) == 2'000);
  // Capped by the interval: a dead peer is retried at least once per interval.
  CHECK(BackoffDelayMs(p, 20, 1.0) == 60'000);
  CHECK(BackoffDelayMs(p, 1000, 0.0) == 30'000);
  for (int f = 1; f < 50; ++f) {
    CHECK(BackoffDelayMs(p, f, 0.3) >= 1);
    CHECK(BackoffDelayMs(p, f, 0.3) <= 60'000);
  }
}

TEST_CASE("staleness compares the last success against stale_after") {
  CHECK(IsStale(0, 1'000'000, 1'800'000));  // never succeeded
  CHECK_FALSE(IsStale(1'000'000, 1'000'000 + 1'800'000, 1'800'000));
  CHECK(IsStale(1'000'000, 1'000'000 + 1'800'001, 1'800'000));
}

TEST_CASE("token bucket delays reads to the configured rate") {
  TokenBucket b(1000, 1000, 0);  // 1000 B/s, 1000 B burst
  CHECK(b.DelayMs(0) == 0);
  b.Consume(1000, 0);
  CHECK(b.DelayMs(0) == 1);  // empty: wait for one byte
  b.Consume(2000, 0);        // a big read overdraws
  CHECK(b.DelayMs(0) == 2001);
  CHECK(b.DelayMs(1000) == 1001);
  CHECK(b.DelayMs(2001) == 0);
  // Over 10 s a reader that waits as told moves about rate * 10 bytes.
  TokenBucket r(1000, 100, 0);
  int64_t now = 0;
  uint64_t moved = 0;
  while (now < 10'000) {
    now += r.DelayMs(now);
    r.Consume(100, now);
    moved += 100;
  }
  CHECK(moved == Approx(10'000).epsilon(0.05));
  TokenBucket unlimited(0, 0, 0);
  unlimited.Consume(1ull << 40, 0);
  CHECK(unlimited.DelayMs(0) == 0);
}

}  // namespace
}  // namespace lifeboat::agent
