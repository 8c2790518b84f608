#include "base/clock.h"

#include <catch2/catch.hpp>

namespace lifeboat {
namespace {

TEST_CASE("ISO-8601 timestamps with milliseconds, also before the epoch", "[clock]") {
  CHECK(FormatIso8601Ms(0) == "1970-01-01T00:00:00.000Z");
  CHECK(FormatIso8601Ms(1'763'742'303'007) == "2025-11-21T16:25:03.007Z");
  CHECK(FormatIso8601Ms(-1) == "1969-12-31T23:59:59.999Z");
}

TEST_CASE("a manual clock moves only when told; wall jumps leave monotonic alone", "[clock]") {
  ManualClock clock(1000, 5);
  clock.Advance(250);
  CHECK(clock.WallMs() == 1250);
  CHECK(clock.MonotonicMs() == 255);
  clock.SetWall(0);
  CHECK(clock.WallMs() == 0);
  CHECK(clock.MonotonicMs() == 255);
}

TEST_CASE("the real monotonic clock never goes backwards", "[clock]") {
  int64_t a = Clock::Real()->MonotonicMs();
  int64_t b = Clock::Real()->MonotonicMs();
  CHECK(b >= a);
}

}  // namespace
}  // namespace lifeboat
