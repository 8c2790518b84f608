#include "base/clock.h"

#include <catch2/catch.hpp>

namespace lifeboat {
namespace {

TEST_CASE("ISO-8601 timestamps with milliseconds, also before the epoch", "[clock]") {
  CHECK(FormatIso8601Ms(0) == "1970-01-01T00:00:00.000Z");
  CHECK(FormatIso8601Ms(1'763'742'303'007) == "2025-11-21T16:25:03.007Z");
  CHECK(FormatIso8601Ms(-1) == "1969-12-31T23:59:59.999Z");
}

TEST_CASE("a manual clock moves only when told, wall jumps leave monotonic alone", "[clock]") {
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

namespace lifeboat {
namespace {

TEST_CASE("ISO 8601 times read back what FormatIso8601Ms writes", "[clock]") {
  for (int64_t ms : {int64_t{0}, int64_t{1'795'280'300'123}, int64_t{1'700'000'000'000}}) {
    CHECK(ParseIso8601Ms(FormatIso8601Ms(ms)) == ms);
  }
  CHECK(ParseIso8601Ms("2026-12-05T10:00:00Z") == int64_t{1'796'464'800'000});
  for (const char* bad : {"2026-12-05", "2026-12-05T10:00:00", "2026-12-05T10:00:00+01:00",
                          "2026-13-05T10:00:00Z", "2026-12-05T10:00:00.12Z", "yesterday", ""}) {
    CHECK_FALSE(ParseIso8601Ms(bad));
  }
}

}  // namespace
}  // namespace lifeboat
