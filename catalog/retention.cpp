#include "catalog/retention.h"

#include <algorithm>
#include <map>

namespace lifeboat::catalog {

namespace {

constexpr int64_t kHourMs = 3'600'000;
constexpr int64_t kDayMs = 24 * kHourMs;

int64_t Bucket(int64_t ms, int64_t width) {
  return ms >= 0 ? ms / width : (ms - width + 1) / width;
}

}  // namespace

std::set<uint64_t> RetainedGenerations(const std::vector<std::pair<uint64_t, int64_t>>& generations,
                                       int64_t now_ms, const RetentionPolicy& policy) {
  std::vector<std::pair<uint64_t, int64_t>> newest_first = generations;
  std::sort(newest_first.begin(), newest_first.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::set<uint64_t> keep;
  std::map<int64_t, bool> hour_taken, day_taken;  // bucket -> its newest generation is kept
  for (size_t i = 0; i < newest_first.size(); ++i) {
    const auto [seq, at] = newest_first[i];
    const int64_t age = now_ms - at;
    bool kept = i < std::max<uint32_t>(1, policy.keep_last);
    kept |= policy.all_for_ms > 0 && age < policy.all_for_ms;
    if (policy.hourly_for_ms > 0 && age < policy.hourly_for_ms) {
      kept |= hour_taken.emplace(Bucket(at, kHourMs), true).second;
    }
    if (policy.daily_for_ms > 0 && age < policy.daily_for_ms) {
      kept |= day_taken.emplace(Bucket(at, kDayMs), true).second;
    }
    if (kept) keep.insert(seq);
  }
  return keep;
}

}  // namespace lifeboat::catalog
