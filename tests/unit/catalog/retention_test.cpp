#include "catalog/retention.h"

#include <catch2/catch.hpp>

namespace lifeboat::catalog {
namespace {

constexpr int64_t kMin = 60'000;
constexpr int64_t kHour = 60 * kMin;
constexpr int64_t kDay = 24 * kHour;

// A pull every 10 minutes for 40 days, each one a new generation.
std::vector<std::pair<uint64_t, int64_t>> EveryTenMinutes(int64_t now) {
  std::vector<std::pair<uint64_t, int64_t>> gens;
  const int64_t start = now - 40 * kDay;
  uint64_t seq = 1;
  for (int64_t t = start; t <= now; t += 10 * kMin) gens.emplace_back(seq++, t);
  return gens;
}

TEST_CASE("keep-last-N alone keeps the newest N", "[retention]") {
  const int64_t now = 1'800'000'000'000;
  auto gens = EveryTenMinutes(now);
  RetentionPolicy p;
  p.keep_last = 3;
  auto keep = RetainedGenerations(gens, now, p);
  CHECK(keep ==
        std::set<uint64_t>{gens.back().first, gens.back().first - 1, gens.back().first - 2});
}

TEST_CASE("every pull for a day, hourly for a week, daily for a month", "[retention]") {
  const int64_t now = 1'800'000'000'000 - (1'800'000'000'000 % kDay) + 12 * kHour;  // noon UTC
  auto gens = EveryTenMinutes(now);
  RetentionPolicy p;
  p.keep_last = 1;
  p.all_for_ms = kDay;
  p.hourly_for_ms = 7 * kDay;
  p.daily_for_ms = 30 * kDay;
  auto keep = RetainedGenerations(gens, now, p);
  size_t last_day = 0, last_week = 0, older = 0;
  for (const auto& [seq, at] : gens) {
    if (!keep.count(seq)) continue;
    const int64_t age = now - at;
    if (age < kDay) {
      ++last_day;
    } else if (age < 7 * kDay) {
      ++last_week;
    } else {
      ++older;
      CHECK(age < 30 * kDay);  // nothing older than the daily window
    }
  }
  CHECK(last_day == 144);          // every pull of the last 24 hours
  CHECK(last_week >= 6 * 24 - 1);  // one an hour
  CHECK(last_week <= 6 * 24 + 1);
  CHECK(older >= 22);  // one a day
  CHECK(older <= 24);
  CHECK(keep.count(gens.back().first));  // the current one, always
  // The one kept for an hour is that hour's newest.
  for (const auto& [seq, at] : gens) {
    const int64_t age = now - at;
    if (age < kDay || age >= 7 * kDay || !keep.count(seq)) continue;
    CHECK(((at % kHour) + 10 * kMin >= kHour || seq == gens.back().first));
  }
}

TEST_CASE("the current generation is kept whatever the policy says", "[retention]") {
  RetentionPolicy p;
  p.keep_last = 0;
  auto keep = RetainedGenerations({{7, 0}, {3, 0}}, 100 * kDay, p);
  CHECK(keep == std::set<uint64_t>{7});
}

}  // namespace
}  // namespace lifeboat::catalog
